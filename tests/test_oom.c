/* Out-of-memory sweeps: for every public operation, fail its n-th
 * allocation for n = 1, 2, ... until it succeeds. Each failure must be a
 * clean error (or, for the void publish calls, a counted drop), leave the
 * rows as they were, publish nothing, and leak nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "capture.h"
#include "testutil.h"
#include "failalloc.h"

#define MAX_N 5000

typedef struct ctx {
    char path[256];
    mae_publisher *pub;
    mae_db *db;
    int64_t outbox_id;
} ctx;

static void open_db(ctx *c)
{
    mae_db_config cfg;
    tu_db_config(&cfg, c->path, c->pub, &tu_t0);
    assert_int_equal(mae_db_open(&cfg, &c->db), MAE_OK);
}

/* A fresh database with one mail, one pending intent and one LLM row. */
static void prepare(ctx *c)
{
    tu_db_path(c->path, sizeof c->path, "oom");
    c->pub = cap_open();
    open_db(c);
    mae_email m = {.internal_id = 7, .message_id = "<m7@example.com>", .subject = "hello"};
    assert_int_equal(mae_sync_store_upsert(c->db, &m), MAE_OK);
    assert_int_equal(mae_outbox_enqueue(c->db, 7, "flag", "notion", "{\"flagged\":true}",
                                        "cli", &c->outbox_id, NULL),
                     MAE_OK);
    assert_int_equal(mae_llm_store_mark_pending(c->db, 7, "page-7", "INBOX"), MAE_OK);
    cap_clear(c->pub);
}

static void teardown(ctx *c)
{
    mae_db_close(c->db);
    mae_publisher_close(c->pub, 5000);
    c->db = NULL;
    c->pub = NULL;
    tu_remove_db(c->path);
}

/* What the database says about the fixture, to compare before and after. */
static void snapshot(ctx *c, char *out, size_t n)
{
    mae_email_row *e = NULL;
    mae_outbox_row *o = NULL;
    mae_llm_row *l = NULL;
    assert_int_equal(mae_sync_store_get(c->db, 7, &e), MAE_OK);
    assert_int_equal(mae_outbox_get(c->db, c->outbox_id, &o), MAE_OK);
    assert_int_equal(mae_llm_store_get(c->db, 7, &l), MAE_OK);
    snprintf(out, n, "%s|%s|%lld|%s|%s|%lld|%s|%s|%lld", e->sync_status,
             e->notion_page_id ? e->notion_page_id : "-", (long long)e->retry_count, o->status,
             o->payload_json, (long long)o->attempts, l->status, l->model ? l->model : "-",
             (long long)l->retry_count);
    mae_email_row_free(e);
    mae_outbox_row_free(o);
    mae_llm_row_free(l);
}

typedef int (*op_fn)(ctx *c);

static int op_upsert(ctx *c)
{
    mae_email m = {.internal_id = 8, .message_id = "<m8@example.com>", .subject = "new"};
    return mae_sync_store_upsert(c->db, &m);
}
static int op_synced(ctx *c)
{
    return mae_sync_store_mark_synced(c->db, 7, "page-7", "thread-7", MAE_SOURCE_NEW_WATCHER);
}
static int op_email_failed(ctx *c)
{
    return mae_sync_store_mark_failed(c->db, 7, "fetch_failed", "timeout \xff", NULL);
}
static int op_enqueue_new(ctx *c)
{
    return mae_outbox_enqueue(c->db, 7, "flag", "mailapp", "{\"b\":1,\"a\":{\"y\":2,\"x\":1}}",
                              "cli", NULL, NULL);
}
static int op_enqueue_merge(ctx *c)
{
    return mae_outbox_enqueue(c->db, 7, "flag", "notion", "{\"note\":\"x\",\"flagged\":null}",
                              NULL, NULL, NULL);
}
static int op_processing(ctx *c)
{
    return mae_outbox_mark_processing(c->db, c->outbox_id);
}
static int op_done(ctx *c)
{
    return mae_outbox_mark_done(c->db, c->outbox_id);
}
static int op_outbox_failed(ctx *c)
{
    return mae_outbox_mark_failed(c->db, c->outbox_id, "notion 502", NULL);
}
static int op_llm_success(ctx *c)
{
    mae_llm_usage u = {.model = "claude", .input_tokens = 100, .output_tokens = 20,
                       .latency_ms = 900, .labels_json = "{\"labels\":[\"a\"],\"why\":\"x\"}"};
    return mae_llm_store_mark_success(c->db, 7, "page-7", &u);
}
static int op_llm_failed(ctx *c)
{
    return mae_llm_store_mark_failed(c->db, 7, "overloaded", NULL);
}
static int op_txn(ctx *c)
{
    int rc = mae_db_begin(c->db);
    if (rc != MAE_OK)
        return rc;
    rc = mae_outbox_mark_done(c->db, c->outbox_id);
    if (rc == MAE_OK)
        rc = mae_sync_store_mark_synced(c->db, 7, "page-7", NULL, NULL);
    if (rc == MAE_OK)
        rc = mae_db_commit(c->db);
    if (rc != MAE_OK)
        mae_db_rollback(c->db);
    return rc;
}

static void sweep(const char *name, op_fn op)
{
    ctx c;
    char before[1024], after[1024];
    long n;

    for (n = 1; n < MAX_N; n++) {
        long live0 = failalloc_live();
        prepare(&c);
        snapshot(&c, before, sizeof before);
        failalloc_arm(n);
        int rc = op(&c);
        bool failed = failalloc_failed();
        failalloc_disarm();
        if (!failed) {
            assert_int_equal(rc, MAE_OK);
            teardown(&c);
            break;
        }
        if (rc == MAE_OK) {
            /* An allocation failed and was recovered from inside SQLite
             * (it retries some), and the write went through: it must then
             * be complete, like a success. */
            teardown(&c);
            assert_int_equal(failalloc_live(), live0);
            continue;
        }
        if (rc >= 0)
            fail_msg("%s: n=%ld returned %d after an allocation failure", name, n, rc);
        snapshot(&c, after, sizeof after);
        if (strcmp(before, after) != 0)
            fail_msg("%s: n=%ld (rc %d) changed the rows:\n  before %s\n  after  %s", name, n, rc,
                     before, after);
        if (cap_count(c.pub) != 0)
            fail_msg("%s: n=%ld (rc %d) published an event for a failed write", name, n, rc);
        teardown(&c);
        if (failalloc_live() != live0)
            fail_msg("%s: n=%ld leaked %ld blocks", name, n, failalloc_live() - live0);
    }
    print_message("%s: succeeded at n=%ld\n", name, n);
    assert_true(n < MAX_N);
}

static void test_store_operations(void **state)
{
    (void)state;
    /* Warm SQLite's global state up so it does not count as a leak. */
    ctx c;
    prepare(&c);
    teardown(&c);

    sweep("mae_sync_store_upsert", op_upsert);
    sweep("mae_sync_store_mark_synced", op_synced);
    sweep("mae_sync_store_mark_failed", op_email_failed);
    sweep("mae_outbox_enqueue (insert)", op_enqueue_new);
    sweep("mae_outbox_enqueue (merge)", op_enqueue_merge);
    sweep("mae_outbox_mark_processing", op_processing);
    sweep("mae_outbox_mark_done", op_done);
    sweep("mae_outbox_mark_failed", op_outbox_failed);
    sweep("mae_llm_store_mark_success", op_llm_success);
    sweep("mae_llm_store_mark_failed", op_llm_failed);
    sweep("caller transaction", op_txn);
}

static void test_db_open(void **state)
{
    (void)state;
    char path[256];
    long n;
    for (n = 1; n < MAX_N; n++) {
        snprintf(path, sizeof path, "%s/oom-open-%d.db", MAE_TEST_TMPDIR, (int)getpid());
        unlink(path);
        long live0 = failalloc_live();
        mae_db_config cfg;
        mae_db_config_init(&cfg);
        cfg.path = path;
        mae_db *db = NULL;
        failalloc_arm(n);
        int rc = mae_db_open(&cfg, &db);
        bool failed = failalloc_failed();
        failalloc_disarm();
        if (rc == MAE_OK)
            mae_db_close(db);
        else
            assert_null(db);
        if (!failed)
            break;
        assert_true(rc <= 0);
        if (failalloc_live() != live0)
            fail_msg("mae_db_open: n=%ld leaked %ld blocks", n, failalloc_live() - live0);
    }
    print_message("mae_db_open: succeeded at n=%ld\n", n);
    assert_true(n < MAX_N);
}

static void test_publisher_open(void **state)
{
    (void)state;
    long n;
    /* Warm up: the process's first thread makes glibc keep some state. */
    mae_publisher_config warm;
    mae_publisher *wp = NULL;
    mae_publisher_config_init(&warm);
    warm.redis_url = "redis://127.0.0.1:1";
    assert_int_equal(mae_publisher_open(&warm, &wp), MAE_OK);
    mae_publisher_close(wp, 1000);

    for (n = 1; n < MAX_N; n++) {
        long live0 = failalloc_live();
        mae_publisher_config cfg;
        mae_publisher_config_init(&cfg);
        cfg.redis_url = "redis://user:pw@127.0.0.1:1/3";
        mae_publisher *p = NULL;
        failalloc_arm(n);
        int rc = mae_publisher_open(&cfg, &p);
        bool failed = failalloc_failed();
        failalloc_disarm();
        if (rc == MAE_OK) {
            mae_publisher_close(p, 1000);
        } else {
            assert_int_equal(rc, MAE_ENOMEM);
            assert_null(p);
        }
        if (failalloc_live() != live0)
            fail_msg("mae_publisher_open: n=%ld leaked %ld blocks", n, failalloc_live() - live0);
        if (!failed)
            break;
    }
    print_message("mae_publisher_open: succeeded at n=%ld\n", n);
    assert_true(n < MAX_N);
}

static void test_publish_calls(void **state)
{
    (void)state;
    long n;
    for (n = 1; n < MAX_N; n++) {
        long live0 = failalloc_live();
        mae_publisher *p = cap_open();
        failalloc_arm(n);
        mae_safe_publish(p, "email.synced", 5, "{\"notion_page_id\":\"p\"}", "sync_store");
        mae_publish_outbox_failed(p, 5, 9, 2, "boom", 1716096000.5);
        bool failed = failalloc_failed();
        failalloc_disarm();
        mae_publisher_stats st;
        assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
        mae_publisher_stats_get(p, &st);
        /* Each call is counted once: sent, or dropped as invalid when its
         * line could not be built. */
        assert_int_equal(st.calls, 2);
        assert_int_equal(st.published + st.dropped_invalid, 2);
        assert_int_equal(cap_count(p), st.published);
        mae_publisher_close(p, 1000);
        if (failalloc_live() != live0)
            fail_msg("publish: n=%ld leaked %ld blocks", n, failalloc_live() - live0);
        if (!failed)
            break;
    }
    print_message("publish calls: succeeded at n=%ld\n", n);
    assert_true(n < MAX_N);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_publisher_open),
        cmocka_unit_test(test_publish_calls),
        cmocka_unit_test(test_db_open),
        cmocka_unit_test(test_store_operations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
