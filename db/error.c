/* This module implements the error detail of a mae_db handle: the "code:
 * detail" text of mae_db_errmsg, and the mapping of SQLite results to the
 * library's codes. */
#include <stdio.h>

#include "db/db_internal.h"

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

void mae__vformat(char *buf, size_t size, const char *fmt, va_list ap)
{
    if (!buf || size == 0)
        return;
    int n = vsnprintf(buf, size, fmt, ap);
    if (n < 0)
        buf[0] = '\0';
    else if ((size_t)n >= size)
        trim_utf8_tail(buf, size - 1);
}

int mae__db_map_sqlite(int rc)
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

int mae__db_error(mae_db *db, int code, const char *fmt, ...)
{
    va_list ap;
    if (!db)
        return code;
    int n = snprintf(db->errmsg, sizeof db->errmsg, "%s: ", mae_strerror(code));
    if (n < 0 || (size_t)n >= sizeof db->errmsg)
        return code;
    va_start(ap, fmt);
    mae__vformat(db->errmsg + n, sizeof db->errmsg - (size_t)n, fmt, ap);
    va_end(ap);
    return code;
}

int mae__db_error_in(mae_db *db, int code, const char *fn, const char *fmt, ...)
{
    va_list ap;
    if (!db)
        return code;
    int n = snprintf(db->errmsg, sizeof db->errmsg, "%s: %s: ", mae_strerror(code), fn);
    if (n < 0 || (size_t)n >= sizeof db->errmsg)
        return code;
    va_start(ap, fmt);
    mae__vformat(db->errmsg + n, sizeof db->errmsg - (size_t)n, fmt, ap);
    va_end(ap);
    return code;
}

int mae__db_sqlite_error(mae_db *db, int rc, const char *what)
{
    int code = mae__db_map_sqlite(rc);
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

const char *mae_db_errmsg(const mae_db *db)
{
    if (!db)
        return "invalid argument: the database handle is NULL";
    return db->errmsg;
}
