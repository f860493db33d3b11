/* Integration tests of `mailagent events tail --relay URL` against a real
 * relay (`mailagent events serve`) and redis-server on free loopback ports:
 * events arrive in order with their ids, in the format `events tail`
 * prints; a relay restarted mid-stream is resumed with Last-Event-ID and
 * every event is printed once; --since starts from an id; a reset is said
 * on stderr; the relay's credentials, from the environment or a flag; a
 * pub/sub relay's events print as the channel's do. */
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "harness.h"
#include "redis_harness.h"
#include "testutil.h"

#include "stream/id.h"
#include "tests/cli/cli_run.h"

#define KEY "mailagent:events-log"

typedef struct fixture {
    mtr_redis redis;
    rh_relay relay;
    int port;
    char url[64];
    char log[512];
} fixture;

/* A port nothing listens on now, for a relay that must come back on it. */
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

static void relay_start(fixture *f, const char *const *extra_args, const char *const *env)
{
    char listen[32];
    const char *args[12] = {"--listen", listen};
    int n = 2;
    snprintf(listen, sizeof listen, "127.0.0.1:%d", f->port);
    for (const char *const *a = extra_args; a && *a && n < 11; a++)
        args[n++] = *a;
    args[n] = NULL;
    if (rh_relay_start(&f->relay, f->redis.url, args, env, f->log) != 0)
        fail_msg("the relay did not start; its log:\n%s", rh_slurp(f->log));
    assert_int_equal(f->relay.port, f->port);
    /* Its Redis link up: a client that comes before it has no position to
     * be decided against (the relay then decides when the link is up, and
     * what was appended meanwhile may count as live). */
    double until = rh_now() + 10;
    while (!rh_log_has(&f->relay, "redis: reading the stream") &&
           !rh_log_has(&f->relay, "redis: subscribed") && rh_now() < until)
        rh_sleep_ms(10);
}

static int setup(void **state)
{
    if (!mtr_available())
        tu_missing_prerequisite("redis-server not found");
    fixture *f = calloc(1, sizeof *f);
    char dir[512];
    assert_non_null(f);
    assert_int_equal(mtr_start(&f->redis, NULL), 0);
    f->port = free_port();
    snprintf(f->url, sizeof f->url, "http://127.0.0.1:%d", f->port);
    snprintf(f->log, sizeof f->log, "%s/relay.log", rh_out_dir("relay_tail", dir, sizeof dir));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f) {
        if (f->relay.pid > 0)
            rh_relay_stop(&f->relay, SIGKILL, 5000, NULL);
        mtr_cleanup(&f->redis);
        free(f);
    }
    return 0;
}

static void event_line(char *buf, size_t size, long n)
{
    snprintf(buf, size,
             "{\"event_type\":\"email.synced\",\"ts\":1716096000.000000,\"internal_id\":%ld,"
             "\"data\":{\"n\":%ld},\"source\":\"new_watcher\"}",
             n, n);
}

/* XADD of event n, as the publisher's stream mode writes it; its id in id. */
static void xadd(fixture *f, long n, char *id)
{
    char line[256];
    event_line(line, sizeof line, n);
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", f->redis.port, tv);
    assert_true(c && !c->err);
    redisReply *r = redisCommand(c, "XADD %s * event %s", KEY, line);
    assert_true(r && r->type == REDIS_REPLY_STRING);
    snprintf(id, MAE__STREAM_ID_BUFSIZE, "%s", r->str);
    freeReplyObject(r);
    redisFree(c);
}

static void wait_lines(cli_proc *p, size_t n, int timeout_ms)
{
    double end = cli_now() + timeout_ms / 1000.0;
    while (cli_lines(p->out) < n && cli_now() < end)
        cli_pump(p, 50);
    if (cli_lines(p->out) < n)
        fail_msg("tail printed %zu lines, want %zu; stdout:\n%s\nstderr:\n%s", cli_lines(p->out),
                 n, p->out, p->err);
}

/* The --json output for events from..to with their ids. */
static void want_json(char *buf, size_t size, char ids[][MAE__STREAM_ID_BUFSIZE], long from,
                      long to)
{
    size_t off = 0;
    buf[0] = '\0';
    for (long i = from; i <= to; i++) {
        char line[256];
        event_line(line, sizeof line, i);
        off += (size_t)snprintf(buf + off, size - off, "{\"id\":\"%s\",\"event\":%s}\n", ids[i],
                                line);
    }
}

static void test_in_order_and_as_tail_prints(void **state)
{
    fixture *f = *state;
    char ids[6][MAE__STREAM_ID_BUFSIZE], want[4096];
    relay_start(f, ARGS("--stream", KEY), NULL);
    cli_proc p;
    cli_start(&p, NULL, ARGS("events", "tail", "--relay", f->url, "--json", "--count", "4",
                             "--timeout", "30"));
    rh_wait_clients(f->port, NULL, 1, 10000);
    for (long i = 0; i < 4; i++)
        xadd(f, i, ids[i]);
    assert_int_equal(cli_wait(&p, 20000), 0);
    want_json(want, sizeof want, ids, 0, 3);
    assert_string_equal(p.out, want);
    assert_string_equal(p.err, "");
    cli_free(&p);

    /* Without --json: the lines `events tail --stream` prints, id first. */
    cli_proc q, s;
    assert_int_equal(cli_run(&q, NULL, ARGS("events", "tail", "--relay", f->url, "--since",
                                            ids[0], "--count", "3", "--timeout", "20")),
                     0);
    char redis_env[128], stream_env[128];
    snprintf(redis_env, sizeof redis_env, "MAILAGENT_REDIS_URL=%s", f->redis.url);
    snprintf(stream_env, sizeof stream_env, "MAILAGENT_STREAM=%s", KEY);
    const char *env[] = {redis_env, stream_env, NULL};
    assert_int_equal(cli_run(&s, env, ARGS("events", "tail", "--since", ids[0], "--count", "3",
                                           "--timeout", "20")),
                     0);
    assert_string_equal(q.out, s.out);
    assert_int_equal(cli_lines(q.out), 3);
    assert_non_null(strstr(q.out, ids[1]));
    assert_null(strstr(q.out, ids[0]));
    cli_free(&q);
    cli_free(&s);
}

static void test_relay_restarted_mid_stream(void **state)
{
    fixture *f = *state;
    enum { N = 12 };
    char ids[N][MAE__STREAM_ID_BUFSIZE], want[8192];
    relay_start(f, ARGS("--stream", KEY), NULL);
    cli_proc p;
    cli_start(&p, NULL, ARGS("events", "tail", "--relay", f->url, "--json", "--count", "12",
                             "--timeout", "50"));
    rh_wait_clients(f->port, NULL, 1, 10000);
    for (long i = 0; i < 4; i++)
        xadd(f, i, ids[i]);
    wait_lines(&p, 4, 10000);
    /* The relay goes away; events keep coming to the stream meanwhile. */
    assert_int_equal(rh_relay_stop(&f->relay, SIGKILL, 5000, NULL) == -1 ||
                         f->relay.pid == 0,
                     1);
    for (long i = 4; i < 8; i++)
        xadd(f, i, ids[i]);
    tu_sleep_ms(300);
    relay_start(f, ARGS("--stream", KEY), NULL);
    for (long i = 8; i < N; i++)
        xadd(f, i, ids[i]);
    assert_int_equal(cli_wait(&p, 40000), 0);
    want_json(want, sizeof want, ids, 0, N - 1);
    assert_string_equal(p.out, want);
    assert_non_null(strstr(p.err, "lost the relay stream"));
    assert_non_null(strstr(p.err, "reconnected to the relay"));
    assert_non_null(strstr(p.err, ids[3]));   /* resumed after the last id printed */
    assert_null(strstr(p.err, "reset"));
    cli_free(&p);
}

static void test_reset_on_stderr(void **state)
{
    fixture *f = *state;
    char id[MAE__STREAM_ID_BUFSIZE];
    relay_start(f, ARGS("--stream", KEY), NULL);
    xadd(f, 0, id);
    cli_proc p;
    /* An id newer than the stream: the relay says unknown_id. */
    assert_int_equal(cli_run(&p, NULL, ARGS("events", "tail", "--relay", f->url, "--since",
                                            "99999999999999-0", "--timeout", "1")),
                     0);
    assert_string_equal(p.out, "");
    assert_non_null(strstr(p.err, "reset from the relay: {\"reason\":\"unknown_id\"}"));
    cli_free(&p);
    /* A malformed one is refused before any connection. */
    assert_int_equal(cli_run(&p, NULL, ARGS("events", "tail", "--relay", f->url, "--since",
                                            "x")),
                     2);
    assert_non_null(strstr(p.err, "--since wants a stream id"));
    cli_free(&p);
}

static void test_credentials(void **state)
{
    fixture *f = *state;
    char id[MAE__STREAM_ID_BUFSIZE];
    const char *renv[] = {"WEBHOOK_SECRET=s3cret", "MAILAGENT_LOCAL_API_TOKEN=l0cal", NULL};
    relay_start(f, ARGS("--stream", KEY), renv);
    xadd(f, 0, id);
    xadd(f, 1, id);
    cli_proc p;
    /* None: refused, said, exit 1, no retrying for ever. */
    assert_int_equal(cli_run(&p, NULL, ARGS("events", "tail", "--relay", f->url, "--timeout",
                                            "10")),
                     1);
    assert_non_null(strstr(p.err, "HTTP 401"));
    assert_non_null(strstr(p.err, "WEBHOOK_SECRET"));
    cli_free(&p);
    /* Each form admits: the secret from the environment, the local token
     * from the environment or its flag. */
    const char *e1[] = {"WEBHOOK_SECRET=s3cret", NULL};
    const char *e2[] = {"MAILAGENT_LOCAL_API_TOKEN=l0cal", NULL};
    const char *const *envs[] = {e1, e2, NULL};
    for (int i = 0; i < 3; i++) {
        const char *const *args =
            i < 2 ? ARGS("events", "tail", "--relay", f->url, "--since", "0-1", "--count", "1",
                         "--timeout", "10")
                  : ARGS("events", "tail", "--relay", f->url, "--local-token", "l0cal",
                         "--since", "0-1", "--count", "1", "--timeout", "10");
        assert_int_equal(cli_run(&p, envs[i], args), 0);
        if (cli_lines(p.out) != 1)
            fail_msg("form %d: stdout '%s' stderr '%s'", i, p.out, p.err);
        cli_free(&p);
    }
    /* A wrong one is refused like none. */
    assert_int_equal(cli_run(&p, NULL, ARGS("events", "tail", "--relay", f->url, "--secret",
                                            "nope", "--timeout", "10")),
                     1);
    assert_non_null(strstr(p.err, "HTTP 401"));
    cli_free(&p);
}

static void test_pubsub_relay(void **state)
{
    fixture *f = *state;
    char line[256], ch[64], want[1024];
    snprintf(ch, sizeof ch, "mae-tail-relay-%d", (int)getpid());
    relay_start(f, ARGS("--channel", ch), NULL);
    cli_proc p;
    cli_start(&p, NULL, ARGS("events", "tail", "--relay", f->url, "--json", "--count", "2",
                             "--timeout", "30"));
    rh_wait_clients(f->port, NULL, 1, 10000);
    want[0] = '\0';
    for (long i = 0; i < 2; i++) {
        event_line(line, sizeof line, i);
        assert_int_equal(mtr_command(&f->redis, "PUBLISH %s %s", ch, line), 0);
        strcat(want, line);
        strcat(want, "\n");
    }
    assert_int_equal(cli_wait(&p, 20000), 0);
    /* No ids in pub/sub: the events byte for byte, as `events tail --json`. */
    assert_string_equal(p.out, want);
    cli_free(&p);
}

static void test_nothing_listening(void **state)
{
    fixture *f = *state;
    cli_proc p;
    assert_int_equal(cli_run(&p, NULL, ARGS("events", "tail", "--relay", f->url)), 1);
    assert_non_null(strstr(p.err, "cannot connect to the relay"));
    cli_free(&p);
    assert_int_equal(cli_run(&p, NULL, ARGS("events", "tail", "--relay", "https://x")), 2);
    assert_non_null(strstr(p.err, "invalid relay URL"));
    cli_free(&p);
}

/* ---- the hub ------------------------------------------------------------ */

static void hub_start(fixture *f)
{
    char listen[32];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", f->port);
    if (rh_hub_start(&f->relay, ARGS("--listen", listen), NULL, f->log) != 0)
        fail_msg("the hub did not start; its log:\n%s", rh_slurp(f->log));
    assert_int_equal(f->relay.port, f->port);
}

/* POSTs events from..to to the hub as one NDJSON body; asserts a 200. */
static void hub_post(fixture *f, long from, long to)
{
    char body[4096] = "", line[256];
    for (long i = from; i <= to; i++) {
        event_line(line, sizeof line, i);
        strcat(body, line);
        strcat(body, "\n");
    }
    char *answer = rh_post(f->port, "Content-Type: application/x-ndjson\r\n", body,
                           strlen(body));
    assert_non_null(answer);
    if (!strstr(answer, " 200 "))
        fail_msg("the hub answered: %s", answer);
    free(answer);
}

/* Through the hub: every event with its id, in order; the hub killed and
 * restarted on its port mid-stream: the tail comes back with its last id,
 * which the new hub never issued, so it is told (unknown_id, on stderr)
 * and goes on live; nothing printed twice. */
static void test_through_a_restarted_hub(void **state)
{
    fixture *f = *state;
    hub_start(f);
    cli_proc p;
    cli_start(&p, NULL, ARGS("events", "tail", "--relay", f->url, "--count", "6", "--timeout",
                             "50"));
    rh_wait_clients(f->port, NULL, 1, 10000);
    hub_post(f, 0, 2);
    wait_lines(&p, 3, 10000);
    rh_relay_stop(&f->relay, SIGKILL, 5000, NULL);
    hub_start(f);
    rh_wait_clients(f->port, NULL, 1, 20000);
    hub_post(f, 3, 5);
    assert_int_equal(cli_wait(&p, 30000), 0);
    /* Each line: an id, then what `events tail` prints for event n. */
    const char *s = p.out;
    char prev[MAE__STREAM_ID_BUFSIZE] = "";
    for (long i = 0; i < 6; i++) {
        char want[96];
        mae__stream_id id;
        const char *sp = strchr(s, ' '), *nl = strchr(s, '\n');
        assert_non_null(sp);
        assert_non_null(nl);
        assert_int_equal(mae__stream_id_parse(s, (size_t)(sp - s), &id), MAE__STREAM_ID_OK);
        snprintf(want, sizeof want, " email.synced #%ld new_watcher n=%ld\n", i, i);
        assert_memory_equal(nl + 1 - strlen(want), want, strlen(want));
        if (i != 3 && prev[0]) {   /* within one hub's life, increasing */
            mae__stream_id a;
            assert_int_equal(mae__stream_id_parse(prev, strlen(prev), &a), MAE__STREAM_ID_OK);
            assert_true(mae__stream_id_cmp(&a, &id) < 0);
        }
        snprintf(prev, sizeof prev, "%.*s", (int)(sp - s), s);
        s = nl + 1;
    }
    assert_string_equal(s, "");
    assert_non_null(strstr(p.err, "reset from the relay: {\"reason\":\"unknown_id\"}"));
    assert_non_null(strstr(p.err, "reconnected to the relay"));
    cli_free(&p);
}

/* ---- a scripted server: one canned answer per connection ---------------- */

typedef struct scripted {
    int fd;                  /* listening */
    int port;
    const char *const *answers;
    char requests[8][1024];  /* what each connection asked */
    int served;
} scripted;

static void *serve_script(void *arg)
{
    scripted *sv = arg;
    for (int i = 0; sv->answers[i]; i++) {
        int c = accept(sv->fd, NULL, NULL);
        if (c < 0)
            break;
        size_t n = 0;
        while (n < sizeof sv->requests[0] - 1 && !strstr(sv->requests[i], "\r\n\r\n")) {
            ssize_t r = recv(c, sv->requests[i] + n, sizeof sv->requests[0] - 1 - n, 0);
            if (r <= 0)
                break;
            n += (size_t)r;
        }
        /* Sent in two parts, split mid-line, to cross the reader's reads. */
        const char *a = sv->answers[i];
        size_t len = strlen(a), half = len / 2;
        if (send(c, a, half, MSG_NOSIGNAL) == (ssize_t)half) {
            tu_sleep_ms(20);
            send(c, a + half, len - half, MSG_NOSIGNAL);
        }
        tu_sleep_ms(50);
        close(c);
        sv->served = i + 1;
    }
    return NULL;
}

static void scripted_start(scripted *sv, const char *const *answers, pthread_t *th)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    memset(sv, 0, sizeof *sv);
    sv->answers = answers;
    sv->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(sv->fd >= 0);
    assert_int_equal(bind(sv->fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(sv->fd, 8), 0);
    assert_int_equal(getsockname(sv->fd, (struct sockaddr *)&a, &len), 0);
    sv->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(th, NULL, serve_script, sv), 0);
}

#define EV(n) "{\"event_type\":\"email.new\",\"internal_id\":" #n "}"

/* The reader's side of HTTP and SSE against answers no relay of ours gives:
 * a chunked stream cut in the middle of a chunk, a 503, a sized body with
 * CRLF and CR line ends that replays an event already printed, then a 404.
 * Each event is printed once, each reconnect names the last id, the 404
 * ends the tail with status 1. */
static void test_reader_against_a_scripted_server(void **state)
{
    (void)state;
    static const char *const answers[] = {
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
        "\r\n"
        "13\r\nretry: 50\n\n: hello\n\r\n"
        "4b\r\nid: 1-1\nevent: mailagent\ndata: " EV(1) "\n\n\r\n"
        "40\r\nid: 1-9\nevent: mailagent\ndata: cut",   /* the connection ends here */
        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.0 200 OK\r\nContent-Length: 154\r\n\r\n"
        "id: 1-1\r\nevent: mailagent\r\ndata: " EV(1) "\r\n\r\n"
        "id: 1-2\revent: mailagent\rdata: " EV(2) "\r\r",
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        NULL,
    };
    scripted sv;
    pthread_t th;
    char url[64];
    scripted_start(&sv, answers, &th);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/api/events/stream", sv.port);
    cli_proc p;
    int rc = cli_run(&p, NULL, ARGS("events", "tail", "--relay", url, "--json", "--timeout",
                                    "30"));
    pthread_join(th, NULL);
    close(sv.fd);
    if (rc != 1)
        fail_msg("exit %d; stdout:\n%s\nstderr:\n%s", rc, p.out, p.err);
    assert_string_equal(p.out, "{\"id\":\"1-1\",\"event\":" EV(1) "}\n"
                               "{\"id\":\"1-2\",\"event\":" EV(2) "}\n");
    assert_int_equal(sv.served, 4);
    assert_null(strstr(sv.requests[0], "Last-Event-ID"));
    assert_non_null(strstr(sv.requests[1], "\r\nLast-Event-ID: 1-1\r\n"));
    assert_non_null(strstr(sv.requests[2], "\r\nLast-Event-ID: 1-1\r\n"));
    assert_non_null(strstr(sv.requests[3], "\r\nLast-Event-ID: 1-2\r\n"));
    assert_non_null(strstr(sv.requests[0], "GET /api/events/stream HTTP/1.1\r\n"));
    assert_non_null(strstr(p.err, "HTTP 404"));
    assert_non_null(strstr(p.err, "in the middle of the body"));
    cli_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_in_order_and_as_tail_prints, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relay_restarted_mid_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_on_stderr, setup, teardown),
        cmocka_unit_test_setup_teardown(test_credentials, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pubsub_relay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nothing_listening, setup, teardown),
        cmocka_unit_test(test_reader_against_a_scripted_server),
        cmocka_unit_test_setup_teardown(test_through_a_restarted_hub, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
