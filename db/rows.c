/* This module implements the reading side shared by the three stores:
 * column readers, argument copies, the prelude of every public read, the
 * one-row (by id) and list readers driven by a store's row type, and the
 * count-by-status reads. */
#include <stdlib.h>
#include <string.h>

#include "db/db_internal.h"

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

int mae__db_read_start(mae_db *db, const char *fn, const void *out, const char *invalid,
                       const char *sql, sqlite3_stmt **st)
{
    MAE__DB_ENTER(db);
    if (!out)
        return mae__db_error_in(db, MAE_EINVAL, fn, "out is NULL");
    if (invalid)
        return mae__db_error_in(db, MAE_EINVAL, fn, "%s", invalid);
    return mae__db_stmt(db, sql, st);
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

void mae__db_free_row(const mae__row_type *type, void *row)
{
    if (!row)
        return;
    type->clear(row);
    free(row);
}

int mae__db_get_by_id(mae_db *db, const char *fn, const void *out, const mae__by_id *q,
                      int64_t id, void **row)
{
    sqlite3_stmt *st;
    *row = NULL;
    int rc = mae__db_read_start(db, fn, out, id > 0 ? NULL : q->bad_id, q->sql, &st);
    if (rc != MAE_OK)
        return rc;
    sqlite3_bind_int64(st, 1, id);
    rc = mae__db_read_row(db, st, q->type, q->what, q->oom_what, row);
    if (rc == MAE_OK && !*row)
        rc = mae__db_error_in(db, MAE_ENOTFOUND, fn, "%s %lld", q->missing, (long long)id);
    return rc;
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
        char *grown = mae__grow(rows, &cap, count, type->size, type->first_cap);
        if (!grown) {
            rc = mae__db_error(db, MAE_ENOMEM, "%s: out of memory", oom_what);
            break;
        }
        rows = grown;
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

/* ---- counts by status ----------------------------------------------------- */

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
        mae_count *items = mae__grow(c->items, &cap, c->count, sizeof *items, 8);
        if (!items) {
            oom = true;
            break;
        }
        c->items = items;
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
    int rc = mae__db_read_start(db, fn, out, NULL, sql, &st);
    if (rc != MAE_OK)
        return rc;
    return collect_counts(db, st, what, out);
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
