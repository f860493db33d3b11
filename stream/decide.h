/* Internal: how a reader resumes a stream from an id it was given
 * (docs/relay.md, "Stream mode"): a pure decision from the reader's id
 * (parsed, or the parse error) and the stream's bounds to a plan (which
 * reset, if any, then what to replay, then live), and the reset frames'
 * texts. Used by the relay's per-client catch-up (relay/resume.h) and by
 * `events tail --since`. Pure functions; safe from any thread. Never
 * installed. */
#ifndef MAE_STREAM_DECIDE_H
#define MAE_STREAM_DECIDE_H

#include <stdbool.h>
#include <stddef.h>

#include "stream/id.h"
#include "stream/reply.h"

typedef enum mae__resume_kind {
    MAE__RESUME_LIVE = 0,      /* no id given: live from now, nothing else */
    MAE__RESUME_REPLAY,        /* every entry after the id, then live */
    MAE__RESUME_BAD_ID,        /* reset bad_last_event_id, then live from now */
    MAE__RESUME_TRIMMED,       /* reset history_trimmed with oldest_id, then every
                                * kept entry, then live */
    MAE__RESUME_UNKNOWN_ID,    /* reset unknown_id, then live from now */
    MAE__RESUME_ROLLED_BACK,   /* the id is gone although newer entries exist (a
                                * failover rolled it back): reset rolled_back
                                * with last_kept (in oldest), then every entry
                                * after the id, then live */
} mae__resume_kind;

typedef struct mae__resume_plan {
    mae__resume_kind kind;
    bool replay;               /* REPLAY and TRIMMED: XRANGE after `after` */
    mae__stream_id after;      /* exclusive start of the replay */
    bool has_oldest;           /* TRIMMED: oldest is the oldest kept entry;
                                * false when nothing is kept at all.
                                * ROLLED_BACK: oldest is the newest entry
                                * before the id (last_kept); false: none */
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

#endif
