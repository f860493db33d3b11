/* Unit tests of hub mode's pieces without a socket: the relay base URL and
 * token that open accepts or refuses (and why), and the bounded HTTP
 * response parser, fed whole and a byte at a time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <mailagent/events.h>

#include "publisher/http_response.h"
#include "publisher/publisher_internal.h"

/* Opens with relay_url (and token) and returns the code; the reason open
 * gave is in why. A publisher that opened is closed at once. */
static int try_open(const char *redis, const char *relay, const char *token, char *why,
                    size_t n)
{
    mae_publisher_config cfg;
    mae_publisher *p = NULL;
    mae_publisher_config_init(&cfg);
    cfg.redis_url = redis;
    cfg.relay_url = relay;
    cfg.relay_token = token;
    cfg.error_buf = why;
    cfg.error_buf_size = n;
    why[0] = '\0';
    int rc = mae_publisher_open(&cfg, &p);
    if (rc == MAE_OK) {
        mae_publisher_stats st;
        mae_safe_publish(p, "t.e", 1, NULL, "t");
        mae_publisher_stats_get(p, &st);
        assert_int_equal(st.dropped_disabled, 0); /* hub mode is enabled */
        mae_publisher_close(p, 0); /* nothing listens: the event is abandoned */
    }
    return rc;
}

static void test_relay_urls_accepted(void **state)
{
    (void)state;
    char why[256];
    const char *good[] = {"http://127.0.0.1:9200", "http://127.0.0.1:9200/",
                          "HTTP://localhost:1",   "http://[::1]:9200",
                          "http://hub.example",   "http://a-b.c_d:65535/"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        mae_publisher_config cfg;
        mae_publisher *p = NULL;
        mae_publisher_config_init(&cfg);
        cfg.relay_url = good[i];
        cfg.relay_token = "tok en-with spaces is fine";
        cfg.error_buf = why;
        cfg.error_buf_size = sizeof why;
        /* A port where nothing listens: open still succeeds (it never
         * connects), and close with nothing queued returns MAE_OK. */
        assert_int_equal(mae_publisher_open(&cfg, &p), MAE_OK);
        assert_int_equal(mae_publisher_close(p, 0), MAE_OK);
    }
}

static void test_relay_urls_refused_with_a_reason(void **state)
{
    (void)state;
    char why[256];
    struct {
        const char *url, *token, *needle;
    } bad[] = {
        {"https://127.0.0.1:9200", NULL, "https is not supported"},
        {"ftp://127.0.0.1", NULL, "expected http://host[:port]"},
        {"127.0.0.1:9200", NULL, "expected http://host[:port]"},
        {"http://127.0.0.1:9200/api/events/publish", NULL, "no path"},
        {"http://127.0.0.1:9200/x", NULL, "no path"},
        {"http://127.0.0.1:9200?a=b", NULL, "no path, query"},
        {"http://127.0.0.1:9200#f", NULL, "no path, query"},
        {"http://user:pw@127.0.0.1:9200", NULL, "user information"},
        {"http://127.0.0.1:", NULL, "empty port"},
        {"http://127.0.0.1:0", NULL, "1-65535"},
        {"http://127.0.0.1:65536", NULL, "1-65535"},
        {"http://127.0.0.1:9x", NULL, "1-65535"},
        {"http://:9200", NULL, "missing host"},
        {"http://ho st:9200", NULL, "space"},
        {"http://ho$t:9200", NULL, "not allowed in a host name"},
        {"http://[::1:9200", NULL, "IPv6"},
        {"http://[zz::1]:9200", NULL, "IPv6"},
        {"http://127.0.0.1:9200", "a\r\nX-Evil: 1", "control character"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(try_open(NULL, bad[i].url, bad[i].token, why, sizeof why), MAE_EINVAL);
        if (!strstr(why, bad[i].needle))
            fail_msg("%s: reason \"%s\" lacks \"%s\"", bad[i].url, why, bad[i].needle);
    }
}

/* Both URLs set is a mistake to be told about, not a precedence to guess. */
static void test_both_urls_refused(void **state)
{
    (void)state;
    char why[256];
    assert_int_equal(try_open("redis://127.0.0.1:6379", "http://127.0.0.1:9200", NULL, why,
                              sizeof why),
                     MAE_EINVAL);
    assert_non_null(strstr(why, "redis_url"));
    assert_non_null(strstr(why, "relay_url"));
}

/* Neither URL: still the disabled publisher of old. */
static void test_neither_url_is_disabled(void **state)
{
    (void)state;
    mae_publisher_config cfg;
    mae_publisher *p = NULL;
    mae_publisher_config_init(&cfg);
    assert_null(cfg.relay_url);
    assert_null(cfg.relay_token);
    cfg.relay_url = "";
    cfg.relay_token = "ignored";
    assert_int_equal(mae_publisher_open(&cfg, &p), MAE_OK);
    mae_safe_publish(p, "t.e", 1, NULL, "t");
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.dropped_disabled, 1);
    assert_int_equal(mae_publisher_close(p, 0), MAE_OK);
}

/* The fields hub mode added sit after the earlier ones of both structs,
 * and only the failover fields (issue 21) came after them (api.md, ABI). */
static void test_fields_at_the_end(void **state)
{
    (void)state;
    assert_true(offsetof(mae_publisher_config, relay_url) >
                offsetof(mae_publisher_config, max_event_bytes));
    assert_true(offsetof(mae_publisher_config, relay_token) + sizeof(char *) <=
                offsetof(mae_publisher_config, wait_replicas));
    assert_true(offsetof(mae_publisher_stats, rejected_auth) >
                offsetof(mae_publisher_stats, dropped_too_large));
    assert_int_equal(offsetof(mae_publisher_stats, rejected_server) + sizeof(uint64_t),
                     offsetof(mae_publisher_stats, lost_failover));
    assert_int_equal(mae_publisher_config_size(), sizeof(mae_publisher_config));
    assert_int_equal(mae_publisher_stats_size(), sizeof(mae_publisher_stats));
}

/* ---- the response parser ---- */

static char body[MAE__HTTP_BODY_MAX];

/* Feeds text whole (step 0) or step bytes at a time; returns the last code
 * and the bytes used in all. */
static int feed(mae__http_resp *r, const char *text, size_t step, size_t *used_all)
{
    size_t n = strlen(text), off = 0;
    int rc = MAE__HTTP_MORE;
    mae__http_resp_init(r, body);
    *used_all = 0;
    while (off < n && rc == MAE__HTTP_MORE) {
        size_t k = step && step < n - off ? step : n - off, used;
        rc = mae__http_resp_feed(r, text + off, k, &used);
        *used_all += used;
        off += k;
    }
    return rc;
}

static void test_parser_ok_answer_any_split(void **state)
{
    (void)state;
    const char *a = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    "content-length: 13\r\n\r\n{\"accepted\":3}";
    for (size_t step = 0; step < 8; step++) {
        mae__http_resp r;
        size_t used;
        assert_int_equal(feed(&r, a, step, &used), MAE__HTTP_DONE);
        assert_int_equal(r.status, 200);
        assert_int_equal(r.body_len, 13);
        assert_memory_equal(r.body, "{\"accepted\":3", 13);
        assert_false(r.close);
        assert_false(r.body_unread);
        assert_int_equal(used, strlen(a) - 1); /* the byte after the body is not ours */
    }
}

static void test_parser_interim_and_framing(void **state)
{
    (void)state;
    mae__http_resp r;
    size_t used;
    /* A 100 Continue before the answer is skipped. */
    assert_int_equal(feed(&r, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 401 No\r\nContent-Length: 0\r\n\r\n",
                          3, &used),
                     MAE__HTTP_DONE);
    assert_int_equal(r.status, 401);
    assert_false(r.close);
    /* Chunked: the status decides, the body is left and the connection closed. */
    assert_int_equal(feed(&r, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello", 0,
                          &used),
                     MAE__HTTP_DONE);
    assert_int_equal(r.status, 200);
    assert_true(r.close);
    assert_true(r.body_unread);
    /* A body longer than the cap is not read. */
    assert_int_equal(feed(&r, "HTTP/1.1 413 Big\r\nContent-Length: 999999\r\n\r\n", 0, &used),
                     MAE__HTTP_DONE);
    assert_int_equal(r.status, 413);
    assert_true(r.close && r.body_unread);
    /* No length at all: the body runs to the end of the connection. */
    assert_int_equal(feed(&r, "HTTP/1.1 500 X\r\n\r\n", 0, &used), MAE__HTTP_DONE);
    assert_true(r.close);
    /* HTTP/1.0 closes unless it says keep-alive; Connection: close closes. */
    assert_int_equal(feed(&r, "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 0, &used),
                     MAE__HTTP_DONE);
    assert_true(r.close);
    assert_int_equal(feed(&r, "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n",
                          0, &used),
                     MAE__HTTP_DONE);
    assert_false(r.close);
    assert_int_equal(feed(&r, "HTTP/1.1 200 OK\r\nConnection: x, close\r\nContent-Length: 0\r\n\r\n",
                          0, &used),
                     MAE__HTTP_DONE);
    assert_true(r.close);
    /* Bare \n line ends are tolerated; 204 has no body. */
    assert_int_equal(feed(&r, "HTTP/1.1 204 No Content\n\n", 0, &used), MAE__HTTP_DONE);
    assert_int_equal(r.status, 204);
    /* Not finished yet. */
    assert_int_equal(feed(&r, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc", 0, &used),
                     MAE__HTTP_MORE);
}

static void test_parser_refuses_what_is_not_http(void **state)
{
    (void)state;
    mae__http_resp r;
    size_t used;
    const char *bad[] = {
        "SSH-2.0-OpenSSH\r\n",
        "HTTP/2 200\r\n",
        "HTTP/1.1 2000 OK\r\n",
        "HTTP/1.1 099 X\r\n",
        "HTTP/1.1 20x OK\r\n",
        "HTTP/1.1 200 OK\r\nno colon here\r\n",
        "HTTP/1.1 200 OK\r\n folded\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n",
        "HTTP/1.1 101 Switching\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (feed(&r, bad[i], 0, &used) != MAE__HTTP_BAD)
            fail_msg("accepted: %s", bad[i]);
        assert_non_null(r.why);
    }
    /* A line past the limit, and more header lines than allowed. */
    char *lng = malloc(MAE__HTTP_LINE_MAX + 64);
    assert_non_null(lng);
    strcpy(lng, "HTTP/1.1 200 OK\r\nX: ");
    memset(lng + strlen(lng), 'a', MAE__HTTP_LINE_MAX);
    lng[20 + MAE__HTTP_LINE_MAX] = '\0';
    assert_int_equal(feed(&r, lng, 0, &used), MAE__HTTP_BAD);
    free(lng);
    char many[4096] = "HTTP/1.1 200 OK\r\n";
    for (int i = 0; i <= MAE__HTTP_HEADERS_MAX; i++)
        strcat(many, "X: y\r\n");
    assert_int_equal(feed(&r, many, 0, &used), MAE__HTTP_BAD);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_relay_urls_accepted),
        cmocka_unit_test(test_relay_urls_refused_with_a_reason),
        cmocka_unit_test(test_both_urls_refused),
        cmocka_unit_test(test_neither_url_is_disabled),
        cmocka_unit_test(test_fields_at_the_end),
        cmocka_unit_test(test_parser_ok_answer_any_split),
        cmocka_unit_test(test_parser_interim_and_framing),
        cmocka_unit_test(test_parser_refuses_what_is_not_http),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
