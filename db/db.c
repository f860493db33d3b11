/* This module implements the mae_db handle shared by the three stores: open
 * (pragmas and schema), caller-owned transactions, and the internal helpers
 * every store write and read goes through (statements, errors, held events,
 * rows). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "db/db_internal.h"
#include "publisher/publisher_internal.h"

/* The schema of docs/stores.md, column for column. Only IF NOT EXISTS: a file
 * made by the original system keeps its tables, extra columns and indexes. */
static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS email_metadata ("
    " internal_id INTEGER PRIMARY KEY, message_id TEXT UNIQUE, thread_id TEXT,"
    " subject TEXT, sender TEXT, sender_name TEXT, to_addr TEXT, cc_addr TEXT,"
    " date_received TEXT, mailbox TEXT, is_read INTEGER DEFAULT 0,"
    " is_flagged INTEGER DEFAULT 0, sync_status TEXT DEFAULT 'pending',"
    " notion_page_id TEXT, notion_thread_id TEXT, sync_error TEXT,"
    " retry_count INTEGER DEFAULT 0, next_retry_at REAL, created_at REAL,"
    " updated_at REAL);"
    "CREATE INDEX IF NOT EXISTS idx_email_message_id ON email_metadata(message_id);"
    "CREATE INDEX IF NOT EXISTS idx_email_thread_id ON email_metadata(thread_id);"
    "CREATE INDEX IF NOT EXISTS idx_email_date_received ON email_metadata(date_received DESC);"
    "CREATE INDEX IF NOT EXISTS idx_email_sync_status ON email_metadata(sync_status);"
    "CREATE INDEX IF NOT EXISTS idx_email_mailbox ON email_metadata(mailbox);"
    "CREATE INDEX IF NOT EXISTS idx_email_next_retry ON email_metadata(next_retry_at)"
    " WHERE sync_status IN ('fetch_failed','failed');"
    "CREATE TABLE IF NOT EXISTS email_outbox ("
    " outbox_id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " internal_id INTEGER NOT NULL REFERENCES email_metadata(internal_id) ON DELETE CASCADE,"
    " op_type TEXT NOT NULL,"
    " target TEXT NOT NULL CHECK (target IN ('mailapp','notion')),"
    " payload_json TEXT NOT NULL, source TEXT,"
    " status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN"
    " ('pending','processing','done','failed','dead_letter')),"
    " attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, next_retry_at REAL,"
    " created_at REAL NOT NULL, updated_at REAL NOT NULL);"
    "CREATE UNIQUE INDEX IF NOT EXISTS ux_outbox_pending_intent"
    " ON email_outbox(internal_id, op_type, target) WHERE status='pending';"
    "CREATE INDEX IF NOT EXISTS idx_outbox_status_retry ON email_outbox(status, next_retry_at)"
    " WHERE status IN ('pending','failed');"
    "CREATE INDEX IF NOT EXISTS idx_outbox_internal_id ON email_outbox(internal_id);"
    "CREATE INDEX IF NOT EXISTS idx_outbox_target_status ON email_outbox(target, status);"
    "CREATE TABLE IF NOT EXISTS llm_processing ("
    " internal_id INTEGER PRIMARY KEY, notion_page_id TEXT, mailbox TEXT, status TEXT,"
    " retry_count INTEGER DEFAULT 0, next_retry_at REAL, last_error TEXT, model TEXT,"
    " input_tokens INTEGER, output_tokens INTEGER, cache_read_input_tokens INTEGER,"
    " cache_creation_input_tokens INTEGER, latency_ms INTEGER, labels_json TEXT,"
    " created_at REAL, updated_at REAL);"
    "CREATE INDEX IF NOT EXISTS idx_llm_status ON llm_processing(status);"
    "CREATE INDEX IF NOT EXISTS idx_llm_next_retry ON llm_processing(next_retry_at)"
    " WHERE status='failed';";

/* Transaction control, prepared at open so that ending a write (above all,
 * rolling one back after an allocation failure) never needs a new
 * allocation for a prepare. */
static const char sql_begin[] = "BEGIN IMMEDIATE";
static const char sql_commit[] = "COMMIT";
static const char sql_rollback[] = "ROLLBACK";
static const char sql_savepoint[] = "SAVEPOINT mae_write";
static const char sql_release[] = "RELEASE mae_write";
static const char sql_rollback_to[] = "ROLLBACK TO mae_write";

/* ---- small helpers -------------------------------------------------------- */

/* Cuts a message that vsnprintf truncated back to a UTF-8 boundary, so the
 * detail text stays valid UTF-8 even when it quotes a caller's string. */
static void trim_utf8_tail(char *s, size_t len)
{
    size_t i = len;
    while (i > 0 && ((unsigned char)s[i - 1] & 0xC0) == 0x80)
        i--;
    if (i > 0 && ((unsigned char)s[i - 1] & 0x80)) {
        unsigned char lead = (unsigned char)s[i - 1];
        size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
        if (len - (i - 1) < need)
            s[i - 1] = '\0';
    }
}

static void vformat(char *buf, size_t size, const char *fmt, va_list ap)
{
    if (!buf || size == 0)
        return;
    int n = vsnprintf(buf, size, fmt, ap);
    if (n < 0)
        buf[0] = '\0';
    else if ((size_t)n >= size)
        trim_utf8_tail(buf, size - 1);
}

static void put_open_error(const mae_db_config *cfg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void put_open_error(const mae_db_config *cfg, const char *fmt, ...)
{
    va_list ap;
    if (!cfg || !cfg->error_buf || cfg->error_buf_size == 0)
        return;
    va_start(ap, fmt);
    vformat(cfg->error_buf, cfg->error_buf_size, fmt, ap);
    va_end(ap);
}

static int map_sqlite(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE:
        return MAE_OK;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return MAE_EBUSY;
    case SQLITE_NOMEM:
        return MAE_ENOMEM;
    default:
        return MAE_EDB;
    }
}

static void free_events(mae__held_event *e)
{
    while (e) {
        mae__held_event *next = e->next;
        mae__buf_free(&e->line);
        free(e);
        e = next;
    }
}

/* Drops the held events from *from on (the whole list when from is the
 * list head) and makes from the new tail. */
static void discard_from(mae_db *db, mae__held_event **from)
{
    free_events(*from);
    *from = NULL;
    db->held_tail = from;
}

static void discard_all(mae_db *db)
{
    discard_from(db, &db->held);
    db->held_mark = NULL;
}

/* Hands the held events to the publisher in the order they were made. */
static void publish_held(mae_db *db)
{
    mae__held_event *e = db->held;
    db->held = NULL;
    db->held_tail = &db->held;
    db->held_mark = NULL;
    while (e) {
        mae__held_event *next = e->next;
        mae__publisher_enqueue(db->publisher, &e->line);
        free(e);
        e = next;
    }
}

/* Resets every cached statement, so none keeps a read snapshot open across
 * the start or end of a write (in WAL a stale snapshot would make the next
 * BEGIN IMMEDIATE fail with SQLITE_BUSY_SNAPSHOT). */
static void reset_all(mae_db *db)
{
    for (size_t i = 0; i < MAE__STMT_CACHE; i++)
        if (db->cache[i].stmt)
            sqlite3_reset(db->cache[i].stmt);
    for (size_t i = 0; i < db->stmt_more_count; i++)
        sqlite3_reset(db->stmt_more[i].stmt);
}

/* Runs one cached control statement (BEGIN, COMMIT, ...). Returns the
 * SQLite result. */
static int run_control(mae_db *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (mae__db_stmt(db, sql, &st) != MAE_OK)
        return sqlite3_errcode(db->sql) != SQLITE_OK ? sqlite3_errcode(db->sql) : SQLITE_NOMEM;
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Rolls back with the cached statement, falling back to sqlite3_exec should
 * that fail: a transaction left open would keep the write lock. */
static void force_rollback(mae_db *db)
{
    reset_all(db);
    if (sqlite3_get_autocommit(db->sql))
        return;
    if (run_control(db, sql_rollback) != SQLITE_OK && !sqlite3_get_autocommit(db->sql))
        sqlite3_exec(db->sql, sql_rollback, NULL, NULL, NULL);
}

static void finalize_all(mae_db *db)
{
    for (size_t i = 0; i < MAE__STMT_CACHE; i++) {
        sqlite3_finalize(db->cache[i].stmt);
        db->cache[i].stmt = NULL;
        db->cache[i].sql = NULL;
    }
    for (size_t i = 0; i < db->stmt_more_count; i++)
        sqlite3_finalize(db->stmt_more[i].stmt);
    free(db->stmt_more);
    db->stmt_more = NULL;
    db->stmt_more_count = db->stmt_more_cap = 0;
}

static double real_now(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return (double)time(NULL);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Why a file could not be opened, in words a user can act on: a missing
 * directory is the usual cause of SQLITE_CANTOPEN. */
static const char *cantopen_hint(const char *path)
{
    const char *slash = strrchr(path, '/');
    struct stat sb;
    if (!slash)
        return "";
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    char *dir = malloc(n + 1);
    if (!dir)
        return "";
    memcpy(dir, path, n);
    dir[n] = '\0';
    int r = stat(dir, &sb);
    int err = errno;
    free(dir);
    if (r != 0 && err == ENOENT)
        return " (its directory does not exist)";
    if (r == 0 && !S_ISDIR(sb.st_mode))
        return " (its directory is not a directory)";
    return "";
}

/* ---- open and close ------------------------------------------------------- */

void mae_db_config_init(mae_db_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->busy_timeout_ms = 30000;
    cfg->email_max_retries = 5;
    cfg->outbox_max_attempts = 5;
    cfg->llm_max_retries = 5;
}

/* Fails an open: closes what was built, says why, returns code. */
static int open_fail(const mae_db_config *cfg, mae_db *db, int rc, const char *what)
{
    int code = map_sqlite(rc);
    if (code == MAE_OK)
        code = MAE_EDB;
    const char *detail = db && db->sql ? sqlite3_errmsg(db->sql) : sqlite3_errstr(rc);
    const char *hint = (rc & 0xff) == SQLITE_CANTOPEN ? cantopen_hint(cfg->path) : "";
    if ((rc & 0xff) == SQLITE_NOTADB || (rc & 0xff) == SQLITE_CORRUPT)
        put_open_error(cfg, "cannot open %s: %s: the file is corrupt or not an SQLite database",
                       cfg->path, what);
    else
        put_open_error(cfg, "cannot open %s: %s: %s%s", cfg->path, what, detail, hint);
    if (db) {
        finalize_all(db);
        sqlite3_close_v2(db->sql);
        free(db);
    }
    return code;
}

int mae_db_open(const mae_db_config *cfg, mae_db **out)
{
    int rc;
    mae_db *db;

    if (!cfg || !out) {
        put_open_error(cfg, "mae_db_open: cfg and out must not be NULL");
        return MAE_EINVAL;
    }
    if (!cfg->path || !cfg->path[0]) {
        put_open_error(cfg, "mae_db_open: the database path is empty");
        return MAE_EINVAL;
    }
    if (cfg->busy_timeout_ms < 0 || cfg->email_max_retries < 1 || cfg->outbox_max_attempts < 1 ||
        cfg->llm_max_retries < 1) {
        put_open_error(cfg, "mae_db_open: busy_timeout_ms must be >= 0 and the retry limits >= 1");
        return MAE_EINVAL;
    }

    db = calloc(1, sizeof *db);
    if (!db) {
        put_open_error(cfg, "cannot open %s: out of memory", cfg->path);
        return MAE_ENOMEM;
    }
    db->publisher = cfg->publisher;
    db->busy_timeout_ms = cfg->busy_timeout_ms;
    db->email_max_retries = cfg->email_max_retries;
    db->outbox_max_attempts = cfg->outbox_max_attempts;
    db->llm_max_retries = cfg->llm_max_retries;
    db->clock = cfg->clock;
    db->clock_user = cfg->clock_user;
    db->read_only = cfg->read_only;
    db->held_tail = &db->held;

    int flags = cfg->read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    rc = sqlite3_open_v2(cfg->path, &db->sql, flags, NULL);
    if (rc != SQLITE_OK) {
        if (!db->sql) {
            free(db);
            put_open_error(cfg, "cannot open %s: out of memory", cfg->path);
            return MAE_ENOMEM;
        }
        return open_fail(cfg, db, rc, "open");
    }
    sqlite3_busy_timeout(db->sql, cfg->busy_timeout_ms);

    /* Reading the schema is what notices garbage or a corrupt header, so do
     * it before anything else with a clear message. */
    rc = sqlite3_exec(db->sql, "SELECT count(*) FROM sqlite_master", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return open_fail(cfg, db, rc, "reading the schema");
    rc = sqlite3_exec(db->sql, "PRAGMA foreign_keys=ON", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return open_fail(cfg, db, rc, "PRAGMA foreign_keys");
    if (!cfg->read_only) {
        /* The journal mode is a property of the file: a read-only handle
         * uses whatever the writers set. */
        rc = sqlite3_exec(db->sql, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
        if (rc != SQLITE_OK)
            return open_fail(cfg, db, rc, "PRAGMA journal_mode=WAL");
        /* One transaction, so concurrent first opens do not interleave. */
        rc = sqlite3_exec(db->sql, sql_begin, NULL, NULL, NULL);
        if (rc == SQLITE_OK) {
            rc = sqlite3_exec(db->sql, schema_sql, NULL, NULL, NULL);
            if (rc == SQLITE_OK)
                rc = sqlite3_exec(db->sql, sql_commit, NULL, NULL, NULL);
            if (rc != SQLITE_OK) {
                /* Keep the first error's text for the message. */
                char msg[200];
                snprintf(msg, sizeof msg, "%s", sqlite3_errmsg(db->sql));
                if (!sqlite3_get_autocommit(db->sql))
                    sqlite3_exec(db->sql, sql_rollback, NULL, NULL, NULL);
                int code = map_sqlite(rc) == MAE_OK ? MAE_EDB : map_sqlite(rc);
                put_open_error(cfg, "cannot open %s: creating the tables: %s", cfg->path, msg);
                finalize_all(db);
                sqlite3_close_v2(db->sql);
                free(db);
                return code;
            }
        }
        if (rc != SQLITE_OK)
            return open_fail(cfg, db, rc, "creating the tables");
    }

    const char *control[] = {sql_begin, sql_commit, sql_rollback,
                             sql_savepoint, sql_release, sql_rollback_to};
    for (size_t i = 0; i < sizeof control / sizeof control[0]; i++) {
        sqlite3_stmt *st;
        int code = mae__db_stmt(db, control[i], &st);
        if (code != MAE_OK)
            return open_fail(cfg, db, code == MAE_ENOMEM ? SQLITE_NOMEM : sqlite3_errcode(db->sql),
                             "preparing statements");
    }

    db->errmsg[0] = '\0';
    *out = db;
    return MAE_OK;
}

void mae_db_close(mae_db *db)
{
    if (!db)
        return;
    reset_all(db);
    if (db->sql && !sqlite3_get_autocommit(db->sql))
        force_rollback(db);
    discard_all(db);
    finalize_all(db);
    sqlite3_close_v2(db->sql);
    free(db);
}

const char *mae_db_errmsg(const mae_db *db)
{
    if (!db)
        return "invalid argument: the database handle is NULL";
    return db->errmsg;
}

sqlite3 *mae_db_sqlite(mae_db *db)
{
    return db ? db->sql : NULL;
}

void mae_counts_free(mae_counts *counts)
{
    if (!counts)
        return;
    for (size_t i = 0; i < counts->count; i++)
        free(counts->items[i].key);
    free(counts->items);
    free(counts);
}

/* ---- caller-owned transactions ------------------------------------------- */

int mae_db_begin(mae_db *db)
{
    if (!db)
        return MAE_EINVAL;
    mae__db_clear_error(db);
    if (db->in_user_txn || !sqlite3_get_autocommit(db->sql))
        return mae__db_error(db, MAE_EINVAL, "mae_db_begin: a transaction is already open");
    reset_all(db);
    int rc = run_control(db, sql_begin);
    if (rc != SQLITE_OK)
        return mae__db_sqlite_error(db, rc, "beginning a transaction");
    db->in_user_txn = true;
    return MAE_OK;
}

int mae_db_commit(mae_db *db)
{
    if (!db)
        return MAE_EINVAL;
    mae__db_clear_error(db);
    if (!db->in_user_txn)
        return mae__db_error(db, MAE_EINVAL, "mae_db_commit: no transaction is open");
    if (sqlite3_get_autocommit(db->sql)) {
        /* SQLite rolled it back after an error (or raw SQL ended it): what
         * the events announce may not be in the file. */
        db->in_user_txn = false;
        discard_all(db);
        return mae__db_error(db, MAE_EDB, "mae_db_commit: the transaction is no longer active "
                                          "(rolled back after an error); nothing was committed");
    }
    reset_all(db);
    int rc = run_control(db, sql_commit);
    if (rc != SQLITE_OK) {
        int code = mae__db_sqlite_error(db, rc, "committing the transaction");
        if (sqlite3_get_autocommit(db->sql)) {
            db->in_user_txn = false;
            discard_all(db);
        }
        return code;
    }
    db->in_user_txn = false;
    publish_held(db);
    return MAE_OK;
}

int mae_db_rollback(mae_db *db)
{
    if (!db)
        return MAE_EINVAL;
    mae__db_clear_error(db);
    if (!db->in_user_txn)
        return mae__db_error(db, MAE_EINVAL, "mae_db_rollback: no transaction is open");
    discard_all(db);
    db->in_user_txn = false;
    force_rollback(db);
    if (!sqlite3_get_autocommit(db->sql))
        return mae__db_sqlite_error(db, sqlite3_errcode(db->sql), "rolling back the transaction");
    return MAE_OK;
}

/* ---- internal helpers ----------------------------------------------------- */

int mae__db_error(mae_db *db, int code, const char *fmt, ...)
{
    va_list ap;
    if (!db)
        return code;
    int n = snprintf(db->errmsg, sizeof db->errmsg, "%s: ", mae_strerror(code));
    if (n < 0 || (size_t)n >= sizeof db->errmsg)
        return code;
    va_start(ap, fmt);
    vformat(db->errmsg + n, sizeof db->errmsg - (size_t)n, fmt, ap);
    va_end(ap);
    return code;
}

int mae__db_sqlite_error(mae_db *db, int rc, const char *what)
{
    int code = map_sqlite(rc);
    if (code == MAE_OK)
        code = MAE_EDB; /* called for a failure: never report success */
    if (!db)
        return code;
    const char *detail = db->sql ? sqlite3_errmsg(db->sql) : sqlite3_errstr(rc);
    /* The only foreign key of the schema is a mail id: failing it means the
     * mail does not exist. */
    if ((rc & 0xff) == SQLITE_CONSTRAINT && db->sql &&
        sqlite3_extended_errcode(db->sql) == SQLITE_CONSTRAINT_FOREIGNKEY)
        return mae__db_error(db, MAE_ENOTFOUND, "%s: no such mail (%s)", what, detail);
    if (code == MAE_EBUSY)
        return mae__db_error(db, code, "%s: the database stayed locked for %d ms (%s)", what,
                             db->busy_timeout_ms, detail);
    return mae__db_error(db, code, "%s: %s", what, detail);
}

void mae__db_clear_error(mae_db *db)
{
    if (db)
        db->errmsg[0] = '\0';
}

double mae__db_now(mae_db *db)
{
    if (db && db->clock)
        return db->clock(db->clock_user);
    return real_now();
}

int mae__db_stmt(mae_db *db, const char *sql, sqlite3_stmt **out)
{
    struct mae__stmt_slot *slot = NULL;
    size_t i;

    for (i = 0; i < MAE__STMT_CACHE; i++) {
        if (db->cache[i].sql == sql) {
            sqlite3_reset(db->cache[i].stmt);
            sqlite3_clear_bindings(db->cache[i].stmt);
            *out = db->cache[i].stmt;
            return MAE_OK;
        }
    }
    for (i = 0; i < db->stmt_more_count; i++) {
        if (db->stmt_more[i].sql == sql) {
            sqlite3_reset(db->stmt_more[i].stmt);
            sqlite3_clear_bindings(db->stmt_more[i].stmt);
            *out = db->stmt_more[i].stmt;
            return MAE_OK;
        }
    }

    /* Not cached: find a free slot first, so a failed prepare needs no
     * undoing. Statements are never evicted, since a caller may still hold
     * one it fetched earlier; the set of static texts is finite. */
    for (i = 0; i < MAE__STMT_CACHE; i++)
        if (!db->cache[i].sql)
            break;
    bool in_fixed = i < MAE__STMT_CACHE;
    if (!in_fixed && db->stmt_more_count == db->stmt_more_cap) {
        size_t cap = db->stmt_more_cap ? db->stmt_more_cap * 2 : 16;
        struct mae__stmt_slot *more = realloc(db->stmt_more, cap * sizeof *more);
        if (!more)
            return mae__db_error(db, MAE_ENOMEM, "preparing a statement: out of memory");
        db->stmt_more = more;
        db->stmt_more_cap = cap;
    }

    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v3(db->sql, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
    if (rc != SQLITE_OK) {
        sqlite3_finalize(st);
        return mae__db_sqlite_error(db, rc, "preparing a statement");
    }
    if (in_fixed) {
        db->cache[i].sql = sql;
        db->cache[i].stmt = st;
    } else {
        slot = &db->stmt_more[db->stmt_more_count++];
        slot->sql = sql;
        slot->stmt = st;
    }
    *out = st;
    return MAE_OK;
}

int mae__db_write_begin(mae_db *db)
{
    int rc;

    if (db->read_only)
        return mae__db_error(db, MAE_EDB,
                             "the database was opened read-only; nothing can be written");
    if (db->in_write)
        return mae__db_error(db, MAE_EDB, "a store write is already in progress on this handle");
    reset_all(db);
    if (db->in_user_txn) {
        if (sqlite3_get_autocommit(db->sql))
            return mae__db_error(db, MAE_EDB,
                                 "the caller's transaction is no longer active (rolled back "
                                 "after an error); roll it back and start again");
        rc = run_control(db, sql_savepoint);
        if (rc != SQLITE_OK)
            return mae__db_sqlite_error(db, rc, "starting a write in the caller's transaction");
    } else {
        if (!sqlite3_get_autocommit(db->sql))
            return mae__db_error(db, MAE_EINVAL,
                                 "a transaction opened with raw SQL is in force; use "
                                 "mae_db_begin so the events wait for its commit");
        rc = run_control(db, sql_begin);
        if (rc != SQLITE_OK)
            return mae__db_sqlite_error(db, rc, "beginning a write");
    }
    db->in_write = true;
    db->held_mark = db->held_tail;
    return MAE_OK;
}

/* Undoes the write in progress and its events. */
static void abort_write(mae_db *db)
{
    reset_all(db);
    if (db->in_user_txn) {
        if (db->held_mark)
            discard_from(db, db->held_mark);
        if (sqlite3_get_autocommit(db->sql)) {
            /* SQLite dropped the whole transaction (full disk, I/O error,
             * ...): none of the held events can be committed any more. */
            discard_all(db);
        } else if (run_control(db, sql_rollback_to) != SQLITE_OK ||
                   run_control(db, sql_release) != SQLITE_OK) {
            sqlite3_exec(db->sql, "ROLLBACK TO mae_write; RELEASE mae_write", NULL, NULL, NULL);
        }
    } else {
        discard_all(db);
        force_rollback(db);
    }
    db->held_mark = NULL;
    db->in_write = false;
}

int mae__db_write_end(mae_db *db, int rc)
{
    if (!db->in_write)
        return rc;
    if (rc < 0) {
        abort_write(db);
        return rc;
    }
    reset_all(db);
    int src = run_control(db, db->in_user_txn ? sql_release : sql_commit);
    if (src != SQLITE_OK) {
        int code = mae__db_sqlite_error(db, src, db->in_user_txn ? "ending a write" : "committing");
        abort_write(db);
        return code;
    }
    db->in_write = false;
    db->held_mark = NULL;
    if (!db->in_user_txn)
        publish_held(db);
    return rc;
}

int mae__db_hold(mae_db *db, mae__buf *b)
{
    /* No publisher at all: the write is state only. */
    if (!db->publisher) {
        mae__buf_free(b);
        return MAE_OK;
    }
    if (b->oom) {
        mae__buf_free(b);
        return mae__db_error(db, MAE_ENOMEM, "building the event: out of memory");
    }
    /* A disabled publisher still gets the (empty) line after the commit, so
     * its dropped_disabled counter sees every event it was handed. */
    mae__held_event *e = malloc(sizeof *e);
    if (!e) {
        mae__buf_free(b);
        return mae__db_error(db, MAE_ENOMEM, "holding the event: out of memory");
    }
    e->next = NULL;
    e->line = *b;
    mae__buf_init(b);
    *db->held_tail = e;
    db->held_tail = &e->next;
    return MAE_OK;
}

bool mae__db_wants_events(const mae_db *db)
{
    return db && mae__publisher_live(db->publisher);
}

double mae__retry_delay(int64_t n)
{
    static const double schedule[] = {60, 300, 900, 3600, 7200};
    if (n < 1)
        n = 1;
    if (n > 5)
        n = 5;
    return schedule[n - 1];
}

char *mae__col_text(sqlite3_stmt *st, int col, bool *oom)
{
    if (sqlite3_column_type(st, col) == SQLITE_NULL)
        return NULL;
    const unsigned char *t = sqlite3_column_text(st, col);
    if (!t) {
        /* Converting a number or blob to text needs memory. */
        if (oom)
            *oom = true;
        return NULL;
    }
    size_t n = (size_t)sqlite3_column_bytes(st, col);
    char *s = malloc(n + 1);
    if (!s) {
        if (oom)
            *oom = true;
        return NULL;
    }
    memcpy(s, t, n);
    s[n] = '\0';
    return s;
}

double mae__col_real(sqlite3_stmt *st, int col)
{
    if (sqlite3_column_type(st, col) == SQLITE_NULL)
        return 0;
    return sqlite3_column_double(st, col);
}

int64_t mae__col_int(sqlite3_stmt *st, int col)
{
    if (sqlite3_column_type(st, col) == SQLITE_NULL)
        return 0;
    return (int64_t)sqlite3_column_int64(st, col);
}

/* ---- statements and reads shared by the stores ---------------------------- */

int mae__db_clean(mae_db *db, const char *s, size_t max_cp, char **out)
{
    bool oom = false;
    *out = NULL;
    if (!s)
        return MAE_OK;
    *out = mae__utf8_clean(s, max_cp, &oom);
    if (!*out)
        return mae__db_error(db, MAE_ENOMEM, "copying a text argument: out of memory");
    return MAE_OK;
}

void mae__bind_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

int mae__db_step_done(mae_db *db, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    /* The error is mapped before the reset, which would clear its text. */
    int code = rc == SQLITE_DONE ? MAE_OK : mae__db_sqlite_error(db, rc, what);
    sqlite3_reset(st);
    return code;
}

int mae__db_read_args(mae_db *db, const char *fn, const void *out)
{
    if (!db)
        return MAE_EINVAL;
    mae__db_clear_error(db);
    if (!out)
        return mae__db_error(db, MAE_EINVAL, "%s: out is NULL", fn);
    return MAE_OK;
}

int mae__db_read_row(mae_db *db, sqlite3_stmt *st, const mae__row_type *type, const char *what,
                     const char *oom_what, void **row)
{
    int rc = MAE_OK;
    *row = NULL;
    int s = sqlite3_step(st);
    if (s == SQLITE_ROW) {
        void *r = malloc(type->size);
        if (!r) {
            rc = mae__db_error(db, MAE_ENOMEM, "%s: out of memory", oom_what);
        } else if ((rc = type->read(db, st, r)) != MAE_OK) {
            free(r);
        } else {
            *row = r;
        }
    } else if (s != SQLITE_DONE) {
        rc = mae__db_sqlite_error(db, s, what);
    }
    sqlite3_reset(st);
    return rc;
}

void mae__db_free_rows(const mae__row_type *type, void *rows, size_t count)
{
    for (size_t i = 0; i < count; i++)
        type->clear((char *)rows + i * type->size);
    free(rows);
}

int mae__db_collect_rows(mae_db *db, sqlite3_stmt *st, const mae__row_type *type,
                         const char *what, const char *oom_what, mae__rows *out)
{
    char *rows = NULL;
    size_t count = 0, cap = 0;
    int rc = MAE_OK, s;

    /* The list first: with no room for it there is no point in stepping. */
    void *list = calloc(1, type->list_size);
    if (!list) {
        sqlite3_reset(st);
        return mae__db_error(db, MAE_ENOMEM, "%s: out of memory", oom_what);
    }
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        if (count == cap) {
            size_t ncap = cap ? cap * 2 : type->first_cap;
            char *grown = realloc(rows, ncap * type->size);
            if (!grown) {
                rc = mae__db_error(db, MAE_ENOMEM, "%s: out of memory", oom_what);
                break;
            }
            rows = grown;
            cap = ncap;
        }
        rc = type->read(db, st, rows + count * type->size);
        if (rc != MAE_OK)
            break;
        count++;
    }
    if (rc == MAE_OK && s != SQLITE_DONE)
        rc = mae__db_sqlite_error(db, s, what);
    sqlite3_reset(st);
    if (rc != MAE_OK) {
        mae__db_free_rows(type, rows, count);
        free(list);
        return rc;
    }
    out->list = list;
    out->rows = rows;
    out->count = count;
    return MAE_OK;
}

/* Steps st, which selects (key TEXT, count INTEGER) rows sorted by key, and
 * collects them into a new mae_counts (what names the read in errors).
 * Resets st. MAE_OK and *out, or MAE_ENOMEM / the mapped SQLite error. */
static int collect_counts(mae_db *db, sqlite3_stmt *st, const char *what, mae_counts **out)
{
    mae_counts *c = calloc(1, sizeof *c);
    size_t cap = 0;
    bool oom = c == NULL;
    int rc = MAE_OK, s = SQLITE_DONE;

    while (!oom && (s = sqlite3_step(st)) == SQLITE_ROW) {
        if (c->count == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            mae_count *items = realloc(c->items, ncap * sizeof *items);
            if (!items) {
                oom = true;
                break;
            }
            c->items = items;
            cap = ncap;
        }
        char *key = mae__col_text(st, 0, &oom);
        if (!key) {
            oom = true; /* the queries never give a NULL key */
            break;
        }
        c->items[c->count].key = key;
        c->items[c->count].count = mae__col_int(st, 1);
        c->count++;
    }
    if (oom)
        rc = mae__db_error(db, MAE_ENOMEM, "%s: out of memory", what);
    else if (s != SQLITE_DONE)
        rc = mae__db_sqlite_error(db, s, what);
    sqlite3_reset(st);
    if (rc != MAE_OK) {
        mae_counts_free(c);
        return rc;
    }
    *out = c;
    return MAE_OK;
}

int mae__db_count_by(mae_db *db, const char *fn, const char *sql, const char *what,
                     mae_counts **out)
{
    sqlite3_stmt *st;
    int rc = mae__db_read_args(db, fn, out);
    if (rc == MAE_OK)
        rc = mae__db_stmt(db, sql, &st);
    if (rc != MAE_OK)
        return rc;
    return collect_counts(db, st, what, out);
}
