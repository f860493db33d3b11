/* This module implements part 5: the process's resident memory while Redis
 * is down and events keep coming at a steady rate (it must stay at the
 * queue's bound), and after Redis comes back (the queue drains, RSS stops). */
#include <stdio.h>
#include <string.h>

#include <mailagent/events.h>

#include "bench.h"

#define SAMPLE_NS 100000000u   /* 100 ms */
#define TICK_NS 1000000u       /* publish in 1 ms slices to hold the rate */

typedef struct pacer {
    mae_publisher *p;
    int rate;
    uint64_t start, next_tick, next_sample, sent;
    int64_t id;
} pacer;

static void record(mem_result *m, pacer *pc, uint64_t t, const mae_publisher_stats *st,
                   uint64_t rss)
{
    if (m->nseries < sizeof m->series / sizeof m->series[0]) {
        m->series[m->nseries].t = (float)((double)(t - pc->start) / 1e9);
        m->series[m->nseries].rss_kib = (uint32_t)rss;
        m->series[m->nseries].queued = (uint32_t)st->queued;
        m->nseries++;
    }
}

/* Publishes at pc->rate for secs seconds, sampling RSS and the queue every
 * 100 ms; on_sample sees each sample. */
static void run_for(mem_result *m, pacer *pc, double secs, const char *phase,
                    void (*on_sample)(mem_result *, uint64_t, const mae_publisher_stats *, uint64_t,
                                      void *),
                    void *arg)
{
    uint64_t end = now_ns() + (uint64_t)(secs * 1e9);
    for (;;) {
        uint64_t t = now_ns();
        if (t >= end)
            break;
        /* Catch up to where the rate says we should be (ticks can be late). */
        uint64_t due = (uint64_t)((double)(t - pc->start) / 1e9 * pc->rate);
        while (pc->sent < due) {
            mae_safe_publish(pc->p, BENCH_EVENT, ++pc->id, BENCH_DATA, BENCH_SOURCE);
            pc->sent++;
        }
        if (t >= pc->next_sample) {
            mae_publisher_stats st;
            mae_publisher_stats_get(pc->p, &st);
            uint64_t rss = rss_kib();
            record(m, pc, t, &st, rss);
            if (rss > m->rss_peak_kib)
                m->rss_peak_kib = rss;
            if (st.queued > m->max_queued)
                m->max_queued = st.queued;
            if (on_sample)
                on_sample(m, t, &st, rss, arg);
            progress("part 5/5 memory: %s, %.0f s, queued %llu, RSS %.1f MiB", phase,
                     (double)(t - pc->start) / 1e9, (unsigned long long)st.queued,
                     (double)rss / 1024.0);
            pc->next_sample += SAMPLE_NS;
        }
        pc->next_tick += TICK_NS;
        if (pc->next_tick > now_ns())
            sleep_until_ns(pc->next_tick);
    }
}

typedef struct recovery {
    uint64_t restart_ns, drained_ns, threshold;
    uint64_t first_rss, last_rss;
    bool have_first;
} recovery;

static void on_recovery_sample(mem_result *m, uint64_t t, const mae_publisher_stats *st,
                               uint64_t rss, void *arg)
{
    recovery *rv = arg;
    (void)m;
    if (!rv->drained_ns && st->queued < rv->threshold)
        rv->drained_ns = t;
    /* RSS growth is judged once the backlog is gone: draining may still
     * touch pages the outage's queue had left in malloc's free lists. */
    if (rv->drained_ns) {
        if (!rv->have_first) {
            rv->first_rss = rss;
            rv->have_first = true;
        }
        rv->last_rss = rss;
    }
}

int part_memory(const bench_opts *o, bench_results *res)
{
    mem_result *m = &res->mem;
    bench_redis srv = {0};
    mae_publisher_config cfg;
    mae_publisher_stats st;
    pacer pc = {0};
    char url[64];
    int rc = -1;

    /* Learn a port Redis can come back on, then take Redis away. */
    if (redis_start(&srv, 0) != 0) {
        fprintf(stderr, "bench: cannot start redis-server\n");
        return -1;
    }
    redis_stop(&srv);

    mae_publisher_config_init(&cfg);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", srv.port);
    cfg.redis_url = url;
    cfg.channel = BENCH_CHANNEL;
    m->queue_max_events = cfg.queue_max_events;
    m->queue_max_bytes = cfg.queue_max_bytes;
    m->down_s = o->mem_down_s;
    m->rate = o->mem_rate;
    m->recover_s = o->mem_recover_s;
    reset_hwm();
    m->rss_before_kib = rss_kib();
    if (mae_publisher_open(&cfg, &pc.p) != MAE_OK)
        goto out;
    pc.rate = o->mem_rate;
    pc.start = pc.next_tick = pc.next_sample = now_ns();

    run_for(m, &pc, o->mem_down_s, "Redis down", NULL, NULL);
    mae_publisher_stats_get(pc.p, &st);
    m->rss_end_down_kib = rss_kib();
    m->queued_end_down = st.queued;
    m->queued_bytes_end_down = st.queued_bytes;
    uint64_t published0 = st.published;

    if (redis_start(&srv, srv.port) != 0) {
        fprintf(stderr, "bench: cannot restart redis-server on port %d\n", srv.port);
        goto out;
    }
    recovery rv = {0};
    rv.restart_ns = now_ns();
    rv.threshold = m->queue_max_events / 100;
    m->restart_t = (double)(rv.restart_ns - pc.start) / 1e9;
    run_for(m, &pc, o->mem_recover_s, "Redis back", on_recovery_sample, &rv);
    mae_publisher_flush(pc.p, 10000);
    mae_publisher_stats_get(pc.p, &st);
    m->rss_end_kib = rss_kib();
    m->hwm_kib = hwm_kib();
    m->queued_end = st.queued;
    m->dropped_queue_full = st.dropped_queue_full;
    m->published_after = st.published - published0;
    m->calls = st.calls;
    m->drain_s = rv.drained_ns ? (double)(rv.drained_ns - rv.restart_ns) / 1e9 : -1;
    m->rss_growth_recover_kib = rv.have_first ? (double)rv.last_rss - (double)rv.first_rss : 0;
    res->have[PART_MEMORY] = true;
    rc = 0;
out:
    mae_publisher_close(pc.p, 2000);
    redis_cleanup(&srv);
    return rc;
}
