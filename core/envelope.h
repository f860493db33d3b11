/* Internal: the body of POST /api/events/publish, the route through which
 * MailAgent's other processes hand events to the relay, read into the
 * library's canonical event lines or refused with the HTTP answer it earns
 * (docs/events.md#an-envelope-handed-over-as-json). A pure function: no
 * I/O, no globals but the real-time clock for a missing ts. Never
 * installed. */
#ifndef MAE_ENVELOPE_H
#define MAE_ENVELOPE_H

#include <stddef.h>

/* The default and the documented bound of one event, in bytes, of the
 * envelope as received and of the line written (the relay's
 * --max-event-bytes). */
#define MAE_ENVELOPE_MAX_EVENT_BYTES ((size_t)1 << 20)

typedef struct mae__envelope_result {
    int status;        /* 200 accepted, 400 refused, 413 an event too large,
                          503 out of memory (try again) */
    char *lines;       /* on 200: the events' lines, each ending in '\n' (malloc'd) */
    size_t len;        /* bytes of lines */
    size_t count;      /* events in lines */
    size_t line_no;    /* on refusal of NDJSON: the body's line at fault (1-based) */
    char reason[192];  /* on refusal: one sentence saying why */
} mae__envelope_result;

/* Reads body (len bytes, not NUL-terminated, may hold any bytes) as the
 * publish route's content_type says: "application/x-ndjson" (any case,
 * parameters ignored) is one envelope a line, blank lines ignored, all or
 * nothing; anything else (NULL too) is exactly one envelope. An envelope is
 * one JSON object (the grammar of core/text.h, strict UTF-8) with
 * - event_type: required, a non-empty string;
 * - internal_id: an integer (int64, not -2^63) or null; absent is null;
 * - data: an object; absent, null or an empty value ([] "" 0 false) is {},
 *   as MailAgent's `data or {}`;
 * - source: a non-empty string; absent or null is "mailagent";
 * - ts: a finite number of epoch seconds; absent or null is now;
 * and nothing else that is kept: other keys are dropped, a repeated key's
 * last value counts. Each event over max_event_bytes (0 = the default), as
 * received or as written, is a 413. Fills *out (always; free it with
 * mae__envelope_result_free) and returns out->status. */
int mae__envelope_parse(const char *body, size_t len, const char *content_type,
                        size_t max_event_bytes, mae__envelope_result *out);

void mae__envelope_result_free(mae__envelope_result *r);

#endif
