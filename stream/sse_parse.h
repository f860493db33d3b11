/* Internal: a Server-Sent Events parser for the client side (`mailagent
 * events tail --relay`): bytes in, events out, by the rules of the HTML
 * standard's "Interpreting an event stream", with every buffer bounded.
 * A pure function over bytes: no I/O, no clock. Never installed.
 *
 * A mae__sse_parser is not thread-safe; one per connection. */
#ifndef MAE_STREAM_SSE_PARSE_H
#define MAE_STREAM_SSE_PARSE_H

#include <stdbool.h>
#include <stddef.h>

/* The longest id kept: the relay's ids are at most 64 bytes; an id field
 * longer than this is ignored (as one with a NUL is, by the standard). */
#define MAE__SSE_ID_MAX 255
/* The longest event type kept; a longer one makes the event oversize. */
#define MAE__SSE_TYPE_MAX 63

/* One dispatched event. Pointers are borrowed from the parser and valid
 * only during the callback. */
typedef struct mae__sse_event {
    const char *type;      /* "message" when the frame had no event: field */
    const char *data;      /* the data lines joined by '\n', without the last */
    size_t data_len;
    const char *id;        /* the last event id ("" when none yet) */
    bool has_id;           /* this frame itself had a usable id: field */
    bool oversize;         /* a line, the data or the type was over the
                              limits: data holds nothing usable */
} mae__sse_event;

/* Called for each event; returns false to stop mae__sse_feed at once. */
typedef bool (*mae__sse_event_fn)(void *user, const mae__sse_event *ev);

typedef struct mae__sse_parser {
    size_t max_line;        /* longest line taken whole; also bounds data */
    char *line;             /* max_line + 1 bytes */
    size_t line_len;
    bool line_over;         /* the current line passed max_line */
    bool after_cr;          /* the last byte was CR: a following LF is its pair */
    bool started;           /* past the optional BOM */
    size_t bom_seen;        /* bytes of the UTF-8 BOM matched so far */
    char *data;             /* max_line + 1 bytes */
    size_t data_len;
    bool has_data;          /* a data: field came (data may still be "") */
    bool over;              /* this frame went over a limit */
    char type[MAE__SSE_TYPE_MAX + 1];
    bool has_id;
    char id_buf[MAE__SSE_ID_MAX + 1]; /* the last event id buffer: set by id: */
    char id[MAE__SSE_ID_MAX + 1]; /* the last event id: id_buf as of the last
                                     blank line, what a reconnect sends as
                                     Last-Event-ID; set it to resume from */
    long retry_ms;          /* the last retry: field, -1 when none */
    unsigned long long oversize_frames;
} mae__sse_parser;

/* Sets p up for lines of at most max_line bytes (at least 16). Returns 0,
 * or MAE_ENOMEM (p then needs no mae__sse_free, though calling it is
 * harmless). */
int mae__sse_init(mae__sse_parser *p, size_t max_line);

/* Frees p's buffers; p may be zeroed or half-initialised. */
void mae__sse_free(mae__sse_parser *p);

/* Forgets the frame in progress and the line being read (a new
 * connection), an id: of that frame included; keeps the last event id and
 * retry, as the standard does across reconnections. */
void mae__sse_reset_connection(mae__sse_parser *p);

/* Feeds len bytes. Calls cb for each complete event (a frame ended by a
 * blank line with at least one data: field, or over a limit). Returns the
 * number of bytes consumed: len, or fewer when cb returned false (the
 * bytes after the stopping event are left for the caller to feed again). */
size_t mae__sse_feed(mae__sse_parser *p, const char *buf, size_t len, mae__sse_event_fn cb,
                     void *user);

#endif
