/* This module implements part 8: what stream mode costs next to pub/sub
 * mode, measured side by side on one redis-server: the publish call on the
 * caller's thread, throughput to a subscriber, Redis's CPU per 100 000
 * events, and Redis's memory per 100 000 events kept in the stream. */
#include <stdio.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <mailagent/events.h>

#include "bench.h"

#define STREAM_KEY "bench:events"

static int open_mode(int port, bool stream, mae_publisher **p)
{
    char url[64];
    mae_publisher_config cfg;
    mae_publisher_config_init(&cfg);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    cfg.redis_url = url;
    cfg.channel = BENCH_CHANNEL;
    if (stream)
        cfg.stream_key = STREAM_KEY;
    return mae_publisher_open(&cfg, p) == MAE_OK ? 0 : -1;
}

static int redis_do(int port, const char *cmd)
{
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return -1;
    }
    redisReply *r = redisCommand(c, cmd);
    int rc = r && r->type != REDIS_REPLY_ERROR ? 0 : -1;
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return rc;
}

/* Publishes n events flat out but never lets the queue pass three quarters
 * of its bound (the sustained rate, not drops); times each call into l
 * when l is not NULL. */
static void paced(mae_publisher *p, size_t n, lat *l)
{
    mae_publisher_stats st;
    mae_publisher_config cfg;
    mae_publisher_config_init(&cfg);
    size_t high = cfg.queue_max_events * 3 / 4, low = cfg.queue_max_events / 2;
    for (size_t i = 0; i < n; i++) {
        uint64_t t0 = now_ns();
        mae_safe_publish(p, BENCH_EVENT, (int64_t)(100000 + i), BENCH_DATA, BENCH_SOURCE);
        uint64_t t1 = now_ns();
        if (l)
            lat_add(l, t1 - t0);
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

static int run_mode(const bench_opts *o, bench_redis *srv, bench_sub *sub, bool stream,
                    stream_mode_result *m)
{
    mae_publisher *p = NULL;
    lat l = {0};
    uint64_t mem0, mem1;
    int rc = -1;
    const char *name = stream ? "stream" : "pub/sub";

    redis_do(srv->port, "DEL " STREAM_KEY);
    if (open_mode(srv->port, stream, &p) != 0 || lat_init(&l, o->stream_events) != 0)
        goto out;
    mae_safe_publish(p, BENCH_EVENT, 1, BENCH_DATA, BENCH_SOURCE);
    mae_publisher_flush(p, 5000);
    sub_wait(sub, 1, 2000, 5000);

    /* Memory: 100 000 events into an empty stream (in pub/sub mode Redis
     * keeps nothing; the figure shows it). */
    progress("part 8 stream mode: %s, 100 000 events kept", name);
    redis_do(srv->port, "DEL " STREAM_KEY);
    redis_info_u64(srv->port, "memory", "used_memory", &mem0);
    paced(p, 100000, NULL);
    mae_publisher_flush(p, 60000);
    redis_info_u64(srv->port, "memory", "used_memory", &mem1);
    m->mem_per_100k = mem1 > mem0 ? mem1 - mem0 : 0;

    /* Throughput and Redis's CPU, with every call timed. */
    progress("part 8 stream mode: %s, %zu events to a subscriber", name, o->stream_events);
    sub_wait(sub, 100001, 1000, 10000);
    sub_reset(sub);
    uint64_t cpu0 = task_runtime_ns(srv->pid, 0), t0 = now_ns();
    paced(p, o->stream_events, &l);
    mae_publisher_flush(p, 120000);
    uint64_t got = sub_wait(sub, o->stream_events, 3000, 120000);
    uint64_t cpu1 = task_runtime_ns(srv->pid, 0);
    uint64_t span = sub_last_ns(sub) > t0 ? sub_last_ns(sub) - t0 : 0;
    m->events = o->stream_events;
    m->received = got;
    m->eps = span ? (double)got / ((double)span / 1e9) : 0;
    m->redis_cpu_ms_per_100k = (double)(cpu1 - cpu0) / 1e6 * 100000.0 / (double)o->stream_events;
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

int part_stream(const bench_opts *o, bench_results *res)
{
    bench_redis srv = {0};
    bench_sub *sub = NULL;
    int rc = -1;

    if (redis_start(&srv, 0) != 0) {
        fprintf(stderr, "bench: cannot start redis-server\n");
        return -1;
    }
    sub = sub_open(srv.port, BENCH_CHANNEL);
    if (!sub)
        goto out;
    if (run_mode(o, &srv, sub, false, &res->stream.mode[0]) != 0 ||
        run_mode(o, &srv, sub, true, &res->stream.mode[1]) != 0)
        goto out;
    res->have[PART_STREAM] = true;
    rc = 0;
out:
    sub_close(sub);
    redis_cleanup(&srv);
    return rc;
}
