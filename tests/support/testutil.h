/* Test support: what many test files would otherwise each write again: a
 * monotonic clock and a sleep for polling, the publisher's counter
 * identities, and throwaway database files
 * (fresh paths, a config on a test clock, a fixture with a capture
 * publisher). */
#ifndef MAE_TEST_TESTUTIL_H
#define MAE_TEST_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>

#include <mailagent/events.h>

/* ---- time ---- */

/* Seconds on the monotonic clock (for deadlines and durations). */
double tu_now_s(void);
void tu_sleep_ms(int ms);

/* Waits up to 5 s for cond, polling every 2 ms; the test asserts on the
 * result afterwards, so a timeout shows as that assertion failing. */
#define TU_EVENTUALLY(cond)                                                                \
    do {                                                                                   \
        double until_ = tu_now_s() + 5;                                                    \
        while (!(cond) && tu_now_s() < until_)                                             \
            tu_sleep_ms(2);                                                                \
    } while (0)

/* ---- the environment ---- */

/* True when the environment variable CI is set to anything but "", "0" or
 * "false" (CI services set CI=true). */
bool tu_in_ci(void);
/* For a test whose prerequisite (a locale, a program) this machine lacks:
 * prints what is missing, then skips the test on a developer's machine and
 * fails it in CI, so that CI never passes by running less than the suite. */
void tu_missing_prerequisite(const char *what);

/* ---- publishers ---- */

/* Asserts the publisher's counter identities: every call is enqueued or
 * dropped for one reason, and every enqueued event is published, dropped on
 * a send error, queued or in flight. */
void tu_assert_counters_add_up(mae_publisher *p);

/* ---- databases ---- */

/* The epoch seconds the stores' test clocks start at. */
#define TU_T0 1716096000.0
/* TU_T0 as an object, for a clock that never moves: tu_db_config(.., &tu_t0). */
extern const double tu_t0;

/* Writes into out a path no other database of this test run uses,
 * MAE_TEST_TMPDIR/<tag>-<pid>-<n>.db, and removes what an earlier run may
 * have left there. */
void tu_db_path(char *out, size_t n, const char *tag);
/* Removes the database file at path and its -wal and -shm files. */
void tu_remove_db(const char *path);
/* mae_db_config_init, then path and publisher pub (NULL: none) set, and the
 * clock reading *now at each call (borrowed for the handle's life, so a
 * test moves time by assigning it), or the real clock when now is NULL. */
void tu_db_config(mae_db_config *cfg, const char *path, mae_publisher *pub, const double *now);

/* A database fixture: a fresh path and a capture publisher (cap_open); the
 * test opens db itself, with the config it needs. */
typedef struct tu_db {
    char path[256];
    mae_publisher *pub;
    mae_db *db;
} tu_db;

/* A new fixture whose path is named after tag (asserts on failure). */
tu_db *tu_db_new(const char *tag);
/* Closes db and the publisher, removes the files and frees f. */
void tu_db_free(tu_db *f);

#endif
