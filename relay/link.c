/* This module implements the relay's Redis link of relay/link.h: locate,
 * connect (a plain or an OpenSSL bufferevent), hello, talk (redisReader and
 * a FIFO of reply callbacks), watch and retry, one connection at a time. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <mailagent/common.h>

#include "core/backoff.h"
#include "core/tls.h"
#include "relay/link.h"

/* Keepalive as hiredis sets it: probes after 15 s idle, every 5 s, 3 lost
 * ones and the peer is gone. */
#define KEEPALIVE_IDLE_S 15
#define KEEPALIVE_INTVL_S 5
#define KEEPALIVE_CNT 3

/* redis-sentinel://: a Sentinel that has not answered "where is the
 * master" within this long is skipped for the next one. */
#define SENTINEL_TIMEOUT_MS 500
/* ... and the longest wait between attempts: a failed connect through
 * Sentinel is usually a failover under way, and asking the Sentinels again
 * soon finds the new master within this long of its promotion. */
#define SENTINEL_RETRY_MAX_S 0.5
/* The +switch-master watch PINGs its Sentinel this often (a PING is
 * allowed while subscribed); no answer within the link's deadline and the
 * Sentinel is hung (stopped, or its machine unreachable): the watch moves
 * on as when the connection fails. */
#define WATCH_PROBE_MS 1000

typedef struct pending_cmd {
    mae__link_reply_fn *fn;
    void *priv;
} pending_cmd;

enum link_state { LINK_IDLE, LINK_LOOKING, LINK_CONNECTING, LINK_UP };

struct mae__link {
    mae__link_config cfg;
    enum link_state state;
    struct bufferevent *bev;    /* NULL unless CONNECTING or UP */
    SSL *ssl;                   /* the bufferevent's (it frees it); NULL for plain */
    SSL_CTX *tls;               /* rediss://: built once, kept for every attempt */
    SSL_SESSION *session;       /* the last good connection's, offered again */
    redisReader *reader;
    pending_cmd *fifo;          /* replies awaited, in order (a ring) */
    size_t fifo_head, fifo_len, fifo_cap;
    unsigned gen;               /* bumped at every close: a read loop stops */
    int failures;               /* attempts failed in a row */
    unsigned pending;           /* replies awaited by the owner (the watchdog) */
    uint64_t rng;
    struct event *retry;        /* the next attempt */
    struct event *watchdog;     /* an awaited reply is late */
    struct evdns_base *dns;     /* made at the first name to look up */
    struct evdns_getaddrinfo_request *lookup;
    bool answered;              /* this connection gave a reply: it is established */
    bool large;                 /* a large reply passed: give the reader's buffer back */
    bool closing;
    /* redis-sentinel:// (url->nsentinels > 0): the Sentinels in the order
     * they are asked (indexes into url->sentinels; one that answered moves
     * to the front), the one being asked, its connection and its timer. */
    size_t *sorder;
    size_t sask;
    struct bufferevent *sbev;
    redisReader *sreader;
    struct event *stimer;
    char slast[200];            /* the last Sentinel's failure, for the message */
    /* ... and, while the link is up, a connection to a Sentinel subscribed
     * to +switch-master (NULL: none, or between two attempts): first the
     * one that named the master, then, each time it fails, the next in
     * sorder after wtimer's backoff. wtimer also bounds the wait for the
     * subscription's confirmation, then paces the PING probes and bounds
     * the wait for each answer. */
    struct bufferevent *wbev;
    redisReader *wreader;
    struct event *wtimer;
    size_t wpos;                /* the Sentinel watched: sorder[wpos] */
    int wfailures;              /* watch attempts failed in a row */
    bool wsubscribed;           /* the Sentinel confirmed the subscription */
    bool wprobing;              /* a PING awaits its answer */
    unsigned wgen;              /* bumped when a watch connection ends: a read loop stops */
    char target_host[256];      /* the address being connected to (a name looked up) */
    int target_port;
};

static void tv_of_ms(struct timeval *tv, int ms)
{
    tv->tv_sec = ms / 1000;
    tv->tv_usec = (ms % 1000) * 1000;
}

static void arm_watchdog(mae__link *l)
{
    struct timeval tv;
    tv_of_ms(&tv, l->cfg.deadline_ms);
    evtimer_add(l->watchdog, &tv);
}

void mae__link_expect(mae__link *l)
{
    if (l->pending++ == 0)
        arm_watchdog(l);
}

void mae__link_got(mae__link *l)
{
    if (l->pending > 0 && --l->pending > 0)
        arm_watchdog(l);   /* the next awaited reply gets a full deadline */
    else
        evtimer_del(l->watchdog);
}

/* ---- the FIFO of reply callbacks --------------------------------------------------- */

static bool fifo_push(mae__link *l, mae__link_reply_fn *fn, void *priv)
{
    if (l->fifo_len == l->fifo_cap) {
        size_t cap = l->fifo_cap ? l->fifo_cap * 2 : 16;
        pending_cmd *v = malloc(cap * sizeof *v);
        if (!v)
            return false;
        for (size_t i = 0; i < l->fifo_len; i++)
            v[i] = l->fifo[(l->fifo_head + i) % l->fifo_cap];
        free(l->fifo);
        l->fifo = v;
        l->fifo_cap = cap;
        l->fifo_head = 0;
    }
    l->fifo[(l->fifo_head + l->fifo_len) % l->fifo_cap] = (pending_cmd){fn, priv};
    l->fifo_len++;
    return true;
}

static bool fifo_pop(mae__link *l, pending_cmd *out)
{
    if (l->fifo_len == 0)
        return false;
    *out = l->fifo[l->fifo_head];
    l->fifo_head = (l->fifo_head + 1) % l->fifo_cap;
    l->fifo_len--;
    return true;
}

/* ---- close: the one place a connection ends ---------------------------------------- */

/* Ends the question put to a Sentinel, if one is under way. */
static void sentinel_end(mae__link *l)
{
    if (l->stimer)
        evtimer_del(l->stimer);
    if (l->sbev) {
        bufferevent_free(l->sbev);
        l->sbev = NULL;
    }
    if (l->sreader) {
        redisReaderFree(l->sreader);
        l->sreader = NULL;
    }
}

/* Closes the watch's Sentinel connection, if one is open. */
static void watch_close(mae__link *l)
{
    l->wgen++;
    l->wsubscribed = false;
    l->wprobing = false;
    if (l->wbev) {
        bufferevent_free(l->wbev);
        l->wbev = NULL;
    }
    if (l->wreader) {
        redisReaderFree(l->wreader);
        l->wreader = NULL;
    }
}

/* Ends the watch for +switch-master (the link is going down): its
 * connection and its next attempt. */
static void watch_end(mae__link *l)
{
    watch_close(l);
    if (l->wtimer)
        evtimer_del(l->wtimer);
    l->wfailures = 0;
}

/* Frees the connection and answers every waiting command with NULL. The
 * link is down (state IDLE) before the first of those callbacks runs, so
 * one that sends or fails finds nothing to act on. */
static void close_conn(mae__link *l)
{
    l->gen++;
    l->state = LINK_IDLE;
    l->pending = 0;
    evtimer_del(l->watchdog);
    sentinel_end(l);
    watch_end(l);
    if (l->lookup) {
        struct evdns_getaddrinfo_request *req = l->lookup;
        l->lookup = NULL;
        evdns_getaddrinfo_cancel(req);   /* its callback sees EAI_CANCEL */
    }
    if (l->ssl) {
        /* No close_notify (the peer may be hung, nothing is owed), and the
         * session stays resumable for the next connect. */
        SSL_set_shutdown(l->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    }
    if (l->bev) {
        /* Safe inside the bufferevent's own callbacks: libevent holds a
         * reference until they return. Frees the SSL too. */
        bufferevent_free(l->bev);
        l->bev = NULL;
        l->ssl = NULL;
    }
    if (l->reader) {
        redisReaderFree(l->reader);
        l->reader = NULL;
    }
    pending_cmd c;
    while (fifo_pop(l, &c))
        if (c.fn)
            c.fn(l, NULL, c.priv);
}

/* The link is lost or an attempt failed: close, schedule the next attempt
 * on the backoff schedule and tell the owner. Once per connection. */
static void fail(mae__link *l, const char *why)
{
    if (l->state == LINK_IDLE || l->closing)
        return;
    char msg[256];
    /* Until its first reply a connection is still being made: a server
     * that takes the TLS 1.3 handshake and then refuses the client's
     * certificate (an alert at the first read) refused the connect. */
    bool connecting = l->state != LINK_UP || !l->answered;
    /* why may live in a reply or the reader about to be freed. */
    snprintf(msg, sizeof msg, "%s", why && *why ? why : "connection lost");
    close_conn(l);
    l->failures++;
    double delay = mae__backoff_delay(l->cfg.backoff_min_ms, l->cfg.backoff_max_ms, l->failures,
                                      mae__rand_unit(&l->rng));
    if (l->cfg.url->nsentinels > 0 && delay > SENTINEL_RETRY_MAX_S)
        delay = SENTINEL_RETRY_MAX_S * (0.5 + 0.5 * mae__rand_unit(&l->rng));
    struct timeval tv = {(time_t)delay, (suseconds_t)((delay - (double)(time_t)delay) * 1e6)};
    evtimer_add(l->retry, &tv);
    if (l->cfg.on_down)
        l->cfg.on_down(l->cfg.user, msg, l->failures, connecting);
}

void mae__link_fail(mae__link *l, const char *why)
{
    fail(l, why);
}

bool mae__link_up(const mae__link *l)
{
    return l->state == LINK_UP;
}

bool mae__link_accept(mae__link *l, const redisReply *r, bool count)
{
    if (!r)
        return false;   /* the link went down; fail() has told the owner */
    if (count)
        mae__link_got(l);
    if (r->type == REDIS_REPLY_ERROR) {
        fail(l, r->str);
        return false;
    }
    l->failures = 0;
    return true;
}

/* ---- talk ------------------------------------------------------------------------- */

static int send_formatted(mae__link *l, const char *fmt, va_list ap)
{
    char *cmd = NULL;
    int len = redisvFormatCommand(&cmd, fmt, ap);
    if (len < 0)
        return REDIS_ERR;
    int rc = bufferevent_write(l->bev, cmd, (size_t)len) == 0 ? REDIS_OK : REDIS_ERR;
    free(cmd);
    return rc;
}

int mae__link_command(mae__link *l, bool expect, mae__link_reply_fn *fn, void *priv,
                      const char *fmt, ...)
{
    if (l->state != LINK_UP)
        return REDIS_ERR;
    int rc = REDIS_ERR;
    if (fifo_push(l, fn, priv)) {
        va_list ap;
        va_start(ap, fmt);
        rc = send_formatted(l, fmt, ap);
        va_end(ap);
        if (rc != REDIS_OK)
            l->fifo_len--;   /* never sent: no reply will come */
    }
    /* Not sent (out of memory): awaited all the same, so the watchdog
     * resets the link and the owner sends it again. */
    if (expect)
        mae__link_expect(l);
    return rc;
}

int mae__link_command_push(mae__link *l, const char *fmt, ...)
{
    if (l->state != LINK_UP)
        return REDIS_ERR;
    va_list ap;
    va_start(ap, fmt);
    int rc = send_formatted(l, fmt, ap);
    va_end(ap);
    return rc;
}

/* A pub/sub push: ["message", channel, data], ["subscribe", channel, n], ... */
static bool is_push(const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        return false;
    const char *k = r->element[0]->str;
    return strcmp(k, "message") == 0 || strcmp(k, "pmessage") == 0 ||
           strcmp(k, "subscribe") == 0 || strcmp(k, "psubscribe") == 0 ||
           strcmp(k, "unsubscribe") == 0 || strcmp(k, "punsubscribe") == 0;
}

/* One parsed reply to its callback (or to on_push). */
/* The connection's TLS session, once Redis has answered on it (TLS 1.3's
 * tickets come after the handshake, so they are in by now), is offered to
 * the next connect, which can then skip the full handshake. */
static void keep_session(mae__link *l)
{
    SSL_SESSION *kept = SSL_get1_session(l->ssl);
    if (kept && SSL_SESSION_is_resumable(kept)) {
        SSL_SESSION_free(l->session);
        l->session = kept;
    } else {
        SSL_SESSION_free(kept);
    }
}

static void dispatch(mae__link *l, redisReply *r)
{
    if (!l->answered && l->ssl)
        keep_session(l);
    l->answered = true;
    if (l->cfg.on_push && is_push(r)) {
        l->cfg.on_push(l->cfg.user, r);
        return;
    }
    pending_cmd c;
    if (!fifo_pop(l, &c)) {
        char why[200];
        snprintf(why, sizeof why, "%s%s",
                 r->type == REDIS_REPLY_ERROR ? "" : "a reply no command asked for: ",
                 r->type == REDIS_REPLY_ERROR ? r->str : "protocol out of step");
        fail(l, why);
        return;
    }
    if (c.fn)
        c.fn(l, r, c.priv);
}

/* ---- releasing a large reply's buffer -------------------------------------------------- */

/* A reply larger than this leaves hiredis' read buffer that large (hiredis
 * frees it only when more bytes arrive, and only if nothing is pending):
 * the link gives it back once the reply is handled (issue 18 #3). The
 * bufferevent's input needs nothing: on_read drains it whole, and a drained
 * evbuffer frees its chains. */
#define LARGE_REPLY_BYTES (256 * 1024)

/* The bytes a reply holds (strings, nested arrays), at least up to limit. */
static size_t reply_bytes(const redisReply *r, size_t limit, int depth)
{
    if (!r)
        return 0;
    size_t n = r->len;
    if (r->type == REDIS_REPLY_ARRAY && depth < 8)
        for (size_t i = 0; i < r->elements && n <= limit; i++)
            n += reply_bytes(r->element[i], limit, depth + 1);
    return n;
}

/* True when the reader holds nothing of a reply: every byte read was
 * consumed and no reply is begun (not even its type byte). After its last
 * reply hiredis leaves the stack at its first task with no type. */
static bool reader_idle(const redisReader *r)
{
    if (r->pos != r->len || r->reply != NULL)
        return false;
    if (r->ridx == -1)
        return true;
#if defined(HIREDIS_MAJOR) && HIREDIS_MAJOR >= 1
    return r->ridx == 0 && r->task && r->task[0] && r->task[0]->type == -1;
#else
    return r->ridx == 0 && r->rstack[0].type == -1;
#endif
}

/* After the callbacks of a read have returned: an idle reader (no partial
 * reply, nothing unread) is replaced by a new one with the same settings,
 * which frees the buffer the large reply grew. A reader still busy is
 * looked at again after the next read. */
static void release_reader(mae__link *l)
{
    redisReader *old = l->reader;
    if (!reader_idle(old))
        return;
    redisReader *fresh = redisReaderCreate();
    if (!fresh)
        return;   /* keep the old one: it still works; tried again next read */
    fresh->fn = old->fn;
    fresh->maxbuf = old->maxbuf;
#if defined(HIREDIS_MAJOR) && HIREDIS_MAJOR >= 1
    fresh->maxelements = old->maxelements;
    fresh->privdata = old->privdata;
#endif
    redisReaderFree(old);
    l->reader = fresh;
    l->large = false;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    mae__link *l = arg;
    unsigned gen = l->gen;
    struct evbuffer *in = bufferevent_get_input(bev);
    /* Every chunk the bufferevent holds goes to the parser, then every
     * whole reply to its callback, which may close the link. */
    int n = evbuffer_peek(in, -1, NULL, NULL, 0);
    if (n > 0) {
        struct evbuffer_iovec stackv[16];
        struct evbuffer_iovec *v = n <= 16 ? stackv : malloc((size_t)n * sizeof *v);
        if (!v) {
            fail(l, "out of memory");
            return;
        }
        evbuffer_peek(in, -1, NULL, v, n);
        int rc = REDIS_OK;
        for (int i = 0; i < n && rc == REDIS_OK; i++)
            rc = redisReaderFeed(l->reader, v[i].iov_base, v[i].iov_len);
        if (v != stackv)
            free(v);
        evbuffer_drain(in, evbuffer_get_length(in));
        if (rc != REDIS_OK) {
            fail(l, l->reader->errstr[0] ? l->reader->errstr : "out of memory");
            return;
        }
        /* Bytes arriving are progress: a large reply coming in slowly (a
         * loaded machine, a slow link) is not a hung server. The deadline
         * runs from the last byte read while a reply is awaited. */
        if (l->pending > 0)
            arm_watchdog(l);
    }
    for (;;) {
        void *reply = NULL;
        if (redisReaderGetReply(l->reader, &reply) != REDIS_OK) {
            char why[160];
            snprintf(why, sizeof why, "protocol error: %s", l->reader->errstr);
            fail(l, why);
            return;
        }
        if (!reply)
            break;
        if (reply_bytes(reply, LARGE_REPLY_BYTES, 0) > LARGE_REPLY_BYTES)
            l->large = true;
        dispatch(l, reply);
        freeReplyObject(reply);
        if (l->gen != gen)
            return;   /* the link was closed by that callback (and its reader freed) */
    }
    if (l->large)
        release_reader(l);
}

/* The reason a TLS bufferevent failed: a failed verification by its name,
 * else the first OpenSSL error libevent kept, else the socket's. */
static void tls_reason(mae__link *l, char *why, size_t len)
{
    if (SSL_get_verify_result(l->ssl) != X509_V_OK &&
        (SSL_get_verify_mode(l->ssl) & SSL_VERIFY_PEER)) {
        mae__tls_failure_text(l->ssl, 0, why, len);
        return;
    }
    unsigned long e = bufferevent_get_openssl_error(l->bev);
    while (bufferevent_get_openssl_error(l->bev))
        ;
    if (e && ERR_reason_error_string(e)) {
        snprintf(why, len, "TLS: %s", ERR_reason_error_string(e));
        return;
    }
    int se = EVUTIL_SOCKET_ERROR();
    snprintf(why, len, "%s", se ? evutil_socket_error_to_string(se)
                                : "TLS: connection closed or reset by the server");
}

static void on_connected(mae__link *l);

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    mae__link *l = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        on_connected(l);
        return;
    }
    char why[256], reason[200];
    bool connecting = l->state == LINK_CONNECTING || !l->answered;
    if (what & BEV_EVENT_TIMEOUT) {
        if (l->state == LINK_CONNECTING)
            snprintf(why, sizeof why, "cannot connect: no %s within %d ms (hung server?)",
                     l->ssl ? "TLS handshake" : "connection",
                     l->cfg.connect_timeout_ms ? l->cfg.connect_timeout_ms : l->cfg.deadline_ms);
        else
            snprintf(why, sizeof why,
                     "could not write within %d ms: the connection stopped reading (hung "
                     "server?)", l->cfg.deadline_ms);
    } else if (what & BEV_EVENT_ERROR) {
        if (l->ssl)
            tls_reason(l, reason, sizeof reason);
        else
            snprintf(reason, sizeof reason, "%s",
                     evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        snprintf(why, sizeof why, "%s: %s", connecting ? "cannot connect" : "connection lost",
                 reason);
    } else {
        snprintf(why, sizeof why, "%s: closed by the server",
                 connecting ? "cannot connect" : "connection lost");
    }
    fail(l, why);
}

/* ---- hello ----------------------------------------------------------------------- */

static void on_hello(mae__link *l, redisReply *r, const char *what)
{
    char why[200];
    if (r && !mae__hello_accepts(what, r->type == REDIS_REPLY_ERROR, r->str, why, sizeof why)) {
        mae__link_got(l);
        fail(l, why);
        return;
    }
    mae__link_accept(l, r, true);
}

/* priv: the name of the hello's command (core/url.h; static storage). */
static void on_hello_reply(mae__link *l, redisReply *r, void *priv)
{
    on_hello(l, r, priv);
}

/* ---- +switch-master ---------------------------------------------------------------- */

/* A message on the Sentinel's +switch-master channel: "NAME OLDIP OLDPORT
 * NEWIP NEWPORT". For our master, moved somewhere else than where the link
 * is: the link is dropped and asks the Sentinels again, at once rather
 * than when the old master is demoted (about 11 s after a planned
 * failover) or when a read or reconnect fails. */
static void on_switch(mae__link *l, const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_STRING || strcmp(r->element[0]->str, "message") != 0 ||
        r->element[2]->type != REDIS_REPLY_STRING)
        return;   /* the subscription's confirmation */
    char name[128], oldip[64], newip[64];
    int oldport, newport;
    if (sscanf(r->element[2]->str, "%127s %63s %d %63s %d", name, oldip, &oldport, newip,
               &newport) != 5 ||
        strcmp(name, l->cfg.url->master_name) != 0)
        return;
    if (strcmp(newip, l->target_host) == 0 && newport == l->target_port)
        return;
    char why[300];
    snprintf(why, sizeof why,
             "the Sentinels switched master \"%.60s\" to %.60s:%d: asking the Sentinels again",
             name, newip, newport);
    fail(l, why);
}

static void watch_connect(mae__link *l);

/* The Sentinel watched failed, closed, refused the subscription or did not
 * confirm it in time: the watch goes on with the next Sentinel in the
 * order, after core/backoff's delay for the failures in a row (with
 * jitter, so relays that lost the same Sentinel do not all come back at
 * once). The owner hears of the first failure of a run (on_watch) and of
 * the subscription that ends it; the link itself stays up throughout. */
static void watch_lost(mae__link *l, const char *why)
{
    const mae__url *u = l->cfg.url;
    const struct mae__url_addr *sa = &u->sentinels[l->sorder[l->wpos]];
    char what[300];
    snprintf(what, sizeof what, "Sentinel %.60s:%d: %.160s", sa->host, sa->port, why);
    watch_close(l);
    l->wfailures++;
    l->wpos = (l->wpos + 1) % u->nsentinels;
    double delay = mae__backoff_delay(l->cfg.backoff_min_ms, l->cfg.backoff_max_ms,
                                      l->wfailures, mae__rand_unit(&l->rng));
    struct timeval tv = {(time_t)delay, (suseconds_t)((delay - (double)(time_t)delay) * 1e6)};
    evtimer_add(l->wtimer, &tv);
    if (l->wfailures == 1 && l->cfg.on_watch)
        l->cfg.on_watch(l->cfg.user, false, what);
}

/* The subscription is confirmed: after a run of failures the owner is
 * told that the watch is back, and on which Sentinel. */
static void watch_confirmed(mae__link *l)
{
    l->wsubscribed = true;
    struct timeval tv;
    tv_of_ms(&tv, WATCH_PROBE_MS);
    evtimer_add(l->wtimer, &tv);   /* the first probe */
    if (l->wfailures == 0)
        return;
    l->wfailures = 0;
    const struct mae__url_addr *sa = &l->cfg.url->sentinels[l->sorder[l->wpos]];
    char what[100];
    snprintf(what, sizeof what, "%.60s:%d", sa->host, sa->port);
    if (l->cfg.on_watch)
        l->cfg.on_watch(l->cfg.user, true, what);
}

static void on_watch_read(struct bufferevent *bev, void *arg)
{
    mae__link *l = arg;
    unsigned gen = l->wgen;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t n = evbuffer_get_length(in);
    unsigned char *data = evbuffer_pullup(in, (ev_ssize_t)n);
    if (n > 0 && (!data || redisReaderFeed(l->wreader, (const char *)data, n) != REDIS_OK)) {
        watch_lost(l, "protocol error");
        return;
    }
    evbuffer_drain(in, n);
    for (;;) {
        void *reply = NULL;
        if (redisReaderGetReply(l->wreader, &reply) != REDIS_OK) {
            watch_lost(l, "protocol error");
            return;
        }
        if (!reply)
            return;
        const redisReply *r = reply;
        char why[200] = "";
        const char *kind = r->type == REDIS_REPLY_ARRAY && r->elements >= 2 &&
                                   r->element[0]->type == REDIS_REPLY_STRING
                               ? r->element[0]->str
                               : "";
        if (r->type == REDIS_REPLY_ERROR) {
            snprintf(why, sizeof why, "%s refused: %.150s", l->wsubscribed ? "PING" : "SUBSCRIBE",
                     r->str);
        } else if (strcmp(kind, "subscribe") == 0 && r->elements == 3) {
            watch_confirmed(l);
        } else if (strcmp(kind, "pong") == 0) {
            /* The probe's answer: the next one in WATCH_PROBE_MS. */
            struct timeval tv;
            tv_of_ms(&tv, WATCH_PROBE_MS);
            l->wprobing = false;
            evtimer_add(l->wtimer, &tv);
        } else {
            on_switch(l, r);
        }
        freeReplyObject(reply);
        if (why[0]) {
            watch_lost(l, why);
            return;
        }
        if (l->wgen != gen)
            return;   /* the link was dropped (and the watch ended with it) */
    }
}

static void set_keepalive(evutil_socket_t fd, bool tcp);

/* Why a side connection (the watch, a Sentinel question) ended, from its
 * bufferevent's event: the socket's error, or the peer closing it. */
static void closed_why(short what, char *why, size_t len)
{
    if (what & BEV_EVENT_ERROR)
        snprintf(why, len, "%s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    else
        snprintf(why, len, "closed the connection");
}

/* Connected: keepalive as on the Redis connection (a Sentinel's machine
 * gone without a word is noticed). The Sentinel closed or failed (or
 * could not be reached): watch_lost. */
static void on_watch_event(struct bufferevent *bev, short what, void *arg)
{
    mae__link *l = arg;
    if (what & BEV_EVENT_CONNECTED) {
        set_keepalive(bufferevent_getfd(bev), true);
        return;
    }
    char why[200];
    closed_why(what, why, sizeof why);
    watch_lost(l, why);
}

/* wtimer, by the watch's state: no connection: the next attempt is due;
 * not subscribed yet: no confirmation within SENTINEL_TIMEOUT_MS;
 * subscribed: a PING probe is due, or the last one had no answer within
 * the link's deadline. */
static void on_watch_timer(evutil_socket_t fd, short what, void *arg)
{
    mae__link *l = arg;
    (void)fd;
    (void)what;
    if (l->state != LINK_UP)
        return;
    char why[80];
    if (!l->wbev) {
        watch_connect(l);
    } else if (!l->wsubscribed) {
        snprintf(why, sizeof why, "no answer to SUBSCRIBE within %d ms", SENTINEL_TIMEOUT_MS);
        watch_lost(l, why);
    } else if (l->wprobing) {
        snprintf(why, sizeof why, "no answer to PING within %d ms", l->cfg.deadline_ms);
        watch_lost(l, why);
    } else {
        static const char ping[] = "*1\r\n$4\r\nPING\r\n";
        struct timeval tv;
        tv_of_ms(&tv, l->cfg.deadline_ms);
        l->wprobing = true;
        evtimer_add(l->wtimer, &tv);
        if (bufferevent_write(l->wbev, ping, sizeof ping - 1) != 0)
            watch_lost(l, "out of memory");
    }
}

/* Subscribes to +switch-master on sorder[wpos], on the loop (the connect
 * and the name lookup are libevent's; callbacks deferred, so none runs
 * inside this call). Out of memory or a failed start counts as a failed
 * attempt and is retried like one. */
static void watch_connect(mae__link *l)
{
    const mae__url *u = l->cfg.url;
    const struct mae__url_addr *sa = &u->sentinels[l->sorder[l->wpos]];
    l->wreader = redisReaderCreate();
    l->wbev = bufferevent_socket_new(l->cfg.base, -1,
                                     BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    static const char sub[] = "*2\r\n$9\r\nSUBSCRIBE\r\n$14\r\n+switch-master\r\n";
    if (!l->wreader || !l->wbev || bufferevent_write(l->wbev, sub, sizeof sub - 1) != 0) {
        watch_lost(l, "out of memory");
        return;
    }
    bufferevent_setcb(l->wbev, on_watch_read, NULL, on_watch_event, l);
    bufferevent_enable(l->wbev, EV_READ | EV_WRITE);
    struct timeval tv;
    tv_of_ms(&tv, SENTINEL_TIMEOUT_MS);
    evtimer_add(l->wtimer, &tv);
    if (bufferevent_socket_connect_hostname(l->wbev, l->dns, AF_UNSPEC, sa->host, sa->port) != 0)
        watch_lost(l, "cannot connect");
}

/* Starts the watch on the Sentinel that named the master (the first in
 * the order: it answered). */
static void watch_start(mae__link *l)
{
    if (l->cfg.url->nsentinels == 0 || l->wbev || !l->dns || !l->wtimer)
        return;
    l->wpos = 0;
    l->wfailures = 0;
    watch_connect(l);
}

/* redis-sentinel://: the server the Sentinel named must say it is the
 * master; otherwise (a replica, or a demoted master Sentinel has not yet
 * reconfigured) the link fails, backs off and asks the Sentinels again. */
static void on_role(mae__link *l, redisReply *r, void *priv)
{
    (void)priv;
    if (!r)
        return;
    mae__link_got(l);
    char why[300];
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(why, sizeof why, "ROLE refused: %s", r->str);
        fail(l, why);
        return;
    }
    const char *role = r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                               r->element[0]->type == REDIS_REPLY_STRING
                           ? r->element[0]->str
                           : "?";
    if (strcmp(role, "master") != 0) {
        snprintf(why, sizeof why,
                 "%.100s:%d is not the master of \"%.60s\" (ROLE %.20s): asking the Sentinels again",
                 l->target_host, l->target_port, l->cfg.url->master_name, role);
        fail(l, why);
        return;
    }
    watch_start(l);
    if (l->state == LINK_UP && l->cfg.on_ready)
        l->cfg.on_ready(l->cfg.user);
}

/* ROLE again on a link that is up (mae__link_confirm_master): a server that
 * stopped being the master fails the link, which asks the Sentinels again. */
static void on_role_again(mae__link *l, redisReply *r, void *priv)
{
    (void)priv;
    if (!mae__link_accept(l, r, true))
        return;
    const char *role = r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                               r->element[0]->type == REDIS_REPLY_STRING
                           ? r->element[0]->str
                           : "?";
    if (strcmp(role, "master") != 0) {
        char why[300];
        snprintf(why, sizeof why,
                 "%.100s:%d is no longer the master of \"%.60s\" (ROLE %.20s): asking the "
                 "Sentinels again",
                 l->target_host, l->target_port, l->cfg.url->master_name, role);
        fail(l, why);
    }
}

int mae__link_confirm_master(mae__link *l)
{
    if (l->cfg.url->nsentinels == 0)
        return REDIS_OK;
    return mae__link_command(l, true, on_role_again, NULL, "ROLE");
}

/* ---- connect ---------------------------------------------------------------------- */

static void set_keepalive(evutil_socket_t fd, bool tcp)
{
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    if (!tcp)
        return;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
#ifdef TCP_KEEPIDLE
    int idle = KEEPALIVE_IDLE_S, intvl = KEEPALIVE_INTVL_S, cnt = KEEPALIVE_CNT;
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
#endif
}

/* TCP (and TLS) is up: the I/O timeout replaces the connect timeout, the
 * hello goes out, then the owner's commands. */
static void on_connected(mae__link *l)
{
    const mae__url *u = l->cfg.url;
    struct timeval wtv;
    tv_of_ms(&wtv, l->cfg.deadline_ms);
    /* No read timeout: an idle link (the history link, a quiet channel)
     * is fine; an awaited reply has the watchdog. A write that cannot go
     * out for the deadline is a hung peer. */
    bufferevent_set_timeouts(l->bev, NULL, &wtv);
    set_keepalive(bufferevent_getfd(l->bev), !u->is_unix);
    l->state = LINK_UP;
    l->answered = false;
    mae__hello h;   /* AUTH, SELECT: core/url.h */
    mae__hello_init(&h, u, l->cfg.select_db);
    for (size_t i = 0; i < h.n; i++) {
        const mae__hello_cmd *c = &h.cmd[i];
        mae__link_command(l, true, on_hello_reply, (void *)c->name, mae__hello_format(c),
                          c->argv[0], c->argvlen[0], c->argv[1], c->argvlen[1], c->argv[2],
                          c->argvlen[2]);
    }
    if (u->nsentinels > 0) {
        /* The owner's commands wait for ROLE: a demoted master, or a
         * replica Sentinel has not caught up with, is not written to. */
        mae__link_command(l, true, on_role, l, "ROLE");
        return;
    }
    if (l->state == LINK_UP && l->cfg.on_ready)
        l->cfg.on_ready(l->cfg.user);
}

/* Starts a connection to the socket address sa (an address, never a
 * name to look up: Sentinel's lookup would hand its answer here too). */
static void connect_to(mae__link *l, const struct sockaddr *sa, int salen)
{
    const mae__url *u = l->cfg.url;
    char err[256];
    l->answered = false;
    l->large = false;
    l->reader = redisReaderCreate();
    if (!l->reader)
        goto oom;
    if (l->tls) {
        if (mae__tls_session_new(l->tls, &u->tls, u->host, -1, &l->ssl, err, sizeof err) != 0)
            goto failed;
        if (l->session)
            SSL_set_session(l->ssl, l->session);   /* verified again if not resumed */
        l->bev = bufferevent_openssl_socket_new(l->cfg.base, -1, l->ssl,
                                                BUFFEREVENT_SSL_CONNECTING,
                                                BEV_OPT_CLOSE_ON_FREE);
        if (!l->bev) {
            SSL_free(l->ssl);
            l->ssl = NULL;
            goto oom;
        }
    } else {
        l->bev = bufferevent_socket_new(l->cfg.base, -1, BEV_OPT_CLOSE_ON_FREE);
        if (!l->bev)
            goto oom;
    }
    bufferevent_setcb(l->bev, on_read, NULL, on_event, l);
    struct timeval ctv;
    tv_of_ms(&ctv, l->cfg.connect_timeout_ms ? l->cfg.connect_timeout_ms : l->cfg.deadline_ms);
    bufferevent_set_timeouts(l->bev, &ctv, &ctv);
    bufferevent_enable(l->bev, EV_READ | EV_WRITE);
    l->state = LINK_CONNECTING;
    unsigned gen = l->gen;
    if (bufferevent_socket_connect(l->bev, sa, salen) != 0 && l->gen == gen) {
        /* (Unless libevent already told on_event, which failed the link.) */
        snprintf(err, sizeof err, "cannot connect: %s",
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        goto failed;
    }
    return;
oom:
    snprintf(err, sizeof err, "cannot connect: out of memory");
failed:
    fail(l, err);
}

/* ---- locate ----------------------------------------------------------------------- */

static void on_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
    mae__link *l = arg;
    if (result == EVUTIL_EAI_CANCEL || l->closing) {
        if (res)
            evutil_freeaddrinfo(res);
        return;
    }
    l->lookup = NULL;
    if (result != 0 || !res) {
        char why[200];
        snprintf(why, sizeof why, "cannot resolve %.120s: %s", l->target_host,
                 evutil_gai_strerror(result ? result : EVUTIL_EAI_NONAME));
        if (res)
            evutil_freeaddrinfo(res);
        fail(l, why);
        return;
    }
    struct sockaddr_storage ss;
    int len = (int)res->ai_addrlen;
    memcpy(&ss, res->ai_addr, res->ai_addrlen);
    evutil_freeaddrinfo(res);
    if (ss.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)l->target_port);
    else
        ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)l->target_port);
    connect_to(l, (struct sockaddr *)&ss, len);
}

/* Makes the name lookup's base at its first use. */
static bool ensure_dns(mae__link *l)
{
    if (!l->dns)
        l->dns = evdns_base_new(l->cfg.base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (!l->dns) {
        fail(l, "cannot start the name lookup");
        return false;
    }
    return true;
}

/* Connects to host:port: an address at once, a name once evdns found it. */
static void locate_host(mae__link *l, const char *host, int port)
{
    snprintf(l->target_host, sizeof l->target_host, "%s", host);
    l->target_port = port;
    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;
    memset(&sin, 0, sizeof sin);
    memset(&sin6, 0, sizeof sin6);
    if (evutil_inet_pton(AF_INET, host, &sin.sin_addr) == 1) {
        sin.sin_family = AF_INET;
        sin.sin_port = htons((uint16_t)port);
        connect_to(l, (struct sockaddr *)&sin, (int)sizeof sin);
        return;
    }
    if (evutil_inet_pton(AF_INET6, host, &sin6.sin6_addr) == 1) {
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons((uint16_t)port);
        connect_to(l, (struct sockaddr *)&sin6, (int)sizeof sin6);
        return;
    }
    if (!ensure_dns(l))
        return;
    struct evutil_addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    unsigned gen = l->gen;
    struct evdns_getaddrinfo_request *req =
        evdns_getaddrinfo(l->dns, host, NULL, &hints, on_resolved, l);
    /* The callback may have run already (an answer from the hosts file):
     * then the state moved on and req must not be kept. */
    if (l->gen == gen && l->state == LINK_LOOKING)
        l->lookup = req;
}

/* ---- locate through Sentinel ------------------------------------------------------- */

/* Redis's Sentinel client guidelines: ask each Sentinel in turn, with a
 * short timeout, "SENTINEL get-master-addr-by-name NAME"; the first that
 * names an address moves to the front of the list; then connect there and
 * confirm with ROLE (on_role). All on the loop: each question is its own
 * bufferevent (callbacks deferred, so none runs inside the call that
 * starts it) with a timer over the whole question. */
static void sentinel_ask(mae__link *l);

static void sentinel_skip(mae__link *l, const char *why)
{
    const struct mae__url_addr *s = &l->cfg.url->sentinels[l->sorder[l->sask]];
    snprintf(l->slast, sizeof l->slast, "Sentinel %.60s:%d: %.100s", s->host, s->port, why);
    sentinel_end(l);
    l->sask++;
    sentinel_ask(l);
}

static void on_sentinel_answer(mae__link *l, redisReply *r)
{
    const mae__url *u = l->cfg.url;
    char why[200];
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(why, sizeof why, "%s", r->str);
        sentinel_skip(l, why);
        return;
    }
    char *end = NULL;
    long port = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_STRING &&
        r->element[0]->len > 0)
        port = strtol(r->element[1]->str, &end, 10);
    if (port < 1 || port > 65535 || !end || *end) {
        snprintf(why, sizeof why, "does not know master \"%s\"", u->master_name);
        sentinel_skip(l, why);
        return;
    }
    char host[256];
    snprintf(host, sizeof host, "%s", r->element[0]->str);
    /* This Sentinel answered: it is asked first next time. */
    size_t found = l->sorder[l->sask];
    memmove(l->sorder + 1, l->sorder, l->sask * sizeof *l->sorder);
    l->sorder[0] = found;
    sentinel_end(l);
    locate_host(l, host, (int)port);
}

static void on_sentinel_read(struct bufferevent *bev, void *arg)
{
    mae__link *l = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t n = evbuffer_get_length(in);
    unsigned char *data = evbuffer_pullup(in, (ev_ssize_t)n);
    if (n > 0 && (!data || redisReaderFeed(l->sreader, (const char *)data, n) != REDIS_OK)) {
        sentinel_skip(l, "protocol error");
        return;
    }
    evbuffer_drain(in, n);
    void *reply = NULL;
    if (redisReaderGetReply(l->sreader, &reply) != REDIS_OK) {
        sentinel_skip(l, "protocol error");
        return;
    }
    if (!reply)
        return;   /* more to come */
    on_sentinel_answer(l, reply);
    freeReplyObject(reply);
}

static void on_sentinel_event(struct bufferevent *bev, short what, void *arg)
{
    mae__link *l = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED)
        return;
    char why[200];
    closed_why(what, why, sizeof why);
    sentinel_skip(l, why);
}

static void on_sentinel_timeout(evutil_socket_t fd, short what, void *arg)
{
    mae__link *l = arg;
    char why[80];
    (void)fd;
    (void)what;
    snprintf(why, sizeof why, "no answer within %d ms", SENTINEL_TIMEOUT_MS);
    sentinel_skip(l, why);
}

static void sentinel_ask(mae__link *l)
{
    const mae__url *u = l->cfg.url;
    if (l->sask >= u->nsentinels) {
        char why[400];
        snprintf(why, sizeof why, "cannot connect: no Sentinel gave master \"%.60s\" (last: %s)",
                 u->master_name, l->slast);
        fail(l, why);
        return;
    }
    const struct mae__url_addr *s = &u->sentinels[l->sorder[l->sask]];
    if (!ensure_dns(l))
        return;
    l->sreader = redisReaderCreate();
    l->sbev = bufferevent_socket_new(l->cfg.base, -1,
                                     BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    char *cmd = NULL;
    int len = l->sreader && l->sbev ? redisFormatCommand(&cmd, "SENTINEL get-master-addr-by-name %s",
                                                         u->master_name)
                                    : -1;
    if (len < 0 || bufferevent_write(l->sbev, cmd, (size_t)len) != 0) {
        free(cmd);
        sentinel_end(l);
        fail(l, "cannot connect: out of memory");
        return;
    }
    free(cmd);
    bufferevent_setcb(l->sbev, on_sentinel_read, NULL, on_sentinel_event, l);
    bufferevent_enable(l->sbev, EV_READ | EV_WRITE);
    struct timeval tv;
    tv_of_ms(&tv, SENTINEL_TIMEOUT_MS);
    evtimer_add(l->stimer, &tv);
    /* The question waits in the output buffer until the connection is made. */
    if (bufferevent_socket_connect_hostname(l->sbev, l->dns, AF_UNSPEC, s->host, s->port) != 0)
        sentinel_skip(l, "cannot connect");
}

/* Where is the server: the URL's socket or address (a name is looked up
 * with evdns, off the loop's back), or, for redis-sentinel://, the master
 * the Sentinels name. Every path ends in connect_to() with an address. */
static void locate(mae__link *l)
{
    const mae__url *u = l->cfg.url;
    l->state = LINK_LOOKING;
    if (u->is_unix) {
        struct sockaddr_un sun;
        memset(&sun, 0, sizeof sun);
        sun.sun_family = AF_UNIX;
        if (strlen(u->path) >= sizeof sun.sun_path) {
            fail(l, "cannot connect: the socket path is too long");
            return;
        }
        memcpy(sun.sun_path, u->path, strlen(u->path) + 1);
        connect_to(l, (struct sockaddr *)&sun, (int)sizeof sun);
        return;
    }
    if (u->nsentinels > 0) {
        l->sask = 0;
        snprintf(l->slast, sizeof l->slast, "no Sentinel");
        sentinel_ask(l);
        return;
    }
    locate_host(l, u->host, u->port);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    locate(arg);
}

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
    mae__link *l = arg;
    char why[120];
    (void)fd;
    (void)what;
    snprintf(why, sizeof why,
             "no reply within %d ms: the connection stopped answering (hung server?)",
             l->cfg.deadline_ms);
    fail(l, why);
}

/* ---- lifecycle ---------------------------------------------------------------------- */

int mae__link_new(const mae__link_config *cfg, mae__link **out, char *err, size_t errlen)
{
    mae__link *l = calloc(1, sizeof *l);
    if (!l) {
        snprintf(err, errlen, "out of memory");
        return MAE_ENOMEM;
    }
    l->cfg = *cfg;
    l->rng = mae__rand_seed(l);
    if (cfg->url->tls.enabled) {
        int rc = mae__tls_ctx_new(&cfg->url->tls, &l->tls, err, errlen);
        if (rc != MAE_OK) {
            free(l);
            return rc;
        }
    }
    l->retry = evtimer_new(cfg->base, on_retry, l);
    l->watchdog = evtimer_new(cfg->base, on_watchdog, l);
    bool sentinel_ok = true;
    if (cfg->url->nsentinels > 0) {
        l->stimer = evtimer_new(cfg->base, on_sentinel_timeout, l);
        l->wtimer = evtimer_new(cfg->base, on_watch_timer, l);
        l->sorder = malloc(cfg->url->nsentinels * sizeof *l->sorder);
        sentinel_ok = l->stimer && l->wtimer && l->sorder;
        for (size_t i = 0; sentinel_ok && i < cfg->url->nsentinels; i++)
            l->sorder[i] = i;
    }
    struct timeval now = {0, 0};
    if (!l->retry || !l->watchdog || !sentinel_ok || evtimer_add(l->retry, &now) != 0) {
        mae__link_free(l);
        snprintf(err, errlen, "out of memory");
        return MAE_ENOMEM;
    }
    *out = l;
    return MAE_OK;
}

void mae__link_free(mae__link *l)
{
    if (!l)
        return;
    close_conn(l);
    l->closing = true;
    if (l->dns)
        evdns_base_free(l->dns, 0);
    if (l->retry)
        event_free(l->retry);
    if (l->watchdog)
        event_free(l->watchdog);
    if (l->stimer)
        event_free(l->stimer);
    if (l->wtimer)
        event_free(l->wtimer);
    free(l->sorder);
    SSL_SESSION_free(l->session);
    if (l->tls)
        SSL_CTX_free(l->tls);
    free(l->fifo);
    free(l);
}
