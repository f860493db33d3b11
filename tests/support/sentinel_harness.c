/* This file implements the replicated Redis set with Sentinels of
 * sentinel_harness.h: it starts the servers through redis_harness and the
 * Sentinels itself (a Sentinel needs a writable configuration file). */
#define _GNU_SOURCE
#include "sentinel_harness.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

double mts_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static redisContext *dial(int port)
{
    struct timeval tv = {0, 300000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    return c;
}

/* Sentinels still running, killed at exit (a failed assertion skips
 * mts_stop). */
static pid_t live[16];
static bool atexit_set;

static void kill_live(void)
{
    for (int i = 0; i < 16; i++)
        if (live[i] > 0) {
            kill(live[i], SIGKILL);
            waitpid(live[i], NULL, 0);
            live[i] = 0;
        }
}

static void remember(pid_t pid, bool add)
{
    if (!atexit_set) {
        atexit(kill_live);
        atexit_set = true;
    }
    for (int i = 0; i < 16; i++)
        if (add ? live[i] == 0 : live[i] == pid) {
            live[i] = add ? pid : 0;
            return;
        }
}

static int spawn_sentinel(mtr_redis *r, int master_port)
{
    char conf[300], log[300];
    snprintf(conf, sizeof conf, "%s/sentinel.conf", r->dir);
    snprintf(log, sizeof log, "%s/sentinel.log", r->dir);
    FILE *f = fopen(conf, "w");
    if (!f)
        return -1;
    fprintf(f,
            "port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\n"
            "sentinel monitor %s 127.0.0.1 %d 2\n"
            "sentinel down-after-milliseconds %s 1000\n"
            "sentinel failover-timeout %s 5000\n"
            "sentinel parallel-syncs %s 1\n",
            r->port, r->dir, log, MTS_MASTER_NAME, master_port, MTS_MASTER_NAME,
            MTS_MASTER_NAME, MTS_MASTER_NAME);
    fclose(f);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
        }
        execl(MAE_REDIS_SERVER, MAE_REDIS_SERVER, conf, "--sentinel", (char *)NULL);
        _exit(127);
    }
    r->pid = pid;
    remember(pid, true);
    for (int i = 0; i < 250; i++) {
        redisContext *c = dial(r->port);
        if (c) {
            redisFree(c);
            return 0;
        }
        nap_ms(20);
    }
    return -1;
}

/* The value of field in a flat field/value array reply, as a number. */
static long field(const redisReply *r, const char *name)
{
    if (!r || r->type != REDIS_REPLY_ARRAY)
        return -1;
    for (size_t i = 0; i + 1 < r->elements; i += 2)
        if (r->element[i]->type == REDIS_REPLY_STRING && strcmp(r->element[i]->str, name) == 0)
            return atol(r->element[i + 1]->str);
    return -1;
}

static bool sentinel_ready(mtr_redis *sn)
{
    redisContext *c = dial(sn->port);
    if (!c)
        return false;
    redisReply *r = redisCommand(c, "SENTINEL master %s", MTS_MASTER_NAME);
    bool ok = field(r, "num-slaves") == 2 && field(r, "num-other-sentinels") == 2;
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return ok;
}

static bool replicas_in_sync(mtr_redis *m, int n)
{
    redisContext *c = dial(m->port);
    if (!c)
        return false;
    char want[32];
    snprintf(want, sizeof want, "connected_slaves:%d\r", n);
    redisReply *r = redisCommand(c, "INFO replication");
    bool ok = r && r->type == REDIS_REPLY_STRING && strstr(r->str, want) &&
              !strstr(r->str, "state=wait_bgsave") && !strstr(r->str, "state=send_bulk");
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return ok;
}

int mts_start(mts_set *s)
{
    memset(s, 0, sizeof *s);
    const char *common = "--appendonly yes --min-replicas-to-write 1 --min-replicas-max-lag 10 "
                         "--repl-diskless-sync-delay 0";
    if (mtr_start(&s->redis[0], common) != 0)
        goto fail;
    char extra[256];
    snprintf(extra, sizeof extra, "%s --replicaof 127.0.0.1 %d", common, s->redis[0].port);
    for (int i = 1; i < 3; i++)
        if (mtr_start(&s->redis[i], extra) != 0)
            goto fail;
    int off = snprintf(s->url, sizeof s->url, "redis-sentinel://");
    for (int i = 0; i < 3; i++) {
        if (mtr_reserve_port(&s->sentinel[i]) != 0 ||
            spawn_sentinel(&s->sentinel[i], s->redis[0].port) != 0)
            goto fail;
        off += snprintf(s->url + off, sizeof s->url - (size_t)off, "%s127.0.0.1:%d",
                        i ? "," : "", s->sentinel[i].port);
    }
    snprintf(s->url + off, sizeof s->url - (size_t)off, "#%s", MTS_MASTER_NAME);
    for (int tries = 0; tries < 1000; tries++) {
        bool ok = replicas_in_sync(&s->redis[0], 2);
        for (int i = 0; ok && i < 3; i++)
            ok = sentinel_ready(&s->sentinel[i]);
        if (ok)
            return 0;
        nap_ms(20);
    }
fail:
    mts_stop(s);
    return -1;
}

void mts_stop(mts_set *s)
{
    for (int i = 0; i < 3; i++) {
        mtr_redis *sn = &s->sentinel[i];
        if (sn->pid) {
            remember(sn->pid, false);
            mtr_kill(sn);
        }
        if (sn->dir[0]) {
            char path[300];
            snprintf(path, sizeof path, "%s/sentinel.conf", sn->dir);
            unlink(path);
            snprintf(path, sizeof path, "%s/sentinel.log", sn->dir);
            unlink(path);
            mtr_cleanup(sn);
        }
    }
    for (int i = 0; i < 3; i++) {
        if (s->redis[i].dir[0]) {
            /* A replica's temporary files of a sync, if any. */
            char cmd[400];
            snprintf(cmd, sizeof cmd, "rm -f %s/temp-*.rdb", s->redis[i].dir);
            int rc = system(cmd);
            (void)rc;
        }
        mtr_cleanup(&s->redis[i]);
    }
}

static int index_of_port(mts_set *s, int port)
{
    for (int i = 0; i < 3; i++)
        if (s->redis[i].port == port)
            return i;
    return -1;
}

/* What Sentinel i names as the master: an index, or -1. */
static int named_by(mts_set *s, int i)
{
    if (!s->sentinel[i].pid)
        return -1;
    redisContext *c = dial(s->sentinel[i].port);
    if (!c)
        return -1;
    redisReply *r = redisCommand(c, "SENTINEL get-master-addr-by-name %s", MTS_MASTER_NAME);
    int idx = -1;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2)
        idx = index_of_port(s, atoi(r->element[1]->str));
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return idx;
}

int mts_master(mts_set *s)
{
    for (int i = 0; i < 3; i++) {
        int idx = named_by(s, i);
        if (idx >= 0)
            return idx;
    }
    return -1;
}

bool mts_is_master(mts_set *s, int i)
{
    if (!s->redis[i].pid)
        return false;
    redisContext *c = dial(s->redis[i].port);
    if (!c)
        return false;
    redisReply *r = redisCommand(c, "ROLE");
    bool ok = r && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
              r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "master") == 0;
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return ok;
}

int mts_wait_new_master(mts_set *s, int old, int timeout_ms)
{
    double until = mts_now() + timeout_ms / 1000.0;
    for (bool first = true; first || mts_now() < until; first = false) {
        int votes[3] = {0, 0, 0};
        for (int i = 0; i < 3; i++) {
            int idx = named_by(s, i);
            if (idx >= 0 && idx != old)
                votes[idx]++;
        }
        for (int k = 0; k < 3; k++)
            if (votes[k] >= 2 && mts_is_master(s, k))
                return k;
        if (timeout_ms > 0)
            nap_ms(10);
    }
    return -1;
}

bool mts_wait_replicas(mts_set *s, int m, int n, int timeout_ms)
{
    for (double until = mts_now() + timeout_ms / 1000.0;; nap_ms(20)) {
        if (replicas_in_sync(&s->redis[m], n))
            return true;
        if (mts_now() > until)
            return false;
    }
}

int mts_entry_ids_after(const mts_set *s, int m, const char *stream, long long ms,
                        mts_entry_id **ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", s->redis[m].port, tv);
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return -1;
    }
    redisSetTimeout(c, tv);
    redisReply *r = redisCommand(c, "XRANGE %s %lld +", stream, ms + 1);
    int rc = -1;
    if (r && r->type == REDIS_REPLY_ARRAY) {
        rc = 0;
        if (r->elements > 0 && (*ids = malloc(r->elements * sizeof **ids)) == NULL)
            rc = -1;
        for (size_t i = 0; rc == 0 && i < r->elements; i++) {
            const char *id = r->element[i]->element[0]->str;
            const char *dash = strchr(id, '-');
            (*ids)[i].ms = atoll(id);
            (*ids)[i].seq = dash ? atoll(dash + 1) : 0;
        }
        *n = rc == 0 ? r->elements : 0;
    }
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return rc;
}

long long mts_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int mts_sentinel_failover(mts_set *s, int i)
{
    redisContext *c = dial(s->sentinel[i].port);
    if (!c)
        return -1;
    redisReply *r = redisCommand(c, "SENTINEL FAILOVER %s", MTS_MASTER_NAME);
    int rc = r && r->type != REDIS_REPLY_ERROR ? 0 : -1;
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return rc;
}

/* ---- a publisher writing numbered events ---- */

void mts_wait_url(const mts_set *s, char *buf, size_t size)
{
    const char *hash = strchr(s->url, '#');
    snprintf(buf, size, "%.*s?wait_replicas=1&wait_timeout_ms=100%s", (int)(hash - s->url),
             s->url, hash);
}

int mts_feeder_open(mts_feeder *f, const mts_set *s, const char *stream, const char *source)
{
    char url[320];
    mts_wait_url(s, url, sizeof url);
    return mts_feeder_open_url(f, url, stream, source);
}

int mts_feeder_open_url(mts_feeder *f, const char *url, const char *stream, const char *source)
{
    memset(f, 0, sizeof *f);
    snprintf(f->source, sizeof f->source, "%s", source);
    mae_publisher_config cfg;
    mae_publisher_config_init(&cfg);
    cfg.redis_url = url;
    cfg.stream_key = stream;
    cfg.connect_timeout_ms = 500;
    cfg.io_timeout_ms = 1000;
    cfg.backoff_min_ms = 50;
    cfg.backoff_max_ms = 1000;
    cfg.error_buf = f->err;
    cfg.error_buf_size = sizeof f->err;
    return mae_publisher_open(&cfg, &f->p);
}

static void *feed(void *arg)
{
    mts_feeder *f = arg;
    char data[32];
    for (int n = 1; !atomic_load(&f->stop); n++) {
        snprintf(data, sizeof data, "{\"n\":%d}", n);
        mae_safe_publish(f->p, "test.event", n, data, f->source);
        atomic_store(&f->sent, n);
        nap_ms(f->interval_ms);
    }
    return NULL;
}

int mts_feeder_start(mts_feeder *f, int interval_ms)
{
    f->interval_ms = interval_ms;
    atomic_store(&f->stop, false);
    if (pthread_create(&f->thread, NULL, feed, f) != 0)
        return -1;
    f->running = true;
    return 0;
}

int mts_feeder_stop(mts_feeder *f, int flush_ms)
{
    if (f->running) {
        atomic_store(&f->stop, true);
        pthread_join(f->thread, NULL);
        f->running = false;
    }
    if (mae_publisher_flush(f->p, flush_ms) != MAE_OK)
        return -1;
    return atomic_load(&f->sent);
}

int mts_feeder_close(mts_feeder *f)
{
    if (f->running) {
        atomic_store(&f->stop, true);
        pthread_join(f->thread, NULL);
        f->running = false;
    }
    int rc = mae_publisher_close(f->p, 5000);
    f->p = NULL;
    return rc;
}

/* The N of an event line's data ({"n":N}) when its source is source (any
 * when NULL); 0 for another source, -1 for none. */
static int number_of(const char *line, const char *source)
{
    if (source) {
        char want[64];
        snprintf(want, sizeof want, "\"source\":\"%s\"", source);
        if (!strstr(line, want))
            return 0;
    }
    const char *q = strstr(line, "\"n\":");
    return q ? atoi(q + 4) : -1;
}

int mts_count_stream(const mts_set *s, int m, const char *stream, const char *source, int sent,
                     mts_stream_count *out)
{
    return mts_count_stream_at(s->redis[m].port, NULL, stream, source, sent, out);
}

int mts_count_stream_at(int port, const char *password, const char *stream, const char *source,
                        int sent, mts_stream_count *out)
{
    memset(out, 0, sizeof *out);
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return -1;
    }
    redisSetTimeout(c, tv);
    if (password) {
        redisReply *a = redisCommand(c, "AUTH %s", password);
        bool ok = a && a->type != REDIS_REPLY_ERROR;
        if (a)
            freeReplyObject(a);
        if (!ok) {
            redisFree(c);
            return -1;
        }
    }
    redisReply *r = redisCommand(c, "XRANGE %s - +", stream);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        redisFree(c);
        return -1;
    }
    unsigned char *seen = calloc((size_t)sent + 1, 1);
    int prev = 0;
    for (size_t i = 0; seen && i < r->elements; i++) {
        redisReply *fields = r->element[i]->element[1];
        const char *line = fields->elements >= 2 ? fields->element[1]->str : "";
        int n = number_of(line, source);
        if (n == 0 && source)
            continue;
        out->entries++;
        if (n < 1 || n > sent) {
            out->strays++;
            continue;
        }
        if (seen[n]++)
            out->twice++;
        if (n < prev)
            out->out_of_order++;
        prev = n;
    }
    for (int n = 1; seen && n <= sent; n++)
        if (!seen[n] && !out->missing++)
            out->first_missing = n;
    free(seen);
    freeReplyObject(r);
    redisFree(c);
    return 0;
}
