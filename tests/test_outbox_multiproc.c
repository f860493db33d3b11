/* Tests of the outbox across processes: forked writers, each with its own
 * mae_db and its own capture publisher, released at once, enqueue the same
 * intent (one pending row, one outbox.enqueued, every key merged) and fail
 * the same row (every attempt counted). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "capture.h"
#include "testutil.h"

#define NPROC 6
#define KFAIL 20

/* What one child reports to the parent through the pipe. */
typedef struct report {
    int child;
    int rc;               /* the last library call's result */
    int64_t outbox_id;
    int inserted;
    int64_t events;       /* lines its publisher received */
    int64_t enqueued_events;
    int64_t failed_events;
} report;

static mae_db *open_db(const char *path, mae_publisher *pub, int max_attempts)
{
    mae_db_config cfg;
    mae_db *db = NULL;
    tu_db_config(&cfg, path, pub, NULL);
    cfg.outbox_max_attempts = max_attempts;
    if (mae_db_open(&cfg, &db) != MAE_OK)
        return NULL;
    return db;
}

/* Creates the database and the mail, then closes it: no connection or
 * thread of the parent crosses a fork. */
static void prepare(const char *path)
{
    tu_remove_db(path);
    mae_db *db = open_db(path, NULL, 5);
    assert_non_null(db);
    assert_int_equal(sqlite3_exec(mae_db_sqlite(db),
                                  "INSERT INTO email_metadata (internal_id, message_id)"
                                  " VALUES (7, '<m7@example.com>')",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    mae_db_close(db);
}

typedef void (*child_fn)(int child, const char *path, mae_db *db, mae_publisher *pub,
                         report *r);

/* The body of one child: its own publisher and database, wait for the
 * start signal (EOF on go), work, report, exit without returning into the
 * test runner. */
static void run_child(int child, int go, int results, const char *path, int max_attempts,
                      child_fn fn)
{
    report r = {.child = child, .rc = MAE_EDB};
    mae_publisher *pub = cap_open();
    mae_db *db = open_db(path, pub, max_attempts);
    char c;
    if (db != NULL) {
        while (read(go, &c, 1) > 0) {
        }
        fn(child, path, db, pub, &r);
        r.events = (int64_t)cap_count(pub);
        for (size_t i = 0; i < (size_t)r.events; i++) {
            const char *line = cap_line(pub, i);
            if (strstr(line, "\"event_type\":\"outbox.enqueued\""))
                r.enqueued_events++;
            if (strstr(line, "\"event_type\":\"outbox.failed\""))
                r.failed_events++;
        }
    }
    mae_db_close(db);
    mae_publisher_close(pub, 5000);
    if (write(results, &r, sizeof r) != (ssize_t)sizeof r)
        _exit(2);
    _exit(0);
}

/* Forks NPROC children running fn, releases them together, and collects
 * their reports (in arrival order). */
static void run_children(const char *path, int max_attempts, child_fn fn, report *reports)
{
    int go[2], results[2];
    pid_t pids[NPROC];
    assert_int_equal(pipe(go), 0);
    assert_int_equal(pipe(results), 0);
    for (int i = 0; i < NPROC; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            close(go[1]);
            close(results[0]);
            run_child(i, go[0], results[1], path, max_attempts, fn);
        }
    }
    close(go[0]);
    close(results[1]);
    /* Let every child reach its read of go, then release them at once. */
    struct timespec pause = {.tv_sec = 0, .tv_nsec = 200 * 1000 * 1000};
    nanosleep(&pause, NULL);
    close(go[1]);
    size_t got = 0;
    while (got < NPROC) {
        ssize_t n = read(results[0], &reports[got], sizeof reports[got]);
        if (n != (ssize_t)sizeof reports[got])
            break;
        got++;
    }
    close(results[0]);
    for (int i = 0; i < NPROC; i++) {
        int status = 0;
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    assert_int_equal(got, NPROC);
}

static void child_enqueue(int child, const char *path, mae_db *db, mae_publisher *pub, report *r)
{
    char payload[64];
    bool inserted = false;
    (void)path;
    (void)pub;
    snprintf(payload, sizeof payload, "{\"k%d\":%d,\"shared\":%d}", child, child, child);
    r->rc = mae_outbox_enqueue(db, 7, "flag", "notion", payload, MAE_SOURCE_CLI, &r->outbox_id,
                               &inserted);
    r->inserted = inserted;
}

static void test_concurrent_enqueue_one_intent(void **state)
{
    (void)state;
    char path[256];
    report reports[NPROC];
    tu_db_path(path, sizeof path, "outbox-mp");
    prepare(path);
    run_children(path, 5, child_enqueue, reports);

    int inserted = 0;
    int64_t events = 0, enqueued = 0;
    for (int i = 0; i < NPROC; i++) {
        assert_int_equal(reports[i].rc, MAE_OK);
        assert_int_equal(reports[i].outbox_id, reports[0].outbox_id);
        inserted += reports[i].inserted;
        events += reports[i].events;
        enqueued += reports[i].enqueued_events;
    }
    assert_int_equal(inserted, 1);
    assert_int_equal(events, 1);
    assert_int_equal(enqueued, 1);

    /* One pending row holding every process's key. */
    mae_db *db = open_db(path, NULL, 5);
    assert_non_null(db);
    mae_outbox_list *l = NULL;
    assert_int_equal(mae_outbox_list_for_email(db, 7, &l), MAE_OK);
    assert_int_equal(l->count, 1);
    assert_string_equal(l->rows[0].status, "pending");
    assert_int_equal(l->rows[0].outbox_id, reports[0].outbox_id);
    const char *payload = l->rows[0].payload_json;
    assert_memory_equal(payload, "{\"k0\":0,\"k1\":1,\"k2\":2,\"k3\":3,\"k4\":4,\"k5\":5,\"shared\":",
                        strlen("{\"k0\":0,\"k1\":1,\"k2\":2,\"k3\":3,\"k4\":4,\"k5\":5,\"shared\":"));
    /* "shared" holds the value of whichever process wrote last. */
    int last = -1;
    assert_int_equal(sscanf(payload + strlen("{\"k0\":0,\"k1\":1,\"k2\":2,\"k3\":3,\"k4\":4,"
                                             "\"k5\":5,\"shared\":"),
                            "%d", &last),
                     1);
    assert_true(last >= 0 && last < NPROC);
    mae_outbox_list_free(l);
    mae_db_close(db);
    tu_remove_db(path);
}

static int64_t shared_id;

static void child_fail(int child, const char *path, mae_db *db, mae_publisher *pub, report *r)
{
    char err[32];
    (void)path;
    (void)pub;
    r->rc = MAE_OK;
    for (int k = 0; k < KFAIL && r->rc == MAE_OK; k++) {
        snprintf(err, sizeof err, "child %d try %d", child, k);
        r->rc = mae_outbox_mark_failed(db, shared_id, err, NULL);
    }
}

static void test_concurrent_failures_all_counted(void **state)
{
    (void)state;
    char path[256];
    report reports[NPROC];
    tu_db_path(path, sizeof path, "outbox-mp");
    prepare(path);
    mae_db *db = open_db(path, NULL, 1000000);
    assert_non_null(db);
    assert_int_equal(mae_outbox_enqueue(db, 7, "flag", "notion", "{}", NULL, &shared_id, NULL),
                     MAE_OK);
    mae_db_close(db);

    run_children(path, 1000000, child_fail, reports);
    int64_t failed = 0;
    for (int i = 0; i < NPROC; i++) {
        assert_int_equal(reports[i].rc, MAE_OK);
        assert_int_equal(reports[i].events, KFAIL);
        failed += reports[i].failed_events;
    }
    assert_int_equal(failed, NPROC * KFAIL);

    db = open_db(path, NULL, 1000000);
    assert_non_null(db);
    mae_outbox_row *row = NULL;
    assert_int_equal(mae_outbox_get(db, shared_id, &row), MAE_OK);
    assert_string_equal(row->status, "failed");
    assert_int_equal(row->attempts, NPROC * KFAIL);
    assert_non_null(strstr(row->last_error, "child "));
    mae_outbox_row_free(row);
    mae_db_close(db);
    tu_remove_db(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_enqueue_one_intent),
        cmocka_unit_test(test_concurrent_failures_all_counted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
