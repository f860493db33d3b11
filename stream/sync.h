/* Internal: the command's one blocking way to Redis (`mailagent events
 * tail`): a connection over TCP, a unix socket or TLS (rediss://, core/tls:
 * the URL's verification, SNI, the host name check; never plain text after
 * a TLS failure), AUTH and SELECT as the URL asks, every step bounded by a
 * timeout, replies parsed by hiredis' redisReader, and a stream's bounds in
 * one MULTI/EXEC as the relay reads them. For a command's thread only: it
 * blocks. Never installed.
 *
 * The socket is non-blocking underneath: a caller that waits in its own
 * poll() (to see signals and deadlines) polls mae__sync_fd for reading and
 * then calls mae__sync_read, which takes everything there is (all of what
 * TLS decrypted too, so poll() never misses buffered bytes). */
#ifndef MAE_STREAM_SYNC_H
#define MAE_STREAM_SYNC_H

#include <signal.h>
#include <stddef.h>

#include <hiredis/hiredis.h>

#include "core/url.h"
#include "stream/reply.h"

typedef struct mae__sync_conn mae__sync_conn;

/* Connects to u (TCP, unix socket, or TLS for rediss://), with timeout_ms
 * for the connection (TCP and the TLS handshake together) and for each
 * reply after it, TCP keepalive, then AUTH (when u has a password; with
 * the user when it has one) and SELECT (when u->db is not 0). Returns the
 * ready connection, or NULL with one sentence in err: the connection's
 * error, a TLS failure (core/tls's text: "TLS certificate verify failed:
 * ..."), "no answer within N ms", "AUTH refused: ...", "SELECT refused:
 * ..." or "out of memory". */
mae__sync_conn *mae__redis_connect_sync(const mae__url *u, int timeout_ms, char *err,
                                        size_t errlen);

/* The same, given up as soon as *stop is set (by a signal handler; NULL =
 * never), with "stopped" in err; the connection keeps stop, and its waits
 * (mae__sync_flush, mae__sync_command, mae__stream_bounds_sync) end the
 * same way. Each wait looks at *stop at least every 250 ms, so a signal
 * that lands just before poll() is seen; one that lands during it ends it
 * at once. (The TLS handshake's wait, in core/tls, is bounded by the
 * timeout only.) */
mae__sync_conn *mae__redis_connect_sync_until(const mae__url *u, int timeout_ms,
                                              volatile sig_atomic_t *stop, char *err,
                                              size_t errlen);

/* Closes and frees. NULL: no-op. */
void mae__sync_free(mae__sync_conn *c);

/* The socket, for poll(POLLIN) before mae__sync_read. */
int mae__sync_fd(const mae__sync_conn *c);

/* Appends a command (hiredis' format) to the output. 0, or -1 (out of
 * memory). */
int mae__sync_append(mae__sync_conn *c, const char *fmt, ...);

/* Writes the whole output, waiting at most timeout_ms for the socket.
 * 0, or -1 with the reason in err. */
int mae__sync_flush(mae__sync_conn *c, int timeout_ms, char *err, size_t errlen);

/* A reply already read (*out, freeReplyObject it), or *out NULL when none
 * is complete yet; never reads the socket. 0, or -1 on a protocol error. */
int mae__sync_take(mae__sync_conn *c, redisReply **out, char *err, size_t errlen);

/* Reads what the socket has now, without waiting. 0, or -1 with the
 * reason ("connection closed by the server", a TLS or socket error). */
int mae__sync_read(mae__sync_conn *c, char *err, size_t errlen);

/* Sends one command and waits up to timeout_ms for its reply: the reply,
 * or NULL with the reason ("no answer within N ms", ...). */
redisReply *mae__sync_command(mae__sync_conn *c, int timeout_ms, char *err, size_t errlen,
                              const char *fmt, ...);

/* Reads the bounds of the stream at key (len bytes) in one MULTI EXISTS
 * XINFO EXEC (stream/reply.h), each reply within the connect call's
 * timeout_ms: 0 and *out, or -1 with the reason in err (the connection may
 * then be unusable; the caller drops it). */
int mae__stream_bounds_sync(mae__sync_conn *c, const char *key, size_t len,
                            mae__stream_bounds *out, char *err, size_t errlen);

#endif
