/* Internal: where the relay's events come from, behind one small interface
 * so that the pub/sub subscriber of today and a Redis Stream reader (stream
 * mode) are interchangeable. A source runs on the relay's event loop and
 * reports through callbacks; it never blocks the loop. Never installed. */
#ifndef MAE_RELAY_SOURCE_H
#define MAE_RELAY_SOURCE_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;

/* What a source tells the relay. Each callback is called from the loop and
 * must not free the source. */
typedef struct mae__source_cb {
    void *ctx;
    /* One event: data (len bytes, borrowed for the call) exactly as it came
     * from Redis; id is its stream id, NULL in pub/sub mode. */
    void (*on_event)(void *ctx, const char *data, size_t len, const char *id);
    /* The source is receiving events again. after_loss: a subscription
     * existed before and was lost, so clients may have missed events.
     * reconnected: this is not the first connection. */
    void (*on_up)(void *ctx, bool after_loss, bool reconnected);
    /* The source stopped receiving events (it reconnects by itself). */
    void (*on_down)(void *ctx);
    /* One line for the log, without a newline. */
    void (*on_log)(void *ctx, const char *line);
} mae__source_cb;

/* Every source starts with this header; the two calls below dispatch
 * through it. */
typedef struct mae__source mae__source;
typedef struct mae__source_ops {
    bool (*up)(const mae__source *s);
    void (*free)(mae__source *s);
} mae__source_ops;
struct mae__source {
    const mae__source_ops *ops;
};

/* Where and what to read. Strings are copied. */
typedef struct mae__source_config {
    const char *redis_url;  /* redis://... or unix:///..., parsed by core/url */
    const char *channel;    /* pub/sub channel */
} mae__source_config;

/* The pub/sub subscriber: one connection, SUBSCRIBE channel, a watchdog
 * that re-sends the SUBSCRIBE as a probe and drops a connection that does
 * not answer, and reconnects on core/backoff's schedule. Starts connecting
 * at once. Returns 0 and *out, MAE_EINVAL (err says why: a bad URL) or
 * MAE_ENOMEM. */
int mae__subscriber_new(struct event_base *base, const mae__source_config *cfg,
                        const mae__source_cb *cb, mae__source **out, char *err, size_t errlen);

/* True while events arrive (subscribed). */
bool mae__source_up(const mae__source *s);

/* Stops and frees the source; no callback is called from here on. NULL is
 * a no-op. */
void mae__source_free(mae__source *s);

/* The watchdog's timing: a probe every PROBE period while subscribed; a
 * connection without a complete answer (subscription or probe) within
 * DEADLINE is taken for hung, dropped and made again. */
#define MAE__SOURCE_PROBE_MS 1000
#define MAE__SOURCE_DEADLINE_MS 5000
/* The reconnect schedule (core/backoff): doubling from MIN to MAX. */
#define MAE__SOURCE_BACKOFF_MIN_MS 100
#define MAE__SOURCE_BACKOFF_MAX_MS 5000

#endif
