/* Tests of the outbox repository: every transition with the row it leaves
 * (read back through a second SQLite connection) and the exact line it
 * publishes, the state machine's refusals, merge and echo prevention, the
 * retry schedule on a fake clock, hostile arguments, and the reads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "capture.h"
#include "testutil.h"

#define T0 TU_T0

static double now_s = T0; /* the stores' clock */

typedef struct fx {
    char path[256];
    mae_publisher *pub;
    mae_db *db;
    sqlite3 *peek; /* a second connection: sees only what was committed */
} fx;

static void open_db(fx *f, int max_attempts, mae_publisher *pub)
{
    mae_db_config cfg;
    tu_db_config(&cfg, f->path, pub, &now_s);
    cfg.outbox_max_attempts = max_attempts;
    assert_int_equal(mae_db_open(&cfg, &f->db), MAE_OK);
}

static void exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK)
        fail_msg("%s: %s", sql, err ? err : "?");
}

static fx *fx_new(int max_attempts)
{
    fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    now_s = T0;
    tu_db_path(f->path, sizeof f->path, "outbox");
    f->pub = cap_open();
    open_db(f, max_attempts, f->pub);
    assert_int_equal(sqlite3_open(f->path, &f->peek), SQLITE_OK);
    sqlite3_busy_timeout(f->peek, 10000);
    exec(f->peek, "INSERT INTO email_metadata (internal_id, message_id, subject)"
                  " VALUES (7, '<m7@example.com>', 'seven'), (8, '<m8@example.com>', 'eight')");
    return f;
}

static void fx_free(fx *f)
{
    sqlite3_close(f->peek);
    mae_db_close(f->db);
    mae_publisher_close(f->pub, 5000);
    tu_remove_db(f->path);
    free(f);
}

static int setup(void **state)
{
    *state = fx_new(5);
    return 0;
}

static int teardown(void **state)
{
    fx_free(*state);
    return 0;
}

/* Every column of one row as text: quote() shows NULL and text apart. */
static char *row_text(fx *f, int64_t id)
{
    sqlite3_stmt *st;
    assert_int_equal(
        sqlite3_prepare_v2(f->peek,
                           "SELECT outbox_id || '|' || internal_id || '|' || quote(op_type) || '|'"
                           " || quote(target) || '|' || quote(payload_json) || '|' || quote(source)"
                           " || '|' || status || '|' || attempts || '|' || quote(last_error) || '|'"
                           " || CASE WHEN next_retry_at IS NULL THEN 'NULL'"
                           " ELSE printf('%.6f', next_retry_at) END || '|'"
                           " || printf('%.6f', created_at) || '|' || printf('%.6f', updated_at)"
                           " FROM email_outbox WHERE outbox_id = ?1",
                           -1, &st, NULL),
        SQLITE_OK);
    sqlite3_bind_int64(st, 1, id);
    char *s = NULL;
    if (sqlite3_step(st) == SQLITE_ROW)
        s = strdup((const char *)sqlite3_column_text(st, 0));
    else
        s = strdup("(no row)");
    sqlite3_finalize(st);
    return s;
}

#define ASSERT_ROW(f, id, expected)          \
    do {                                     \
        char *r_ = row_text((f), (id));      \
        assert_string_equal(r_, (expected)); \
        free(r_);                            \
    } while (0)

/* The whole table as text, to compare before and after a refusal. */
static char *table_text(fx *f)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(f->peek,
                                        "SELECT COUNT(*) || ':' || COALESCE(group_concat(outbox_id"
                                        " || quote(op_type) || quote(target) || quote(payload_json)"
                                        " || quote(source) || status || attempts"
                                        " || quote(last_error) || quote(next_retry_at)"
                                        " || quote(updated_at), ';'), '')"
                                        " FROM (SELECT * FROM email_outbox ORDER BY outbox_id)",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    char *s = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return s;
}

static int64_t count_rows(fx *f, const char *where)
{
    char sql[256];
    sqlite3_stmt *st;
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM email_outbox WHERE %s", where);
    assert_int_equal(sqlite3_prepare_v2(f->peek, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

static int64_t enqueue_ok(fx *f, int64_t mail, const char *op, const char *target,
                          const char *payload, const char *source, bool expect_new)
{
    int64_t id = 0;
    bool inserted = !expect_new;
    assert_int_equal(mae_outbox_enqueue(f->db, mail, op, target, payload, source, &id, &inserted),
                     MAE_OK);
    assert_true(id > 0);
    assert_int_equal(inserted, expect_new);
    return id;
}

/* ---- enqueue -------------------------------------------------------------- */

static void test_enqueue_inserts_and_publishes(void **state)
{
    fx *f = *state;
    int64_t id = enqueue_ok(f, 7, "flag", "notion", "{ \"flagged\" : true, \"b\":{\"z\":1,\"a\":2} }",
                            MAE_SOURCE_CLI, true);
    assert_int_equal(id, 1);
    ASSERT_ROW(f, id, "1|7|'flag'|'notion'|'{\"b\":{\"a\":2,\"z\":1},\"flagged\":true}'|'cli'|pending"
                      "|0|NULL|NULL|1716096000.000000|1716096000.000000");
    assert_int_equal(cap_count(f->pub), 1);
    cap_assert_line(cap_line(f->pub, 0),
                    "{\"event_type\":\"outbox.enqueued\",\"ts\":TS,\"internal_id\":7,\"data\":"
                    "{\"outbox_id\":1,\"op_type\":\"flag\",\"target\":\"notion\",\"source\":\"cli\"},"
                    "\"source\":\"outbox\"}");
    assert_string_equal(mae_db_errmsg(f->db), "");

    /* No source: NULL in the row, null in the event. NULL out-params are fine. */
    now_s = T0 + 1;
    assert_int_equal(mae_outbox_enqueue(f->db, 8, "move", "mailapp", "{}", NULL, NULL, NULL), MAE_OK);
    ASSERT_ROW(f, 2, "2|8|'move'|'mailapp'|'{}'|NULL|pending|0|NULL|NULL|1716096001.000000"
                     "|1716096001.000000");
    assert_int_equal(cap_count(f->pub), 2);
    cap_assert_line(cap_line(f->pub, 1),
                    "{\"event_type\":\"outbox.enqueued\",\"ts\":TS,\"internal_id\":8,\"data\":"
                    "{\"outbox_id\":2,\"op_type\":\"move\",\"target\":\"mailapp\",\"source\":null},"
                    "\"source\":\"outbox\"}");
}

static void test_enqueue_merges_into_pending_silently(void **state)
{
    fx *f = *state;
    int64_t id = enqueue_ok(f, 7, "flag", "notion", "{\"flagged\":true,\"note\":\"a\",\"keep\":1}",
                            MAE_SOURCE_CLI, true);
    cap_clear(f->pub);

    /* Later keys win, old kept, null removes; source replaced when given. */
    now_s = T0 + 10;
    int64_t again = enqueue_ok(f, 7, "flag", "notion",
                               "{\"note\":null,\"flagged\":false,\"extra\":{\"y\":2,\"x\":1}}",
                               MAE_SOURCE_AI_REVIEWED_HANDLER, false);
    assert_int_equal(again, id);
    ASSERT_ROW(f, id, "1|7|'flag'|'notion'|'{\"extra\":{\"x\":1,\"y\":2},\"flagged\":false,\"keep\":1}'"
                      "|'ai_reviewed_handler'|pending|0|NULL|NULL|1716096000.000000"
                      "|1716096010.000000");

    /* No source given: the old one stays. */
    now_s = T0 + 20;
    again = enqueue_ok(f, 7, "flag", "notion", "{\"extra\":{\"x\":null}}", NULL, false);
    assert_int_equal(again, id);
    ASSERT_ROW(f, id, "1|7|'flag'|'notion'|'{\"extra\":{\"y\":2},\"flagged\":false,\"keep\":1}'"
                      "|'ai_reviewed_handler'|pending|0|NULL|NULL|1716096000.000000"
                      "|1716096020.000000");
    /* A merge publishes nothing. */
    assert_int_equal(cap_count(f->pub), 0);
    assert_int_equal(count_rows(f, "1"), 1);

    /* Another op_type, target or mail is another intent. */
    assert_true(enqueue_ok(f, 7, "read", "notion", "{}", NULL, true) != id);
    assert_true(enqueue_ok(f, 7, "flag", "mailapp", "{}", NULL, true) != id);
    assert_true(enqueue_ok(f, 8, "flag", "notion", "{}", NULL, true) != id);
    assert_int_equal(count_rows(f, "1"), 4);
    assert_int_equal(cap_count(f->pub), 3);
}

/* Once the pending intent moved on, the same intent is a new row. */
static void test_enqueue_after_pending_moved_on_inserts_anew(void **state)
{
    fx *f = *state;
    int64_t first = enqueue_ok(f, 7, "flag", "notion", "{\"a\":1}", NULL, true);
    assert_int_equal(mae_outbox_mark_processing(f->db, first), MAE_OK);
    int64_t second = enqueue_ok(f, 7, "flag", "notion", "{\"b\":2}", NULL, true);
    assert_int_equal(second, first + 1);
    ASSERT_ROW(f, first, "1|7|'flag'|'notion'|'{\"a\":1}'|NULL|processing|0|NULL|NULL"
                         "|1716096000.000000|1716096000.000000");
    ASSERT_ROW(f, second, "2|7|'flag'|'notion'|'{\"b\":2}'|NULL|pending|0|NULL|NULL"
                          "|1716096000.000000|1716096000.000000");
    /* failed is not pending either. */
    assert_int_equal(mae_outbox_mark_failed(f->db, second, "x", NULL), MAE_OK);
    int64_t third = enqueue_ok(f, 7, "flag", "notion", "{\"c\":3}", NULL, true);
    assert_int_equal(mae_outbox_mark_done(f->db, third), MAE_OK);
    int64_t fourth = enqueue_ok(f, 7, "flag", "notion", "{\"d\":4}", NULL, true);
    assert_int_equal(fourth, third + 1);
    assert_int_equal(count_rows(f, "status='pending'"), 1);
    size_t n = cap_count(f->pub);
    /* 4 enqueued, 1 failed, 1 done. */
    assert_int_equal(n, 6);
}

static void test_notion_webhook_to_notion_is_skipped(void **state)
{
    fx *f = *state;
    int64_t id = 99;
    bool inserted = true;
    assert_int_equal(mae_outbox_enqueue(f->db, 7, "flag", "notion", "{\"flagged\":true}",
                                        MAE_SOURCE_NOTION_WEBHOOK, &id, &inserted),
                     MAE_SKIPPED);
    assert_int_equal(id, -1);
    assert_true(inserted); /* untouched */
    assert_int_equal(count_rows(f, "1"), 0);
    assert_int_equal(cap_count(f->pub), 0);
    assert_int_equal(mae_outbox_enqueue(f->db, 7, "flag", "notion", "{}", MAE_SOURCE_NOTION_WEBHOOK,
                                        NULL, NULL),
                     MAE_SKIPPED);
    /* Arguments are checked first: a bad payload is an error whatever its
     * source, and the out-parameter stays untouched. */
    id = 99;
    assert_int_equal(mae_outbox_enqueue(f->db, 7, "flag", "notion", "[1]",
                                        MAE_SOURCE_NOTION_WEBHOOK, &id, NULL),
                     MAE_EINVAL);
    assert_int_equal(id, 99);
    assert_non_null(strstr(mae_db_errmsg(f->db), "payload_json"));
    /* Also when a pending twin exists: nothing merged into it. */
    int64_t twin = enqueue_ok(f, 7, "flag", "notion", "{\"a\":1}", "cli", true);
    assert_int_equal(mae_outbox_enqueue(f->db, 7, "flag", "notion", "{\"a\":2}",
                                        MAE_SOURCE_NOTION_WEBHOOK, &id, NULL),
                     MAE_SKIPPED);
    assert_int_equal(id, -1);
    ASSERT_ROW(f, twin, "1|7|'flag'|'notion'|'{\"a\":1}'|'cli'|pending|0|NULL|NULL"
                        "|1716096000.000000|1716096000.000000");
    /* A Notion change may still go to Mail.app. */
    id = enqueue_ok(f, 7, "flag", "mailapp", "{\"a\":1}", MAE_SOURCE_NOTION_WEBHOOK, true);
    ASSERT_ROW(f, id, "2|7|'flag'|'mailapp'|'{\"a\":1}'|'notion_webhook'|pending|0|NULL|NULL"
                      "|1716096000.000000|1716096000.000000");
    assert_int_equal(cap_count(f->pub), 2);
    cap_assert_line(cap_line(f->pub, 1),
                    "{\"event_type\":\"outbox.enqueued\",\"ts\":TS,\"internal_id\":7,\"data\":"
                    "{\"outbox_id\":2,\"op_type\":\"flag\",\"target\":\"mailapp\",\"source\":"
                    "\"notion_webhook\"},\"source\":\"outbox\"}");
}

static void test_enqueue_for_missing_mail_is_enotfound(void **state)
{
    fx *f = *state;
    int64_t id = 42;
    bool inserted = false;
    assert_int_equal(mae_outbox_enqueue(f->db, 999, "flag", "notion", "{}", "cli", &id, &inserted),
                     MAE_ENOTFOUND);
    assert_int_equal(id, 42);
    assert_true(strlen(mae_db_errmsg(f->db)) > 0);
    assert_int_equal(mae_outbox_enqueue(f->db, INT64_MAX, "flag", "notion", "{}", "cli", &id, NULL),
                     MAE_ENOTFOUND);
    assert_int_equal(count_rows(f, "1"), 0);
    assert_int_equal(cap_count(f->pub), 0);
    /* The handle works on afterwards. */
    enqueue_ok(f, 7, "flag", "notion", "{}", "cli", true);
    assert_string_equal(mae_db_errmsg(f->db), "");
}

/* ---- state machine -------------------------------------------------------- */

static void set_status(fx *f, int64_t id, const char *status)
{
    char sql[160];
    snprintf(sql, sizeof sql, "UPDATE email_outbox SET status = '%s' WHERE outbox_id = %lld",
             status, (long long)id);
    exec(f->peek, sql);
}

static void test_mark_processing_only_from_pending_or_failed(void **state)
{
    fx *f = *state;
    int64_t id = enqueue_ok(f, 7, "flag", "notion", "{}", NULL, true);
    cap_clear(f->pub);
    now_s = T0 + 5;
    assert_int_equal(mae_outbox_mark_processing(f->db, id), MAE_OK);
    ASSERT_ROW(f, id, "1|7|'flag'|'notion'|'{}'|NULL|processing|0|NULL|NULL|1716096000.000000"
                      "|1716096005.000000");
    now_s = T0 + 6;
    assert_int_equal(mae_outbox_mark_processing(f->db, id), MAE_SKIPPED);
    ASSERT_ROW(f, id, "1|7|'flag'|'notion'|'{}'|NULL|processing|0|NULL|NULL|1716096000.000000"
                      "|1716096005.000000");

    /* failed -> processing keeps the error and attempts. */
    assert_int_equal(mae_outbox_mark_failed(f->db, id, "timeout", NULL), MAE_OK);
    cap_clear(f->pub);
    now_s = T0 + 7;
    assert_int_equal(mae_outbox_mark_processing(f->db, id), MAE_OK);
    ASSERT_ROW(f, id, "1|7|'flag'|'notion'|'{}'|NULL|processing|1|'timeout'|1716096066.000000"
                      "|1716096000.000000|1716096007.000000");

    /* done and dead_letter refuse. */
    assert_int_equal(mae_outbox_mark_done(f->db, id), MAE_OK);
    cap_clear(f->pub);
    char *before = table_text(f);
    assert_int_equal(mae_outbox_mark_processing(f->db, id), MAE_ESTATE);
    assert_non_null(strstr(mae_db_errmsg(f->db), "done"));
    char *after = table_text(f);
    assert_string_equal(before, after);
    free(before);
    free(after);
    set_status(f, id, "dead_letter");
    before = table_text(f);
    assert_int_equal(mae_outbox_mark_processing(f->db, id), MAE_ESTATE);
    assert_int_equal(mae_outbox_mark_processing(f->db, 12345), MAE_ENOTFOUND);
    after = table_text(f);
    assert_string_equal(before, after);
    free(before);
    free(after);
    /* Processing publishes nothing, ever. */
    assert_int_equal(cap_count(f->pub), 0);
}

static void test_mark_done_publishes_once_and_refuses_dead_letters(void **state)
{
    fx *f = *state;
    static const char *const from[] = {"pending", "processing", "failed"};
    for (int i = 0; i < 3; i++) {
        int64_t id = enqueue_ok(f, 7, from[i], "mailapp", "{}", NULL, true);
        if (i == 1)
            assert_int_equal(mae_outbox_mark_processing(f->db, id), MAE_OK);
        if (i == 2)
            assert_int_equal(mae_outbox_mark_failed(f->db, id, "boom", NULL), MAE_OK);
        cap_clear(f->pub);
        now_s = T0 + 100 + i;
        assert_int_equal(mae_outbox_mark_done(f->db, id), MAE_OK);
        char expected[256];
        snprintf(expected, sizeof expected,
                 "%lld|7|'%s'|'mailapp'|'{}'|NULL|done|%d|NULL|NULL|1716096000.000000"
                 "|%.6f",
                 (long long)id, from[i], i == 2 ? 1 : 0, T0 + 100 + i);
        ASSERT_ROW(f, id, expected);
        assert_int_equal(cap_count(f->pub), 1);
        snprintf(expected, sizeof expected,
                 "{\"event_type\":\"outbox.done\",\"ts\":TS,\"internal_id\":7,\"data\":"
                 "{\"outbox_id\":%lld},\"source\":\"outbox\"}",
                 (long long)id);
        cap_assert_line(cap_line(f->pub, 0), expected);

        /* Again: reported, nothing changes, nothing published. */
        char *before = table_text(f);
        now_s += 1;
        assert_int_equal(mae_outbox_mark_done(f->db, id), MAE_SKIPPED);
        char *after = table_text(f);
        assert_string_equal(before, after);
        free(before);
        free(after);
        assert_int_equal(cap_count(f->pub), 1);
        now_s = T0;
    }
    /* A dead letter is refused, a missing row too. */
    int64_t id = enqueue_ok(f, 8, "flag", "notion", "{}", NULL, true);
    set_status(f, id, "dead_letter");
    cap_clear(f->pub);
    char *before = table_text(f);
    assert_int_equal(mae_outbox_mark_done(f->db, id), MAE_ESTATE);
    assert_non_null(strstr(mae_db_errmsg(f->db), "dead_letter"));
    assert_int_equal(mae_outbox_mark_done(f->db, 777), MAE_ENOTFOUND);
    assert_non_null(strstr(mae_db_errmsg(f->db), "777"));
    char *after = table_text(f);
    assert_string_equal(before, after);
    free(before);
    free(after);
    assert_int_equal(cap_count(f->pub), 0);
}

/* The schedule of docs/stores.md: 60, 300, 900, 3600 s; the 5th failure is the
 * dead letter. Each step checked in the row, the outcome and the event. */
static void test_failures_follow_the_schedule_then_dead_letter(void **state)
{
    fx *f = *state;
    static const double delay[] = {60, 300, 900, 3600};
    int64_t id = enqueue_ok(f, 7, "flag", "notion", "{\"flagged\":true}", "cli", true);
    cap_clear(f->pub);
    for (int n = 1; n <= 4; n++) {
        mae_retry_outcome o = {0};
        now_s = T0 + 1000.0 * n;
        if (n % 2 == 0)
            assert_int_equal(mae_outbox_mark_processing(f->db, id), MAE_OK);
        char err[32];
        snprintf(err, sizeof err, "notion 502 #%d", n);
        assert_int_equal(mae_outbox_mark_failed(f->db, id, err, &o), MAE_OK);
        assert_int_equal(o.attempts, n);
        assert_false(o.terminal);
        assert_true(o.next_retry_at == now_s + delay[n - 1]);
        char expected[512];
        snprintf(expected, sizeof expected,
                 "1|7|'flag'|'notion'|'{\"flagged\":true}'|'cli'|failed|%d|'%s'|%.6f"
                 "|1716096000.000000|%.6f",
                 n, err, now_s + delay[n - 1], now_s);
        ASSERT_ROW(f, id, expected);
        assert_int_equal(cap_count(f->pub), (size_t)n);
        snprintf(expected, sizeof expected,
                 "{\"event_type\":\"outbox.failed\",\"ts\":TS,\"internal_id\":7,\"data\":"
                 "{\"outbox_id\":1,\"attempts\":%d,\"last_error\":\"%s\",\"next_retry_at\":%.6f},"
                 "\"source\":\"outbox\"}",
                 n, err, now_s + delay[n - 1]);
        cap_assert_line(cap_line(f->pub, (size_t)n - 1), expected);
    }
    mae_retry_outcome o = {0};
    now_s = T0 + 5000;
    assert_int_equal(mae_outbox_mark_failed(f->db, id, "gone for good", &o), MAE_OK);
    assert_int_equal(o.attempts, 5);
    assert_true(o.terminal);
    assert_true(o.next_retry_at == 0);
    ASSERT_ROW(f, id, "1|7|'flag'|'notion'|'{\"flagged\":true}'|'cli'|dead_letter|5|'gone for good'"
                      "|NULL|1716096000.000000|1716101000.000000");
    assert_int_equal(cap_count(f->pub), 5);
    cap_assert_line(cap_line(f->pub, 4),
                    "{\"event_type\":\"outbox.dead_letter\",\"ts\":TS,\"internal_id\":7,\"data\":"
                    "{\"outbox_id\":1,\"attempts\":5,\"last_error\":\"gone for good\"},"
                    "\"source\":\"outbox\"}");

    /* A dead letter and a done row cannot fail; a missing row is an error. */
    char *before = table_text(f);
    o.attempts = 1234;
    assert_int_equal(mae_outbox_mark_failed(f->db, id, "again", &o), MAE_ESTATE);
    assert_int_equal(o.attempts, 1234); /* out written only on success */
    assert_int_equal(mae_outbox_mark_failed(f->db, 4242, "again", &o), MAE_ENOTFOUND);
    char *after = table_text(f);
    assert_string_equal(before, after);
    free(before);
    free(after);
    int64_t done = enqueue_ok(f, 8, "flag", "notion", "{}", NULL, true);
    assert_int_equal(mae_outbox_mark_done(f->db, done), MAE_OK);
    cap_clear(f->pub);
    assert_int_equal(mae_outbox_mark_failed(f->db, done, "late", NULL), MAE_ESTATE);
    assert_int_equal(count_rows(f, "status='done' AND attempts=0 AND last_error IS NULL"), 1);
    assert_int_equal(cap_count(f->pub), 0);
}

static void test_attempt_limit_is_configurable(void **state)
{
    (void)state;
    /* Limit 2: the second failure is terminal. */
    fx *f = fx_new(2);
    int64_t id = enqueue_ok(f, 7, "flag", "notion", "{}", NULL, true);
    mae_retry_outcome o;
    assert_int_equal(mae_outbox_mark_failed(f->db, id, "a", &o), MAE_OK);
    assert_false(o.terminal);
    assert_int_equal(mae_outbox_mark_failed(f->db, id, "b", &o), MAE_OK);
    assert_true(o.terminal);
    assert_int_equal(o.attempts, 2);
    ASSERT_ROW(f, id, "1|7|'flag'|'notion'|'{}'|NULL|dead_letter|2|'b'|NULL|1716096000.000000"
                      "|1716096000.000000");
    fx_free(f);

    /* Limit 1: the first failure is terminal. */
    f = fx_new(1);
    id = enqueue_ok(f, 7, "flag", "notion", "{}", NULL, true);
    assert_int_equal(mae_outbox_mark_failed(f->db, id, "a", &o), MAE_OK);
    assert_true(o.terminal);
    assert_int_equal(o.attempts, 1);
    fx_free(f);

    /* Limit 8: the schedule stays at 7200 s after the 5th failure. */
    f = fx_new(8);
    id = enqueue_ok(f, 7, "flag", "notion", "{}", NULL, true);
    static const double delay[] = {60, 300, 900, 3600, 7200, 7200, 7200};
    for (int n = 1; n <= 7; n++) {
        assert_int_equal(mae_outbox_mark_failed(f->db, id, "x", &o), MAE_OK);
        assert_int_equal(o.attempts, n);
        assert_false(o.terminal);
        assert_true(o.next_retry_at == T0 + delay[n - 1]);
    }
    assert_int_equal(mae_outbox_mark_failed(f->db, id, "x", &o), MAE_OK);
    assert_true(o.terminal);
    assert_int_equal(o.attempts, 8);
    assert_int_equal(count_rows(f, "status='dead_letter' AND attempts=8 AND next_retry_at IS NULL"),
                     1);
    assert_int_equal(cap_count(f->pub), 9); /* enqueued + 7 failed + dead_letter */
    fx_free(f);
}

static void test_admin_retry_puts_dead_letter_back_to_pending(void **state)
{
    fx *f = *state;
    int64_t id = enqueue_ok(f, 7, "flag", "notion", "{\"a\":1}", "cli", true);
    for (int i = 0; i < 5; i++)
        assert_int_equal(mae_outbox_mark_failed(f->db, id, "boom", NULL), MAE_OK);
    cap_clear(f->pub);
    now_s = T0 + 500;
    assert_int_equal(mae_outbox_retry_dead_letter(f->db, id), MAE_OK);
    ASSERT_ROW(f, id, "1|7|'flag'|'notion'|'{\"a\":1}'|'cli'|pending|0|NULL|NULL"
                      "|1716096000.000000|1716096500.000000");
    assert_int_equal(cap_count(f->pub), 0);
    /* Not a dead letter any more. */
    assert_int_equal(mae_outbox_retry_dead_letter(f->db, id), MAE_ESTATE);
    assert_non_null(strstr(mae_db_errmsg(f->db), "not a dead letter"));
    assert_int_equal(mae_outbox_retry_dead_letter(f->db, 31337), MAE_ENOTFOUND);
    /* Back in the queue: an enqueue merges into it. */
    assert_int_equal(enqueue_ok(f, 7, "flag", "notion", "{\"b\":2}", NULL, false), id);

    /* A pending twin blocks the return to pending. */
    for (int i = 0; i < 5; i++)
        assert_int_equal(mae_outbox_mark_failed(f->db, id, "boom", NULL), MAE_OK);
    int64_t twin = enqueue_ok(f, 7, "flag", "notion", "{\"c\":3}", NULL, true);
    cap_clear(f->pub);
    char *before = table_text(f);
    assert_int_equal(mae_outbox_retry_dead_letter(f->db, id), MAE_ESTATE);
    char num[32];
    snprintf(num, sizeof num, "%lld", (long long)twin);
    assert_non_null(strstr(mae_db_errmsg(f->db), num));
    assert_non_null(strstr(mae_db_errmsg(f->db), "pending"));
    char *after = table_text(f);
    assert_string_equal(before, after);
    free(before);
    free(after);
    /* Once the twin is done, it can go back. */
    assert_int_equal(mae_outbox_mark_done(f->db, twin), MAE_OK);
    assert_int_equal(mae_outbox_retry_dead_letter(f->db, id), MAE_OK);
    assert_int_equal(count_rows(f, "status='pending'"), 1);
    assert_int_equal(cap_count(f->pub), 1); /* only the twin's done */
}

/* Error texts: stored cut to 500 code points, published cut to 200, invalid
 * UTF-8 repaired in both. */
static void test_error_stored_500_and_published_200_code_points(void **state)
{
    fx *f = *state;
    const size_t big = 1u << 20;
    char *err = malloc(big + 1);
    assert_non_null(err);
    /* "é" is two bytes: cuts must count code points, not bytes. */
    for (size_t i = 0; i + 1 < big; i += 2) {
        err[i] = '\xc3';
        err[i + 1] = '\xa9';
    }
    err[big] = '\0';
    int64_t id = enqueue_ok(f, 7, "flag", "notion", "{}", NULL, true);
    cap_clear(f->pub);
    assert_int_equal(mae_outbox_mark_failed(f->db, id, err, NULL), MAE_OK);

    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(f->peek,
                                        "SELECT last_error, length(last_error) FROM email_outbox"
                                        " WHERE outbox_id = 1",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 1), 500); /* SQLite counts characters */
    assert_int_equal(sqlite3_column_bytes(st, 0), 1000);
    assert_memory_equal(sqlite3_column_text(st, 0), err, 1000);
    sqlite3_finalize(st);

    char expected[1024];
    char cut[401];
    memcpy(cut, err, 400);
    cut[400] = '\0';
    snprintf(expected, sizeof expected,
             "{\"event_type\":\"outbox.failed\",\"ts\":TS,\"internal_id\":7,\"data\":"
             "{\"outbox_id\":1,\"attempts\":1,\"last_error\":\"%s\",\"next_retry_at\":"
             "1716096060.000000},\"source\":\"outbox\"}",
             cut);
    assert_int_equal(cap_count(f->pub), 1);
    cap_assert_line(cap_line(f->pub, 0), expected);

    /* Invalid UTF-8 and quotes. */
    assert_int_equal(mae_outbox_mark_failed(f->db, id, "bad \xff byte \"q\" '); --", NULL), MAE_OK);
    ASSERT_ROW(f, id, "1|7|'flag'|'notion'|'{}'|NULL|failed|2|'bad \xef\xbf\xbd byte \"q\" ''); --'"
                      "|1716096300.000000|1716096000.000000|1716096000.000000");
    assert_int_equal(cap_count(f->pub), 2);
    cap_assert_line(cap_line(f->pub, 1),
                    "{\"event_type\":\"outbox.failed\",\"ts\":TS,\"internal_id\":7,\"data\":"
                    "{\"outbox_id\":1,\"attempts\":2,\"last_error\":\"bad \xef\xbf\xbd byte \\\"q\\\""
                    " '); --\",\"next_retry_at\":1716096300.000000},\"source\":\"outbox\"}");
    free(err);
}

/* ---- hostile arguments ------------------------------------------------------ */

static void test_bad_arguments_write_and_publish_nothing(void **state)
{
    fx *f = *state;
    static const char sql[] = "'); DROP TABLE email_outbox;--";
    int64_t id = enqueue_ok(f, 7, "flag", "notion", "{\"a\":1}", "cli", true);
    assert_int_equal(mae_outbox_mark_failed(f->db, id, "first", NULL), MAE_OK);
    cap_clear(f->pub);
    char *before = table_text(f);
    int64_t out_id = 555;
    bool inserted = true;
    mae_outbox_row *row = NULL;
    mae_outbox_list *list = NULL;
    mae_outbox_depth depth;

    /* NULL handle. */
    assert_int_equal(mae_outbox_enqueue(NULL, 7, "flag", "notion", "{}", NULL, &out_id, &inserted),
                     MAE_EINVAL);
    assert_int_equal(mae_outbox_mark_processing(NULL, id), MAE_EINVAL);
    assert_int_equal(mae_outbox_mark_done(NULL, id), MAE_EINVAL);
    assert_int_equal(mae_outbox_mark_failed(NULL, id, "x", NULL), MAE_EINVAL);
    assert_int_equal(mae_outbox_retry_dead_letter(NULL, id), MAE_EINVAL);
    assert_int_equal(mae_outbox_get(NULL, id, &row), MAE_EINVAL);
    assert_int_equal(mae_outbox_poll_ready(NULL, NULL, 0, &list), MAE_EINVAL);
    assert_int_equal(mae_outbox_list_for_email(NULL, 7, &list), MAE_EINVAL);
    assert_int_equal(mae_outbox_list_dead_letters(NULL, 0, &list), MAE_EINVAL);
    assert_int_equal(mae_outbox_queue_depth(NULL, &depth), MAE_EINVAL);
    mae_outbox_row_free(NULL);
    mae_outbox_list_free(NULL);

    /* Bad ids. */
    static const int64_t bad_ids[] = {0, -1, MAE_NO_ID};
    for (size_t i = 0; i < 3; i++) {
        int64_t b = bad_ids[i];
        assert_int_equal(mae_outbox_enqueue(f->db, b, "flag", "notion", "{}", NULL, &out_id, NULL),
                         MAE_EINVAL);
        assert_non_null(strstr(mae_db_errmsg(f->db), "internal_id"));
        assert_int_equal(mae_outbox_mark_processing(f->db, b), MAE_EINVAL);
        assert_int_equal(mae_outbox_mark_done(f->db, b), MAE_EINVAL);
        assert_int_equal(mae_outbox_mark_failed(f->db, b, "x", NULL), MAE_EINVAL);
        assert_int_equal(mae_outbox_retry_dead_letter(f->db, b), MAE_EINVAL);
        assert_int_equal(mae_outbox_get(f->db, b, &row), MAE_EINVAL);
        assert_int_equal(mae_outbox_list_for_email(f->db, b, &list), MAE_EINVAL);
    }
    assert_int_equal(mae_outbox_enqueue(f->db, INT64_MAX, "flag", "notion", "{}", NULL, &out_id,
                                        NULL),
                     MAE_ENOTFOUND);
    assert_int_equal(mae_outbox_mark_processing(f->db, INT64_MAX), MAE_ENOTFOUND);
    assert_int_equal(mae_outbox_mark_done(f->db, INT64_MAX), MAE_ENOTFOUND);
    assert_int_equal(mae_outbox_mark_failed(f->db, INT64_MAX, "x", NULL), MAE_ENOTFOUND);
    assert_int_equal(mae_outbox_retry_dead_letter(f->db, INT64_MAX), MAE_ENOTFOUND);
    assert_int_equal(mae_outbox_get(f->db, INT64_MAX, &row), MAE_ENOTFOUND);

    /* Bad strings. */
    assert_int_equal(mae_outbox_enqueue(f->db, 7, NULL, "notion", "{}", NULL, NULL, NULL), MAE_EINVAL);
    assert_non_null(strstr(mae_db_errmsg(f->db), "op_type"));
    assert_int_equal(mae_outbox_enqueue(f->db, 7, "", "notion", "{}", NULL, NULL, NULL), MAE_EINVAL);
    static const char *const bad_targets[] = {NULL, "", "Notion", "notion ", " mailapp", "mail",
                                              "notionx", sql};
    for (size_t i = 0; i < sizeof bad_targets / sizeof bad_targets[0]; i++) {
        assert_int_equal(mae_outbox_enqueue(f->db, 7, "flag", bad_targets[i], "{}", NULL, NULL, NULL),
                         MAE_EINVAL);
        assert_non_null(strstr(mae_db_errmsg(f->db), "target"));
    }
    assert_int_equal(mae_outbox_enqueue(f->db, 7, "flag", "notion", "{}", "", NULL, NULL), MAE_EINVAL);
    assert_non_null(strstr(mae_db_errmsg(f->db), "source"));
    static const char *const bad_payloads[] = {NULL,  "",   "[]", "[{\"a\":1}]", "\"s\"", "1",
                                               "null", "{",  "{\"a\":1} x", "{\"a\":1}{}", sql,
                                               "{'a':1}", "{\"a\":\"\\u0000\"}"};
    for (size_t i = 0; i < sizeof bad_payloads / sizeof bad_payloads[0]; i++) {
        assert_int_equal(mae_outbox_enqueue(f->db, 7, "flag", "notion", bad_payloads[i], "cli",
                                            &out_id, &inserted),
                         MAE_EINVAL);
        assert_non_null(strstr(mae_db_errmsg(f->db), "payload"));
    }
    /* A payload too deep. */
    char deep[1200];
    size_t p = 0;
    for (int i = 0; i < 100; i++)
        p += (size_t)sprintf(deep + p, "{\"a\":");
    deep[p++] = '1';
    for (int i = 0; i < 100; i++)
        deep[p++] = '}';
    deep[p] = '\0';
    assert_int_equal(mae_outbox_enqueue(f->db, 7, "flag", "notion", deep, "cli", NULL, NULL),
                     MAE_EINVAL);
    assert_int_equal(mae_outbox_mark_failed(f->db, id, NULL, NULL), MAE_EINVAL);
    assert_non_null(strstr(mae_db_errmsg(f->db), "error"));
    assert_int_equal(mae_outbox_mark_failed(f->db, id, "", NULL), MAE_EINVAL);
    assert_int_equal(mae_outbox_poll_ready(f->db, "Notion", 0, &list), MAE_EINVAL);
    assert_int_equal(mae_outbox_poll_ready(f->db, sql, 0, &list), MAE_EINVAL);
    assert_int_equal(mae_outbox_get(f->db, id, NULL), MAE_EINVAL);
    assert_int_equal(mae_outbox_poll_ready(f->db, NULL, 0, NULL), MAE_EINVAL);
    assert_int_equal(mae_outbox_list_for_email(f->db, 7, NULL), MAE_EINVAL);
    assert_int_equal(mae_outbox_list_dead_letters(f->db, 0, NULL), MAE_EINVAL);
    assert_int_equal(mae_outbox_queue_depth(f->db, NULL), MAE_EINVAL);

    /* Nothing written, nothing published, out-params untouched. */
    char *after = table_text(f);
    assert_string_equal(before, after);
    free(before);
    free(after);
    assert_int_equal(out_id, 555);
    assert_true(inserted);
    assert_null(row);
    assert_null(list);
    assert_int_equal(cap_count(f->pub), 0);

    /* SQL and quotes in every text field are data. */
    char payload[128];
    snprintf(payload, sizeof payload, "{\"%s\":\"%s\"}", "'); DROP TABLE email_outbox;--",
             "x\\\"'; --");
    int64_t evil = enqueue_ok(f, 7, sql, "mailapp", payload, sql, true);
    assert_int_equal(mae_outbox_mark_failed(f->db, evil, sql, NULL), MAE_OK);
    ASSERT_ROW(f, evil, "2|7|'''); DROP TABLE email_outbox;--'|'mailapp'"
                        "|'{\"''); DROP TABLE email_outbox;--\":\"x\\\"''; --\"}'"
                        "|'''); DROP TABLE email_outbox;--'|failed|1"
                        "|'''); DROP TABLE email_outbox;--'|1716096060.000000"
                        "|1716096000.000000|1716096000.000000");
    assert_int_equal(cap_count(f->pub), 2);
    cap_assert_line(cap_line(f->pub, 0),
                    "{\"event_type\":\"outbox.enqueued\",\"ts\":TS,\"internal_id\":7,\"data\":"
                    "{\"outbox_id\":2,\"op_type\":\"'); DROP TABLE email_outbox;--\",\"target\":"
                    "\"mailapp\",\"source\":\"'); DROP TABLE email_outbox;--\"},"
                    "\"source\":\"outbox\"}");
    /* Invalid UTF-8 in op_type and source is stored and published repaired. */
    int64_t bad = enqueue_ok(f, 8, "fl\xffg", "notion", "{\"v\":\"\xfe\"}", "s\xc3", true);
    ASSERT_ROW(f, bad, "3|8|'fl\xef\xbf\xbdg'|'notion'|'{\"v\":\"\xef\xbf\xbd\"}'|'s\xef\xbf\xbd'"
                       "|pending|0|NULL|NULL|1716096000.000000|1716096000.000000");
    /* The same broken op_type finds its pending twin. */
    assert_int_equal(enqueue_ok(f, 8, "fl\xffg", "notion", "{}", NULL, false), bad);
    assert_int_equal(count_rows(f, "1"), 3);
}

/* ---- caller transactions -------------------------------------------------- */

static void test_events_wait_for_the_callers_commit(void **state)
{
    fx *f = *state;
    assert_int_equal(mae_db_begin(f->db), MAE_OK);
    int64_t id = enqueue_ok(f, 7, "flag", "notion", "{\"a\":1}", "cli", true);
    assert_int_equal(enqueue_ok(f, 7, "flag", "notion", "{\"b\":1}", NULL, false), id);
    assert_int_equal(mae_outbox_mark_done(f->db, id), MAE_OK);
    assert_int_equal(cap_count(f->pub), 0); /* held until the commit */
    assert_int_equal(mae_db_rollback(f->db), MAE_OK);
    assert_int_equal(count_rows(f, "1"), 0);
    assert_int_equal(cap_count(f->pub), 0);

    assert_int_equal(mae_db_begin(f->db), MAE_OK);
    id = enqueue_ok(f, 7, "flag", "notion", "{\"a\":1}", "cli", true);
    assert_int_equal(mae_outbox_mark_failed(f->db, id, "x", NULL), MAE_OK);
    /* A refusal inside the transaction does not spoil it. */
    assert_int_equal(mae_outbox_mark_processing(f->db, 999), MAE_ENOTFOUND);
    assert_int_equal(cap_count(f->pub), 0);
    assert_int_equal(mae_db_commit(f->db), MAE_OK);
    assert_int_equal(cap_count(f->pub), 2);
    assert_non_null(strstr(cap_line(f->pub, 0), "\"outbox.enqueued\""));
    assert_non_null(strstr(cap_line(f->pub, 1), "\"outbox.failed\""));
    assert_int_equal(count_rows(f, "status='failed'"), 1);
}

/* Without a publisher, state is written all the same. */
static void test_without_publisher_writes_state_only(void **state)
{
    fx *f = *state;
    mae_db_close(f->db);
    open_db(f, 5, NULL);
    int64_t id = enqueue_ok(f, 7, "flag", "notion", "{}", NULL, true);
    assert_int_equal(mae_outbox_mark_failed(f->db, id, "x", NULL), MAE_OK);
    assert_int_equal(mae_outbox_mark_done(f->db, id), MAE_OK);
    assert_int_equal(count_rows(f, "status='done'"), 1);
    assert_int_equal(cap_count(f->pub), 0);
}

/* ---- reads ---------------------------------------------------------------- */

static void test_get_returns_the_whole_intent(void **state)
{
    fx *f = *state;
    int64_t id = enqueue_ok(f, 7, "flag", "notion", "{\"b\":1,\"a\":2}", "cli", true);
    now_s = T0 + 3;
    assert_int_equal(mae_outbox_mark_failed(f->db, id, "boom", NULL), MAE_OK);
    mae_outbox_row *r = NULL;
    assert_int_equal(mae_outbox_get(f->db, id, &r), MAE_OK);
    assert_int_equal(r->outbox_id, id);
    assert_int_equal(r->internal_id, 7);
    assert_string_equal(r->op_type, "flag");
    assert_string_equal(r->target, "notion");
    assert_string_equal(r->payload_json, "{\"a\":2,\"b\":1}");
    assert_string_equal(r->source, "cli");
    assert_string_equal(r->status, "failed");
    assert_int_equal(r->attempts, 1);
    assert_string_equal(r->last_error, "boom");
    assert_true(r->next_retry_at == T0 + 63);
    assert_true(r->created_at == T0);
    assert_true(r->updated_at == T0 + 3);
    mae_outbox_row_free(r);

    id = enqueue_ok(f, 8, "x", "mailapp", "{}", NULL, true);
    r = NULL;
    assert_int_equal(mae_outbox_get(f->db, id, &r), MAE_OK);
    assert_null(r->source);
    assert_null(r->last_error);
    assert_true(r->next_retry_at == 0);
    mae_outbox_row_free(r);
    r = NULL;
    assert_int_equal(mae_outbox_get(f->db, 99, &r), MAE_ENOTFOUND);
    assert_null(r);
}

static void assert_ids(mae_outbox_list *l, const int64_t *ids, size_t n)
{
    assert_non_null(l);
    assert_int_equal(l->count, n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(l->rows[i].outbox_id, ids[i]);
}

static void test_poll_ready_returns_due_intents_oldest_first(void **state)
{
    fx *f = *state;
    mae_outbox_list *l = NULL;
    assert_int_equal(mae_outbox_poll_ready(f->db, NULL, 0, &l), MAE_OK);
    assert_ids(l, NULL, 0);
    mae_outbox_list_free(l);

    /* Created at T0+10, T0+20, ...; ids 1..6. */
    static const char *const targets[] = {"notion", "mailapp", "notion", "mailapp", "notion", "mailapp"};
    char op[8];
    for (int i = 0; i < 6; i++) {
        now_s = T0 + 10 * (i + 1);
        snprintf(op, sizeof op, "op%d", i);
        enqueue_ok(f, 7, op, targets[i], "{}", NULL, true);
    }
    /* The oldest (1) fails: not due until T0+10+60. 2 is processing, 3 is done,
     * 4 dead. 5 and 6 pending. */
    now_s = T0 + 100;
    assert_int_equal(mae_outbox_mark_failed(f->db, 1, "x", NULL), MAE_OK); /* due T0+160 */
    assert_int_equal(mae_outbox_mark_processing(f->db, 2), MAE_OK);
    assert_int_equal(mae_outbox_mark_done(f->db, 3), MAE_OK);
    set_status(f, 4, "dead_letter");

    now_s = T0 + 159;
    assert_int_equal(mae_outbox_poll_ready(f->db, NULL, 0, &l), MAE_OK);
    assert_ids(l, (int64_t[]){5, 6}, 2);
    mae_outbox_list_free(l);
    now_s = T0 + 160; /* due exactly now */
    assert_int_equal(mae_outbox_poll_ready(f->db, NULL, 0, &l), MAE_OK);
    assert_ids(l, (int64_t[]){1, 5, 6}, 3);
    assert_string_equal(l->rows[0].status, "failed");
    assert_string_equal(l->rows[1].status, "pending");
    mae_outbox_list_free(l);
    assert_int_equal(mae_outbox_poll_ready(f->db, "notion", 0, &l), MAE_OK);
    assert_ids(l, (int64_t[]){1, 5}, 2);
    mae_outbox_list_free(l);
    assert_int_equal(mae_outbox_poll_ready(f->db, "mailapp", -5, &l), MAE_OK);
    assert_ids(l, (int64_t[]){6}, 1);
    mae_outbox_list_free(l);
    assert_int_equal(mae_outbox_poll_ready(f->db, NULL, 2, &l), MAE_OK);
    assert_ids(l, (int64_t[]){1, 5}, 2);
    mae_outbox_list_free(l);

    /* Same created_at: outbox_id breaks the tie. Default limit 20. */
    now_s = T0 + 1000;
    for (int i = 0; i < 30; i++) {
        snprintf(op, sizeof op, "b%d", i);
        enqueue_ok(f, 8, op, "notion", "{}", NULL, true);
    }
    assert_int_equal(mae_outbox_poll_ready(f->db, NULL, 0, &l), MAE_OK);
    assert_int_equal(l->count, 20);
    assert_int_equal(l->rows[0].outbox_id, 1);
    assert_int_equal(l->rows[3].outbox_id, 7);
    for (size_t i = 4; i < 20; i++)
        assert_int_equal(l->rows[i].outbox_id, l->rows[i - 1].outbox_id + 1);
    mae_outbox_list_free(l);
}

static void test_list_for_email_and_dead_letters(void **state)
{
    fx *f = *state;
    mae_outbox_list *l = NULL;
    for (int i = 0; i < 4; i++) {
        now_s = T0 + i;
        char op[8];
        snprintf(op, sizeof op, "op%d", i);
        enqueue_ok(f, i % 2 ? 8 : 7, op, "notion", "{}", NULL, true);
    }
    assert_int_equal(mae_outbox_list_for_email(f->db, 7, &l), MAE_OK);
    assert_ids(l, (int64_t[]){1, 3}, 2);
    assert_int_equal(l->rows[1].internal_id, 7);
    mae_outbox_list_free(l);
    assert_int_equal(mae_outbox_list_for_email(f->db, 12345, &l), MAE_OK);
    assert_ids(l, NULL, 0);
    mae_outbox_list_free(l);

    assert_int_equal(mae_outbox_list_dead_letters(f->db, 0, &l), MAE_OK);
    assert_ids(l, NULL, 0);
    mae_outbox_list_free(l);
    /* Dead-letter 1 at T0+100, then 3 at T0+200: newest first. */
    for (int64_t id = 1; id <= 3; id += 2) {
        now_s = T0 + 100 * (double)(id / 2 + 1);
        for (int k = 0; k < 5; k++)
            assert_int_equal(mae_outbox_mark_failed(f->db, id, "dead", NULL), MAE_OK);
    }
    assert_int_equal(mae_outbox_list_dead_letters(f->db, 0, &l), MAE_OK);
    assert_ids(l, (int64_t[]){3, 1}, 2);
    assert_string_equal(l->rows[0].last_error, "dead");
    assert_int_equal(l->rows[0].attempts, 5);
    mae_outbox_list_free(l);
    assert_int_equal(mae_outbox_list_dead_letters(f->db, 1, &l), MAE_OK);
    assert_ids(l, (int64_t[]){3}, 1);
    mae_outbox_list_free(l);
}

/* Each read names itself and says what is wrong, and leaves *out alone. */
static void test_read_errors_name_the_call(void **state)
{
    fx *f = *state;
    mae_outbox_row *row = (mae_outbox_row *)&row;
    mae_outbox_list *list = (mae_outbox_list *)&list;

    int64_t id = enqueue_ok(f, 7, "flag", "notion", "{\"a\":1}", "cli", true);
    assert_int_equal(mae_outbox_get(f->db, 0, &row), MAE_EINVAL);
    assert_string_equal(mae_db_errmsg(f->db), "invalid argument: mae_outbox_get: outbox_id must be > 0");
    assert_int_equal(mae_outbox_get(f->db, id + 1, &row), MAE_ENOTFOUND);
    char want[128];
    snprintf(want, sizeof want, "no such row: mae_outbox_get: no outbox intent with id %lld",
             (long long)(id + 1));
    assert_string_equal(mae_db_errmsg(f->db), want);
    assert_int_equal(mae_outbox_get(f->db, id, NULL), MAE_EINVAL);
    assert_string_equal(mae_db_errmsg(f->db), "invalid argument: mae_outbox_get: out is NULL");
    assert_ptr_equal(row, (mae_outbox_row *)&row);

    assert_int_equal(mae_outbox_poll_ready(f->db, "mail", 0, &list), MAE_EINVAL);
    assert_string_equal(mae_db_errmsg(f->db), "invalid argument: mae_outbox_poll_ready: target "
                                              "must be NULL, \"mailapp\" or \"notion\"");
    assert_int_equal(mae_outbox_list_for_email(f->db, 0, &list), MAE_EINVAL);
    assert_string_equal(mae_db_errmsg(f->db),
                        "invalid argument: mae_outbox_list_for_email: internal_id must be > 0");
    assert_int_equal(mae_outbox_list_dead_letters(f->db, 0, NULL), MAE_EINVAL);
    assert_string_equal(mae_db_errmsg(f->db),
                        "invalid argument: mae_outbox_list_dead_letters: out is NULL");
    assert_ptr_equal(list, (mae_outbox_list *)&list);
    assert_int_equal(mae_outbox_queue_depth(f->db, NULL), MAE_EINVAL);
    assert_string_equal(mae_db_errmsg(f->db), "invalid argument: mae_outbox_queue_depth: out is NULL");

    row = NULL;
    assert_int_equal(mae_outbox_get(f->db, id, &row), MAE_OK);
    assert_string_equal(mae_db_errmsg(f->db), "");
    assert_string_equal(row->payload_json, "{\"a\":1}");
    mae_outbox_row_free(row);
}

static void test_queue_depth(void **state)
{
    fx *f = *state;
    mae_outbox_depth d;
    memset(&d, 0xff, sizeof d);
    assert_int_equal(mae_outbox_queue_depth(f->db, &d), MAE_OK);
    assert_int_equal(d.pending + d.processing + d.done + d.failed + d.dead_letter, 0);
    assert_int_equal(d.pending_under_1m + d.pending_under_5m + d.pending_under_30m +
                         d.pending_over_30m,
                     0);
    assert_true(d.oldest_pending_age_s == 0);

    /* Pending ages at T0+3600: 3600 s, 1799 s, 1800 s, 299 s, 300 s, 59 s, 0 s. */
    static const double created[] = {0, 1801, 1800, 3301, 3300, 3541, 3600};
    static const char *const targets[] = {"notion", "mailapp", "notion", "notion", "mailapp",
                                          "mailapp", "notion"};
    char op[8];
    for (int i = 0; i < 7; i++) {
        now_s = T0 + created[i];
        snprintf(op, sizeof op, "p%d", i);
        enqueue_ok(f, 7, op, targets[i], "{}", NULL, true);
    }
    /* Others: 2 processing (notion, mailapp), 1 failed (mailapp), 1 done,
     * 1 dead letter. */
    now_s = T0;
    int64_t a = enqueue_ok(f, 8, "a", "notion", "{}", NULL, true);
    int64_t b = enqueue_ok(f, 8, "b", "mailapp", "{}", NULL, true);
    int64_t c = enqueue_ok(f, 8, "c", "mailapp", "{}", NULL, true);
    int64_t dn = enqueue_ok(f, 8, "d", "notion", "{}", NULL, true);
    int64_t e = enqueue_ok(f, 8, "e", "notion", "{}", NULL, true);
    assert_int_equal(mae_outbox_mark_processing(f->db, a), MAE_OK);
    assert_int_equal(mae_outbox_mark_processing(f->db, b), MAE_OK);
    assert_int_equal(mae_outbox_mark_failed(f->db, c, "x", NULL), MAE_OK);
    assert_int_equal(mae_outbox_mark_done(f->db, dn), MAE_OK);
    set_status(f, e, "dead_letter");

    now_s = T0 + 3600;
    assert_int_equal(mae_outbox_queue_depth(f->db, &d), MAE_OK);
    assert_int_equal(d.pending, 7);
    assert_int_equal(d.processing, 2);
    assert_int_equal(d.failed, 1);
    assert_int_equal(d.done, 1);
    assert_int_equal(d.dead_letter, 1);
    assert_int_equal(d.notion.pending, 4);
    assert_int_equal(d.mailapp.pending, 3);
    assert_int_equal(d.notion.processing, 1);
    assert_int_equal(d.mailapp.processing, 1);
    assert_int_equal(d.notion.failed, 0);
    assert_int_equal(d.mailapp.failed, 1);
    assert_int_equal(d.pending_under_1m, 2);   /* 59, 0 */
    assert_int_equal(d.pending_under_5m, 1);   /* 299 */
    assert_int_equal(d.pending_under_30m, 2);  /* 300, 1799 */
    assert_int_equal(d.pending_over_30m, 2);   /* 1800, 3600 */
    assert_true(d.oldest_pending_age_s == 3600);

    /* A clock behind the rows: ages never negative. */
    now_s = T0 - 10;
    assert_int_equal(mae_outbox_queue_depth(f->db, &d), MAE_OK);
    assert_int_equal(d.pending_under_1m, 7);
    assert_true(d.oldest_pending_age_s == 0);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_enqueue_inserts_and_publishes),
        T(test_enqueue_merges_into_pending_silently),
        T(test_enqueue_after_pending_moved_on_inserts_anew),
        T(test_notion_webhook_to_notion_is_skipped),
        T(test_enqueue_for_missing_mail_is_enotfound),
        T(test_mark_processing_only_from_pending_or_failed),
        T(test_mark_done_publishes_once_and_refuses_dead_letters),
        T(test_failures_follow_the_schedule_then_dead_letter),
        cmocka_unit_test(test_attempt_limit_is_configurable),
        T(test_admin_retry_puts_dead_letter_back_to_pending),
        T(test_error_stored_500_and_published_200_code_points),
        T(test_bad_arguments_write_and_publish_nothing),
        T(test_events_wait_for_the_callers_commit),
        T(test_without_publisher_writes_state_only),
        T(test_get_returns_the_whole_intent),
        T(test_poll_ready_returns_due_intents_oldest_first),
        T(test_list_for_email_and_dead_letters),
        T(test_queue_depth),
        T(test_read_errors_name_the_call),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
