/* Internal to the relay's server: the structs of the relay and of one
 * connection, shared by its modules, each calling only those below it:
 *
 *   server.c   listener, signals, setup and the loop
 *   http.c     a connection's requests and short answers, opening streams
 *   fanout.c   what goes out on the streams: events, pings, resets, resumes
 *   client.c   one connection: sending, the output limit, deferred close
 *   log.c      one line on stderr
 *
 * Deferred close (Redis's freeClientAsync): a client that must go is
 * marked close_asap, taken out of the stream list and queued on
 * r->to_close; the queue is drained by the reaper event once the callback
 * running now has returned. So no call anywhere frees a client under its
 * caller's feet, and no function returns "freed": loops over clients and
 * callbacks just go on. Never installed. */
#ifndef MAE_RELAY_SERVER_H
#define MAE_RELAY_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <event2/util.h>

#include "core/text.h"
#include "relay/metrics.h"
#include "relay/relay.h"
#include "relay/request.h"
#include "relay/resume.h"
#include "relay/source.h"

struct bufferevent;
struct evconnlistener;
struct event;
struct event_base;

typedef enum {
    C_REQUEST,   /* reading a request's headers (deadline running) */
    C_BODY,      /* reading a publish body (its deadline running) */
    C_STREAM,    /* an open event stream, in the relay's stream list */
    C_ANSWERED,  /* writing a last answer (or a stream's last chunk), then closing */
    C_LINGER,    /* answer sent and write side shut: draining until EOF */
} mae__client_state;

typedef struct mae__relay_server mae__relay_server;

/* What a publish request's headers said, kept while its body is read. */
typedef struct mae__publish_req {
    size_t length;                /* Content-Length */
    bool keep;                    /* keep-alive after the answer */
    bool ndjson;                  /* Content-Type: application/x-ndjson */
    bool has_publisher;           /* X-MailAgent-Publisher and -Batch-Start given, valid */
    bool bad_publisher;           /* given but malformed (400) */
    char publisher[33];           /* 32 lowercase hex digits */
    uint64_t batch_start;
} mae__publish_req;

struct mae_publisher;
typedef struct mae__pub_table mae__pub_table;
typedef struct mae__relay_client mae__relay_client;
TAILQ_HEAD(mae__client_list, mae__relay_client);

/* One connection. It owns its bufferevent (and so its socket and buffers). */
struct mae__relay_client {
    mae__relay_server *r;
    struct bufferevent *bev;
    TAILQ_ENTRY(mae__relay_client) conn_link;   /* r->conns, until freed */
    TAILQ_ENTRY(mae__relay_client) stream_link; /* r->streams, while streaming */
    TAILQ_ENTRY(mae__relay_client) close_link;  /* r->to_close, once close_asap */
    TAILQ_ENTRY(mae__relay_client) over_link;   /* r->over, while in_over */
    struct event *timer;          /* header deadline or linger; NULL while streaming */
    /* Called when the timer's deadline passes in C_BODY (set by whoever
     * starts reading a body); NULL, or any other state: closed. */
    void (*on_deadline)(struct mae__relay_client *c);
    mae__client_state state;
    bool chunked;                 /* HTTP/1.1 stream: frames go out as chunks */
    bool in_streams;
    bool close_asap;              /* queued on r->to_close; sends are dropped */
    bool in_over;                 /* unread output over --client-buffer since over_since */
    uint64_t over_since_ms;
    mae__resume *resume;          /* its position in a source with ids; NULL otherwise */
    bool awaits_position;         /* opened with no id before the source knew its
                                   * position: given it (id:) once the source does */
    bool loopback;                /* the peer is a loopback address */
    mae__publish_req pub;         /* C_BODY: the publish request whose body is read */
    char addr[56];                /* "[v6]:port" or "v4:port", for the log */
};

/* One event of a coalesced batch: its id, and where its frame lies in the
 * batch's chunked and raw buffers. */
typedef struct mae__batch_entry {
    mae__stream_id id;
    bool has_id;
    size_t off, len;              /* in batch */
    size_t roff, rlen;            /* in batch_raw */
} mae__batch_entry;

struct mae__relay_server {
    const mae__relay_config *cfg;
    struct event_base *base;
    struct evconnlistener *listener;
    struct event *ping;
    struct event *sigterm, *sigint, *sighup;
    struct event *resume_accept;  /* re-enables the listener after EMFILE */
    struct event *drain;          /* the shutdown's last moment */
    struct event *reaper;         /* frees r->to_close once the running callback returned */
    struct event *limits;         /* checks r->over against the output limit */
    mae__source *source;          /* where events come from (relay/source.h) */
    struct mae_publisher *publisher; /* Redis modes: where accepted events go */
    mae__pub_table *pubs;         /* the exactly-once table of hub publishers */
    double last_event_ts;         /* epoch s of the last event fanned out; 0 none */
    double last_progress;         /* monotonic s of the source's last entry or answered
                                   * probe (the start until then): /healthz's rule */
    char last_error[160];         /* the source's last problem while down; "" none */
    char last_log[160];           /* the source's last log line */
    struct mae__client_list conns;    /* every connection, streams included */
    struct mae__client_list streams;  /* the open streams */
    struct mae__client_list to_close; /* marked close_asap, freed by the reaper */
    struct mae__client_list over;     /* unread output over --client-buffer */
    size_t nconns;
    bool stopping;
    bool accept_failing;          /* logged once per run of accept failures */
    uint64_t rng;
    mae__relay_counters counters;
    mae__buf frame;               /* scratch for one chunked frame */
    mae__buf raw;                 /* the same frame unchunked (HTTP/1.0) */
    /* Events that arrived together (mae__source_cb.on_batch), written to
     * each client in one send at the batch's end. */
    bool batching;
    mae__buf batch, batch_raw;
    mae__batch_entry *bent;
    size_t nbent, capbent;
};

/* log.c: one line on stderr. */
void mae__relay_say(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
/* client.c: ends the loop once the relay is stopping and no connection is
 * left. */
void mae__relay_maybe_finish(mae__relay_server *r);

/* ---- client.c: one connection ---------------------------------------------- */

/* True when sa is a loopback address (127.0.0.0/8, ::1, v4-mapped 127/8). */
bool mae__addr_is_loopback(const struct sockaddr *sa);
/* Writes a complete short answer in one piece (head and body); keep_alive
 * false closes once it is out (after the linger). */
void mae__client_answer(mae__relay_client *c, int status, const char *reason, const char *type,
                        const char *extra_headers, const char *body, size_t body_len,
                        bool keep_alive);

/* Makes the connection of an accepted socket (taken: closed on failure);
 * NULL on out of memory. Its bufferevent's callbacks are the caller's. */
mae__relay_client *mae__client_new(mae__relay_server *r, evutil_socket_t fd,
                                   const struct sockaddr *sa);
/* Queues bytes to the client: straight to the socket when nothing waits.
 * The output limit is judged here and over time (mae__client_check_limits):
 * a client whose unread bytes stay over --client-buffer for
 * MAE__RELAY_OVER_GRACE_MS, or pass MAE__RELAY_OVER_HARD times it at once,
 * is closed; a failed write closes it too. A closing client's sends are
 * dropped. This function can't fail. */
void mae__client_send(mae__relay_client *c, const char *bytes, size_t len);
/* Marks the client close_asap and queues it for the reaper (Redis's
 * freeClientAsync): it leaves the stream list now, its callbacks stop, and
 * it is freed once the running callback has returned. reason: for a
 * stream's log line, NULL for quiet closes. Twice is a no-op. */
void mae__client_close(mae__relay_client *c, const char *reason);
/* Frees every client queued by mae__client_close (the reaper's work; also
 * called when the loop has ended). */
void mae__client_reap(mae__relay_server *r);
/* Puts the client in the stream list (counted as a stream); takes it out. */
void mae__client_stream_begin(mae__relay_client *c);
void mae__client_stream_end(mae__relay_client *c);
/* The unread bytes waiting for the client. */
size_t mae__client_unread(const mae__relay_client *c);
/* Arms the connection's one timer (header deadline, linger); on expiry the
 * client is closed quietly. */
void mae__client_arm_timer(mae__relay_client *c, int ms);
/* The limits timer's work: clients over --client-buffer for too long are cut. */
void mae__client_check_limits(mae__relay_server *r);
/* "v4:port" or "[v6]:port". */
void mae__format_addr(const struct sockaddr *sa, char *out, size_t size);

/* ---- fanout.c: the streams ---------------------------------------------------- */

/* Connects the source of the configured mode; 0, or 1 with the reason in err. */
int mae__fanout_start(mae__relay_server *r, char *err, size_t errlen);
/* Frees every client's resume, then the source. */
void mae__fanout_stop(mae__relay_server *r);
/* True while events arrive from the source. */
bool mae__fanout_source_up(const mae__relay_server *r);
/* Opens a stream on a client whose request was for it, or refuses it over
 * --max-clients: the head, the first frame (retry, and the client's
 * position when the source has ids) and its catch-up. */
void mae__fanout_open(mae__relay_client *c, const mae__request *req);
/* The client's output drained: a parked replay goes on. */
void mae__fanout_drained(mae__relay_client *c);
/* The heartbeat timer: a ping to every stream. */
void mae__fanout_on_ping(evutil_socket_t fd, short what, void *arg);

/* ---- publish.c: POST /api/events/publish and the health answers -------------- */

/* Opens the Redis publisher in the Redis modes; the exactly-once table.
 * 0, or 1 with the reason in err. */
int mae__publish_start(mae__relay_server *r, char *err, size_t errlen);
/* Closes the publisher (flushing for up to a second) and frees the table. */
void mae__publish_stop(mae__relay_server *r);
/* The headers of a publish request were read: checks what it can before
 * the body (length, chunked, credentials), answering and returning false
 * when it refuses; true when the body (c->pub.length bytes) is to be read. */
bool mae__publish_begin(mae__relay_client *c, const mae__request *req);
/* The whole body is here: applies it and answers. */
void mae__publish_body(mae__relay_client *c, const char *body, size_t len);
/* The body did not come within MAE__RELAY_BODY_DEADLINE_MS: 408, closed. */
void mae__publish_timeout(mae__relay_client *c);
/* The JSON of GET /api/events/health and of /healthz. */
void mae__health_render(mae__relay_server *r, mae__buf *b, bool healthz);
/* Copies the table's and the hub's figures into r->counters for /metrics. */
void mae__publish_fill_counters(mae__relay_server *r);
/* "pubsub", "stream" or "hub". */
const char *mae__relay_mode(const mae__relay_server *r);

/* ---- http.c: requests and answers ---------------------------------------------- */

/* Accepts a connection (the listener's callback). */
void mae__http_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg);
/* A stream ended by the shutdown: its last chunk is queued; it closes once out. */
void mae__http_end_stream(mae__relay_client *c);

#endif
