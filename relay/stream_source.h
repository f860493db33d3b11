/* Internal: the relay's reader of a Redis Stream, on one libevent loop with
 * hiredis' async API. One connection follows the stream with XREAD BLOCK and
 * hands every new entry, in order, to on_entry; a second connection serves
 * history reads (the bounds of the stream, XRANGE pages) for the clients
 * that resume (relay/resume.h), because the first one is always blocked.
 *
 * Redis down, hung or restarted never blocks the loop: each connection is
 * a relay/link.h link, with a watchdog (no reply within block_ms +
 * reply_margin_ms: declared dead), TCP keepalive, and reconnects on
 * core/backoff.h's schedule. After a
 * reconnect the reader continues from the last id it delivered, so nothing
 * is lost and nothing is delivered twice; if the stream went backwards
 * meanwhile (recreated, or restored from an older snapshot) on_rewound says
 * so, because then clients may have missed events.
 *
 * A host name is looked up with evdns (relay/link.h), never blocking the
 * loop. A source is not thread-safe: every call, and every callback, happens
 * on the thread running its event_base. Never installed. */
#ifndef MAE_STREAM_SOURCE_H
#define MAE_STREAM_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "relay/history.h"
#include "relay/source.h"
#include "stream/id.h"
#include "stream/reply.h"

struct event_base;

typedef struct mae__stream_source mae__stream_source;

/* A new entry on the stream, in order: each id is greater than the one
 * before, across reconnects. Foreign entries (no `event` field) are skipped
 * but advance the position. */
typedef void (*mae__stream_entry_fn)(void *user, const mae__stream_entry *entry);
/* The reader's connection came up (connected, why NULL) or went down
 * (why: one sentence, e.g. "no reply within 5000 ms"). Called once per
 * change, and also for every failed attempt while down. */
typedef void (*mae__stream_state_fn)(void *user, bool connected, const char *why);
/* After a reconnect the stream's newest id is older than the last one
 * delivered: the stream was recreated or restored from an older snapshot.
 * The reader continues from `last`; clients should get a reset
 * (unknown_id), and mae__resume objects forget their position. */
typedef void (*mae__stream_rewound_fn)(void *user, const mae__stream_id *last);

typedef struct mae__stream_source_config {
    struct event_base *base;   /* borrowed; outlives the source */
    const char *redis_url;     /* redis://... or unix://... (core/url.h); copied */
    const char *key;           /* the stream's key; copied */
    int block_ms;              /* XREAD BLOCK, default 2000 */
    int reply_margin_ms;       /* watchdog beyond block_ms, default 3000 */
    int backoff_min_ms;        /* reconnect schedule, default 100 */
    int backoff_max_ms;        /* default 5000 */
    unsigned read_count;       /* XREAD COUNT, default 500 */
    mae__stream_entry_fn on_entry;       /* required */
    mae__stream_state_fn on_state;       /* may be NULL */
    mae__stream_rewound_fn on_rewound;   /* may be NULL */
    /* Around the entries of one XREAD reply (begin true, then false), when
     * it holds more than one: the user may coalesce its writes. May be
     * NULL. */
    void (*on_batch)(void *user, bool begin);
    void *user;                          /* passed to the three callbacks */
} mae__stream_source_config;

/* Counters for the relay's /metrics. */
typedef struct mae__stream_source_stats {
    uint64_t entries;          /* delivered to on_entry */
    uint64_t reconnects;       /* connections lost or failed, both links */
    uint64_t rewinds;          /* times on_rewound was called */
    uint64_t history_reads;    /* bounds and range replies handed out */
} mae__stream_source_stats;

/* Fills the defaults (everything else zero). */
void mae__stream_source_config_init(mae__stream_source_config *cfg);

/* Creates the source and starts connecting both links; callbacks come from
 * the loop later, never from inside this call. Returns MAE_OK and *out, or
 * MAE_EINVAL (bad URL, empty key, missing base or on_entry; the reason in
 * err) or MAE_ENOMEM; *out is written only on success. */
int mae__stream_source_new(const mae__stream_source_config *cfg, mae__stream_source **out,
                           char *err, size_t errlen);

/* Closes both links and frees the source. Pending history requests are
 * dropped without their callbacks. Must not be called from inside one of
 * the source's callbacks. NULL is a no-op. */
void mae__stream_source_free(mae__stream_source *s);

/* True while the reader's link is up. */
bool mae__stream_source_connected(const mae__stream_source *s);

/* The reader's position S: the id of the last entry delivered, or the
 * stream's newest id when the reader started. False (and *out untouched)
 * before the first connection established it. */
bool mae__stream_source_position(const mae__stream_source *s, mae__stream_id *out);

/* Bumped each time on_rewound is called. */
uint64_t mae__stream_source_epoch(const mae__stream_source *s);

void mae__stream_source_get_stats(const mae__stream_source *s, mae__stream_source_stats *out);

/* The source's history (relay/history.h): bounds and XRANGE pages over
 * the second link, for the clients that resume. Borrowed; lives as long as
 * the source. */
const mae__history *mae__stream_source_history(mae__stream_source *s);

#endif
