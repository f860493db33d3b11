/* This module implements part 9: the publisher over TLS (rediss://) next
 * to plain TCP (redis://), on one redis-server listening on both, in the
 * same run: the publish call on the caller's thread, throughput to a
 * subscriber, and the cost of a reconnect's handshake (connect + PING on
 * a fresh connection: plain, TLS in full, TLS resuming the last session),
 * through the library's own TLS setup (core/tls.h). Certificates are made
 * with the openssl command in a temporary directory. */
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <hiredis/hiredis.h>
#include <mailagent/events.h>

#include "bench.h"
#include "core/tls.h"

#define HANDSHAKES 300

static int make_certs(char *dir, size_t n)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, n, "%s/mae-bench-tls.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir))
        return -1;
    char cmd[1536];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > server.ext && "
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout ca.key -out ca.pem -days 2 -subj /CN=mae-bench-ca && "
             "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout server.key -out server.csr -subj /CN=localhost && "
             "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
             "-out server.pem -days 2 -extfile server.ext",
             dir);
    char quiet[1600];
    snprintf(quiet, sizeof quiet, "( %s ) >/dev/null 2>&1", cmd);
    return system(quiet) == 0 ? 0 : -1;
}

static void remove_certs(const char *dir)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (dir[0] && system(cmd) != 0)
        fprintf(stderr, "bench: could not remove %s\n", dir);
}

/* As part 8's: flat out, never past three quarters of the queue. */
static void paced(mae_publisher *p, size_t n, lat *l)
{
    mae_publisher_stats st;
    mae_publisher_config cfg;
    mae_publisher_config_init(&cfg);
    size_t high = cfg.queue_max_events * 3 / 4, low = cfg.queue_max_events / 2;
    for (size_t i = 0; i < n; i++) {
        uint64_t t0 = now_ns();
        mae_safe_publish(p, BENCH_EVENT, (int64_t)(100000 + i), BENCH_DATA, BENCH_SOURCE);
        lat_add(l, now_ns() - t0);
        if ((i & 1023) == 1023) {
            mae_publisher_stats_get(p, &st);
            if (st.queued > high) {
                while (st.queued > low) {
                    sleep_ms(1);
                    mae_publisher_stats_get(p, &st);
                }
            }
        }
    }
}

static int run_mode(const bench_opts *o, const char *url, bench_sub *sub, tls_mode_result *m,
                    const char *name)
{
    mae_publisher *p = NULL;
    mae_publisher_config cfg;
    lat l = {0};
    int rc = -1;
    mae_publisher_config_init(&cfg);
    cfg.redis_url = url;
    cfg.channel = BENCH_CHANNEL;
    if (mae_publisher_open(&cfg, &p) != MAE_OK || lat_init(&l, o->stream_events) != 0)
        goto out;
    /* Connected (and the TLS context built) before the timing starts. */
    mae_safe_publish(p, BENCH_EVENT, 1, BENCH_DATA, BENCH_SOURCE);
    if (mae_publisher_flush(p, 10000) != MAE_OK || sub_wait(sub, 1, 2000, 5000) < 1) {
        fprintf(stderr, "bench: part 9: %s: the first event did not arrive\n", name);
        goto out;
    }
    progress("part 9 tls: %s, %zu events to a subscriber", name, o->stream_events);
    sub_reset(sub);
    uint64_t t0 = now_ns();
    paced(p, o->stream_events, &l);
    mae_publisher_flush(p, 120000);
    uint64_t got = sub_wait(sub, o->stream_events, 3000, 120000);
    uint64_t span = sub_last_ns(sub) > t0 ? sub_last_ns(sub) - t0 : 0;
    m->events = o->stream_events;
    m->received = got;
    m->eps = span ? (double)got / ((double)span / 1e9) : 0;
    m->call = lat_summarise(&l);
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    m->dropped = st.dropped_queue_full + st.dropped_send_error + st.dropped_invalid;
    rc = 0;
out:
    mae_publisher_close(p, 5000);
    lat_free(&l);
    return rc;
}

/* A loopback TCP connection to port: the fd (non-blocking) or -1. */
static int tcp_connect(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* PING and its +PONG over ssl (blocking socket). 0 or -1. */
static int tls_ping(SSL *ssl)
{
    char buf[16];
    size_t got = 0;
    if (SSL_write(ssl, "PING\r\n", 6) != 6)
        return -1;
    while (got < 7) {
        int n = SSL_read(ssl, buf + got, (int)(sizeof buf - got));
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    return memcmp(buf, "+PONG\r\n", 7) == 0 ? 0 : -1;
}

/* Connect + handshake + PING, HANDSHAKES times each way. */
static int handshakes(const bench_redis *srv, tls_result *t)
{
    char url[300], err[160];
    lat plain = {0}, full = {0}, resumed = {0};
    mae__url u;
    SSL_CTX *ctx = NULL;
    SSL_SESSION *last = NULL;
    int rc = -1;
    snprintf(url, sizeof url, "rediss://127.0.0.1:%d?ssl_ca_certs=%s/ca.pem", srv->tls_port,
             srv->tls_dir);
    if (mae__url_parse_for(url, MAE__URL_ALLOW_TLS, &u, err, sizeof err) != 0)
        return -1;
    if (mae__tls_ctx_new(&u.tls, &ctx, err, sizeof err) != 0 || lat_init(&plain, HANDSHAKES) ||
        lat_init(&full, HANDSHAKES) || lat_init(&resumed, HANDSHAKES)) {
        fprintf(stderr, "bench: part 9: %s\n", err);
        goto out;
    }
    progress("part 9 tls: %d connects each: plain, TLS, TLS resumed", HANDSHAKES);
    for (int i = 0; i < HANDSHAKES; i++) {
        struct timeval tv = {2, 0};
        uint64_t t0 = now_ns();
        redisContext *c = redisConnectWithTimeout("127.0.0.1", srv->port, tv);
        redisReply *r = c && !c->err ? redisCommand(c, "PING") : NULL;
        lat_add(&plain, now_ns() - t0);
        if (r)
            freeReplyObject(r);
        if (c)
            redisFree(c);

        for (int mode = 0; mode < 2; mode++) {
            SSL *ssl = NULL;
            t0 = now_ns();
            int fd = tcp_connect(srv->tls_port);
            if (fd < 0 || mae__tls_session_new(ctx, &u.tls, u.host, fd, &ssl, err, sizeof err))
                goto fail_one;
            if (mode == 1 && last)
                SSL_set_session(ssl, last);
            if (SSL_connect(ssl) != 1 || tls_ping(ssl) != 0)
                goto fail_one;
            lat_add(mode ? &resumed : &full, now_ns() - t0);
            if (mode == 1 && SSL_session_reused(ssl))
                t->resumed++;
            SSL_SESSION_free(last);
            last = SSL_get1_session(ssl);
            SSL_shutdown(ssl);
        fail_one:
            SSL_free(ssl);
            if (fd >= 0)
                close(fd);
        }
    }
    t->connect_plain = lat_summarise(&plain);
    t->connect_full = lat_summarise(&full);
    t->connect_resumed = lat_summarise(&resumed);
    rc = full.n == HANDSHAKES && resumed.n == HANDSHAKES ? 0 : -1;
    if (rc != 0)
        fprintf(stderr, "bench: part 9: some TLS connects failed (%zu, %zu of %d)\n", full.n,
                resumed.n, HANDSHAKES);
out:
    SSL_SESSION_free(last);
    SSL_CTX_free(ctx);
    lat_free(&plain);
    lat_free(&full);
    lat_free(&resumed);
    mae__url_free(&u);
    return rc;
}

int part_tls(const bench_opts *o, bench_results *res)
{
    bench_redis srv = {0};
    bench_sub *sub = NULL;
    char url[2][300];
    int rc = -1;

    if (make_certs(srv.tls_dir, sizeof srv.tls_dir) != 0) {
        fprintf(stderr, "bench: part 9: cannot make certificates (is openssl installed?)\n");
        remove_certs(srv.tls_dir);
        return -1;
    }
    if (redis_start(&srv, 0) != 0) {
        fprintf(stderr, "bench: cannot start redis-server with TLS\n");
        goto out;
    }
    sub = sub_open(srv.port, BENCH_CHANNEL);
    if (!sub)
        goto out;
    snprintf(url[0], sizeof url[0], "redis://127.0.0.1:%d", srv.port);
    snprintf(url[1], sizeof url[1], "rediss://127.0.0.1:%d?ssl_ca_certs=%s/ca.pem",
             srv.tls_port, srv.tls_dir);
    if (run_mode(o, url[0], sub, &res->tls.mode[0], "plain TCP") != 0 ||
        run_mode(o, url[1], sub, &res->tls.mode[1], "TLS") != 0 ||
        handshakes(&srv, &res->tls) != 0)
        goto out;
    res->have[PART_TLS] = true;
    rc = 0;
out:
    sub_close(sub);
    redis_cleanup(&srv);
    remove_certs(srv.tls_dir);
    return rc;
}
