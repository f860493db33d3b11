/* Unit tests of one relay connection (relay/client.c) in-process, on a
 * socketpair and the relay's own event loop, with the stream source's calls
 * played by the test (-Wl,--wrap): here, a stream whose catch-up cannot
 * start (out of memory) must close the connection without the request
 * reader touching the freed client afterwards. */
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

/* ---- the stream source, played by the test -------------------------------- */

static int bounds_calls;

mae__stream_req *__wrap_mae__stream_source_bounds(mae__stream_source *s, mae__stream_bounds_fn fn,
                                                  void *user);
bool __wrap_mae__stream_source_position(const mae__stream_source *s, mae__stream_id *out);
uint64_t __wrap_mae__stream_source_epoch(const mae__stream_source *s);

/* The request for the stream's bounds cannot be made: out of memory. */
mae__stream_req *__wrap_mae__stream_source_bounds(mae__stream_source *s, mae__stream_bounds_fn fn,
                                                  void *user)
{
    (void)s;
    (void)fn;
    (void)user;
    bounds_calls++;
    return NULL;
}

bool __wrap_mae__stream_source_position(const mae__stream_source *s, mae__stream_id *out)
{
    (void)s;
    *out = (mae__stream_id){5, 0};
    return true;
}

uint64_t __wrap_mae__stream_source_epoch(const mae__stream_source *s)
{
    (void)s;
    return 0;
}

/* ---- the tests ---------------------------------------------------------------- */

/* A client resuming with Last-Event-ID whose catch-up cannot start is
 * freed inside open_stream; the request reader went on to drain the
 * request from the freed client's buffer (ASan: heap-use-after-free). Now
 * the connection is simply closed: the peer reads the stream's head and
 * then EOF, and the relay holds no connection. */
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
    static char fake_source;
    r.stream = (mae__stream_source *)&fake_source;

    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(0x7f000001);
    mae__client_accept(NULL, sv[0], (struct sockaddr *)&sa, (int)sizeof sa, &r);
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
    assert_null(r.conns);
    assert_null(r.streams);
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
    event_base_free(r.base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_whose_resume_cannot_start_is_closed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
