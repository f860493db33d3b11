/* Internal: builders of the complete JSON line of each event type, exactly
 * as docs/events.md writes it. Each appends one line to b (which the caller
 * owns), with ts taken from the real-time clock. They do not validate enum
 * values; a NULL required string writes null. The line is complete when
 * !b->oom. */
#ifndef MAE_EVENT_H
#define MAE_EVENT_H

#include "core/text.h"

void mae__ev_email_synced(mae__buf *b, int64_t id, const char *notion_page_id,
                          const char *source);
void mae__ev_email_failed(mae__buf *b, int64_t id, const char *status, int64_t retry_count,
                          double next_retry_at, const char *error);
void mae__ev_email_dead_letter(mae__buf *b, int64_t id, int64_t retry_count, const char *error);
void mae__ev_outbox_enqueued(mae__buf *b, int64_t id, int64_t outbox_id, const char *op_type,
                             const char *target, const char *intent_source);
void mae__ev_outbox_done(mae__buf *b, int64_t id, int64_t outbox_id);
void mae__ev_outbox_failed(mae__buf *b, int64_t id, int64_t outbox_id, int64_t attempts,
                           const char *last_error, double next_retry_at);
void mae__ev_outbox_dead_letter(mae__buf *b, int64_t id, int64_t outbox_id, int64_t attempts,
                                const char *last_error);
void mae__ev_llm_success(mae__buf *b, int64_t id, const char *model, int64_t input_tokens,
                         int64_t output_tokens, int64_t latency_ms);
void mae__ev_llm_failed(mae__buf *b, int64_t id, int64_t retry_count, double next_retry_at,
                        const char *error);
void mae__ev_llm_gave_up(mae__buf *b, int64_t id, int64_t retry_count, const char *error);

/* A caller's own event: event_type and source escaped and repaired, and
 * data_json (a JSON object text, NULL for {}) validated and compacted.
 * Returns 0, or -1 with b as it was when data_json is not a JSON object. */
int mae__ev_generic(mae__buf *b, const char *event_type, int64_t id, const char *data_json,
                    const char *source);

/* Cut of error texts in events, in code points. */
#define MAE_EVENT_TEXT_MAX 200

#endif
