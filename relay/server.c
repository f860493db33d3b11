/* This module implements the relay's server: the listener, the clients
 * (each owning its bufferevent, with a hard cap on what it may have
 * queued), the heartbeat, the fan-out of the source's events, and the
 * shutdown on SIGTERM/SIGINT. One libevent loop does everything; each
 * callback does one thing and returns, and the state lives in the structs. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "core/backoff.h"
#include "relay/metrics.h"
#include "relay/page.h"
#include "relay/relay.h"
#include "relay/resume.h"
#include "relay/source.h"
#include "relay/sse.h"
#include "relay/stream_id.h"
#include "relay/stream_source.h"

typedef enum {
    C_REQUEST,   /* reading a request's headers (deadline running) */
    C_STREAM,    /* an open event stream, in the relay's list */
    C_CLOSING,   /* writing a last answer, then closing */
    C_LINGER,    /* answer sent and write side shut: draining until EOF */
} client_state;

typedef struct relay relay;

typedef struct client {
    relay *r;
    struct bufferevent *bev;
    struct client *prev, *next;   /* the stream list, while C_STREAM */
    struct client *cprev, *cnext; /* the list of every connection */
    struct event *timer;          /* header deadline or linger; NULL while streaming */
    client_state state;
    bool chunked;                 /* HTTP/1.1 stream: frames go out as chunks */
    mae__resume *resume;          /* stream mode: the client's catch-up and position */
    char addr[56];                /* "[v6]:port" or "v4:port", for the log */
} client;

struct relay {
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
    client *streams;              /* the open streams, newest first */
    client *conns;                /* every connection, streams included */
    size_t nconns;
    bool stopping;
    bool accept_failing;          /* logged once per run of accept failures */
    uint64_t rng;
    mae__relay_counters counters;
    mae__buf frame;               /* scratch for one chunked frame */
    mae__buf raw;                 /* the same frame unchunked (HTTP/1.0) */
};

/* ---- log --------------------------------------------------------------------- */

#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
static void say(const char *fmt, ...)
{
    char line[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line);
}

/* ---- clients ----------------------------------------------------------------- */

static void maybe_finish_shutdown(relay *r)
{
    if (r->stopping && r->nconns == 0)
        event_base_loopbreak(r->base);
}

static void unlink_stream(client *c)
{
    relay *r = c->r;
    if (c->prev)
        c->prev->next = c->next;
    else
        r->streams = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    r->counters.clients--;
}

/* Frees the client and closes its socket. reason: for the log line of a
 * stream, NULL for quiet closes. */
static void client_free(client *c, const char *reason)
{
    relay *r = c->r;
    mae__resume_free(c->resume);
    c->resume = NULL;
    if (c->state == C_STREAM) {
        unlink_stream(c);
        if (!r->cfg->quiet && reason)
            say("client %s disconnected: %s", c->addr, reason);
    }
    if (c->timer)
        event_free(c->timer);
    bufferevent_free(c->bev);
    if (c->cprev)
        c->cprev->cnext = c->cnext;
    else
        r->conns = c->cnext;
    if (c->cnext)
        c->cnext->cprev = c->cprev;
    free(c);
    r->nconns--;
    maybe_finish_shutdown(r);
}

static void on_client_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    client *c = arg;
    /* The header deadline passed, or a lingering client never closed. */
    client_free(c, NULL);
}

static void arm_timer(client *c, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    if (!c->timer)
        c->timer = evtimer_new(c->r->base, on_client_timer, c);
    if (c->timer)
        evtimer_add(c->timer, &tv);
}

/* Queues bytes to a stream; a client already holding --client-buffer
 * bytes is cut instead, so nobody else waits for it. Returns false when
 * the client was freed. */
static bool stream_write(client *c, const char *bytes, size_t len)
{
    relay *r = c->r;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (evbuffer_get_length(out) + len > r->cfg->client_buffer) {
        r->counters.clients_cut_slow_total++;
        client_free(c, "cut: over --client-buffer (not reading fast enough)");
        return false;
    }
    r->counters.bytes_total += len;
    /* Nothing waiting: try the socket first. Most clients take the whole
     * frame at once, and then the write costs one send() instead of
     * arming and disarming a write event (two epoll_ctl calls and a loop
     * turn) per client per event, which dominated the fan-out to 10 000. */
    if (evbuffer_get_length(out) == 0) {
        ssize_t n = send(bufferevent_getfd(c->bev), bytes, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n == (ssize_t)len)
            return true;
        if (n < 0) {
            int err = errno;
            if (err != EAGAIN && err != EWOULDBLOCK && err != EINTR) {
                client_free(c, strerror(err));
                return false;
            }
            n = 0;
        }
        bytes += n;
        len -= (size_t)n;
    }
    if (bufferevent_write(c->bev, bytes, len) != 0) {
        client_free(c, "out of memory");
        return false;
    }
    return true;
}

/* Sends a frame built in r->frame (chunked) and r->raw to every stream. */
static size_t broadcast(relay *r)
{
    size_t sent = 0;
    if (r->frame.oom || r->raw.oom)
        return 0;
    for (client *c = r->streams, *next; c; c = next) {
        next = c->next;
        if (c->chunked ? stream_write(c, r->frame.ptr, r->frame.len)
                       : stream_write(c, r->raw.ptr, r->raw.len))
            sent++;
    }
    return sent;
}

static void build_frame(relay *r, const char *event, const char *id, const char *data, size_t len)
{
    r->frame.len = r->raw.len = 0;
    r->frame.oom = r->raw.oom = false;
    mae__sse_frame(&r->raw, event, id, data, len);
    if (!r->raw.oom)
        mae__sse_chunk(&r->frame, r->raw.ptr, r->raw.len);
}

/* True while events arrive from Redis, in either mode. */
static bool source_up(const relay *r)
{
    return r->stream ? mae__stream_source_connected(r->stream) : mae__source_up(r->source);
}

/* Writes the frame in r->frame / r->raw to one stream. */
static bool frame_to(client *c)
{
    relay *r = c->r;
    if (r->frame.oom || r->raw.oom)
        return true;
    return c->chunked ? stream_write(c, r->frame.ptr, r->frame.len)
                      : stream_write(c, r->raw.ptr, r->raw.len);
}

/* ---- stream mode: one client's catch-up (relay/resume.h) ------------------------ */

static void on_resume_reset(void *user, const char *json, size_t len)
{
    client *c = user;
    c->r->counters.resets_total++;
    build_frame(c->r, "reset", NULL, json, len);
    frame_to(c);
}

static void on_resume_entry(void *user, const mae__stream_id *id, const char *line, size_t len)
{
    client *c = user;
    char text[MAE__STREAM_ID_BUFSIZE];
    mae__stream_id_format(id, text);
    build_frame(c->r, "mailagent", text, line, len);
    frame_to(c);
}

static void on_resume_live(void *user)
{
    (void)user;
}

/* A replay goes on while the client keeps up: at most half its buffer
 * waiting, so a resuming client is never cut for its own history. */
static bool on_resume_want_more(void *user)
{
    client *c = user;
    return evbuffer_get_length(bufferevent_get_output(c->bev)) < c->r->cfg->client_buffer / 2;
}

static const mae__resume_events resume_events = {on_resume_reset, on_resume_entry,
                                                 on_resume_live, on_resume_want_more};

/* The id a client resumes after: the Last-Event-ID header (what EventSource
 * sends when it reconnects), else ?last_event_id= (percent-decoded into
 * buf, at most size bytes). NULL when it gave none. */
static const char *resume_id(const mae__request *req, char *buf, size_t size, size_t *len)
{
    if (req->last_event_id.p) {
        *len = req->last_event_id.n;
        return req->last_event_id.p;
    }
    static const char key[] = "last_event_id=";
    const char *q = req->query.p, *end = q ? q + req->query.n : NULL;
    while (q && q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - q) >= sizeof key - 1 && memcmp(q, key, sizeof key - 1) == 0) {
            size_t n = 0;
            for (const char *p = q + sizeof key - 1; p < stop && n < size; p++) {
                int hi, lo;
                if (*p == '%' && stop - p >= 3 && (hi = mae__hex_digit((unsigned char)p[1])) >= 0 &&
                    (lo = mae__hex_digit((unsigned char)p[2])) >= 0) {
                    buf[n++] = (char)(hi * 16 + lo);
                    p += 2;
                } else {
                    buf[n++] = *p;
                }
            }
            *len = n;
            return buf;
        }
        q = stop + 1;
    }
    return NULL;
}

/* ---- answers ----------------------------------------------------------------- */

/* Writes a complete short answer. After it the connection either waits for
 * the next request (keep-alive) or closes once the answer is out. */
static void answer(client *c, int status, const char *reason, const char *type,
                   const char *extra_headers, const char *body, size_t body_len, bool keep_alive)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\n"
                        "Content-Type: %s\r\n"
                        "Content-Length: %zu\r\n"
                        "Cache-Control: no-store\r\n"
                        "%s"
                        "Connection: %s\r\n\r\n",
                        status, reason, type, body_len, extra_headers ? extra_headers : "",
                        keep_alive ? "keep-alive" : "close");
    evbuffer_add(out, body, body_len);
    if (!keep_alive)
        c->state = C_CLOSING;
}

static void answer_json(client *c, int status, const char *reason, const char *extra,
                        const char *body, bool keep_alive)
{
    answer(c, status, reason, "application/json", extra, body, strlen(body), keep_alive);
}

static void open_stream(client *c, const mae__request *req)
{
    relay *r = c->r;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    char first[128];
    c->chunked = req->minor == 1;

    if (r->counters.clients >= r->cfg->max_clients) {
        /* 200, not 503: EventSource gives up for good on an error status,
         * but reconnects after `retry` when a stream simply ends. */
        int retry = MAE__RELAY_REFUSED_RETRY_MS +
                    (int)(mae__rand_unit(&r->rng) * MAE__RELAY_REFUSED_RETRY_MS);
        int n = snprintf(first, sizeof first,
                         "retry: %d\n: too many clients (%zu streams open), retry later\n\n",
                         retry, r->cfg->max_clients);
        evbuffer_add_printf(out,
                            "HTTP/1.1 200 OK\r\n"
                            "Content-Type: text/event-stream; charset=utf-8\r\n"
                            "Cache-Control: no-cache, no-transform\r\n"
                            "X-Accel-Buffering: no\r\n"
                            "%s"
                            "Connection: close\r\n\r\n",
                            c->chunked ? "Transfer-Encoding: chunked\r\n" : "");
        if (c->chunked)
            evbuffer_add_printf(out, "%x\r\n%s\r\n0\r\n\r\n", n, first);
        else
            evbuffer_add(out, first, (size_t)n);
        r->counters.clients_refused_total++;
        if (!r->cfg->quiet)
            say("client %s refused: too many clients", c->addr);
        c->state = C_CLOSING;
        return;
    }

    int n = snprintf(first, sizeof first, "retry: %d\n\n", MAE__RELAY_RETRY_MS);
    evbuffer_add_printf(out,
                        "HTTP/1.1 200 OK\r\n"
                        "Content-Type: text/event-stream; charset=utf-8\r\n"
                        "Cache-Control: no-cache, no-transform\r\n"
                        "X-Accel-Buffering: no\r\n"
                        "%s\r\n",
                        c->chunked ? "Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n"
                                   : "Connection: close\r\n");
    if (c->chunked)
        evbuffer_add_printf(out, "%x\r\n%s\r\n", n, first);
    else
        evbuffer_add(out, first, (size_t)n);

    c->state = C_STREAM;
    if (c->timer) {
        event_free(c->timer);
        c->timer = NULL;
    }
    c->next = r->streams;
    if (r->streams)
        r->streams->prev = c;
    r->streams = c;
    r->counters.clients++;
    r->counters.clients_total++;
    if (!r->cfg->quiet)
        say("client %s connected (%llu streams)", c->addr,
            (unsigned long long)r->counters.clients);
    if (r->stream) {
        /* Sized past the longest id the parser takes, so an over-long one
         * stays over-long (and is refused as such). */
        char buf[MAE__STREAM_ID_MAX_LEN + 8];
        size_t len = 0;
        const char *id = resume_id(req, buf, sizeof buf, &len);
        c->resume = mae__resume_start(r->stream, id, len, 0, &resume_events, c);
        if (!c->resume)
            client_free(c, "out of memory");
    }
}

/* Answers one parsed request; returns false when the client was freed. */
static bool serve(client *c, const mae__request *req)
{
    relay *r = c->r;
    mae__buf body;
    mae__buf_init(&body);
    bool keep = req->keep_alive;

    switch (mae__request_route(req, r->cfg->path, &r->cfg->credentials)) {
    case MAE__ROUTE_STREAM:
        open_stream(c, req);
        break;
    case MAE__ROUTE_UNAUTHORIZED:
        r->counters.auth_failures_total++;
        if (!r->cfg->quiet)
            say("client %s unauthorized", c->addr);
        answer_json(c, 401, "Unauthorized", "WWW-Authenticate: Bearer\r\n",
                    "{\"error\":\"unauthorized\"}", keep);
        break;
    case MAE__ROUTE_NOT_FOUND:
        answer_json(c, 404, "Not Found", NULL, "{\"error\":\"not_found\"}", keep);
        break;
    case MAE__ROUTE_BAD_METHOD:
        answer_json(c, 405, "Method Not Allowed", "Allow: GET\r\n",
                    "{\"error\":\"method_not_allowed\"}", keep);
        break;
    case MAE__ROUTE_HEALTHZ:
        r->counters.redis_connected = source_up(r);
        mae__healthz_render(&body, &r->counters);
        answer(c, 200, "OK", "application/json", NULL, body.ptr, body.len, keep);
        break;
    case MAE__ROUTE_METRICS:
        r->counters.redis_connected = source_up(r);
        mae__metrics_render(&body, &r->counters);
        answer(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", NULL, body.ptr,
               body.len, keep);
        break;
    case MAE__ROUTE_PAGE:
        mae__page_render(&body, r->cfg->path, mae__credentials_required(&r->cfg->credentials));
        answer(c, 200, "OK", "text/html; charset=utf-8", NULL, body.ptr, body.len, keep);
        break;
    }
    bool oom = body.oom;
    mae__buf_free(&body);
    if (oom) {
        client_free(c, "out of memory");
        return false;
    }
    return true;
}

/* ---- client callbacks ------------------------------------------------------------ */

static void on_read(struct bufferevent *bev, void *arg)
{
    client *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);

    /* Reads stay on all along, so a vanished client is seen at once;
     * whatever a client sends after its request is dropped. */
    while (c->state == C_REQUEST) {
        /* A client that pipelines requests without reading the answers
         * would make them pile up here. */
        if (evbuffer_get_length(bufferevent_get_output(bev)) > MAE__RELAY_MAX_PENDING_ANSWER) {
            client_free(c, NULL);
            return;
        }
        size_t len = evbuffer_get_length(in);
        if (len == 0)
            return;
        size_t n = len > MAE__REQ_MAX_BYTES + 1 ? MAE__REQ_MAX_BYTES + 1 : len;
        const char *data = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
        mae__request req;
        switch (mae__request_parse(data, n, &req)) {
        case MAE__REQ_INCOMPLETE:
            return;
        case MAE__REQ_BAD:
            answer_json(c, 400, "Bad Request", NULL, "{\"error\":\"bad_request\"}", false);
            break;
        case MAE__REQ_TOO_LARGE:
            answer_json(c, 431, "Request Header Fields Too Large", NULL,
                        "{\"error\":\"request_header_fields_too_large\"}", false);
            break;
        case MAE__REQ_DONE:
            if (!serve(c, &req))
                return;
            evbuffer_drain(in, req.length);
            if (c->state == C_REQUEST)
                arm_timer(c, MAE__REQ_DEADLINE_MS);   /* the next request's deadline */
            break;
        }
    }
    evbuffer_drain(in, evbuffer_get_length(in));
}

static void on_write(struct bufferevent *bev, void *arg)
{
    client *c = arg;
    /* A replay parked for a slow reader goes on once its output is out. */
    if (c->state == C_STREAM && c->resume && !mae__resume_is_live(c->resume))
        mae__resume_wake(c->resume);
    if (c->state != C_CLOSING)
        return;
    /* A stream ended by the shutdown: its input was read all along, so
     * closing now sends a FIN, not a RST. */
    if (c->r->stopping) {
        client_free(c, NULL);
        return;
    }
    /* The answer is out: shut our side, and drop what the client still
     * sends until it closes, so the answer is not destroyed by a RST. */
    shutdown(bufferevent_getfd(bev), SHUT_WR);
    c->state = C_LINGER;
    arm_timer(c, MAE__RELAY_LINGER_MS);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    client *c = arg;
    (void)bev;
    if (what & BEV_EVENT_TIMEOUT) {
        if (c->state == C_STREAM)
            c->r->counters.clients_cut_slow_total++;
        client_free(c, "cut: write timeout (not reading)");
    } else if (what & BEV_EVENT_EOF) {
        client_free(c, "closed by the client");
    } else if (what & BEV_EVENT_ERROR) {
        char why[128];
        snprintf(why, sizeof why, "%s", strerror(EVUTIL_SOCKET_ERROR()));
        client_free(c, why);
    }
}

static void format_addr(const struct sockaddr *sa, char *out, size_t size)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        port = ntohs(in->sin_port);
        snprintf(out, size, "%s:%d", host, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        port = ntohs(in6->sin6_port);
        snprintf(out, size, "[%s]:%d", host, port);
    } else {
        snprintf(out, size, "?");
    }
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    relay *r = arg;
    (void)l;
    (void)salen;
    if (r->accept_failing) {
        r->accept_failing = false;
        say("accepting connections again");
    }
    client *c = calloc(1, sizeof *c);
    if (!c) {
        evutil_closesocket(fd);
        return;
    }
    c->r = r;
    c->state = C_REQUEST;
    format_addr(sa, c->addr, sizeof c->addr);
    /* Frames are small and must leave at once, not wait for Nagle. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->bev = bufferevent_socket_new(r->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) {
        evutil_closesocket(fd);
        free(c);
        return;
    }
    r->nconns++;
    c->cnext = r->conns;
    if (r->conns)
        r->conns->cprev = c;
    r->conns = c;
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    struct timeval wt = {MAE__RELAY_WRITE_TIMEOUT_MS / 1000, 0};
    bufferevent_set_timeouts(c->bev, NULL, &wt);
    arm_timer(c, MAE__REQ_DEADLINE_MS);
    if (!c->timer)
        client_free(c, NULL);
}

static void on_resume_accept(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    relay *r = arg;
    if (r->listener && !r->stopping)
        evconnlistener_enable(r->listener);
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    relay *r = arg;
    int err = EVUTIL_SOCKET_ERROR();
    /* Out of descriptors: the pending connection stays in the backlog and
     * the listener would fire again at once; pause it for a moment. */
    if (!r->accept_failing)
        say("accept failed: %s; pausing new connections, retrying every 100 ms",
            strerror(err));
    r->accept_failing = true;
    evconnlistener_disable(l);
    struct timeval tv = {0, 100000};
    evtimer_add(r->resume_accept, &tv);
}

/* ---- source callbacks -------------------------------------------------------------- */

static void on_source_event(void *ctx, const char *data, size_t len, const char *id)
{
    relay *r = ctx;
    r->counters.events_total++;
    build_frame(r, "mailagent", id, data, len);
    broadcast(r);
}

static void on_source_up(void *ctx, bool after_loss, bool reconnected)
{
    relay *r = ctx;
    r->counters.redis_connected = true;
    if (reconnected)
        r->counters.redis_reconnects_total++;
    if (after_loss) {
        static const char reset[] = "{\"reason\":\"redis_reconnected\"}";
        build_frame(r, "reset", NULL, reset, sizeof reset - 1);
        r->counters.resets_total += broadcast(r);
    }
}

static void on_source_down(void *ctx)
{
    relay *r = ctx;
    r->counters.redis_connected = false;
}

static void on_source_log(void *ctx, const char *line)
{
    (void)ctx;
    say("%s", line);
}

/* ---- stream source callbacks (stream mode) -------------------------------------------- */

static void on_stream_entry(void *user, const mae__stream_entry *e)
{
    relay *r = user;
    r->counters.events_total++;
    if (!e->line)
        return;   /* a foreign entry: a place in the order, nothing to send */
    char text[MAE__STREAM_ID_BUFSIZE];
    mae__stream_id_format(&e->id, text);
    build_frame(r, "mailagent", text, e->line, e->len);
    for (client *c = r->streams, *next; c; c = next) {
        next = c->next;
        /* A client still replaying gets nothing live yet; one whose replay
         * ran ahead of the reader gets only what it has not had. */
        if (c->resume && !mae__resume_admit(c->resume, &e->id))
            continue;
        frame_to(c);
    }
}

static void on_stream_state(void *user, bool connected, const char *why)
{
    relay *r = user;
    if (connected == r->counters.redis_connected)
        return;   /* repeated failures while down */
    r->counters.redis_connected = connected;
    if (connected) {
        if (r->stream_was_up)
            r->counters.redis_reconnects_total++;
        r->stream_was_up = true;
        say("redis: reading the stream %s", r->cfg->stream_key);
    } else {
        say("redis: %s; retrying with backoff", why ? why : "connection lost");
    }
}

static void on_stream_rewound(void *user, const mae__stream_id *last)
{
    relay *r = user;
    char text[MAE__STREAM_ID_BUFSIZE];
    mae__stream_id_format(last, text);
    say("redis: the stream %s went back before %s (recreated or restored); clients get a reset",
        r->cfg->stream_key, text);
    build_frame(r, "reset", NULL, mae__resume_rewound_json, strlen(mae__resume_rewound_json));
    r->counters.resets_total += broadcast(r);
}

/* ---- timers and signals ------------------------------------------------------------ */

static void on_ping(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    relay *r = arg;
    static const char raw[] = "event: ping\ndata: \n\n";
    for (client *c = r->streams, *next; c; c = next) {
        next = c->next;
        if (c->chunked)
            stream_write(c, mae__sse_ping_chunk, mae__sse_ping_chunk_len);
        else
            stream_write(c, raw, sizeof raw - 1);
    }
}

static void on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(((relay *)arg)->base);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    relay *r = arg;
    if (r->stopping)
        return;
    say("%s: closing %llu streams", sig == SIGTERM ? "SIGTERM" : "SIGINT",
        (unsigned long long)r->counters.clients);
    r->stopping = true;
    evconnlistener_free(r->listener);
    r->listener = NULL;
    /* A resume holds requests of the stream source: gone before it is. */
    for (client *c = r->conns; c; c = c->cnext) {
        mae__resume_free(c->resume);
        c->resume = NULL;
    }
    mae__source_free(r->source);
    r->source = NULL;
    mae__stream_source_free(r->stream);
    r->stream = NULL;
    event_del(r->ping);
    /* Every stream gets its last chunk, so clients see a clean end rather
     * than a cut; the loop ends once all are out or at the drain timeout.
     * A connection still in its request is closed now. */
    for (client *c = r->conns, *next; c; c = next) {
        next = c->cnext;
        if (c->state == C_REQUEST) {
            client_free(c, NULL);
            continue;
        }
        if (c->state != C_STREAM)
            continue;
        unlink_stream(c);
        c->state = C_CLOSING;
        if (c->chunked)
            bufferevent_write(c->bev, "0\r\n\r\n", 5);
        if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
            on_write(c->bev, c);
    }
    struct timeval tv = {0, MAE__RELAY_DRAIN_MS * 1000};
    evtimer_add(r->drain, &tv);
    maybe_finish_shutdown(r);
}

/* ---- setup ---------------------------------------------------------------------------- */

void mae__relay_config_init(mae__relay_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->host = MAE__RELAY_DEFAULT_HOST;
    cfg->port = MAE__RELAY_DEFAULT_PORT;
    cfg->path = MAE__RELAY_DEFAULT_PATH;
    cfg->ping_interval = MAE__RELAY_DEFAULT_PING;
    cfg->max_clients = MAE__RELAY_DEFAULT_MAX_CLIENTS;
    cfg->client_buffer = MAE__RELAY_DEFAULT_CLIENT_BUFFER;
}

static bool addr_is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a))
            return true;
        if (IN6_IS_ADDR_V4MAPPED(a))
            return a->s6_addr[12] == 127;
    }
    return false;
}

bool mae__relay_host_is_loopback(const char *host)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
        return false;
    bool all = true;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
        all = all && addr_is_loopback(ai->ai_addr);
    freeaddrinfo(res);
    return all;
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int listen_on(relay *r, char *err, size_t errlen)
{
    const mae__relay_config *cfg = r->cfg;
    struct addrinfo hints, *res = NULL;
    char port[16];
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    snprintf(port, sizeof port, "%d", cfg->port);
    int gai = getaddrinfo(cfg->host, port, &hints, &res);
    if (gai != 0 || !res) {
        snprintf(err, errlen, "cannot resolve the listen address %s: %s", cfg->host,
                 gai_strerror(gai));
        return 1;
    }
    int last = 0;
    for (struct addrinfo *ai = res; ai && !r->listener; ai = ai->ai_next) {
        r->listener = evconnlistener_new_bind(
            r->base, on_accept, r, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 4096,
            ai->ai_addr, (int)ai->ai_addrlen);
        if (!r->listener)
            last = errno;
    }
    freeaddrinfo(res);
    if (!r->listener) {
        snprintf(err, errlen, "cannot listen on %s%s%s:%d: %s",
                 strchr(cfg->host, ':') ? "[" : "", cfg->host, strchr(cfg->host, ':') ? "]" : "",
                 cfg->port, strerror(last ? last : EADDRINUSE));
        return 1;
    }
    evconnlistener_set_error_cb(r->listener, on_accept_error);

    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char where[64];
    if (getsockname(evconnlistener_get_fd(r->listener), (struct sockaddr *)&ss, &sl) == 0)
        format_addr((struct sockaddr *)&ss, where, sizeof where);
    else
        snprintf(where, sizeof where, "%s:%d", cfg->host, cfg->port);
    say("listening on http://%s%s", where, cfg->path);
    return 0;
}

int mae__relay_run(const mae__relay_config *cfg, char *err, size_t errlen)
{
    relay r;
    int rc = 1;
    memset(&r, 0, sizeof r);
    r.cfg = cfg;
    r.rng = ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid();
    if (r.rng == 0)
        r.rng = 1;
    raise_fd_limit();
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stderr, NULL, _IOLBF, 0);

    r.base = event_base_new();
    if (!r.base) {
        snprintf(err, errlen, "cannot create the event loop");
        return 1;
    }
    r.ping = event_new(r.base, -1, EV_PERSIST, on_ping, &r);
    r.sigterm = evsignal_new(r.base, SIGTERM, on_signal, &r);
    r.sigint = evsignal_new(r.base, SIGINT, on_signal, &r);
    r.resume_accept = evtimer_new(r.base, on_resume_accept, &r);
    r.drain = evtimer_new(r.base, on_drain_timeout, &r);
    if (!r.ping || !r.sigterm || !r.sigint || !r.resume_accept || !r.drain) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    if (listen_on(&r, err, errlen) != 0)
        goto done;

    char serr[256] = "";
    int src;
    if (cfg->stream_key) {
        mae__stream_source_config sc;
        mae__stream_source_config_init(&sc);
        sc.base = r.base;
        sc.redis_url = cfg->redis_url;
        sc.key = cfg->stream_key;
        sc.on_entry = on_stream_entry;
        sc.on_state = on_stream_state;
        sc.on_rewound = on_stream_rewound;
        sc.user = &r;
        src = mae__stream_source_new(&sc, &r.stream, serr, sizeof serr);
    } else {
        mae__source_config sc = {cfg->redis_url, cfg->channel};
        mae__source_cb cb = {&r, on_source_event, on_source_up, on_source_down, on_source_log};
        src = mae__subscriber_new(r.base, &sc, &cb, &r.source, serr, sizeof serr);
    }
    if (src != 0) {
        snprintf(err, errlen, "%s", *serr ? serr : "out of memory");
        goto done;
    }

    double pi = cfg->ping_interval;
    struct timeval ping = {(time_t)pi, (suseconds_t)((pi - (double)(time_t)pi) * 1e6)};
    evtimer_add(r.ping, &ping);
    evsignal_add(r.sigterm, NULL);
    evsignal_add(r.sigint, NULL);

    event_base_dispatch(r.base);
    rc = 0;

done:
    /* Whatever is still open when the loop ends is closed without ceremony. */
    r.stopping = false;
    while (r.conns)
        client_free(r.conns, NULL);
    mae__source_free(r.source);
    mae__stream_source_free(r.stream);
    if (r.listener)
        evconnlistener_free(r.listener);
    if (r.ping)
        event_free(r.ping);
    if (r.sigterm)
        event_free(r.sigterm);
    if (r.sigint)
        event_free(r.sigint);
    if (r.resume_accept)
        event_free(r.resume_accept);
    if (r.drain)
        event_free(r.drain);
    mae__buf_free(&r.frame);
    mae__buf_free(&r.raw);
    event_base_free(r.base);
    return rc;
}
