/* Integration tests of the relay in stream mode at the stream's edges, with
 * a real redis-server (issue 18, "Also document (or fix)"): a stream
 * trimmed to nothing gives a resuming client history_trimmed with
 * "oldest_id":null, and a stream deleted and rewritten with lower ids while
 * the relay is connected gives live clients a reset and then the new
 * stream's events, never a silent stall. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "harness.h"
#include "redis_harness.h"

static mtr_redis g_redis;
static char g_out[512];

static int setup(void **state)
{
    (void)state;
    if (!rh_have(MAE_REDIS_SERVER))
        return -1;
    rh_out_dir("test_it_relay_stream_edges", g_out, sizeof g_out);
    return mtr_start(&g_redis, NULL);
}

static int teardown(void **state)
{
    (void)state;
    mtr_cleanup(&g_redis);
    return 0;
}

static void start(rh_relay *r, const char *tag, const char *const *args)
{
    char log[600];
    snprintf(log, sizeof log, "%s/%s.log", g_out, tag);
    assert_int_equal(rh_relay_start(r, g_redis.url, args, NULL, log), 0);
}

/* relay.md: history_trimmed's oldest_id is null when nothing is kept. */
static void test_trimmed_to_nothing(void **state)
{
    (void)state;
    for (int i = 1; i <= 5; i++)
        assert_int_equal(mtr_command(&g_redis, "XADD ev:empty %d-0 event {\"n\":%d}", i, i), 0);
    assert_int_equal(mtr_command(&g_redis, "XTRIM ev:empty MAXLEN 0"), 0);
    rh_relay r;
    const char *args[] = {"--stream", "ev:empty", NULL};
    start(&r, "trimmed", args);
    rh_conn *c = rh_get(r.port, "/api/events/stream", "Last-Event-ID: 2-0\r\n");
    long at = rh_wait_for(c, 0,
                          "event: reset\ndata: {\"reason\":\"history_trimmed\",\"oldest_id\":null}"
                          "\n\n",
                          5000);
    if (at < 0)
        fail_msg("no history_trimmed with oldest_id null: %.400s", c->buf);
    assert_int_equal(mtr_command(&g_redis, "XADD ev:empty 6-0 event {\"n\":6}"), 0);
    assert_true(rh_wait_for(c, (size_t)at, "id: 6-0\nevent: mailagent\ndata: {\"n\":6}\n\n",
                            5000) > at);
    assert_int_equal(rh_count(c, "event: mailagent\n"), 1);
    rh_close(c);
    assert_int_equal(rh_relay_stop(&r, SIGTERM, 10000, NULL), 0);
}

/* The stream deleted and written again with lower ids (a restore from an
 * older backup, a script that writes its own ids) while the relay stays
 * connected to Redis: XREAD from the old position would block forever.
 * Live clients get a reset (unknown_id) and then the new stream's events.
 * Failed before: nothing at all, the clients' streams silent but for
 * heartbeats. */
static void test_rewritten_lower_while_connected(void **state)
{
    (void)state;
    assert_int_equal(mtr_command(&g_redis, "XADD ev:rw 100-0 event {\"n\":100}"), 0);
    rh_relay r;
    const char *args[] = {"--stream", "ev:rw", NULL};
    start(&r, "rewritten", args);
    rh_conn *a = rh_get(r.port, "/api/events/stream", NULL);
    rh_conn *b = rh_get(r.port, "/api/events/stream", "Last-Event-ID: 100-0\r\n");
    assert_true(rh_wait_for(a, 0, "id: 100-0\n\n", 5000) > 0);
    rh_wait_clients(r.port, NULL, 2, 10000);
    rh_sleep_ms(200);
    assert_int_equal(mtr_command(&g_redis, "XADD ev:rw 101-0 event {\"n\":101}"), 0);
    assert_true(rh_wait_for(a, 0, "data: {\"n\":101}\n\n", 5000) > 0);
    assert_true(rh_wait_for(b, 0, "data: {\"n\":101}\n\n", 5000) > 0);
    size_t a0 = a->len, b0 = b->len;

    assert_int_equal(mtr_command(&g_redis, "DEL ev:rw"), 0);
    assert_int_equal(mtr_command(&g_redis, "XADD ev:rw 1-0 event {\"n\":1}"), 0);
    assert_int_equal(mtr_command(&g_redis, "XADD ev:rw 2-0 event {\"n\":2}"), 0);
    for (rh_conn *c = a; c; c = c == a ? b : NULL) {
        size_t from = c == a ? a0 : b0;
        long at = rh_wait_for(c, from, "event: reset\ndata: {\"reason\":\"unknown_id\"}\n\n",
                              10000);
        if (at < 0)
            fail_msg("no reset after the stream went back (eof %d): %.400s", c->eof,
                     c->buf + from);
    }
    /* Then what is written after comes through. */
    assert_int_equal(mtr_command(&g_redis, "XADD ev:rw 3-0 event {\"n\":3}"), 0);
    for (rh_conn *c = a; c; c = c == a ? b : NULL) {
        size_t from = c == a ? a0 : b0;
        if (rh_wait_for(c, from, "id: 3-0\nevent: mailagent\ndata: {\"n\":3}\n\n", 10000) < 0)
            fail_msg("the new stream's event did not come (eof %d): %.400s", c->eof,
                     c->buf + from);
        assert_false(c->eof);
    }
    assert_true(rh_log_has(&r, "went back"));
    rh_close(a);
    rh_close(b);
    assert_int_equal(rh_relay_stop(&r, SIGTERM, 10000, NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_trimmed_to_nothing),
        cmocka_unit_test(test_rewritten_lower_while_connected),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
