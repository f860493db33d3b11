/* Internal: the history of a source that gives its events ids (the Redis
 * Stream reader and the in-memory hub), as a function table: what
 * a client's catch-up (relay/resume.h) needs to replay what it missed and
 * hand it over to the live fan-out. A source without ids (pub/sub) has no
 * history. The table is also the seam the resume's unit tests fake.
 *
 * Every call and callback happens on the thread running the source's
 * event_base. Never installed. */
#ifndef MAE_RELAY_HISTORY_H
#define MAE_RELAY_HISTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stream/id.h"
#include "stream/reply.h"

struct event_base;

/* A read in flight; opaque, owned by the source. */
typedef struct mae__stream_req mae__stream_req;

/* A page of entries after the asked id, in order (n may be 0: nothing
 * after it). sent_at is the source's position S when the read was made:
 * every entry up to sent_at had already been handed to the live fan-out,
 * so a short page holds every entry up to it still kept. entries are
 * borrowed for the call. */
typedef void (*mae__stream_range_fn)(void *user, const mae__stream_entry *entries, size_t n,
                                     const mae__stream_id *sent_at);
typedef void (*mae__stream_bounds_fn)(void *user, const mae__stream_bounds *bounds);
/* Whether the entry id exists, and the newest entry before it (has_before
 * false: none). */
typedef void (*mae__stream_kept_fn)(void *user, bool exists, bool has_before,
                                    const mae__stream_id *before);

typedef struct mae__history_ops {
    /* S, the id of the last entry the source handed to the fan-out (or
     * its newest when it started): false, *out untouched, before the
     * source knows it. */
    bool (*position)(void *self, mae__stream_id *out);
    /* Bumped each time the source's ids went backwards (a reset for every
     * client); a client's position from an older epoch is forgotten. */
    uint64_t (*epoch)(void *self);
    struct event_base *(*base)(void *self);
    /* Reads the bounds; the entries after `after` (exclusive), at most
     * count. Each callback is called exactly once, from the loop (never
     * from inside this call), unless the request is cancelled first or the
     * source freed. Reads wait while the source does not know S, and
     * survive a lost link (they are made again). NULL only on out of
     * memory. */
    mae__stream_req *(*bounds)(void *self, mae__stream_bounds_fn fn, void *user);
    mae__stream_req *(*range)(void *self, const mae__stream_id *after, unsigned count,
                              mae__stream_range_fn fn, void *user);
    /* Cancels a read whose callback has not started; NULL is a no-op. */
    void (*cancel)(void *self, mae__stream_req *req);
    /* Optional (NULL: none): the floor F of the source's ids. A non-zero
     * id below F was never issued by this source (the hub's ids from
     * before it started): such a client gets unknown_id, not
     * history_trimmed. */
    bool (*floor)(void *self, mae__stream_id *out);
    /* Optional (NULL: not checked): does the entry id exist (XRANGE id id),
     * and which is the newest entry before it. A client's id that is gone
     * although newer entries exist was rolled back by a failover
     * (docs/relay.md, "rolled_back"). Called as the reads above. */
    mae__stream_req *(*kept)(void *self, const mae__stream_id *id, mae__stream_kept_fn fn,
                             void *user);
} mae__history_ops;

typedef struct mae__history {
    const mae__history_ops *ops;
    void *self;
} mae__history;

#endif
