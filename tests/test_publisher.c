/* Unit tests of the publisher's queue and I/O thread against a scripted
 * fake Redis: delivery, counters, reconnects, AUTH, errors, broken batches,
 * bounds, close under a hang, fork, many threads, and the I/O thread's
 * sleep and wake-up (events after an idle spell are delivered without any
 * flush to prompt them). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "capture.h"
#include "core/backoff.h"
#include "testutil.h"

typedef struct fixture {
    fake_redis *fake;
    mae_publisher *p;
} fixture;

static mae_publisher *open_fake(fake_redis *f, const char *url, size_t max_events,
                                size_t max_bytes)
{
    mae_publisher_config cfg;
    mae_publisher *p = NULL;
    mae_publisher_config_init(&cfg);
    cfg.redis_url = url;
    cfg.backoff_min_ms = 1;
    cfg.backoff_max_ms = 5;
    if (max_events)
        cfg.queue_max_events = max_events;
    if (max_bytes)
        cfg.queue_max_bytes = max_bytes;
    mae__transport_ops ops = fake_redis_ops(f);
    assert_int_equal(mae__publisher_open_with(&cfg, &ops, &p), MAE_OK);
    return p;
}

static void publish_n(mae_publisher *p, int from, int n)
{
    char data[64];
    for (int i = from; i < from + n; i++) {
        snprintf(data, sizeof data, "{\"n\":%d}", i);
        mae_safe_publish(p, "test.event", i, data, "test");
    }
}

/* The n-th delivered message carries {"n":want}. */
static void assert_message_n(fake_redis *f, size_t i, int want)
{
    char needle[64];
    snprintf(needle, sizeof needle, "\"data\":{\"n\":%d}", want);
    const char *m = fake_redis_message(f, i);
    assert_non_null(m);
    assert_non_null(strstr(m, needle));
}

static void test_config_defaults(void **state)
{
    (void)state;
    mae_publisher_config cfg;
    mae_publisher_config_init(&cfg);
    assert_null(cfg.redis_url);
    assert_string_equal(cfg.channel, "mailagent:events:v1");
    assert_int_equal(cfg.queue_max_events, 65536);
    assert_int_equal(cfg.queue_max_bytes, 64u << 20);
    assert_int_equal(cfg.connect_timeout_ms, 1000);
    assert_int_equal(cfg.io_timeout_ms, 1000);
    assert_int_equal(cfg.backoff_min_ms, 100);
    assert_int_equal(cfg.backoff_max_ms, 5000);
    assert_int_equal(cfg.max_event_bytes, 1048576);
    assert_int_equal(cfg.stream_maxlen, 100000);
    assert_null(cfg.stream_key);
}

/* The size handshake says what the headers say, and the fields added after
 * the first release sit at the end, in the order they came (api.md, ABI). */
static void test_size_handshake_and_fields_at_the_end(void **state)
{
    (void)state;
    assert_int_equal(mae_publisher_config_size(), sizeof(mae_publisher_config));
    assert_int_equal(mae_publisher_stats_size(), sizeof(mae_publisher_stats));
    assert_true(offsetof(mae_publisher_config, stream_key) >
                offsetof(mae_publisher_config, error_buf_size));
    assert_true(offsetof(mae_publisher_config, max_event_bytes) >
                offsetof(mae_publisher_config, stream_maxlen));
    assert_true(offsetof(mae_publisher_config, relay_url) >
                offsetof(mae_publisher_config, max_event_bytes));
    assert_true(offsetof(mae_publisher_stats, rejected_auth) >
                offsetof(mae_publisher_stats, dropped_too_large));
    assert_true(offsetof(mae_publisher_config, wait_replicas) >
                offsetof(mae_publisher_config, relay_token));
    assert_int_equal(offsetof(mae_publisher_config, resend_window_bytes) + sizeof(size_t),
                     sizeof(mae_publisher_config));
    assert_true(offsetof(mae_publisher_stats, lost_failover) >
                offsetof(mae_publisher_stats, rejected_server));
    assert_int_equal(offsetof(mae_publisher_stats, lost_failover) + sizeof(uint64_t),
                     sizeof(mae_publisher_stats));
}

/* A data object of 2 MB makes a line over the default 1 MiB: counted as
 * dropped_too_large, never sent; the next small event goes through, and
 * the counters still add up. */
static void test_event_over_max_event_bytes_is_counted_not_sent(void **state)
{
    (void)state;
    fake_redis *f = fake_redis_new();
    mae_publisher *p = open_fake(f, "redis://fake", 0, 0);
    size_t big = 2u << 20;
    char *data = malloc(big + 16);
    assert_non_null(data);
    memcpy(data, "{\"s\":\"", 6);
    memset(data + 6, 'a', big);
    memcpy(data + 6 + big, "\"}", 3);
    mae_safe_publish(p, "test.big", 1, data, "test");
    publish_n(p, 2, 1);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.calls, 2);
    assert_int_equal(st.dropped_too_large, 1);
    assert_int_equal(st.dropped_invalid, 0);
    assert_int_equal(st.published, 1);
    assert_int_equal(fake_redis_published(f), 1);
    assert_message_n(f, 0, 2);
    tu_assert_counters_add_up(p);
    mae_publisher_close(p, 1000);

    /* A smaller limit applies to the whole line, envelope included; the
     * typed builders are held to it too. */
    mae_publisher_config cfg;
    mae_publisher_config_init(&cfg);
    cfg.redis_url = "redis://fake";
    cfg.max_event_bytes = 200;
    mae__transport_ops ops = fake_redis_ops(f);
    fake_redis_clear(f);
    assert_int_equal(mae__publisher_open_with(&cfg, &ops, &p), MAE_OK);
    data[6 + 300] = '\0';
    memcpy(data + 6 + 300 - 2, "\"}", 3);
    mae_safe_publish(p, "test.big", 1, data, "test");
    char err[400];
    memset(err, 'e', 300);
    err[300] = '\0';
    mae_publish_llm_gave_up(p, 7, 3, err); /* cut to 200 code points: about 330 bytes */
    mae_publish_outbox_done(p, 7, 8);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.dropped_too_large, 2);
    assert_int_equal(st.published, 1);
    assert_non_null(strstr(fake_redis_message(f, 0), "outbox.done"));
    tu_assert_counters_add_up(p);
    mae_publisher_close(p, 1000);
    free(data);
    fake_redis_free(f);
}

/* After a batch of large lines the I/O thread's batch buffer returns to a
 * small floor: one burst does not pin its memory. */
static void test_batch_buffer_shrinks_after_a_large_batch(void **state)
{
    (void)state;
    fake_redis *f = fake_redis_new();
    mae_publisher *p = open_fake(f, "redis://fake", 0, 0);
    publish_n(p, 1, 10);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    size_t before = mae__publisher_held_bytes(p);
    assert_true(before > 0);

    size_t big = 900u << 10; /* under the 1 MiB limit */
    char *data = malloc(big + 16);
    assert_non_null(data);
    memcpy(data, "{\"s\":\"", 6);
    memset(data + 6, 'b', big);
    memcpy(data + 6 + big, "\"}", 3);
    fake_redis_hang(f, true); /* the lines pile up into one batch */
    mae_safe_publish(p, "test.big", 1, NULL, "test");
    for (int i = 0; i < 8; i++)
        mae_safe_publish(p, "test.big", i, data, "test");
    fake_redis_hang(f, false);
    assert_int_equal(mae_publisher_flush(p, 10000), MAE_OK);
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.dropped_too_large, 0);
    assert_true(st.published >= 11);
    publish_n(p, 20, 1); /* one ordinary batch after the large one */
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    size_t after = mae__publisher_held_bytes(p);
    assert_true(after <= 2 * before + (256u << 10));
    assert_true(after < (1u << 20));
    mae_publisher_close(p, 1000);
    free(data);
    fake_redis_free(f);
}

static void test_open_rejects_bad_config(void **state)
{
    (void)state;
    mae_publisher_config cfg;
    mae_publisher *p = (mae_publisher *)0x1;
    char err[160];
    mae_publisher_config_init(&cfg);
    cfg.error_buf = err;
    cfg.error_buf_size = sizeof err;

    assert_int_equal(mae_publisher_open(NULL, &p), MAE_EINVAL);
    assert_int_equal(mae_publisher_open(&cfg, NULL), MAE_EINVAL);

    cfg.redis_url = "redis://127.0.0.1:99999";
    err[0] = 0;
    assert_int_equal(mae_publisher_open(&cfg, &p), MAE_EINVAL);
    assert_ptr_equal(p, (mae_publisher *)0x1); /* untouched on failure */
    assert_non_null(strstr(err, "99999"));

    cfg.redis_url = "http://localhost";
    err[0] = 0;
    assert_int_equal(mae_publisher_open(&cfg, &p), MAE_EINVAL);
    assert_non_null(strstr(err, "http"));

    cfg.redis_url = "redis://127.0.0.1:6379";
    cfg.channel = "";
    assert_int_equal(mae_publisher_open(&cfg, &p), MAE_EINVAL);
    cfg.channel = NULL; /* NULL means the default */
    cfg.queue_max_events = 0;
    assert_int_equal(mae_publisher_open(&cfg, &p), MAE_EINVAL);
    cfg.queue_max_events = 10;
    cfg.io_timeout_ms = -1;
    assert_int_equal(mae_publisher_open(&cfg, &p), MAE_EINVAL);
    assert_ptr_equal(p, (mae_publisher *)0x1);
}

static void test_null_and_disabled_are_noops(void **state)
{
    (void)state;
    mae_publisher_stats st;
    mae_safe_publish(NULL, "x.y", 1, NULL, "test");
    mae_publish_email_synced(NULL, 1, "page", NULL);
    mae_publisher_stats_get(NULL, &st);
    assert_int_equal(st.calls, 0);
    assert_int_equal(mae_publisher_flush(NULL, 0), MAE_OK);
    assert_int_equal(mae_publisher_close(NULL, 0), MAE_OK);

    mae_publisher_config cfg;
    mae_publisher *p = NULL;
    mae_publisher_config_init(&cfg);
    cfg.redis_url = "";
    assert_int_equal(mae_publisher_open(&cfg, &p), MAE_OK);
    mae_safe_publish(p, "x.y", 1, NULL, "test");
    mae_safe_publish(p, "x.y", 1, "[not an object]", "test");
    mae_publish_llm_gave_up(p, 3, 5, "boom");
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.calls, 3);
    assert_int_equal(st.dropped_disabled, 3);
    assert_int_equal(st.enqueued, 0);
    assert_false(st.connected);
    assert_int_equal(mae_publisher_flush(p, 0), MAE_OK);
    assert_int_equal(mae_publisher_close(p, 0), MAE_OK);
}

static void test_delivers_in_order_and_counts(void **state)
{
    (void)state;
    fake_redis *f = fake_redis_new();
    mae_publisher *p = open_fake(f, "redis://127.0.0.1:6379", 0, 0);
    publish_n(p, 0, 1000);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    assert_int_equal(fake_redis_published(f), 1000);
    for (int i = 0; i < 1000; i++)
        assert_message_n(f, (size_t)i, i);
    assert_string_equal(fake_redis_channel(f, 0), "mailagent:events:v1");
    assert_string_equal(fake_redis_command(f, 0), "PING");

    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.enqueued, 1000);
    assert_int_equal(st.published, 1000);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.queued_bytes, 0);
    assert_int_equal(st.connects, 1);
    assert_true(st.connected);
    tu_assert_counters_add_up(p);
    assert_int_equal(mae_publisher_close(p, 1000), MAE_OK);
    fake_redis_free(f);
}

static void test_custom_channel(void **state)
{
    (void)state;
    fake_redis *f = fake_redis_new();
    mae_publisher_config cfg;
    mae_publisher *p = NULL;
    mae_publisher_config_init(&cfg);
    cfg.redis_url = "redis://h";
    cfg.channel = "custom:chan";
    mae__transport_ops ops = fake_redis_ops(f);
    assert_int_equal(mae__publisher_open_with(&cfg, &ops, &p), MAE_OK);
    publish_n(p, 0, 1);
    assert_int_equal(mae_publisher_close(p, 1000), MAE_OK);
    assert_string_equal(fake_redis_channel(f, 0), "custom:chan");
    fake_redis_free(f);
}

static void test_keeps_events_while_connects_fail(void **state)
{
    (void)state;
    fake_redis *f = fake_redis_new();
    fake_redis_fail_connects(f, 5);
    mae_publisher *p = open_fake(f, "redis://127.0.0.1:6379", 0, 0);
    publish_n(p, 0, 50);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    assert_int_equal(fake_redis_published(f), 50);
    for (int i = 0; i < 50; i++)
        assert_message_n(f, (size_t)i, i);
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.connect_failures, 5);
    assert_int_equal(st.connects, 1);
    assert_int_equal(st.dropped_send_error, 0);
    assert_non_null(strstr(st.last_error, "refused"));
    assert_true(st.last_error_at > 0);
    tu_assert_counters_add_up(p);
    assert_int_equal(mae_publisher_close(p, 1000), MAE_OK);
    fake_redis_free(f);
}

static void test_auth_and_select(void **state)
{
    (void)state;
    fake_redis *f = fake_redis_new();
    mae_publisher *p = open_fake(f, "redis://:s3cret@localhost:6380/2", 0, 0);
    publish_n(p, 0, 1);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    assert_string_equal(fake_redis_command(f, 0), "AUTH s3cret");
    assert_string_equal(fake_redis_command(f, 1), "SELECT 2");
    assert_string_equal(fake_redis_command(f, 2), "PING");
    assert_int_equal(mae_publisher_close(p, 1000), MAE_OK);
    fake_redis_free(f);

    f = fake_redis_new();
    p = open_fake(f, "redis://alice:pw@localhost", 0, 0);
    publish_n(p, 0, 1);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    assert_string_equal(fake_redis_command(f, 0), "AUTH alice pw");
    assert_string_equal(fake_redis_command(f, 1), "PING");
    assert_int_equal(mae_publisher_close(p, 1000), MAE_OK);
    fake_redis_free(f);
}

static void test_auth_failure_keeps_events_queued(void **state)
{
    (void)state;
    fake_redis *f = fake_redis_new();
    fake_redis_auth_error(f, true);
    mae_publisher *p = open_fake(f, "redis://:wrong@localhost", 0, 0);
    publish_n(p, 0, 10);
    mae_publisher_stats st;
    TU_EVENTUALLY((mae_publisher_stats_get(p, &st), st.connect_failures >= 3));
    assert_true(st.connect_failures >= 3);
    assert_int_equal(st.queued, 10);
    assert_int_equal(st.published, 0);
    assert_false(st.connected);
    assert_non_null(strstr(st.last_error, "WRONGPASS"));
    assert_int_equal(mae_publisher_flush(p, 20), MAE_ETIMEDOUT);
    tu_assert_counters_add_up(p);

    fake_redis_auth_error(f, false); /* the password is fixed on the server */
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    assert_int_equal(fake_redis_published(f), 10);
    assert_int_equal(mae_publisher_close(p, 1000), MAE_OK);
    fake_redis_free(f);
}

static void test_error_replies_are_counted(void **state)
{
    (void)state;
    fake_redis *f = fake_redis_new();
    mae_publisher *p = open_fake(f, "redis://h", 0, 0);
    publish_n(p, 0, 1); /* connect first, so the errors hit PUBLISHes */
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    fake_redis_error_replies(f, 3);
    publish_n(p, 1, 10);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.published, 8);
    assert_int_equal(st.dropped_send_error, 3);
    assert_int_equal(fake_redis_published(f), 8);
    assert_message_n(f, 1, 4); /* 1..3 were refused */
    assert_non_null(strstr(st.last_error, "ERR fake error"));
    assert_int_equal(st.connects, 1); /* an error reply is not a broken connection */
    tu_assert_counters_add_up(p);
    assert_int_equal(mae_publisher_close(p, 1000), MAE_OK);
    fake_redis_free(f);
}

static void test_connection_breaks_mid_batch(void **state)
{
    (void)state;
    fake_redis *f = fake_redis_new();
    mae_publisher *p = open_fake(f, "redis://h", 0, 0);
    publish_n(p, 0, 1);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    /* Hold the thread in a hang so the next 100 events form one batch. */
    fake_redis_hang(f, true);
    publish_n(p, 1, 1);
    mae_publisher_stats st;
    TU_EVENTUALLY((mae_publisher_stats_get(p, &st), st.in_flight == 1));
    publish_n(p, 2, 100);
    fake_redis_break_after(f, 1); /* event 1 answered, then 30 of the next... */
    fake_redis_hang(f, false);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    mae_publisher_stats_get(p, &st);
    /* The broken batch's unanswered events are lost (at-most-once), all of
     * them counted; later ones go out on a new connection. */
    assert_int_equal(st.published + st.dropped_send_error, 102);
    assert_true(st.dropped_send_error > 0);
    assert_int_equal(fake_redis_published(f), st.published);
    tu_assert_counters_add_up(p);
    publish_n(p, 500, 5); /* reconnects when there is work again */
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    assert_message_n(f, fake_redis_published(f) - 1, 504);
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.connects, 2);
    assert_int_equal(mae_publisher_close(p, 1000), MAE_OK);
    fake_redis_free(f);
}

static void test_peer_closed_idle_connection_loses_nothing(void **state)
{
    (void)state;
    fake_redis *f = fake_redis_new();
    mae_publisher *p = open_fake(f, "redis://h", 0, 0);
    publish_n(p, 0, 5);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    fake_redis_close_peer(f); /* Redis restarted while we were idle */
    publish_n(p, 5, 5);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.published, 10);
    assert_int_equal(st.dropped_send_error, 0);
    assert_int_equal(st.connects, 2);
    for (int i = 0; i < 10; i++)
        assert_message_n(f, (size_t)i, i);
    assert_int_equal(mae_publisher_close(p, 1000), MAE_OK);
    fake_redis_free(f);
}

static void test_queue_bounded_by_count_and_bytes(void **state)
{
    (void)state;
    fake_redis *f = fake_redis_new();
    fake_redis_fail_connects(f, 1000000); /* Redis is away */
    mae_publisher *p = open_fake(f, "redis://h", 10, 0);
    publish_n(p, 0, 25);
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.queued, 10);
    assert_int_equal(st.enqueued, 10);
    assert_int_equal(st.dropped_queue_full, 15);
    tu_assert_counters_add_up(p);
    fake_redis_fail_connects(f, 0);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    assert_int_equal(fake_redis_published(f), 10);
    for (int i = 0; i < 10; i++) /* the oldest kept, the newest dropped */
        assert_message_n(f, (size_t)i, i);
    assert_int_equal(mae_publisher_close(p, 1000), MAE_OK);
    fake_redis_free(f);

    f = fake_redis_new();
    fake_redis_fail_connects(f, 1000000);
    p = open_fake(f, "redis://h", 0, 1000); /* about 10 lines of ~90 bytes */
    publish_n(p, 0, 100);
    mae_publisher_stats_get(p, &st);
    assert_true(st.queued_bytes <= 1000);
    assert_true(st.queued > 0 && st.queued < 100);
    assert_int_equal(st.dropped_queue_full, 100 - st.queued);
    tu_assert_counters_add_up(p);
    assert_int_equal(mae_publisher_close(p, 50), MAE_ETIMEDOUT);
    fake_redis_free(f);
}

static void test_close_returns_in_time_while_hung(void **state)
{
    (void)state;
    fake_redis *f = fake_redis_new();
    mae_publisher *p = open_fake(f, "redis://h", 0, 0);
    publish_n(p, 0, 1);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    fake_redis_hang(f, true);
    double t0 = tu_now_s();
    publish_n(p, 1, 1000);
    double publish_time = tu_now_s() - t0;
    assert_int_equal(mae_publisher_flush(p, 50), MAE_ETIMEDOUT);
    t0 = tu_now_s();
    assert_int_equal(mae_publisher_close(p, 200), MAE_ETIMEDOUT);
    double close_time = tu_now_s() - t0;
    /* Generous bounds: this proves "returns", the benchmark measures. */
    assert_true(close_time < 2.0);
    assert_true(publish_time < 2.0);
    fake_redis_free(f);
}

static void test_fork_child_is_harmless(void **state)
{
    (void)state;
    fake_redis *f = fake_redis_new();
    mae_publisher *p = open_fake(f, "redis://h", 0, 0);
    publish_n(p, 0, 10);
    /* The child reports through a pipe, not its exit status: under
     * valgrind a child's status reports the memory only the parent's I/O
     * thread held, which the child inherits and cannot free. */
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        mae_publisher_stats before, after;
        close(fds[0]);
        mae_publisher_stats_get(p, &before);
        publish_n(p, 100, 10);
        mae_publish_outbox_done(p, 1, 2);
        mae_publisher_stats_get(p, &after);
        char verdict = after.dropped_disabled == before.dropped_disabled + 11 &&
                               after.enqueued == before.enqueued &&
                               mae_publisher_flush(p, 100) == MAE_OK
                           ? 'Y'
                           : 'N';
        mae_publisher_close(p, 100);
        if (write(fds[1], &verdict, 1) != 1)
            _exit(2);
        _exit(0);
    }
    close(fds[1]);
    char verdict = 0;
    assert_int_equal(read(fds[0], &verdict, 1), 1); /* the child did not hang or crash */
    close(fds[0]);
    assert_int_equal(verdict, 'Y');
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    publish_n(p, 10, 10);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    assert_int_equal(fake_redis_published(f), 20);
    assert_int_equal(mae_publisher_close(p, 1000), MAE_OK);
    fake_redis_free(f);
}

#define THREADS 4
#define PER_THREAD 5000

static void *publisher_thread(void *arg)
{
    mae_publisher *p = arg;
    for (int i = 0; i < PER_THREAD; i++)
        mae_safe_publish(p, "test.event", i, "{\"k\":1}", "test");
    return NULL;
}

static void test_many_threads(void **state)
{
    (void)state;
    fake_redis *f = fake_redis_new();
    mae_publisher *p = open_fake(f, "redis://h", 0, 0);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, publisher_thread, p), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(mae_publisher_flush(p, 10000), MAE_OK);
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.calls, THREADS * PER_THREAD);
    assert_int_equal(st.published, THREADS * PER_THREAD);
    assert_int_equal(fake_redis_published(f), THREADS * PER_THREAD);
    tu_assert_counters_add_up(p);
    assert_int_equal(mae_publisher_close(p, 1000), MAE_OK);
    fake_redis_free(f);
}

typedef struct log_seen {
    pthread_mutex_t mu;
    int calls;
    char first[128];
} log_seen;

static void on_log(void *user, int level, const char *msg, uint64_t repeats)
{
    log_seen *s = user;
    (void)repeats;
    pthread_mutex_lock(&s->mu);
    if (s->calls++ == 0)
        snprintf(s->first, sizeof s->first, "%d %s", level, msg);
    pthread_mutex_unlock(&s->mu);
}

static void test_log_is_rate_limited(void **state)
{
    (void)state;
    log_seen seen = {.mu = PTHREAD_MUTEX_INITIALIZER};
    fake_redis *f = fake_redis_new();
    fake_redis_fail_connects(f, 1000000);
    mae_publisher_config cfg;
    mae_publisher *p = NULL;
    mae_publisher_config_init(&cfg);
    cfg.redis_url = "redis://h";
    cfg.backoff_min_ms = 1;
    cfg.backoff_max_ms = 2;
    cfg.log = on_log;
    cfg.log_user = &seen;
    mae__transport_ops ops = fake_redis_ops(f);
    assert_int_equal(mae__publisher_open_with(&cfg, &ops, &p), MAE_OK);
    publish_n(p, 0, 1);
    mae_publisher_stats st;
    TU_EVENTUALLY((mae_publisher_stats_get(p, &st), st.connect_failures >= 20));
    assert_true(st.connect_failures >= 20);
    pthread_mutex_lock(&seen.mu);
    assert_int_equal(seen.calls, 1); /* once per kind per minute */
    assert_non_null(strstr(seen.first, "connect failed"));
    pthread_mutex_unlock(&seen.mu);
    assert_int_equal(mae_publisher_close(p, 50), MAE_ETIMEDOUT);
    fake_redis_free(f);
}

/* docs/publisher.md: reconnect backoff from 100 ms doubling to 5 s, with
 * -25 %/+50 % jitter. */
static void test_backoff_schedule(void **state)
{
    (void)state;
    const double base[] = {0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0};
    for (int n = 1; n <= 9; n++) {
        double b = base[n - 1];
        assert_float_equal(mae__backoff_delay(100, 5000, n, 0.0), b * 0.75, 1e-9);
        assert_float_equal(mae__backoff_delay(100, 5000, n, 0.5), b * 1.125, 1e-9);
        assert_true(mae__backoff_delay(100, 5000, n, 0.999999) < b * 1.5);
        assert_true(mae__backoff_delay(100, 5000, n, 0.999999) > b * 1.4999);
    }
    assert_float_equal(mae__backoff_delay(100, 5000, 1000, 0.0), 3.75, 1e-9);
}

/* ---- the ring and the wake-up rules ---------------------------------------------
 * None of these tests calls flush before checking delivery: flush wakes the
 * I/O thread itself and would hide a missing wake-up. */

/* Waits (up to 5 s) until the fake has acknowledged n PUBLISHes. */
static size_t wait_published(fake_redis *f, size_t n)
{
    TU_EVENTUALLY(fake_redis_published(f) >= n);
    return fake_redis_published(f);
}

static void test_event_after_long_idle_is_delivered(void **state)
{
    (void)state;
    fake_redis *f = fake_redis_new();
    mae_publisher *p = open_fake(f, "redis://h", 0, 0);
    publish_n(p, 0, 3);
    assert_int_equal(wait_published(f, 3), 3);
    for (int round = 0; round < 3; round++) {
        /* Long enough for the thread to finish its linger and fall asleep. */
        tu_sleep_ms(round == 0 ? 1500 : 200);
        publish_n(p, 3 + round, 1);
        assert_int_equal(wait_published(f, (size_t)(4 + round)), 4 + round);
        assert_message_n(f, (size_t)(3 + round), 3 + round);
    }
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.published, 6);
    assert_int_equal(st.connects, 1);
    tu_assert_counters_add_up(p);
    assert_int_equal(mae_publisher_close(p, 1000), MAE_OK);
    fake_redis_free(f);
}

/* The voluntary context switches of thread tid of this process, or -1. */
static long voluntary_switches(long tid)
{
    char path[64], line[128];
    long v = -1;
    snprintf(path, sizeof path, "/proc/self/task/%ld/status", tid);
    FILE *fp = fopen(path, "r");
    if (!fp)
        return -1;
    while (fgets(line, sizeof line, fp))
        if (sscanf(line, "voluntary_ctxt_switches: %ld", &v) == 1)
            break;
    fclose(fp);
    return v;
}

/* The ids of this process's threads, up to max; returns how many. */
static int list_threads(long *ids, int max)
{
    int n = 0;
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return 0;
    for (struct dirent *e; (e = readdir(d)) && n < max;)
        if (e->d_name[0] != '.')
            ids[n++] = atol(e->d_name);
    closedir(d);
    return n;
}

static void test_idle_thread_sleeps(void **state)
{
    (void)state;
    long before[64], after[64], io_tid = -1;
    int nb = list_threads(before, 64);
    fake_redis *f = fake_redis_new();
    mae_publisher *p = open_fake(f, "redis://h", 0, 0);
    int na = list_threads(after, 64);
    for (int i = 0; i < na && io_tid < 0; i++) {
        bool old = false;
        for (int j = 0; j < nb; j++)
            old = old || after[i] == before[j];
        if (!old)
            io_tid = after[i];
    }
    assert_true(io_tid > 0);
    publish_n(p, 0, 10);
    assert_int_equal(wait_published(f, 10), 10);
    tu_sleep_ms(500); /* the ring's pages are made resident meanwhile */
    long v0 = voluntary_switches(io_tid);
    tu_sleep_ms(2000);
    long v1 = voluntary_switches(io_tid);
    assert_true(v0 >= 0 && v1 >= v0);
    /* Asleep with nothing to send: no timer wakes it (the old design polled
     * about 30 times a second). */
    if (v1 - v0 > 2)
        fail_msg("the idle I/O thread woke %ld times in 2 s", v1 - v0);
    publish_n(p, 10, 1);
    assert_int_equal(wait_published(f, 11), 11);
    assert_int_equal(mae_publisher_close(p, 1000), MAE_OK);
    fake_redis_free(f);
}

#define NAP_THREADS 4
#define NAP_EVENTS 400

typedef struct napper {
    mae_publisher *p;
    int id;
} napper;

/* Publishes in short bursts with pauses longer than the linger, so the I/O
 * thread keeps falling asleep and being woken while others publish. */
static void *napping_publisher(void *arg)
{
    napper *w = arg;
    char data[64];
    unsigned seed = (unsigned)w->id * 7919u + 1;
    for (int i = 0; i < NAP_EVENTS; i++) {
        snprintf(data, sizeof data, "{\"t\":%d,\"i\":%d}", w->id, i);
        mae_safe_publish(w->p, "test.event", i, data, "test");
        seed = seed * 1103515245u + 12345u;
        if ((seed >> 16) % 8 == 0)
            tu_sleep_ms(1 + (int)((seed >> 8) % 4));
    }
    return NULL;
}

static void test_threads_across_sleep_and_wake_lose_nothing(void **state)
{
    (void)state;
    fake_redis *f = fake_redis_new();
    mae_publisher *p = open_fake(f, "redis://h", 0, 0);
    pthread_t t[NAP_THREADS];
    napper w[NAP_THREADS];
    for (int i = 0; i < NAP_THREADS; i++) {
        w[i] = (napper){p, i};
        assert_int_equal(pthread_create(&t[i], NULL, napping_publisher, &w[i]), 0);
    }
    for (int i = 0; i < NAP_THREADS; i++)
        pthread_join(t[i], NULL);
    size_t total = NAP_THREADS * NAP_EVENTS;
    assert_int_equal(wait_published(f, total), total);
    /* Each thread's events arrive once each, in its order. */
    int next[NAP_THREADS] = {0};
    for (size_t k = 0; k < total; k++) {
        const char *m = fake_redis_message(f, k);
        const char *d = strstr(m, "\"data\":{\"t\":");
        assert_non_null(d);
        int tid = -1, i = -1;
        assert_int_equal(sscanf(d, "\"data\":{\"t\":%d,\"i\":%d}", &tid, &i), 2);
        assert_true(tid >= 0 && tid < NAP_THREADS);
        assert_int_equal(i, next[tid]);
        next[tid]++;
    }
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.calls, total);
    assert_int_equal(st.published, total);
    tu_assert_counters_add_up(p);
    assert_int_equal(mae_publisher_close(p, 1000), MAE_OK);
    fake_redis_free(f);
}

/* Lines of many lengths through a small ring that never empties (the I/O
 * thread takes two at a time), so lines and their lengths wrap around its
 * end: every byte arrives as built. */
static void test_ring_wraps_lines_intact(void **state)
{
    (void)state;
    fake_redis *f = fake_redis_new();
    mae_publisher_config cfg;
    mae_publisher *p = NULL;
    mae_publisher_config_init(&cfg);
    cfg.redis_url = "redis://h";
    cfg.queue_max_bytes = 977; /* odd, so positions drift across the end */
    cfg.batch_max_events = 2;
    mae__transport_ops ops = fake_redis_ops(f);
    assert_int_equal(mae__publisher_open_with(&cfg, &ops, &p), MAE_OK);
    char data[400], pad[300];
    int sent = 0;
    for (int i = 0; i < 600; i++) {
        size_t padlen = (size_t)(i * 37 % 250);
        memset(pad, 'a' + i % 26, padlen);
        pad[padlen] = 0;
        snprintf(data, sizeof data, "{\"n\":%d,\"pad\":\"%s\"}", i, pad);
        mae_publisher_stats st;
        /* Keep the queue from filling, so nothing is dropped. */
        double until = tu_now_s() + 5;
        do {
            mae_publisher_stats_get(p, &st);
        } while (st.queued_bytes > 977 - 400 && tu_now_s() < until && (tu_sleep_ms(1), true));
        mae_safe_publish(p, "test.event", i, data, "test");
        sent++;
    }
    assert_int_equal(wait_published(f, (size_t)sent), sent);
    for (int i = 0; i < sent; i++) {
        char want[400], pad2[300];
        size_t padlen = (size_t)(i * 37 % 250);
        memset(pad2, 'a' + i % 26, padlen);
        pad2[padlen] = 0;
        snprintf(want, sizeof want, "\"data\":{\"n\":%d,\"pad\":\"%s\"}", i, pad2);
        assert_non_null(strstr(fake_redis_message(f, (size_t)i), want));
    }
    tu_assert_counters_add_up(p);
    assert_int_equal(mae_publisher_close(p, 1000), MAE_OK);
    fake_redis_free(f);
}

/* queue_max_bytes counts the lines' bytes exactly: three lines fit in
 * three lines' worth, not in one byte less. */
static void test_byte_bound_is_exact(void **state)
{
    (void)state;
    fake_redis *f = fake_redis_new();
    mae_publisher *p = open_fake(f, "redis://h", 0, 0);
    publish_n(p, 0, 1);
    assert_int_equal(wait_published(f, 1), 1);
    size_t line = strlen(fake_redis_message(f, 0)); /* publish_n's lines: same length for 0..9 */
    assert_int_equal(mae_publisher_close(p, 1000), MAE_OK);
    fake_redis_free(f);

    for (int less = 0; less <= 1; less++) {
        f = fake_redis_new();
        fake_redis_fail_connects(f, 1000000);
        p = open_fake(f, "redis://h", 0, 3 * line - (size_t)less);
        publish_n(p, 1, 4);
        mae_publisher_stats st;
        mae_publisher_stats_get(p, &st);
        assert_int_equal(st.queued, less ? 2 : 3);
        assert_int_equal(st.queued_bytes, (less ? 2 : 3) * line);
        assert_int_equal(st.dropped_queue_full, less ? 2 : 1);
        tu_assert_counters_add_up(p);
        assert_int_equal(mae_publisher_close(p, 50), MAE_ETIMEDOUT);
        fake_redis_free(f);
    }
}

/* close(0) with nothing queued abandons nothing: MAE_OK, as the header
 * promises (MAE_ETIMEDOUT only "when some were abandoned"), even though
 * it has no time to wait for the I/O thread to leave. */
static void test_close_without_time_on_an_empty_queue_is_ok(void **state)
{
    (void)state;
    mae_publisher *p = cap_open();
    publish_n(p, 0, 3);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.published, 3);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(mae_publisher_close(p, 0), MAE_OK);
}

/* A batch_max_events so large that batch_max times a pointer's size
 * overflows size_t must not size the batch's arrays by the wrapped
 * product: every event still arrives, in order (under ASan the old code
 * wrote past an 8-byte array). */
static void test_huge_batch_max_does_not_overflow(void **state)
{
    (void)state;
    fake_redis *f = fake_redis_new();
    mae_publisher_config cfg;
    mae_publisher *p = NULL;
    mae_publisher_config_init(&cfg);
    cfg.redis_url = "redis://h";
    cfg.queue_max_events = 64;
    cfg.batch_max_events = ((size_t)1 << (sizeof(size_t) * 8 - 3)) + 1;
    mae__transport_ops ops = fake_redis_ops(f);
    assert_int_equal(mae__publisher_open_with(&cfg, &ops, &p), MAE_OK);
    publish_n(p, 0, 50);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    assert_int_equal(fake_redis_published(f), 50);
    for (int i = 0; i < 50; i++)
        assert_message_n(f, (size_t)i, i);
    tu_assert_counters_add_up(p);
    assert_int_equal(mae_publisher_close(p, 1000), MAE_OK);
    fake_redis_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_defaults),
        cmocka_unit_test(test_open_rejects_bad_config),
        cmocka_unit_test(test_null_and_disabled_are_noops),
        cmocka_unit_test(test_delivers_in_order_and_counts),
        cmocka_unit_test(test_custom_channel),
        cmocka_unit_test(test_keeps_events_while_connects_fail),
        cmocka_unit_test(test_auth_and_select),
        cmocka_unit_test(test_auth_failure_keeps_events_queued),
        cmocka_unit_test(test_error_replies_are_counted),
        cmocka_unit_test(test_connection_breaks_mid_batch),
        cmocka_unit_test(test_peer_closed_idle_connection_loses_nothing),
        cmocka_unit_test(test_queue_bounded_by_count_and_bytes),
        cmocka_unit_test(test_close_returns_in_time_while_hung),
        cmocka_unit_test(test_close_without_time_on_an_empty_queue_is_ok),
        cmocka_unit_test(test_fork_child_is_harmless),
        cmocka_unit_test(test_many_threads),
        cmocka_unit_test(test_log_is_rate_limited),
        cmocka_unit_test(test_backoff_schedule),
        cmocka_unit_test(test_event_after_long_idle_is_delivered),
        cmocka_unit_test(test_idle_thread_sleeps),
        cmocka_unit_test(test_threads_across_sleep_and_wake_lose_nothing),
        cmocka_unit_test(test_ring_wraps_lines_intact),
        cmocka_unit_test(test_byte_bound_is_exact),
        cmocka_unit_test(test_huge_batch_max_does_not_overflow),
        cmocka_unit_test(test_size_handshake_and_fields_at_the_end),
        cmocka_unit_test(test_event_over_max_event_bytes_is_counted_not_sent),
        cmocka_unit_test(test_batch_buffer_shrinks_after_a_large_batch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
