/* The sync store: one row per mail in email_metadata, its Notion sync state
 * and retries. Writes announce themselves as email.* events after commit. */
#ifndef MAILAGENT_SYNC_STORE_H
#define MAILAGENT_SYNC_STORE_H

#include <mailagent/db.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A mail's metadata as the watcher gives it. All strings borrowed, any may
 * be NULL except message_id. */
typedef struct mae_email {
    int64_t internal_id;
    const char *message_id, *thread_id, *subject, *sender, *sender_name;
    const char *to_addr, *cc_addr, *date_received, *mailbox;
} mae_email;

/* One row of email_metadata as read back. Strings are owned by the row
 * (NULL where the column is NULL); times are epoch seconds, 0 when NULL. */
typedef struct mae_email_row {
    int64_t internal_id;
    char *message_id, *thread_id, *subject, *sender, *sender_name;
    char *to_addr, *cc_addr, *date_received, *mailbox;
    bool is_read, is_flagged;
    char *sync_status, *notion_page_id, *notion_thread_id, *sync_error;
    int64_t retry_count;
    double next_retry_at, created_at, updated_at;
} mae_email_row;

typedef struct mae_email_list {
    mae_email_row *rows;
    size_t count;
} mae_email_list;

/* Adds a mail (status 'pending') or updates the metadata of an existing one
 * (same internal_id), leaving its sync state alone. No event.
 * MAE_EINVAL: NULL mail, internal_id <= 0, NULL/empty message_id. A
 * message_id already used by another internal_id is MAE_EDB (UNIQUE). */
MAE_EXTERN int mae_sync_store_upsert(mae_db *db, const mae_email *mail);
/* sizeof(mae_email) as this library was built: the size handshake
 * (docs/api.md, "ABI"). This function can't fail. */
MAE_EXTERN size_t mae_email_size(void);

/* Marks a mail synced: sync_status 'synced', notion_page_id (and
 * notion_thread_id when not NULL) set, sync_error and next_retry_at cleared.
 * Event email.synced with source (NULL = "sync_store").
 * MAE_EINVAL (bad id, NULL/empty page id, empty source), MAE_ENOTFOUND. */
MAE_EXTERN int mae_sync_store_mark_synced(mae_db *db, int64_t internal_id,
                                          const char *notion_page_id,
                                          const char *notion_thread_id /* NULL ok */,
                                          const char *source /* NULL = "sync_store" */);

/* Counts a failure with status "fetch_failed" or "failed": schedules the
 * retry (email.failed) or, at the limit, dead-letters the mail with
 * sync_error "Max retries exceeded: <error>" (email.dead_letter).
 * MAE_EINVAL (bad id or status, NULL or empty error), MAE_ENOTFOUND. */
MAE_EXTERN int mae_sync_store_mark_failed(mae_db *db, int64_t internal_id,
                                          const char *status /* "fetch_failed" | "failed" */,
                                          const char *error, mae_retry_outcome *out /* NULL ok */);

/* ---- reads for reconciliation ----------------------------------------- */

/* One mail. MAE_OK and *out (free with mae_email_row_free), MAE_ENOTFOUND. */
MAE_EXTERN int mae_sync_store_get(mae_db *db, int64_t internal_id, mae_email_row **out);

/* Mails with a status (NULL = any), newest first (date_received, then id),
 * at most limit (<= 0: 50). Free with mae_email_list_free. */
MAE_EXTERN int mae_sync_store_list(mae_db *db, const char *status, int limit,
                                   mae_email_list **out);

/* Mails in fetch_failed/failed whose next_retry_at <= now (now <= 0: the
 * store's clock), oldest due first, at most limit (<= 0: 50). */
MAE_EXTERN int mae_sync_store_due_for_retry(mae_db *db, double now, int limit,
                                            mae_email_list **out);

/* Mails per sync_status. Free with mae_counts_free. */
MAE_EXTERN int mae_sync_store_count_by_status(mae_db *db, mae_counts **out);

MAE_EXTERN void mae_email_row_free(mae_email_row *row);
MAE_EXTERN void mae_email_list_free(mae_email_list *list);

#ifdef __cplusplus
}
#endif
#endif
