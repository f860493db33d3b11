/* Integration tests of `mailagent events serve` with a real redis-server:
 * curl -N with each credential form and the 401s, the rest of the HTTP
 * table, the max-clients answer, a client that stops reading, 1 000
 * clients, Redis killed, hung and restarted, slow-loris headers, SIGTERM,
 * and the command's exit codes. Everything on loopback. */
#define _GNU_SOURCE   /* prlimit(2), to take descriptors away from the relay */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include <mailagent/events.h>

#include "harness.h"
#include "redis_harness.h"

#define CURL "/usr/bin/curl"
#define CHANNEL MAE_DEFAULT_CHANNEL

static mtr_redis g_redis;
static char g_out[512];

static int setup(void **state)
{
    (void)state;
    if (!rh_have(MAE_REDIS_SERVER))
        return -1;
    rh_out_dir("test_it_relay", g_out, sizeof g_out);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    return mtr_start(&g_redis, NULL);
}

static int teardown(void **state)
{
    (void)state;
    mtr_cleanup(&g_redis);
    return 0;
}

static void publish(const char *msg)
{
    assert_int_equal(mtr_command(&g_redis, "PUBLISH %s %s", CHANNEL, msg), 0);
}

static void start_relay(rh_relay *r, const char *tag, const char *const *args,
                        const char *const *env)
{
    char log[600];
    snprintf(log, sizeof log, "%s/%s.log", g_out, tag);
    assert_int_equal(rh_relay_start(r, g_redis.url, args, env, log), 0);
}

static void stop_relay(rh_relay *r)
{
    assert_int_equal(rh_relay_stop(r, SIGTERM, 5000, NULL), 0);
}

/* ---- credentials with curl ------------------------------------------------------- */

static void test_curl_credentials(void **state)
{
    (void)state;
    RH_REQUIRE(CURL);
    static const char *const env[] = {"WEBHOOK_SECRET=s3cret", "MAILAGENT_LOCAL_TOKEN=l0cal",
                                      NULL};
    static const char *const forms[] = {"X-Webhook-Token: s3cret",
                                        "Authorization: Bearer s3cret",
                                        "X-MailAgent-Local-Token: l0cal"};
    rh_relay r;
    start_relay(&r, "credentials", NULL, env);
    char url[128], out[3][600];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/api/events/stream", r.port);
    pid_t curls[3];
    for (int i = 0; i < 3; i++) {
        snprintf(out[i], sizeof out[i], "%s/curl-%d.out", g_out, i);
        const char *argv[] = {CURL, "-sN", "-H", forms[i], url, NULL};
        curls[i] = rh_spawn(argv, NULL, out[i], NULL);
    }
    const char *auth = "X-Webhook-Token: s3cret\r\n";
    rh_wait_clients(r.port, auth, 3, 10000);
    publish("{\"event_type\":\"email.synced\",\"internal_id\":7,\"data\":{\"k\":\"\xc3\xa9\"}}");
    const char *frame =
        "event: mailagent\ndata: {\"event_type\":\"email.synced\",\"internal_id\":7,"
        "\"data\":{\"k\":\"\xc3\xa9\"}}\n\n";
    for (int i = 0; i < 3; i++) {
        char *got = NULL;
        double until = rh_now() + 10;
        while (rh_now() < until) {
            free(got);
            got = rh_slurp(out[i]);
            if (got && strstr(got, frame))
                break;
            rh_sleep_ms(20);
        }
        if (!got || !strstr(got, frame))
            fail_msg("curl with '%s' got: %s", forms[i], got ? got : "(nothing)");
        /* What curl -N prints starts with the retry line. */
        assert_memory_equal(got, "retry: 3000\n\n", 13);
        free(got);
        kill(curls[i], SIGTERM);
        rh_wait(curls[i], 5000);
    }

    /* The 401s: none, wrong, a credential of the other kind, another scheme. */
    static const char *const wrong[] = {NULL, "X-Webhook-Token: l0cal",
                                        "Authorization: Bearer wrong",
                                        "X-MailAgent-Local-Token: s3cret",
                                        "Authorization: Basic czNjcmV0"};
    for (int i = 0; i < 5; i++) {
        char body[600], head[600];
        snprintf(body, sizeof body, "%s/401-%d.body", g_out, i);
        snprintf(head, sizeof head, "%s/401-%d.head", g_out, i);
        const char *argv[] = {CURL, "-s", "-D", head, "-o", body, "-H",
                              wrong[i] ? wrong[i] : "X-Other: 1", url, NULL};
        assert_int_equal(rh_wait(rh_spawn(argv, NULL, NULL, NULL), 10000), 0);
        char *h = rh_slurp(head), *b = rh_slurp(body);
        assert_non_null(h);
        assert_non_null(b);
        assert_non_null(strstr(h, "HTTP/1.1 401 Unauthorized\r\n"));
        assert_non_null(strstr(h, "WWW-Authenticate: Bearer\r\n"));
        assert_string_equal(b, "{\"error\":\"unauthorized\"}");
        free(h);
        free(b);
    }
    assert_int_equal(rh_metric(r.port, auth, "mailagent_relay_auth_failures_total"), 5);
    /* /metrics takes the same credential; /healthz none. */
    char *a = rh_request(r.port, "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_non_null(a);
    assert_non_null(strstr(a, "401 Unauthorized"));
    free(a);
    a = rh_request(r.port, "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_non_null(a);
    assert_non_null(strstr(a, "\r\n\r\n{\"status\":\"ok\",\"redis\":true,\"clients\":0,\"source\":\"pubsub\",\"mode\":\"pubsub\",\"ok\":true}"));
    free(a);
    stop_relay(&r);
}

/* ---- the HTTP table ---------------------------------------------------------------- */

static void expect_answer(int port, const char *req, const char *status, const char *header,
                          const char *body)
{
    char *a = rh_request(port, req);
    if (!a || strncmp(a, status, strlen(status)) != 0 || (header && !strstr(a, header)) ||
        (body && !strstr(a, body)))
        fail_msg("request %s\nanswer %s", req, a ? a : "(none)");
    free(a);
}

static void test_http_table(void **state)
{
    (void)state;
    static const char *const args[] = {"--max-clients", "2", NULL};
    rh_relay r;
    start_relay(&r, "table", args, NULL);
    expect_answer(r.port, "GET /nope HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found\r\n", NULL,
                  "{\"error\":\"not_found\"}");
    expect_answer(r.port, "POST /api/events/stream HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
                  "HTTP/1.1 405 Method Not Allowed\r\n", "\r\nAllow: GET\r\n", NULL);
    expect_answer(r.port, "HEAD /healthz HTTP/1.1\r\n\r\n", "HTTP/1.1 405", "Allow: GET", NULL);
    expect_answer(r.port, "GET /healthz HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK\r\n",
                  "Content-Type: application/json", "{\"status\":\"ok\",\"redis\":true,\"clients\":0,\"source\":\"pubsub\",\"mode\":\"pubsub\",\"ok\":true}");
    expect_answer(r.port, "GET /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK\r\n",
                  "text/plain; version=0.0.4", "\nmailagent_relay_events_total ");
    expect_answer(r.port, "GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK\r\n",
                  "Content-Type: text/html; charset=utf-8", "</html>");
    expect_answer(r.port, "GET / HTTP/1.1\r\nA: \x01\r\n\r\n", "HTTP/1.1 400 Bad Request", NULL,
                  NULL);

    /* Over 8 KiB of headers: 431, and the connection is closed. */
    rh_conn *c = rh_connect(r.port, 0);
    assert_non_null(c);
    char big[10000];
    int n = snprintf(big, sizeof big, "GET / HTTP/1.1\r\nX-Big: ");
    memset(big + n, 'x', sizeof big - (size_t)n);
    rh_send(c, big, sizeof big);
    assert_true(rh_wait_for(c, 0, "\r\n\r\n", 5000) >= 0);
    assert_memory_equal(c->buf, "HTTP/1.1 431 ", 13);
    assert_true(rh_wait_eof(c, 5000));
    rh_close(c);

    /* Keep-alive: two requests in one packet, two answers, then the stream
     * on the same connection. */
    c = rh_connect(r.port, 0);
    const char *two = "GET /healthz HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\n"
                      "GET /api/events/stream HTTP/1.1\r\n\r\n";
    rh_send(c, two, strlen(two));
    long at = rh_wait_for(c, 0, "HTTP/1.1 404", 5000);
    assert_true(at > 0);
    assert_memory_equal(c->buf, "HTTP/1.1 200 OK", 15);
    long s = rh_wait_for(c, (size_t)at, "HTTP/1.1 200 OK\r\n", 5000);
    assert_true(s > at);
    /* The stream's head: exact headers, then the retry line at once. */
    assert_true(rh_wait_for(c, (size_t)s, "\r\n\r\nd\r\nretry: 3000\n\n\r\n", 5000) > s);
    const char *head = c->buf + s;
    assert_non_null(strstr(head, "\r\nContent-Type: text/event-stream; charset=utf-8\r\n"));
    assert_non_null(strstr(head, "\r\nCache-Control: no-cache, no-transform\r\n"));
    assert_non_null(strstr(head, "\r\nX-Accel-Buffering: no\r\n"));
    assert_non_null(strstr(head, "\r\nConnection: keep-alive\r\n"));
    assert_non_null(strstr(head, "\r\nTransfer-Encoding: chunked\r\n"));

    /* Max clients (2): the third gets 200, a retry and a comment, then EOF. */
    rh_conn *c2 = rh_get(r.port, "/api/events/stream", NULL);
    rh_wait_clients(r.port, NULL, 2, 10000);
    rh_conn *c3 = rh_get(r.port, "/api/events/stream", NULL);
    assert_true(rh_wait_eof(c3, 5000));
    assert_memory_equal(c3->buf, "HTTP/1.1 200 OK\r\n", 17);
    assert_non_null(strstr(c3->buf, "\nretry: "));
    assert_non_null(strstr(c3->buf, "\n: too many clients"));
    assert_non_null(strstr(c3->buf, "\r\n0\r\n\r\n"));
    int retry = atoi(strstr(c3->buf, "\nretry: ") + 8);
    assert_true(retry >= 5000 && retry <= 10000);
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_clients_refused_total"), 1);
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_clients"), 2);

    /* A client that goes away is noticed without any write to it. */
    rh_close(c2);
    rh_wait_clients(r.port, NULL, 1, 10000);
    rh_close(c3);
    rh_close(c);
    rh_wait_clients(r.port, NULL, 0, 10000);
    stop_relay(&r);
}

/* ---- a client that stops reading ----------------------------------------------------- */

static void test_slow_client_cut(void **state)
{
    (void)state;
    static const char *const args[] = {"--client-buffer", "65536", "--ping-interval", "60",
                                       NULL};
    rh_relay r;
    start_relay(&r, "slow", args, NULL);
    rh_conn *slow = rh_connect(r.port, 4096);
    const char *req = "GET /api/events/stream HTTP/1.1\r\n\r\n";
    rh_send(slow, req, strlen(req));
    rh_conn *good[3];
    for (int i = 0; i < 3; i++)
        good[i] = rh_get(r.port, "/api/events/stream", NULL);
    rh_wait_clients(r.port, NULL, 4, 10000);

    char msg[1100];
    memset(msg, 'p', sizeof msg);
    int sent = 0;
    /* Publish until the slow one is cut (its socket buffers fill first),
     * the good ones reading all along. */
    while (rh_metric(r.port, NULL, "mailagent_relay_clients_cut_slow_total") == 0 &&
           sent < 20000) {
        for (int k = 0; k < 50; k++) {
            snprintf(msg, sizeof msg, "{\"event_type\":\"x\",\"n\":%d,\"pad\":\"%0900d\"}", sent,
                     0);
            publish(msg);
            sent++;
        }
        for (int i = 0; i < 3; i++)
            rh_pump(good[i]);
    }
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_clients_cut_slow_total"), 1);
    for (int k = 0; k < 10; k++, sent++) {
        snprintf(msg, sizeof msg, "{\"event_type\":\"x\",\"n\":%d,\"pad\":\"%0900d\"}", sent, 0);
        publish(msg);
    }
    char last[64];
    snprintf(last, sizeof last, "\"n\":%d,", sent - 1);
    for (int i = 0; i < 3; i++) {
        assert_true(rh_wait_for(good[i], 0, last, 10000) >= 0);
        /* Every event, each once. */
        assert_int_equal(rh_count(good[i], "event: mailagent\n"), (size_t)sent);
    }
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_clients"), 3);
    /* The slow client's connection was closed: reading it ends. */
    assert_true(rh_wait_eof(slow, 10000));
    assert_true(rh_count(slow, "event: mailagent\n") < (size_t)sent);
    assert_true(rh_log_has(&r, "over --client-buffer"));
    rh_close(slow);
    for (int i = 0; i < 3; i++)
        rh_close(good[i]);
    stop_relay(&r);
}

/* ---- 1 000 clients ------------------------------------------------------------------ */

static void test_thousand_clients(void **state)
{
    (void)state;
    enum { N = 1000 };
    static const char *const args[] = {"--quiet", NULL};
    rh_relay r;
    start_relay(&r, "thousand", args, NULL);
    rh_conn **cs = calloc(N, sizeof *cs);
    assert_non_null(cs);
    for (int i = 0; i < N; i++) {
        cs[i] = rh_get(r.port, "/api/events/stream", NULL);
        assert_non_null(cs[i]);
    }
    rh_wait_clients(r.port, NULL, N, 10000);
    for (int k = 0; k < 3; k++) {
        char msg[64];
        snprintf(msg, sizeof msg, "{\"event_type\":\"t\",\"k\":%d}", k);
        publish(msg);
    }
    for (int i = 0; i < N; i++) {
        if (rh_wait_for(cs[i], 0, "{\"event_type\":\"t\",\"k\":2}", 10000) < 0)
            fail_msg("client %d got: %s", i, cs[i]->buf);
        assert_int_equal(rh_count(cs[i], "event: mailagent\n"), 3);
    }
    for (int i = 0; i < N; i++)
        rh_close(cs[i]);
    free(cs);
    rh_wait_clients(r.port, NULL, 0, 10000);
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_clients_total"), N);
    stop_relay(&r);
}

/* ---- Redis killed, hung, restarted --------------------------------------------------------- */

static void wait_redis(int port, bool up)
{
    const char *want = up ? "\"redis\":true" : "\"redis\":false";
    double until = rh_now() + 20;
    char *a = NULL;
    while (rh_now() < until) {
        free(a);
        a = rh_request(port, "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");
        if (a && strstr(a, want))
            break;
        rh_sleep_ms(50);
    }
    if (!a || !strstr(a, want))
        fail_msg("healthz never said %s: %s", want, a ? a : "(none)");
    free(a);
}

static void test_redis_lost_and_back(void **state)
{
    (void)state;
    static const char *const args[] = {"--ping-interval", "0.2", NULL};
    rh_relay r;
    start_relay(&r, "redis", args, NULL);
    rh_conn *c = rh_get(r.port, "/api/events/stream", NULL);
    rh_wait_clients(r.port, NULL, 1, 10000);
    publish("{\"event_type\":\"before\"}");
    assert_true(rh_wait_for(c, 0, "data: {\"event_type\":\"before\"}\n\n", 5000) > 0);

    /* Killed: the client keeps its stream and its heartbeats. */
    mtr_kill(&g_redis);
    wait_redis(r.port, false);
    size_t mark = c->len;
    assert_true(rh_wait_for(c, mark, "event: ping\ndata: \n\n", 5000) > 0);
    rh_conn *late = rh_get(r.port, "/api/events/stream", NULL);
    assert_true(rh_wait_for(late, 0, "HTTP/1.1 200 OK", 5000) == 0);
    assert_true(rh_wait_for(late, 0, "event: ping\n", 5000) > 0);
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_redis_connected"), 0);

    /* Restarted: a reset frame, then events flow again. */
    assert_int_equal(mtr_restart(&g_redis), 0);
    wait_redis(r.port, true);
    long at = rh_wait_for(c, mark, "event: reset\ndata: {\"reason\":\"redis_reconnected\"}\n\n",
                          10000);
    assert_true(at > 0);
    assert_true(rh_wait_for(late, 0, "event: reset\n", 5000) > 0);
    publish("{\"event_type\":\"after\"}");
    assert_true(rh_wait_for(c, (size_t)at, "data: {\"event_type\":\"after\"}\n\n", 5000) > at);
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_redis_reconnects_total"), 1);
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_resets_total"), 2);

    /* Hung (SIGSTOP): the watchdog gives the connection up, the clients
     * keep their heartbeats, and after SIGCONT the relay comes back. */
    mtr_pause(&g_redis);
    wait_redis(r.port, false);
    mark = c->len;
    assert_true(rh_wait_for(c, mark, "event: ping\n", 5000) > 0);
    mtr_resume(&g_redis);
    wait_redis(r.port, true);
    at = rh_wait_for(c, mark, "event: reset\n", 10000);
    assert_true(at > 0);
    publish("{\"event_type\":\"after-hang\"}");
    assert_true(rh_wait_for(c, (size_t)at, "data: {\"event_type\":\"after-hang\"}\n\n", 5000) > 0);
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_redis_reconnects_total"), 2);
    assert_true(rh_log_has(&r, "stopped answering"));
    rh_close(late);
    rh_close(c);
    stop_relay(&r);
}

/* ---- slow-loris and SIGTERM -------------------------------------------------------------- */

static void test_slowloris_and_sigterm(void **state)
{
    (void)state;
    rh_relay r;
    start_relay(&r, "sigterm", NULL, NULL);
    /* A request whose headers trickle in forever is closed at the
     * deadline (10 s), though it never stops sending. */
    rh_conn *loris = rh_connect(r.port, 0);
    double t0 = rh_now();
    rh_send(loris, "GET / HTTP/1.1\r\n", 16);
    rh_conn *streams[2];
    for (int i = 0; i < 2; i++)
        streams[i] = rh_get(r.port, "/api/events/stream", NULL);
    rh_wait_clients(r.port, NULL, 2, 10000);
    while (!loris->eof && rh_now() - t0 < 20) {
        rh_send(loris, "X-A: b\r\n", 8);
        rh_wait_eof(loris, 500);
    }
    double closed_after = rh_now() - t0;
    assert_true(loris->eof);
    assert_true(closed_after > 9.0);
    assert_true(closed_after < 15.0);
    assert_int_equal(loris->len, 0);   /* closed without an answer */
    rh_close(loris);

    /* SIGTERM: every stream ends cleanly (the last chunk) and the relay
     * exits 0, promptly (relay.md: within 1 s; the bound here leaves room
     * for a loaded machine). */
    double took = 0;
    assert_int_equal(rh_relay_stop(&r, SIGTERM, 5000, &took), 0);
    assert_true(took < 3.0);
    for (int i = 0; i < 2; i++) {
        assert_true(rh_wait_eof(streams[i], 2000));
        assert_true(streams[i]->len >= 5);
        assert_memory_equal(streams[i]->buf + streams[i]->len - 5, "0\r\n\r\n", 5);
        rh_close(streams[i]);
    }
    print_message("SIGTERM to exit: %.3f s\n", took);
}

/* ---- file descriptors ---------------------------------------------------------------------- */

static long long proc_limit(pid_t pid, bool soft)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/limits", (int)pid);
    char *t = rh_slurp(path);
    const char *p = t ? strstr(t, "Max open files") : NULL;
    long long s = -1, h = -1;
    if (p)
        sscanf(p + strlen("Max open files"), "%lld %lld", &s, &h);
    free(t);
    return soft ? s : h;
}

static void test_descriptors(void **state)
{
    (void)state;
    /* Started with a low soft limit, the relay raises it to the hard one. */
    struct rlimit mine, low;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &mine), 0);
    low = mine;
    low.rlim_cur = 256;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    rh_relay r;
    start_relay(&r, "fds", NULL, NULL);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &mine), 0);
    assert_int_equal(proc_limit(r.pid, true), (long long)mine.rlim_max);

    /* Out of descriptors: the relay pauses accepting instead of spinning,
     * serves what it holds, and takes the waiting clients once some leave. */
    struct rlimit tiny = {40, 40};
    assert_int_equal(prlimit(r.pid, RLIMIT_NOFILE, &tiny, NULL), 0);
    enum { N = 60 };
    rh_conn *cs[N];
    for (int i = 0; i < N; i++)
        cs[i] = rh_get(r.port, "/api/events/stream", NULL);
    double until = rh_now() + 10;
    while (!rh_log_has(&r, "accept failed") && rh_now() < until)
        rh_sleep_ms(20);
    assert_true(rh_log_has(&r, "accept failed"));
    int served = 0;
    for (int i = 0; i < N; i++)
        served += rh_wait_for(cs[i], 0, "retry: 3000", 100) > 0;
    assert_true(served > 10 && served < N);
    for (int i = 0; i < N; i++)
        rh_close(cs[i]);
    rh_wait_clients(r.port, NULL, 0, 10000);
    rh_conn *again[5];
    for (int i = 0; i < 5; i++)
        again[i] = rh_get(r.port, "/api/events/stream", NULL);
    rh_wait_clients(r.port, NULL, 5, 10000);
    publish("{\"event_type\":\"after-emfile\"}");
    for (int i = 0; i < 5; i++) {
        assert_true(rh_wait_for(again[i], 0, "after-emfile", 5000) > 0);
        rh_close(again[i]);
    }
    print_message("served %d of %d streams with 40 descriptors\n", served, N);
    stop_relay(&r);
}

/* ---- IPv6 ------------------------------------------------------------------------------------ */

static void test_ipv6_loopback(void **state)
{
    (void)state;
    char *lo = rh_slurp("/proc/net/if_inet6");
    bool have = lo && strstr(lo, "00000000000000000000000000000001");
    free(lo);
    if (!have) {
        print_message("skipped: this kernel has no ::1\n");
        skip();
    }
    RH_REQUIRE(CURL);
    char log[600];
    snprintf(log, sizeof log, "%s/ipv6.log", g_out);
    unlink(log);
    const char *argv[] = {MAE_CLI_PATH, "--redis", g_redis.url, "events", "serve", "--listen",
                          "[::1]:0", NULL};
    pid_t pid = rh_spawn(argv, NULL, NULL, log);
    int port = 0;
    double until = rh_now() + 10;
    while (!port && rh_now() < until) {
        char *t = rh_slurp(log);
        const char *p = t ? strstr(t, "listening on http://[::1]:") : NULL;
        if (p)
            port = atoi(p + strlen("listening on http://[::1]:"));
        free(t);
        rh_sleep_ms(10);
    }
    assert_true(port > 0);
    char url[64], out[600];
    snprintf(url, sizeof url, "http://[::1]:%d/healthz", port);
    snprintf(out, sizeof out, "%s/ipv6.out", g_out);
    const char *cargv[] = {CURL, "-sg", url, NULL};
    assert_int_equal(rh_wait(rh_spawn(cargv, NULL, out, NULL), 10000), 0);
    char *body = rh_slurp(out);
    assert_non_null(body);
    assert_non_null(strstr(body, "{\"status\":\"ok\""));
    free(body);
    kill(pid, SIGTERM);
    assert_int_equal(rh_wait(pid, 5000), 0);
}

/* ---- the command's exit codes -------------------------------------------------------------- */

static int run_cmd(const char *const *argv, const char *const *env, const char *tag, char **err)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s.err", g_out, tag);
    int rc = rh_wait(rh_spawn(argv, env, NULL, path), 10000);
    *err = rh_slurp(path);
    return rc;
}

static void test_exit_codes(void **state)
{
    (void)state;
    const char *url = g_redis.url;
    char *err;
    static const char *const bad[][4] = {
        {"--ping-interval", "0.01", NULL},
        {"--ping-interval", "abc", NULL},
        {"--listen", "127.0.0.1", NULL},
        {"--listen", "::1:9200", NULL},
        {"--listen", "127.0.0.1:70000", NULL},
        {"--max-clients", "0", NULL},
        {"--client-buffer", "10", NULL},
        {"--path", "nope", NULL},
        {"--path", "/healthz", NULL},
        {"--bogus", NULL},
        {"extra-argument", NULL},
        {"--stream", "", NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *argv[10] = {MAE_CLI_PATH, "--redis", url, "events", "serve"};
        int n = 5;
        for (int k = 0; bad[i][k]; k++)
            argv[n++] = bad[i][k];
        argv[n] = NULL;
        int rc = run_cmd(argv, NULL, "bad", &err);
        if (rc != 2 || !err || !strstr(err, "usage: mailagent"))
            fail_msg("case %zu (%s): exit %d, stderr %s", i, bad[i][0], rc, err ? err : "");
        free(err);
    }

    /* Port in use: exit 1 and a clear message. */
    rh_relay r;
    start_relay(&r, "inuse", NULL, NULL);
    char listen[32];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", r.port);
    const char *argv[] = {MAE_CLI_PATH, "--redis", url, "events", "serve", "--listen", listen,
                          NULL};
    assert_int_equal(run_cmd(argv, NULL, "inuse", &err), 1);
    assert_non_null(err);
    assert_non_null(strstr(err, "Address already in use"));
    free(err);
    /* SIGINT (Ctrl-C) ends it like SIGTERM: exit 0. */
    assert_int_equal(rh_relay_stop(&r, SIGINT, 5000, NULL), 0);
    assert_true(rh_log_has(&r, "SIGINT: closing"));

    /* No credential on a non-loopback address: refused, naming --allow-open
     * (it never gets to listen). */
    const char *open_argv[] = {MAE_CLI_PATH, "--redis", url, "events", "serve", "--listen",
                               "0.0.0.0:0", NULL};
    static const char *const empty_env[] = {"WEBHOOK_SECRET=", "MAILAGENT_LOCAL_TOKEN=", NULL};
    assert_int_equal(run_cmd(open_argv, empty_env, "open", &err), 2);
    assert_non_null(err);
    assert_non_null(strstr(err, "--allow-open"));
    assert_null(strstr(err, "listening on"));
    free(err);

    /* No Redis URL at all is hub mode (issue 20, tests/test_it_hub.c);
     * --stream without one is refused. */
    const char *no_redis[] = {MAE_CLI_PATH, "events", "serve", "--stream", "k", NULL};
    static const char *const no_url_env[] = {"MAILAGENT_REDIS_URL=", "REDIS_URL=", NULL};
    assert_int_equal(run_cmd(no_redis, no_url_env, "noredis", &err), 2);
    assert_non_null(strstr(err, "--stream needs a Redis URL"));
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_curl_credentials),
        cmocka_unit_test(test_http_table),
        cmocka_unit_test(test_slow_client_cut),
        cmocka_unit_test(test_thousand_clients),
        cmocka_unit_test(test_redis_lost_and_back),
        cmocka_unit_test(test_slowloris_and_sigterm),
        cmocka_unit_test(test_descriptors),
        cmocka_unit_test(test_ipv6_loopback),
        cmocka_unit_test(test_exit_codes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
