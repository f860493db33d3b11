/* This module implements the relay's Redis link of relay/link.h: locate,
 * connect, hello, watch and retry, for one connection at a time. */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <hiredis/adapters/libevent.h>

#include <mailagent/common.h>

#include "core/backoff.h"
#include "relay/link.h"

struct mae__link {
    mae__link_config cfg;
    redisAsyncContext *ac;      /* NULL while down (detached before it is freed) */
    int failures;               /* attempts failed in a row */
    unsigned pending;           /* replies awaited */
    uint64_t rng;
    struct event *retry;        /* the next attempt */
    struct event *watchdog;     /* an awaited reply is late */
    struct event *release;      /* a large reply passed: give its buffer back */
    struct evdns_base *dns;     /* made at the first name to look up */
    struct evdns_getaddrinfo_request *lookup;
    bool looking;               /* a lookup's callback has not run yet */
    bool closing;
};

static void arm_watchdog(mae__link *l)
{
    struct timeval tv = {l->cfg.deadline_ms / 1000, (l->cfg.deadline_ms % 1000) * 1000};
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

/* The link is lost: detach its context (freed here when free_ctx, or by
 * hiredis itself when it reported the loss), schedule the next attempt on
 * the backoff schedule and tell the owner. */
static void fail(mae__link *l, const char *why, bool free_ctx)
{
    char msg[200];
    redisAsyncContext *ac = l->ac;
    /* why may live in the context or a reply about to be freed. */
    snprintf(msg, sizeof msg, "%s", why && *why ? why : "connection lost");
    l->ac = NULL;
    l->pending = 0;
    evtimer_del(l->watchdog);
    l->failures++;
    if (ac && free_ctx)
        redisAsyncFree(ac);
    double delay = mae__backoff_delay(l->cfg.backoff_min_ms, l->cfg.backoff_max_ms, l->failures,
                                      mae__rand_unit(&l->rng));
    struct timeval tv = {(time_t)delay, (suseconds_t)((delay - (double)(time_t)delay) * 1e6)};
    evtimer_add(l->retry, &tv);
    if (l->cfg.on_down)
        l->cfg.on_down(l->cfg.user, msg, l->failures);
}

void mae__link_fail(mae__link *l, const char *why)
{
    fail(l, why, true);
}

bool mae__link_up(const mae__link *l)
{
    return l->ac != NULL;
}

/* ---- releasing a large reply's buffer -------------------------------------------------- */

/* A reply larger than this leaves hiredis' read buffer that large (hiredis
 * frees it only when more bytes arrive, and only if nothing is pending):
 * the link gives it back once the reply is handled (issue 18 #3). */
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
 * reply, nothing unread) is replaced by a new one, which frees the buffer
 * the large reply grew. A reader still busy is looked at again later. */
static void on_release(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mae__link *l = arg;
    if (!l->ac)
        return;   /* the context went away with its reader */
    redisReader *old = l->ac->c.reader;
    if (!reader_idle(old)) {
        struct timeval later = {0, 100 * 1000};
        evtimer_add(l->release, &later);
        return;
    }
    redisReader *fresh = redisReaderCreate();
    if (!fresh)
        return;   /* keep the old one: it still works */
    fresh->fn = old->fn;
    fresh->maxbuf = old->maxbuf;
#if defined(HIREDIS_MAJOR) && HIREDIS_MAJOR >= 1
    fresh->maxelements = old->maxelements;
    fresh->privdata = old->privdata;
#endif
    redisReaderFree(old);
    l->ac->c.reader = fresh;
}

bool mae__link_accept(mae__link *l, redisAsyncContext *ac, const redisReply *r, bool count)
{
    if (l->ac != ac)
        return false;   /* a detached context's last words */
    if (!r) {
        fail(l, ac->errstr, false);   /* hiredis is tearing it down */
        return false;
    }
    if (reply_bytes(r, LARGE_REPLY_BYTES, 0) > LARGE_REPLY_BYTES) {
        struct timeval now = {0, 0};
        evtimer_add(l->release, &now);
    }
    if (count)
        mae__link_got(l);
    if (r->type == REDIS_REPLY_ERROR) {
        fail(l, r->str, true);
        return false;
    }
    l->failures = 0;
    return true;
}

int mae__link_command(mae__link *l, bool expect, redisCallbackFn *fn, void *priv, const char *fmt,
                      ...)
{
    if (!l->ac)
        return REDIS_ERR;
    va_list ap;
    va_start(ap, fmt);
    int rc = redisvAsyncCommand(l->ac, fn, priv, fmt, ap);
    va_end(ap);
    /* Not queued (out of memory): awaited all the same, so the watchdog
     * resets the link and the owner sends it again. */
    if (expect)
        mae__link_expect(l);
    return rc;
}

/* ---- hello ----------------------------------------------------------------------- */

static void on_hello(redisAsyncContext *ac, void *reply, void *priv, const char *what)
{
    mae__link *l = priv;
    redisReply *r = reply;
    if (r && l->ac == ac && r->type == REDIS_REPLY_ERROR) {
        char why[200];
        snprintf(why, sizeof why, "%s refused: %s", what, r->str);
        mae__link_got(l);
        fail(l, why, true);
        return;
    }
    mae__link_accept(l, ac, r, true);
}

static void on_auth(redisAsyncContext *ac, void *reply, void *priv)
{
    on_hello(ac, reply, priv, "AUTH");
}

static void on_select(redisAsyncContext *ac, void *reply, void *priv)
{
    on_hello(ac, reply, priv, "SELECT");
}

/* ---- connect ---------------------------------------------------------------------- */

static void on_connect(const redisAsyncContext *ac, int status)
{
    mae__link *l = ac->data;
    /* A failed connect is freed by hiredis right after this returns. */
    if (status != REDIS_OK && l && l->ac == ac) {
        char why[200];
        snprintf(why, sizeof why, "cannot connect: %s", ac->errstr);
        fail(l, why, false);
    }
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    mae__link *l = ac->data;
    if (l && l->ac == ac) {
        char why[200];
        snprintf(why, sizeof why, "connection lost: %s",
                 status == REDIS_OK || !ac->errstr[0] ? "closed by the server" : ac->errstr);
        fail(l, why, false);
    }
}

/* host is a numeric address here: hiredis' own lookup of it never blocks. */
static void connect_to(mae__link *l, const char *host)
{
    const mae__url *u = l->cfg.url;
    redisAsyncContext *ac = u->is_unix ? redisAsyncConnectUnix(u->path)
                                       : redisAsyncConnect(host, u->port);
    if (!ac || ac->err) {
        char why[200];
        snprintf(why, sizeof why, "cannot connect: %s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        fail(l, why, false);
        return;
    }
    ac->data = l;
    if (redisLibeventAttach(ac, l->cfg.base) != REDIS_OK) {
        redisAsyncFree(ac);
        fail(l, "cannot attach to the event loop", false);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    /* The watchdog finds a hung server; keepalive also finds a peer gone
     * without a word while the link is idle (XREAD BLOCK, SUBSCRIBE). */
    redisEnableKeepAlive(&ac->c);
    l->ac = ac;
    /* Queued until the socket is connected; the owner's commands follow. */
    if (u->password) {
        if (u->user)
            mae__link_command(l, true, on_auth, l, "AUTH %s %s", u->user, u->password);
        else
            mae__link_command(l, true, on_auth, l, "AUTH %s", u->password);
    }
    if (l->cfg.select_db && u->db != 0)
        mae__link_command(l, true, on_select, l, "SELECT %d", u->db);
    if (l->cfg.on_ready)
        l->cfg.on_ready(l->cfg.user);
}

/* ---- locate ----------------------------------------------------------------------- */

static void on_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
    mae__link *l = arg;
    l->looking = false;
    l->lookup = NULL;
    if (result == EVUTIL_EAI_CANCEL || l->closing) {
        if (res)
            evutil_freeaddrinfo(res);
        return;
    }
    char host[INET6_ADDRSTRLEN] = "";
    if (result == 0 && res) {
        const void *a = res->ai_family == AF_INET6
                            ? (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr
                            : (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr;
        evutil_inet_ntop(res->ai_family, a, host, sizeof host);
    }
    if (res)
        evutil_freeaddrinfo(res);
    if (!*host) {
        char why[200];
        snprintf(why, sizeof why, "cannot resolve %s: %s", l->cfg.url->host,
                 evutil_gai_strerror(result ? result : EVUTIL_EAI_NONAME));
        fail(l, why, false);
        return;
    }
    connect_to(l, host);
}

/* Where is the server: the URL's socket or address; a name is looked up
 * with evdns, off the loop's back. (Sentinel's master lookup goes here.) */
static void locate(mae__link *l)
{
    const mae__url *u = l->cfg.url;
    unsigned char buf[sizeof(struct in6_addr)];
    if (u->is_unix || evutil_inet_pton(AF_INET, u->host, buf) == 1 ||
        evutil_inet_pton(AF_INET6, u->host, buf) == 1) {
        connect_to(l, u->host);
        return;
    }
    if (!l->dns)
        l->dns = evdns_base_new(l->cfg.base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (!l->dns) {
        fail(l, "cannot start the name lookup", false);
        return;
    }
    struct evutil_addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    l->looking = true;
    struct evdns_getaddrinfo_request *req =
        evdns_getaddrinfo(l->dns, u->host, NULL, &hints, on_resolved, l);
    /* The callback may have run already (an answer from the hosts file). */
    if (l->looking)
        l->lookup = req;
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
    fail(l, why, true);
}

/* ---- lifecycle ---------------------------------------------------------------------- */

int mae__link_new(const mae__link_config *cfg, mae__link **out)
{
    mae__link *l = calloc(1, sizeof *l);
    if (!l)
        return MAE_ENOMEM;
    l->cfg = *cfg;
    l->rng = ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)l;
    if (!l->rng)
        l->rng = 0x9e3779b97f4a7c15ull;
    l->retry = evtimer_new(cfg->base, on_retry, l);
    l->watchdog = evtimer_new(cfg->base, on_watchdog, l);
    l->release = evtimer_new(cfg->base, on_release, l);
    struct timeval now = {0, 0};
    if (!l->retry || !l->watchdog || !l->release || evtimer_add(l->retry, &now) != 0) {
        mae__link_free(l);
        return MAE_ENOMEM;
    }
    *out = l;
    return MAE_OK;
}

void mae__link_free(mae__link *l)
{
    if (!l)
        return;
    l->closing = true;
    if (l->lookup)
        evdns_getaddrinfo_cancel(l->lookup);
    if (l->ac) {
        redisAsyncContext *ac = l->ac;
        l->ac = NULL;   /* detached: its last callbacks see a stranger */
        redisAsyncFree(ac);
    }
    if (l->dns)
        evdns_base_free(l->dns, 0);
    if (l->retry)
        event_free(l->retry);
    if (l->watchdog)
        event_free(l->watchdog);
    if (l->release)
        event_free(l->release);
    free(l);
}
