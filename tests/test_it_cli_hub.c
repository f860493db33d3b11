/* Integration tests of the command publishing with no Redis URL: `email
 * flag` posts its outbox.enqueued event to MAILAGENT_RELAY_URL (a fake hub
 * on a free loopback port, tests/support/fake_hub.c) with
 * MAILAGENT_LOCAL_API_TOKEN; says so when the relay cannot be reached; and,
 * unlike the Python drop-in's process-wide publisher, never falls back to
 * the loopback port by itself. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <mailagent/events.h>

#include "fake_hub.h"
#include "testutil.h"

#include "tests/cli/cli_run.h"

#ifndef MAE_TEST_TMPDIR
#define MAE_TEST_TMPDIR "/tmp"
#endif

typedef struct fixture {
    char dir[256];
    char db[300];
    char db_env[320];
    fake_hub *hub;
    char relay_env[96];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    mae_db_config cfg;
    mae_db *db = NULL;
    assert_non_null(f);
    mkdir(MAE_TEST_TMPDIR, 0755);
    snprintf(f->dir, sizeof f->dir, "%s/itclihub-XXXXXX", MAE_TEST_TMPDIR);
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->db, sizeof f->db, "%s/mail.db", f->dir);
    snprintf(f->db_env, sizeof f->db_env, "MAILAGENT_DB=%s", f->db);
    mae_db_config_init(&cfg);
    cfg.path = f->db;
    assert_int_equal(mae_db_open(&cfg, &db), MAE_OK);
    mae_email m = {.internal_id = 101, .message_id = "<m101@example.com>", .subject = "Report"};
    assert_int_equal(mae_sync_store_upsert(db, &m), MAE_OK);
    mae_db_close(db);
    f->hub = fake_hub_start();
    snprintf(f->relay_env, sizeof f->relay_env, "MAILAGENT_RELAY_URL=%s", fake_hub_url(f->hub));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    const char *suffix[] = {"", "-wal", "-shm"};
    char path[400];
    fake_hub_stop(f->hub);
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s%s", f->db, suffix[i]);
        unlink(path);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

static void test_flag_posts_to_the_relay(void **state)
{
    fixture *f = *state;
    char line[1024], token[64];
    cli_proc p;
    fake_hub_require_token(f->hub, "t0ken");
    const char *env[] = {f->db_env, f->relay_env, "MAILAGENT_LOCAL_API_TOKEN=t0ken",
                         "REDIS_URL=", NULL};
    assert_int_equal(cli_run(&p, env, ARGS("email", "flag", "101", "--target", "notion")), 0);
    assert_string_equal(p.err, "");
    cli_free(&p);
    assert_int_equal(fake_hub_events(f->hub), 1);
    assert_true(fake_hub_event(f->hub, 0, line, sizeof line));
    assert_non_null(strstr(line, "\"event_type\":\"outbox.enqueued\""));
    assert_non_null(strstr(line, "\"internal_id\":101"));
    assert_non_null(strstr(line, "\"target\":\"notion\""));
    assert_true(fake_hub_header(f->hub, "X-MailAgent-Local-Token", token, sizeof token));
    assert_string_equal(token, "t0ken");
}

static void test_a_wrong_token_is_said(void **state)
{
    fixture *f = *state;
    cli_proc p;
    fake_hub_require_token(f->hub, "t0ken");
    const char *env[] = {f->db_env, f->relay_env, "MAILAGENT_LOCAL_API_TOKEN=nope", NULL};
    assert_int_equal(cli_run(&p, env, ARGS("email", "flag", "101", "--target", "notion")), 0);
    assert_non_null(strstr(p.err, "could not be delivered to the relay"));
    assert_int_equal(fake_hub_events(f->hub), 0);
    cli_free(&p);
}

static void test_no_loopback_fallback_and_a_bad_token(void **state)
{
    fixture *f = *state;
    cli_proc p;
    char port_env[64];
    /* Only SSE_LOCAL_PORT: the command does not guess a hub. */
    snprintf(port_env, sizeof port_env, "SSE_LOCAL_PORT=%d", fake_hub_port(f->hub));
    const char *env[] = {f->db_env, port_env, "REDIS_URL=", NULL};
    assert_int_equal(cli_run(&p, env, ARGS("email", "flag", "101", "--target", "notion")), 0);
    assert_non_null(strstr(p.err, "no relay URL (MAILAGENT_RELAY_URL)"));
    cli_free(&p);
    assert_int_equal(fake_hub_events(f->hub), 0);
    /* A bad token variable is a usage error naming it. */
    const char *env2[] = {f->db_env, f->relay_env, "MAILAGENT_LOCAL_API_TOKEN=x ", NULL};
    assert_int_equal(cli_run(&p, env2, ARGS("email", "flag", "101", "--target", "notion")), 2);
    assert_non_null(strstr(p.err, "MAILAGENT_LOCAL_API_TOKEN"));
    cli_free(&p);
    /* ... of the commands that would send it, not of the others. */
    assert_int_equal(cli_run(&p, env2, ARGS("email", "get", "101")), 0);
    assert_string_equal(p.err, "");
    cli_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_flag_posts_to_the_relay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_wrong_token_is_said, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_loopback_fallback_and_a_bad_token, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
