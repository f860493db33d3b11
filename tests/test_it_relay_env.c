/* Integration tests of the relay's configuration from the environment
 * (cli/serve.c, core/env.c), each against the real `mailagent events serve`
 * on loopback with a real redis-server: MailAgent's local token variable and
 * our alias (alone, equal, different), SSE_LOCAL_PORT, credentials no header
 * could match (surrounding whitespace, control characters), and the Redis
 * URL from MailAgent's REDIS_URL + REDIS_DB, for the relay and for the demo
 * watcher (examples/demo_watcher, built next to the command). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cmocka.h>

#include <mailagent/events.h>

#include "harness.h"
#include "redis_harness.h"

#define CHANNEL MAE_DEFAULT_CHANNEL
#define STREAM "/api/events/stream"

static mtr_redis g_redis;
static char g_out[512];

static int setup(void **state)
{
    (void)state;
    if (!rh_have(MAE_REDIS_SERVER))
        return -1;
    rh_out_dir("test_it_relay_env", g_out, sizeof g_out);
    return mtr_start(&g_redis, NULL);
}

static int teardown(void **state)
{
    (void)state;
    mtr_cleanup(&g_redis);
    return 0;
}

/* Every variable these tests set, emptied first (empty is unset), so that
 * nothing from the caller's environment takes part. */
#define CLEAN_ENV                                                                            \
    "WEBHOOK_SECRET=", "MAILAGENT_LOCAL_API_TOKEN=", "MAILAGENT_LOCAL_TOKEN=",               \
        "SSE_LOCAL_PORT=", "MAILAGENT_REDIS_URL=", "REDIS_URL=", "REDIS_DB="

/* Runs the command to its end; its exit status, and its stderr in *err. */
static int run_cmd(const char *const *argv, const char *const *env, const char *tag, char **err)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s.err", g_out, tag);
    int rc = rh_wait(rh_spawn(argv, env, NULL, path), 10000);
    *err = rh_slurp(path);
    assert_non_null(*err);
    return rc;
}

/* Starts the relay with argv and env as given (no --listen added), and
 * waits for its "listening on" line; the port it names, 0 on failure. */
static int start_raw(const char *const *argv, const char *const *env, const char *tag,
                     pid_t *pid)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s.log", g_out, tag);
    /* The child truncates it, but only after fork: a previous run's log
     * must not be read as this one's. */
    unlink(path);
    *pid = rh_spawn(argv, env, NULL, path);
    char *log = rh_wait_text(path, "listening on http://127.0.0.1:", 10000, 20);
    const char *at = log ? strstr(log, "listening on http://127.0.0.1:") : NULL;
    int port = at ? atoi(at + strlen("listening on http://127.0.0.1:")) : 0;
    if (!port)
        fail_msg("the relay did not start: %s", log ? log : "(no log)");
    free(log);
    return port;
}

static void stop_raw(pid_t pid)
{
    kill(pid, SIGTERM);
    assert_int_equal(rh_wait(pid, 5000), 0);
}

/* The status line the stream answers with the header line extra (NULL:
 * none): 200 (then closed) or 401. */
static int stream_status(int port, const char *extra)
{
    char req[512];
    snprintf(req, sizeof req, "GET " STREAM " HTTP/1.1\r\nHost: x\r\n%s%s\r\n",
             extra ? extra : "", extra ? "\r\n" : "");
    rh_conn *c = rh_connect(port, 0);
    assert_non_null(c);
    assert_true(rh_send(c, req, strlen(req)));
    long at = rh_wait_for(c, 0, "\r\n", 10000);
    assert_true(at > 0);
    int status = strncmp(c->buf, "HTTP/1.1 200", 12) == 0   ? 200
                 : strncmp(c->buf, "HTTP/1.1 401", 12) == 0 ? 401
                                                            : -1;
    if (status < 0)
        fail_msg("unexpected answer: %s", c->buf);
    rh_close(c);
    return status;
}

/* ---- the local token: MailAgent's name, our alias -------------------------------- */

static void expect_token_gate(const char *const *env, const char *tag, const char *token)
{
    rh_relay r;
    char log[600], hdr[200];
    snprintf(log, sizeof log, "%s/%s.log", g_out, tag);
    assert_int_equal(rh_relay_start(&r, g_redis.url, NULL, env, log), 0);
    snprintf(hdr, sizeof hdr, "X-MailAgent-Local-Token: %s", token);
    assert_int_equal(stream_status(r.port, hdr), 200);
    assert_int_equal(stream_status(r.port, NULL), 401);
    assert_int_equal(stream_status(r.port, "X-MailAgent-Local-Token: wrong"), 401);
    assert_int_equal(stream_status(r.port, "X-Webhook-Token: wrong"), 401);
    assert_int_equal(rh_relay_stop(&r, SIGTERM, 5000, NULL), 0);
}

static void test_local_token_variables(void **state)
{
    (void)state;
    /* MailAgent's desktop app sets MAILAGENT_LOCAL_API_TOKEN: it gates the
     * stream (before this, the relay ignored it and served everyone). */
    static const char *const api_only[] = {CLEAN_ENV, "MAILAGENT_LOCAL_API_TOKEN=desk-t0k",
                                           NULL};
    expect_token_gate(api_only, "api-token", "desk-t0k");
    /* Our earlier name stays as an alias. */
    static const char *const alias_only[] = {CLEAN_ENV, "MAILAGENT_LOCAL_TOKEN=old-t0k", NULL};
    expect_token_gate(alias_only, "alias-token", "old-t0k");
    /* Both, equal: one token. */
    static const char *const both_equal[] = {CLEAN_ENV, "MAILAGENT_LOCAL_API_TOKEN=same",
                                             "MAILAGENT_LOCAL_TOKEN=same", NULL};
    expect_token_gate(both_equal, "both-equal", "same");

    /* Both, different: which one would the app use? Refused, naming both. */
    static const char *const both_differ[] = {CLEAN_ENV, "MAILAGENT_LOCAL_API_TOKEN=one",
                                              "MAILAGENT_LOCAL_TOKEN=two", NULL};
    const char *argv[] = {MAE_CLI_PATH, "--redis", g_redis.url, "events", "serve",
                          "--listen", "127.0.0.1:0", NULL};
    char *err;
    assert_int_equal(run_cmd(argv, both_differ, "both-differ", &err), 2);
    if (!strstr(err, "MAILAGENT_LOCAL_API_TOKEN") || !strstr(err, "MAILAGENT_LOCAL_TOKEN") ||
        strstr(err, "listening on"))
        fail_msg("stderr: %s", err);
    free(err);
}

/* ---- credentials no header could match ---------------------------------------- */

static void test_credentials_with_whitespace_refused(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"WEBHOOK_SECRET=abc ", "WEBHOOK_SECRET"},
        {"WEBHOOK_SECRET= abc", "WEBHOOK_SECRET"},
        {"WEBHOOK_SECRET=abc\n", "WEBHOOK_SECRET"},
        {"WEBHOOK_SECRET=a\x01" "bc", "WEBHOOK_SECRET"},
        {"MAILAGENT_LOCAL_API_TOKEN=abc\t", "MAILAGENT_LOCAL_API_TOKEN"},
        {"MAILAGENT_LOCAL_TOKEN= abc", "MAILAGENT_LOCAL_TOKEN"},
    };
    const char *argv[] = {MAE_CLI_PATH, "--redis", g_redis.url, "events", "serve",
                          "--listen", "127.0.0.1:0", NULL};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *env[] = {CLEAN_ENV, cases[i][0], NULL};
        char tag[32], *err;
        snprintf(tag, sizeof tag, "ws-%zu", i);
        int rc = run_cmd(argv, env, tag, &err);
        if (rc != 2 || !strstr(err, cases[i][1]) || strstr(err, "abc") ||
            strstr(err, "listening on"))
            fail_msg("case %zu: exit %d, stderr: %s", i, rc, err);
        free(err);
    }
    /* Inside the value, a space is a character like any other. */
    static const char *const inner[] = {CLEAN_ENV, "WEBHOOK_SECRET=a b", NULL};
    rh_relay r;
    char log[600];
    snprintf(log, sizeof log, "%s/inner-space.log", g_out);
    assert_int_equal(rh_relay_start(&r, g_redis.url, NULL, inner, log), 0);
    assert_int_equal(stream_status(r.port, "X-Webhook-Token: a b"), 200);
    assert_int_equal(stream_status(r.port, "X-Webhook-Token: ab"), 401);
    assert_int_equal(rh_relay_stop(&r, SIGTERM, 5000, NULL), 0);
}

/* ---- SSE_LOCAL_PORT -------------------------------------------------------------- */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void test_sse_local_port(void **state)
{
    (void)state;
    int want = free_port();
    char port_var[64];
    snprintf(port_var, sizeof port_var, "SSE_LOCAL_PORT=%d", want);
    const char *env[] = {CLEAN_ENV, port_var, NULL};
    const char *argv[] = {MAE_CLI_PATH, "--redis", g_redis.url, "events", "serve", NULL};
    pid_t pid;
    assert_int_equal(start_raw(argv, env, "sse-local-port", &pid), want);
    assert_int_equal(stream_status(want, NULL), 200);
    stop_raw(pid);

    /* Not a port: refused, naming the variable. */
    static const char *const bad[] = {"SSE_LOCAL_PORT=92OO", "SSE_LOCAL_PORT=70000",
                                      "SSE_LOCAL_PORT=-1", "SSE_LOCAL_PORT=9200 9201"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *benv[] = {CLEAN_ENV, bad[i], NULL};
        char tag[32], *err;
        snprintf(tag, sizeof tag, "bad-port-%zu", i);
        int rc = run_cmd(argv, benv, tag, &err);
        if (rc != 2 || !strstr(err, "SSE_LOCAL_PORT"))
            fail_msg("%s: exit %d, stderr: %s", bad[i], rc, err);
        free(err);
    }
    /* --listen wins: the variable is not even read. */
    static const char *const ignored[] = {CLEAN_ENV, "SSE_LOCAL_PORT=nonsense", NULL};
    rh_relay r;
    char log[600];
    snprintf(log, sizeof log, "%s/listen-wins.log", g_out);
    assert_int_equal(rh_relay_start(&r, g_redis.url, NULL, ignored, log), 0);
    assert_int_equal(stream_status(r.port, NULL), 200);
    assert_int_equal(rh_relay_stop(&r, SIGTERM, 5000, NULL), 0);
}

/* ---- MailAgent's REDIS_URL + REDIS_DB ------------------------------------------ */

static void test_redis_url_and_db(void **state)
{
    (void)state;
    char url_var[128];
    snprintf(url_var, sizeof url_var, "REDIS_URL=%s/", g_redis.url);
    const char *env[] = {CLEAN_ENV, url_var, "REDIS_DB=3", NULL};
    const char *argv[] = {MAE_CLI_PATH, "events", "serve", "--listen", "127.0.0.1:0", NULL};
    pid_t pid;
    int port = start_raw(argv, env, "redis-url-db", &pid);
    rh_conn *c = rh_get(port, STREAM, NULL);
    assert_non_null(c);
    assert_true(rh_wait_for(c, 0, "retry:", 10000) >= 0);
    rh_wait_clients(port, NULL, 1, 10000);
    assert_int_equal(mtr_command(&g_redis, "PUBLISH %s %s", CHANNEL,
                                 "{\"event_type\":\"email.new\"}"),
                     0);
    assert_true(rh_wait_for(c, 0, "data: {\"event_type\":\"email.new\"}\n\n", 10000) >= 0);
    rh_close(c);
    stop_raw(pid);

    /* A REDIS_DB that is no number, a REDIS_URL naming another database:
     * refused, naming the variable. */
    static const char *const bad[][2] = {{"REDIS_DB=two", "REDIS_DB"},
                                         {"REDIS_DB=-1", "REDIS_DB"}};
    for (size_t i = 0; i < 2; i++) {
        const char *benv[] = {CLEAN_ENV, url_var, bad[i][0], NULL};
        char tag[32], *err;
        snprintf(tag, sizeof tag, "bad-db-%zu", i);
        int rc = run_cmd(argv, benv, tag, &err);
        if (rc != 2 || !strstr(err, bad[i][1]))
            fail_msg("%s: exit %d, stderr: %s", bad[i][0], rc, err);
        free(err);
    }
    char named[128];
    snprintf(named, sizeof named, "REDIS_URL=%s/5", g_redis.url);
    const char *nenv[] = {CLEAN_ENV, named, NULL};
    char *err;
    assert_int_equal(run_cmd(argv, nenv, "named-db", &err), 2);
    assert_non_null(strstr(err, "REDIS_URL already names a database"));
    free(err);
    /* Blank everywhere: no URL at all, which is hub mode (issue 20); with
     * --stream, which needs Redis, it is refused naming the hub. */
    const char *blank[] = {CLEAN_ENV, "REDIS_URL=  ", NULL};
    const char *stream_argv[] = {MAE_CLI_PATH, "events", "serve", "--listen", "127.0.0.1:0",
                                 "--stream", "k", NULL};
    assert_int_equal(run_cmd(stream_argv, blank, "blank-url", &err), 2);
    assert_non_null(strstr(err, "--stream needs a Redis URL"));
    free(err);
}

/* ---- the demo watcher reads the same variables ------------------------------ */

/* XLEN key in database db, through redis-cli. */
static long xlen(int db, const char *key)
{
    char out[600], port[16], dbs[16];
    snprintf(out, sizeof out, "%s/xlen-%d.out", g_out, db);
    snprintf(port, sizeof port, "%d", g_redis.port);
    snprintf(dbs, sizeof dbs, "%d", db);
    const char *argv[] = {MAE_REDIS_CLI, "-h", "127.0.0.1", "-p", port, "-n", dbs,
                          "XLEN", key, NULL};
    assert_int_equal(rh_wait(rh_spawn(argv, NULL, out, NULL), 10000), 0);
    char *text = rh_slurp(out);
    assert_non_null(text);
    long n = strtol(text, NULL, 10);
    free(text);
    return n;
}

static void test_demo_watcher_redis_url_and_db(void **state)
{
    (void)state;
    char demo[600], db_path[600], url_var[128], db_var[700];
    snprintf(demo, sizeof demo, "%s", MAE_CLI_PATH);
    char *slash = strrchr(demo, '/');
    assert_non_null(slash);
    snprintf(slash + 1, sizeof demo - (size_t)(slash + 1 - demo), "demo_watcher");
    RH_REQUIRE(demo);
    snprintf(db_path, sizeof db_path, "%s/demo.db", g_out);
    unlink(db_path);
    snprintf(url_var, sizeof url_var, "REDIS_URL=%s/", g_redis.url);
    snprintf(db_var, sizeof db_var, "MAILAGENT_DB=%s", db_path);
    const char *env[] = {CLEAN_ENV, url_var, "REDIS_DB=6", "MAILAGENT_STREAM=demo-env:events",
                         db_var, NULL};
    const char *argv[] = {demo, "--mails", "3", "--fast", NULL};
    char *err;
    assert_int_equal(run_cmd(argv, env, "demo", &err), 0);
    free(err);
    /* Every event went to database 6 (MailAgent's REDIS_DB), none to 0. */
    assert_true(xlen(6, "demo-env:events") >= 3);
    assert_int_equal(xlen(0, "demo-env:events"), 0);
    /* A bad REDIS_DB: refused, naming it. */
    const char *bad[] = {CLEAN_ENV, url_var, "REDIS_DB=six", db_var, NULL};
    assert_int_equal(run_cmd(argv, bad, "demo-bad", &err), 2);
    assert_non_null(strstr(err, "REDIS_DB"));
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_local_token_variables),
        cmocka_unit_test(test_credentials_with_whitespace_refused),
        cmocka_unit_test(test_sse_local_port),
        cmocka_unit_test(test_redis_url_and_db),
        cmocka_unit_test(test_demo_watcher_redis_url_and_db),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
