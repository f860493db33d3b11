/* Hub mode (issue 20): a real relay started with no Redis URL, fed over
 * POST /api/events/publish by raw requests, by the C publisher in hub mode
 * and by four processes at once, read by raw connections and by curl -N.
 * Every answer of the publish route, exactly once for resent batches,
 * resume by id (history_trimmed, unknown_id, bad_last_event_id), the hub
 * killed and restarted under load, and the hub stopped (SIGSTOP) while a
 * publisher keeps calling. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <mailagent/publisher.h>

#include "harness.h"
#include "testutil.h"

#define CURL "/usr/bin/curl"
#define PYTHON "/usr/bin/python3"
#define STREAM "/api/events/stream"

static char g_out[512];

static int setup(void **state)
{
    (void)state;
    if (!rh_have(CURL))
        tu_missing_prerequisite(CURL);
    if (!rh_have(PYTHON))
        tu_missing_prerequisite(PYTHON);
    rh_out_dir("test_it_relay_hub", g_out, sizeof g_out);
    return 0;
}

static void start_hub(rh_relay *r, const char *tag, const char *const *args,
                      const char *const *env)
{
    char log[700];
    snprintf(log, sizeof log, "%s/%s.log", g_out, tag);
    assert_int_equal(rh_hub_start(r, args, env, log), 0);
    assert_true(rh_log_has(r, "no Redis URL: hub mode, events arrive on POST /api/events/publish"));
}

static void stop_hub(rh_relay *r)
{
    assert_int_equal(rh_relay_stop(r, SIGTERM, 10000, NULL), 0);
}

/* POSTs a NUL-terminated body; the answer must start with status. */
static char *post(int port, const char *headers, const char *body, const char *status)
{
    char *a = rh_post(port, headers, body, strlen(body));
    if (!a || strncmp(a, status, strlen(status)) != 0)
        fail_msg("POST %s\nwanted %s, got:\n%s", body, status, a ? a : "(nothing)");
    return a;
}

static void post_expect(int port, const char *headers, const char *body, const char *status,
                        const char *in_answer)
{
    char *a = post(port, headers, body, status);
    if (in_answer && !strstr(a, in_answer))
        fail_msg("POST %s\nwanted %s in:\n%s", body, in_answer, a);
    free(a);
}

/* Starts curl -N on the hub's stream, its output into a file. */
static pid_t curl_reader(int port, const char *tag, const char *extra_header, char *path,
                         size_t size)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d" STREAM, port);
    snprintf(path, size, "%s/%s.sse", g_out, tag);
    unlink(path);
    const char *argv[] = {CURL, "-sN", "-H", extra_header ? extra_header : "X-A: b", url, NULL};
    pid_t pid = rh_spawn(argv, NULL, path, NULL);
    assert_true(pid > 0);
    return pid;
}

/* The first needle at or after p (NULL: none), scanning with memchr and
 * memcmp: strstr under ASan checks the whole rest of the text on each
 * call, which makes a scan of a 12 MB text quadratic. */
static const char *find(const char *p, const char *end, const char *needle)
{
    size_t n = strlen(needle), left = (size_t)(end - p);
    while (left >= n) {
        const char *q = memchr(p, needle[0], left - n + 1);
        if (!q)
            return NULL;
        if (memcmp(q, needle, n) == 0)
            return q;
        left -= (size_t)(q + 1 - p);
        p = q + 1;
    }
    return NULL;
}

static size_t count_in(const char *s, const char *needle)
{
    size_t n = 0;
    const char *end = s + strlen(s);
    for (const char *p = s; p && (p = find(p, end, needle)); p += strlen(needle))
        n++;
    return n;
}

/* ---- health and every answer of the publish route ------------------------------- */

static void test_health(void **state)
{
    (void)state;
    rh_relay r;
    start_hub(&r, "health", NULL, NULL);
    char *a = rh_request(r.port, "GET /api/events/health HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_non_null(a);
    assert_non_null(strstr(a, "HTTP/1.1 200 OK"));
    assert_non_null(strstr(a, "{\"ok\":true,\"source\":\"hub\",\"mode\":\"hub\","
                              "\"subscriber_count\":0,\"last_event_ts\":null,"
                              "\"last_error\":null,"));
    free(a);
    a = rh_request(r.port, "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_non_null(strstr(a, "\"source\":\"hub\",\"mode\":\"hub\""));
    free(a);
    rh_conn *c = rh_get(r.port, STREAM, NULL);
    rh_wait_clients(r.port, NULL, 1, 10000);
    post_expect(r.port, NULL, "{\"event_type\":\"x\"}", "HTTP/1.1 200", "\"accepted\":1");
    a = rh_request(r.port, "GET /api/events/health HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_non_null(strstr(a, "\"subscriber_count\":1,\"last_event_ts\":1"));
    free(a);
    a = rh_request(r.port, "POST /api/events/health HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_non_null(strstr(a, "HTTP/1.1 405"));
    free(a);
    /* A client that asks for leave first (Expect: 100-continue, as curl
     * does for large bodies) gets it at once, not after its wait. */
    char body[1400], url[96], out[700], cerr[700];
    int k = snprintf(body, sizeof body, "{\"event_type\":\"curl\",\"data\":{\"s\":\"");
    memset(body + k, 'y', 1200);
    snprintf(body + k + 1200, sizeof body - (size_t)k - 1200, "\"}}");
    snprintf(url, sizeof url, "http://127.0.0.1:%d/api/events/publish", r.port);
    snprintf(out, sizeof out, "%s/curl-expect.out", g_out);
    snprintf(cerr, sizeof cerr, "%s/curl-expect.err", g_out);
    const char *cargv[] = {CURL, "-sv", "-H", "Expect: 100-continue", "--expect100-timeout",
                           "30", "-d", body, url, NULL};
    assert_int_equal(rh_wait(rh_spawn(cargv, NULL, out, cerr), 20000), 0);
    char *cu = rh_slurp(cerr);
    assert_non_null(strstr(cu, "HTTP/1.1 100 Continue"));
    free(cu);
    cu = rh_slurp(out);
    assert_non_null(strstr(cu, "{\"accepted\":1,"));
    free(cu);
    rh_close(c);
    stop_hub(&r);
}

static void test_publish_answers(void **state)
{
    (void)state;
    rh_relay r;
    const char *args[] = {"--max-event-bytes", "1024", "--max-body-bytes", "4096", NULL};
    start_hub(&r, "answers", args, NULL);
    rh_conn *c = rh_get(r.port, STREAM, NULL);
    rh_wait_clients(r.port, NULL, 1, 10000);

    /* 200: one envelope, canonical form (extra keys dropped, defaults). */
    post_expect(r.port, NULL,
                "{\"extra\":1,\"data\":{\"k\":\"v\"},\"event_type\":\"email.new\",\"internal_id\":7}",
                "HTTP/1.1 200 OK", "{\"accepted\":1,\"skipped\":0,\"last_id\":\"");
    /* 200: NDJSON, blank lines ignored. */
    post_expect(r.port, "Content-Type: application/x-ndjson\r\n",
                "{\"event_type\":\"n1\"}\n\n{\"event_type\":\"n2\",\"source\":\"outbox\"}\n",
                "HTTP/1.1 200 OK", "{\"accepted\":2,");
    /* 400s, nothing accepted. */
    const char *bad[] = {"{\"event_type\":", "[1,2]", "{\"data\":{}}", "{\"event_type\":\"\"}",
                         "{\"event_type\":\"\xff\"}", "{\"event_type\":\"a\",\"data\":5x}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        post_expect(r.port, NULL, bad[i], "HTTP/1.1 400", "\"error\":\"bad_request\"");
    post_expect(r.port, "Content-Type: application/x-ndjson\r\n",
                "{\"event_type\":\"never1\"}\n{\"event_type\":\"never2\"}\n{oops}\n",
                "HTTP/1.1 400", "\"line\":3");
    char *a = rh_request(r.port, "POST /api/events/publish HTTP/1.1\r\nContent-Length: 0\r\n"
                                 "Connection: close\r\n\r\n");
    assert_non_null(strstr(a, "HTTP/1.1 400"));
    free(a);
    /* 405 with Allow: POST. */
    a = rh_request(r.port, "GET /api/events/publish HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_non_null(strstr(a, "HTTP/1.1 405"));
    assert_non_null(strstr(a, "Allow: POST\r\n"));
    free(a);
    /* 413: one event over --max-event-bytes. */
    char big[2100];
    int n = snprintf(big, sizeof big, "{\"event_type\":\"big\",\"data\":{\"s\":\"");
    memset(big + n, 'x', 1500);
    snprintf(big + n + 1500, sizeof big - (size_t)n - 1500, "\"}}");
    post_expect(r.port, NULL, big, "HTTP/1.1 413", "too_large");
    /* 413 before the body: only the head is sent, the answer comes. */
    rh_conn *h = rh_connect(r.port, 0);
    const char head[] = "POST /api/events/publish HTTP/1.1\r\nHost: x\r\n"
                        "Content-Length: 100000\r\n\r\n";
    rh_send(h, head, sizeof head - 1);
    assert_true(rh_wait_for(h, 0, "HTTP/1.1 413", 10000) == 0);
    assert_non_null(strstr(h->buf, "max-body-bytes"));
    rh_close(h);
    /* 411: a chunked body. */
    a = rh_request(r.port, "POST /api/events/publish HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                           "Connection: close\r\n\r\n12\r\n{\"event_type\":\"c\"}\r\n0\r\n\r\n");
    assert_non_null(strstr(a, "HTTP/1.1 411"));
    free(a);
    /* Content-Length and Transfer-Encoding together: 400 (smuggling). */
    a = rh_request(r.port, "POST /api/events/publish HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                           "Content-Length: 5\r\nConnection: close\r\n\r\nhello");
    assert_non_null(strstr(a, "HTTP/1.1 400"));
    free(a);
    /* 408: a body that trickles past its deadline (10 s). */
    rh_conn *t = rh_connect(r.port, 0);
    const char slow[] = "POST /api/events/publish HTTP/1.1\r\nHost: x\r\n"
                        "Content-Length: 40\r\n\r\n{\"event_type\":";
    rh_send(t, slow, sizeof slow - 1);
    long at = -1;
    for (int i = 0; i < 30 && at < 0; i++) {
        rh_send(t, " ", 1);   /* one byte a second: never the whole body */
        at = rh_wait_for(t, 0, "HTTP/1.1 408", 1000);
    }
    assert_int_equal(at, 0);
    assert_true(rh_wait_eof(t, 10000));
    rh_close(t);

    /* Bodies read at once are bounded (4 x --max-body-bytes): four
     * connections announcing 4000 bytes each and sending none hold 16000;
     * a fifth announcing 1000 is told to come back. */
    rh_conn *held[4];
    const char h4000[] = "POST /api/events/publish HTTP/1.1\r\nHost: x\r\n"
                         "Content-Length: 4000\r\n\r\n{";
    for (int i = 0; i < 4; i++) {
        held[i] = rh_connect(r.port, 0);
        rh_send(held[i], h4000, sizeof h4000 - 1);
    }
    rh_sleep_ms(300);
    char filler[1001];
    memset(filler, ' ', 1000);
    memcpy(filler, "{\"event_type\":\"x\"}", 18);
    filler[1000] = '\0';
    a = rh_post(r.port, NULL, filler, 1000);
    assert_non_null(a);
    assert_non_null(strstr(a, "HTTP/1.1 503"));
    free(a);
    for (int i = 0; i < 4; i++)
        rh_close(held[i]);
    rh_sleep_ms(300);
    post_expect(r.port, NULL, filler, "HTTP/1.1 200", NULL);

    /* The stream saw exactly the accepted events, with ids. */
    post_expect(r.port, NULL, "{\"event_type\":\"last\"}", "HTTP/1.1 200", NULL);
    assert_true(rh_wait_for(c, 0, "\"event_type\":\"last\"", 10000) > 0);
    assert_int_equal(rh_count(c, "event: mailagent\n"), 5);
    assert_int_equal(rh_count(c, "\nid: "), 6);   /* 5 events and the position */
    assert_non_null(strstr(c->buf, "data: {\"event_type\":\"email.new\",\"ts\":"));
    assert_non_null(strstr(c->buf, ",\"internal_id\":7,\"data\":{\"k\":\"v\"},\"source\":\"mailagent\"}\n"));
    assert_non_null(strstr(c->buf, "\"source\":\"outbox\"}"));
    assert_null(strstr(c->buf, "never"));
    assert_null(strstr(c->buf, "extra"));
    rh_close(c);
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_publish_events_total"), 5);
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_publish_refused_unavailable_total"), 1);
    /* Six bad envelopes, the bad NDJSON, the empty body; the smuggling
     * attempt is a malformed request, refused by the parser. */
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_publish_refused_bad_request_total"), 8);
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_publish_refused_too_large_total"), 2);
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_publish_refused_length_required_total"), 1);
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_publish_refused_timeout_total"), 1);
    stop_hub(&r);
}

static void test_credentials(void **state)
{
    (void)state;
    rh_relay r;
    const char *env[] = {"MAILAGENT_LOCAL_API_TOKEN=s3cret", NULL};
    start_hub(&r, "credentials", NULL, env);
    post_expect(r.port, NULL, "{\"event_type\":\"a\"}", "HTTP/1.1 401", NULL);
    post_expect(r.port, "X-MailAgent-Local-Token: wrong\r\n", "{\"event_type\":\"a\"}",
                "HTTP/1.1 401", NULL);
    post_expect(r.port, "X-MailAgent-Local-Token: s3cret\r\n", "{\"event_type\":\"a\"}",
                "HTTP/1.1 200", "\"accepted\":1");
    /* The health route needs none and shows none. */
    char *a = rh_request(r.port, "GET /api/events/health HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_non_null(strstr(a, "HTTP/1.1 200"));
    assert_null(strstr(a, "s3cret"));
    free(a);
    assert_int_equal(rh_metric(r.port, "X-MailAgent-Local-Token: s3cret\r\n",
                               "mailagent_relay_publish_refused_unauthorized_total"),
                     2);
    stop_hub(&r);
}

/* ---- exactly once --------------------------------------------------------------------- */

#define PUB "X-MailAgent-Publisher: 0123456789abcdef0123456789abcdef\r\n" \
            "Content-Type: application/x-ndjson\r\n"

static void test_exactly_once(void **state)
{
    (void)state;
    rh_relay r;
    start_hub(&r, "once", NULL, NULL);
    rh_conn *c = rh_get(r.port, STREAM, NULL);
    rh_wait_clients(r.port, NULL, 1, 10000);
    const char *b123 = "{\"event_type\":\"e1\"}\n{\"event_type\":\"e2\"}\n{\"event_type\":\"e3\"}\n";
    post_expect(r.port, PUB "X-MailAgent-Batch-Start: 1\r\n", b123, "HTTP/1.1 200",
                "{\"accepted\":3,\"skipped\":0,");
    /* Resent whole: nothing again. */
    post_expect(r.port, PUB "X-MailAgent-Batch-Start: 1\r\n", b123, "HTTP/1.1 200",
                "{\"accepted\":0,\"skipped\":3,\"last_id\":null}");
    /* Overlapping 3..4: only 4. */
    post_expect(r.port, PUB "X-MailAgent-Batch-Start: 3\r\n",
                "{\"event_type\":\"e3\"}\n{\"event_type\":\"e4\"}\n", "HTTP/1.1 200",
                "{\"accepted\":1,\"skipped\":1,");
    /* Jumping ahead (a restarted hub sees this): taken. */
    post_expect(r.port, PUB "X-MailAgent-Batch-Start: 1000\r\n", "{\"event_type\":\"e1000\"}\n",
                "HTTP/1.1 200", "{\"accepted\":1,\"skipped\":0,");
    /* Another publisher has its own numbers. */
    post_expect(r.port,
                "X-MailAgent-Publisher: ffffffffffffffffffffffffffffffff\r\n"
                "X-MailAgent-Batch-Start: 1\r\n",
                "{\"event_type\":\"other\"}", "HTTP/1.1 200", "{\"accepted\":1,");
    /* Malformed headers, or one without the other: 400. */
    post_expect(r.port, "X-MailAgent-Publisher: XYZ\r\nX-MailAgent-Batch-Start: 1\r\n",
                "{\"event_type\":\"bad\"}", "HTTP/1.1 400", NULL);
    post_expect(r.port, "X-MailAgent-Batch-Start: 5\r\n", "{\"event_type\":\"bad\"}",
                "HTTP/1.1 400", NULL);
    post_expect(r.port, PUB "X-MailAgent-Batch-Start: 0\r\n", "{\"event_type\":\"bad\"}",
                "HTTP/1.1 400", NULL);
    assert_true(rh_wait_for(c, 0, "\"event_type\":\"other\"", 10000) > 0);
    assert_int_equal(rh_count(c, "event: mailagent\n"), 6);
    assert_int_equal(rh_count(c, "\"event_type\":\"e3\""), 1);
    assert_null(strstr(c->buf, "bad"));
    rh_close(c);
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_publish_duplicates_total"), 4);
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_publishers"), 2);
    stop_hub(&r);
}

/* ---- resume ---------------------------------------------------------------------------- */

/* The id of the i-th (0-based) "id: " line in s, into out. */
static void nth_id(const char *s, int i, char *out, size_t size)
{
    const char *p = s;
    for (int k = 0; k <= i; k++) {
        p = strstr(p, "\nid: ");
        assert_non_null(p);
        p += 5;
    }
    size_t n = strcspn(p, "\n");
    snprintf(out, size, "%.*s", (int)n, p);
}

static void test_resume(void **state)
{
    (void)state;
    rh_relay r;
    const char *args[] = {"--history", "5", NULL};
    start_hub(&r, "resume", args, NULL);
    rh_conn *c = rh_get(r.port, STREAM, NULL);
    rh_wait_clients(r.port, NULL, 1, 10000);
    /* The position of a hub with no event yet is 0-0. */
    assert_true(rh_wait_for(c, 0, "retry: 3000\nid: 0-0\n\n", 10000) > 0);
    for (int i = 1; i <= 10; i++) {
        char body[64];
        snprintf(body, sizeof body, "{\"event_type\":\"r%d\"}", i);
        post_expect(r.port, NULL, body, "HTTP/1.1 200", NULL);
    }
    assert_true(rh_wait_for(c, 0, "\"r10\"", 10000) > 0);
    char ids[11][48];
    for (int i = 0; i < 10; i++)
        nth_id(c->buf, i + 1, ids[i + 1], sizeof ids[0]);
    rh_close(c);

    char hdr[128];
    /* Kept: 7 -> 8, 9, 10 and nothing before. */
    snprintf(hdr, sizeof hdr, "Last-Event-ID: %s\r\n", ids[7]);
    c = rh_get(r.port, STREAM, hdr);
    assert_true(rh_wait_for(c, 0, "\"r10\"", 10000) > 0);
    assert_null(strstr(c->buf, "\"r7\""));
    assert_null(strstr(c->buf, "event: reset"));
    assert_int_equal(rh_count(c, "event: mailagent\n"), 3);
    rh_close(c);
    /* Trimmed: 2 -> history_trimmed naming 6, then 6..10. */
    char path[128], want[160];
    snprintf(path, sizeof path, STREAM "?last_event_id=%s", ids[2]);
    c = rh_get(r.port, path, NULL);
    assert_true(rh_wait_for(c, 0, "\"r10\"", 10000) > 0);
    snprintf(want, sizeof want,
             "event: reset\ndata: {\"reason\":\"history_trimmed\",\"oldest_id\":\"%s\"}", ids[6]);
    assert_non_null(strstr(c->buf, want));
    assert_int_equal(rh_count(c, "event: mailagent\n"), 5);
    rh_close(c);
    /* Newer than the newest: unknown_id, then live. */
    c = rh_get(r.port, STREAM, "Last-Event-ID: 99999999999999-0\r\n");
    assert_true(rh_wait_for(c, 0, "{\"reason\":\"unknown_id\"}", 10000) > 0);
    rh_wait_clients(r.port, NULL, 1, 10000);
    post_expect(r.port, NULL, "{\"event_type\":\"after-unknown\"}", "HTTP/1.1 200", NULL);
    assert_true(rh_wait_for(c, 0, "after-unknown", 10000) > 0);
    assert_int_equal(rh_count(c, "event: mailagent\n"), 1);
    rh_close(c);
    /* From before this hub started: unknown_id too, not trimmed. */
    c = rh_get(r.port, STREAM, "Last-Event-ID: 1000-0\r\n");
    assert_true(rh_wait_for(c, 0, "{\"reason\":\"unknown_id\"}", 10000) > 0);
    rh_close(c);
    /* Malformed. */
    c = rh_get(r.port, STREAM, "Last-Event-ID: 12-x\r\n");
    assert_true(rh_wait_for(c, 0, "{\"reason\":\"bad_last_event_id\"}", 10000) > 0);
    rh_close(c);
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_hub_history_events"), 5);
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_hub_history_evicted_total"), 6);
    stop_hub(&r);
}

/* ---- the C publisher in hub mode --------------------------------------------------------- */

static mae_publisher *open_publisher(int port, size_t queue_max, int io_timeout_ms)
{
    char url[64], err[256] = "";
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    mae_publisher_config cfg;
    mae_publisher_config_init(&cfg);
    cfg.relay_url = url;
    cfg.backoff_min_ms = 20;
    cfg.backoff_max_ms = 200;
    if (queue_max)
        cfg.queue_max_events = queue_max;
    if (io_timeout_ms)
        cfg.io_timeout_ms = io_timeout_ms;
    cfg.error_buf = err;
    cfg.error_buf_size = sizeof err;
    mae_publisher *p = NULL;
    if (mae_publisher_open(&cfg, &p) != MAE_OK)
        fail_msg("open: %s", err);
    return p;
}

/* Every n of 0..count-1 of publisher tag occurs exactly once in text, as
 * data {"n":N,"p":TAG}; and every event frame has an id. */
static void expect_each_once(const char *text, int tag, int count)
{
    char *seen = calloc((size_t)count, 1);
    assert_non_null(seen);
    char pat[32];
    snprintf(pat, sizeof pat, ",\"p\":%d}", tag);
    const char *stop = text + strlen(text);
    for (const char *p = text; (p = find(p, stop, "\"data\":{\"n\":")); p++) {
        char *end;
        long n = strtol(p + 12, &end, 10);
        if (strncmp(end, pat, strlen(pat)) != 0)
            continue;
        assert_true(n >= 0 && n < count);
        if (seen[n])
            fail_msg("publisher %d event %ld arrived twice", tag, n);
        seen[n] = 1;
    }
    for (int i = 0; i < count; i++)
        if (!seen[i])
            fail_msg("publisher %d event %d never arrived", tag, i);
    free(seen);
}

static void publish_n(mae_publisher *p, int tag, int from, int to)
{
    for (int i = from; i < to; i++) {
        char data[64];
        snprintf(data, sizeof data, "{\"n\":%d,\"p\":%d}", i, tag);
        mae_safe_publish(p, "hub.test", i, data, "test");
    }
}

static void test_c_publisher(void **state)
{
    (void)state;
    rh_relay r;
    start_hub(&r, "cpub", NULL, NULL);
    char path[700], url[64], out[700], err[700];
    pid_t reader = curl_reader(r.port, "cpub", NULL, path, sizeof path);
    /* And httpx, as the SSE cookbook reads (tests/relay/httpx_reader.py). */
    snprintf(url, sizeof url, "http://127.0.0.1:%d", r.port);
    snprintf(out, sizeof out, "%s/cpub-httpx.out", g_out);
    snprintf(err, sizeof err, "%s/cpub-httpx.err", g_out);
    const char *argv[] = {PYTHON, MAE_RELAY_TEST_DIR "/httpx_reader.py", url, "unused", "2",
                          NULL};
    pid_t py = rh_spawn(argv, NULL, out, err);
    rh_wait_clients(r.port, NULL, 2, 20000);
    mae_publisher *p = open_publisher(r.port, 0, 0);
    mae_publish_email_synced(p, 41, "page-41", NULL);
    publish_n(p, 1, 0, 5000);
    mae_publish_email_synced(p, 42, "page-42", NULL);
    int rc = rh_wait(py, 20000);
    char *got = rh_slurp(out), *why = rh_slurp(err);
    if (rc != 0)
        fail_msg("httpx reader exit %d\nstdout: %s\nstderr: %s", rc, got ? got : "",
                 why ? why : "");
    assert_string_equal(got, "new mail synced: 41 -> page-41\nnew mail synced: 42 -> page-42\n");
    free(got);
    free(why);
    assert_int_equal(mae_publisher_flush(p, 20000), MAE_OK);
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.published, 5002);
    assert_int_equal(st.dropped_send_error, 0);
    assert_int_equal(mae_publisher_close(p, 5000), MAE_OK);
    char *text = rh_wait_text(path, "page-42", 20000, 50);
    assert_non_null(text);
    expect_each_once(text, 1, 5000);
    /* Every frame carries an id (id: comes first in our frames). */
    assert_int_equal(count_in(text, "\nid: "), 5002 + 1);
    free(text);
    kill(reader, SIGTERM);
    rh_wait(reader, 5000);
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_publish_events_total"), 5002);
    stop_hub(&r);
}

/* The hub killed and started again on its port while a publisher posts:
 * the publisher reconnects by itself, and a client with an id of the old
 * hub gets unknown_id, then live. */
static void test_restart_under_load(void **state)
{
    (void)state;
    rh_relay r;
    start_hub(&r, "restart1", NULL, NULL);
    int port = r.port;
    rh_conn *c = rh_get(port, STREAM, NULL);
    rh_wait_clients(port, NULL, 1, 10000);
    mae_publisher *p = open_publisher(port, 0, 300);
    publish_n(p, 2, 0, 500);
    assert_int_equal(mae_publisher_flush(p, 10000), MAE_OK);
    assert_true(rh_wait_for(c, 0, "{\"n\":499,\"p\":2}", 10000) > 0);
    char old_id[48];
    const char *last = strstr(c->buf, "{\"n\":499,\"p\":2}");
    const char *idl = last;
    while (idl > c->buf && strncmp(idl, "\nid: ", 5) != 0)
        idl--;
    snprintf(old_id, sizeof old_id, "%.*s", (int)strcspn(idl + 5, "\n"), idl + 5);
    rh_close(c);

    /* Under load: kill it mid-stream. */
    publish_n(p, 2, 500, 1500);
    assert_int_equal(rh_relay_stop(&r, SIGKILL, 5000, NULL), -1);
    publish_n(p, 2, 1500, 2000);   /* returns at once, hub or not */
    char listen[32];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    const char *args[] = {"--listen", listen, NULL};
    start_hub(&r, "restart2", args, NULL);
    assert_int_equal(r.port, port);
    char hdr[96];
    snprintf(hdr, sizeof hdr, "Last-Event-ID: %s\r\n", old_id);
    c = rh_get(port, STREAM, hdr);
    assert_true(rh_wait_for(c, 0, "{\"reason\":\"unknown_id\"}", 10000) > 0);
    rh_wait_clients(port, NULL, 1, 10000);
    publish_n(p, 3, 0, 100);
    assert_int_equal(mae_publisher_flush(p, 20000), MAE_OK);
    assert_true(rh_wait_for(c, 0, "{\"n\":99,\"p\":3}", 20000) > 0);
    expect_each_once(c->buf, 3, 100);
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_true(st.connects >= 2);
    assert_int_equal(st.calls, 2100);
    assert_int_equal(st.enqueued, st.published + st.dropped_send_error + st.queued + st.in_flight);
    print_message("restart: published %llu, resent %llu, connects %llu\n",
                  (unsigned long long)st.published, (unsigned long long)st.resent,
                  (unsigned long long)st.connects);
    assert_int_equal(mae_publisher_close(p, 5000), MAE_OK);
    rh_close(c);
    stop_hub(&r);
}

/* The hub stopped (SIGSTOP): publish calls still return, the queue stays
 * bounded and the counters say what happened; once it runs again the
 * queue drains. */
static void test_sigstop(void **state)
{
    (void)state;
    rh_relay r;
    start_hub(&r, "sigstop", NULL, NULL);
    char path[700];
    pid_t reader = curl_reader(r.port, "sigstop", NULL, path, sizeof path);
    rh_wait_clients(r.port, NULL, 1, 10000);
    mae_publisher *p = open_publisher(r.port, 1000, 200);
    kill(r.pid, SIGSTOP);
    publish_n(p, 4, 0, 5000);
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.calls, 5000);
    assert_true(st.queued + st.in_flight <= 1000 + 256);
    assert_true(st.dropped_queue_full >= 5000 - 1000 - 256);
    assert_int_equal(st.calls, st.enqueued + st.dropped_queue_full + st.dropped_disabled +
                                   st.dropped_invalid + st.dropped_too_large);
    rh_sleep_ms(700);   /* a few io timeouts while it is stopped */
    kill(r.pid, SIGCONT);
    assert_int_equal(mae_publisher_flush(p, 20000), MAE_OK);
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.published, st.enqueued);
    print_message("sigstop: enqueued %llu, dropped_queue_full %llu, resent %llu, skipped %llu\n",
                  (unsigned long long)st.enqueued, (unsigned long long)st.dropped_queue_full,
                  (unsigned long long)st.resent, (unsigned long long)st.skipped);
    assert_int_equal(mae_publisher_close(p, 5000), MAE_OK);
    /* Each enqueued event reached the reader once: resent batches were
     * applied once by the hub. */
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_publish_events_total"),
                     (long long)st.enqueued);
    /* curl writes what it reads as it comes; give it time to catch up. */
    char *text = NULL;
    for (int i = 0; i < 200; i++) {
        free(text);
        text = rh_slurp(path);
        if (text && count_in(text, "event: mailagent\n") >= st.enqueued)
            break;
        rh_sleep_ms(50);
    }
    kill(reader, SIGTERM);
    rh_wait(reader, 5000);
    assert_int_equal(count_in(text, "event: mailagent\n"), st.enqueued);
    free(text);
    stop_hub(&r);
}

/* Four processes posting 10 000 events a second each for two seconds. */
static void test_four_posters(void **state)
{
    (void)state;
    rh_relay r;
    const char *args[] = {"--client-buffer", "67108864", NULL};
    start_hub(&r, "four", args, NULL);
    char path[700];
    pid_t reader = curl_reader(r.port, "four", NULL, path, sizeof path);
    rh_wait_clients(r.port, NULL, 1, 10000);
    enum { PROCS = 4, PER = 20000 };
    pid_t kids[PROCS];
    for (int k = 0; k < PROCS; k++) {
        kids[k] = fork();
        assert_true(kids[k] >= 0);
        if (kids[k] == 0) {
            mae_publisher *p = open_publisher(r.port, 0, 0);
            double t0 = rh_now();
            for (int i = 0; i < PER; i += 100) {
                publish_n(p, 10 + k, i, i + 100);
                /* 100 events every 10 ms: 10 000 a second. */
                double due = t0 + (i + 100) / 10000.0;
                while (rh_now() < due)
                    rh_sleep_ms(1);
            }
            int rc = mae_publisher_flush(p, 30000);
            mae_publisher_stats st;
            mae_publisher_stats_get(p, &st);
            mae_publisher_close(p, 5000);
            _exit(rc == MAE_OK && st.published == PER ? 0 : 1);
        }
    }
    for (int k = 0; k < PROCS; k++)
        assert_int_equal(rh_wait(kids[k], 60000), 0);
    char *text = rh_wait_text(path, "{\"n\":19999,\"p\":13}", 20000, 50);
    free(text);
    for (int i = 0; i < 50; i++) {
        if (rh_metric(r.port, NULL, "mailagent_relay_events_total") == PROCS * PER)
            break;
        rh_sleep_ms(100);
    }
    rh_sleep_ms(300);
    kill(reader, SIGTERM);
    rh_wait(reader, 5000);
    text = rh_slurp(path);
    assert_non_null(text);
    for (int k = 0; k < PROCS; k++)
        expect_each_once(text, 10 + k, PER);
    assert_int_equal(count_in(text, "event: mailagent\n"), PROCS * PER);
    free(text);
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_publish_events_total"), PROCS * PER);
    stop_hub(&r);
}

/* SIGTERM while a publish body is on its way: the connection is closed
 * (the publish not taken), and a body completed during the drain is never
 * applied to the stopped hub. Failed before: the rest of the body reached
 * a hub whose source was gone, and the relay died of SIGSEGV. */
static void test_sigterm_mid_body(void **state)
{
    (void)state;
    rh_relay r;
    start_hub(&r, "sigterm-body", NULL, NULL);
    rh_conn *c = rh_connect(r.port, 0);
    const char head[] = "POST /api/events/publish HTTP/1.1\r\nHost: x\r\n"
                        "Content-Length: 18\r\n\r\n{\"event_type\"";
    rh_send(c, head, sizeof head - 1);
    rh_sleep_ms(200);
    kill(r.pid, SIGTERM);
    rh_sleep_ms(100);   /* the shutdown has begun (its drain lasts 500 ms) */
    rh_send(c, ":\"x\"}", 6);
    assert_int_equal(rh_relay_stop(&r, SIGTERM, 10000, NULL), 0);
    assert_null(strstr(c->buf, "200 OK"));
    rh_close(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health),
        cmocka_unit_test(test_publish_answers),
        cmocka_unit_test(test_credentials),
        cmocka_unit_test(test_exactly_once),
        cmocka_unit_test(test_resume),
        cmocka_unit_test(test_c_publisher),
        cmocka_unit_test(test_restart_under_load),
        cmocka_unit_test(test_sigstop),
        cmocka_unit_test(test_four_posters),
        cmocka_unit_test(test_sigterm_mid_body),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
