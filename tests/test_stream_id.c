/* Unit tests of the stream id parser: what a client may send as
 * Last-Event-ID (or --since), hostile texts included, the order of ids and
 * their canonical text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "stream/id.h"

static int parse(const char *s, mae__stream_id *out)
{
    return mae__stream_id_parse(s, strlen(s), out);
}

static void test_valid(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        uint64_t ms, seq;
    } cases[] = {
        {"0-0", 0, 0},
        {"1716096000123-0", 1716096000123u, 0},
        {"1716096000123-7", 1716096000123u, 7},
        {"1-18446744073709551615", 1, UINT64_MAX},
        {"18446744073709551615-18446744073709551615", UINT64_MAX, UINT64_MAX},
        /* Leading zeros name the same id; the canonical text drops them. */
        {"0001-02", 1, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mae__stream_id id = {42, 42};
        int rc = parse(cases[i].text, &id);
        if (rc != MAE__STREAM_ID_OK)
            fail_msg("\"%s\": %s", cases[i].text, mae__stream_id_strerror(rc));
        assert_true(id.ms == cases[i].ms);
        assert_true(id.seq == cases[i].seq);
    }
}

static void expect_error(const char *s, size_t len, int want)
{
    mae__stream_id id = {42, 43};
    int rc = mae__stream_id_parse(s, len, &id);
    if (rc != want)
        fail_msg("\"%.*s\" (%zu bytes): got %d (%s), want %d (%s)", (int)len, s ? s : "", len,
                 rc, mae__stream_id_strerror(rc), want, mae__stream_id_strerror(want));
    /* A rejected text leaves the output alone. */
    assert_true(id.ms == 42 && id.seq == 43);
}

static void test_hostile(void **state)
{
    (void)state;
    expect_error("", 0, MAE__STREAM_ID_EMPTY);
    expect_error(NULL, 0, MAE__STREAM_ID_EMPTY);
    /* Bytes that would split a header or a frame, wherever they stand. */
    expect_error("1-0\r\nevent: x", 13, MAE__STREAM_ID_BAD_CHAR);
    expect_error("1-0\n", 4, MAE__STREAM_ID_BAD_CHAR);
    expect_error("1-0\r", 4, MAE__STREAM_ID_BAD_CHAR);
    expect_error("\n1-0", 4, MAE__STREAM_ID_BAD_CHAR);
    expect_error("1-\0" "0", 4, MAE__STREAM_ID_BAD_CHAR);
    expect_error("1-0\0", 4, MAE__STREAM_ID_BAD_CHAR);
    expect_error("\0", 1, MAE__STREAM_ID_BAD_CHAR);
    /* Signs, spaces, other notations Redis or strtoull would take. */
    expect_error("+1-0", 4, MAE__STREAM_ID_BAD_CHAR);
    expect_error("1-+0", 4, MAE__STREAM_ID_BAD_CHAR);
    expect_error(" 1-0", 4, MAE__STREAM_ID_BAD_CHAR);
    expect_error("1-0 ", 4, MAE__STREAM_ID_BAD_CHAR);
    expect_error("1 -0", 4, MAE__STREAM_ID_BAD_CHAR);
    expect_error("0x10-0", 6, MAE__STREAM_ID_BAD_CHAR);
    expect_error("$", 1, MAE__STREAM_ID_BAD_CHAR);
    expect_error("1-*", 3, MAE__STREAM_ID_BAD_CHAR);
    expect_error("1.5-0", 5, MAE__STREAM_ID_BAD_CHAR);
    expect_error("\xc3\xa9-0", 4, MAE__STREAM_ID_BAD_CHAR);
    /* The form: exactly two non-empty parts. */
    expect_error("-", 1, MAE__STREAM_ID_BAD_FORM);
    expect_error("12", 2, MAE__STREAM_ID_BAD_FORM);
    expect_error("-1", 2, MAE__STREAM_ID_BAD_FORM);
    expect_error("1-", 2, MAE__STREAM_ID_BAD_FORM);
    expect_error("-1-0", 4, MAE__STREAM_ID_BAD_FORM);
    expect_error("1--0", 4, MAE__STREAM_ID_BAD_FORM);
    expect_error("1-0-0", 5, MAE__STREAM_ID_BAD_FORM);
    /* One past UINT64_MAX in either part, and far past it. */
    expect_error("18446744073709551616-0", 22, MAE__STREAM_ID_OVERFLOW);
    expect_error("0-18446744073709551616", 22, MAE__STREAM_ID_OVERFLOW);
    expect_error("99999999999999999999-0", 22, MAE__STREAM_ID_OVERFLOW);
    expect_error("184467440737095516150-0", 23, MAE__STREAM_ID_OVERFLOW);
}

static void test_length_limit(void **state)
{
    (void)state;
    char buf[200];
    mae__stream_id id;
    /* 64 bytes of leading zeros and a valid id: accepted; one more: not. */
    memset(buf, '0', sizeof buf);
    memcpy(buf + 64 - 3, "1-2", 3);
    assert_int_equal(mae__stream_id_parse(buf, 64, &id), MAE__STREAM_ID_OK);
    assert_true(id.ms == 1 && id.seq == 2);
    memset(buf, '0', sizeof buf);
    memcpy(buf + 65 - 3, "1-2", 3);
    expect_error(buf, 65, MAE__STREAM_ID_TOO_LONG);
    /* Length is checked before content: a long header costs nothing. */
    memset(buf, '\n', sizeof buf);
    expect_error(buf, sizeof buf, MAE__STREAM_ID_TOO_LONG);
    /* Only len bytes are read: what follows does not matter. */
    memcpy(buf, "5-6", 3);
    assert_int_equal(mae__stream_id_parse(buf, 3, &id), MAE__STREAM_ID_OK);
    assert_true(id.ms == 5 && id.seq == 6);
}

static void test_order(void **state)
{
    (void)state;
    const mae__stream_id ids[] = {{0, 0}, {0, 1}, {1, 0}, {1, 1}, {1, UINT64_MAX},
                                  {2, 0}, {UINT64_MAX, 0}, {UINT64_MAX, UINT64_MAX}};
    size_t n = sizeof ids / sizeof ids[0];
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) {
            int want = i < j ? -1 : i > j ? 1 : 0;
            assert_int_equal(mae__stream_id_cmp(&ids[i], &ids[j]), want);
        }
    assert_true(mae__stream_id_is_zero(&ids[0]));
    assert_false(mae__stream_id_is_zero(&ids[1]));
    assert_false(mae__stream_id_is_zero(&ids[2]));
}

static void test_format_round_trip(void **state)
{
    (void)state;
    static const struct {
        mae__stream_id id;
        const char *text;
    } cases[] = {
        {{0, 0}, "0-0"},
        {{1716096000123u, 0}, "1716096000123-0"},
        {{10, 100}, "10-100"},
        {{UINT64_MAX, UINT64_MAX}, "18446744073709551615-18446744073709551615"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[MAE__STREAM_ID_BUFSIZE];
        size_t n = mae__stream_id_format(&cases[i].id, buf);
        assert_string_equal(buf, cases[i].text);
        assert_int_equal(n, strlen(cases[i].text));
        mae__stream_id back;
        assert_int_equal(mae__stream_id_parse(buf, n, &back), MAE__STREAM_ID_OK);
        assert_int_equal(mae__stream_id_cmp(&back, &cases[i].id), 0);
    }
    /* The longest canonical text fits the buffer with its NUL. */
    assert_int_equal(strlen(cases[3].text) + 1, MAE__STREAM_ID_BUFSIZE);
}

static void test_error_texts(void **state)
{
    (void)state;
    for (int code = MAE__STREAM_ID_OVERFLOW; code <= MAE__STREAM_ID_OK; code++)
        assert_null(strstr(mae__stream_id_strerror(code), "unknown"));
    assert_non_null(strstr(mae__stream_id_strerror(-99), "unknown"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_length_limit),
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_format_round_trip),
        cmocka_unit_test(test_error_texts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
