/* The LLM processing store: one row per mail in llm_processing, the outcome
 * of its LLM run, token use and retries. Writes announce themselves as llm.*
 * events (source "llm_agent") after commit. */
#ifndef MAILAGENT_LLM_H
#define MAILAGENT_LLM_H

#include <mailagent/db.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What one successful run used. Strings borrowed. */
typedef struct mae_llm_usage {
    const char *model;
    int64_t input_tokens, output_tokens;
    int64_t cache_read_input_tokens, cache_creation_input_tokens;
    int64_t latency_ms;
    const char *labels_json;  /* JSON object or NULL */
} mae_llm_usage;

/* One row of llm_processing. Strings owned by the row, NULL where NULL;
 * numbers 0 where NULL. */
typedef struct mae_llm_row {
    int64_t internal_id;
    char *notion_page_id, *mailbox, *status;
    int64_t retry_count;
    double next_retry_at;
    char *last_error, *model;
    int64_t input_tokens, output_tokens, cache_read_input_tokens, cache_creation_input_tokens;
    int64_t latency_ms;
    char *labels_json;
    double created_at, updated_at;
} mae_llm_row;

typedef struct mae_llm_list {
    mae_llm_row *rows;
    size_t count;
} mae_llm_list;

/* Totals for `mailagent llm stats`. */
typedef struct mae_llm_totals {
    int64_t successes;
    int64_t input_tokens, output_tokens;
    int64_t cache_read_input_tokens, cache_creation_input_tokens;
    double latency_mean_ms, latency_p95_ms;   /* over successes; 0 when none */
} mae_llm_totals;

/* Longest string value kept in labels_json, in code points. */
#define MAE_LLM_LABEL_MAX_CHARS 500

/* A mail is known to this store when it has a row in email_metadata or in
 * llm_processing (the table has no foreign key); marks on an unknown mail
 * are MAE_ENOTFOUND. */

/* Upserts the row with status 'pending' (its retry count is kept, so every
 * attempt on a mail counts toward one limit). No event. */
MAE_EXTERN int mae_llm_store_mark_pending(mae_db *db, int64_t internal_id,
                                          const char *notion_page_id, const char *mailbox);

/* Upserts the row as 'success' with the usage, retries and errors reset;
 * event llm.success. labels_json must be a JSON object (string values over
 * MAE_LLM_LABEL_MAX_CHARS code points are cut). MAE_EINVAL: bad id, NULL
 * usage or model, negative counts, labels not an object. */
MAE_EXTERN int mae_llm_store_mark_success(mae_db *db, int64_t internal_id,
                                          const char *notion_page_id,
                                          const mae_llm_usage *usage);

/* Counts a failure: 'failed' with a retry time (llm.failed) or, at the
 * limit, 'gave_up' (llm.gave_up). A mail with no row gets one.
 * MAE_EINVAL: bad id, NULL or empty error. */
MAE_EXTERN int mae_llm_store_mark_failed(mae_db *db, int64_t internal_id, const char *error,
                                         mae_retry_outcome *out /* NULL ok */);

/* Rows left 'pending' for longer than older_than_s (<= 0: 300) by a killed
 * process become 'failed', due now. No event. *reset (NULL ok) gets the count. */
MAE_EXTERN int mae_llm_store_reset_stale_pending(mae_db *db, double older_than_s,
                                                 int64_t *reset);

/* ---- reads ---------------------------------------------------------------- */
MAE_EXTERN int mae_llm_store_get(mae_db *db, int64_t internal_id, mae_llm_row **out);
/* 'failed' rows with next_retry_at <= now (<= 0: the store's clock). */
MAE_EXTERN int mae_llm_store_due_for_retry(mae_db *db, double now, int limit, mae_llm_list **out);
MAE_EXTERN int mae_llm_store_count_by_status(mae_db *db, mae_counts **out);
MAE_EXTERN int mae_llm_store_totals(mae_db *db, mae_llm_totals *out);
/* sizeof(mae_llm_usage) as this library was built: the size handshake
 * (docs/api.md, "ABI"). This function can't fail. */
MAE_EXTERN size_t mae_llm_usage_size(void);
/* sizeof(mae_llm_totals) as this library was built: the size handshake
 * (docs/api.md, "ABI"). This function can't fail. */
MAE_EXTERN size_t mae_llm_totals_size(void);

MAE_EXTERN void mae_llm_row_free(mae_llm_row *row);
MAE_EXTERN void mae_llm_list_free(mae_llm_list *list);

#ifdef __cplusplus
}
#endif
#endif
