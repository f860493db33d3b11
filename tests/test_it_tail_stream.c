/* Integration tests of `mailagent events tail --stream` against a real
 * redis-server on a free loopback port: the history after --since (or from
 * the start), then the entries that follow, each line with its id; across a
 * killed connection, a hung server and a restart it continues after the last
 * id printed, so nothing is missed or printed twice; trimmed history and an
 * id newer than the stream are said on stderr; the usage errors. Entries are
 * written with XADD ... * event <line>, as the publisher's stream mode does. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "redis_harness.h"
#include "testutil.h"

#include "stream/id.h"

#ifdef MAE_CLI_PATH
#include "tests/cli/cli_run.h"

#define KEY "mailagent:events-log"

typedef struct fixture {
    mtr_redis redis;
    char redis_env[128];
    char stream_env[128];
} fixture;

static int setup(void **state)
{
    if (!mtr_available())
        tu_missing_prerequisite("redis-server not found");
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_int_equal(mtr_start(&f->redis, NULL), 0);
    snprintf(f->redis_env, sizeof f->redis_env, "MAILAGENT_REDIS_URL=%s", f->redis.url);
    snprintf(f->stream_env, sizeof f->stream_env, "MAILAGENT_STREAM=%s", KEY);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f) {
        mtr_cleanup(&f->redis);
        free(f);
    }
    return 0;
}

/* An event line as the library publishes it, numbered n. */
static void event_line(char *buf, size_t size, long n)
{
    snprintf(buf, size,
             "{\"event_type\":\"email.synced\",\"internal_id\":%ld,\"source\":\"new_watcher\","
             "\"ts\":1716096000.000000,\"data\":{\"n\":%ld}}",
             n, n);
}

static redisContext *link_to(fixture *f)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", f->redis.port, tv);
    assert_true(c && !c->err);
    return c;
}

/* XADD of event n; writes the id's text into id (may be NULL). */
static void xadd(fixture *f, long n, char *id)
{
    char line[256];
    event_line(line, sizeof line, n);
    redisContext *c = link_to(f);
    redisReply *r = redisCommand(c, "XADD %s * event %s", KEY, line);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    if (id)
        snprintf(id, MAE__STREAM_ID_BUFSIZE, "%s", r->str);
    freeReplyObject(r);
    redisFree(c);
}

/* The --json line the tail prints for entry id holding event n. */
static void json_line(char *buf, size_t size, const char *id, long n)
{
    char line[256];
    event_line(line, sizeof line, n);
    snprintf(buf, size, "{\"id\":\"%s\",\"event\":%s}\n", id, line);
}

/* Waits until the tail's stdout has n lines. */
static void wait_lines(cli_proc *p, size_t n, int timeout_ms)
{
    double end = cli_now() + timeout_ms / 1000.0;
    while (cli_lines(p->out) < n && cli_now() < end)
        cli_pump(p, 50);
    if (cli_lines(p->out) < n)
        fail_msg("tail printed %zu lines, want %zu; stdout:\n%s\nstderr:\n%s", cli_lines(p->out),
                 n, p->out, p->err);
}

/* Waits until a client of the server is blocked in XREAD (the tail is
 * following). */
static void wait_following(fixture *f, int timeout_ms)
{
    double end = cli_now() + timeout_ms / 1000.0;
    for (;;) {
        bool found = false;
        redisContext *c = link_to(f);
        redisReply *r = redisCommand(c, "CLIENT LIST");
        if (r && r->type == REDIS_REPLY_STRING)
            found = strstr(r->str, "cmd=xread") != NULL;
        freeReplyObject(r);
        redisFree(c);
        if (found)
            return;
        if (cli_now() > end)
            fail_msg("the tail never reached XREAD");
        tu_sleep_ms(20);
    }
}

static void test_history_then_follow(void **state)
{
    fixture *f = *state;
    char ids[8][MAE__STREAM_ID_BUFSIZE];
    for (long i = 0; i < 5; i++)
        xadd(f, i, ids[i]);
    cli_proc p;
    const char *env[] = {f->redis_env, NULL};
    cli_start(&p, env, ARGS("events", "tail", "--json", "--stream", KEY, "--since", ids[0],
                            "--count", "6", "--timeout", "30"));
    wait_lines(&p, 4, 10000);
    wait_following(f, 10000);
    xadd(f, 5, ids[5]);
    xadd(f, 6, ids[6]);
    assert_int_equal(cli_wait(&p, 10000), 0);
    char want[4096] = "", line[1024];
    for (long i = 1; i <= 6; i++) {
        json_line(line, sizeof line, ids[i], i);
        strcat(want, line);
    }
    assert_string_equal(p.out, want);
    assert_string_equal(p.err, "");
    cli_free(&p);
}

static void test_since_start_plain_and_env(void **state)
{
    fixture *f = *state;
    char ids[3][MAE__STREAM_ID_BUFSIZE];
    for (long i = 0; i < 3; i++)
        xadd(f, i, ids[i]);
    cli_proc p;
    /* MAILAGENT_STREAM is the default for --stream. */
    const char *env[] = {f->redis_env, f->stream_env, NULL};
    assert_int_equal(cli_run(&p, env, ARGS("events", "tail", "--since", "start", "--count", "3")),
                     0);
    /* Each line: the id, then the line tail prints without --stream. */
    const char *s = p.out;
    for (long i = 0; i < 3; i++) {
        char head[128], tail_part[96];
        snprintf(head, sizeof head, "%s ", ids[i]);
        assert_memory_equal(s, head, strlen(head));
        snprintf(tail_part, sizeof tail_part, " email.synced #%ld new_watcher n=%ld\n", i, i);
        const char *nl = strchr(s, '\n');
        assert_non_null(nl);
        assert_memory_equal(nl + 1 - strlen(tail_part), tail_part, strlen(tail_part));
        s = nl + 1;
    }
    assert_string_equal(s, "");
    cli_free(&p);
    /* --type filters, --count counts what was printed. */
    assert_int_equal(cli_run(&p, env, ARGS("events", "tail", "--since", ids[0], "--type",
                                           "outbox.", "--timeout", "0.5")),
                     0);
    assert_string_equal(p.out, "");
    cli_free(&p);
}

/* The database in the URL counts: the tail sent AUTH but never SELECT, so
 * `--redis redis://HOST:PORT/3 events tail` printed the stream of db 0 and
 * skipped the one in db 3 (failed before the command's one handshake,
 * stream/sync.c, was used). */
static void test_the_database_in_the_url(void **state)
{
    fixture *f = *state;
    redisContext *c = link_to(f);
    char line0[256], line3[256], url[128];
    event_line(line0, sizeof line0, 100);
    event_line(line3, sizeof line3, 3);
    redisReply *r = redisCommand(c, "XADD %s 1-0 event %s", KEY, line0);
    assert_true(r && r->type == REDIS_REPLY_STRING);
    freeReplyObject(r);
    r = redisCommand(c, "SELECT 3");
    assert_true(r && r->type == REDIS_REPLY_STATUS);
    freeReplyObject(r);
    r = redisCommand(c, "XADD %s 2-0 event %s", KEY, line3);
    assert_true(r && r->type == REDIS_REPLY_STRING);
    freeReplyObject(r);
    redisFree(c);

    snprintf(url, sizeof url, "%s/3", f->redis.url);
    cli_proc p;
    const char *env[] = {NULL};
    assert_int_equal(cli_run(&p, env, ARGS("--redis", url, "events", "tail", "--json", "--stream",
                                           KEY, "--since", "start", "--count", "1")),
                     0);
    char want[512];
    json_line(want, sizeof want, "2-0", 3);
    assert_string_equal(p.out, want);
    cli_free(&p);
}

static void test_reconnects_lose_and_double_nothing(void **state)
{
    fixture *f = *state;
    char ids[12][MAE__STREAM_ID_BUFSIZE];
    xadd(f, 100, NULL);  /* before the tail: not printed */
    cli_proc p;
    const char *env[] = {f->redis_env, f->stream_env, NULL};
    cli_start(&p, env, ARGS("events", "tail", "--json", "--count", "9", "--timeout", "60"));
    wait_following(f, 10000);
    for (long i = 0; i < 3; i++)
        xadd(f, i, ids[i]);
    wait_lines(&p, 3, 10000);

    /* A killed connection: entries added before it comes back are
     * printed once. */
    assert_int_equal(mtr_command(&f->redis, "CLIENT KILL TYPE normal"), 0);
    xadd(f, 3, ids[3]);
    xadd(f, 4, ids[4]);
    wait_lines(&p, 5, 10000);

    /* Redis stopped with its data saved and restarted: the tail goes on
     * after the last id it printed. */
    assert_int_equal(mtr_command(&f->redis, "SAVE"), 0);
    mtr_kill(&f->redis);
    tu_sleep_ms(300);
    assert_int_equal(mtr_restart(&f->redis), 0);
    xadd(f, 5, ids[5]);
    xadd(f, 6, ids[6]);
    wait_lines(&p, 7, 15000);

    /* A hung server: the tail gives up on it after BLOCK + margin (5 s)
     * and reconnects once it answers again. */
    wait_following(f, 10000);
    mtr_pause(&f->redis);
    tu_sleep_ms(5800);
    mtr_resume(&f->redis);
    xadd(f, 7, ids[7]);
    xadd(f, 8, ids[8]);
    assert_int_equal(cli_wait(&p, 20000), 0);

    char want[8192] = "", line[1024];
    for (long i = 0; i < 9; i++) {
        json_line(line, sizeof line, ids[i], i);
        strcat(want, line);
    }
    assert_string_equal(p.out, want);
    assert_non_null(strstr(p.err, "lost the connection to Redis"));
    assert_non_null(strstr(p.err, "no reply within 5000 ms"));
    assert_non_null(strstr(p.err, "reconnected"));
    assert_null(strstr(p.err, "went back"));
    cli_free(&p);
}

static void test_trimmed_unknown_and_rewound(void **state)
{
    fixture *f = *state;
    char ids[10][MAE__STREAM_ID_BUFSIZE];
    for (long i = 0; i < 10; i++)
        xadd(f, i, ids[i]);
    redisContext *c = link_to(f);
    redisReply *r = redisCommand(c, "XTRIM %s MAXLEN 3", KEY);
    freeReplyObject(r);
    redisFree(c);
    const char *env[] = {f->redis_env, f->stream_env, NULL};
    cli_proc p;

    /* History after ids[2] was trimmed up to ids[7]: said, then the rest. */
    assert_int_equal(cli_run(&p, env, ARGS("events", "tail", "--json", "--since", ids[2],
                                           "--count", "3")),
                     0);
    char want[4096] = "", line[1024];
    for (long i = 7; i < 10; i++) {
        json_line(line, sizeof line, ids[i], i);
        strcat(want, line);
    }
    assert_string_equal(p.out, want);
    char msg[256];
    snprintf(msg, sizeof msg, "history before %s was trimmed", ids[7]);
    assert_non_null(strstr(p.err, msg));
    assert_non_null(strstr(p.err, "may be missing"));
    cli_free(&p);

    /* From the start: the same history, and a word on what is gone. */
    assert_int_equal(cli_run(&p, env, ARGS("events", "tail", "--json", "--since", "start",
                                           "--count", "3")),
                     0);
    assert_string_equal(p.out, want);
    snprintf(msg, sizeof msg, "history before %s was trimmed; printing from %s", ids[7], ids[7]);
    assert_non_null(strstr(p.err, msg));
    cli_free(&p);

    /* An id after the stream's last: said, then only new entries. */
    cli_start(&p, env, ARGS("events", "tail", "--json", "--since",
                            "18446744073709551615-18446744073709551615", "--count", "1",
                            "--timeout", "30"));
    wait_following(f, 10000);
    xadd(f, 10, ids[0]);
    assert_int_equal(cli_wait(&p, 10000), 0);
    json_line(want, sizeof want, ids[0], 10);
    assert_string_equal(p.out, want);
    assert_non_null(strstr(p.err, "is newer than the stream's last id"));
    cli_free(&p);

    /* Redis restarted without its data: the stream went back; said, and
     * the new stream is followed from its start. */
    cli_start(&p, env, ARGS("events", "tail", "--json", "--count", "1", "--timeout", "30"));
    wait_following(f, 10000);
    mtr_kill(&f->redis);
    assert_int_equal(mtr_restart(&f->redis), 0);
    wait_following(f, 15000);
    xadd(f, 11, ids[1]);
    assert_int_equal(cli_wait(&p, 10000), 0);
    json_line(want, sizeof want, ids[1], 11);
    assert_string_equal(p.out, want);
    assert_non_null(strstr(p.err, "the stream went back"));
    cli_free(&p);
}

/* SIGTERM or SIGINT while blocked in XREAD: exit 0 at once, not after the
 * BLOCK. */
static void test_stops_on_signals(void **state)
{
    fixture *f = *state;
    const char *env[] = {f->redis_env, f->stream_env, NULL};
    const int sigs[] = {SIGTERM, SIGINT};
    for (size_t i = 0; i < 2; i++) {
        cli_proc p;
        cli_start(&p, env, ARGS("events", "tail"));
        wait_following(f, 10000);
        double t0 = cli_now();
        kill(p.pid, sigs[i]);
        assert_int_equal(cli_wait(&p, 10000), 0);
        assert_true(cli_now() - t0 < 1.5);
        assert_string_equal(p.err, "");
        cli_free(&p);
    }
}

static void test_usage_errors(void **state)
{
    fixture *f = *state;
    const char *env[] = {f->redis_env, NULL};
    const char *env_stream[] = {f->redis_env, f->stream_env, NULL};
    cli_proc p;
    assert_int_equal(cli_run(&p, env, ARGS("events", "tail", "--since", "0-0")), 2);
    assert_non_null(strstr(p.err, "--since reads a stream"));
    assert_non_null(strstr(p.err, "usage: mailagent"));
    cli_free(&p);
    static const char *const bad[] = {"", "now", "1-0-0", "+1-0", "99999999999999999999-0",
                                      "1-0\n", " 1-0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(cli_run(&p, env_stream, ARGS("events", "tail", "--since", bad[i])), 2);
        assert_non_null(strstr(p.err, "--since wants a stream id"));
        cli_free(&p);
    }
    assert_int_equal(cli_run(&p, env, ARGS("events", "tail", "--stream", "", "--since", "0-0")),
                     2);
    assert_non_null(strstr(p.err, "stream key must not be empty"));
    cli_free(&p);
    /* An empty MAILAGENT_STREAM counts as unset. */
    const char *env_empty[] = {f->redis_env, "MAILAGENT_STREAM=", NULL};
    assert_int_equal(cli_run(&p, env_empty, ARGS("events", "tail", "--since", "start")), 2);
    cli_free(&p);
    /* The global option also works before the command. */
    assert_int_equal(cli_run(&p, env, ARGS("--stream", KEY, "events", "tail", "--since", "start",
                                           "--timeout", "0.3")),
                     0);
    cli_free(&p);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_history_then_follow),
        T(test_since_start_plain_and_env),
        T(test_the_database_in_the_url),
        T(test_reconnects_lose_and_double_nothing),
        T(test_trimmed_unknown_and_rewound),
        T(test_stops_on_signals),
        T(test_usage_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#else

static void test_needs_the_command(void **state)
{
    (void)state;
    skip();
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_needs_the_command)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#endif
