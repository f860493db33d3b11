/* This module implements one connection of the relay: reading its
 * requests with the bounded parser (relay/request.h) under the header
 * deadline, the short answers (keep-alive, linger after an error), opening
 * a stream or refusing it over --max-clients, and noticing a client that
 * goes away. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "core/backoff.h"
#include "relay/metrics.h"
#include "relay/page.h"
#include "relay/server.h"

typedef mae__relay_client client;
typedef mae__relay_server relay;

/* ---- clients ----------------------------------------------------------------- */

void mae__relay_maybe_finish(relay *r)
{
    if (r->stopping && r->nconns == 0)
        event_base_loopbreak(r->base);
}

void mae__client_unlink_stream(client *c)
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
void mae__client_free(client *c, const char *reason)
{
    relay *r = c->r;
    mae__resume_free(c->resume);
    c->resume = NULL;
    if (c->state == C_STREAM) {
        mae__client_unlink_stream(c);
        if (!r->cfg->quiet && reason)
            mae__relay_say("client %s disconnected: %s", c->addr, reason);
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
    mae__relay_maybe_finish(r);
}

static void on_client_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    client *c = arg;
    /* The header deadline passed, or a lingering client never closed. */
    mae__client_free(c, NULL);
}

static void arm_timer(client *c, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    if (!c->timer)
        c->timer = evtimer_new(c->r->base, on_client_timer, c);
    if (c->timer)
        evtimer_add(c->timer, &tv);
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

/* Opens a stream (or refuses it); returns false when the client was freed. */
static bool open_stream(client *c, const mae__request *req)
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
            mae__relay_say("client %s refused: too many clients", c->addr);
        c->state = C_CLOSING;
        return true;
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
        mae__relay_say("client %s connected (%llu streams)", c->addr,
            (unsigned long long)r->counters.clients);
    if (r->stream && !mae__fanout_resume_start(c, req)) {
        mae__client_free(c, "out of memory");
        return false;
    }
    return true;
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
        if (!open_stream(c, req))
            return false;
        break;
    case MAE__ROUTE_UNAUTHORIZED:
        r->counters.auth_failures_total++;
        if (!r->cfg->quiet)
            mae__relay_say("client %s unauthorized", c->addr);
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
        r->counters.redis_connected = mae__fanout_source_up(r);
        mae__healthz_render(&body, &r->counters);
        answer(c, 200, "OK", "application/json", NULL, body.ptr, body.len, keep);
        break;
    case MAE__ROUTE_METRICS:
        r->counters.redis_connected = mae__fanout_source_up(r);
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
        mae__client_free(c, "out of memory");
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
            mae__client_free(c, NULL);
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

void mae__client_on_write(struct bufferevent *bev, void *arg)
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
        mae__client_free(c, NULL);
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
        mae__client_free(c, "cut: write timeout (not reading)");
    } else if (what & BEV_EVENT_EOF) {
        mae__client_free(c, "closed by the client");
    } else if (what & BEV_EVENT_ERROR) {
        char why[128];
        snprintf(why, sizeof why, "%s", strerror(EVUTIL_SOCKET_ERROR()));
        mae__client_free(c, why);
    }
}

void mae__format_addr(const struct sockaddr *sa, char *out, size_t size)
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

void mae__client_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                        int salen, void *arg)
{
    relay *r = arg;
    (void)l;
    (void)salen;
    if (r->accept_failing) {
        r->accept_failing = false;
        mae__relay_say("accepting connections again");
    }
    client *c = calloc(1, sizeof *c);
    if (!c) {
        evutil_closesocket(fd);
        return;
    }
    c->r = r;
    c->state = C_REQUEST;
    mae__format_addr(sa, c->addr, sizeof c->addr);
    /* Frames are small and must leave at once, not wait for Nagle. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
#ifdef TCP_USER_TIMEOUT
    /* A peer that vanished without a FIN (cable, NAT, suspended laptop)
     * leaves the heartbeats unacknowledged in the kernel, where the write
     * timeout cannot see them: the kernel gives the connection up after
     * this long instead of after its ~15 minutes of retransmissions, and
     * the read side reports the error. */
    unsigned int user_timeout = MAE__RELAY_WRITE_TIMEOUT_MS;
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof user_timeout);
#endif
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
    bufferevent_setcb(c->bev, on_read, mae__client_on_write, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    struct timeval wt = {MAE__RELAY_WRITE_TIMEOUT_MS / 1000, 0};
    bufferevent_set_timeouts(c->bev, NULL, &wt);
    arm_timer(c, MAE__REQ_DEADLINE_MS);
    if (!c->timer)
        mae__client_free(c, NULL);
}

