/* This module implements the stream reader of relay/stream_source.h: two
 * Redis links (relay/link.h: connect, AUTH, SELECT, watchdog, backoff) on
 * one event_base, the XREAD loop and the queue of history requests.
 *
 * It follows the relay's one rule for Redis connections, stated in
 * relay/source.h. It also implements the source
 * interface of relay/source.h over that reader (mae__source_stream_new). */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include <mailagent/common.h>

#include <sys/queue.h>

#include "core/url.h"
#include "relay/link.h"
#include "relay/stream_source.h"
#include "stream/decide.h"
#include "stream/reply.h"

/* One of the two links (relay/link.h). */
typedef struct conn {
    mae__stream_source *src;
    bool is_reader;
    mae__link *link;
    bool ready;                /* its first reply (bounds, PING) came */
} conn;

struct mae__stream_req {
    mae__stream_source *src;
    TAILQ_ENTRY(mae__stream_req) link;   /* in the source's reqs */
    bool is_range;
    bool is_kept;              /* a kept() check: XRANGE id id, XREVRANGE (id */
    bool sent;                 /* on the wire; its reply (or NULL) will come */
    bool cancelled;            /* freed when its reply comes */
    mae__stream_id sent_at;    /* the reader's position when sent */
    mae__stream_id after;
    unsigned count;
    mae__stream_range_fn range_fn;
    mae__stream_bounds_fn bounds_fn;
    mae__stream_kept_fn kept_fn;
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
    TAILQ_HEAD(, mae__stream_req) reqs;  /* queued and sent history requests */
    mae__stream_source_stats stats;
    mae__history history_if;   /* relay/history.h over this source */
    /* As a relay source (mae__source_stream_new): */
    mae__source as_source;
    mae__source_cb cb;
    bool was_up;               /* the reader came up once */
    bool up_reported;          /* the state last told through cb */
    bool down_logged;          /* this run of failures was logged */
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

static const mae__history_ops history_ops;

/* Every reply on a link starts here (relay/link.h's prologue). */
static bool accept_reply(conn *c, redisReply *r)
{
    return mae__link_accept(c->link, r, true);
}

static void fail(conn *c, const char *why)
{
    mae__link_fail(c->link, why);
}

/* MULTI EXISTS XINFO EXEC: the bounds, atomically, and a missing key told
 * apart from an error without matching error texts. Returns what queuing
 * EXEC returned. */
static int send_bounds(conn *c, mae__link_reply_fn *fn, void *priv)
{
    mae__stream_source *s = c->src;
    mae__link_command(c->link, false, NULL, NULL, MAE__STREAM_BOUNDS_MULTI);
    mae__link_command(c->link, false, NULL, NULL, MAE__STREAM_BOUNDS_EXISTS, s->key, s->key_len);
    mae__link_command(c->link, false, NULL, NULL, MAE__STREAM_BOUNDS_XINFO, s->key, s->key_len);
    return mae__link_command(c->link, true, fn, priv, MAE__STREAM_BOUNDS_EXEC);
}

static void history_flush(mae__stream_source *s);

/* ---- the reader ---------------------------------------------------------- */

static void src_log(mae__stream_source *s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static void on_xread(mae__link *l, redisReply *reply, void *priv);

/* The answer to send_reader_kept: the reader's position is gone although
 * newer entries exist (a failover rolled it back): every live client gets
 * reset rolled_back with the newest entry before it, then what follows
 * (the XREAD after the position). */
static void on_reader_kept(mae__link *l, redisReply *reply, void *priv)
{
    (void)l;
    conn *c = priv;
    mae__stream_source *s = c->src;
    if (!accept_reply(c, reply))
        return;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_ARRAY ||
        reply->element[1]->type != REDIS_REPLY_ARRAY) {
        fail(c, "unexpected reply to XRANGE id id");
        return;
    }
    if (reply->element[0]->elements > 0)
        return;   /* still there */
    mae__resume_plan plan;
    memset(&plan, 0, sizeof plan);
    plan.kind = MAE__RESUME_ROLLED_BACK;
    redisReply *before = reply->element[1];
    if (before->elements > 0 && before->element[0]->type == REDIS_REPLY_ARRAY &&
        before->element[0]->elements > 0 &&
        before->element[0]->element[0]->type == REDIS_REPLY_STRING)
        plan.has_oldest = mae__stream_id_parse(before->element[0]->element[0]->str,
                                               before->element[0]->element[0]->len,
                                               &plan.oldest) == MAE__STREAM_ID_OK;
    char json[MAE__RESUME_RESET_MAX], text[MAE__STREAM_ID_BUFSIZE];
    size_t n = mae__resume_reset_json(&plan, json, sizeof json);
    mae__stream_id_format(&s->pos, text);
    src_log(s, "redis: the entry %s read last is gone from the stream %s (rolled back by a failover?); reset sent",
            text, s->key);
    if (n)
        s->cb.on_reset(s->cb.ctx, json, n);
}

static void send_reader_kept(conn *c)
{
    mae__stream_source *s = c->src;
    char id[MAE__STREAM_ID_BUFSIZE], excl[MAE__STREAM_ID_BUFSIZE + 1];
    mae__stream_id_format(&s->pos, id);
    excl[0] = '(';
    memcpy(excl + 1, id, sizeof id);
    mae__link_command(c->link, false, NULL, NULL, "MULTI");
    mae__link_command(c->link, false, NULL, NULL, "XRANGE %b %s %s", s->key, s->key_len, id, id);
    mae__link_command(c->link, false, NULL, NULL, "XREVRANGE %b %s - COUNT 1", s->key,
                      s->key_len, excl);
    mae__link_command(c->link, true, on_reader_kept, c, "EXEC");
}

static void on_reader_recheck(mae__link *l, redisReply *reply, void *priv);

static void send_xread(conn *c)
{
    mae__stream_source *s = c->src;
    char id[MAE__STREAM_ID_BUFSIZE];
    mae__stream_id_format(&s->pos, id);
    /* Through Sentinel each read follows a ROLE (relay/link.h): entries
     * come only from a server that still says it is the master (one
     * demoted while the XREAD blocks answers it UNBLOCKED). */
    mae__link_confirm_master(c->link);
    mae__link_command(c->link, true, on_xread, c, "XREAD COUNT %u BLOCK %d STREAMS %b %s",
                      s->cfg.read_count, s->cfg.block_ms, s->key, s->key_len, id);
}

static void on_xread(mae__link *l, redisReply *reply, void *priv)
{
    (void)l;
    conn *c = priv;
    mae__stream_source *s = c->src;
    redisReply *r = reply;

    if (!accept_reply(c, r))
        return;
    if (s->cb.on_progress)
        s->cb.on_progress(s->cb.ctx);
    /* nil: BLOCK ran out with nothing new. The stream may have gone back
     * meanwhile (deleted and written again with lower ids, restored from
     * an older backup): XREAD after the old position would then wait for
     * ever, so a quiet block is followed by a look at the bounds. */
    if (r->type == REDIS_REPLY_NIL) {
        send_bounds(c, on_reader_recheck, c);
        return;
    }
    {
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 1 ||
            r->element[0]->type != REDIS_REPLY_ARRAY || r->element[0]->elements != 2) {
            fail(c, "unexpected reply to XREAD");
            return;
        }
        const redisReply *list = r->element[0]->element[1];
        if (list->type != REDIS_REPLY_ARRAY) {
            fail(c, "unexpected reply to XREAD");
            return;
        }
        bool batch = list->elements > 1 && s->cfg.on_batch;
        if (batch)
            s->cfg.on_batch(s->cfg.user, true);
        for (size_t i = 0; i < list->elements; i++) {
            mae__stream_entry e;
            if (!mae__stream_parse_entry(list->element[i], &e)) {
                if (batch)
                    s->cfg.on_batch(s->cfg.user, false);
                fail(c, "unexpected entry in a reply to XREAD");
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
        if (batch)
            s->cfg.on_batch(s->cfg.user, false);
    }
    send_xread(c);
}

/* The reader's handshake ends with the stream's bounds: the starting
 * position the first time, a rewind check after. */
/* The stream's bounds from an XINFO STREAM reply on c; false (c failed)
 * when the reply is not one. */
static bool bounds_reply(conn *c, redisReply *reply, mae__stream_bounds *b)
{
    const char *err = NULL;
    if (!accept_reply(c, reply))
        return false;
    int rc = mae__stream_parse_bounds(reply, b, &err);
    if (rc <= 0) {
        fail(c, rc < 0 ? err : "unexpected reply to XINFO STREAM");
        return false;
    }
    return true;
}

/* The stream ends below the position (recreated, restored from an older
 * snapshot): the position moves down to its end, a new epoch. */
static bool rewind_to(mae__stream_source *s, const mae__stream_bounds *b)
{
    if (mae__stream_id_cmp(&b->last, &s->pos) >= 0)
        return false;
    s->pos = b->last;
    s->epoch++;
    s->stats.rewinds++;
    return true;
}

static void on_reader_bounds(mae__link *l, redisReply *reply, void *priv)
{
    (void)l;
    conn *c = priv;
    mae__stream_source *s = c->src;
    mae__stream_bounds b;

    if (!bounds_reply(c, reply, &b))
        return;
    c->ready = true;
    bool rewound = false;
    if (!s->positioned) {
        s->pos = b.last;
        s->positioned = true;
    } else if (!(rewound = rewind_to(s, &b)) && !mae__stream_id_is_zero(&s->pos) &&
               mae__stream_id_cmp(&s->pos, &b.last) < 0) {
        /* Reconnected (perhaps to a new master after a failover): is the
         * entry read last still there? Answered before the XREAD. */
        send_reader_kept(c);
    }
    send_xread(c);
    if (s->cfg.on_state)
        s->cfg.on_state(s->cfg.user, true, NULL);
    if (rewound && s->cfg.on_rewound)
        s->cfg.on_rewound(s->cfg.user, &s->pos);
    history_flush(s);
}

/* After a quiet block: the same rewind check as after a reconnect, then
 * XREAD again (issue 18: a stream rewritten lower while the relay was
 * connected stalled every live client silently). */
static void on_reader_recheck(mae__link *l, redisReply *reply, void *priv)
{
    (void)l;
    conn *c = priv;
    mae__stream_source *s = c->src;
    mae__stream_bounds b;

    if (!bounds_reply(c, reply, &b))
        return;
    bool rewound = rewind_to(s, &b);
    send_xread(c);
    if (rewound && s->cfg.on_rewound)
        s->cfg.on_rewound(s->cfg.user, &s->pos);
}

/* ---- history requests ---------------------------------------------------- */

static void req_unlink(mae__stream_req *r)
{
    TAILQ_REMOVE(&r->src->reqs, r, link);
}

static void on_history_reply(mae__link *l, redisReply *reply, void *priv)
{
    (void)l;
    mae__stream_req *q = priv;
    mae__stream_source *s = q->src;
    conn *c = &s->history;
    redisReply *r = reply;

    q->sent = false;
    if (s->closing) {
        req_unlink(q);
        free(q);
        return;
    }
    /* A request on a lost link (NULL) stays queued and goes out again once
     * the link is back; an error reply does the same after the backoff. */
    bool ok = accept_reply(c, r);
    if (q->cancelled) {
        req_unlink(q);
        free(q);
        return;
    }
    if (!ok)
        return;
    if (q->is_kept) {
        /* EXEC: [XRANGE id id, XREVRANGE key (id - COUNT 1] */
        mae__stream_entry *v1 = NULL, *v2 = NULL;
        size_t n1 = 0, n2 = 0;
        bool good = r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                    mae__stream_parse_entries(r->element[0], &v1, &n1);
        good = good && mae__stream_parse_entries(r->element[1], &v2, &n2);
        if (!good) {
            free(v1);
            free(v2);
            fail(c, "unexpected reply to XRANGE id id");
            return;
        }
        mae__stream_id before = {0, 0};
        if (n2 > 0)
            before = v2[0].id;
        req_unlink(q);
        s->stats.history_reads++;
        q->kept_fn(q->user, n1 > 0, n2 > 0, &before);
        free(v1);
        free(v2);
    } else if (q->is_range) {
        mae__stream_entry *v;
        size_t n;
        if (!mae__stream_parse_entries(r, &v, &n)) {
            fail(c, "unexpected reply to XRANGE");
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
            fail(c, rc < 0 ? err : "unexpected reply to XINFO STREAM");
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
    /* Through Sentinel each history read follows a ROLE too, as each XREAD
     * does (relay/link.h): a demoted master not yet resynced with the new
     * one still holds entries the new master lost, and a replay or a kept
     * check answered from it would hand them to a resuming client. A ROLE
     * that is not master fails the link; the request, answered NULL,
     * stays queued and goes out again on the master the Sentinels name. */
    mae__link_confirm_master(c->link);
    if (q->is_kept) {
        char id[MAE__STREAM_ID_BUFSIZE], excl[MAE__STREAM_ID_BUFSIZE + 1];
        mae__stream_id_format(&q->after, id);
        excl[0] = '(';
        memcpy(excl + 1, id, sizeof id);
        mae__link_command(c->link, false, NULL, NULL, "MULTI");
        mae__link_command(c->link, false, NULL, NULL, "XRANGE %b %s %s", s->key, s->key_len, id,
                          id);
        mae__link_command(c->link, false, NULL, NULL, "XREVRANGE %b %s - COUNT 1", s->key,
                          s->key_len, excl);
        rc = mae__link_command(c->link, true, on_history_reply, q, "EXEC");
    } else if (!q->is_range) {
        rc = send_bounds(c, on_history_reply, q);
    } else if (q->after.ms == UINT64_MAX && q->after.seq == UINT64_MAX) {
        /* Nothing can follow the largest id, and Redis refuses "(" before
         * it: an empty range (start after end) answers the same. */
        rc = mae__link_command(c->link, true, on_history_reply, q, "XRANGE %b + - COUNT 1",
                               s->key, s->key_len);
    } else {
        char start[MAE__STREAM_ID_BUFSIZE + 1];
        start[0] = '(';
        mae__stream_id_format(&q->after, start + 1);
        rc = mae__link_command(c->link, true, on_history_reply, q, "XRANGE %b %s + COUNT %u",
                               s->key, s->key_len, start, q->count);
    }
    /* Not queued (out of memory): no reply will come for it, so it stays
     * unsent; the watchdog, armed all the same (relay/link.h), resets the
     * link and the request goes out again after the reconnect. */
    q->sent = rc == REDIS_OK;
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

static void on_history_ready(mae__link *l, redisReply *reply, void *priv)
{
    (void)l;
    conn *c = priv;
    if (!accept_reply(c, reply))
        return;
    c->ready = true;
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

static mae__stream_req *hist_kept(void *self, const mae__stream_id *id, mae__stream_kept_fn fn,
                                  void *user)
{
    mae__stream_source *s = self;
    mae__stream_req *q = req_new(s);
    if (!q)
        return NULL;
    q->is_kept = true;
    q->after = *id;
    q->kept_fn = fn;
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

/* The link is connected: the reader starts with the bounds (its position
 * the first time, a rewind check after), the history link with a PING. */
static void on_link_ready(void *user)
{
    conn *c = user;
    if (c->is_reader)
        send_bounds(c, on_reader_bounds, c);
    else
        mae__link_command(c->link, true, on_history_ready, c, "PING");
}

/* The reader's watch for +switch-master (relay/link.h); the history
 * link's own watch follows the same Sentinels, so one of them is told. */
static void on_link_watch(void *user, bool watching, const char *what)
{
    conn *c = user;
    mae__stream_source *s = c->src;
    if (!c->is_reader)
        return;
    if (watching)
        src_log(s, "redis: watching +switch-master again on Sentinel %s", what);
    else
        src_log(s, "redis: the watch for +switch-master failed (%s); trying the next Sentinel with backoff",
              what);
}

static void on_link_down(void *user, const char *why, int failures, bool connecting)
{
    conn *c = user;
    mae__stream_source *s = c->src;
    (void)failures;
    if (connecting && s->cfg.on_connect_failed)
        s->cfg.on_connect_failed(s->cfg.user, why);
    c->ready = false;
    s->stats.reconnects++;
    if (c->is_reader && s->cfg.on_state)
        s->cfg.on_state(s->cfg.user, false, why);
}

static int conn_init(mae__stream_source *s, conn *c, bool is_reader, char *err, size_t errlen)
{
    c->src = s;
    c->is_reader = is_reader;
    mae__link_config lc = {.base = s->cfg.base,
                           .url = &s->url,
                           .select_db = true,
                           .deadline_ms = s->cfg.block_ms + s->cfg.reply_margin_ms,
                           .backoff_min_ms = s->cfg.backoff_min_ms,
                           .backoff_max_ms = s->cfg.backoff_max_ms,
                           .on_ready = on_link_ready,
                           .on_down = on_link_down,
                           .on_watch = on_link_watch,
                           .user = c};
    return mae__link_new(&lc, &c->link, err, errlen);
}

static void conn_close(conn *c)
{
    mae__link_free(c->link);
    c->link = NULL;
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
    /* rediss:// too: the links speak TLS (core/tls.h). */
    int rc = mae__url_parse_for(cfg->redis_url, MAE__URL_ALLOW_TLS | MAE__URL_ALLOW_SENTINEL,
                                &s->url, uerr, sizeof uerr);
    if (rc != MAE_OK) {
        snprintf(err, errlen, "%s", rc == MAE_ENOMEM ? "out of memory" : uerr);
        free(s->key);
        free(s);
        return rc;
    }
    rc = conn_init(s, &s->reader, true, uerr, sizeof uerr);
    if (rc == MAE_OK)
        rc = conn_init(s, &s->history, false, uerr, sizeof uerr);
    if (rc == MAE_EINVAL) {
        /* A TLS file of the URL that cannot be used: said, not retried. */
        snprintf(err, errlen, "%s", uerr);
        s->closing = true;
        conn_close(&s->reader);
        conn_close(&s->history);
        mae__url_free(&s->url);
        free(s->key);
        free(s);
        return rc;
    }
    if (rc != MAE_OK)
        goto oom;
    /* Both links start from the loop (relay/link.h), so no callback runs
     * inside _new. */
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
                                             hist_bounds,   hist_range, hist_cancel, NULL,
                                             hist_kept};

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
    if (!connected) {
        /* Logged once per run of failures, told once per change. */
        if (!s->down_logged)
            src_log(s, "redis: %s; retrying with backoff", why ? why : "connection lost");
        s->down_logged = true;
        if (s->up_reported) {
            s->up_reported = false;
            s->cb.on_state(s->cb.ctx, false, false);
        }
        return;
    }
    s->down_logged = false;
    if (s->up_reported)
        return;
    s->up_reported = true;
    src_log(s, "redis: reading the stream %s", s->key);
    s->cb.on_state(s->cb.ctx, true, s->was_up);
    s->was_up = true;
}

static void src_on_rewound(void *user, const mae__stream_id *last)
{
    mae__stream_source *s = user;
    char text[MAE__STREAM_ID_BUFSIZE];
    mae__stream_id_format(last, text);
    src_log(s, "redis: the stream %s went back before %s (recreated or restored); reset sent",
            s->key, text);
    s->cb.on_reset(s->cb.ctx, mae__resume_rewound_json, strlen(mae__resume_rewound_json));
}

static void src_on_connect_failed(void *user, const char *why)
{
    mae__stream_source *s = user;
    if (s->cb.on_connect_failed)
        s->cb.on_connect_failed(s->cb.ctx, why);
}

static void src_on_batch(void *user, bool begin)
{
    mae__stream_source *s = user;
    if (s->cb.on_batch)
        s->cb.on_batch(s->cb.ctx, begin);
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
    sc.on_batch = src_on_batch;
    sc.on_connect_failed = src_on_connect_failed;
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
