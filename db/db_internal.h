/* Internal: the mae_db handle and the helpers every store uses to run one
 * write (begin, statements, errors, held events, commit, publish) and to
 * read its rows. Shared by store/, outbox/ and llm/. Never installed.
 *
 * The files of db/, one concept each: open.c (the handle's life), schema.c
 * (the tables), error.c (error detail), stmt.c (statement cache), txn.c
 * (writes and caller transactions), held.c (events waiting for a commit),
 * rows.c (readers), retry.c (backoff and failure counting). */
#ifndef MAE_DB_INTERNAL_H
#define MAE_DB_INTERNAL_H

#include <stdarg.h>

#include <mailagent/db.h>

#include "core/text.h"

/* An event line waiting for its write to commit. */
typedef struct mae__held_event {
    struct mae__held_event *next;
    mae__buf line;
} mae__held_event;

#define MAE__STMT_CACHE 48

struct mae_db {
    sqlite3 *sql;
    mae_publisher *publisher;           /* borrowed; may be NULL */
    int busy_timeout_ms;
    int email_max_retries, outbox_max_attempts, llm_max_retries;
    double (*clock)(void *user);
    void *clock_user;
    bool read_only;
    bool in_user_txn;                   /* mae_db_begin is in force */
    mae__held_event *held, **held_tail; /* events of uncommitted writes */
    struct {
        const char *sql;                /* the static text it was prepared from */
        sqlite3_stmt *stmt;
    } cache[MAE__STMT_CACHE];
    char errmsg[256];
    /* Where the events of the write in progress start in the held list, so
     * a failed write inside a caller transaction discards only its own; and
     * the statements beyond the fixed cache. */
    mae__held_event **held_mark;
    bool in_write;
    struct mae__stmt_slot {
        const char *sql;
        sqlite3_stmt *stmt;
    } *stmt_more;
    size_t stmt_more_count, stmt_more_cap;
};

/* ---- error.c ------------------------------------------------------------- */

/* vsnprintf into buf, cut back to a UTF-8 boundary when truncated. */
void mae__vformat(char *buf, size_t size, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
/* MAE_OK for SQLITE_OK/ROW/DONE, MAE_EBUSY, MAE_ENOMEM, else MAE_EDB. */
int mae__db_map_sqlite(int rc);
/* Records "code: detail" on the handle and returns code. */
int mae__db_error(mae_db *db, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Records "code: fn: detail" and returns code. Called through MAE__DB_FAIL,
 * which names the calling function. */
int mae__db_error_in(mae_db *db, int code, const char *fn, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The failure of a public call, named after it: MAE__DB_FAIL(db, MAE_EINVAL,
 * "internal_id must be > 0") records "invalid argument: mae_...: internal_id
 * must be > 0" and evaluates to MAE_EINVAL. A helper that reports for its
 * caller takes the caller's __func__ as fn and calls mae__db_error_in. */
#define MAE__DB_FAIL(db, code, ...) mae__db_error_in((db), (code), __func__, __VA_ARGS__)
/* The prelude of every public call on a handle: a NULL db is MAE_EINVAL
 * (there is nowhere to put a message); otherwise the last error is cleared. */
#define MAE__DB_ENTER(db)                                                          \
    do {                                                                           \
        if (!(db))                                                                 \
            return MAE_EINVAL;                                                     \
        mae__db_clear_error(db);                                                   \
    } while (0)
/* Maps an SQLite result to MAE_EBUSY / MAE_ENOMEM / MAE_EDB, or MAE_ENOTFOUND
 * for a foreign-key failure (the schema's only foreign key is the mail id),
 * records sqlite3_errmsg with what was being done, and returns the code. */
int mae__db_sqlite_error(mae_db *db, int rc, const char *what);
void mae__db_clear_error(mae_db *db);

/* ---- open.c and schema.c ------------------------------------------------- */

/* The store's clock, epoch seconds. */
double mae__db_now(mae_db *db);
/* Creates the missing tables and indexes in one transaction. Returns the
 * SQLite result; on failure msg holds SQLite's text of the first error. */
int mae__db_create_schema(mae_db *db, char *msg, size_t size);

/* ---- stmt.c -------------------------------------------------------------- */

/* A prepared statement for a static SQL text, cached on the handle by the
 * text's address and reset/unbound for reuse. MAE_OK or an error code. */
int mae__db_stmt(mae_db *db, const char *sql, sqlite3_stmt **out);
/* Transaction control texts, prepared at open (mae__db_prepare_control) so
 * that ending a write never needs an allocation for a prepare. */
extern const char mae__sql_begin[], mae__sql_commit[], mae__sql_rollback[];
extern const char mae__sql_savepoint[], mae__sql_release[], mae__sql_rollback_to[];
int mae__db_prepare_control(mae_db *db);
/* Runs one cached control statement; returns the SQLite result. */
int mae__db_run_control(mae_db *db, const char *sql);
/* Resets every cached statement, so none keeps a read snapshot open across
 * the start or end of a write (in WAL a stale snapshot would make the next
 * BEGIN IMMEDIATE fail with SQLITE_BUSY_SNAPSHOT). */
void mae__db_reset_all(mae_db *db);
/* Finalizes every cached statement (before closing the connection). */
void mae__db_finalize_all(mae_db *db);
/* Binds a text the statement only reads during this step (NULL binds NULL). */
void mae__bind_text(sqlite3_stmt *st, int i, const char *s);
/* Steps a write statement to its end and resets it; MAE_OK or the mapped
 * error (what names the step). */
int mae__db_step_done(mae_db *db, sqlite3_stmt *st, const char *what);

/* ---- txn.c and held.c ---------------------------------------------------- */

/* One store write: mae__db_write_begin opens BEGIN IMMEDIATE (or a SAVEPOINT
 * inside a caller transaction); mae__db_write_end(db, rc) commits when rc >= 0
 * and then publishes the held events (unless a caller transaction holds
 * them), or rolls back and discards this write's events when rc < 0. It
 * returns rc, or the commit's error. */
int mae__db_write_begin(mae_db *db);
int mae__db_write_end(mae_db *db, int rc);

/* Holds an event built during the current write (takes b's text). With a
 * disabled publisher an empty line is held, so that after the commit its
 * dropped_disabled counter still sees every event. Call between write_begin
 * and write_end. Returns MAE_OK or MAE_ENOMEM. */
int mae__db_hold(mae_db *db, mae__buf *b);
/* True when events are worth building (a live publisher is attached). */
bool mae__db_wants_events(const mae_db *db);
/* Hands the held events to the publisher in the order they were made. */
void mae__db_publish_held(mae_db *db);
/* Drops the held events from *from on and makes from the new tail. */
void mae__db_discard_from(mae_db *db, mae__held_event **from);
void mae__db_discard_all(mae_db *db);
/* Rolls back with the cached statement, falling back to sqlite3_exec should
 * that fail: a transaction left open would keep the write lock. */
void mae__db_force_rollback(mae_db *db);

/* ---- retry.c ------------------------------------------------------------- */

/* Retry schedule shared by the three stores: the delay in seconds after the
 * n-th failure (n >= 1): 60, 300, 900, 3600, 7200, 7200, ... */
double mae__retry_delay(int64_t n);

/* One failure of a row, as the three stores count it. */
typedef struct mae__failure {
    int64_t attempts;     /* the row's count after this failure */
    bool terminal;        /* the count reached the limit */
    double now;           /* the store's clock when it was counted */
    double next_retry_at; /* now + the schedule's delay; 0 when terminal */
} mae__failure;

/* Counts one failure of a row whose stored count was stored, against a
 * limit of limit attempts. A negative stored count counts as 0. A stored
 * count of INT64_MAX (left by another writer: the library never writes
 * one) saturates: attempts stays INT64_MAX and the failure is terminal,
 * since count + 1 would overflow. Cannot fail. */
void mae__failure_count(mae_db *db, int64_t stored, int limit, mae__failure *f);
/* Ends the failure's write (mae__db_write_end(db, rc)) and, when it
 * committed and out is not NULL, writes f into *out. Returns the result. */
int mae__failure_end(mae_db *db, int rc, const mae__failure *f, mae_retry_outcome *out);

/* Text limits of docs/stores.md. */
#define MAE_STORED_ERROR_MAX 500

/* ---- rows.c -------------------------------------------------------------- */

/* Strings read from a column, copied (NULL for NULL); sets *oom on failure. */
char *mae__col_text(sqlite3_stmt *st, int col, bool *oom);
double mae__col_real(sqlite3_stmt *st, int col);     /* 0 for NULL */
int64_t mae__col_int(sqlite3_stmt *st, int col);     /* 0 for NULL */

/* Copies s repaired to valid UTF-8 and cut to max_cp code points (0: whole);
 * NULL stays NULL. MAE_OK, or MAE_ENOMEM with the message set. */
int mae__db_clean(mae_db *db, const char *s, size_t max_cp, char **out);

/* The prelude of every public read, checked as fn: MAE_EINVAL for a NULL db
 * (there is nowhere to put a message); otherwise clears the last error, then
 * MAE_EINVAL with "fn: out is NULL", or with "fn: <invalid>" when invalid
 * (the caller's verdict on its other arguments, NULL when they are fine) is
 * set; otherwise the cached statement for sql in *st, for the caller to bind.
 * MAE_OK or the error. */
int mae__db_read_start(mae_db *db, const char *fn, const void *out, const char *invalid,
                       const char *sql, sqlite3_stmt **st);

/* How a store reads its rows, for the shared readers below. Every public
 * list type is laid out {T *rows; size_t count;}. */
typedef struct mae__row_type {
    size_t size;      /* sizeof one row */
    size_t list_size; /* sizeof the public list type */
    size_t first_cap; /* how many rows a list first makes room for */
    /* Fills row (zeroing it first) from the statement's current row. On
     * failure the row is left cleared and the error returned, message set. */
    int (*read)(mae_db *db, sqlite3_stmt *st, void *row);
    /* Frees what read copied and zeroes the row. */
    void (*clear)(void *row);
} mae__row_type;

/* A list collected by mae__db_collect_rows: the caller, which knows the
 * list's type, points list's rows and count at rows and count. */
typedef struct mae__rows {
    void *list; /* zeroed, type->list_size bytes */
    void *rows;
    size_t count;
} mae__rows;

/* Steps st (bound by the caller) once and reads its row into a new
 * allocation. MAE_OK with *row set, or MAE_OK with *row NULL when there is
 * no row (the caller says what is missing); otherwise the error, named by
 * what (SQLite errors) or oom_what ("oom_what: out of memory"). Resets st. */
int mae__db_read_row(mae_db *db, sqlite3_stmt *st, const mae__row_type *type, const char *what,
                     const char *oom_what, void **row);
/* Steps st (bound by the caller) to its end, collecting every row into a new
 * list (allocated first). Errors are named as for mae__db_read_row. Resets
 * st. MAE_OK and *out, or the error with nothing left allocated. */
int mae__db_collect_rows(mae_db *db, sqlite3_stmt *st, const mae__row_type *type,
                         const char *what, const char *oom_what, mae__rows *out);
/* Clears count rows of the given type and frees the array (NULL is fine). */
void mae__db_free_rows(const mae__row_type *type, void *rows, size_t count);
/* Clears one row of the given type read by mae__db_read_row and frees it
 * (NULL is fine): the body of a store's public row_free. */
void mae__db_free_row(const mae__row_type *type, void *row);

/* A store's read of one row by its id, for mae__db_get_by_id. */
typedef struct mae__by_id {
    const mae__row_type *type;
    const char *sql;      /* static text selecting the row whose id is ?1 */
    const char *bad_id;   /* the message for an id <= 0 */
    const char *missing;  /* the message, before " <id>", when there is no row */
    const char *what;     /* name the read in errors, as for mae__db_read_row */
    const char *oom_what;
} mae__by_id;

/* A whole read of one row by its id, checked as fn: the checks of
 * mae__db_read_start (an id <= 0 is invalid, with q->bad_id), then the row
 * as mae__db_read_row reads it, or MAE_ENOTFOUND "fn: <missing> <id>" when
 * there is none. MAE_OK and *row (the caller's to free), or the error. */
int mae__db_get_by_id(mae_db *db, const char *fn, const void *out, const mae__by_id *q,
                      int64_t id, void **row);

/* A whole count-by-status read, checked as fn: runs sql, which selects
 * (key TEXT, count INTEGER) rows sorted by key, into a new mae_counts (what
 * names the read in errors). MAE_OK and *out, or the error. */
int mae__db_count_by(mae_db *db, const char *fn, const char *sql, const char *what,
                     mae_counts **out);

#endif
