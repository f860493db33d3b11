/* Unit tests of the relay's request parser and router (relay/request.h):
 * every row of relay.md's HTTP table, the limits, the credential forms,
 * the constant-time compare, and hostile input. */
#include <setjmp.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "relay/request.h"

#define PATH "/api/events/stream"

static mae__req_status parse(const char *s, mae__request *r)
{
    return mae__request_parse(s, strlen(s), r);
}

static void assert_span(mae__span s, const char *want)
{
    if (!want) {
        assert_null(s.p);
        return;
    }
    assert_non_null(s.p);
    assert_int_equal(s.n, strlen(want));
    assert_memory_equal(s.p, want, s.n);
}

static void test_simple_get(void **state)
{
    (void)state;
    mae__request r;
    const char *req = "GET /api/events/stream?last_event_id=5-0 HTTP/1.1\r\n"
                      "Host: 127.0.0.1:9200\r\n"
                      "Accept: text/event-stream\r\n"
                      "X-Webhook-Token:   s3cret  \r\n"
                      "\r\n"
                      "GET / HTTP/1.1\r\n";
    assert_int_equal(parse(req, &r), MAE__REQ_DONE);
    assert_int_equal(r.length, strstr(req, "\r\n\r\n") + 4 - req);
    assert_span(r.method, "GET");
    assert_span(r.target, "/api/events/stream?last_event_id=5-0");
    assert_span(r.path, PATH);
    assert_span(r.query, "last_event_id=5-0");
    assert_int_equal(r.minor, 1);
    assert_true(r.keep_alive);
    assert_false(r.has_body);
    assert_span(r.webhook_token, "s3cret");
    assert_span(r.authorization, NULL);
    assert_span(r.local_token, NULL);
    assert_span(r.last_event_id, NULL);
}

static void test_bare_lf_and_leading_blank_lines(void **state)
{
    (void)state;
    mae__request r;
    assert_int_equal(parse("\r\n\nGET /healthz HTTP/1.0\nlast-event-id: 1-2\n\n", &r),
                     MAE__REQ_DONE);
    assert_span(r.path, "/healthz");
    assert_span(r.query, NULL);
    assert_span(r.last_event_id, "1-2");
    assert_int_equal(r.minor, 0);
    assert_false(r.keep_alive);   /* HTTP/1.0 without keep-alive */
}

static void test_connection_header(void **state)
{
    (void)state;
    mae__request r;
    assert_int_equal(parse("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n", &r), MAE__REQ_DONE);
    assert_false(r.keep_alive);
    assert_int_equal(parse("GET / HTTP/1.0\r\nConnection: foo, Keep-Alive\r\n\r\n", &r),
                     MAE__REQ_DONE);
    assert_true(r.keep_alive);
    assert_int_equal(parse("GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", &r), MAE__REQ_DONE);
    assert_true(r.keep_alive);
    assert_false(r.has_body);
    /* A body the relay will not read: answer, then close. */
    assert_int_equal(parse("GET / HTTP/1.1\r\nContent-Length: 12\r\n\r\n", &r), MAE__REQ_DONE);
    assert_true(r.has_body);
    assert_false(r.keep_alive);
    assert_int_equal(parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", &r),
                     MAE__REQ_DONE);
    assert_true(r.has_body);
    assert_false(r.keep_alive);
}

static void test_incomplete(void **state)
{
    (void)state;
    mae__request r;
    const char *full = "GET /api/events/stream HTTP/1.1\r\nHost: x\r\n\r\n";
    /* Every proper prefix is incomplete, never an error. */
    for (size_t n = 0; n < strlen(full); n++)
        assert_int_equal(mae__request_parse(full, n, &r), MAE__REQ_INCOMPLETE);
    assert_int_equal(mae__request_parse(full, strlen(full), &r), MAE__REQ_DONE);
    /* Nothing at all, as an empty socket buffer gives it: no pointer. */
    assert_int_equal(mae__request_parse(NULL, 0, &r), MAE__REQ_INCOMPLETE);
}

static void test_malformed(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "GET\r\n\r\n",
        "GET /\r\n\r\n",                                  /* HTTP/0.9 */
        "GET / HTTP/2.0\r\n\r\n",
        "GET / HTTP/1.10\r\n\r\n",
        "GET / http/1.1\r\n\r\n",
        "GET  / HTTP/1.1\r\n\r\n",                        /* two spaces */
        "GET / HTTP/1.1 \r\n\r\n",
        " GET / HTTP/1.1\r\n\r\n",
        "G(T / HTTP/1.1\r\n\r\n",                         /* not a token */
        "GET http://h/ HTTP/1.1\r\n\r\n",                 /* absolute form */
        "GET * HTTP/1.1\r\n\r\n",
        "GET /a b HTTP/1.1\r\n\r\n",
        "GET /\x7f HTTP/1.1\r\n\r\n",
        "GET /\xc3\xa9 HTTP/1.1\r\n\r\n",                 /* raw 8-bit in the target */
        "GET / HTTP/1.1\rX\r\n\r\n",                      /* bare CR */
        "GET / HTTP/1.1\r\nHost : x\r\n\r\n",             /* space before the colon */
        "GET / HTTP/1.1\r\n: x\r\n\r\n",                  /* empty name */
        "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
        "GET / HTTP/1.1\r\nA: 1\r\n  folded\r\n\r\n",     /* obs-fold */
        "GET / HTTP/1.1\r\nA: x\x01y\r\n\r\n",            /* control in a value */
        "GET / HTTP/1.1\r\nA: x\ry\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: \r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        /* Two of a credential: which one counts would be a guess. */
        "GET / HTTP/1.1\r\nX-Webhook-Token: a\r\nx-webhook-token: b\r\n\r\n",
        "GET / HTTP/1.1\r\nAuthorization: Bearer a\r\nAuthorization: Bearer a\r\n\r\n",
        "GET / HTTP/1.1\r\nX-MailAgent-Local-Token: a\r\nX-MailAgent-Local-Token: a\r\n\r\n",
        "GET / HTTP/1.1\r\nLast-Event-ID: 1\r\nLast-Event-ID: 2\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mae__request r;
        memset(&r, 0xAB, sizeof r);
        mae__req_status st = parse(bad[i], &r);
        if (st != MAE__REQ_BAD)
            fail_msg("case %zu: status %d, want BAD", i, (int)st);
    }
    /* NUL inside a header value (strlen would stop at it). */
    static const char nul[] = "GET / HTTP/1.1\r\nA: x\0y\r\n\r\n";
    mae__request r;
    assert_int_equal(mae__request_parse(nul, sizeof nul - 1, &r), MAE__REQ_BAD);
    static const char nul_target[] = "GET /\0 HTTP/1.1\r\n\r\n";
    assert_int_equal(mae__request_parse(nul_target, sizeof nul_target - 1, &r), MAE__REQ_BAD);
}

static void test_obs_text_value_allowed(void **state)
{
    (void)state;
    mae__request r;
    assert_int_equal(parse("GET / HTTP/1.1\r\nUser-Agent: caf\xc3\xa9\t1\r\n\r\n", &r),
                     MAE__REQ_DONE);
}

/* A request of exactly n bytes: request line, one padding header, blank line. */
static char *request_of(size_t n)
{
    const char *line = "GET / HTTP/1.1\r\nX-Pad: ";
    size_t fixed = strlen(line) + 4;
    assert_true(n > fixed);
    char *s = malloc(n + 1);
    assert_non_null(s);
    memcpy(s, line, strlen(line));
    memset(s + strlen(line), 'a', n - fixed);
    memcpy(s + n - 4, "\r\n\r\n", 4);
    s[n] = '\0';
    return s;
}

static void test_size_limit(void **state)
{
    (void)state;
    mae__request r;
    char *s = request_of(MAE__REQ_MAX_BYTES);
    assert_int_equal(parse(s, &r), MAE__REQ_DONE);
    assert_int_equal(r.length, MAE__REQ_MAX_BYTES);
    free(s);
    s = request_of(MAE__REQ_MAX_BYTES + 1);
    assert_int_equal(parse(s, &r), MAE__REQ_TOO_LARGE);
    /* Without its end yet, but already over the limit: no need to wait. */
    assert_int_equal(mae__request_parse(s, MAE__REQ_MAX_BYTES, &r), MAE__REQ_TOO_LARGE);
    assert_int_equal(mae__request_parse(s, MAE__REQ_MAX_BYTES - 1, &r), MAE__REQ_INCOMPLETE);
    free(s);
    /* A request line alone over the limit. */
    s = malloc(MAE__REQ_MAX_BYTES + 100);
    assert_non_null(s);
    memcpy(s, "GET /", 5);
    memset(s + 5, 'a', MAE__REQ_MAX_BYTES + 100 - 5);
    assert_int_equal(mae__request_parse(s, MAE__REQ_MAX_BYTES + 100, &r), MAE__REQ_TOO_LARGE);
    free(s);
}

static void test_header_count_limit(void **state)
{
    (void)state;
    char buf[MAE__REQ_MAX_BYTES];
    mae__request r;
    for (int count = MAE__REQ_MAX_HEADERS; count <= MAE__REQ_MAX_HEADERS + 1; count++) {
        size_t n = (size_t)snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\n");
        for (int i = 0; i < count; i++)
            n += (size_t)snprintf(buf + n, sizeof buf - n, "A%d: 1\r\n", i);
        n += (size_t)snprintf(buf + n, sizeof buf - n, "\r\n");
        assert_int_equal(mae__request_parse(buf, n, &r),
                         count > MAE__REQ_MAX_HEADERS ? MAE__REQ_TOO_LARGE : MAE__REQ_DONE);
    }
}

static mae__route route_of(const char *req, const mae__credentials *c)
{
    mae__request r;
    assert_int_equal(parse(req, &r), MAE__REQ_DONE);
    return mae__request_route(&r, PATH, c);
}

static void test_routes_open(void **state)
{
    (void)state;
    mae__credentials none = {NULL, ""};
    assert_int_equal(route_of("GET " PATH " HTTP/1.1\r\n\r\n", &none), MAE__ROUTE_STREAM);
    assert_int_equal(route_of("GET " PATH "?x=1 HTTP/1.1\r\n\r\n", &none), MAE__ROUTE_STREAM);
    assert_int_equal(route_of("GET /healthz HTTP/1.1\r\n\r\n", &none), MAE__ROUTE_HEALTHZ);
    assert_int_equal(route_of("GET /metrics HTTP/1.1\r\n\r\n", &none), MAE__ROUTE_METRICS);
    assert_int_equal(route_of("GET / HTTP/1.1\r\n\r\n", &none), MAE__ROUTE_PAGE);
    assert_int_equal(route_of("GET /?a HTTP/1.1\r\n\r\n", &none), MAE__ROUTE_PAGE);
    assert_int_equal(route_of("GET /nope HTTP/1.1\r\n\r\n", &none), MAE__ROUTE_NOT_FOUND);
    assert_int_equal(route_of("GET " PATH "/ HTTP/1.1\r\n\r\n", &none), MAE__ROUTE_NOT_FOUND);
    assert_int_equal(route_of("GET /API/events/stream HTTP/1.1\r\n\r\n", &none),
                     MAE__ROUTE_NOT_FOUND);
    assert_int_equal(route_of("POST /nope HTTP/1.1\r\n\r\n", &none), MAE__ROUTE_NOT_FOUND);
    /* Methods are case-sensitive (RFC 9110, 9.1). */
    static const char *const methods[] = {"POST", "HEAD", "PUT", "DELETE", "OPTIONS", "get"};
    static const char *const paths[] = {PATH, "/healthz", "/metrics", "/"};
    for (size_t m = 0; m < 6; m++) {
        for (size_t p = 0; p < 4; p++) {
            char req[128];
            snprintf(req, sizeof req, "%s %s HTTP/1.1\r\n\r\n", methods[m], paths[p]);
            assert_int_equal(route_of(req, &none), MAE__ROUTE_BAD_METHOD);
        }
    }
}

static void test_routes_with_credentials(void **state)
{
    (void)state;
    mae__credentials both = {"s3cret", "l0cal"};
    mae__credentials webhook = {"s3cret", NULL};
    mae__credentials local = {"", "l0cal"};
    const char *stream = "GET " PATH " HTTP/1.1\r\n";
    char req[256];
#define WITH(hdr) (snprintf(req, sizeof req, "%s%s\r\n\r\n", stream, hdr), req)
    assert_int_equal(route_of(WITH("X-Webhook-Token: s3cret"), &both), MAE__ROUTE_STREAM);
    assert_int_equal(route_of(WITH("Authorization: Bearer s3cret"), &both), MAE__ROUTE_STREAM);
    assert_int_equal(route_of(WITH("authorization: bearer    s3cret"), &both), MAE__ROUTE_STREAM);
    assert_int_equal(route_of(WITH("X-MailAgent-Local-Token: l0cal"), &both), MAE__ROUTE_STREAM);
    assert_int_equal(route_of(WITH("X-Webhook-Token: s3cret"), &webhook), MAE__ROUTE_STREAM);
    assert_int_equal(route_of(WITH("X-MailAgent-Local-Token: l0cal"), &local), MAE__ROUTE_STREAM);
    /* Missing, wrong, a prefix, longer, another scheme, the wrong header. */
    static const char *const wrong[] = {
        "X-Nothing: 1",
        "X-Webhook-Token: s3cre",
        "X-Webhook-Token: s3cret2",
        "X-Webhook-Token: S3CRET",
        "X-Webhook-Token: ",
        "Authorization: Basic czNjcmV0",
        "Authorization: Bearer",
        "Authorization: Bearers3cret",
        "Authorization: s3cret",
        "X-MailAgent-Local-Token: s3cret",
        "X-Webhook-Token: l0cal",
    };
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++)
        if (route_of(WITH(wrong[i]), &both) != MAE__ROUTE_UNAUTHORIZED)
            fail_msg("case %zu (%s) was let in", i, wrong[i]);
    /* A credential of one kind when only the other is configured. */
    assert_int_equal(route_of(WITH("X-Webhook-Token: l0cal"), &local), MAE__ROUTE_UNAUTHORIZED);
    assert_int_equal(route_of(WITH("X-MailAgent-Local-Token: s3cret"), &webhook),
                     MAE__ROUTE_UNAUTHORIZED);
    /* A wrong one next to a right one: the right one counts. */
    assert_int_equal(route_of(WITH("X-Webhook-Token: bad\r\nX-MailAgent-Local-Token: l0cal"),
                              &both), MAE__ROUTE_STREAM);
    /* /metrics takes the stream's credential; /healthz and / need none. */
    assert_int_equal(route_of("GET /metrics HTTP/1.1\r\n\r\n", &both), MAE__ROUTE_UNAUTHORIZED);
    assert_int_equal(route_of("GET /metrics HTTP/1.1\r\nX-Webhook-Token: s3cret\r\n\r\n", &both),
                     MAE__ROUTE_METRICS);
    assert_int_equal(route_of("GET /healthz HTTP/1.1\r\n\r\n", &both), MAE__ROUTE_HEALTHZ);
    assert_int_equal(route_of("GET / HTTP/1.1\r\n\r\n", &both), MAE__ROUTE_PAGE);
    /* A method is refused before the credential is looked at. */
    assert_int_equal(route_of("POST " PATH " HTTP/1.1\r\n\r\n", &both), MAE__ROUTE_BAD_METHOD);
#undef WITH
    assert_true(mae__credentials_required(&both));
    assert_false(mae__credentials_required(&(mae__credentials){"", ""}));
    assert_false(mae__credentials_required(&(mae__credentials){NULL, NULL}));
}

/* The publish route's headers and routes (issue 17): the body's length,
 * both framings refused, the exactly-once headers, and who may publish. */
static void test_publish_request(void **state)
{
    (void)state;
    mae__request r;
    const char *ok = "POST /api/events/publish HTTP/1.1\r\nContent-Type: application/x-ndjson\r\n"
                     "Content-Length: 0042\r\nX-MailAgent-Publisher: ab\r\n"
                     "X-MailAgent-Batch-Start: 7\r\n\r\n";
    assert_int_equal(parse(ok, &r), MAE__REQ_DONE);
    assert_true(r.has_length);
    assert_int_equal(r.content_length, 42);
    assert_false(r.chunked);
    assert_true(r.conn_keep);
    assert_false(r.keep_alive);   /* a GET with a body is still closed */
    assert_span(r.content_type, "application/x-ndjson");
    assert_span(r.publisher, "ab");
    assert_span(r.batch_start, "7");
    /* An overflowing length saturates (then is over any limit). */
    assert_int_equal(parse("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                           &r), MAE__REQ_DONE);
    assert_int_equal(r.content_length, ULLONG_MAX);
    /* Two lengths, a length and a chunked body, a bad length: refused. */
    assert_int_equal(parse("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
                           &r), MAE__REQ_BAD);
    assert_int_equal(parse("POST / HTTP/1.1\r\nContent-Length: 1\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n", &r), MAE__REQ_BAD);
    assert_int_equal(parse("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", &r), MAE__REQ_BAD);
    assert_int_equal(parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", &r),
                     MAE__REQ_DONE);
    assert_true(r.chunked);
    /* Two publisher headers are ambiguous. */
    assert_int_equal(parse("POST / HTTP/1.1\r\nX-MailAgent-Publisher: a\r\n"
                           "X-MailAgent-Publisher: b\r\n\r\n", &r), MAE__REQ_BAD);

    mae__credentials none = {NULL, ""}, tok = {NULL, "t0k"};
    assert_int_equal(route_of("POST /api/events/publish HTTP/1.1\r\n\r\n", &none),
                     MAE__ROUTE_PUBLISH);
    assert_int_equal(route_of("POST /api/events/publish HTTP/1.1\r\n\r\n", &tok),
                     MAE__ROUTE_UNAUTHORIZED);
    assert_int_equal(route_of("POST /api/events/publish HTTP/1.1\r\n"
                              "X-MailAgent-Local-Token: t0k\r\n\r\n", &tok),
                     MAE__ROUTE_PUBLISH);
    assert_int_equal(route_of("GET /api/events/publish HTTP/1.1\r\n\r\n", &none),
                     MAE__ROUTE_BAD_METHOD_POST);
    assert_int_equal(route_of("GET /api/events/health HTTP/1.1\r\n\r\n", &tok),
                     MAE__ROUTE_HEALTH);
    assert_int_equal(route_of("POST /api/events/health HTTP/1.1\r\n\r\n", &none),
                     MAE__ROUTE_BAD_METHOD);
}

static void test_ct_equal(void **state)
{
    (void)state;
    assert_true(mae__ct_equal("abc", 3, "abc", 3));
    assert_false(mae__ct_equal("abd", 3, "abc", 3));
    assert_false(mae__ct_equal("ab", 2, "abc", 3));
    assert_false(mae__ct_equal("abcabc", 6, "abc", 3));   /* b repeated is not b */
    assert_false(mae__ct_equal("", 0, "abc", 3));
    assert_false(mae__ct_equal("", 0, "", 0));           /* an empty secret matches nothing */
    assert_false(mae__ct_equal("a", 1, "", 0));
    assert_true(mae__ct_equal("a\0b", 3, "a\0b", 3));
    assert_false(mae__ct_equal("a\0c", 3, "a\0b", 3));
    /* Every single-bit change of every byte is seen. */
    char secret[] = "0123456789abcdef", probe[sizeof secret];
    for (size_t i = 0; i < sizeof secret - 1; i++) {
        for (int bit = 0; bit < 8; bit++) {
            memcpy(probe, secret, sizeof secret);
            probe[i] = (char)(probe[i] ^ (1 << bit));
            assert_false(mae__ct_equal(probe, 16, secret, 16));
        }
    }
}

/* Hostile input: random bytes and mutations of a valid request must give a
 * status, never a crash, and a DONE must describe bytes inside the input. */
static void test_hostile(void **state)
{
    (void)state;
    uint64_t x = 0x9E3779B97F4A7C15ull;
    const char *base = "GET /api/events/stream?a=b HTTP/1.1\r\nHost: h\r\n"
                       "Authorization: Bearer t\r\nConnection: keep-alive\r\n\r\n";
    size_t blen = strlen(base);
    char buf[512];
    for (int round = 0; round < 20000; round++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t n;
        if (round % 2) {
            n = blen;
            memcpy(buf, base, n);
            for (int k = 0; k < 1 + (int)(x % 4); k++)
                buf[(x >> (8 * k + 8)) % n] = (char)(x >> (8 * k));
        } else {
            n = x % sizeof buf;
            for (size_t i = 0; i < n; i++)
                buf[i] = "GET /\r\n: aAzZ\t\x00\x80\xff?"[(x >> (i % 50)) % 16];
        }
        char *copy = malloc(n ? n : 1);   /* exact size: ASan sees any overread */
        assert_non_null(copy);
        memcpy(copy, buf, n);
        mae__request r;
        mae__req_status st = mae__request_parse(copy, n, &r);
        assert_true(st >= MAE__REQ_INCOMPLETE && st <= MAE__REQ_TOO_LARGE);
        if (st == MAE__REQ_DONE) {
            assert_true(r.length <= n);
            assert_true(r.path.p >= copy && r.path.p + r.path.n <= copy + n);
            assert_true(r.path.n >= 1 && r.path.p[0] == '/');
        }
        free(copy);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_get),
        cmocka_unit_test(test_bare_lf_and_leading_blank_lines),
        cmocka_unit_test(test_connection_header),
        cmocka_unit_test(test_incomplete),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_obs_text_value_allowed),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_header_count_limit),
        cmocka_unit_test(test_routes_open),
        cmocka_unit_test(test_routes_with_credentials),
        cmocka_unit_test(test_publish_request),
        cmocka_unit_test(test_ct_equal),
        cmocka_unit_test(test_hostile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
