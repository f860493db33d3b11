/* Internal: the SSE relay behind `mailagent events serve`: an HTTP server
 * on one libevent loop that fans one Redis subscription out to every
 * client as Server-Sent Events (relay.md). Built as its own static library
 * (libevent stays out of libmailagent-events). Never installed.
 *
 * A relay runs on the thread that calls mae__relay_run, which handles
 * SIGTERM, SIGINT and SIGHUP on its loop; nothing of it is thread-safe. */
#ifndef MAE_RELAY_H
#define MAE_RELAY_H

#include <stdbool.h>
#include <stddef.h>

#include "relay/request.h"

/* A stream client whose output is not written for this long is cut. */
#define MAE__RELAY_WRITE_TIMEOUT_MS 30000
/* The retry: line at the start of every stream, in milliseconds. */
#define MAE__RELAY_RETRY_MS 3000
/* The retry: of the "too many clients" answer: this plus up to as much
 * again of jitter, so refused clients come back spread out. */
#define MAE__RELAY_REFUSED_RETRY_MS 5000
/* On SIGTERM, each open stream gets a retry: between these (uniform, per
 * client) before its last chunk, so clients do not all come back (to
 * another relay behind the proxy) in the same second. */
#define MAE__RELAY_STOP_RETRY_MIN_MS 1000
#define MAE__RELAY_STOP_RETRY_MAX_MS 5000
/* On SIGTERM, open streams get this long to take their last chunk. */
#define MAE__RELAY_DRAIN_MS 500
/* After an error answer, the relay reads (and drops) what the client still
 * sends for this long before closing, so the answer is not lost to a RST. */
#define MAE__RELAY_LINGER_MS 2000
/* The output limit is judged over time: a stream client whose unread
 * bytes stay over --client-buffer for this long is cut (checked every
 * LIMIT_CHECK), so a reader that keeps up is never cut for one large
 * frame; one whose unread bytes pass OVER_HARD times --client-buffer is
 * cut at once, which bounds the memory a client can hold. */
#define MAE__RELAY_OVER_GRACE_MS 2000
#define MAE__RELAY_LIMIT_CHECK_MS 500
#define MAE__RELAY_OVER_HARD 4
/* A connection whose short answers pile up unread past this is closed. */
#define MAE__RELAY_MAX_PENDING_ANSWER (256 * 1024)

#define MAE__RELAY_DEFAULT_HOST "127.0.0.1"
#define MAE__RELAY_DEFAULT_PORT 9200
#define MAE__RELAY_DEFAULT_PATH "/api/events/stream"
#define MAE__RELAY_DEFAULT_PING 15.0
#define MAE__RELAY_MIN_PING 0.05
#define MAE__RELAY_DEFAULT_MAX_CLIENTS 10000
#define MAE__RELAY_DEFAULT_CLIENT_BUFFER 1048576
#define MAE__RELAY_DEFAULT_MAX_EVENT_BYTES 1048576
#define MAE__RELAY_DEFAULT_MAX_BODY_BYTES (16 * 1048576)
#define MAE__RELAY_DEFAULT_HISTORY 10000
#define MAE__RELAY_DEFAULT_HISTORY_BYTES (64 * 1048576)
/* A publish body must be whole this long after its headers were read;
 * otherwise the answer is 408 and the connection is closed. */
#define MAE__RELAY_BODY_DEADLINE_MS 10000
/* Publish bodies being read at once may add up to this many times
 * --max-body-bytes; a request that would pass it is answered 503. */
#define MAE__RELAY_BODIES_IN_FLIGHT 4
/* Hub publishers whose last applied number the relay remembers (the
 * exactly-once table); past it, the least recently seen is forgotten. */
#define MAE__RELAY_MAX_PUBLISHERS 4096

/* Everything is borrowed for the duration of mae__relay_run. */
typedef struct mae__relay_config {
    const char *host;           /* numeric address or name, no brackets */
    int port;                   /* 0: any free port (the log line tells which) */
    const char *path;           /* the stream's path, starts with '/' */
    double ping_interval;       /* seconds, >= MAE__RELAY_MIN_PING */
    const char *redis_url;      /* NULL: the hub (hub mode, no Redis) */
    const char *channel;
    const char *stream_key;     /* stream mode: read this Redis Stream (XREAD BLOCK)
                                 * instead of the channel; NULL: pub/sub */
    size_t max_clients;
    size_t client_buffer;       /* bytes a client may have waiting */
    size_t max_event_bytes;     /* an event over this goes out as a "skipped" frame */
    size_t max_body_bytes;      /* a publish body over this is a 413 unread */
    size_t history_events;      /* hub mode: events kept for resuming (0: none) */
    size_t history_bytes;       /* hub mode: and at most this many bytes */
    bool quiet;                 /* no per-client log lines */
    mae__credentials credentials;
} mae__relay_config;

/* Fills cfg with the defaults of relay.md (redis_url and channel NULL). */
void mae__relay_config_init(mae__relay_config *cfg);

/* Listens, prints "listening on http://HOST:PORT/PATH" on stderr and serves
 * until SIGTERM or SIGINT, then ends every stream and returns 0. SIGHUP
 * is logged and otherwise ignored (the relay has no file to reopen). Returns 1 with one sentence in err when it cannot start (the
 * port is in use, the address does not resolve, out of memory). Raises the
 * soft limit on open files to the hard one and ignores SIGPIPE. */
int mae__relay_run(const mae__relay_config *cfg, char *err, size_t errlen);

/* True when host is a loopback address (127.0.0.0/8, ::1) or a name that
 * resolves only to such addresses. */
bool mae__relay_host_is_loopback(const char *host);

#endif
