/* Integration tests of the relay and `events tail` over TLS (rediss://)
 * against a real redis-server with a TLS port on loopback and certificates
 * made by the test with openssl (tests/support/tls_harness.h): every event
 * reaches a curl client in pub/sub and stream mode; stream mode loses and
 * doubles nothing while the TLS Redis is killed and restarted under load;
 * a certificate from an unknown CA, for another host or expired is
 * refused, logged and counted while the relay keeps retrying and serving;
 * a TLS server hung after the accept or mid-handshake never stalls the
 * relay's loop and the link times out and retries; ssl_cert_reqs=none and
 * client certificates work; `events tail` reads the channel and the
 * stream (in the URL's database) over TLS, names a refused certificate
 * and gives up a hung handshake at its connect timeout. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "harness.h"
#include "redis_harness.h"
#include "tls_harness.h"

#define CURL "/usr/bin/curl"
#define CHANNEL "mailagent:events:v1"

#ifndef MAE_CLI_PATH
#define MAE_CLI_PATH "mailagent"
#endif

static mtr_certs certs;
static char g_out[512];

static int setup(void **state)
{
    (void)state;
    if (!rh_have(MAE_REDIS_SERVER) || !rh_have(CURL))
        return -1;
    if (!mtr_tls_available()) {
        print_message("openssl not found: these tests cannot run, so they fail\n");
        return -1;
    }
    rh_out_dir("test_it_relay_tls", g_out, sizeof g_out);
    return mtr_certs_make(&certs);
}

static int teardown(void **state)
{
    (void)state;
    mtr_certs_remove(&certs);
    return 0;
}

/* rediss://127.0.0.1:PORT[/db]?ssl_ca_certs=CA.pem[&query]. */
static void tls_url(char *out, size_t n, int port, const char *db, const char *ca,
                    const char *query)
{
    char path[128];
    snprintf(out, n, "rediss://127.0.0.1:%d%s?ssl_ca_certs=%s%s%s", port, db ? db : "",
             mtr_cert_path(&certs, ca ? ca : "ca", "pem", path, sizeof path), query ? "&" : "",
             query ? query : "");
}

static void start_relay(rh_relay *r, const char *tag, const char *url, const char *key)
{
    char log[600];
    const char *args[] = {"--ping-interval", "0.5", key ? "--stream" : NULL, key, NULL};
    snprintf(log, sizeof log, "%s/%s.log", g_out, tag);
    if (rh_relay_start(r, url, args, NULL, log) != 0)
        fail_msg("the relay did not start on %s; its log: %s", url, rh_slurp(log));
}

/* A connection to the Redis under test's plain port (the test's own). */
static redisContext *plain(const mtr_redis *redis, int db)
{
    redisContext *c = redisConnect("127.0.0.1", redis->port);
    assert_true(c && !c->err);
    if (db) {
        redisReply *r = redisCommand(c, "SELECT %d", db);
        assert_true(r && r->type != REDIS_REPLY_ERROR);
        freeReplyObject(r);
    }
    return c;
}

static void command_ok(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    if (!r || r->type == REDIS_REPLY_ERROR)
        fail_msg("%s: %s", fmt, r ? r->str : c->errstr);
    freeReplyObject(r);
}

/* Waits until the relay says it reads Redis (subscribed, or reading the
 * stream). */
static void wait_redis_up(const rh_relay *r)
{
    double until = rh_now() + 15;
    while (rh_now() < until && rh_metric(r->port, NULL, "mailagent_relay_redis_connected") != 1)
        rh_sleep_ms(20);
    if (rh_metric(r->port, NULL, "mailagent_relay_redis_connected") != 1)
        fail_msg("the relay never read Redis over TLS; its log: %s", rh_slurp(r->log));
}

/* The internal_ids of the events in text, in order, into ids (max). */
static size_t ids_in(const char *text, int *ids, size_t max)
{
    size_t n = 0;
    for (const char *p = text; p && (p = strstr(p, "\"internal_id\":")) != NULL; p++) {
        if (n < max)
            ids[n] = atoi(p + 14);
        n++;
    }
    return n;
}

/* Asserts text holds events first..last, each once, in order. */
static void assert_exactly(const char *text, int first, int last)
{
    size_t want = (size_t)(last - first + 1);
    int *ids = calloc(want + 64, sizeof *ids);
    size_t n = ids_in(text, ids, want + 64);
    if (n != want)
        fail_msg("got %zu events, want %zu (%d..%d)", n, want, first, last);
    for (size_t i = 0; i < n; i++)
        if (ids[i] != first + (int)i)
            fail_msg("event %zu is %d, want %d", i, ids[i], first + (int)i);
    free(ids);
}

/* curl -N on the relay's stream, its output into a file of the test. */
static pid_t curl_stream(const rh_relay *r, const char *tag, char *out, size_t n)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/api/events/stream", r->port);
    snprintf(out, n, "%s/%s.curl", g_out, tag);
    const char *argv[] = {CURL, "-sN", url, NULL};
    pid_t pid = rh_spawn(argv, NULL, out, NULL);
    assert_true(pid > 0);
    rh_wait_clients(r->port, NULL, 1, 10000);
    return pid;
}

static char *wait_event(const char *path, int id)
{
    char needle[48];
    snprintf(needle, sizeof needle, "\"internal_id\":%d}", id);
    char *got = rh_wait_text(path, needle, 15000, 20);
    if (!got || !strstr(got, needle))
        fail_msg("event %d never came: %s", id, got ? got : "(nothing)");
    rh_sleep_ms(200);   /* anything doubled would have come by now */
    free(got);
    return rh_slurp(path);
}

static void stop_curl(pid_t pid)
{
    kill(pid, SIGTERM);
    rh_wait(pid, 5000);
}

/* ---- every event, both modes ----------------------------------------------------- */

static void test_pubsub_over_tls(void **state)
{
    (void)state;
    mtr_redis redis;
    int tport;
    char url[256], out[600];
    rh_relay r;
    assert_int_equal(mtr_tls_start(&redis, &tport, &certs, "server", false, NULL), 0);
    tls_url(url, sizeof url, tport, NULL, NULL, NULL);
    start_relay(&r, "pubsub", url, NULL);
    wait_redis_up(&r);
    pid_t curl = curl_stream(&r, "pubsub", out, sizeof out);
    redisContext *c = plain(&redis, 0);
    for (int i = 1; i <= 300; i++)
        command_ok(c, "PUBLISH %s {\"event_type\":\"t\",\"internal_id\":%d}", CHANNEL, i);
    char *got = wait_event(out, 300);
    assert_exactly(got, 1, 300);
    free(got);
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_redis_connect_failures_total"), 0);
    redisFree(c);
    stop_curl(curl);
    assert_int_equal(rh_relay_stop(&r, SIGTERM, 10000, NULL), 0);
    mtr_cleanup(&redis);
}

static void test_stream_over_tls_with_db(void **state)
{
    (void)state;
    mtr_redis redis;
    int tport;
    char url[256], out[600];
    rh_relay r;
    assert_int_equal(mtr_tls_start(&redis, &tport, &certs, "server", false, NULL), 0);
    /* The stream lives in db 2; db 0's stream of the same name must not
     * be read. */
    tls_url(url, sizeof url, tport, "/2", NULL, NULL);
    redisContext *c0 = plain(&redis, 0), *c2 = plain(&redis, 2);
    command_ok(c0, "XADD ev:tls * event {\"event_type\":\"t\",\"internal_id\":999}");
    start_relay(&r, "stream", url, "ev:tls");
    wait_redis_up(&r);
    pid_t curl = curl_stream(&r, "stream", out, sizeof out);
    for (int i = 1; i <= 300; i++)
        command_ok(c2, "XADD ev:tls * event {\"event_type\":\"t\",\"internal_id\":%d}", i);
    command_ok(c0, "XADD ev:tls * event {\"event_type\":\"t\",\"internal_id\":998}");
    char *got = wait_event(out, 300);
    assert_exactly(got, 1, 300);
    assert_non_null(strstr(got, "id: "));
    free(got);
    redisFree(c0);
    redisFree(c2);
    stop_curl(curl);
    assert_int_equal(rh_relay_stop(&r, SIGTERM, 10000, NULL), 0);
    mtr_cleanup(&redis);
}

/* ---- a TLS Redis restarted under load (stream mode) -------------------------------- */

typedef struct writer {
    mtr_redis *redis;
    int n;
    pthread_t thread;
} writer;

/* XADD n entries with explicit ids i-0 (a retry of one Redis already has
 * is refused, so the stream holds each number once whatever the restarts
 * do), retrying each until Redis takes it. */
static void *write_main(void *arg)
{
    writer *w = arg;
    redisContext *c = NULL;
    for (int i = 1; i <= w->n;) {
        if (!c || c->err) {
            if (c)
                redisFree(c);
            struct timeval tv = {0, 200000};
            c = redisConnectWithTimeout("127.0.0.1", w->redis->port, tv);
            if (!c || c->err) {
                rh_sleep_ms(20);
                continue;
            }
            redisSetTimeout(c, tv);
        }
        redisReply *r = redisCommand(c, "XADD ev:restart %d-0 event "
                                        "{\"event_type\":\"t\",\"internal_id\":%d}", i, i);
        bool done = r && (r->type != REDIS_REPLY_ERROR || strstr(r->str, "equal or smaller"));
        if (r)
            freeReplyObject(r);
        if (done) {
            i++;
            rh_sleep_ms(2);
        } else {
            rh_sleep_ms(20);
        }
    }
    redisFree(c);
    return NULL;
}

static void test_stream_tls_redis_restarted_under_load(void **state)
{
    (void)state;
    mtr_redis redis;
    int tport;
    char url[256];
    rh_relay r;
    /* Persisted before every reply: what the relay read survives the kill. */
    assert_int_equal(mtr_tls_start(&redis, &tport, &certs, "server", false,
                                   "--appendonly yes --appendfsync always"),
                     0);
    tls_url(url, sizeof url, tport, NULL, NULL, NULL);
    start_relay(&r, "restart", url, "ev:restart");
    wait_redis_up(&r);
    rh_conn *a = rh_get(r.port, "/api/events/stream", NULL);
    rh_wait_clients(r.port, NULL, 1, 10000);
    writer w = {&redis, 1500, 0};
    pthread_create(&w.thread, NULL, write_main, &w);
    for (int k = 0; k < 2; k++) {
        char needle[48];
        snprintf(needle, sizeof needle, "\"internal_id\":%d}", 300 + k * 600);
        assert_true(rh_wait_for(a, 0, needle, 20000) >= 0);
        mtr_kill(&redis);
        rh_sleep_ms(300);
        assert_int_equal(mtr_restart(&redis), 0);
    }
    pthread_join(w.thread, NULL);
    assert_true(rh_wait_for(a, 0, "\"internal_id\":1500}", 30000) >= 0);
    rh_sleep_ms(300);
    rh_pump(a);
    assert_exactly(a->buf, 1, 1500);
    assert_false(a->eof);
    assert_true(rh_metric(r.port, NULL, "mailagent_relay_redis_reconnects_total") >= 2);
    rh_close(a);
    assert_int_equal(rh_relay_stop(&r, SIGTERM, 10000, NULL), 0);
    mtr_cleanup(&redis);
}

/* ---- verification failures ---------------------------------------------------------- */

static void expect_refused(const char *cert, const char *ca, const char *reason)
{
    mtr_redis redis;
    int tport;
    char url[256];
    rh_relay r;
    assert_int_equal(mtr_tls_start(&redis, &tport, &certs, cert, false, NULL), 0);
    tls_url(url, sizeof url, tport, NULL, ca, NULL);
    start_relay(&r, cert, url, NULL);
    /* Retried (counted at every attempt), logged with its reason, never
     * connected, and the relay serves all the while. */
    double until = rh_now() + 15;
    while (rh_now() < until &&
           rh_metric(r.port, NULL, "mailagent_relay_redis_connect_failures_total") < 3)
        rh_sleep_ms(50);
    assert_true(rh_metric(r.port, NULL, "mailagent_relay_redis_connect_failures_total") >= 3);
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_redis_connected"), 0);
    if (!rh_log_has(&r, reason))
        fail_msg("the log does not say '%s': %s", reason, rh_slurp(r.log));
    assert_true(rh_log_has(&r, "certificate verify failed"));
    char *health = rh_request(r.port, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_non_null(health);
    assert_non_null(strstr(health, "\"redis\":false"));
    free(health);
    /* Nothing reached Redis as a client in clear: only the test's own
     * connection is listed. */
    redisContext *c = plain(&redis, 0);
    redisReply *list = redisCommand(c, "CLIENT LIST");
    assert_non_null(list);
    assert_null(strstr(list->str, "cmd=subscribe"));
    freeReplyObject(list);
    redisFree(c);
    assert_true(rh_running(r.pid));
    assert_int_equal(rh_relay_stop(&r, SIGTERM, 10000, NULL), 0);
    mtr_cleanup(&redis);
}

static void test_unknown_ca_refused(void **state)
{
    (void)state;
    expect_refused("server", "other_ca", "unknown CA");
}

static void test_wrong_host_refused(void **state)
{
    (void)state;
    expect_refused("wrong", NULL, "IP address mismatch");
}

static void test_expired_refused(void **state)
{
    (void)state;
    expect_refused("expired", NULL, "certificate has expired");
}

/* ---- a hung TLS server ----------------------------------------------------------------- */

static void test_hung_handshake_times_out(void **state)
{
    (void)state;
    /* 0: silent after the TCP accept; 64: a part of a ServerHello, then
     * nothing. */
    const size_t bytes[] = {0, 64};
    for (int k = 0; k < 2; k++) {
        int port;
        char url[160], tag[32];
        rh_relay r;
        mtr_stall *s = mtr_stall_start(bytes[k], &port);
        assert_non_null(s);
        snprintf(url, sizeof url, "rediss://127.0.0.1:%d?ssl_cert_reqs=none", port);
        snprintf(tag, sizeof tag, "stall-%zu", bytes[k]);
        start_relay(&r, tag, url, NULL);
        rh_conn *a = rh_get(r.port, "/api/events/stream", NULL);
        rh_wait_clients(r.port, NULL, 1, 10000);
        /* The loop answers while the handshake hangs. */
        char *health =
            rh_request(r.port, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_non_null(health);
        assert_non_null(strstr(health, "\"redis\":false"));
        free(health);
        /* The link's connect timeout (5 s) ends the attempt; it retries. */
        double until = rh_now() + 20;
        while (rh_now() < until && mtr_stall_accepted(s) < 2)
            rh_sleep_ms(50);
        assert_true(mtr_stall_accepted(s) >= 2);
        assert_true(rh_log_has(&r, "no TLS handshake within 5000 ms"));
        assert_true(rh_metric(r.port, NULL, "mailagent_relay_redis_connect_failures_total") >= 1);
        /* The client stayed, and the heartbeat still reaches it. */
        size_t pings = rh_count(a, "event: ping");
        assert_true(rh_wait_for(a, a->len, "event: ping", 5000) >= 0);
        assert_true(rh_count(a, "event: ping") > pings);
        assert_false(a->eof);
        rh_close(a);
        assert_int_equal(rh_relay_stop(&r, SIGTERM, 10000, NULL), 0);
        mtr_stall_stop(s);
    }
}

/* ---- verification off, client certificates ----------------------------------------- */

static void test_cert_reqs_none_and_client_certificate(void **state)
{
    (void)state;
    mtr_redis redis;
    int tport;
    char url[512], q[300], cert[128], key[128], out[600];
    rh_relay r;
    /* A server that wants a client certificate, with a certificate for
     * another name: ssl_cert_reqs=none accepts it (nothing verified). */
    assert_int_equal(mtr_tls_start(&redis, &tport, &certs, "wrong", true, NULL), 0);
    snprintf(q, sizeof q, "ssl_cert_reqs=none&ssl_certfile=%s&ssl_keyfile=%s",
             mtr_cert_path(&certs, "client", "pem", cert, sizeof cert),
             mtr_cert_path(&certs, "client", "key", key, sizeof key));
    tls_url(url, sizeof url, tport, NULL, NULL, q);
    start_relay(&r, "client-cert", url, NULL);
    wait_redis_up(&r);
    pid_t curl = curl_stream(&r, "client-cert", out, sizeof out);
    redisContext *c = plain(&redis, 0);
    for (int i = 1; i <= 20; i++)
        command_ok(c, "PUBLISH %s {\"event_type\":\"t\",\"internal_id\":%d}", CHANNEL, i);
    char *got = wait_event(out, 20);
    assert_exactly(got, 1, 20);
    free(got);
    stop_curl(curl);
    assert_int_equal(rh_relay_stop(&r, SIGTERM, 10000, NULL), 0);

    /* Without the certificate the server refuses: counted, the relay up. */
    tls_url(url, sizeof url, tport, NULL, NULL, "ssl_cert_reqs=none");
    start_relay(&r, "no-client-cert", url, NULL);
    double until = rh_now() + 15;
    while (rh_now() < until &&
           rh_metric(r.port, NULL, "mailagent_relay_redis_connect_failures_total") < 2)
        rh_sleep_ms(50);
    assert_true(rh_metric(r.port, NULL, "mailagent_relay_redis_connect_failures_total") >= 2);
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_redis_connected"), 0);
    assert_int_equal(rh_relay_stop(&r, SIGTERM, 10000, NULL), 0);
    redisFree(c);
    mtr_cleanup(&redis);
}

/* ---- events tail ----------------------------------------------------------------------- */

static long long numsub(redisContext *c)
{
    redisReply *r = redisCommand(c, "PUBSUB NUMSUB %s", CHANNEL);
    long long n = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 ? r->element[1]->integer
                                                                          : -1;
    freeReplyObject(r);
    return n;
}

static void test_tail_over_tls(void **state)
{
    (void)state;
    mtr_redis redis;
    int tport;
    char url[256], out[600], err[600];
    assert_int_equal(mtr_tls_start(&redis, &tport, &certs, "server", false, NULL), 0);
    redisContext *c0 = plain(&redis, 0), *c3 = plain(&redis, 3);

    /* Pub/sub. */
    tls_url(url, sizeof url, tport, NULL, NULL, NULL);
    snprintf(out, sizeof out, "%s/tail.out", g_out);
    snprintf(err, sizeof err, "%s/tail.err", g_out);
    const char *argv[] = {MAE_CLI_PATH, "--redis", url, "events", "tail", "--json",
                          "--count", "3", "--timeout", "20", NULL};
    pid_t pid = rh_spawn(argv, NULL, out, err);
    double until = rh_now() + 10;
    while (numsub(c0) < 1 && rh_now() < until)
        rh_sleep_ms(20);
    assert_int_equal(numsub(c0), 1);
    for (int i = 1; i <= 3; i++)
        command_ok(c0, "PUBLISH %s {\"event_type\":\"t\",\"internal_id\":%d}", CHANNEL, i);
    assert_int_equal(rh_wait(pid, 20000), 0);
    char *got = rh_slurp(out);
    assert_exactly(got, 1, 3);
    free(got);

    /* The stream, in the URL's database 3, history first. */
    command_ok(c0, "XADD ev:tail * event {\"event_type\":\"t\",\"internal_id\":99}");
    for (int i = 1; i <= 4; i++)
        command_ok(c3, "XADD ev:tail * event {\"event_type\":\"t\",\"internal_id\":%d}", i);
    tls_url(url, sizeof url, tport, "/3", NULL, NULL);
    const char *sargv[] = {MAE_CLI_PATH, "--redis", url, "events", "tail", "--json", "--stream",
                           "ev:tail", "--since", "start", "--count", "4", "--timeout", "20",
                           NULL};
    pid = rh_spawn(sargv, NULL, out, err);
    assert_int_equal(rh_wait(pid, 20000), 0);
    got = rh_slurp(out);
    assert_exactly(got, 1, 4);
    assert_non_null(strstr(got, "{\"id\":\""));
    free(got);

    /* A certificate for another host: refused with the reason, never in
     * clear (--timeout ends the retries). */
    tls_url(url, sizeof url, tport, NULL, "other_ca", NULL);
    const char *bargv[] = {MAE_CLI_PATH, "--redis", url, "events", "tail", "--timeout", "1",
                           NULL};
    pid = rh_spawn(bargv, NULL, out, err);
    rh_wait(pid, 20000);
    got = rh_slurp(err);
    if (!got || !strstr(got, "certificate verify failed: unknown CA"))
        fail_msg("tail's stderr: %s", got ? got : "(nothing)");
    free(got);
    redisFree(c0);
    redisFree(c3);
    mtr_cleanup(&redis);
}

/* A TLS server that accepts and never finishes the handshake: the tail's
 * connect timeout ends each attempt, says why, and --timeout ends it. */
static void test_tail_hung_handshake(void **state)
{
    (void)state;
    int port;
    char url[160], out[600], err[600];
    mtr_stall *s = mtr_stall_start(64, &port);
    assert_non_null(s);
    snprintf(url, sizeof url, "rediss://127.0.0.1:%d?ssl_cert_reqs=none", port);
    snprintf(out, sizeof out, "%s/tail-stall.out", g_out);
    snprintf(err, sizeof err, "%s/tail-stall.err", g_out);
    const char *argv[] = {MAE_CLI_PATH, "--redis", url, "events", "tail", "--timeout", "3", NULL};
    pid_t pid = rh_spawn(argv, NULL, out, err);
    rh_wait(pid, 20000);
    char *got = rh_slurp(err);
    if (!got || !strstr(got, "TLS handshake timed out"))
        fail_msg("tail's stderr: %s", got ? got : "(nothing)");
    free(got);
    assert_true(mtr_stall_accepted(s) >= 1);
    mtr_stall_stop(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pubsub_over_tls),
        cmocka_unit_test(test_stream_over_tls_with_db),
        cmocka_unit_test(test_stream_tls_redis_restarted_under_load),
        cmocka_unit_test(test_unknown_ca_refused),
        cmocka_unit_test(test_wrong_host_refused),
        cmocka_unit_test(test_expired_refused),
        cmocka_unit_test(test_hung_handshake_times_out),
        cmocka_unit_test(test_cert_reqs_none_and_client_certificate),
        cmocka_unit_test(test_tail_over_tls),
        cmocka_unit_test(test_tail_hung_handshake),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
