/* Internal: the hub, the relay's source when it runs without Redis
 * (docs/relay.md, "Hub mode"). Events arrive on POST /api/events/publish
 * (relay/publish.c hands them over with mae__hub_publish); the hub gives
 * each an id in the stream-id grammar, "<ms>-<seq>", strictly increasing
 * even when the clock steps back, passes it to the fan-out at once, and
 * keeps the last ones in memory as its history (relay/history.h), bounded
 * by a count and by bytes, whichever bites first, so clients resume with
 * Last-Event-ID exactly as in stream mode.
 *
 * Ids this hub never issued: an id newer than its newest, and (through
 * the history's floor) a non-zero id older than the hub's start, are
 * "unknown_id"; 0-0 is "from the beginning". Not thread-safe: everything
 * runs on the relay's loop. Never installed. */
#ifndef MAE_RELAY_HUB_SOURCE_H
#define MAE_RELAY_HUB_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "relay/source.h"

/* Per kept event, counted against --history-bytes on top of its line: the
 * bookkeeping the hub holds for it. */
#define MAE__HUB_ENTRY_OVERHEAD 32

/* Hands count events to the hub: lines holds them, each ending in '\n'
 * (the canonical lines of core/envelope). Each gets the next id, is kept
 * in the history (oldest ones evicted past the bounds) and is passed to
 * on_event before this returns, inside one on_batch pair when there are
 * several: the caller is on the loop and outside every source callback.
 * *last (may be NULL) gets the last id given. Returns 0, or MAE_ENOMEM
 * with nothing delivered and nothing kept. src must be a hub. */
int mae__hub_publish(mae__source *src, const char *lines, size_t len, size_t count,
                     mae__stream_id *last);

/* For /metrics and /api/events/health. */
typedef struct mae__hub_stats {
    uint64_t kept;            /* events in the history now */
    uint64_t kept_bytes;      /* their bytes, overhead included */
    uint64_t evicted;         /* events dropped from the history by its bounds */
    uint64_t issued;          /* ids given */
    uint64_t clock_steps;     /* times the clock was behind the last id */
} mae__hub_stats;
void mae__hub_get_stats(const mae__source *src, mae__hub_stats *out);

/* Tests: the clock ids are made from, in epoch milliseconds (NULL: the
 * real one), to step it back. Not thread-safe; process-wide. */
void mae__hub_set_clock(uint64_t (*clock_ms)(void));

#endif
