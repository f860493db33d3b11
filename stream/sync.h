/* Internal: the command's one blocking way to Redis (`mailagent events
 * tail`): connect, AUTH and SELECT as the URL asks, every step bounded by
 * a timeout, and a stream's bounds in one MULTI/EXEC as the relay reads
 * them. For a command's thread only: it blocks. Never installed. */
#ifndef MAE_STREAM_SYNC_H
#define MAE_STREAM_SYNC_H

#include <stddef.h>

#include "core/url.h"
#include "stream/reply.h"

struct redisContext;

/* Connects to u (TCP or unix socket), with timeout_ms for the connection
 * and for each reply after it, TCP keepalive, then AUTH (when u has a
 * password; with the user when it has one) and SELECT (when u->db is not
 * 0). Returns the ready context, or NULL with one sentence in err: the
 * connection's error, "no answer within N ms", "AUTH refused: ...",
 * "SELECT refused: ..." or "out of memory". */
struct redisContext *mae__redis_connect_sync(const mae__url *u, int timeout_ms, char *err,
                                             size_t errlen);

/* Reads the bounds of the stream at key (len bytes) in one MULTI EXISTS
 * XINFO EXEC (stream/reply.h): 0 and *out, or -1 with the reason in err
 * (the context may then be unusable; the caller drops it). */
int mae__stream_bounds_sync(struct redisContext *c, const char *key, size_t len,
                            mae__stream_bounds *out, char *err, size_t errlen);

#endif
