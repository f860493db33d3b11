/* This module implements the outbox repository (mailagent/outbox.h): intents
 * in email_outbox, their merge into a pending twin, the state machine with
 * retries and dead letters, the outbox.* events, and the reads. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mailagent/outbox.h>

#include "core/event.h"
#include "db/db_internal.h"
#include "core/json.h"

#define POLL_DEFAULT_LIMIT 20
#define DEAD_LETTER_DEFAULT_LIMIT 100

static bool known_target(const char *t)
{
    return strcmp(t, "mailapp") == 0 || strcmp(t, "notion") == 0;
}

/* ---- the state machine of docs/stores.md -------------------------------------- */

/* The statuses of email_outbox (its CHECK constraint), and UNKNOWN for a
 * text another writer may have left in a file without that constraint. */
typedef enum intent_status {
    PENDING, PROCESSING, DONE, FAILED, DEAD_LETTER, STATUS_COUNT, UNKNOWN = STATUS_COUNT
} intent_status;

static const char *const status_names[STATUS_COUNT] = {
    [PENDING] = "pending", [PROCESSING] = "processing", [DONE] = "done",
    [FAILED] = "failed",   [DEAD_LETTER] = "dead_letter",
};

static intent_status status_of(const char *text)
{
    for (int i = 0; i < STATUS_COUNT; i++)
        if (strcmp(text, status_names[i]) == 0)
            return (intent_status)i;
    return UNKNOWN;
}

#define BIT(s) (1u << (s))

/* The transitions a caller asks for, and for each the statuses it may start
 * from, the status in which it has nothing to do (MAE_SKIPPED), and what
 * the refusal (MAE_ESTATE) says after "intent <id> is <status>". Failing
 * into failed or dead_letter is decided by the attempt count, not here. */
typedef enum transition { TO_PROCESSING, TO_DONE, TO_FAILED, RETRY_DEAD_LETTER } transition;

static const struct {
    unsigned from;
    intent_status already; /* UNKNOWN: never skipped */
    const char *refusal;
} transitions[] = {
    [TO_PROCESSING] = {BIT(PENDING) | BIT(FAILED), PROCESSING,
                       "; only a pending or failed intent can start processing"},
    [TO_DONE] = {BIT(PENDING) | BIT(PROCESSING) | BIT(FAILED), DONE,
                 "; retry the dead letter first"},
    [TO_FAILED] = {BIT(PENDING) | BIT(PROCESSING) | BIT(FAILED), UNKNOWN,
                   "; only a pending, processing or failed intent can fail"},
    [RETRY_DEAD_LETTER] = {BIT(DEAD_LETTER), UNKNOWN, ", not a dead letter"},
};

/* The part of a row the state machine decides on. */
typedef struct state {
    int64_t internal_id, attempts;
    intent_status status;
    char status_text[16]; /* as stored (cut), for messages */
    char *op_type, *target; /* only read by want_intent */
} state;

/* MAE_OK when the intent in state s may take transition t, MAE_SKIPPED when
 * it is already where t leads, else MAE_ESTATE with the message (naming
 * fn). */
static int check_transition(mae_db *db, const char *fn, transition t, int64_t outbox_id,
                            const state *s)
{
    if (s->status != UNKNOWN && (transitions[t].from & BIT(s->status)))
        return MAE_OK;
    if (transitions[t].already != UNKNOWN && s->status == transitions[t].already)
        return MAE_SKIPPED;
    return mae__db_error_in(db, MAE_ESTATE, fn, "intent %lld is %s%s", (long long)outbox_id,
                            s->status_text, transitions[t].refusal);
}

static const char sql_state[] =
    "SELECT internal_id, status, attempts, op_type, target FROM email_outbox"
    " WHERE outbox_id = ?1";

/* Reads the row's state inside the current write. MAE_ENOTFOUND (with a
 * message naming fn) when the row is missing. With want_intent, also copies
 * op_type and target (caller frees). */
static int read_state(mae_db *db, const char *fn, int64_t outbox_id, bool want_intent, state *s)
{
    sqlite3_stmt *st;
    memset(s, 0, sizeof *s);
    int rc = mae__db_stmt(db, sql_state, &st);
    if (rc != MAE_OK)
        return rc;
    sqlite3_bind_int64(st, 1, outbox_id);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        const unsigned char *status = sqlite3_column_text(st, 1);
        s->internal_id = sqlite3_column_int64(st, 0);
        s->attempts = sqlite3_column_int64(st, 2);
        if (status == NULL && sqlite3_column_type(st, 1) != SQLITE_NULL) {
            rc = mae__db_error_in(db, MAE_ENOMEM, fn, "reading the row: out of memory");
        } else {
            /* A status longer than any known one reads as unknown. */
            snprintf(s->status_text, sizeof s->status_text, "%s",
                     status ? (const char *)status : "");
            s->status = status_of(s->status_text);
        }
        if (rc == MAE_OK && want_intent) {
            bool oom = false;
            s->op_type = mae__col_text(st, 3, &oom);
            s->target = mae__col_text(st, 4, &oom);
            if (oom) {
                free(s->op_type);
                free(s->target);
                s->op_type = s->target = NULL;
                rc = mae__db_error_in(db, MAE_ENOMEM, fn, "reading the row: out of memory");
            }
        }
    } else if (step == SQLITE_DONE) {
        rc = mae__db_error_in(db, MAE_ENOTFOUND, fn, "no outbox intent with id %lld",
                              (long long)outbox_id);
    } else {
        rc = mae__db_sqlite_error(db, step, "reading the outbox intent");
    }
    sqlite3_reset(st);
    return rc;
}

/* The prelude of the calls on one intent: MAE_EINVAL for a NULL db (there
 * is nowhere to put a message); otherwise clears the last error and checks
 * the id, naming fn. */
static int intent_args(mae_db *db, const char *fn, int64_t outbox_id)
{
    MAE__DB_ENTER(db);
    if (outbox_id <= 0)
        return mae__db_error_in(db, MAE_EINVAL, fn, "outbox_id must be > 0");
    return MAE_OK;
}

/* Starts the write of transition t on intent outbox_id (its arguments
 * already checked by intent_args) and reads its state into s, with op_type
 * and target when want_intent (then the caller frees them). Returns MAE_OK
 * with the write in progress and t allowed; otherwise the write is already
 * ended and its result returned: MAE_SKIPPED when the intent is already
 * where t leads (nothing written), or the error (fn names the caller). */
static int begin_transition(mae_db *db, const char *fn, transition t, int64_t outbox_id,
                            bool want_intent, state *s)
{
    memset(s, 0, sizeof *s);
    int rc = mae__db_write_begin(db);
    if (rc != MAE_OK)
        return rc;
    rc = read_state(db, fn, outbox_id, want_intent, s);
    if (rc == MAE_OK)
        rc = check_transition(db, fn, t, outbox_id, s);
    if (rc != MAE_OK) {
        free(s->op_type);
        free(s->target);
        s->op_type = s->target = NULL;
        return mae__db_write_end(db, rc);
    }
    return MAE_OK;
}

/* Runs one of the state updates whose only parameters are the intent's id
 * (?1) and the time (?2); what names it in errors. */
static int update_intent(mae_db *db, const char *sql, int64_t outbox_id, const char *what)
{
    sqlite3_stmt *st;
    int rc = mae__db_stmt(db, sql, &st);
    if (rc != MAE_OK)
        return rc;
    sqlite3_bind_int64(st, 1, outbox_id);
    sqlite3_bind_double(st, 2, mae__db_now(db));
    return mae__db_step_done(db, st, what);
}

/* ---- enqueue -------------------------------------------------------------- */

static const char sql_find_pending[] =
    "SELECT outbox_id, payload_json FROM email_outbox"
    " WHERE internal_id = ?1 AND op_type = ?2 AND target = ?3 AND status = 'pending'"
    " ORDER BY outbox_id LIMIT 1";
static const char sql_merge[] =
    "UPDATE email_outbox SET payload_json = ?2, source = COALESCE(?3, source), updated_at = ?4"
    " WHERE outbox_id = ?1";
static const char sql_insert[] =
    "INSERT INTO email_outbox (internal_id, op_type, target, payload_json, source, status,"
    " attempts, last_error, next_retry_at, created_at, updated_at)"
    " VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, NULL, NULL, ?6, ?6)";

/* Looks for the pending twin of an intent. *id = 0 when there is none;
 * otherwise *id and *payload (caller frees). */
static int find_pending(mae_db *db, int64_t internal_id, const char *op_type,
                        const char *target, int64_t *id, char **payload)
{
    sqlite3_stmt *st;
    *id = 0;
    *payload = NULL;
    int rc = mae__db_stmt(db, sql_find_pending, &st);
    if (rc != MAE_OK)
        return rc;
    sqlite3_bind_int64(st, 1, internal_id);
    mae__bind_text(st, 2, op_type);
    mae__bind_text(st, 3, target);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        bool oom = false;
        *payload = mae__col_text(st, 1, &oom);
        if (oom || *payload == NULL) {
            free(*payload);
            *payload = NULL;
            rc = oom ? mae__db_error(db, MAE_ENOMEM, "reading the pending intent: out of memory")
                     : mae__db_error(db, MAE_EDB, "the pending intent's payload is NULL");
        } else {
            *id = sqlite3_column_int64(st, 0);
        }
    } else if (step != SQLITE_DONE) {
        rc = mae__db_sqlite_error(db, step, "looking for a pending twin of the intent");
    }
    sqlite3_reset(st);
    return rc;
}

/* An intent as enqueue writes it: copied and checked arguments. */
typedef struct intent {
    int64_t internal_id;
    const char *op_type, *target, *payload, *source; /* payload canonical */
} intent;

/* Checks enqueue's arguments; MAE_EINVAL with the reason (naming fn). */
static int enqueue_args(mae_db *db, const char *fn, int64_t internal_id, const char *op_type,
                        const char *target, const char *payload_json, const char *source)
{
    const char *why = NULL;
    if (internal_id <= 0)
        why = "internal_id must be > 0";
    else if (!op_type || !op_type[0])
        why = "op_type must be a non-empty string";
    else if (!target || !known_target(target))
        why = "target must be \"mailapp\" or \"notion\"";
    else if (source && !source[0])
        why = "source must be NULL or a non-empty string";
    else if (!payload_json)
        why = "payload_json is NULL";
    return why ? mae__db_error_in(db, MAE_EINVAL, fn, "%s", why) : MAE_OK;
}

/* Inside the write: merges the intent's payload into its pending twin
 * (found with id *id and payload old); no event. MAE_OK or the error. */
static int merge_into_twin(mae_db *db, const char *fn, const intent *in, int64_t id,
                           const char *old, double now)
{
    sqlite3_stmt *st;
    char *merged = NULL;
    int rc = mae__json_merge_patch(old, in->payload, &merged);
    if (rc == MAE_EINVAL)
        rc = mae__db_error_in(db, MAE_EDB, fn, "the stored payload of pending intent %lld is not"
                                                " a JSON object; not merged", (long long)id);
    else if (rc != MAE_OK)
        rc = mae__db_error_in(db, rc, fn, "merging the payload: out of memory");
    if (rc == MAE_OK)
        rc = mae__db_stmt(db, sql_merge, &st);
    if (rc == MAE_OK) {
        sqlite3_bind_int64(st, 1, id);
        mae__bind_text(st, 2, merged);
        mae__bind_text(st, 3, in->source);
        sqlite3_bind_double(st, 4, now);
        rc = mae__db_step_done(db, st, "merging into the pending intent");
    }
    free(merged);
    return rc;
}

/* Inside the write: inserts the intent and holds its outbox.enqueued event.
 * MAE_OK and *id, or the error (MAE_ENOTFOUND for a missing mail). */
static int insert_intent(mae_db *db, const intent *in, double now, int64_t *id)
{
    sqlite3_stmt *st;
    mae__buf ev;
    mae__buf_init(&ev);
    int rc = mae__db_stmt(db, sql_insert, &st);
    if (rc == MAE_OK) {
        sqlite3_bind_int64(st, 1, in->internal_id);
        mae__bind_text(st, 2, in->op_type);
        mae__bind_text(st, 3, in->target);
        mae__bind_text(st, 4, in->payload);
        mae__bind_text(st, 5, in->source);
        sqlite3_bind_double(st, 6, now);
        /* A missing mail fails the foreign key: MAE_ENOTFOUND. */
        rc = mae__db_step_done(db, st, "inserting the intent");
    }
    if (rc == MAE_OK) {
        *id = sqlite3_last_insert_rowid(mae_db_sqlite(db));
        if (mae__db_wants_events(db))
            mae__ev_outbox_enqueued(&ev, in->internal_id, *id, in->op_type, in->target,
                                    in->source);
        rc = mae__db_hold(db, &ev);
    }
    mae__buf_free(&ev);
    return rc;
}

/* One write: merge into the pending twin, or insert. */
static int write_intent(mae_db *db, const char *fn, const intent *in, int64_t *id, bool *is_new)
{
    char *old = NULL;
    /* BEGIN IMMEDIATE (or the caller's transaction, which is one) takes the
     * write lock before the lookup, so two processes enqueueing the same
     * intent are serialised: the second one finds the first one's row. The
     * partial unique index ux_outbox_pending_intent is the backstop. */
    int rc = mae__db_write_begin(db);
    if (rc != MAE_OK)
        return rc;
    double now = mae__db_now(db);
    rc = find_pending(db, in->internal_id, in->op_type, in->target, id, &old);
    if (rc == MAE_OK && *id != 0) {
        rc = merge_into_twin(db, fn, in, *id, old, now);
        *is_new = false;
    } else if (rc == MAE_OK) {
        rc = insert_intent(db, in, now, id);
        *is_new = true;
    }
    free(old);
    return mae__db_write_end(db, rc);
}

int mae_outbox_enqueue(mae_db *db, int64_t internal_id, const char *op_type, const char *target,
                       const char *payload_json, const char *source, int64_t *outbox_id,
                       bool *inserted)
{
    char *op = NULL, *src = NULL, *payload = NULL;
    int64_t id = 0;
    bool is_new = false;

    MAE__DB_ENTER(db);
    int rc = enqueue_args(db, __func__, internal_id, op_type, target, payload_json, source);
    if (rc != MAE_OK)
        return rc;

    /* Arguments, the payload included, are checked before echo prevention
     * (outbox.h): a bad call is an error whatever its source. */
    rc = mae__json_canonical(payload_json, 0, &payload);
    if (rc == MAE_EINVAL)
        return MAE__DB_FAIL(db, rc, "payload_json must be one JSON object (at most %d levels"
                                    " deep, no \\u0000)", MAE_JSON_MAX_DEPTH);
    if (rc != MAE_OK)
        return MAE__DB_FAIL(db, rc, "canonicalising the payload: out of memory");

    /* Echo prevention: a change that came from Notion must not be sent back
     * to Notion (Notion -> webhook -> outbox -> Notion -> webhook ...). */
    if (source && strcmp(source, MAE_SOURCE_NOTION_WEBHOOK) == 0 && strcmp(target, "notion") == 0) {
        if (outbox_id)
            *outbox_id = -1;
        free(payload);
        return MAE_SKIPPED;
    }

    rc = mae__db_clean(db, op_type, 0, &op);
    if (rc == MAE_OK)
        rc = mae__db_clean(db, source, 0, &src);
    if (rc == MAE_OK) {
        intent in = {internal_id, op, target, payload, src};
        rc = write_intent(db, __func__, &in, &id, &is_new);
    }
    if (rc == MAE_OK) {
        if (outbox_id)
            *outbox_id = id;
        if (inserted)
            *inserted = is_new;
    }
    free(op);
    free(src);
    free(payload);
    return rc;
}

/* ---- state machine -------------------------------------------------------- */

static const char sql_processing[] =
    "UPDATE email_outbox SET status = 'processing', updated_at = ?2 WHERE outbox_id = ?1";

int mae_outbox_mark_processing(mae_db *db, int64_t outbox_id)
{
    state s;

    int rc = intent_args(db, __func__, outbox_id);
    if (rc == MAE_OK)
        rc = begin_transition(db, __func__, TO_PROCESSING, outbox_id, false, &s);
    if (rc != MAE_OK)
        return rc;
    rc = update_intent(db, sql_processing, outbox_id, "marking the intent processing");
    return mae__db_write_end(db, rc);
}

static const char sql_done[] =
    "UPDATE email_outbox SET status = 'done', last_error = NULL, next_retry_at = NULL,"
    " updated_at = ?2 WHERE outbox_id = ?1";

int mae_outbox_mark_done(mae_db *db, int64_t outbox_id)
{
    mae__buf ev;
    state s;

    int rc = intent_args(db, __func__, outbox_id);
    if (rc == MAE_OK)
        rc = begin_transition(db, __func__, TO_DONE, outbox_id, false, &s);
    if (rc != MAE_OK)
        return rc;
    mae__buf_init(&ev);
    rc = update_intent(db, sql_done, outbox_id, "marking the intent done");
    if (rc == MAE_OK) {
        if (mae__db_wants_events(db))
            mae__ev_outbox_done(&ev, s.internal_id, outbox_id);
        rc = mae__db_hold(db, &ev);
    }
    rc = mae__db_write_end(db, rc);
    mae__buf_free(&ev);
    return rc;
}

static const char sql_failed[] =
    "UPDATE email_outbox SET status = ?2, attempts = ?3, last_error = ?4, next_retry_at = ?5,"
    " updated_at = ?6 WHERE outbox_id = ?1";

int mae_outbox_mark_failed(mae_db *db, int64_t outbox_id, const char *error,
                           mae_retry_outcome *out)
{
    char *err = NULL;
    sqlite3_stmt *st;
    mae__buf ev;
    state s;

    int rc = intent_args(db, __func__, outbox_id);
    if (rc != MAE_OK)
        return rc;
    if (!error || !error[0])
        return MAE__DB_FAIL(db, MAE_EINVAL, "error must be a non-empty string");
    /* Cut before anything else, so a huge error is never copied whole; the
     * event builder cuts this further to 200 code points. */
    rc = mae__db_clean(db, error, MAE_STORED_ERROR_MAX, &err);
    if (rc != MAE_OK)
        return rc;

    mae__buf_init(&ev);
    /* The attempt count is read and written under the write lock taken by
     * BEGIN IMMEDIATE: N processes failing the same row count N. */
    rc = begin_transition(db, __func__, TO_FAILED, outbox_id, false, &s);
    if (rc != MAE_OK)
        goto out;
    mae__failure f;
    mae__failure_count(db, s.attempts, db->outbox_max_attempts, &f);
    rc = mae__db_stmt(db, sql_failed, &st);
    if (rc == MAE_OK) {
        sqlite3_bind_int64(st, 1, outbox_id);
        sqlite3_bind_text(st, 2, status_names[f.terminal ? DEAD_LETTER : FAILED], -1,
                          SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, f.attempts);
        mae__bind_text(st, 4, err);
        if (f.terminal)
            sqlite3_bind_null(st, 5);
        else
            sqlite3_bind_double(st, 5, f.next_retry_at);
        sqlite3_bind_double(st, 6, f.now);
        rc = mae__db_step_done(db, st, "recording the intent's failure");
    }
    if (rc == MAE_OK) {
        if (mae__db_wants_events(db)) {
            if (f.terminal)
                mae__ev_outbox_dead_letter(&ev, s.internal_id, outbox_id, f.attempts, err);
            else
                mae__ev_outbox_failed(&ev, s.internal_id, outbox_id, f.attempts, err,
                                      f.next_retry_at);
        }
        rc = mae__db_hold(db, &ev);
    }
    rc = mae__failure_end(db, rc, &f, out);
out:
    mae__buf_free(&ev);
    free(err);
    return rc;
}

static const char sql_retry_dead[] =
    "UPDATE email_outbox SET status = 'pending', attempts = 0, last_error = NULL,"
    " next_retry_at = NULL, updated_at = ?2 WHERE outbox_id = ?1";

int mae_outbox_retry_dead_letter(mae_db *db, int64_t outbox_id)
{
    char *old = NULL;
    int64_t twin = 0;
    state s;

    int rc = intent_args(db, __func__, outbox_id);
    if (rc == MAE_OK)
        rc = begin_transition(db, __func__, RETRY_DEAD_LETTER, outbox_id, true, &s);
    if (rc != MAE_OK)
        return rc;
    /* Only one pending intent per (mail, op_type, target) may exist: the
     * unique index would refuse the update, so say why instead. */
    rc = find_pending(db, s.internal_id, s.op_type, s.target, &twin, &old);
    if (rc == MAE_OK && twin != 0)
        rc = MAE__DB_FAIL(db, MAE_ESTATE, "intent %lld cannot go back to pending: pending intent"
                                          " %lld has the same mail, op_type and target",
                          (long long)outbox_id, (long long)twin);
    if (rc == MAE_OK)
        rc = update_intent(db, sql_retry_dead, outbox_id,
                           "putting the dead letter back to pending");
    free(old);
    free(s.op_type);
    free(s.target);
    return mae__db_write_end(db, rc);
}

/* ---- reads ---------------------------------------------------------------- */

#define OUTBOX_COLUMNS                                                                   \
    "outbox_id, internal_id, op_type, target, payload_json, source, status, attempts,"  \
    " last_error, next_retry_at, created_at, updated_at"

static void row_clear(void *row)
{
    mae_outbox_row *r = row;
    free(r->op_type);
    free(r->target);
    free(r->payload_json);
    free(r->source);
    free(r->status);
    free(r->last_error);
    memset(r, 0, sizeof *r);
}

/* Fills a mae_outbox_row from the current row of a statement selecting
 * OUTBOX_COLUMNS. */
static int row_read(mae_db *db, sqlite3_stmt *st, void *row)
{
    mae_outbox_row *r = row;
    bool oom = false;
    memset(r, 0, sizeof *r);
    r->outbox_id = mae__col_int(st, 0);
    r->internal_id = mae__col_int(st, 1);
    r->op_type = mae__col_text(st, 2, &oom);
    r->target = mae__col_text(st, 3, &oom);
    r->payload_json = mae__col_text(st, 4, &oom);
    r->source = mae__col_text(st, 5, &oom);
    r->status = mae__col_text(st, 6, &oom);
    r->attempts = mae__col_int(st, 7);
    r->last_error = mae__col_text(st, 8, &oom);
    r->next_retry_at = mae__col_real(st, 9);
    r->created_at = mae__col_real(st, 10);
    r->updated_at = mae__col_real(st, 11);
    if (oom) {
        row_clear(r);
        return mae__db_error(db, MAE_ENOMEM, "reading an outbox intent: out of memory");
    }
    return MAE_OK;
}

static const mae__row_type outbox_rows = {sizeof(mae_outbox_row), sizeof(mae_outbox_list), 8,
                                          row_read, row_clear};

void mae_outbox_row_free(mae_outbox_row *row)
{
    mae__db_free_row(&outbox_rows, row);
}

void mae_outbox_list_free(mae_outbox_list *list)
{
    if (!list)
        return;
    mae__db_free_rows(&outbox_rows, list->rows, list->count);
    free(list);
}

/* Steps st (bound by the caller) to the end, collecting every row into a
 * new list. Resets st in every case. */
static int collect(mae_db *db, sqlite3_stmt *st, mae_outbox_list **out)
{
    mae__rows got;
    int rc = mae__db_collect_rows(db, st, &outbox_rows, "listing intents", "listing intents", &got);
    if (rc != MAE_OK)
        return rc;
    mae_outbox_list *list = got.list;
    list->rows = got.rows;
    list->count = got.count;
    *out = list;
    return MAE_OK;
}

static const char sql_get[] = "SELECT " OUTBOX_COLUMNS " FROM email_outbox WHERE outbox_id = ?1";
/* Out of memory reads "mae_outbox_get: out of memory", as it always has. */
static const mae__by_id outbox_by_id = {&outbox_rows, sql_get, "outbox_id must be > 0",
                                        "no outbox intent with id", "reading the outbox intent",
                                        "mae_outbox_get"};

int mae_outbox_get(mae_db *db, int64_t outbox_id, mae_outbox_row **out)
{
    void *row;
    int rc = mae__db_get_by_id(db, __func__, out, &outbox_by_id, outbox_id, &row);
    if (rc == MAE_OK)
        *out = row;
    return rc;
}

/* A failed intent with no retry time (left by another writer) counts as due,
 * or it would never run again. */
static const char sql_poll[] =
    "SELECT " OUTBOX_COLUMNS " FROM email_outbox"
    " WHERE (status = 'pending'"
    "        OR (status = 'failed' AND (next_retry_at IS NULL OR next_retry_at <= ?1)))"
    " AND (?2 IS NULL OR target = ?2)"
    " ORDER BY created_at, outbox_id LIMIT ?3";

int mae_outbox_poll_ready(mae_db *db, const char *target, int limit, mae_outbox_list **out)
{
    sqlite3_stmt *st;

    const char *invalid =
        target && !known_target(target) ? "target must be NULL, \"mailapp\" or \"notion\"" : NULL;
    int rc = mae__db_read_start(db, __func__, out, invalid, sql_poll, &st);
    if (rc != MAE_OK)
        return rc;
    sqlite3_bind_double(st, 1, mae__db_now(db));
    mae__bind_text(st, 2, target);
    sqlite3_bind_int(st, 3, limit > 0 ? limit : POLL_DEFAULT_LIMIT);
    return collect(db, st, out);
}

static const char sql_for_email[] =
    "SELECT " OUTBOX_COLUMNS " FROM email_outbox WHERE internal_id = ?1"
    " ORDER BY created_at, outbox_id";

int mae_outbox_list_for_email(mae_db *db, int64_t internal_id, mae_outbox_list **out)
{
    sqlite3_stmt *st;

    int rc = mae__db_read_start(db, __func__, out,
                                internal_id > 0 ? NULL : "internal_id must be > 0", sql_for_email,
                                &st);
    if (rc != MAE_OK)
        return rc;
    sqlite3_bind_int64(st, 1, internal_id);
    return collect(db, st, out);
}

static const char sql_dead_letters[] =
    "SELECT " OUTBOX_COLUMNS " FROM email_outbox WHERE status = 'dead_letter'"
    " ORDER BY updated_at DESC, outbox_id DESC LIMIT ?1";

int mae_outbox_list_dead_letters(mae_db *db, int limit, mae_outbox_list **out)
{
    sqlite3_stmt *st;

    int rc = mae__db_read_start(db, __func__, out, NULL, sql_dead_letters, &st);
    if (rc != MAE_OK)
        return rc;
    sqlite3_bind_int(st, 1, limit > 0 ? limit : DEAD_LETTER_DEFAULT_LIMIT);
    return collect(db, st, out);
}

/* One statement, so every count comes from the same snapshot. Ages are
 * computed for pending rows only; a created_at in the future (another
 * machine's clock) counts as age 0. */
static const char sql_depth[] =
    "SELECT status, target, COUNT(*),"
    " SUM(?1 - created_at < 60),"
    " SUM(?1 - created_at >= 60 AND ?1 - created_at < 300),"
    " SUM(?1 - created_at >= 300 AND ?1 - created_at < 1800),"
    " SUM(?1 - created_at >= 1800),"
    " MIN(created_at)"
    " FROM email_outbox GROUP BY status, target";

int mae_outbox_queue_depth(mae_db *db, mae_outbox_depth *out)
{
    mae_outbox_depth d;
    sqlite3_stmt *st;
    bool any_pending = false;
    double oldest = 0;

    int rc = mae__db_read_start(db, __func__, out, NULL, sql_depth, &st);
    if (rc != MAE_OK)
        return rc;
    double now = mae__db_now(db);
    sqlite3_bind_double(st, 1, now);
    memset(&d, 0, sizeof d);
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *status = (const char *)sqlite3_column_text(st, 0);
        const char *target = (const char *)sqlite3_column_text(st, 1);
        int64_t count = sqlite3_column_int64(st, 2);
        if (!status || !target) {
            if (sqlite3_errcode(mae_db_sqlite(db)) == SQLITE_NOMEM) {
                sqlite3_reset(st);
                return MAE__DB_FAIL(db, MAE_ENOMEM, "out of memory");
            }
            continue;
        }
        /* Rows of an unknown status or target (another writer's) are
         * counted nowhere, as before. */
        intent_status k = status_of(status);
        int64_t *by_status[STATUS_COUNT + 1] = {
            [PENDING] = &d.pending, [PROCESSING] = &d.processing, [DONE] = &d.done,
            [FAILED] = &d.failed,   [DEAD_LETTER] = &d.dead_letter,
        };
        if (by_status[k])
            *by_status[k] += count;
        int64_t *by_target[STATUS_COUNT + 1][2] = {
            [PENDING] = {&d.mailapp.pending, &d.notion.pending},
            [PROCESSING] = {&d.mailapp.processing, &d.notion.processing},
            [FAILED] = {&d.mailapp.failed, &d.notion.failed},
        };
        int ti = strcmp(target, "mailapp") == 0 ? 0 : strcmp(target, "notion") == 0 ? 1 : -1;
        if (ti >= 0 && by_target[k][ti])
            *by_target[k][ti] += count;
        if (k == PENDING) {
            d.pending_under_1m += sqlite3_column_int64(st, 3);
            d.pending_under_5m += sqlite3_column_int64(st, 4);
            d.pending_under_30m += sqlite3_column_int64(st, 5);
            d.pending_over_30m += sqlite3_column_int64(st, 6);
            double first = sqlite3_column_double(st, 7);
            if (!any_pending || first < oldest)
                oldest = first;
            any_pending = true;
        }
    }
    if (step != SQLITE_DONE) {
        rc = mae__db_sqlite_error(db, step, "counting the outbox");
        sqlite3_reset(st);
        return rc;
    }
    sqlite3_reset(st);
    if (any_pending && now > oldest)
        d.oldest_pending_age_s = now - oldest;
    *out = d;
    return MAE_OK;
}
