/* This module implements part 3: what publishing costs the main chain, as
 * each store write's rate and p99 with the publisher healthy, hung and
 * absent, measured in interleaved chunks so drift hits the three alike. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mailagent/events.h>

#include "bench.h"

const char *const op_names[OP_COUNT] = {"sync_store_mark_synced", "sync_store_mark_failed",
                                        "outbox_enqueue", "outbox_mark_done",
                                        "llm_store_mark_success"};
const char *const pub_state_names[PS_COUNT] = {"healthy", "hung", "absent"};

/* Ops per turn of the round robin: long enough to keep SQLite's caches warm,
 * short enough that the three states see the same machine. */
#define CHUNK 100

typedef struct ctx {
    mae_db *db;
    mae_publisher *pub;
    int64_t *outbox_ids;
    size_t enqueued;          /* outbox ids collected */
    size_t done[OP_COUNT];    /* ops run per op */
    uint64_t spent[OP_COUNT]; /* ns inside the calls */
    lat samples[OP_COUNT];
    int failures;             /* calls that did not return MAE_OK */
} ctx;

static int open_pub(int port, mae_publisher **out)
{
    char url[64];
    mae_publisher_config cfg;
    mae_publisher_config_init(&cfg);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    cfg.redis_url = url;
    cfg.channel = BENCH_CHANNEL;
    return mae_publisher_open(&cfg, out);
}

/* Creates path with n*2 mails: 1..n for the sync, outbox and LLM writes,
 * n+1..2n for the failures (each mail fails once). */
static int open_db(const char *path, mae_publisher *pub, size_t n, mae_db **out)
{
    char err[200] = "", msgid[64];
    mae_db_config cfg;
    mae_db_config_init(&cfg);
    cfg.path = path;
    cfg.publisher = pub;
    cfg.error_buf = err;
    cfg.error_buf_size = sizeof err;
    int rc = mae_db_open(&cfg, out);
    if (rc != MAE_OK) {
        fprintf(stderr, "bench: mae_db_open(%s): %s %s\n", path, mae_strerror(rc), err);
        return -1;
    }
    if (mae_db_begin(*out) != MAE_OK)
        return -1;
    for (size_t i = 1; i <= 2 * n; i++) {
        snprintf(msgid, sizeof msgid, "<bench-%zu@mail.example>", i);
        mae_email m = {(int64_t)i, msgid, "thread-1", "Quarterly report", "ann@example.com",
                       "Ann Example", "me@example.com", NULL, "2024-05-19T10:00:00Z", "INBOX"};
        rc = mae_sync_store_upsert(*out, &m);
        if (rc != MAE_OK) {
            fprintf(stderr, "bench: upsert: %s %s\n", mae_strerror(rc), mae_db_errmsg(*out));
            mae_db_rollback(*out);
            return -1;
        }
    }
    return mae_db_commit(*out) == MAE_OK ? 0 : -1;
}

/* Runs the k-th write of op on c and returns its result code. */
static int one_op(ctx *c, int op, size_t k, size_t n)
{
    int64_t id = (int64_t)k + 1;
    switch (op) {
    case OP_SYNCED:
        return mae_sync_store_mark_synced(c->db, id, "1f3c9a2e-7b4d-4e21-9c0a-5d8e6f7a8b9c", NULL,
                                          MAE_SOURCE_NEW_WATCHER);
    case OP_FAILED:
        return mae_sync_store_mark_failed(c->db, id + (int64_t)n, "failed",
                                          "IMAP fetch timed out after 30 s", NULL);
    case OP_ENQUEUE: {
        int64_t oid = -1;
        bool inserted = false;
        int rc = mae_outbox_enqueue(c->db, id, "flag", "notion", "{\"flagged\":true}",
                                    MAE_SOURCE_CLI, &oid, &inserted);
        if (rc == MAE_OK)
            c->outbox_ids[c->enqueued++] = oid;
        return rc;
    }
    case OP_DONE:
        return mae_outbox_mark_done(c->db, c->outbox_ids[k]);
    default: {
        mae_llm_usage u = {"claude-sonnet-4", 1834, 212, 0, 0, 2310, "{\"category\":\"work\"}"};
        return mae_llm_store_mark_success(c->db, id, "1f3c9a2e-7b4d-4e21-9c0a-5d8e6f7a8b9c", &u);
    }
    }
}

static void sqlite_sync_mode(mae_db *db, char *buf, size_t len)
{
    static const char *const names[] = {"OFF", "NORMAL", "FULL", "EXTRA"};
    sqlite3_stmt *st = NULL;
    snprintf(buf, len, "?");
    if (sqlite3_prepare_v2(mae_db_sqlite(db), "PRAGMA synchronous", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        int v = sqlite3_column_int(st, 0);
        snprintf(buf, len, "%s", v >= 0 && v <= 3 ? names[v] : "?");
    }
    sqlite3_finalize(st);
}

/* Runs n of one write (as many as were enqueued, for OP_DONE) in each
 * publisher state, CHUNK at a time in turn, until each has done them all or
 * spent cap ns in the calls. */
static void run_op(ctx c[PS_COUNT], int op, size_t n, uint64_t cap, const char *mode)
{
    for (unsigned round = 0;; round++) {
        bool any = false;
        /* Rotate who goes first, so a position in the round (right after
         * another database's checkpoint, say) favours no state. */
        for (int j = 0; j < PS_COUNT; j++) {
            int s = (int)((round + (unsigned)j) % PS_COUNT);
            ctx *x = &c[s];
            size_t limit = op == OP_DONE ? x->enqueued : n;
            for (int k = 0; k < CHUNK && x->done[op] < limit && x->spent[op] < cap; k++) {
                size_t i = x->done[op];
                uint64_t t0 = now_ns();
                int r = one_op(x, op, i, n);
                uint64_t t1 = now_ns();
                if (r != MAE_OK && x->failures++ < 3)
                    fprintf(stderr, "bench: %s #%zu (%s): %s %s\n", op_names[op], i,
                            pub_state_names[s], mae_strerror(r), mae_db_errmsg(x->db));
                lat_add(&x->samples[op], t1 - t0);
                x->spent[op] += t1 - t0;
                x->done[op]++;
                any = true;
            }
        }
        if (!any)
            break;
        if (round % 8 == 0)
            progress("part 3/5 store writes (synchronous=%s): %s %zu/%zu/%zu "
                     "(healthy/hung/absent)",
                     mode, op_names[op], c[0].done[op], c[1].done[op], c[2].done[op]);
    }
}

/* The figures of one write in one state: rate, percentiles, mean and SD. */
static void summarise(ctx *x, int op, struct store_cell *cell)
{
    lat *l = &x->samples[op];
    cell->ops = x->done[op];
    cell->ops_per_s = x->spent[op] ? (double)x->done[op] / ((double)x->spent[op] / 1e9) : 0;
    cell->p50_ns = (double)lat_pct(l, 0.50);
    cell->p99_ns = (double)lat_pct(l, 0.99);
    cell->mean_ns = lat_mean(l);
    double var = 0, m = cell->mean_ns;
    for (size_t i = 0; i < l->n; i++)
        var += ((double)l->ns[i] - m) * ((double)l->ns[i] - m);
    cell->sd_ns = l->n > 1 ? sqrt(var / (double)(l->n - 1)) : 0;
}

/* Runs the five writes in the three publisher states on fresh databases
 * with the given synchronous setting, filling sc. */
static int run_config(const bench_opts *o, int sync, int healthy_port, int hung_port,
                      struct store_cfg *sc)
{
    ctx c[PS_COUNT];
    char dir[256], path[PS_COUNT][300] = {{0}};
    size_t n = o->store_ops;
    /* Without fsync the writes are fast enough for every op to finish; with
     * it, each cell is bounded by its time in the calls. */
    uint64_t cap = (uint64_t)(o->store_cap_s * 1e9);
    const char *mode = sync == SYNC_FULL ? "FULL" : "NORMAL";
    int rc = -1;

    memset(c, 0, sizeof c);
    sc->cap_s = o->store_cap_s;
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/mae-bench-db.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("bench: mkdtemp");
        return -1;
    }
    for (int s = 0; s < PS_COUNT; s++) {
        snprintf(path[s], sizeof path[s], "%s/%s.db", dir, pub_state_names[s]);
        if (s == PS_HEALTHY && open_pub(healthy_port, &c[s].pub) != MAE_OK)
            goto out;
        if (s == PS_HUNG && open_pub(hung_port, &c[s].pub) != MAE_OK)
            goto out;
        c[s].outbox_ids = calloc(n, sizeof *c[s].outbox_ids);
        if (!c[s].outbox_ids)
            goto out;
        for (int op = 0; op < OP_COUNT; op++)
            if (lat_init(&c[s].samples[op], n) != 0)
                goto out;
        progress("part 3/5 store writes (synchronous=%s): creating %zu mails in %s.db", mode,
                 2 * n, pub_state_names[s]);
        if (open_db(path[s], c[s].pub, n, &c[s].db) != 0)
            goto out;
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA synchronous=%s", mode);
        if (sqlite3_exec(mae_db_sqlite(c[s].db), sql, NULL, NULL, NULL) != SQLITE_OK)
            goto out;
    }
    sqlite_sync_mode(c[PS_ABSENT].db, sc->sqlite_sync, sizeof sc->sqlite_sync);

    for (int op = 0; op < OP_COUNT; op++) {
        run_op(c, op, n, cap, mode);
        for (int s = 0; s < PS_COUNT; s++)
            summarise(&c[s], op, &sc->cell[op][s]);
    }
    for (int s = 0; s < PS_COUNT; s++) {
        mae_publisher_stats st;
        mae_publisher_stats_get(c[s].pub, &st);
        sc->enqueued[s] = st.enqueued;
        sc->dropped_queue_full[s] = st.dropped_queue_full;
        sc->published[s] = st.published;
    }
    rc = 0;
out:
    for (int s = 0; s < PS_COUNT; s++) {
        mae_db_close(c[s].db);
        mae_publisher_close(c[s].pub, s == PS_HUNG ? 300 : 5000);
        free(c[s].outbox_ids);
        for (int op = 0; op < OP_COUNT; op++)
            lat_free(&c[s].samples[op]);
        if (path[s][0]) {
            char f[1000];
            unlink(path[s]);
            snprintf(f, sizeof f, "%s-wal", path[s]);
            unlink(f);
            snprintf(f, sizeof f, "%s-shm", path[s]);
            unlink(f);
        }
    }
    rmdir(dir);
    return rc;
}

int part_stores(const bench_opts *o, bench_results *res)
{
    bench_redis healthy = {0}, hung = {0};
    int rc = -1;

    /* Two servers, so the three states can be interleaved call by call:
     * one answers, the other is SIGSTOPped for the whole part. */
    if (redis_start(&healthy, 0) != 0 || redis_start(&hung, 0) != 0) {
        fprintf(stderr, "bench: cannot start redis-server\n");
        goto out;
    }
    redis_hang(&hung);
    for (int sync = 0; sync < SYNC_COUNT; sync++)
        if (run_config(o, sync, healthy.port, hung.port, &res->store.cfg[sync]) != 0)
            goto out;
    res->have[PART_STORES] = true;
    rc = 0;
out:
    redis_cleanup(&healthy);
    redis_cleanup(&hung);
    return rc;
}
