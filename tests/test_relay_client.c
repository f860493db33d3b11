/* Unit tests of one relay connection (relay/client.c, relay/http.c)
 * in-process, on a socketpair and the relay's own event loop, with a source
 * played by the test through the source and history function tables: here,
 * a stream whose catch-up cannot start (out of memory) must close the
 * connection, deferred, without the request reader touching a freed client
 * afterwards. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "relay/server.h"

/* ---- a source with ids, played by the test through its function tables -- */

static int bounds_calls;
static struct event_base *fake_base;

/* The request for the stream's bounds cannot be made: out of memory. */
static mae__stream_req *fake_bounds(void *self, mae__stream_bounds_fn fn, void *user)
{
    (void)self;
    (void)fn;
    (void)user;
    bounds_calls++;
    return NULL;
}

static mae__stream_req *fake_range(void *self, const mae__stream_id *after, unsigned count,
                                   mae__stream_range_fn fn, void *user)
{
    (void)self;
    (void)after;
    (void)count;
    (void)fn;
    (void)user;
    fail_msg("no replay expected");
    return NULL;
}

static void fake_cancel(void *self, mae__stream_req *req)
{
    (void)self;
    (void)req;
}

static bool fake_position(void *self, mae__stream_id *out)
{
    (void)self;
    *out = (mae__stream_id){5, 0};
    return true;
}

static uint64_t fake_epoch(void *self)
{
    (void)self;
    return 0;
}

static struct event_base *fake_evbase(void *self)
{
    (void)self;
    return fake_base;
}

static const mae__history_ops fake_history_ops = {fake_position, fake_epoch, fake_evbase,
                                                  fake_bounds,   fake_range, fake_cancel, NULL, NULL};
static const mae__history fake_history = {&fake_history_ops, NULL};

static bool fake_up(const mae__source *s)
{
    (void)s;
    return true;
}

static bool fake_has_history = true;

static const mae__history *fake_get_history(mae__source *s)
{
    (void)s;
    return fake_has_history ? &fake_history : NULL;
}

static void fake_free(mae__source *s)
{
    (void)s;
}

static const mae__source_ops fake_source_ops = {fake_up, fake_get_history, fake_free};
static mae__source fake_source = {&fake_source_ops};

static void on_reaper(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mae__client_reap(arg);
}

/* ---- the tests ---------------------------------------------------------------- */

/* A client resuming with Last-Event-ID whose catch-up cannot start is
 * marked closing and freed by the reaper after the request callback has
 * returned: the peer reads the stream's head and then EOF, and the relay
 * holds no connection. */
static void test_stream_whose_resume_cannot_start_is_closed(void **state)
{
    (void)state;
    mae__relay_config cfg;
    mae__relay_config_init(&cfg);
    cfg.quiet = true;
    cfg.stream_key = "events";
    mae__relay_server r;
    memset(&r, 0, sizeof r);
    r.cfg = &cfg;
    r.rng = 1;
    r.base = event_base_new();
    assert_non_null(r.base);
    fake_base = r.base;
    r.source = &fake_source;
    TAILQ_INIT(&r.conns);
    TAILQ_INIT(&r.streams);
    TAILQ_INIT(&r.to_close);
    TAILQ_INIT(&r.over);
    r.reaper = event_new(r.base, -1, 0, on_reaper, &r);
    assert_non_null(r.reaper);

    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(0x7f000001);
    mae__http_accept(NULL, sv[0], (struct sockaddr *)&sa, (int)sizeof sa, &r);
    assert_int_equal(r.nconns, 1);

    char req[256];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1-1\r\n\r\n", cfg.path);
    assert_int_equal(write(sv[1], req, (size_t)n), n);
    for (int i = 0; i < 10 && r.nconns > 0; i++)
        event_base_loop(r.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);

    assert_int_equal(bounds_calls, 1);
    assert_int_equal(r.nconns, 0);
    assert_int_equal(r.counters.clients, 0);
    assert_true(TAILQ_EMPTY(&r.conns));
    assert_true(TAILQ_EMPTY(&r.streams));
    assert_true(TAILQ_EMPTY(&r.to_close));
    /* The peer sees the connection closed, after whatever was already
     * written to it. */
    char buf[4096];
    ssize_t got;
    while ((got = read(sv[1], buf, sizeof buf)) > 0)
        continue;
    assert_int_equal(got, 0);
    close(sv[1]);
    mae__buf_free(&r.frame);
    mae__buf_free(&r.raw);
    event_free(r.reaper);
    event_base_free(r.base);
}

/* Reads what the relay sent to peer, running its loop until something came. */
static ssize_t take(mae__relay_server *r, int peer, char *buf, size_t size)
{
    for (int i = 0; i < 200; i++) {
        ssize_t got = recv(peer, buf, size - 1, MSG_DONTWAIT);
        if (got > 0) {
            buf[got] = '\0';
            return got;
        }
        event_base_loop(r->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    }
    return -1;
}

/* Deferred close, the Redis way: a stream whose peer is gone is closed in
 * the middle of a broadcast (the heartbeat's), taken out of the stream list
 * at once so the other streams still get the frame, and freed only by the
 * reaper once the broadcast has returned. */
static void test_close_in_a_broadcast_is_deferred(void **state)
{
    (void)state;
    mae__relay_config cfg;
    mae__relay_config_init(&cfg);
    cfg.quiet = true;
    mae__relay_server r;
    memset(&r, 0, sizeof r);
    r.cfg = &cfg;
    r.rng = 1;
    r.base = event_base_new();
    assert_non_null(r.base);
    fake_base = r.base;
    fake_has_history = false;   /* a source without ids, as pub/sub */
    r.source = &fake_source;
    TAILQ_INIT(&r.conns);
    TAILQ_INIT(&r.streams);
    TAILQ_INIT(&r.to_close);
    TAILQ_INIT(&r.over);
    r.reaper = event_new(r.base, -1, 0, on_reaper, &r);
    assert_non_null(r.reaper);

    int peer[3];
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(0x7f000001);
    for (int i = 0; i < 3; i++) {
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        peer[i] = sv[1];
        mae__http_accept(NULL, sv[0], (struct sockaddr *)&sa, (int)sizeof sa, &r);
        char req[256];
        int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", cfg.path);
        assert_int_equal(write(peer[i], req, (size_t)n), n);
    }
    for (int i = 0; i < 20 && r.counters.clients < 3; i++)
        event_base_loop(r.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    assert_int_equal(r.counters.clients, 3);
    char buf[4096];
    for (int i = 0; i < 3; i++)
        assert_true(take(&r, peer[i], buf, sizeof buf) > 0);   /* the head */

    close(peer[1]);   /* its writes now fail (EPIPE) */
    mae__fanout_on_ping(-1, 0, &r);
    /* Marked and queued, out of the stream list, not freed yet. */
    assert_int_equal(r.counters.clients, 2);
    assert_int_equal(r.nconns, 3);
    assert_false(TAILQ_EMPTY(&r.to_close));
    /* The streams after it in the list got the heartbeat all the same. */
    for (int i = 0; i < 3; i += 2) {
        assert_true(take(&r, peer[i], buf, sizeof buf) > 0);
        assert_non_null(strstr(buf, "event: ping\n"));
    }
    /* The reaper frees it once the running callback has returned. */
    for (int i = 0; i < 5 && r.nconns > 2; i++)
        event_base_loop(r.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    assert_int_equal(r.nconns, 2);
    assert_true(TAILQ_EMPTY(&r.to_close));

    mae__relay_client *c;
    TAILQ_FOREACH(c, &r.conns, conn_link)
        mae__client_close(c, NULL);
    mae__client_reap(&r);
    assert_int_equal(r.nconns, 0);
    close(peer[0]);
    close(peer[2]);
    fake_has_history = true;
    mae__buf_free(&r.frame);
    mae__buf_free(&r.raw);
    event_free(r.reaper);
    event_base_free(r.base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_whose_resume_cannot_start_is_closed),
        cmocka_unit_test(test_close_in_a_broadcast_is_deferred),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
