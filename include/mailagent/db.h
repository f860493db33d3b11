/* The database handle shared by the three stores: one SQLite connection,
 * the publisher its writes announce themselves through, and caller-owned
 * transactions whose events wait for the commit.
 *
 * Threading: a mae_db is not thread-safe; use one per thread, like an
 * sqlite3 connection. Several processes may open the same file at once. */
#ifndef MAILAGENT_DB_H
#define MAILAGENT_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include <mailagent/common.h>
#include <mailagent/publisher.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mae_db mae_db;

typedef struct mae_db_config {
    const char *path;
    mae_publisher *publisher;   /* borrowed, may be NULL: state only */
    int busy_timeout_ms;        /* default 30000 */
    int email_max_retries;      /* default 5 */
    int outbox_max_attempts;    /* default 5 */
    int llm_max_retries;        /* default 5 */
    /* The clock the stores stamp rows and schedule retries with, in epoch
     * seconds; NULL = the system's real-time clock. For tests. */
    double (*clock)(void *user);
    void *clock_user;
    bool read_only;             /* open without creating or writing anything */
    /* Where open writes one line saying why it failed; may be NULL. */
    char *error_buf;
    size_t error_buf_size;
} mae_db_config;

/* Conventions of every store call (sync_store.h, outbox.h, llm.h): a NULL
 * db, a NULL out pointer or an id <= 0 (MAE_NO_ID included) is MAE_EINVAL;
 * a positive id with no row (INT64_MAX included) is MAE_ENOTFOUND; texts are
 * repaired to valid UTF-8 before they are stored; a write whose event line
 * would be longer than a live publisher's max_event_bytes is MAE_EINVAL; every
 * failure leaves its detail in mae_db_errmsg and writes and publishes
 * nothing. */

/* The outcome of a failure that was counted (mark_failed of any store). */
typedef struct mae_retry_outcome {
    int64_t attempts;        /* the row's count after this failure */
    double  next_retry_at;   /* epoch s; 0 when terminal */
    bool    terminal;        /* dead_letter / gave_up */
} mae_retry_outcome;

/* A count per status (or other key), for the reconciliation reads. */
typedef struct mae_count {
    char *key;
    int64_t count;
} mae_count;

typedef struct mae_counts {
    mae_count *items;        /* sorted by key */
    size_t count;
} mae_counts;

/* sizeof(mae_retry_outcome) as this library was built: the size handshake
 * (docs/api.md, "ABI"). This function can't fail. */
MAE_EXTERN size_t mae_retry_outcome_size(void);

/* Frees a mae_counts returned by a store and everything in it; NULL is a no-op. */
MAE_EXTERN void mae_counts_free(mae_counts *counts);

/* Fills every field with its default. This function can't fail. */
MAE_EXTERN void mae_db_config_init(mae_db_config *cfg);

/* sizeof(mae_db_config) as this library was built: the size handshake
 * (docs/api.md, "ABI"), like mae_publisher_config_size. Can't fail. */
MAE_EXTERN size_t mae_db_config_size(void);

/* Opens (creating the file unless read_only) the database at cfg->path, sets
 * WAL, foreign keys and the busy timeout, and creates the missing tables and
 * indexes with IF NOT EXISTS; tables and columns it does not know are left
 * alone. Returns MAE_OK and writes *out, MAE_EINVAL (NULL/empty path, bad
 * limits), MAE_EBUSY, MAE_EDB (unopenable, corrupt or not a database; the
 * reason goes to cfg->error_buf) or MAE_ENOMEM. */
MAE_EXTERN int mae_db_open(const mae_db_config *cfg, mae_db **out);

/* Closes the database. Events held by an open caller transaction are
 * discarded and that transaction is rolled back. NULL is a no-op. */
MAE_EXTERN void mae_db_close(mae_db *db);

/* The detail of the last failure on this handle ("" after a success). The
 * text belongs to the handle and is valid until its next call. */
MAE_EXTERN const char *mae_db_errmsg(const mae_db *db);

/* The underlying connection, for the caller's own SQL on the same
 * transaction. Borrowed: do not close it. NULL for a NULL db. */
MAE_EXTERN sqlite3 *mae_db_sqlite(mae_db *db);

/* Caller-owned transaction (BEGIN IMMEDIATE). Store writes inside it hold
 * their events; mae_db_commit publishes them in order after a successful
 * commit, mae_db_rollback discards them. Returns MAE_OK, MAE_EINVAL (NULL
 * db, begin inside a transaction, commit/rollback outside one), MAE_EBUSY
 * or MAE_EDB. A failed commit leaves the transaction open and its events
 * held: retry the commit or roll back. */
MAE_EXTERN int mae_db_begin(mae_db *db);
MAE_EXTERN int mae_db_commit(mae_db *db);
MAE_EXTERN int mae_db_rollback(mae_db *db);

#ifdef __cplusplus
}
#endif
#endif
