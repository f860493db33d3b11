/* Unit tests of the LLM processing store (llm_processing): pending, success
 * with canonical and cut labels, the retry schedule from the first failure,
 * giving up, stale pending rows, totals with p95, hostile inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "capture.h"
#include "testutil.h"

#define T0 TU_T0

static double fake_now = T0;

typedef tu_db fx;

static void open_with_limit(fx *f, int limit)
{
    mae_db_config cfg;
    tu_db_config(&cfg, f->path, f->pub, &fake_now);
    if (limit > 0)
        cfg.llm_max_retries = limit;
    assert_int_equal(mae_db_open(&cfg, &f->db), MAE_OK);
}

static void add_mail(fx *f, int64_t id)
{
    char mid[64];
    snprintf(mid, sizeof mid, "<m%lld@example.com>", (long long)id);
    mae_email m = {.internal_id = id, .message_id = mid, .mailbox = "INBOX"};
    assert_int_equal(mae_sync_store_upsert(f->db, &m), MAE_OK);
}

static int setup(void **state)
{
    fx *f = tu_db_new("llm");
    fake_now = T0;
    open_with_limit(f, 0);
    for (int64_t id = 1; id <= 30; id++)
        add_mail(f, id);
    add_mail(f, 53675);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    tu_db_free(*state);
    return 0;
}

static mae_llm_row *get(fx *f, int64_t id)
{
    mae_llm_row *r = NULL;
    assert_int_equal(mae_llm_store_get(f->db, id, &r), MAE_OK);
    assert_non_null(r);
    return r;
}

static bool is_null(fx *f, const char *column, int64_t id)
{
    char sql[128];
    sqlite3_stmt *st;
    snprintf(sql, sizeof sql, "SELECT %s IS NULL FROM llm_processing WHERE internal_id = ?",
             column);
    assert_int_equal(sqlite3_prepare_v2(mae_db_sqlite(f->db), sql, -1, &st, NULL), SQLITE_OK);
    sqlite3_bind_int64(st, 1, id);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    bool r = sqlite3_column_int(st, 0) != 0;
    sqlite3_finalize(st);
    return r;
}

/* ---- transitions ---------------------------------------------------------- */

static void test_mark_pending_keeps_the_retry_count(void **state)
{
    fx *f = *state;
    assert_int_equal(mae_llm_store_mark_pending(f->db, 7, "page-7", "INBOX"), MAE_OK);
    mae_llm_row *r = get(f, 7);
    assert_string_equal(r->status, "pending");
    assert_string_equal(r->notion_page_id, "page-7");
    assert_string_equal(r->mailbox, "INBOX");
    assert_int_equal(r->retry_count, 0);
    assert_true(r->created_at == T0);
    assert_true(r->updated_at == T0);
    mae_llm_row_free(r);

    /* Again after a failure: pending, the retry count kept, NULLs keep the
     * stored page and mailbox. */
    assert_int_equal(mae_llm_store_mark_failed(f->db, 7, "overloaded", NULL), MAE_OK);
    fake_now = T0 + 3;
    assert_int_equal(mae_llm_store_mark_pending(f->db, 7, NULL, NULL), MAE_OK);
    r = get(f, 7);
    assert_string_equal(r->status, "pending");
    assert_string_equal(r->notion_page_id, "page-7");
    assert_string_equal(r->mailbox, "INBOX");
    assert_int_equal(r->retry_count, 1);
    assert_true(r->created_at == T0);
    assert_true(r->updated_at == T0 + 3);
    mae_llm_row_free(r);
    cap_clear(f->pub);

    assert_int_equal(mae_llm_store_mark_pending(f->db, 8, NULL, NULL), MAE_OK);
    assert_int_equal(cap_count(f->pub), 0); /* pending publishes nothing */
    assert_int_equal(mae_llm_store_mark_pending(f->db, 99999, "p", "m"), MAE_ENOTFOUND);
    assert_non_null(strstr(mae_db_errmsg(f->db), "99999"));
}

static void test_mark_success_publishes_llm_success(void **state)
{
    fx *f = *state;
    assert_int_equal(mae_llm_store_mark_pending(f->db, 53675, "page-1", "INBOX"), MAE_OK);
    assert_int_equal(mae_llm_store_mark_failed(f->db, 53675, "overloaded", NULL), MAE_OK);
    cap_clear(f->pub);
    fake_now = T0 + 100;
    mae_llm_usage u = {.model = "claude-sonnet",
                       .input_tokens = 1200,
                       .output_tokens = 85,
                       .cache_read_input_tokens = 1000,
                       .cache_creation_input_tokens = 7,
                       .latency_ms = 2350,
                       .labels_json = " { \"why\" : \"newsletter\", \"labels\": [\"a\", \"b\"],"
                                      " \"meta\": {\"z\": 1, \"a\": null} } "};
    assert_int_equal(mae_llm_store_mark_success(f->db, 53675, NULL, &u), MAE_OK);
    mae_llm_row *r = get(f, 53675);
    assert_string_equal(r->status, "success");
    assert_int_equal(r->retry_count, 0);
    assert_null(r->last_error);
    assert_true(is_null(f, "next_retry_at", 53675));
    assert_true(is_null(f, "last_error", 53675));
    assert_string_equal(r->notion_page_id, "page-1");
    assert_string_equal(r->mailbox, "INBOX");
    assert_string_equal(r->model, "claude-sonnet");
    assert_int_equal(r->input_tokens, 1200);
    assert_int_equal(r->output_tokens, 85);
    assert_int_equal(r->cache_read_input_tokens, 1000);
    assert_int_equal(r->cache_creation_input_tokens, 7);
    assert_int_equal(r->latency_ms, 2350);
    assert_string_equal(r->labels_json,
                        "{\"labels\":[\"a\",\"b\"],\"meta\":{\"a\":null,\"z\":1},"
                        "\"why\":\"newsletter\"}");
    assert_true(r->updated_at == T0 + 100);
    mae_llm_row_free(r);
    assert_int_equal(cap_count(f->pub), 1);
    cap_assert_line(cap_line(f->pub, 0),
                    "{\"event_type\":\"llm.success\",\"ts\":TS,\"internal_id\":53675,\"data\":"
                    "{\"model\":\"claude-sonnet\",\"input_tokens\":1200,\"output_tokens\":85,"
                    "\"latency_ms\":2350},\"source\":\"llm_agent\"}");

    /* Without labels and without a prior row. */
    u.labels_json = NULL;
    assert_int_equal(mae_llm_store_mark_success(f->db, 9, "page-9", &u), MAE_OK);
    r = get(f, 9);
    assert_string_equal(r->status, "success");
    assert_null(r->labels_json);
    assert_string_equal(r->notion_page_id, "page-9");
    mae_llm_row_free(r);
}

static void test_long_labels_cut_and_still_valid_json(void **state)
{
    fx *f = *state;
    size_t n = 2000;
    char *value = malloc(n * 2 + 1);
    assert_non_null(value);
    for (size_t i = 0; i < n; i++)
        memcpy(value + 2 * i, "\xc3\xa9", 2); /* é, two bytes */
    value[2 * n] = '\0';
    size_t jl = strlen(value) + 64;
    char *labels = malloc(jl);
    assert_non_null(labels);
    snprintf(labels, jl, "{\"summary\":\"%s\",\"labels\":[\"x\"]}", value);

    mae_llm_usage u = {.model = "m", .latency_ms = 1, .labels_json = labels};
    assert_int_equal(mae_llm_store_mark_success(f->db, 7, NULL, &u), MAE_OK);
    mae_llm_row *r = get(f, 7);
    assert_non_null(r->labels_json);
    json_object *o = json_tokener_parse(r->labels_json);
    assert_non_null(o); /* still valid JSON */
    json_object *s = NULL;
    assert_true(json_object_object_get_ex(o, "summary", &s));
    const char *cut = json_object_get_string(s);
    assert_int_equal(strlen(cut), 2 * MAE_LLM_LABEL_MAX_CHARS);
    assert_int_equal(memcmp(cut, value, 2 * MAE_LLM_LABEL_MAX_CHARS), 0);
    json_object *l = NULL;
    assert_true(json_object_object_get_ex(o, "labels", &l));
    assert_int_equal(json_object_array_length(l), 1);
    json_object_put(o);
    mae_llm_row_free(r);
    free(labels);
    free(value);

    /* Not an object, or not JSON: rejected, nothing written, no event. */
    cap_clear(f->pub);
    const char *bad[] = {"[1,2]", "\"x\"", "{\"a\":", "", "{} {}", "null"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        u.labels_json = bad[i];
        assert_int_equal(mae_llm_store_mark_success(f->db, 8, NULL, &u), MAE_EINVAL);
        assert_non_null(strstr(mae_db_errmsg(f->db), "labels_json"));
    }
    assert_int_equal(mae_llm_store_get(f->db, 8, &r), MAE_ENOTFOUND);
    assert_int_equal(cap_count(f->pub), 0);
}

static void fail_and_check(fx *f, int64_t id, int64_t n, double delay)
{
    char expected[512];
    mae_retry_outcome out = {0};
    cap_clear(f->pub);
    assert_int_equal(mae_llm_store_mark_failed(f->db, id, "upstream 529: overloaded", &out),
                     MAE_OK);
    assert_int_equal(out.attempts, n);
    assert_false(out.terminal);
    assert_true(out.next_retry_at == fake_now + delay);
    mae_llm_row *r = get(f, id);
    assert_string_equal(r->status, "failed");
    assert_int_equal(r->retry_count, n);
    assert_true(r->next_retry_at == fake_now + delay);
    assert_string_equal(r->last_error, "upstream 529: overloaded");
    mae_llm_row_free(r);
    assert_int_equal(cap_count(f->pub), 1);
    snprintf(expected, sizeof expected,
             "{\"event_type\":\"llm.failed\",\"ts\":TS,\"internal_id\":%lld,\"data\":"
             "{\"retry_count\":%lld,\"next_retry_at\":%.6f,\"error\":\"upstream 529: "
             "overloaded\"},\"source\":\"llm_agent\"}",
             (long long)id, (long long)n, fake_now + delay);
    cap_assert_line(cap_line(f->pub, 0), expected);
}

static void test_failures_follow_the_schedule_then_give_up(void **state)
{
    fx *f = *state;
    /* No row yet: the first failure creates one, and waits 60 s (not 300). */
    const double delays[] = {60, 300, 900, 3600};
    for (int i = 0; i < 4; i++) {
        fake_now = T0 + 500.0 * i;
        fail_and_check(f, 53675, i + 1, delays[i]);
    }
    cap_clear(f->pub);
    mae_retry_outcome out = {0};
    assert_int_equal(mae_llm_store_mark_failed(f->db, 53675, "upstream 529: overloaded", &out),
                     MAE_OK);
    assert_true(out.terminal);
    assert_int_equal(out.attempts, 5);
    assert_true(out.next_retry_at == 0);
    mae_llm_row *r = get(f, 53675);
    assert_string_equal(r->status, "gave_up");
    assert_int_equal(r->retry_count, 5);
    assert_string_equal(r->last_error, "upstream 529: overloaded");
    mae_llm_row_free(r);
    assert_true(is_null(f, "next_retry_at", 53675));
    assert_int_equal(cap_count(f->pub), 1);
    cap_assert_line(cap_line(f->pub, 0),
                    "{\"event_type\":\"llm.gave_up\",\"ts\":TS,\"internal_id\":53675,"
                    "\"data\":{\"retry_count\":5,\"error\":\"upstream 529: overloaded\"},"
                    "\"source\":\"llm_agent\"}");

    /* A success resets the count: the next failure starts the schedule again. */
    mae_llm_usage u = {.model = "m"};
    assert_int_equal(mae_llm_store_mark_success(f->db, 53675, NULL, &u), MAE_OK);
    fail_and_check(f, 53675, 1, 60);
}

static void test_retry_limit_is_configurable_and_errors_cut(void **state)
{
    fx *f = *state;
    mae_db_close(f->db);
    open_with_limit(f, 2);
    fail_and_check(f, 7, 1, 60);

    size_t n = 700;
    char *err = malloc(3 * n + 1);
    assert_non_null(err);
    for (size_t i = 0; i < n; i++)
        memcpy(err + 3 * i, "\xe2\x82\xac", 3); /* € */
    err[3 * n] = '\0';
    cap_clear(f->pub);
    assert_int_equal(mae_llm_store_mark_failed(f->db, 7, err, NULL), MAE_OK);
    mae_llm_row *r = get(f, 7);
    assert_string_equal(r->status, "gave_up");
    assert_int_equal(strlen(r->last_error), 3 * 500);
    assert_int_equal(memcmp(r->last_error, err, 3 * 500), 0);
    mae_llm_row_free(r);
    char *expected = malloc(3 * 200 + 256);
    assert_non_null(expected);
    int k = sprintf(expected, "{\"event_type\":\"llm.gave_up\",\"ts\":TS,\"internal_id\":7,"
                              "\"data\":{\"retry_count\":2,\"error\":\"");
    memcpy(expected + k, err, 3 * 200);
    strcpy(expected + k + 3 * 200, "\"},\"source\":\"llm_agent\"}");
    assert_int_equal(cap_count(f->pub), 1);
    cap_assert_line(cap_line(f->pub, 0), expected);
    free(expected);
    free(err);
}

static void test_stale_pending_rows_become_due_failures(void **state)
{
    fx *f = *state;
    fake_now = T0 - 400;
    assert_int_equal(mae_llm_store_mark_pending(f->db, 1, NULL, NULL), MAE_OK);
    fake_now = T0 - 100;
    assert_int_equal(mae_llm_store_mark_pending(f->db, 2, NULL, NULL), MAE_OK);
    fake_now = T0 - 1000;
    mae_llm_usage u = {.model = "m"};
    assert_int_equal(mae_llm_store_mark_success(f->db, 3, NULL, &u), MAE_OK);
    cap_clear(f->pub);

    fake_now = T0;
    int64_t reset = -1;
    assert_int_equal(mae_llm_store_reset_stale_pending(f->db, 0, &reset), MAE_OK); /* 300 s */
    assert_int_equal(reset, 1);
    mae_llm_row *r = get(f, 1);
    assert_string_equal(r->status, "failed");
    assert_true(r->next_retry_at == T0);
    assert_int_equal(r->retry_count, 0);
    mae_llm_row_free(r);
    r = get(f, 2);
    assert_string_equal(r->status, "pending");
    mae_llm_row_free(r);
    r = get(f, 3);
    assert_string_equal(r->status, "success");
    mae_llm_row_free(r);
    assert_int_equal(cap_count(f->pub), 0);

    mae_llm_list *l = NULL;
    assert_int_equal(mae_llm_store_due_for_retry(f->db, 0, 0, &l), MAE_OK);
    assert_int_equal(l->count, 1);
    assert_int_equal(l->rows[0].internal_id, 1);
    mae_llm_list_free(l);

    /* A custom threshold. */
    assert_int_equal(mae_llm_store_reset_stale_pending(f->db, 50, NULL), MAE_OK);
    r = get(f, 2);
    assert_string_equal(r->status, "failed");
    mae_llm_row_free(r);
    assert_int_equal(mae_llm_store_reset_stale_pending(f->db, 50, &reset), MAE_OK);
    assert_int_equal(reset, 0);
}

/* ---- reads ---------------------------------------------------------------- */

static void test_reads_and_totals(void **state)
{
    fx *f = *state;
    mae_llm_totals t;
    memset(&t, 0xff, sizeof t);
    assert_int_equal(mae_llm_store_totals(f->db, &t), MAE_OK);
    assert_int_equal(t.successes, 0);
    assert_true(t.latency_mean_ms == 0);
    assert_true(t.latency_p95_ms == 0);

    /* Latencies 100, 200, ..., 2000 in a shuffled order. */
    const int order[] = {7, 19, 3, 12, 1, 20, 15, 9, 4, 17, 11, 2, 14, 6, 18, 10, 13, 5, 16, 8};
    for (int i = 0; i < 20; i++) {
        mae_llm_usage u = {.model = "m", .input_tokens = 10, .output_tokens = 2,
                           .cache_read_input_tokens = 1, .cache_creation_input_tokens = 3,
                           .latency_ms = order[i] * 100};
        assert_int_equal(mae_llm_store_mark_success(f->db, i + 1, NULL, &u), MAE_OK);
    }
    /* Rows that are not successes do not count. */
    assert_int_equal(mae_llm_store_mark_failed(f->db, 21, "e", NULL), MAE_OK);
    assert_int_equal(mae_llm_store_mark_pending(f->db, 22, NULL, NULL), MAE_OK);

    assert_int_equal(mae_llm_store_totals(f->db, &t), MAE_OK);
    assert_int_equal(t.successes, 20);
    assert_int_equal(t.input_tokens, 200);
    assert_int_equal(t.output_tokens, 40);
    assert_int_equal(t.cache_read_input_tokens, 20);
    assert_int_equal(t.cache_creation_input_tokens, 60);
    assert_true(t.latency_mean_ms == 1050.0);
    assert_true(t.latency_p95_ms == 1900.0); /* rank ceil(0.95*20) = 19 */

    /* 21 successes: rank ceil(19.95) = 20. */
    mae_llm_usage u = {.model = "m", .latency_ms = 2100};
    assert_int_equal(mae_llm_store_mark_success(f->db, 23, NULL, &u), MAE_OK);
    assert_int_equal(mae_llm_store_totals(f->db, &t), MAE_OK);
    assert_true(t.latency_p95_ms == 2000.0);
    /* One success: p95 is that value. */

    mae_counts *c = NULL;
    assert_int_equal(mae_llm_store_count_by_status(f->db, &c), MAE_OK);
    assert_int_equal(c->count, 3);
    assert_string_equal(c->items[0].key, "failed");
    assert_int_equal(c->items[0].count, 1);
    assert_string_equal(c->items[1].key, "pending");
    assert_int_equal(c->items[1].count, 1);
    assert_string_equal(c->items[2].key, "success");
    assert_int_equal(c->items[2].count, 21);
    mae_counts_free(c);

    mae_llm_list *l = NULL;
    assert_int_equal(mae_llm_store_due_for_retry(f->db, T0 + 59, 10, &l), MAE_OK);
    assert_int_equal(l->count, 0);
    mae_llm_list_free(l);
    assert_int_equal(mae_llm_store_due_for_retry(f->db, T0 + 60, 10, &l), MAE_OK);
    assert_int_equal(l->count, 1);
    assert_int_equal(l->rows[0].internal_id, 21);
    assert_string_equal(l->rows[0].last_error, "e");
    mae_llm_list_free(l);
    mae_llm_list_free(NULL);
    mae_llm_row_free(NULL);
}

static void test_p95_of_a_single_success(void **state)
{
    fx *f = *state;
    mae_llm_totals t;
    mae_llm_usage u = {.model = "m", .latency_ms = 321};
    assert_int_equal(mae_llm_store_mark_success(f->db, 5, NULL, &u), MAE_OK);
    assert_int_equal(mae_llm_store_totals(f->db, &t), MAE_OK);
    assert_int_equal(t.successes, 1);
    assert_true(t.latency_mean_ms == 321.0);
    assert_true(t.latency_p95_ms == 321.0);
}

/* ---- hostile inputs ---------------------------------------------------- */

static void snapshot(fx *f, char *out, size_t n)
{
    mae_llm_row *r = get(f, 7);
    snprintf(out, n, "%s|%lld|%.6f|%s|%s|%lld|%s|%.6f", r->status, (long long)r->retry_count,
             r->next_retry_at, r->last_error ? r->last_error : "-", r->model ? r->model : "-",
             (long long)r->latency_ms, r->labels_json ? r->labels_json : "-", r->updated_at);
    mae_llm_row_free(r);
}

static void expect_rejected(fx *f, int rc, int code, const char *before)
{
    char after[1024];
    assert_int_equal(rc, code);
    assert_true(strlen(mae_db_errmsg(f->db)) > 0);
    snapshot(f, after, sizeof after);
    assert_string_equal(before, after);
    assert_int_equal(cap_count(f->pub), 0);
}

static void test_bad_arguments_write_and_publish_nothing(void **state)
{
    fx *f = *state;
    char before[1024];
    mae_retry_outcome out = {.attempts = 42};
    mae_llm_row *row = NULL;
    mae_llm_list *list = NULL;
    mae_counts *counts = NULL;
    mae_llm_totals t;
    mae_llm_usage u = {.model = "m", .latency_ms = 5, .labels_json = "{\"a\":1}"};

    assert_int_equal(mae_llm_store_mark_success(f->db, 7, "p", &u), MAE_OK);
    cap_clear(f->pub);
    snapshot(f, before, sizeof before);

    assert_int_equal(mae_llm_store_mark_pending(NULL, 7, NULL, NULL), MAE_EINVAL);
    assert_int_equal(mae_llm_store_mark_success(NULL, 7, NULL, &u), MAE_EINVAL);
    assert_int_equal(mae_llm_store_mark_failed(NULL, 7, "e", NULL), MAE_EINVAL);
    assert_int_equal(mae_llm_store_reset_stale_pending(NULL, 0, NULL), MAE_EINVAL);
    assert_int_equal(mae_llm_store_get(NULL, 7, &row), MAE_EINVAL);
    assert_int_equal(mae_llm_store_due_for_retry(NULL, 0, 0, &list), MAE_EINVAL);
    assert_int_equal(mae_llm_store_count_by_status(NULL, &counts), MAE_EINVAL);
    assert_int_equal(mae_llm_store_totals(NULL, &t), MAE_EINVAL);

    const int64_t bad_ids[] = {0, -1, MAE_NO_ID};
    for (size_t i = 0; i < 3; i++) {
        expect_rejected(f, mae_llm_store_mark_pending(f->db, bad_ids[i], NULL, NULL), MAE_EINVAL,
                        before);
        expect_rejected(f, mae_llm_store_mark_success(f->db, bad_ids[i], NULL, &u), MAE_EINVAL,
                        before);
        expect_rejected(f, mae_llm_store_mark_failed(f->db, bad_ids[i], "e", &out), MAE_EINVAL,
                        before);
        assert_int_equal(mae_llm_store_get(f->db, bad_ids[i], &row), MAE_EINVAL);
    }
    expect_rejected(f, mae_llm_store_mark_pending(f->db, INT64_MAX, NULL, NULL), MAE_ENOTFOUND,
                    before);
    expect_rejected(f, mae_llm_store_mark_success(f->db, INT64_MAX, NULL, &u), MAE_ENOTFOUND,
                    before);
    expect_rejected(f, mae_llm_store_mark_failed(f->db, INT64_MAX, "e", &out), MAE_ENOTFOUND,
                    before);
    assert_int_equal(mae_llm_store_get(f->db, INT64_MAX, &row), MAE_ENOTFOUND);

    expect_rejected(f, mae_llm_store_mark_success(f->db, 7, NULL, NULL), MAE_EINVAL, before);
    mae_llm_usage bad = u;
    bad.model = NULL;
    expect_rejected(f, mae_llm_store_mark_success(f->db, 7, NULL, &bad), MAE_EINVAL, before);
    bad.model = "";
    expect_rejected(f, mae_llm_store_mark_success(f->db, 7, NULL, &bad), MAE_EINVAL, before);
    bad = u;
    bad.input_tokens = -1;
    expect_rejected(f, mae_llm_store_mark_success(f->db, 7, NULL, &bad), MAE_EINVAL, before);
    bad = u;
    bad.latency_ms = -5;
    expect_rejected(f, mae_llm_store_mark_success(f->db, 7, NULL, &bad), MAE_EINVAL, before);
    bad = u;
    bad.labels_json = "{\"a\":1,}";
    expect_rejected(f, mae_llm_store_mark_success(f->db, 7, NULL, &bad), MAE_EINVAL, before);
    expect_rejected(f, mae_llm_store_mark_failed(f->db, 7, NULL, &out), MAE_EINVAL, before);
    expect_rejected(f, mae_llm_store_mark_failed(f->db, 7, "", &out), MAE_EINVAL, before);
    assert_int_equal(out.attempts, 42);
    assert_int_equal(mae_llm_store_get(f->db, 7, NULL), MAE_EINVAL);
    assert_int_equal(mae_llm_store_totals(f->db, NULL), MAE_EINVAL);

    /* Quotes, SQL and invalid UTF-8 are data. */
    const char *sql = "'; DELETE FROM llm_processing; -- \"\xff";
    mae_llm_usage evil = {.model = sql, .labels_json = "{\"k\":\"'); DROP TABLE x; --\"}"};
    assert_int_equal(mae_llm_store_mark_success(f->db, 8, sql, &evil), MAE_OK);
    row = get(f, 8);
    assert_string_equal(row->model, "'; DELETE FROM llm_processing; -- \"\xef\xbf\xbd");
    assert_string_equal(row->notion_page_id, "'; DELETE FROM llm_processing; -- \"\xef\xbf\xbd");
    assert_string_equal(row->labels_json, "{\"k\":\"'); DROP TABLE x; --\"}");
    mae_llm_row_free(row);
    assert_int_equal(cap_count(f->pub), 1);
    cap_assert_line(cap_line(f->pub, 0),
                    "{\"event_type\":\"llm.success\",\"ts\":TS,\"internal_id\":8,\"data\":"
                    "{\"model\":\"'; DELETE FROM llm_processing; -- \\\"\xef\xbf\xbd\","
                    "\"input_tokens\":0,\"output_tokens\":0,\"latency_ms\":0},"
                    "\"source\":\"llm_agent\"}");
    cap_clear(f->pub);

    /* 1 MiB of error text is accepted and cut. */
    char *big = malloc((1 << 20) + 1);
    assert_non_null(big);
    memset(big, 'E', 1 << 20);
    big[1 << 20] = '\0';
    assert_int_equal(mae_llm_store_mark_failed(f->db, 8, big, &out), MAE_OK);
    row = get(f, 8);
    assert_int_equal(strlen(row->last_error), 500);
    mae_llm_row_free(row);
    assert_int_equal(cap_count(f->pub), 1);
    assert_true(strlen(cap_line(f->pub, 0)) < 400);
    free(big);
}

/* Each read names itself and says what is wrong, and leaves *out alone. */
static void test_read_errors_name_the_call(void **state)
{
    fx *f = *state;
    mae_llm_row *row = (mae_llm_row *)&row;
    mae_llm_list *list = (mae_llm_list *)&list;
    mae_llm_usage u = {.model = "m"};

    add_mail(f, 7);
    assert_int_equal(mae_llm_store_get(f->db, -1, &row), MAE_EINVAL);
    assert_string_equal(mae_db_errmsg(f->db),
                        "invalid argument: mae_llm_store_get: internal_id must be > 0");
    assert_int_equal(mae_llm_store_get(f->db, 7, &row), MAE_ENOTFOUND);
    assert_string_equal(mae_db_errmsg(f->db), "no such row: mae_llm_store_get: no LLM row for mail 7");
    assert_int_equal(mae_llm_store_get(f->db, 7, NULL), MAE_EINVAL);
    assert_string_equal(mae_db_errmsg(f->db), "invalid argument: mae_llm_store_get: out is NULL");
    assert_ptr_equal(row, (mae_llm_row *)&row);
    assert_int_equal(mae_llm_store_due_for_retry(f->db, 0, 0, NULL), MAE_EINVAL);
    assert_string_equal(mae_db_errmsg(f->db),
                        "invalid argument: mae_llm_store_due_for_retry: out is NULL");
    assert_ptr_equal(list, (mae_llm_list *)&list);
    assert_int_equal(mae_llm_store_count_by_status(f->db, NULL), MAE_EINVAL);
    assert_string_equal(mae_db_errmsg(f->db),
                        "invalid argument: mae_llm_store_count_by_status: out is NULL");
    assert_int_equal(mae_llm_store_totals(f->db, NULL), MAE_EINVAL);
    assert_string_equal(mae_db_errmsg(f->db), "invalid argument: mae_llm_store_totals: out is NULL");

    assert_int_equal(mae_llm_store_mark_success(f->db, 7, NULL, &u), MAE_OK);
    row = NULL;
    assert_int_equal(mae_llm_store_get(f->db, 7, &row), MAE_OK);
    assert_string_equal(mae_db_errmsg(f->db), "");
    assert_string_equal(row->model, "m");
    mae_llm_row_free(row);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_mark_pending_keeps_the_retry_count),
        T(test_mark_success_publishes_llm_success),
        T(test_long_labels_cut_and_still_valid_json),
        T(test_failures_follow_the_schedule_then_give_up),
        T(test_retry_limit_is_configurable_and_errors_cut),
        T(test_stale_pending_rows_become_due_failures),
        T(test_reads_and_totals),
        T(test_p95_of_a_single_success),
        T(test_bad_arguments_write_and_publish_nothing),
        T(test_read_errors_name_the_call),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
