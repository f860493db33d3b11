/* This module implements parts 6 and 7: what an idle publisher costs (the
 * I/O thread's wake-ups and CPU over a quiet spell, from /proc) and how
 * fast an isolated event, the library's real load, reaches Redis and a
 * subscriber after the call. */
#include <dirent.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <mailagent/events.h>

#include "bench.h"

/* ---- the I/O thread's id and its context switches ---------------------------- */

static int list_threads(pid_t *ids, int max)
{
    int n = 0;
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return 0;
    for (struct dirent *e; (e = readdir(d)) && n < max;)
        if (e->d_name[0] != '.')
            ids[n++] = (pid_t)atoi(e->d_name);
    closedir(d);
    return n;
}

int open_with_tid(const mae_publisher_config *cfg, mae_publisher **out, pid_t *tid)
{
    pid_t before[256], after[256];
    int nb = list_threads(before, 256);
    int rc = mae_publisher_open(cfg, out);
    if (rc != MAE_OK)
        return rc;
    int na = list_threads(after, 256);
    *tid = 0;
    for (int i = 0; i < na && !*tid; i++) {
        bool old = false;
        for (int j = 0; j < nb && !old; j++)
            old = after[i] == before[j];
        if (!old)
            *tid = after[i];
    }
    return MAE_OK;
}

void ctxt_switches(pid_t tid, uint64_t *vol, uint64_t *invol)
{
    char path[96], line[160];
    unsigned long long v = 0, iv = 0;
    snprintf(path, sizeof path, "/proc/self/task/%d/status", (int)tid);
    FILE *f = fopen(path, "r");
    if (f) {
        while (fgets(line, sizeof line, f)) {
            sscanf(line, "voluntary_ctxt_switches: %llu", &v);
            sscanf(line, "nonvoluntary_ctxt_switches: %llu", &iv);
        }
        fclose(f);
    }
    *vol = v;
    *invol = iv;
}

static int open_healthy(int port, mae_publisher **p, pid_t *tid)
{
    char url[64];
    mae_publisher_config cfg;
    mae_publisher_config_init(&cfg);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    cfg.redis_url = url;
    cfg.channel = BENCH_CHANNEL;
    if (open_with_tid(&cfg, p, tid) != MAE_OK || *tid == 0) {
        fprintf(stderr, "bench: cannot open the publisher or find its I/O thread\n");
        return -1;
    }
    return 0;
}

/* ---- part 6: idle ----------------------------------------------------------------- */

int part_idle(const bench_opts *o, bench_results *res)
{
    bench_redis srv = {0};
    mae_publisher *p = NULL;
    pid_t tid = 0;
    idle_result *r = &res->idle;
    int rc = -1;

    if (redis_start(&srv, 0) != 0) {
        fprintf(stderr, "bench: cannot start redis-server\n");
        return -1;
    }
    if (open_healthy(srv.port, &p, &tid) != 0)
        goto out;
    /* Connected, one event sent, then quiet: the steady state between mails. */
    mae_safe_publish(p, BENCH_EVENT, 1, BENCH_DATA, BENCH_SOURCE);
    mae_publisher_flush(p, 5000);
    sleep_ms(1000);
    progress("part 6 idle: %d s of nothing to send", o->idle_s);
    uint64_t v0, iv0, v1, iv1;
    ctxt_switches(tid, &v0, &iv0);
    uint64_t cpu0 = task_runtime_ns(getpid(), tid), t0 = now_ns();
    sleep_ms(o->idle_s * 1000);
    uint64_t cpu1 = task_runtime_ns(getpid(), tid), t1 = now_ns();
    ctxt_switches(tid, &v1, &iv1);
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    if (!st.connected)
        fprintf(stderr, "bench: the idle publisher lost its connection\n");
    r->seconds = (double)(t1 - t0) / 1e9;
    r->voluntary = v1 - v0;
    r->involuntary = iv1 - iv0;
    r->runtime_ns = cpu1 - cpu0;
    r->wakeups_per_s = (double)(r->voluntary + r->involuntary) / r->seconds;
    r->cpu_ms_per_hour = (double)r->runtime_ns / 1e6 * 3600.0 / r->seconds;
    res->have[PART_IDLE] = true;
    rc = 0;
out:
    mae_publisher_close(p, 1000);
    redis_cleanup(&srv);
    return rc;
}

/* ---- part 7: isolated events ---------------------------------------------------- */

/* ---- the machine's own wake-up hop ------------------------------------------------
 * A thread blocked in poll on an eventfd, written from another thread:
 * the time until it runs is what handing an event to another thread costs
 * on this machine at this moment, whatever the library does. */

typedef struct hop {
    int fd;
    atomic_uint_least64_t woke;
} hop;

static void *hop_main(void *arg)
{
    hop *h = arg;
    for (;;) {
        struct pollfd f = {.fd = h->fd, .events = POLLIN};
        poll(&f, 1, -1);
        uint64_t v = 0;
        if (read(h->fd, &v, sizeof v) != (ssize_t)sizeof v)
            continue;
        atomic_store(&h->woke, now_ns());
        if (v > 1)
            return NULL; /* told to stop */
    }
}

static void measure_hop(int n, int gap_ms, lat_summary *out)
{
    hop h = {.fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};
    pthread_t t;
    lat l = {0};
    if (h.fd < 0 || lat_init(&l, (size_t)n) != 0 || pthread_create(&t, NULL, hop_main, &h) != 0) {
        if (h.fd >= 0)
            close(h.fd);
        lat_free(&l);
        return;
    }
    for (int i = 0; i < n; i++) {
        sleep_ms(gap_ms);
        atomic_store(&h.woke, 0);
        uint64_t one = 1, t0 = now_ns();
        if (write(h.fd, &one, sizeof one) != (ssize_t)sizeof one)
            break;
        for (int k = 0; k < 1000 && !atomic_load(&h.woke); k++)
            sleep_ms(1);
        uint64_t t1 = atomic_load(&h.woke);
        if (t1 > t0)
            lat_add(&l, t1 - t0);
    }
    uint64_t stop = 2;
    if (write(h.fd, &stop, sizeof stop) == (ssize_t)sizeof stop)
        pthread_join(t, NULL);
    else
        pthread_detach(t);
    close(h.fd);
    *out = lat_summarise(&l);
    lat_free(&l);
}

int part_isolated(const bench_opts *o, bench_results *res)
{
    bench_redis srv = {0};
    bench_sub *sub = NULL;
    mae_publisher *p = NULL;
    pid_t tid = 0;
    isolated_result *r = &res->iso;
    lat ack = {0}, to_sub = {0};
    int rc = -1, n = o->isolated_events;

    r->events = n;
    r->gap_ms = o->isolated_gap_ms;
    if (redis_start(&srv, 0) != 0) {
        fprintf(stderr, "bench: cannot start redis-server\n");
        return -1;
    }
    sub = sub_open(srv.port, BENCH_CHANNEL);
    if (!sub || lat_init(&ack, (size_t)n) != 0 || lat_init(&to_sub, (size_t)n) != 0)
        goto out;
    if (open_healthy(srv.port, &p, &tid) != 0)
        goto out;
    mae_safe_publish(p, BENCH_EVENT, 1, BENCH_DATA, BENCH_SOURCE);
    mae_publisher_flush(p, 5000);
    sub_wait(sub, 1, 2000, 5000);

    /* To the subscriber: this thread sleeps between events and reads the
     * subscriber's receipt time afterwards, so it takes no CPU from the
     * I/O thread, Redis or the subscriber. */
    uint64_t v0, iv0, v1, iv1;
    ctxt_switches(tid, &v0, &iv0);
    uint64_t next = now_ns();
    for (int i = 0; i < n; i++) {
        next += (uint64_t)o->isolated_gap_ms * 1000000u;
        sleep_until_ns(next);
        uint64_t before = sub_count(sub);
        uint64_t t0 = now_ns();
        mae_safe_publish(p, BENCH_EVENT, 1000 + i, BENCH_DATA, BENCH_SOURCE);
        sleep_ms(o->isolated_gap_ms / 2);
        if (sub_count(sub) != before + 1) {
            r->lost++;
            continue;
        }
        lat_add(&to_sub, sub_last_ns(sub) - t0);
        if (i % 20 == 19)
            progress("part 7 isolated events: to the subscriber %d/%d", i + 1, n);
    }
    ctxt_switches(tid, &v1, &iv1);
    r->io_voluntary = v1 - v0;

    /* To Redis's acknowledgement: this thread waits in flush, which returns
     * once the I/O thread has counted the reply (the figure includes the
     * wake-up of this thread, one hop; watching the counter instead would
     * take a CPU from the threads being measured). */
    for (int i = 0; i < n; i++) {
        next += (uint64_t)o->isolated_gap_ms * 1000000u;
        sleep_until_ns(next);
        mae_publisher_stats st;
        mae_publisher_stats_get(p, &st);
        uint64_t published = st.published;
        uint64_t t0 = now_ns();
        mae_safe_publish(p, BENCH_EVENT, 5000 + i, BENCH_DATA, BENCH_SOURCE);
        int frc = mae_publisher_flush(p, 1000);
        uint64_t t1 = now_ns();
        mae_publisher_stats_get(p, &st);
        if (frc != MAE_OK || st.published != published + 1) {
            r->lost++;
            continue;
        }
        lat_add(&ack, t1 - t0);
        if (i % 20 == 19)
            progress("part 7 isolated events: to the acknowledgement %d/%d", i + 1, n);
    }
    r->ack = lat_summarise(&ack);
    r->sub = lat_summarise(&to_sub);
    progress("part 7 isolated events: the machine's thread wake-up");
    measure_hop(n, o->isolated_gap_ms / 2, &r->hop);

    /* The replaced design on the same machine at the same moment: one
     * synchronous PUBLISH per event, timed to its reply and to the
     * subscriber. What this machine's scheduler lets any design reach. */
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", srv.port, tv);
    if (c && !c->err) {
        lat sack = {0}, ssub = {0};
        if (lat_init(&sack, (size_t)n) == 0 && lat_init(&ssub, (size_t)n) == 0) {
            for (int i = 0; i < n; i++) {
                next += (uint64_t)o->isolated_gap_ms * 1000000u;
                sleep_until_ns(next);
                uint64_t before = sub_count(sub);
                uint64_t t0 = now_ns();
                redisReply *rep = redisCommand(c, "PUBLISH %s %s", BENCH_CHANNEL, "{\"replaced\":1}");
                uint64_t t1 = now_ns();
                if (!rep)
                    break;
                freeReplyObject(rep);
                lat_add(&sack, t1 - t0);
                sleep_ms(o->isolated_gap_ms / 2);
                if (sub_count(sub) == before + 1)
                    lat_add(&ssub, sub_last_ns(sub) - t0);
                if (i % 20 == 19)
                    progress("part 7 isolated events: replaced design %d/%d", i + 1, n);
            }
            r->sync_ack = lat_summarise(&sack);
            r->sync_sub = lat_summarise(&ssub);
        }
        lat_free(&sack);
        lat_free(&ssub);
    }
    if (c)
        redisFree(c);
    res->have[PART_ISOLATED] = true;
    rc = 0;
out:
    mae_publisher_close(p, 1000);
    sub_close(sub);
    lat_free(&ack);
    lat_free(&to_sub);
    redis_cleanup(&srv);
    return rc;
}
