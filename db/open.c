/* This module implements the life of a mae_db handle: its configuration,
 * opening (connection, pragmas, schema, prepared control statements) with
 * a reason a user can act on when it fails, closing, and its clock. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "db/db_internal.h"

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

static void put_open_error(const mae_db_config *cfg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void put_open_error(const mae_db_config *cfg, const char *fmt, ...)
{
    va_list ap;
    if (!cfg || !cfg->error_buf || cfg->error_buf_size == 0)
        return;
    va_start(ap, fmt);
    mae__vformat(cfg->error_buf, cfg->error_buf_size, fmt, ap);
    va_end(ap);
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

/* Frees a handle that open built part of; NULL is fine. */
static void destroy(mae_db *db)
{
    if (!db)
        return;
    mae__db_finalize_all(db);
    sqlite3_close_v2(db->sql);
    free(db);
}

/* Fails an open: says why (detail, or else SQLite's text for rc), frees
 * what was built and returns the code for rc. */
static int open_fail(const mae_db_config *cfg, mae_db *db, int rc, const char *what,
                     const char *detail)
{
    int code = mae__db_map_sqlite(rc);
    if (code == MAE_OK)
        code = MAE_EDB;
    if (!detail)
        detail = db && db->sql ? sqlite3_errmsg(db->sql) : sqlite3_errstr(rc);
    const char *hint = (rc & 0xff) == SQLITE_CANTOPEN ? cantopen_hint(cfg->path) : "";
    if ((rc & 0xff) == SQLITE_NOTADB || (rc & 0xff) == SQLITE_CORRUPT)
        put_open_error(cfg, "cannot open %s: %s: the file is corrupt or not an SQLite database",
                       cfg->path, what);
    else
        put_open_error(cfg, "cannot open %s: %s: %s%s", cfg->path, what, detail, hint);
    destroy(db);
    return code;
}

/* MAE_OK, or MAE_EINVAL with the reason (naming fn) in cfg's error buffer. */
static int check_config(const char *fn, const mae_db_config *cfg, mae_db **out)
{
    if (!cfg || !out) {
        put_open_error(cfg, "%s: cfg and out must not be NULL", fn);
        return MAE_EINVAL;
    }
    if (!cfg->path || !cfg->path[0]) {
        put_open_error(cfg, "%s: the database path is empty", fn);
        return MAE_EINVAL;
    }
    if (cfg->busy_timeout_ms < 0 || cfg->email_max_retries < 1 || cfg->outbox_max_attempts < 1 ||
        cfg->llm_max_retries < 1) {
        put_open_error(cfg, "%s: busy_timeout_ms must be >= 0 and the retry limits >= 1", fn);
        return MAE_EINVAL;
    }
    return MAE_OK;
}

/* A handle with cfg's settings and no connection yet, or NULL. */
static mae_db *new_handle(const mae_db_config *cfg)
{
    mae_db *db = calloc(1, sizeof *db);
    if (!db)
        return NULL;
    db->publisher = cfg->publisher;
    db->busy_timeout_ms = cfg->busy_timeout_ms;
    db->email_max_retries = cfg->email_max_retries;
    db->outbox_max_attempts = cfg->outbox_max_attempts;
    db->llm_max_retries = cfg->llm_max_retries;
    db->clock = cfg->clock;
    db->clock_user = cfg->clock_user;
    db->read_only = cfg->read_only;
    db->held_tail = &db->held;
    return db;
}

/* Sets up the new connection: checks the file is a database, the pragmas
 * of docs/stores.md and the schema. On failure the handle is freed and the
 * reason put in cfg's error buffer; returns the code. */
static int setup_connection(const mae_db_config *cfg, mae_db *db)
{
    char msg[200];

    sqlite3_busy_timeout(db->sql, cfg->busy_timeout_ms);
    /* Reading the schema is what notices garbage or a corrupt header, so do
     * it before anything else with a clear message. */
    int rc = sqlite3_exec(db->sql, "SELECT count(*) FROM sqlite_master", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return open_fail(cfg, db, rc, "reading the schema", NULL);
    rc = sqlite3_exec(db->sql, "PRAGMA foreign_keys=ON", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return open_fail(cfg, db, rc, "PRAGMA foreign_keys", NULL);
    if (cfg->read_only)
        return MAE_OK; /* the journal mode and tables are the writers' business */
    rc = sqlite3_exec(db->sql, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return open_fail(cfg, db, rc, "PRAGMA journal_mode=WAL", NULL);
    rc = mae__db_create_schema(db, msg, sizeof msg);
    if (rc != SQLITE_OK)
        return open_fail(cfg, db, rc, "creating the tables", msg);
    return MAE_OK;
}

int mae_db_open(const mae_db_config *cfg, mae_db **out)
{
    int rc = check_config(__func__, cfg, out);
    if (rc != MAE_OK)
        return rc;
    mae_db *db = new_handle(cfg);
    if (!db) {
        put_open_error(cfg, "cannot open %s: out of memory", cfg->path);
        return MAE_ENOMEM;
    }

    int flags = cfg->read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    rc = sqlite3_open_v2(cfg->path, &db->sql, flags, NULL);
    if (rc != SQLITE_OK) {
        if (!db->sql) {
            free(db);
            put_open_error(cfg, "cannot open %s: out of memory", cfg->path);
            return MAE_ENOMEM;
        }
        return open_fail(cfg, db, rc, "open", NULL);
    }
    rc = setup_connection(cfg, db);
    if (rc != MAE_OK)
        return rc;
    /* Prepared now, so that ending a write (above all, rolling one back
     * after an allocation failure) never needs an allocation. */
    rc = mae__db_prepare_control(db);
    if (rc != MAE_OK)
        return open_fail(cfg, db, rc == MAE_ENOMEM ? SQLITE_NOMEM : sqlite3_errcode(db->sql),
                         "preparing statements", NULL);

    db->errmsg[0] = '\0';
    *out = db;
    return MAE_OK;
}

void mae_db_close(mae_db *db)
{
    if (!db)
        return;
    mae__db_reset_all(db);
    if (db->sql && !sqlite3_get_autocommit(db->sql))
        mae__db_force_rollback(db);
    mae__db_discard_all(db);
    destroy(db);
}

sqlite3 *mae_db_sqlite(mae_db *db)
{
    return db ? db->sql : NULL;
}

double mae__db_now(mae_db *db)
{
    if (db && db->clock)
        return db->clock(db->clock_user);
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return (double)time(NULL);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
