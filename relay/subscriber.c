/* This module implements the relay's pub/sub source: one hiredis async
 * connection on the relay's libevent loop, subscribed to the channel, with
 * TCP keepalive and a watchdog timer (hiredis 0.14's async API has no
 * timeouts of its own), reconnecting on core/backoff's schedule. It
 * implements relay/source.h (mae__source_pubsub_new) and follows its rule
 * for hiredis contexts. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <mailagent/common.h>

#include "core/backoff.h"
#include "core/url.h"
#include "relay/source.h"

/* The watchdog's timing: a probe every PROBE period while subscribed; a
 * connection without a complete answer (subscription or probe) within
 * DEADLINE is taken for hung, dropped and made again. */
#define PROBE_MS 1000
#define DEADLINE_MS 5000
/* The reconnect schedule (core/backoff): doubling from MIN to MAX. */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

typedef enum { SUB_IDLE, SUB_CONNECTING, SUB_UP } sub_state;

typedef struct sub {
    mae__source base;
    struct event_base *evb;
    mae__url url;
    char *channel;
    size_t channel_len;
    mae__source_cb cb;
    redisAsyncContext *ac;      /* NULL between connections */
    sub_state state;
    bool ever_up;               /* a subscription existed once */
    bool lost;                  /* one was lost since the last came up */
    int failures;               /* attempts since the last success */
    double since;               /* when the connection started, or the probe went out */
    bool probing;               /* a probe is waiting for its answer */
    uint64_t rng;
    struct event *retry;
    struct event *watchdog;
} sub;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void logf_(sub *s, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (s->cb.on_log)
        s->cb.on_log(s->cb.ctx, line);
}

static void connect_now(sub *s);
static void on_message(redisAsyncContext *ac, void *r, void *privdata);

static void schedule_retry(sub *s, const char *why)
{
    s->failures++;
    double delay = mae__backoff_delay(BACKOFF_MIN_MS, BACKOFF_MAX_MS,
                                      s->failures, mae__rand_unit(&s->rng));
    /* The first failure of a run is logged; the retries that follow would
     * only repeat it every few seconds. */
    if (s->failures == 1)
        logf_(s, "redis: %s; retrying with backoff", why);
    struct timeval tv = {(time_t)delay, (suseconds_t)((delay - (double)(time_t)delay) * 1e6)};
    evtimer_add(s->retry, &tv);
}

/* The subscription is gone (the connection broke, hung or was refused). */
static void went_down(sub *s, const char *why)
{
    bool was_up = s->state == SUB_UP;
    s->state = SUB_IDLE;
    s->probing = false;
    if (was_up) {
        s->lost = true;
        s->failures = 0;
        s->cb.on_state(s->cb.ctx, false, false);
    }
    schedule_retry(s, why);
}

/* Drops the connection: detached, then freed (relay/source.h's rule; only
 * ever called from the watchdog timer). */
static void drop(sub *s, const char *why)
{
    redisAsyncContext *ac = s->ac;
    s->ac = NULL;   /* on_disconnect sees a stranger and stays quiet */
    if (ac)
        redisAsyncFree(ac);
    went_down(s, why);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    connect_now(arg);
}

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sub *s = arg;
    double now = now_s();
    if (s->state == SUB_CONNECTING && now - s->since > DEADLINE_MS / 1000.0) {
        drop(s, "no answer to SUBSCRIBE in time");
    } else if (s->state == SUB_UP && s->probing &&
               now - s->since > DEADLINE_MS / 1000.0) {
        drop(s, "the connection stopped answering (hung server?)");
    } else if (s->state == SUB_UP && !s->probing) {
        /* hiredis 0.14 routes a PING's pub/sub answer to no callback, but
         * a SUBSCRIBE to the channel we are on is answered ("subscribe",
         * channel, count) through the channel's callback, changes nothing on
         * the server, and proves the whole path works. The callback must be
         * the channel's own: hiredis replaces the channel's callback with
         * the one given here. */
        s->probing = true;
        s->since = now;
        redisAsyncCommand(s->ac, on_message, s, "SUBSCRIBE %b", s->channel, s->channel_len);
    }
}

static void on_message(redisAsyncContext *ac, void *r, void *privdata)
{
    sub *s = privdata;
    redisReply *reply = r;
    /* NULL: the context is being freed; a stranger: an old context's
     * last words. */
    if (!reply || ac != s->ac)
        return;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = reply->element[0]->str;
    if (strcmp(kind, "message") == 0 && reply->element[2]->type == REDIS_REPLY_STRING) {
        s->cb.on_event(s->cb.ctx, NULL, reply->element[2]->str, reply->element[2]->len);
    } else if (strcmp(kind, "subscribe") == 0) {
        if (s->state == SUB_CONNECTING) {
            bool after_loss = s->lost, reconnected = s->ever_up;
            s->state = SUB_UP;
            s->ever_up = true;
            s->lost = false;
            s->probing = false;
            s->failures = 0;
            logf_(s, "redis: subscribed to %s", s->channel);
            s->cb.on_state(s->cb.ctx, true, reconnected);
            if (after_loss) {
                /* Whatever was published while unsubscribed is gone. */
                static const char reset[] = "{\"reason\":\"redis_reconnected\"}";
                s->cb.on_reset(s->cb.ctx, reset, sizeof reset - 1);
            }
        } else {
            s->probing = false;
        }
    }
}

static void on_auth(redisAsyncContext *ac, void *r, void *privdata)
{
    sub *s = privdata;
    redisReply *reply = r;
    if (reply && ac == s->ac && reply->type == REDIS_REPLY_ERROR)
        logf_(s, "redis: AUTH refused: %s", reply->str);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    sub *s = ac->data;
    if (ac != s->ac)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback returns. */
        char why[200];
        snprintf(why, sizeof why, "cannot connect: %s", ac->errstr);
        s->ac = NULL;
        s->state = SUB_IDLE;
        went_down(s, why);
        return;
    }
    /* Keepalive finds a peer that vanished without a FIN; the watchdog
     * finds one that is there but does not answer. */
    redisEnableKeepAlive((redisContext *)&ac->c);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    sub *s = ac->data;
    (void)status;
    if (ac != s->ac)
        return;
    char why[200];
    snprintf(why, sizeof why, "connection lost: %s", ac->err ? ac->errstr : "closed by server");
    s->ac = NULL;
    went_down(s, why);
}

static void connect_now(sub *s)
{
    redisAsyncContext *ac = s->url.is_unix ? redisAsyncConnectUnix(s->url.path)
                                           : redisAsyncConnect(s->url.host, s->url.port);
    if (!ac) {
        went_down(s, "out of memory");
        return;
    }
    if (ac->err) {
        char why[200];
        snprintf(why, sizeof why, "cannot connect: %s", ac->errstr);
        redisAsyncFree(ac);
        went_down(s, why);
        return;
    }
    ac->data = s;
    if (redisLibeventAttach(ac, s->evb) != REDIS_OK) {
        redisAsyncFree(ac);
        went_down(s, "cannot attach to the event loop");
        return;
    }
    s->ac = ac;
    s->state = SUB_CONNECTING;
    s->since = now_s();
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    /* hiredis queues these until the socket is connected. Pub/sub ignores
     * the database number, so no SELECT. */
    if (s->url.password && s->url.user)
        redisAsyncCommand(ac, on_auth, s, "AUTH %s %s", s->url.user, s->url.password);
    else if (s->url.password)
        redisAsyncCommand(ac, on_auth, s, "AUTH %s", s->url.password);
    redisAsyncCommand(ac, on_message, s, "SUBSCRIBE %b", s->channel, s->channel_len);
}

static bool sub_up(const mae__source *base)
{
    return ((const sub *)base)->state == SUB_UP;
}

static void sub_free(mae__source *base)
{
    sub *s = (sub *)base;
    if (s->ac) {
        redisAsyncContext *ac = s->ac;
        s->ac = NULL;
        redisAsyncFree(ac);
    }
    if (s->retry)
        event_free(s->retry);
    if (s->watchdog)
        event_free(s->watchdog);
    mae__url_free(&s->url);
    free(s->channel);
    free(s);
}

static const mae__history *sub_history(mae__source *base)
{
    (void)base;
    return NULL;   /* pub/sub messages carry no ids */
}

static const mae__source_ops sub_ops = {sub_up, sub_history, sub_free};

int mae__source_pubsub_new(const mae__source_config *cfg, const mae__source_cb *cb,
                           mae__source **out, char *err, size_t errlen)
{
    struct event_base *base = cfg->base;
    sub *s = calloc(1, sizeof *s);
    if (!s)
        return MAE_ENOMEM;
    s->base.ops = &sub_ops;
    s->evb = base;
    s->cb = *cb;
    int rc = mae__url_parse(cfg->redis_url, &s->url, err, errlen);
    if (rc != MAE_OK) {
        free(s);
        return rc;
    }
    s->channel_len = strlen(cfg->channel);
    s->channel = malloc(s->channel_len + 1);
    s->retry = evtimer_new(base, on_retry, s);
    s->watchdog = event_new(base, -1, EV_PERSIST, on_watchdog, s);
    if (!s->channel || !s->retry || !s->watchdog) {
        sub_free(&s->base);
        return MAE_ENOMEM;
    }
    memcpy(s->channel, cfg->channel, s->channel_len + 1);
    s->rng = ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid() ^ (uint64_t)(uintptr_t)s;
    if (s->rng == 0)
        s->rng = 1;
    struct timeval tick = {PROBE_MS / 1000, (PROBE_MS % 1000) * 1000};
    evtimer_add(s->watchdog, &tick);
    /* Connects from the loop: no callback runs inside this call. */
    struct timeval now = {0, 0};
    evtimer_add(s->retry, &now);
    *out = &s->base;
    return MAE_OK;
}
