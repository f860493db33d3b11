/* This module implements the stream reader of relay/stream_source.h: two
 * hiredis async links on one event_base, each with a watchdog and the
 * shared reconnect schedule, the XREAD loop and the queue of history
 * requests.
 *
 * It follows the relay's one rule for hiredis contexts, stated in
 * relay/source.h ("hiredis 0.14 contexts"). It also implements the source
 * interface of relay/source.h over that reader (mae__source_stream_new). */
#include <stdarg.h>
#include <stddef.h>
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
#include <sys/queue.h>

#include "relay/stream_source.h"
#include "stream/decide.h"
#include "stream/reply.h"

typedef struct conn {
    mae__stream_source *src;
    bool is_reader;
    redisAsyncContext *ac;     /* NULL while down */
    bool ready;                /* handshake answered */
    int failures;              /* in a row, for the backoff */
    unsigned pending;          /* replies awaited with a callback */
    struct event *retry;       /* reconnect timer */
    struct event *watchdog;    /* no reply in time: declared dead */
} conn;

struct mae__stream_req {
    mae__stream_source *src;
    TAILQ_ENTRY(mae__stream_req) link;   /* in the source's reqs */
    bool is_range;
    bool sent;                 /* on the wire; its reply (or NULL) will come */
    bool cancelled;            /* freed when its reply comes */
    mae__stream_id sent_at;    /* the reader's position when sent */
    mae__stream_id after;
    unsigned count;
    mae__stream_range_fn range_fn;
    mae__stream_bounds_fn bounds_fn;
    void *user;
};

struct mae__stream_source {
    mae__stream_source_config cfg;
    char *key;
    size_t key_len;
    mae__url url;
    conn reader, history;
    bool positioned;
    mae__stream_id pos;        /* S */
    uint64_t epoch;
    bool closing;
    uint64_t rng;
    TAILQ_HEAD(, mae__stream_req) reqs;  /* queued and sent history requests */
    mae__stream_source_stats stats;
    mae__history history_if;   /* relay/history.h over this source */
    /* As a relay source (mae__source_stream_new): */
    mae__source as_source;
    mae__source_cb cb;
    bool was_up;               /* the reader came up once */
    bool up_reported;          /* the state last told through cb */
};

void mae__stream_source_config_init(mae__stream_source_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->block_ms = 2000;
    cfg->reply_margin_ms = 3000;
    cfg->backoff_min_ms = 100;
    cfg->backoff_max_ms = 5000;
    cfg->read_count = 500;
}

/* ---- links ------------------------------------------------------------- */

static void conn_start(conn *c);
static const mae__history_ops history_ops;

static void arm_watchdog(conn *c)
{
    int ms = c->src->cfg.block_ms + c->src->cfg.reply_margin_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(c->watchdog, &tv);
}

static void sent(conn *c)
{
    if (c->pending++ == 0)
        arm_watchdog(c);
}

static void replied(conn *c)
{
    if (c->pending > 0 && --c->pending > 0)
        arm_watchdog(c);
    else
        evtimer_del(c->watchdog);
}

/* The link is lost: detach its context (freed here when free_ctx, or by
 * hiredis itself when it reported the loss), count it, tell the user and
 * schedule the next attempt on the backoff schedule. */
static void fail(conn *c, const char *why, bool free_ctx)
{
    mae__stream_source *s = c->src;
    redisAsyncContext *ac = c->ac;
    char msg[200];

    /* why may live in the context or a reply about to be freed. */
    snprintf(msg, sizeof msg, "%s", why && *why ? why : "connection lost");
    c->ac = NULL;
    c->ready = false;
    c->pending = 0;
    evtimer_del(c->watchdog);
    s->stats.reconnects++;
    c->failures++;
    if (ac && free_ctx)
        redisAsyncFree(ac);
    double delay = mae__backoff_delay(s->cfg.backoff_min_ms, s->cfg.backoff_max_ms, c->failures,
                                      mae__rand_unit(&s->rng));
    struct timeval tv = {(time_t)delay, (suseconds_t)((delay - (double)(time_t)delay) * 1e6)};
    evtimer_add(c->retry, &tv);
    if (c->is_reader && s->cfg.on_state)
        s->cfg.on_state(s->cfg.user, false, msg);
}

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
    conn *c = arg;
    char why[80];
    (void)fd;
    (void)what;
    snprintf(why, sizeof why, "no reply within %d ms",
             c->src->cfg.block_ms + c->src->cfg.reply_margin_ms);
    fail(c, why, true);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_start(arg);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    conn *c = ac->data;
    /* A failed connect is freed by hiredis right after this returns. */
    if (status != REDIS_OK && c && c->ac == ac)
        fail(c, ac->errstr, false);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    conn *c = ac->data;
    if (c && c->ac == ac)
        fail(c, status == REDIS_OK ? "connection closed" : ac->errstr, false);
}

/* The common prologue of a reply callback on a link: false when the reply
 * is not for the current context (it is being torn down) or reports the
 * link's loss; an error reply fails the link too. */
static bool accept_reply(conn *c, redisAsyncContext *ac, redisReply *r)
{
    if (c->ac != ac)
        return false;
    if (!r) {
        fail(c, ac->errstr, false);
        return false;
    }
    replied(c);
    if (r->type == REDIS_REPLY_ERROR) {
        fail(c, r->str, true);
        return false;
    }
    return true;
}

static void on_step(redisAsyncContext *ac, void *reply, void *priv)
{
    accept_reply(priv, ac, reply);
}

/* Queues AUTH and SELECT when the URL asks for them. */
static void send_preamble(conn *c)
{
    mae__stream_source *s = c->src;
    if (s->url.password) {
        if (s->url.user)
            redisAsyncCommand(c->ac, on_step, c, "AUTH %s %s", s->url.user, s->url.password);
        else
            redisAsyncCommand(c->ac, on_step, c, "AUTH %s", s->url.password);
        sent(c);
    }
    if (s->url.db != 0) {
        redisAsyncCommand(c->ac, on_step, c, "SELECT %d", s->url.db);
        sent(c);
    }
}

/* MULTI EXISTS XINFO EXEC: the bounds, atomically, and a missing key told
 * apart from an error without matching error texts. Returns what queuing
 * EXEC returned. */
static int send_bounds(conn *c, redisCallbackFn *fn, void *priv)
{
    mae__stream_source *s = c->src;
    redisAsyncCommand(c->ac, NULL, NULL, MAE__STREAM_BOUNDS_MULTI);
    redisAsyncCommand(c->ac, NULL, NULL, MAE__STREAM_BOUNDS_EXISTS, s->key, s->key_len);
    redisAsyncCommand(c->ac, NULL, NULL, MAE__STREAM_BOUNDS_XINFO, s->key, s->key_len);
    return redisAsyncCommand(c->ac, fn, priv, MAE__STREAM_BOUNDS_EXEC);
}

static void history_flush(mae__stream_source *s);

/* ---- the reader ---------------------------------------------------------- */

static void on_xread(redisAsyncContext *ac, void *reply, void *priv);

static void send_xread(conn *c)
{
    mae__stream_source *s = c->src;
    char id[MAE__STREAM_ID_BUFSIZE];
    mae__stream_id_format(&s->pos, id);
    redisAsyncCommand(c->ac, on_xread, c, "XREAD COUNT %u BLOCK %d STREAMS %b %s",
                      s->cfg.read_count, s->cfg.block_ms, s->key, s->key_len, id);
    sent(c);
}

static void on_xread(redisAsyncContext *ac, void *reply, void *priv)
{
    conn *c = priv;
    mae__stream_source *s = c->src;
    redisReply *r = reply;

    if (!accept_reply(c, ac, r))
        return;
    /* nil: BLOCK ran out with nothing new. Otherwise [[key, entries]]. */
    if (r->type != REDIS_REPLY_NIL) {
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 1 ||
            r->element[0]->type != REDIS_REPLY_ARRAY || r->element[0]->elements != 2) {
            fail(c, "unexpected reply to XREAD", true);
            return;
        }
        const redisReply *list = r->element[0]->element[1];
        if (list->type != REDIS_REPLY_ARRAY) {
            fail(c, "unexpected reply to XREAD", true);
            return;
        }
        for (size_t i = 0; i < list->elements; i++) {
            mae__stream_entry e;
            if (!mae__stream_parse_entry(list->element[i], &e)) {
                fail(c, "unexpected entry in a reply to XREAD", true);
                return;
            }
            /* XREAD only returns ids after the one asked for; a server
             * that did otherwise must not make us deliver twice. */
            if (mae__stream_id_cmp(&e.id, &s->pos) <= 0)
                continue;
            s->pos = e.id;
            if (e.line) {
                s->stats.entries++;
                s->cfg.on_entry(s->cfg.user, &e);
            }
        }
    }
    send_xread(c);
}

/* The reader's handshake ends with the stream's bounds: the starting
 * position the first time, a rewind check after. */
static void on_reader_bounds(redisAsyncContext *ac, void *reply, void *priv)
{
    conn *c = priv;
    mae__stream_source *s = c->src;
    mae__stream_bounds b;
    const char *err = NULL;

    if (!accept_reply(c, ac, reply))
        return;
    int rc = mae__stream_parse_bounds(reply, &b, &err);
    if (rc <= 0) {
        fail(c, rc < 0 ? err : "unexpected reply to XINFO STREAM", true);
        return;
    }
    c->ready = true;
    c->failures = 0;
    bool rewound = false;
    if (!s->positioned) {
        s->pos = b.last;
        s->positioned = true;
    } else if (mae__stream_id_cmp(&b.last, &s->pos) < 0) {
        s->pos = b.last;
        s->epoch++;
        s->stats.rewinds++;
        rewound = true;
    }
    send_xread(c);
    if (s->cfg.on_state)
        s->cfg.on_state(s->cfg.user, true, NULL);
    if (rewound && s->cfg.on_rewound)
        s->cfg.on_rewound(s->cfg.user, &s->pos);
    history_flush(s);
}

/* ---- history requests ---------------------------------------------------- */

static void req_unlink(mae__stream_req *r)
{
    TAILQ_REMOVE(&r->src->reqs, r, link);
}

static void on_history_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    mae__stream_req *q = priv;
    mae__stream_source *s = q->src;
    conn *c = &s->history;
    redisReply *r = reply;
    /* While closing, c->ac is already NULL: nothing is current. */
    bool current = c->ac == ac;
    bool drop = s->closing || q->cancelled;

    q->sent = false;
    if (drop) {
        req_unlink(q);
        free(q);
    }
    /* A stale context's request stays queued and goes out again once the
     * link is back; a lost link or an error reply does the same after the
     * backoff. */
    if (!current || !accept_reply(c, ac, r) || drop)
        return;
    if (q->is_range) {
        mae__stream_entry *v;
        size_t n;
        if (!mae__stream_parse_entries(r, &v, &n)) {
            fail(c, "unexpected reply to XRANGE", true);
            return;
        }
        req_unlink(q);
        s->stats.history_reads++;
        q->range_fn(q->user, v, n, &q->sent_at);
        free(v);
    } else {
        mae__stream_bounds b;
        const char *err = NULL;
        int rc = mae__stream_parse_bounds(r, &b, &err);
        if (rc <= 0) {
            fail(c, rc < 0 ? err : "unexpected reply to XINFO STREAM", true);
            return;
        }
        req_unlink(q);
        s->stats.history_reads++;
        q->bounds_fn(q->user, &b);
    }
    free(q);
}

static void req_send(mae__stream_source *s, mae__stream_req *q)
{
    conn *c = &s->history;
    int rc;
    q->sent_at = s->pos;
    if (!q->is_range) {
        rc = send_bounds(c, on_history_reply, q);
    } else if (q->after.ms == UINT64_MAX && q->after.seq == UINT64_MAX) {
        /* Nothing can follow the largest id, and Redis refuses "(" before
         * it: an empty range (start after end) answers the same. */
        rc = redisAsyncCommand(c->ac, on_history_reply, q, "XRANGE %b + - COUNT 1", s->key,
                               s->key_len);
    } else {
        char start[MAE__STREAM_ID_BUFSIZE + 1];
        start[0] = '(';
        mae__stream_id_format(&q->after, start + 1);
        rc = redisAsyncCommand(c->ac, on_history_reply, q, "XRANGE %b %s + COUNT %u", s->key,
                               s->key_len, start, q->count);
    }
    /* Not queued (out of memory): no reply will come for it, so it stays
     * unsent; the watchdog, armed all the same, resets the link and the
     * request goes out again after the reconnect. */
    q->sent = rc == REDIS_OK;
    sent(c);
}

/* Sends the queued requests once the history link is up and the reader's
 * position is known. */
static void history_flush(mae__stream_source *s)
{
    if (!s->history.ready || !s->positioned)
        return;
    mae__stream_req *q;
    TAILQ_FOREACH(q, &s->reqs, link)
        if (!q->sent && !q->cancelled)
            req_send(s, q);
}

static void on_history_ready(redisAsyncContext *ac, void *reply, void *priv)
{
    conn *c = priv;
    if (!accept_reply(c, ac, reply))
        return;
    c->ready = true;
    c->failures = 0;
    history_flush(c->src);
}

static mae__stream_req *req_new(mae__stream_source *s)
{
    mae__stream_req *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->src = s;
    TAILQ_INSERT_TAIL(&s->reqs, q, link);
    return q;
}

static mae__stream_req *hist_range(void *self, const mae__stream_id *after, unsigned count,
                                   mae__stream_range_fn fn, void *user)
{
    mae__stream_source *s = self;
    mae__stream_req *q = req_new(s);
    if (!q)
        return NULL;
    q->is_range = true;
    q->after = *after;
    q->count = count ? count : 1;
    q->range_fn = fn;
    q->user = user;
    if (s->history.ready && s->positioned)
        req_send(s, q);
    return q;
}

static mae__stream_req *hist_bounds(void *self, mae__stream_bounds_fn fn, void *user)
{
    mae__stream_source *s = self;
    mae__stream_req *q = req_new(s);
    if (!q)
        return NULL;
    q->bounds_fn = fn;
    q->user = user;
    if (s->history.ready && s->positioned)
        req_send(s, q);
    return q;
}

static void hist_cancel(void *self, mae__stream_req *q)
{
    (void)self;
    if (!q)
        return;
    if (q->sent) {
        q->cancelled = true;   /* freed by its reply */
        return;
    }
    req_unlink(q);
    free(q);
}

/* ---- lifecycle ----------------------------------------------------------- */

static void conn_start(conn *c)
{
    mae__stream_source *s = c->src;
    redisAsyncContext *ac = s->url.path ? redisAsyncConnectUnix(s->url.path)
                                        : redisAsyncConnect(s->url.host, s->url.port);
    if (!ac || ac->err) {
        char why[160];
        snprintf(why, sizeof why, "%s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        fail(c, why, false);
        return;
    }
    ac->data = c;
    if (redisLibeventAttach(ac, s->cfg.base) != REDIS_OK) {
        redisAsyncFree(ac);
        fail(c, "cannot attach to the event loop", false);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    /* The watchdog finds a hung server; keepalive also finds a peer gone
     * without a word while the link is idle in XREAD BLOCK. */
    redisEnableKeepAlive(&ac->c);
    c->ac = ac;
    send_preamble(c);
    if (c->is_reader) {
        send_bounds(c, on_reader_bounds, c);
        sent(c);
    } else {
        redisAsyncCommand(ac, on_history_ready, c, "PING");
        sent(c);
    }
}

static int conn_init(mae__stream_source *s, conn *c, bool is_reader)
{
    c->src = s;
    c->is_reader = is_reader;
    c->retry = evtimer_new(s->cfg.base, on_retry, c);
    c->watchdog = evtimer_new(s->cfg.base, on_watchdog, c);
    return c->retry && c->watchdog ? 0 : -1;
}

static void conn_close(conn *c)
{
    if (c->ac) {
        redisAsyncContext *ac = c->ac;
        c->ac = NULL;
        redisAsyncFree(ac);
    }
    if (c->retry)
        event_free(c->retry);
    if (c->watchdog)
        event_free(c->watchdog);
    c->retry = c->watchdog = NULL;
}

int mae__stream_source_new(const mae__stream_source_config *cfg, mae__stream_source **out,
                           char *err, size_t errlen)
{
    mae__stream_source *s;
    char uerr[160];

    if (!cfg || !cfg->base || !cfg->on_entry || !cfg->redis_url || !cfg->key || !*cfg->key ||
        cfg->block_ms < 0 || cfg->reply_margin_ms <= 0 || cfg->backoff_min_ms <= 0 ||
        cfg->backoff_max_ms < cfg->backoff_min_ms || cfg->read_count == 0) {
        snprintf(err, errlen, "stream source: base, redis_url, a non-empty key, on_entry and "
                              "positive timings are required");
        return MAE_EINVAL;
    }
    s = calloc(1, sizeof *s);
    if (!s)
        goto oom;
    s->cfg = *cfg;
    TAILQ_INIT(&s->reqs);
    s->history_if.ops = &history_ops;
    s->history_if.self = s;
    s->key_len = strlen(cfg->key);
    s->key = malloc(s->key_len + 1);
    if (!s->key)
        goto oom;
    memcpy(s->key, cfg->key, s->key_len + 1);
    int rc = mae__url_parse(cfg->redis_url, &s->url, uerr, sizeof uerr);
    if (rc != MAE_OK) {
        snprintf(err, errlen, "%s", rc == MAE_ENOMEM ? "out of memory" : uerr);
        free(s->key);
        free(s);
        return rc;
    }
    if (conn_init(s, &s->reader, true) != 0 || conn_init(s, &s->history, false) != 0)
        goto oom;
    s->rng = ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)s;
    if (!s->rng)
        s->rng = 0x9e3779b97f4a7c15ull;
    /* Both links start from the loop, so no callback runs inside _new. */
    struct timeval now = {0, 0};
    evtimer_add(s->reader.retry, &now);
    evtimer_add(s->history.retry, &now);
    *out = s;
    return MAE_OK;
oom:
    snprintf(err, errlen, "out of memory");
    if (s) {
        s->closing = true;
        conn_close(&s->reader);
        conn_close(&s->history);
        mae__url_free(&s->url);
        free(s->key);
        free(s);
    }
    return MAE_ENOMEM;
}

void mae__stream_source_free(mae__stream_source *s)
{
    if (!s)
        return;
    s->closing = true;
    conn_close(&s->reader);
    conn_close(&s->history);
    mae__stream_req *q;
    while ((q = TAILQ_FIRST(&s->reqs))) {
        req_unlink(q);
        free(q);
    }
    mae__url_free(&s->url);
    free(s->key);
    free(s);
}

bool mae__stream_source_connected(const mae__stream_source *s)
{
    return s->reader.ready;
}

bool mae__stream_source_position(const mae__stream_source *s, mae__stream_id *out)
{
    if (!s->positioned)
        return false;
    *out = s->pos;
    return true;
}

uint64_t mae__stream_source_epoch(const mae__stream_source *s)
{
    return s->epoch;
}

void mae__stream_source_get_stats(const mae__stream_source *s, mae__stream_source_stats *out)
{
    *out = s->stats;
}

/* ---- relay/history.h over the source ---------------------------------------- */

static bool hist_position(void *self, mae__stream_id *out)
{
    return mae__stream_source_position(self, out);
}

static uint64_t hist_epoch(void *self)
{
    return mae__stream_source_epoch(self);
}

static struct event_base *hist_base(void *self)
{
    return ((mae__stream_source *)self)->cfg.base;
}

static const mae__history_ops history_ops = {hist_position, hist_epoch, hist_base,
                                             hist_bounds,   hist_range, hist_cancel};

const mae__history *mae__stream_source_history(mae__stream_source *s)
{
    return &s->history_if;
}

/* ---- relay/source.h over the source ------------------------------------------ */

#define AS_STREAM(src) ((mae__stream_source *)((char *)(src) - offsetof(mae__stream_source, as_source)))

static void src_log(mae__stream_source *s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void src_log(mae__stream_source *s, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (s->cb.on_log)
        s->cb.on_log(s->cb.ctx, line);
}

static void src_on_entry(void *user, const mae__stream_entry *e)
{
    mae__stream_source *s = user;
    s->cb.on_event(s->cb.ctx, &e->id, e->line, e->len);
}

static void src_on_state(void *user, bool connected, const char *why)
{
    mae__stream_source *s = user;
    if (connected == s->up_reported)
        return;   /* repeated failures while down */
    s->up_reported = connected;
    if (connected) {
        src_log(s, "redis: reading the stream %s", s->key);
        s->cb.on_state(s->cb.ctx, true, s->was_up);
        s->was_up = true;
    } else {
        src_log(s, "redis: %s; retrying with backoff", why ? why : "connection lost");
        s->cb.on_state(s->cb.ctx, false, false);
    }
}

static void src_on_rewound(void *user, const mae__stream_id *last)
{
    mae__stream_source *s = user;
    char text[MAE__STREAM_ID_BUFSIZE];
    mae__stream_id_format(last, text);
    src_log(s, "redis: the stream %s went back before %s (recreated or restored); clients get a "
               "reset", s->key, text);
    s->cb.on_reset(s->cb.ctx, mae__resume_rewound_json, strlen(mae__resume_rewound_json));
}

static bool src_up(const mae__source *src)
{
    return mae__stream_source_connected(AS_STREAM(src));
}

static const mae__history *src_history(mae__source *src)
{
    return &AS_STREAM(src)->history_if;
}

static void src_free(mae__source *src)
{
    mae__stream_source_free(AS_STREAM(src));
}

static const mae__source_ops source_ops = {src_up, src_history, src_free};

int mae__source_stream_new(const mae__source_config *cfg, const mae__source_cb *cb,
                           mae__source **out, char *err, size_t errlen)
{
    mae__stream_source_config sc;
    mae__stream_source *s;
    mae__stream_source_config_init(&sc);
    sc.base = cfg->base;
    sc.redis_url = cfg->redis_url;
    sc.key = cfg->stream_key;
    sc.on_entry = src_on_entry;
    sc.on_state = src_on_state;
    sc.on_rewound = src_on_rewound;
    int rc = mae__stream_source_new(&sc, &s, err, errlen);
    if (rc != MAE_OK)
        return rc;
    /* The callbacks come from the loop, never from inside _new. */
    s->cfg.user = s;
    s->cb = *cb;
    s->as_source.ops = &source_ops;
    *out = &s->as_source;
    return MAE_OK;
}
