/* Test support: the harness of the contract suites, test_it_contract_*.c,
 * one per reference document (events, stores, publisher). They drive the
 * stores and the publisher through the public API only (plus mae_db_sqlite
 * to read rows back), with a real redis-server and a real subscriber, and
 * compare every line received and every row written with docs/.
 *
 * Checks are "soft": CHECK prints a deviation with the promise of docs/ it
 * breaks and counts it, the test goes on, and each test fails at its end
 * (fx_close) when any deviation was counted, so that one run lists them
 * all. */
#ifndef MAE_TEST_CONTRACT_H
#define MAE_TEST_CONTRACT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include <mailagent/events.h>

#include "redis_harness.h"
#include "testutil.h"

#define DEFAULT_CHANNEL "mailagent:events:v1"
/* The event type of the marker expect_none sends through mae_safe_publish. */
#define MARKER "contract.marker"

/* The retry schedule of docs/stores.md, in seconds. */
extern const double SCHEDULE[5];

/* ---- soft checks ---------------------------------------------------------- */

extern int g_fail;                /* deviations in the current test */
extern unsigned long g_checks;    /* checks evaluated by this program */

#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        g_checks++;                                                             \
        if (!(cond)) {                                                          \
            g_fail++;                                                           \
            print_message("DEVIATION %s:%d: ", __FILE__, __LINE__);             \
            print_message(__VA_ARGS__);                                         \
            print_message("\n");                                                \
        }                                                                       \
    } while (0)

/* s, or "(null)" for printing. */
const char *nz(const char *s);
/* Both NULL, or both equal strings. */
bool streq(const char *a, const char *b);
/* Equal within a millisecond (epoch times). */
bool near(double a, double b);

/* ---- UTF-8 ------------------------------------------------------------------ */

bool u8_valid(const char *s);
size_t u8_count(const char *s);                 /* code points */
char *u8_prefix(const char *s, size_t ncp);     /* the first ncp code points, malloc'd */
/* A text of ncp code points of 1, 2, 3 and 4 bytes, with '/' and spaces. */
char *make_text(size_t ncp);

/* ---- the fixture -------------------------------------------------------------
 * One redis-server per program (contract_group_setup); per test a channel,
 * a subscriber on it, a publisher and a database on the fake clock g_now. */

extern double g_now;              /* the stores' clock, epoch seconds */

typedef struct fx {
    char channel[96];
    char path[512];
    mtr_sub *sub;
    mae_publisher *p;
    mae_db *db;
    size_t seen;              /* messages consumed from the subscriber */
    json_object *root;        /* the last event parsed */
    uint64_t markers;         /* marker events sent through mae_safe_publish */
} fx;

/* Starts the program's redis-server; fails (never skips) without one. */
int contract_group_setup(void **state);
int contract_group_teardown(void **state);

/* default_channel: the publisher's config leaves the channel unset, so
 * the default applies; limit: every store's retry limit (0: defaults). */
void fx_open(fx *f, bool default_channel, int limit);
/* Flushes, checks the counters and that the subscriber got what was
 * published, frees everything, and fails the test on any deviation. */
void fx_close(fx *f);
/* Another handle on path with f's publisher and the fake clock. */
mae_db *open_db(fx *f, const char *path, int limit);
/* The publisher's counter identities of docs/publisher.md, as soft checks. */
void check_counters(mae_publisher *p, const char *when);

/* ---- receiving ------------------------------------------------------------------ */

/* Nothing was published by the last operation(s): a marker sent now must be
 * the next line. Anything before it is reported. */
void expect_none_(fx *f, const char *what, int line);
#define expect_none(f, what) expect_none_((f), (what), __LINE__)

/* The next event: checks its raw bytes, its envelope, its type, mail and
 * source, and that data has exactly the keys of keys_csv. Returns data
 * (borrowed until the next call), or NULL when no line came. */
json_object *expect_event_(fx *f, const char *type, int64_t id, const char *source,
                           const char *keys_csv, int line);
#define expect_event(f, type, id, source, keys) \
    expect_event_((f), (type), (id), (source), (keys), __LINE__)

/* The last line received ("" before the first). */
const char *last_raw(fx *f);
/* data.key is the integer / number (within 1 ms) / string want (NULL: null);
 * a non-ASCII string must appear raw, not \u-escaped. */
void d_int(fx *f, json_object *data, const char *key, int64_t want);
void d_num(fx *f, json_object *data, const char *key, double want);
void d_str(fx *f, json_object *data, const char *key, const char *want);

/* ---- reading rows back (mae_db_sqlite: the caller's own SQL) ------------------ */

/* Status, count, next_retry_at and error of one row, by MAIL_SQL,
 * OUTBOX_SQL or LLM_SQL. */
typedef struct row4 {
    bool found;
    char *status;
    int64_t count;
    bool nra_null;
    double nra;
    char *err;
} row4;

#define MAIL_SQL \
    "SELECT sync_status, retry_count, next_retry_at, sync_error FROM email_metadata " \
    "WHERE internal_id = ?"
#define OUTBOX_SQL \
    "SELECT status, attempts, next_retry_at, last_error FROM email_outbox WHERE outbox_id = ?"
#define LLM_SQL \
    "SELECT status, retry_count, next_retry_at, last_error FROM llm_processing " \
    "WHERE internal_id = ?"

row4 read_row4(mae_db *db, const char *sql, int64_t id);
void row4_free(row4 *r);
/* The first column of the first row: an integer (-1 when no row), or a
 * malloc'd text (NULL for NULL or no row). */
int64_t sql_int(mae_db *db, const char *sql);
char *sql_text(mae_db *db, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Adds mail id through the sync store (asserts it worked). */
void add_mail(mae_db *db, int64_t id);

#endif
