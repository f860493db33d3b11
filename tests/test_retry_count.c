/* Unit tests of failure counting, the rule the three stores share: a row's
 * count left at INT64_MAX (or below 0) by another writer is counted without
 * overflow, and the exact row and event that result. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "capture.h"
#include "testutil.h"

static double fake_now = TU_T0;

static int setup(void **state)
{
    tu_db *f = tu_db_new("retry");
    mae_db_config cfg;
    fake_now = TU_T0;
    tu_db_config(&cfg, f->path, f->pub, &fake_now);
    assert_int_equal(mae_db_open(&cfg, &f->db), MAE_OK);
    mae_email m = {.internal_id = 7, .message_id = "<m7@example.com>", .mailbox = "INBOX"};
    assert_int_equal(mae_sync_store_upsert(f->db, &m), MAE_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    tu_db_free(*state);
    return 0;
}

/* Runs one statement of raw SQL on the store's own connection. */
static void sql(tu_db *f, const char *text)
{
    char *err = NULL;
    int rc = sqlite3_exec(mae_db_sqlite(f->db), text, NULL, NULL, &err);
    if (rc != SQLITE_OK)
        fail_msg("%s: %s", text, err ? err : "?");
}

/* The integer in column 0 of the first row of a query. */
static int64_t sql_int(tu_db *f, const char *text)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(mae_db_sqlite(f->db), text, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void assert_saturated(const mae_retry_outcome *out)
{
    assert_true(out->attempts == INT64_MAX);
    assert_true(out->terminal);
    assert_true(out->next_retry_at == 0);
}

static void mail_count_at_int64_max_saturates_and_dead_letters(void **state)
{
    tu_db *f = *state;
    mae_retry_outcome out;
    sql(f, "UPDATE email_metadata SET retry_count = 9223372036854775807 WHERE internal_id = 7");
    cap_clear(f->pub);

    assert_int_equal(mae_sync_store_mark_failed(f->db, 7, "failed", "boom", &out), MAE_OK);
    assert_saturated(&out);
    assert_true(sql_int(f, "SELECT retry_count FROM email_metadata WHERE internal_id = 7") ==
                INT64_MAX);
    assert_int_equal(sql_int(f, "SELECT sync_status = 'dead_letter' AND next_retry_at IS NULL"
                                " FROM email_metadata WHERE internal_id = 7"), 1);
    assert_int_equal(cap_count(f->pub), 1);
    cap_assert_line(cap_line(f->pub, 0),
                    "{\"event_type\":\"email.dead_letter\",\"ts\":TS,\"internal_id\":7,"
                    "\"data\":{\"retry_count\":9223372036854775807,\"error\":\"boom\"},"
                    "\"source\":\"sync_store\"}");
}

static void outbox_attempts_at_int64_max_saturate_and_dead_letter(void **state)
{
    tu_db *f = *state;
    mae_retry_outcome out;
    int64_t id;
    assert_int_equal(mae_outbox_enqueue(f->db, 7, "set_read", "notion", "{}", NULL, &id, NULL),
                     MAE_OK);
    sql(f, "UPDATE email_outbox SET attempts = 9223372036854775807");
    cap_clear(f->pub);

    assert_int_equal(mae_outbox_mark_failed(f->db, id, "boom", &out), MAE_OK);
    assert_saturated(&out);
    assert_true(sql_int(f, "SELECT attempts FROM email_outbox") == INT64_MAX);
    assert_int_equal(sql_int(f, "SELECT status = 'dead_letter' AND next_retry_at IS NULL"
                                " FROM email_outbox"), 1);
    assert_int_equal(cap_count(f->pub), 1);
    char expected[256];
    snprintf(expected, sizeof expected,
             "{\"event_type\":\"outbox.dead_letter\",\"ts\":TS,\"internal_id\":7,"
             "\"data\":{\"outbox_id\":%lld,\"attempts\":9223372036854775807,"
             "\"last_error\":\"boom\"},\"source\":\"outbox\"}",
             (long long)id);
    cap_assert_line(cap_line(f->pub, 0), expected);
}

static void llm_count_at_int64_max_saturates_and_gives_up(void **state)
{
    tu_db *f = *state;
    mae_retry_outcome out;
    assert_int_equal(mae_llm_store_mark_pending(f->db, 7, "page-7", "INBOX"), MAE_OK);
    sql(f, "UPDATE llm_processing SET retry_count = 9223372036854775807");
    cap_clear(f->pub);

    assert_int_equal(mae_llm_store_mark_failed(f->db, 7, "boom", &out), MAE_OK);
    assert_saturated(&out);
    assert_true(sql_int(f, "SELECT retry_count FROM llm_processing") == INT64_MAX);
    assert_int_equal(sql_int(f, "SELECT status = 'gave_up' AND next_retry_at IS NULL"
                                " FROM llm_processing"), 1);
    assert_int_equal(cap_count(f->pub), 1);
    cap_assert_line(cap_line(f->pub, 0),
                    "{\"event_type\":\"llm.gave_up\",\"ts\":TS,\"internal_id\":7,"
                    "\"data\":{\"retry_count\":9223372036854775807,\"error\":\"boom\"},"
                    "\"source\":\"llm_agent\"}");
}

/* One below the top still counts normally: the saturation is only where
 * adding one would overflow. */
static void count_one_below_int64_max_reaches_it(void **state)
{
    tu_db *f = *state;
    mae_retry_outcome out;
    sql(f, "UPDATE email_metadata SET retry_count = 9223372036854775806 WHERE internal_id = 7");
    assert_int_equal(mae_sync_store_mark_failed(f->db, 7, "fetch_failed", "boom", &out), MAE_OK);
    assert_saturated(&out);
}

/* A negative count restarts from the first failure, in every store. */
static void negative_count_counts_as_the_first_failure(void **state)
{
    tu_db *f = *state;
    mae_retry_outcome out;
    int64_t id;
    assert_int_equal(mae_outbox_enqueue(f->db, 7, "set_read", "notion", "{}", NULL, &id, NULL),
                     MAE_OK);
    assert_int_equal(mae_llm_store_mark_pending(f->db, 7, "page-7", "INBOX"), MAE_OK);
    sql(f, "UPDATE email_metadata SET retry_count = -9223372036854775808;"
           "UPDATE email_outbox SET attempts = -5; UPDATE llm_processing SET retry_count = -1");

    assert_int_equal(mae_sync_store_mark_failed(f->db, 7, "failed", "boom", &out), MAE_OK);
    assert_true(out.attempts == 1 && !out.terminal && out.next_retry_at == TU_T0 + 60);
    assert_int_equal(mae_outbox_mark_failed(f->db, id, "boom", &out), MAE_OK);
    assert_true(out.attempts == 1 && !out.terminal && out.next_retry_at == TU_T0 + 60);
    assert_int_equal(mae_llm_store_mark_failed(f->db, 7, "boom", &out), MAE_OK);
    assert_true(out.attempts == 1 && !out.terminal && out.next_retry_at == TU_T0 + 60);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(mail_count_at_int64_max_saturates_and_dead_letters, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(outbox_attempts_at_int64_max_saturate_and_dead_letter,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(llm_count_at_int64_max_saturates_and_gives_up, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(count_one_below_int64_max_reaches_it, setup, teardown),
        cmocka_unit_test_setup_teardown(negative_count_counts_as_the_first_failure, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
