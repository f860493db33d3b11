/* This module implements part 2: sustained events per second from
 * mae_safe_publish to a subscriber that receives them, next to
 * redis-benchmark pipelining the same PUBLISH (-P 16 and -P 128) against the
 * same server and subscriber. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mailagent/events.h>

#include "bench.h"

/* The number before the last "requests per second" of redis-benchmark -q. */
static double parse_rps(const char *text)
{
    const char *hit = NULL;
    for (const char *s = text; (s = strstr(s, "requests per second")) != NULL; s++)
        hit = s;
    if (!hit)
        return 0;
    const char *e = hit;
    while (e > text && e[-1] == ' ')
        e--;
    const char *b = e;
    while (b > text && ((b[-1] >= '0' && b[-1] <= '9') || b[-1] == '.'))
        b--;
    return b < e ? strtod(b, NULL) : 0;
}

static int run_redis_benchmark(int port, size_t n, int pipeline, const char *payload,
                               bench_sub *sub, double *rps, double *sub_eps, uint64_t *received)
{
    char portbuf[16], nbuf[32], pbuf[16], out[16384];
    snprintf(portbuf, sizeof portbuf, "%d", port);
    snprintf(nbuf, sizeof nbuf, "%zu", n);
    snprintf(pbuf, sizeof pbuf, "%d", pipeline);
    char *argv[] = {"redis-benchmark", "-h", "127.0.0.1", "-p", portbuf, "-n", nbuf, "-P", pbuf,
                    "-q", "PUBLISH", BENCH_CHANNEL, (char *)payload, NULL};
    sub_reset(sub);
    int st = run_capture(argv, out, sizeof out);
    *rps = parse_rps(out);
    if (st != 0 || *rps <= 0) {
        fprintf(stderr, "bench: redis-benchmark -P %d failed (status %d): %.300s\n", pipeline, st,
                out);
        return -1;
    }
    *received = sub_wait(sub, n, 3000, 120000);
    uint64_t span = sub_last_ns(sub) - sub_first_ns(sub);
    *sub_eps = span ? (double)*received / ((double)span / 1e9) : 0;
    return 0;
}

int part_throughput(const bench_opts *o, bench_results *res)
{
    tput_result *t = &res->tput;
    bench_redis srv = {0};
    bench_sub *sub = NULL;
    mae_publisher *p = NULL;
    mae_publisher_config cfg;
    mae_publisher_stats st;
    char url[64], payload[4096];
    int rc = -1;
    size_t n = o->tput_events;

    if (redis_start(&srv, 0) != 0) {
        fprintf(stderr, "bench: cannot start redis-server\n");
        return -1;
    }
    sub = sub_open(srv.port, BENCH_CHANNEL);
    if (!sub) {
        fprintf(stderr, "bench: cannot subscribe\n");
        goto out;
    }
    mae_publisher_config_init(&cfg);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", srv.port);
    cfg.redis_url = url;
    cfg.channel = BENCH_CHANNEL;
    /* Default queue bounds: a sustained rate must not lean on a huge queue. */
    if (mae_publisher_open(&cfg, &p) != MAE_OK) {
        fprintf(stderr, "bench: cannot open the publisher\n");
        goto out;
    }
    for (int i = 0; i < 1000; i++)
        mae_safe_publish(p, BENCH_EVENT, i + 1, BENCH_DATA, BENCH_SOURCE);
    mae_publisher_flush(p, 5000);
    sub_wait(sub, 1000, 2000, 5000);
    sub_reset(sub);

    /* The caller runs flat out but never lets the queue fill: when three
     * quarters of the bound are queued it waits for the I/O thread, so the
     * figure is the sustained rate, not a count of drops. */
    size_t high = cfg.queue_max_events * 3 / 4, low = cfg.queue_max_events / 2;
    uint64_t t0 = now_ns();
    for (size_t i = 0; i < n; i++) {
        mae_safe_publish(p, BENCH_EVENT, (int64_t)(100000 + i), BENCH_DATA, BENCH_SOURCE);
        if ((i & 1023) == 1023) {
            mae_publisher_stats_get(p, &st);
            if (st.queued > high) {
                while (st.queued > low) {
                    sleep_ms(1);
                    mae_publisher_stats_get(p, &st);
                }
            }
            if ((i & 131071) == 131071)
                progress("part 2/5 throughput: ours %zu/%zu published, %llu received", i + 1,
                         n, (unsigned long long)sub_count(sub));
        }
    }
    uint64_t t_caller = now_ns();
    mae_publisher_flush(p, 120000);
    uint64_t t_acked = now_ns();
    t->received = sub_wait(sub, n, 3000, 120000);
    mae_publisher_stats_get(p, &st);
    t->events = n;
    t->dropped = st.dropped_queue_full + st.dropped_send_error + st.dropped_invalid;
    uint64_t span = sub_last_ns(sub) > t0 ? sub_last_ns(sub) - t0 : 0;
    t->ours_eps = span ? (double)t->received / ((double)span / 1e9) : 0;
    t->ours_acked_eps = (double)st.published / ((double)(t_acked - t0) / 1e9);
    t->caller_eps = (double)n / ((double)(t_caller - t0) / 1e9);
    if (sub_first_message(sub, payload, sizeof payload) != 0) {
        fprintf(stderr, "bench: the subscriber received nothing\n");
        goto out;
    }
    t->payload_len = strlen(payload);
    mae_publisher_close(p, 5000);
    p = NULL;

    progress("part 2/5 throughput: redis-benchmark -P 16 (%zu PUBLISH)", n);
    if (run_redis_benchmark(srv.port, n, 16, payload, sub, &t->rb16_eps, &t->rb16_sub_eps,
                            &t->rb16_received) != 0)
        goto out;
    progress("part 2/5 throughput: redis-benchmark -P 128 (%zu PUBLISH)", n);
    if (run_redis_benchmark(srv.port, n, 128, payload, sub, &t->rb128_eps, &t->rb128_sub_eps,
                            &t->rb128_received) != 0)
        goto out;
    res->have[PART_THROUGHPUT] = true;
    rc = 0;
out:
    mae_publisher_close(p, 1000);
    sub_close(sub);
    redis_cleanup(&srv);
    return rc;
}
