/* This module implements the LLM processing store: a mail's row in
 * llm_processing (outcome of its LLM run, token use, retries), the llm.*
 * events, and the reads behind `mailagent llm stats`. */
#include <stdlib.h>
#include <string.h>

#include <mailagent/llm.h>

#include "core/json.h"
#include "core/event.h"
#include "db/db_internal.h"

#define DEFAULT_LIMIT 50
#define DEFAULT_STALE_S 300.0

/* llm_processing has no foreign key: a mail is known when it has a row in
 * email_metadata or already one here (rows of the original system may
 * outlive their mail). Called inside the write, so the answer holds until
 * the commit. */
static const char sql_known[] =
    "SELECT EXISTS (SELECT 1 FROM email_metadata WHERE internal_id = ?1)"
    " OR EXISTS (SELECT 1 FROM llm_processing WHERE internal_id = ?1)";

static int require_mail(mae_db *db, int64_t internal_id, const char *fn)
{
    sqlite3_stmt *st;
    int rc = mae__db_stmt(db, sql_known, &st);
    if (rc != MAE_OK)
        return rc;
    sqlite3_bind_int64(st, 1, internal_id);
    int s = sqlite3_step(st);
    if (s != SQLITE_ROW)
        rc = mae__db_sqlite_error(db, s, "looking the mail up");
    else if (sqlite3_column_int(st, 0) == 0)
        rc =
            mae__db_error_in(db, MAE_ENOTFOUND, fn, "no mail with id %lld", (long long)internal_id);
    sqlite3_reset(st);
    return rc;
}

/* Starts a write on a mail the store knows (fn names the caller in errors)
 * and prepares sql with the mail id bound to ?1. MAE_OK with the write in
 * progress, or the error with the write already ended (undone). */
static int begin_on_mail(mae_db *db, const char *fn, int64_t internal_id, const char *sql,
                         sqlite3_stmt **st)
{
    int rc = mae__db_write_begin(db);
    if (rc != MAE_OK)
        return rc;
    rc = require_mail(db, internal_id, fn);
    if (rc == MAE_OK)
        rc = mae__db_stmt(db, sql, st);
    if (rc != MAE_OK)
        return mae__db_write_end(db, rc);
    sqlite3_bind_int64(*st, 1, internal_id);
    return MAE_OK;
}

/* ---- writes --------------------------------------------------------------- */

static const char sql_pending[] =
    "INSERT INTO llm_processing (internal_id, notion_page_id, mailbox, status, retry_count,"
    " created_at, updated_at) VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?4)"
    " ON CONFLICT(internal_id) DO UPDATE SET"
    " notion_page_id = COALESCE(excluded.notion_page_id, notion_page_id),"
    " mailbox = COALESCE(excluded.mailbox, mailbox), status = 'pending',"
    " updated_at = excluded.updated_at";

int mae_llm_store_mark_pending(mae_db *db, int64_t internal_id, const char *notion_page_id,
                               const char *mailbox)
{
    char *page = NULL, *box = NULL;
    sqlite3_stmt *st;
    int rc;

    MAE__DB_ENTER(db);
    if (internal_id <= 0)
        return MAE__DB_FAIL(db, MAE_EINVAL, "internal_id must be > 0");
    rc = mae__db_clean(db, notion_page_id, 0, &page);
    if (rc == MAE_OK)
        rc = mae__db_clean(db, mailbox, 0, &box);
    if (rc != MAE_OK)
        goto out;
    /* The retry count is kept: marking pending starts an attempt, and the
     * attempts of one mail count towards one limit. */
    rc = begin_on_mail(db, __func__, internal_id, sql_pending, &st);
    if (rc != MAE_OK)
        goto out;
    mae__bind_text(st, 2, page);
    mae__bind_text(st, 3, box);
    sqlite3_bind_double(st, 4, mae__db_now(db));
    rc = mae__db_step_done(db, st, "marking the LLM run pending");
    rc = mae__db_write_end(db, rc);
out:
    free(page);
    free(box);
    return rc;
}

static const char sql_success[] =
    "INSERT INTO llm_processing (internal_id, notion_page_id, status, retry_count,"
    " next_retry_at, last_error, model, input_tokens, output_tokens,"
    " cache_read_input_tokens, cache_creation_input_tokens, latency_ms, labels_json,"
    " created_at, updated_at)"
    " VALUES (?1, ?2, 'success', 0, NULL, NULL, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)"
    " ON CONFLICT(internal_id) DO UPDATE SET"
    " notion_page_id = COALESCE(excluded.notion_page_id, notion_page_id),"
    " status = 'success', retry_count = 0, next_retry_at = NULL, last_error = NULL,"
    " model = excluded.model, input_tokens = excluded.input_tokens,"
    " output_tokens = excluded.output_tokens,"
    " cache_read_input_tokens = excluded.cache_read_input_tokens,"
    " cache_creation_input_tokens = excluded.cache_creation_input_tokens,"
    " latency_ms = excluded.latency_ms, labels_json = excluded.labels_json,"
    " updated_at = excluded.updated_at";

int mae_llm_store_mark_success(mae_db *db, int64_t internal_id, const char *notion_page_id,
                               const mae_llm_usage *usage)
{
    char *page = NULL, *model = NULL, *labels = NULL;
    mae__buf ev;
    sqlite3_stmt *st;
    int rc;

    MAE__DB_ENTER(db);
    if (internal_id <= 0)
        return MAE__DB_FAIL(db, MAE_EINVAL, "internal_id must be > 0");
    if (!usage)
        return MAE__DB_FAIL(db, MAE_EINVAL, "usage is NULL");
    if (!usage->model || !usage->model[0])
        return MAE__DB_FAIL(db, MAE_EINVAL, "model must be a non-empty string");
    if (usage->input_tokens < 0 || usage->output_tokens < 0 ||
        usage->cache_read_input_tokens < 0 || usage->cache_creation_input_tokens < 0 ||
        usage->latency_ms < 0)
        return MAE__DB_FAIL(db, MAE_EINVAL, "token counts and latency must be >= 0");

    mae__buf_init(&ev);
    if (usage->labels_json) {
        /* Stored canonical with long string values cut, so the column is
         * always valid JSON (never a cut serialised text). */
        rc = mae__json_canonical(usage->labels_json, MAE_LLM_LABEL_MAX_CHARS, &labels);
        if (rc == MAE_EINVAL)
            rc = MAE__DB_FAIL(db, MAE_EINVAL, "labels_json is not a valid JSON object");
        else if (rc != MAE_OK)
            rc = MAE__DB_FAIL(db, rc, "canonicalising labels_json failed");
        if (rc != MAE_OK)
            goto out;
    }
    rc = mae__db_clean(db, notion_page_id, 0, &page);
    if (rc == MAE_OK)
        rc = mae__db_clean(db, usage->model, 0, &model);
    if (rc != MAE_OK)
        goto out;

    rc = begin_on_mail(db, __func__, internal_id, sql_success, &st);
    if (rc != MAE_OK)
        goto out;
    mae__bind_text(st, 2, page);
    mae__bind_text(st, 3, model);
    sqlite3_bind_int64(st, 4, usage->input_tokens);
    sqlite3_bind_int64(st, 5, usage->output_tokens);
    sqlite3_bind_int64(st, 6, usage->cache_read_input_tokens);
    sqlite3_bind_int64(st, 7, usage->cache_creation_input_tokens);
    sqlite3_bind_int64(st, 8, usage->latency_ms);
    mae__bind_text(st, 9, labels);
    sqlite3_bind_double(st, 10, mae__db_now(db));
    rc = mae__db_step_done(db, st, "recording the LLM run's success");
    if (rc == MAE_OK) {
        if (mae__db_wants_events(db))
            mae__ev_llm_success(&ev, internal_id, model, usage->input_tokens,
                                usage->output_tokens, usage->latency_ms);
        rc = mae__db_hold(db, &ev);
    }
    rc = mae__db_write_end(db, rc);
out:
    mae__buf_free(&ev);
    free(page);
    free(model);
    free(labels);
    return rc;
}

static const char sql_retry_count[] =
    "SELECT COALESCE(retry_count, 0) FROM llm_processing WHERE internal_id = ?1";
static const char sql_failed[] =
    "INSERT INTO llm_processing (internal_id, status, retry_count, next_retry_at, last_error,"
    " created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)"
    " ON CONFLICT(internal_id) DO UPDATE SET status = excluded.status,"
    " retry_count = excluded.retry_count, next_retry_at = excluded.next_retry_at,"
    " last_error = excluded.last_error, updated_at = excluded.updated_at";

int mae_llm_store_mark_failed(mae_db *db, int64_t internal_id, const char *error,
                              mae_retry_outcome *out)
{
    char *err = NULL;
    mae__buf ev;
    sqlite3_stmt *st;
    int64_t count = 0;
    int rc;

    MAE__DB_ENTER(db);
    if (internal_id <= 0)
        return MAE__DB_FAIL(db, MAE_EINVAL, "internal_id must be > 0");
    if (!error || !error[0])
        return MAE__DB_FAIL(db, MAE_EINVAL, "error must be a non-empty string");

    mae__buf_init(&ev);
    rc = mae__db_clean(db, error, MAE_STORED_ERROR_MAX, &err);
    if (rc != MAE_OK)
        goto out;
    rc = mae__db_write_begin(db);
    if (rc != MAE_OK)
        goto out;
    /* Read and write under the write lock (BEGIN IMMEDIATE, or the caller's
     * transaction, which is one): concurrent failures each count. */
    rc = require_mail(db, internal_id, __func__);
    if (rc == MAE_OK)
        rc = mae__db_stmt(db, sql_retry_count, &st);
    if (rc == MAE_OK) {
        sqlite3_bind_int64(st, 1, internal_id);
        int s = sqlite3_step(st);
        if (s == SQLITE_ROW)
            count = sqlite3_column_int64(st, 0);
        else if (s != SQLITE_DONE) /* no row yet: this is the first failure */
            rc = mae__db_sqlite_error(db, s, "reading the LLM retry count");
        sqlite3_reset(st);
    }
    /* The schedule starts at its first step with the first failure, like
     * the other stores (the original's off-by-one was a slip). */
    mae__failure f;
    mae__failure_count(db, count, db->llm_max_retries, &f);
    if (rc == MAE_OK)
        rc = mae__db_stmt(db, sql_failed, &st);
    if (rc == MAE_OK) {
        sqlite3_bind_int64(st, 1, internal_id);
        sqlite3_bind_text(st, 2, f.terminal ? "gave_up" : "failed", -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, f.attempts);
        if (f.terminal)
            sqlite3_bind_null(st, 4);
        else
            sqlite3_bind_double(st, 4, f.next_retry_at);
        mae__bind_text(st, 5, err);
        sqlite3_bind_double(st, 6, f.now);
        rc = mae__db_step_done(db, st, "recording the LLM run's failure");
    }
    if (rc == MAE_OK) {
        if (mae__db_wants_events(db)) {
            if (f.terminal)
                mae__ev_llm_gave_up(&ev, internal_id, f.attempts, err);
            else
                mae__ev_llm_failed(&ev, internal_id, f.attempts, f.next_retry_at, err);
        }
        rc = mae__db_hold(db, &ev);
    }
    rc = mae__failure_end(db, rc, &f, out);
out:
    mae__buf_free(&ev);
    free(err);
    return rc;
}

/* A pending row without updated_at cannot prove it is fresh: a process of
 * the original system left it, so it counts as stale too. */
static const char sql_stale[] =
    "UPDATE llm_processing SET status = 'failed', next_retry_at = ?1, updated_at = ?1"
    " WHERE status = 'pending' AND (updated_at IS NULL OR updated_at < ?2)";

int mae_llm_store_reset_stale_pending(mae_db *db, double older_than_s, int64_t *reset)
{
    sqlite3_stmt *st;
    int64_t n = 0;

    MAE__DB_ENTER(db);
    if (!(older_than_s > 0))
        older_than_s = DEFAULT_STALE_S;
    int rc = mae__db_write_begin(db);
    if (rc != MAE_OK)
        return rc;
    rc = mae__db_stmt(db, sql_stale, &st);
    if (rc == MAE_OK) {
        double now = mae__db_now(db);
        sqlite3_bind_double(st, 1, now);
        sqlite3_bind_double(st, 2, now - older_than_s);
        rc = mae__db_step_done(db, st, "resetting stale pending LLM runs");
        n = sqlite3_changes(db->sql);
    }
    rc = mae__db_write_end(db, rc);
    if (rc == MAE_OK && reset)
        *reset = n;
    return rc;
}

/* ---- reads ---------------------------------------------------------------- */

#define LLM_COLUMNS                                                                     \
    "internal_id, notion_page_id, mailbox, status, retry_count, next_retry_at,"       \
    " last_error, model, input_tokens, output_tokens, cache_read_input_tokens,"       \
    " cache_creation_input_tokens, latency_ms, labels_json, created_at, updated_at"

static void row_clear(void *row)
{
    mae_llm_row *r = row;
    free(r->notion_page_id);
    free(r->mailbox);
    free(r->status);
    free(r->last_error);
    free(r->model);
    free(r->labels_json);
    memset(r, 0, sizeof *r);
}

/* Fills a mae_llm_row from the current row of a statement selecting
 * LLM_COLUMNS. */
static int row_read(mae_db *db, sqlite3_stmt *st, void *row)
{
    mae_llm_row *r = row;
    bool oom = false;
    memset(r, 0, sizeof *r);
    r->internal_id = mae__col_int(st, 0);
    r->notion_page_id = mae__col_text(st, 1, &oom);
    r->mailbox = mae__col_text(st, 2, &oom);
    r->status = mae__col_text(st, 3, &oom);
    r->retry_count = mae__col_int(st, 4);
    r->next_retry_at = mae__col_real(st, 5);
    r->last_error = mae__col_text(st, 6, &oom);
    r->model = mae__col_text(st, 7, &oom);
    r->input_tokens = mae__col_int(st, 8);
    r->output_tokens = mae__col_int(st, 9);
    r->cache_read_input_tokens = mae__col_int(st, 10);
    r->cache_creation_input_tokens = mae__col_int(st, 11);
    r->latency_ms = mae__col_int(st, 12);
    r->labels_json = mae__col_text(st, 13, &oom);
    r->created_at = mae__col_real(st, 14);
    r->updated_at = mae__col_real(st, 15);
    if (oom) {
        row_clear(r);
        return mae__db_error(db, MAE_ENOMEM, "reading an LLM row: out of memory");
    }
    return MAE_OK;
}

static const mae__row_type llm_rows = {sizeof(mae_llm_row), sizeof(mae_llm_list), 16, row_read,
                                       row_clear};

void mae_llm_row_free(mae_llm_row *row)
{
    mae__db_free_row(&llm_rows, row);
}

void mae_llm_list_free(mae_llm_list *list)
{
    if (!list)
        return;
    mae__db_free_rows(&llm_rows, list->rows, list->count);
    free(list);
}

static const char sql_get[] = "SELECT " LLM_COLUMNS " FROM llm_processing WHERE internal_id = ?1";
static const mae__by_id llm_by_id = {&llm_rows, sql_get, "internal_id must be > 0",
                                     "no LLM row for mail", "reading an LLM row",
                                     "reading an LLM row"};

int mae_llm_store_get(mae_db *db, int64_t internal_id, mae_llm_row **out)
{
    void *row;
    int rc = mae__db_get_by_id(db, __func__, out, &llm_by_id, internal_id, &row);
    if (rc == MAE_OK)
        *out = row;
    return rc;
}

static const char sql_due[] = "SELECT " LLM_COLUMNS " FROM llm_processing"
                              " WHERE status = 'failed' AND next_retry_at <= ?1"
                              " ORDER BY next_retry_at ASC, internal_id ASC LIMIT ?2";

int mae_llm_store_due_for_retry(mae_db *db, double now, int limit, mae_llm_list **out)
{
    sqlite3_stmt *st;
    mae__rows got;
    int rc = mae__db_read_start(db, __func__, out, NULL, sql_due, &st);
    if (rc != MAE_OK)
        return rc;
    sqlite3_bind_double(st, 1, now > 0 ? now : mae__db_now(db));
    sqlite3_bind_int(st, 2, limit > 0 ? limit : DEFAULT_LIMIT);
    rc = mae__db_collect_rows(db, st, &llm_rows, "reading LLM rows due for retry",
                              "reading LLM rows", &got);
    if (rc != MAE_OK)
        return rc;
    mae_llm_list *list = got.list;
    list->rows = got.rows;
    list->count = got.count;
    *out = list;
    return MAE_OK;
}

static const char sql_count[] = "SELECT COALESCE(status, ''), count(*) FROM llm_processing"
                                " GROUP BY 1 ORDER BY 1";

int mae_llm_store_count_by_status(mae_db *db, mae_counts **out)
{
    return mae__db_count_by(db, __func__, sql_count, "counting LLM rows by status", out);
}

static const char sql_totals[] =
    "SELECT count(*), total(input_tokens), total(output_tokens),"
    " total(cache_read_input_tokens), total(cache_creation_input_tokens),"
    " avg(latency_ms), count(latency_ms)"
    " FROM llm_processing WHERE status = 'success'";
/* p95 by nearest rank: the ceil(0.95 N)-th smallest latency. */
static const char sql_rank[] =
    "SELECT latency_ms FROM llm_processing WHERE status = 'success' AND latency_ms IS NOT NULL"
    " ORDER BY latency_ms ASC LIMIT 1 OFFSET ?1";

int mae_llm_store_totals(mae_db *db, mae_llm_totals *out)
{
    sqlite3_stmt *st;
    mae_llm_totals t;
    int64_t with_latency = 0;
    int s;

    int rc = mae__db_read_start(db, __func__, out, NULL, sql_totals, &st);
    if (rc != MAE_OK)
        return rc;
    memset(&t, 0, sizeof t);
    s = sqlite3_step(st);
    if (s == SQLITE_ROW) {
        t.successes = sqlite3_column_int64(st, 0);
        /* total() is a float; token sums stay far below 2^53. */
        t.input_tokens = (int64_t)sqlite3_column_double(st, 1);
        t.output_tokens = (int64_t)sqlite3_column_double(st, 2);
        t.cache_read_input_tokens = (int64_t)sqlite3_column_double(st, 3);
        t.cache_creation_input_tokens = (int64_t)sqlite3_column_double(st, 4);
        t.latency_mean_ms = mae__col_real(st, 5);
        with_latency = sqlite3_column_int64(st, 6);
    } else {
        rc = mae__db_sqlite_error(db, s, "totalling LLM runs");
    }
    sqlite3_reset(st);
    if (rc != MAE_OK)
        return rc;

    if (with_latency > 0) {
        int64_t rank = (95 * with_latency + 99) / 100; /* ceil without floats */
        rc = mae__db_stmt(db, sql_rank, &st);
        if (rc != MAE_OK)
            return rc;
        sqlite3_bind_int64(st, 1, rank - 1);
        s = sqlite3_step(st);
        if (s == SQLITE_ROW)
            t.latency_p95_ms = sqlite3_column_double(st, 0);
        else if (s != SQLITE_DONE) /* DONE: rows changed under us; keep 0 */
            rc = mae__db_sqlite_error(db, s, "computing the p95 latency");
        sqlite3_reset(st);
        if (rc != MAE_OK)
            return rc;
    }
    *out = t;
    return MAE_OK;
}
