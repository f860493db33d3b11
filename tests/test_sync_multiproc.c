/* Multi-process test of the retry counters: forked processes, each with its
 * own mae_db on one file, fail the same mail at once; every failure must be
 * counted (the read-modify-write is atomic across processes). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "capture.h"
#include "testutil.h"

#define NPROC 4
#define K 40

static char path[256];

/* A child: waits for the start signal, then fails mail 7 K times in both
 * stores. Exit status 0 when every call succeeded. */
static int child(int start_fd, mae_publisher *inherited)
{
    char c;
    mae_db_config cfg;
    mae_db *db = NULL;
    /* inherited is a forked copy: it must be a harmless no-op. */
    tu_db_config(&cfg, path, inherited, NULL);
    cfg.email_max_retries = 1000000;
    cfg.llm_max_retries = 1000000;
    if (read(start_fd, &c, 1) != 1)
        return 10;
    if (mae_db_open(&cfg, &db) != MAE_OK)
        return 11;
    for (int i = 0; i < K; i++) {
        mae_retry_outcome out;
        if (mae_sync_store_mark_failed(db, 7, i % 2 ? "failed" : "fetch_failed", "busy", &out) !=
            MAE_OK) {
            fprintf(stderr, "child %d: %s\n", (int)getpid(), mae_db_errmsg(db));
            mae_db_close(db);
            return 12;
        }
        if (mae_llm_store_mark_failed(db, 7, "busy", &out) != MAE_OK) {
            fprintf(stderr, "child %d: %s\n", (int)getpid(), mae_db_errmsg(db));
            mae_db_close(db);
            return 13;
        }
    }
    mae_db_close(db);
    return 0;
}

/* Creates a fresh database at path holding mail 7 and closes it again, so
 * that no connection of the parent crosses a fork; cfg is left ready for
 * reopening it. */
static void create_with_mail(const char *tag, mae_publisher *pub, mae_db_config *cfg)
{
    mae_db *db = NULL;
    tu_db_path(path, sizeof path, tag);
    tu_db_config(cfg, path, pub, NULL);
    assert_int_equal(mae_db_open(cfg, &db), MAE_OK);
    mae_email m = {.internal_id = 7, .message_id = "<m7@example.com>"};
    assert_int_equal(mae_sync_store_upsert(db, &m), MAE_OK);
    mae_db_close(db);
}

static void test_concurrent_failures_all_counted(void **state)
{
    (void)state;
    int pipefd[2];
    pid_t pids[NPROC];
    mae_db_config cfg;
    mae_db *db = NULL;
    mae_publisher *pub = cap_open();

    create_with_mail("multiproc", pub, &cfg);

    assert_int_equal(pipe(pipefd), 0);
    for (int i = 0; i < NPROC; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            close(pipefd[1]);
            _exit(child(pipefd[0], pub));
        }
    }
    close(pipefd[0]);
    /* Start them together so their writes contend. */
    char go[NPROC];
    memset(go, 'g', sizeof go);
    assert_int_equal(write(pipefd[1], go, sizeof go), NPROC);
    close(pipefd[1]);
    for (int i = 0; i < NPROC; i++) {
        int status = 0;
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status));
        if (WEXITSTATUS(status) != 0)
            fail_msg("child %d exited with %d", i, WEXITSTATUS(status));
    }

    assert_int_equal(mae_db_open(&cfg, &db), MAE_OK);
    mae_email_row *r = NULL;
    assert_int_equal(mae_sync_store_get(db, 7, &r), MAE_OK);
    assert_int_equal(r->retry_count, NPROC * K);
    assert_true(strcmp(r->sync_status, "failed") == 0 || strcmp(r->sync_status, "fetch_failed") == 0);
    mae_email_row_free(r);
    mae_llm_row *l = NULL;
    assert_int_equal(mae_llm_store_get(db, 7, &l), MAE_OK);
    assert_int_equal(l->retry_count, NPROC * K);
    assert_string_equal(l->status, "failed");
    mae_llm_row_free(l);
    mae_db_close(db);

    /* The children's copies of the publisher sent nothing. */
    assert_int_equal(cap_count(pub), 0);
    mae_publisher_close(pub, 5000);
    tu_remove_db(path);
}

/* At the limit, exactly one of the racing failures is the terminal one. */
static void test_concurrent_failures_dead_letter_once(void **state)
{
    (void)state;
    mae_db_config cfg;
    mae_db *db = NULL;
    pid_t pids[NPROC];
    int pipefd[2];

    create_with_mail("multiproc-dl", NULL, &cfg);

    assert_int_equal(pipe(pipefd), 0);
    for (int i = 0; i < NPROC; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            char c;
            mae_db *cdb = NULL;
            mae_retry_outcome out;
            int terminal = 0;
            close(pipefd[1]);
            if (read(pipefd[0], &c, 1) != 1 || mae_db_open(&cfg, &cdb) != MAE_OK)
                _exit(100);
            for (int k = 0; k < 3; k++) {
                if (mae_sync_store_mark_failed(cdb, 7, "failed", "e", &out) != MAE_OK)
                    _exit(101);
                terminal += out.terminal && out.attempts == 5;
            }
            mae_db_close(cdb);
            _exit(terminal);
        }
    }
    close(pipefd[0]);
    char go[NPROC];
    memset(go, 'g', sizeof go);
    assert_int_equal(write(pipefd[1], go, sizeof go), NPROC);
    close(pipefd[1]);
    int reached = 0;
    for (int i = 0; i < NPROC; i++) {
        int status = 0;
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status));
        assert_true(WEXITSTATUS(status) <= 3);
        reached += WEXITSTATUS(status);
    }
    assert_int_equal(reached, 1); /* exactly one process saw attempts == 5 */

    assert_int_equal(mae_db_open(&cfg, &db), MAE_OK);
    mae_email_row *r = NULL;
    assert_int_equal(mae_sync_store_get(db, 7, &r), MAE_OK);
    assert_int_equal(r->retry_count, NPROC * 3);
    assert_string_equal(r->sync_status, "dead_letter");
    mae_email_row_free(r);
    mae_db_close(db);
    tu_remove_db(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_failures_all_counted),
        cmocka_unit_test(test_concurrent_failures_dead_letter_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
