/* This module implements the relay's pub/sub source (relay/source.h): one
 * Redis link (relay/link.h) subscribed to the channel, and a probe that
 * re-sends the SUBSCRIBE every second so the link's watchdog sees a hung
 * server. Messages come to it as the link's push messages. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include <mailagent/common.h>

#include "core/url.h"
#include "relay/link.h"
#include "relay/source.h"

/* A probe every PROBE period while subscribed; a subscription or probe
 * not answered within DEADLINE is a hung link. */
#define PROBE_MS 1000
#define DEADLINE_MS 5000
/* The reconnect schedule (core/backoff): doubling from MIN to MAX. */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

typedef struct sub {
    mae__source base;
    mae__url url;
    char *channel;
    size_t channel_len;
    mae__source_cb cb;
    mae__link *link;
    bool up;                    /* subscribed */
    bool ever_up;               /* a subscription existed once */
    bool lost;                  /* one was lost since the last came up */
    bool probing;               /* a probe awaits its answer */
    struct event *probe;
} sub;

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

static void on_push(void *user, redisReply *reply)
{
    sub *s = user;
    if (!mae__link_accept(s->link, reply, false))
        return;
    const char *kind = reply->element[0]->str;
    if (strcmp(kind, "message") == 0 && reply->element[2]->type == REDIS_REPLY_STRING) {
        s->cb.on_event(s->cb.ctx, NULL, reply->element[2]->str, reply->element[2]->len);
    } else if (strcmp(kind, "subscribe") == 0) {
        mae__link_got(s->link);   /* the subscription's or a probe's answer */
        s->probing = false;
        if (s->cb.on_progress)
            s->cb.on_progress(s->cb.ctx);
        if (!s->up) {
            bool after_loss = s->lost, reconnected = s->ever_up;
            s->up = true;
            s->ever_up = true;
            s->lost = false;
            logf_(s, "redis: subscribed to %s", s->channel);
            s->cb.on_state(s->cb.ctx, true, reconnected);
            if (after_loss) {
                /* Whatever was published while unsubscribed is gone. */
                static const char reset[] = "{\"reason\":\"redis_reconnected\"}";
                s->cb.on_reset(s->cb.ctx, reset, sizeof reset - 1);
            }
        }
    }
}

/* A SUBSCRIBE to the channel we are on is answered ("subscribe", channel,
 * count) as a push message, changes nothing on the server, and proves the
 * whole path works: the probe. */
static void subscribe(sub *s)
{
    if (mae__link_command_push(s->link, "SUBSCRIBE %b", s->channel, s->channel_len) == REDIS_OK)
        mae__link_expect(s->link);
    else
        mae__link_fail(s->link, "cannot send SUBSCRIBE: out of memory");
}

static void on_probe(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sub *s = arg;
    if (s->up && !s->probing) {
        s->probing = true;
        subscribe(s);
    }
}

static void on_ready(void *user)
{
    sub *s = user;
    s->probing = false;
    subscribe(s);   /* pub/sub ignores the database: no SELECT */
}

static void on_down(void *user, const char *why, int failures, bool connecting)
{
    sub *s = user;
    if (connecting && s->cb.on_connect_failed)
        s->cb.on_connect_failed(s->cb.ctx, why);
    bool was_up = s->up;
    s->up = false;
    s->probing = false;
    /* The first failure of a run is logged; the retries that follow would
     * only repeat it every few seconds. */
    if (was_up || failures == 1)
        logf_(s, "redis: %s; retrying with backoff", why);
    if (was_up) {
        s->lost = true;
        s->cb.on_state(s->cb.ctx, false, false);
    }
}

/* The link's watch for +switch-master (redis-sentinel://, relay/link.h). */
static void on_watch(void *user, bool watching, const char *what)
{
    sub *s = user;
    if (watching)
        logf_(s, "redis: watching +switch-master again on Sentinel %s", what);
    else
        logf_(s, "redis: the watch for +switch-master failed (%s); trying the next Sentinel with backoff",
              what);
}

static bool sub_up(const mae__source *base)
{
    return ((const sub *)base)->up;
}

static const mae__history *sub_history(mae__source *base)
{
    (void)base;
    return NULL;   /* pub/sub messages carry no ids */
}

static void sub_free(mae__source *base)
{
    sub *s = (sub *)base;
    mae__link_free(s->link);
    if (s->probe)
        event_free(s->probe);
    mae__url_free(&s->url);
    free(s->channel);
    free(s);
}

static const mae__source_ops sub_ops = {sub_up, sub_history, sub_free};

int mae__source_pubsub_new(const mae__source_config *cfg, const mae__source_cb *cb,
                           mae__source **out, char *err, size_t errlen)
{
    sub *s = calloc(1, sizeof *s);
    if (!s)
        return MAE_ENOMEM;
    s->base.ops = &sub_ops;
    s->cb = *cb;
    /* rediss:// too: the link speaks TLS (core/tls.h). */
    int rc = mae__url_parse_for(cfg->redis_url, MAE__URL_ALLOW_TLS | MAE__URL_ALLOW_SENTINEL,
                                &s->url, err, errlen);
    if (rc != MAE_OK) {
        free(s);
        return rc;
    }
    s->channel_len = strlen(cfg->channel);
    s->channel = malloc(s->channel_len + 1);
    s->probe = event_new(cfg->base, -1, EV_PERSIST, on_probe, s);
    mae__link_config lc = {.base = cfg->base,
                           .url = &s->url,
                           .deadline_ms = DEADLINE_MS,
                           .backoff_min_ms = BACKOFF_MIN_MS,
                           .backoff_max_ms = BACKOFF_MAX_MS,
                           .on_ready = on_ready,
                           .on_down = on_down,
                           .on_push = on_push,
                           .on_watch = on_watch,
                           .user = s};
    if (!s->channel || !s->probe) {
        sub_free(&s->base);
        return MAE_ENOMEM;
    }
    rc = mae__link_new(&lc, &s->link, err, errlen);
    if (rc != MAE_OK) {
        sub_free(&s->base);
        return rc;
    }
    memcpy(s->channel, cfg->channel, s->channel_len + 1);
    struct timeval tick = {PROBE_MS / 1000, (PROBE_MS % 1000) * 1000};
    evtimer_add(s->probe, &tick);
    *out = &s->base;
    return MAE_OK;
}
