/* Internal to the relay's server: the structs of the relay and of one
 * connection, shared by server.c (listener, signals, setup), client.c (one
 * connection: its requests and answers) and fanout.c (what goes out on the
 * streams). Never installed. */
#ifndef MAE_RELAY_SERVER_H
#define MAE_RELAY_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <event2/util.h>

#include "core/text.h"
#include "relay/metrics.h"
#include "relay/relay.h"
#include "relay/request.h"
#include "relay/resume.h"
#include "relay/source.h"
#include "relay/stream_source.h"

struct bufferevent;
struct evconnlistener;
struct event;
struct event_base;

typedef enum {
    C_REQUEST,   /* reading a request's headers (deadline running) */
    C_STREAM,    /* an open event stream, in the relay's list */
    C_CLOSING,   /* writing a last answer, then closing */
    C_LINGER,    /* answer sent and write side shut: draining until EOF */
} mae__client_state;

typedef struct mae__relay_server mae__relay_server;
typedef struct mae__relay_client mae__relay_client;

/* One connection. It owns its bufferevent (and so its socket and buffers). */
struct mae__relay_client {
    mae__relay_server *r;
    struct bufferevent *bev;
    mae__relay_client *prev, *next;   /* the stream list, while C_STREAM */
    mae__relay_client *cprev, *cnext; /* the list of every connection */
    struct event *timer;          /* header deadline or linger; NULL while streaming */
    mae__client_state state;
    bool chunked;                 /* HTTP/1.1 stream: frames go out as chunks */
    mae__resume *resume;          /* stream mode: the client's catch-up and position */
    char addr[56];                /* "[v6]:port" or "v4:port", for the log */
};

struct mae__relay_server {
    const mae__relay_config *cfg;
    struct event_base *base;
    struct evconnlistener *listener;
    struct event *ping;
    struct event *sigterm, *sigint;
    struct event *resume_accept;  /* re-enables the listener after EMFILE */
    struct event *drain;          /* the shutdown's last moment */
    mae__source *source;          /* pub/sub mode */
    mae__stream_source *stream;   /* stream mode (--stream KEY) */
    bool stream_was_up;
    mae__relay_client *streams;   /* the open streams, newest first */
    mae__relay_client *conns;     /* every connection, streams included */
    size_t nconns;
    bool stopping;
    bool accept_failing;          /* logged once per run of accept failures */
    uint64_t rng;
    mae__relay_counters counters;
    mae__buf frame;               /* scratch for one chunked frame */
    mae__buf raw;                 /* the same frame unchunked (HTTP/1.0) */
};

/* server.c: one line on stderr. */
void mae__relay_say(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* client.c */
/* Accepts a connection (the listener's callback). */
void mae__client_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                        int salen, void *arg);
/* Frees the client and closes its socket; reason: for a stream's log line,
 * NULL for quiet closes. Ends the loop when the relay is stopping and this
 * was the last connection. */
void mae__client_free(mae__relay_client *c, const char *reason);
/* Takes a stream out of the relay's list (it stays a connection). */
void mae__client_unlink_stream(mae__relay_client *c);
/* The bufferevent's write callback: a closing client whose answer is out
 * is shut (or freed during the shutdown). */
void mae__client_on_write(struct bufferevent *bev, void *arg);
/* Ends the loop once the relay is stopping and no connection is left. */
void mae__relay_maybe_finish(mae__relay_server *r);
/* "v4:port" or "[v6]:port". */
void mae__format_addr(const struct sockaddr *sa, char *out, size_t size);

/* fanout.c */
/* Connects the source of the configured mode (pub/sub or stream); 0, or 1
 * with the reason in err. */
int mae__fanout_start(mae__relay_server *r, char *err, size_t errlen);
/* Frees every client's resume, then the source. NULL sources are fine. */
void mae__fanout_stop(mae__relay_server *r);
/* True while events arrive from Redis, in either mode. */
bool mae__fanout_source_up(const mae__relay_server *r);
/* Stream mode: starts the new stream's catch-up from its Last-Event-ID or
 * ?last_event_id=. False on out of memory. */
bool mae__fanout_resume_start(mae__relay_client *c, const mae__request *req);
/* The heartbeat timer: a ping to every stream. */
void mae__fanout_on_ping(evutil_socket_t fd, short what, void *arg);

#endif
