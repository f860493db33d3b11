/* Out-of-memory sweeps: for every public operation, writes and reads,
 * fail its n-th allocation for n = 1, 2, ... until it succeeds. Each failure
 * must be a clean error with its detail in mae_db_errmsg (or, for the void
 * publish calls, a counted drop), leave every row as it was, publish
 * nothing, and leak nothing. A read must also leave its out-parameter
 * untouched when it fails, and when it succeeds (SQLite recovers from some
 * failures by itself) give exactly the answer it gives with memory to
 * spare. */
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
    int64_t dead_letter_id;   /* set by prepare_rich */
} ctx;

/* The stores' clock: TU_T0 after prepare; an operation may move it. */
static double now_s = TU_T0;

static void open_db(ctx *c)
{
    mae_db_config cfg;
    tu_db_config(&cfg, c->path, c->pub, &now_s);
    assert_int_equal(mae_db_open(&cfg, &c->db), MAE_OK);
}

/* A fresh database with one mail, one pending intent and one LLM row. */
static void prepare(ctx *c)
{
    now_s = TU_T0;
    c->dead_letter_id = 0;
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

/* Every row of the three tables as text, to compare before and after. Read
 * with plain SQLite, not through the reads under test. */
static void snapshot(ctx *c, char *out, size_t n)
{
    static const char *const tables[] = {"email_metadata", "email_outbox", "llm_processing"};
    size_t len = 0;
    out[0] = '\0';
    for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++) {
        char sql[96];
        sqlite3_stmt *st;
        snprintf(sql, sizeof sql, "SELECT * FROM %s ORDER BY rowid", tables[t]);
        assert_int_equal(sqlite3_prepare_v2(mae_db_sqlite(c->db), sql, -1, &st, NULL), SQLITE_OK);
        while (sqlite3_step(st) == SQLITE_ROW) {
            for (int i = 0; i < sqlite3_column_count(st); i++) {
                const unsigned char *v = sqlite3_column_text(st, i);
                len += (size_t)snprintf(out + len, n - len, "%s%s", i ? "|" : "",
                                        v ? (const char *)v : "NULL");
                assert_true(len < n);
            }
            len += (size_t)snprintf(out + len, n - len, "\n");
            assert_true(len < n);
        }
        sqlite3_finalize(st);
    }
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

static int op_retry_dead_letter(ctx *c)
{
    return mae_outbox_retry_dead_letter(c->db, c->dead_letter_id);
}
static int op_llm_pending(ctx *c)
{
    return mae_llm_store_mark_pending(c->db, 7, "page-7b", "Archive");
}
static int op_reset_stale(ctx *c)
{
    int64_t n = 0;
    now_s = TU_T0 + 3600;
    int rc = mae_llm_store_reset_stale_pending(c->db, 0, &n);
    if (rc == MAE_OK)
        assert_int_equal(n, 1);
    return rc;
}

/* prepare, plus rows for every read to find: a failed mail due for retry, a
 * synced one, a failed and a dead-lettered intent, LLM successes and a
 * failure, so that each read returns several rows of each kind. */
static void prepare_rich(ctx *c)
{
    prepare(c);
    for (int64_t id = 8; id <= 10; id++) {
        char mid[32];
        snprintf(mid, sizeof mid, "<m%lld@example.com>", (long long)id);
        mae_email m = {.internal_id = id, .message_id = mid, .subject = "s\xc3\xa9",
                       .date_received = id == 9 ? "2024-05-19" : "2024-05-18"};
        assert_int_equal(mae_sync_store_upsert(c->db, &m), MAE_OK);
    }
    assert_int_equal(mae_sync_store_mark_failed(c->db, 8, "failed", "imap down", NULL), MAE_OK);
    assert_int_equal(mae_sync_store_mark_synced(c->db, 9, "page-9", NULL, NULL), MAE_OK);
    assert_int_equal(mae_sync_store_mark_failed(c->db, 10, "fetch_failed", "dns", NULL), MAE_OK);

    int64_t failed_id, dead_id;
    assert_int_equal(mae_outbox_enqueue(c->db, 8, "flag", "mailapp", "{\"flagged\":true}", "cli",
                                        &failed_id, NULL),
                     MAE_OK);
    assert_int_equal(mae_outbox_mark_failed(c->db, failed_id, "mail.app busy", NULL), MAE_OK);
    assert_int_equal(mae_outbox_enqueue(c->db, 9, "move", "notion", "{\"to\":\"done\"}",
                                        NULL, &dead_id, NULL),
                     MAE_OK);
    for (int i = 0; i < 5; i++)
        assert_int_equal(mae_outbox_mark_failed(c->db, dead_id, "notion 400", NULL), MAE_OK);
    c->dead_letter_id = dead_id;

    for (int64_t id = 8; id <= 9; id++) {
        mae_llm_usage u = {.model = "claude", .input_tokens = 100 * id, .output_tokens = id,
                           .latency_ms = 700 + id, .labels_json = "{\"l\":[\"a\"]}"};
        assert_int_equal(mae_llm_store_mark_success(c->db, id, "page", &u), MAE_OK);
    }
    assert_int_equal(mae_llm_store_mark_failed(c->db, 10, "overloaded", NULL), MAE_OK);
    cap_clear(c->pub);
    /* Late enough for every scheduled retry to be due. */
    now_s = TU_T0 + 100000;
}

/* detail: whether a failure must leave its detail in mae_db_errmsg (not for
 * an op that ends with its own successful rollback, which clears it). */
static void sweep_with(const char *name, op_fn op, void (*setup)(ctx *), bool detail)
{
    ctx c;
    char before[8192], after[8192];
    long n;

    for (n = 1; n < MAX_N; n++) {
        long live0 = failalloc_live();
        setup(&c);
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
        if (detail && mae_db_errmsg(c.db)[0] == '\0')
            fail_msg("%s: n=%ld failed with %d and no detail in mae_db_errmsg", name, n, rc);
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

static void sweep(const char *name, op_fn op)
{
    sweep_with(name, op, prepare, true);
}

/* ---- reads -------------------------------------------------------------------
 * A read op runs one read with the allocation failure armed, then disarms it
 * and writes what it got into text (rc != MAE_OK: checks that the
 * out-parameter was left alone, and writes nothing). */
typedef int (*read_fn)(ctx *c, char *text, size_t n);

/* What an out pointer holds before the call: a failed read must leave it. */
static char untouched;
#define UNTOUCHED ((void *)&untouched)

static size_t put(char *text, size_t n, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static size_t put(char *text, size_t n, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    len += (size_t)vsnprintf(text + len, n - len, fmt, ap);
    va_end(ap);
    assert_true(len < n);
    return len;
}

#define S(x) ((x) ? (x) : "NULL")

static size_t put_email(char *t, size_t n, size_t len, const mae_email_row *r)
{
    return put(t, n, len, "%lld %s %s %s %s %s %lld %.6f %.6f %.6f %d%d\n",
               (long long)r->internal_id, S(r->message_id), S(r->subject), S(r->sync_status),
               S(r->notion_page_id), S(r->sync_error), (long long)r->retry_count,
               r->next_retry_at, r->created_at, r->updated_at, r->is_read, r->is_flagged);
}

static size_t put_intent(char *t, size_t n, size_t len, const mae_outbox_row *r)
{
    return put(t, n, len, "%lld %lld %s %s %s %s %s %lld %s %.6f %.6f %.6f\n",
               (long long)r->outbox_id, (long long)r->internal_id, S(r->op_type), S(r->target),
               S(r->payload_json), S(r->source), S(r->status), (long long)r->attempts,
               S(r->last_error), r->next_retry_at, r->created_at, r->updated_at);
}

static size_t put_llm(char *t, size_t n, size_t len, const mae_llm_row *r)
{
    return put(t, n, len, "%lld %s %s %s %lld %.6f %s %s %lld %lld %lld %lld %lld %s %.6f %.6f\n",
               (long long)r->internal_id, S(r->notion_page_id), S(r->mailbox), S(r->status),
               (long long)r->retry_count, r->next_retry_at, S(r->last_error), S(r->model),
               (long long)r->input_tokens, (long long)r->output_tokens,
               (long long)r->cache_read_input_tokens, (long long)r->cache_creation_input_tokens,
               (long long)r->latency_ms, S(r->labels_json), r->created_at, r->updated_at);
}

static void put_counts(char *t, size_t n, mae_counts *cs)
{
    size_t len = 0;
    for (size_t i = 0; i < cs->count; i++)
        len = put(t, n, len, "%s=%lld\n", cs->items[i].key, (long long)cs->items[i].count);
    mae_counts_free(cs);
}

static void put_emails(char *t, size_t n, mae_email_list *l)
{
    size_t len = put(t, n, 0, "%zu rows\n", l->count);
    for (size_t i = 0; i < l->count; i++)
        len = put_email(t, n, len, &l->rows[i]);
    mae_email_list_free(l);
}

static void put_intents(char *t, size_t n, mae_outbox_list *l)
{
    size_t len = put(t, n, 0, "%zu rows\n", l->count);
    for (size_t i = 0; i < l->count; i++)
        len = put_intent(t, n, len, &l->rows[i]);
    mae_outbox_list_free(l);
}

static void put_llms(char *t, size_t n, mae_llm_list *l)
{
    size_t len = put(t, n, 0, "%zu rows\n", l->count);
    for (size_t i = 0; i < l->count; i++)
        len = put_llm(t, n, len, &l->rows[i]);
    mae_llm_list_free(l);
}

/* The body every pointer-returning read shares: after the call, disarm;
 * on success render the result, on failure check *out was left alone. */
#define READ_INTO(type, call, render)                                                      \
    do {                                                                                   \
        type *out_ = UNTOUCHED;                                                            \
        int rc_ = call;                                                                    \
        failalloc_disarm();                                                                \
        if (rc_ != MAE_OK) {                                                               \
            assert_ptr_equal(out_, UNTOUCHED);                                             \
            return rc_;                                                                    \
        }                                                                                  \
        render;                                                                            \
        return rc_;                                                                        \
    } while (0)

static int rd_email_get(ctx *c, char *t, size_t n)
{
    READ_INTO(mae_email_row, mae_sync_store_get(c->db, 8, &out_),
              (put_email(t, n, 0, out_), mae_email_row_free(out_)));
}
static int rd_email_list(ctx *c, char *t, size_t n)
{
    READ_INTO(mae_email_list, mae_sync_store_list(c->db, NULL, 0, &out_), put_emails(t, n, out_));
}
static int rd_email_list_status(ctx *c, char *t, size_t n)
{
    READ_INTO(mae_email_list, mae_sync_store_list(c->db, "failed", 10, &out_),
              put_emails(t, n, out_));
}
static int rd_email_due(ctx *c, char *t, size_t n)
{
    READ_INTO(mae_email_list, mae_sync_store_due_for_retry(c->db, 0, 0, &out_),
              put_emails(t, n, out_));
}
static int rd_email_counts(ctx *c, char *t, size_t n)
{
    READ_INTO(mae_counts, mae_sync_store_count_by_status(c->db, &out_), put_counts(t, n, out_));
}
static int rd_outbox_get(ctx *c, char *t, size_t n)
{
    READ_INTO(mae_outbox_row, mae_outbox_get(c->db, c->dead_letter_id, &out_),
              (put_intent(t, n, 0, out_), mae_outbox_row_free(out_)));
}
static int rd_outbox_poll(ctx *c, char *t, size_t n)
{
    READ_INTO(mae_outbox_list, mae_outbox_poll_ready(c->db, NULL, 0, &out_),
              put_intents(t, n, out_));
}
static int rd_outbox_for_email(ctx *c, char *t, size_t n)
{
    READ_INTO(mae_outbox_list, mae_outbox_list_for_email(c->db, 7, &out_),
              put_intents(t, n, out_));
}
static int rd_outbox_dead(ctx *c, char *t, size_t n)
{
    READ_INTO(mae_outbox_list, mae_outbox_list_dead_letters(c->db, 0, &out_),
              put_intents(t, n, out_));
}
static int rd_llm_get(ctx *c, char *t, size_t n)
{
    READ_INTO(mae_llm_row, mae_llm_store_get(c->db, 8, &out_),
              (put_llm(t, n, 0, out_), mae_llm_row_free(out_)));
}
static int rd_llm_due(ctx *c, char *t, size_t n)
{
    READ_INTO(mae_llm_list, mae_llm_store_due_for_retry(c->db, 0, 0, &out_),
              put_llms(t, n, out_));
}
static int rd_llm_counts(ctx *c, char *t, size_t n)
{
    READ_INTO(mae_counts, mae_llm_store_count_by_status(c->db, &out_), put_counts(t, n, out_));
}

/* The two reads that fill a caller's struct: it must be left alone on
 * failure (the pattern stays) and fully written on success. */
static int rd_queue_depth(ctx *c, char *t, size_t n)
{
    mae_outbox_depth d, pattern;
    memset(&d, 0xA5, sizeof d);
    memcpy(&pattern, &d, sizeof d);
    int rc = mae_outbox_queue_depth(c->db, &d);
    failalloc_disarm();
    if (rc != MAE_OK) {
        assert_memory_equal(&d, &pattern, sizeof d);
        return rc;
    }
    put(t, n, 0,
        "%lld %lld %lld %lld %lld | %lld %lld %lld | %lld %lld %lld | %lld %lld %lld %lld %.3f\n",
        (long long)d.pending, (long long)d.processing, (long long)d.done, (long long)d.failed,
        (long long)d.dead_letter, (long long)d.mailapp.pending, (long long)d.mailapp.processing,
        (long long)d.mailapp.failed, (long long)d.notion.pending, (long long)d.notion.processing,
        (long long)d.notion.failed, (long long)d.pending_under_1m, (long long)d.pending_under_5m,
        (long long)d.pending_under_30m, (long long)d.pending_over_30m, d.oldest_pending_age_s);
    return rc;
}

static int rd_llm_totals(ctx *c, char *t, size_t n)
{
    mae_llm_totals tot, pattern;
    memset(&tot, 0xA5, sizeof tot);
    memcpy(&pattern, &tot, sizeof tot);
    int rc = mae_llm_store_totals(c->db, &tot);
    failalloc_disarm();
    if (rc != MAE_OK) {
        assert_memory_equal(&tot, &pattern, sizeof tot);
        return rc;
    }
    put(t, n, 0, "%lld %lld %lld %lld %lld %.3f %.3f\n", (long long)tot.successes,
        (long long)tot.input_tokens, (long long)tot.output_tokens,
        (long long)tot.cache_read_input_tokens, (long long)tot.cache_creation_input_tokens,
        tot.latency_mean_ms, tot.latency_p95_ms);
    return rc;
}

static void read_sweep(const char *name, read_fn op)
{
    ctx c;
    char want[8192], got[8192], before[8192], after[8192];
    long n;

    /* The answer with memory to spare. */
    prepare_rich(&c);
    assert_int_equal(op(&c, want, sizeof want), MAE_OK);
    teardown(&c);
    /* A read that finds nothing would prove little: the fixture must give
     * every read something to return. */
    if (want[0] == '\0' || strncmp(want, "0 rows", 6) == 0)
        fail_msg("%s: the fixture gives this read nothing to return", name);
    print_message("%s: %s", name, want);

    for (n = 1; n < MAX_N; n++) {
        long live0 = failalloc_live();
        prepare_rich(&c);
        snapshot(&c, before, sizeof before);
        got[0] = '\0';
        failalloc_arm(n);
        int rc = op(&c, got, sizeof got);
        bool failed = failalloc_failed();
        failalloc_disarm();
        if (rc == MAE_OK) {
            /* Without a failure, or after SQLite recovered from one: the
             * whole answer. */
            if (strcmp(got, want) != 0)
                fail_msg("%s: n=%ld succeeded with a different answer:\n  want %s\n  got  %s",
                         name, n, want, got);
        } else {
            if (!failed)
                fail_msg("%s: n=%ld failed with %d and no allocation failure", name, n, rc);
            if (rc >= 0)
                fail_msg("%s: n=%ld returned %d after an allocation failure", name, n, rc);
            if (mae_db_errmsg(c.db)[0] == '\0')
                fail_msg("%s: n=%ld failed with %d and no detail in mae_db_errmsg", name, n, rc);
        }
        snapshot(&c, after, sizeof after);
        if (strcmp(before, after) != 0)
            fail_msg("%s: n=%ld (rc %d) changed the rows", name, n, rc);
        if (cap_count(c.pub) != 0)
            fail_msg("%s: n=%ld (rc %d) published an event", name, n, rc);
        teardown(&c);
        if (failalloc_live() != live0)
            fail_msg("%s: n=%ld (rc %d) leaked %ld blocks", name, n, rc, failalloc_live() - live0);
        if (!failed)
            break;
    }
    print_message("%s: succeeded at n=%ld\n", name, n);
    assert_true(n < MAX_N);
}

static void test_store_writes_fail_cleanly(void **state)
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
    sweep_with("caller transaction", op_txn, prepare, false);
    sweep_with("mae_outbox_retry_dead_letter", op_retry_dead_letter, prepare_rich, true);
    sweep("mae_llm_store_mark_pending", op_llm_pending);
    sweep("mae_llm_store_reset_stale_pending", op_reset_stale);
}

static void test_store_reads_fail_cleanly(void **state)
{
    (void)state;
    ctx c;
    prepare_rich(&c);
    teardown(&c);

    read_sweep("mae_sync_store_get", rd_email_get);
    read_sweep("mae_sync_store_list", rd_email_list);
    read_sweep("mae_sync_store_list (status)", rd_email_list_status);
    read_sweep("mae_sync_store_due_for_retry", rd_email_due);
    read_sweep("mae_sync_store_count_by_status", rd_email_counts);
    read_sweep("mae_outbox_get", rd_outbox_get);
    read_sweep("mae_outbox_poll_ready", rd_outbox_poll);
    read_sweep("mae_outbox_list_for_email", rd_outbox_for_email);
    read_sweep("mae_outbox_list_dead_letters", rd_outbox_dead);
    read_sweep("mae_outbox_queue_depth", rd_queue_depth);
    read_sweep("mae_llm_store_get", rd_llm_get);
    read_sweep("mae_llm_store_due_for_retry", rd_llm_due);
    read_sweep("mae_llm_store_count_by_status", rd_llm_counts);
    read_sweep("mae_llm_store_totals", rd_llm_totals);
}

static void test_db_open_fails_cleanly(void **state)
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

static void test_publisher_open_fails_cleanly(void **state)
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

static void test_publish_calls_count_what_they_drop(void **state)
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
        cmocka_unit_test(test_publisher_open_fails_cleanly),
        cmocka_unit_test(test_publish_calls_count_what_they_drop),
        cmocka_unit_test(test_db_open_fails_cleanly),
        cmocka_unit_test(test_store_writes_fail_cleanly),
        cmocka_unit_test(test_store_reads_fail_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
