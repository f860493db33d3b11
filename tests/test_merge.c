/* Tests of the canonical JSON payloads (core/json.h): sorting and
 * compaction, the RFC 7396 merge patch, refusals, text and numbers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <mailagent/events.h>

#include "core/json.h"

#define SENTINEL ((char *)"untouched")

/* Asserts that canonical(in, max_cp) is expected, and that canonicalising
 * the result again changes nothing. */
static void check_canon(const char *in, size_t max_cp, const char *expected)
{
    char *out = NULL, *again = NULL;
    assert_int_equal(mae__json_canonical(in, max_cp, &out), MAE_OK);
    assert_non_null(out);
    assert_string_equal(out, expected);
    assert_int_equal(mae__json_canonical(out, 0, &again), MAE_OK);
    assert_string_equal(again, out);
    free(again);
    free(out);
}

static void check_merge(const char *target, const char *patch, const char *expected)
{
    char *out = NULL;
    assert_int_equal(mae__json_merge_patch(target, patch, &out), MAE_OK);
    assert_non_null(out);
    assert_string_equal(out, expected);
    free(out);
}

/* Asserts code for canonical(in) and for in as either side of a merge, and
 * that the out-parameter was left alone. */
static void check_refused(const char *in, int code)
{
    char *out = SENTINEL;
    assert_int_equal(mae__json_canonical(in, 0, &out), code);
    assert_ptr_equal(out, SENTINEL);
    assert_int_equal(mae__json_merge_patch(in, "{}", &out), code);
    assert_ptr_equal(out, SENTINEL);
    assert_int_equal(mae__json_merge_patch("{}", in, &out), code);
    assert_ptr_equal(out, SENTINEL);
}

static void test_payload_keys_sorted_at_every_level(void **state)
{
    (void)state;
    check_canon("{\"b\":1,\"a\":{\"d\":[{\"z\":1,\"y\":{\"q\":2,\"p\":1}}],\"c\":2}}", 0,
                "{\"a\":{\"c\":2,\"d\":[{\"y\":{\"p\":1,\"q\":2},\"z\":1}]},\"b\":1}");
    /* Bytewise: "" < "B" < "Z" < "_" < "a" < "aa" < "é" (0xC3 ...) < "中" (0xE4 ...). */
    check_canon("{\"中\":7,\"é\":6,\"aa\":5,\"a\":4,\"_\":3,\"Z\":2,\"B\":1,\"\":0}", 0,
                "{\"\":0,\"B\":1,\"Z\":2,\"_\":3,\"a\":4,\"aa\":5,\"é\":6,\"中\":7}");
    /* Arrays keep their order. */
    check_canon("{\"a\":[3,1,2,\"b\",\"a\"]}", 0, "{\"a\":[3,1,2,\"b\",\"a\"]}");
    check_canon("{}", 0, "{}");
}

static void test_payload_stored_without_whitespace(void **state)
{
    (void)state;
    check_canon(" \n\t{ \"a\" : [ 1 , 2 , { } , [ ] ] ,\r\n \"b\" : { \"c\" : true , \"d\" : false ,"
                " \"e\" : null } }\n ",
                0, "{\"a\":[1,2,{},[]],\"b\":{\"c\":true,\"d\":false,\"e\":null}}");
}

static void test_payload_duplicate_keys_last_wins(void **state)
{
    (void)state;
    check_canon("{\"a\":1,\"b\":2,\"a\":3}", 0, "{\"a\":3,\"b\":2}");
    check_canon("{\"a\":{\"x\":1},\"a\":{\"y\":2}}", 0, "{\"a\":{\"y\":2}}");
    check_merge("{\"a\":1}", "{\"a\":2,\"a\":null}", "{}");
    check_merge("{\"a\":1}", "{\"a\":null,\"a\":2}", "{\"a\":2}");
}

/* RFC 7396, Appendix A, for every case whose target and patch are objects. */
static void test_merge_follows_rfc7396_appendix_a(void **state)
{
    (void)state;
    check_merge("{\"a\":\"b\"}", "{\"a\":\"c\"}", "{\"a\":\"c\"}");
    check_merge("{\"a\":\"b\"}", "{\"b\":\"c\"}", "{\"a\":\"b\",\"b\":\"c\"}");
    check_merge("{\"a\":\"b\"}", "{\"a\":null}", "{}");
    check_merge("{\"a\":\"b\",\"b\":\"c\"}", "{\"a\":null}", "{\"b\":\"c\"}");
    check_merge("{\"a\":[\"b\"]}", "{\"a\":\"c\"}", "{\"a\":\"c\"}");
    check_merge("{\"a\":\"c\"}", "{\"a\":[\"b\"]}", "{\"a\":[\"b\"]}");
    check_merge("{\"a\":{\"b\":\"c\"}}", "{\"a\":{\"b\":\"d\",\"c\":null}}", "{\"a\":{\"b\":\"d\"}}");
    check_merge("{\"a\":[{\"b\":\"c\"}]}", "{\"a\":[1]}", "{\"a\":[1]}");
    check_merge("{\"e\":null}", "{\"a\":1}", "{\"a\":1,\"e\":null}");
    check_merge("{}", "{\"a\":{\"bb\":{\"ccc\":null}}}", "{\"a\":{\"bb\":{}}}");
}

/* The example of RFC 7396 section 3. */
static void test_merge_follows_rfc7396_example(void **state)
{
    (void)state;
    check_merge("{\"title\":\"Goodbye!\",\"author\":{\"givenName\":\"John\",\"familyName\":\"Doe\"},"
                "\"tags\":[\"example\",\"sample\"],\"content\":\"This will be unchanged\"}",
                "{\"title\":\"Hello!\",\"phoneNumber\":\"+01-123-456-7890\","
                "\"author\":{\"familyName\":null},\"tags\":[\"example\"]}",
                "{\"author\":{\"givenName\":\"John\"},\"content\":\"This will be unchanged\","
                "\"phoneNumber\":\"+01-123-456-7890\",\"tags\":[\"example\"],\"title\":\"Hello!\"}");
}

static void test_merge_later_keys_win_and_null_removes(void **state)
{
    (void)state;
    /* Later keys win, old keys kept, result sorted. */
    check_merge("{\"z\":1,\"flagged\":false}", "{\"note\":\"x\",\"flagged\":true}",
                "{\"flagged\":true,\"note\":\"x\",\"z\":1}");
    /* Null removes, also a key that was not there. */
    check_merge("{\"a\":1,\"b\":2}", "{\"a\":null,\"zz\":null}", "{\"b\":2}");
    /* Nested objects merge recursively, at depth. */
    check_merge("{\"a\":{\"b\":{\"c\":1,\"d\":2},\"e\":3}}", "{\"a\":{\"b\":{\"d\":null,\"f\":4}}}",
                "{\"a\":{\"b\":{\"c\":1,\"f\":4},\"e\":3}}");
    /* An object replaces a scalar and loses its nulls on the way. */
    check_merge("{\"a\":5}", "{\"a\":{\"x\":null,\"y\":{\"z\":null,\"w\":1}}}",
                "{\"a\":{\"y\":{\"w\":1}}}");
    /* A scalar replaces an object wholesale. */
    check_merge("{\"a\":{\"x\":1}}", "{\"a\":[1,2]}", "{\"a\":[1,2]}");
    /* Arrays are replaced, never merged, and nulls inside them stay. */
    check_merge("{\"a\":[1,2,3]}", "{\"a\":[null,{\"x\":null}]}", "{\"a\":[null,{\"x\":null}]}");
    /* Empty patch: the target, canonical. */
    check_merge("{ \"b\" : 1 , \"a\" : 2 }", "{}", "{\"a\":2,\"b\":1}");
    /* Target nulls survive when the patch does not touch them. */
    check_merge("{\"a\":null}", "{\"b\":null}", "{\"a\":null}");
    /* A patched sub-object stays sorted. */
    check_merge("{\"o\":{\"m\":1}}", "{\"o\":{\"z\":1,\"a\":2}}", "{\"o\":{\"a\":2,\"m\":1,\"z\":1}}");
}

static void test_payload_that_is_not_one_object_is_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        " ",
        "[]",
        "[1,2]",
        "\"s\"",
        "123",
        "null",
        "true",
        "{",
        "{\"a\":",
        "{\"a\":1",
        "{\"a\" 1}",
        "{} x",
        "{}{}",
        "{},",
        "{\"a\":1,}",
        "{\"a\":[1,]}",
        "{'a':1}",
        "{a:1}",
        "/*c*/{}",
        "{\"a\":NaN}",
        "{\"a\":Infinity}",
        "{\"a\":-Infinity}",
        "{\"a\":1.}",
        "{\"a\":.5}",
        "{\"a\":01}",
        "{\"a\":+1}",
        "{\"a\":tRue}",
        "{\"a\":\"\\x\"}",
        "{\"a\":\"unterminated}",
        "{\"a\":\"nul\\u0000byte\"}",
        "{\"k\\u0000ey\":1}",
        "{\"t\":\"raw\ttab\"}",
        "{\"t\":\"raw\nnewline\"}",
        "{\"a\":1}\n\x01",
        "{\"a\":-}",
        "{\"a\":1e}",
        "{\"a\":1e+}",
        "{\"a\":0x10}",
        "{\"a\":nul}",
        "{\"a\":\"\\u12\"}",
        "{\"a\":\"\\",
        "{\"a\":1 2}",
        "{\"a\"::1}",
        "{,}",
        "{\"a\":1,,\"b\":2}",
        "\xef\xbb\xbf{}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        print_message("refused: %s\n", bad[i]);
        check_refused(bad[i], MAE_EINVAL);
    }
    char *out = SENTINEL;
    assert_int_equal(mae__json_canonical(NULL, 0, &out), MAE_EINVAL);
    assert_int_equal(mae__json_merge_patch(NULL, "{}", &out), MAE_EINVAL);
    assert_int_equal(mae__json_merge_patch("{}", NULL, &out), MAE_EINVAL);
    assert_ptr_equal(out, SENTINEL);
    assert_int_equal(mae__json_canonical("{}", 0, NULL), MAE_EINVAL);
    assert_int_equal(mae__json_merge_patch("{}", "{}", NULL), MAE_EINVAL);
    /* RFC 7396 allows these; a stored payload is always an object. */
    assert_int_equal(mae__json_merge_patch("[\"a\",\"b\"]", "[\"c\",\"d\"]", &out), MAE_EINVAL);
    assert_int_equal(mae__json_merge_patch("{\"a\":\"b\"}", "[\"c\"]", &out), MAE_EINVAL);
    assert_int_equal(mae__json_merge_patch("{\"a\":\"foo\"}", "null", &out), MAE_EINVAL);
    assert_int_equal(mae__json_merge_patch("{\"a\":\"foo\"}", "\"bar\"", &out), MAE_EINVAL);
    assert_int_equal(mae__json_merge_patch("[1,2]", "{\"a\":\"b\",\"c\":null}", &out), MAE_EINVAL);
    assert_ptr_equal(out, SENTINEL);
}

/* n nested containers, open then close: {"a":{"a":...1...}} or [[...1...]]. */
static char *nest(size_t n, bool objects)
{
    size_t unit = objects ? 5 : 1;
    char *s = malloc(n * (unit + 1) + 2);
    assert_non_null(s);
    char *p = s;
    for (size_t i = 0; i < n; i++) {
        memcpy(p, objects ? "{\"a\":" : "[", unit);
        p += unit;
    }
    *p++ = '1';
    for (size_t i = 0; i < n; i++)
        *p++ = objects ? '}' : ']';
    *p = '\0';
    return s;
}

static void test_payload_nesting_limit(void **state)
{
    (void)state;
    char *out = NULL;
    /* The top object is level 1: MAE_JSON_MAX_DEPTH levels pass. */
    char *ok = nest(MAE_JSON_MAX_DEPTH, true);
    assert_int_equal(mae__json_canonical(ok, 0, &out), MAE_OK);
    assert_string_equal(out, ok);
    free(out);
    assert_int_equal(mae__json_merge_patch(ok, ok, &out), MAE_OK);
    assert_string_equal(out, ok);
    free(out);
    free(ok);

    char *deep = nest(MAE_JSON_MAX_DEPTH + 1, true);
    check_refused(deep, MAE_EINVAL);
    free(deep);

    /* Arrays count as levels too: {"a":[[...]]}. */
    char *arr = nest(MAE_JSON_MAX_DEPTH - 1, false);
    size_t n = strlen(arr);
    char *wrapped = malloc(n + 8);
    assert_non_null(wrapped);
    snprintf(wrapped, n + 8, "{\"a\":%s}", arr);
    assert_int_equal(mae__json_canonical(wrapped, 0, &out), MAE_OK);
    assert_string_equal(out, wrapped);
    free(out);
    free(wrapped);
    free(arr);
    arr = nest(MAE_JSON_MAX_DEPTH, false);
    n = strlen(arr);
    wrapped = malloc(n + 8);
    assert_non_null(wrapped);
    snprintf(wrapped, n + 8, "{\"a\":%s}", arr);
    check_refused(wrapped, MAE_EINVAL);
    free(wrapped);
    free(arr);

    /* Hostile depth: refused quickly, no stack overflow. */
    deep = nest(10000, true);
    check_refused(deep, MAE_EINVAL);
    free(deep);
    deep = nest(10000, false);
    check_refused(deep, MAE_EINVAL);
    free(deep);
    /* Unbalanced opening only. */
    deep = malloc(100001);
    assert_non_null(deep);
    memset(deep, '[', 100000);
    deep[0] = '{';
    deep[100000] = '\0';
    check_refused(deep, MAE_EINVAL);
    free(deep);
}

static void test_payload_strings_raw_utf8_and_repaired(void **state)
{
    (void)state;
    /* Raw UTF-8, '/' unescaped (also when it came in as "\/"), escapes decoded. */
    check_canon("{\"u\":\"\\u00e9\\u4e2d\\ud83d\\ude00 é中😀\",\"p\":\"a/b\\/c\"}", 0,
                "{\"p\":\"a/b/c\",\"u\":\"é中😀 é中😀\"}");
    /* What must stay escaped does. */
    check_canon("{\"e\":\"q\\\" b\\\\ n\\n t\\t r\\r f\\f b\\b c\\u0001 d\\u001f\"}", 0,
                "{\"e\":\"q\\\" b\\\\ n\\n t\\t r\\r f\\f b\\b c\\u0001 d\\u001f\"}");
    /* Invalid UTF-8 is repaired, one U+FFFD per bad byte, in values and keys. */
    check_canon("{\"v\":\"a\xff" "b\xc3\"}", 0, "{\"v\":\"a\xef\xbf\xbd" "b\xef\xbf\xbd\"}");
    check_canon("{\"k\xfe\":1}", 0, "{\"k\xef\xbf\xbd\":1}");
    /* Two keys that repair to the same name are duplicates: the last wins,
     * and the output has no duplicate, so it is stable. */
    check_canon("{\"\xff\":1,\"\xfe\":2}", 0, "{\"\xef\xbf\xbd\":2}");
    check_canon("{\"\xef\xbf\xbd\":1,\"\xfe\":2,\"\\ufffd\":3}", 0, "{\"\xef\xbf\xbd\":3}");
    char *out = NULL;
    /* A lone surrogate escape becomes U+FFFD. */
    assert_int_equal(mae__json_canonical("{\"s\":\"\\ud800\"}", 0, &out), MAE_OK);
    assert_string_equal(out, "{\"s\":\"\xef\xbf\xbd\"}");
    free(out);
    /* A repaired key in a patch addresses the repaired key of the target. */
    check_merge("{\"k\xef\xbf\xbd\":1,\"x\":2}", "{\"k\xff\":null}", "{\"x\":2}");
    /* Quotes and SQL in text are data. */
    check_canon("{\"sql\":\"'); DROP TABLE email_outbox;--\"}", 0,
                "{\"sql\":\"'); DROP TABLE email_outbox;--\"}");
}

static void test_string_values_cut_in_code_points_keys_never(void **state)
{
    (void)state;
    /* Values are cut in code points, at every level; keys never. */
    check_canon("{\"a\":\"héllo\",\"b\":[\"xyz\",{\"c\":\"中文字\"}],\"long-key\":1,\"d\":\"ok\"}", 2,
                "{\"a\":\"hé\",\"b\":[\"xy\",{\"c\":\"中文\"}],\"d\":\"ok\",\"long-key\":1}");
    check_canon("{\"a\":\"😀😀😀\"}", 1, "{\"a\":\"😀\"}");
}

static void test_payload_numbers_kept_as_written(void **state)
{
    (void)state;
    check_canon("{\"a\":0,\"b\":-1,\"c\":42,\"d\":9223372036854775807,\"e\":-9223372036854775808,"
                "\"f\":18446744073709551615,\"g\":-0}",
                0,
                "{\"a\":0,\"b\":-1,\"c\":42,\"d\":9223372036854775807,\"e\":-9223372036854775808,"
                "\"f\":18446744073709551615,\"g\":-0}");
    /* Integers beyond 64 bits and numbers beyond double range are valid
     * JSON: kept as written, never clamped. */
    check_canon("{\"a\":123456789012345678901234567890,\"b\":-98765432109876543210,\"c\":1e400}", 0,
                "{\"a\":123456789012345678901234567890,\"b\":-98765432109876543210,\"c\":1e400}");
    /* Doubles keep the spelling they came with. */
    check_canon("{\"a\":1.50,\"b\":1e5,\"c\":-0.0,\"d\":1E-2,\"e\":0.1,\"f\":2.5e+300,"
                "\"g\":1716096000.123456}",
                0,
                "{\"a\":1.50,\"b\":1e5,\"c\":-0.0,\"d\":1E-2,\"e\":0.1,\"f\":2.5e+300,"
                "\"g\":1716096000.123456}");
    check_merge("{\"a\":1.25}", "{\"b\":3.0}", "{\"a\":1.25,\"b\":3.0}");
}

/* 1 MiB string values go through canonicalisation and merge whole. */
static void test_mebibyte_values_pass_whole(void **state)
{
    (void)state;
    const size_t n = 1u << 20;
    char *big = malloc(n + 1);
    assert_non_null(big);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)('a' + i % 26);
    big[n / 2] = '/';
    big[n] = '\0';
    char *json = malloc(n + 64);
    assert_non_null(json);
    snprintf(json, n + 64, "{\"z\":1,\"big\":\"%s\"}", big);

    char *out = NULL;
    assert_int_equal(mae__json_canonical(json, 0, &out), MAE_OK);
    assert_int_equal(strlen(out), n + strlen("{\"big\":\"\",\"z\":1}"));
    assert_memory_equal(out, "{\"big\":\"", 8);
    assert_memory_equal(out + 8, big, n);
    assert_string_equal(out + 8 + n, "\",\"z\":1}");
    free(out);

    /* Cut to 10 code points. */
    assert_int_equal(mae__json_canonical(json, 10, &out), MAE_OK);
    assert_string_equal(out, "{\"big\":\"abcdefghij\",\"z\":1}");
    free(out);

    /* Merge a huge value into a huge target, then remove it. */
    char *patched = NULL;
    assert_int_equal(mae__json_merge_patch(json, "{\"z\":2,\"y\":true}", &patched), MAE_OK);
    assert_int_equal(strlen(patched), n + strlen("{\"big\":\"\",\"y\":true,\"z\":2}"));
    assert_string_equal(patched + 8 + n, "\",\"y\":true,\"z\":2}");
    assert_int_equal(mae__json_merge_patch(patched, "{\"big\":null}", &out), MAE_OK);
    assert_string_equal(out, "{\"y\":true,\"z\":2}");
    free(out);
    free(patched);
    assert_int_equal(mae__json_merge_patch("{\"a\":1}", json, &out), MAE_OK);
    assert_int_equal(strlen(out), n + strlen("{\"a\":1,\"big\":\"\",\"z\":1}"));
    free(out);

    /* Many keys. */
    size_t keys = 50000;
    char *wide = malloc(keys * 16 + 8);
    assert_non_null(wide);
    char *p = wide;
    *p++ = '{';
    for (size_t i = keys; i > 0; i--)
        p += sprintf(p, "%s\"k%06zu\":%zu", i == keys ? "" : ",", i, i);
    strcpy(p, "}");
    assert_int_equal(mae__json_canonical(wide, 0, &out), MAE_OK);
    assert_memory_equal(out, "{\"k000001\":1,\"k000002\":2,", 25);
    free(out);
    free(wide);
    free(json);
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_payload_keys_sorted_at_every_level),
        cmocka_unit_test(test_payload_stored_without_whitespace),
        cmocka_unit_test(test_payload_duplicate_keys_last_wins),
        cmocka_unit_test(test_merge_follows_rfc7396_appendix_a),
        cmocka_unit_test(test_merge_follows_rfc7396_example),
        cmocka_unit_test(test_merge_later_keys_win_and_null_removes),
        cmocka_unit_test(test_payload_that_is_not_one_object_is_refused),
        cmocka_unit_test(test_payload_nesting_limit),
        cmocka_unit_test(test_payload_strings_raw_utf8_and_repaired),
        cmocka_unit_test(test_string_values_cut_in_code_points_keys_never),
        cmocka_unit_test(test_payload_numbers_kept_as_written),
        cmocka_unit_test(test_mebibyte_values_pass_whole),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
