/* Integration tests of the publisher's stream mode against a real
 * redis-server: every event lands in the stream and on the channel exactly
 * once while the publisher's connection is killed again and again, while
 * Redis is SIGKILLed and restarted from its append-only file, while it
 * hangs and resumes, and when its script cache is flushed; close stays
 * bounded while a batch waits for a hung Redis. Each event
 * carries a number; the tests read the stream back and check each number
 * appears once, in order, and that the counters add up. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include <mailagent/events.h>

#include "redis_harness.h"
#include "stream_check.h"
#include "testutil.h"

#define CHANNEL "mailagent:events:v1"
#define STREAM "test:events"

static mae_publisher *open_stream(const char *url)
{
    mae_publisher_config cfg;
    mae_publisher *p = NULL;
    mae_publisher_config_init(&cfg);
    cfg.redis_url = url;
    cfg.stream_key = STREAM;
    cfg.backoff_min_ms = 10;
    cfg.backoff_max_ms = 100;
    cfg.io_timeout_ms = 300;
    cfg.connect_timeout_ms = 300;
    cfg.batch_max_events = 32; /* many batches, so faults land inside some */
    assert_int_equal(mae_publisher_open(&cfg, &p), MAE_OK);
    return p;
}

static void assert_counters(mae_publisher *p, int n)
{
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.calls, n);
    assert_int_equal(st.enqueued, n);
    assert_int_equal(st.published, n);
    assert_int_equal(st.dropped_send_error, 0);
    assert_int_equal(st.dropped_queue_full, 0);
    assert_true(st.skipped <= st.resent);
    tu_assert_counters_add_up(p);
    print_message("  connects %llu, resent %llu, skipped %llu\n", (unsigned long long)st.connects,
                  (unsigned long long)st.resent, (unsigned long long)st.skipped);
}

static int setup(void **state)
{
    if (!mtr_available()) {
        print_message("redis-server not found: these tests cannot run, so they fail\n");
        return -1;
    }
    *state = NULL;
    return 0;
}

static void test_stream_and_channel_get_every_event(void **state)
{
    (void)state;
    mtr_redis r;
    assert_int_equal(mtr_start(&r, NULL), 0);
    mtr_sub *sub = mtr_subscribe(&r, CHANNEL);
    mae_publisher *p = open_stream(r.url);
    sc_feeder f;
    sc_feed_start(&f, p, 500, 0);
    sc_feed_join(&f);
    assert_int_equal(mae_publisher_flush(p, 10000), MAE_OK);
    assert_int_equal(mtr_sub_wait(sub, 500, 5000), 500);
    sc_assert_stream_exactly(&r, STREAM, 500);
    assert_int_equal(sc_assert_channel_no_doubles(&sub, 1, 500), 500);
    assert_counters(p, 500);
    /* The record of applied numbers expires on its own. */
    assert_int_equal(mtr_command(&r, "EVAL %s 0",
                                 "local k = redis.call('KEYS', 'test:events:publisher:*') "
                                 "if #k ~= 1 then return redis.error_reply('keys') end "
                                 "local t = redis.call('TTL', k[1]) "
                                 "if t <= 0 then return redis.error_reply('ttl') end "
                                 "if redis.call('GET', k[1]) ~= '500' then "
                                 "return redis.error_reply('last') end return 1"),
                     0);
    assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);
    mtr_sub_close(sub);
    mtr_cleanup(&r);
}

static void test_connection_killed_again_and_again(void **state)
{
    (void)state;
    mtr_redis r;
    const int n = 3000;
    assert_int_equal(mtr_start(&r, NULL), 0);
    mtr_sub *sub = mtr_subscribe(&r, CHANNEL);
    mae_publisher *p = open_stream(r.url);
    sc_feeder f;
    sc_feed_start(&f, p, n, 500);
    for (int k = 0; k < 60; k++) {
        tu_sleep_ms(25);
        mtr_command(&r, "CLIENT KILL TYPE normal");
    }
    sc_feed_join(&f);
    assert_int_equal(mae_publisher_flush(p, 20000), MAE_OK);
    mtr_sub_wait(sub, (size_t)n, 5000);
    sc_assert_stream_exactly(&r, STREAM, n);
    assert_int_equal(sc_assert_channel_no_doubles(&sub, 1, n), n);
    assert_counters(p, n);
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_true(st.connects > 10); /* the kills did land */
    assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);
    mtr_sub_close(sub);
    mtr_cleanup(&r);
}

static void test_redis_killed_and_restarted_from_its_log(void **state)
{
    (void)state;
    mtr_redis r;
    const int n = 3000;
    mtr_sub *subs[4];
    int nsubs = 0;
    assert_int_equal(mtr_start(&r, "--appendonly yes --appendfsync always"), 0);
    subs[nsubs++] = mtr_subscribe(&r, CHANNEL);
    mae_publisher *p = open_stream(r.url);
    sc_feeder f;
    sc_feed_start(&f, p, n, 700);
    for (int k = 0; k < 3; k++) {
        tu_sleep_ms(400);
        mtr_kill(&r); /* SIGKILL: no shutdown, only what the log holds */
        tu_sleep_ms(150);
        subs[nsubs] = mtr_restart_gated(&r, CHANNEL);
        assert_non_null(subs[nsubs]);
        nsubs++;
    }
    sc_feed_join(&f);
    assert_int_equal(mae_publisher_flush(p, 20000), MAE_OK);
    tu_sleep_ms(200);
    sc_assert_stream_exactly(&r, STREAM, n);
    /* The channel: no doubles. (A message in a killed server's output
     * buffer dies with it: pub/sub itself keeps nothing.) */
    sc_assert_channel_no_doubles(subs, nsubs, n);
    assert_counters(p, n);
    assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);
    for (int s = 0; s < nsubs; s++)
        mtr_sub_close(subs[s]);
    mtr_cleanup(&r);
}

static void test_redis_hung_then_resumed(void **state)
{
    (void)state;
    mtr_redis r;
    const int n = 2000;
    assert_int_equal(mtr_start(&r, NULL), 0);
    mtr_sub *sub = mtr_subscribe(&r, CHANNEL);
    mae_publisher *p = open_stream(r.url);
    sc_feeder f;
    sc_feed_start(&f, p, n, 1000);
    for (int k = 0; k < 2; k++) {
        tu_sleep_ms(300);
        /* Longer than the I/O timeout: the batch on the wire is given up
         * for, reconnects queue up in the backlog, and on SIGCONT Redis
         * runs the abandoned batch as well as its resend. */
        mtr_pause(&r);
        tu_sleep_ms(1000);
        mtr_resume(&r);
    }
    sc_feed_join(&f);
    assert_int_equal(mae_publisher_flush(p, 20000), MAE_OK);
    mtr_sub_wait(sub, (size_t)n, 5000);
    tu_sleep_ms(200);
    sc_assert_stream_exactly(&r, STREAM, n);
    assert_int_equal(sc_assert_channel_no_doubles(&sub, 1, n), n);
    assert_counters(p, n);
    assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);
    mtr_sub_close(sub);
    mtr_cleanup(&r);
}

static void test_script_cache_flushed(void **state)
{
    (void)state;
    mtr_redis r;
    const int n = 1000;
    assert_int_equal(mtr_start(&r, NULL), 0);
    mtr_sub *sub = mtr_subscribe(&r, CHANNEL);
    mae_publisher *p = open_stream(r.url);
    sc_feeder f;
    sc_feed_start(&f, p, n, 500);
    for (int k = 0; k < 5; k++) {
        tu_sleep_ms(60);
        assert_int_equal(mtr_command(&r, "SCRIPT FLUSH"), 0); /* NOSCRIPT on the next batch */
    }
    sc_feed_join(&f);
    assert_int_equal(mae_publisher_flush(p, 20000), MAE_OK);
    assert_int_equal(mtr_sub_wait(sub, (size_t)n, 5000), n);
    sc_assert_stream_exactly(&r, STREAM, n);
    assert_int_equal(sc_assert_channel_no_doubles(&sub, 1, n), n);
    assert_counters(p, n);
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.connects, 1); /* reloaded on the same connection */
    assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);
    mtr_sub_close(sub);
    mtr_cleanup(&r);
}

/* A batch Redis refuses (the key holds a string, not a stream) is counted
 * as lost, said in last_error, and the publisher goes on with the next. */
static void test_refused_batch_is_counted_and_the_next_goes_on(void **state)
{
    (void)state;
    mtr_redis r;
    assert_int_equal(mtr_start(&r, NULL), 0);
    assert_int_equal(mtr_command(&r, "SET %s %s", STREAM, "not-a-stream"), 0);
    mae_publisher *p = open_stream(r.url);
    sc_feeder f;
    sc_feed_start(&f, p, 10, 0);
    sc_feed_join(&f);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.dropped_send_error, 10);
    assert_int_equal(st.published, 0);
    assert_non_null(strstr(st.last_error, "WRONGTYPE"));
    tu_assert_counters_add_up(p);
    assert_int_equal(mtr_command(&r, "DEL %s", STREAM), 0);
    sc_feed_start(&f, p, 10, 0);
    sc_feed_join(&f);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    sc_assert_stream_exactly(&r, STREAM, 10); /* numbered 0..9 again: the second run */
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.published, 10);
    assert_int_equal(st.connects, 1);
    tu_assert_counters_add_up(p);
    assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);
    mtr_cleanup(&r);
}

static void test_close_bounded_while_hung(void **state)
{
    (void)state;
    mtr_redis r;
    assert_int_equal(mtr_start(&r, NULL), 0);
    mae_publisher *p = open_stream(r.url);
    sc_feeder f;
    sc_feed_start(&f, p, 100, 0);
    sc_feed_join(&f);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    mtr_pause(&r);
    sc_feed_start(&f, p, 50, 0);
    sc_feed_join(&f);
    tu_sleep_ms(400); /* a batch is on the wire, kept for a resend */
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_true(st.in_flight + st.queued == 50);
    tu_assert_counters_add_up(p);
    double t0 = tu_now_s();
    assert_int_equal(mae_publisher_close(p, 500), MAE_ETIMEDOUT);
    assert_true(tu_now_s() - t0 < 1.5);
    mtr_resume(&r);
    mtr_cleanup(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_and_channel_get_every_event),
        cmocka_unit_test(test_connection_killed_again_and_again),
        cmocka_unit_test(test_redis_killed_and_restarted_from_its_log),
        cmocka_unit_test(test_redis_hung_then_resumed),
        cmocka_unit_test(test_script_cache_flushed),
        cmocka_unit_test(test_refused_batch_is_counted_and_the_next_goes_on),
        cmocka_unit_test(test_close_bounded_while_hung),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
