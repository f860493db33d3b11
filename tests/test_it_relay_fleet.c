/* Integration test of several relays on one stream behind a proxy (issue
 * 21): a replicated Redis set with Sentinels (tests/support/
 * sentinel_harness), two publishers writing numbered events through the
 * redis-sentinel:// URL (stream mode, wait_replicas=1), two relays given
 * the same URL, a real nginx in front of them with the upstream and
 * locations of examples/sentinel/nginx.conf (and an X-Upstream header
 * naming the relay that answered), and SSE clients through nginx that
 * behave as EventSource (tests/relay/fleet_client). The faults, under
 * load:
 * - a relay stopped (SIGTERM: its clients get a retry: of 1-5 s; or
 *   SIGKILL): its clients come back through nginx to the other with their
 *   Last-Event-ID; then, every client on the survivor, the Redis master
 *   killed or failed over (SENTINEL FAILOVER);
 * - with clients on both relays, the master stopped for 3 s (SIGSTOP,
 *   SIGCONT), then a replica detached (REPLICAOF NO ONE);
 * - a relay killed and a new one started on its port, then the other
 *   stopped: every client on the new one.
 * Counted per client: events doubled, and gaps, that no reset explains
 * (none allowed), answers other than 200 (none); in the stream: every
 * acknowledged event once; the publishers' counters add up with
 * lost_failover 0. Printed (figures, not limits): the times for the
 * clients to be back and, per Redis fault, the time to the first event
 * written on the new master and, per relay, until its clients got the
 * first of those. */
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

/* A fault's moment on both clocks (the monotonic one for durations, the
 * wall clock in milliseconds, as in entry ids), and since_ms: the entries
 * the stream keeps with a later time were written on the master the
 * Sentinels named after it (the fault itself when the old master could
 * not write from then on; the Sentinels' agreement when it could). */
typedef struct fault_mark {
    const char *name;
    double t0;
    long long ms, since_ms;
    const char *since;
} fault_mark;

typedef struct fleet {
    mts_set s;
    fault_mark faults[4];
    int nfaults;
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
            /* Which relay answered (the clients record it, per event). */
            "add_header X-Upstream $upstream_addr;\n"
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
    /* Fast shutdown (SIGTERM): a graceful one (SIGQUIT) waits for a
     * worker's open connections, and a master SIGKILLed by rh_wait after
     * 5 s left its worker running, orphaned. */
    if (f->nginx > 0) {
        kill(f->nginx, SIGTERM);
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

/* Kills relay k (0 or 1) with sig while the publishers write; the clients
 * it held come back through nginx to the other. Returns how many moved. */
static int kill_a_relay(fleet *f, int k, int sig)
{
    int other = 1 - k;
    run_for(f, 1000);
    moved m = {.f = f};
    long long held = clients_on(f, k);
    for (int i = 0; i < NCLIENTS; i++)
        m.ends_before[i] = f->c[i]->ends;
    double t0 = rh_now();
    kill(f->relay[k].pid, sig);
    /* The clients that lose their stream are the ones it held; wait for
     * its exit while stepping them (a SIGTERM'd relay sends retry: first). */
    int status = -1;
    for (double until = t0 + 10; rh_now() < until;) {
        run_for(f, 20);
        if (!rh_running(f->relay[k].pid)) {
            status = 0;
            break;
        }
    }
    assert_int_equal(status, 0);
    double t_exit = rh_now() - t0;
    f->relay[k].pid = 0;
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
        print_message("%s relay %d (exited after %.2f s): client %d waited retry %d ms, back "
                      "through nginx %.2f s after its stream ended (connection %d)\n",
                      sig == SIGTERM ? "SIGTERM" : "SIGKILL", k + 1, t_exit, i, c->retry_at_end,
                      c->t_back, c->connects);
        if (sig == SIGTERM)   /* the relay's jittered retry: on SIGTERM */
            assert_true(c->retry_at_end >= 1000 && c->retry_at_end <= 5000);
        else                  /* no goodbye: the retry: of the stream's first chunk */
            assert_int_equal(c->retry_at_end, 3000);
        /* Back through nginx on the other relay. */
        assert_int_equal(c->via, f->relay[other].port);
    }
    assert_true(back);
    for (double until = rh_now() + 10; clients_on(f, other) != NCLIENTS && rh_now() < until;)
        run_for(f, 50);
    assert_int_equal(clients_on(f, other), NCLIENTS);
    return n;
}

/* The id "MS-SEQ"; false for another form. */
static bool parse_id(const char *id, mts_entry_id *out)
{
    char *end;
    out->ms = strtoll(id, &end, 10);
    if (end == id || *end != '-')
        return false;
    out->seq = strtoll(end + 1, &end, 10);
    return *end == '\0';
}

static bool kept(const mts_entry_id *ids, size_t n, const mts_entry_id *id)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ids[mid].ms < id->ms || (ids[mid].ms == id->ms && ids[mid].seq < id->seq))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && ids[lo].ms == id->ms && ids[lo].seq == id->seq;
}

/* Prints the figures of a fault once the stream on redis[master] is final
 * (an entry a rolled-back master wrote is not in it): when the first entry
 * after the mark's since_ms was written, and, per relay, when its clients
 * got their first event of those (the relay is the one nginx named for the
 * connection that brought it). Figures, not limits. */
static void report_fault(fleet *f, int master, const fault_mark *m)
{
    mts_entry_id *ids;
    size_t n;
    assert_int_equal(mts_entry_ids_after(&f->s, master, STREAM, m->since_ms, &ids, &n), 0);
    if (n == 0) {
        print_message("%s: no entry on redis[%d] after %s\n", m->name, master, m->since);
        return;
    }
    print_message("%s: the first event kept on redis[%d] written after %s has the time %.3f s "
                  "after the fault\n",
                  m->name, master, m->since, (double)(ids[0].ms - m->ms) / 1000.0);
    double lo[2] = {1e9, 1e9}, hi[2] = {-1, -1};
    char who[2][64] = {"", ""};
    for (int i = 0; i < NCLIENTS; i++) {
        const fc_client *c = f->c[i];
        const fc_event *e = NULL;
        for (size_t k = 0; !e && k < c->nev; k++) {
            mts_entry_id id;
            if (parse_id(c->ev[k].id, &id) && id.ms > m->since_ms && kept(ids, n, &id))
                e = &c->ev[k];
        }
        int r = !e ? -1 : e->via == f->relay[0].port ? 0 : e->via == f->relay[1].port ? 1 : -1;
        if (r < 0) {
            print_message("%s: client %d got no such event through a relay of ours\n", m->name, i);
            continue;
        }
        double dt = e->t - m->t0;
        lo[r] = dt < lo[r] ? dt : lo[r];
        hi[r] = dt > hi[r] ? dt : hi[r];
        size_t len = strlen(who[r]);
        snprintf(who[r] + len, sizeof who[r] - len, "%s%d", len ? "," : "", i);
    }
    for (int r = 0; r < 2; r++)
        if (hi[r] >= 0)
            print_message("%s: relay %d's clients (%s) got their first of them %.2f-%.2f s after "
                          "the fault\n",
                          m->name, r + 1, who[r], lo[r], hi[r]);
    free(ids);
}

/* Every client has an event that redis[m] holds with an id after
 * since_ms. */
static bool all_on(fleet *f, int m, long long since_ms)
{
    mts_entry_id *ids;
    size_t n;
    if (mts_entry_ids_after(&f->s, m, STREAM, since_ms, &ids, &n) != 0)
        return false;
    bool all = true;
    for (int i = 0; all && i < NCLIENTS; i++) {
        const fc_client *c = f->c[i];
        bool has = false;
        for (size_t k = c->nev; !has && k-- > 0;) {
            mts_entry_id id;
            has = parse_id(c->ev[k].id, &id) && id.ms > since_ms && kept(ids, n, &id);
        }
        all = has;
    }
    free(ids);
    return all;
}

enum redis_fault { MASTER_KILLED, PLANNED_FAILOVER, MASTER_STOPPED, REPLICA_DETACHED };
static const char *const fault_name[] = {"SIGKILL of the master", "SENTINEL FAILOVER",
                                         "SIGSTOP of the master for 3 s", "replica detached"};

/* A Redis fault while the publishers write and the clients read: every
 * client gets events written after it (after the Sentinels' agreement for
 * a planned failover: the old master goes on acknowledging for a moment).
 * A stopped master is continued 3 s after SIGSTOP, whether or not the
 * Sentinels have failed over by then; a replica is detached (REPLICAOF NO
 * ONE) once both are in sync, so one is left and writes go on. */
static void redis_fault(fleet *f, enum redis_fault fault)
{
    run_for(f, 1000);
    int old = mts_master(&f->s);
    assert_true(old >= 0);
    int detached = -1;
    if (fault == REPLICA_DETACHED) {
        /* After a failover, until the old master is a replica again (9 s
         * after a SIGSTOP), reading the clients meanwhile: an event is
         * timed when the test reads it, and this wait once made relays
         * that had followed 4.3 s after the SIGSTOP look 13.3 s late. */
        double t = rh_now();
        bool whole = false;
        for (double until = t + 30; !whole && rh_now() < until; run_for(f, 20))
            whole = mts_wait_replicas(&f->s, old, 2, 0);
        assert_true(whole);
        print_message("redis[%d] had both replicas in sync after %.2f s\n", old, rh_now() - t);
        detached = old == 2 ? 1 : 2;
    }
    beyond b = {.f = f};
    for (int p = 0; p < NPUB; p++)
        b.n[p] = atomic_load(&f->pub[p].sent);
    assert_true(f->nfaults < (int)(sizeof f->faults / sizeof f->faults[0]));
    fault_mark *m = &f->faults[f->nfaults++];
    *m = (fault_mark){fault_name[fault], rh_now(), mts_wall_ms(), 0, "the fault"};
    m->since_ms = m->ms;
    switch (fault) {
    case MASTER_KILLED:
        mtr_kill(&f->s.redis[old]);
        break;
    case PLANNED_FAILOVER:
        assert_int_equal(mts_sentinel_failover(&f->s, 0), 0);
        break;
    case MASTER_STOPPED:
        mtr_pause(&f->s.redis[old]);
        break;
    case REPLICA_DETACHED:
        assert_int_equal(mtr_command(&f->s.redis[detached], "REPLICAOF NO ONE"), 0);
        break;
    }
    /* The old master writes on until the Sentinels' agreement after a
     * planned failover, and after SIGCONT when they had not agreed by
     * then (a replica may still be its). */
    bool old_writes = fault == PLANNED_FAILOVER;
    int nm = fault == REPLICA_DETACHED ? old : -1;
    double t_agree = -1, t_cont = fault == MASTER_STOPPED ? m->t0 + 3 : -1;
    for (double until = m->t0 + 20; (nm < 0 || t_cont > 0) && rh_now() < until;) {
        run_for(f, 10);
        if (t_cont > 0 && rh_now() >= t_cont) {
            mtr_resume(&f->s.redis[old]);
            t_cont = -1;
            old_writes = true;
            /* A failover under way completes; or none comes, and the
             * master stays. */
            if (nm < 0)
                until = rh_now() + 5;
        }
        if (nm < 0 && (nm = mts_wait_new_master(&f->s, old, 0)) >= 0) {
            t_agree = rh_now() - m->t0;
            if (old_writes) {
                m->since_ms = mts_wall_ms();
                m->since = "the agreement";
            }
        }
    }
    if (t_cont > 0)
        mtr_resume(&f->s.redis[old]);
    if (fault == MASTER_STOPPED && nm < 0)
        nm = old;
    assert_true(nm >= 0);
    if (fault == REPLICA_DETACHED)
        print_message("%s: redis[%d] detached, redis[%d] stays the master\n", m->name, detached,
                      nm);
    else if (nm != old)
        print_message("%s: the Sentinels agreed on redis[%d] after %.2f s\n", m->name, nm,
                      t_agree);
    else
        print_message("%s: no failover, redis[%d] stays the master\n", m->name, nm);
    if (fault == PLANNED_FAILOVER)
        for (int p = 0; p < NPUB; p++)
            b.n[p] = atomic_load(&f->pub[p].sent);
    /* Every client gets events numbered after the fault (maybe from an old
     * master that rolls them back: report_fault tells the kept ones). */
    bool followed = fc_run_until(f->c, NCLIENTS, all_beyond, &b, 30000);
    print_message("%s: every client had events numbered after %s %.2f s after the fault\n",
                  m->name, fault == PLANNED_FAILOVER ? "the agreement" : "it", rh_now() - m->t0);
    assert_true(followed);
    if (nm == old || fault == REPLICA_DETACHED)
        return;
    /* Those may all be an old master's, written after SIGCONT and rolled
     * back: the clients are read on until each has one the new master
     * holds, so that no later wait delays the reading of them. */
    followed = false;
    for (double until = rh_now() + 30; !followed && rh_now() < until; run_for(f, 50))
        followed = all_on(f, nm, m->since_ms);
    print_message("%s: every client had an event redis[%d] holds, written after %s, %.2f s "
                  "after the fault\n",
                  m->name, nm, m->since, rh_now() - m->t0);
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
    for (int i = 0; i < f->nfaults; i++)
        report_fault(f, m, &f->faults[i]);
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
    assert_true(kill_a_relay(&f, 0, SIGTERM) > 0);
    redis_fault(&f, MASTER_KILLED);
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
    assert_true(kill_a_relay(&f, 0, SIGKILL) > 0);
    redis_fault(&f, PLANNED_FAILOVER);
    check_everything(&f);
    teardown_fleet(&f);
}

/* The master stopped for 3 s (SIGSTOP, then SIGCONT) while both relays
 * serve clients and both publishers write; once the set is whole again
 * (the old master a replica of the new one), a replica detached. */
static void test_stop_the_master_then_detach_a_replica(void **state)
{
    (void)state;
    fleet f;
    setup_fleet(&f, "fleet_stop");
    redis_fault(&f, MASTER_STOPPED);
    redis_fault(&f, REPLICA_DETACHED);
    check_everything(&f);
    teardown_fleet(&f);
}

/* A GET /healthz through nginx was answered 200 by relay k: the last
 * address in nginx's X-Upstream is its. */
static bool healthz_through_nginx_from(fleet *f, int k)
{
    char *a = rh_request(f->port, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    if (!a)
        return false;
    const char *h = strstr(a, "\r\nX-Upstream: ");
    const char *eol = h ? strstr(h + 2, "\r\n") : NULL, *colon = NULL;
    for (const char *p = h; eol && p < eol; p++)
        if (*p == ':')
            colon = p;
    bool from = strncmp(a, "HTTP/1.1 200", 12) == 0 && colon && atoi(colon + 1) == f->relay[k].port;
    free(a);
    return from;
}

/* A relay killed and a new one started on its port (where nginx sends):
 * its clients moved to the other, then the other is stopped (SIGTERM) and
 * every client comes back through nginx to the new relay with its
 * Last-Event-ID. Nothing lost or doubled across the three streams. */
static void test_restart_a_relay(void **state)
{
    (void)state;
    fleet f;
    setup_fleet(&f, "fleet_restart");
    int port = f.relay[0].port;
    assert_true(kill_a_relay(&f, 0, SIGKILL) > 0);
    char log[600], listen[64];
    snprintf(log, sizeof log, "%s/relay-1-restarted.log", f.dir);
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    const char *args[] = {"--stream", STREAM, "--ping-interval", "0.5", "--listen", listen, NULL};
    double t0 = rh_now();
    assert_int_equal(rh_relay_start(&f.relay[0], f.s.url, args, NULL, log), 0);
    assert_int_equal(f.relay[0].port, port);
    double t_up = rh_now() - t0;
    /* nginx gives a failed upstream another try after fail_timeout (5 s). */
    bool routed = false;
    for (double until = rh_now() + 20; !routed && rh_now() < until;) {
        run_for(&f, 100);
        routed = healthz_through_nginx_from(&f, 0);
    }
    print_message("relay 1 restarted on port %d: listening after %.2f s, nginx sent a request to "
                  "it %.2f s after the restart\n",
                  port, t_up, rh_now() - t0);
    assert_true(routed);
    assert_int_equal(kill_a_relay(&f, 1, SIGTERM), NCLIENTS);
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

/* The default group runs the fleet's first two cases; "faults" the stopped
 * master, the detached replica and the restarted relay; "jitter" the
 * retry spread above (each its own CTest entry, run in parallel). */
int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigterm_a_relay_then_kill_the_master),
        cmocka_unit_test(test_sigkill_a_relay_then_planned_failover),
    };
    const struct CMUnitTest faults[] = {
        cmocka_unit_test(test_stop_the_master_then_detach_a_replica),
        cmocka_unit_test(test_restart_a_relay),
    };
    const struct CMUnitTest jitter[] = {
        cmocka_unit_test(test_first_retry_differs_across_relays),
    };
    if (argc > 2)   /* a test's name, or a pattern with '*' */
        cmocka_set_test_filter(argv[2]);
    if (argc > 1 && strcmp(argv[1], "jitter") == 0)
        return cmocka_run_group_tests_name("jitter", jitter, NULL, NULL);
    if (argc > 1 && strcmp(argv[1], "faults") == 0)
        return cmocka_run_group_tests_name("faults", faults, NULL, NULL);
    return cmocka_run_group_tests_name("fleet", tests, NULL, NULL);
}
