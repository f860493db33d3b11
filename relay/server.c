/* This module implements the relay's server: the listener (and its pause
 * when descriptors run out), the signals and the shutdown that ends every
 * stream, SIGHUP ignored, the setup and the loop. One libevent loop does everything; each
 * callback does one thing and returns, and the state lives in the structs
 * of relay/server.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
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
#include "relay/server.h"

typedef mae__relay_client client;
typedef mae__relay_server relay;

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
        mae__relay_say("accept failed: %s; pausing new connections, retrying every 100 ms",
            strerror(err));
    r->accept_failing = true;
    evconnlistener_disable(l);
    struct timeval tv = {0, 100000};
    evtimer_add(r->resume_accept, &tv);
}

static void on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(((relay *)arg)->base);
}

static void on_reaper(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mae__client_reap(arg);
}

static void on_limits(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mae__client_check_limits(arg);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    relay *r = arg;
    if (sig == SIGHUP) {
        /* The relay keeps no file to reopen (its log is stderr) and a
         * terminal hang-up must not end the clients' streams. */
        mae__relay_say("SIGHUP: ignored (the relay has nothing to reload); still serving");
        return;
    }
    if (r->stopping)
        return;
    mae__relay_say("%s: closing %llu streams", sig == SIGTERM ? "SIGTERM" : "SIGINT",
        (unsigned long long)r->counters.clients);
    r->stopping = true;
    evconnlistener_free(r->listener);
    r->listener = NULL;
    mae__fanout_stop(r);
    event_del(r->ping);
    /* Every stream gets its last chunk, so clients see a clean end rather
     * than a cut; the loop ends once all are out or at the drain timeout.
     * A connection still in its request is closed now. */
    client *c;
    TAILQ_FOREACH(c, &r->conns, conn_link) {
        if (c->close_asap)
            continue;
        if (c->state == C_REQUEST || c->state == C_BODY)
            mae__client_close(c, NULL);   /* a publish not yet read is not taken */
        else if (c->state == C_STREAM) {
            /* A retry: with jitter first (docs/relay.md, "Stopping"). */
            char frame[48], chunk[64];
            int retry = MAE__RELAY_STOP_RETRY_MIN_MS +
                        (int)(mae__rand_unit(&r->rng) *
                              (MAE__RELAY_STOP_RETRY_MAX_MS - MAE__RELAY_STOP_RETRY_MIN_MS));
            int n = snprintf(frame, sizeof frame, "retry: %d\n\n", retry);
            if (c->chunked) {
                int m = snprintf(chunk, sizeof chunk, "%x\r\n%s\r\n", n, frame);
                mae__client_send(c, chunk, (size_t)m);
            } else {
                mae__client_send(c, frame, (size_t)n);
            }
            if (!c->close_asap)
                mae__http_end_stream(c);
        }
    }
    struct timeval tv = {0, MAE__RELAY_DRAIN_MS * 1000};
    evtimer_add(r->drain, &tv);
    mae__relay_maybe_finish(r);
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
    cfg->max_event_bytes = MAE__RELAY_DEFAULT_MAX_EVENT_BYTES;
    cfg->max_body_bytes = MAE__RELAY_DEFAULT_MAX_BODY_BYTES;
    cfg->history_events = MAE__RELAY_DEFAULT_HISTORY;
    cfg->history_bytes = MAE__RELAY_DEFAULT_HISTORY_BYTES;
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
        all = all && mae__addr_is_loopback(ai->ai_addr);
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
            r->base, mae__http_accept, r, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 4096,
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
        mae__format_addr((struct sockaddr *)&ss, where, sizeof where);
    else
        snprintf(where, sizeof where, "%s:%d", cfg->host, cfg->port);
    mae__relay_say("listening on http://%s%s", where, cfg->path);
    return 0;
}

int mae__relay_run(const mae__relay_config *cfg, char *err, size_t errlen)
{
    relay r;
    int rc = 1;
    memset(&r, 0, sizeof r);
    r.cfg = cfg;
    TAILQ_INIT(&r.conns);
    TAILQ_INIT(&r.streams);
    TAILQ_INIT(&r.to_close);
    TAILQ_INIT(&r.over);
    r.rng = mae__rand_seed(&r);
    raise_fd_limit();
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stderr, NULL, _IOLBF, 0);

    r.base = event_base_new();
    if (!r.base) {
        snprintf(err, errlen, "cannot create the event loop");
        return 1;
    }
    r.ping = event_new(r.base, -1, EV_PERSIST, mae__fanout_on_ping, &r);
    r.sigterm = evsignal_new(r.base, SIGTERM, on_signal, &r);
    r.sigint = evsignal_new(r.base, SIGINT, on_signal, &r);
    r.sighup = evsignal_new(r.base, SIGHUP, on_signal, &r);
    r.reaper = event_new(r.base, -1, 0, on_reaper, &r);
    r.limits = event_new(r.base, -1, EV_PERSIST, on_limits, &r);
    r.resume_accept = evtimer_new(r.base, on_resume_accept, &r);
    r.drain = evtimer_new(r.base, on_drain_timeout, &r);
    if (!r.ping || !r.sigterm || !r.sigint || !r.sighup || !r.reaper || !r.limits ||
        !r.resume_accept || !r.drain) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    if (listen_on(&r, err, errlen) != 0)
        goto done;

    if (mae__fanout_start(&r, err, errlen) != 0)
        goto done;
    if (mae__publish_start(&r, err, errlen) != 0)
        goto done;

    double pi = cfg->ping_interval;
    struct timeval ping = {(time_t)pi, (suseconds_t)((pi - (double)(time_t)pi) * 1e6)};
    evtimer_add(r.ping, &ping);
    evsignal_add(r.sigterm, NULL);
    evsignal_add(r.sigint, NULL);
    evsignal_add(r.sighup, NULL);
    struct timeval check = {MAE__RELAY_LIMIT_CHECK_MS / 1000, (MAE__RELAY_LIMIT_CHECK_MS % 1000) * 1000};
    evtimer_add(r.limits, &check);

    event_base_dispatch(r.base);
    rc = 0;

done:
    /* Whatever is still open when the loop ends is closed without ceremony. */
    r.stopping = false;
    mae__fanout_stop(&r);
    mae__publish_stop(&r);
    client *c;
    TAILQ_FOREACH(c, &r.conns, conn_link)
        mae__client_close(c, NULL);
    mae__client_reap(&r);
    if (r.listener)
        evconnlistener_free(r.listener);
    if (r.ping)
        event_free(r.ping);
    if (r.sigterm)
        event_free(r.sigterm);
    if (r.sigint)
        event_free(r.sigint);
    if (r.sighup)
        event_free(r.sighup);
    if (r.reaper)
        event_free(r.reaper);
    if (r.limits)
        event_free(r.limits);
    if (r.resume_accept)
        event_free(r.resume_accept);
    if (r.drain)
        event_free(r.drain);
    mae__buf_free(&r.frame);
    mae__buf_free(&r.raw);
    mae__buf_free(&r.batch);
    mae__buf_free(&r.batch_raw);
    free(r.bent);
    event_base_free(r.base);
    return rc;
}
