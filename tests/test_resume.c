/* Unit tests of the resume decision (relay/resume.h): every row of the
 * table, for Redis 7 bounds and for a server that does not report removals,
 * and the exact reset texts a client receives. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "stream/decide.h"

#define ID(ms, seq) ((mae__stream_id){(ms), (seq)})

/* A stream with length entries first..last kept, of added ever added. */
static mae__stream_bounds kept(mae__stream_id first, mae__stream_id last, uint64_t length,
                               uint64_t added)
{
    mae__stream_bounds b = {true, length, first, last, true, added};
    return b;
}

static mae__resume_plan decide_text(const char *text, const mae__stream_bounds *b)
{
    mae__stream_id id = {0, 0};
    int rc = text ? mae__stream_id_parse(text, strlen(text), &id) : 1;
    return mae__resume_decide(rc, &id, b);
}

static void expect(const char *text, const mae__stream_bounds *b, mae__resume_kind kind,
                   const char *reset)
{
    mae__resume_plan p = decide_text(text, b);
    char json[MAE__RESUME_RESET_MAX];
    size_t n = mae__resume_reset_json(&p, json, sizeof json);
    if (p.kind != kind)
        fail_msg("id \"%s\": kind %d, want %d", text ? text : "(none)", (int)p.kind, (int)kind);
    if (strcmp(json, reset) != 0)
        fail_msg("id \"%s\": reset '%s', want '%s'", text ? text : "(none)", json, reset);
    assert_int_equal(n, strlen(reset));
    /* A replay starts right after the client's id, whatever the reset. */
    if (p.replay) {
        mae__stream_id id;
        assert_int_equal(mae__stream_id_parse(text, strlen(text), &id), MAE__STREAM_ID_OK);
        assert_int_equal(mae__stream_id_cmp(&p.after, &id), 0);
    }
    assert_int_equal(p.replay, kind == MAE__RESUME_REPLAY || kind == MAE__RESUME_TRIMMED);
}

static void test_malformed_and_none(void **state)
{
    (void)state;
    mae__stream_bounds b = kept(ID(100, 0), ID(200, 0), 50, 50);
    expect(NULL, &b, MAE__RESUME_LIVE, "");
    expect("", &b, MAE__RESUME_BAD_ID, "{\"reason\":\"bad_last_event_id\"}");
    expect("abc", &b, MAE__RESUME_BAD_ID, "{\"reason\":\"bad_last_event_id\"}");
    expect("99999999999999999999-0", &b, MAE__RESUME_BAD_ID,
           "{\"reason\":\"bad_last_event_id\"}");
    mae__stream_id id;
    mae__resume_plan p = mae__resume_decide(
        mae__stream_id_parse("1-0\r\n", 5, &id), NULL, NULL);  /* needs no bounds */
    assert_int_equal(p.kind, MAE__RESUME_BAD_ID);
    assert_false(p.replay);
}

static void test_untrimmed_stream(void **state)
{
    (void)state;
    /* Entries 100-0 .. 200-0, nothing ever removed. */
    mae__stream_bounds b = kept(ID(100, 0), ID(200, 0), 50, 50);
    expect("0-0", &b, MAE__RESUME_REPLAY, "");
    expect("100-0", &b, MAE__RESUME_REPLAY, "");
    expect("150-3", &b, MAE__RESUME_REPLAY, "");
    expect("200-0", &b, MAE__RESUME_REPLAY, "");
    expect("200-1", &b, MAE__RESUME_UNKNOWN_ID, "{\"reason\":\"unknown_id\"}");
    expect("18446744073709551615-18446744073709551615", &b, MAE__RESUME_UNKNOWN_ID,
           "{\"reason\":\"unknown_id\"}");
    /* A non-zero id older than a stream that never lost an entry: the key
     * held another stream before, events in between are unknown. */
    expect("50-0", &b, MAE__RESUME_TRIMMED,
           "{\"reason\":\"history_trimmed\",\"oldest_id\":\"100-0\"}");
}

static void test_trimmed_stream(void **state)
{
    (void)state;
    /* 70 entries added, 20 trimmed; 100-0 .. 200-0 kept. */
    mae__stream_bounds b = kept(ID(100, 0), ID(200, 0), 50, 70);
    const char *trimmed = "{\"reason\":\"history_trimmed\",\"oldest_id\":\"100-0\"}";
    expect("0-0", &b, MAE__RESUME_TRIMMED, trimmed);
    expect("1-0", &b, MAE__RESUME_TRIMMED, trimmed);
    expect("99-18446744073709551615", &b, MAE__RESUME_TRIMMED, trimmed);
    expect("100-0", &b, MAE__RESUME_REPLAY, "");
    expect("100-1", &b, MAE__RESUME_REPLAY, "");
    expect("200-0", &b, MAE__RESUME_REPLAY, "");
    expect("201-0", &b, MAE__RESUME_UNKNOWN_ID, "{\"reason\":\"unknown_id\"}");
    /* An entry deleted in the middle (XDEL) is no trim for the ids after
     * the oldest kept one. */
    b = kept(ID(100, 0), ID(200, 0), 50, 51);
    expect("120-0", &b, MAE__RESUME_REPLAY, "");
    expect("0-0", &b, MAE__RESUME_TRIMMED, trimmed);
}

static void test_empty_and_missing(void **state)
{
    (void)state;
    /* No stream under the key: only 0-0 is known. */
    mae__stream_bounds none = {0};
    expect("0-0", &none, MAE__RESUME_REPLAY, "");
    expect("0-1", &none, MAE__RESUME_UNKNOWN_ID, "{\"reason\":\"unknown_id\"}");
    expect("1716096000123-0", &none, MAE__RESUME_UNKNOWN_ID, "{\"reason\":\"unknown_id\"}");
    /* Everything trimmed (XTRIM MAXLEN 0): nothing kept to name. */
    mae__stream_bounds empty = kept(ID(0, 0), ID(300, 0), 0, 8);
    expect("100-0", &empty, MAE__RESUME_TRIMMED,
           "{\"reason\":\"history_trimmed\",\"oldest_id\":null}");
    expect("300-0", &empty, MAE__RESUME_REPLAY, "");
    expect("300-1", &empty, MAE__RESUME_UNKNOWN_ID, "{\"reason\":\"unknown_id\"}");
}

static void test_server_without_removal_info(void **state)
{
    (void)state;
    /* Before Redis 7 nothing says whether 0-0 missed a trim: assume so. */
    mae__stream_bounds b = kept(ID(100, 0), ID(200, 0), 50, 0);
    b.added_known = false;
    const char *trimmed = "{\"reason\":\"history_trimmed\",\"oldest_id\":\"100-0\"}";
    expect("0-0", &b, MAE__RESUME_TRIMMED, trimmed);
    expect("99-0", &b, MAE__RESUME_TRIMMED, trimmed);
    expect("100-0", &b, MAE__RESUME_REPLAY, "");
    expect("200-1", &b, MAE__RESUME_UNKNOWN_ID, "{\"reason\":\"unknown_id\"}");
}

static void test_reset_text_bounds(void **state)
{
    (void)state;
    /* The longest reset fits MAE__RESUME_RESET_MAX; a short buffer gives 0. */
    mae__resume_plan p = {MAE__RESUME_TRIMMED, true, {0, 0}, true, {UINT64_MAX, UINT64_MAX}};
    char json[MAE__RESUME_RESET_MAX];
    size_t n = mae__resume_reset_json(&p, json, sizeof json);
    assert_string_equal(json, "{\"reason\":\"history_trimmed\",\"oldest_id\":"
                              "\"18446744073709551615-18446744073709551615\"}");
    assert_int_equal(n, strlen(json));
    char small[10];
    assert_int_equal(mae__resume_reset_json(&p, small, sizeof small), 0);
    assert_string_equal(mae__resume_rewound_json, "{\"reason\":\"unknown_id\"}");
}

static void test_rolled_back_text(void **state)
{
    (void)state;
    /* The longest rolled_back reset fits too; none before: null. */
    mae__resume_plan p = {MAE__RESUME_ROLLED_BACK, true, {0, 0}, true,
                          {UINT64_MAX, UINT64_MAX}};
    char json[MAE__RESUME_RESET_MAX];
    size_t n = mae__resume_reset_json(&p, json, sizeof json);
    assert_string_equal(json, "{\"reason\":\"rolled_back\",\"last_kept\":"
                              "\"18446744073709551615-18446744073709551615\"}");
    assert_int_equal(n, strlen(json));
    p.has_oldest = false;
    mae__resume_reset_json(&p, json, sizeof json);
    assert_string_equal(json, "{\"reason\":\"rolled_back\",\"last_kept\":null}");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_malformed_and_none),
        cmocka_unit_test(test_untrimmed_stream),
        cmocka_unit_test(test_trimmed_stream),
        cmocka_unit_test(test_empty_and_missing),
        cmocka_unit_test(test_server_without_removal_info),
        cmocka_unit_test(test_reset_text_bounds),
        cmocka_unit_test(test_rolled_back_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
