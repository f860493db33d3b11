/* Integration tests of the publisher against a real redis-server on a free
 * loopback port: exact delivery in order, Redis late, killed, restarted,
 * hung, password-protected, unreachable; SIGPIPE never reaches us. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <mailagent/events.h>

#include "publisher/publisher_internal.h"
#include "redis_harness.h"
#include "testutil.h"

#define CHANNEL "mailagent:events:v1"

/* The caller is "never held up": the slowest single call stays under a
 * bound half the 2 s a blocking design with the replaced timeouts costs
 * against a hung server, loose enough for sanitizers and a busy machine.
 * The benchmark measures the real figures. */
#define HELD_UP_BOUND_S 1.0

static mae_publisher *open_url(const char *url, int io_timeout_ms)
{
    mae_publisher_config cfg;
    mae_publisher *p = NULL;
    mae_publisher_config_init(&cfg);
    cfg.redis_url = url;
    cfg.backoff_min_ms = 20;
    cfg.backoff_max_ms = 200;
    if (io_timeout_ms)
        cfg.io_timeout_ms = io_timeout_ms;
    cfg.connect_timeout_ms = 300;
    assert_int_equal(mae_publisher_open(&cfg, &p), MAE_OK);
    return p;
}

/* Publishes n events numbered from `from`, returns the slowest call. */
static double publish_n(mae_publisher *p, int from, int n)
{
    double worst = 0;
    char data[64];
    for (int i = from; i < from + n; i++) {
        snprintf(data, sizeof data, "{\"n\":%d}", i);
        double t0 = tu_now_s();
        mae_safe_publish(p, "test.event", i, data, "test");
        double dt = tu_now_s() - t0;
        if (dt > worst)
            worst = dt;
    }
    return worst;
}

static int has_n(const char *msg, int n)
{
    char needle[64];
    snprintf(needle, sizeof needle, "\"data\":{\"n\":%d}", n);
    return msg && strstr(msg, needle) != NULL;
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

static void test_subscriber_gets_exactly_what_was_published(void **state)
{
    (void)state;
    mtr_redis r;
    assert_int_equal(mtr_start(&r, NULL), 0);
    mtr_sub *sub = mtr_subscribe(&r, CHANNEL);
    assert_non_null(sub);
    mae_publisher *p = open_url(r.url, 0);

    mae_publish_email_synced(p, 53675, "page-uuid-abc", MAE_SOURCE_NEW_WATCHER);
    mae_publish_email_failed(p, 53675, "fetch_failed", 1, 1716096060.5, "timeout");
    mae_publish_email_dead_letter(p, 53675, 5, "gone");
    mae_publish_outbox_enqueued(p, 53675, 17, "flag", "notion", MAE_SOURCE_CLI);
    mae_publish_outbox_done(p, 53675, 17);
    mae_publish_outbox_failed(p, 53675, 17, 2, "busy", 1716096300.25);
    mae_publish_outbox_dead_letter(p, 53675, 17, 5, "busy");
    mae_publish_llm_success(p, 53675, "claude", 100, 20, 950);
    mae_publish_llm_failed(p, 53675, 1, 1716096060.0, "upstream 529: overloaded");
    mae_publish_llm_gave_up(p, 53675, 5, "upstream 529: overloaded");
    mae_safe_publish(p, "custom.thing", MAE_NO_ID, NULL, "test");
    publish_n(p, 0, 5000);
    assert_int_equal(mae_publisher_flush(p, 10000), MAE_OK);
    assert_int_equal(mtr_sub_wait(sub, 5011, 10000), 5011);
    tu_sleep_ms(100);
    assert_int_equal(mtr_sub_count(sub), 5011); /* exactly, no duplicates */

    const char *types[] = {"email.synced",   "email.failed",       "email.dead_letter",
                           "outbox.enqueued", "outbox.done",       "outbox.failed",
                           "outbox.dead_letter", "llm.success",    "llm.failed",
                           "llm.gave_up",     "custom.thing"};
    for (size_t i = 0; i < 11; i++) {
        char prefix[64];
        snprintf(prefix, sizeof prefix, "{\"event_type\":\"%s\",\"ts\":", types[i]);
        assert_int_equal(strncmp(mtr_sub_message(sub, i), prefix, strlen(prefix)), 0);
    }
    assert_non_null(strstr(mtr_sub_message(sub, 0),
                           ",\"internal_id\":53675,\"data\":{\"notion_page_id\":\"page-uuid-abc\"},"
                           "\"source\":\"new_watcher\"}"));
    assert_non_null(strstr(mtr_sub_message(sub, 10), "\"internal_id\":null,\"data\":{}"));
    for (int i = 0; i < 5000; i++)
        assert_true(has_n(mtr_sub_message(sub, (size_t)i + 11), i));

    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.published, 5011);
    assert_int_equal(st.connects, 1);
    tu_assert_counters_add_up(p);
    assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);
    mtr_sub_close(sub);
    mtr_cleanup(&r);
}

/* {"s":"<n times c>"}, malloc'd. */
static char *big_object(size_t n, char c)
{
    char *data = malloc(n + 16);
    assert_non_null(data);
    memcpy(data, "{\"s\":\"", 6);
    memset(data + 6, c, n);
    memcpy(data + 6 + n, "\"}", 3);
    return data;
}

/* A 2 MB data object is over the default max_event_bytes (1 MiB): counted
 * as dropped_too_large, never seen by a subscriber; the small event after
 * it arrives. An event just under the limit goes through, and afterwards
 * the I/O thread's buffers (batch and hiredis command buffer) are back
 * under 1 MiB: the large event does not stay resident. */
static void test_event_over_max_event_bytes_never_reaches_redis(void **state)
{
    (void)state;
    mtr_redis r;
    assert_int_equal(mtr_start(&r, NULL), 0);
    mtr_sub *sub = mtr_subscribe(&r, CHANNEL);
    assert_non_null(sub);
    mae_publisher *p = open_url(r.url, 0);
    publish_n(p, 0, 1);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    size_t held_before = mae__publisher_held_bytes(p);

    char *huge = big_object(2u << 20, 'h');
    mae_safe_publish(p, "test.huge", 1, huge, "test");
    publish_n(p, 1, 1);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    assert_int_equal(mtr_sub_wait(sub, 2, 5000), 2);
    assert_true(has_n(mtr_sub_message(sub, 1), 1));

    char *large = big_object(1000000, 'l'); /* under 1 MiB with its envelope */
    mae_safe_publish(p, "test.large", 2, large, "test");
    publish_n(p, 2, 1);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    assert_int_equal(mtr_sub_wait(sub, 4, 5000), 4);
    tu_sleep_ms(100);
    assert_int_equal(mtr_sub_count(sub), 4); /* the 2 MB one never came */
    assert_non_null(strstr(mtr_sub_message(sub, 2), "\"event_type\":\"test.large\""));
    assert_true(has_n(mtr_sub_message(sub, 3), 2));
    for (size_t i = 0; i < 4; i++)
        assert_null(strstr(mtr_sub_message(sub, i), "hhhh"));

    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.dropped_too_large, 1);
    assert_int_equal(st.published, 4);
    tu_assert_counters_add_up(p);
    size_t held_after = mae__publisher_held_bytes(p);
    print_message("held for sending: %zu bytes before the large events, %zu after\n",
                  held_before, held_after);
    assert_true(held_after < (1u << 20));
    assert_true(held_after <= 2 * held_before + (256u << 10));
    assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);
    free(huge);
    free(large);
    mtr_sub_close(sub);
    mtr_cleanup(&r);
}

static void test_redis_started_late(void **state)
{
    (void)state;
    mtr_redis r;
    memset(&r, 0, sizeof r);
    assert_int_equal(mtr_reserve_port(&r), 0);
    double t0 = tu_now_s();
    mae_publisher *p = open_url(r.url, 0);
    double open_time = tu_now_s() - t0;
    double worst = publish_n(p, 0, 100);
    assert_true(open_time < HELD_UP_BOUND_S);
    assert_true(worst < HELD_UP_BOUND_S);
    tu_sleep_ms(300);
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_true(st.connect_failures >= 1);
    assert_int_equal(st.queued, 100);

    /* The events are still queued, and reach a subscriber that was
     * listening before the publisher could get in. */
    mtr_sub *sub = mtr_restart_gated(&r, CHANNEL);
    assert_non_null(sub);
    assert_int_equal(mae_publisher_flush(p, 10000), MAE_OK);
    assert_int_equal(mtr_sub_wait(sub, 100, 5000), 100);
    for (int i = 0; i < 100; i++)
        assert_true(has_n(mtr_sub_message(sub, (size_t)i), i));
    tu_assert_counters_add_up(p);
    assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);
    mtr_sub_close(sub);
    mtr_cleanup(&r);
}

static void test_killed_and_restarted_loses_nothing(void **state)
{
    (void)state;
    mtr_redis r;
    assert_int_equal(mtr_start(&r, NULL), 0);
    mae_publisher *p = open_url(r.url, 0);
    publish_n(p, 0, 100);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);

    struct sigaction before, after;
    sigaction(SIGPIPE, NULL, &before);
    mtr_kill(&r);
    double worst = publish_n(p, 100, 200); /* during the outage */
    assert_true(worst < HELD_UP_BOUND_S);
    tu_sleep_ms(200);
    mtr_sub *sub = mtr_restart_gated(&r, CHANNEL);
    assert_non_null(sub);
    assert_int_equal(mae_publisher_flush(p, 10000), MAE_OK);
    assert_int_equal(mtr_sub_wait(sub, 200, 5000), 200);
    for (int i = 0; i < 200; i++)
        assert_true(has_n(mtr_sub_message(sub, (size_t)i), 100 + i));
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.published, 300);
    assert_int_equal(st.dropped_send_error, 0);
    assert_true(st.connects >= 2);
    tu_assert_counters_add_up(p);
    sigaction(SIGPIPE, NULL, &after);
    assert_ptr_equal(before.sa_handler, after.sa_handler); /* disposition untouched */
    assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);
    mtr_sub_close(sub);
    mtr_cleanup(&r);
}

static void test_killed_mid_stream_process_survives(void **state)
{
    (void)state;
    /* SIGPIPE keeps its default action (terminate): if a write of ours
     * raised it at the process, this test would die. */
    signal(SIGPIPE, SIG_DFL);
    mtr_redis r;
    assert_int_equal(mtr_start(&r, NULL), 0);
    mae_publisher *p = open_url(r.url, 0);
    for (int round = 0; round < 3; round++) {
        publish_n(p, 0, 20000);
        mtr_kill(&r);
        publish_n(p, 0, 20000);
        tu_sleep_ms(50);
        assert_int_equal(mtr_restart(&r), 0);
    }
    assert_int_equal(mae_publisher_flush(p, 20000), MAE_OK);
    tu_assert_counters_add_up(p);
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.calls, 120000);
    assert_true(st.published > 0);
    assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);
    mtr_cleanup(&r);
}

static void test_hung_redis_never_holds_the_caller(void **state)
{
    (void)state;
    mtr_redis r;
    assert_int_equal(mtr_start(&r, NULL), 0);
    mae_publisher *p = open_url(r.url, 2000);
    publish_n(p, 0, 10);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);

    mtr_pause(&r);
    double worst = publish_n(p, 10, 20000);
    tu_sleep_ms(2500); /* the I/O thread times out on the hung server meanwhile */
    double worst2 = publish_n(p, 30010, 100);
    assert_true(worst < HELD_UP_BOUND_S);
    assert_true(worst2 < HELD_UP_BOUND_S);
    assert_int_equal(mae_publisher_flush(p, 100), MAE_ETIMEDOUT);
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_false(st.connected && st.published == 20110);
    tu_assert_counters_add_up(p);

    mtr_resume(&r);
    assert_int_equal(mae_publisher_flush(p, 20000), MAE_OK);
    mae_publisher_stats_get(p, &st);
    /* At most the batch that was on the wire when the server hung is lost. */
    assert_int_equal(st.published + st.dropped_send_error, 20110);
    assert_true(st.dropped_send_error <= 256);
    tu_assert_counters_add_up(p);
    assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);
    mtr_cleanup(&r);
}

static void test_close_returns_within_timeout_when_hung(void **state)
{
    (void)state;
    mtr_redis r;
    assert_int_equal(mtr_start(&r, NULL), 0);
    mae_publisher *p = open_url(r.url, 5000); /* I/O timeout far above close's */
    publish_n(p, 0, 10);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    mtr_pause(&r);
    /* Enough data to fill the socket buffers: the thread blocks in write. */
    char big[8192];
    memset(big, 'x', sizeof big - 32);
    memcpy(big, "{\"pad\":\"", 8);
    strcpy(big + sizeof big - 32, "\"}");
    for (int i = 0; i < 2000; i++)
        mae_safe_publish(p, "test.big", i, big, "test");
    tu_sleep_ms(200);
    double t0 = tu_now_s();
    assert_int_equal(mae_publisher_close(p, 300), MAE_ETIMEDOUT);
    double dt = tu_now_s() - t0;
    assert_true(dt < 0.3 + HELD_UP_BOUND_S);
    mtr_resume(&r);
    mtr_cleanup(&r);
}

static void test_password(void **state)
{
    (void)state;
    mtr_redis r;
    assert_int_equal(mtr_start(&r, "--requirepass s3cret"), 0);
    char url[128];
    snprintf(url, sizeof url, "redis://:s3cret@127.0.0.1:%d", r.port);
    mae_publisher *good = open_url(url, 0);
    publish_n(good, 0, 10);
    assert_int_equal(mae_publisher_flush(good, 5000), MAE_OK);
    mae_publisher_stats st;
    mae_publisher_stats_get(good, &st);
    assert_int_equal(st.published, 10);
    assert_int_equal(mae_publisher_close(good, 2000), MAE_OK);

    snprintf(url, sizeof url, "redis://:wrong@127.0.0.1:%d", r.port);
    mae_publisher *bad = open_url(url, 0);
    mae_publisher *none = open_url(r.url, 0);
    double worst = publish_n(bad, 0, 10);
    worst += publish_n(none, 0, 10);
    assert_true(worst < HELD_UP_BOUND_S);
    tu_sleep_ms(300);
    mae_publisher_stats_get(bad, &st);
    assert_int_equal(st.published, 0);
    assert_int_equal(st.queued, 10);
    assert_true(st.connect_failures >= 1);
    assert_true(st.last_error[0] != 0);
    mae_publisher_stats_get(none, &st);
    assert_int_equal(st.published, 0);
    assert_true(st.connect_failures >= 1);
    assert_non_null(strstr(st.last_error, "NOAUTH"));
    assert_int_equal(mae_publisher_close(bad, 100), MAE_ETIMEDOUT);
    assert_int_equal(mae_publisher_close(none, 100), MAE_ETIMEDOUT);
    mtr_cleanup(&r);
}

/* The hello with an ACL user (AUTH user password) and a database: it
 * gets in, and a wrong password or a database out of range is refused
 * with the server's words. */
static void test_acl_user_and_database(void **state)
{
    (void)state;
    mtr_redis r;
    /* The default user has no password: a two-word AUTH would be refused. */
    assert_int_equal(mtr_start(&r, "--user alice on >pw ~* &* +@all"), 0);
    char url[128];
    mae_publisher_stats st;
    snprintf(url, sizeof url, "redis://alice:pw@127.0.0.1:%d/2", r.port);
    mae_publisher *good = open_url(url, 0);
    publish_n(good, 0, 10);
    assert_int_equal(mae_publisher_flush(good, 5000), MAE_OK);
    mae_publisher_stats_get(good, &st);
    assert_int_equal(st.published, 10);
    assert_int_equal(st.connect_failures, 0);
    assert_int_equal(mae_publisher_close(good, 2000), MAE_OK);

    static const struct {
        const char *auth, *db, *want;
    } bad[] = {
        {"alice:nope", "2", "connect failed: server refused: WRONGPASS"},
        {"alice:pw", "99", "connect failed: server refused: ERR DB index is out of range"},
    };
    for (size_t i = 0; i < 2; i++) {
        snprintf(url, sizeof url, "redis://%s@127.0.0.1:%d/%s", bad[i].auth, r.port, bad[i].db);
        mae_publisher *p = open_url(url, 0);
        publish_n(p, 0, 3);
        for (int k = 0; k < 100; k++) {
            mae_publisher_stats_get(p, &st);
            if (st.connect_failures >= 1)
                break;
            tu_sleep_ms(50);
        }
        assert_int_equal(st.published, 0);
        assert_true(st.connect_failures >= 1);
        if (strncmp(st.last_error, bad[i].want, strlen(bad[i].want)) != 0)
            fail_msg("case %zu: last_error \"%s\", want \"%s...\"", i, st.last_error,
                     bad[i].want);
        assert_int_equal(mae_publisher_close(p, 100), MAE_ETIMEDOUT);
    }
    mtr_cleanup(&r);
}

static void test_client_kill_reconnects(void **state)
{
    (void)state;
    mtr_redis r;
    assert_int_equal(mtr_start(&r, NULL), 0);
    mtr_sub *sub = mtr_subscribe(&r, CHANNEL);
    mae_publisher *p = open_url(r.url, 0);
    publish_n(p, 0, 10);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    assert_int_equal(mtr_command(&r, "CLIENT KILL TYPE normal"), 0);
    tu_sleep_ms(100);
    publish_n(p, 10, 10);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.published, 20);
    assert_int_equal(st.connects, 2);
    assert_int_equal(mtr_sub_wait(sub, 20, 5000), 20);
    assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);
    mtr_sub_close(sub);
    mtr_cleanup(&r);
}

static void test_unreachable_targets(void **state)
{
    (void)state;
    const char *urls[] = {
        "redis://host.that.does.not.resolve.invalid:6379",
        "unix:///nonexistent/dir/redis.sock",
    };
    for (size_t i = 0; i < 2; i++) {
        double t0 = tu_now_s();
        mae_publisher *p = open_url(urls[i], 0);
        double worst = publish_n(p, 0, 1000);
        assert_true(tu_now_s() - t0 < 1.0);
        assert_true(worst < HELD_UP_BOUND_S);
        tu_sleep_ms(200);
        mae_publisher_stats st;
        mae_publisher_stats_get(p, &st);
        assert_int_equal(st.queued, 1000);
        assert_false(st.connected);
        tu_assert_counters_add_up(p);
        t0 = tu_now_s();
        assert_int_equal(mae_publisher_close(p, 200), MAE_ETIMEDOUT);
        assert_true(tu_now_s() - t0 < 0.2 + HELD_UP_BOUND_S);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_subscriber_gets_exactly_what_was_published),
        cmocka_unit_test(test_event_over_max_event_bytes_never_reaches_redis),
        cmocka_unit_test(test_redis_started_late),
        cmocka_unit_test(test_killed_and_restarted_loses_nothing),
        cmocka_unit_test(test_killed_mid_stream_process_survives),
        cmocka_unit_test(test_hung_redis_never_holds_the_caller),
        cmocka_unit_test(test_close_returns_within_timeout_when_hung),
        cmocka_unit_test(test_password),
        cmocka_unit_test(test_acl_user_and_database),
        cmocka_unit_test(test_client_kill_reconnects),
        cmocka_unit_test(test_unreachable_targets),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
