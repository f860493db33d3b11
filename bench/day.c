/* This module implements part 4: a day of the watcher's writes (about 500
 * mails), its CPU time on the caller's thread and on the I/O thread, the
 * bytes it puts on Redis, and the headroom of the sustained rate over it. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mailagent/events.h>

#include "bench.h"

#define NOMINAL_EVENTS_PER_DAY 2000.0
/* The INFO stats query that reads the "after" figure is itself counted. */
#define INFO_QUERY_BYTES 25

/* Run time of this process's threads other than skip_a and skip_b: with the
 * caller and the subscriber left out, what remains is the I/O thread. */
static uint64_t others_runtime_ns(pid_t skip_a, pid_t skip_b)
{
    uint64_t sum = 0;
    pid_t self = getpid();
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        pid_t tid = (pid_t)atoi(e->d_name);
        if (tid <= 0 || tid == skip_a || tid == skip_b)
            continue;
        sum += task_runtime_ns(self, tid);
    }
    closedir(d);
    return sum;
}

/* One mail's day: stored, synced, two intents (Mail.app and Notion) queued
 * and carried out, one LLM run; every 50th mail fails its first fetch and
 * every 100th its first LLM run. Returns the events it announces. */
static int one_mail(mae_db *db, int64_t id)
{
    char msgid[64];
    int events = 0;
    snprintf(msgid, sizeof msgid, "<day-%lld@mail.example>", (long long)id);
    mae_email m = {id, msgid, "thread-7", "Re: invoice 2024-05", "bob@example.com", "Bob",
                   "me@example.com", NULL, "2024-05-19T10:00:00Z", "INBOX"};
    if (mae_sync_store_upsert(db, &m) != MAE_OK)
        return -1;
    if (id % 50 == 0) {
        if (mae_sync_store_mark_failed(db, id, "fetch_failed", "IMAP fetch timed out", NULL) != MAE_OK)
            return -1;
        events++;
    }
    if (mae_sync_store_mark_synced(db, id, "1f3c9a2e-7b4d-4e21-9c0a-5d8e6f7a8b9c", NULL,
                                   MAE_SOURCE_NEW_WATCHER) != MAE_OK)
        return -1;
    events++;
    static const char *const targets[2] = {"mailapp", "notion"};
    for (int t = 0; t < 2; t++) {
        int64_t oid = -1;
        if (mae_outbox_enqueue(db, id, "flag", targets[t], "{\"flagged\":true}",
                               MAE_SOURCE_AI_REVIEWED_HANDLER, &oid, NULL) != MAE_OK)
            return -1;
        if (mae_outbox_mark_done(db, oid) != MAE_OK)
            return -1;
        events += 2;
    }
    if (id % 100 == 0) {
        if (mae_llm_store_mark_failed(db, id, "upstream 529: overloaded", NULL) != MAE_OK)
            return -1;
        events++;
    }
    mae_llm_usage u = {"claude-sonnet-4", 1834, 212, 0, 0, 2310, "{\"category\":\"work\"}"};
    if (mae_llm_store_mark_success(db, id, "1f3c9a2e-7b4d-4e21-9c0a-5d8e6f7a8b9c", &u) != MAE_OK)
        return -1;
    return events + 1;
}

/* Runs the day against a fresh database; pub may be NULL (state only). */
static int run_day(const char *dir, const char *name, mae_publisher *pub, int mails,
                   double *wall, double *caller_cpu, double *process_cpu, int *events)
{
    char path[300], f[320], err[200] = "";
    mae_db *db = NULL;
    mae_db_config cfg;
    snprintf(path, sizeof path, "%s/%s.db", dir, name);
    mae_db_config_init(&cfg);
    cfg.path = path;
    cfg.publisher = pub;
    cfg.error_buf = err;
    cfg.error_buf_size = sizeof err;
    if (mae_db_open(&cfg, &db) != MAE_OK) {
        fprintf(stderr, "bench: mae_db_open: %s\n", err);
        return -1;
    }
    int rc = 0;
    *events = 0;
    double c0 = cpu_thread_s(), p0 = cpu_process_s();
    uint64_t t0 = now_ns();
    for (int i = 1; i <= mails && rc == 0; i++) {
        int e = one_mail(db, i);
        if (e < 0) {
            fprintf(stderr, "bench: day, mail %d: %s\n", i, mae_db_errmsg(db));
            rc = -1;
        }
        *events += e;
    }
    *wall = (double)(now_ns() - t0) / 1e9;
    *caller_cpu = cpu_thread_s() - c0;
    *process_cpu = cpu_process_s() - p0;
    mae_db_close(db);
    unlink(path);
    snprintf(f, sizeof f, "%s-wal", path);
    unlink(f);
    snprintf(f, sizeof f, "%s-shm", path);
    unlink(f);
    return rc;
}

int part_day(const bench_opts *o, bench_results *res)
{
    day_result *d = &res->day;
    bench_redis srv = {0};
    bench_sub *sub = NULL;
    mae_publisher *pub = NULL;
    mae_publisher_config cfg;
    mae_publisher_stats st;
    char url[64], dir[256];
    int rc = -1, events = 0;
    uint64_t in0 = 0, in1 = 0;

    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/mae-bench-day.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("bench: mkdtemp");
        return -1;
    }
    if (redis_start(&srv, 0) != 0 || !(sub = sub_open(srv.port, BENCH_CHANNEL))) {
        fprintf(stderr, "bench: cannot start redis-server and its subscriber\n");
        goto out;
    }
    d->mails = o->day_mails;

    progress("part 4/5 daily profile: %d mails, publisher absent", o->day_mails);
    if (run_day(dir, "absent", NULL, o->day_mails, &d->wall_s[0], &d->caller_cpu_s[0],
                &d->process_cpu_s[0], &events) != 0)
        goto out;

    mae_publisher_config_init(&cfg);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", srv.port);
    cfg.redis_url = url;
    cfg.channel = BENCH_CHANNEL;
    if (mae_publisher_open(&cfg, &pub) != MAE_OK)
        goto out;
    sub_reset(sub);
    pid_t me = bench_gettid();
    if (redis_info_u64(srv.port, "stats", "total_net_input_bytes", &in0) != 0)
        goto out;
    uint64_t io0 = others_runtime_ns(me, sub_tid(sub));
    uint64_t redis0 = task_runtime_ns(srv.pid, 0);
    uint64_t sub0 = task_runtime_ns(getpid(), sub_tid(sub));
    progress("part 4/5 daily profile: %d mails, publisher healthy", o->day_mails);
    if (run_day(dir, "healthy", pub, o->day_mails, &d->wall_s[1], &d->caller_cpu_s[1],
                &d->process_cpu_s[1], &events) != 0)
        goto out;
    mae_publisher_flush(pub, 10000);
    sub_wait(sub, (uint64_t)events, 1000, 10000);
    d->io_thread_cpu_s = (double)(others_runtime_ns(me, sub_tid(sub)) - io0) / 1e9;
    d->redis_cpu_s = (double)(task_runtime_ns(srv.pid, 0) - redis0) / 1e9;
    d->sub_cpu_s = (double)(task_runtime_ns(getpid(), sub_tid(sub)) - sub0) / 1e9;
    if (redis_info_u64(srv.port, "stats", "total_net_input_bytes", &in1) != 0)
        goto out;
    mae_publisher_stats_get(pub, &st);
    d->events = (uint64_t)events;
    d->calls = st.calls;
    d->published = st.published;
    d->line_bytes = sub_bytes(sub);
    d->resp_bytes = sub_resp_bytes(sub);
    d->net_input_bytes = in1 - in0 - INFO_QUERY_BYTES;
    if (res->have[PART_THROUGHPUT])
        d->headroom = res->tput.ours_eps * 86400.0 / NOMINAL_EVENTS_PER_DAY;
    res->have[PART_DAY] = true;
    rc = 0;
out:
    mae_publisher_close(pub, 5000);
    sub_close(sub);
    redis_cleanup(&srv);
    rmdir(dir);
    return rc;
}
