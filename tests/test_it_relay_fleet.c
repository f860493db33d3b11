/* Integration test of several relays on one stream behind a proxy (issue
 * 21): a replicated Redis set with Sentinels (tests/support/
 * sentinel_harness), two publishers writing numbered events through the
 * redis-sentinel:// URL (stream mode, wait_replicas=1), two relays given
 * the same URL, a real nginx in front of them with the upstream and
 * locations of examples/sentinel/nginx.conf, and SSE clients through nginx
 * that behave as EventSource (tests/relay/fleet_client). One relay is
 * stopped (SIGTERM: its clients get a retry: of 1-5 s; or SIGKILL): its
 * clients come back through nginx to the other with their Last-Event-ID.
 * Then, with every client on the survivor, the Redis master is killed or
 * failed over. Counted per client: events doubled, and gaps, that no
 * reset explains (none allowed); in the stream: every acknowledged event
 * once; the publishers' counters add up with lost_failover 0. The times
 * for the clients to be back are printed (figures, not limits). */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <mailagent/publisher.h>

#include "fleet_client.h"
#include "harness.h"
#include "sentinel_harness.h"
#include "testutil.h"

#define NGINX "/usr/sbin/nginx"
#define STREAM "t:fleet"
#define PATH "/api/events/stream"
#define NCLIENTS 6
#define NPUB 2

static const char *const sources[NPUB + 1] = {"fleet-1", "fleet-2", NULL};

typedef struct fleet {
    mts_set s;
    mts_feeder pub[NPUB];
    rh_relay relay[2];
    pid_t nginx;
    int port;
    char dir[512];
    fc_client *c[NCLIENTS];
} fleet;

/* Replaces every `from` in text by `to` (text is freed; the result is
 * malloc'd). */
static char *replace(char *text, const char *from, const char *to)
{
    size_t n = 0, lf = strlen(from), lt = strlen(to);
    for (const char *p = text; (p = strstr(p, from)) != NULL; p += lf)
        n++;
    char *out = malloc(strlen(text) + n * lt + 1), *o = out;
    assert_non_null(out);
    const char *p = text, *q;
    while ((q = strstr(p, from)) != NULL) {
        memcpy(o, p, (size_t)(q - p));
        o += q - p;
        memcpy(o, to, lt);
        o += lt;
        p = q + lf;
    }
    strcpy(o, p);
    free(text);
    return out;
}

/* nginx.conf for this test: the example's upstream and server blocks with
 * the relays' and nginx's loopback ports put in, inside an http block for
 * an unprivileged nginx. */
static void write_nginx_conf(fleet *f)
{
    char *ex = rh_slurp(MAE_SOURCE_DIR "/examples/sentinel/nginx.conf");
    assert_non_null(ex);
    /* What is substituted must be there: the example is what is tested. */
    assert_non_null(strstr(ex, "relay-1.internal:9200"));
    assert_non_null(strstr(ex, "relay-2.internal:9200"));
    assert_non_null(strstr(ex, "listen 443 ssl;"));
    char a[64];
    snprintf(a, sizeof a, "127.0.0.1:%d", f->relay[0].port);
    ex = replace(ex, "relay-1.internal:9200", a);
    snprintf(a, sizeof a, "127.0.0.1:%d", f->relay[1].port);
    ex = replace(ex, "relay-2.internal:9200", a);
    snprintf(a, sizeof a, "listen 127.0.0.1:%d;", f->port);
    ex = replace(ex, "listen 443 ssl;", a);
    char path[600];
    snprintf(path, sizeof path, "%s/nginx.conf", f->dir);
    FILE *out = fopen(path, "w");
    assert_non_null(out);
    fprintf(out,
            "worker_processes 1;\nevents { worker_connections 256; }\nhttp {\n"
            "access_log off;\nclient_body_temp_path %s/body;\nproxy_temp_path %s/proxy;\n"
            "fastcgi_temp_path %s/fastcgi;\nuwsgi_temp_path %s/uwsgi;\nscgi_temp_path %s/scgi;\n"
            "%s}\n",
            f->dir, f->dir, f->dir, f->dir, f->dir, ex);
    fclose(out);
    free(ex);
}

static void start_nginx(fleet *f)
{
    mtr_redis tmp;
    memset(&tmp, 0, sizeof tmp);
    snprintf(tmp.dir, sizeof tmp.dir, "/nonexistent");
    assert_int_equal(mtr_reserve_port(&tmp), 0);
    f->port = tmp.port;
    write_nginx_conf(f);
    char conf[600], g[1300], elog[600];
    snprintf(conf, sizeof conf, "%s/nginx.conf", f->dir);
    snprintf(g, sizeof g, "pid %s/nginx.pid; error_log %s/error.log; daemon off;", f->dir,
             f->dir);
    snprintf(elog, sizeof elog, "%s/nginx.err", f->dir);
    const char *argv[] = {NGINX, "-p", f->dir, "-c", conf, "-g", g, NULL};
    f->nginx = rh_spawn(argv, NULL, NULL, elog);
    char *answer = NULL;
    for (double until = rh_now() + 10; !answer && rh_now() < until;) {
        answer = rh_request(f->port, "GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        if (!answer)
            rh_sleep_ms(50);
    }
    if (!answer)
        fail_msg("nginx does not answer on port %d (%s/nginx.err, error.log)", f->port, f->dir);
    free(answer);
}

static long long clients_on(const fleet *f, int i)
{
    return f->relay[i].pid ? rh_metric(f->relay[i].port, NULL, "mailagent_relay_clients") : 0;
}

/* Every client has been given its position (an id on its first frame). */
static bool all_positioned(void *arg)
{
    fleet *f = arg;
    for (int i = 0; i < NCLIENTS; i++)
        if (!f->c[i]->last_id[0])
            return false;
    return true;
}

static void setup_fleet(fleet *f, const char *name)
{
    memset(f, 0, sizeof *f);
    if (!mtr_available())
        tu_missing_prerequisite("redis-server");
    if (!rh_have(NGINX))
        tu_missing_prerequisite("nginx");
    rh_out_dir(name, f->dir, sizeof f->dir);
    assert_int_equal(mts_start(&f->s), 0);
    /* One entry before anything reads, so that both relays know the
     * stream's newest id and give every client a position at once. */
    assert_int_equal(mtr_command(&f->s.redis[0], "XADD %s * event {\"source\":\"seed\"}", STREAM),
                     0);
    for (int i = 0; i < NPUB; i++)
        assert_int_equal(mts_feeder_open(&f->pub[i], &f->s, STREAM, sources[i]), MAE_OK);
    for (int i = 0; i < 2; i++) {
        char log[600];
        snprintf(log, sizeof log, "%s/relay-%d.log", f->dir, i + 1);
        const char *args[] = {"--stream", STREAM, "--ping-interval", "0.5", NULL};
        assert_int_equal(rh_relay_start(&f->relay[i], f->s.url, args, NULL, log), 0);
    }
    start_nginx(f);
    for (int i = 0; i < NCLIENTS; i++) {
        f->c[i] = fc_open(f->port, PATH, NULL, sources);
        assert_non_null(f->c[i]);
    }
    assert_true(fc_run_until(f->c, NCLIENTS, all_positioned, f, 20000));
    /* nginx spreads them (round robin): both relays hold some. */
    long long on[2] = {0, 0};
    for (double until = rh_now() + 10; rh_now() < until; rh_sleep_ms(50)) {
        on[0] = clients_on(f, 0);
        on[1] = clients_on(f, 1);
        if (on[0] + on[1] == NCLIENTS)
            break;
    }
    print_message("clients through nginx: %lld on relay 1, %lld on relay 2\n", on[0], on[1]);
    assert_int_equal(on[0] + on[1], NCLIENTS);
    assert_true(on[0] > 0 && on[1] > 0);
    for (int i = 0; i < NPUB; i++)
        assert_int_equal(mts_feeder_start(&f->pub[i], 5), 0);   /* about 200/s each */
}

static void teardown_fleet(fleet *f)
{
    for (int i = 0; i < NCLIENTS; i++)
        fc_free(f->c[i]);
    if (f->nginx > 0) {
        kill(f->nginx, SIGQUIT);
        rh_wait(f->nginx, 5000);
    }
    for (int i = 0; i < 2; i++)
        if (f->relay[i].pid)
            rh_relay_stop(&f->relay[i], SIGTERM, 10000, NULL);
    for (int i = 0; i < NPUB; i++)
        mts_feeder_close(&f->pub[i]);
    mts_stop(&f->s);
}

/* Steps the clients for ms milliseconds. */
static bool never(void *arg)
{
    (void)arg;
    return false;
}

static void run_for(fleet *f, int ms)
{
    fc_run_until(f->c, NCLIENTS, never, NULL, ms);
}

typedef struct moved {
    fleet *f;
    bool was_on[NCLIENTS];
    int ends_before[NCLIENTS];
} moved;

/* Every client that lost its relay is back (an event on its new
 * connection) and the survivor holds every client. */
static bool all_back(void *arg)
{
    moved *m = arg;
    for (int i = 0; i < NCLIENTS; i++)
        if (m->was_on[i] && (m->f->c[i]->c == NULL || m->f->c[i]->t_back < 0))
            return false;
    return true;
}

typedef struct beyond {
    fleet *f;
    int n[NPUB];
} beyond;

/* Every client has an event of each publisher numbered above n[p]. */
static bool all_beyond(void *arg)
{
    beyond *b = arg;
    for (int i = 0; i < NCLIENTS; i++)
        for (int p = 0; p < NPUB; p++)
            if (fc_highest(b->f->c[i], p) <= b->n[p])
                return false;
    return true;
}

/* Kills relay 1 with sig while the publishers write; the clients it held
 * come back through nginx to relay 2. Returns how many moved. */
static int kill_a_relay(fleet *f, int sig)
{
    run_for(f, 1000);
    moved m = {.f = f};
    long long held = clients_on(f, 0);
    for (int i = 0; i < NCLIENTS; i++)
        m.ends_before[i] = f->c[i]->ends;
    double t0 = rh_now();
    kill(f->relay[0].pid, sig);
    /* The clients that lose their stream are the ones it held; wait for
     * its exit while stepping them (a SIGTERM'd relay sends retry: first). */
    int status = -1;
    for (double until = t0 + 10; rh_now() < until;) {
        run_for(f, 20);
        if (!rh_running(f->relay[0].pid)) {
            status = 0;
            break;
        }
    }
    assert_int_equal(status, 0);
    double t_exit = rh_now() - t0;
    f->relay[0].pid = 0;
    int n = 0;
    for (double until = rh_now() + 10; n != (int)held && rh_now() < until;) {
        run_for(f, 50);
        n = 0;
        for (int i = 0; i < NCLIENTS; i++) {
            m.was_on[i] = f->c[i]->ends > m.ends_before[i];
            n += m.was_on[i];
        }
    }
    assert_int_equal(n, (int)held);
    bool back = fc_run_until(f->c, NCLIENTS, all_back, &m, 20000);
    for (int i = 0; i < NCLIENTS; i++) {
        if (!m.was_on[i])
            continue;
        fc_client *c = f->c[i];
        print_message("%s relay 1 (exited after %.2f s): client %d waited retry %d ms, back "
                      "through nginx %.2f s after its stream ended (connection %d)\n",
                      sig == SIGTERM ? "SIGTERM" : "SIGKILL", t_exit, i, c->retry_at_end,
                      c->t_back, c->connects);
        if (sig == SIGTERM)   /* the relay's jittered retry: on SIGTERM */
            assert_true(c->retry_at_end >= 1000 && c->retry_at_end <= 5000);
        else                  /* no goodbye: the retry: of the stream's first chunk */
            assert_int_equal(c->retry_at_end, 3000);
    }
    assert_true(back);
    for (double until = rh_now() + 10; clients_on(f, 1) != NCLIENTS && rh_now() < until;)
        run_for(f, 50);
    assert_int_equal(clients_on(f, 1), NCLIENTS);
    return n;
}

enum redis_fault { MASTER_KILLED, PLANNED_FAILOVER };

/* The Redis fault while every client is on relay 2: relay 2 follows the
 * new master and every client gets events written after the fault (after
 * the Sentinels' agreement for a planned failover: the old master goes on
 * acknowledging for a moment). */
static void fail_over(fleet *f, enum redis_fault fault)
{
    run_for(f, 1000);
    int old = mts_master(&f->s);
    assert_int_equal(old, 0);
    beyond b = {.f = f};
    for (int p = 0; p < NPUB; p++)
        b.n[p] = atomic_load(&f->pub[p].sent);
    double t0 = rh_now();
    if (fault == MASTER_KILLED)
        mtr_kill(&f->s.redis[old]);
    else
        assert_int_equal(mts_sentinel_failover(&f->s, 0), 0);
    int nm = -1;
    while (nm < 0 && rh_now() < t0 + 20) {
        run_for(f, 10);
        nm = mts_wait_new_master(&f->s, old, 0);
    }
    double t_agree = rh_now() - t0;
    assert_true(nm >= 0 && nm != old);
    if (fault == PLANNED_FAILOVER)
        for (int p = 0; p < NPUB; p++)
            b.n[p] = atomic_load(&f->pub[p].sent);
    bool followed = fc_run_until(f->c, NCLIENTS, all_beyond, &b, 30000);
    double t_follow = rh_now() - t0;
    print_message("%s: the Sentinels agreed on redis[%d] after %.2f s; every client had events "
                  "written after %s %.2f s after the fault\n",
                  fault == MASTER_KILLED ? "SIGKILL of the master" : "SENTINEL FAILOVER", nm,
                  t_agree, fault == MASTER_KILLED ? "it" : "the agreement", t_follow);
    assert_true(followed);
}

typedef struct caught_up {
    fleet *f;
    int sent[NPUB];
} caught_up;

static bool all_caught_up(void *arg)
{
    caught_up *u = arg;
    for (int i = 0; i < NCLIENTS; i++)
        for (int p = 0; p < NPUB; p++)
            if (fc_highest(u->f->c[i], p) < u->sent[p])
                return false;
    return true;
}

/* Stops the publishers, lets the clients catch up and counts. */
static void check_everything(fleet *f)
{
    run_for(f, 1000);
    caught_up u = {.f = f};
    for (int p = 0; p < NPUB; p++) {
        u.sent[p] = mts_feeder_stop(&f->pub[p], 30000);
        assert_true(u.sent[p] > 0);
    }
    bool caught = fc_run_until(f->c, NCLIENTS, all_caught_up, &u, 20000);
    run_for(f, 500);   /* anything doubled would have come by now */

    /* The publishers: counters add up, nothing lost in the failover. */
    for (int p = 0; p < NPUB; p++) {
        mae_publisher_stats st;
        mae_publisher_stats_get(f->pub[p].p, &st);
        print_message("publisher %s: %d events, published %llu, resent %llu, connects %llu, "
                      "connect failures %llu, lost_failover %llu\n",
                      sources[p], u.sent[p], (unsigned long long)st.published,
                      (unsigned long long)st.resent, (unsigned long long)st.connects,
                      (unsigned long long)st.connect_failures,
                      (unsigned long long)st.lost_failover);
        tu_assert_counters_add_up(f->pub[p].p);
        assert_int_equal(st.calls, (uint64_t)u.sent[p]);
        assert_int_equal(st.published, (uint64_t)u.sent[p]);
        assert_int_equal(st.lost_failover, 0);
    }
    /* The stream on the master: every acknowledged event once, in order. */
    int m = mts_wait_new_master(&f->s, -1, 10000);
    assert_true(m >= 0);
    for (int p = 0; p < NPUB; p++) {
        mts_stream_count k;
        assert_int_equal(mts_count_stream(&f->s, m, STREAM, sources[p], u.sent[p], &k), 0);
        print_message("stream, %s: %zu entries for %d events: %d missing (first %d), %d twice, "
                      "%d out of order, %d strays\n",
                      sources[p], k.entries, u.sent[p], k.missing, k.first_missing, k.twice,
                      k.out_of_order, k.strays);
        assert_int_equal(k.missing, 0);
        assert_int_equal(k.twice, 0);
        assert_int_equal(k.out_of_order, 0);
        assert_int_equal(k.strays, 0);
    }
    /* Every client: every event once, or a reset that says why. */
    for (int i = 0; i < NCLIENTS; i++) {
        fc_client *c = f->c[i];
        for (size_t r = 0; r < c->nresets; r++)
            print_message("client %d: reset after %zu events: %s\n", i, c->resets[r].at,
                          c->resets[r].data);
        for (int p = 0; p < NPUB; p++) {
            fc_tally t;
            assert_int_equal(fc_tally_of(c, p, u.sent[p], &t), 0);
            print_message("client %d, %s: %d events over %d connections: %d missing, %d twice "
                          "(%d after a reset), %d gaps (%d after a reset)\n",
                          i, sources[p], t.events, c->connects, t.missing, t.twice,
                          t.twice_explained, t.gaps, t.gaps_explained);
            assert_int_equal(t.twice - t.twice_explained, 0);
            assert_int_equal(t.gaps - t.gaps_explained, 0);
            if (c->nresets == 0)
                assert_int_equal(t.missing, 0);
        }
        assert_int_equal(c->bad_status, 0);
    }
    assert_true(caught);
}

/* SIGTERM to one relay: its clients get a retry: of 1-5 s and come back
 * through nginx to the other with their Last-Event-ID; then the master is
 * killed while all of them read the survivor. */
static void test_sigterm_a_relay_then_kill_the_master(void **state)
{
    (void)state;
    fleet f;
    setup_fleet(&f, "fleet_sigterm");
    assert_true(kill_a_relay(&f, SIGTERM) > 0);
    fail_over(&f, MASTER_KILLED);
    check_everything(&f);
    teardown_fleet(&f);
}

/* SIGKILL to one relay (no goodbye: its clients see the connection cut
 * and wait the retry: of their first chunk); then a planned failover
 * while all of them read the survivor. */
static void test_sigkill_a_relay_then_planned_failover(void **state)
{
    (void)state;
    fleet f;
    setup_fleet(&f, "fleet_sigkill");
    assert_true(kill_a_relay(&f, SIGKILL) > 0);
    fail_over(&f, PLANNED_FAILOVER);
    check_everything(&f);
    teardown_fleet(&f);
}

/* The last retry: a client got (the one of the final chunk on SIGTERM). */
static int last_retry(const rh_conn *c)
{
    const char *p = c->buf, *last = NULL;
    while ((p = strstr(p, "retry: ")) != NULL)
        last = p++;
    return last ? atoi(last + 7) : -1;
}

/* Relays started in the same second draw their SIGTERM retry: jitter
 * independently. Four relays (hub mode: no Redis needed), one client each,
 * SIGTERM: with independent draws from 1000..5000 ms, all four within
 * 100 ms of each other has a probability of about 1e-4. Before
 * mae__rand_seed the generator was seeded with (time(NULL) << 20) ^
 * getpid(), whose first xorshift draw barely depends on either: the four
 * were within a few ms every time. */
static void test_first_retry_differs_across_relays(void **state)
{
    (void)state;
    char dir[512];
    rh_out_dir("fleet_jitter", dir, sizeof dir);
    rh_relay r[4];
    rh_conn *c[4];
    for (int i = 0; i < 4; i++) {
        char log[600];
        snprintf(log, sizeof log, "%s/relay-%d.log", dir, i + 1);
        assert_int_equal(rh_hub_start(&r[i], NULL, NULL, log), 0);
        c[i] = rh_get(r[i].port, PATH, NULL);
        assert_non_null(c[i]);
        assert_true(rh_wait_for(c[i], 0, "retry: 3000\n", 5000) >= 0);
    }
    int lo = 1 << 30, hi = -1;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(rh_relay_stop(&r[i], SIGTERM, 10000, NULL), 0);
        assert_true(rh_wait_eof(c[i], 5000));
        int retry = last_retry(c[i]);
        print_message("relay %d: its one client got retry %d ms on SIGTERM\n", i + 1,
                      retry);
        assert_true(retry >= 1000 && retry <= 5000);
        lo = retry < lo ? retry : lo;
        hi = retry > hi ? retry : hi;
        rh_close(c[i]);
    }
    print_message("the four first draws span %d ms\n", hi - lo);
    assert_true(hi - lo > 100);
}

/* The default group runs the fleet; "jitter" is the retry spread above
 * (its own CTest entry). */
int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigterm_a_relay_then_kill_the_master),
        cmocka_unit_test(test_sigkill_a_relay_then_planned_failover),
    };
    const struct CMUnitTest jitter[] = {
        cmocka_unit_test(test_first_retry_differs_across_relays),
    };
    if (argc > 1 && strcmp(argv[1], "jitter") == 0)
        return cmocka_run_group_tests_name("jitter", jitter, NULL, NULL);
    return cmocka_run_group_tests_name("fleet", tests, NULL, NULL);
}
