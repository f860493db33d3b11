/* Internal: the relay's one Redis link, on its libevent loop, used by every
 * Redis source (the pub/sub subscriber, both links of the stream reader).
 * One link is one connection at a time, made again and again:
 *
 *   locate  where is the server: today the URL's address, looked up with
 *           evdns so the loop never blocks on DNS (Sentinel's "where is
 *           the master" goes here later);
 *   connect hiredis' async context on the loop, TCP keepalive;
 *   hello   AUTH and SELECT as the URL asks (SELECT only when wanted:
 *           pub/sub ignores the database), pipelined before the owner's
 *           first command;
 *   watch   a watchdog over the replies the owner awaits: none within the
 *           deadline and the link is declared dead;
 *   retry   a lost or failed link is made again on core/backoff's schedule.
 *
 * hiredis 0.14 has no timeouts and no TLS in its async API: the watchdog
 * supplies the first; TLS would replace the connect step with a
 * bufferevent (bufferevent_openssl) feeding hiredis' redisReader, behind
 * this same interface (relay.md, "Redis down"). The owner follows
 * relay/source.h's rule for hiredis contexts; the link applies it for the
 * contexts it makes and frees.
 *
 * Not thread-safe: every call and callback on the loop's thread. Never
 * installed. */
#ifndef MAE_RELAY_LINK_H
#define MAE_RELAY_LINK_H

#include <stdbool.h>
#include <stddef.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "core/url.h"

struct event_base;

typedef struct mae__link mae__link;

typedef struct mae__link_config {
    struct event_base *base;
    const mae__url *url;        /* borrowed; outlives the link */
    bool select_db;             /* send SELECT when url->db is not 0 */
    int deadline_ms;            /* an awaited reply later than this: dead */
    int backoff_min_ms;         /* the reconnect schedule (core/backoff.h) */
    int backoff_max_ms;
    /* The link is connected and its hello queued: the owner sends its own
     * commands now (they follow AUTH and SELECT on the wire). */
    void (*on_ready)(void *user);
    /* The link was lost, or an attempt failed (why: one sentence; failures:
     * attempts failed in a row, 1 for the first of a run). It is made
     * again after the backoff. */
    void (*on_down)(void *user, const char *why, int failures);
    void *user;
} mae__link_config;

/* Makes the link and starts its first attempt from the loop (never a
 * callback from inside this call). Returns 0 and *out, or MAE_ENOMEM. */
int mae__link_new(const mae__link_config *cfg, mae__link **out);

/* Closes the connection (no callback from here on) and frees the link.
 * Never from inside the link's or its context's callbacks. NULL: no-op. */
void mae__link_free(mae__link *l);

/* Sends a command on the link's context (hiredis' format); expect: the
 * owner awaits its reply (the watchdog runs until mae__link_accept takes
 * it). REDIS_OK, or REDIS_ERR when the link is not connected. */
int mae__link_command(mae__link *l, bool expect, redisCallbackFn *fn, void *priv,
                      const char *fmt, ...);

/* One more reply awaited / one came, for replies that arrive without a
 * command of their own (a re-sent SUBSCRIBE's answer). */
void mae__link_expect(mae__link *l);
void mae__link_got(mae__link *l);

/* The prologue of every reply callback on the link: true when the reply is
 * for the current context and is not an error. A stranger's reply (a
 * context being torn down) is ignored; a NULL reply is the link's loss; an
 * error reply fails the link (reason: the error). count: the reply was
 * awaited (mae__link_got is implied). */
bool mae__link_accept(mae__link *l, redisAsyncContext *ac, const redisReply *r, bool count);

/* Fails the link now (detached, freed, retried after the backoff). */
void mae__link_fail(mae__link *l, const char *why);

/* True between on_ready and the next loss. */
bool mae__link_up(const mae__link *l);

#endif
