/* Integration tests of the publisher through Redis Sentinel (issue 21):
 * a real replicated set (tests/support/sentinel_harness), a publisher in
 * stream mode writing numbered events through the redis-sentinel:// URL
 * with wait_replicas=1, and a fault while it writes: the master killed,
 * stopped for 3 s, failed over on request, a replica detached. After each:
 * the stream on the master the Sentinels name holds every event exactly
 * once (none twice, none acknowledged and missing), the counters add up,
 * lost_failover is 0. The time from the fault to the publisher's first
 * acknowledged write on the new master is printed (a figure, not a limit:
 * bench/ measures it). */
#include <setjmp.h>
#include <stdarg.h>
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

#include "sentinel_harness.h"
#include "testutil.h"

#define STREAM "t:failover"

enum fault { KILL, STOP, FAILOVER, DETACH };
static const char *const fault_name[] = {"SIGKILL", "SIGSTOP 3 s", "SENTINEL FAILOVER",
                                         "replica detached"};

static void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static uint64_t published(mae_publisher *p)
{
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    return st.published;
}

/* The stream on redis[m] holds 1..sent, each once, in order. */
static void expect_every_event_once(mts_set *s, int m, int sent)
{
    mts_stream_count k;
    assert_int_equal(mts_count_stream(s, m, STREAM, NULL, sent, &k), 0);
    print_message("stream: %zu entries for %d events: %d missing (first %d), %d twice, "
                  "%d out of order, %d strays\n",
                  k.entries, sent, k.missing, k.first_missing, k.twice, k.out_of_order, k.strays);
    assert_int_equal(k.twice, 0);
    assert_int_equal(k.missing, 0);
    assert_int_equal(k.strays, 0);
    assert_int_equal(k.out_of_order, 0);
}

static void run(enum fault fault)
{
    mts_set s;
    if (!mtr_available())
        tu_missing_prerequisite("redis-server");
    assert_int_equal(mts_start(&s), 0);

    /* The wait options through the URL's query, before the '#'. */
    mts_feeder f;
    assert_int_equal(mts_feeder_open(&f, &s, STREAM, "failover"), MAE_OK);
    assert_int_equal(mts_feeder_start(&f, 2), 0);   /* about 500 events a second */
    nap_ms(1000);

    int old = mts_master(&s);
    assert_int_equal(old, 0);
    uint64_t before = published(f.p);
    assert_true(before > 0);
    double t0 = mts_now(), t_first = -1;
    switch (fault) {
    case KILL:
        mtr_kill(&s.redis[old]);
        break;
    case STOP:
        mtr_pause(&s.redis[old]);
        break;
    case FAILOVER:
        assert_int_equal(mts_sentinel_failover(&s, 0), 0);
        break;
    case DETACH:
        assert_int_equal(mtr_command(&s.redis[1], "REPLICAOF NO ONE"), 0);
        break;
    }
    before = published(f.p);
    int nm = old;
    if (fault != DETACH) {
        /* First acknowledged write after the fault (for a planned failover
         * the old master still acknowledges for a moment: a rough figure). */
        double t_agree = -1;
        nm = -1;
        bool resumed = fault != STOP;
        for (double until = t0 + 30, next_ask = t0; mts_now() < until; nap_ms(1)) {
            if (t_first < 0 && published(f.p) > before)
                t_first = mts_now() - t0;
            if (!resumed && mts_now() >= t0 + 3) {
                mtr_resume(&s.redis[old]);
                resumed = true;
            }
            if (nm < 0 && mts_now() >= next_ask) {
                nm = mts_wait_new_master(&s, old, 0);
                if (nm >= 0)
                    t_agree = mts_now() - t0;
                next_ask = mts_now() + 0.01;
            }
            if (nm >= 0 && t_first >= 0 && resumed)
                break;
        }
        if (!resumed)
            mtr_resume(&s.redis[old]);
        if (fault == STOP && nm < 0)
            nm = old; /* not failed over within the 3 s: the old master goes on */
        assert_true(nm >= 0);
        print_message("%s: Sentinels agree on a new master after %.2f s; the publisher's first "
                      "acknowledged write after %.2f s\n",
                      fault_name[fault], t_agree, t_first);
    }
    nap_ms(1500);
    int sent = mts_feeder_stop(&f, 30000);
    assert_true(sent > 0);

    mae_publisher_stats st;
    mae_publisher_stats_get(f.p, &st);
    print_message("%s: %d events, published %llu, resent %llu, skipped %llu, connects %llu, "
                  "connect failures %llu, lost_failover %llu; last error: %s\n",
                  fault_name[fault], sent, (unsigned long long)st.published,
                  (unsigned long long)st.resent, (unsigned long long)st.skipped,
                  (unsigned long long)st.connects, (unsigned long long)st.connect_failures,
                  (unsigned long long)st.lost_failover, st.last_error);
    assert_int_equal(st.calls, (uint64_t)sent);
    assert_int_equal(st.enqueued, (uint64_t)sent);
    assert_int_equal(st.published, (uint64_t)sent);
    assert_int_equal(st.dropped_send_error + st.dropped_queue_full + st.queued + st.in_flight, 0);
    assert_int_equal(st.lost_failover, 0);
    if (fault != DETACH)
        assert_true(st.connects >= 2); /* it did follow the master */
    /* The master a majority of the Sentinels name now (a failover may
     * have moved on since the first agreement). */
    int m = mts_wait_new_master(&s, -1, 10000);
    assert_true(m >= 0);
    if (m != nm)
        print_message("%s: the Sentinels first agreed on redis[%d], now on redis[%d]\n",
                      fault_name[fault], nm, m);
    expect_every_event_once(&s, m, sent);
    assert_int_equal(mts_feeder_close(&f), MAE_OK);
    mts_stop(&s);
}

static void test_master_killed(void **state)
{
    (void)state;
    run(KILL);
}

static void test_master_stopped_for_3_s(void **state)
{
    (void)state;
    run(STOP);
}

static void test_planned_failover(void **state)
{
    (void)state;
    run(FAILOVER);
}

static void test_replica_detached(void **state)
{
    (void)state;
    run(DETACH);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_master_killed),
        cmocka_unit_test(test_master_stopped_for_3_s),
        cmocka_unit_test(test_planned_failover),
        cmocka_unit_test(test_replica_detached),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
