/* Tests of the public publish calls through a publisher on a fake Redis:
 * the exact line a subscriber receives from each typed builder and from
 * mae_safe_publish, the drops of invalid calls, and the counters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "capture.h"
#include "fake_transport.h"
#include "testutil.h"

#define FFFD "\xEF\xBF\xBD"

static int setup(void **state)
{
    *state = cap_open();
    return 0;
}

static int teardown(void **state)
{
    assert_int_equal(mae_publisher_close(*state, 5000), MAE_OK);
    return 0;
}

static mae_publisher_stats stats(mae_publisher *p)
{
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    return st;
}

/* Every call counted exactly once, and what was enqueued is accounted for. */
static void assert_counters_add_up(mae_publisher *p, uint64_t calls)
{
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    mae_publisher_stats st = stats(p);
    assert_int_equal(st.calls, calls);
    tu_assert_counters_add_up(p);
}

static void test_typed_builders(void **state)
{
    mae_publisher *p = *state;
    static const char *want[] = {
        "{\"event_type\":\"email.synced\",\"ts\":TS,\"internal_id\":53675,\"data\":"
        "{\"notion_page_id\":\"page-uuid-abc\"},\"source\":\"new_watcher\"}",
        "{\"event_type\":\"email.synced\",\"ts\":TS,\"internal_id\":53675,\"data\":"
        "{\"notion_page_id\":\"page-uuid-abc\"},\"source\":\"sync_store\"}",
        "{\"event_type\":\"email.failed\",\"ts\":TS,\"internal_id\":53675,\"data\":{\"status\":"
        "\"fetch_failed\",\"retry_count\":2,\"next_retry_at\":1716096120.000000,\"error\":"
        "\"IMAP: connection reset\"},\"source\":\"sync_store\"}",
        "{\"event_type\":\"email.dead_letter\",\"ts\":TS,\"internal_id\":53675,\"data\":"
        "{\"retry_count\":5,\"error\":\"IMAP: connection reset\"},\"source\":\"sync_store\"}",
        "{\"event_type\":\"outbox.enqueued\",\"ts\":TS,\"internal_id\":53675,\"data\":"
        "{\"outbox_id\":17,\"op_type\":\"flag\",\"target\":\"notion\",\"source\":\"cli\"},"
        "\"source\":\"outbox\"}",
        "{\"event_type\":\"outbox.enqueued\",\"ts\":TS,\"internal_id\":53675,\"data\":"
        "{\"outbox_id\":18,\"op_type\":\"move\",\"target\":\"mailapp\",\"source\":null},"
        "\"source\":\"outbox\"}",
        "{\"event_type\":\"outbox.done\",\"ts\":TS,\"internal_id\":53675,\"data\":"
        "{\"outbox_id\":17},\"source\":\"outbox\"}",
        "{\"event_type\":\"outbox.failed\",\"ts\":TS,\"internal_id\":53675,\"data\":"
        "{\"outbox_id\":17,\"attempts\":2,\"last_error\":\"notion 409\",\"next_retry_at\":"
        "1716096000.123456},\"source\":\"outbox\"}",
        "{\"event_type\":\"outbox.dead_letter\",\"ts\":TS,\"internal_id\":53675,\"data\":"
        "{\"outbox_id\":17,\"attempts\":5,\"last_error\":\"notion 409\"},\"source\":\"outbox\"}",
        "{\"event_type\":\"llm.success\",\"ts\":TS,\"internal_id\":53675,\"data\":{\"model\":"
        "\"claude-sonnet\",\"input_tokens\":1200,\"output_tokens\":340,\"latency_ms\":2150},"
        "\"source\":\"llm_agent\"}",
        "{\"event_type\":\"llm.failed\",\"ts\":TS,\"internal_id\":53675,\"data\":{\"retry_count\":"
        "1,\"next_retry_at\":1716096030.500000,\"error\":\"upstream 529: overloaded\"},"
        "\"source\":\"llm_agent\"}",
        "{\"event_type\":\"llm.gave_up\",\"ts\":TS,\"internal_id\":53675,\"data\":{\"retry_count\":"
        "5,\"error\":\"upstream 529: overloaded\"},\"source\":\"llm_agent\"}",
    };
    mae_publish_email_synced(p, 53675, "page-uuid-abc", MAE_SOURCE_NEW_WATCHER);
    mae_publish_email_synced(p, 53675, "page-uuid-abc", NULL);
    mae_publish_email_failed(p, 53675, "fetch_failed", 2, 1716096120.0, "IMAP: connection reset");
    mae_publish_email_dead_letter(p, 53675, 5, "IMAP: connection reset");
    mae_publish_outbox_enqueued(p, 53675, 17, "flag", "notion", MAE_SOURCE_CLI);
    mae_publish_outbox_enqueued(p, 53675, 18, "move", "mailapp", NULL);
    mae_publish_outbox_done(p, 53675, 17);
    mae_publish_outbox_failed(p, 53675, 17, 2, "notion 409", 1716096000.123456);
    mae_publish_outbox_dead_letter(p, 53675, 17, 5, "notion 409");
    mae_publish_llm_success(p, 53675, "claude-sonnet", 1200, 340, 2150);
    mae_publish_llm_failed(p, 53675, 1, 1716096030.5, "upstream 529: overloaded");
    mae_publish_llm_gave_up(p, 53675, 5, "upstream 529: overloaded");

    size_t n = sizeof want / sizeof want[0];
    assert_int_equal(cap_count(p), n);
    for (size_t i = 0; i < n; i++)
        cap_assert_line(cap_line(p, i), want[i]);
    /* Published on the configured channel, in order. */
    assert_string_equal(fake_redis_channel(cap_fake(p), 0), "mailagent:events:v1");
    assert_counters_add_up(p, n);
    mae_publisher_stats st = stats(p);
    assert_int_equal(st.published, n);
    assert_int_equal(st.dropped_invalid, 0);
}

static void test_error_texts_cut_and_repaired(void **state)
{
    mae_publisher *p = *state;
    char err[1000] = "";
    char want[2000];
    for (int i = 0; i < 250; i++)
        strcat(err, "\xE2\x82\xAC"); /* 3 bytes each */
    err[0] = '\xFF';                 /* the first byte is bad: the next two are strays */
    mae_publish_llm_gave_up(p, MAE_NO_ID, 5, err);

    strcpy(want, "{\"event_type\":\"llm.gave_up\",\"ts\":TS,\"internal_id\":null,\"data\":"
                 "{\"retry_count\":5,\"error\":\"" FFFD FFFD FFFD);
    for (int i = 0; i < 197; i++)
        strcat(want, "\xE2\x82\xAC");
    strcat(want, "\"},\"source\":\"llm_agent\"}");
    assert_int_equal(cap_count(p), 1);
    cap_assert_line(cap_line(p, 0), want);
}

static void test_safe_publish(void **state)
{
    mae_publisher *p = *state;
    mae_safe_publish(p, "email.synced", 53675, "{\"notion_page_id\":\"page-uuid-abc\"}",
                     "new_watcher");
    mae_safe_publish(p, "custom.thing", MAE_NO_ID, NULL, "cli");
    mae_safe_publish(p, "custom.thing", -1, " {\n \"a\" : [ 1 , 2.5e3 , true , null ] ,"
                                            " \"b\" : \"x\\/y\" } \n", "cli");
    mae_safe_publish(p, "t", 0, "{\"s\":\"\xC0\xAF\"}", "src\"q");
    mae_safe_publish(p, "t", 1, "{}", "s");

    assert_int_equal(cap_count(p), 5);
    cap_assert_line(cap_line(p, 0),
                    "{\"event_type\":\"email.synced\",\"ts\":TS,\"internal_id\":53675,\"data\":"
                    "{\"notion_page_id\":\"page-uuid-abc\"},\"source\":\"new_watcher\"}");
    cap_assert_line(cap_line(p, 1), "{\"event_type\":\"custom.thing\",\"ts\":TS,\"internal_id\":"
                                    "null,\"data\":{},\"source\":\"cli\"}");
    cap_assert_line(cap_line(p, 2),
                    "{\"event_type\":\"custom.thing\",\"ts\":TS,\"internal_id\":-1,\"data\":"
                    "{\"a\":[1,2.5e3,true,null],\"b\":\"x/y\"},\"source\":\"cli\"}");
    cap_assert_line(cap_line(p, 3), "{\"event_type\":\"t\",\"ts\":TS,\"internal_id\":0,\"data\":"
                                    "{\"s\":\"" FFFD FFFD "\"},\"source\":\"src\\\"q\"}");
    cap_assert_line(cap_line(p, 4), "{\"event_type\":\"t\",\"ts\":TS,\"internal_id\":1,\"data\":"
                                    "{},\"source\":\"s\"}");
    assert_counters_add_up(p, 5);
}

/* MAE_NO_ID is INT64_MIN, so -2^63 is the one int64 never published as a
 * number: it is null, like no mail. Its neighbour and INT64_MAX are
 * published as the numbers they are (events.md, internal_id). */
static void test_internal_id_int64_min_is_null(void **state)
{
    mae_publisher *p = *state;
    mae_safe_publish(p, "t", INT64_MIN, NULL, "s");
    mae_safe_publish(p, "t", INT64_MIN + 1, NULL, "s");
    mae_safe_publish(p, "t", INT64_MAX, NULL, "s");
    mae_publish_outbox_done(p, INT64_MIN, 3);
    assert_int_equal(cap_count(p), 4);
    cap_assert_line(cap_line(p, 0), "{\"event_type\":\"t\",\"ts\":TS,\"internal_id\":null,"
                                    "\"data\":{},\"source\":\"s\"}");
    cap_assert_line(cap_line(p, 1), "{\"event_type\":\"t\",\"ts\":TS,\"internal_id\":"
                                    "-9223372036854775807,\"data\":{},\"source\":\"s\"}");
    cap_assert_line(cap_line(p, 2), "{\"event_type\":\"t\",\"ts\":TS,\"internal_id\":"
                                    "9223372036854775807,\"data\":{},\"source\":\"s\"}");
    assert_non_null(strstr(cap_line(p, 3), "\"internal_id\":null,"));
    assert_counters_add_up(p, 4);
}

static void test_invalid_calls_are_dropped(void **state)
{
    mae_publisher *p = *state;
    char *deep = malloc(20010);
    assert_non_null(deep);
    memcpy(deep, "{\"a\":", 5);
    size_t k = 5;
    for (int i = 0; i < 10000; i++)
        deep[k++] = '[';
    for (int i = 0; i < 10000; i++)
        deep[k++] = ']';
    deep[k++] = '}';
    deep[k] = '\0';

    uint64_t calls = 0;
#define COUNTED(call) \
    do {              \
        call;         \
        calls++;      \
    } while (0)
    COUNTED(mae_safe_publish(p, NULL, 1, NULL, "s"));
    COUNTED(mae_safe_publish(p, "", 1, NULL, "s"));
    COUNTED(mae_safe_publish(p, "t", 1, NULL, NULL));
    COUNTED(mae_safe_publish(p, "t", 1, NULL, ""));
    COUNTED(mae_safe_publish(p, "t", 1, "[1]", "s"));
    COUNTED(mae_safe_publish(p, "t", 1, "{", "s"));
    COUNTED(mae_safe_publish(p, "t", 1, "{} x", "s"));
    COUNTED(mae_safe_publish(p, "t", 1, "null", "s"));
    COUNTED(mae_safe_publish(p, "t", 1, "", "s"));
    COUNTED(mae_safe_publish(p, "t", 1, "\"str\"", "s"));
    COUNTED(mae_safe_publish(p, "t", 1, "{\"a\":\"\\q\"}", "s"));
    COUNTED(mae_safe_publish(p, "t", 1, deep, "s"));
    COUNTED(mae_publish_email_synced(p, 1, NULL, NULL));
    COUNTED(mae_publish_email_synced(p, 1, "page", ""));
    COUNTED(mae_publish_email_failed(p, 1, NULL, 1, 2, "e"));
    COUNTED(mae_publish_email_failed(p, 1, "failed", 1, 2, NULL));
    COUNTED(mae_publish_email_dead_letter(p, 1, 1, NULL));
    COUNTED(mae_publish_outbox_enqueued(p, 1, 2, NULL, "notion", "cli"));
    COUNTED(mae_publish_outbox_enqueued(p, 1, 2, "flag", NULL, "cli"));
    COUNTED(mae_publish_outbox_failed(p, 1, 2, 3, NULL, 4));
    COUNTED(mae_publish_outbox_dead_letter(p, 1, 2, 3, NULL));
    COUNTED(mae_publish_llm_success(p, 1, NULL, 1, 2, 3));
    COUNTED(mae_publish_llm_failed(p, 1, 1, 2, NULL));
    COUNTED(mae_publish_llm_gave_up(p, 1, 1, NULL));
#undef COUNTED
    free(deep);

    assert_int_equal(cap_count(p), 0);
    mae_publisher_stats st = stats(p);
    assert_int_equal(st.dropped_invalid, calls);
    assert_int_equal(st.enqueued, 0);
    assert_counters_add_up(p, calls);

    /* A valid call afterwards goes through and is counted once. */
    mae_safe_publish(p, "t", 1, NULL, "s");
    assert_int_equal(cap_count(p), 1);
    assert_counters_add_up(p, calls + 1);
}

/* A disabled publisher counts every call, valid or not, as dropped_disabled
 * and builds nothing; a NULL publisher is a no-op. */
/* A store write whose event would be over max_event_bytes fails with
 * MAE_EINVAL, naming the limit, and changes nothing: the row keeps its old
 * state and nothing is published. The same write with a shorter value
 * goes through and is announced. */
static void test_store_write_over_max_event_bytes_is_refused(void **state)
{
    (void)state;
    fake_redis *f = fake_redis_new();
    mae__transport_ops ops = fake_redis_ops(f);
    mae_publisher_config cfg;
    mae_publisher *p = NULL;
    mae_publisher_config_init(&cfg);
    cfg.redis_url = "redis://fake";
    cfg.max_event_bytes = 300;
    assert_int_equal(mae__publisher_open_with(&cfg, &ops, &p), MAE_OK);
    mae_db_config dcfg;
    mae_db_config_init(&dcfg);
    dcfg.path = ":memory:";
    dcfg.publisher = p;
    mae_db *db = NULL;
    assert_int_equal(mae_db_open(&dcfg, &db), MAE_OK);
    mae_email mail = {.internal_id = 7, .message_id = "<m@x>"};
    assert_int_equal(mae_sync_store_upsert(db, &mail), MAE_OK);

    char page[400];
    memset(page, 'p', 350);
    page[350] = '\0';
    assert_int_equal(mae_sync_store_mark_synced(db, 7, page, NULL, NULL), MAE_EINVAL);
    assert_non_null(strstr(mae_db_errmsg(db), "max_event_bytes (300)"));
    mae_email_row *row = NULL;
    assert_int_equal(mae_sync_store_get(db, 7, &row), MAE_OK);
    assert_null(row->notion_page_id);
    assert_string_not_equal(row->sync_status, "synced");
    mae_email_row_free(row);

    page[40] = '\0';
    assert_int_equal(mae_sync_store_mark_synced(db, 7, page, NULL, NULL), MAE_OK);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.dropped_too_large, 0);
    assert_int_equal(fake_redis_published(f), st.published);
    assert_non_null(strstr(fake_redis_message(f, st.published - 1), "email.synced"));
    mae_db_close(db);
    assert_int_equal(mae_publisher_close(p, 5000), MAE_OK);
    fake_redis_free(f);
}

static void test_disabled_and_null(void **state)
{
    (void)state;
    mae_publisher_config cfg;
    mae_publisher *p = NULL;
    mae_publisher_config_init(&cfg);
    assert_int_equal(mae_publisher_open(&cfg, &p), MAE_OK);
    mae_safe_publish(p, "t", 1, NULL, "s");
    mae_safe_publish(p, NULL, 1, "[bad]", NULL);
    mae_publish_email_synced(p, 1, "page", NULL);
    mae_publish_email_failed(p, 1, "failed", 1, 2, "e");
    mae_publish_email_dead_letter(p, 1, 1, NULL);
    mae_publish_outbox_enqueued(p, 1, 2, "flag", "notion", NULL);
    mae_publish_outbox_done(p, 1, 2);
    mae_publish_outbox_failed(p, 1, 2, 3, "e", 4);
    mae_publish_outbox_dead_letter(p, 1, 2, 3, "e");
    mae_publish_llm_success(p, 1, "m", 1, 2, 3);
    mae_publish_llm_failed(p, 1, 1, 2, "e");
    mae_publish_llm_gave_up(p, 1, 1, "e");
    mae_publisher_stats st = stats(p);
    assert_int_equal(st.calls, 12);
    assert_int_equal(st.dropped_disabled, 12);
    assert_int_equal(st.dropped_invalid, 0);
    assert_int_equal(st.enqueued, 0);
    assert_int_equal(mae_publisher_close(p, 0), MAE_OK);

    mae_safe_publish(NULL, "t", 1, NULL, "s");
    mae_safe_publish(NULL, NULL, 1, "[", NULL);
    mae_publish_outbox_done(NULL, 1, 2);
    mae_publish_llm_gave_up(NULL, 1, 1, NULL);
    mae_publisher_stats_get(NULL, &st);
    assert_int_equal(st.calls, 0);
}

static void test_result_texts(void **state)
{
    (void)state;
    assert_string_equal(mae_strerror(MAE_OK), "success");
    assert_string_equal(mae_strerror(MAE_SKIPPED), "nothing to do");
    assert_string_equal(mae_strerror(MAE_EINVAL), "invalid argument");
    assert_string_equal(mae_strerror(MAE_ENOMEM), "out of memory");
    assert_string_equal(mae_strerror(MAE_ETIMEDOUT), "deadline passed");
    assert_string_equal(mae_strerror(-99), "unknown error");
    assert_string_equal(mae_strerror(2), "unknown error");
    assert_string_equal(mae_version(), MAE_VERSION_STRING);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_typed_builders, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_texts_cut_and_repaired, setup, teardown),
        cmocka_unit_test_setup_teardown(test_safe_publish, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_calls_are_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_internal_id_int64_min_is_null, setup, teardown),
        cmocka_unit_test(test_store_write_over_max_event_bytes_is_refused),
        cmocka_unit_test(test_disabled_and_null),
        cmocka_unit_test(test_result_texts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
