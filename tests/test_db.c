/* Unit tests of the database handle: schema and pragmas, a legacy file made
 * by the original system, open failures (read-only, missing directory,
 * corrupt), full disk, lock timeouts, caller-owned transactions and the
 * internal helpers (error mapping, retry schedule, statement cache). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "capture.h"
#include "testutil.h"
#include "db/db_internal.h"

#define T0 TU_T0

typedef tu_db fx;

static int setup(void **state)
{
    *state = tu_db_new("db");
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    /* A test may have write-protected it; a failed assertion skips its own
     * undo, and an immutable file could not even be removed. */
    chmod(f->path, 0644);
    if (geteuid() == 0) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "chattr -i '%s' 2>/dev/null", f->path);
        if (system(cmd) != 0) {
            /* not immutable, or no chattr: nothing to undo */
        }
    }
    tu_db_free(f);
    return 0;
}

static void open_db(fx *f)
{
    mae_db_config cfg;
    tu_db_config(&cfg, f->path, f->pub, &tu_t0);
    assert_int_equal(mae_db_open(&cfg, &f->db), MAE_OK);
}

static void add_mail(mae_db *db, int64_t id)
{
    char mid[64];
    snprintf(mid, sizeof mid, "<m%lld@example.com>", (long long)id);
    mae_email m = {.internal_id = id, .message_id = mid, .subject = "s"};
    assert_int_equal(mae_sync_store_upsert(db, &m), MAE_OK);
}

/* Runs a query returning one integer or text (as a malloc'd copy). */
static int64_t q_int(sqlite3 *sql, const char *q)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(sql, q, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static char *q_text(sqlite3 *sql, const char *q)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(sql, q, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    const unsigned char *t = sqlite3_column_text(st, 0);
    char *v = strdup(t ? (const char *)t : "(null)");
    sqlite3_finalize(st);
    return v;
}

static const char *const objects[] = {
    "email_metadata", "idx_email_message_id", "idx_email_thread_id",
    "idx_email_date_received", "idx_email_sync_status", "idx_email_mailbox",
    "idx_email_next_retry", "email_outbox", "ux_outbox_pending_intent",
    "idx_outbox_status_retry", "idx_outbox_internal_id", "idx_outbox_target_status",
    "llm_processing", "idx_llm_status", "idx_llm_next_retry",
};

/* ---- schema and pragmas --------------------------------------------------- */

static void test_open_creates_schema(void **state)
{
    fx *f = *state;
    open_db(f);
    sqlite3 *sql = mae_db_sqlite(f->db);
    for (size_t i = 0; i < sizeof objects / sizeof objects[0]; i++) {
        sqlite3_stmt *st;
        assert_int_equal(sqlite3_prepare_v2(sql, "SELECT count(*) FROM sqlite_master WHERE name=?",
                                            -1, &st, NULL),
                         SQLITE_OK);
        sqlite3_bind_text(st, 1, objects[i], -1, SQLITE_STATIC);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        if (sqlite3_column_int(st, 0) != 1)
            fail_msg("missing %s", objects[i]);
        sqlite3_finalize(st);
    }
    char *ux = q_text(sql, "SELECT sql FROM sqlite_master WHERE name='ux_outbox_pending_intent'");
    assert_non_null(strstr(ux, "UNIQUE"));
    assert_non_null(strstr(ux, "(internal_id, op_type, target)"));
    assert_non_null(strstr(ux, "WHERE status='pending'"));
    free(ux);
    /* The columns of docs/stores.md, in order. */
    char *cols = q_text(sql, "SELECT group_concat(name, ',') FROM pragma_table_info('email_metadata')");
    assert_string_equal(cols, "internal_id,message_id,thread_id,subject,sender,sender_name,"
                              "to_addr,cc_addr,date_received,mailbox,is_read,is_flagged,"
                              "sync_status,notion_page_id,notion_thread_id,sync_error,"
                              "retry_count,next_retry_at,created_at,updated_at");
    free(cols);
    cols = q_text(sql, "SELECT group_concat(name, ',') FROM pragma_table_info('email_outbox')");
    assert_string_equal(cols, "outbox_id,internal_id,op_type,target,payload_json,source,status,"
                              "attempts,last_error,next_retry_at,created_at,updated_at");
    free(cols);
    cols = q_text(sql, "SELECT group_concat(name, ',') FROM pragma_table_info('llm_processing')");
    assert_string_equal(cols, "internal_id,notion_page_id,mailbox,status,retry_count,"
                              "next_retry_at,last_error,model,input_tokens,output_tokens,"
                              "cache_read_input_tokens,cache_creation_input_tokens,latency_ms,"
                              "labels_json,created_at,updated_at");
    free(cols);

    char *mode = q_text(sql, "PRAGMA journal_mode");
    assert_string_equal(mode, "wal");
    free(mode);
    assert_int_equal(q_int(sql, "PRAGMA foreign_keys"), 1);
    assert_int_equal(q_int(sql, "PRAGMA busy_timeout"), 30000);
    assert_string_equal(mae_db_errmsg(f->db), "");

    /* A configured busy timeout. */
    mae_db_close(f->db);
    mae_db_config cfg;
    tu_db_config(&cfg, f->path, f->pub, &tu_t0);
    cfg.busy_timeout_ms = 1234;
    assert_int_equal(mae_db_open(&cfg, &f->db), MAE_OK);
    assert_int_equal(q_int(mae_db_sqlite(f->db), "PRAGMA busy_timeout"), 1234);
}

static void test_reopening_changes_nothing(void **state)
{
    fx *f = *state;
    open_db(f);
    add_mail(f->db, 1);
    int64_t n = q_int(mae_db_sqlite(f->db), "SELECT count(*) FROM sqlite_master");
    mae_db_close(f->db);
    f->db = NULL;
    for (int i = 0; i < 3; i++) {
        open_db(f);
        assert_int_equal(q_int(mae_db_sqlite(f->db), "SELECT count(*) FROM sqlite_master"), n);
        mae_email_row *r = NULL;
        assert_int_equal(mae_sync_store_get(f->db, 1, &r), MAE_OK);
        mae_email_row_free(r);
        mae_db_close(f->db);
        f->db = NULL;
    }
    mae_db_close(NULL);
}

static void test_open_refuses_bad_config_and_says_why(void **state)
{
    fx *f = *state;
    mae_db_config cfg;
    char err[256];
    static int sentinel;
    mae_db *db = (mae_db *)&sentinel; /* must stay untouched */

    assert_int_equal(mae_db_open(NULL, &db), MAE_EINVAL);
    tu_db_config(&cfg, f->path, f->pub, &tu_t0);
    cfg.error_buf = err;
    cfg.error_buf_size = sizeof err;
    assert_int_equal(mae_db_open(&cfg, NULL), MAE_EINVAL);
    cfg.path = NULL;
    assert_int_equal(mae_db_open(&cfg, &db), MAE_EINVAL);
    assert_non_null(strstr(err, "path"));
    cfg.path = "";
    assert_int_equal(mae_db_open(&cfg, &db), MAE_EINVAL);
    tu_db_config(&cfg, f->path, f->pub, &tu_t0);
    cfg.error_buf = err;
    cfg.error_buf_size = sizeof err;
    cfg.email_max_retries = 0;
    assert_int_equal(mae_db_open(&cfg, &db), MAE_EINVAL);
    cfg.email_max_retries = 5;
    cfg.busy_timeout_ms = -1;
    assert_int_equal(mae_db_open(&cfg, &db), MAE_EINVAL);
    assert_ptr_equal(db, (mae_db *)&sentinel);
    mae_db_config_init(NULL); /* no crash */
}

/* ---- a file made by the original system --------------------------------- */

static const char legacy_schema[] =
    "CREATE TABLE email_metadata (internal_id INTEGER PRIMARY KEY, message_id TEXT UNIQUE,"
    " thread_id TEXT, subject TEXT, sender TEXT, sender_name TEXT, to_addr TEXT, cc_addr TEXT,"
    " date_received TEXT, mailbox TEXT, is_read INTEGER DEFAULT 0, is_flagged INTEGER DEFAULT 0,"
    " sync_status TEXT DEFAULT 'pending', notion_page_id TEXT, notion_thread_id TEXT,"
    " sync_error TEXT, retry_count INTEGER DEFAULT 0, next_retry_at REAL, created_at REAL,"
    " updated_at REAL, legacy_note TEXT DEFAULT 'keep-me', priority INTEGER DEFAULT 3);"
    "CREATE INDEX legacy_idx_sender ON email_metadata(sender);"
    "CREATE TABLE email_outbox (outbox_id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " internal_id INTEGER NOT NULL REFERENCES email_metadata(internal_id) ON DELETE CASCADE,"
    " op_type TEXT NOT NULL, target TEXT NOT NULL CHECK (target IN ('mailapp','notion')),"
    " payload_json TEXT NOT NULL, source TEXT, status TEXT NOT NULL DEFAULT 'pending'"
    " CHECK (status IN ('pending','processing','done','failed','dead_letter')),"
    " attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, next_retry_at REAL,"
    " created_at REAL NOT NULL, updated_at REAL NOT NULL, legacy_flag INTEGER DEFAULT 7);"
    "CREATE TABLE llm_processing (internal_id INTEGER PRIMARY KEY, notion_page_id TEXT,"
    " mailbox TEXT, status TEXT, retry_count INTEGER DEFAULT 0, next_retry_at REAL,"
    " last_error TEXT, model TEXT, input_tokens INTEGER, output_tokens INTEGER,"
    " cache_read_input_tokens INTEGER, cache_creation_input_tokens INTEGER, latency_ms INTEGER,"
    " labels_json TEXT, created_at REAL, updated_at REAL, legacy_cost REAL DEFAULT 0.5);"
    "CREATE TABLE legacy_audit (id INTEGER PRIMARY KEY, note TEXT);"
    "INSERT INTO legacy_audit (note) VALUES ('first'), ('second');"
    "INSERT INTO email_metadata (internal_id, message_id, subject, date_received, sync_status,"
    " retry_count, created_at, updated_at, legacy_note, priority) VALUES"
    " (100, '<old100@x>', 'old mail', '2023-01-01', 'failed', 2, 1.0, 2.0, 'note-100', 9),"
    " (101, '<old101@x>', 'old synced', '2023-01-02', 'synced', 0, 1.0, 2.0, 'note-101', 8),"
    " (102, '<old102@x>', 'no count', '2023-01-03', 'pending', NULL, NULL, NULL, 'note-102', 7);"
    "INSERT INTO email_outbox (internal_id, op_type, target, payload_json, created_at,"
    " updated_at, legacy_flag) VALUES (100, 'flag', 'notion', '{\"flagged\":true}', 1.0, 1.0, 42);"
    "INSERT INTO llm_processing (internal_id, status, retry_count, created_at, updated_at,"
    " legacy_cost) VALUES (100, 'failed', 1, 1.0, 1.0, 1.25), (101, 'pending', 0, 1.0, 1.0, 2.5);";

static void test_database_of_the_original_system_works_unchanged(void **state)
{
    fx *f = *state;
    sqlite3 *raw;
    assert_int_equal(sqlite3_open(f->path, &raw), SQLITE_OK);
    assert_int_equal(sqlite3_exec(raw, legacy_schema, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(raw);

    open_db(f);
    sqlite3 *sql = mae_db_sqlite(f->db);
    /* Missing indexes were added; the legacy one is still there. */
    assert_int_equal(q_int(sql, "SELECT count(*) FROM sqlite_master WHERE name IN "
                                "('ux_outbox_pending_intent','idx_llm_status',"
                                "'legacy_idx_sender')"),
                     3);

    /* Every operation of the sync store. */
    mae_email_row *r = NULL;
    assert_int_equal(mae_sync_store_get(f->db, 100, &r), MAE_OK);
    assert_string_equal(r->subject, "old mail");
    assert_int_equal(r->retry_count, 2);
    mae_email_row_free(r);
    mae_email m = {.internal_id = 100, .message_id = "<old100@x>", .subject = "updated"};
    assert_int_equal(mae_sync_store_upsert(f->db, &m), MAE_OK);
    add_mail(f->db, 200);
    mae_retry_outcome out;
    assert_int_equal(mae_sync_store_mark_failed(f->db, 100, "failed", "e", &out), MAE_OK);
    assert_int_equal(out.attempts, 3);
    assert_int_equal(mae_sync_store_mark_failed(f->db, 102, "fetch_failed", "e", &out), MAE_OK);
    assert_int_equal(out.attempts, 1); /* NULL retry_count counts as 0 */
    assert_int_equal(mae_sync_store_mark_synced(f->db, 101, "page-101", "t", "cli"), MAE_OK);
    assert_int_equal(mae_sync_store_mark_synced(f->db, 200, "page-200", NULL, NULL), MAE_OK);
    mae_email_list *l = NULL;
    assert_int_equal(mae_sync_store_list(f->db, NULL, 0, &l), MAE_OK);
    assert_int_equal(l->count, 4);
    mae_email_list_free(l);
    assert_int_equal(mae_sync_store_due_for_retry(f->db, T0 + 1e6, 0, &l), MAE_OK);
    assert_int_equal(l->count, 2);
    mae_email_list_free(l);
    mae_counts *c = NULL;
    assert_int_equal(mae_sync_store_count_by_status(f->db, &c), MAE_OK);
    assert_int_equal(c->count, 3);
    mae_counts_free(c);

    /* Every operation of the LLM store. */
    assert_int_equal(mae_llm_store_mark_failed(f->db, 100, "e", &out), MAE_OK);
    assert_int_equal(out.attempts, 2);
    assert_int_equal(mae_llm_store_mark_pending(f->db, 102, "p", "INBOX"), MAE_OK);
    mae_llm_usage u = {.model = "m", .input_tokens = 3, .latency_ms = 10,
                       .labels_json = "{\"b\":1,\"a\":2}"};
    assert_int_equal(mae_llm_store_mark_success(f->db, 200, "p", &u), MAE_OK);
    int64_t reset = 0;
    assert_int_equal(mae_llm_store_reset_stale_pending(f->db, 0, &reset), MAE_OK);
    assert_int_equal(reset, 1); /* 101, pending since epoch 1.0 */
    mae_llm_row *lr = NULL;
    assert_int_equal(mae_llm_store_get(f->db, 101, &lr), MAE_OK);
    assert_string_equal(lr->status, "failed");
    mae_llm_row_free(lr);
    mae_llm_list *ll = NULL;
    assert_int_equal(mae_llm_store_due_for_retry(f->db, T0 + 1e6, 0, &ll), MAE_OK);
    assert_int_equal(ll->count, 2);
    mae_llm_list_free(ll);
    assert_int_equal(mae_llm_store_count_by_status(f->db, &c), MAE_OK);
    assert_int_equal(c->count, 3);
    mae_counts_free(c);
    mae_llm_totals t;
    assert_int_equal(mae_llm_store_totals(f->db, &t), MAE_OK);
    assert_int_equal(t.successes, 1);
    assert_int_equal(t.input_tokens, 3);

    /* The columns and the table the library does not know are untouched. */
    char *v = q_text(sql, "SELECT group_concat(internal_id || ':' || legacy_note || ':' || "
                          "priority, ',') FROM (SELECT * FROM email_metadata ORDER BY internal_id)");
    assert_string_equal(v, "100:note-100:9,101:note-101:8,102:note-102:7,200:keep-me:3");
    free(v);
    v = q_text(sql, "SELECT group_concat(internal_id || ':' || legacy_cost, ',') FROM "
                    "(SELECT * FROM llm_processing ORDER BY internal_id)");
    assert_string_equal(v, "100:1.25,101:2.5,102:0.5,200:0.5");
    free(v);
    v = q_text(sql, "SELECT group_concat(note, ',') FROM legacy_audit");
    assert_string_equal(v, "first,second");
    free(v);
    v = q_text(sql, "SELECT legacy_flag || payload_json FROM email_outbox");
    assert_string_equal(v, "42{\"flagged\":true}");
    free(v);
    assert_int_equal(q_int(sql, "SELECT count(*) FROM pragma_table_info('email_metadata')"), 22);

    /* And the events went out as usual. */
    assert_int_equal(cap_count(f->pub), 6);
}

/* ---- open failures -------------------------------------------------------- */

static void test_read_only_handle_reads_and_refuses_writes(void **state)
{
    fx *f = *state;
    open_db(f);
    add_mail(f->db, 1);
    mae_db_close(f->db);
    f->db = NULL;
    cap_clear(f->pub);

    mae_db_config cfg;
    tu_db_config(&cfg, f->path, f->pub, &tu_t0);
    cfg.read_only = true;
    assert_int_equal(mae_db_open(&cfg, &f->db), MAE_OK);
    mae_email_row *r = NULL;
    assert_int_equal(mae_sync_store_get(f->db, 1, &r), MAE_OK);
    mae_email_row_free(r);
    assert_int_equal(mae_sync_store_mark_synced(f->db, 1, "p", NULL, NULL), MAE_EDB);
    assert_non_null(strstr(mae_db_errmsg(f->db), "read-only"));
    assert_int_equal(mae_llm_store_mark_failed(f->db, 1, "e", NULL), MAE_EDB);
    /* Even raw SQL cannot write through it. */
    assert_int_not_equal(sqlite3_exec(mae_db_sqlite(f->db),
                                      "UPDATE email_metadata SET subject='x'", NULL, NULL, NULL),
                         SQLITE_OK);
    assert_int_equal(cap_count(f->pub), 0);
    mae_db_close(f->db);
    f->db = NULL;

    /* read_only creates nothing: a missing file is an error. */
    char missing[300], err[256] = "";
    snprintf(missing, sizeof missing, "%s.missing", f->path);
    cfg.path = missing;
    cfg.error_buf = err;
    cfg.error_buf_size = sizeof err;
    mae_db *db = NULL;
    assert_int_equal(mae_db_open(&cfg, &db), MAE_EDB);
    assert_null(db);
    assert_true(strlen(err) > 0);
    assert_int_equal(access(missing, F_OK), -1);

    /* A write-protected file: mode 0444, and for root, who ignores mode
     * bits, the immutable attribute (ext4 and most Linux filesystems). */
    char cmd[600];
    bool protected_file = false;
    if (geteuid() != 0) {
        protected_file = chmod(f->path, 0444) == 0;
    } else {
        snprintf(cmd, sizeof cmd, "chattr +i '%s' 2>/dev/null", f->path);
        protected_file = system(cmd) == 0;
    }
    if (protected_file) {
        tu_db_config(&cfg, f->path, f->pub, &tu_t0);
        int rc = mae_db_open(&cfg, &db);
        if (rc == MAE_OK) {
            assert_int_equal(mae_sync_store_mark_synced(db, 1, "p", NULL, NULL), MAE_EDB);
            assert_true(strlen(mae_db_errmsg(db)) > 0);
            mae_db_close(db);
        } else {
            assert_int_equal(rc, MAE_EDB);
        }
        assert_int_equal(cap_count(f->pub), 0);
        if (geteuid() != 0) {
            chmod(f->path, 0644);
        } else {
            snprintf(cmd, sizeof cmd, "chattr -i '%s'", f->path);
            assert_int_equal(system(cmd), 0);
        }
    } else {
        print_message("no way to write-protect the file here: that check skipped\n");
    }
}

static void test_open_names_a_missing_directory(void **state)
{
    fx *f = *state;
    char path[300], err[256] = "";
    mae_db_config cfg;
    mae_db *db = NULL;
    snprintf(path, sizeof path, "%s/no-such-dir-%d/x.db", MAE_TEST_TMPDIR, (int)getpid());
    tu_db_config(&cfg, f->path, f->pub, &tu_t0);
    cfg.path = path;
    cfg.error_buf = err;
    cfg.error_buf_size = sizeof err;
    assert_int_equal(mae_db_open(&cfg, &db), MAE_EDB);
    assert_null(db);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "directory does not exist"));
}

static void test_garbage_or_corrupt_file_is_a_clear_error(void **state)
{
    fx *f = *state;
    char err[256] = "";
    mae_db_config cfg;
    mae_db *db = NULL;

    /* Not a database at all. */
    FILE *fp = fopen(f->path, "wb");
    assert_non_null(fp);
    for (int i = 0; i < 8192; i++)
        fputc((i * 7919 + 13) & 0xff, fp);
    fclose(fp);
    tu_db_config(&cfg, f->path, f->pub, &tu_t0);
    cfg.error_buf = err;
    cfg.error_buf_size = sizeof err;
    assert_int_equal(mae_db_open(&cfg, &db), MAE_EDB);
    assert_null(db);
    assert_non_null(strstr(err, "not an SQLite database"));

    /* A database whose pages were overwritten after the header. */
    tu_remove_db(f->path);
    open_db(f);
    add_mail(f->db, 1);
    mae_db_close(f->db);
    f->db = NULL;
    fp = fopen(f->path, "r+b");
    assert_non_null(fp);
    fseek(fp, 100, SEEK_SET);
    for (int i = 0; i < 4000; i++)
        fputc(0xA5, fp);
    fclose(fp);
    err[0] = '\0';
    assert_int_equal(mae_db_open(&cfg, &db), MAE_EDB);
    assert_null(db);
    assert_true(strlen(err) > 0);
    print_message("corrupt: %s\n", err);
}

/* ---- write failures ------------------------------------------------------- */

static void test_full_disk_fails_the_write_and_publishes_nothing(void **state)
{
    fx *f = *state;
    open_db(f);
    add_mail(f->db, 1);
    cap_clear(f->pub);
    sqlite3 *sql = mae_db_sqlite(f->db);
    int64_t pages = q_int(sql, "PRAGMA page_count");
    char pragma[64];
    snprintf(pragma, sizeof pragma, "PRAGMA max_page_count=%lld", (long long)pages);
    assert_int_equal(sqlite3_exec(sql, pragma, NULL, NULL, NULL), SQLITE_OK);

    char *big = malloc(200000);
    assert_non_null(big);
    memset(big, 'x', 199999);
    big[199999] = '\0';
    mae_email m = {.internal_id = 2, .message_id = "<m2>", .subject = big};
    assert_int_equal(mae_sync_store_upsert(f->db, &m), MAE_EDB);
    assert_non_null(strstr(mae_db_errmsg(f->db), "full"));
    mae_email_row *r = NULL;
    assert_int_equal(mae_sync_store_get(f->db, 2, &r), MAE_ENOTFOUND);

    /* A big labels object fails the same way, with no event. */
    char *labels = malloc(210000);
    assert_non_null(labels);
    snprintf(labels, 210000, "{\"a\":\"%s\",\"b\":\"%s\",\"c\":[", big + 199000, big + 199000);
    size_t n = strlen(labels);
    for (int i = 0; i < 3000; i++)
        n += (size_t)sprintf(labels + n, "%s\"%04d-%s\"", i ? "," : "", i, big + 199950);
    strcpy(labels + n, "]}");
    mae_llm_usage u = {.model = "m", .labels_json = labels};
    assert_int_equal(mae_llm_store_mark_success(f->db, 1, NULL, &u), MAE_EDB);
    mae_llm_row *lr = NULL;
    assert_int_equal(mae_llm_store_get(f->db, 1, &lr), MAE_ENOTFOUND);
    assert_int_equal(cap_count(f->pub), 0);

    /* Room again: the handle still works. */
    assert_int_equal(sqlite3_exec(sql, "PRAGMA max_page_count=1000000", NULL, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(mae_sync_store_upsert(f->db, &m), MAE_OK);
    assert_int_equal(mae_sync_store_mark_synced(f->db, 2, "p", NULL, NULL), MAE_OK);
    assert_int_equal(cap_count(f->pub), 1);
    free(big);
    free(labels);
}

static void test_lock_held_past_busy_timeout_is_ebusy(void **state)
{
    fx *f = *state;
    mae_db_config cfg;
    tu_db_config(&cfg, f->path, f->pub, &tu_t0);
    cfg.busy_timeout_ms = 100;
    assert_int_equal(mae_db_open(&cfg, &f->db), MAE_OK);
    add_mail(f->db, 1);
    cap_clear(f->pub);

    sqlite3 *other;
    assert_int_equal(sqlite3_open(f->path, &other), SQLITE_OK);
    assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);

    assert_int_equal(mae_sync_store_mark_synced(f->db, 1, "p", NULL, NULL), MAE_EBUSY);
    assert_non_null(strstr(mae_db_errmsg(f->db), "locked"));
    assert_int_equal(mae_sync_store_mark_failed(f->db, 1, "failed", "e", NULL), MAE_EBUSY);
    assert_int_equal(mae_llm_store_mark_failed(f->db, 1, "e", NULL), MAE_EBUSY);
    assert_int_equal(mae_db_begin(f->db), MAE_EBUSY);
    /* Reads still work in WAL while another connection writes. */
    mae_email_row *r = NULL;
    assert_int_equal(mae_sync_store_get(f->db, 1, &r), MAE_OK);
    assert_string_equal(r->sync_status, "pending");
    assert_int_equal(r->retry_count, 0);
    mae_email_row_free(r);
    assert_int_equal(cap_count(f->pub), 0);

    assert_int_equal(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(other);
    assert_int_equal(mae_sync_store_mark_synced(f->db, 1, "p", NULL, NULL), MAE_OK);
    assert_int_equal(cap_count(f->pub), 1);
}

/* The watcher, the CLI and a fan-out worker are separate processes: a
 * writer in another process holding the lock past the busy timeout gives
 * MAE_EBUSY, no row change and no event. */
static void test_lock_held_by_another_process_is_ebusy(void **state)
{
    fx *f = *state;
    mae_db_config cfg;
    tu_db_config(&cfg, f->path, f->pub, &tu_t0);
    cfg.busy_timeout_ms = 100;
    assert_int_equal(mae_db_open(&cfg, &f->db), MAE_OK);
    add_mail(f->db, 1);
    cap_clear(f->pub);

    int locked[2], release[2];
    assert_int_equal(pipe(locked), 0);
    assert_int_equal(pipe(release), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        sqlite3 *other;
        char c = 'L';
        int ok = sqlite3_open(f->path, &other) == SQLITE_OK &&
                 sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK;
        if (!ok)
            c = 'E';
        if (write(locked[1], &c, 1) != 1 || read(release[0], &c, 1) != 1)
            _exit(1);
        sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL);
        sqlite3_close(other);
        _exit(0);
    }
    char c = 0;
    assert_int_equal(read(locked[0], &c, 1), 1);
    assert_int_equal(c, 'L');

    assert_int_equal(mae_sync_store_mark_synced(f->db, 1, "p", NULL, NULL), MAE_EBUSY);
    assert_int_equal(mae_outbox_enqueue(f->db, 1, "flag", "notion", "{}", NULL, NULL, NULL),
                     MAE_EBUSY);
    mae_email_row *r = NULL;
    assert_int_equal(mae_sync_store_get(f->db, 1, &r), MAE_OK);
    assert_string_equal(r->sync_status, "pending");
    mae_email_row_free(r);
    assert_int_equal(cap_count(f->pub), 0);

    c = 'R';
    assert_int_equal(write(release[1], &c, 1), 1);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    for (int i = 0; i < 2; i++) {
        close(locked[i]);
        close(release[i]);
    }
    assert_int_equal(mae_sync_store_mark_synced(f->db, 1, "p", NULL, NULL), MAE_OK);
    assert_int_equal(cap_count(f->pub), 1);
}

/* ---- caller-owned transactions ------------------------------------------- */

static void test_commit_publishes_held_events_in_order(void **state)
{
    fx *f = *state;
    open_db(f);
    add_mail(f->db, 1);
    add_mail(f->db, 2);
    cap_clear(f->pub);

    assert_int_equal(mae_db_begin(f->db), MAE_OK);
    assert_int_equal(mae_db_begin(f->db), MAE_EINVAL);
    assert_int_equal(sqlite3_exec(mae_db_sqlite(f->db),
                                  "UPDATE email_metadata SET is_read = 1 WHERE internal_id = 1",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(mae_sync_store_mark_synced(f->db, 1, "page-1", NULL, MAE_SOURCE_CLI), MAE_OK);
    assert_int_equal(mae_sync_store_mark_failed(f->db, 2, "failed", "boom", NULL), MAE_OK);
    mae_llm_usage u = {.model = "m", .input_tokens = 1, .output_tokens = 2, .latency_ms = 3};
    assert_int_equal(mae_llm_store_mark_success(f->db, 1, NULL, &u), MAE_OK);
    assert_int_equal(cap_count(f->pub), 0); /* held */

    /* Another connection does not see the writes yet. */
    sqlite3 *other;
    assert_int_equal(sqlite3_open(f->path, &other), SQLITE_OK);
    assert_int_equal(q_int(other, "SELECT count(*) FROM email_metadata WHERE sync_status='synced'"),
                     0);

    assert_int_equal(mae_db_commit(f->db), MAE_OK);
    assert_int_equal(cap_count(f->pub), 3);
    cap_assert_line(cap_line(f->pub, 0),
                    "{\"event_type\":\"email.synced\",\"ts\":TS,\"internal_id\":1,\"data\":"
                    "{\"notion_page_id\":\"page-1\"},\"source\":\"cli\"}");
    char expected[512];
    snprintf(expected, sizeof expected,
             "{\"event_type\":\"email.failed\",\"ts\":TS,\"internal_id\":2,\"data\":{\"status\":"
             "\"failed\",\"retry_count\":1,\"next_retry_at\":%.6f,\"error\":\"boom\"},"
             "\"source\":\"sync_store\"}",
             T0 + 60);
    cap_assert_line(cap_line(f->pub, 1), expected);
    cap_assert_line(cap_line(f->pub, 2),
                    "{\"event_type\":\"llm.success\",\"ts\":TS,\"internal_id\":1,\"data\":"
                    "{\"model\":\"m\",\"input_tokens\":1,\"output_tokens\":2,\"latency_ms\":3},"
                    "\"source\":\"llm_agent\"}");
    assert_int_equal(q_int(other, "SELECT count(*) FROM email_metadata WHERE sync_status='synced'"
                                  " AND is_read = 1"),
                     1);
    sqlite3_close(other);

    assert_int_equal(mae_db_commit(f->db), MAE_EINVAL);
    assert_int_equal(mae_db_rollback(f->db), MAE_EINVAL);
    assert_int_equal(mae_db_begin(NULL), MAE_EINVAL);
    assert_int_equal(mae_db_commit(NULL), MAE_EINVAL);
    assert_int_equal(mae_db_rollback(NULL), MAE_EINVAL);
}

static void test_rollback_publishes_nothing(void **state)
{
    fx *f = *state;
    open_db(f);
    add_mail(f->db, 1);
    cap_clear(f->pub);

    assert_int_equal(mae_db_begin(f->db), MAE_OK);
    assert_int_equal(mae_sync_store_mark_synced(f->db, 1, "page-1", NULL, NULL), MAE_OK);
    add_mail(f->db, 2);
    assert_int_equal(mae_llm_store_mark_failed(f->db, 1, "e", NULL), MAE_OK);
    assert_int_equal(mae_db_rollback(f->db), MAE_OK);
    assert_int_equal(cap_count(f->pub), 0);
    mae_email_row *r = NULL;
    assert_int_equal(mae_sync_store_get(f->db, 1, &r), MAE_OK);
    assert_string_equal(r->sync_status, "pending");
    assert_null(r->notion_page_id);
    mae_email_row_free(r);
    assert_int_equal(mae_sync_store_get(f->db, 2, &r), MAE_ENOTFOUND);
    mae_llm_row *lr = NULL;
    assert_int_equal(mae_llm_store_get(f->db, 1, &lr), MAE_ENOTFOUND);

    /* After the rollback, writes commit and publish on their own again. */
    assert_int_equal(mae_sync_store_mark_synced(f->db, 1, "page-1", NULL, NULL), MAE_OK);
    assert_int_equal(cap_count(f->pub), 1);

    /* Closing with a transaction open rolls it back and publishes nothing. */
    cap_clear(f->pub);
    assert_int_equal(mae_db_begin(f->db), MAE_OK);
    assert_int_equal(mae_sync_store_mark_failed(f->db, 1, "failed", "e", NULL), MAE_OK);
    mae_db_close(f->db);
    f->db = NULL;
    assert_int_equal(cap_count(f->pub), 0);
    open_db(f);
    assert_int_equal(mae_sync_store_get(f->db, 1, &r), MAE_OK);
    assert_string_equal(r->sync_status, "synced");
    assert_int_equal(r->retry_count, 0);
    mae_email_row_free(r);
}

static void test_failed_write_in_transaction_keeps_the_rest(void **state)
{
    fx *f = *state;
    open_db(f);
    add_mail(f->db, 1);
    add_mail(f->db, 2);
    cap_clear(f->pub);

    assert_int_equal(mae_db_begin(f->db), MAE_OK);
    assert_int_equal(sqlite3_exec(mae_db_sqlite(f->db),
                                  "UPDATE email_metadata SET is_flagged = 1 WHERE internal_id = 2",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(mae_sync_store_mark_synced(f->db, 1, "page-1", NULL, NULL), MAE_OK);
    /* Failures of several kinds in the middle. */
    assert_int_equal(mae_sync_store_mark_synced(f->db, 999, "p", NULL, NULL), MAE_ENOTFOUND);
    mae_email dup = {.internal_id = 3, .message_id = "<m1@example.com>"};
    assert_int_equal(mae_sync_store_upsert(f->db, &dup), MAE_EDB);
    assert_int_equal(mae_sync_store_mark_failed(f->db, 2, "bogus", "e", NULL), MAE_EINVAL);
    mae_llm_usage bad = {.model = "m", .labels_json = "[1]"};
    assert_int_equal(mae_llm_store_mark_success(f->db, 2, NULL, &bad), MAE_EINVAL);
    assert_int_equal(mae_sync_store_mark_failed(f->db, 2, "failed", "e2", NULL), MAE_OK);
    assert_int_equal(cap_count(f->pub), 0);
    assert_int_equal(mae_db_commit(f->db), MAE_OK);

    assert_int_equal(cap_count(f->pub), 2);
    assert_non_null(strstr(cap_line(f->pub, 0), "\"email.synced\""));
    assert_non_null(strstr(cap_line(f->pub, 1), "\"email.failed\""));
    mae_email_row *r = NULL;
    assert_int_equal(mae_sync_store_get(f->db, 2, &r), MAE_OK);
    assert_true(r->is_flagged);
    assert_string_equal(r->sync_status, "failed");
    mae_email_row_free(r);
    assert_int_equal(mae_sync_store_get(f->db, 1, &r), MAE_OK);
    assert_string_equal(r->sync_status, "synced");
    mae_email_row_free(r);
    assert_int_equal(mae_sync_store_get(f->db, 3, &r), MAE_ENOTFOUND);
}

/* A commit that fails keeps the transaction and its events: here a deferred
 * foreign key that the caller then repairs. */
static void test_failed_commit_keeps_transaction_and_events(void **state)
{
    fx *f = *state;
    open_db(f);
    add_mail(f->db, 1);
    cap_clear(f->pub);
    sqlite3 *sql = mae_db_sqlite(f->db);

    assert_int_equal(mae_db_begin(f->db), MAE_OK);
    assert_int_equal(sqlite3_exec(sql, "PRAGMA defer_foreign_keys = ON", NULL, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_exec(sql,
                                  "INSERT INTO email_outbox (internal_id, op_type, target,"
                                  " payload_json, created_at, updated_at)"
                                  " VALUES (777, 'flag', 'notion', '{}', 1, 1)",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(mae_sync_store_mark_synced(f->db, 1, "page-1", NULL, NULL), MAE_OK);
    int rc = mae_db_commit(f->db);
    assert_true(rc < 0);
    assert_true(strlen(mae_db_errmsg(f->db)) > 0);
    assert_int_equal(cap_count(f->pub), 0);

    assert_int_equal(sqlite3_exec(sql, "DELETE FROM email_outbox WHERE internal_id = 777", NULL,
                                  NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(mae_db_commit(f->db), MAE_OK);
    assert_int_equal(cap_count(f->pub), 1);
    cap_assert_line(cap_line(f->pub, 0),
                    "{\"event_type\":\"email.synced\",\"ts\":TS,\"internal_id\":1,\"data\":"
                    "{\"notion_page_id\":\"page-1\"},\"source\":\"sync_store\"}");
}

/* Whatever SQLite does with the transaction after a full disk inside it,
 * an event is published if and only if its write was committed. */
static void test_full_disk_in_transaction_publishes_only_what_committed(void **state)
{
    fx *f = *state;
    open_db(f);
    add_mail(f->db, 1);
    cap_clear(f->pub);
    sqlite3 *sql = mae_db_sqlite(f->db);

    assert_int_equal(mae_db_begin(f->db), MAE_OK);
    assert_int_equal(mae_sync_store_mark_synced(f->db, 1, "page-1", NULL, NULL), MAE_OK);
    int64_t pages = q_int(sql, "PRAGMA page_count");
    char pragma[64];
    snprintf(pragma, sizeof pragma, "PRAGMA max_page_count=%lld", (long long)pages);
    assert_int_equal(sqlite3_exec(sql, pragma, NULL, NULL, NULL), SQLITE_OK);
    char *big = malloc(100000);
    assert_non_null(big);
    memset(big, 'y', 99999);
    big[99999] = '\0';
    mae_email m = {.internal_id = 2, .message_id = "<m2>", .subject = big};
    assert_int_equal(mae_sync_store_upsert(f->db, &m), MAE_EDB);
    free(big);
    int rc = mae_db_commit(f->db);
    if (rc != MAE_OK)
        mae_db_rollback(f->db); /* may be EINVAL if the commit already ended it */
    assert_int_equal(sqlite3_exec(sql, "PRAGMA max_page_count=1000000", NULL, NULL, NULL),
                     SQLITE_OK);
    mae_email_row *r = NULL;
    assert_int_equal(mae_sync_store_get(f->db, 1, &r), MAE_OK);
    bool committed = strcmp(r->sync_status, "synced") == 0;
    mae_email_row_free(r);
    assert_int_equal(committed, rc == MAE_OK);
    assert_int_equal(cap_count(f->pub), committed ? 1 : 0);
    assert_int_equal(mae_sync_store_get(f->db, 2, &r), MAE_ENOTFOUND);
    /* The handle is usable afterwards. */
    assert_int_equal(mae_sync_store_mark_failed(f->db, 1, "failed", "e", NULL), MAE_OK);
}

/* ---- internal helpers ----------------------------------------------------- */

static void test_retry_waits_follow_the_schedule(void **state)
{
    (void)state;
    assert_true(mae__retry_delay(1) == 60);
    assert_true(mae__retry_delay(2) == 300);
    assert_true(mae__retry_delay(3) == 900);
    assert_true(mae__retry_delay(4) == 3600);
    assert_true(mae__retry_delay(5) == 7200);
    assert_true(mae__retry_delay(6) == 7200);
    assert_true(mae__retry_delay(1000000) == 7200);
    assert_true(mae__retry_delay(0) == 60);
}

static void test_sqlite_failures_map_to_result_codes_with_detail(void **state)
{
    fx *f = *state;
    open_db(f);
    assert_int_equal(mae__db_sqlite_error(f->db, SQLITE_BUSY, "doing x"), MAE_EBUSY);
    assert_non_null(strstr(mae_db_errmsg(f->db), "doing x"));
    assert_int_equal(mae__db_sqlite_error(f->db, SQLITE_LOCKED, "x"), MAE_EBUSY);
    assert_int_equal(mae__db_sqlite_error(f->db, SQLITE_BUSY_SNAPSHOT, "x"), MAE_EBUSY);
    assert_int_equal(mae__db_sqlite_error(f->db, SQLITE_NOMEM, "x"), MAE_ENOMEM);
    assert_int_equal(mae__db_sqlite_error(f->db, SQLITE_FULL, "writing y"), MAE_EDB);
    assert_non_null(strstr(mae_db_errmsg(f->db), "writing y"));
    assert_int_equal(mae__db_sqlite_error(f->db, SQLITE_READONLY, "x"), MAE_EDB);
    assert_int_equal(mae__db_sqlite_error(f->db, SQLITE_CORRUPT, "x"), MAE_EDB);
    assert_int_equal(mae__db_sqlite_error(f->db, SQLITE_IOERR, "x"), MAE_EDB);
    assert_int_equal(mae__db_sqlite_error(f->db, SQLITE_OK, "x"), MAE_EDB);
    assert_int_equal(mae__db_error(f->db, MAE_EINVAL, "bad %s", "thing"), MAE_EINVAL);
    assert_string_equal(mae_db_errmsg(f->db), "invalid argument: bad thing");
    mae__db_clear_error(f->db);
    assert_string_equal(mae_db_errmsg(f->db), "");

    /* A long detail is cut at a UTF-8 boundary. */
    char big[600];
    for (int i = 0; i < 299; i++)
        memcpy(big + 2 * i, "\xc3\xa9", 2);
    big[598] = '\0';
    mae__db_error(f->db, MAE_EDB, "%s", big);
    const char *m = mae_db_errmsg(f->db);
    size_t n = strlen(m);
    assert_true(n < 256);
    assert_true(((unsigned char)m[n - 1] == 0xa9) || m[n - 1] == ' ');
}

static char stmt_texts[100][32];

static void test_many_distinct_statements_stay_correct(void **state)
{
    fx *f = *state;
    sqlite3_stmt *first[100];
    open_db(f);
    for (int i = 0; i < 100; i++) {
        snprintf(stmt_texts[i], sizeof stmt_texts[i], "SELECT %d", i);
        assert_int_equal(mae__db_stmt(f->db, stmt_texts[i], &first[i]), MAE_OK);
    }
    for (int i = 0; i < 100; i++) {
        sqlite3_stmt *st;
        assert_int_equal(mae__db_stmt(f->db, stmt_texts[i], &st), MAE_OK);
        assert_ptr_equal(st, first[i]);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int(st, 0), i);
    }
    /* Bad SQL is MAE_EDB with SQLite's reason. */
    static const char bad[] = "SELEKT nonsense";
    sqlite3_stmt *st = NULL;
    assert_int_equal(mae__db_stmt(f->db, bad, &st), MAE_EDB);
    assert_non_null(strstr(mae_db_errmsg(f->db), "syntax error"));
    /* The stores still work with a full cache. */
    add_mail(f->db, 1);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_open_creates_schema),
        T(test_reopening_changes_nothing),
        T(test_open_refuses_bad_config_and_says_why),
        T(test_database_of_the_original_system_works_unchanged),
        T(test_read_only_handle_reads_and_refuses_writes),
        T(test_open_names_a_missing_directory),
        T(test_garbage_or_corrupt_file_is_a_clear_error),
        T(test_full_disk_fails_the_write_and_publishes_nothing),
        T(test_lock_held_past_busy_timeout_is_ebusy),
        T(test_lock_held_by_another_process_is_ebusy),
        T(test_commit_publishes_held_events_in_order),
        T(test_rollback_publishes_nothing),
        T(test_failed_write_in_transaction_keeps_the_rest),
        T(test_failed_commit_keeps_transaction_and_events),
        T(test_full_disk_in_transaction_publishes_only_what_committed),
        cmocka_unit_test(test_retry_waits_follow_the_schedule),
        T(test_sqlite_failures_map_to_result_codes_with_detail),
        T(test_many_distinct_statements_stay_correct),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
