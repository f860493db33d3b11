/* Internal: what Redis answers about a stream, parsed from hiredis reply
 * objects: one entry ([id, [field, value, ...]]), a page of entries (XRANGE,
 * XREAD), XINFO STREAM, and the MULTI EXISTS XINFO EXEC transaction that
 * reads a stream's bounds atomically (the relay's and `events tail`'s one
 * way to ask). Pure functions, no I/O; safe from any thread. Never
 * installed. */
#ifndef MAE_STREAM_REPLY_H
#define MAE_STREAM_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stream/id.h"

struct redisReply;

/* One entry: its id and the value of its `event` field (the JSON line the
 * publisher appended). line is NULL for a foreign entry without that field:
 * it still has a place in the order, but nothing to send. Borrowed from the
 * reply it was parsed from. */
typedef struct mae__stream_entry {
    mae__stream_id id;
    const char *line;
    size_t len;
} mae__stream_entry;

/* What the server says about the stream, for deciding how a reader
 * resumes (stream/decide.h). */
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

/* Parses one entry of a reply to XRANGE or XREAD into out (line borrowed
 * from r). Returns false when it is not one. */
bool mae__stream_parse_entry(const struct redisReply *r, mae__stream_entry *out);

/* Parses a list of entries (XRANGE's reply) into a new array, in strictly
 * increasing id order: true with *out (NULL when *n is 0; the caller frees
 * it), false when r is not such a list or out of memory (*out NULL). */
bool mae__stream_parse_entries(const struct redisReply *r, mae__stream_entry **out, size_t *n);

/* Parses a reply of XINFO STREAM (RESP2: a flat list of names and values).
 * Returns false when it is not one. */
bool mae__stream_parse_info(const struct redisReply *r, mae__stream_bounds *out);

/* The bounds transaction: these four commands, in this order, with the
 * key as the one argument of the middle two; the EXEC reply is parsed by
 * mae__stream_parse_bounds. EXISTS tells a missing key apart from an error
 * without matching error texts. */
#define MAE__STREAM_BOUNDS_MULTI "MULTI"
#define MAE__STREAM_BOUNDS_EXISTS "EXISTS %b"
#define MAE__STREAM_BOUNDS_XINFO "XINFO STREAM %b"
#define MAE__STREAM_BOUNDS_EXEC "EXEC"

/* Parses EXEC's reply of the bounds transaction. Returns 1 and *out, 0 for
 * a reply of another shape, or -1 with *err (borrowed from r) for an error
 * inside the transaction (the key holds another type, say). */
int mae__stream_parse_bounds(const struct redisReply *r, mae__stream_bounds *out,
                             const char **err);

#endif
