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
#include <hiredis/hiredis.h>

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
    rh_wait_clients(r.port, NULL, 1, 10000);
    for (int i = 1; i <= 3; i++)
        xadd("ev:resume", i);
    char last[64];
    expect_ids(a, (int[]){1, 2, 3}, 3, last, sizeof last);
    rh_close(a);
    rh_wait_clients(r.port, NULL, 0, 10000);

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
    rh_wait_clients(r.port, NULL, N, 10000);
    /* Each decision first, so every client's frames come in one order:
     * reset, then the entry (test_no_gap_while_deciding covers entries that
     * come while a decision is out). */
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

/* Kills the relay's history connection (the stream source's second link,
 * the one that is not blocked in XREAD): its requests wait for the
 * reconnect, at least the first backoff step (75 ms or more). */
static void kill_history_link(void)
{
    redisContext *rc = redisConnect("127.0.0.1", g_redis.port);
    assert_non_null(rc);
    assert_int_equal(rc->err, 0);
    redisReply *list = redisCommand(rc, "CLIENT LIST");
    assert_non_null(list);
    assert_int_equal(list->type, REDIS_REPLY_STRING);
    int killed = 0;
    for (char *line = strtok(list->str, "\n"); line; line = strtok(NULL, "\n")) {
        if (strstr(line, "cmd=xread") || strstr(line, "cmd=client"))
            continue;
        long long id = strtoll(strstr(line, "id=") + 3, NULL, 10);
        redisReply *k = redisCommand(rc, "CLIENT KILL ID %lld", id);
        killed += k && k->type == REDIS_REPLY_INTEGER && k->integer == 1;
        if (k)
            freeReplyObject(k);
    }
    freeReplyObject(list);
    redisFree(rc);
    assert_int_equal(killed, 1);
}

/* Entries added while the relay decides about a client's id (unknown_id
 * waits for the stream's bounds, read on the history connection) still
 * reach it: it catches up from where the reader stood when it came. The
 * history connection is killed first, so the decisions are still out when
 * the entries come. */
static void test_no_gap_while_deciding(void **state)
{
    (void)state;
    xadd("ev:gap", 1);
    rh_relay r;
    start(&r, "gap", "ev:gap", NULL);
    /* Both links up: a first client's decision came back. */
    rh_conn *first = rh_get(r.port, "/api/events/stream", "Last-Event-ID: 99999999999999-0\r\n");
    assert_true(rh_wait_for(first, 0, "unknown_id", 5000) > 0);
    rh_close(first);
    kill_history_link();
    enum { N = 6 };
    rh_conn *cs[N];
    for (int i = 0; i < N; i++)
        cs[i] = rh_get(r.port, "/api/events/stream",
                       i % 2 ? "Last-Event-ID: 99999999999999-0\r\n" : "Last-Event-ID: x\r\n");
    rh_wait_clients(r.port, NULL, N, 10000);
    xadd("ev:gap", 2);
    xadd("ev:gap", 3);
    for (int i = 0; i < N; i++) {
        if (rh_wait_for(cs[i], 0, "\"internal_id\":3}", 5000) < 0)
            fail_msg("client %d: %s", i, cs[i]->buf);
        assert_non_null(strstr(cs[i]->buf, i % 2 ? "unknown_id" : "bad_last_event_id"));
        /* 2 and 3 once each, in order; 1 (before it came) not at all. */
        int ids[8];
        size_t n = received(cs[i], ids, 8, NULL, 0);
        if (n != 2 || ids[0] != 2 || ids[1] != 3)
            fail_msg("client %d got %zu events: %s", i, n, cs[i]->buf);
        rh_close(cs[i]);
    }
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
    char *o = rh_wait_text(out, "\n", 30000, 50);
    assert_non_null(o);
    assert_memory_equal(o, "ready\n", 6);
    free(o);
    rh_wait_clients(port, NULL, 1, 10000);
    xadd("ev:page", 1);
    xadd("ev:page", 2);
    double until = rh_now() + 5;
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
        cmocka_unit_test(test_no_gap_while_deciding),
        cmocka_unit_test(test_chromium_resumes_after_restart),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
