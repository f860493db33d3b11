/* The reference in docs/ agrees with the code it describes. Each test reads
 * a table of a page and compares it with what the library does: the keys
 * and JSON types of each event type's data as the builders write them, the
 * source tags, the publisher's and the database's defaults, the retry
 * schedule and the result codes. A change on either side without the other
 * fails here. */
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "capture.h"
#include "db/db_internal.h"
#include "doc_table.h"
#include "testutil.h"

/* ---- reading a cell ------------------------------------------------------------ */

/* The number a cell starts with, with "65 536" (thin groups) and a unit
 * ("64 MiB") understood; fails when the cell does not start with one. */
static double number_in(const char *c)
{
    char digits[64];
    size_t n = 0;
    const char *p = c;
    while (*p && n + 1 < sizeof digits) {
        if ((*p >= '0' && *p <= '9') || *p == '.')
            digits[n++] = *p;
        else if (*p != ' ' || !(p[1] >= '0' && p[1] <= '9'))
            break;
        p++;
    }
    digits[n] = '\0';
    if (n == 0)
        fail_msg("no number in the cell \"%s\"", c);
    double v = strtod(digits, NULL);
    while (*p == ' ')
        p++;
    if (strncmp(p, "MiB", 3) == 0)
        v *= 1024 * 1024;
    return v;
}

static void expect_default(const char *page, const char *name, const char *field, double want)
{
    const char *r = doc_row(page, name, field);
    char *c = doc_cell(r, 1);
    double got = number_in(c);
    if (got != want)
        fail_msg("%s says %s defaults to %s; the code has %.0f", name, field, c, want);
    free(c);
}

/* ---- events.md: each type's data keys and types ----------------------------- */

/* Every `key` type pair of a cell ("`outbox_id` integer, `op_type` string"). */
static void doc_keys(const char *c, char keys[][32], char types[][16], size_t *n)
{
    regex_t re;
    regmatch_t m[3];
    assert_int_equal(regcomp(&re, "`([a-z_]+)` (string|integer|number)", REG_EXTENDED), 0);
    *n = 0;
    for (const char *p = c; regexec(&re, p, 3, m, 0) == 0; p += m[0].rm_eo) {
        assert_true(*n < 8);
        snprintf(keys[*n], 32, "%.*s", (int)(m[1].rm_eo - m[1].rm_so), p + m[1].rm_so);
        snprintf(types[*n], 16, "%.*s", (int)(m[2].rm_eo - m[2].rm_so), p + m[2].rm_so);
        (*n)++;
    }
    regfree(&re);
}

static const char *json_kind(json_object *v)
{
    switch (json_object_get_type(v)) {
    case json_type_string: return "string";
    case json_type_int: return "integer";
    case json_type_double: return "number";
    case json_type_null: return "null";
    default: return "other";
    }
}

/* Compares the line the builder published with the page's row for its
 * type: the same keys in the same order, each of the documented JSON type
 * (an integer where a number is documented is fine; null only where the
 * row says "or `null`"), and the envelope source named in the row. */
static void check_event(const char *page, const char *line)
{
    json_object *root = json_tokener_parse(line);
    assert_non_null(root);
    json_object *v, *data;
    assert_true(json_object_object_get_ex(root, "event_type", &v));
    const char *type = json_object_get_string(v);
    const char *r = doc_row(page, "docs/events.md", type);
    char *keys_cell = doc_cell(r, 2), *source_cell = doc_cell(r, 3);
    char keys[8][32], types[8][16];
    size_t n;
    doc_keys(keys_cell, keys, types, &n);

    assert_true(json_object_object_get_ex(root, "data", &data));
    if ((size_t)json_object_object_length(data) != n)
        fail_msg("%s: docs/events.md lists %zu data keys, the builder writes %d: %s", type, n,
                 json_object_object_length(data), line);
    size_t i = 0;
    json_object_object_foreach(data, key, val)
    {
        if (strcmp(key, keys[i]) != 0)
            fail_msg("%s: data key %zu is \"%s\" in docs/events.md, \"%s\" on the wire", type, i,
                     keys[i], key);
        const char *kind = json_kind(val);
        bool ok = strcmp(kind, types[i]) == 0 ||
                  (strcmp(types[i], "number") == 0 && strcmp(kind, "integer") == 0) ||
                  (strcmp(kind, "null") == 0 && strstr(keys_cell, "or `null`") != NULL);
        if (!ok)
            fail_msg("%s: data.%s is documented as %s, written as %s", type, key, types[i], kind);
        i++;
    }
    assert_true(json_object_object_get_ex(root, "source", &v));
    char quoted[64];
    snprintf(quoted, sizeof quoted, "`%s`", json_object_get_string(v));
    if (!strstr(source_cell, quoted))
        fail_msg("%s: the envelope source %s is not in docs/events.md's row", type, quoted);
    free(keys_cell);
    free(source_cell);
    json_object_put(root);
}

static void test_events_page_lists_each_types_exact_data_keys(void **state)
{
    (void)state;
    char *page = doc_read("docs/events.md");
    mae_publisher *p = cap_open();
    mae_publish_email_synced(p, 1, "page", NULL);
    mae_publish_email_failed(p, 1, "failed", 1, 1716096060.0, "e");
    mae_publish_email_dead_letter(p, 1, 5, "e");
    mae_publish_outbox_enqueued(p, 1, 2, "flag", "notion", "cli");
    mae_publish_outbox_enqueued(p, 1, 2, "flag", "notion", NULL);
    mae_publish_outbox_done(p, 1, 2);
    mae_publish_outbox_failed(p, 1, 2, 1, "e", 1716096060.0);
    mae_publish_outbox_dead_letter(p, 1, 2, 5, "e");
    mae_publish_llm_success(p, 1, "m", 10, 2, 300);
    mae_publish_llm_failed(p, 1, 1, 1716096060.0, "e");
    mae_publish_llm_gave_up(p, 1, 5, "e");
    assert_int_equal(cap_count(p), 11);
    for (size_t i = 0; i < 11; i++)
        check_event(page, cap_line(p, i));
    mae_publisher_close(p, 1000);
    free(page);
}

static void test_events_page_lists_every_source_constant(void **state)
{
    (void)state;
    static const char *const sources[] = {
        MAE_SOURCE_CLI,       MAE_SOURCE_NOTION_WEBHOOK, MAE_SOURCE_AI_REVIEWED_HANDLER,
        MAE_SOURCE_REVERSE_SYNC_POLL, MAE_SOURCE_OUTBOX, MAE_SOURCE_SYNC_STORE,
        MAE_SOURCE_NEW_WATCHER, MAE_SOURCE_LLM_AGENT,
    };
    char *page = doc_read("docs/events.md");
    for (size_t i = 0; i < sizeof sources / sizeof sources[0]; i++)
        doc_row(page, "docs/events.md", sources[i]);
    free(page);
}

/* ---- publisher.md and stores.md: defaults ----------------------------------------- */

static void test_publisher_page_gives_the_real_defaults(void **state)
{
    (void)state;
    mae_publisher_config c;
    mae_publisher_config_init(&c);
    char *page = doc_read("docs/publisher.md");
    const char *r = doc_row(page, "docs/publisher.md", "channel");
    char *cl = doc_cell(r, 1);
    char want[96];
    snprintf(want, sizeof want, "`%s`", c.channel);
    if (strcmp(cl, want) != 0)
        fail_msg("docs/publisher.md says the channel defaults to %s; the code has %s", cl, want);
    free(cl);
    expect_default(page, "docs/publisher.md", "queue_max_events", (double)c.queue_max_events);
    expect_default(page, "docs/publisher.md", "queue_max_bytes", (double)c.queue_max_bytes);
    expect_default(page, "docs/publisher.md", "connect_timeout_ms", c.connect_timeout_ms);
    expect_default(page, "docs/publisher.md", "io_timeout_ms", c.io_timeout_ms);
    expect_default(page, "docs/publisher.md", "backoff_min_ms", c.backoff_min_ms);
    expect_default(page, "docs/publisher.md", "backoff_max_ms", c.backoff_max_ms);
    expect_default(page, "docs/publisher.md", "batch_max_events", (double)c.batch_max_events);
    expect_default(page, "docs/publisher.md", "stream_maxlen", (double)c.stream_maxlen);
    expect_default(page, "docs/publisher.md", "max_event_bytes", (double)c.max_event_bytes);
    doc_row(page, "docs/publisher.md", "stream_key");
    assert_null(c.stream_key);
    assert_null(c.redis_url);
    assert_null(c.log);
    free(page);
}

static void test_stores_page_gives_the_real_defaults(void **state)
{
    (void)state;
    mae_db_config c;
    mae_db_config_init(&c);
    char *page = doc_read("docs/stores.md");
    expect_default(page, "docs/stores.md", "busy_timeout_ms", c.busy_timeout_ms);
    expect_default(page, "docs/stores.md", "email_max_retries", c.email_max_retries);
    expect_default(page, "docs/stores.md", "outbox_max_attempts", c.outbox_max_attempts);
    expect_default(page, "docs/stores.md", "llm_max_retries", c.llm_max_retries);
    free(page);
}

/* The row "| due again after | 60 s | 300 s | ..." of stores.md Retries:
 * the n-th cell is the wait after the n-th failure, the last one for every
 * failure after it too. */
static void test_stores_page_gives_the_real_retry_schedule(void **state)
{
    (void)state;
    char *page = doc_read("docs/stores.md");
    const char *p = strstr(page, "| due again after |");
    assert_non_null(p);
    const char *end = strchr(p, '\n');
    char *line = malloc((size_t)(end - p) + 1);
    assert_non_null(line);
    memcpy(line, p, (size_t)(end - p));
    line[end - p] = '\0';
    int cells = 0;
    for (const char *q = line; *q; q++)
        cells += *q == '|';
    cells -= 2; /* the label's cell and the closing bar */
    assert_true(cells >= 2);
    for (int i = 1; i <= cells; i++) {
        char *c = doc_cell(line, i);
        double doc = number_in(c);
        if (doc != mae__retry_delay(i))
            fail_msg("docs/stores.md: failure %d waits %s; the code waits %.0f s", i, c,
                     mae__retry_delay(i));
        free(c);
    }
    /* The last column holds for every later failure. */
    char *c = doc_cell(line, cells);
    for (int i = cells + 1; i < cells + 10; i++)
        assert_true(mae__retry_delay(i) == number_in(c));
    free(c);
    free(line);
    free(page);
}

static void test_stores_page_lists_every_result_code(void **state)
{
    (void)state;
    char *page = doc_read("docs/stores.md");
#define CHECK_CODE(name, value, text)                                                        \
    do {                                                                                     \
        char *c_ = doc_cell(doc_row(page, "docs/stores.md", "MAE_" #name), 1);               \
        if (atoi(c_) != (value))                                                             \
            fail_msg("docs/stores.md gives MAE_" #name " the value %s; it is %d", c_, value); \
        free(c_);                                                                            \
    } while (0);
    MAE_ERRNO_MAP(CHECK_CODE)
#undef CHECK_CODE
    free(page);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_events_page_lists_each_types_exact_data_keys),
        cmocka_unit_test(test_events_page_lists_every_source_constant),
        cmocka_unit_test(test_publisher_page_gives_the_real_defaults),
        cmocka_unit_test(test_stores_page_gives_the_real_defaults),
        cmocka_unit_test(test_stores_page_gives_the_real_retry_schedule),
        cmocka_unit_test(test_stores_page_lists_every_result_code),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
