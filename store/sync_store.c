/* This module implements the sync store: a mail's row in email_metadata,
 * its Notion sync state and retries, the email.* events, and the reads used
 * for reconciliation. */
#include <stdlib.h>
#include <string.h>

#include <mailagent/sync_store.h>

#include "db/db_internal.h"
#include "core/event.h"

#define DEFAULT_LIMIT 50

static const char dead_letter_prefix[] = "Max retries exceeded: ";

/* The statuses a mail can be in; anything else given by a caller is a bad
 * argument. */
static const char *const statuses[] = {"pending", "synced", "fetch_failed", "failed",
                                       "dead_letter"};

static bool known_status(const char *s)
{
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++)
        if (strcmp(s, statuses[i]) == 0)
            return true;
    return false;
}

/* ---- writes --------------------------------------------------------------- */

static const char sql_upsert[] =
    "INSERT INTO email_metadata (internal_id, message_id, thread_id, subject, sender,"
    " sender_name, to_addr, cc_addr, date_received, mailbox, sync_status, retry_count,"
    " created_at, updated_at)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'pending', 0, ?11, ?11)"
    " ON CONFLICT(internal_id) DO UPDATE SET message_id = excluded.message_id,"
    " thread_id = excluded.thread_id, subject = excluded.subject, sender = excluded.sender,"
    " sender_name = excluded.sender_name, to_addr = excluded.to_addr,"
    " cc_addr = excluded.cc_addr, date_received = excluded.date_received,"
    " mailbox = excluded.mailbox, updated_at = excluded.updated_at";

int mae_sync_store_upsert(mae_db *db, const mae_email *mail)
{
    enum { NTEXT = 9 };
    char *text[NTEXT] = {0};
    sqlite3_stmt *st;
    int rc;

    MAE__DB_ENTER(db);
    if (!mail)
        return MAE__DB_FAIL(db, MAE_EINVAL, "the mail is NULL");
    if (mail->internal_id <= 0)
        return MAE__DB_FAIL(db, MAE_EINVAL, "internal_id must be > 0");
    if (!mail->message_id || !mail->message_id[0])
        return MAE__DB_FAIL(db, MAE_EINVAL, "message_id must be a non-empty string");

    /* The metadata as the watcher gives it replaces what was stored: a NULL
     * field is stored as NULL. Sync state is left alone. */
    const char *in[NTEXT] = {mail->message_id, mail->thread_id, mail->subject,
                             mail->sender,     mail->sender_name, mail->to_addr,
                             mail->cc_addr,    mail->date_received, mail->mailbox};
    for (int i = 0; i < NTEXT; i++) {
        rc = mae__db_clean(db, in[i], 0, &text[i]);
        if (rc != MAE_OK)
            goto out;
    }
    rc = mae__db_write_begin(db);
    if (rc != MAE_OK)
        goto out;
    rc = mae__db_stmt(db, sql_upsert, &st);
    if (rc == MAE_OK) {
        sqlite3_bind_int64(st, 1, mail->internal_id);
        for (int i = 0; i < NTEXT; i++)
            mae__bind_text(st, i + 2, text[i]);
        sqlite3_bind_double(st, 11, mae__db_now(db));
        rc = mae__db_step_done(db, st, "storing the mail's metadata");
    }
    rc = mae__db_write_end(db, rc);
out:
    for (int i = 0; i < NTEXT; i++)
        free(text[i]);
    return rc;
}

static const char sql_synced[] =
    "UPDATE email_metadata SET sync_status = 'synced', notion_page_id = ?2,"
    " notion_thread_id = COALESCE(?3, notion_thread_id), sync_error = NULL,"
    " next_retry_at = NULL, updated_at = ?4 WHERE internal_id = ?1";

int mae_sync_store_mark_synced(mae_db *db, int64_t internal_id, const char *notion_page_id,
                               const char *notion_thread_id, const char *source)
{
    char *page = NULL, *thread = NULL;
    mae__buf ev;
    sqlite3_stmt *st;
    int rc;

    MAE__DB_ENTER(db);
    if (internal_id <= 0)
        return MAE__DB_FAIL(db, MAE_EINVAL, "internal_id must be > 0");
    if (!notion_page_id || !notion_page_id[0])
        return MAE__DB_FAIL(db, MAE_EINVAL, "notion_page_id must be a non-empty string");
    if (source && !source[0])
        return MAE__DB_FAIL(db, MAE_EINVAL, "source must be NULL or non-empty");
    if (!source)
        source = MAE_SOURCE_SYNC_STORE;

    mae__buf_init(&ev);
    rc = mae__db_clean(db, notion_page_id, 0, &page);
    if (rc == MAE_OK)
        rc = mae__db_clean(db, notion_thread_id, 0, &thread);
    if (rc != MAE_OK)
        goto out;
    rc = mae__db_write_begin(db);
    if (rc != MAE_OK)
        goto out;
    rc = mae__db_stmt(db, sql_synced, &st);
    if (rc == MAE_OK) {
        sqlite3_bind_int64(st, 1, internal_id);
        mae__bind_text(st, 2, page);
        mae__bind_text(st, 3, thread);
        sqlite3_bind_double(st, 4, mae__db_now(db));
        rc = mae__db_step_done(db, st, "marking the mail synced");
    }
    if (rc == MAE_OK && sqlite3_changes(mae_db_sqlite(db)) == 0)
        rc = MAE__DB_FAIL(db, MAE_ENOTFOUND, "no mail with id %lld", (long long)internal_id);
    if (rc == MAE_OK) {
        if (mae__db_wants_events(db))
            mae__ev_email_synced(&ev, internal_id, page, source);
        rc = mae__db_hold(db, &ev);
    }
    rc = mae__db_write_end(db, rc);
out:
    mae__buf_free(&ev);
    free(page);
    free(thread);
    return rc;
}

static const char sql_retry_count[] =
    "SELECT COALESCE(retry_count, 0) FROM email_metadata WHERE internal_id = ?1";
static const char sql_failed[] =
    "UPDATE email_metadata SET sync_status = ?2, retry_count = ?3, next_retry_at = ?4,"
    " sync_error = ?5, updated_at = ?6 WHERE internal_id = ?1";

/* Reads the row's retry count inside the write; MAE_ENOTFOUND (naming fn)
 * when the mail is missing. */
static int read_retry_count(mae_db *db, const char *fn, int64_t internal_id, int64_t *count)
{
    sqlite3_stmt *st;
    int rc = mae__db_stmt(db, sql_retry_count, &st);
    if (rc != MAE_OK)
        return rc;
    sqlite3_bind_int64(st, 1, internal_id);
    int s = sqlite3_step(st);
    if (s == SQLITE_ROW) {
        *count = sqlite3_column_int64(st, 0);
        rc = MAE_OK;
    } else if (s == SQLITE_DONE) {
        rc =
            mae__db_error_in(db, MAE_ENOTFOUND, fn, "no mail with id %lld", (long long)internal_id);
    } else {
        rc = mae__db_sqlite_error(db, s, "reading the mail's retry count");
    }
    sqlite3_reset(st);
    return rc;
}

int mae_sync_store_mark_failed(mae_db *db, int64_t internal_id, const char *status,
                               const char *error, mae_retry_outcome *out)
{
    char *err = NULL, *stored = NULL;
    mae__buf ev;
    sqlite3_stmt *st;
    int64_t count = 0;
    int rc;

    MAE__DB_ENTER(db);
    if (internal_id <= 0)
        return MAE__DB_FAIL(db, MAE_EINVAL, "internal_id must be > 0");
    if (!status || (strcmp(status, "fetch_failed") != 0 && strcmp(status, "failed") != 0))
        return MAE__DB_FAIL(db, MAE_EINVAL, "status must be \"fetch_failed\" or \"failed\"");
    if (!error || !error[0])
        return MAE__DB_FAIL(db, MAE_EINVAL, "error must be a non-empty string");

    mae__buf_init(&ev);
    /* Cutting first keeps a huge error from being copied whole; the prefix
     * is ASCII, so cutting the joined text again gives the same result as
     * cutting the whole once. */
    rc = mae__db_clean(db, error, MAE_STORED_ERROR_MAX, &err);
    if (rc != MAE_OK)
        goto out;

    rc = mae__db_write_begin(db);
    if (rc != MAE_OK)
        goto out;
    /* BEGIN IMMEDIATE (or the caller's, which is one) holds the write lock
     * from this read to the update: two processes count two attempts. */
    rc = read_retry_count(db, __func__, internal_id, &count);
    mae__failure f;
    mae__failure_count(db, count, db->email_max_retries, &f);
    if (rc == MAE_OK && f.terminal) {
        size_t plen = sizeof dead_letter_prefix - 1, elen = strlen(err);
        char *joined = malloc(plen + elen + 1);
        if (!joined) {
            rc = mae__db_error(db, MAE_ENOMEM, "building the dead-letter error: out of memory");
        } else {
            memcpy(joined, dead_letter_prefix, plen);
            memcpy(joined + plen, err, elen + 1);
            rc = mae__db_clean(db, joined, MAE_STORED_ERROR_MAX, &stored);
            free(joined);
        }
    }
    if (rc == MAE_OK)
        rc = mae__db_stmt(db, sql_failed, &st);
    if (rc == MAE_OK) {
        sqlite3_bind_int64(st, 1, internal_id);
        sqlite3_bind_text(st, 2, f.terminal ? "dead_letter" : status, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, f.attempts);
        if (f.terminal)
            sqlite3_bind_null(st, 4);
        else
            sqlite3_bind_double(st, 4, f.next_retry_at);
        mae__bind_text(st, 5, f.terminal ? stored : err);
        sqlite3_bind_double(st, 6, f.now);
        rc = mae__db_step_done(db, st, "recording the mail's failure");
    }
    if (rc == MAE_OK) {
        if (mae__db_wants_events(db)) {
            if (f.terminal)
                mae__ev_email_dead_letter(&ev, internal_id, f.attempts, err);
            else
                mae__ev_email_failed(&ev, internal_id, status, f.attempts, f.next_retry_at, err);
        }
        rc = mae__db_hold(db, &ev);
    }
    rc = mae__failure_end(db, rc, &f, out);
out:
    mae__buf_free(&ev);
    free(err);
    free(stored);
    return rc;
}

/* ---- reads ---------------------------------------------------------------- */

#define EMAIL_COLUMNS                                                                   \
    "internal_id, message_id, thread_id, subject, sender, sender_name, to_addr,"      \
    " cc_addr, date_received, mailbox, is_read, is_flagged, sync_status,"             \
    " notion_page_id, notion_thread_id, sync_error, retry_count, next_retry_at,"      \
    " created_at, updated_at"

static void row_clear(void *row)
{
    mae_email_row *r = row;
    free(r->message_id);
    free(r->thread_id);
    free(r->subject);
    free(r->sender);
    free(r->sender_name);
    free(r->to_addr);
    free(r->cc_addr);
    free(r->date_received);
    free(r->mailbox);
    free(r->sync_status);
    free(r->notion_page_id);
    free(r->notion_thread_id);
    free(r->sync_error);
    memset(r, 0, sizeof *r);
}

/* Fills a mae_email_row from the current row of a statement selecting
 * EMAIL_COLUMNS. */
static int row_read(mae_db *db, sqlite3_stmt *st, void *row)
{
    mae_email_row *r = row;
    bool oom = false;
    memset(r, 0, sizeof *r);
    r->internal_id = mae__col_int(st, 0);
    r->message_id = mae__col_text(st, 1, &oom);
    r->thread_id = mae__col_text(st, 2, &oom);
    r->subject = mae__col_text(st, 3, &oom);
    r->sender = mae__col_text(st, 4, &oom);
    r->sender_name = mae__col_text(st, 5, &oom);
    r->to_addr = mae__col_text(st, 6, &oom);
    r->cc_addr = mae__col_text(st, 7, &oom);
    r->date_received = mae__col_text(st, 8, &oom);
    r->mailbox = mae__col_text(st, 9, &oom);
    r->is_read = mae__col_int(st, 10) != 0;
    r->is_flagged = mae__col_int(st, 11) != 0;
    r->sync_status = mae__col_text(st, 12, &oom);
    r->notion_page_id = mae__col_text(st, 13, &oom);
    r->notion_thread_id = mae__col_text(st, 14, &oom);
    r->sync_error = mae__col_text(st, 15, &oom);
    r->retry_count = mae__col_int(st, 16);
    r->next_retry_at = mae__col_real(st, 17);
    r->created_at = mae__col_real(st, 18);
    r->updated_at = mae__col_real(st, 19);
    if (oom) {
        row_clear(r);
        return mae__db_error(db, MAE_ENOMEM, "reading a mail: out of memory");
    }
    return MAE_OK;
}

static const mae__row_type email_rows = {sizeof(mae_email_row), sizeof(mae_email_list), 16,
                                         row_read, row_clear};

void mae_email_row_free(mae_email_row *row)
{
    mae__db_free_row(&email_rows, row);
}

void mae_email_list_free(mae_email_list *list)
{
    if (!list)
        return;
    mae__db_free_rows(&email_rows, list->rows, list->count);
    free(list);
}

static const char sql_get[] = "SELECT " EMAIL_COLUMNS " FROM email_metadata WHERE internal_id = ?1";
static const mae__by_id email_by_id = {&email_rows, sql_get, "internal_id must be > 0",
                                       "no mail with id", "reading a mail", "reading a mail"};

int mae_sync_store_get(mae_db *db, int64_t internal_id, mae_email_row **out)
{
    void *row;
    int rc = mae__db_get_by_id(db, __func__, out, &email_by_id, internal_id, &row);
    if (rc == MAE_OK)
        *out = row;
    return rc;
}

/* Collects every row of a bound statement selecting EMAIL_COLUMNS into a new
 * list. Resets st. */
static int collect(mae_db *db, sqlite3_stmt *st, mae_email_list **out)
{
    mae__rows got;
    int rc = mae__db_collect_rows(db, st, &email_rows, "reading mails", "reading mails", &got);
    if (rc != MAE_OK)
        return rc;
    mae_email_list *list = got.list;
    list->rows = got.rows;
    list->count = got.count;
    *out = list;
    return MAE_OK;
}

static const char sql_list[] = "SELECT " EMAIL_COLUMNS " FROM email_metadata"
                               " WHERE ?1 IS NULL OR sync_status = ?1"
                               " ORDER BY date_received DESC, internal_id DESC LIMIT ?2";

int mae_sync_store_list(mae_db *db, const char *status, int limit, mae_email_list **out)
{
    sqlite3_stmt *st;
    const char *invalid =
        status && !known_status(status)
            ? "unknown status (expected pending, synced, fetch_failed, failed or dead_letter)"
            : NULL;
    int rc = mae__db_read_start(db, __func__, out, invalid, sql_list, &st);
    if (rc != MAE_OK)
        return rc;
    mae__bind_text(st, 1, status);
    sqlite3_bind_int(st, 2, limit > 0 ? limit : DEFAULT_LIMIT);
    return collect(db, st, out);
}

static const char sql_due[] = "SELECT " EMAIL_COLUMNS " FROM email_metadata"
                              " WHERE sync_status IN ('fetch_failed','failed')"
                              " AND next_retry_at <= ?1"
                              " ORDER BY next_retry_at ASC, internal_id ASC LIMIT ?2";

int mae_sync_store_due_for_retry(mae_db *db, double now, int limit, mae_email_list **out)
{
    sqlite3_stmt *st;
    int rc = mae__db_read_start(db, __func__, out, NULL, sql_due, &st);
    if (rc != MAE_OK)
        return rc;
    sqlite3_bind_double(st, 1, now > 0 ? now : mae__db_now(db));
    sqlite3_bind_int(st, 2, limit > 0 ? limit : DEFAULT_LIMIT);
    return collect(db, st, out);
}

static const char sql_count[] = "SELECT COALESCE(sync_status, ''), count(*) FROM email_metadata"
                                " GROUP BY 1 ORDER BY 1";

int mae_sync_store_count_by_status(mae_db *db, mae_counts **out)
{
    return mae__db_count_by(db, __func__, sql_count, "counting mails by status", out);
}
