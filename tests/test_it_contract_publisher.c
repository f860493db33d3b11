/* The contract of docs/publisher.md, checked end to end with a real
 * redis-server: the disabled publisher, the queue's bounds, and events
 * queued before Redis comes up. Harness: contract.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "contract.h"

#ifndef MAE_TEST_TMPDIR
#define MAE_TEST_TMPDIR "/tmp"
#endif

static void test_disabled_publisher_counts_and_writes_go_on(void **state)
{
    (void)state;
    const char *urls[] = {NULL, ""};
    for (int u = 0; u < 2; u++) {
        mae_publisher_config pc;
        mae_publisher *p = NULL;
        mae_publisher_config_init(&pc);
        pc.redis_url = urls[u];
        CHECK(mae_publisher_open(&pc, &p) == MAE_OK,
              "docs/publisher.md: a publisher with no Redis URL is a valid no-op publisher");
        if (!p)
            continue;
        mae_safe_publish(p, "custom.thing", 1, NULL, "contract");
        mae_safe_publish(p, "custom.thing", MAE_NO_ID, "{\"a\":1}", "contract");
        char path[512];
        snprintf(path, sizeof path, "%s/contract-disabled-%d-%d.db", MAE_TEST_TMPDIR,
                 (int)getpid(), u);
        tu_remove_db(path);
        mae_db_config dc;
        mae_db *db = NULL;
        mae_db_config_init(&dc);
        dc.path = path;
        dc.publisher = p;
        assert_int_equal(mae_db_open(&dc, &db), MAE_OK);
        add_mail(db, 7);
        CHECK(mae_sync_store_mark_synced(db, 7, "page-7", NULL, NULL) == MAE_OK,
              "docs/stores.md: a publishing problem never fails a write");
        char *st = sql_text(db, "SELECT sync_status FROM email_metadata WHERE internal_id=7");
        CHECK(streq(st, "synced"),
              "docs/stores.md: the state is written with a disabled publisher");
        free(st);
        mae_db_close(db);
        tu_remove_db(path);
        mae_publisher_stats s;
        mae_publisher_stats_get(p, &s);
        CHECK(s.dropped_disabled == 3 && s.enqueued == 0 && s.published == 0,
              "docs/publisher.md: a disabled publisher counts every call as dropped_disabled "
              "(url %s): dropped_disabled %llu (want 3), enqueued %llu",
              urls[u] ? "\"\"" : "NULL", (unsigned long long)s.dropped_disabled,
              (unsigned long long)s.enqueued);
        CHECK(mae_publisher_flush(p, 10) == MAE_OK, "docs/api.md: flush of a disabled publisher");
        CHECK(mae_publisher_close(p, 100) == MAE_OK, "docs/api.md: close of a disabled publisher");
    }
    /* a store with no publisher at all: state only */
    char path[512];
    snprintf(path, sizeof path, "%s/contract-nopub-%d.db", MAE_TEST_TMPDIR, (int)getpid());
    tu_remove_db(path);
    mae_db_config dc;
    mae_db *db = NULL;
    mae_db_config_init(&dc);
    dc.path = path;
    assert_int_equal(mae_db_open(&dc, &db), MAE_OK);
    add_mail(db, 8);
    CHECK(mae_llm_store_mark_failed(db, 8, "x", NULL) == MAE_OK,
          "docs/api.md: a db with a NULL publisher works, state only");
    mae_db_close(db);
    tu_remove_db(path);
    int fails = g_fail;
    g_fail = 0;
    assert_int_equal(fails, 0);
}

/* A mail's sync life: pending, fetch_failed/failed with the schedule,
 * dead_letter at the limit, synced. */

static void test_queue_bounds_and_events_kept_until_redis_is_up(void **state)
{
    (void)state;
    mtr_redis late;
    memset(&late, 0, sizeof late);
    assert_int_equal(mtr_reserve_port(&late), 0);
    mae_publisher_config pc;
    mae_publisher *p = NULL;
    mae_publisher_config_init(&pc);
    pc.redis_url = late.url;
    pc.queue_max_events = 3;
    pc.backoff_min_ms = 20;
    pc.backoff_max_ms = 100;
    pc.connect_timeout_ms = 200;
    assert_int_equal(mae_publisher_open(&pc, &p), MAE_OK);
    for (int i = 0; i < 5; i++) {
        char d[32];
        snprintf(d, sizeof d, "{\"n\":%d}", i);
        mae_safe_publish(p, "custom.n", i, d, "contract");
    }
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    CHECK(st.enqueued == 3 && st.dropped_queue_full == 2 && st.queued + st.in_flight == 3,
          "docs/publisher.md: a full queue drops the new event and counts it: enqueued %llu, "
          "dropped_queue_full %llu, queued %llu",
          (unsigned long long)st.enqueued, (unsigned long long)st.dropped_queue_full,
          (unsigned long long)st.queued);
    check_counters(p, "queue full, Redis away");

    assert_int_equal(mtr_restart(&late), 0);
    mtr_sub *sub = mtr_subscribe(&late, DEFAULT_CHANNEL);
    assert_non_null(sub);
    /* the subscriber may come after the first sends: only check what came */
    CHECK(mae_publisher_flush(p, 5000) == MAE_OK, "docs/publisher.md: flush once Redis is back");
    mae_publisher_stats_get(p, &st);
    CHECK(st.published == 3 && st.queued == 0,
          "docs/publisher.md: events queued while Redis is away are sent when it comes back: "
          "published %llu", (unsigned long long)st.published);
    check_counters(p, "after Redis came back");
    mtr_sub_close(sub);
    mae_publisher_close(p, 1000);

    /* bounded by bytes */
    p = NULL;
    mae_publisher_config_init(&pc);
    pc.redis_url = late.url;
    pc.queue_max_bytes = 1000;
    mtr_pause(&late);
    assert_int_equal(mae_publisher_open(&pc, &p), MAE_OK);
    char big[512];
    snprintf(big, sizeof big, "{\"pad\":\"%0400d\"}", 0);
    for (int i = 0; i < 4; i++)
        mae_safe_publish(p, "custom.big", i, big, "contract");
    mae_publisher_stats_get(p, &st);
    CHECK(st.dropped_queue_full >= 2 && st.queued_bytes <= 1000,
          "docs/publisher.md: the queue is bounded by bytes: dropped_queue_full %llu, queued_bytes "
          "%llu", (unsigned long long)st.dropped_queue_full,
          (unsigned long long)st.queued_bytes);
    check_counters(p, "queue full by bytes");
    mae_publisher_close(p, 300);
    mtr_resume(&late);
    mtr_cleanup(&late);
    int fails = g_fail;
    g_fail = 0;
    assert_int_equal(fails, 0);
}


int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_disabled_publisher_counts_and_writes_go_on),
        cmocka_unit_test(test_queue_bounds_and_events_kept_until_redis_is_up),
    };
    return cmocka_run_group_tests(tests, contract_group_setup, contract_group_teardown);
}
