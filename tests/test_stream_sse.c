/* Unit tests of the command's SSE client parsers: stream/sse_parse.c (the
 * HTML standard's event stream rules, bounded) and stream/chunked.c
 * (HTTP/1.1 chunked decoding). Every input is also fed one byte at a time:
 * a split anywhere must give the same events. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <mailagent/common.h>

#include "stream/chunked.h"
#include "stream/sse_parse.h"

/* What the callback saw, one "type|id-or-*|data|flags" string per event. */
typedef struct seen {
    char out[8][256];
    int n;
    int stop_after; /* 0: never */
} seen;

static bool record(void *user, const mae__sse_event *ev)
{
    seen *s = user;
    if (s->n < 8)
        snprintf(s->out[s->n], sizeof s->out[0], "%s|%s|%.*s|%s%s", ev->type,
                 ev->has_id ? ev->id : "*", (int)ev->data_len, ev->data,
                 ev->oversize ? "O" : "", ev->id[0] && !ev->has_id ? "L" : "");
    s->n++;
    return !(s->stop_after && s->n >= s->stop_after);
}

/* Feeds text whole and byte by byte; both must see want[] exactly. */
static void check_stream(const char *text, size_t len, size_t max_line, const char *const *want,
                         int nwant, long retry)
{
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        mae__sse_parser p;
        seen s;
        memset(&s, 0, sizeof s);
        assert_int_equal(mae__sse_init(&p, max_line), MAE_OK);
        if (bytewise) {
            for (size_t i = 0; i < len; i++)
                assert_int_equal(mae__sse_feed(&p, text + i, 1, record, &s), 1);
        } else {
            assert_int_equal(mae__sse_feed(&p, text, len, record, &s), len);
        }
        if (s.n != nwant)
            fail_msg("%s: %d events, want %d (first: %s)", bytewise ? "bytewise" : "whole", s.n,
                     nwant, s.n ? s.out[0] : "-");
        for (int i = 0; i < nwant; i++)
            if (strcmp(s.out[i], want[i]) != 0)
                fail_msg("%s: event %d '%s', want '%s'", bytewise ? "bytewise" : "whole", i,
                         s.out[i], want[i]);
        assert_int_equal(p.retry_ms, retry);
        mae__sse_free(&p);
    }
}

#define CHECK(text, max, retry, ...)                                                        \
    do {                                                                                    \
        static const char *const w_[] = {__VA_ARGS__};                                      \
        check_stream(text, sizeof(text) - 1, max, w_, (int)(sizeof w_ / sizeof *w_) - 1,    \
                     retry);                                                                \
    } while (0)

static void test_relay_frames(void **state)
{
    (void)state;
    /* What the relay sends in stream mode: retry, the position, an event,
     * a ping, a reset. */
    CHECK("retry: 3000\n\nid: 1-0\n\nid: 1716096000123-0\nevent: mailagent\n"
          "data: {\"event_type\":\"email.synced\"}\n\nevent: ping\ndata: \n\n"
          "event: reset\ndata: {\"reason\":\"unknown_id\"}\n\n",
          1024, 3000, "mailagent|1716096000123-0|{\"event_type\":\"email.synced\"}|",
          "ping|*||L", "reset|*|{\"reason\":\"unknown_id\"}|L", NULL);
}

static void test_line_ends(void **state)
{
    (void)state;
    CHECK("data: a\r\n\r\ndata: b\r\rdata: c\n\n", 64, -1, "message|*|a|", "message|*|b|",
          "message|*|c|", NULL);
    /* CR then LF split across feeds is one line end (the bytewise pass). */
    CHECK("data: x\r\n\r\n", 64, -1, "message|*|x|", NULL);
}

static void test_fields(void **state)
{
    (void)state;
    /* data lines joined by LF; one space after the colon dropped, not two;
     * a field without colon; comments; unknown fields. */
    CHECK(": hello\ndata:one\ndata:  two\ndata\nfoo: bar\n\n", 64, -1,
          "message|*|one\n two\n|", NULL);
    /* No data: nothing dispatched, but the id is kept for the next. */
    CHECK("id: 7-1\n\ndata: d\n\n", 64, -1, "message|*|d|L", NULL);
    /* An id with a NUL is ignored; an empty id clears the buffer. */
    CHECK("id: 5-5\ndata: a\n\nid: 6\0-6\ndata: b\n\nid\ndata: c\n\n", 64, -1,
          "message|5-5|a|", "message|*|b|L", "message||c|", NULL);
    /* retry: digits only. */
    CHECK("retry: 12x\n\nretry: 250\n\nretry:\n\n", 64, 250, NULL);
    /* A frame cut by the end of the stream is not dispatched. */
    CHECK("data: a\n\ndata: unfinished\n", 64, -1, "message|*|a|", NULL);
    /* A BOM at the start is dropped; a partial one is data. */
    CHECK("\xEF\xBB\xBF" "data: a\n\n", 64, -1, "message|*|a|", NULL);
    CHECK("\xEF\xBB" "x: y\ndata: a\n\n", 64, -1, "message|*|a|", NULL);
}

static void test_limits(void **state)
{
    (void)state;
    /* A line over the limit makes its frame oversize; the next is whole. */
    CHECK("data: 0123456789abcdefXYZ\n\ndata: ok\n\n", 16, -1, "message|*||O", "message|*|ok|",
          NULL);
    /* Data over the limit across lines, likewise. */
    CHECK("data: 0123456\ndata: 0123456\ndata: 0123\n\ndata: ok\n\n", 16, -1, "message|*||O",
          "message|*|ok|", NULL);
    /* An event type over its limit. */
    CHECK("event: " "0123456789012345678901234567890123456789012345678901234567890123456789\n"
          "data: x\n\n", 256, -1, "message|*||O", NULL);
}

static void test_stop_and_reset(void **state)
{
    (void)state;
    static const char text[] = "id: 1-1\ndata: a\n\nid: 1-2\ndata: b\n\n";
    mae__sse_parser p;
    seen s;
    memset(&s, 0, sizeof s);
    s.stop_after = 1;
    assert_int_equal(mae__sse_init(&p, 64), MAE_OK);
    size_t used = mae__sse_feed(&p, text, sizeof text - 1, record, &s);
    assert_int_equal(used, strlen("id: 1-1\ndata: a\n\n"));
    s.stop_after = 0;
    assert_int_equal(mae__sse_feed(&p, text + used, sizeof text - 1 - used, record, &s),
                     sizeof text - 1 - used);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.out[1], "message|1-2|b|");
    /* A new connection: the half frame goes, its id with it (a reconnect
     * names the last complete frame's id), the last id stays. */
    mae__sse_feed(&p, "id: 9-9\ndata: half", 19, record, &s);
    assert_string_equal(p.id, "1-2");
    mae__sse_reset_connection(&p);
    mae__sse_feed(&p, "\n\n", 2, record, &s);
    assert_int_equal(s.n, 2);
    assert_string_equal(p.id, "1-2");
    mae__sse_free(&p);
    mae__sse_free(&p); /* twice: harmless */
}

/* ---- chunked ------------------------------------------------------------- */

static int decode(const char *in, size_t len, bool bytewise, char *out, size_t *outlen)
{
    mae__chunked d;
    char buf[512];
    int rc = MAE__CHUNKED_MORE;
    mae__chunked_init(&d);
    *outlen = 0;
    for (size_t i = 0; i < len && rc == MAE__CHUNKED_MORE;) {
        size_t n = bytewise ? 1 : len - i, got, used;
        memcpy(buf, in + i, n);
        rc = mae__chunked_feed(&d, buf, n, &got, &used);
        if (rc == MAE__CHUNKED_BAD)
            return rc;
        memcpy(out + *outlen, buf, got);
        *outlen += got;
        i += used;
    }
    return rc;
}

static void test_chunked(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int rc;
        const char *body;
    } cases[] = {
        {"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", MAE__CHUNKED_END, "hello world"},
        {"A;name=v\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n", MAE__CHUNKED_END, "0123456789"},
        {"3\nabc\n0\n\n", MAE__CHUNKED_END, "abc"},
        {"1f\r\n0123456789012345678901234567890\r\n", MAE__CHUNKED_MORE,
         "0123456789012345678901234567890"},
        {"5\r\nhel", MAE__CHUNKED_MORE, "hel"},
        {"x\r\n", MAE__CHUNKED_BAD, ""},
        {"\r\n", MAE__CHUNKED_BAD, ""},
        {"5\r\nhelloX\r\n", MAE__CHUNKED_BAD, ""},
        {"1000000000000000\r\n", MAE__CHUNKED_BAD, ""},
        {"5\rX", MAE__CHUNKED_BAD, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        for (int bytewise = 0; bytewise < 2; bytewise++) {
            char out[512];
            size_t n;
            int rc = decode(cases[i].in, strlen(cases[i].in), bytewise, out, &n);
            if (rc != cases[i].rc)
                fail_msg("case %zu (%s): rc %d, want %d", i, bytewise ? "bytewise" : "whole", rc,
                         cases[i].rc);
            if (rc != MAE__CHUNKED_BAD &&
                (n != strlen(cases[i].body) || memcmp(out, cases[i].body, n) != 0))
                fail_msg("case %zu: body '%.*s'", i, (int)n, out);
        }
    }
    /* What follows the body is left unconsumed. */
    mae__chunked d;
    char buf[] = "2\r\nab\r\n0\r\n\r\nHTTP/1.1";
    size_t got, used;
    mae__chunked_init(&d);
    assert_int_equal(mae__chunked_feed(&d, buf, strlen(buf), &got, &used), MAE__CHUNKED_END);
    assert_int_equal(got, 2);
    assert_string_equal(buf + used, "HTTP/1.1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_relay_frames),
        cmocka_unit_test(test_line_ends),
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_stop_and_reset),
        cmocka_unit_test(test_chunked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
