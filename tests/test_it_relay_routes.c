/* MailAgent's two routes on a relay over a real redis-server (issue 17):
 * GET /api/events/health in pub/sub and stream mode and with Redis away,
 * and POST /api/events/publish, whose accepted events go to Redis through
 * the library's publisher: seen by a stream client of the relay and by a
 * `redis-cli SUBSCRIBE` (pub/sub), or appended to the stream with Redis's
 * ids (stream mode); refused ones by neither. */
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

#include <mailagent/publisher.h>

#include "harness.h"
#include "redis_harness.h"
#include "testutil.h"

#define STREAM "/api/events/stream"

static mtr_redis g_redis;
static char g_out[512];

static int setup(void **state)
{
    (void)state;
    if (!rh_have(MAE_REDIS_SERVER))
        return -1;
    rh_out_dir("test_it_relay_routes", g_out, sizeof g_out);
    return mtr_start(&g_redis, NULL);
}

static int teardown(void **state)
{
    (void)state;
    mtr_cleanup(&g_redis);
    return 0;
}

static void start(rh_relay *r, const char *url, const char *tag, const char *const *args)
{
    char log[700];
    snprintf(log, sizeof log, "%s/%s.log", g_out, tag);
    assert_int_equal(rh_relay_start(r, url, args, NULL, log), 0);
}

static char *health(int port)
{
    char *a = rh_request(port, "GET /api/events/health HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_non_null(a);
    assert_non_null(strstr(a, "HTTP/1.1 200 OK"));
    return a;
}

static void post_expect(int port, const char *headers, const char *body, const char *status,
                        const char *in_answer)
{
    char *a = rh_post(port, headers, body, strlen(body));
    if (!a || strncmp(a, status, strlen(status)) != 0 || (in_answer && !strstr(a, in_answer)))
        fail_msg("POST %s\nwanted %s %s, got:\n%s", body, status, in_answer ? in_answer : "",
                 a ? a : "(nothing)");
    free(a);
}

static void test_health_modes(void **state)
{
    (void)state;
    rh_relay r;
    start(&r, g_redis.url, "health-pubsub", NULL);
    rh_conn *c = rh_get(r.port, STREAM, NULL);
    rh_wait_clients(r.port, NULL, 1, 10000);
    char *a = NULL;
    for (int i = 0; i < 100; i++) {   /* until subscribed */
        free(a);
        a = health(r.port);
        if (strstr(a, "\"ok\":true"))
            break;
        rh_sleep_ms(50);
    }
    assert_non_null(strstr(a, "{\"ok\":true,\"source\":\"pubsub\",\"mode\":\"pubsub\","
                              "\"subscriber_count\":1,\"last_event_ts\":null,"
                              "\"last_error\":null,"));
    free(a);
    rh_close(c);
    assert_int_equal(rh_relay_stop(&r, SIGTERM, 10000, NULL), 0);

    const char *sargs[] = {"--stream", "ev:health", NULL};
    start(&r, g_redis.url, "health-stream", sargs);
    a = health(r.port);
    assert_non_null(strstr(a, "\"source\":\"stream\",\"mode\":\"stream\""));
    free(a);
    a = rh_request(r.port, "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_non_null(strstr(a, "\"source\":\"stream\",\"mode\":\"stream\",\"ok\":true}"));
    free(a);
    assert_int_equal(rh_relay_stop(&r, SIGTERM, 10000, NULL), 0);

    /* Redis away: not ok, and why; no secret in it. */
    char dead[96];
    mtr_redis none;
    memset(&none, 0, sizeof none);
    assert_int_equal(mtr_reserve_port(&none), 0);
    snprintf(dead, sizeof dead, "redis://:hunter2@127.0.0.1:%d", none.port);
    start(&r, dead, "health-down", NULL);
    a = NULL;
    for (int i = 0; i < 100; i++) {
        free(a);
        a = health(r.port);
        if (strstr(a, "\"last_error\":\"redis: "))
            break;
        rh_sleep_ms(50);
    }
    assert_non_null(strstr(a, "\"ok\":false"));
    assert_non_null(strstr(a, "\"last_error\":\"redis: "));
    assert_null(strstr(a, "hunter2"));
    free(a);
    assert_int_equal(rh_relay_stop(&r, SIGTERM, 10000, NULL), 0);
}

static void test_publish_pubsub(void **state)
{
    (void)state;
    rh_relay r;
    start(&r, g_redis.url, "publish-pubsub", NULL);
    rh_conn *c = rh_get(r.port, STREAM, NULL);
    rh_wait_clients(r.port, NULL, 1, 10000);
    char sub_out[700], port[16];
    snprintf(sub_out, sizeof sub_out, "%s/subscribe.out", g_out);
    snprintf(port, sizeof port, "%d", g_redis.port);
    const char *argv[] = {MAE_REDIS_CLI, "-h", "127.0.0.1", "-p", port, "SUBSCRIBE",
                          MAE_DEFAULT_CHANNEL, NULL};
    pid_t sub = rh_spawn(argv, NULL, sub_out, NULL);
    free(rh_wait_text(sub_out, MAE_DEFAULT_CHANNEL, 10000, 20));
    /* Until the relay itself is subscribed. */
    for (int i = 0; i < 100 && rh_metric(r.port, NULL, "mailagent_relay_redis_connected") != 1; i++)
        rh_sleep_ms(50);

    post_expect(r.port, NULL, "{\"event_type\":\"email.new\",\"internal_id\":1,\"x\":2}",
                "HTTP/1.1 200", "{\"accepted\":1,\"skipped\":0,\"last_id\":null}");
    post_expect(r.port, "Content-Type: application/x-ndjson\r\n",
                "{\"event_type\":\"job.done\",\"source\":\"outbox\"}\n"
                "{\"event_type\":\"folder.changed\",\"data\":null}\n",
                "HTTP/1.1 200", "{\"accepted\":2,");
    post_expect(r.port, NULL, "{\"event_type\":\"\"}", "HTTP/1.1 400", NULL);
    post_expect(r.port, "Content-Type: application/x-ndjson\r\n",
                "{\"event_type\":\"never\"}\nnot json\n", "HTTP/1.1 400", "\"line\":2");
    char *a = rh_request(r.port, "PUT /api/events/publish HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_non_null(strstr(a, "HTTP/1.1 405"));
    assert_non_null(strstr(a, "Allow: POST"));
    free(a);
    /* 413: more events at once than the relay's queue to Redis ever holds. */
    size_t n = 70000, len = 0;
    char *big = malloc(n * 24);
    assert_non_null(big);
    for (size_t i = 0; i < n; i++)
        len += (size_t)sprintf(big + len, "{\"event_type\":\"q\"}\n");
    a = rh_post(r.port, "Content-Type: application/x-ndjson\r\n", big, len);
    free(big);
    assert_non_null(a);
    assert_non_null(strstr(a, "HTTP/1.1 413"));
    assert_non_null(strstr(a, "70000 events at once"));
    free(a);
    post_expect(r.port, NULL, "{\"event_type\":\"last\"}", "HTTP/1.1 200", NULL);

    assert_true(rh_wait_for(c, 0, "\"event_type\":\"last\"", 10000) > 0);
    assert_int_equal(rh_count(c, "event: mailagent\n"), 4);
    assert_non_null(strstr(c->buf, "data: {\"event_type\":\"email.new\",\"ts\":"));
    assert_non_null(strstr(c->buf, ",\"internal_id\":1,\"data\":{},\"source\":\"mailagent\"}\n"));
    assert_null(strstr(c->buf, "never"));
    assert_null(strstr(c->buf, "\"q\""));
    rh_close(c);
    char *text = rh_wait_text(sub_out, "\"event_type\":\"last\"", 10000, 20);
    assert_non_null(text);
    const char *types[] = {"email.new", "job.done", "folder.changed", "last"};
    for (size_t i = 0; i < 4; i++) {
        char want[64];
        snprintf(want, sizeof want, "{\"event_type\":\"%s\",\"ts\":", types[i]);
        assert_non_null(strstr(text, want));
    }
    assert_null(strstr(text, "never"));
    assert_null(strstr(text, "\"q\""));
    free(text);
    kill(sub, SIGTERM);
    rh_wait(sub, 5000);
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_publish_events_total"), 4);
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_publish_refused_too_large_total"), 1);
    assert_int_equal(rh_relay_stop(&r, SIGTERM, 10000, NULL), 0);
}

/* 503: Redis is away and the relay's queue to it has no room for the
 * whole request: nothing of it is taken (all or nothing), and the relay
 * still stops at once (its publisher is closed within a second). */
static void test_publish_queue_full(void **state)
{
    (void)state;
    mtr_redis later;
    memset(&later, 0, sizeof later);
    assert_int_equal(mtr_reserve_port(&later), 0);
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", later.port);
    rh_relay r;
    start(&r, url, "queue-full", NULL);
    size_t n = 40000, len = 0;
    char *body = malloc(n * 32);
    assert_non_null(body);
    for (size_t i = 0; i < n; i++)
        len += (size_t)sprintf(body + len, "{\"event_type\":\"q\"}\n");
    char *a = rh_post(r.port, "Content-Type: application/x-ndjson\r\n", body, len);
    assert_non_null(strstr(a, "HTTP/1.1 200"));
    assert_non_null(strstr(a, "{\"accepted\":40000,"));
    free(a);
    a = rh_post(r.port, "Content-Type: application/x-ndjson\r\n", body, len);
    assert_non_null(strstr(a, "HTTP/1.1 503"));
    assert_non_null(strstr(a, "Retry-After: 1"));
    assert_non_null(strstr(a, "queue to Redis is full"));
    free(a);
    free(body);
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_publish_refused_unavailable_total"), 1);
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_publish_events_total"), 40000);
    assert_int_equal(rh_relay_stop(&r, SIGTERM, 10000, NULL), 0);
}

static void test_publish_stream(void **state)
{
    (void)state;
    rh_relay r;
    const char *args[] = {"--stream", "ev:routes", NULL};
    start(&r, g_redis.url, "publish-stream", args);
    /* Connected first, so the client's first frame has its position. */
    for (int i = 0; i < 100 && rh_metric(r.port, NULL, "mailagent_relay_redis_connected") != 1; i++)
        rh_sleep_ms(50);
    rh_conn *c = rh_get(r.port, STREAM, NULL);
    rh_wait_clients(r.port, NULL, 1, 10000);
    /* A hub publisher's batch resent: applied once, in the stream too. */
    const char *hdr = "X-MailAgent-Publisher: 00000000000000000000000000000001\r\n"
                      "X-MailAgent-Batch-Start: 1\r\nContent-Type: application/x-ndjson\r\n";
    const char *body = "{\"event_type\":\"s1\"}\n{\"event_type\":\"s2\"}\n";
    post_expect(r.port, hdr, body, "HTTP/1.1 200", "{\"accepted\":2,\"skipped\":0,\"last_id\":null}");
    post_expect(r.port, hdr, body, "HTTP/1.1 200", "{\"accepted\":0,\"skipped\":2,");
    assert_true(rh_wait_for(c, 0, "\"event_type\":\"s2\"", 10000) > 0);
    assert_int_equal(rh_count(c, "event: mailagent\n"), 2);
    /* With Redis's ids. */
    assert_int_equal(rh_count(c, "\nid: "), 3);
    rh_close(c);
    assert_int_equal(rh_relay_stop(&r, SIGTERM, 10000, NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health_modes),
        cmocka_unit_test(test_publish_pubsub),
        cmocka_unit_test(test_publish_stream),
        cmocka_unit_test(test_publish_queue_full),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
