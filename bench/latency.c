/* This module implements part 1: the publish call's latency on the caller's
 * thread with Redis healthy, slow, hung and refusing, next to the replaced
 * design (one synchronous hiredis PUBLISH per event, 2 s timeouts) run in
 * the same process against the same server state. */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <mailagent/events.h>

#include "bench.h"

const char *const state_names[ST_COUNT] = {"healthy", "slow", "hung", "refused"};

/* "slow": a side connection pauses every client for PAUSE_MS out of every
 * PAUSE_PERIOD_MS, so Redis answers late but does answer. */
#define PAUSE_MS 100
#define PAUSE_PERIOD_MS 200

/* ---- ours ------------------------------------------------------------------- */

typedef struct ours_run {
    lat samples;
    lat control;
    mae_publisher_stats st;
    uint64_t minflt;
} ours_run;

static int open_ours(int port, size_t queue_events, mae_publisher **out)
{
    char url[64], err[160] = "";
    mae_publisher_config cfg;
    mae_publisher_config_init(&cfg);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    cfg.redis_url = url;
    cfg.channel = BENCH_CHANNEL;
    /* Large enough that "healthy" measures the call, not queue-full drops. */
    cfg.queue_max_events = queue_events;
    /* The queue's memory is reserved and made resident at open: room for
     * every call of the run (a line is about 190 bytes). */
    cfg.queue_max_bytes = queue_events * 256;
    cfg.error_buf = err;
    cfg.error_buf_size = sizeof err;
    int rc = mae_publisher_open(&cfg, out);
    if (rc != MAE_OK)
        fprintf(stderr, "bench: mae_publisher_open: %s (%s)\n", mae_strerror(rc), err);
    return rc;
}

/* Times n calls of mae_safe_publish (typed = false) or of the typed builder
 * mae_publish_email_synced (typed = true); the queue is drained (healthy,
 * slow) or abandoned (hung, refused) afterwards. */
static char control_sink[256];

static int run_ours(const bench_opts *o, int port, int state, bool typed, ours_run *run)
{
    mae_publisher *p = NULL;
    size_t n = o->lat_calls, warm = 2000;
    if (lat_init(&run->samples, n) != 0 || lat_init(&run->control, n) != 0)
        return -1;
    if (open_ours(port, n + warm + 1024, &p) != MAE_OK)
        return -1;
    /* Warm-up: the first calls pay for lazy allocation in the library and
     * libc; the I/O thread gets its connection (where there is one). */
    for (size_t i = 0; i < warm; i++)
        mae_safe_publish(p, BENCH_EVENT, (int64_t)(i + 1), BENCH_DATA, BENCH_SOURCE);
    if (state == ST_HEALTHY)
        mae_publisher_flush(p, 5000);
    uint64_t f0 = minflt_thread();
    for (size_t i = 0; i < n; i++) {
        int64_t id = (int64_t)(100000 + i);
        uint64_t t0 = now_ns();
        if (typed)
            mae_publish_email_synced(p, id, "1f3c9a2e-7b4d-4e21-9c0a-5d8e6f7a8b9c", BENCH_SOURCE);
        else
            mae_safe_publish(p, BENCH_EVENT, id, BENCH_DATA, BENCH_SOURCE);
        uint64_t t1 = now_ns();
        lat_add(&run->samples, t1 - t0);
        /* The control: the same timer around a copy of a line's bytes,
         * interleaved, so it meets the same interrupts, preemptions and
         * cache traffic: the floor this machine allows any call. */
        t0 = now_ns();
        memcpy(control_sink, BENCH_DATA BENCH_DATA BENCH_DATA BENCH_DATA, 190);
        __asm__ volatile("" ::: "memory");
        t1 = now_ns();
        lat_add(&run->control, t1 - t0);
        if ((i & 65535) == 65535)
            progress("part 1/5 latency: %s, ours%s %zu/%zu calls", state_names[state],
                     typed ? " (typed builder)" : "", i + 1, n);
    }
    run->minflt = minflt_thread() - f0;
    if (state == ST_HEALTHY || state == ST_SLOW)
        mae_publisher_flush(p, 15000);
    mae_publisher_stats_get(p, &run->st);
    mae_publisher_close(p, state == ST_HEALTHY || state == ST_SLOW ? 5000 : 300);
    return 0;
}

/* ---- the replaced design ------------------------------------------------------- */

typedef struct replaced {
    int port;
    redisContext *c;
    uint64_t errors;
} replaced;

/* What the original system did per state write: build the envelope, then
 * PUBLISH on the caller's thread over a reused connection with 2 s connect
 * and I/O timeouts, reconnecting when the context has failed. */
static void replaced_publish(replaced *r, int64_t id)
{
    char line[512];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int len = snprintf(line, sizeof line,
                       "{\"event_type\":\"%s\",\"ts\":%lld.%06ld,\"internal_id\":%" PRId64
                       ",\"data\":%s,\"source\":\"%s\"}",
                       BENCH_EVENT, (long long)ts.tv_sec, ts.tv_nsec / 1000, id, BENCH_DATA,
                       BENCH_SOURCE);
    struct timeval tv = {2, 0};
    if (!r->c) {
        r->c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
        if (!r->c || r->c->err) {
            if (r->c)
                redisFree(r->c);
            r->c = NULL;
            r->errors++;
            return;
        }
        redisSetTimeout(r->c, tv);
    }
    redisReply *rep = redisCommand(r->c, "PUBLISH %s %b", BENCH_CHANNEL, line, (size_t)len);
    if (!rep || r->c->err) {
        r->errors++;
        redisFree(r->c);
        r->c = NULL;
    }
    if (rep)
        freeReplyObject(rep);
}

static int run_replaced(int port, int state, size_t max_calls, double cap_s, lat *samples,
                        uint64_t *errors, double *wall_s)
{
    replaced r = {port, NULL, 0};
    if (lat_init(samples, max_calls) != 0)
        return -1;
    uint64_t start = now_ns(), cap = (uint64_t)(cap_s * 1e9);
    for (size_t i = 0; i < max_calls && now_ns() - start < cap; i++) {
        uint64_t t0 = now_ns();
        replaced_publish(&r, (int64_t)(100000 + i));
        uint64_t t1 = now_ns();
        lat_add(samples, t1 - t0);
        if ((i & 16383) == 16383 || t1 - t0 > 100000000u)
            progress("part 1/5 latency: %s, replaced design %zu calls, %.1f s", state_names[state],
                     i + 1, (double)(t1 - start) / 1e9);
    }
    *wall_s = (double)(now_ns() - start) / 1e9;
    *errors = r.errors;
    if (r.c)
        redisFree(r.c);
    return 0;
}

/* Cold start: a publisher opened with the default bounds and timed over its
 * first calls at once, with no warm-up, as on a process that has just
 * started; the page faults are the caller thread's own. */
static int run_cold(const bench_opts *o, int port, ours_run *run)
{
    char url[64];
    mae_publisher_config cfg;
    mae_publisher *p = NULL;
    if (lat_init(&run->samples, o->cold_calls) != 0 || lat_init(&run->control, o->cold_calls) != 0)
        return -1;
    mae_publisher_config_init(&cfg);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    cfg.redis_url = url;
    cfg.channel = BENCH_CHANNEL;
    if (mae_publisher_open(&cfg, &p) != MAE_OK)
        return -1;
    uint64_t f0 = minflt_thread();
    for (size_t i = 0; i < o->cold_calls; i++) {
        uint64_t t0 = now_ns();
        mae_safe_publish(p, BENCH_EVENT, (int64_t)(i + 1), BENCH_DATA, BENCH_SOURCE);
        uint64_t t1 = now_ns();
        lat_add(&run->samples, t1 - t0);
        t0 = now_ns();
        memcpy(control_sink, BENCH_DATA BENCH_DATA BENCH_DATA BENCH_DATA, 190);
        __asm__ volatile("" ::: "memory");
        t1 = now_ns();
        lat_add(&run->control, t1 - t0);
    }
    run->minflt = minflt_thread() - f0;
    mae_publisher_stats_get(p, &run->st);
    mae_publisher_close(p, 2000);
    return 0;
}

/* ---- "slow": CLIENT PAUSE from a side connection ------------------------------ */

typedef struct pauser {
    int port;
    pthread_t thread;
    atomic_bool stop;
    atomic_uint pauses;
} pauser;

static void *pauser_main(void *arg)
{
    pauser *pz = arg;
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", pz->port, tv);
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    uint64_t next = now_ns();
    while (!atomic_load(&pz->stop)) {
        redisReply *rep = redisCommand(c, "CLIENT PAUSE %d", PAUSE_MS);
        if (!rep)
            break;
        freeReplyObject(rep);
        atomic_fetch_add(&pz->pauses, 1);
        next += (uint64_t)PAUSE_PERIOD_MS * 1000000u;
        sleep_until_ns(next);
    }
    redisFree(c);
    return NULL;
}

/* ---- the part ------------------------------------------------------------------ */

static double timer_overhead(void)
{
    lat l;
    if (lat_init(&l, 1000000) != 0)
        return 0;
    for (size_t i = 0; i < l.cap; i++) {
        uint64_t t0 = now_ns();
        uint64_t t1 = now_ns();
        lat_add(&l, t1 - t0);
    }
    double p50 = (double)lat_pct(&l, 0.5);
    lat_free(&l);
    return p50;
}

int part_latency(const bench_opts *o, bench_results *res, FILE *cdf)
{
    bench_redis srv = {0};
    pauser pz = {0};
    bool pausing = false;
    int rc = -1;

    res->timer_overhead_ns = timer_overhead();
    if (redis_start(&srv, 0) != 0) {
        fprintf(stderr, "bench: cannot start redis-server\n");
        return -1;
    }
    for (int s = 0; s < ST_COUNT; s++) {
        lat_result *lr = &res->lat[s];
        ours_run ours = {0}, typed = {0};
        lat repl = {0};

        /* Put the server in the state. */
        if (s == ST_SLOW) {
            pz.port = srv.port;
            atomic_store(&pz.stop, false);
            if (pthread_create(&pz.thread, NULL, pauser_main, &pz) != 0)
                goto out;
            pausing = true;
            sleep_ms(PAUSE_PERIOD_MS);
        } else if (s == ST_HUNG) {
            redis_hang(&srv);
        } else if (s == ST_REFUSED) {
            redis_stop(&srv);
        }

        ours_run cold = {0};
        progress("part 1/5 latency: %s, ours from a cold start", state_names[s]);
        if (run_cold(o, srv.port, &cold) != 0)
            goto out;
        lr->ours_cold = lat_summarise(&cold.samples);
        lr->control_cold = lat_summarise(&cold.control);
        lat_free(&cold.control);
        lr->minflt_cold = cold.minflt;
        lr->dropped_cold = cold.st.dropped_queue_full;
        lat_free(&cold.samples);

        progress("part 1/5 latency: %s, ours", state_names[s]);
        if (run_ours(o, srv.port, s, false, &ours) != 0 ||
            run_ours(o, srv.port, s, true, &typed) != 0)
            goto out;
        lr->ours = lat_summarise(&ours.samples);
        lr->ours_typed = lat_summarise(&typed.samples);
        lr->control = lat_summarise(&ours.control);
        lr->minflt = ours.minflt;
        lr->minflt_typed = typed.minflt;
        lr->calls = ours.st.calls;
        lr->enqueued = ours.st.enqueued;
        lr->published = ours.st.published;
        lr->dropped_queue_full = ours.st.dropped_queue_full;
        lr->dropped_disabled = ours.st.dropped_disabled;
        lr->dropped_invalid = ours.st.dropped_invalid;
        lr->dropped_send_error = ours.st.dropped_send_error;

        progress("part 1/5 latency: %s, replaced design", state_names[s]);
        bool stalls = s == ST_HUNG;
        if (run_replaced(srv.port, s, stalls ? o->replaced_stall_calls : o->lat_calls,
                         stalls ? o->replaced_stall_cap_s : o->replaced_cap_s, &repl,
                         &lr->replaced_errors, &lr->replaced_wall_s) != 0)
            goto out;
        lr->replaced = lat_summarise(&repl);

        if (cdf) {
            char title[96];
            snprintf(title, sizeof title, "ours, %s", state_names[s]);
            lat_write_cdf(&ours.samples, cdf, title);
            snprintf(title, sizeof title, "replaced, %s", state_names[s]);
            lat_write_cdf(&repl, cdf, title);
        }
        lat_free(&ours.samples);
        lat_free(&ours.control);
        lat_free(&typed.control);
        lat_free(&typed.samples);
        lat_free(&repl);

        /* Take the server out of the state. */
        if (s == ST_SLOW) {
            atomic_store(&pz.stop, true);
            pthread_join(pz.thread, NULL);
            pausing = false;
            sleep_ms(PAUSE_MS + 10);
        } else if (s == ST_HUNG) {
            redis_unhang(&srv);
        }
    }
    res->have[PART_LATENCY] = true;
    rc = 0;
out:
    if (pausing) {
        atomic_store(&pz.stop, true);
        pthread_join(pz.thread, NULL);
    }
    redis_cleanup(&srv);
    return rc;
}
