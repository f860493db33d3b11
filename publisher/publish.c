/* This module implements the public publish calls: mae_safe_publish and the
 * typed mae_publish_* builders, each of which builds its line (core/event.h)
 * and queues it on the publisher. */
#include <string.h>

#include "core/event.h"
#include "publisher/publisher_internal.h"

/* ---- the public calls ----------------------------------------------------------
 * Each checks liveness first, so a disabled publisher costs no encoding;
 * the empty buffer only lets the publisher count the call. A live call
 * builds its line in the publisher's own buffer, reserved at open, and the
 * line is copied into the queue: nothing is allocated. */

/* Whether a call goes on to build its line. A publisher that is not live
 * counts the call with an empty buffer; a call missing a required argument
 * (valid false, checked only on a live publisher) is counted as invalid. */
static bool ready(mae_publisher *p, bool valid)
{
    if (!mae__publisher_live(p)) {
        mae__buf none;
        mae__buf_init(&none);
        mae__publisher_enqueue(p, &none);
        return false;
    }
    if (!valid) {
        mae__publisher_drop_invalid(p);
        return false;
    }
    return true;
}

void mae_safe_publish(mae_publisher *p, const char *event_type, int64_t internal_id,
                      const char *data_json, const char *source)
{
    if (!ready(p, event_type && event_type[0] && source && source[0]))
        return;
    mae__buf *b = mae__publisher_line_begin(p);
    int rc = mae__ev_generic(b, event_type, internal_id, data_json, source);
    mae__publisher_line_end(p, rc == 0);
}

/* The whole of a typed call: ready, the line built by mae__ev_<build> into
 * the publisher's buffer, queued. A macro rather than a function taking the
 * builder, so each call stays a direct call with nothing added. */
#define PUBLISH(p, valid, build, ...)                                                      \
    do {                                                                                   \
        if (!ready((p), (valid)))                                                          \
            return;                                                                        \
        mae__ev_##build(mae__publisher_line_begin(p), __VA_ARGS__);                        \
        mae__publisher_line_end((p), true);                                                \
    } while (0)

void mae_publish_email_synced(mae_publisher *p, int64_t internal_id, const char *notion_page_id,
                              const char *source)
{
    /* source NULL means the default "sync_store"; an empty one is refused. */
    PUBLISH(p, notion_page_id != NULL && !(source && !source[0]), email_synced, internal_id,
            notion_page_id, source);
}

void mae_publish_email_failed(mae_publisher *p, int64_t internal_id, const char *status,
                              int64_t retry_count, double next_retry_at, const char *error)
{
    PUBLISH(p, status != NULL && error != NULL, email_failed, internal_id, status, retry_count,
            next_retry_at, error);
}

void mae_publish_email_dead_letter(mae_publisher *p, int64_t internal_id, int64_t retry_count,
                                   const char *error)
{
    PUBLISH(p, error != NULL, email_dead_letter, internal_id, retry_count, error);
}

void mae_publish_outbox_enqueued(mae_publisher *p, int64_t internal_id, int64_t outbox_id,
                                 const char *op_type, const char *target,
                                 const char *intent_source)
{
    PUBLISH(p, op_type != NULL && target != NULL, outbox_enqueued, internal_id, outbox_id,
            op_type, target, intent_source);
}

void mae_publish_outbox_done(mae_publisher *p, int64_t internal_id, int64_t outbox_id)
{
    PUBLISH(p, true, outbox_done, internal_id, outbox_id);
}

void mae_publish_outbox_failed(mae_publisher *p, int64_t internal_id, int64_t outbox_id,
                               int64_t attempts, const char *last_error, double next_retry_at)
{
    PUBLISH(p, last_error != NULL, outbox_failed, internal_id, outbox_id, attempts, last_error,
            next_retry_at);
}

void mae_publish_outbox_dead_letter(mae_publisher *p, int64_t internal_id, int64_t outbox_id,
                                    int64_t attempts, const char *last_error)
{
    PUBLISH(p, last_error != NULL, outbox_dead_letter, internal_id, outbox_id, attempts,
            last_error);
}

void mae_publish_llm_success(mae_publisher *p, int64_t internal_id, const char *model,
                             int64_t input_tokens, int64_t output_tokens, int64_t latency_ms)
{
    PUBLISH(p, model != NULL, llm_success, internal_id, model, input_tokens, output_tokens,
            latency_ms);
}

void mae_publish_llm_failed(mae_publisher *p, int64_t internal_id, int64_t retry_count,
                            double next_retry_at, const char *error)
{
    PUBLISH(p, error != NULL, llm_failed, internal_id, retry_count, next_retry_at, error);
}

void mae_publish_llm_gave_up(mae_publisher *p, int64_t internal_id, int64_t retry_count,
                             const char *error)
{
    PUBLISH(p, error != NULL, llm_gave_up, internal_id, retry_count, error);
}
