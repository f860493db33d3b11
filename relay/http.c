/* This module implements the HTTP side of a relay connection: reading its
 * requests with the bounded parser (relay/request.h) under the header
 * deadline, the short answers (keep-alive, linger after an error), handing
 * a stream request to the fan-out, and noticing a client that goes away. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "relay/metrics.h"
#include "relay/page.h"
#include "relay/server.h"

typedef mae__relay_client client;
typedef mae__relay_server relay;

/* ---- answers ----------------------------------------------------------------- */

/* Writes a complete short answer, head and body in one piece, so it
 * leaves in one write. After it the connection either waits for the next
 * request (keep-alive) or closes once the answer is out. */
static void answer(client *c, int status, const char *reason, const char *type,
                   const char *extra_headers, const char *body, size_t body_len, bool keep_alive)
{
    mae__client_answer(c, status, reason, type, extra_headers, body, body_len, keep_alive);
}

static void answer_json(client *c, int status, const char *reason, const char *extra,
                        const char *body, bool keep_alive)
{
    answer(c, status, reason, "application/json", extra, body, strlen(body), keep_alive);
}

/* Answers one parsed request. */
static void serve(client *c, const mae__request *req)
{
    relay *r = c->r;
    mae__buf body;
    mae__buf_init(&body);
    bool keep = req->keep_alive;

    switch (mae__request_route(req, r->cfg->path, &r->cfg->credentials)) {
    case MAE__ROUTE_STREAM:
        if (c->timer) {
            event_free(c->timer);   /* a stream has no deadline */
            c->timer = NULL;
        }
        mae__fanout_open(c, req);
        break;
    case MAE__ROUTE_PUBLISH:
        if (mae__publish_begin(c, req)) {
            /* A client that waits for leave to send its body gets it now
             * (a refusal above goes instead of it, RFC 9110 10.1.1). */
            if (req->expect_continue && req->minor == 1)
                bufferevent_write(c->bev, "HTTP/1.1 100 Continue\r\n\r\n", 25);
            c->state = C_BODY;
            c->on_deadline = mae__publish_timeout;
            mae__client_arm_timer(c, MAE__RELAY_BODY_DEADLINE_MS);
        }
        break;
    case MAE__ROUTE_BAD_METHOD_POST:
        answer_json(c, 405, "Method Not Allowed", "Allow: POST\r\n",
                    "{\"error\":\"method_not_allowed\"}", keep);
        break;
    case MAE__ROUTE_HEALTH:
        mae__health_render(r, &body, false);
        answer(c, 200, "OK", "application/json", NULL, body.ptr, body.len, keep);
        break;
    case MAE__ROUTE_UNAUTHORIZED:
        if (mae__span_eq(req->path, MAE__RELAY_PUBLISH_PATH)) {
            r->counters.pub_refused_unauthorized++;
            r->counters.pub_requests_total++;
        }
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
        mae__health_render(r, &body, true);
        answer(c, 200, "OK", "application/json", NULL, body.ptr, body.len, keep);
        break;
    case MAE__ROUTE_METRICS:
        r->counters.redis_connected = mae__fanout_source_up(r) && r->cfg->redis_url;
        mae__publish_fill_counters(r);
        mae__metrics_render(&body, &r->counters);
        answer(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", NULL, body.ptr,
               body.len, keep);
        break;
    case MAE__ROUTE_PAGE:
        mae__page_render(&body, r->cfg->path, mae__credentials_required(&r->cfg->credentials));
        answer(c, 200, "OK", "text/html; charset=utf-8", NULL, body.ptr, body.len, keep);
        break;
    }
    if (body.oom)
        mae__client_close(c, "out of memory");
    mae__buf_free(&body);
}

/* ---- callbacks -------------------------------------------------------------------- */

static void on_read(struct bufferevent *bev, void *arg)
{
    client *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);

    /* Reads stay on all along, so a vanished client is seen at once;
     * whatever a client sends after its request is dropped. */
    while ((c->state == C_REQUEST || c->state == C_BODY) && !c->close_asap) {
        if (c->state == C_BODY) {
            /* The body is read whole (bounded by --max-body-bytes before
             * it was asked for), then applied. */
            size_t want = c->pub.length;
            if (evbuffer_get_length(in) < want)
                return;
            const char *body = (const char *)evbuffer_pullup(in, (ev_ssize_t)want);
            if (!body) {
                mae__client_close(c, "out of memory");
                return;
            }
            c->state = C_REQUEST;
            mae__publish_body(c, body, want);
            evbuffer_drain(in, want);
            if (c->state == C_REQUEST)
                mae__client_arm_timer(c, MAE__REQ_DEADLINE_MS);
            continue;
        }
        /* A client that pipelines requests without reading the answers
         * would make them pile up here. */
        if (evbuffer_get_length(bufferevent_get_output(bev)) > MAE__RELAY_MAX_PENDING_ANSWER) {
            mae__client_close(c, NULL);
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
            serve(c, &req);
            evbuffer_drain(in, req.length);
            if (c->state == C_REQUEST && !c->close_asap)
                mae__client_arm_timer(c, MAE__REQ_DEADLINE_MS);   /* the next request's */
            break;
        }
    }
    evbuffer_drain(in, evbuffer_get_length(in));
}

/* The output is all out. */
static void on_write(struct bufferevent *bev, void *arg)
{
    client *c = arg;
    if (c->state == C_STREAM) {
        mae__fanout_drained(c);
        return;
    }
    if (c->state != C_ANSWERED)
        return;
    /* A stream ended by the shutdown: its input was read all along, so
     * closing now sends a FIN, not a RST. */
    if (c->r->stopping) {
        mae__client_close(c, NULL);
        return;
    }
    /* The answer is out: shut our side, and drop what the client still
     * sends until it closes, so the answer is not destroyed by a RST. */
    shutdown(bufferevent_getfd(bev), SHUT_WR);
    c->state = C_LINGER;
    mae__client_arm_timer(c, MAE__RELAY_LINGER_MS);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    client *c = arg;
    (void)bev;
    if (what & BEV_EVENT_TIMEOUT) {
        if (c->state == C_STREAM)
            c->r->counters.clients_cut_slow_total++;
        mae__client_close(c, "cut: write timeout (not reading)");
    } else if (what & BEV_EVENT_EOF) {
        mae__client_close(c, "closed by the client");
    } else if (what & BEV_EVENT_ERROR) {
        char why[128];
        snprintf(why, sizeof why, "%s", strerror(EVUTIL_SOCKET_ERROR()));
        mae__client_close(c, why);
    }
}

void mae__http_end_stream(client *c)
{
    mae__client_stream_end(c);
    c->state = C_ANSWERED;
    if (c->chunked)
        bufferevent_write(c->bev, "0\r\n\r\n", 5);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        on_write(c->bev, c);
}

void mae__http_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    relay *r = arg;
    (void)l;
    (void)salen;
    if (r->accept_failing) {
        r->accept_failing = false;
        mae__relay_say("accepting connections again");
    }
    client *c = mae__client_new(r, fd, sa);
    if (!c)
        return;
    c->loopback = mae__addr_is_loopback(sa);
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    mae__client_arm_timer(c, MAE__REQ_DEADLINE_MS);
}
