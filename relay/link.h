/* Internal: the relay's one Redis link, on its libevent loop, used by every
 * Redis source (the pub/sub subscriber, both links of the stream reader).
 * One link is one connection at a time, made again and again:
 *
 *   locate  where is the server: the URL's address, a name looked up with
 *           evdns so the loop never blocks on DNS. This is the one step
 *           that decides the address (locate() in link.c); Sentinel's
 *           "where is the master" goes there, and hands connect_to() an
 *           address as the lookup does;
 *   connect a libevent bufferevent: a plain socket for redis:// and
 *           unix://, an OpenSSL one for rediss:// (core/tls.h: the URL's
 *           verification, SNI, the host name check; a failure is never
 *           retried in plain text). TCP keepalive. The TCP connect, the
 *           TLS handshake and the hello share one connect timeout;
 *   hello   AUTH and SELECT as the URL asks (SELECT only when wanted:
 *           pub/sub ignores the database), pipelined before the owner's
 *           first command;
 *   talk    commands written through the bufferevent (a write stuck for
 *           the deadline fails the link), replies parsed by hiredis'
 *           redisReader and handed, in order, to the callback given with
 *           each command; pub/sub messages to on_push;
 *   watch   a watchdog over the replies the owner awaits: none within the
 *           deadline and the link is declared dead;
 *   retry   a lost or failed link is made again on core/backoff's schedule;
 *   follow  redis-sentinel://: while up, a second connection to the
 *           Sentinel that named the master, subscribed to +switch-master;
 *           our master moved elsewhere drops the link. A watch that fails
 *           (the Sentinel killed, restarted, reset, or silent: PINGed
 *           every second, answered within deadline_ms) moves to the
 *           next Sentinel after core/backoff's delay, on the loop, while
 *           the link itself stays up.
 *
 * The close rule, written once: the link frees its connection only in
 * fail() and mae__link_free(). Every command still waiting for its reply
 * is then answered with a NULL reply, at once, before on_down; a reply
 * callback may fail the link (the remaining replies of that read are
 * dropped) but never frees it. A reply is freed by the link when its
 * callback returns.
 *
 * Not thread-safe: every call and callback on the loop's thread. Never
 * installed. */
#ifndef MAE_RELAY_LINK_H
#define MAE_RELAY_LINK_H

#include <stdbool.h>
#include <stddef.h>

#include <hiredis/hiredis.h>

#include "core/url.h"

struct event_base;

typedef struct mae__link mae__link;

/* A reply (borrowed for the call), or NULL when the link went down before
 * it came. */
typedef void mae__link_reply_fn(mae__link *l, redisReply *r, void *priv);

typedef struct mae__link_config {
    struct event_base *base;
    const mae__url *url;        /* borrowed; outlives the link */
    bool select_db;             /* send SELECT when url->db is not 0 */
    int deadline_ms;            /* no byte of an awaited reply, or a write, for this long: dead */
    int connect_timeout_ms;     /* TCP, TLS handshake and hello; 0: deadline_ms */
    int backoff_min_ms;         /* the reconnect schedule (core/backoff.h) */
    int backoff_max_ms;
    /* The link is connected and its hello queued: the owner sends its own
     * commands now (they follow AUTH and SELECT on the wire). */
    void (*on_ready)(void *user);
    /* The link was lost, or an attempt failed (why: one sentence; failures:
     * attempts failed in a row, 1 for the first of a run; connecting: the
     * connection never gave a reply, as a refused connection, a failed TLS
     * verification, a client certificate the server refused).
     * It is made again after the backoff. */
    void (*on_down)(void *user, const char *why, int failures, bool connecting);
    /* Pub/sub: a push message ("message", "subscribe", ... arrays), which
     * answers no command of its own. NULL: every reply answers a command. */
    void (*on_push)(void *user, redisReply *r);
    /* redis-sentinel:// (NULL: not told): the watch for +switch-master
     * failed (watching false; what: "Sentinel HOST:PORT: why"), once per
     * run of failed attempts, or is back after such a run (watching true;
     * what: the Sentinel's HOST:PORT). */
    void (*on_watch)(void *user, bool watching, const char *what);
    void *user;
} mae__link_config;

/* Makes the link (for rediss://, the TLS context: the CA and certificate
 * files are read now) and starts its first attempt from the loop (never a
 * callback from inside this call). Returns 0 and *out, MAE_EINVAL with a
 * sentence in err (a TLS file that cannot be used), or MAE_ENOMEM. */
int mae__link_new(const mae__link_config *cfg, mae__link **out, char *err, size_t errlen);

/* Closes the connection (pending commands get their NULL reply, on_down is
 * not called) and frees the link. Never from inside the link's callbacks.
 * NULL: no-op. */
void mae__link_free(mae__link *l);

/* Sends a command (hiredis' format); fn (may be NULL: the reply is read
 * and dropped) gets its reply; expect: the owner awaits it (the watchdog
 * runs until mae__link_accept takes it). REDIS_OK, or REDIS_ERR when the
 * link is not up (fn is then never called). */
int mae__link_command(mae__link *l, bool expect, mae__link_reply_fn *fn, void *priv,
                      const char *fmt, ...);

/* redis-sentinel://: sends ROLE, and fails the link (which then asks the
 * Sentinels again) unless the server still answers master. A reader sends
 * it before each read: a master demoted while no read of ours was blocked
 * on it (a blocked one gets an UNBLOCKED error) goes on answering reads as
 * a replica of the new master, and its entries would reach us without the
 * check of our position a reconnect makes. Other URLs: nothing is sent.
 * REDIS_OK or REDIS_ERR as mae__link_command. */
int mae__link_confirm_master(mae__link *l);

/* Sends a command answered only by push messages (SUBSCRIBE): no callback
 * waits for it. REDIS_OK or REDIS_ERR as above. */
int mae__link_command_push(mae__link *l, const char *fmt, ...);

/* One more reply awaited / one came, for replies that arrive without a
 * command of their own (a re-sent SUBSCRIBE's answer). */
void mae__link_expect(mae__link *l);
void mae__link_got(mae__link *l);

/* The prologue of every reply callback on the link: true when the reply is
 * there and is not an error. NULL (the link went down) is false; an error
 * reply fails the link (reason: the error). count: the reply was awaited
 * (mae__link_got is implied). */
bool mae__link_accept(mae__link *l, const redisReply *r, bool count);

/* Fails the link now (closed, retried after the backoff). */
void mae__link_fail(mae__link *l, const char *why);

/* True between on_ready and the next loss. */
bool mae__link_up(const mae__link *l);

#endif
