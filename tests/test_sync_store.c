/* Unit tests of the sync store (email_metadata): every transition with the
 * row read back and the exact event published, the retry schedule on a fake
 * clock, dead letters, text cuts, hostile inputs and the reads. */
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

static double fake_now = T0;

typedef tu_db fx;

static void open_with_limit(fx *f, int limit)
{
    mae_db_config cfg;
    tu_db_config(&cfg, f->path, f->pub, &fake_now);
    if (limit > 0)
        cfg.email_max_retries = limit;
    assert_int_equal(mae_db_open(&cfg, &f->db), MAE_OK);
}

static int setup(void **state)
{
    fx *f = tu_db_new("sync");
    fake_now = T0;
    open_with_limit(f, 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    tu_db_free(*state);
    return 0;
}

static void add_mail(fx *f, int64_t id, const char *date)
{
    char mid[64];
    snprintf(mid, sizeof mid, "<m%lld@example.com>", (long long)id);
    mae_email m = {.internal_id = id, .message_id = mid, .thread_id = "t1",
                   .subject = "hello", .sender = "a@example.com", .sender_name = "A",
                   .to_addr = "b@example.com", .cc_addr = NULL, .date_received = date,
                   .mailbox = "INBOX"};
    assert_int_equal(mae_sync_store_upsert(f->db, &m), MAE_OK);
}

static mae_email_row *get(fx *f, int64_t id)
{
    mae_email_row *r = NULL;
    assert_int_equal(mae_sync_store_get(f->db, id, &r), MAE_OK);
    assert_non_null(r);
    return r;
}

/* A one-line picture of everything mutable in a row, to prove nothing
 * changed. */
static void snapshot(fx *f, int64_t id, char *out, size_t n)
{
    mae_email_row *r = get(f, id);
    snprintf(out, n, "%s|%s|%s|%s|%lld|%.6f|%.6f|%s", r->sync_status,
             r->notion_page_id ? r->notion_page_id : "-",
             r->notion_thread_id ? r->notion_thread_id : "-",
             r->sync_error ? r->sync_error : "-", (long long)r->retry_count, r->next_retry_at,
             r->updated_at, r->subject ? r->subject : "-");
    mae_email_row_free(r);
}

/* ---- transitions ---------------------------------------------------------- */

static void test_upsert_adds_pending_or_updates_metadata(void **state)
{
    fx *f = *state;
    add_mail(f, 7, "2024-05-19 10:00:00");
    mae_email_row *r = get(f, 7);
    assert_int_equal(r->internal_id, 7);
    assert_string_equal(r->message_id, "<m7@example.com>");
    assert_string_equal(r->thread_id, "t1");
    assert_string_equal(r->subject, "hello");
    assert_string_equal(r->sender, "a@example.com");
    assert_string_equal(r->sender_name, "A");
    assert_string_equal(r->to_addr, "b@example.com");
    assert_null(r->cc_addr);
    assert_string_equal(r->date_received, "2024-05-19 10:00:00");
    assert_string_equal(r->mailbox, "INBOX");
    assert_false(r->is_read);
    assert_false(r->is_flagged);
    assert_string_equal(r->sync_status, "pending");
    assert_null(r->notion_page_id);
    assert_null(r->sync_error);
    assert_int_equal(r->retry_count, 0);
    assert_true(r->next_retry_at == 0);
    assert_true(r->created_at == T0);
    assert_true(r->updated_at == T0);
    mae_email_row_free(r);
    assert_string_equal(mae_db_errmsg(f->db), "");

    /* An update keeps the sync state and created_at. */
    assert_int_equal(mae_sync_store_mark_synced(f->db, 7, "page-7", NULL, NULL), MAE_OK);
    cap_clear(f->pub);
    fake_now = T0 + 10;
    mae_email m = {.internal_id = 7, .message_id = "<m7@example.com>", .subject = "Re: hello",
                   .mailbox = "Archive"};
    assert_int_equal(mae_sync_store_upsert(f->db, &m), MAE_OK);
    r = get(f, 7);
    assert_string_equal(r->subject, "Re: hello");
    assert_string_equal(r->mailbox, "Archive");
    assert_null(r->thread_id);
    assert_string_equal(r->sync_status, "synced");
    assert_string_equal(r->notion_page_id, "page-7");
    assert_true(r->created_at == T0);
    assert_true(r->updated_at == T0 + 10);
    mae_email_row_free(r);
    assert_int_equal(cap_count(f->pub), 0); /* upsert publishes nothing */
}

static void test_mark_synced_publishes_email_synced(void **state)
{
    fx *f = *state;
    add_mail(f, 53675, "d");
    assert_int_equal(mae_sync_store_mark_failed(f->db, 53675, "failed", "boom", NULL), MAE_OK);
    cap_clear(f->pub);

    fake_now = T0 + 5;
    assert_int_equal(mae_sync_store_mark_synced(f->db, 53675, "page-uuid-abc", "thr-1",
                                                MAE_SOURCE_NEW_WATCHER),
                     MAE_OK);
    mae_email_row *r = get(f, 53675);
    assert_string_equal(r->sync_status, "synced");
    assert_string_equal(r->notion_page_id, "page-uuid-abc");
    assert_string_equal(r->notion_thread_id, "thr-1");
    assert_null(r->sync_error);
    assert_true(r->next_retry_at == 0);
    assert_int_equal(r->retry_count, 1); /* the count is history, not cleared */
    assert_true(r->updated_at == T0 + 5);
    mae_email_row_free(r);
    assert_int_equal(cap_count(f->pub), 1);
    cap_assert_line(cap_line(f->pub, 0),
                    "{\"event_type\":\"email.synced\",\"ts\":TS,\"internal_id\":53675,"
                    "\"data\":{\"notion_page_id\":\"page-uuid-abc\"},\"source\":\"new_watcher\"}");

    /* NULL thread id keeps the stored one; NULL source is "sync_store". */
    cap_clear(f->pub);
    assert_int_equal(mae_sync_store_mark_synced(f->db, 53675, "page-2", NULL, NULL), MAE_OK);
    r = get(f, 53675);
    assert_string_equal(r->notion_page_id, "page-2");
    assert_string_equal(r->notion_thread_id, "thr-1");
    mae_email_row_free(r);
    assert_int_equal(cap_count(f->pub), 1);
    cap_assert_line(cap_line(f->pub, 0),
                    "{\"event_type\":\"email.synced\",\"ts\":TS,\"internal_id\":53675,"
                    "\"data\":{\"notion_page_id\":\"page-2\"},\"source\":\"sync_store\"}");

    /* A missing mail: MAE_ENOTFOUND, no event. */
    cap_clear(f->pub);
    assert_int_equal(mae_sync_store_mark_synced(f->db, 999, "p", NULL, NULL), MAE_ENOTFOUND);
    assert_non_null(strstr(mae_db_errmsg(f->db), "999"));
    assert_int_equal(cap_count(f->pub), 0);
}

/* Fails mail 7 once at fake_now and checks the row, the outcome and the
 * exact event. */
static void fail_and_check(fx *f, const char *status, int64_t n, double delay)
{
    char expected[512];
    mae_retry_outcome out = {0};
    cap_clear(f->pub);
    assert_int_equal(mae_sync_store_mark_failed(f->db, 7, status, "IMAP timeout", &out), MAE_OK);
    assert_int_equal(out.attempts, n);
    assert_false(out.terminal);
    assert_true(out.next_retry_at == fake_now + delay);
    mae_email_row *r = get(f, 7);
    assert_string_equal(r->sync_status, status);
    assert_int_equal(r->retry_count, n);
    assert_true(r->next_retry_at == fake_now + delay);
    assert_string_equal(r->sync_error, "IMAP timeout");
    assert_true(r->updated_at == fake_now);
    mae_email_row_free(r);
    assert_int_equal(cap_count(f->pub), 1);
    snprintf(expected, sizeof expected,
             "{\"event_type\":\"email.failed\",\"ts\":TS,\"internal_id\":7,\"data\":{\"status\":"
             "\"%s\",\"retry_count\":%lld,\"next_retry_at\":%.6f,\"error\":\"IMAP timeout\"},"
             "\"source\":\"sync_store\"}",
             status, (long long)n, fake_now + delay);
    cap_assert_line(cap_line(f->pub, 0), expected);
}

static void test_failures_follow_the_schedule_then_dead_letter(void **state)
{
    fx *f = *state;
    add_mail(f, 7, "d");
    const double delays[] = {60, 300, 900, 3600};
    for (int i = 0; i < 4; i++) {
        fake_now = T0 + 1000.0 * i + 0.25;
        fail_and_check(f, i % 2 ? "failed" : "fetch_failed", i + 1, delays[i]);
    }

    /* The fifth failure reaches the default limit of 5. */
    fake_now = T0 + 9000;
    cap_clear(f->pub);
    mae_retry_outcome out = {0};
    assert_int_equal(mae_sync_store_mark_failed(f->db, 7, "failed", "IMAP timeout", &out), MAE_OK);
    assert_int_equal(out.attempts, 5);
    assert_true(out.terminal);
    assert_true(out.next_retry_at == 0);
    mae_email_row *r = get(f, 7);
    assert_string_equal(r->sync_status, "dead_letter");
    assert_int_equal(r->retry_count, 5);
    assert_true(r->next_retry_at == 0);
    assert_string_equal(r->sync_error, "Max retries exceeded: IMAP timeout");
    mae_email_row_free(r);
    assert_int_equal(cap_count(f->pub), 1);
    cap_assert_line(cap_line(f->pub, 0),
                    "{\"event_type\":\"email.dead_letter\",\"ts\":TS,\"internal_id\":7,"
                    "\"data\":{\"retry_count\":5,\"error\":\"IMAP timeout\"},"
                    "\"source\":\"sync_store\"}");

    /* The row's next_retry_at is NULL in SQLite, not 0. */
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(mae_db_sqlite(f->db),
                                        "SELECT next_retry_at IS NULL FROM email_metadata "
                                        "WHERE internal_id = 7",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 1);
    sqlite3_finalize(st);

    /* Marking synced afterwards clears the error. */
    assert_int_equal(mae_sync_store_mark_synced(f->db, 7, "p7", NULL, NULL), MAE_OK);
    r = get(f, 7);
    assert_null(r->sync_error);
    mae_email_row_free(r);
}

static void test_failures_beyond_five_wait_7200_s(void **state)
{
    fx *f = *state;
    mae_db_close(f->db);
    open_with_limit(f, 8);
    add_mail(f, 7, "d");
    const double delays[] = {60, 300, 900, 3600, 7200, 7200, 7200};
    for (int i = 0; i < 7; i++) {
        fake_now = T0 + 100.0 * i;
        fail_and_check(f, "fetch_failed", i + 1, delays[i]);
    }
    mae_retry_outcome out = {0};
    assert_int_equal(mae_sync_store_mark_failed(f->db, 7, "fetch_failed", "x", &out), MAE_OK);
    assert_true(out.terminal);
    assert_int_equal(out.attempts, 8);
}

static void test_retry_limit_is_configurable(void **state)
{
    fx *f = *state;
    mae_db_close(f->db);
    open_with_limit(f, 2);
    add_mail(f, 7, "d");
    fail_and_check(f, "failed", 1, 60);
    cap_clear(f->pub);
    mae_retry_outcome out = {0};
    assert_int_equal(mae_sync_store_mark_failed(f->db, 7, "fetch_failed", "gone", &out), MAE_OK);
    assert_true(out.terminal);
    assert_int_equal(out.attempts, 2);
    mae_email_row *r = get(f, 7);
    assert_string_equal(r->sync_status, "dead_letter");
    assert_string_equal(r->sync_error, "Max retries exceeded: gone");
    mae_email_row_free(r);
    assert_int_equal(cap_count(f->pub), 1);
    cap_assert_line(cap_line(f->pub, 0),
                    "{\"event_type\":\"email.dead_letter\",\"ts\":TS,\"internal_id\":7,"
                    "\"data\":{\"retry_count\":2,\"error\":\"gone\"},\"source\":\"sync_store\"}");

    /* A limit of 1: the first failure is terminal. */
    mae_db_close(f->db);
    open_with_limit(f, 1);
    add_mail(f, 8, "d");
    assert_int_equal(mae_sync_store_mark_failed(f->db, 8, "failed", "x", &out), MAE_OK);
    assert_true(out.terminal);
    assert_int_equal(out.attempts, 1);
}

/* ---- text cuts ---------------------------------------------------------- */

static char *repeat(const char *unit, size_t times)
{
    size_t u = strlen(unit);
    char *s = malloc(u * times + 1);
    assert_non_null(s);
    for (size_t i = 0; i < times; i++)
        memcpy(s + i * u, unit, u);
    s[u * times] = '\0';
    return s;
}

/* Code points of valid UTF-8. */
static size_t cps(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            n++;
    return n;
}

static void test_error_cut_in_code_points_not_bytes(void **state)
{
    fx *f = *state;
    add_mail(f, 7, "d");
    char *err = repeat("\xc3\xa9", 600); /* é x 600 */
    char *e500 = repeat("\xc3\xa9", 500);
    char *e478 = repeat("\xc3\xa9", 478);
    char *e200 = repeat("\xc3\xa9", 200);
    char expected[4096];

    assert_int_equal(mae_sync_store_mark_failed(f->db, 7, "failed", err, NULL), MAE_OK);
    mae_email_row *r = get(f, 7);
    assert_string_equal(r->sync_error, e500);
    mae_email_row_free(r);
    assert_int_equal(cap_count(f->pub), 1);
    snprintf(expected, sizeof expected,
             "{\"event_type\":\"email.failed\",\"ts\":TS,\"internal_id\":7,\"data\":{\"status\":"
             "\"failed\",\"retry_count\":1,\"next_retry_at\":%.6f,\"error\":\"%s\"},"
             "\"source\":\"sync_store\"}",
             T0 + 60, e200);
    cap_assert_line(cap_line(f->pub, 0), expected);

    /* Dead letter: the prefixed text is cut to 500 as a whole; the event
     * has the plain error cut to 200. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(mae_sync_store_mark_failed(f->db, 7, "failed", "x", NULL), MAE_OK);
    cap_clear(f->pub);
    assert_int_equal(mae_sync_store_mark_failed(f->db, 7, "failed", err, NULL), MAE_OK);
    r = get(f, 7);
    assert_string_equal(r->sync_status, "dead_letter");
    assert_int_equal(cps(r->sync_error), 500);
    assert_int_equal(strncmp(r->sync_error, "Max retries exceeded: ", 22), 0);
    assert_string_equal(r->sync_error + 22, e478);
    mae_email_row_free(r);
    snprintf(expected, sizeof expected,
             "{\"event_type\":\"email.dead_letter\",\"ts\":TS,\"internal_id\":7,\"data\":"
             "{\"retry_count\":5,\"error\":\"%s\"},\"source\":\"sync_store\"}",
             e200);
    assert_int_equal(cap_count(f->pub), 1);
    cap_assert_line(cap_line(f->pub, 0), expected);
    free(err);
    free(e500);
    free(e478);
    free(e200);
}

static void test_invalid_utf8_is_repaired(void **state)
{
    fx *f = *state;
    mae_email m = {.internal_id = 9, .message_id = "<m9@x>", .subject = "caf\xc3 bad \xff"};
    assert_int_equal(mae_sync_store_upsert(f->db, &m), MAE_OK);
    mae_email_row *r = get(f, 9);
    assert_string_equal(r->subject, "caf\xef\xbf\xbd bad \xef\xbf\xbd");
    mae_email_row_free(r);
    assert_int_equal(mae_sync_store_mark_failed(f->db, 9, "fetch_failed", "oops \xfe!", NULL),
                     MAE_OK);
    r = get(f, 9);
    assert_string_equal(r->sync_error, "oops \xef\xbf\xbd!");
    mae_email_row_free(r);
    assert_int_equal(cap_count(f->pub), 1);
    char expected[512];
    snprintf(expected, sizeof expected,
             "{\"event_type\":\"email.failed\",\"ts\":TS,\"internal_id\":9,\"data\":{\"status\":"
             "\"fetch_failed\",\"retry_count\":1,\"next_retry_at\":%.6f,\"error\":"
             "\"oops \xef\xbf\xbd!\"},\"source\":\"sync_store\"}",
             T0 + 60);
    cap_assert_line(cap_line(f->pub, 0), expected);
}

/* ---- hostile inputs ---------------------------------------------------- */

static void expect_rejected(fx *f, int rc, int code, const char *before)
{
    char after[1024];
    assert_int_equal(rc, code);
    assert_true(strlen(mae_db_errmsg(f->db)) > 0);
    snapshot(f, 7, after, sizeof after);
    assert_string_equal(before, after);
    assert_int_equal(cap_count(f->pub), 0);
}

static void test_bad_arguments_write_and_publish_nothing(void **state)
{
    fx *f = *state;
    char before[1024];
    mae_retry_outcome out = {.attempts = 42};
    mae_email_row *row = NULL;
    mae_email_list *list = NULL;
    mae_counts *counts = NULL;

    add_mail(f, 7, "d");
    cap_clear(f->pub);
    snapshot(f, 7, before, sizeof before);

    /* NULL handle: no crash. */
    mae_email m = {.internal_id = 1, .message_id = "<x>"};
    assert_int_equal(mae_sync_store_upsert(NULL, &m), MAE_EINVAL);
    assert_int_equal(mae_sync_store_mark_synced(NULL, 7, "p", NULL, NULL), MAE_EINVAL);
    assert_int_equal(mae_sync_store_mark_failed(NULL, 7, "failed", "e", NULL), MAE_EINVAL);
    assert_int_equal(mae_sync_store_get(NULL, 7, &row), MAE_EINVAL);
    assert_int_equal(mae_sync_store_list(NULL, NULL, 10, &list), MAE_EINVAL);
    assert_int_equal(mae_sync_store_due_for_retry(NULL, 0, 10, &list), MAE_EINVAL);
    assert_int_equal(mae_sync_store_count_by_status(NULL, &counts), MAE_EINVAL);
    assert_string_equal(mae_db_errmsg(NULL), "invalid argument: the database handle is NULL");
    assert_null(mae_db_sqlite(NULL));

    const int64_t bad_ids[] = {0, -1, MAE_NO_ID};
    for (size_t i = 0; i < 3; i++) {
        mae_email b = {.internal_id = bad_ids[i], .message_id = "<bad>"};
        expect_rejected(f, mae_sync_store_upsert(f->db, &b), MAE_EINVAL, before);
        expect_rejected(f, mae_sync_store_mark_synced(f->db, bad_ids[i], "p", NULL, NULL),
                        MAE_EINVAL, before);
        expect_rejected(f, mae_sync_store_mark_failed(f->db, bad_ids[i], "failed", "e", &out),
                        MAE_EINVAL, before);
        assert_int_equal(mae_sync_store_get(f->db, bad_ids[i], &row), MAE_EINVAL);
    }
    expect_rejected(f, mae_sync_store_mark_synced(f->db, INT64_MAX, "p", NULL, NULL),
                    MAE_ENOTFOUND, before);
    expect_rejected(f, mae_sync_store_mark_failed(f->db, INT64_MAX, "failed", "e", &out),
                    MAE_ENOTFOUND, before);
    assert_int_equal(mae_sync_store_get(f->db, INT64_MAX, &row), MAE_ENOTFOUND);

    expect_rejected(f, mae_sync_store_upsert(f->db, NULL), MAE_EINVAL, before);
    mae_email nomid = {.internal_id = 7, .message_id = NULL};
    expect_rejected(f, mae_sync_store_upsert(f->db, &nomid), MAE_EINVAL, before);
    nomid.message_id = "";
    expect_rejected(f, mae_sync_store_upsert(f->db, &nomid), MAE_EINVAL, before);

    expect_rejected(f, mae_sync_store_mark_synced(f->db, 7, NULL, NULL, NULL), MAE_EINVAL, before);
    expect_rejected(f, mae_sync_store_mark_synced(f->db, 7, "", NULL, NULL), MAE_EINVAL, before);
    expect_rejected(f, mae_sync_store_mark_synced(f->db, 7, "p", NULL, ""), MAE_EINVAL, before);

    const char *bad_status[] = {NULL, "", "synced", "dead_letter", "FAILED", "failed ",
                                "failed'; DROP TABLE email_metadata; --"};
    for (size_t i = 0; i < sizeof bad_status / sizeof bad_status[0]; i++)
        expect_rejected(f, mae_sync_store_mark_failed(f->db, 7, bad_status[i], "e", &out),
                        MAE_EINVAL, before);
    expect_rejected(f, mae_sync_store_mark_failed(f->db, 7, "failed", NULL, &out), MAE_EINVAL,
                    before);
    expect_rejected(f, mae_sync_store_mark_failed(f->db, 7, "failed", "", &out), MAE_EINVAL,
                    before);
    assert_int_equal(out.attempts, 42); /* out untouched on errors */
    assert_int_equal(mae_sync_store_mark_failed(f->db, 7, "failed", NULL, &out), MAE_EINVAL);
    assert_non_null(strstr(mae_db_errmsg(f->db), "error must be"));

    assert_int_equal(mae_sync_store_list(f->db, "bogus", 10, &list), MAE_EINVAL);
    assert_int_equal(mae_sync_store_list(f->db, "", 10, &list), MAE_EINVAL);
    assert_null(list);
    assert_int_equal(mae_sync_store_get(f->db, 7, NULL), MAE_EINVAL);
    assert_int_equal(mae_sync_store_count_by_status(f->db, NULL), MAE_EINVAL);

    /* A message_id taken by another mail: MAE_EDB (UNIQUE), nothing written. */
    mae_email dup = {.internal_id = 8, .message_id = "<m7@example.com>"};
    assert_int_equal(mae_sync_store_upsert(f->db, &dup), MAE_EDB);
    assert_non_null(strstr(mae_db_errmsg(f->db), "UNIQUE"));
    expect_rejected(f, mae_sync_store_upsert(f->db, &dup), MAE_EDB, before);
    assert_int_equal(mae_sync_store_get(f->db, 8, &row), MAE_ENOTFOUND);

    /* Quotes and SQL are data. */
    const char *sql = "x'); DROP TABLE email_metadata; -- \"q\" \\";
    mae_email evil = {.internal_id = 10, .message_id = sql, .subject = sql};
    assert_int_equal(mae_sync_store_upsert(f->db, &evil), MAE_OK);
    assert_int_equal(mae_sync_store_mark_synced(f->db, 10, sql, sql, sql), MAE_OK);
    row = get(f, 10);
    assert_string_equal(row->subject, sql);
    assert_string_equal(row->message_id, sql);
    assert_string_equal(row->notion_page_id, sql);
    mae_email_row_free(row);
    assert_int_equal(cap_count(f->pub), 1);
    cap_assert_line(cap_line(f->pub, 0),
                    "{\"event_type\":\"email.synced\",\"ts\":TS,\"internal_id\":10,\"data\":"
                    "{\"notion_page_id\":\"x'); DROP TABLE email_metadata; -- \\\"q\\\" \\\\\"},"
                    "\"source\":\"x'); DROP TABLE email_metadata; -- \\\"q\\\" \\\\\"}");
    cap_clear(f->pub);

    /* 1 MiB of error text is accepted and cut. */
    char *big = repeat("E", 1 << 20);
    assert_int_equal(mae_sync_store_mark_failed(f->db, 10, "failed", big, &out), MAE_OK);
    row = get(f, 10);
    assert_int_equal(strlen(row->sync_error), 500);
    mae_email_row_free(row);
    assert_int_equal(cap_count(f->pub), 1);
    assert_non_null(strstr(cap_line(f->pub, 0), "\"error\":\""));
    assert_true(strlen(cap_line(f->pub, 0)) < 400);
    free(big);
    assert_string_equal(mae_db_errmsg(f->db), "");
}

static void test_without_publisher_writes_state_only(void **state)
{
    fx *f = *state;
    mae_db_config cfg;
    mae_db *db = NULL;
    tu_db_config(&cfg, f->path, NULL, NULL);
    assert_int_equal(mae_db_open(&cfg, &db), MAE_OK);
    mae_email m = {.internal_id = 3, .message_id = "<m3>"};
    assert_int_equal(mae_sync_store_upsert(db, &m), MAE_OK);
    assert_int_equal(mae_sync_store_mark_failed(db, 3, "failed", "e", NULL), MAE_OK);
    assert_int_equal(mae_sync_store_mark_synced(db, 3, "p", NULL, NULL), MAE_OK);
    mae_db_close(db);
    mae_email_row *r = get(f, 3);
    assert_string_equal(r->sync_status, "synced");
    mae_email_row_free(r);

    /* A disabled publisher counts the events it was handed as dropped. */
    mae_publisher_config pc;
    mae_publisher *off = NULL;
    mae_publisher_config_init(&pc);
    assert_int_equal(mae_publisher_open(&pc, &off), MAE_OK);
    cfg.publisher = off;
    assert_int_equal(mae_db_open(&cfg, &db), MAE_OK);
    assert_int_equal(mae_sync_store_mark_synced(db, 3, "p", NULL, NULL), MAE_OK);
    mae_publisher_stats st;
    mae_publisher_stats_get(off, &st);
    assert_int_equal(st.dropped_disabled, 1);
    mae_db_close(db);
    mae_publisher_close(off, 1000);
}

/* ---- reads ---------------------------------------------------------------- */

static void test_reads_for_reconciliation(void **state)
{
    fx *f = *state;
    add_mail(f, 1, "2024-05-01");
    add_mail(f, 2, "2024-05-03");
    add_mail(f, 3, "2024-05-02");
    add_mail(f, 4, "2024-05-03");
    add_mail(f, 5, "2024-04-30");

    mae_email_list *l = NULL;
    assert_int_equal(mae_sync_store_list(f->db, NULL, 0, &l), MAE_OK);
    assert_int_equal(l->count, 5);
    const int64_t order[] = {4, 2, 3, 1, 5};
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(l->rows[i].internal_id, order[i]);
    mae_email_list_free(l);

    assert_int_equal(mae_sync_store_list(f->db, NULL, 2, &l), MAE_OK);
    assert_int_equal(l->count, 2);
    assert_int_equal(l->rows[0].internal_id, 4);
    assert_int_equal(l->rows[1].internal_id, 2);
    mae_email_list_free(l);

    fake_now = T0;
    assert_int_equal(mae_sync_store_mark_failed(f->db, 1, "failed", "e", NULL), MAE_OK);
    fake_now = T0 - 100;
    assert_int_equal(mae_sync_store_mark_failed(f->db, 3, "fetch_failed", "e", NULL), MAE_OK);
    fake_now = T0;
    assert_int_equal(mae_sync_store_mark_synced(f->db, 2, "p2", NULL, NULL), MAE_OK);

    assert_int_equal(mae_sync_store_list(f->db, "failed", 10, &l), MAE_OK);
    assert_int_equal(l->count, 1);
    assert_int_equal(l->rows[0].internal_id, 1);
    assert_string_equal(l->rows[0].sync_error, "e");
    mae_email_list_free(l);
    assert_int_equal(mae_sync_store_list(f->db, "dead_letter", 10, &l), MAE_OK);
    assert_int_equal(l->count, 0);
    mae_email_list_free(l);

    /* Due: mail 3 at T0-40, mail 1 at T0+60. */
    assert_int_equal(mae_sync_store_due_for_retry(f->db, T0, 10, &l), MAE_OK);
    assert_int_equal(l->count, 1);
    assert_int_equal(l->rows[0].internal_id, 3);
    mae_email_list_free(l);
    assert_int_equal(mae_sync_store_due_for_retry(f->db, T0 + 60, 10, &l), MAE_OK);
    assert_int_equal(l->count, 2);
    assert_int_equal(l->rows[0].internal_id, 3);
    assert_int_equal(l->rows[1].internal_id, 1);
    mae_email_list_free(l);
    assert_int_equal(mae_sync_store_due_for_retry(f->db, T0 + 60, 1, &l), MAE_OK);
    assert_int_equal(l->count, 1);
    mae_email_list_free(l);
    fake_now = T0 + 1000; /* now <= 0: the store's clock */
    assert_int_equal(mae_sync_store_due_for_retry(f->db, 0, 0, &l), MAE_OK);
    assert_int_equal(l->count, 2);
    mae_email_list_free(l);

    mae_counts *c = NULL;
    assert_int_equal(mae_sync_store_count_by_status(f->db, &c), MAE_OK);
    assert_int_equal(c->count, 4);
    assert_string_equal(c->items[0].key, "failed");
    assert_int_equal(c->items[0].count, 1);
    assert_string_equal(c->items[1].key, "fetch_failed");
    assert_int_equal(c->items[1].count, 1);
    assert_string_equal(c->items[2].key, "pending");
    assert_int_equal(c->items[2].count, 2);
    assert_string_equal(c->items[3].key, "synced");
    assert_int_equal(c->items[3].count, 1);
    mae_counts_free(c);
    mae_counts_free(NULL);
    mae_email_list_free(NULL);
    mae_email_row_free(NULL);
}

/* A read's statement must not pin an old snapshot: a write by another
 * connection is seen by the next read. */
static void test_reads_see_other_writers(void **state)
{
    fx *f = *state;
    add_mail(f, 1, "d");
    mae_email_row *r = get(f, 1);
    mae_email_row_free(r);
    mae_db *other = NULL;
    mae_db_config cfg;
    tu_db_config(&cfg, f->path, NULL, NULL);
    assert_int_equal(mae_db_open(&cfg, &other), MAE_OK);
    assert_int_equal(mae_sync_store_mark_synced(other, 1, "from-other", NULL, NULL), MAE_OK);
    mae_db_close(other);
    r = get(f, 1);
    assert_string_equal(r->notion_page_id, "from-other");
    mae_email_row_free(r);
    assert_int_equal(mae_sync_store_mark_failed(f->db, 1, "failed", "e", NULL), MAE_OK);
}

/* Each read names itself and says what is wrong, and leaves *out alone. */
static void test_read_errors_name_the_call(void **state)
{
    fx *f = *state;
    mae_email_row *row = (mae_email_row *)&row;
    mae_email_list *list = (mae_email_list *)&list;
    mae_counts *counts = NULL;

    add_mail(f, 7, "d");
    assert_int_equal(mae_sync_store_get(f->db, 0, &row), MAE_EINVAL);
    assert_string_equal(mae_db_errmsg(f->db),
                        "invalid argument: mae_sync_store_get: internal_id must be > 0");
    assert_int_equal(mae_sync_store_get(f->db, 999, &row), MAE_ENOTFOUND);
    assert_string_equal(mae_db_errmsg(f->db), "no such row: mae_sync_store_get: no mail with id 999");
    assert_int_equal(mae_sync_store_get(f->db, 7, NULL), MAE_EINVAL);
    assert_string_equal(mae_db_errmsg(f->db), "invalid argument: mae_sync_store_get: out is NULL");
    assert_ptr_equal(row, (mae_email_row *)&row);

    assert_int_equal(mae_sync_store_list(f->db, "nope", 0, &list), MAE_EINVAL);
    assert_string_equal(mae_db_errmsg(f->db),
                        "invalid argument: mae_sync_store_list: unknown status (expected pending, "
                        "synced, fetch_failed, failed or dead_letter)");
    assert_int_equal(mae_sync_store_list(f->db, NULL, 0, NULL), MAE_EINVAL);
    assert_string_equal(mae_db_errmsg(f->db), "invalid argument: mae_sync_store_list: out is NULL");
    assert_int_equal(mae_sync_store_due_for_retry(f->db, 0, 0, NULL), MAE_EINVAL);
    assert_string_equal(mae_db_errmsg(f->db),
                        "invalid argument: mae_sync_store_due_for_retry: out is NULL");
    assert_ptr_equal(list, (mae_email_list *)&list);
    assert_int_equal(mae_sync_store_count_by_status(f->db, NULL), MAE_EINVAL);
    assert_string_equal(mae_db_errmsg(f->db),
                        "invalid argument: mae_sync_store_count_by_status: out is NULL");

    /* A read that succeeds clears the last error. */
    assert_int_equal(mae_sync_store_count_by_status(f->db, &counts), MAE_OK);
    assert_string_equal(mae_db_errmsg(f->db), "");
    mae_counts_free(counts);
    row = NULL;
    assert_int_equal(mae_sync_store_get(f->db, 7, &row), MAE_OK);
    assert_string_equal(mae_db_errmsg(f->db), "");
    assert_int_equal(row->internal_id, 7);
    mae_email_row_free(row);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_upsert_adds_pending_or_updates_metadata),
        T(test_mark_synced_publishes_email_synced),
        T(test_failures_follow_the_schedule_then_dead_letter),
        cmocka_unit_test_setup_teardown(test_failures_beyond_five_wait_7200_s, setup,
                                        teardown),
        T(test_retry_limit_is_configurable),
        T(test_error_cut_in_code_points_not_bytes),
        T(test_invalid_utf8_is_repaired),
        T(test_bad_arguments_write_and_publish_nothing),
        T(test_without_publisher_writes_state_only),
        T(test_reads_for_reconciliation),
        T(test_reads_see_other_writers),
        T(test_read_errors_name_the_call),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
