/* Unit tests of the JSON text writers: the buffer, strings with UTF-8 repair
 * and code-point cuts, integers, epoch times, and the object compactor. */
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "core/text.h"
#include "testutil.h"

#define FFFD "\xEF\xBF\xBD"

/* The output of one json_str call, as a NUL-terminated string to free. */
static char *jstr(const char *s, size_t max_cp)
{
    mae__buf b;
    mae__buf_init(&b);
    mae__json_str(&b, s, max_cp);
    assert_false(b.oom);
    char *out = mae__buf_take(&b, NULL);
    assert_non_null(out);
    return out;
}

static void expect_jstr(const char *in, size_t max_cp, const char *want)
{
    char *got = jstr(in, max_cp);
    assert_string_equal(got, want);
    free(got);
}

/* ---- buffer -------------------------------------------------------------- */

static void test_buffer_hands_over_its_text(void **state)
{
    (void)state;
    mae__buf b;
    size_t len = 99;

    mae__buf_init(&b);
    char *s = mae__buf_take(&b, &len);
    assert_non_null(s); /* an untouched buffer still gives "" */
    assert_string_equal(s, "");
    assert_int_equal(len, 0);
    free(s);

    mae__buf_puts(&b, "ab");
    mae__buf_putc(&b, 'c');
    mae__buf_put(&b, "defg", 2);
    mae__buf_put(&b, NULL, 0);
    assert_string_equal(b.ptr, "abcde");
    assert_int_equal(b.len, 5);
    for (int i = 0; i < 1000; i++)
        mae__buf_puts(&b, "0123456789");
    assert_int_equal(b.len, 10005);
    assert_int_equal(strlen(b.ptr), 10005);
    assert_true(b.cap > b.len);
    s = mae__buf_take(&b, &len);
    assert_int_equal(len, 10005);
    assert_null(b.ptr);
    assert_int_equal(b.len, 0);
    free(s);

    /* An impossible reservation sets the sticky flag; later writes are no-ops
     * and take reports the failure. */
    mae__buf_puts(&b, "x");
    assert_false(mae__buf_reserve(&b, SIZE_MAX));
    assert_true(b.oom);
    mae__buf_puts(&b, "more");
    mae__json_i64(&b, 5);
    mae__json_str(&b, "s", 0);
    assert_int_equal(b.len, 1);
    assert_false(mae__buf_reserve(&b, 1));
    assert_null(mae__buf_take(&b, &len));
    assert_int_equal(len, 0);
    assert_false(b.oom); /* reset */
    mae__buf_free(&b);
    mae__buf_free(&b); /* twice is fine */
}

/* ---- strings ----------------------------------------------------------------- */

static void test_json_string_escapes_quotes_and_backslashes_not_slashes(void **state)
{
    (void)state;
    expect_jstr(NULL, 0, "null");
    expect_jstr(NULL, 5, "null");
    expect_jstr("", 0, "\"\"");
    expect_jstr("plain text", 0, "\"plain text\"");
    expect_jstr("a/b</script>", 0, "\"a/b</script>\""); /* '/' is not escaped */
    expect_jstr("say \"hi\"", 0, "\"say \\\"hi\\\"\"");
    expect_jstr("C:\\dir\\", 0, "\"C:\\\\dir\\\\\"");
    expect_jstr("\"\\\"", 0, "\"\\\"\\\\\\\"\"");
    expect_jstr("\x7f", 0, "\"\x7f\""); /* DEL is not a JSON control character */
    expect_jstr("{\"k\":[1]}", 0, "\"{\\\"k\\\":[1]}\"");

    /* Every printable ASCII byte but '"' and '\\' is copied as is, alone and
     * inside a long run; every lone byte >= 0x80 is replaced. */
    char in[40], want[48], one[8];
    for (int c = 0x20; c < 0x100; c++) {
        if (c == '"' || c == '\\')
            continue;
        memset(in, 'x', 20);
        in[20] = (char)c;
        in[21] = '\0';
        snprintf(want, sizeof want, "\"%.20s%s\"", in, c < 0x80 ? in + 20 : FFFD);
        expect_jstr(in, 0, want);
        snprintf(one, sizeof one, "\"%s\"", c < 0x80 ? in + 20 : FFFD);
        expect_jstr(in + 20, 0, one);
    }
}

static void test_json_string_escapes_every_control_character(void **state)
{
    (void)state;
    static const char *want[32] = {
        NULL,      "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006",
        "\\u0007", "\\b",     "\\t",     "\\n",     "\\u000b", "\\f",     "\\r",
        "\\u000e", "\\u000f", "\\u0010", "\\u0011", "\\u0012", "\\u0013", "\\u0014",
        "\\u0015", "\\u0016", "\\u0017", "\\u0018", "\\u0019", "\\u001a", "\\u001b",
        "\\u001c", "\\u001d", "\\u001e", "\\u001f",
    };
    char in[4], expect[16];
    for (int c = 1; c < 32; c++) {
        snprintf(in, sizeof in, "a%cb", c);
        snprintf(expect, sizeof expect, "\"a%sb\"", want[c]);
        expect_jstr(in, 0, expect);
    }
    /* All of them in one string, escaped in order. */
    char all[32];
    char expect_all[256] = "\"";
    for (int c = 1; c < 32; c++) {
        all[c - 1] = (char)c;
        strcat(expect_all, want[c]);
    }
    all[31] = '\0';
    strcat(expect_all, "\"");
    expect_jstr(all, 0, expect_all);
}

static void test_json_string_keeps_valid_utf8_raw(void **state)
{
    (void)state;
    /* Kept raw, never \u-escaped. */
    expect_jstr("caf\xC3\xA9", 0, "\"caf\xC3\xA9\"");                      /* 2 bytes */
    expect_jstr("\xE2\x82\xAC 5", 0, "\"\xE2\x82\xAC 5\"");                /* 3 bytes */
    expect_jstr("\xE9\x82\xAE\xE4\xBB\xB6", 0, "\"\xE9\x82\xAE\xE4\xBB\xB6\""); /* CJK */
    expect_jstr("\xF0\x9F\x98\x80!", 0, "\"\xF0\x9F\x98\x80!\"");          /* emoji */
    /* The edges of each range are valid. */
    expect_jstr("\xC2\x80\xDF\xBF", 0, "\"\xC2\x80\xDF\xBF\"");
    expect_jstr("\xE0\xA0\x80\xED\x9F\xBF\xEE\x80\x80\xEF\xBF\xBF", 0,
                "\"\xE0\xA0\x80\xED\x9F\xBF\xEE\x80\x80\xEF\xBF\xBF\"");
    expect_jstr("\xF0\x90\x80\x80\xF4\x8F\xBF\xBF", 0, "\"\xF0\x90\x80\x80\xF4\x8F\xBF\xBF\"");
}

static void test_json_string_repairs_each_bad_byte_to_fffd(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want;
    } cases[] = {
        /* stray continuation bytes */
        {"\x80", "\"" FFFD "\""},
        {"a\xBF" "b", "\"a" FFFD "b\""},
        {"\x80\x80", "\"" FFFD FFFD "\""},
        /* bytes that never start a sequence */
        {"\xC0\xAF", "\"" FFFD FFFD "\""},           /* overlong '/' */
        {"\xC1\xBF", "\"" FFFD FFFD "\""},
        {"\xF5\x80\x80\x80", "\"" FFFD FFFD FFFD FFFD "\""},
        {"\xFE", "\"" FFFD "\""},
        {"\xFF" "x", "\"" FFFD "x\""},
        /* overlong 3- and 4-byte forms */
        {"\xE0\x80\xAF", "\"" FFFD FFFD FFFD "\""},
        {"\xE0\x9F\xBF", "\"" FFFD FFFD FFFD "\""},
        {"\xF0\x80\x80\xAF", "\"" FFFD FFFD FFFD FFFD "\""},
        {"\xF0\x8F\xBF\xBF", "\"" FFFD FFFD FFFD FFFD "\""},
        /* surrogates D800-DFFF encoded in UTF-8 */
        {"\xED\xA0\x80", "\"" FFFD FFFD FFFD "\""},
        {"\xED\xBF\xBF", "\"" FFFD FFFD FFFD "\""},
        {"\xED\xA0\xBD\xED\xB8\x80", "\"" FFFD FFFD FFFD FFFD FFFD FFFD "\""},
        /* above U+10FFFF */
        {"\xF4\x90\x80\x80", "\"" FFFD FFFD FFFD FFFD "\""},
        /* truncated sequences, at the end and in the middle */
        {"\xC3", "\"" FFFD "\""},
        {"\xE2\x82", "\"" FFFD FFFD "\""},
        {"\xF0\x9F\x98", "\"" FFFD FFFD FFFD "\""},
        {"a\xE2\x82" "b", "\"a" FFFD FFFD "b\""},
        {"\xF0\x9F\x98\"", "\"" FFFD FFFD FFFD "\\\"\""},
        {"\xC3\n", "\"" FFFD "\\n\""},
        /* a bad byte right before a good sequence leaves the sequence alone */
        {"\xE2\xC3\xA9", "\"" FFFD "\xC3\xA9\""},
        {"ok\xC3(\xC3\xA9", "\"ok" FFFD "(\xC3\xA9\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *got = jstr(cases[i].in, 0);
        if (strcmp(got, cases[i].want) != 0)
            fail_msg("case %zu: got \"%s\", want \"%s\"", i, got, cases[i].want);
        free(got);
    }
}

static void test_json_string_cut_counts_code_points_not_bytes(void **state)
{
    (void)state;
    char in[1024], want[2048];

    /* 300 two-byte characters cut to 200: 400 bytes, never half of one. */
    in[0] = '\0';
    for (int i = 0; i < 300; i++)
        strcat(in, "\xC3\xA9");
    strcpy(want, "\"");
    for (int i = 0; i < 200; i++)
        strcat(want, "\xC3\xA9");
    strcat(want, "\"");
    expect_jstr(in, 200, want);

    /* A 4-byte character as the 200th code point is kept whole... */
    memset(in, 'a', 199);
    strcpy(in + 199, "\xF0\x9F\x98\x80" "bc");
    memset(want, 0, sizeof want);
    want[0] = '"';
    memset(want + 1, 'a', 199);
    strcpy(want + 200, "\xF0\x9F\x98\x80\"");
    expect_jstr(in, 200, want);
    /* ...and as the 201st it is dropped whole. */
    memset(in, 'a', 200);
    strcpy(in + 200, "\xF0\x9F\x98\x80");
    memset(want + 1, 'a', 200);
    strcpy(want + 201, "\"");
    expect_jstr(in, 200, want);

    /* A replacement and an escape count as one code point each. */
    memset(in, 'a', 199);
    strcpy(in + 199, "\xFFz");
    memset(want + 1, 'a', 199);
    strcpy(want + 200, FFFD "\"");
    expect_jstr(in, 200, want);
    memset(in, 'a', 199);
    strcpy(in + 199, "\nz");
    strcpy(want + 200, "\\n\"");
    expect_jstr(in, 200, want);

    /* Exactly at the limit nothing is cut; below it neither. */
    memset(in, 'a', 200);
    in[200] = '\0';
    memset(want + 1, 'a', 200);
    strcpy(want + 201, "\"");
    expect_jstr(in, 200, want);
    expect_jstr("short \xE2\x82\xAC", 200, "\"short \xE2\x82\xAC\"");

    expect_jstr("\xE2\x82\xAC" "x", 1, "\"\xE2\x82\xAC\"");
    expect_jstr("\xE2\x82\xAC" "x", 2, "\"\xE2\x82\xAC" "x\"");
    expect_jstr("ab", 1, "\"a\"");
    expect_jstr("\"b", 1, "\"\\\"\"");
}

static void test_json_string_of_a_mebibyte_is_exact(void **state)
{
    (void)state;
    const size_t n = 1 << 20;
    char *in = malloc(n + 1);
    assert_non_null(in);
    for (size_t i = 0; i < n; i++)
        in[i] = (char)('a' + i % 26);
    in[n] = '\0';
    /* A mixed tail so every path runs at the end of a long run. */
    memcpy(in + n - 7, "\"\\\n\xC3\xA9\xFF/", 7);

    mae__buf b;
    mae__buf_init(&b);
    mae__json_str(&b, in, 0);
    assert_false(b.oom);
    assert_int_equal(b.len, 1 + (n - 7) + 2 + 2 + 2 + 2 + 3 + 1 + 1);
    assert_memory_equal(b.ptr + 1, in, n - 7);
    assert_string_equal(b.ptr + 1 + n - 7, "\\\"\\\\\\n\xC3\xA9" FFFD "/\"");
    mae__buf_free(&b);

    /* A cut in the middle of a megabyte. */
    mae__json_str(&b, in, 100000);
    assert_int_equal(b.len, 100002);
    mae__buf_free(&b);

    /* Every byte escaped: the output is six times the input. */
    memset(in, '\x01', n);
    mae__json_str(&b, in, 0);
    assert_int_equal(b.len, 6 * n + 2);
    assert_memory_equal(b.ptr + 6 * (n - 1) + 1, "\\u0001\"", 7);
    mae__buf_free(&b);
    free(in);
}

static void test_stored_text_is_repaired_not_escaped(void **state)
{
    (void)state;
    bool oom = true;
    assert_null(mae__utf8_clean(NULL, 0, &oom));
    assert_false(oom);

    char *s = mae__utf8_clean("", 0, &oom);
    assert_string_equal(s, "");
    free(s);
    /* Nothing is escaped: this is text, not JSON. */
    s = mae__utf8_clean("a\"b\\c\nd\x01/", 0, &oom);
    assert_string_equal(s, "a\"b\\c\nd\x01/");
    free(s);
    s = mae__utf8_clean("x\xFF\xED\xA0\x80\xC3", 0, NULL);
    assert_string_equal(s, "x" FFFD FFFD FFFD FFFD FFFD);
    free(s);
    s = mae__utf8_clean("\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80xyz", 3, &oom);
    assert_string_equal(s, "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80");
    assert_false(oom);
    free(s);
}

/* ---- numbers -------------------------------------------------------------- */

static void expect_i64(int64_t v, const char *want)
{
    mae__buf b;
    mae__buf_init(&b);
    mae__json_i64(&b, v);
    assert_string_equal(b.ptr, want);
    mae__buf_free(&b);
}

static void test_integers_exact_over_the_int64_range(void **state)
{
    (void)state;
    expect_i64(0, "0");
    expect_i64(7, "7");
    expect_i64(-1, "-1");
    expect_i64(53675, "53675");
    expect_i64(1000000, "1000000");
    expect_i64(-987654321, "-987654321");
    expect_i64(INT64_MAX, "9223372036854775807");
    expect_i64(INT64_MIN, "-9223372036854775808");
    expect_i64(INT64_MIN + 1, "-9223372036854775807");
}

static void expect_epoch(double t, const char *want)
{
    mae__buf b;
    mae__buf_init(&b);
    mae__json_epoch(&b, t);
    if (strcmp(b.ptr, want) != 0)
        fail_msg("epoch %.17g: got %s, want %s", t, b.ptr, want);
    mae__buf_free(&b);
}

static void epoch_cases(void)
{
    expect_epoch(0, "0.000000");
    expect_epoch(-0.0, "0.000000");
    expect_epoch(1, "1.000000");
    expect_epoch(1.5, "1.500000");
    expect_epoch(1716096000.123456, "1716096000.123456");
    expect_epoch(1716096000.2, "1716096000.200000");
    expect_epoch(1716096000.5, "1716096000.500000");
    expect_epoch(1716096001.000001, "1716096001.000001");
    /* Rounded to the nearest microsecond, with the carry into seconds. */
    expect_epoch(0.0000014, "0.000001");
    expect_epoch(0.0000016, "0.000002");
    expect_epoch(0.9999994, "0.999999");
    expect_epoch(0.9999996, "1.000000");
    expect_epoch(1716095999.9999997, "1716096000.000000");
    expect_epoch(4102444800.25, "4102444800.250000");
    /* Negative times keep their sign; a value that rounds to zero loses it. */
    expect_epoch(-1.5, "-1.500000");
    expect_epoch(-0.25, "-0.250000");
    expect_epoch(-1716096000.123456, "-1716096000.123456");
    expect_epoch(-0.0000001, "0.000000");
    expect_epoch(-0.9999996, "-1.000000");
    /* Not a time: written as 0, or clamped. */
    expect_epoch(NAN, "0.000000");
    expect_epoch(INFINITY, "0.000000");
    expect_epoch(-INFINITY, "0.000000");
    expect_epoch(1e300, "18446744073709551615.000000");
    expect_epoch(9007199254740993.0, "9007199254740992.000000");
}

static void test_epoch_times_have_six_decimals(void **state)
{
    (void)state;
    epoch_cases();
}

/* A locale whose decimal point is a comma must change nothing. */
static void test_epoch_times_ignore_a_comma_locale(void **state)
{
    (void)state;
    static const char *names[] = {"de_DE.UTF-8", "de_DE.utf8", "de_DE", "fr_FR.UTF-8",
                                  "fr_FR.utf8", "nl_NL.UTF-8", "ru_RU.UTF-8", "es_ES.UTF-8"};
    const char *found = NULL;
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !found; i++) {
        if (setlocale(LC_NUMERIC, names[i])) {
            char probe[16];
            snprintf(probe, sizeof probe, "%.1f", 1.5);
            if (strcmp(probe, "1,5") == 0)
                found = names[i];
            else
                setlocale(LC_NUMERIC, "C");
        }
    }
    if (!found)
        tu_missing_prerequisite("no locale with a decimal comma (e.g. de_DE.UTF-8)");
    epoch_cases();
    mae__buf b;
    mae__buf_init(&b);
    mae__json_epoch(&b, 1716096000.123456);
    assert_null(strchr(b.ptr, ','));
    mae__buf_free(&b);
    setlocale(LC_NUMERIC, "C");
}

/* ---- compactor -------------------------------------------------------------- */

static void test_json_object_compacted_exactly(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"{}", "{}"},
        {" \t\r\n{ \n } \t\r\n", "{}"},
        {"{\"a\":1}", "{\"a\":1}"},
        {"{ \"a\" : 1 , \"b\" : [ 1 , 2 , { } , [ ] ] }", "{\"a\":1,\"b\":[1,2,{},[]]}"},
        {"{\"a b\" : \" x  y \"}", "{\"a b\":\" x  y \"}"},
        {"{\"s\":\"a\\/b\\/\"}", "{\"s\":\"a/b/\"}"},
        {"{\"e\":\"\\\"\\\\\\b\\f\\n\\r\\t\"}", "{\"e\":\"\\\"\\\\\\b\\f\\n\\r\\t\"}"},
        {"{\"u\":\"\\u00e9\\u00C9\\u0001\"}", "{\"u\":\"\\u00e9\\u00C9\\u0001\"}"},
        {"{\"p\":\"\\uD83D\\uDE00\"}", "{\"p\":\"\\uD83D\\uDE00\"}"},
        /* lone surrogate escapes are repaired like bad bytes */
        {"{\"x\":\"\\ud800\"}", "{\"x\":\"" FFFD "\"}"},
        {"{\"x\":\"\\udc00z\"}", "{\"x\":\"" FFFD "z\"}"},
        {"{\"x\":\"\\ud800\\u0041\"}", "{\"x\":\"" FFFD "\\u0041\"}"},
        {"{\"x\":\"\\uDBFF\\uDBFF\\uDFFF\"}", "{\"x\":\"" FFFD "\\uDBFF\\uDFFF\"}"},
        {"{\"n\":[0,-0,12,-3.25,1e5,1E+5,2.5e-3,-1.0E10]}",
         "{\"n\":[0,-0,12,-3.25,1e5,1E+5,2.5e-3,-1.0E10]}"},
        {"{\"t\":true,\"f\":false,\"z\":null}", "{\"t\":true,\"f\":false,\"z\":null}"},
        {"{\"a\":[true , false,null ]}", "{\"a\":[true,false,null]}"},
        {"{\"\xC3\xA9\":\"\xF0\x9F\x98\x80\x7f\"}", "{\"\xC3\xA9\":\"\xF0\x9F\x98\x80\x7f\"}"},
        {"{\"k\":\"\xFF\xC3\"}", "{\"k\":\"" FFFD FFFD "\"}"},
        {"{\"\xED\xA0\x80\":1}", "{\"" FFFD FFFD FFFD "\":1}"},
        {"{\"a\":{\"b\":{\"c\":[[[]]]}}}", "{\"a\":{\"b\":{\"c\":[[[]]]}}}"},
        {"{\"dup\":1,\"dup\":2}", "{\"dup\":1,\"dup\":2}"},
        {"{\"\":\"\"}", "{\"\":\"\"}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mae__buf b;
        mae__buf_init(&b);
        int rc = mae__json_compact_object(&b, cases[i].in);
        if (rc != 0)
            fail_msg("case %zu rejected: %s", i, cases[i].in);
        if (strcmp(b.ptr, cases[i].want) != 0)
            fail_msg("case %zu: got %s, want %s", i, b.ptr, cases[i].want);
        /* Compacting the output again changes nothing. */
        mae__buf again;
        mae__buf_init(&again);
        assert_int_equal(mae__json_compact_object(&again, b.ptr), 0);
        assert_string_equal(again.ptr, b.ptr);
        mae__buf_free(&again);
        mae__buf_free(&b);
    }
}

static void test_text_that_is_not_one_object_is_refused(void **state)
{
    (void)state;
    static const char *cases[] = {
        /* not one object */
        "", "   ", "[1]", "[]", "\"s\"", "1", "-1", "null", "true", "false", "}", "{}{}",
        "{} x", "{}]", "{},", "{} {}",
        /* structure */
        "{", "{\"a\"", "{\"a\":", "{\"a\":1", "{\"a\":1,", "{\"a\"}", "{\"a\":}", "{\"a\":1,}",
        "{,}", "{,\"a\":1}", "{\"a\" 1}", "{\"a\"::1}", "{a:1}", "{'a':1}", "{\"a\":1 \"b\":2}",
        "{\"a\":[1,]}", "{\"a\":[,1]}", "{\"a\":[1 2]}", "{\"a\":]}", "{\"a\":[}", "{\"a\":{]}",
        "{\"a\":[}]", "{\"a\":{\"b\":1]}", "{1:2}", "{null:1}", "{\"a\":1}}",
        /* strings */
        "{\"a\":\"x}", "{\"a\":\"x\\\"}", "{\"a\":\"\\x\"}", "{\"a\":\"\\u12\"}",
        "{\"a\":\"\\u12G4\"}", "{\"a\":\"\\U0041\"}", "{\"a\":\"\\\"}", "{\"a\":\"\\'\"}",
        "{\"a\":\"tab\there\"}", "{\"a\":\"new\nline\"}", "{\"a\":\"\x01\"}",
        "{\"a\":\"\x1f\"}", "{\"a\\u00\":1}", "{\"a\":\"\\u\"}",
        /* \u0000: the one grammar of core/text.h refuses it, in keys and values */
        "{\"a\":\"\\u0000\"}", "{\"a\\u0000\":1}", "{\"a\":\"x\\ud800\\u0000\"}",
        /* numbers */
        "{\"n\":01}", "{\"n\":1.}", "{\"n\":.5}", "{\"n\":-}", "{\"n\":+1}", "{\"n\":1e}",
        "{\"n\":1e+}", "{\"n\":0x10}", "{\"n\":--1}", "{\"n\":1.5.5}", "{\"n\":NaN}",
        "{\"n\":Infinity}", "{\"n\":-Infinity}", "{\"n\":1 2}", "{\"n\":- 1}", "{\"n\":00}",
        /* literals */
        "{\"l\":tru}", "{\"l\":nul}", "{\"l\":True}", "{\"l\":nulll}", "{\"l\":falsey}",
        "{\"l\":undefined}", "{\"l\":t}",
        /* whitespace that JSON does not know */
        "{\f}", "{\v}", "\xC2\xA0{}",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mae__buf b;
        mae__buf_init(&b);
        mae__buf_puts(&b, "prefix");
        if (mae__json_compact_object(&b, cases[i]) != -1)
            fail_msg("case %zu accepted: %s", i, cases[i]);
        /* The buffer is left as it was. */
        assert_int_equal(b.len, 6);
        assert_string_equal(b.ptr, "prefix");
        mae__buf_free(&b);
    }
    mae__buf b;
    mae__buf_init(&b);
    assert_int_equal(mae__json_compact_object(&b, NULL), -1);
    assert_int_equal(b.len, 0);
    mae__buf_free(&b);
}

/* n nested containers: the outer object, then n-1 levels of "a":{ or [. */
static char *nested(size_t n, bool arrays)
{
    char *s = malloc(n * 6 + 8);
    size_t k = 0;
    assert_non_null(s);
    s[k++] = '{';
    for (size_t i = 1; i < n; i++) {
        if (arrays && i > 1) {
            s[k++] = '[';
        } else {
            memcpy(s + k, "\"a\":", 4);
            k += 4;
            s[k++] = arrays ? '[' : '{';
        }
    }
    for (size_t i = n; i > 1; i--)
        s[k++] = arrays ? ']' : '}';
    s[k++] = '}';
    s[k] = '\0';
    return s;
}

static void test_json_nesting_limit(void **state)
{
    (void)state;
    mae__buf b;
    mae__buf_init(&b);

    char *s = nested(MAE_JSON_MAX_DEPTH, false);
    assert_int_equal(mae__json_compact_object(&b, s), 0);
    assert_string_equal(b.ptr, s);
    free(s);
    mae__buf_free(&b);

    s = nested(MAE_JSON_MAX_DEPTH, true);
    assert_int_equal(mae__json_compact_object(&b, s), 0);
    free(s);
    mae__buf_free(&b);

    s = nested(MAE_JSON_MAX_DEPTH + 1, false);
    assert_int_equal(mae__json_compact_object(&b, s), -1);
    assert_int_equal(b.len, 0);
    free(s);
    s = nested(MAE_JSON_MAX_DEPTH + 1, true);
    assert_int_equal(mae__json_compact_object(&b, s), -1);
    free(s);

    /* Depth 10000, closed and unclosed: rejected at once. */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    s = nested(10000, false);
    assert_int_equal(mae__json_compact_object(&b, s), -1);
    free(s);
    s = malloc(10006);
    assert_non_null(s);
    memcpy(s, "{\"a\":", 5);
    memset(s + 5, '[', 10000);
    s[10005] = '\0';
    assert_int_equal(mae__json_compact_object(&b, s), -1);
    free(s);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    assert_true(ms < 100);
    assert_int_equal(b.len, 0);
    mae__buf_free(&b);
}

static void test_compaction_appends_to_existing_text(void **state)
{
    (void)state;
    mae__buf b;
    mae__buf_init(&b);
    mae__buf_puts(&b, "{\"data\":");
    assert_int_equal(mae__json_compact_object(&b, " { \"k\" : [ 1 ] } "), 0);
    mae__buf_putc(&b, '}');
    assert_string_equal(b.ptr, "{\"data\":{\"k\":[1]}}");
    mae__buf_free(&b);

    /* A large object is copied whole. */
    size_t n = 200000;
    char *big = malloc(n + 16);
    assert_non_null(big);
    strcpy(big, "{\"k\":\"");
    memset(big + 6, 'x', n);
    strcpy(big + 6 + n, "\"}");
    assert_int_equal(mae__json_compact_object(&b, big), 0);
    assert_string_equal(b.ptr, big);
    free(big);
    mae__buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buffer_hands_over_its_text),
        cmocka_unit_test(test_json_string_escapes_quotes_and_backslashes_not_slashes),
        cmocka_unit_test(test_json_string_escapes_every_control_character),
        cmocka_unit_test(test_json_string_keeps_valid_utf8_raw),
        cmocka_unit_test(test_json_string_repairs_each_bad_byte_to_fffd),
        cmocka_unit_test(test_json_string_cut_counts_code_points_not_bytes),
        cmocka_unit_test(test_json_string_of_a_mebibyte_is_exact),
        cmocka_unit_test(test_stored_text_is_repaired_not_escaped),
        cmocka_unit_test(test_integers_exact_over_the_int64_range),
        cmocka_unit_test(test_epoch_times_have_six_decimals),
        cmocka_unit_test(test_epoch_times_ignore_a_comma_locale),
        cmocka_unit_test(test_json_object_compacted_exactly),
        cmocka_unit_test(test_text_that_is_not_one_object_is_refused),
        cmocka_unit_test(test_json_nesting_limit),
        cmocka_unit_test(test_compaction_appends_to_existing_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
