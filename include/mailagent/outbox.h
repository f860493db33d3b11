/* The outbox repository: intents to change Mail.app or Notion, kept in
 * email_outbox, with their state machine, merge and retries. Writes announce
 * themselves as outbox.* events (envelope source "outbox") after commit. */
#ifndef MAILAGENT_OUTBOX_H
#define MAILAGENT_OUTBOX_H

#include <mailagent/db.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One row of email_outbox. Strings are owned by the row (source and
 * last_error NULL where NULL); times are epoch seconds, 0 when NULL. */
typedef struct mae_outbox_row {
    int64_t outbox_id, internal_id;
    char *op_type, *target, *payload_json, *source, *status;
    int64_t attempts;
    char *last_error;
    double next_retry_at, created_at, updated_at;
} mae_outbox_row;

typedef struct mae_outbox_list {
    mae_outbox_row *rows;
    size_t count;
} mae_outbox_list;

/* Queue depth for `mailagent admin queue-depth`. */
typedef struct mae_outbox_depth {
    int64_t pending, processing, done, failed, dead_letter;
    struct { int64_t pending, processing, failed; } mailapp, notion;
    /* pending intents by age (now - created_at) */
    int64_t pending_under_1m, pending_under_5m, pending_under_30m, pending_over_30m;
    double oldest_pending_age_s;   /* 0 when none pending */
} mae_outbox_depth;

/* Enqueues "make target look like payload_json" for a mail.
 * - MAE_EINVAL: bad id, empty op_type, target not "mailapp"/"notion",
 *   payload not one strict JSON object (no NaN, no "\u0000", at most 64
 *   levels deep), empty source. Nothing written. Arguments are checked
 *   before echo prevention.
 * - MAE_SKIPPED, *outbox_id = -1: echo prevention (source "notion_webhook"
 *   with target "notion"). Nothing written, no event.
 * - MAE_OK, *inserted = false, existing id: merged (RFC 7396) into the
 *   pending intent with the same (internal_id, op_type, target). No event.
 * - MAE_OK, *inserted = true, new id: inserted; event outbox.enqueued.
 * - MAE_ENOTFOUND: no such mail (foreign key).
 * The payload is stored compact with keys sorted at every level. */
MAE_EXTERN int mae_outbox_enqueue(mae_db *db, int64_t internal_id, const char *op_type,
                                  const char *target /* "mailapp" | "notion" */,
                                  const char *payload_json /* JSON object */,
                                  const char *source /* NULL ok */,
                                  int64_t *outbox_id /* NULL ok */, bool *inserted /* NULL ok */);

/* pending|failed -> processing. No event. MAE_ENOTFOUND, MAE_ESTATE;
 * MAE_SKIPPED when already processing. */
MAE_EXTERN int mae_outbox_mark_processing(mae_db *db, int64_t outbox_id);

/* pending|processing|failed -> done; event outbox.done. MAE_SKIPPED when
 * already done, MAE_ESTATE on a dead letter, MAE_ENOTFOUND; no event then. */
MAE_EXTERN int mae_outbox_mark_done(mae_db *db, int64_t outbox_id);

/* Counts an attempt: failed with a retry time (outbox.failed) or, at the
 * limit, dead_letter (outbox.dead_letter). MAE_EINVAL (NULL or empty error),
 * MAE_ENOTFOUND, MAE_ESTATE (done or dead_letter). */
MAE_EXTERN int mae_outbox_mark_failed(mae_db *db, int64_t outbox_id, const char *error,
                                      mae_retry_outcome *out /* NULL ok */);

/* dead_letter -> pending with 0 attempts; no event. MAE_ENOTFOUND,
 * MAE_ESTATE (not a dead letter, or a pending twin already exists). */
MAE_EXTERN int mae_outbox_retry_dead_letter(mae_db *db, int64_t outbox_id);

/* ---- reads ---------------------------------------------------------------- */

/* One intent. MAE_ENOTFOUND when absent. Free with mae_outbox_row_free. */
MAE_EXTERN int mae_outbox_get(mae_db *db, int64_t outbox_id, mae_outbox_row **out);

/* Intents ready to run: pending, or failed with next_retry_at due; oldest
 * first; target NULL = both; limit <= 0: 20. */
MAE_EXTERN int mae_outbox_poll_ready(mae_db *db, const char *target, int limit,
                                     mae_outbox_list **out);

/* The intents of one mail, oldest first. */
MAE_EXTERN int mae_outbox_list_for_email(mae_db *db, int64_t internal_id, mae_outbox_list **out);

/* Dead letters, newest first; limit <= 0: 100. */
MAE_EXTERN int mae_outbox_list_dead_letters(mae_db *db, int limit, mae_outbox_list **out);

/* Counts by status, by target, and pending ages. Writes *out on success. */
MAE_EXTERN int mae_outbox_queue_depth(mae_db *db, mae_outbox_depth *out);
/* sizeof(mae_outbox_depth) as this library was built: the size handshake
 * (docs/api.md, "ABI"). This function can't fail. */
MAE_EXTERN size_t mae_outbox_depth_size(void);

MAE_EXTERN void mae_outbox_row_free(mae_outbox_row *row);
MAE_EXTERN void mae_outbox_list_free(mae_outbox_list *list);

#ifdef __cplusplus
}
#endif
#endif
