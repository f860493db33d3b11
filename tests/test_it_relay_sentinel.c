/* Integration test of the relay through Redis Sentinel (issue 21): a real
 * replicated set (tests/support/sentinel_harness: 3 redis-server, 3
 * Sentinels), a publisher in stream mode writing numbered events through
 * the redis-sentinel:// URL, a relay in stream mode given the same URL and
 * an SSE client on it. The master is killed (SIGKILL) while the publisher
 * writes: the relay must find the new master through the Sentinels and the
 * client must see every event once, or a reset that says why. The time
 * from the kill to the client's first event written after it is printed
 * (a figure, not a limit: bench/ measures it). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include <mailagent/publisher.h>

#include "core/url.h"
#include "harness.h"
#include "stream/sync.h"
#include "sentinel_harness.h"
#include "testutil.h"

#define STREAM "t:relayfailover"

/* The n of every event frame the client received, in order (*count of
 * them); the caller frees. */
static int *frames(rh_conn *c, size_t *count)
{
    size_t cap = 1024, n = 0;
    int *v = malloc(cap * sizeof *v);
    assert_non_null(v);
    for (const char *p = c->buf; (p = strstr(p, "event: mailagent\ndata: ")) != NULL; p++) {
        const char *end = strstr(p, "\n\n");
        const char *q = strstr(p, "\"n\":");
        if (!end || !q || q > end)
            continue;
        if (n == cap) {
            cap *= 2;
            v = realloc(v, cap * sizeof *v);
            assert_non_null(v);
        }
        v[n++] = atoi(q + 4);
    }
    *count = n;
    return v;
}

/* The id of the frame whose data starts at data (the "id: " line just
 * before its "event:" line), copied into out; "-" when it has none. */
static void frame_id(const char *buf, const char *data, char *out, size_t size)
{
    const char *ev = data;
    snprintf(out, size, "-");
    if (ev - buf < 5)
        return;
    const char *line = ev - 1;   /* the '\n' ending the id line, if any */
    const char *start = line;
    while (start > buf && start[-1] != '\n' && start[-1] != '\r')
        start--;
    if (strncmp(start, "id: ", 4) == 0)
        snprintf(out, size, "%.*s", (int)(line - start - 4), start + 4);
}

/* Where an event the client got twice came from: the ids of its frames,
 * and how often the stream itself (on the master now) holds that n, with
 * the ids. A doubled n at one id is the relay's; at two ids, the
 * stream's (the publisher wrote it twice). */
static void explain_double(rh_conn *c, mts_set *s, int nm, int twice)
{
    char id[64];
    print_message("event n=%d reached the client at:", twice);
    for (const char *p = c->buf; (p = strstr(p, "event: mailagent\ndata: ")) != NULL; p++) {
        const char *end = strstr(p, "\n\n");
        const char *q = strstr(p, "\"n\":");
        if (!end || !q || q > end || atoi(q + 4) != twice)
            continue;
        frame_id(c->buf, p, id, sizeof id);
        print_message(" %s (byte %ld)", id, (long)(p - c->buf));
    }
    print_message("\n");
    if (nm < 0)
        return;
    struct timeval tv = {5, 0};
    redisContext *rc = redisConnectWithTimeout("127.0.0.1", s->redis[nm].port, tv);
    if (!rc || rc->err) {
        print_message("cannot read the stream on redis[%d]\n", nm);
        redisFree(rc);
        return;
    }
    redisReply *x = redisCommand(rc, "XRANGE %s - +", STREAM);
    char want[32];
    snprintf(want, sizeof want, "\"n\":%d}", twice);
    size_t held = 0;
    print_message("the stream on redis[%d] holds it at:", nm);
    for (size_t i = 0; x && x->type == REDIS_REPLY_ARRAY && i < x->elements; i++) {
        redisReply *e = x->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[1]->elements < 2)
            continue;
        if (strstr(e->element[1]->element[1]->str, want)) {
            held++;
            print_message(" %s", e->element[0]->str);
        }
    }
    print_message(" (%zu times, %zu entries in all)\n", held,
                  x && x->type == REDIS_REPLY_ARRAY ? x->elements : 0);
    freeReplyObject(x);
    redisFree(rc);
}

/* The byte offset in c->buf of each of the n event frames frames() found,
 * in the same order; the caller frees. */
static long *frames_at(rh_conn *c, size_t n)
{
    long *at = calloc(n ? n : 1, sizeof *at);
    assert_non_null(at);
    size_t i = 0;
    for (const char *p = c->buf; i < n && (p = strstr(p, "event: mailagent\ndata: ")) != NULL;
         p++) {
        const char *end = strstr(p, "\n\n");
        const char *q = strstr(p, "\"n\":");
        if (!end || !q || q > end)
            continue;
        at[i++] = (long)(p - c->buf);
    }
    return at;
}

/* The highest n received so far. */
static int highest(rh_conn *c)
{
    size_t n;
    rh_pump(c);
    int *v = frames(c, &n), top = 0;
    for (size_t i = 0; i < n; i++)
        if (v[i] > top)
            top = v[i];
    free(v);
    return top;
}

/* The relay follows the master through a SIGKILL. diverge: the replicas
 * are stopped and cut off for a moment first, so the old master holds a
 * batch (applied, read by the relay, not confirmed by WAIT) and an entry
 * that neither replica has: the new master lacks the entries the relay
 * read last, and the publisher sends its batch again there under new ids. */
static void follow_killed_master(bool diverge)
{
    if (!mtr_available())
        tu_missing_prerequisite("redis-server");
    char out[512], log[600];
    rh_out_dir(diverge ? "test_it_relay_sentinel_diverge" : "test_it_relay_sentinel", out,
               sizeof out);
    mts_set s;
    assert_int_equal(mts_start(&s), 0);

    /* A publisher writing about 200 numbered events a second through the
     * Sentinels (with WAIT, tests/support/sentinel_harness.h). */
    mts_feeder f;
    if (mts_feeder_open(&f, &s, STREAM, "relayfailover") != MAE_OK)
        fail_msg("cannot open the publisher: %s", f.err);

    /* The relay, given the Sentinels' URL, and one SSE client on it. */
    rh_relay r;
    const char *args[] = {"--stream", STREAM, "--ping-interval", "0.5", NULL};
    snprintf(log, sizeof log, "%s/relay.log", out);
    assert_int_equal(rh_relay_start(&r, s.url, args, NULL, log), 0);
    rh_conn *c = rh_get(r.port, "/api/events/stream", NULL);
    assert_non_null(c);
    rh_wait_clients(r.port, NULL, 1, 10000);

    assert_int_equal(mts_feeder_start(&f, 5), 0);
    assert_true(rh_wait_for(c, 0, "event: mailagent\n", 10000) >= 0);
    rh_sleep_ms(1000);

    int old = mts_master(&s);
    assert_int_equal(old, 0);
    if (diverge) {
        /* The replicas stop and their links are cut (a stopped replica
         * would still find what was sent to it in its socket), and the
         * master takes writes without them: WAIT cannot confirm those,
         * so the publisher keeps its batch in flight. */
        mtr_pause(&s.redis[1]);
        mtr_pause(&s.redis[2]);
        assert_int_equal(mtr_command(&s.redis[old], "CONFIG SET min-replicas-to-write 0"), 0);
        assert_int_equal(mtr_command(&s.redis[old], "CLIENT KILL TYPE replica"), 0);
        /* An entry only the old master holds, delivered before the kill
         * (the publisher's own batch may still be the one in flight). */
        assert_int_equal(mtr_command(&s.redis[old], "XADD %s * event {\"marker\":1}", STREAM), 0);
        assert_true(rh_wait_for(c, 0, "data: {\"marker\":1}\n", 5000) >= 0);
        rh_sleep_ms(100);
    }
    int at_kill = atomic_load(&f.sent);
    int seen_at_kill = highest(c);
    double t0 = mts_now();
    mtr_kill(&s.redis[old]);
    if (diverge) {
        mtr_resume(&s.redis[1]);
        mtr_resume(&s.redis[2]);
    }
    fprintf(stderr, "[%.3f] redis[%d] killed at n=%d, the client had up to %d\n", t0, old,
            at_kill, seen_at_kill);

    /* The relay has followed once the client gets an event the publisher
     * wrote after the kill. */
    double t_follow = -1;
    while (mts_now() < t0 + 30) {
        if (highest(c) > at_kill) {
            t_follow = mts_now() - t0;
            break;
        }
        rh_sleep_ms(5);
    }
    int nm = mts_wait_new_master(&s, old, 10000);
    print_message("SIGKILL of the master: the relay's client got the first event written "
                  "after it %.2f s later (new master: redis[%d])\n", t_follow, nm);
    assert_true(t_follow >= 0);
    assert_true(nm >= 0 && nm != old);

    rh_sleep_ms(1000);
    int sent = mts_feeder_stop(&f, 30000);
    if (sent < 0)
        fail_msg("the publisher did not flush within 30 s: %s", f.err);
    char last[48];
    snprintf(last, sizeof last, "\"n\":%d}", sent);
    assert_true(rh_wait_for(c, 0, last, 10000) >= 0);
    rh_sleep_ms(300);   /* anything doubled would have come by now */
    rh_pump(c);

    /* Every event from the first the client saw to the last: none
     * missing (what the new master lacked was sent again), and an event
     * twice only after a reset that says why. */
    size_t n;
    int *v = frames(c, &n);
    long *at = frames_at(c, n);
    assert_true(n > 0);
    int first = v[0];
    const char *reset_frame = strstr(c->buf, "event: reset\n");
    long reset_at = reset_frame ? (long)(reset_frame - c->buf) : -1;
    unsigned char *seen = calloc((size_t)sent + 1, 1);
    int dups = 0, unexplained = 0, missing = 0;
    for (size_t i = 0; i < n; i++)
        if (v[i] >= 1 && v[i] <= sent && seen[v[i]]++) {
            dups++;
            if (reset_at < 0 || at[i] < reset_at)
                unexplained++;
        }
    for (int k = first; k <= sent; k++)
        if (!seen[k])
            missing++;
    bool reset = reset_at >= 0;
    if (reset) {
        const char *eol = strchr(reset_frame + 13, '\n');
        print_message("reset: %.*s\n", eol ? (int)(eol - reset_frame - 13) : 40,
                      reset_frame + 13);
    }
    print_message("client: %zu events (%d..%d): %d missing, %d twice (%d before any reset), "
                  "reset: %s\n", n, first, sent, missing, dups, unexplained, reset ? "yes" : "no");
    mae_publisher_stats ps;
    mae_publisher_stats_get(f.p, &ps);
    print_message("publisher: published %llu, resent %llu, skipped %llu, lost_failover %llu\n",
                  (unsigned long long)ps.published, (unsigned long long)ps.resent,
                  (unsigned long long)ps.skipped, (unsigned long long)ps.lost_failover);
    for (int k = 1, shown = 0; k <= sent && shown < 3; k++)
        if (seen[k] > 1) {
            explain_double(c, &s, nm, k);
            shown++;
        }
    if (unexplained || missing) {
        char *relay_log = rh_slurp(log);
        print_message("relay log:\n%s\n", relay_log ? relay_log : "(none)");
        free(relay_log);
    }
    assert_int_equal(unexplained, 0);
    assert_int_equal(missing, 0);
    assert_int_equal(ps.lost_failover, 0);
    if (diverge) {
        /* The relay had read what the new master lacks: it said so. */
        assert_true(seen_at_kill > 0);
        assert_true(reset);
    }
    assert_true(rh_log_has(&r, "redis"));

    /* The command's blocking connection (events tail) finds the new
     * master the same way. */
    mae__url u;
    char uerr[200] = "";
    assert_int_equal(mae__url_parse_for(s.url, MAE__URL_ALLOW_SENTINEL, &u, uerr, sizeof uerr),
                     0);
    mae__sync_conn *sc = mae__redis_connect_sync(&u, 2000, uerr, sizeof uerr);
    if (!sc)
        fail_msg("events tail's connection through Sentinel: %s", uerr);
    redisReply *port = mae__sync_command(sc, 2000, uerr, sizeof uerr, "CONFIG GET port");
    assert_non_null(port);
    assert_int_equal(port->type, REDIS_REPLY_ARRAY);
    /* The master the Sentinels name now: on a loaded machine they
     * sometimes fail over a second time (the new master did not answer
     * within down-after-milliseconds), and then the tail rightly reaches
     * the newer one. */
    int reached = atoi(port->element[1]->str), now = mts_master(&s);
    if (now != nm)
        print_message("the Sentinels failed over again: redis[%d] is the master now\n", now);
    assert_true(now >= 0);
    assert_int_equal(reached, s.redis[now].port);
    freeReplyObject(port);
    mae__sync_free(sc);
    mae__url_free(&u);
    free(seen);
    free(v);
    free(at);
    rh_close(c);
    rh_relay_stop(&r, SIGTERM, 10000, NULL);
    assert_int_equal(mts_feeder_close(&f), MAE_OK);
    mts_stop(&s);
}

static void test_relay_follows_a_killed_master(void **state)
{
    (void)state;
    follow_killed_master(false);
}

/* The new master lacks entries the relay had delivered (issue 21: Redis
 * replicates asynchronously): every client gets a reset (rolled_back, or
 * unknown_id when the new master's newest entry is older than the
 * relay's position), then the publisher's resent events; nothing is
 * doubled before the reset, nothing is missing. */
static void test_relay_follows_a_master_that_lost_entries(void **state)
{
    (void)state;
    follow_killed_master(true);
}

/* Polls /healthz until its text contains needle or timeout_ms pass;
 * seconds waited, or -1. */
static double wait_healthz(int port, const char *needle, int timeout_ms)
{
    double t0 = rh_now();
    while (rh_now() < t0 + timeout_ms / 1000.0) {
        char *a = rh_request(port, "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");
        bool hit = a && strstr(a, needle);
        free(a);
        if (hit)
            return rh_now() - t0;
        rh_sleep_ms(100);
    }
    return -1;
}

/* The progress rule: a Redis source that neither delivers an entry nor
 * gets its probe answered for 2 x --ping-interval + 5 s (6 s here) makes
 * /healthz say ok:false, even before the link gives up on the server;
 * ok:true again once Redis answers. A hung server (SIGSTOP) is the case. */
static void test_healthz_progress_rule(void **state)
{
    (void)state;
    if (!mtr_available())
        tu_missing_prerequisite("redis-server");
    char out[512], log[600];
    rh_out_dir("test_it_relay_sentinel_healthz", out, sizeof out);
    mtr_redis redis;
    assert_int_equal(mtr_start(&redis, NULL), 0);
    rh_relay r;
    const char *args[] = {"--stream", "t:health", "--ping-interval", "0.5", NULL};
    snprintf(log, sizeof log, "%s/relay.log", out);
    assert_int_equal(rh_relay_start(&r, redis.url, args, NULL, log), 0);
    assert_true(wait_healthz(r.port, "\"redis\":true", 10000) >= 0);

    /* ok:false is the promise; the status says why: "stalled" by the
     * progress rule, or the link's own down state when its watchdog
     * (5 s) gave up on the server first. */
    mtr_pause(&redis);
    double stalled = wait_healthz(r.port, "\"ok\":false", 20000);
    print_message("Redis stopped: /healthz ok:false after %.1f s\n", stalled);
    char *a = rh_request(r.port, "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");
    if (stalled < 0 || !a || !strstr(a, "\"ok\":false")) {
        char *relay_log = rh_slurp(log);
        fail_msg("no ok:false with Redis stopped: %s\nrelay log:\n%s", a ? a : "(no answer)",
                 relay_log ? relay_log : "(none)");
    }
    free(a);

    mtr_resume(&redis);
    double back = wait_healthz(r.port, "\"ok\":true", 30000);
    print_message("Redis resumed: /healthz ok:true after %.1f s\n", back);
    assert_true(back >= 0);
    rh_relay_stop(&r, SIGTERM, 10000, NULL);
    mtr_cleanup(&redis);
}

/* Rolled-back ids: a client's Last-Event-ID that the stream no longer
 * holds although newer entries exist (a failover lost it; simulated with
 * XDEL on one server) gets reset rolled_back with the newest entry before
 * it, then what followed; an id that is there replays without a reset. */
static void test_rolled_back_id(void **state)
{
    (void)state;
    if (!mtr_available())
        tu_missing_prerequisite("redis-server");
    char out[512], log[600];
    rh_out_dir("test_it_relay_sentinel_rolled_back", out, sizeof out);
    mtr_redis redis;
    assert_int_equal(mtr_start(&redis, NULL), 0);
    for (int i = 1; i <= 5; i++)
        assert_int_equal(mtr_command(&redis, "XADD t:rb %d-1 event {\"n\":%d}", i, i), 0);
    assert_int_equal(mtr_command(&redis, "XDEL t:rb 3-1"), 0);
    rh_relay r;
    const char *args[] = {"--stream", "t:rb", "--ping-interval", "0.5", NULL};
    snprintf(log, sizeof log, "%s/relay.log", out);
    assert_int_equal(rh_relay_start(&r, redis.url, args, NULL, log), 0);

    rh_conn *gone = rh_get(r.port, "/api/events/stream", "Last-Event-ID: 3-1\r\n");
    assert_true(rh_wait_for(gone, 0, "\"n\":5}", 10000) >= 0);
    long at = rh_wait_for(gone, 0,
                          "event: reset\ndata: {\"reason\":\"rolled_back\",\"last_kept\":\"2-1\"}\n",
                          1000);
    if (at < 0)
        fail_msg("no rolled_back reset: %s", gone->buf);
    assert_true(at < (long)(strstr(gone->buf, "\"n\":4}") - gone->buf));
    size_t n;
    int *v = frames(gone, &n);
    assert_int_equal(n, 2);
    assert_int_equal(v[0], 4);
    assert_int_equal(v[1], 5);
    free(v);

    rh_conn *kept = rh_get(r.port, "/api/events/stream", "Last-Event-ID: 2-1\r\n");
    assert_true(rh_wait_for(kept, 0, "\"n\":5}", 10000) >= 0);
    assert_null(strstr(kept->buf, "event: reset"));
    v = frames(kept, &n);
    assert_int_equal(n, 2);
    free(v);

    /* The relay's own position (5-1): deleted, a newer entry added and the
     * relay's connections killed in one transaction, so it reconnects
     * before reading 6-1 and finds 5-1 gone: its live clients get
     * rolled_back with last_kept 4-1, then 6. */
    struct timeval tv = {5, 0};
    redisContext *rc = redisConnectWithTimeout("127.0.0.1", redis.port, tv);
    assert_true(rc && !rc->err);
    const char *tx[] = {"MULTI", "XDEL t:rb 5-1", "XADD t:rb 6-1 event {\"n\":6}",
                        "CLIENT KILL TYPE normal SKIPME yes", "EXEC"};
    for (size_t i = 0; i < 5; i++) {
        redisReply *x = redisCommand(rc, tx[i]);
        assert_non_null(x);
        freeReplyObject(x);
    }
    redisFree(rc);
    const char *want = "event: reset\ndata: {\"reason\":\"rolled_back\",\"last_kept\":\"4-1\"}\n";
    if (rh_wait_for(kept, 0, want, 10000) < 0)
        fail_msg("no rolled_back reset for the relay's position: %s", kept->buf);
    assert_true(rh_wait_for(kept, 0, "\"n\":6}", 10000) >= 0);
    assert_true(rh_log_has(&r, "read last is gone from the stream"));
    rh_close(gone);
    rh_close(kept);
    rh_relay_stop(&r, SIGTERM, 10000, NULL);
    mtr_cleanup(&redis);
}

/* A stand-in Sentinel on a free loopback port: it answers every
 * "SENTINEL get-master-addr-by-name" with 127.0.0.1 and master_port, which
 * the test changes when it wants (a real failover's timing is Sentinel's),
 * and confirms a SUBSCRIBE to +switch-master, keeping that connection open
 * (and silent) until it stops, as a Sentinel that sees no failover does. */
#define FAKE_WATCHERS 16

typedef struct fake_sentinel {
    int fd, port;
    atomic_int master_port;
    atomic_bool stop;
    pthread_t thread;
    int watchers[FAKE_WATCHERS];   /* subscribed connections (the thread's) */
    int nwatchers;
} fake_sentinel;

static void *fake_sentinel_main(void *arg)
{
    fake_sentinel *fs = arg;
    while (!atomic_load(&fs->stop)) {
        struct pollfd p = {fs->fd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int c = accept(fs->fd, NULL, NULL);
        if (c < 0)
            continue;
        char buf[512];
        size_t len = 0;
        double until = rh_now() + 2;
        while (len < sizeof buf - 1 && rh_now() < until) {
            struct pollfd q = {c, POLLIN, 0};
            if (poll(&q, 1, 50) <= 0)
                continue;
            ssize_t n = read(c, buf + len, sizeof buf - 1 - len);
            if (n <= 0)
                break;
            len += (size_t)n;
            buf[len] = '\0';
            if (strstr(buf, MTS_MASTER_NAME "\r\n") || strstr(buf, "+switch-master\r\n"))
                break;
        }
        if (len > 0 && strstr(buf, "SUBSCRIBE") && fs->nwatchers < FAKE_WATCHERS) {
            static const char ok[] = "*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n";
            if (write(c, ok, sizeof ok - 1) != (ssize_t)(sizeof ok - 1))
                print_message("fake Sentinel: short write\n");
            fs->watchers[fs->nwatchers++] = c;
            continue;
        }
        char port[16], reply[64];
        int pl = snprintf(port, sizeof port, "%d", atomic_load(&fs->master_port));
        int n = snprintf(reply, sizeof reply, "*2\r\n$9\r\n127.0.0.1\r\n$%d\r\n%s\r\n", pl, port);
        if (write(c, reply, (size_t)n) != n)
            print_message("fake Sentinel: short write\n");
        close(c);
    }
    for (int i = 0; i < fs->nwatchers; i++)
        close(fs->watchers[i]);
    return NULL;
}

static void fake_sentinel_start(fake_sentinel *fs, int master_port)
{
    memset(fs, 0, sizeof *fs);
    atomic_store(&fs->master_port, master_port);
    fs->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fs->fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    assert_int_equal(bind(fs->fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fs->fd, 16), 0);
    assert_int_equal(getsockname(fs->fd, (struct sockaddr *)&a, &alen), 0);
    fs->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&fs->thread, NULL, fake_sentinel_main, fs), 0);
}

static void fake_sentinel_stop(fake_sentinel *fs)
{
    atomic_store(&fs->stop, true);
    pthread_join(fs->thread, NULL);
    close(fs->fd);
}

/* True once redis r holds the entry id in key (up to timeout_ms). */
static bool wait_entry(mtr_redis *r, const char *key, const char *id, int timeout_ms)
{
    struct timeval tv = {2, 0};
    double until = rh_now() + timeout_ms / 1000.0;
    bool held = false;
    while (!held && rh_now() < until) {
        redisContext *rc = redisConnectWithTimeout("127.0.0.1", r->port, tv);
        redisReply *x = rc && !rc->err ? redisCommand(rc, "XRANGE %s %s %s", key, id, id) : NULL;
        held = x && x->type == REDIS_REPLY_ARRAY && x->elements == 1;
        if (x)
            freeReplyObject(x);
        redisFree(rc);
        if (!held)
            rh_sleep_ms(20);
    }
    return held;
}

/* A master demoted while no read of the relay's was blocked on it (the
 * relay was between two reads: here it is stopped while its XREAD's block
 * runs out) goes on answering reads as a replica of the new master. The
 * relay must not take the new master's entries from it without the check
 * of its position a reconnect makes: it asks ROLE before each read, leaves,
 * asks the Sentinels, and its client gets rolled_back before the event the
 * publisher wrote again under a new id. Failed before (ROLE only at
 * connect): "n":5 twice and no reset. */
static void test_relay_leaves_a_demoted_master(void **state)
{
    (void)state;
    if (!mtr_available())
        tu_missing_prerequisite("redis-server");
    char out[512], log[600], url[160];
    rh_out_dir("test_it_relay_sentinel_demoted", out, sizeof out);
    mtr_redis a, b;
    assert_int_equal(mtr_start(&a, NULL), 0);
    assert_int_equal(mtr_start(&b, "--repl-diskless-sync-delay 0"), 0);
    for (int i = 1; i <= 4; i++) {
        assert_int_equal(mtr_command(&a, "XADD t:demoted %d-0 event {\"n\":%d}", i, i), 0);
        assert_int_equal(mtr_command(&b, "XADD t:demoted %d-0 event {\"n\":%d}", i, i), 0);
    }
    fake_sentinel fs;
    fake_sentinel_start(&fs, a.port);
    snprintf(url, sizeof url, "redis-sentinel://127.0.0.1:%d#%s", fs.port, MTS_MASTER_NAME);
    rh_relay r;
    const char *args[] = {"--stream", "t:demoted", NULL};
    snprintf(log, sizeof log, "%s/relay.log", out);
    assert_int_equal(rh_relay_start(&r, url, args, NULL, log), 0);
    rh_conn *c = rh_get(r.port, "/api/events/stream", NULL);
    assert_true(rh_wait_for(c, 0, "id: 4-0\n\n", 10000) > 0);
    /* Read on A alone (B never gets it: the failover will lose it). */
    assert_int_equal(mtr_command(&a, "XADD t:demoted 5-0 event {\"n\":5}"), 0);
    assert_true(rh_wait_for(c, 0, "data: {\"n\":5}\n", 5000) > 0);

    /* The relay stops with its XREAD (BLOCK 2000) sent; Redis answers it
     * nil meanwhile, so no read of the relay's is blocked on A when A is
     * demoted; the relay comes back well within its 5 s reply deadline. */
    assert_int_equal(kill(r.pid, SIGSTOP), 0);
    rh_sleep_ms(2300);
    atomic_store(&fs.master_port, b.port);
    assert_int_equal(mtr_command(&b, "XADD t:demoted 6-0 event {\"n\":5}"), 0);
    assert_int_equal(mtr_command(&a, "REPLICAOF 127.0.0.1 %d", b.port), 0);
    assert_true(wait_entry(&a, "t:demoted", "6-0", 10000));
    assert_int_equal(kill(r.pid, SIGCONT), 0);

    double until = rh_now() + 10;
    while (rh_count(c, "data: {\"n\":5}\n") < 2 && rh_now() < until) {
        rh_sleep_ms(20);
        rh_pump(c);
    }
    const char *want = "event: reset\ndata: {\"reason\":\"rolled_back\",\"last_kept\":\"4-0\"}\n";
    const char *reset = strstr(c->buf, want);
    const char *again = strstr(c->buf, "id: 6-0\nevent: mailagent\ndata: {\"n\":5}\n");
    if (!reset || !again || reset > again)
        fail_msg("the relay read the demoted master's new entries without a reset: %s", c->buf);
    assert_true(rh_log_has(&r, "is no longer the master"));
    rh_close(c);
    rh_relay_stop(&r, SIGTERM, 10000, NULL);
    fake_sentinel_stop(&fs);
    mtr_cleanup(&a);
    mtr_cleanup(&b);
}

/* A planned failover (SENTINEL FAILOVER): the old master stays up and is
 * demoted only some 11 s later, so a relay reading it sees no error until
 * then. The relay listens for +switch-master on the Sentinel that named the
 * master and follows at once. The time from the command to the client's
 * first entry written on the new master is printed (bench/ owns timing). */
static void test_relay_follows_a_planned_failover(void **state)
{
    (void)state;
    if (!mtr_available())
        tu_missing_prerequisite("redis-server");
    char out[512], log[600];
    rh_out_dir("test_it_relay_sentinel_planned", out, sizeof out);
    mts_set s;
    assert_int_equal(mts_start(&s), 0);
    rh_relay r;
    const char *args[] = {"--stream", "t:planned", NULL};
    snprintf(log, sizeof log, "%s/relay.log", out);
    assert_int_equal(rh_relay_start(&r, s.url, args, NULL, log), 0);
    rh_conn *c = rh_get(r.port, "/api/events/stream", NULL);
    assert_true(rh_wait_for(c, 0, "id: ", 10000) > 0);
    int old = mts_master(&s);
    assert_true(old >= 0);
    assert_int_equal(mtr_command(&s.redis[old], "XADD t:planned * event {\"n\":1}"), 0);
    assert_true(rh_wait_for(c, 0, "data: {\"n\":1}\n", 10000) > 0);

    double t0 = mts_now();
    assert_int_equal(mts_sentinel_failover(&s, 0), 0);
    int nm = mts_wait_new_master(&s, old, 20000);
    double t_agreed = mts_now() - t0;
    assert_true(nm >= 0 && nm != old);
    /* Until the other replica follows it, the new master answers
     * NOREPLICAS (min-replicas-to-write 1). */
    double until = mts_now() + 15;
    while (mtr_command(&s.redis[nm], "XADD t:planned * event {\"n\":2}") != 0 &&
           mts_now() < until)
        rh_sleep_ms(20);
    assert_true(rh_wait_for(c, 0, "data: {\"n\":2}\n", 30000) > 0);
    double t_follow = mts_now() - t0;
    print_message("SENTINEL FAILOVER: the Sentinels named the new master after %.2f s, the "
                  "relay's client got its first entry %.2f s after the command\n",
                  t_agreed, t_follow);
    assert_true(rh_log_has(&r, "the Sentinels switched master"));
    rh_close(c);
    rh_relay_stop(&r, SIGTERM, 10000, NULL);
    mts_stop(&s);
}

/* The connections subscribed to a channel on the Sentinel at port (CLIENT
 * LIST's "sub=1": the relay's watches; Sentinels subscribe on the Redis
 * servers, never on each other); -1 when it does not answer. */
static int watchers_on(int port)
{
    struct timeval tv = {2, 0};
    redisContext *rc = redisConnectWithTimeout("127.0.0.1", port, tv);
    redisReply *x = rc && !rc->err ? redisCommand(rc, "CLIENT LIST") : NULL;
    int n = -1;
    if (x && x->type == REDIS_REPLY_STRING) {
        n = 0;
        for (const char *p = x->str; (p = strstr(p, " sub=1 ")) != NULL; p++)
            n++;
    }
    if (x)
        freeReplyObject(x);
    redisFree(rc);
    return n;
}

/* True once the relay's log holds needle (up to timeout_ms). */
static bool wait_log(const rh_relay *r, const char *needle, int timeout_ms)
{
    double until = rh_now() + timeout_ms / 1000.0;
    while (!rh_log_has(r, needle)) {
        if (rh_now() > until)
            return false;
        rh_sleep_ms(50);
    }
    return true;
}

/* The Sentinel the relay watches for +switch-master dies (SIGKILL) or
 * hangs (SIGSTOP: its PING probe goes unanswered): the relay subscribes
 * again, on its own, to the next Sentinel (logged), so a planned failover
 * after that is still followed through the watch ("the Sentinels switched
 * master" is the watch's line alone; without it the relay would learn of
 * the failover only when the old master is demoted, some 11 s later, from
 * ROLE or an UNBLOCKED error). Failed before (the watch was not retried
 * until the link's next reconnect): no "watching +switch-master again"
 * line. */
static void watch_again_after(int sig)
{
    if (!mtr_available())
        tu_missing_prerequisite("redis-server");
    char out[512], log[600], want[160];
    rh_out_dir(sig == SIGKILL ? "test_it_relay_sentinel_rewatch" : "test_it_relay_sentinel_rewatch_hung",
               out, sizeof out);
    mts_set s;
    assert_int_equal(mts_start(&s), 0);
    rh_relay r;
    const char *args[] = {"--stream", "t:rewatch", NULL};
    snprintf(log, sizeof log, "%s/relay.log", out);
    assert_int_equal(rh_relay_start(&r, s.url, args, NULL, log), 0);
    rh_conn *c = rh_get(r.port, "/api/events/stream", NULL);
    assert_true(rh_wait_for(c, 0, "id: ", 10000) > 0);
    int old = mts_master(&s);
    assert_true(old >= 0);
    assert_int_equal(mtr_command(&s.redis[old], "XADD t:rewatch * event {\"n\":1}"), 0);
    assert_true(rh_wait_for(c, 0, "data: {\"n\":1}\n", 10000) > 0);

    /* Both links of the relay (the reader and the history link) watch the
     * Sentinel that named the master. */
    int watched = -1;
    for (double until = mts_now() + 10; watched < 0 && mts_now() < until; rh_sleep_ms(50))
        for (int i = 0; i < 3 && watched < 0; i++)
            if (watchers_on(s.sentinel[i].port) == 2)
                watched = i;
    if (watched < 0)
        fail_msg("no Sentinel holds the relay's two watches (%d %d %d)",
                 watchers_on(s.sentinel[0].port), watchers_on(s.sentinel[1].port),
                 watchers_on(s.sentinel[2].port));
    /* Killed, not reaped (or stopped): mts_stop reaps it (its pid stays
     * ours till then). */
    assert_int_equal(kill(s.sentinel[watched].pid, sig), 0);
    snprintf(want, sizeof want, "redis: the watch for +switch-master failed (Sentinel 127.0.0.1:%d: %s",
             s.sentinel[watched].port, sig == SIGKILL ? "" : "no answer to PING within");
    if (!wait_log(&r, want, 10000) ||
        !wait_log(&r, "redis: watching +switch-master again on Sentinel 127.0.0.1:", 20000)) {
        char *relay_log = rh_slurp(log);
        fail_msg("the relay did not watch again after its Sentinel %s:\n%s",
                 sig == SIGKILL ? "died" : "hung",
                 relay_log ? relay_log : "(none)");
    }
    /* Both links watch again (the history link's watch, not logged, has
     * its own backoff draw: it may come a moment after the reader's). */
    int live = -1, rewatched = 0;
    for (double until = mts_now() + 10; rewatched != 2 && mts_now() < until; rh_sleep_ms(50)) {
        rewatched = 0;
        for (int i = 0; i < 3; i++)
            if (i != watched) {
                int w = watchers_on(s.sentinel[i].port);
                rewatched += w > 0 ? w : 0;
                live = live < 0 || w > 0 ? i : live;
            }
    }
    assert_int_equal(rewatched, 2);

    double t0 = mts_now();
    assert_int_equal(mts_sentinel_failover(&s, live), 0);
    int nm = mts_wait_new_master(&s, old, 20000);
    assert_true(nm >= 0 && nm != old);
    double until = mts_now() + 15;
    while (mtr_command(&s.redis[nm], "XADD t:rewatch * event {\"n\":2}") != 0 &&
           mts_now() < until)
        rh_sleep_ms(20);
    assert_true(rh_wait_for(c, 0, "data: {\"n\":2}\n", 30000) > 0);
    print_message("SENTINEL FAILOVER with the first watched Sentinel %s: the relay's client "
                  "got the new master's first entry %.2f s after the command\n",
                  sig == SIGKILL ? "killed" : "stopped", mts_now() - t0);
    if (!rh_log_has(&r, "the Sentinels switched master")) {
        char *relay_log = rh_slurp(log);
        fail_msg("the relay followed, but not through the watch:\n%s",
                 relay_log ? relay_log : "(none)");
    }
    rh_close(c);
    rh_relay_stop(&r, SIGTERM, 10000, NULL);
    mts_stop(&s);   /* (SIGCONT before its SIGKILL) */
}

static void test_relay_watches_again_when_its_sentinel_dies(void **state)
{
    (void)state;
    watch_again_after(SIGKILL);
}

static void test_relay_watches_again_when_its_sentinel_hangs(void **state)
{
    (void)state;
    watch_again_after(SIGSTOP);
}

/* A listening socket on a free loopback port that never answers (a master
 * a replica cannot sync from); its port. */
static int silent_listener(int *fd)
{
    *fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(*fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    assert_int_equal(bind(*fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(*fd, 4), 0);
    assert_int_equal(getsockname(*fd, (struct sockaddr *)&a, &alen), 0);
    return ntohs(a.sin_port);
}

/* The history link (a resuming client's replay) follows the same rule as
 * the reader: ROLE before each read. Here the old master A is demoted but
 * cannot sync from anyone yet, so it still holds 5-0, which the new master
 * B lost (B has the publisher's resend at 6-0, then 7-0). The reader moves
 * to B (its client gets rolled_back); the history link, idle on A, keeps
 * its connection. A client resuming from 4-0 must get 6-0 and 7-0 from B,
 * never A's 5-0. Failed before (no ROLE on the history link): the replay
 * came from A: 5-0, and nothing of 6-0 or 7-0. */
static void test_replay_leaves_a_demoted_master(void **state)
{
    (void)state;
    if (!mtr_available())
        tu_missing_prerequisite("redis-server");
    char out[512], log[600], url[160];
    rh_out_dir("test_it_relay_sentinel_replay_demoted", out, sizeof out);
    mtr_redis a, b;
    assert_int_equal(mtr_start(&a, NULL), 0);
    assert_int_equal(mtr_start(&b, NULL), 0);
    for (int i = 1; i <= 4; i++) {
        assert_int_equal(mtr_command(&a, "XADD t:replay %d-0 event {\"n\":%d}", i, i), 0);
        assert_int_equal(mtr_command(&b, "XADD t:replay %d-0 event {\"n\":%d}", i, i), 0);
    }
    assert_int_equal(mtr_command(&a, "XADD t:replay 5-0 event {\"n\":5}"), 0);
    assert_int_equal(mtr_command(&b, "XADD t:replay 6-0 event {\"n\":5}"), 0);
    assert_int_equal(mtr_command(&b, "XADD t:replay 7-0 event {\"n\":6}"), 0);
    fake_sentinel fs;
    fake_sentinel_start(&fs, a.port);
    snprintf(url, sizeof url, "redis-sentinel://127.0.0.1:%d#%s", fs.port, MTS_MASTER_NAME);
    rh_relay r;
    const char *args[] = {"--stream", "t:replay", NULL};
    snprintf(log, sizeof log, "%s/relay.log", out);
    assert_int_equal(rh_relay_start(&r, url, args, NULL, log), 0);
    rh_conn *live = rh_get(r.port, "/api/events/stream", NULL);
    assert_true(rh_wait_for(live, 0, "id: 5-0\n\n", 10000) > 0);
    /* The history link is up (on A) once a replay has been answered. */
    rh_conn *early = rh_get(r.port, "/api/events/stream", "Last-Event-ID: 4-0\r\n");
    assert_true(rh_wait_for(early, 0, "id: 5-0\nevent: mailagent\n", 10000) > 0);
    rh_close(early);

    /* A is demoted; B is the master the Sentinel names. The reader follows
     * (a blocked XREAD is answered UNBLOCKED, or the next ROLE says slave). */
    int lfd;
    int nowhere = silent_listener(&lfd);
    atomic_store(&fs.master_port, b.port);
    assert_int_equal(mtr_command(&a, "REPLICAOF 127.0.0.1 %d", nowhere), 0);
    const char *reset = "event: reset\ndata: {\"reason\":\"rolled_back\",\"last_kept\":\"4-0\"}\n";
    if (rh_wait_for(live, 0, reset, 10000) < 0 || rh_wait_for(live, 0, "id: 7-0\n", 10000) < 0)
        fail_msg("the reader did not follow to the new master: %s", live->buf);

    rh_conn *c = rh_get(r.port, "/api/events/stream", "Last-Event-ID: 4-0\r\n");
    rh_wait_for(c, 0, "id: 7-0\n", 10000);
    rh_pump(c);
    if (strstr(c->buf, "id: 5-0\n") || !strstr(c->buf, "id: 6-0\nevent: mailagent\n") ||
        !strstr(c->buf, "id: 7-0\nevent: mailagent\n")) {
        char *relay_log = rh_slurp(log);
        fail_msg("the replay was read from the demoted master: %s\nrelay log:\n%s", c->buf,
                 relay_log ? relay_log : "(none)");
    }
    rh_close(c);
    rh_close(live);
    rh_relay_stop(&r, SIGTERM, 10000, NULL);
    fake_sentinel_stop(&fs);
    close(lfd);
    mtr_cleanup(&a);
    mtr_cleanup(&b);
}

/* The retry: a stream got last (the one of the final chunk on SIGTERM). */
static int last_retry(const rh_conn *c)
{
    const char *p = c->buf, *last = NULL;
    while ((p = strstr(p, "retry: ")) != NULL)
        last = p++;
    return last ? atoi(last + 7) : -1;
}

/* SIGTERM: every stream gets a retry: between 1000 and 5000 ms, drawn per
 * client, before its final chunk, so clients do not all come back in the
 * same second. */
static void test_sigterm_retry_jitter(void **state)
{
    (void)state;
    if (!mtr_available())
        tu_missing_prerequisite("redis-server");
    char out[512], log[600];
    rh_out_dir("test_it_relay_sentinel_sigterm", out, sizeof out);
    mtr_redis redis;
    assert_int_equal(mtr_start(&redis, NULL), 0);
    rh_relay r;
    const char *args[] = {"--stream", "t:term", "--ping-interval", "0.5", NULL};
    snprintf(log, sizeof log, "%s/relay.log", out);
    assert_int_equal(rh_relay_start(&r, redis.url, args, NULL, log), 0);
    rh_conn *c[4];
    for (int i = 0; i < 4; i++) {
        c[i] = rh_get(r.port, "/api/events/stream", NULL);
        assert_non_null(c[i]);
    }
    rh_wait_clients(r.port, NULL, 4, 10000);
    for (int i = 0; i < 4; i++)
        assert_true(rh_wait_for(c[i], 0, "retry: 3000\n", 5000) >= 0);
    assert_int_equal(rh_relay_stop(&r, SIGTERM, 10000, NULL), 0);
    int retry[4];
    bool differ = false;
    for (int i = 0; i < 4; i++) {
        assert_true(rh_wait_eof(c[i], 5000));
        assert_non_null(strstr(c[i]->buf, "0\r\n\r\n"));
        retry[i] = last_retry(c[i]);
        print_message("client %d: retry %d ms on SIGTERM\n", i, retry[i]);
        assert_true(retry[i] >= 1000 && retry[i] <= 5000);
        differ = differ || retry[i] != retry[0];
        rh_close(c[i]);
    }
    /* Four draws from 4000 values all equal: the jitter is missing. */
    assert_true(differ);
    mtr_cleanup(&redis);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigterm_retry_jitter),
        cmocka_unit_test(test_rolled_back_id),
        cmocka_unit_test(test_healthz_progress_rule),
        cmocka_unit_test(test_relay_follows_a_killed_master),
        cmocka_unit_test(test_relay_follows_a_master_that_lost_entries),
        cmocka_unit_test(test_relay_leaves_a_demoted_master),
        cmocka_unit_test(test_relay_follows_a_planned_failover),
        cmocka_unit_test(test_relay_watches_again_when_its_sentinel_dies),
        cmocka_unit_test(test_relay_watches_again_when_its_sentinel_hangs),
        cmocka_unit_test(test_replay_leaves_a_demoted_master),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);   /* one test, to run it in a loop */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
