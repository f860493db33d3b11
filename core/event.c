/* This module implements the JSON lines of docs/events.md: the envelope and the
 * mae__ev_* builders of the ten event types, shared by the publisher's
 * public calls and the stores. */
#include <string.h>
#include <time.h>

#include <mailagent/common.h>

#include "core/event.h"

/* A string literal and its length, for the fixed parts of a line. */
#define LIT(s) s, sizeof(s) - 1

/* ---- the envelope --------------------------------------------------------- */

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
    /* A clock before 1970 is a broken clock: written as 0. */
    uint64_t sec = now.tv_sec > 0 ? (uint64_t)now.tv_sec : 0;
    uint32_t us = now.tv_sec >= 0 ? (uint32_t)((now.tv_nsec + 500) / 1000) : 0;
    if (us >= 1000000) {
        us -= 1000000;
        sec++;
    }
    memcpy(p, ",\"ts\":", 6);
    p = mae__put_epoch_us(p + 6, sec, us);
    memcpy(p, ",\"internal_id\":", 15);
    p += 15;
    if (id == MAE_NO_ID) {
        memcpy(p, "null", 4);
        p += 4;
    } else {
        p = mae__put_i64(p, id);
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

/* ---- a caller's own event ---------------------------------------------------- */

int mae__ev_generic(mae__buf *b, const char *event_type, int64_t id, const char *data_json,
                    const char *source)
{
    size_t start = b->len;
    open_line_str(b, event_type, id);
    if (!data_json) {
        mae__buf_put(b, LIT("{}"));
    } else if (mae__json_compact_object(b, data_json) != 0) {
        b->len = start;
        if (b->ptr)
            b->ptr[start] = '\0';
        return -1;
    }
    close_line_str(b, source);
    return 0;
}
