/* Internal: how one relay client resumes a stream (docs/relay.md, "Stream mode:
 * ids and resume"). Two layers:
 *
 * - mae__resume_decide, a pure function from the client's Last-Event-ID
 *   (parsed, or the parse error) and the stream's bounds to a plan: which
 *   reset frame (if any), then what to replay, then live;
 * - mae__resume, the per-client catch-up that carries the plan out over the
 *   source's history link (XRANGE pages after the client's last id) and
 *   hands the client over to the live fan-out without a gap or a duplicate.
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
 * Not thread-safe: everything runs on the source's event loop. Never
 * installed. */
#ifndef MAE_RESUME_H
#define MAE_RESUME_H

#include <stdbool.h>
#include <stddef.h>

#include "relay/stream_id.h"
#include "relay/stream_source.h"

/* ---- the decision ------------------------------------------------------- */

typedef enum mae__resume_kind {
    MAE__RESUME_LIVE = 0,      /* no id given: live from now, nothing else */
    MAE__RESUME_REPLAY,        /* every entry after the id, then live */
    MAE__RESUME_BAD_ID,        /* reset bad_last_event_id, then live from now */
    MAE__RESUME_TRIMMED,       /* reset history_trimmed with oldest_id, then every
                                * kept entry, then live */
    MAE__RESUME_UNKNOWN_ID,    /* reset unknown_id, then live from now */
} mae__resume_kind;

typedef struct mae__resume_plan {
    mae__resume_kind kind;
    bool replay;               /* REPLAY and TRIMMED: XRANGE after `after` */
    mae__stream_id after;      /* exclusive start of the replay */
    bool has_oldest;           /* TRIMMED: oldest is the oldest kept entry;
                                * false when nothing is kept at all */
    mae__stream_id oldest;
} mae__resume_plan;

/* The decision table. parse_rc is what mae__stream_id_parse returned for
 * the client's id, or 1 when the client sent none; id is the parsed id
 * (read only when parse_rc is MAE__STREAM_ID_OK); b the stream's bounds.
 *
 *   no id                                      LIVE
 *   malformed (empty, too long, NUL, CR, ...)  BAD_ID
 *   id > the stream's newest id ever           UNKNOWN_ID
 *     (a missing stream's newest id is 0-0)
 *   id before the oldest kept entry, unless    TRIMMED
 *     it is 0-0 and the stream never lost one
 *   otherwise                                  REPLAY after id
 *
 * Redis 7.0 reports how many entries were ever added (entries-added), not
 * which ones trimming removed, so an id before the oldest kept entry may
 * get a reset it did not strictly need (it had seen every removed entry);
 * never the reverse. A non-zero id before the first entry of a stream that
 * never lost one is from an earlier stream under the same key: TRIMMED too,
 * as events between the two are unknown. 0-0 ("from the beginning") on an
 * intact stream is a REPLAY of everything; on one that lost entries (or a
 * server that does not say) it is TRIMMED.
 *
 * UNKNOWN_ID goes live from now without replaying: the stream's kept
 * entries are all older than the client's id (it has seen them, or they are
 * from another stream), and its id is forgotten so that whatever ids the
 * stream gives next reach it. This function can't fail. */
mae__resume_plan mae__resume_decide(int parse_rc, const mae__stream_id *id,
                                    const mae__stream_bounds *b);

/* The data of the plan's reset frame, one line of JSON, exactly:
 *   {"reason":"bad_last_event_id"}
 *   {"reason":"unknown_id"}
 *   {"reason":"history_trimmed","oldest_id":"<id>"}  ("oldest_id":null
 *                                                     when nothing is kept)
 * written with its NUL into buf (size >= MAE__RESUME_RESET_MAX). Returns its
 * length, or 0 when the plan has no reset (LIVE, REPLAY). */
#define MAE__RESUME_RESET_MAX 96
size_t mae__resume_reset_json(const mae__resume_plan *plan, char *buf, size_t size);

/* The reset for clients when the source reports a rewind (the stream went
 * backwards; see mae__stream_rewound_fn): {"reason":"unknown_id"}. */
extern const char mae__resume_rewound_json[];

/* ---- the per-client catch-up -------------------------------------------- */

typedef struct mae__resume mae__resume;

/* What the resume asks the relay to do for its client, in this order:
 * reset (at most once, first), entry for each replayed entry in id order,
 * live once. After live the relay sends the client what
 * mae__resume_admit accepts. Every callback comes from the loop, never
 * from inside a mae__resume_* call; mae__resume_free may be called from
 * inside any of them. */
typedef struct mae__resume_events {
    void (*reset)(void *user, const char *json, size_t len);
    void (*entry)(void *user, const mae__stream_id *id, const char *line, size_t len);
    void (*live)(void *user);
    /* Optional flow control: asked before each page after the first; false
     * parks the replay until mae__resume_wake (e.g. when the client's
     * output buffer has drained). NULL: never park. */
    bool (*want_more)(void *user);
} mae__resume_events;

/* Starts one client's catch-up. last_event_id is the header's (or
 * ?last_event_id=) value, len bytes, borrowed for this call; NULL for none:
 * the client is then live on return and no callback is ever made. ev is
 * copied; src and user are borrowed and must outlive the resume. page is
 * the XRANGE COUNT (0: 500). Returns NULL on out of memory. */
mae__resume *mae__resume_start(mae__stream_source *src, const char *last_event_id, size_t len,
                               unsigned page, const mae__resume_events *ev, void *user);

/* Asked by the fan-out for each live entry: true when it goes to this
 * client (the client is live and id > L; L becomes id). After a rewind of
 * the source the client's L is forgotten first. */
bool mae__resume_admit(mae__resume *r, const mae__stream_id *id);

/* True once live() was called. */
bool mae__resume_is_live(const mae__resume *r);

/* L, the id of the last entry given to the client (0-0 for none). */
mae__stream_id mae__resume_last(const mae__resume *r);

/* The plan decided for the client (kind LIVE until the bounds came). */
mae__resume_plan mae__resume_get_plan(const mae__resume *r);

/* Continues a replay parked by want_more. No-op otherwise. */
void mae__resume_wake(mae__resume *r);

/* Stops the catch-up (cancelling its pending read) and frees it; no
 * callback comes after. Allowed inside the resume's callbacks. NULL is a
 * no-op. */
void mae__resume_free(mae__resume *r);

#endif
