/* Internal: where the relay's events come from, behind one interface that
 * every source implements: the pub/sub subscriber (relay/subscriber.c), the
 * Redis Stream reader (relay/stream_source.c) and the in-memory hub
 * (relay/hub_source.c). The fan-out and the clients only ever see this interface: a source
 * reports through callbacks, answers whether it is up, and, when its events
 * carry ids, offers its history (relay/history.h) for the clients that
 * resume. A source runs on the relay's event loop and never blocks it.
 * Never installed.
 *
 * Redis connections: the one rule every Redis source follows.
 * - A source owns its connections only through relay/link.h: the link
 *   alone frees a connection (in its fail() and mae__link_free()), and
 *   answers every command still waiting with a NULL reply, at once, before
 *   telling the source it is down. A NULL reply means exactly that and is
 *   never answered with a free or a retry: the link retries by itself.
 * - A reply callback may fail its link (mae__link_fail, or an error reply
 *   through mae__link_accept); the replies that came with it are dropped.
 *   It never frees the link, and the reply it is given is freed by the
 *   link when it returns.
 * - A source never frees itself from its callbacks; the relay frees a
 *   source only from its own timers and signals, never from inside one of
 *   the source's callbacks. */
#ifndef MAE_RELAY_SOURCE_H
#define MAE_RELAY_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "relay/history.h"
#include "stream/id.h"

struct event_base;

/* What a source tells the relay. Each callback is called from the loop,
 * never from inside a mae__source_* call, and must not free the source. */
typedef struct mae__source_cb {
    void *ctx;
    /* One event, in order: data (len bytes, borrowed for the call) exactly
     * as the publisher wrote it; id its id, NULL from a source without
     * ids. */
    void (*on_event)(void *ctx, const mae__stream_id *id, const char *data, size_t len);
    /* The source receives events again (up; reconnected: not its first
     * connection) or stopped (it reconnects by itself). Once per change. */
    void (*on_state)(void *ctx, bool up, bool reconnected);
    /* Clients may have missed events (a subscription lost and regained, a
     * stream that went backwards): every live client gets a reset frame
     * with this JSON data (one line, borrowed for the call). */
    void (*on_reset)(void *ctx, const char *json, size_t len);
    /* One line for the log, without a newline. */
    void (*on_log)(void *ctx, const char *line);
    /* Optional: the on_event calls between begin (true) and end (false)
     * arrived together; the relay may coalesce its writes to each client
     * until the end. Never nested. May be NULL. */
    void (*on_batch)(void *ctx, bool begin);
    /* Optional: one attempt to connect to Redis failed (refused, timed
     * out, a TLS certificate that failed verification: why says which).
     * Counted; the source retries by itself. May be NULL. */
    void (*on_connect_failed)(void *ctx, const char *why);
    /* Optional: Redis answered the source's read or probe (an XREAD, with
     * entries or timed out; a SUBSCRIBE probe): the source is making
     * progress (/healthz's progress rule). May be NULL. */
    void (*on_progress)(void *ctx);
} mae__source_cb;

/* Where and what to read. Strings are borrowed for the constructor. */
typedef struct mae__source_config {
    struct event_base *base;
    const char *redis_url;  /* redis://, rediss:// or unix:///, parsed by core/url */
    const char *channel;    /* pub/sub: the channel */
    const char *stream_key; /* stream: the stream's key */
    bool hub;               /* the hub: no Redis; events come from mae__hub_publish */
    size_t history_events;  /* hub: events kept for resuming (0: none) */
    size_t history_bytes;   /* hub: and at most this many bytes of them */
} mae__source_config;

typedef struct mae__source mae__source;
typedef struct mae__source_ops {
    bool (*up)(const mae__source *s);
    /* NULL for a source whose events carry no ids. */
    const mae__history *(*history)(mae__source *s);
    void (*free)(mae__source *s);
} mae__source_ops;
/* Every source starts with this header; the calls below dispatch through it. */
struct mae__source {
    const mae__source_ops *ops;
};

/* The constructors: each starts connecting from the loop and returns 0 and
 * *out, MAE_EINVAL (err says why: a bad URL, a missing key) or MAE_ENOMEM.
 * *out is written only on success. */
int mae__source_pubsub_new(const mae__source_config *cfg, const mae__source_cb *cb,
                           mae__source **out, char *err, size_t errlen);
int mae__source_stream_new(const mae__source_config *cfg, const mae__source_cb *cb,
                           mae__source **out, char *err, size_t errlen);
int mae__source_hub_new(const mae__source_config *cfg, const mae__source_cb *cb,
                        mae__source **out, char *err, size_t errlen);

/* The source cfg asks for: the hub when hub is set, the stream reader
 * when stream_key is, else the pub/sub subscriber. As the constructors. */
int mae__source_new(const mae__source_config *cfg, const mae__source_cb *cb, mae__source **out,
                    char *err, size_t errlen);

/* True while events arrive. NULL: false. */
bool mae__source_up(const mae__source *s);

/* The source's history, or NULL when its events carry no ids. */
const mae__history *mae__source_history(mae__source *s);

/* Stops and frees the source: no callback is called from here on, pending
 * history reads are dropped. Must not be called from inside the source's
 * callbacks. NULL is a no-op. */
void mae__source_free(mae__source *s);

#endif
