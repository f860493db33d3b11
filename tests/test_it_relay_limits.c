/* Integration tests of the relay's limits and positions, with a real
 * redis-server (issues 18 and 19): an event over --max-event-bytes goes out
 * as a "skipped" frame naming it, for every client, and never cuts or
 * stalls anyone; a frame larger than --client-buffer reaches a reader that
 * keeps up; a replay is paced per entry, so slow but steady readers
 * resuming from 0-0 are never cut; SIGHUP leaves the relay serving; in
 * stream mode a client gets its position on its first frame and resumes
 * from where it joined even when it received no event. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
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

#define CHANNEL "mailagent:events:v1"
#define BIG 1100000

static mtr_redis g_redis;
static char g_out[512];

static int setup(void **state)
{
    (void)state;
    if (!rh_have(MAE_REDIS_SERVER))
        return -1;
    rh_out_dir("test_it_relay_limits", g_out, sizeof g_out);
    return mtr_start(&g_redis, NULL);
}

static int teardown(void **state)
{
    (void)state;
    mtr_cleanup(&g_redis);
    return 0;
}

static void start(rh_relay *r, const char *tag, const char *const *args)
{
    char log[600];
    snprintf(log, sizeof log, "%s/%s.log", g_out, tag);
    assert_int_equal(rh_relay_start(r, g_redis.url, args, NULL, log), 0);
}

static void stop(rh_relay *r)
{
    assert_int_equal(rh_relay_stop(r, SIGTERM, 10000, NULL), 0);
}

/* A JSON event whose data field holds n bytes of 'a' (about n + 40 bytes). */
static char *big_event(size_t n)
{
    char *s = malloc(n + 64);
    assert_non_null(s);
    int head = snprintf(s, 64, "{\"event_type\":\"big\",\"data\":\"");
    memset(s + head, 'a', n);
    strcpy(s + head + n, "\"}");
    return s;
}

/* Issue 18 #1: an event over --max-event-bytes (1 MiB by default) cut every
 * client, fast readers included; now every client gets a skipped frame and
 * the events after it. Failed before: the fast reader was cut. */
static void test_large_event_is_skipped_not_cut(void **state)
{
    (void)state;
    rh_relay r;
    start(&r, "large-pubsub", NULL);
    rh_conn *a = rh_get(r.port, "/api/events/stream", NULL);
    rh_conn *b = rh_get(r.port, "/api/events/stream", NULL);
    rh_wait_clients(r.port, NULL, 2, 10000);
    char *ev = big_event(BIG);
    size_t len = strlen(ev);
    assert_int_equal(mtr_command(&g_redis, "PUBLISH %s %s", CHANNEL, ev), 0);
    assert_int_equal(mtr_command(&g_redis, "PUBLISH %s %s", CHANNEL, "{\"event_type\":\"after\"}"),
                     0);
    char want[160];
    snprintf(want, sizeof want,
             "event: skipped\ndata: {\"reason\":\"too_large\",\"id\":null,\"bytes\":%zu}\n\n", len);
    for (rh_conn *c = a; c; c = c == a ? b : NULL) {
        long at = rh_wait_for(c, 0, want, 10000);
        if (at < 0)
            fail_msg("no skipped frame; got %.300s (eof %d)", c->buf, c->eof);
        assert_true(rh_wait_for(c, (size_t)at, "data: {\"event_type\":\"after\"}\n\n", 5000) > at);
        assert_false(c->eof);
        assert_null(strstr(c->buf, "aaaaaaaaaa"));
    }
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_events_skipped_total"), 1);
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_clients_cut_slow_total"), 0);
    assert_true(rh_log_has(&r, "skipped"));
    free(ev);
    rh_close(a);
    rh_close(b);
    stop(&r);
}

/* Issue 18 #1, the other half: a frame larger than --client-buffer (but
 * allowed by --max-event-bytes) reaches a reader that keeps up; the cut is
 * judged on what it leaves unread over time. Failed before: cut at once. */
static void test_frame_over_client_buffer_reaches_a_fast_reader(void **state)
{
    (void)state;
    rh_relay r;
    const char *args[] = {"--client-buffer", "65536", "--max-event-bytes", "2000000", NULL};
    start(&r, "large-fast", args);
    rh_conn *a = rh_get(r.port, "/api/events/stream", NULL);
    rh_wait_clients(r.port, NULL, 1, 10000);
    char *ev = big_event(BIG);
    assert_int_equal(mtr_command(&g_redis, "PUBLISH %s %s", CHANNEL, ev), 0);
    assert_int_equal(mtr_command(&g_redis, "PUBLISH %s %s", CHANNEL, "{\"event_type\":\"after\"}"),
                     0);
    long at = rh_wait_for(a, 0, "aaaa\"}\n\n", 10000);
    if (at < 0)
        fail_msg("the large frame did not arrive whole (eof %d, %zu bytes)", a->eof, a->len);
    assert_true(rh_wait_for(a, (size_t)at, "data: {\"event_type\":\"after\"}\n\n", 5000) > at);
    rh_sleep_ms(1500);   /* past a limits check or two */
    rh_pump(a);
    assert_false(a->eof);
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_clients_cut_slow_total"), 0);
    free(ev);
    rh_close(a);
    stop(&r);
}

/* Stream mode: the entry over the limit is named by its id, live and in a
 * replay, and a client resuming from before it gets past it. */
static void test_large_entry_skipped_in_stream_mode(void **state)
{
    (void)state;
    rh_relay r;
    const char *args[] = {"--stream", "ev:large", NULL};
    start(&r, "large-stream", args);
    char *ev = big_event(BIG);
    assert_int_equal(mtr_command(&g_redis, "XADD ev:large 5-0 event %s", ev), 0);
    assert_int_equal(mtr_command(&g_redis, "XADD ev:large 6-0 event %s", "{\"n\":6}"), 0);
    rh_conn *c = rh_get(r.port, "/api/events/stream", "Last-Event-ID: 0-0\r\n");
    char want[200];
    snprintf(want, sizeof want,
             "id: 5-0\nevent: skipped\ndata: {\"reason\":\"too_large\",\"id\":\"5-0\","
             "\"bytes\":%zu}\n\n",
             strlen(ev));
    long at = rh_wait_for(c, 0, want, 10000);
    if (at < 0)
        fail_msg("no skipped frame for 5-0: %.300s", c->buf);
    assert_true(rh_wait_for(c, (size_t)at, "id: 6-0\nevent: mailagent\ndata: {\"n\":6}\n\n", 5000) >
                at);
    assert_false(c->eof);
    free(ev);
    rh_close(c);
    stop(&r);
}

/* Issue 18 #2: 600 entries of 10 KB, --client-buffer 65536, readers that
 * read slowly but steadily from Last-Event-ID 0-0: the replay is paced per
 * entry against each client's unread bytes, so none is cut. Failed before
 * (paced per 500-entry page): cut mid-replay. */
static void test_replay_paced_per_entry(void **state)
{
    (void)state;
    enum { READERS = 8, ENTRIES = 600 };
    char *ten = big_event(10000);
    for (int i = 1; i <= ENTRIES; i++)
        assert_int_equal(mtr_command(&g_redis, "XADD ev:pace %d-0 event %s", i, ten), 0);
    free(ten);
    rh_relay r;
    const char *args[] = {"--stream", "ev:pace", "--client-buffer", "65536", "--quiet", NULL};
    start(&r, "pace", args);
    rh_conn *c[READERS];
    for (int i = 0; i < READERS; i++) {
        c[i] = rh_connect(r.port, 16384);
        assert_non_null(c[i]);
        static const char req[] = "GET /api/events/stream HTTP/1.1\r\nHost: x\r\n"
                                  "Last-Event-ID: 0-0\r\n\r\n";
        assert_true(rh_send(c[i], req, sizeof req - 1));
    }
    /* Slow but steady: a small receive buffer, read every 5 ms. */
    char last[32];
    snprintf(last, sizeof last, "id: %d-0\n", ENTRIES);
    double end = rh_now() + 60;
    int done = 0;
    while (done < READERS && rh_now() < end) {
        done = 0;
        for (int i = 0; i < READERS; i++) {
            rh_pump(c[i]);
            assert_false(c[i]->eof);
            done += strstr(c[i]->buf, last) != NULL;
        }
        rh_sleep_ms(5);
    }
    assert_int_equal(done, READERS);
    for (int i = 0; i < READERS; i++) {
        assert_int_equal(rh_count(c[i], "event: mailagent\n"), ENTRIES);
        rh_close(c[i]);
    }
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_clients_cut_slow_total"), 0);
    stop(&r);
}

/* Issue 18 #4: SIGHUP ended the relay (status 129) with no final chunk;
 * now it is logged and ignored, and the streams go on. */
static void test_sighup_keeps_serving(void **state)
{
    (void)state;
    rh_relay r;
    start(&r, "sighup", NULL);
    rh_conn *a = rh_get(r.port, "/api/events/stream", NULL);
    rh_wait_clients(r.port, NULL, 1, 10000);
    assert_int_equal(kill(r.pid, SIGHUP), 0);
    rh_sleep_ms(300);
    assert_true(rh_running(r.pid));
    assert_int_equal(mtr_command(&g_redis, "PUBLISH %s %s", CHANNEL, "{\"event_type\":\"hup\"}"),
                     0);
    assert_true(rh_wait_for(a, 0, "data: {\"event_type\":\"hup\"}\n\n", 5000) > 0);
    assert_false(a->eof);
    assert_true(rh_log_has(&r, "SIGHUP"));
    rh_close(a);
    stop(&r);
}

/* Issue 19: in stream mode a client's first frame carries its position (an
 * id with no data, which EventSource keeps), so a client that received no
 * event yet resumes from where it joined. Failed before: no id, and a
 * reconnect without one went live from now, missing what came meanwhile. */
static void test_position_at_connect(void **state)
{
    (void)state;
    rh_relay r;
    const char *args[] = {"--stream", "ev:pos", NULL};
    assert_int_equal(mtr_command(&g_redis, "XADD ev:pos 7-0 event %s", "{\"n\":7}"), 0);
    start(&r, "position", args);
    /* Its first frame, or the frame that follows once the relay has read
     * the stream's bounds (a client may come before). */
    rh_conn *a = rh_get(r.port, "/api/events/stream", NULL);
    long at = rh_wait_for(a, 0, "\r\n\r\n", 5000);
    assert_true(at > 0);
    assert_true(rh_wait_for(a, (size_t)at, "id: 7-0\n\n", 5000) > at);
    assert_int_equal(rh_count(a, "event: "), 0);
    rh_close(a);
    rh_wait_clients(r.port, NULL, 0, 10000);
    /* Published while it was away. */
    assert_int_equal(mtr_command(&g_redis, "XADD ev:pos 8-0 event %s", "{\"n\":8}"), 0);
    assert_int_equal(mtr_command(&g_redis, "XADD ev:pos 9-0 event %s", "{\"n\":9}"), 0);
    rh_conn *b = rh_get(r.port, "/api/events/stream", "Last-Event-ID: 7-0\r\n");
    assert_true(rh_wait_for(b, 0, "id: 9-0\nevent: mailagent\ndata: {\"n\":9}\n\n", 5000) > 0);
    assert_non_null(strstr(b->buf, "id: 8-0\nevent: mailagent\ndata: {\"n\":8}\n\n"));
    assert_null(strstr(b->buf, "\"n\":7"));
    rh_close(b);
    stop(&r);
}

/* A client that connects before the relay has read the stream (Redis hung
 * since the relay started) gets no id on its first frame, then its
 * position, as an id with no data, once the relay has read the bounds, and
 * before any event; so it too resumes from where it joined. Failed before:
 * no id until its first event, and a client that got none reconnected
 * without one, missing what came meanwhile. */
static void test_position_once_positioned(void **state)
{
    (void)state;
    mtr_redis red;
    assert_int_equal(mtr_start(&red, NULL), 0);
    assert_int_equal(mtr_command(&red, "XADD ev:later 5-0 event %s", "{\"n\":5}"), 0);
    mtr_pause(&red);
    rh_relay r;
    const char *args[] = {"--stream", "ev:later", NULL};
    char log[600];
    snprintf(log, sizeof log, "%s/position-later.log", g_out);
    assert_int_equal(rh_relay_start(&r, red.url, args, NULL, log), 0);
    rh_conn *a = rh_get(r.port, "/api/events/stream", NULL);
    long at = rh_wait_for(a, 0, "\r\n\r\nd\r\nretry: 3000\n\n\r\n", 5000);
    if (at < 0)
        fail_msg("first frame: %s", a->buf);
    rh_wait_clients(r.port, NULL, 1, 10000);
    rh_pump(a);
    assert_null(strstr(a->buf, "id: "));

    mtr_resume(&red);
    long id = rh_wait_for(a, (size_t)at, "\r\n9\r\nid: 5-0\n\n\r\n", 10000);
    if (id < 0)
        fail_msg("no position once Redis answered: %s", a->buf);
    assert_int_equal(mtr_command(&red, "XADD ev:later 6-0 event %s", "{\"n\":6}"), 0);
    long ev = rh_wait_for(a, 0, "id: 6-0\nevent: mailagent\ndata: {\"n\":6}\n\n", 5000);
    assert_true(ev > id);
    assert_int_equal(rh_count(a, "id: "), 2);
    assert_int_equal(rh_count(a, "event: "), 1);
    rh_close(a);
    stop(&r);
    mtr_cleanup(&red);
}

/* Entries that arrive together (one XREAD reply: a MULTI of XADDs) are
 * written to each live client in one send, HTTP/1.1 chunked and HTTP/1.0
 * raw alike, in order and once, a skipped one among them. */
static void test_burst_in_one_reply(void **state)
{
    (void)state;
    enum { BURST = 50 };
    rh_relay r;
    const char *args[] = {"--stream", "ev:burst", "--max-event-bytes", "2048", NULL};
    start(&r, "burst", args);
    rh_conn *a = rh_get(r.port, "/api/events/stream", NULL);
    rh_conn *b = rh_connect(r.port, 0);
    assert_non_null(b);
    static const char req10[] = "GET /api/events/stream HTTP/1.0\r\n\r\n";
    assert_true(rh_send(b, req10, sizeof req10 - 1));
    rh_wait_clients(r.port, NULL, 2, 10000);
    rh_sleep_ms(200);   /* both have their position */

    struct timeval tv = {5, 0};
    redisContext *rc = redisConnectWithTimeout("127.0.0.1", g_redis.port, tv);
    assert_true(rc && !rc->err);
    char *big = big_event(4000);
    redisAppendCommand(rc, "MULTI");
    for (int i = 1; i <= BURST; i++) {
        char line[64];
        snprintf(line, sizeof line, "{\"n\":%d}", i);
        redisAppendCommand(rc, "XADD ev:burst %d-0 event %s", i, i == 25 ? big : line);
    }
    redisAppendCommand(rc, "EXEC");
    for (int i = 0; i < BURST + 2; i++) {
        void *reply = NULL;
        assert_int_equal(redisGetReply(rc, &reply), REDIS_OK);
        freeReplyObject(reply);
    }
    redisFree(rc);
    free(big);

    for (rh_conn *c = a; c; c = c == a ? b : NULL) {
        char last[64];
        snprintf(last, sizeof last, "id: %d-0\nevent: mailagent\ndata: {\"n\":%d}\n\n", BURST,
                 BURST);
        assert_true(rh_wait_for(c, 0, last, 10000) > 0);
        rh_sleep_ms(100);
        rh_pump(c);
        assert_int_equal(rh_count(c, "event: mailagent\n"), BURST - 1);
        assert_int_equal(rh_count(c, "event: skipped\n"), 1);
        const char *p = c->buf;
        for (int i = 1; i <= BURST; i++) {
            char want[64];
            snprintf(want, sizeof want, "id: %d-0\n", i);
            p = strstr(p, want);
            if (!p)
                fail_msg("id %d-0 missing or out of order", i);
        }
    }
    rh_close(a);
    rh_close(b);
    stop(&r);
}

/* A stand-in Redis for one pub/sub connection that delivers a message
 * slowly: it confirms the first SUBSCRIBE, and when the relay's probe (its
 * next SUBSCRIBE) comes, it sends a message of TRICKLE_BYTES in slices over
 * TRICKLE_MS, longer than the relay's 5 s reply deadline, then answers the
 * probe. A slow server that keeps sending is not a hung one. */
#define TRICKLE_BYTES 70000
#define TRICKLE_MS 7000
#define TRICKLE_SLICES 70

typedef struct trickler {
    int fd, port;
    pthread_t thread;
    int accepted;   /* connections taken: 1 unless the relay gave up on it */
} trickler;

static bool read_command(int c, char *buf, size_t size, int timeout_ms)
{
    size_t len = 0;
    double until = rh_now() + timeout_ms / 1000.0;
    while (len < size - 1 && rh_now() < until) {
        struct pollfd q = {c, POLLIN, 0};
        if (poll(&q, 1, 50) <= 0)
            continue;
        ssize_t n = read(c, buf + len, size - 1 - len);
        if (n <= 0)
            return false;
        len += (size_t)n;
        buf[len] = '\0';
        if (strstr(buf, CHANNEL "\r\n"))
            return true;
    }
    return false;
}

static bool write_all(int c, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(c, p, n);
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static void *trickler_main(void *arg)
{
    trickler *t = arg;
    static const char confirm[] = "*3\r\n$9\r\nsubscribe\r\n$19\r\n" CHANNEL "\r\n:1\r\n";
    int c = accept(t->fd, NULL, NULL);
    if (c < 0)
        return NULL;
    t->accepted = 1;
    char buf[1024];
    if (!read_command(c, buf, sizeof buf, 10000) || !write_all(c, confirm, sizeof confirm - 1) ||
        !read_command(c, buf, sizeof buf, 10000)) {
        close(c);
        return NULL;
    }
    /* The payload: {"event_type":"slow","data":"aaaa..."} */
    char *msg = malloc(TRICKLE_BYTES + 200);
    int head = snprintf(msg, 200, "*3\r\n$7\r\nmessage\r\n$19\r\n" CHANNEL "\r\n$%d\r\n",
                        TRICKLE_BYTES);
    int body = snprintf(msg + head, 64, "{\"event_type\":\"slow\",\"data\":\"");
    memset(msg + head + body, 'a', (size_t)(TRICKLE_BYTES - body - 2));
    memcpy(msg + head + TRICKLE_BYTES - 2, "\"}\r\n", 4);
    size_t total = (size_t)head + TRICKLE_BYTES + 2, slice = total / TRICKLE_SLICES + 1;
    bool ok = true;
    for (size_t off = 0; ok && off < total; off += slice) {
        ok = write_all(c, msg + off, off + slice < total ? slice : total - off);
        rh_sleep_ms(TRICKLE_MS / TRICKLE_SLICES);
    }
    free(msg);
    if (ok)
        ok = write_all(c, confirm, sizeof confirm - 1);
    /* Stay for the test's end: a second accept would mean the relay gave up. */
    struct pollfd q = {t->fd, POLLIN, 0};
    if (ok && poll(&q, 1, 3000) > 0) {
        int again = accept(t->fd, NULL, NULL);
        if (again >= 0) {
            t->accepted = 2;
            close(again);
        }
    }
    close(c);
    return NULL;
}

/* A defect once: the relay's reply deadline counted only whole replies, so
 * a large message arriving slowly (a loaded machine, a slow link) ahead of
 * the probe's answer made the relay drop a working connection as "no reply
 * within 5000 ms" and lose the message. Now every byte that arrives is
 * progress: the message is delivered and the connection kept. */
static void test_slow_reply_is_not_a_hung_server(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);   /* the stand-in writes to a relay that may have hung up */
    trickler t = {0};
    t.fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(t.fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    assert_int_equal(bind(t.fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(t.fd, 4), 0);
    assert_int_equal(getsockname(t.fd, (struct sockaddr *)&a, &alen), 0);
    t.port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&t.thread, NULL, trickler_main, &t), 0);

    char url[64], log[600];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", t.port);
    snprintf(log, sizeof log, "%s/trickle.log", g_out);
    rh_relay r;
    assert_int_equal(rh_relay_start(&r, url, NULL, NULL, log), 0);
    rh_conn *c = rh_get(r.port, "/api/events/stream", NULL);
    assert_non_null(c);
    long at = rh_wait_for(c, 0, "aaaa\"}\n\n", TRICKLE_MS + 8000);
    pthread_join(t.thread, NULL);
    close(t.fd);
    char *text = rh_slurp(r.log);
    print_message("the slow message %s; connections to the stand-in: %d\n",
                  at >= 0 ? "arrived" : "did not arrive", t.accepted);
    bool gave_up = text && strstr(text, "no reply within");
    if (gave_up)
        print_message("relay log:\n%s\n", text);
    free(text);
    assert_false(gave_up);
    assert_true(at >= 0);
    assert_int_equal(t.accepted, 1);
    rh_close(c);
    assert_int_equal(rh_relay_stop(&r, SIGTERM, 10000, NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_large_event_is_skipped_not_cut),
        cmocka_unit_test(test_frame_over_client_buffer_reaches_a_fast_reader),
        cmocka_unit_test(test_large_entry_skipped_in_stream_mode),
        cmocka_unit_test(test_replay_paced_per_entry),
        cmocka_unit_test(test_sighup_keeps_serving),
        cmocka_unit_test(test_position_at_connect),
        cmocka_unit_test(test_position_once_positioned),
        cmocka_unit_test(test_burst_in_one_reply),
        cmocka_unit_test(test_slow_reply_is_not_a_hung_server),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
