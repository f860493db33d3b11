/* This module implements the JSON lines of events.md: the mae__ev_* builders
 * and the public publish calls that build a line and queue it. */
#include <string.h>
#include <time.h>

#include "event.h"
#include "publisher_internal.h"

/* A string literal and its length, for the fixed parts of a line. */
#define LIT(s) s, sizeof(s) - 1

/* ---- the envelope --------------------------------------------------------- */

/* Writes v in decimal at p; returns the end. */
static char *put_i64(char *p, int64_t v)
{
    char tmp[20];
    char *e = tmp + sizeof tmp, *s = e;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        *--s = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *p++ = '-';
    memcpy(p, s, (size_t)(e - s));
    return p + (e - s);
}

/* Writes ,"ts":<now>,"internal_id":<id>,"data": after the event type, composed
 * on the stack and appended at once (this runs for every event). ts comes
 * from integer seconds and nanoseconds: exact, where a double near 1.7e9
 * resolves only about a quarter of a microsecond. */
static void put_head_rest(mae__buf *b, int64_t id)
{
    char tmp[96];
    char *p = tmp;
    struct timespec now;

    if (clock_gettime(CLOCK_REALTIME, &now) != 0) {
        now.tv_sec = 0;
        now.tv_nsec = 0;
    }
    int64_t sec = (int64_t)now.tv_sec;
    long us = (now.tv_nsec + 500) / 1000;
    if (us >= 1000000) {
        us -= 1000000;
        sec++;
    }
    memcpy(p, ",\"ts\":", 6);
    p = put_i64(p + 6, sec);
    *p = '.';
    for (int i = 6; i >= 1; i--) {
        p[i] = (char)('0' + us % 10);
        us /= 10;
    }
    memcpy(p + 7, ",\"internal_id\":", 15);
    p += 22;
    if (id == MAE_NO_ID) {
        memcpy(p, "null", 4);
        p += 4;
    } else {
        p = put_i64(p, id);
    }
    memcpy(p, ",\"data\":", 8);
    p += 8;
    mae__buf_put(b, tmp, (size_t)(p - tmp));
}

/* The start of a line of a fixed event type, up to its closing quote. */
#define TYPE(t) LIT("{\"event_type\":\"" t "\"")
/* The end of a line with a fixed source, from the close of data. */
#define FIXED_SOURCE(s) LIT("},\"source\":\"" s "\"}")

static void open_line(mae__buf *b, const char *start, size_t len, int64_t id)
{
    mae__buf_put(b, start, len);
    put_head_rest(b, id);
}

/* Same, for an event type given by the caller (escaped and repaired). */
static void open_line_str(mae__buf *b, const char *type, int64_t id)
{
    mae__buf_put(b, LIT("{\"event_type\":"));
    mae__json_str(b, type, 0);
    put_head_rest(b, id);
}

/* Writes ,"source":<source>} after the data object. */
static void close_line_str(mae__buf *b, const char *source)
{
    mae__buf_put(b, LIT(",\"source\":"));
    mae__json_str(b, source, 0);
    mae__buf_putc(b, '}');
}

/* ---- the ten event types ---------------------------------------------------- */

/* The key of a data member with what precedes it: FIRST opens the data
 * object, NEXT follows a member. */
#define FIRST(k) LIT("{\"" k "\":")
#define NEXT(k) LIT(",\"" k "\":")

/* One data member each: key (from FIRST or NEXT) and value. A text is a
 * caller's free-form message, cut to MAE_EVENT_TEXT_MAX code points; a str
 * is written whole. Static, so each builder inlines them to the same writes
 * it would spell out. */
static void field_str(mae__buf *b, const char *key, size_t n, const char *s)
{
    mae__buf_put(b, key, n);
    mae__json_str(b, s, 0);
}

static void field_text(mae__buf *b, const char *key, size_t n, const char *s)
{
    mae__buf_put(b, key, n);
    mae__json_str(b, s, MAE_EVENT_TEXT_MAX);
}

static void field_i64(mae__buf *b, const char *key, size_t n, int64_t v)
{
    mae__buf_put(b, key, n);
    mae__json_i64(b, v);
}

static void field_epoch(mae__buf *b, const char *key, size_t n, double t)
{
    mae__buf_put(b, key, n);
    mae__json_epoch(b, t);
}

void mae__ev_email_synced(mae__buf *b, int64_t id, const char *notion_page_id,
                          const char *source)
{
    open_line(b, TYPE("email.synced"), id);
    field_str(b, FIRST("notion_page_id"), notion_page_id);
    if (source) {
        mae__buf_putc(b, '}');
        close_line_str(b, source);
    } else {
        mae__buf_put(b, FIXED_SOURCE("sync_store"));
    }
}

void mae__ev_email_failed(mae__buf *b, int64_t id, const char *status, int64_t retry_count,
                          double next_retry_at, const char *error)
{
    open_line(b, TYPE("email.failed"), id);
    field_str(b, FIRST("status"), status);
    field_i64(b, NEXT("retry_count"), retry_count);
    field_epoch(b, NEXT("next_retry_at"), next_retry_at);
    field_text(b, NEXT("error"), error);
    mae__buf_put(b, FIXED_SOURCE("sync_store"));
}

void mae__ev_email_dead_letter(mae__buf *b, int64_t id, int64_t retry_count, const char *error)
{
    open_line(b, TYPE("email.dead_letter"), id);
    field_i64(b, FIRST("retry_count"), retry_count);
    field_text(b, NEXT("error"), error);
    mae__buf_put(b, FIXED_SOURCE("sync_store"));
}

void mae__ev_outbox_enqueued(mae__buf *b, int64_t id, int64_t outbox_id, const char *op_type,
                             const char *target, const char *intent_source)
{
    open_line(b, TYPE("outbox.enqueued"), id);
    field_i64(b, FIRST("outbox_id"), outbox_id);
    field_str(b, NEXT("op_type"), op_type);
    field_str(b, NEXT("target"), target);
    field_str(b, NEXT("source"), intent_source);
    mae__buf_put(b, FIXED_SOURCE("outbox"));
}

void mae__ev_outbox_done(mae__buf *b, int64_t id, int64_t outbox_id)
{
    open_line(b, TYPE("outbox.done"), id);
    field_i64(b, FIRST("outbox_id"), outbox_id);
    mae__buf_put(b, FIXED_SOURCE("outbox"));
}

void mae__ev_outbox_failed(mae__buf *b, int64_t id, int64_t outbox_id, int64_t attempts,
                           const char *last_error, double next_retry_at)
{
    open_line(b, TYPE("outbox.failed"), id);
    field_i64(b, FIRST("outbox_id"), outbox_id);
    field_i64(b, NEXT("attempts"), attempts);
    field_text(b, NEXT("last_error"), last_error);
    field_epoch(b, NEXT("next_retry_at"), next_retry_at);
    mae__buf_put(b, FIXED_SOURCE("outbox"));
}

void mae__ev_outbox_dead_letter(mae__buf *b, int64_t id, int64_t outbox_id, int64_t attempts,
                                const char *last_error)
{
    open_line(b, TYPE("outbox.dead_letter"), id);
    field_i64(b, FIRST("outbox_id"), outbox_id);
    field_i64(b, NEXT("attempts"), attempts);
    field_text(b, NEXT("last_error"), last_error);
    mae__buf_put(b, FIXED_SOURCE("outbox"));
}

void mae__ev_llm_success(mae__buf *b, int64_t id, const char *model, int64_t input_tokens,
                         int64_t output_tokens, int64_t latency_ms)
{
    open_line(b, TYPE("llm.success"), id);
    field_str(b, FIRST("model"), model);
    field_i64(b, NEXT("input_tokens"), input_tokens);
    field_i64(b, NEXT("output_tokens"), output_tokens);
    field_i64(b, NEXT("latency_ms"), latency_ms);
    mae__buf_put(b, FIXED_SOURCE("llm_agent"));
}

void mae__ev_llm_failed(mae__buf *b, int64_t id, int64_t retry_count, double next_retry_at,
                        const char *error)
{
    open_line(b, TYPE("llm.failed"), id);
    field_i64(b, FIRST("retry_count"), retry_count);
    field_epoch(b, NEXT("next_retry_at"), next_retry_at);
    field_text(b, NEXT("error"), error);
    mae__buf_put(b, FIXED_SOURCE("llm_agent"));
}

void mae__ev_llm_gave_up(mae__buf *b, int64_t id, int64_t retry_count, const char *error)
{
    open_line(b, TYPE("llm.gave_up"), id);
    field_i64(b, FIRST("retry_count"), retry_count);
    field_text(b, NEXT("error"), error);
    mae__buf_put(b, FIXED_SOURCE("llm_agent"));
}

/* ---- the public calls ----------------------------------------------------------
 * Each checks liveness first, so a disabled publisher costs no encoding;
 * the empty buffer only lets the publisher count the call. */

/* Room for a line's fixed parts and numbers (the longest, outbox.failed,
 * needs about 240 bytes), so with its texts added a line is built in one
 * allocation. */
#define LINE_BASE 256
/* A text's share of the estimate, bounded: an error text is cut to 200 code
 * points of at most 4 bytes, and a longer text grows the buffer anyway. */
#define EST(s) ((s) ? strnlen((s), 4 * MAE_EVENT_TEXT_MAX) : 0)

static mae__buf line_buf(size_t texts)
{
    mae__buf b;
    mae__buf_init(&b);
    mae__buf_reserve(&b, LINE_BASE + texts);
    return b;
}

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
    mae__buf b;
    if (!ready(p, event_type && event_type[0] && source && source[0]))
        return;
    b = line_buf(EST(event_type) + EST(data_json) + EST(source));
    open_line_str(&b, event_type, internal_id);
    if (!data_json) {
        mae__buf_put(&b, LIT("{}"));
    } else if (mae__json_compact_object(&b, data_json) != 0) {
        mae__buf_free(&b);
        mae__publisher_drop_invalid(p);
        return;
    }
    close_line_str(&b, source);
    mae__publisher_enqueue(p, &b);
}

/* The whole of a typed call: ready, a buffer sized for its texts, the line
 * built by mae__ev_<build>, queued. A macro rather than a function taking
 * the builder, so each call stays a direct call with nothing added. */
#define PUBLISH(p, valid, texts, build, ...)                                                \
    do {                                                                                   \
        mae__buf b_;                                                                       \
        if (!ready((p), (valid)))                                                          \
            return;                                                                        \
        b_ = line_buf(texts);                                                              \
        mae__ev_##build(&b_, __VA_ARGS__);                                                 \
        mae__publisher_enqueue((p), &b_);                                                  \
    } while (0)

void mae_publish_email_synced(mae_publisher *p, int64_t internal_id, const char *notion_page_id,
                              const char *source)
{
    /* source NULL means the default "sync_store"; an empty one is refused. */
    PUBLISH(p, notion_page_id != NULL && !(source && !source[0]),
            EST(notion_page_id) + EST(source), email_synced, internal_id, notion_page_id, source);
}

void mae_publish_email_failed(mae_publisher *p, int64_t internal_id, const char *status,
                              int64_t retry_count, double next_retry_at, const char *error)
{
    PUBLISH(p, status != NULL && error != NULL, EST(status) + EST(error), email_failed,
            internal_id, status, retry_count, next_retry_at, error);
}

void mae_publish_email_dead_letter(mae_publisher *p, int64_t internal_id, int64_t retry_count,
                                   const char *error)
{
    PUBLISH(p, error != NULL, EST(error), email_dead_letter, internal_id, retry_count, error);
}

void mae_publish_outbox_enqueued(mae_publisher *p, int64_t internal_id, int64_t outbox_id,
                                 const char *op_type, const char *target,
                                 const char *intent_source)
{
    PUBLISH(p, op_type != NULL && target != NULL,
            EST(op_type) + EST(target) + EST(intent_source), outbox_enqueued, internal_id,
            outbox_id, op_type, target, intent_source);
}

void mae_publish_outbox_done(mae_publisher *p, int64_t internal_id, int64_t outbox_id)
{
    PUBLISH(p, true, 0, outbox_done, internal_id, outbox_id);
}

void mae_publish_outbox_failed(mae_publisher *p, int64_t internal_id, int64_t outbox_id,
                               int64_t attempts, const char *last_error, double next_retry_at)
{
    PUBLISH(p, last_error != NULL, EST(last_error), outbox_failed, internal_id, outbox_id,
            attempts, last_error, next_retry_at);
}

void mae_publish_outbox_dead_letter(mae_publisher *p, int64_t internal_id, int64_t outbox_id,
                                    int64_t attempts, const char *last_error)
{
    PUBLISH(p, last_error != NULL, EST(last_error), outbox_dead_letter, internal_id, outbox_id,
            attempts, last_error);
}

void mae_publish_llm_success(mae_publisher *p, int64_t internal_id, const char *model,
                             int64_t input_tokens, int64_t output_tokens, int64_t latency_ms)
{
    PUBLISH(p, model != NULL, EST(model), llm_success, internal_id, model, input_tokens,
            output_tokens, latency_ms);
}

void mae_publish_llm_failed(mae_publisher *p, int64_t internal_id, int64_t retry_count,
                            double next_retry_at, const char *error)
{
    PUBLISH(p, error != NULL, EST(error), llm_failed, internal_id, retry_count, next_retry_at,
            error);
}

void mae_publish_llm_gave_up(mae_publisher *p, int64_t internal_id, int64_t retry_count,
                             const char *error)
{
    PUBLISH(p, error != NULL, EST(error), llm_gave_up, internal_id, retry_count, error);
}
