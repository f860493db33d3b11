/* Internal: one relay client's position in a source with ids, and its
 * catch-up (docs/relay.md, "Stream mode"): the whole hand-off from a
 * client's Last-Event-ID to the live fan-out lives here. The resume asks
 * the source's history (relay/history.h) for the bounds, decides with
 * mae__resume_decide (stream/decide.h), replays the pages after the
 * client's last id and hands the client over to the live fan-out without a
 * gap or a duplicate.
 *
 * The hand-off: the resume keeps L, the id of the last entry the client was
 * given. While it replays, the fan-out gives the client nothing
 * (mae__resume_admit is false); after each page it compares L with the
 * source's position S (the last entry the fan-out delivered). L >= S: every
 * entry up to S has reached the client, every later one will come from the
 * fan-out, so the client goes live, and the fan-out skips ids <= L (a page
 * can run ahead of the reader). L < S: the next page is fetched after L.
 * A short page that ends before S means the entries between were deleted:
 * the page was requested after S was delivered, so it would have seen them
 * (L becomes the S of that request, so the loop always ends).
 *
 * A client given no replay by its plan (bad_last_event_id, unknown_id)
 * goes live from where the source stood when it came (its `joined`
 * position): the entries delivered while its decision waited for the
 * bounds are replayed from there first, so it misses nothing after joining.
 *
 * Not thread-safe: everything runs on the source's event loop. Never
 * installed. */
#ifndef MAE_RESUME_H
#define MAE_RESUME_H

#include <stdbool.h>
#include <stddef.h>

#include "relay/history.h"
#include "stream/decide.h"
#include "stream/id.h"

/* ---- the per-client catch-up -------------------------------------------- */

typedef struct mae__resume mae__resume;

/* What the resume asks the relay to do for its client, in this order:
 * reset (at most once, first), entry for each replayed entry in id order,
 * live once. After live the relay sends the client what
 * mae__resume_admit accepts. Every callback comes from the loop, never
 * from inside a mae__resume_* call, and must not free the resume (the
 * relay closes clients deferred, so it never needs to). */
typedef struct mae__resume_events {
    void (*reset)(void *user, const char *json, size_t len);
    void (*entry)(void *user, const mae__stream_id *id, const char *line, size_t len);
    void (*live)(void *user);
    /* Optional flow control, asked before each replayed entry: false parks
     * the replay (the rest of the page is kept) until mae__resume_wake,
     * e.g. once the client's unread output has drained. NULL: never park. */
    bool (*want_more)(void *user);
} mae__resume_events;

/* Starts one client's catch-up. last_event_id is the header's (or
 * ?last_event_id=) value, len bytes, borrowed for this call; NULL for none:
 * the client is then live on return and no callback is ever made. ev is
 * copied; h and user are borrowed and must outlive the resume. page is the
 * page size asked of the history (0: 500). Returns NULL on out of memory. */
mae__resume *mae__resume_start(const mae__history *h, const char *last_event_id, size_t len,
                               unsigned page, const mae__resume_events *ev, void *user);

/* Asked by the fan-out for each live entry: true when it goes to this
 * client (the client is live and id > L; L becomes id). After a rewind of
 * the source the client's L is forgotten first. */
bool mae__resume_admit(mae__resume *r, const mae__stream_id *id);

/* As mae__resume_admit for a run of entries first..last in increasing
 * order, all or none: true (L becomes last) when the client is live and
 * first > L, so every entry of the run goes to it; false otherwise, and
 * nothing changes (ask mae__resume_admit for each then). */
bool mae__resume_admit_run(mae__resume *r, const mae__stream_id *first, const mae__stream_id *last);

/* True once live() was called. */
bool mae__resume_is_live(const mae__resume *r);

/* L, the id of the last entry given to the client (0-0 for none). */
mae__stream_id mae__resume_last(const mae__resume *r);

/* The plan decided for the client (kind LIVE until the bounds came). */
mae__resume_plan mae__resume_get_plan(const mae__resume *r);

/* Continues a replay parked by want_more. No-op otherwise. */
void mae__resume_wake(mae__resume *r);

/* Stops the catch-up (cancelling its pending read) and frees it; no
 * callback comes after. Not from inside the resume's own callbacks. NULL
 * is a no-op. */
void mae__resume_free(mae__resume *r);

#endif
