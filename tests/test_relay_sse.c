/* Unit tests of what the relay writes: SSE frames (multi-line data, UTF-8
 * byte for byte, ids), HTTP chunks, the counters' two texts, and the
 * dashboard page's self-containment. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "relay/metrics.h"
#include "relay/page.h"
#include "relay/sse.h"

static void expect_frame(const char *event, const char *id, const char *data, size_t len,
                         const char *want)
{
    mae__buf b;
    mae__buf_init(&b);
    mae__sse_frame(&b, event, id, data, len);
    assert_false(b.oom);
    if (b.len != strlen(want) || memcmp(b.ptr, want, b.len) != 0)
        fail_msg("frame is \"%.*s\", want \"%s\"", (int)b.len, b.ptr, want);
    mae__buf_free(&b);
}

#define FRAME(ev, id, s, want) expect_frame(ev, id, s, sizeof s - 1, want)

static void test_event_frame(void **state)
{
    (void)state;
    FRAME("mailagent", NULL, "{\"event_type\":\"email.synced\",\"internal_id\":1}",
          "event: mailagent\ndata: {\"event_type\":\"email.synced\",\"internal_id\":1}\n\n");
    FRAME("ping", NULL, "", "event: ping\ndata: \n\n");
    FRAME("mailagent", "1716096000123-0", "x", "id: 1716096000123-0\nevent: mailagent\ndata: x\n\n");
}

static void test_multiline(void **state)
{
    (void)state;
    /* LF, CRLF and CR each end a line; CRLF is one end, not two. */
    FRAME("mailagent", NULL, "a\nb", "event: mailagent\ndata: a\ndata: b\n\n");
    FRAME("mailagent", NULL, "a\r\nb", "event: mailagent\ndata: a\ndata: b\n\n");
    FRAME("mailagent", NULL, "a\rb", "event: mailagent\ndata: a\ndata: b\n\n");
    FRAME("mailagent", NULL, "a\n\nb", "event: mailagent\ndata: a\ndata: \ndata: b\n\n");
    FRAME("mailagent", NULL, "a\r\rb", "event: mailagent\ndata: a\ndata: \ndata: b\n\n");
    FRAME("mailagent", NULL, "a\n\rb", "event: mailagent\ndata: a\ndata: \ndata: b\n\n");
    FRAME("mailagent", NULL, "a\n", "event: mailagent\ndata: a\ndata: \n\n");
    FRAME("mailagent", NULL, "\n", "event: mailagent\ndata: \ndata: \n\n");
    /* A message cannot forge a field or end the frame early. */
    FRAME("mailagent", NULL, "x\n\nevent: reset\ndata: y",
          "event: mailagent\ndata: x\ndata: \ndata: event: reset\ndata: data: y\n\n");
    /* Leading spaces survive (the reader strips exactly one). */
    FRAME("mailagent", NULL, "  x", "event: mailagent\ndata:   x\n\n");
}

static void test_bytes_pass_through(void **state)
{
    (void)state;
    /* UTF-8 of every length, and bytes that are not UTF-8 at all: the relay
     * does not judge, it copies. */
    FRAME("mailagent", NULL, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x93\xa7 \xe4\xb8\xad\xe6\x96\x87",
          "event: mailagent\ndata: \xc3\xa9\xe2\x82\xac\xf0\x9f\x93\xa7 \xe4\xb8\xad\xe6\x96\x87\n\n");
    FRAME("mailagent", NULL, "\xff\xfe\xc3", "event: mailagent\ndata: \xff\xfe\xc3\n\n");
    /* Every byte value but CR and LF, in one line, unchanged. */
    char all[256], want[400];
    size_t n = 0;
    for (int c = 0; c < 256; c++)
        if (c != '\r' && c != '\n')
            all[n++] = (char)c;
    mae__buf b;
    mae__buf_init(&b);
    mae__sse_frame(&b, "mailagent", NULL, all, n);
    size_t w = (size_t)snprintf(want, sizeof want, "event: mailagent\ndata: ");
    memcpy(want + w, all, n);
    w += n;
    memcpy(want + w, "\n\n", 2);
    w += 2;
    assert_int_equal(b.len, w);
    assert_memory_equal(b.ptr, want, w);
    mae__buf_free(&b);
}

static void test_chunks(void **state)
{
    (void)state;
    mae__buf b;
    mae__buf_init(&b);
    mae__sse_chunk(&b, "hello", 5);
    mae__sse_chunk(&b, "", 0);            /* never a premature end */
    char big[300];
    memset(big, 'z', sizeof big);
    mae__sse_chunk(&b, big, sizeof big);
    mae__sse_chunk_end(&b);
    const char *want_head = "5\r\nhello\r\n12c\r\n";
    assert_memory_equal(b.ptr, want_head, strlen(want_head));
    assert_int_equal(b.len, strlen(want_head) + 300 + 2 + 5);
    assert_memory_equal(b.ptr + b.len - 7, "\r\n0\r\n\r\n", 7);
    mae__buf_free(&b);

    mae__buf_init(&b);
    mae__sse_chunked_frame(&b, "ping", NULL, "", 0);
    assert_int_equal(b.len, mae__sse_ping_chunk_len);
    assert_memory_equal(b.ptr, mae__sse_ping_chunk, b.len);
    assert_string_equal(mae__sse_ping_chunk, "14\r\nevent: ping\ndata: \n\n\r\n");
    mae__buf_free(&b);
}

static void test_metrics_text(void **state)
{
    (void)state;
    /* Every counter a value of its own, so a metric reading another's field
     * shows. */
    mae__relay_counters c = {
        .clients = 3, .clients_total = 10, .events_total = 42, .bytes_total = 123456789012ull,
        .clients_cut_slow_total = 1, .clients_refused_total = 2, .auth_failures_total = 4,
        .redis_connected = true, .redis_reconnects_total = 5, .resets_total = 6,
        .redis_connect_failures_total = 7, .events_skipped_total = 8, .pub_requests_total = 9,
        .pub_events_accepted = 11, .pub_events_duplicate = 12, .pub_refused_bad_request = 13,
        .pub_refused_unauthorized = 14, .pub_refused_forbidden = 15, .pub_refused_too_large = 16,
        .pub_refused_unavailable = 17, .pub_refused_timeout = 18,
        .pub_refused_length_required = 19, .pub_publishers = 20, .pub_publishers_forgotten = 21,
        .hub_history_events = 22, .hub_history_bytes = 23,
        .hub_history_evicted_total = 18446744073709551615ull,
    };
    mae__buf b;
    mae__buf_init(&b);
    mae__metrics_render(&b, &c);
    assert_false(b.oom);
    static const char *const want[] = {
        "\nmailagent_relay_clients 3\n", "\nmailagent_relay_clients_total 10\n",
        "\nmailagent_relay_events_total 42\n", "\nmailagent_relay_bytes_total 123456789012\n",
        "\nmailagent_relay_clients_cut_slow_total 1\n",
        "\nmailagent_relay_clients_refused_total 2\n",
        "\nmailagent_relay_auth_failures_total 4\n", "\nmailagent_relay_redis_connected 1\n",
        "\nmailagent_relay_redis_reconnects_total 5\n", "\nmailagent_relay_resets_total 6\n",
        "\nmailagent_relay_redis_connect_failures_total 7\n",
        "\nmailagent_relay_events_skipped_total 8\n",
        "\nmailagent_relay_publish_requests_total 9\n",
        "\nmailagent_relay_publish_events_total 11\n",
        "\nmailagent_relay_publish_duplicates_total 12\n",
        "\nmailagent_relay_publish_refused_bad_request_total 13\n",
        "\nmailagent_relay_publish_refused_unauthorized_total 14\n",
        "\nmailagent_relay_publish_refused_forbidden_total 15\n",
        "\nmailagent_relay_publish_refused_too_large_total 16\n",
        "\nmailagent_relay_publish_refused_unavailable_total 17\n",
        "\nmailagent_relay_publish_refused_timeout_total 18\n",
        "\nmailagent_relay_publish_refused_length_required_total 19\n",
        "\nmailagent_relay_publishers 20\n", "\nmailagent_relay_publishers_forgotten_total 21\n",
        "\nmailagent_relay_hub_history_events 22\n", "\nmailagent_relay_hub_history_bytes 23\n",
        "\nmailagent_relay_hub_history_evicted_total 18446744073709551615\n",
        "# TYPE mailagent_relay_clients gauge\n",
        "# TYPE mailagent_relay_events_total counter\n",
        "# TYPE mailagent_relay_redis_connected gauge\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(b.ptr, want[i]))
            fail_msg("missing %s in:\n%s", want[i], b.ptr);
    /* The text is the table, in its order: for each metric its HELP, TYPE
     * and value lines, nothing else. */
    assert_true(mae__relay_metric_count >= 27);
    size_t at = 0;
    for (size_t i = 0; i < mae__relay_metric_count; i++) {
        const mae__relay_metric *m = &mae__relay_metrics[i];
        char three[512];
        int n = snprintf(three, sizeof three, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", m->name,
                         m->help, m->name, m->type, m->name,
                         (unsigned long long)mae__relay_metric_value(m, &c));
        assert_true(n > 0 && (size_t)n < sizeof three);
        if (b.len - at < (size_t)n || memcmp(b.ptr + at, three, (size_t)n) != 0)
            fail_msg("metric %zu: want \"%s\" at offset %zu of:\n%s", i, three, at, b.ptr);
        at += (size_t)n;
        assert_true(strcmp(m->type, "counter") == 0 || strcmp(m->type, "gauge") == 0);
        for (size_t k = 0; k < i; k++)
            assert_string_not_equal(mae__relay_metrics[k].name, m->name);
    }
    assert_int_equal(at, b.len);
    mae__buf_free(&b);

    mae__buf_init(&b);
    mae__healthz_render(&b, &c, "stream", true);
    assert_string_equal(b.ptr, "{\"status\":\"ok\",\"redis\":true,\"clients\":3,"
                               "\"source\":\"stream\",\"mode\":\"stream\",\"ok\":true}");
    mae__buf_free(&b);
    /* No progress for 2 x ping interval + 5 s: connected, yet not ok. */
    mae__buf_init(&b);
    mae__healthz_render(&b, &c, "stream", false);
    assert_string_equal(b.ptr, "{\"status\":\"stalled\",\"redis\":true,\"clients\":3,"
                               "\"source\":\"stream\",\"mode\":\"stream\",\"ok\":false}");
    mae__buf_free(&b);
    assert_true(MAE__HEALTHZ_STALL_S(0.5) == 6.0);
    c.redis_connected = false;
    c.clients = 0;
    mae__buf_init(&b);
    mae__healthz_render(&b, &c, "hub", true);
    assert_string_equal(b.ptr, "{\"status\":\"ok\",\"redis\":false,\"clients\":0,"
                               "\"source\":\"hub\",\"mode\":\"hub\",\"ok\":true}");
    mae__buf_free(&b);
}

static void test_page(void **state)
{
    (void)state;
    mae__buf b;
    mae__buf_init(&b);
    mae__page_render(&b, "/x</script><b>&", false);
    assert_false(b.oom);
    assert_non_null(strstr(b.ptr, "<!DOCTYPE html>"));
    assert_non_null(strstr(b.ptr, "</html>"));
    assert_non_null(strstr(b.ptr, "tokenNeeded: false"));
    /* The path cannot end the script element. */
    assert_non_null(strstr(b.ptr, "\"/x\\u003c/script\\u003e\\u003cb\\u003e\\u0026\""));
    assert_null(strstr(b.ptr, "/x</script>"));
    /* Self-contained: nothing loaded from elsewhere. */
    assert_null(strstr(b.ptr, "src="));
    assert_null(strstr(b.ptr, "href="));
    assert_null(strstr(b.ptr, "http://"));
    assert_null(strstr(b.ptr, "https://"));
    assert_null(strstr(b.ptr, "@import"));
    assert_non_null(strstr(b.ptr, "new EventSource"));
    mae__buf_free(&b);
    mae__buf_init(&b);
    mae__page_render(&b, "/api/events/stream", true);
    assert_non_null(strstr(b.ptr, "tokenNeeded: true"));
    assert_non_null(strstr(b.ptr, "path: \"/api/events/stream\""));
    mae__buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_frame),
        cmocka_unit_test(test_multiline),
        cmocka_unit_test(test_bytes_pass_through),
        cmocka_unit_test(test_chunks),
        cmocka_unit_test(test_metrics_text),
        cmocka_unit_test(test_page),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
