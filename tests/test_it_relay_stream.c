/* Integration tests of the relay's stream mode (`events serve --stream
 * KEY`) with a real redis-server: ids on every frame, a client that comes
 * back with Last-Event-ID or ?last_event_id= gets exactly what it missed
 * and then the live stream, trimmed history and hostile ids give their
 * reset frames, and headless Chromium's EventSource resumes by itself after
 * the relay is restarted. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>

#include <cmocka.h>

#include "harness.h"
#include "redis_harness.h"

#define PYTHON "/usr/bin/python3"
#define CHROMIUM "/usr/bin/chromium"

static mtr_redis g_redis;
static char g_out[512];

static int setup(void **state)
{
    (void)state;
    if (!rh_have(MAE_REDIS_SERVER))
        return -1;
    rh_out_dir("test_it_relay_stream", g_out, sizeof g_out);
    return mtr_start(&g_redis, NULL);
}

static int teardown(void **state)
{
    (void)state;
    mtr_cleanup(&g_redis);
    return 0;
}

static void xadd(const char *key, int n)
{
    char line[96];
    snprintf(line, sizeof line, "{\"event_type\":\"email.synced\",\"internal_id\":%d}", n);
    assert_int_equal(mtr_command(&g_redis, "XADD %s * event %s", key, line), 0);
}

static void start(rh_relay *r, const char *tag, const char *key, const char *const *more)
{
    char log[600];
    const char *args[12] = {"--stream", key, "--ping-interval", "0.5"};
    int n = 4;
    for (const char *const *m = more; m && *m && n < 11; m++)
        args[n++] = *m;
    args[n] = NULL;
    snprintf(log, sizeof log, "%s/%s.log", g_out, tag);
    assert_int_equal(rh_relay_start(r, g_redis.url, args, NULL, log), 0);
}

static void wait_clients(int port, long long n)
{
    long long got = -1;
    double until = rh_now() + 10;
    while ((got = rh_metric(port, NULL, "mailagent_relay_clients")) != n && rh_now() < until)
        rh_sleep_ms(20);
    assert_int_equal(got, n);
}

/* The internal_ids of the events a connection received, in order, and
 * checks that each frame carried an id line just before its event line. */
static size_t received(const rh_conn *c, int *ids, size_t max, char *last_id, size_t idsize)
{
    size_t n = 0;
    for (const char *p = c->buf; (p = strstr(p, "event: mailagent\ndata: ")) != NULL; p++) {
        const char *line = p;
        /* "id: <id>\n" right before. */
        const char *q = line - 1;
        assert_true(q > c->buf && *q == '\n');
        const char *start = q - 1;
        while (start > c->buf && start[-1] != '\n')
            start--;
        assert_memory_equal(start, "id: ", 4);
        if (last_id)
            snprintf(last_id, idsize, "%.*s", (int)(q - start - 4), start + 4);
        const char *iid = strstr(line, "\"internal_id\":");
        assert_non_null(iid);
        if (n < max)
            ids[n] = atoi(iid + 14);
        n++;
    }
    return n;
}

static void expect_ids(rh_conn *c, const int *want, size_t nwant, char *last_id, size_t idsize)
{
    int got[64];
    char want_tail[64];
    snprintf(want_tail, sizeof want_tail, "\"internal_id\":%d}", want[nwant - 1]);
    assert_true(rh_wait_for(c, 0, want_tail, 5000) > 0);
    rh_sleep_ms(100);   /* anything doubled would have come by now */
    rh_pump(c);
    size_t n = received(c, got, 64, last_id, idsize);
    if (n != nwant)
        fail_msg("got %zu events, want %zu: %s", n, nwant, c->buf);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(got[i], want[i]);
}

static void test_resume_gets_exactly_the_missed(void **state)
{
    (void)state;
    rh_relay r;
    start(&r, "resume", "ev:resume", NULL);
    rh_conn *a = rh_get(r.port, "/api/events/stream", NULL);
    wait_clients(r.port, 1);
    for (int i = 1; i <= 3; i++)
        xadd("ev:resume", i);
    char last[64];
    expect_ids(a, (int[]){1, 2, 3}, 3, last, sizeof last);
    rh_close(a);
    wait_clients(r.port, 0);

    /* Missed while away: 4, 5, 6. */
    for (int i = 4; i <= 6; i++)
        xadd("ev:resume", i);
    char hdr[128], path[160];
    snprintf(hdr, sizeof hdr, "Last-Event-ID: %s\r\n", last);
    rh_conn *b = rh_get(r.port, "/api/events/stream", hdr);
    snprintf(path, sizeof path, "/api/events/stream?x=1&last_event_id=%s", last);
    rh_conn *q = rh_get(r.port, path, NULL);
    expect_ids(b, (int[]){4, 5, 6}, 3, NULL, 0);
    expect_ids(q, (int[]){4, 5, 6}, 3, NULL, 0);
    /* Then live, without a gap or a double. */
    xadd("ev:resume", 7);
    expect_ids(b, (int[]){4, 5, 6, 7}, 4, NULL, 0);
    expect_ids(q, (int[]){4, 5, 6, 7}, 4, NULL, 0);
    assert_null(strstr(b->buf, "event: reset"));
    /* 0-0 on a stream that never lost an entry: all of it, no reset. */
    rh_conn *all = rh_get(r.port, "/api/events/stream", "Last-Event-ID: 0-0\r\n");
    expect_ids(all, (int[]){1, 2, 3, 4, 5, 6, 7}, 7, NULL, 0);
    assert_null(strstr(all->buf, "event: reset"));
    rh_close(all);
    rh_close(b);
    rh_close(q);
    assert_int_equal(rh_relay_stop(&r, SIGTERM, 5000, NULL), 0);
}

static void test_history_trimmed(void **state)
{
    (void)state;
    /* The first entry's id, then trimmed away by later ones. */
    for (int i = 1; i <= 6; i++) {
        char line[96];
        snprintf(line, sizeof line, "{\"event_type\":\"x\",\"internal_id\":%d}", i);
        assert_int_equal(mtr_command(&g_redis, "XADD ev:trim MAXLEN 3 %d-0 event %s", i, line), 0);
    }
    rh_relay r;
    start(&r, "trim", "ev:trim", NULL);
    rh_conn *c = rh_get(r.port, "/api/events/stream", "Last-Event-ID: 1-0\r\n");
    assert_true(rh_wait_for(c, 0,
                            "event: reset\ndata: {\"reason\":\"history_trimmed\","
                            "\"oldest_id\":\"4-0\"}\n\n", 5000) > 0);
    expect_ids(c, (int[]){4, 5, 6}, 3, NULL, 0);
    /* The reset comes first. */
    assert_true(strstr(c->buf, "event: reset") < strstr(c->buf, "event: mailagent"));
    rh_close(c);
    /* 0-0, "from the beginning", on a stream that lost entries: the same. */
    c = rh_get(r.port, "/api/events/stream", "Last-Event-ID: 0-0\r\n");
    assert_true(rh_wait_for(c, 0, "\"reason\":\"history_trimmed\",\"oldest_id\":\"4-0\"", 5000) > 0);
    expect_ids(c, (int[]){4, 5, 6}, 3, NULL, 0);
    rh_close(c);
    assert_int_equal(rh_relay_stop(&r, SIGTERM, 5000, NULL), 0);
}

static void test_hostile_ids(void **state)
{
    (void)state;
    xadd("ev:hostile", 1);
    rh_relay r;
    start(&r, "hostile", "ev:hostile", NULL);
    static const struct {
        const char *path, *header, *reason;
    } cases[] = {
        {"/api/events/stream", "Last-Event-ID: abc\r\n", "bad_last_event_id"},
        {"/api/events/stream", "Last-Event-ID:\r\n", "bad_last_event_id"},
        {"/api/events/stream", "Last-Event-ID: 1-2-3\r\n", "bad_last_event_id"},
        {"/api/events/stream", "Last-Event-ID: -1\r\n", "bad_last_event_id"},
        {"/api/events/stream",
         "Last-Event-ID: 00000000000000000000000000000000000000000000000000000000000000001-0\r\n",
         "bad_last_event_id"},
        {"/api/events/stream", "Last-Event-ID: 18446744073709551616-0\r\n", "bad_last_event_id"},
        {"/api/events/stream?last_event_id=1%00-0", NULL, "bad_last_event_id"},
        {"/api/events/stream?last_event_id=1-0%0D%0A", NULL, "bad_last_event_id"},
        {"/api/events/stream?last_event_id=%0A", NULL, "bad_last_event_id"},
        {"/api/events/stream?last_event_id=", NULL, "bad_last_event_id"},
        {"/api/events/stream", "Last-Event-ID: 99999999999999-0\r\n", "unknown_id"},
        {"/api/events/stream", "Last-Event-ID: 18446744073709551615-18446744073709551615\r\n",
         "unknown_id"},
    };
    enum { N = sizeof cases / sizeof cases[0] };
    rh_conn *cs[N];
    for (size_t i = 0; i < N; i++)
        cs[i] = rh_get(r.port, cases[i].path, cases[i].header);
    wait_clients(r.port, N);
    /* Each decision first (unknown_id needs the stream's bounds, read
     * asynchronously): an entry added before it would not reach that client
     * (live from the decision, see the report). */
    for (size_t i = 0; i < N; i++)
        if (rh_wait_for(cs[i], 0, "event: reset\n", 5000) < 0)
            fail_msg("case %zu: no reset: %s", i, cs[i]->buf);
    xadd("ev:hostile", 2);
    for (size_t i = 0; i < N; i++) {
        char want[96];
        snprintf(want, sizeof want, "event: reset\ndata: {\"reason\":\"%s\"}\n\n", cases[i].reason);
        if (rh_wait_for(cs[i], 0, "\"internal_id\":2}", 5000) < 0 || !strstr(cs[i]->buf, want))
            fail_msg("case %zu (%s %s): %s", i, cases[i].path,
                     cases[i].header ? cases[i].header : "", cs[i]->buf);
        /* Then live only: the kept entry 1 is not replayed. */
        assert_null(strstr(cs[i]->buf, "\"internal_id\":1}"));
        rh_close(cs[i]);
    }
    /* A NUL or CR in the header itself never reaches the stream: 400. */
    static const char nul[] = "GET /api/events/stream HTTP/1.1\r\nLast-Event-ID: 1\0-0\r\n\r\n";
    rh_conn *c = rh_connect(r.port, 0);
    rh_send(c, nul, sizeof nul - 1);
    assert_true(rh_wait_eof(c, 5000));
    assert_memory_equal(c->buf, "HTTP/1.1 400 ", 13);
    rh_close(c);
    assert_true(rh_metric(r.port, NULL, "mailagent_relay_resets_total") >= (long long)N);
    assert_int_equal(rh_relay_stop(&r, SIGTERM, 5000, NULL), 0);
}

/* EventSource resumes by itself: the relay is stopped and started again on
 * the same port while events are added, and the page ends with each event
 * exactly once. */
static void test_chromium_resumes_after_restart(void **state)
{
    (void)state;
    RH_REQUIRE(PYTHON);
    RH_REQUIRE(CHROMIUM);
    char dir[512], out[600], err[600], url[96], listen[48];
    rh_out_dir("chromium_resume", dir, sizeof dir);
    snprintf(out, sizeof out, "%s/driver.out", dir);
    snprintf(err, sizeof err, "%s/driver.err", dir);
    rh_relay r;
    start(&r, "chromium1", "ev:page", NULL);
    int port = r.port;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", port);
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    const char *argv[] = {PYTHON, MAE_RELAY_TEST_DIR "/chromium_driver.py", CHROMIUM, url, dir,
                          "email.synced\t4", "events: 4", NULL};
    pid_t drv = rh_spawn(argv, NULL, out, err);
    char *o = NULL;
    double until = rh_now() + 30;
    while (rh_now() < until) {
        free(o);
        o = rh_slurp(out);
        if (o && strchr(o, '\n'))
            break;
        rh_sleep_ms(50);
    }
    assert_non_null(o);
    assert_memory_equal(o, "ready\n", 6);
    free(o);
    wait_clients(port, 1);
    xadd("ev:page", 1);
    xadd("ev:page", 2);
    until = rh_now() + 5;
    while (rh_metric(port, NULL, "mailagent_relay_bytes_total") < 100 && rh_now() < until)
        rh_sleep_ms(20);
    rh_sleep_ms(300);
    assert_int_equal(rh_relay_stop(&r, SIGTERM, 5000, NULL), 0);
    /* Missed while the relay is down. */
    xadd("ev:page", 3);
    xadd("ev:page", 4);
    const char *more[] = {"--listen", listen, NULL};
    start(&r, "chromium2", "ev:page", more);
    assert_int_equal(r.port, port);
    int rc = rh_wait(drv, 40000);
    char path[600];
    snprintf(path, sizeof path, "%s/page.txt", dir);
    char *text = rh_slurp(path);
    o = rh_slurp(out);
    if (rc != 0)
        fail_msg("driver exit %d: %s\npage: %s", rc, o ? o : "", text ? text : "");
    assert_non_null(strstr(text, "events: 4"));
    assert_non_null(strstr(text, "email.synced\t4"));
    free(text);
    free(o);
    /* It came back with its last id: the second relay replayed 3 and 4. */
    assert_int_equal(rh_metric(port, NULL, "mailagent_relay_resets_total"), 0);
    assert_int_equal(rh_relay_stop(&r, SIGTERM, 5000, NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resume_gets_exactly_the_missed),
        cmocka_unit_test(test_history_trimmed),
        cmocka_unit_test(test_hostile_ids),
        cmocka_unit_test(test_chromium_resumes_after_restart),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
