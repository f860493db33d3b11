/* Unit tests of the event line builders: the exact bytes of each of the ten
 * event types of docs/events.md and of the generic envelope. */
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
#include <json-c/json.h>

#include <mailagent/common.h>

#include "capture.h"
#include "core/event.h"

#define FFFD "\xEF\xBF\xBD"

/* Checks that "ts" holds exactly six decimals and lies within a second of
 * now, then compares the line with ts replaced by TS. */
static void assert_line(const char *line, const char *want)
{
    const char *key = strstr(line, ",\"ts\":");
    assert_non_null(key);
    const char *ts = key + 6, *p = ts;
    long long sec = 0;
    assert_true(*p >= '1' && *p <= '9');
    while (*p >= '0' && *p <= '9')
        sec = sec * 10 + (*p++ - '0');
    assert_int_equal(*p++, '.');
    for (int i = 0; i < 6; i++, p++)
        assert_true(*p >= '0' && *p <= '9');
    assert_int_equal(*p, ',');
    long long now = (long long)time(NULL);
    assert_true(sec >= now - 1 && sec <= now + 1);

    size_t head = (size_t)(ts - line);
    char *norm = malloc(strlen(line) + 3);
    assert_non_null(norm);
    memcpy(norm, line, head);
    strcpy(norm + head, "TS");
    strcat(norm, p);
    if (strcmp(norm, want) != 0)
        fail_msg("line\n  got  %s\n  want %s", norm, want);
    free(norm);
    assert_null(strchr(line, '\n'));
    /* And a strict parser accepts it. */
    json_object *o = json_tokener_parse(line);
    assert_non_null(o);
    json_object_put(o);
}

typedef void (*build_fn)(mae__buf *b);

static void check(build_fn f, const char *want)
{
    mae__buf b;
    mae__buf_init(&b);
    f(&b);
    assert_false(b.oom);
    assert_int_equal(strlen(b.ptr), b.len);
    assert_line(b.ptr, want);
    mae__buf_free(&b);
}

/* ---- the ten types --------------------------------------------------------- */

static void b_synced(mae__buf *b) { mae__ev_email_synced(b, 53675, "page-uuid-abc", "new_watcher"); }
static void b_synced_default(mae__buf *b) { mae__ev_email_synced(b, 53675, "p", NULL); }
static void b_email_failed(mae__buf *b)
{
    mae__ev_email_failed(b, 7, "fetch_failed", 2, 1716096000.5, "IMAP timeout");
}
static void b_email_dead(mae__buf *b) { mae__ev_email_dead_letter(b, 7, 5, "gone"); }
static void b_enqueued(mae__buf *b) { mae__ev_outbox_enqueued(b, 53675, 17, "flag", "notion", "cli"); }
static void b_enqueued_null(mae__buf *b) { mae__ev_outbox_enqueued(b, 53675, 17, "move", "mailapp", NULL); }
static void b_done(mae__buf *b) { mae__ev_outbox_done(b, 9, 18); }
static void b_outbox_failed(mae__buf *b)
{
    mae__ev_outbox_failed(b, 9, 18, 3, "HTTP 502", 1716096060.25);
}
static void b_outbox_dead(mae__buf *b) { mae__ev_outbox_dead_letter(b, 9, 18, 5, "HTTP 502"); }
static void b_llm_success(mae__buf *b)
{
    mae__ev_llm_success(b, 53675, "claude-sonnet", 1200, 340, 2150);
}
static void b_llm_failed(mae__buf *b) { mae__ev_llm_failed(b, 53675, 1, 1716096030.000001, "rate limited"); }
static void b_llm_gave_up(mae__buf *b) { mae__ev_llm_gave_up(b, 53675, 5, "upstream 529: overloaded"); }

static void test_each_event_type_has_exactly_its_keys(void **state)
{
    (void)state;
    check(b_synced, "{\"event_type\":\"email.synced\",\"ts\":TS,\"internal_id\":53675,"
                    "\"data\":{\"notion_page_id\":\"page-uuid-abc\"},\"source\":\"new_watcher\"}");
    check(b_synced_default, "{\"event_type\":\"email.synced\",\"ts\":TS,\"internal_id\":53675,"
                            "\"data\":{\"notion_page_id\":\"p\"},\"source\":\"sync_store\"}");
    check(b_email_failed,
          "{\"event_type\":\"email.failed\",\"ts\":TS,\"internal_id\":7,\"data\":{\"status\":"
          "\"fetch_failed\",\"retry_count\":2,\"next_retry_at\":1716096000.500000,\"error\":"
          "\"IMAP timeout\"},\"source\":\"sync_store\"}");
    check(b_email_dead, "{\"event_type\":\"email.dead_letter\",\"ts\":TS,\"internal_id\":7,"
                        "\"data\":{\"retry_count\":5,\"error\":\"gone\"},\"source\":\"sync_store\"}");
    check(b_enqueued, "{\"event_type\":\"outbox.enqueued\",\"ts\":TS,\"internal_id\":53675,"
                      "\"data\":{\"outbox_id\":17,\"op_type\":\"flag\",\"target\":\"notion\","
                      "\"source\":\"cli\"},\"source\":\"outbox\"}");
    check(b_enqueued_null, "{\"event_type\":\"outbox.enqueued\",\"ts\":TS,\"internal_id\":53675,"
                           "\"data\":{\"outbox_id\":17,\"op_type\":\"move\",\"target\":"
                           "\"mailapp\",\"source\":null},\"source\":\"outbox\"}");
    check(b_done, "{\"event_type\":\"outbox.done\",\"ts\":TS,\"internal_id\":9,"
                  "\"data\":{\"outbox_id\":18},\"source\":\"outbox\"}");
    check(b_outbox_failed,
          "{\"event_type\":\"outbox.failed\",\"ts\":TS,\"internal_id\":9,\"data\":{\"outbox_id\":"
          "18,\"attempts\":3,\"last_error\":\"HTTP 502\",\"next_retry_at\":1716096060.250000},"
          "\"source\":\"outbox\"}");
    check(b_outbox_dead, "{\"event_type\":\"outbox.dead_letter\",\"ts\":TS,\"internal_id\":9,"
                         "\"data\":{\"outbox_id\":18,\"attempts\":5,\"last_error\":\"HTTP 502\"},"
                         "\"source\":\"outbox\"}");
    check(b_llm_success, "{\"event_type\":\"llm.success\",\"ts\":TS,\"internal_id\":53675,"
                         "\"data\":{\"model\":\"claude-sonnet\",\"input_tokens\":1200,"
                         "\"output_tokens\":340,\"latency_ms\":2150},\"source\":\"llm_agent\"}");
    check(b_llm_failed, "{\"event_type\":\"llm.failed\",\"ts\":TS,\"internal_id\":53675,"
                        "\"data\":{\"retry_count\":1,\"next_retry_at\":1716096030.000001,"
                        "\"error\":\"rate limited\"},\"source\":\"llm_agent\"}");
    check(b_llm_gave_up, "{\"event_type\":\"llm.gave_up\",\"ts\":TS,\"internal_id\":53675,"
                         "\"data\":{\"retry_count\":5,\"error\":\"upstream 529: overloaded\"},"
                         "\"source\":\"llm_agent\"}");
}

/* ---- ids, nulls, hostile text -------------------------------------------------- */

static void b_no_id(mae__buf *b) { mae__ev_outbox_done(b, MAE_NO_ID, 1); }
static void b_negative(mae__buf *b) { mae__ev_outbox_done(b, -5, INT64_MAX); }
static void b_null_strings(mae__buf *b) { mae__ev_email_failed(b, 1, NULL, 0, 0, NULL); }
static void b_nan_time(mae__buf *b) { mae__ev_llm_failed(b, 1, 1, NAN, "x"); }
static void b_hostile_source(mae__buf *b) { mae__ev_email_synced(b, 1, "a\"b\\c/d\n", "w\x01\xFF"); }

static void test_null_and_extreme_ids(void **state)
{
    (void)state;
    check(b_no_id, "{\"event_type\":\"outbox.done\",\"ts\":TS,\"internal_id\":null,"
                   "\"data\":{\"outbox_id\":1},\"source\":\"outbox\"}");
    check(b_negative, "{\"event_type\":\"outbox.done\",\"ts\":TS,\"internal_id\":-5,"
                      "\"data\":{\"outbox_id\":9223372036854775807},\"source\":\"outbox\"}");
    /* The builders do not validate: a NULL string is written as null. */
    check(b_null_strings, "{\"event_type\":\"email.failed\",\"ts\":TS,\"internal_id\":1,"
                          "\"data\":{\"status\":null,\"retry_count\":0,\"next_retry_at\":0.000000,"
                          "\"error\":null},\"source\":\"sync_store\"}");
    check(b_nan_time, "{\"event_type\":\"llm.failed\",\"ts\":TS,\"internal_id\":1,"
                      "\"data\":{\"retry_count\":1,\"next_retry_at\":0.000000,\"error\":\"x\"},"
                      "\"source\":\"llm_agent\"}");
    check(b_hostile_source, "{\"event_type\":\"email.synced\",\"ts\":TS,\"internal_id\":1,"
                            "\"data\":{\"notion_page_id\":\"a\\\"b\\\\c/d\\n\"},"
                            "\"source\":\"w\\u0001" FFFD "\"}");
}

/* Error texts are cut to 200 code points, repaired, and parse back as such. */
static void test_error_texts_cut_to_200_code_points(void **state)
{
    (void)state;
    char err[2000] = "";
    char want_err[2000] = "";
    for (int i = 0; i < 150; i++)
        strcat(err, "\xC3\xA9"); /* 150 two-byte */
    strcat(err, "\xFF");         /* 151: repaired */
    for (int i = 0; i < 48; i++)
        strcat(err, "\xF0\x9F\x98\x80"); /* 152..199 */
    strcat(err, "\"");                   /* 200: escaped */
    strcat(err, "tail that is cut");
    for (int i = 0; i < 150; i++)
        strcat(want_err, "\xC3\xA9");
    strcat(want_err, FFFD);
    for (int i = 0; i < 48; i++)
        strcat(want_err, "\xF0\x9F\x98\x80");
    strcat(want_err, "\"");

    mae__buf b;
    for (int kind = 0; kind < 5; kind++) {
        mae__buf_init(&b);
        const char *key = "\"error\":";
        switch (kind) {
        case 0: mae__ev_email_failed(&b, 1, "failed", 1, 2, err); break;
        case 1: mae__ev_email_dead_letter(&b, 1, 1, err); break;
        case 2: mae__ev_outbox_failed(&b, 1, 1, 1, err, 2); key = "\"last_error\":"; break;
        case 3: mae__ev_outbox_dead_letter(&b, 1, 1, 1, err); key = "\"last_error\":"; break;
        default: mae__ev_llm_gave_up(&b, 1, 1, err); break;
        }
        assert_false(b.oom);
        json_object *o = json_tokener_parse(b.ptr);
        assert_non_null(o);
        json_object *data = NULL, *e = NULL;
        assert_true(json_object_object_get_ex(o, "data", &data));
        char name[32];
        snprintf(name, sizeof name, "%.*s", (int)strlen(key) - 3, key + 1);
        assert_true(json_object_object_get_ex(data, name, &e));
        assert_string_equal(json_object_get_string(e), want_err);
        json_object_put(o);
        mae__buf_free(&b);
    }
    mae__buf_init(&b);
    mae__ev_llm_failed(&b, 1, 1, 2, err);
    assert_non_null(strstr(b.ptr, "\\\"\"},\"source\":\"llm_agent\"}"));
    mae__buf_free(&b);
    /* Strings other than error texts are not cut. */
    mae__buf_init(&b);
    mae__ev_llm_success(&b, 1, err, 1, 2, 3);
    assert_non_null(strstr(b.ptr, "tail that is cut"));
    mae__buf_free(&b);
}

/* ---- the generic envelope, as mae_safe_publish writes it ------------------------ */

/* The line mae_safe_publish sends for these arguments; NULL when it
 * counted the call as invalid and sent nothing. The caller frees it. */
static char *safe_line(const char *type, int64_t id, const char *data, const char *source)
{
    mae_publisher *p = cap_open();
    mae_safe_publish(p, type, id, data, source);
    char *line = cap_count(p) == 1 ? strdup(cap_line(p, 0)) : NULL;
    mae_publisher_close(p, 1000);
    return line;
}

static void assert_safe_line(const char *type, int64_t id, const char *data, const char *source,
                             const char *want)
{
    char *line = safe_line(type, id, data, source);
    assert_non_null(line);
    assert_line(line, want);
    free(line);
}

static void test_safe_publish_wraps_data_in_the_envelope(void **state)
{
    (void)state;
    assert_safe_line("x.y", 1, "{\"k\":[1,2]}", "test",
                     "{\"event_type\":\"x.y\",\"ts\":TS,\"internal_id\":1,\"data\":{\"k\":[1,2]},"
                     "\"source\":\"test\"}");
    assert_safe_line("x.y", MAE_NO_ID, NULL, "test",
                     "{\"event_type\":\"x.y\",\"ts\":TS,\"internal_id\":null,\"data\":{},"
                     "\"source\":\"test\"}");
    assert_safe_line("x.y", 2, "{}", "t",
                     "{\"event_type\":\"x.y\",\"ts\":TS,\"internal_id\":2,\"data\":{},"
                     "\"source\":\"t\"}");
    char *rejected = safe_line("x.y", 2, "{}garbage", "t");
    assert_null(rejected);
    assert_safe_line("we\"ird\xC0", 3, "{}", "s\\rc",
                     "{\"event_type\":\"we\\\"ird" FFFD "\",\"ts\":TS,\"internal_id\":3,"
                     "\"data\":{},\"source\":\"s\\\\rc\"}");
}

/* The builders append: a buffer that already holds text keeps it. */
static void test_builders_append_to_existing_text(void **state)
{
    (void)state;
    mae__buf b;
    mae__buf_init(&b);
    mae__buf_puts(&b, "[");
    mae__ev_outbox_done(&b, 1, 2);
    mae__buf_putc(&b, ',');
    mae__ev_outbox_done(&b, 3, 4);
    mae__buf_putc(&b, ']');
    json_object *o = json_tokener_parse(b.ptr);
    assert_non_null(o);
    assert_int_equal(json_object_array_length(o), 2);
    json_object_put(o);
    mae__buf_free(&b);
}

/* ts comes from the real-time clock, at microsecond resolution. */
static void test_ts_is_the_build_time_in_microseconds(void **state)
{
    (void)state;
    struct timespec before, after;
    mae__buf b;
    mae__buf_init(&b);
    clock_gettime(CLOCK_REALTIME, &before);
    mae__ev_outbox_done(&b, 1, 2);
    clock_gettime(CLOCK_REALTIME, &after);
    const char *ts = strstr(b.ptr, "\"ts\":") + 5;
    long long sec = 0, us = 0;
    while (*ts != '.')
        sec = sec * 10 + (*ts++ - '0');
    for (ts++; *ts != ','; ts++)
        us = us * 10 + (*ts - '0');
    long long t = sec * 1000000 + us;
    long long lo = (long long)before.tv_sec * 1000000 + before.tv_nsec / 1000;
    long long hi = (long long)after.tv_sec * 1000000 + (after.tv_nsec + 999) / 1000;
    assert_true(t >= lo && t <= hi);
    mae__buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_event_type_has_exactly_its_keys),
        cmocka_unit_test(test_null_and_extreme_ids),
        cmocka_unit_test(test_error_texts_cut_to_200_code_points),
        cmocka_unit_test(test_safe_publish_wraps_data_in_the_envelope),
        cmocka_unit_test(test_builders_append_to_existing_text),
        cmocka_unit_test(test_ts_is_the_build_time_in_microseconds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
