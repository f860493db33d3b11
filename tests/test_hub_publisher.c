/* Tests of the publisher in hub mode against a fake hub on a loopback port
 * (tests/support/fake_hub.h): delivery once and in order on one kept-alive
 * connection, the wire protocol's headers, resends after a connection lost
 * before the answer (skipped by the hub and counted), refusals counted by
 * why, 503 retried, a hung or trickling hub, an absent hub, and chunked
 * answers. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "fake_hub.h"
#include "testutil.h"

/* ---- the log callback, recorded ---- */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static int log_calls;
static char log_last[256];

static void log_fn(void *user, int level, const char *msg, uint64_t repeats)
{
    (void)user;
    (void)level;
    (void)repeats;
    pthread_mutex_lock(&log_mu);
    log_calls++;
    snprintf(log_last, sizeof log_last, "%s", msg);
    pthread_mutex_unlock(&log_mu);
}

static int logged(char *last, size_t n)
{
    pthread_mutex_lock(&log_mu);
    int c = log_calls;
    if (last)
        snprintf(last, n, "%s", log_last);
    log_calls = 0;
    log_last[0] = '\0';
    pthread_mutex_unlock(&log_mu);
    return c;
}

/* ---- helpers ---- */

static mae_publisher *open_hub(const char *url, const char *token, int io_timeout_ms,
                               size_t max_events)
{
    mae_publisher_config cfg;
    mae_publisher *p = NULL;
    char why[256] = "";
    mae_publisher_config_init(&cfg);
    cfg.relay_url = url;
    cfg.relay_token = token;
    cfg.backoff_min_ms = 1;
    cfg.backoff_max_ms = 20;
    cfg.io_timeout_ms = io_timeout_ms;
    cfg.connect_timeout_ms = 1000;
    cfg.log = log_fn;
    cfg.error_buf = why;
    cfg.error_buf_size = sizeof why;
    if (max_events)
        cfg.queue_max_events = max_events;
    if (mae_publisher_open(&cfg, &p) != MAE_OK)
        fail_msg("open: %s", why);
    logged(NULL, 0);
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

/* The hub holds exactly events from..from+n-1, in order, once each. */
static void assert_hub_holds(fake_hub *h, int n)
{
    char line[512], needle[64];
    assert_int_equal(fake_hub_events(h), (size_t)n);
    for (int i = 0; i < n; i++) {
        assert_true(fake_hub_event(h, (size_t)i, line, sizeof line));
        snprintf(needle, sizeof needle, "\"data\":{\"n\":%d}", i);
        if (!strstr(line, needle))
            fail_msg("event %d is %s", i, line);
        assert_non_null(strstr(line, "\"event_type\":\"test.event\""));
    }
    assert_int_equal(fake_hub_gaps(h), 0);
    assert_int_equal(fake_hub_bad(h), 0);
}

static mae_publisher_stats stats(mae_publisher *p)
{
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    tu_assert_counters_add_up(p);
    assert_true(st.rejected_auth + st.rejected_invalid + st.rejected_server <=
                st.dropped_send_error);
    return st;
}

/* ---- delivery ---- */

/* 3000 events in batches: each arrives once, in order, on one connection,
 * with the protocol's headers. */
static void test_every_event_once_in_order(void **state)
{
    (void)state;
    fake_hub *h = fake_hub_start();
    fake_hub_require_token(h, "s3cret");
    mae_publisher *p = open_hub(fake_hub_url(h), "s3cret", 2000, 0);
    publish_n(p, 0, 3000);
    assert_int_equal(mae_publisher_flush(p, 20000), MAE_OK);
    assert_hub_holds(h, 3000);
    mae_publisher_stats st = stats(p);
    assert_int_equal(st.published, 3000);
    assert_int_equal(st.dropped_send_error, 0);
    assert_int_equal(st.resent, 0);
    assert_int_equal(st.skipped, 0);
    assert_int_equal(st.connects, 1);
    assert_true(st.connected);
    assert_int_equal(fake_hub_connections(h), 1);   /* kept alive */
    assert_true(fake_hub_requests(h) >= 3000 / 256); /* batches, not one POST per event */

    char v[128];
    assert_true(fake_hub_header(h, ":request", v, sizeof v));
    assert_string_equal(v, "POST /api/events/publish HTTP/1.1");
    assert_true(fake_hub_header(h, "Content-Type", v, sizeof v));
    assert_string_equal(v, "application/x-ndjson");
    assert_true(fake_hub_header(h, "Connection", v, sizeof v));
    assert_string_equal(v, "keep-alive");
    assert_true(fake_hub_header(h, "X-MailAgent-Local-Token", v, sizeof v));
    assert_string_equal(v, "s3cret");
    assert_true(fake_hub_header(h, "Host", v, sizeof v));
    assert_string_equal(v, fake_hub_url(h) + strlen("http://"));
    assert_true(fake_hub_header(h, "X-MailAgent-Publisher", v, sizeof v));
    assert_int_equal(strlen(v), 32);
    assert_false(fake_hub_header(h, "Transfer-Encoding", v, sizeof v));
    assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);
    fake_hub_stop(h);
}

/* Without a token configured, no token header is sent. */
static void test_no_token_no_header(void **state)
{
    (void)state;
    fake_hub *h = fake_hub_start();
    mae_publisher *p = open_hub(fake_hub_url(h), NULL, 2000, 0);
    /* One event, so one batch whatever the I/O thread's timing (three could
     * go as two batches, the last starting at 2, under valgrind). */
    publish_n(p, 0, 1);
    assert_int_equal(mae_publisher_flush(p, 10000), MAE_OK);
    char v[64];
    assert_false(fake_hub_header(h, "X-MailAgent-Local-Token", v, sizeof v));
    assert_true(fake_hub_header(h, "X-MailAgent-Batch-Start", v, sizeof v));
    assert_string_equal(v, "1");
    assert_hub_holds(h, 1);
    assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);
    fake_hub_stop(h);
}

/* Twenty events of 700 KB would make a 14 MB body, over a relay's default
 * 16 MiB limit only a little less so than a full batch of 1 MiB events:
 * batches stay under 8 MiB of body, and every event arrives. */
static void test_large_events_split_into_bounded_bodies(void **state)
{
    (void)state;
    fake_hub *h = fake_hub_start();
    mae_publisher *p = open_hub(fake_hub_url(h), NULL, 5000, 0);
    size_t big = 700 * 1000;
    char *data = malloc(big + 32);
    assert_non_null(data);
    for (int i = 0; i < 20; i++) {
        int k = snprintf(data, 32, "{\"n\":%d,\"s\":\"", i);
        memset(data + k, 'x', big);
        memcpy(data + k + big, "\"}", 3);
        mae_safe_publish(p, "test.event", i, data, "test");
    }
    free(data);
    assert_int_equal(mae_publisher_flush(p, 60000), MAE_OK);
    mae_publisher_stats st = stats(p);
    assert_int_equal(st.published, 20);
    assert_int_equal(fake_hub_events(h), 20);
    assert_true(fake_hub_max_body(h) <= ((size_t)8 << 20));
    assert_true(fake_hub_requests(h) >= 2);
    char *line = malloc(big + 512);
    assert_non_null(line);
    for (int i = 0; i < 20; i++) {
        char needle[32];
        assert_true(fake_hub_event(h, (size_t)i, line, big + 512));
        snprintf(needle, sizeof needle, "{\"n\":%d,", i);
        assert_non_null(strstr(line, needle));
    }
    free(line);
    assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);
    fake_hub_stop(h);
}

/* ---- resends ---- */

/* The hub applies the batch, then the connection breaks before the whole
 * answer: the publisher resends it on a new connection, the hub skips it,
 * and the counters say so. Nothing is doubled, nothing lost. */
static void test_resend_after_cut_answer_is_skipped(void **state)
{
    (void)state;
    fake_hub *h = fake_hub_start();
    mae_publisher *p = open_hub(fake_hub_url(h), NULL, 2000, 0);
    fake_hub_push(h, HUB_CLOSE_MID, 0);
    publish_n(p, 0, 10);
    assert_int_equal(mae_publisher_flush(p, 10000), MAE_OK);
    assert_hub_holds(h, 10);
    mae_publisher_stats st = stats(p);
    assert_int_equal(st.published, 10);
    /* The cut batch holds the first 1 to 10 events (how many the I/O
     * thread had gathered): all of it resent, all of it skipped. */
    assert_true(st.resent >= 1);
    assert_int_equal(st.skipped, st.resent);
    assert_int_equal(fake_hub_skipped(h), st.skipped);
    assert_int_equal(st.connects, 2);
    char last[256];
    assert_true(logged(last, sizeof last) >= 1);
    assert_non_null(strstr(last, "connection lost"));
    /* The next events follow on the new connection, numbered on. */
    publish_n(p, 10, 5);
    assert_int_equal(mae_publisher_flush(p, 10000), MAE_OK);
    assert_hub_holds(h, 15);
    assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);
    fake_hub_stop(h);
}

/* The connection closes before the hub applied anything: the resend is
 * applied, none skipped. */
static void test_resend_after_drop_is_applied(void **state)
{
    (void)state;
    fake_hub *h = fake_hub_start();
    mae_publisher *p = open_hub(fake_hub_url(h), NULL, 2000, 0);
    fake_hub_push(h, HUB_DROP, 0);
    fake_hub_push(h, HUB_DROP, 0);
    publish_n(p, 0, 10);
    assert_int_equal(mae_publisher_flush(p, 10000), MAE_OK);
    assert_hub_holds(h, 10);
    mae_publisher_stats st = stats(p);
    assert_int_equal(st.published, 10);
    assert_true(st.resent >= 2); /* the first batch, twice */
    assert_int_equal(st.skipped, 0);
    assert_int_equal(fake_hub_skipped(h), 0);
    assert_int_equal(st.connects, 3);
    assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);
    fake_hub_stop(h);
}

/* A hub that trickles its answer a byte every 50 ms is cut off at the I/O
 * timeout like one that never answers; the batch it applied is resent and
 * skipped. */
static void test_trickling_answer_times_out_and_resends(void **state)
{
    (void)state;
    fake_hub *h = fake_hub_start();
    mae_publisher *p = open_hub(fake_hub_url(h), NULL, 500, 0);
    fake_hub_push(h, HUB_TRICKLE, 0);
    publish_n(p, 0, 5);
    assert_int_equal(mae_publisher_flush(p, 20000), MAE_OK);
    assert_hub_holds(h, 5);
    mae_publisher_stats st = stats(p);
    assert_int_equal(st.published, 5);
    assert_true(st.resent >= 1);
    assert_int_equal(st.skipped, st.resent);
    assert_non_null(strstr(st.last_error, "timed out"));
    assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);
    fake_hub_stop(h);
}

/* A chunked answer is acknowledged by its status; its body is not read,
 * so that connection is not reused. */
static void test_chunked_answer_acknowledges_and_reconnects(void **state)
{
    (void)state;
    fake_hub *h = fake_hub_start();
    mae_publisher *p = open_hub(fake_hub_url(h), NULL, 2000, 0);
    fake_hub_push(h, HUB_CHUNKED, 0);
    publish_n(p, 0, 5);
    assert_int_equal(mae_publisher_flush(p, 10000), MAE_OK);
    publish_n(p, 5, 5);
    assert_int_equal(mae_publisher_flush(p, 10000), MAE_OK);
    assert_hub_holds(h, 10);
    mae_publisher_stats st = stats(p);
    assert_int_equal(st.published, 10);
    assert_int_equal(st.resent, 0);
    assert_int_equal(st.connects, 2);
    assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);
    fake_hub_stop(h);
}

/* ---- refusals ---- */

/* A wrong token: 401, every event counted in rejected_auth (and so in
 * dropped_send_error), logged; nothing applied. */
static void test_401_counted_as_rejected_auth(void **state)
{
    (void)state;
    fake_hub *h = fake_hub_start();
    fake_hub_require_token(h, "right");
    mae_publisher *p = open_hub(fake_hub_url(h), "wrong", 2000, 0);
    publish_n(p, 0, 7);
    assert_int_equal(mae_publisher_flush(p, 10000), MAE_OK);
    mae_publisher_stats st = stats(p);
    assert_int_equal(st.published, 0);
    assert_int_equal(st.rejected_auth, 7);
    assert_int_equal(st.rejected_invalid, 0);
    assert_int_equal(st.dropped_send_error, 7);
    assert_int_equal(fake_hub_events(h), 0);
    assert_non_null(strstr(st.last_error, "HTTP 401"));
    char last[256];
    assert_int_equal(logged(last, sizeof last), 1);
    assert_non_null(strstr(last, "refused the credential"));
    assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);
    fake_hub_stop(h);
}

/* 400 and 413 drop their batch as rejected_invalid, and the next batch goes
 * on (numbered on: the hub sees no gap it would refuse). The second refusal
 * within a minute is folded into the log's repeat count. Which events make
 * up the refused batch depends on how many the I/O thread had gathered
 * (at least the first), so the sums are asserted, not the split. */
static void test_400_413_counted_as_rejected_invalid(void **state)
{
    (void)state;
    fake_hub *h = fake_hub_start();
    mae_publisher *p = open_hub(fake_hub_url(h), NULL, 2000, 0);
    fake_hub_push(h, HUB_STATUS, 400);
    publish_n(p, 0, 3);
    assert_int_equal(mae_publisher_flush(p, 10000), MAE_OK);
    fake_hub_push(h, HUB_STATUS, 413);
    publish_n(p, 3, 4);
    assert_int_equal(mae_publisher_flush(p, 10000), MAE_OK);
    publish_n(p, 7, 2);
    assert_int_equal(mae_publisher_flush(p, 10000), MAE_OK);
    mae_publisher_stats st = stats(p);
    assert_true(st.rejected_invalid >= 2);
    assert_int_equal(st.rejected_auth, 0);
    assert_int_equal(st.rejected_server, 0);
    assert_int_equal(st.dropped_send_error, st.rejected_invalid);
    assert_int_equal(st.published + st.rejected_invalid, 9);
    assert_true(st.published >= 2);
    assert_int_equal(fake_hub_events(h), st.published);
    assert_int_equal(fake_hub_bad(h), 0);
    assert_int_equal(logged(NULL, 0), 1); /* rate-limited: one report a minute */
    assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);
    fake_hub_stop(h);
}

/* A hub that refuses a body over its limit answers 413 before reading it.
 * The answer decides even when the publisher was still writing: the batch
 * is counted rejected_invalid, not resent for ever; the next (small) batch
 * goes through on a new connection. With linger the hub drains the body
 * first; without, it closes at once and the publisher's write fails. */
static void early_413(bool linger)
{
    fake_hub *h = fake_hub_start();
    fake_hub_body_limit(h, 1u << 20, linger);
    mae_publisher *p = open_hub(fake_hub_url(h), NULL, 3000, 0);
    size_t big = 900 * 1000;
    char *data = malloc(big + 32);
    assert_non_null(data);
    memcpy(data, "{\"s\":\"", 6);
    memset(data + 6, 'x', big);
    memcpy(data + 6 + big, "\"}", 3);
    /* The first event may go out alone (the thread wakes on it), the rest
     * gather behind it: at least one batch of several MB. */
    for (int i = 0; i < 8; i++)
        mae_safe_publish(p, "test.big", i, data, "test");
    free(data);
    assert_int_equal(mae_publisher_flush(p, 30000), MAE_OK);
    mae_publisher_stats st = stats(p);
    assert_true(st.rejected_invalid >= 7);
    assert_int_equal(st.published + st.rejected_invalid, 8);
    assert_non_null(strstr(st.last_error, "HTTP 413"));
    fake_hub_body_limit(h, 0, false);
    publish_n(p, 0, 3);
    assert_int_equal(mae_publisher_flush(p, 10000), MAE_OK);
    assert_int_equal(fake_hub_events(h), 3 + st.published);
    assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);
    fake_hub_stop(h);
}

static void test_413_before_the_body_lingering_hub(void **state)
{
    (void)state;
    early_413(true);
}

static void test_413_before_the_body_closing_hub(void **state)
{
    (void)state;
    early_413(false);
}

/* 503 is "not now": the batch is kept and resent after a backoff, never
 * dropped. */
static void test_503_retried_not_dropped(void **state)
{
    (void)state;
    fake_hub *h = fake_hub_start();
    mae_publisher *p = open_hub(fake_hub_url(h), NULL, 2000, 0);
    for (int i = 0; i < 5; i++)
        fake_hub_push(h, HUB_STATUS, 503);
    publish_n(p, 0, 4);
    assert_int_equal(mae_publisher_flush(p, 10000), MAE_OK);
    assert_hub_holds(h, 4);
    mae_publisher_stats st = stats(p);
    assert_int_equal(st.published, 4);
    assert_int_equal(st.dropped_send_error, 0);
    assert_true(st.resent >= 5); /* the first batch, five times */
    assert_true(fake_hub_requests(h) >= 6);
    assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);
    fake_hub_stop(h);
}

/* A 500 twice is retried; three times on one batch drops it as
 * rejected_server, and the next batch goes through. */
static void test_500_three_times_counted_as_rejected_server(void **state)
{
    (void)state;
    fake_hub *h = fake_hub_start();
    mae_publisher *p = open_hub(fake_hub_url(h), NULL, 2000, 0);
    fake_hub_push(h, HUB_STATUS, 500);
    fake_hub_push(h, HUB_STATUS, 502);
    publish_n(p, 0, 3);
    assert_int_equal(mae_publisher_flush(p, 10000), MAE_OK);
    mae_publisher_stats st = stats(p);
    assert_int_equal(st.published, 3);
    assert_int_equal(st.rejected_server, 0);
    for (int i = 0; i < 3; i++)
        fake_hub_push(h, HUB_STATUS, 500);
    publish_n(p, 3, 2);
    assert_int_equal(mae_publisher_flush(p, 10000), MAE_OK);
    publish_n(p, 5, 1);
    assert_int_equal(mae_publisher_flush(p, 10000), MAE_OK);
    st = stats(p);
    assert_true(st.rejected_server >= 1); /* the batch holding event 3, or 3 and 4 */
    assert_int_equal(st.dropped_send_error, st.rejected_server);
    assert_int_equal(st.published + st.rejected_server, 6);
    assert_int_equal(fake_hub_events(h), st.published);
    assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);
    fake_hub_stop(h);
}

/* The hub stops and a new one starts on its port: the events published
 * meanwhile wait in the queue and reach the new hub, whose first batch
 * from this publisher starts above 1 (counted as a gap, taken); the
 * publisher reconnects by itself. */
static void test_hub_restart(void **state)
{
    (void)state;
    fake_hub *h = fake_hub_start();
    int port = fake_hub_port(h);
    char url[64];
    snprintf(url, sizeof url, "%s", fake_hub_url(h));
    mae_publisher *p = open_hub(url, NULL, 1000, 0);
    publish_n(p, 0, 10);
    assert_int_equal(mae_publisher_flush(p, 10000), MAE_OK);
    assert_hub_holds(h, 10);
    fake_hub_stop(h);
    publish_n(p, 10, 10);
    TU_EVENTUALLY(stats(p).connect_failures >= 1);
    assert_true(stats(p).connect_failures >= 1);
    h = fake_hub_start_on(port);
    assert_int_equal(mae_publisher_flush(p, 20000), MAE_OK);
    char line[512];
    assert_int_equal(fake_hub_events(h), 10);
    assert_true(fake_hub_event(h, 0, line, sizeof line));
    assert_non_null(strstr(line, "\"data\":{\"n\":10}"));
    assert_true(fake_hub_event(h, 9, line, sizeof line));
    assert_non_null(strstr(line, "\"data\":{\"n\":19}"));
    assert_int_equal(fake_hub_gaps(h), 1);
    mae_publisher_stats st = stats(p);
    assert_int_equal(st.published, 20);
    assert_int_equal(st.dropped_send_error, 0);
    assert_int_equal(st.connects, 2);
    assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);
    fake_hub_stop(h);
}

/* ---- a hung hub, an absent hub ---- */

/* The hub accepts and never answers. Publish calls still return (the
 * benchmark measures how fast), the queue stays within its bound, the
 * counters add up, and close returns though the batch is stuck. When the
 * hub answers again the kept batch and the queue go out, once. */
static void test_hung_hub_never_holds_the_caller(void **state)
{
    (void)state;
    fake_hub *h = fake_hub_start();
    fake_hub_default(h, HUB_HANG, 0);
    mae_publisher *p = open_hub(fake_hub_url(h), NULL, 200, 500);
    publish_n(p, 0, 5);
    TU_EVENTUALLY(fake_hub_requests(h) >= 1);
    double t0 = tu_now_s();
    publish_n(p, 5, 5000);
    double publish_time = tu_now_s() - t0;
    mae_publisher_stats st = stats(p);
    assert_true(st.queued + st.in_flight <= 500 + 256);
    assert_true(st.dropped_queue_full > 0);
    assert_true(publish_time < 2.0); /* "returns": the benchmark measures */
    fake_hub_unhang(h);
    assert_int_equal(mae_publisher_flush(p, 20000), MAE_OK);
    st = stats(p);
    assert_int_equal(st.dropped_send_error, 0);
    assert_int_equal(fake_hub_events(h), st.published);
    assert_int_equal(fake_hub_gaps(h), 0);
    /* Hung again: close gives up within its timeout. */
    fake_hub_default(h, HUB_HANG, 0);
    publish_n(p, 0, 10);
    TU_EVENTUALLY(fake_hub_requests(h) >= 1 && stats(p).in_flight > 0);
    t0 = tu_now_s();
    assert_int_equal(mae_publisher_close(p, 300), MAE_ETIMEDOUT);
    assert_true(tu_now_s() - t0 < 2.0);
    fake_hub_stop(h);
}

/* Nothing listens: connect failures are counted and backed off, events
 * wait in the queue, close abandons them with MAE_ETIMEDOUT. */
static void test_absent_hub(void **state)
{
    (void)state;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &al), 0);
    close(s); /* the port is free and nobody listens on it */
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", ntohs(a.sin_port));
    mae_publisher *p = open_hub(url, "t", 200, 0);
    publish_n(p, 0, 10);
    TU_EVENTUALLY(stats(p).connect_failures >= 2);
    mae_publisher_stats st = stats(p);
    assert_true(st.connect_failures >= 2);
    assert_int_equal(st.connects, 0);
    assert_false(st.connected);
    assert_int_equal(st.queued + st.in_flight, 10);
    assert_non_null(strstr(st.last_error, "connection refused"));
    char last[256];
    assert_int_equal(logged(last, sizeof last), 1);
    assert_non_null(strstr(last, "connect failed"));
    assert_int_equal(mae_publisher_close(p, 100), MAE_ETIMEDOUT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_event_once_in_order),
        cmocka_unit_test(test_no_token_no_header),
        cmocka_unit_test(test_large_events_split_into_bounded_bodies),
        cmocka_unit_test(test_resend_after_cut_answer_is_skipped),
        cmocka_unit_test(test_resend_after_drop_is_applied),
        cmocka_unit_test(test_trickling_answer_times_out_and_resends),
        cmocka_unit_test(test_chunked_answer_acknowledges_and_reconnects),
        cmocka_unit_test(test_401_counted_as_rejected_auth),
        cmocka_unit_test(test_400_413_counted_as_rejected_invalid),
        cmocka_unit_test(test_413_before_the_body_lingering_hub),
        cmocka_unit_test(test_413_before_the_body_closing_hub),
        cmocka_unit_test(test_503_retried_not_dropped),
        cmocka_unit_test(test_500_three_times_counted_as_rejected_server),
        cmocka_unit_test(test_hub_restart),
        cmocka_unit_test(test_hung_hub_never_holds_the_caller),
        cmocka_unit_test(test_absent_hub),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
