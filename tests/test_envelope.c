/* Unit tests of the publish route's parser (core/envelope.c): every answer
 * it gives (200, 400, 413), the defaults of a missing member, the canonical
 * line it writes, and NDJSON's all-or-nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "core/envelope.h"

#define NDJSON "application/x-ndjson"

static int parse(const char *body, const char *ct, size_t max, mae__envelope_result *r)
{
    return mae__envelope_parse(body, body ? strlen(body) : 0, ct, max, r);
}

/* Parses body and checks it is accepted as exactly the lines want (ts of
 * each line replaced by T when stamp is set). */
static void expect_lines(const char *body, const char *ct, const char *want, size_t count)
{
    mae__envelope_result r;
    if (parse(body, ct, 0, &r) != 200)
        fail_msg("refused %d (%s) for %s", r.status, r.reason, body);
    assert_int_equal(r.count, count);
    assert_int_equal(r.len, strlen(r.lines));
    if (strcmp(r.lines, want) != 0)
        fail_msg("got\n%s\nwant\n%s", r.lines, want);
    mae__envelope_result_free(&r);
}

static void expect_refused(const char *body, const char *ct, size_t max, int status,
                           const char *reason_has, size_t line_no)
{
    mae__envelope_result r;
    int rc = parse(body, ct, max, &r);
    if (rc != status || r.status != status || !strstr(r.reason, reason_has))
        fail_msg("got %d (%s), want %d (%s) for %s", rc, r.reason, status, reason_has, body);
    assert_null(r.lines);
    assert_int_equal(r.count, 0);
    if (r.line_no != line_no)
        fail_msg("line %zu, want %zu for %s", r.line_no, line_no, body);
    mae__envelope_result_free(&r);
}

static void test_full_envelope_is_written_canonically(void **state)
{
    (void)state;
    /* Keys out of order, whitespace, escapes, an extra key: written in the
     * order of docs/events.md, compact, the extra key dropped. */
    expect_lines("{ \"source\" : \"new_watcher\", \"extra\": [1,2], \"data\": { \"b\": 1, "
                 "\"a\": \"\\u00e9\\/\" }, \"internal_id\": 53675, \"ts\": 1716096000.5, "
                 "\"event_type\": \"email.\\u0073ynced\" }",
                 "application/json",
                 "{\"event_type\":\"email.synced\",\"ts\":1716096000.500000,\"internal_id\":53675,"
                 "\"data\":{\"b\":1,\"a\":\"\\u00e9/\"},\"source\":\"new_watcher\"}\n",
                 1);
}

static void test_defaults_as_safe_publish(void **state)
{
    (void)state;
    mae__envelope_result r;
    time_t before = time(NULL);
    assert_int_equal(parse("{\"event_type\":\"email.new\"}", NULL, 0, &r), 200);
    time_t after = time(NULL);
    double ts = 0;
    char tail[200];
    assert_int_equal(sscanf(r.lines, "{\"event_type\":\"email.new\",\"ts\":%lf,%199[^\n]", &ts,
                            tail), 2);
    assert_true(ts >= (double)before && ts <= (double)after + 1);
    assert_string_equal(tail, "\"internal_id\":null,\"data\":{},\"source\":\"mailagent\"}");
    mae__envelope_result_free(&r);
    /* null is the same as absent; MailAgent's `data or {}` for empty values */
    const char *empties[] = {"null", "[]", "\"\"", "0", "0.0", "-0", "false", "{}"};
    for (size_t i = 0; i < sizeof empties / sizeof *empties; i++) {
        char body[200];
        snprintf(body, sizeof body, "{\"event_type\":\"x\",\"ts\":1,\"internal_id\":null,"
                 "\"source\":null,\"data\":%s}", empties[i]);
        expect_lines(body, NULL,
                     "{\"event_type\":\"x\",\"ts\":1.000000,\"internal_id\":null,\"data\":{},"
                     "\"source\":\"mailagent\"}\n", 1);
    }
}

static void test_repeated_key_last_counts(void **state)
{
    (void)state;
    expect_lines("{\"event_type\":\"a\",\"event_type\":\"b\",\"ts\":2}", NULL,
                 "{\"event_type\":\"b\",\"ts\":2.000000,\"internal_id\":null,\"data\":{},"
                 "\"source\":\"mailagent\"}\n", 1);
}

static void test_internal_id_range(void **state)
{
    (void)state;
    expect_lines("{\"event_type\":\"a\",\"ts\":0,\"internal_id\":9223372036854775807}", NULL,
                 "{\"event_type\":\"a\",\"ts\":0.000000,\"internal_id\":9223372036854775807,"
                 "\"data\":{},\"source\":\"mailagent\"}\n", 1);
    expect_lines("{\"event_type\":\"a\",\"ts\":0,\"internal_id\":-9223372036854775807}", NULL,
                 "{\"event_type\":\"a\",\"ts\":0.000000,\"internal_id\":-9223372036854775807,"
                 "\"data\":{},\"source\":\"mailagent\"}\n", 1);
    const char *bad[] = {"9223372036854775808", "-9223372036854775808", "1.5", "1e3", "\"7\"",
                         "true", "{}", "[1]"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char body[200];
        snprintf(body, sizeof body, "{\"event_type\":\"a\",\"internal_id\":%s}", bad[i]);
        expect_refused(body, NULL, 0, 400, "internal_id must be", 0);
    }
}

static void test_400_answers(void **state)
{
    (void)state;
    expect_refused("", NULL, 0, 400, "empty", 0);
    expect_refused("  \r\n", NULL, 0, 400, "empty", 0);
    expect_refused("{\"event_type\":", NULL, 0, 400, "not one JSON object", 0);
    expect_refused("{\"event_type\":\"a\"} {}", NULL, 0, 400, "not one JSON object", 0);
    expect_refused("{\"event_type\":NaN}", NULL, 0, 400, "not one JSON object", 0);
    expect_refused("{\"event_type\":\"a\\u0000\"}", NULL, 0, 400, "not one JSON object", 0);
    expect_refused("[{\"event_type\":\"a\"}]", NULL, 0, 400, "must be a JSON object", 0);
    expect_refused("\"email.new\"", NULL, 0, 400, "must be a JSON object", 0);
    expect_refused("42", NULL, 0, 400, "must be a JSON object", 0);
    expect_refused("{}", NULL, 0, 400, "event_type is required", 0);
    expect_refused("{\"event_type\":\"\"}", NULL, 0, 400, "event_type is required", 0);
    expect_refused("{\"event_type\":null}", NULL, 0, 400, "event_type is required", 0);
    expect_refused("{\"event_type\":5}", NULL, 0, 400, "event_type is required", 0);
    expect_refused("{\"event_type\":\"a\",\"data\":[1]}", NULL, 0, 400, "data must be", 0);
    expect_refused("{\"event_type\":\"a\",\"data\":\"x\"}", NULL, 0, 400, "data must be", 0);
    expect_refused("{\"event_type\":\"a\",\"source\":\"\"}", NULL, 0, 400, "source must be", 0);
    expect_refused("{\"event_type\":\"a\",\"source\":1}", NULL, 0, 400, "source must be", 0);
    expect_refused("{\"event_type\":\"a\",\"ts\":\"now\"}", NULL, 0, 400, "ts must be", 0);
    expect_refused("{\"event_type\":\"a\",\"ts\":1e999}", NULL, 0, 400, "ts must be", 0);
    /* invalid UTF-8 (a lone continuation byte, an overlong form) and a NUL */
    expect_refused("{\"event_type\":\"a\x80\"}", NULL, 0, 400, "UTF-8", 0);
    expect_refused("{\"event_type\":\"\xC0\xAF\"}", NULL, 0, 400, "UTF-8", 0);
    mae__envelope_result r;
    assert_int_equal(mae__envelope_parse("{\"event_type\":\"a\"}\0x", 20, NULL, 0, &r), 400);
    assert_non_null(strstr(r.reason, "NUL"));
    mae__envelope_result_free(&r);
    /* 65 levels: over the grammar's 64 */
    char deep[1000] = "{\"event_type\":\"a\",\"data\":";
    for (int i = 0; i < 64; i++)
        strcat(deep, "{\"k\":");
    strcat(deep, "1");
    for (int i = 0; i < 66; i++)
        strcat(deep, "}");
    expect_refused(deep, NULL, 0, 400, "not one JSON object", 0);
}

static void test_413_answers(void **state)
{
    (void)state;
    const char *body = "{\"event_type\":\"email.new\",\"data\":{\"k\":\"0123456789\"}}";
    size_t n = strlen(body);
    /* as received */
    expect_refused(body, NULL, n - 1, 413, "--max-event-bytes", 0);
    /* as written: the stamped envelope is longer than what was sent */
    expect_refused(body, NULL, n, 413, "once written", 0);
    mae__envelope_result r;
    assert_int_equal(parse(body, NULL, 200, &r), 200);
    mae__envelope_result_free(&r);
    /* the default: 1 MiB */
    size_t big = MAE_ENVELOPE_MAX_EVENT_BYTES + 1;
    char *huge = malloc(big + 1);
    assert_non_null(huge);
    memset(huge, ' ', big);
    memcpy(huge, "{\"event_type\":\"a\"}", 18);
    huge[big] = '\0';
    assert_int_equal(mae__envelope_parse(huge, big, NULL, 0, &r), 413);
    mae__envelope_result_free(&r);
    assert_int_equal(mae__envelope_parse(huge, big - 1, NULL, 0, &r), 200);
    mae__envelope_result_free(&r);
    free(huge);
}

static void test_ndjson(void **state)
{
    (void)state;
    expect_lines("{\"event_type\":\"a\",\"ts\":1}\n\n  \r\n{\"event_type\":\"b\",\"ts\":2,"
                 "\"internal_id\":3}\r\n", "Application/X-NDJSON; charset=utf-8",
                 "{\"event_type\":\"a\",\"ts\":1.000000,\"internal_id\":null,\"data\":{},"
                 "\"source\":\"mailagent\"}\n"
                 "{\"event_type\":\"b\",\"ts\":2.000000,\"internal_id\":3,\"data\":{},"
                 "\"source\":\"mailagent\"}\n", 2);
    /* no final newline */
    expect_lines("{\"event_type\":\"a\",\"ts\":1}", NDJSON,
                 "{\"event_type\":\"a\",\"ts\":1.000000,\"internal_id\":null,\"data\":{},"
                 "\"source\":\"mailagent\"}\n", 1);
    /* all or nothing, with the line at fault */
    expect_refused("{\"event_type\":\"a\"}\n\n{\"event_type\":\"\"}\n", NDJSON, 0, 400,
                   "event_type is required", 3);
    expect_refused("{\"event_type\":\"a\"}\n{\"event_type\":\"b\"", NDJSON, 0, 400,
                   "not one JSON object", 2);
    expect_refused("{\"event_type\":\"a\"}\n{\"event_type\":\"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\"}",
                   NDJSON, 100, 413, "--max-event-bytes", 2);
    expect_refused("", NDJSON, 0, 400, "no envelope", 0);
    expect_refused("\n \n\r\n", NDJSON, 0, 400, "no envelope", 0);
    /* one JSON object spread over lines is not NDJSON */
    expect_refused("{\n\"event_type\":\"a\"\n}", NDJSON, 0, 400, "not one JSON object", 1);
    /* other content types read one envelope: two lines are refused */
    expect_refused("{\"event_type\":\"a\"}\n{\"event_type\":\"b\"}", "application/json", 0, 400,
                   "not one JSON object", 0);
    expect_refused("{\"event_type\":\"a\"}\n{\"event_type\":\"b\"}", "application/x-ndjsonx", 0,
                   400, "not one JSON object", 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_envelope_is_written_canonically),
        cmocka_unit_test(test_defaults_as_safe_publish),
        cmocka_unit_test(test_repeated_key_last_counts),
        cmocka_unit_test(test_internal_id_range),
        cmocka_unit_test(test_400_answers),
        cmocka_unit_test(test_413_answers),
        cmocka_unit_test(test_ndjson),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
