/* This module implements the statement cache of a mae_db handle: prepared
 * statements kept by the address of their static SQL text, the transaction
 * control statements, and the small step and bind helpers of the stores. */
#include <stdlib.h>

#include "db/db_internal.h"

const char mae__sql_begin[] = "BEGIN IMMEDIATE";
const char mae__sql_commit[] = "COMMIT";
const char mae__sql_rollback[] = "ROLLBACK";
const char mae__sql_savepoint[] = "SAVEPOINT mae_write";
const char mae__sql_release[] = "RELEASE mae_write";
const char mae__sql_rollback_to[] = "ROLLBACK TO mae_write";

/* Makes room for one more statement beyond the fixed cache. */
static int grow_more(mae_db *db)
{
    struct mae__stmt_slot *more = mae__grow(db->stmt_more, &db->stmt_more_cap,
                                            db->stmt_more_count, sizeof *more, 16);
    if (!more)
        return mae__db_error(db, MAE_ENOMEM, "preparing a statement: out of memory");
    db->stmt_more = more;
    return MAE_OK;
}

int mae__db_stmt(mae_db *db, const char *sql, sqlite3_stmt **out)
{
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
    if (!in_fixed) {
        int rc = grow_more(db);
        if (rc != MAE_OK)
            return rc;
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
        struct mae__stmt_slot *slot = &db->stmt_more[db->stmt_more_count++];
        slot->sql = sql;
        slot->stmt = st;
    }
    *out = st;
    return MAE_OK;
}

int mae__db_prepare_control(mae_db *db)
{
    const char *control[] = {mae__sql_begin,     mae__sql_commit,  mae__sql_rollback,
                             mae__sql_savepoint, mae__sql_release, mae__sql_rollback_to};
    for (size_t i = 0; i < sizeof control / sizeof control[0]; i++) {
        sqlite3_stmt *st;
        int rc = mae__db_stmt(db, control[i], &st);
        if (rc != MAE_OK)
            return rc;
    }
    return MAE_OK;
}

void mae__db_reset_all(mae_db *db)
{
    for (size_t i = 0; i < MAE__STMT_CACHE; i++)
        if (db->cache[i].stmt)
            sqlite3_reset(db->cache[i].stmt);
    for (size_t i = 0; i < db->stmt_more_count; i++)
        sqlite3_reset(db->stmt_more[i].stmt);
}

void mae__db_finalize_all(mae_db *db)
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

int mae__db_run_control(mae_db *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (mae__db_stmt(db, sql, &st) != MAE_OK)
        return sqlite3_errcode(db->sql) != SQLITE_OK ? sqlite3_errcode(db->sql) : SQLITE_NOMEM;
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
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
