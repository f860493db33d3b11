/* This module implements the transactions of a mae_db handle: one store
 * write (BEGIN IMMEDIATE, or a savepoint inside the caller's transaction)
 * and the caller-owned transactions of mae_db_begin / commit / rollback,
 * with the held events published after a commit or dropped on a rollback. */
#include "db/db_internal.h"

void mae__db_force_rollback(mae_db *db)
{
    mae__db_reset_all(db);
    if (sqlite3_get_autocommit(db->sql))
        return;
    if (mae__db_run_control(db, mae__sql_rollback) != SQLITE_OK &&
        !sqlite3_get_autocommit(db->sql))
        sqlite3_exec(db->sql, mae__sql_rollback, NULL, NULL, NULL);
}

/* ---- caller-owned transactions ------------------------------------------- */

int mae_db_begin(mae_db *db)
{
    MAE__DB_ENTER(db);
    if (db->in_user_txn || !sqlite3_get_autocommit(db->sql))
        return MAE__DB_FAIL(db, MAE_EINVAL, "a transaction is already open");
    mae__db_reset_all(db);
    int rc = mae__db_run_control(db, mae__sql_begin);
    if (rc != SQLITE_OK)
        return mae__db_sqlite_error(db, rc, "beginning a transaction");
    db->in_user_txn = true;
    return MAE_OK;
}

int mae_db_commit(mae_db *db)
{
    MAE__DB_ENTER(db);
    if (!db->in_user_txn)
        return MAE__DB_FAIL(db, MAE_EINVAL, "no transaction is open");
    if (sqlite3_get_autocommit(db->sql)) {
        /* SQLite rolled it back after an error (or raw SQL ended it): what
         * the events announce may not be in the file. */
        db->in_user_txn = false;
        mae__db_discard_all(db);
        return MAE__DB_FAIL(db, MAE_EDB,
                            "the transaction is no longer active (rolled back after an error); "
                            "nothing was committed");
    }
    mae__db_reset_all(db);
    int rc = mae__db_run_control(db, mae__sql_commit);
    if (rc != SQLITE_OK) {
        int code = mae__db_sqlite_error(db, rc, "committing the transaction");
        if (sqlite3_get_autocommit(db->sql)) {
            db->in_user_txn = false;
            mae__db_discard_all(db);
        }
        return code;
    }
    db->in_user_txn = false;
    mae__db_publish_held(db);
    return MAE_OK;
}

int mae_db_rollback(mae_db *db)
{
    MAE__DB_ENTER(db);
    if (!db->in_user_txn)
        return MAE__DB_FAIL(db, MAE_EINVAL, "no transaction is open");
    mae__db_discard_all(db);
    db->in_user_txn = false;
    mae__db_force_rollback(db);
    if (!sqlite3_get_autocommit(db->sql))
        return mae__db_sqlite_error(db, sqlite3_errcode(db->sql), "rolling back the transaction");
    return MAE_OK;
}

/* ---- one store write ------------------------------------------------------ */

int mae__db_write_begin(mae_db *db)
{
    int rc;

    if (db->read_only)
        return mae__db_error(db, MAE_EDB,
                             "the database was opened read-only; nothing can be written");
    if (db->in_write)
        return mae__db_error(db, MAE_EDB, "a store write is already in progress on this handle");
    mae__db_reset_all(db);
    if (db->in_user_txn) {
        if (sqlite3_get_autocommit(db->sql))
            return mae__db_error(db, MAE_EDB,
                                 "the caller's transaction is no longer active (rolled back "
                                 "after an error); roll it back and start again");
        rc = mae__db_run_control(db, mae__sql_savepoint);
        if (rc != SQLITE_OK)
            return mae__db_sqlite_error(db, rc, "starting a write in the caller's transaction");
    } else {
        if (!sqlite3_get_autocommit(db->sql))
            return mae__db_error(db, MAE_EINVAL,
                                 "a transaction opened with raw SQL is in force; use "
                                 "mae_db_begin so the events wait for its commit");
        rc = mae__db_run_control(db, mae__sql_begin);
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
    mae__db_reset_all(db);
    if (db->in_user_txn) {
        if (db->held_mark)
            mae__db_discard_from(db, db->held_mark);
        if (sqlite3_get_autocommit(db->sql)) {
            /* SQLite dropped the whole transaction (full disk, I/O error,
             * ...): none of the held events can be committed any more. */
            mae__db_discard_all(db);
        } else if (mae__db_run_control(db, mae__sql_rollback_to) != SQLITE_OK ||
                   mae__db_run_control(db, mae__sql_release) != SQLITE_OK) {
            sqlite3_exec(db->sql, "ROLLBACK TO mae_write; RELEASE mae_write", NULL, NULL, NULL);
        }
    } else {
        mae__db_discard_all(db);
        mae__db_force_rollback(db);
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
    mae__db_reset_all(db);
    int src = mae__db_run_control(db, db->in_user_txn ? mae__sql_release : mae__sql_commit);
    if (src != SQLITE_OK) {
        int code = mae__db_sqlite_error(db, src, db->in_user_txn ? "ending a write" : "committing");
        abort_write(db);
        return code;
    }
    db->in_write = false;
    db->held_mark = NULL;
    if (!db->in_user_txn)
        mae__db_publish_held(db);
    return rc;
}
