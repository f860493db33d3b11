/* Hostile input, table-driven over every public function: NULL handles and
 * strings, empty strings, bad ids, unknown enum strings, malformed and
 * deeply nested JSON each get their documented code with nothing written
 * and nothing published; 1 MiB strings, invalid and overlong UTF-8, control
 * characters, quotes and SQL fragments are stored and published as valid,
 * cut UTF-8 text. Leaks are the sanitizer and valgrind stages' job. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "capture.h"
#include "testutil.h"

#define SQLI "'); DROP TABLE email_outbox; --"

typedef struct ctx {
    char path[256];
    mae_publisher *pub;
    mae_db *db;
    int64_t oid;            /* a pending intent of mail 7 */
    char *big;              /* 1 MiB of text */
    char *deep;             /* an object nested 10 000 deep */
} ctx;

static const mae_email good_mail = {.internal_id = 9, .message_id = "<m9@example.com>"};
static const mae_email mail_id0 = {.internal_id = 0, .message_id = "<m0@example.com>"};
static const mae_email mail_neg = {.internal_id = -1, .message_id = "<m-1@example.com>"};
static const mae_email mail_noid = {.internal_id = MAE_NO_ID, .message_id = "<mn@example.com>"};
static const mae_email mail_nomsg = {.internal_id = 10, .message_id = NULL};
static const mae_email mail_emptymsg = {.internal_id = 10, .message_id = ""};
static const mae_llm_usage usage_ok = {.model = "m", .input_tokens = 1, .output_tokens = 1};
static const mae_llm_usage usage_nomodel = {.model = NULL, .input_tokens = 1};
static const mae_llm_usage usage_emptymodel = {.model = "", .input_tokens = 1};
static const mae_llm_usage usage_negative = {.model = "m", .input_tokens = -1};
static const mae_llm_usage usage_labels_array = {.model = "m", .labels_json = "[1]"};
static const mae_llm_usage usage_labels_broken = {.model = "m", .labels_json = "{\"a\":"};

static mae_email_row *erow;
static mae_email_list *elist;
static mae_outbox_row *orow;
static mae_outbox_list *olist;
static mae_llm_row *lrow;
static mae_llm_list *llist;
static mae_counts *counts;
static mae_outbox_depth depth;
static mae_llm_totals totals;

/* Every case: the call, and the code it must return. None may write a row
 * or publish an event. */
#define CASES(X)                                                                           \
    X(MAE_EINVAL, mae_sync_store_upsert(NULL, &good_mail))                                 \
    X(MAE_EINVAL, mae_sync_store_upsert(c->db, NULL))                                      \
    X(MAE_EINVAL, mae_sync_store_upsert(c->db, &mail_id0))                                 \
    X(MAE_EINVAL, mae_sync_store_upsert(c->db, &mail_neg))                                 \
    X(MAE_EINVAL, mae_sync_store_upsert(c->db, &mail_noid))                                \
    X(MAE_EINVAL, mae_sync_store_upsert(c->db, &mail_nomsg))                               \
    X(MAE_EINVAL, mae_sync_store_upsert(c->db, &mail_emptymsg))                            \
    X(MAE_EINVAL, mae_sync_store_mark_synced(NULL, 7, "p", NULL, NULL))                    \
    X(MAE_EINVAL, mae_sync_store_mark_synced(c->db, 0, "p", NULL, NULL))                   \
    X(MAE_EINVAL, mae_sync_store_mark_synced(c->db, -1, "p", NULL, NULL))                  \
    X(MAE_EINVAL, mae_sync_store_mark_synced(c->db, MAE_NO_ID, "p", NULL, NULL))           \
    X(MAE_ENOTFOUND, mae_sync_store_mark_synced(c->db, INT64_MAX, "p", NULL, NULL))        \
    X(MAE_EINVAL, mae_sync_store_mark_synced(c->db, 7, NULL, NULL, NULL))                  \
    X(MAE_EINVAL, mae_sync_store_mark_synced(c->db, 7, "", NULL, NULL))                    \
    X(MAE_EINVAL, mae_sync_store_mark_synced(c->db, 7, "p", NULL, ""))                     \
    X(MAE_EINVAL, mae_sync_store_mark_failed(NULL, 7, "failed", "e", NULL))                \
    X(MAE_EINVAL, mae_sync_store_mark_failed(c->db, 0, "failed", "e", NULL))               \
    X(MAE_EINVAL, mae_sync_store_mark_failed(c->db, 7, NULL, "e", NULL))                   \
    X(MAE_EINVAL, mae_sync_store_mark_failed(c->db, 7, "", "e", NULL))                     \
    X(MAE_EINVAL, mae_sync_store_mark_failed(c->db, 7, "synced", "e", NULL))               \
    X(MAE_EINVAL, mae_sync_store_mark_failed(c->db, 7, "FAILED", "e", NULL))               \
    X(MAE_EINVAL, mae_sync_store_mark_failed(c->db, 7, SQLI, "e", NULL))                   \
    X(MAE_EINVAL, mae_sync_store_mark_failed(c->db, 7, "failed", NULL, NULL))              \
    X(MAE_ENOTFOUND, mae_sync_store_mark_failed(c->db, INT64_MAX, "failed", "e", NULL))    \
    X(MAE_EINVAL, mae_outbox_enqueue(NULL, 7, "flag", "notion", "{}", NULL, NULL, NULL))   \
    X(MAE_EINVAL, mae_outbox_enqueue(c->db, 0, "flag", "notion", "{}", NULL, NULL, NULL))  \
    X(MAE_EINVAL, mae_outbox_enqueue(c->db, -1, "flag", "notion", "{}", NULL, NULL, NULL)) \
    X(MAE_EINVAL,                                                                          \
      mae_outbox_enqueue(c->db, MAE_NO_ID, "flag", "notion", "{}", NULL, NULL, NULL))      \
    X(MAE_ENOTFOUND,                                                                       \
      mae_outbox_enqueue(c->db, INT64_MAX, "flag", "notion", "{}", NULL, NULL, NULL))      \
    X(MAE_EINVAL, mae_outbox_enqueue(c->db, 7, NULL, "notion", "{}", NULL, NULL, NULL))    \
    X(MAE_EINVAL, mae_outbox_enqueue(c->db, 7, "", "notion", "{}", NULL, NULL, NULL))      \
    X(MAE_EINVAL, mae_outbox_enqueue(c->db, 7, "flag", NULL, "{}", NULL, NULL, NULL))      \
    X(MAE_EINVAL, mae_outbox_enqueue(c->db, 7, "flag", "", "{}", NULL, NULL, NULL))        \
    X(MAE_EINVAL, mae_outbox_enqueue(c->db, 7, "flag", "Notion", "{}", NULL, NULL, NULL))  \
    X(MAE_EINVAL, mae_outbox_enqueue(c->db, 7, "flag", "both", "{}", NULL, NULL, NULL))    \
    X(MAE_EINVAL, mae_outbox_enqueue(c->db, 7, "flag", SQLI, "{}", NULL, NULL, NULL))      \
    X(MAE_EINVAL, mae_outbox_enqueue(c->db, 7, "flag", "notion", NULL, NULL, NULL, NULL))  \
    X(MAE_EINVAL, mae_outbox_enqueue(c->db, 7, "flag", "notion", "", NULL, NULL, NULL))    \
    X(MAE_EINVAL, mae_outbox_enqueue(c->db, 7, "flag", "notion", "[]", NULL, NULL, NULL))  \
    X(MAE_EINVAL, mae_outbox_enqueue(c->db, 7, "flag", "notion", "\"s\"", NULL, NULL, NULL)) \
    X(MAE_EINVAL, mae_outbox_enqueue(c->db, 7, "flag", "notion", "42", NULL, NULL, NULL))  \
    X(MAE_EINVAL, mae_outbox_enqueue(c->db, 7, "flag", "notion", "null", NULL, NULL, NULL)) \
    X(MAE_EINVAL, mae_outbox_enqueue(c->db, 7, "flag", "notion", "{", NULL, NULL, NULL))   \
    X(MAE_EINVAL, mae_outbox_enqueue(c->db, 7, "flag", "notion", "{} x", NULL, NULL, NULL)) \
    X(MAE_EINVAL,                                                                          \
      mae_outbox_enqueue(c->db, 7, "flag", "notion", "{\"a\":NaN}", NULL, NULL, NULL))     \
    X(MAE_EINVAL, mae_outbox_enqueue(c->db, 7, "flag", "notion", SQLI, NULL, NULL, NULL))  \
    X(MAE_EINVAL, mae_outbox_enqueue(c->db, 7, "flag", "notion", c->deep, NULL, NULL, NULL)) \
    X(MAE_EINVAL, mae_outbox_enqueue(c->db, 7, "flag", "notion", "{}", "", NULL, NULL))    \
    X(MAE_SKIPPED,                                                                         \
      mae_outbox_enqueue(c->db, 7, "flag", "notion", "{}", "notion_webhook", NULL, NULL))  \
    X(MAE_EINVAL, mae_outbox_mark_processing(NULL, c->oid))                                \
    X(MAE_EINVAL, mae_outbox_mark_processing(c->db, 0))                                    \
    X(MAE_EINVAL, mae_outbox_mark_processing(c->db, MAE_NO_ID))                            \
    X(MAE_ENOTFOUND, mae_outbox_mark_processing(c->db, INT64_MAX))                         \
    X(MAE_EINVAL, mae_outbox_mark_done(NULL, c->oid))                                      \
    X(MAE_EINVAL, mae_outbox_mark_done(c->db, -1))                                         \
    X(MAE_ENOTFOUND, mae_outbox_mark_done(c->db, INT64_MAX))                               \
    X(MAE_EINVAL, mae_outbox_mark_failed(NULL, c->oid, "e", NULL))                         \
    X(MAE_EINVAL, mae_outbox_mark_failed(c->db, c->oid, NULL, NULL))                       \
    X(MAE_EINVAL, mae_outbox_mark_failed(c->db, 0, "e", NULL))                             \
    X(MAE_ENOTFOUND, mae_outbox_mark_failed(c->db, INT64_MAX, "e", NULL))                  \
    X(MAE_EINVAL, mae_outbox_retry_dead_letter(NULL, c->oid))                              \
    X(MAE_EINVAL, mae_outbox_retry_dead_letter(c->db, 0))                                  \
    X(MAE_ENOTFOUND, mae_outbox_retry_dead_letter(c->db, INT64_MAX))                       \
    X(MAE_ESTATE, mae_outbox_retry_dead_letter(c->db, c->oid))                             \
    X(MAE_EINVAL, mae_llm_store_mark_pending(NULL, 7, "p", "INBOX"))                       \
    X(MAE_EINVAL, mae_llm_store_mark_pending(c->db, 0, "p", "INBOX"))                      \
    X(MAE_EINVAL, mae_llm_store_mark_pending(c->db, MAE_NO_ID, "p", "INBOX"))              \
    X(MAE_EINVAL, mae_llm_store_mark_success(NULL, 7, "p", &usage_ok))                     \
    X(MAE_EINVAL, mae_llm_store_mark_success(c->db, 0, "p", &usage_ok))                    \
    X(MAE_EINVAL, mae_llm_store_mark_success(c->db, 7, "p", NULL))                         \
    X(MAE_EINVAL, mae_llm_store_mark_success(c->db, 7, "p", &usage_nomodel))               \
    X(MAE_EINVAL, mae_llm_store_mark_success(c->db, 7, "p", &usage_emptymodel))            \
    X(MAE_EINVAL, mae_llm_store_mark_success(c->db, 7, "p", &usage_negative))              \
    X(MAE_EINVAL, mae_llm_store_mark_success(c->db, 7, "p", &usage_labels_array))          \
    X(MAE_EINVAL, mae_llm_store_mark_success(c->db, 7, "p", &usage_labels_broken))         \
    X(MAE_ENOTFOUND, mae_llm_store_mark_success(c->db, INT64_MAX, "p", &usage_ok))         \
    X(MAE_EINVAL, mae_llm_store_mark_failed(NULL, 7, "e", NULL))                           \
    X(MAE_EINVAL, mae_llm_store_mark_failed(c->db, 7, NULL, NULL))                         \
    X(MAE_EINVAL, mae_llm_store_mark_failed(c->db, -1, "e", NULL))                         \
    X(MAE_ENOTFOUND, mae_llm_store_mark_failed(c->db, INT64_MAX, "e", NULL))               \
    X(MAE_EINVAL, mae_llm_store_reset_stale_pending(NULL, 300, NULL))                      \
    X(MAE_EINVAL, mae_sync_store_get(NULL, 7, &erow))                                      \
    X(MAE_EINVAL, mae_sync_store_get(c->db, 7, NULL))                                      \
    X(MAE_EINVAL, mae_sync_store_get(c->db, 0, &erow))                                     \
    X(MAE_ENOTFOUND, mae_sync_store_get(c->db, INT64_MAX, &erow))                          \
    X(MAE_EINVAL, mae_sync_store_list(NULL, NULL, 10, &elist))                             \
    X(MAE_EINVAL, mae_sync_store_list(c->db, "bogus", 10, &elist))                         \
    X(MAE_EINVAL, mae_sync_store_list(c->db, NULL, 10, NULL))                              \
    X(MAE_EINVAL, mae_sync_store_due_for_retry(NULL, 0, 10, &elist))                       \
    X(MAE_EINVAL, mae_sync_store_count_by_status(NULL, &counts))                           \
    X(MAE_EINVAL, mae_sync_store_count_by_status(c->db, NULL))                             \
    X(MAE_EINVAL, mae_outbox_get(NULL, c->oid, &orow))                                     \
    X(MAE_EINVAL, mae_outbox_get(c->db, 0, &orow))                                         \
    X(MAE_ENOTFOUND, mae_outbox_get(c->db, INT64_MAX, &orow))                              \
    X(MAE_EINVAL, mae_outbox_poll_ready(c->db, "bogus", 10, &olist))                       \
    X(MAE_EINVAL, mae_outbox_poll_ready(c->db, NULL, 10, NULL))                            \
    X(MAE_EINVAL, mae_outbox_list_for_email(NULL, 7, &olist))                              \
    X(MAE_EINVAL, mae_outbox_list_dead_letters(NULL, 10, &olist))                          \
    X(MAE_EINVAL, mae_outbox_queue_depth(NULL, &depth))                                    \
    X(MAE_EINVAL, mae_outbox_queue_depth(c->db, NULL))                                     \
    X(MAE_EINVAL, mae_llm_store_get(NULL, 7, &lrow))                                       \
    X(MAE_ENOTFOUND, mae_llm_store_get(c->db, INT64_MAX, &lrow))                           \
    X(MAE_EINVAL, mae_llm_store_due_for_retry(NULL, 0, 10, &llist))                        \
    X(MAE_EINVAL, mae_llm_store_count_by_status(NULL, &counts))                            \
    X(MAE_EINVAL, mae_llm_store_totals(NULL, &totals))                                     \
    X(MAE_EINVAL, mae_llm_store_totals(c->db, NULL))                                       \
    X(MAE_EINVAL, mae_db_begin(NULL))                                                      \
    X(MAE_EINVAL, mae_db_commit(NULL))                                                     \
    X(MAE_EINVAL, mae_db_rollback(NULL))                                                   \
    X(MAE_EINVAL, mae_db_commit(c->db))                                                    \
    X(MAE_EINVAL, mae_db_rollback(c->db))                                                  \
    X(MAE_EINVAL, mae_db_open(NULL, &c->db))

static int run_case(int i, ctx *c)
{
    int k = 0;
#define RUN(expect, expr)                                                                  \
    if (i == k++)                                                                          \
        return (expr);
    CASES(RUN)
#undef RUN
    return INT_MIN;
}

static const struct {
    int expect;
    const char *text;
} table[] = {
#define ROW(expect, expr) {expect, #expr},
    CASES(ROW)
#undef ROW
};

/* Every row of the three tables, as text: a write shows up as a change. */
static int append_row(void *user, int n, char **vals, char **names)
{
    char **acc = user;
    (void)names;
    for (int i = 0; i < n; i++) {
        const char *v = vals[i] ? vals[i] : "NULL";
        size_t old = *acc ? strlen(*acc) : 0;
        char *grown = realloc(*acc, old + strlen(v) + 2);
        assert_non_null(grown);
        strcpy(grown + old, v);
        strcat(grown, "|");
        *acc = grown;
    }
    return 0;
}

static char *fingerprint(ctx *c)
{
    char *acc = NULL;
    const char *sql = "SELECT * FROM email_metadata ORDER BY 1;"
                      "SELECT * FROM email_outbox ORDER BY 1;"
                      "SELECT * FROM llm_processing ORDER BY 1;";
    assert_int_equal(sqlite3_exec(mae_db_sqlite(c->db), sql, append_row, &acc, NULL), SQLITE_OK);
    return acc ? acc : strdup("");
}

static int setup(void **state)
{
    ctx *c = calloc(1, sizeof *c);
    assert_non_null(c);
    tu_db_path(c->path, sizeof c->path, "hostile");
    c->pub = cap_open();
    mae_db_config cfg;
    tu_db_config(&cfg, c->path, c->pub, &tu_t0);
    assert_int_equal(mae_db_open(&cfg, &c->db), MAE_OK);
    mae_email m = {.internal_id = 7, .message_id = "<m7@example.com>"};
    assert_int_equal(mae_sync_store_upsert(c->db, &m), MAE_OK);
    assert_int_equal(mae_outbox_enqueue(c->db, 7, "flag", "notion", "{\"flagged\":true}", "cli",
                                        &c->oid, NULL),
                     MAE_OK);
    assert_int_equal(mae_llm_store_mark_pending(c->db, 7, "p7", "INBOX"), MAE_OK);

    c->big = malloc((1u << 20) + 1);
    assert_non_null(c->big);
    for (size_t i = 0; i < (1u << 20); i++)
        c->big[i] = (char)('a' + i % 26);
    c->big[1u << 20] = 0;
    size_t depth = 10000;
    c->deep = malloc(depth * 6 + 8);
    assert_non_null(c->deep);
    char *w = c->deep;
    for (size_t i = 0; i < depth; i++)
        w += sprintf(w, "{\"a\":");
    *w++ = '1';
    memset(w, '}', depth);
    w[depth] = 0;
    cap_clear(c->pub);
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    ctx *c = *state;
    mae_db_close(c->db);
    mae_publisher_close(c->pub, 2000);
    tu_remove_db(c->path);
    free(c->big);
    free(c->deep);
    free(c);
    return 0;
}

static void test_bad_arguments_get_their_code_and_write_nothing(void **state)
{
    ctx *c = *state;
    size_t n = sizeof table / sizeof table[0];
    char *before = fingerprint(c);
    for (size_t i = 0; i < n; i++) {
        mae_db *keep = c->db;
        int rc = run_case((int)i, c);
        c->db = keep; /* mae_db_open(NULL, &c->db) must not have written it */
        if (rc != table[i].expect)
            fail_msg("%s returned %d (%s), expected %d (%s)", table[i].text, rc,
                     mae_strerror(rc), table[i].expect, mae_strerror(table[i].expect));
        if (rc < 0 && strstr(table[i].text, "(NULL") == NULL &&
            strcmp(mae_db_errmsg(c->db), "") == 0)
            fail_msg("%s: no message in mae_db_errmsg", table[i].text);
        char *after = fingerprint(c);
        if (strcmp(before, after) != 0)
            fail_msg("%s wrote to the database", table[i].text);
        free(after);
        if (cap_count(c->pub) != 0)
            fail_msg("%s published an event", table[i].text);
    }
    free(before);
    print_message("%zu hostile calls: documented codes, nothing written or published\n", n);
}

/* ---- hostile text that is accepted: stored and published as valid UTF-8 -- */

static bool valid_utf8(const unsigned char *s, size_t *cps)
{
    size_t n = 0;
    while (*s) {
        unsigned c = *s;
        int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!len || (len == 2 && c < 0xC2) || c > 0xF4)
            return false;
        unsigned cp = len == 1 ? c : c & (0x7F >> len);
        for (int i = 1; i < len; i++) {
            if ((s[i] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i] & 0x3F);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
            return false;
        s += len;
        n++;
    }
    *cps = n;
    return true;
}

static void assert_text(const char *s, size_t max_cp)
{
    size_t cps = 0;
    assert_non_null(s);
    if (!valid_utf8((const unsigned char *)s, &cps))
        fail_msg("not valid UTF-8: %.60s", s);
    if (max_cp && cps > max_cp)
        fail_msg("%zu code points, more than %zu", cps, max_cp);
}

/* The line parses as JSON and its data.<key> is text of at most max_cp. */
static void assert_event_text(const char *line, const char *key, size_t max_cp)
{
    assert_text(line, 0);
    json_object *o = json_tokener_parse(line), *data, *v;
    assert_non_null(o);
    assert_true(json_object_object_get_ex(o, "data", &data));
    assert_true(json_object_object_get_ex(data, key, &v));
    assert_text(json_object_get_string(v), max_cp);
    json_object_put(o);
}

static void test_hostile_text_is_stored_and_published_as_valid_utf8(void **state)
{
    ctx *c = *state;
    const char *texts[] = {
        c->big,
        "bad \xff\xfe bytes \xc0\xaf overlong \xed\xa0\x80 surrogate \xf5\x80\x80\x80 high "
        "\xe2\x82 truncated",
        "ctrl \x01\x02\x07\x08\x09\x0a\x0b\x0c\x0d\x1b\x1f\x7f end",
        "quotes \" ' \\ \\\" \\u0000 /slash/",
        SQLI,
        "emoji \xf0\x9f\x93\xa7 and \xe4\xb8\xad\xe6\x96\x87",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        mae_retry_outcome out;
        cap_clear(c->pub);
        int rc = mae_sync_store_mark_failed(c->db, 7, "fetch_failed", texts[i], &out);
        assert_int_equal(rc, MAE_OK);
        mae_email_row *e = NULL;
        assert_int_equal(mae_sync_store_get(c->db, 7, &e), MAE_OK);
        assert_text(e->sync_error, 500 + strlen("Max retries exceeded: "));
        mae_email_row_free(e);
        assert_int_equal(cap_count(c->pub), 1);
        assert_event_text(cap_line(c->pub, 0), "error", 200);

        cap_clear(c->pub);
        int64_t oid = 0;
        if (texts[i] == c->big) {
            /* 1 MiB in a field that is published whole: the event would pass
             * max_event_bytes, so the write is refused and nothing changes
             * (publisher.md, Event size). */
            mae_publisher_stats st0, st1;
            mae_publisher_stats_get(c->pub, &st0);
            assert_int_equal(mae_outbox_enqueue(c->db, 7, texts[i], "mailapp", "{\"x\":1}",
                                                texts[i], &oid, NULL),
                             MAE_EINVAL);
            assert_non_null(strstr(mae_db_errmsg(c->db), "max_event_bytes"));
            mae_llm_usage u = {.model = texts[i], .input_tokens = 1, .output_tokens = 2};
            assert_int_equal(mae_llm_store_mark_success(c->db, 7, "p7", &u), MAE_EINVAL);
            mae_safe_publish(c->pub, texts[i], 7, NULL, texts[i]);
            assert_int_equal(cap_count(c->pub), 0);
            mae_publisher_stats_get(c->pub, &st1);
            assert_int_equal(st1.dropped_too_large, st0.dropped_too_large + 1);
            continue;
        }
        assert_int_equal(mae_outbox_enqueue(c->db, 7, texts[i], "mailapp", "{\"x\":1}", texts[i],
                                            &oid, NULL),
                         MAE_OK);
        assert_int_equal(mae_outbox_mark_failed(c->db, oid, texts[i], NULL), MAE_OK);
        mae_outbox_row *o = NULL;
        assert_int_equal(mae_outbox_get(c->db, oid, &o), MAE_OK);
        assert_text(o->op_type, 0);
        assert_text(o->last_error, 500);
        mae_outbox_row_free(o);
        assert_int_equal(cap_count(c->pub), 2);
        assert_event_text(cap_line(c->pub, 0), "op_type", 0);
        assert_event_text(cap_line(c->pub, 1), "last_error", 200);

        cap_clear(c->pub);
        mae_llm_usage u = {.model = texts[i], .input_tokens = 1, .output_tokens = 2};
        assert_int_equal(mae_llm_store_mark_success(c->db, 7, texts[i], &u), MAE_OK);
        assert_int_equal(cap_count(c->pub), 1);
        assert_event_text(cap_line(c->pub, 0), "model", 0);

        cap_clear(c->pub);
        mae_safe_publish(c->pub, texts[i], 7, NULL, texts[i]);
        assert_int_equal(cap_count(c->pub), 1);
        assert_text(cap_line(c->pub, 0), 0);
        json_object *ev = json_tokener_parse(cap_line(c->pub, 0));
        assert_non_null(ev);
        json_object_put(ev);
    }
    /* The SQL fragments were data: every table is still there. */
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(mae_db_sqlite(c->db),
                                        "SELECT count(*) FROM sqlite_master WHERE type='table' "
                                        "AND name IN ('email_metadata','email_outbox',"
                                        "'llm_processing')",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 3);
    sqlite3_finalize(st);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_bad_arguments_get_their_code_and_write_nothing),
        T(test_hostile_text_is_stored_and_published_as_valid_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
