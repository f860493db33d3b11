/* Shared definitions of mailagent-events: the export macro, result codes,
 * the null mail id and the documented source tags. */
#ifndef MAILAGENT_COMMON_H
#define MAILAGENT_COMMON_H

#include <stdint.h>

#if defined(__GNUC__)
#define MAE_EXTERN __attribute__((visibility("default")))
#else
#define MAE_EXTERN
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* internal_id of an event that concerns no mail: published as null. It is
 * INT64_MIN, so -2^63 is the one int64 id that cannot be published as a
 * number (mail ids are positive: the stores never produce it). */
#define MAE_NO_ID INT64_MIN

/* Result codes. Every fallible call returns MAE_OK (0), MAE_SKIPPED (1) when
 * nothing had to be done, or one of the negative codes. The table is the one
 * place codes and their texts are written (see mae_strerror). */
#define MAE_ERRNO_MAP(XX)                                                    \
    XX(OK, 0, "success")                                                     \
    XX(SKIPPED, 1, "nothing to do")                                          \
    XX(EINVAL, -1, "invalid argument")                                       \
    XX(ENOMEM, -2, "out of memory")                                          \
    XX(ENOTFOUND, -3, "no such row")                                         \
    XX(ESTATE, -4, "transition not allowed from the row's status")           \
    XX(EBUSY, -5, "database still locked after the busy timeout")            \
    XX(EDB, -6, "database error")                                            \
    XX(ETIMEDOUT, -7, "deadline passed")

enum {
#define MAE__ERRNO_ENUM(name, value, text) MAE_##name = (value),
    MAE_ERRNO_MAP(MAE__ERRNO_ENUM)
#undef MAE__ERRNO_ENUM
};

/* The text of a result code; "unknown error" for a code not in the table.
 * The string is static. This function can't fail. */
MAE_EXTERN const char *mae_strerror(int code);

/* The documented source tags (docs/events.md). Any non-empty string is accepted
 * as a source; these are the ones subscribers know. */
#define MAE_SOURCE_CLI "cli"
#define MAE_SOURCE_NOTION_WEBHOOK "notion_webhook"
#define MAE_SOURCE_AI_REVIEWED_HANDLER "ai_reviewed_handler"
#define MAE_SOURCE_REVERSE_SYNC_POLL "reverse_sync_poll"
#define MAE_SOURCE_OUTBOX "outbox"
#define MAE_SOURCE_SYNC_STORE "sync_store"
#define MAE_SOURCE_NEW_WATCHER "new_watcher"
#define MAE_SOURCE_LLM_AGENT "llm_agent"

/* The library's version as compiled ("1.0.0"), for programs that load it
 * dynamically and want to compare with MAE_VERSION_STRING. */
MAE_EXTERN const char *mae_version(void);

#ifdef __cplusplus
}
#endif
#endif
