/* Integration tests of the mailagent command against a real redis-server on
 * a free loopback port: `events tail` prints exactly what was published,
 * filters by type, survives a Redis restart and stops on a signal; `email
 * flag` publishes outbox.enqueued, and succeeds when Redis is down. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>
#include <json-c/json.h>

#include <mailagent/events.h>

#include "redis_harness.h"
#include "testutil.h"
#include "tests/cli/cli_run.h"

#ifndef MAE_TEST_TMPDIR
#define MAE_TEST_TMPDIR "/tmp"
#endif

#define CHANNEL "mailagent:events:v1"

typedef struct fixture {
    mtr_redis redis;
    char dir[256];
    char db[300];
    char db_env[320];
    char redis_env[160];
} fixture;

static mae_db *open_db(const char *path, mae_publisher *pub)
{
    mae_db_config cfg;
    mae_db *db = NULL;
    mae_db_config_init(&cfg);
    cfg.path = path;
    cfg.publisher = pub;
    assert_int_equal(mae_db_open(&cfg, &db), MAE_OK);
    return db;
}

static int setup(void **state)
{
    fixture *f;
    *state = NULL;
    if (!mtr_available()) {
        /* Each test skips itself, except in CI, where a missing server
         * fails the suite: CI must not pass by running less. */
        if (tu_in_ci()) {
            print_message("redis-server not found (" MAE_REDIS_SERVER "), and CI is set\n");
            return -1;
        }
        return 0;
    }
    f = calloc(1, sizeof *f);
    assert_int_equal(mtr_start(&f->redis, NULL), 0);
    mkdir(MAE_TEST_TMPDIR, 0755);
    snprintf(f->dir, sizeof f->dir, "%s/itcli-XXXXXX", MAE_TEST_TMPDIR);
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->db, sizeof f->db, "%s/mail.db", f->dir);
    snprintf(f->db_env, sizeof f->db_env, "MAILAGENT_DB=%s", f->db);
    snprintf(f->redis_env, sizeof f->redis_env, "MAILAGENT_REDIS_URL=%s", f->redis.url);
    mae_db *db = open_db(f->db, NULL);
    mae_email m = {.internal_id = 101, .message_id = "<m101@example.com>",
                   .subject = "Quarterly report"};
    assert_int_equal(mae_sync_store_upsert(db, &m), MAE_OK);
    mae_db_close(db);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    const char *suffix[] = {"", "-wal", "-shm"};
    char path[400];
    if (!f)
        return 0;
    mtr_cleanup(&f->redis);
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s%s", f->db, suffix[i]);
        unlink(path);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

/* ---- helpers --------------------------------------------------------------- */

/* Subscribers of channel right now, -1 when Redis does not answer. */
static long long numsub(fixture *f, const char *channel)
{
    struct timeval tv = {1, 0};
    long long n = -1;
    redisContext *c = redisConnectWithTimeout("127.0.0.1", f->redis.port, tv);
    if (c && !c->err) {
        redisReply *r = redisCommand(c, "PUBSUB NUMSUB %s", channel);
        if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2)
            n = r->element[1]->integer;
        freeReplyObject(r);
    }
    redisFree(c);
    return n;
}

/* Waits until the channel has at least n subscribers (the tail is ready). */
static void wait_subscribers(fixture *f, const char *channel, long long n, int timeout_ms)
{
    double end = cli_now() + timeout_ms / 1000.0;
    while (numsub(f, channel) < n) {
        if (cli_now() > end)
            fail_msg("%s never had %lld subscribers", channel, n);
        tu_sleep_ms(20);
    }
}

/* Starts `events tail` with the fixture's Redis and these arguments. */
static void start_tail(fixture *f, cli_proc *p, const char *const *args)
{
    const char *env[] = {f->redis_env, NULL};
    cli_start(p, env, args);
    wait_subscribers(f, CHANNEL, 1, 10000);
}

static mae_publisher *open_publisher(const char *url)
{
    mae_publisher_config cfg;
    mae_publisher *p = NULL;
    mae_publisher_config_init(&cfg);
    cfg.redis_url = url;
    assert_int_equal(mae_publisher_open(&cfg, &p), MAE_OK);
    return p;
}

/* The readable tail's time prefix for a published message: local
 * HH:MM:SS and the six decimals of its ts. */
static void ts_prefix(const char *msg, char *out, size_t size)
{
    const char *ts = strstr(msg, "\"ts\":");
    assert_non_null(ts);
    ts += 5;
    time_t secs = (time_t)strtoll(ts, NULL, 10);
    const char *dot = strchr(ts, '.');
    assert_non_null(dot);
    struct tm tm;
    char hms[16];
    localtime_r(&secs, &tm);
    strftime(hms, sizeof hms, "%H:%M:%S", &tm);
    snprintf(out, size, "%s.%.6s", hms, dot + 1);
}

static json_object *field(json_object *o, const char *key)
{
    json_object *v = NULL;
    if (!json_object_object_get_ex(o, key, &v))
        fail_msg("no key %s in %s", key, json_object_to_json_string(o));
    return v;
}

/* ---- events tail ------------------------------------------------------------- */

static void test_tail_json_prints_exactly(void **state)
{
    if (!*state)
        skip();
    fixture *f = *state;
    cli_proc p;
    start_tail(f, &p, ARGS("events", "tail", "--json", "--count", "3", "--timeout", "20"));
    mtr_sub *sub = mtr_subscribe(&f->redis, CHANNEL);
    assert_non_null(sub);

    mae_publisher *pub = open_publisher(f->redis.url);
    mae_publish_email_synced(pub, 53675, "page-abc", MAE_SOURCE_NEW_WATCHER);
    mae_publish_outbox_enqueued(pub, 53675, 17, "flag", "notion", MAE_SOURCE_CLI);
    mae_publish_llm_gave_up(pub, 53675, 5, "upstream 529: overloaded \xE2\x80\x94 r\xC3\xA9sum\xC3\xA9");
    assert_int_equal(mae_publisher_close(pub, 5000), MAE_OK);

    assert_int_equal(cli_wait(&p, 20000), 0);
    assert_int_equal(mtr_sub_wait(sub, 3, 5000), 3);
    char expected[4096] = "";
    for (size_t i = 0; i < 3; i++) {
        strcat(expected, mtr_sub_message(sub, i));
        strcat(expected, "\n");
    }
    assert_string_equal(p.out, expected);
    assert_string_equal(p.err, "");
    mtr_sub_close(sub);
    cli_free(&p);
}

static void test_tail_readable_and_filtered(void **state)
{
    if (!*state)
        skip();
    fixture *f = *state;
    cli_proc p;
    char ts[64], line[512], expected[1024];
    start_tail(f, &p, ARGS("events", "tail", "--type", "outbox.", "--count", "2",
                           "--timeout", "20"));
    mtr_sub *sub = mtr_subscribe(&f->redis, CHANNEL);

    mae_publisher *pub = open_publisher(f->redis.url);
    mae_publish_email_synced(pub, 53675, "page-abc", MAE_SOURCE_NEW_WATCHER);
    mae_publish_outbox_enqueued(pub, 53675, 17, "flag", "notion", MAE_SOURCE_CLI);
    mae_publish_llm_success(pub, 53675, "claude-haiku", 100, 20, 900);
    mae_publish_outbox_failed(pub, 53675, 17, 2, "HTTP 502: bad gateway", 1716096300.5);
    assert_int_equal(mae_publisher_close(pub, 5000), MAE_OK);

    assert_int_equal(cli_wait(&p, 20000), 0);
    assert_int_equal(mtr_sub_wait(sub, 4, 5000), 4);
    expected[0] = '\0';
    ts_prefix(mtr_sub_message(sub, 1), ts, sizeof ts);
    snprintf(line, sizeof line,
             "%s outbox.enqueued #53675 outbox outbox_id=17 op_type=flag target=notion "
             "source=cli\n", ts);
    strcat(expected, line);
    /* A string with spaces is quoted; numbers are printed as published. */
    json_object *ev = json_tokener_parse(mtr_sub_message(sub, 3));
    json_object *next = field(field(ev, "data"), "next_retry_at");
    ts_prefix(mtr_sub_message(sub, 3), ts, sizeof ts);
    snprintf(line, sizeof line,
             "%s outbox.failed #53675 outbox outbox_id=17 attempts=2 "
             "last_error=\"HTTP 502: bad gateway\" next_retry_at=%s\n",
             ts, json_object_to_json_string(next));
    json_object_put(ev);
    strcat(expected, line);
    assert_string_equal(p.out, expected);
    mtr_sub_close(sub);
    cli_free(&p);

    /* The readable line of the example. */
    start_tail(f, &p, ARGS("events", "tail", "--count", "1", "--timeout", "20",
                           "--type", "email."));
    sub = mtr_subscribe(&f->redis, CHANNEL);
    pub = open_publisher(f->redis.url);
    mae_publish_llm_success(pub, 53675, "claude-haiku", 100, 20, 900);
    mae_publish_email_synced(pub, 53675, "page-abc", MAE_SOURCE_NEW_WATCHER);
    assert_int_equal(mae_publisher_close(pub, 5000), MAE_OK);
    assert_int_equal(cli_wait(&p, 20000), 0);
    assert_int_equal(mtr_sub_wait(sub, 2, 5000), 2);
    ts_prefix(mtr_sub_message(sub, 1), ts, sizeof ts);
    snprintf(expected, sizeof expected, "%s email.synced #53675 new_watcher notion_page_id=page-abc\n",
             ts);
    assert_string_equal(p.out, expected);
    mtr_sub_close(sub);
    cli_free(&p);
}

static void test_tail_other_channel(void **state)
{
    if (!*state)
        skip();
    fixture *f = *state;
    cli_proc p;
    const char *env[] = {f->redis_env, "MAILAGENT_CHANNEL=elsewhere", NULL};
    cli_start(&p, env, ARGS("events", "tail", "--json", "--count", "1", "--timeout", "20",
                            "--channel", "custom:ch"));
    wait_subscribers(f, "custom:ch", 1, 10000);
    assert_int_equal(numsub(f, "elsewhere"), 0);
    mae_publisher_config cfg;
    mae_publisher *pub = NULL;
    mae_publisher_config_init(&cfg);
    cfg.redis_url = f->redis.url;
    cfg.channel = "custom:ch";
    assert_int_equal(mae_publisher_open(&cfg, &pub), MAE_OK);
    mae_publish_outbox_done(pub, 101, 3);
    assert_int_equal(mae_publisher_close(pub, 5000), MAE_OK);
    assert_int_equal(cli_wait(&p, 20000), 0);
    assert_non_null(strstr(p.out, "\"event_type\":\"outbox.done\""));
    assert_int_equal(cli_lines(p.out), 1);
    cli_free(&p);
}

static void test_tail_survives_restart(void **state)
{
    if (!*state)
        skip();
    fixture *f = *state;
    cli_proc p;
    start_tail(f, &p, ARGS("events", "tail", "--json", "--count", "2", "--timeout", "60"));

    mae_publisher *pub = open_publisher(f->redis.url);
    mae_publish_outbox_done(pub, 101, 1);
    assert_int_equal(mae_publisher_close(pub, 5000), MAE_OK);
    /* Wait for the first line, so it is not lost with the server. */
    double end = cli_now() + 10;
    while (cli_lines(p.out) < 1 && cli_now() < end)
        cli_pump(&p, 100);
    assert_int_equal(cli_lines(p.out), 1);

    mtr_kill(&f->redis);
    tu_sleep_ms(300);
    assert_int_equal(mtr_restart(&f->redis), 0);
    wait_subscribers(f, CHANNEL, 1, 20000);

    pub = open_publisher(f->redis.url);
    mae_publish_outbox_done(pub, 101, 2);
    assert_int_equal(mae_publisher_close(pub, 5000), MAE_OK);
    assert_int_equal(cli_wait(&p, 20000), 0);
    assert_int_equal(cli_lines(p.out), 2);
    assert_non_null(strstr(p.out, "\"outbox_id\":1"));
    assert_non_null(strstr(p.out, "\"outbox_id\":2"));
    /* One line when the connection went, one when it came back. */
    assert_int_equal(cli_lines(p.err), 2);
    assert_non_null(strstr(p.err, "mailagent: lost the connection to Redis"));
    assert_non_null(strstr(p.err, "\nmailagent: reconnected to Redis"));
    cli_free(&p);
}

static void test_tail_stops_on_signals(void **state)
{
    if (!*state)
        skip();
    fixture *f = *state;
    const int sigs[] = {SIGTERM, SIGINT};
    for (size_t i = 0; i < 2; i++) {
        cli_proc p;
        start_tail(f, &p, ARGS("events", "tail"));
        double t0 = cli_now();
        kill(p.pid, sigs[i]);
        assert_int_equal(cli_wait(&p, 5000), 0);
        assert_true(cli_now() - t0 < 2.0);
        assert_string_equal(p.err, "");
        cli_free(&p);
        /* Gone from the channel. */
        double end = cli_now() + 5;
        while (numsub(f, CHANNEL) != 0 && cli_now() < end)
            tu_sleep_ms(20);
        assert_int_equal(numsub(f, CHANNEL), 0);
    }
}

/* A server on a loopback port that accepts and never answers (a hung
 * Redis, or a hung Sentinel): the listening socket, its port in *port. */
static int silent_server(int *port)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 4), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* SIGTERM or SIGINT while the tail waits for a hung server's first answer
 * (SUBSCRIBE, the stream's bounds, a Sentinel's master): it stops there,
 * exit 0 and nothing on stderr, as at any other time; it used to wait out
 * the connect timeout and then exit 1 with "cannot connect". The signal
 * is sent once the server has accepted the tail's connection, so the tail
 * is past installing its handlers and inside the connect. */
static void test_tail_stops_while_connecting(void **state)
{
    if (!*state)
        skip();
    static const struct {
        const char *scheme, *tail;
        const char *args[4];
    } cases[] = {
        {"redis", "", {NULL}},
        {"redis", "", {"--stream", "ev", "--since", "start"}},
        {"redis-sentinel", "#mymaster", {NULL}},
    };
    const int sigs[] = {SIGTERM, SIGINT};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (size_t k = 0; k < 2; k++) {
            int port, lfd = silent_server(&port);
            char url[128];
            snprintf(url, sizeof url, "%s://127.0.0.1:%d%s", cases[i].scheme, port,
                     cases[i].tail);
            const char *args[12] = {"events", "tail", "--redis", url};
            size_t n = 4;
            for (size_t j = 0; j < 4 && cases[i].args[j]; j++)
                args[n++] = cases[i].args[j];
            args[n] = NULL;
            cli_proc p;
            cli_start(&p, NULL, args);
            struct pollfd pfd = {.fd = lfd, .events = POLLIN};
            assert_int_equal(poll(&pfd, 1, 20000), 1);
            int conn = accept(lfd, NULL, NULL);
            assert_true(conn >= 0);
            kill(p.pid, sigs[k]);
            int rc = cli_wait(&p, 20000);
            if (rc != 0 || p.err[0])
                fail_msg("%s (signal %d): exit %d, stderr \"%s\"", url, sigs[k], rc, p.err);
            cli_free(&p);
            close(conn);
            close(lfd);
        }
    }
}

static void test_tail_timeout_and_unreachable(void **state)
{
    if (!*state)
        skip();
    fixture *f = *state;
    cli_proc p;
    const char *env[] = {f->redis_env, NULL};
    double t0 = cli_now();
    assert_int_equal(cli_run(&p, env, ARGS("events", "tail", "--timeout", "0.5")), 0);
    double took = cli_now() - t0;
    assert_true(took >= 0.45 && took < 3.0);
    assert_string_equal(p.out, "");
    assert_string_equal(p.err, "");
    cli_free(&p);

    /* Nothing listens on the port any more: one line, exit 1. */
    mtr_stop(&f->redis);
    cli_run(&p, env, ARGS("events", "tail", "--count", "1"));
    assert_int_equal(p.status, 1);
    assert_int_equal(cli_lines(p.err), 1);
    assert_int_equal(strncmp(p.err, "mailagent: cannot connect to Redis", 34), 0);
    assert_string_equal(p.out, "");
    cli_free(&p);
}

static void test_tail_password_and_hung_server(void **state)
{
    if (!*state)
        skip();
    fixture *f = *state;
    mtr_redis locked = {0};
    cli_proc p;
    char url[160], env_url[200];
    assert_int_equal(mtr_start(&locked, "--requirepass s3cr@t"), 0);

    /* The password is sent (percent-encoded '@'), and never printed. */
    snprintf(url, sizeof url, "redis://:s3cr%%40t@127.0.0.1:%d", locked.port);
    cli_start(&p, NULL, ARGS("events", "tail", "--redis", url, "--timeout", "0.3"));
    assert_int_equal(cli_wait(&p, 10000), 0);
    assert_string_equal(p.err, "");
    cli_free(&p);

    snprintf(env_url, sizeof env_url, "MAILAGENT_REDIS_URL=redis://:wrong@127.0.0.1:%d",
             locked.port);
    const char *env[] = {env_url, NULL};
    cli_run(&p, env, ARGS("events", "tail", "--count", "1"));
    assert_int_equal(p.status, 1);
    assert_int_equal(cli_lines(p.err), 1);
    assert_non_null(strstr(p.err, "AUTH"));
    assert_null(strstr(p.err, "wrong"));
    cli_free(&p);
    mtr_cleanup(&locked);

    /* A server that accepts and never answers: one line within seconds. */
    const char *env2[] = {f->redis_env, NULL};
    mtr_pause(&f->redis);
    double t0 = cli_now();
    cli_run(&p, env2, ARGS("events", "tail"));
    mtr_resume(&f->redis);
    assert_int_equal(p.status, 1);
    assert_true(cli_now() - t0 < 5.0);
    assert_int_equal(cli_lines(p.err), 1);
    assert_non_null(strstr(p.err, "no answer"));
    cli_free(&p);
}

/* The hello with an ACL user (AUTH user password, three words) and a
 * database: the tail reads the stream of the URL's database, and a wrong
 * password is refused by name without being printed. */
static void test_tail_acl_user_and_database(void **state)
{
    if (!*state)
        skip();
    mtr_redis acl = {0};
    cli_proc p;
    char url[160];
    /* The default user has no password, so a two-word AUTH would be
     * refused: only AUTH alice pw gets in. */
    assert_int_equal(mtr_start(&acl, "--user alice on >pw ~* &* +@all"), 0);
    /* The same key in databases 0 and 2, different entries. */
    assert_int_equal(mtr_command(&acl, "XADD ev 5-1 event {\"event_type\":\"in.db2\"}"), 0);
    assert_int_equal(mtr_command(&acl, "MOVE ev 2"), 0);
    assert_int_equal(mtr_command(&acl, "XADD ev 7-1 event {\"event_type\":\"in.db0\"}"), 0);

    snprintf(url, sizeof url, "redis://alice:pw@127.0.0.1:%d/2", acl.port);
    cli_run(&p, NULL, ARGS("events", "tail", "--redis", url, "--stream", "ev", "--since",
                           "start", "--count", "1", "--json", "--timeout", "10"));
    assert_int_equal(p.status, 0);
    assert_string_equal(p.err, "");
    assert_string_equal(p.out, "{\"id\":\"5-1\",\"event\":{\"event_type\":\"in.db2\"}}\n");
    cli_free(&p);

    snprintf(url, sizeof url, "redis://alice:nope@127.0.0.1:%d/2", acl.port);
    cli_run(&p, NULL, ARGS("events", "tail", "--redis", url, "--count", "1"));
    assert_int_equal(p.status, 1);
    assert_int_equal(cli_lines(p.err), 1);
    assert_non_null(strstr(p.err, "AUTH refused: WRONGPASS"));
    assert_null(strstr(p.err, "nope"));
    cli_free(&p);

    snprintf(url, sizeof url, "redis://alice:pw@127.0.0.1:%d/99", acl.port);
    cli_run(&p, NULL, ARGS("events", "tail", "--redis", url, "--count", "1"));
    assert_int_equal(p.status, 1);
    assert_non_null(strstr(p.err, "SELECT refused: ERR DB index is out of range"));
    cli_free(&p);
    mtr_cleanup(&acl);
}

/* ---- email flag -------------------------------------------------------------- */

static void test_flag_publishes(void **state)
{
    if (!*state)
        skip();
    fixture *f = *state;
    cli_proc p;
    const char *env[] = {f->db_env, f->redis_env, NULL};
    mtr_sub *sub = mtr_subscribe(&f->redis, CHANNEL);
    assert_int_equal(cli_run(&p, env, ARGS("email", "flag", "101", "--target", "notion")), 0);
    assert_string_equal(p.err, "");
    cli_free(&p);
    assert_int_equal(mtr_sub_wait(sub, 1, 5000), 1);

    mae_db *db = open_db(f->db, NULL);
    mae_outbox_list *l = NULL;
    assert_int_equal(mae_outbox_list_for_email(db, 101, &l), MAE_OK);
    assert_int_equal(l->count, 1);
    int64_t oid = l->rows[0].outbox_id;
    mae_outbox_list_free(l);
    mae_db_close(db);

    json_object *ev = json_tokener_parse(mtr_sub_message(sub, 0));
    assert_non_null(ev);
    assert_string_equal(json_object_get_string(field(ev, "event_type")), "outbox.enqueued");
    assert_string_equal(json_object_get_string(field(ev, "source")), "outbox");
    assert_int_equal(json_object_get_int64(field(ev, "internal_id")), 101);
    json_object *data = field(ev, "data");
    assert_int_equal(json_object_get_int64(field(data, "outbox_id")), oid);
    assert_string_equal(json_object_get_string(field(data, "op_type")), "flag");
    assert_string_equal(json_object_get_string(field(data, "target")), "notion");
    assert_string_equal(json_object_get_string(field(data, "source")), "cli");
    json_object_put(ev);

    /* Merged into the pending intent: no new event. Both: one for mailapp. */
    assert_int_equal(cli_run(&p, env, ARGS("email", "flag", "101")), 0);
    assert_string_equal(p.err, "");
    cli_free(&p);
    assert_int_equal(mtr_sub_wait(sub, 3, 1500), 2);
    ev = json_tokener_parse(mtr_sub_message(sub, 1));
    assert_string_equal(json_object_get_string(field(field(ev, "data"), "target")), "mailapp");
    json_object_put(ev);
    mtr_sub_close(sub);
}

static void test_flag_with_redis_down(void **state)
{
    if (!*state)
        skip();
    fixture *f = *state;
    cli_proc p;
    const char *env[] = {f->db_env, f->redis_env, NULL};
    mtr_stop(&f->redis);
    double t0 = cli_now();
    assert_int_equal(cli_run(&p, env, ARGS("email", "flag", "101", "--target", "mailapp")), 0);
    assert_true(cli_now() - t0 < 6.0);
    assert_int_equal(cli_lines(p.err), 1);
    assert_non_null(strstr(p.err, "could not be delivered"));
    assert_non_null(strstr(p.out, "enqueued"));
    cli_free(&p);

    mae_db *db = open_db(f->db, NULL);
    mae_outbox_list *l = NULL;
    assert_int_equal(mae_outbox_list_for_email(db, 101, &l), MAE_OK);
    assert_int_equal(l->count, 1);
    assert_string_equal(l->rows[0].target, "mailapp");
    assert_string_equal(l->rows[0].source, "cli");
    mae_outbox_list_free(l);
    mae_db_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_tail_json_prints_exactly),
        T(test_tail_readable_and_filtered),
        T(test_tail_other_channel),
        T(test_tail_survives_restart),
        T(test_tail_stops_on_signals),
        T(test_tail_stops_while_connecting),
        T(test_tail_timeout_and_unreachable),
        T(test_tail_password_and_hung_server),
        T(test_tail_acl_user_and_database),
        T(test_flag_publishes),
        T(test_flag_with_redis_down),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
