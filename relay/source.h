/* Internal: where the relay's events come from, behind one interface that
 * every source implements: the pub/sub subscriber (relay/subscriber.c), the
 * Redis Stream reader (relay/stream_source.c) and the in-memory hub
 * (relay/hub_source.c). The fan-out and the clients only ever see this interface: a source
 * reports through callbacks, answers whether it is up, and, when its events
 * carry ids, offers its history (relay/history.h) for the clients that
 * resume. A source runs on the relay's event loop and never blocks it.
 * Never installed.
 *
 * hiredis 0.14 contexts: the one rule every source follows.
 * - A context is freed (redisAsyncFree) only by its owner and only after it
 *   is detached: the owner's pointer is set to NULL first, so every
 *   callback the dying context still fires (replies with NULL, the
 *   disconnect callback) sees a stranger and returns without acting.
 * - Freeing from inside one of the context's reply callbacks is allowed:
 *   hiredis defers it until the callback returns (REDIS_IN_CALLBACK). It is
 *   never done from the connect or disconnect callbacks: there hiredis
 *   frees the context itself once the callback returns, so the owner only
 *   detaches it.
 * - A NULL reply means hiredis is tearing the context down (we freed it,
 *   or the server went away): it is treated as the link's loss and never
 *   answered with a free.
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
} mae__source_cb;

/* Where and what to read. Strings are borrowed for the constructor. */
typedef struct mae__source_config {
    struct event_base *base;
    const char *redis_url;  /* redis://... or unix:///..., parsed by core/url */
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
