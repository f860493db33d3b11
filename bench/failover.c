/* This module implements part 11, `failover`: the publisher through Redis
 * Sentinel while the master fails. A replicated set (three redis-server,
 * three Sentinels: tests/support/sentinel_harness) and a publisher in
 * stream mode on the redis-sentinel:// URL with wait_replicas=1, fed 500
 * events a second with each call timed. Two runs: the master SIGKILLed, and
 * a planned SENTINEL FAILOVER. Per run: when the Sentinels agreed on a new
 * master, when the publisher's first write after the fault was
 * acknowledged, the events sent again (held in flight or in the resend
 * window), lost_failover, whether the stream ended with every event once,
 * and the publish call's latency before the fault and through it. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <mailagent/events.h>

#include "bench.h"
#include "sentinel_harness.h"

#define FO_STREAM "bench:failover"
#define FO_RATE_GAP_MS 2    /* about 500 events a second */
#define FO_BEFORE_MS 2000   /* feeding before the fault */
#define FO_AFTER_MS 3000    /* and after the new master took the first write */

typedef struct feeder {
    mae_publisher *p;
    atomic_bool stop;
    atomic_bool faulted;
    atomic_int sent;
    lat before, through;
    pthread_t thread;
} feeder;

static void *feed(void *arg)
{
    feeder *f = arg;
    char data[32];
    for (int n = 1; !atomic_load(&f->stop); n++) {
        snprintf(data, sizeof data, "{\"n\":%d}", n);
        uint64_t t0 = now_ns();
        mae_safe_publish(f->p, BENCH_EVENT, n, data, BENCH_SOURCE);
        uint64_t t1 = now_ns();
        lat_add(atomic_load(&f->faulted) ? &f->through : &f->before, t1 - t0);
        atomic_store(&f->sent, n);
        sleep_ms(FO_RATE_GAP_MS);
    }
    return NULL;
}

static uint64_t published(mae_publisher *p)
{
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    return st.published;
}

/* Counts the stream's entries on redis[m] against 1..sent: missing and
 * doubled. */
static int check_stream(mts_set *s, int m, int sent, int *missing, int *doubled)
{
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", s->redis[m].port, tv);
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return -1;
    }
    redisReply *r = redisCommand(c, "XRANGE %s - +", FO_STREAM);
    unsigned char *seen = calloc((size_t)sent + 1, 1);
    *missing = *doubled = 0;
    for (size_t i = 0; r && seen && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        const char *line = r->element[i]->element[1]->element[1]->str;
        const char *q = strstr(line, "\"n\":");
        int n = q ? atoi(q + 4) : 0;
        if (n >= 1 && n <= sent && seen[n]++)
            (*doubled)++;
    }
    for (int n = 1; seen && n <= sent; n++)
        *missing += !seen[n];
    int rc = r && seen ? 0 : -1;
    free(seen);
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return rc;
}

static int one_run(int kind, failover_run *out)
{
    mts_set s;
    if (mts_start(&s) != 0) {
        fprintf(stderr, "failover: cannot start the replicated set with Sentinels\n");
        return -1;
    }
    mae_publisher_config cfg;
    mae_publisher_config_init(&cfg);
    cfg.redis_url = s.url;
    cfg.stream_key = FO_STREAM;
    cfg.wait_replicas = 1;
    cfg.wait_timeout_ms = 100;
    cfg.connect_timeout_ms = 500;
    cfg.io_timeout_ms = 1000;
    cfg.backoff_min_ms = 50;
    cfg.backoff_max_ms = 1000;
    feeder f = {0};
    int rc = -1;
    if (lat_init(&f.before, 100000) != 0 || lat_init(&f.through, 100000) != 0 ||
        mae_publisher_open(&cfg, &f.p) != MAE_OK)
        goto out;
    if (pthread_create(&f.thread, NULL, feed, &f) != 0)
        goto out_close;
    sleep_ms(FO_BEFORE_MS);

    int old = mts_master(&s);
    double t0 = now_s();
    atomic_store(&f.faulted, true);
    if (kind == 0)
        mtr_kill(&s.redis[old]);
    else
        mts_sentinel_failover(&s, 0);
    uint64_t base = published(f.p);
    out->first_write_s = out->agree_s = -1;
    int nm = -1;
    /* Both watched in one loop: the Sentinels asked every 10 ms or so,
     * the counter every millisecond. */
    for (double until = t0 + 30, next_ask = t0; now_s() < until; sleep_ms(1)) {
        if (out->first_write_s < 0 && published(f.p) > base)
            out->first_write_s = now_s() - t0;
        if (nm < 0 && now_s() >= next_ask) {
            nm = mts_wait_new_master(&s, old, 0);
            if (nm >= 0)
                out->agree_s = now_s() - t0;
            next_ask = now_s() + 0.01;
        }
        if (nm >= 0 && out->first_write_s >= 0)
            break;
    }
    sleep_ms(FO_AFTER_MS);
    atomic_store(&f.stop, true);
    pthread_join(f.thread, NULL);
    bool flushed = mae_publisher_flush(f.p, 30000) == MAE_OK;

    mae_publisher_stats st;
    mae_publisher_stats_get(f.p, &st);
    out->events = (uint64_t)atomic_load(&f.sent);
    out->resent = st.resent;
    out->lost = st.lost_failover;
    out->connects = st.connects;
    out->before = lat_summarise(&f.before);
    out->through = lat_summarise(&f.through);
    if (nm >= 0 && flushed &&
        check_stream(&s, nm, (int)out->events, &out->missing, &out->doubled) == 0)
        rc = 0;
    else
        fprintf(stderr, "failover: no new master, or the stream could not be read\n");
out_close:
    mae_publisher_close(f.p, 5000);
out:
    lat_free(&f.before);
    lat_free(&f.through);
    mts_stop(&s);
    return rc;
}

int part_failover(const bench_opts *o, bench_results *r)
{
    (void)o;
    static const char *const what[2] = {"master SIGKILLed", "SENTINEL FAILOVER"};
    for (int k = 0; k < 2; k++) {
        progress("part 11 failover: %s", what[k]);
        if (one_run(k, &r->failover.run[k]) != 0)
            return -1;
    }
    r->have[PART_FAILOVER] = true;
    return 0;
}
