/* Internal: the relay's reader of a Redis Stream, on one libevent loop with
 * hiredis' async API. One connection follows the stream with XREAD BLOCK and
 * hands every new entry, in order, to on_entry; a second connection serves
 * history reads (the bounds of the stream, XRANGE pages) for the clients
 * that resume (relay/resume.h), because the first one is always blocked.
 *
 * Redis down, hung or restarted never blocks the loop: each connection has
 * a watchdog (no reply within block_ms + reply_margin_ms: declared dead)
 * and TCP keepalive, and reconnects on core/backoff.h's schedule. After a
 * reconnect the reader continues from the last id it delivered, so nothing
 * is lost and nothing is delivered twice; if the stream went backwards
 * meanwhile (recreated, or restored from an older snapshot) on_rewound says
 * so, because then clients may have missed events.
 *
 * Connecting resolves a host name with hiredis' blocking getaddrinfo: give
 * an address (127.0.0.1, [::1]) or a unix socket to keep the loop free of
 * DNS. A source is not thread-safe: every call, and every callback, happens
 * on the thread running its event_base. Never installed. */
#ifndef MAE_STREAM_SOURCE_H
#define MAE_STREAM_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "relay/stream_id.h"

struct event_base;

typedef struct mae__stream_source mae__stream_source;

/* One entry: its id and the value of its `event` field (the JSON line the
 * publisher appended). line is NULL for a foreign entry without that field:
 * it still has a place in the order, but nothing to send. Borrowed: valid
 * only during the callback that receives it. */
typedef struct mae__stream_entry {
    mae__stream_id id;
    const char *line;
    size_t len;
} mae__stream_entry;

/* What the server says about the stream (XINFO STREAM), for deciding how a
 * client resumes (mae__resume_decide). */
typedef struct mae__stream_bounds {
    bool exists;                /* the key holds a stream */
    uint64_t length;            /* entries kept */
    mae__stream_id first;       /* the oldest kept entry; 0-0 when length is 0 */
    mae__stream_id last;        /* last-generated-id: the newest id ever added
                                 * (kept or not); 0-0 when !exists */
    bool added_known;           /* the server reports entries-added (Redis >= 7.0) */
    uint64_t entries_added;     /* every entry ever added; more than length when
                                 * some were trimmed or deleted */
} mae__stream_bounds;

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

/* The event_base the source runs on. */
struct event_base *mae__stream_source_base(const mae__stream_source *s);

/* ---- history reads (the second link) ----------------------------------- */

typedef struct mae__stream_req mae__stream_req;

/* A page of XRANGE, in order (n may be 0: nothing after the start).
 * sent_at is the reader's position S when the request went out: the page
 * was read by Redis after every entry up to sent_at had been delivered to
 * on_entry, so a short page holds every entry up to it still kept. */
typedef void (*mae__stream_range_fn)(void *user, const mae__stream_entry *entries, size_t n,
                                     const mae__stream_id *sent_at);
typedef void (*mae__stream_bounds_fn)(void *user, const mae__stream_bounds *bounds);

/* Asks for the entries after `after` (exclusive; 0-0 gives the stream from
 * its start), at most count (> 0). Asks for the stream's bounds.
 *
 * Contract of both: the callback is called exactly once, from the loop,
 * unless the request is cancelled first or the source freed. Requests wait
 * until the reader's position is established (so a page can always be
 * compared with it), survive lost connections (they are sent again) and an
 * error reply (sent again after the backoff). Returns NULL only on out of
 * memory; the handle is valid until the callback starts or the request is
 * cancelled. */
mae__stream_req *mae__stream_source_range(mae__stream_source *s, const mae__stream_id *after,
                                          unsigned count, mae__stream_range_fn fn, void *user);
mae__stream_req *mae__stream_source_bounds(mae__stream_source *s, mae__stream_bounds_fn fn,
                                           void *user);

/* Cancels a request whose callback has not started: it will never be
 * called. May be called from any of the source's callbacks. NULL is a
 * no-op. */
void mae__stream_req_cancel(mae__stream_req *r);

/* ---- parsing (pure; shared with `events tail --stream`) ------------------ */

struct redisReply;

/* Parses one entry of a reply to XRANGE or XREAD, [id, [field, value,
 * ...]], into out (line borrowed from r). Returns false when it is not one. */
bool mae__stream_parse_entry(const struct redisReply *r, mae__stream_entry *out);

/* Parses a reply of XINFO STREAM (RESP2: a flat list of names and values),
 * given as the hiredis reply object. Returns false when it is not one. */
bool mae__stream_parse_info(const struct redisReply *r, mae__stream_bounds *out);

#endif
