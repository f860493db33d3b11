/* Integration tests of the publisher over TLS (rediss://) against a real
 * redis-server with a TLS port on loopback and certificates the test makes
 * with openssl: every event arrives; a certificate from an unknown CA, for
 * another host or expired is refused, counted and logged, and nothing is
 * ever sent in plain text instead; ssl_cert_reqs=none and a client
 * certificate work; a TLS server hung after the TCP accept, mid-handshake
 * or mid-record never blocks a publish call or close; stream mode loses
 * and doubles nothing while the TLS Redis is killed and restarted; and a
 * fork()ed child never touches the parent's TLS session. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <mailagent/events.h>

#include "redis_harness.h"
#include "stream_check.h"
#include "testutil.h"
#include "tls_harness.h"

#define CHANNEL "mailagent:events:v1"
#define STREAM "test:tls:events"

static mtr_certs certs;

/* What the log callback heard last, and how often. */
typedef struct heard {
    pthread_mutex_t mu;
    char last[256];
    int calls;
} heard;

static void log_cb(void *user, int level, const char *msg, uint64_t repeats)
{
    heard *h = user;
    (void)level;
    (void)repeats;
    pthread_mutex_lock(&h->mu);
    snprintf(h->last, sizeof h->last, "%s", msg);
    h->calls++;
    pthread_mutex_unlock(&h->mu);
}

/* rediss://HOST:PORT with query, the CA file, when ca is not NULL, first. */
static void tls_url(char *out, size_t n, const char *host, int port, const char *ca,
                    const char *query)
{
    char path[128];
    snprintf(out, n, "rediss://%s:%d?ssl_ca_certs=%s%s%s", host, port,
             mtr_cert_path(&certs, ca ? ca : "ca", "pem", path, sizeof path), query ? "&" : "",
             query ? query : "");
}

static mae_publisher *open_url(const char *url, const char *stream_key, heard *h)
{
    mae_publisher_config cfg;
    mae_publisher *p = NULL;
    char err[160] = "";
    mae_publisher_config_init(&cfg);
    cfg.redis_url = url;
    cfg.stream_key = stream_key;
    cfg.backoff_min_ms = 10;
    cfg.backoff_max_ms = 100;
    cfg.io_timeout_ms = 300;
    cfg.connect_timeout_ms = 300;
    cfg.batch_max_events = 32;
    cfg.error_buf = err;
    cfg.error_buf_size = sizeof err;
    if (h) {
        cfg.log = log_cb;
        cfg.log_user = h;
    }
    int rc = mae_publisher_open(&cfg, &p);
    if (rc != MAE_OK)
        fail_msg("open %s: %d %s", url, rc, err);
    return p;
}

static void publish_range(mae_publisher *p, int from, int n)
{
    char data[32];
    for (int i = from; i < from + n; i++) {
        snprintf(data, sizeof data, "{\"n\":%d}", i);
        mae_safe_publish(p, "test.event", i, data, "test");
    }
}

/* Asserts the subscriber got events 0..n-1, each once, in order. */
static void assert_channel_exactly(mtr_sub *sub, int n)
{
    assert_int_equal(mtr_sub_wait(sub, (size_t)n, 5000), n);
    tu_sleep_ms(50);
    assert_int_equal(mtr_sub_count(sub), n);
    for (int i = 0; i < n; i++)
        assert_int_equal(sc_number_of(mtr_sub_message(sub, (size_t)i)), i);
}

static int setup(void **state)
{
    (void)state;
    if (!mtr_available() || !mtr_tls_available()) {
        print_message("redis-server or openssl not found: these tests cannot run, so they "
                      "fail\n");
        return -1;
    }
    if (mtr_certs_make(&certs) != 0) {
        print_message("could not make the test certificates with openssl\n");
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    mtr_certs_remove(&certs);
    return 0;
}

static void test_every_event_arrives_over_tls(void **state)
{
    (void)state;
    mtr_redis r;
    int tport;
    char url[256];
    assert_int_equal(mtr_tls_start(&r, &tport, &certs, "server", false, NULL), 0);
    mtr_sub *sub = mtr_subscribe(&r, CHANNEL);
    /* By address (the certificate's IP entry) and by name (its DNS entry,
     * with SNI). */
    const char *hosts[] = {"127.0.0.1", "localhost"};
    for (int k = 0; k < 2; k++) {
        tls_url(url, sizeof url, hosts[k], tport, NULL, NULL);
        mae_publisher *p = open_url(url, NULL, NULL);
        publish_range(p, k * 1000, 1000);
        assert_int_equal(mae_publisher_flush(p, 10000), MAE_OK);
        mae_publisher_stats st;
        mae_publisher_stats_get(p, &st);
        assert_int_equal(st.published, 1000);
        assert_int_equal(st.connect_failures, 0);
        assert_string_equal(st.last_error, "");
        tu_assert_counters_add_up(p);
        assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);
    }
    assert_channel_exactly(sub, 2000);
    /* And the server saw a TLS client: its TLS port counted connections. */
    assert_int_equal(mtr_command(&r, "EVAL %s 0",
                                 "local i = redis.call('INFO', 'stats') "
                                 "if string.find(i, 'total_connections_received:') then "
                                 "return 1 end return redis.error_reply('no stats')"),
                     0);
    mtr_sub_close(sub);
    mtr_cleanup(&r);
}

/* Publishes to a server whose certificate must be refused, and asserts it
 * was: connect failures counted, the reason in last_error and the log,
 * nothing published, and nothing arrived by any other way. */
static void expect_refused(mtr_redis *r, const char *url, const char *reason)
{
    heard h = {.mu = PTHREAD_MUTEX_INITIALIZER};
    mtr_sub *sub = mtr_subscribe(r, CHANNEL);
    mae_publisher *p = open_url(url, NULL, &h);
    publish_range(p, 0, 5);
    mae_publisher_stats st;
    TU_EVENTUALLY((mae_publisher_stats_get(p, &st), st.connect_failures >= 3));
    assert_true(st.connect_failures >= 3);
    assert_int_equal(st.connects, 0);
    assert_false(st.connected);
    assert_int_equal(st.published, 0);
    print_message("  %s\n", st.last_error);
    if (!strstr(st.last_error, reason))
        fail_msg("%s: last_error \"%s\" lacks \"%s\"", url, st.last_error, reason);
    pthread_mutex_lock(&h.mu);
    assert_true(h.calls >= 1);
    if (!strstr(h.last, reason))
        fail_msg("%s: the log said \"%s\", lacking \"%s\"", url, h.last, reason);
    pthread_mutex_unlock(&h.mu);
    tu_assert_counters_add_up(p);
    assert_int_equal(mae_publisher_close(p, 200), MAE_ETIMEDOUT);
    assert_int_equal(mtr_sub_count(sub), 0);
    mtr_sub_close(sub);
}

static void test_verification_failures_are_refused_and_counted(void **state)
{
    (void)state;
    mtr_redis good, wrong, expired;
    int gport, wport, eport;
    char url[256];
    assert_int_equal(mtr_tls_start(&good, &gport, &certs, "server", false, NULL), 0);
    assert_int_equal(mtr_tls_start(&wrong, &wport, &certs, "wrong", false, NULL), 0);
    assert_int_equal(mtr_tls_start(&expired, &eport, &certs, "expired", false, NULL), 0);

    tls_url(url, sizeof url, "127.0.0.1", gport, "other_ca", NULL);
    /* The server sends its CA along: a self-signed root the client does
     * not trust. */
    expect_refused(&good, url, "TLS certificate verify failed: unknown CA, self-signed "
                               "certificate in certificate chain");
    /* The system's store does not know the test CA either. */
    snprintf(url, sizeof url, "rediss://127.0.0.1:%d", gport);
    expect_refused(&good, url, "verify failed: unknown CA, ");
    tls_url(url, sizeof url, "127.0.0.1", wport, NULL, NULL);
    expect_refused(&wrong, url, "certificate verify failed: IP address mismatch");
    tls_url(url, sizeof url, "localhost", wport, NULL, NULL);
    expect_refused(&wrong, url, "certificate verify failed: hostname mismatch");
    tls_url(url, sizeof url, "localhost", eport, NULL, "ssl_cert_reqs=optional");
    expect_refused(&expired, url, "certificate verify failed: certificate has expired");
    /* A CA file that is not there names itself. */
    snprintf(url, sizeof url, "rediss://127.0.0.1:%d?ssl_ca_certs=/nonexistent/ca.pem", gport);
    expect_refused(&good, url, "cannot read ssl_ca_certs /nonexistent/ca.pem: no such file");
    /* And one that is not a CA file says so. */
    char key[128];
    snprintf(url, sizeof url, "rediss://127.0.0.1:%d?ssl_ca_certs=%s", gport,
             mtr_cert_path(&certs, "server", "key", key, sizeof key));
    expect_refused(&good, url, "cannot load ssl_ca_certs");

    mtr_cleanup(&good);
    mtr_cleanup(&wrong);
    mtr_cleanup(&expired);
}

/* ssl_cert_reqs=none takes any certificate; ssl_check_hostname=false any
 * host name, but still only from the CA. */
static void test_relaxed_verification_is_accepted(void **state)
{
    (void)state;
    mtr_redis wrong, expired;
    int wport, eport;
    char url[256];
    assert_int_equal(mtr_tls_start(&wrong, &wport, &certs, "wrong", false, NULL), 0);
    assert_int_equal(mtr_tls_start(&expired, &eport, &certs, "expired", false, NULL), 0);
    struct {
        mtr_redis *r;
        int port;
        const char *ca, *query;
    } cases[] = {
        {&expired, eport, "other_ca", "ssl_cert_reqs=none"},
        {&wrong, wport, "other_ca", "ssl_cert_reqs=none&ssl_check_hostname=true"},
        {&wrong, wport, NULL, "ssl_check_hostname=false"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tls_url(url, sizeof url, "127.0.0.1", cases[i].port, cases[i].ca, cases[i].query);
        mtr_sub *sub = mtr_subscribe(cases[i].r, CHANNEL);
        mae_publisher *p = open_url(url, NULL, NULL);
        publish_range(p, 0, 100);
        assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
        mae_publisher_stats st;
        mae_publisher_stats_get(p, &st);
        assert_int_equal(st.published, 100);
        assert_int_equal(st.connect_failures, 0);
        assert_channel_exactly(sub, 100);
        assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);
        mtr_sub_close(sub);
    }
    mtr_cleanup(&wrong);
    mtr_cleanup(&expired);
}

static void test_client_certificate_required_and_given(void **state)
{
    (void)state;
    mtr_redis r;
    int tport;
    char url[512], cert[128], key[128], query[300];
    assert_int_equal(mtr_tls_start(&r, &tport, &certs, "server", true, NULL), 0);

    /* Without one, the server ends the handshake. */
    heard h = {.mu = PTHREAD_MUTEX_INITIALIZER};
    tls_url(url, sizeof url, "127.0.0.1", tport, NULL, NULL);
    mae_publisher *p = open_url(url, NULL, &h);
    publish_range(p, 0, 3);
    mae_publisher_stats st;
    TU_EVENTUALLY((mae_publisher_stats_get(p, &st), st.connect_failures >= 2));
    assert_true(st.connect_failures >= 2);
    assert_int_equal(st.published, 0);
    print_message("  without a client certificate: %s\n", st.last_error);
    assert_non_null(strstr(st.last_error, "TLS"));
    assert_int_equal(mae_publisher_close(p, 200), MAE_ETIMEDOUT);

    /* With one, every event arrives. */
    snprintf(query, sizeof query, "ssl_certfile=%s&ssl_keyfile=%s",
             mtr_cert_path(&certs, "client", "pem", cert, sizeof cert),
             mtr_cert_path(&certs, "client", "key", key, sizeof key));
    tls_url(url, sizeof url, "127.0.0.1", tport, NULL, query);
    mtr_sub *sub = mtr_subscribe(&r, CHANNEL);
    p = open_url(url, NULL, NULL);
    publish_range(p, 0, 200);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    assert_channel_exactly(sub, 200);
    assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);

    /* A key that is not the certificate's is named at connect. */
    snprintf(query, sizeof query, "ssl_certfile=%s&ssl_keyfile=%s",
             mtr_cert_path(&certs, "client", "pem", cert, sizeof cert),
             mtr_cert_path(&certs, "server", "key", key, sizeof key));
    tls_url(url, sizeof url, "127.0.0.1", tport, NULL, query);
    p = open_url(url, NULL, NULL);
    publish_range(p, 0, 1);
    TU_EVENTUALLY((mae_publisher_stats_get(p, &st), st.connect_failures >= 1));
    if (!strstr(st.last_error, "cannot load ssl_keyfile") ||
        !strstr(st.last_error, "key values mismatch"))
        fail_msg("last_error \"%s\" does not name the key that does not fit", st.last_error);
    assert_int_equal(mae_publisher_close(p, 200), MAE_ETIMEDOUT);

    /* An encrypted key is refused, never prompted for on the terminal. */
    char cmd[512], enc[128];
    snprintf(enc, sizeof enc, "%s/client_enc.key", certs.dir);
    snprintf(cmd, sizeof cmd,
             "openssl pkey -in %s -aes256 -passout pass:secret -out %s >/dev/null 2>&1",
             mtr_cert_path(&certs, "client", "key", key, sizeof key), enc);
    assert_int_equal(system(cmd), 0);
    snprintf(query, sizeof query, "ssl_certfile=%s&ssl_keyfile=%s",
             mtr_cert_path(&certs, "client", "pem", cert, sizeof cert), enc);
    tls_url(url, sizeof url, "127.0.0.1", tport, NULL, query);
    p = open_url(url, NULL, NULL);
    publish_range(p, 0, 1);
    TU_EVENTUALLY((mae_publisher_stats_get(p, &st), st.connect_failures >= 1));
    print_message("  an encrypted key: %s\n", st.last_error);
    assert_non_null(strstr(st.last_error, "cannot load ssl_keyfile"));
    assert_int_equal(st.published, 0);
    assert_int_equal(mae_publisher_close(p, 200), MAE_ETIMEDOUT);
    mtr_sub_close(sub);
    mtr_cleanup(&r);
}

/* A server that accepts and never answers, or answers a few bytes of a
 * handshake and stops: the publish calls return at once, the handshake
 * times out and is counted, and close returns within its budget. */
static void test_hung_server_never_blocks_the_caller(void **state)
{
    (void)state;
    size_t replies[] = {0, 7};
    const char *why[] = {"TLS handshake timed out", "TLS handshake timed out"};
    for (int k = 0; k < 2; k++) {
        int port;
        char url[256];
        mtr_stall *s = mtr_stall_start(replies[k], &port);
        assert_non_null(s);
        tls_url(url, sizeof url, "127.0.0.1", port, NULL, NULL);
        mae_publisher *p = open_url(url, NULL, NULL);
        double t0 = tu_now_s();
        publish_range(p, 0, 1000);
        double publish_time = tu_now_s() - t0;
        mae_publisher_stats st;
        TU_EVENTUALLY((mae_publisher_stats_get(p, &st), st.connect_failures >= 2));
        assert_true(st.connect_failures >= 2);
        assert_true(mtr_stall_accepted(s) >= 2);
        if (!strstr(st.last_error, why[k]))
            fail_msg("last_error \"%s\" lacks \"%s\"", st.last_error, why[k]);
        assert_int_equal(st.enqueued, 1000);
        tu_assert_counters_add_up(p);
        /* close while a handshake is stalled: the budget holds. */
        TU_EVENTUALLY(mtr_stall_accepted(s) >= 3);
        t0 = tu_now_s();
        assert_int_equal(mae_publisher_close(p, 100), MAE_ETIMEDOUT);
        double close_time = tu_now_s() - t0;
        /* Generous bounds: this proves "returns", the benchmark measures. */
        assert_true(publish_time < 2.0);
        assert_true(close_time < 2.0);
        mtr_stall_stop(s);
    }
}

/* The TLS Redis hangs (SIGSTOP) with a connection up: mid-record for the
 * publisher. Publish calls still return, close returns by its budget. */
static void test_server_hung_mid_record(void **state)
{
    (void)state;
    mtr_redis r;
    int tport;
    char url[256];
    assert_int_equal(mtr_tls_start(&r, &tport, &certs, "server", false, NULL), 0);
    tls_url(url, sizeof url, "127.0.0.1", tport, NULL, NULL);
    mae_publisher *p = open_url(url, STREAM, NULL);
    publish_range(p, 0, 100);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    mtr_pause(&r);
    double t0 = tu_now_s();
    publish_range(p, 100, 2000);
    double publish_time = tu_now_s() - t0;
    tu_sleep_ms(400); /* a batch is on the wire */
    tu_assert_counters_add_up(p);
    t0 = tu_now_s();
    assert_int_equal(mae_publisher_close(p, 300), MAE_ETIMEDOUT);
    double close_time = tu_now_s() - t0;
    assert_true(publish_time < 2.0);
    assert_true(close_time < 2.0);
    mtr_resume(&r);
    mtr_cleanup(&r);
}

/* Stream mode over TLS while Redis is SIGKILLed and restarted from its
 * append-only file under load (a thread publishes all along), with the
 * checks of the plain-TCP stream tests: the stream holds every event
 * once, in order, and no subscriber saw one twice. */
static void test_stream_mode_survives_restarts(void **state)
{
    (void)state;
    mtr_redis r;
    int tport;
    char url[256];
    const int n = 3000;
    mtr_sub *subs[4];
    int nsubs = 0;
    assert_int_equal(mtr_tls_start(&r, &tport, &certs, "server", false,
                                   "--appendonly yes --appendfsync always"),
                     0);
    subs[nsubs++] = mtr_subscribe(&r, CHANNEL);
    tls_url(url, sizeof url, "127.0.0.1", tport, NULL, NULL);
    mae_publisher *p = open_url(url, STREAM, NULL);
    sc_feeder f;
    sc_feed_start(&f, p, n, 700);
    for (int k = 0; k < 3; k++) {
        tu_sleep_ms(400);
        mtr_kill(&r); /* SIGKILL: no shutdown, only what the log holds */
        tu_sleep_ms(150);
        subs[nsubs] = mtr_restart_gated(&r, CHANNEL);
        assert_non_null(subs[nsubs]);
        nsubs++;
    }
    sc_feed_join(&f);
    assert_int_equal(mae_publisher_flush(p, 20000), MAE_OK);
    tu_sleep_ms(200);
    sc_assert_stream_exactly(&r, STREAM, n);
    sc_assert_channel_no_doubles(subs, nsubs, n);

    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.published, n);
    assert_int_equal(st.dropped_send_error, 0);
    assert_true(st.skipped <= st.resent);
    assert_true(st.connects >= 4); /* the restarts did land */
    tu_assert_counters_add_up(p);
    print_message("  connects %llu, resent %llu, skipped %llu\n", (unsigned long long)st.connects,
                  (unsigned long long)st.resent, (unsigned long long)st.skipped);
    assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);
    for (int s = 0; s < nsubs; s++)
        mtr_sub_close(subs[s]);
    mtr_cleanup(&r);
}

/* A child of fork() publishes (counted as disabled) and closes; the
 * parent's TLS session is untouched: no reconnect, every event arrives. */
static void test_fork_child_never_touches_the_session(void **state)
{
    (void)state;
    mtr_redis r;
    int tport;
    char url[256];
    assert_int_equal(mtr_tls_start(&r, &tport, &certs, "server", false, NULL), 0);
    mtr_sub *sub = mtr_subscribe(&r, CHANNEL);
    tls_url(url, sizeof url, "127.0.0.1", tport, NULL, NULL);
    mae_publisher *p = open_url(url, NULL, NULL);
    publish_range(p, 0, 50);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    mae_publisher_stats before;
    mae_publisher_stats_get(p, &before);
    assert_int_equal(before.connects, 1);

    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        mae_publisher_stats a, b;
        close(fds[0]);
        mae_publisher_stats_get(p, &a);
        publish_range(p, 1000, 10);
        mae_publisher_stats_get(p, &b);
        char verdict = b.dropped_disabled == a.dropped_disabled + 10 ? 'Y' : 'N';
        mae_publisher_close(p, 100);
        if (write(fds[1], &verdict, 1) != 1)
            _exit(2);
        _exit(0);
    }
    close(fds[1]);
    char verdict = 0;
    assert_int_equal(read(fds[0], &verdict, 1), 1);
    close(fds[0]);
    assert_int_equal(verdict, 'Y');
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));

    publish_range(p, 50, 50);
    assert_int_equal(mae_publisher_flush(p, 5000), MAE_OK);
    mae_publisher_stats after;
    mae_publisher_stats_get(p, &after);
    assert_int_equal(after.connects, 1); /* the same TLS session carried on */
    assert_int_equal(after.published, 100);
    assert_channel_exactly(sub, 100);
    assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);
    mtr_sub_close(sub);
    mtr_cleanup(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_event_arrives_over_tls),
        cmocka_unit_test(test_verification_failures_are_refused_and_counted),
        cmocka_unit_test(test_relaxed_verification_is_accepted),
        cmocka_unit_test(test_client_certificate_required_and_given),
        cmocka_unit_test(test_hung_server_never_blocks_the_caller),
        cmocka_unit_test(test_server_hung_mid_record),
        cmocka_unit_test(test_stream_mode_survives_restarts),
        cmocka_unit_test(test_fork_child_never_touches_the_session),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
