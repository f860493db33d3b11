/* This module implements the `mae_bench` command: it runs the eight parts,
 * prints the aligned table with each target marked met or missed, writes
 * the raw figures to results/latest.json, draws results/latency.png with
 * gnuplot, and ends with a one-line summary. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <mailagent/events.h>

#include "bench.h"

/* Targets (figures to report against, not pass/fail). */
#define TARGET_P50_NS 1000.0
#define TARGET_P99_NS 5000.0
#define TARGET_P999_NS 2000.0     /* warm and from a cold start, every state */
#define TARGET_HUNG_RATIO 1e5
#define TARGET_TPUT_RATIO 1.0
#define TARGET_OVERHEAD_PCT 2.0
#define TARGET_IDLE_WAKEUPS 1.0   /* per second */
#define TARGET_ISOLATED_P99_NS 200000.0

static void on_signal(int sig)
{
    /* Never leave a redis-server (possibly SIGSTOPped) behind. */
    redis_kill_all();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mae_bench [--quick | --full] [--results DIR] [--plot FILE] [--only 1,2,3,4,5,6,7,8]\n"
            "  --quick  part 5 keeps Redis down 15 s (default); fewer replaced calls where it stalls\n"
            "  --full   part 5 keeps Redis down 60 s, 500 000 calls per state, 2 000 000 events\n");
}

static void set_quick(bench_opts *o)
{
    o->full = false;
    o->lat_calls = 200000;
    o->cold_calls = 20000;
    o->idle_s = 10;
    o->isolated_events = 200;
    o->isolated_gap_ms = 100;
    o->stream_events = 300000;
    o->replaced_cap_s = 5;
    o->replaced_stall_calls = 300;
    o->replaced_stall_cap_s = 10;
    o->tput_events = 1000000;
    o->store_ops = 20000;
    o->store_cap_s = 3;
    o->day_mails = 500;
    o->mem_down_s = 15;
    o->mem_rate = 20000;
    o->mem_recover_s = 12;
}

static void set_full(bench_opts *o)
{
    set_quick(o);
    o->full = true;
    o->lat_calls = 500000;
    o->isolated_events = 300;
    o->stream_events = 1000000;
    o->replaced_cap_s = 10;
    o->replaced_stall_cap_s = 20;
    o->tput_events = 2000000;
    o->store_cap_s = 5;
    o->mem_down_s = 60;
    o->mem_recover_s = 20;
}

/* ---- verdicts ------------------------------------------------------------------ */

static const char *mark(bool met)
{
    return met ? "met" : "MISSED";
}

static double ratio(double replaced, double ours)
{
    return ours > 0 ? replaced / ours : 0;
}

static double hung_ratio(const bench_results *r)
{
    const lat_result *h = &r->lat[ST_HUNG];
    double a = ratio(h->replaced.p50, h->ours.p50), b = ratio(h->replaced.p99, h->ours.p99);
    return a < b ? a : b;
}

static double overhead_pct(const struct store_cfg *s, int op, int ps)
{
    double base = s->cell[op][PS_ABSENT].mean_ns;
    return base > 0 ? (s->cell[op][ps].mean_ns / base - 1) * 100 : 0;
}

/* The 95 % half-width of that overhead, from the standard errors of the two
 * means: what fsync's jitter lets the measurement resolve. */
static double overhead_ci(const struct store_cfg *s, int op, int ps)
{
    const double za = s->cell[op][PS_ABSENT].sd_ns, zb = s->cell[op][ps].sd_ns;
    double na = (double)s->cell[op][PS_ABSENT].ops, nb = (double)s->cell[op][ps].ops;
    double base = s->cell[op][PS_ABSENT].mean_ns;
    if (base <= 0 || na < 2 || nb < 2)
        return 0;
    return 1.96 * sqrt(za * za / na + zb * zb / nb) / base * 100;
}

/* The overhead of the five writes together: each weighted as one call. */
static double overhead_all(const struct store_cfg *s, int ps)
{
    double base = 0, with = 0;
    for (int op = 0; op < OP_COUNT; op++) {
        base += s->cell[op][PS_ABSENT].mean_ns;
        with += s->cell[op][ps].mean_ns;
    }
    return base > 0 ? (with / base - 1) * 100 : 0;
}

static double overhead_all_ci(const struct store_cfg *s, int ps)
{
    double base = 0, var = 0;
    for (int op = 0; op < OP_COUNT; op++) {
        double na = (double)s->cell[op][PS_ABSENT].ops, nb = (double)s->cell[op][ps].ops;
        double sa = s->cell[op][PS_ABSENT].sd_ns, sb = s->cell[op][ps].sd_ns;
        base += s->cell[op][PS_ABSENT].mean_ns;
        if (na >= 2 && nb >= 2)
            var += sa * sa / na + sb * sb / nb;
    }
    return base > 0 ? 1.96 * sqrt(var) / base * 100 : 0;
}

static bool store_cfg_met(const struct store_cfg *s)
{
    return overhead_all(s, PS_HEALTHY) < TARGET_OVERHEAD_PCT &&
           overhead_all(s, PS_HUNG) < TARGET_OVERHEAD_PCT;
}

/* Met when the five writes together stay under the target with either
 * synchronous setting, publisher healthy or hung. */
static bool store_met(const store_result *s)
{
    return store_cfg_met(&s->cfg[SYNC_FULL]) && store_cfg_met(&s->cfg[SYNC_NORMAL]);
}

static bool latency_met(const lat_result *l)
{
    return l->ours.p50 <= TARGET_P50_NS && l->ours.p99 <= TARGET_P99_NS &&
           l->ours.p999 <= TARGET_P999_NS && l->ours_cold.p999 <= TARGET_P999_NS;
}

static bool idle_met(const idle_result *i)
{
    return i->wakeups_per_s <= TARGET_IDLE_WAKEUPS;
}

static bool isolated_met(const isolated_result *i)
{
    return i->lost == 0 && i->ack.p99 <= TARGET_ISOLATED_P99_NS &&
           i->sub.p99 <= TARGET_ISOLATED_P99_NS;
}

/* ---- the table ------------------------------------------------------------------- */

static void machine(char *buf, size_t len)
{
    char model[128] = "?", line[256], ver[256] = "";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        while (fgets(line, sizeof line, f)) {
            char *c = strchr(line, ':');
            if (strncmp(line, "model name", 10) == 0 && c) {
                snprintf(model, sizeof model, "%s", c + 2);
                model[strcspn(model, "\n")] = 0;
                break;
            }
        }
        fclose(f);
    }
    char *argv[] = {"redis-server", "--version", NULL};
    if (run_capture(argv, ver, sizeof ver) == 0) {
        char *v = strstr(ver, "v=");
        if (v) {
            v[strcspn(v, " \n")] = 0;
            memmove(ver, v + 2, strlen(v + 2) + 1);
        }
    }
    struct utsname u;
    uname(&u);
    snprintf(buf, len, "%ld CPUs (%s), Linux %s, redis-server %s, hiredis on loopback",
             sysconf(_SC_NPROCESSORS_ONLN), model, u.release, ver[0] ? ver : "?");
}

static void print_latency(const bench_opts *o, bench_results *r)
{
    char a[5][32];
    printf("\n1. Publish call on the caller's thread (ours: %zu calls of mae_safe_publish per state;\n"
           "   replaced: one synchronous hiredis PUBLISH per event, 2 s timeouts). Each figure\n"
           "   includes the timer's own overhead of %.0f ns.\n",
           o->lat_calls, r->timer_overhead_ns);
    printf("   %-8s %-9s %8s %9s %9s %9s %9s %12s %11s  %s\n", "redis", "design", "calls", "p50",
           "p99", "p99.9", "max", "drops q/s/i", "ratio p50", "p50<=1us p99<=5us p99.9<=2us");
    for (int s = 0; s < ST_COUNT; s++) {
        lat_result *l = &r->lat[s];
        char drops[40];
        snprintf(drops, sizeof drops, "%llu/%llu/%llu", (unsigned long long)l->dropped_queue_full,
                 (unsigned long long)l->dropped_send_error, (unsigned long long)l->dropped_invalid);
        printf("   %-8s %-9s %8zu %9s %9s %9s %9s %12s %11s  %s\n", state_names[s], "ours",
               l->ours.n, fmt_ns(l->ours.p50, a[0], 32), fmt_ns(l->ours.p99, a[1], 32),
               fmt_ns(l->ours.p999, a[2], 32), fmt_ns(l->ours.max, a[3], 32), drops, "",
               mark(latency_met(l)));
        char rt[32];
        snprintf(rt, sizeof rt, "%sx", fmt_num(ratio(l->replaced.p50, l->ours.p50), a[4], 32));
        printf("   %-8s %-9s %8zu %9s %9s %9s %9s %12llu %11s  %s\n", "", "replaced",
               l->replaced.n, fmt_ns(l->replaced.p50, a[0], 32), fmt_ns(l->replaced.p99, a[1], 32),
               fmt_ns(l->replaced.p999, a[2], 32), fmt_ns(l->replaced.max, a[3], 32),
               (unsigned long long)l->replaced_errors, rt,
               s == ST_HUNG ? (hung_ratio(r) >= TARGET_HUNG_RATIO ? "ratio >= 1e5: met"
                                                                   : "ratio >= 1e5: MISSED")
                            : "");
    }
    printf("   control (a 190-byte copy timed the same way, interleaved with ours) p50/p99/p99.9:");
    for (int s = 0; s < ST_COUNT; s++)
        printf(" %s %s/%s/%s%s", state_names[s], fmt_ns(r->lat[s].control.p50, a[0], 32),
               fmt_ns(r->lat[s].control.p99, a[1], 32), fmt_ns(r->lat[s].control.p999, a[2], 32),
               s + 1 < ST_COUNT ? "," : "\n");
    printf("   from a cold start (the first %zu calls on a publisher just opened, default bounds),\n"
           "   p50/p99/p99.9/max and minor page faults on the caller's thread per 1000 calls:\n",
           o->cold_calls);
    for (int s = 0; s < ST_COUNT; s++) {
        const lat_result *l = &r->lat[s];
        printf("   %-8s %9s %9s %9s %9s  faults %.2f  control p99.9 %s  %s\n", state_names[s],
               fmt_ns(l->ours_cold.p50, a[0], 32), fmt_ns(l->ours_cold.p99, a[1], 32),
               fmt_ns(l->ours_cold.p999, a[2], 32), fmt_ns(l->ours_cold.max, a[3], 32),
               l->ours_cold.n ? 1000.0 * (double)l->minflt_cold / (double)l->ours_cold.n : 0,
               fmt_ns(l->control_cold.p999, a[4], 32), mark(l->ours_cold.p999 <= TARGET_P999_NS));
    }
    printf("   typed builder mae_publish_email_synced, p50/p99:");
    for (int s = 0; s < ST_COUNT; s++)
        printf(" %s %s/%s%s", state_names[s], fmt_ns(r->lat[s].ours_typed.p50, a[0], 32),
               fmt_ns(r->lat[s].ours_typed.p99, a[1], 32), s + 1 < ST_COUNT ? "," : "\n");
    printf("   minor page faults on the caller's thread per 1000 calls, mae_safe_publish (first run)\n"
           "   / typed builder (second run), after 2000 warm-up calls:");
    for (int s = 0; s < ST_COUNT; s++)
        printf(" %s %.1f/%.1f%s", state_names[s],
               r->lat[s].ours.n ? 1000.0 * (double)r->lat[s].minflt / (double)r->lat[s].ours.n : 0,
               r->lat[s].ours_typed.n
                   ? 1000.0 * (double)r->lat[s].minflt_typed / (double)r->lat[s].ours_typed.n
                   : 0,
               s + 1 < ST_COUNT ? "," : "\n");
    printf("   drops q/s/i = queue full / send error / invalid (ours); errors (replaced).\n"
           "   slow = CLIENT PAUSE 100 ms every 200 ms; hung = SIGSTOP; refused = no server.\n");
}

static void print_throughput(bench_results *r)
{
    tput_result *t = &r->tput;
    char a[3][32];
    double rt = t->rb16_eps > 0 ? t->ours_eps / t->rb16_eps : 0;
    printf("\n2. Throughput to a subscriber (%zu-byte payload, one SUBSCRIBE connection counting)\n",
           t->payload_len);
    printf("   %-44s %9s %9s %12s %8s  %s\n", "source", "events", "received", "events/s", "ratio",
           "target >= 1.0x -P16");
    printf("   %-44s %9llu %9llu %12s %7.2fx  %s\n", "ours: mae_safe_publish -> subscriber",
           (unsigned long long)t->events, (unsigned long long)t->received,
           fmt_num(t->ours_eps, a[0], 32), rt, mark(rt >= TARGET_TPUT_RATIO));
    printf("   %-44s %9llu %9s %12s\n", "redis-benchmark -P 16 PUBLISH (its figure)",
           (unsigned long long)t->events, "", fmt_num(t->rb16_eps, a[0], 32));
    printf("   %-44s %9llu %9llu %12s\n", "  as the subscriber saw it", (unsigned long long)t->events,
           (unsigned long long)t->rb16_received, fmt_num(t->rb16_sub_eps, a[0], 32));
    printf("   %-44s %9llu %9s %12s %7.2fx\n", "redis-benchmark -P 128 PUBLISH (its figure)",
           (unsigned long long)t->events, "", fmt_num(t->rb128_eps, a[0], 32),
           t->rb128_eps > 0 ? t->ours_eps / t->rb128_eps : 0);
    printf("   %-44s %9llu %9llu %12s\n", "  as the subscriber saw it", (unsigned long long)t->events,
           (unsigned long long)t->rb128_received, fmt_num(t->rb128_sub_eps, a[0], 32));
    printf("   ours acknowledged by Redis: %s events/s; caller's loop: %s calls/s; dropped %llu.\n",
           fmt_num(t->ours_acked_eps, a[1], 32), fmt_num(t->caller_eps, a[2], 32),
           (unsigned long long)t->dropped);
}

static void print_stores(const bench_opts *o, bench_results *r)
{
    char a[6][32];
    printf("\n3. Store writes on the main chain (SQLite WAL file in a temp dir; up to %zu ops or\n"
           "   %.0f s of calls per cell, the three publisher states interleaved). Overhead = mean\n"
           "   call time vs absent, with its 95 %% interval.\n",
           o->store_ops, o->store_cap_s);
    for (int sync = SYNC_COUNT - 1; sync >= 0; sync--) {
        const struct store_cfg *s = &r->store.cfg[sync];
        printf("   synchronous=%s%s\n", s->sqlite_sync,
               sync == SYNC_FULL ? " (SQLite's default: an fsync per commit)" : " (no fsync per commit)");
        printf("   %-24s %18s %32s %32s  %s\n", "write", "absent ops/s  p99",
               "healthy ops/s  p99  overhead", "hung ops/s  p99  overhead", "< 2 %");
        for (int op = 0; op < OP_COUNT; op++) {
            double oh = overhead_pct(s, op, PS_HEALTHY), ou = overhead_pct(s, op, PS_HUNG);
            printf("   %-24s %8s %9s %8s %9s %+6.1f%%±%-4.1f %8s %9s %+6.1f%%±%-4.1f  %s\n",
                   op_names[op], fmt_num(s->cell[op][PS_ABSENT].ops_per_s, a[0], 32),
                   fmt_ns(s->cell[op][PS_ABSENT].p99_ns, a[1], 32),
                   fmt_num(s->cell[op][PS_HEALTHY].ops_per_s, a[2], 32),
                   fmt_ns(s->cell[op][PS_HEALTHY].p99_ns, a[3], 32), oh,
                   overhead_ci(s, op, PS_HEALTHY), fmt_num(s->cell[op][PS_HUNG].ops_per_s, a[4], 32),
                   fmt_ns(s->cell[op][PS_HUNG].p99_ns, a[5], 32), ou, overhead_ci(s, op, PS_HUNG),
                   mark(oh < TARGET_OVERHEAD_PCT && ou < TARGET_OVERHEAD_PCT));
        }
        double oh = overhead_all(s, PS_HEALTHY), ou = overhead_all(s, PS_HUNG);
        printf("   %-24s %18s %19s %+6.1f%%±%-4.1f %19s %+6.1f%%±%-4.1f  %s\n", "all five writes", "",
               "", oh, overhead_all_ci(s, PS_HEALTHY), "", ou, overhead_all_ci(s, PS_HUNG),
               mark(store_cfg_met(s)));
        printf("   publisher: healthy %llu enqueued, %llu published; hung %llu enqueued, %llu dropped "
               "(queue full)\n",
               (unsigned long long)s->enqueued[PS_HEALTHY],
               (unsigned long long)s->published[PS_HEALTHY], (unsigned long long)s->enqueued[PS_HUNG],
               (unsigned long long)s->dropped_queue_full[PS_HUNG]);
    }
}

static void print_day(bench_results *r)
{
    day_result *d = &r->day;
    char a[32], b[32];
    printf("\n4. A day of the watcher: %d mails, %llu events (store writes with the publisher healthy)\n",
           d->mails, (unsigned long long)d->events);
    printf("   wall %.3f s (absent: %.3f s); CPU: caller thread %.3f s (absent: %.3f s),\n"
           "   I/O thread %.4f s, process %.3f s (absent: %.3f s; includes the test's subscriber\n"
           "   thread %.4f s), redis-server %.4f s\n",
           d->wall_s[1], d->wall_s[0], d->caller_cpu_s[1], d->caller_cpu_s[0], d->io_thread_cpu_s,
           d->process_cpu_s[1], d->process_cpu_s[0], d->sub_cpu_s, d->redis_cpu_s);
    printf("   on Redis: %llu bytes of JSON lines, %llu bytes as RESP PUBLISH commands,\n"
           "   %llu bytes by INFO total_net_input_bytes (includes the connection's PING);\n"
           "   %llu published\n",
           (unsigned long long)d->line_bytes, (unsigned long long)d->resp_bytes,
           (unsigned long long)d->net_input_bytes, (unsigned long long)d->published);
    printf("   headroom = %s events/s x 86400 / 2000 events a day = %sx\n",
           fmt_num(r->tput.ours_eps, a, sizeof a), fmt_num(d->headroom, b, sizeof b));
}

static void print_memory(const bench_opts *o, bench_results *r)
{
    mem_result *m = &r->mem;
    printf("\n5. Memory with Redis down %d s at %d events/s%s, then back for %d s\n", m->down_s,
           m->rate, o->full ? "" : " (--quick: 15 s instead of 60 s)", m->recover_s);
    printf("   queue bound %llu events / %llu MiB; queued at the end of the outage %llu (%.1f MiB),\n"
           "   dropped (queue full) %llu of %llu calls\n",
           (unsigned long long)m->queue_max_events, (unsigned long long)(m->queue_max_bytes >> 20),
           (unsigned long long)m->queued_end_down, (double)m->queued_bytes_end_down / 1048576.0,
           (unsigned long long)m->dropped_queue_full, (unsigned long long)m->calls);
    printf("   RSS before %.1f MiB, peak %.1f MiB (VmHWM %.1f MiB), at the end of the outage %.1f MiB\n",
           m->rss_before_kib / 1024.0, m->rss_peak_kib / 1024.0, m->hwm_kib / 1024.0,
           m->rss_end_down_kib / 1024.0);
    printf("   Redis back: queue below 1 %% of its bound after %.1f s; queued at the end %llu;\n"
           "   RSS growth after the drain %+.0f KiB; RSS at the end %.1f MiB\n",
           m->drain_s, (unsigned long long)m->queued_end, m->rss_growth_recover_kib,
           m->rss_end_kib / 1024.0);
}

static void print_idle(bench_results *r)
{
    const idle_result *i = &r->idle;
    printf("\n6. An idle publisher (connected, nothing to send) over %.1f s, its I/O thread from\n"
           "   /proc/<pid>/task/<tid>/status and schedstat\n", i->seconds);
    printf("   wake-ups %llu voluntary + %llu involuntary = %.2f/s; CPU %.3f ms, %.2f ms per idle hour"
           "  target <= 1/s: %s\n",
           (unsigned long long)i->voluntary, (unsigned long long)i->involuntary, i->wakeups_per_s,
           (double)i->runtime_ns / 1e6, i->cpu_ms_per_hour, mark(idle_met(i)));
}

static void print_isolated(bench_results *r)
{
    const isolated_result *i = &r->iso;
    char a[4][32];
    printf("\n7. Isolated events (%d per measure, one every %d ms; the library's real load)\n",
           i->events, i->gap_ms);
    printf("   %-36s %9s %9s %9s %9s  %s\n", "from the call to", "p50", "p99", "p99.9", "max",
           "target p99 <= 200 us");
    printf("   %-36s %9s %9s %9s %9s  %s\n", "Redis's acknowledgement", fmt_ns(i->ack.p50, a[0], 32),
           fmt_ns(i->ack.p99, a[1], 32), fmt_ns(i->ack.p999, a[2], 32), fmt_ns(i->ack.max, a[3], 32),
           mark(i->ack.p99 <= TARGET_ISOLATED_P99_NS));
    printf("   %-36s %9s %9s %9s %9s  %s\n", "a subscriber's receipt", fmt_ns(i->sub.p50, a[0], 32),
           fmt_ns(i->sub.p99, a[1], 32), fmt_ns(i->sub.p999, a[2], 32), fmt_ns(i->sub.max, a[3], 32),
           mark(i->sub.p99 <= TARGET_ISOLATED_P99_NS));
    printf("   %-36s %9s %9s %9s %9s\n", "replaced: synchronous PUBLISH, reply",
           fmt_ns(i->sync_ack.p50, a[0], 32), fmt_ns(i->sync_ack.p99, a[1], 32),
           fmt_ns(i->sync_ack.p999, a[2], 32), fmt_ns(i->sync_ack.max, a[3], 32));
    printf("   %-36s %9s %9s %9s %9s\n", "replaced: a subscriber's receipt",
           fmt_ns(i->sync_sub.p50, a[0], 32), fmt_ns(i->sync_sub.p99, a[1], 32),
           fmt_ns(i->sync_sub.p999, a[2], 32), fmt_ns(i->sync_sub.max, a[3], 32));
    printf("   %-36s %9s %9s %9s %9s\n", "machine: one thread waking another",
           fmt_ns(i->hop.p50, a[0], 32), fmt_ns(i->hop.p99, a[1], 32),
           fmt_ns(i->hop.p999, a[2], 32), fmt_ns(i->hop.max, a[3], 32));
    printf("   (Redis's acknowledgement as seen by a thread waiting in flush: one wake-up included)\n");
    printf("   I/O thread wake-ups over the subscriber pass: %llu for %d events; events lost: %llu\n",
           (unsigned long long)i->io_voluntary, i->events, (unsigned long long)i->lost);
}

static void print_stream(bench_results *r)
{
    char a[6][32];
    printf("\n8. Stream mode next to pub/sub mode (one redis-server, one subscriber, default bounds)\n");
    printf("   %-8s %9s %9s %9s %10s %12s %10s %16s %16s\n", "mode", "call p50", "p99", "p99.9",
           "events", "to sub ev/s", "dropped", "Redis CPU/100k", "memory/100k kept");
    for (int m = 0; m < 2; m++) {
        const stream_mode_result *x = &r->stream.mode[m];
        char cpu[32], mem[32];
        snprintf(cpu, sizeof cpu, "%.0f ms", x->redis_cpu_ms_per_100k);
        snprintf(mem, sizeof mem, "%.1f MiB", (double)x->mem_per_100k / 1048576.0);
        printf("   %-8s %9s %9s %9s %10llu %12s %10llu %16s %16s\n", m ? "stream" : "pub/sub",
               fmt_ns(x->call.p50, a[0], 32), fmt_ns(x->call.p99, a[1], 32),
               fmt_ns(x->call.p999, a[2], 32), (unsigned long long)x->received,
               fmt_num(x->eps, a[3], 32), (unsigned long long)x->dropped, cpu, mem);
    }
}

/* ---- JSON --------------------------------------------------------------------------- */

static void json_lat(FILE *f, const char *name, const lat_summary *s, bool comma)
{
    fprintf(f,
            "      \"%s\": {\"calls\": %zu, \"p50_ns\": %.0f, \"p99_ns\": %.0f, \"p999_ns\": %.0f, "
            "\"max_ns\": %.0f, \"mean_ns\": %.1f}%s\n",
            name, s->n, s->p50, s->p99, s->p999, s->max, s->mean, comma ? "," : "");
}

static int write_json(const char *path, const bench_opts *o, bench_results *r, const char *mach)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    time_t now = time(NULL);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    fprintf(f, "{\n  \"generated_at\": \"%s\",\n  \"mode\": \"%s\",\n  \"machine\": \"%s\",\n",
            when, o->full ? "full" : "quick", mach);
    fprintf(f, "  \"library_version\": \"%s\",\n  \"total_s\": %.1f,\n", MAE_VERSION_STRING,
            r->total_s);
    fprintf(f, "  \"timer_overhead_ns\": %.1f,\n", r->timer_overhead_ns);
    fprintf(f, "  \"targets\": {\"p50_ns\": %.0f, \"p99_ns\": %.0f, \"hung_ratio\": %.0f, "
               "\"throughput_ratio\": %.2f, \"store_overhead_pct\": %.1f},\n",
            TARGET_P50_NS, TARGET_P99_NS, TARGET_HUNG_RATIO, TARGET_TPUT_RATIO, TARGET_OVERHEAD_PCT);

    fprintf(f, "  \"latency\": {\n");
    for (int s = 0; s < ST_COUNT; s++) {
        lat_result *l = &r->lat[s];
        fprintf(f, "    \"%s\": {\n", state_names[s]);
        json_lat(f, "ours", &l->ours, true);
        json_lat(f, "ours_typed_builder", &l->ours_typed, true);
        json_lat(f, "ours_cold_start", &l->ours_cold, true);
        json_lat(f, "control_copy", &l->control, true);
        json_lat(f, "control_copy_cold_start", &l->control_cold, true);
        fprintf(f, "      \"cold_start_minflt\": %llu,\n", (unsigned long long)l->minflt_cold);
        json_lat(f, "replaced", &l->replaced, true);
        fprintf(f,
                "      \"ratio_p50\": %.4g, \"ratio_p99\": %.4g, \"replaced_errors\": %llu, "
                "\"replaced_wall_s\": %.2f,\n",
                ratio(l->replaced.p50, l->ours.p50), ratio(l->replaced.p99, l->ours.p99),
                (unsigned long long)l->replaced_errors, l->replaced_wall_s);
        fprintf(f,
                "      \"counters\": {\"calls\": %llu, \"enqueued\": %llu, \"published\": %llu, "
                "\"dropped_queue_full\": %llu, \"dropped_disabled\": %llu, \"dropped_invalid\": %llu, "
                "\"dropped_send_error\": %llu, \"caller_minor_faults\": %llu, "
                "\"caller_minor_faults_typed\": %llu},\n",
                (unsigned long long)l->calls, (unsigned long long)l->enqueued,
                (unsigned long long)l->published, (unsigned long long)l->dropped_queue_full,
                (unsigned long long)l->dropped_disabled, (unsigned long long)l->dropped_invalid,
                (unsigned long long)l->dropped_send_error, (unsigned long long)l->minflt,
                (unsigned long long)l->minflt_typed);
        fprintf(f, "      \"target_met\": %s\n    }%s\n", latency_met(l) ? "true" : "false",
                s + 1 < ST_COUNT ? "," : "");
    }
    fprintf(f, "  },\n  \"hung_ratio\": %.4g,\n", hung_ratio(r));

    tput_result *t = &r->tput;
    fprintf(f,
            "  \"throughput\": {\"events\": %llu, \"received\": %llu, \"dropped\": %llu, "
            "\"payload_bytes\": %zu,\n    \"ours_eps\": %.0f, \"ours_acked_eps\": %.0f, "
            "\"caller_eps\": %.0f,\n    \"redis_benchmark_p16_eps\": %.0f, "
            "\"redis_benchmark_p16_subscriber_eps\": %.0f, \"redis_benchmark_p16_received\": %llu,\n"
            "    \"redis_benchmark_p128_eps\": %.0f, \"redis_benchmark_p128_subscriber_eps\": %.0f, "
            "\"redis_benchmark_p128_received\": %llu,\n    \"ratio_p16\": %.3f, \"ratio_p128\": %.3f},\n",
            (unsigned long long)t->events, (unsigned long long)t->received,
            (unsigned long long)t->dropped, t->payload_len, t->ours_eps, t->ours_acked_eps,
            t->caller_eps, t->rb16_eps, t->rb16_sub_eps, (unsigned long long)t->rb16_received,
            t->rb128_eps, t->rb128_sub_eps, (unsigned long long)t->rb128_received,
            t->rb16_eps > 0 ? t->ours_eps / t->rb16_eps : 0,
            t->rb128_eps > 0 ? t->ours_eps / t->rb128_eps : 0);

    fprintf(f, "  \"store_writes\": {\n");
    for (int sync = 0; sync < SYNC_COUNT; sync++) {
        const struct store_cfg *s = &r->store.cfg[sync];
        fprintf(f, "    \"synchronous_%s\": {\n      \"cap_s\": %.1f,\n",
                sync == SYNC_FULL ? "full" : "normal", s->cap_s);
        for (int op = 0; op < OP_COUNT; op++) {
            fprintf(f, "      \"%s\": {", op_names[op]);
            for (int ps = 0; ps < PS_COUNT; ps++)
                fprintf(f, "\"%s\": {\"ops\": %zu, \"ops_per_s\": %.0f, \"p50_ns\": %.0f, "
                           "\"p99_ns\": %.0f, \"mean_ns\": %.0f, \"sd_ns\": %.0f}, ",
                        pub_state_names[ps], s->cell[op][ps].ops, s->cell[op][ps].ops_per_s,
                        s->cell[op][ps].p50_ns, s->cell[op][ps].p99_ns, s->cell[op][ps].mean_ns,
                        s->cell[op][ps].sd_ns);
            fprintf(f, "\"overhead_pct_healthy\": %.2f, \"overhead_pct_hung\": %.2f, "
                       "\"ci95_pct_healthy\": %.2f, \"ci95_pct_hung\": %.2f},\n",
                    overhead_pct(s, op, PS_HEALTHY), overhead_pct(s, op, PS_HUNG),
                    overhead_ci(s, op, PS_HEALTHY), overhead_ci(s, op, PS_HUNG));
        }
        fprintf(f,
                "      \"overhead_pct_healthy\": %.2f, \"overhead_pct_hung\": %.2f, "
                "\"ci95_pct_healthy\": %.2f, \"ci95_pct_hung\": %.2f,\n"
                "      \"publisher_healthy\": {\"enqueued\": %llu, \"published\": %llu},\n"
                "      \"publisher_hung\": {\"enqueued\": %llu, \"dropped_queue_full\": %llu}\n    }%s\n",
                overhead_all(s, PS_HEALTHY), overhead_all(s, PS_HUNG),
                overhead_all_ci(s, PS_HEALTHY), overhead_all_ci(s, PS_HUNG),
                (unsigned long long)s->enqueued[PS_HEALTHY],
                (unsigned long long)s->published[PS_HEALTHY], (unsigned long long)s->enqueued[PS_HUNG],
                (unsigned long long)s->dropped_queue_full[PS_HUNG], sync + 1 < SYNC_COUNT ? "," : "");
    }
    fprintf(f, "  },\n");

    day_result *d = &r->day;
    fprintf(f,
            "  \"day\": {\"mails\": %d, \"events\": %llu, \"published\": %llu,\n"
            "    \"wall_s\": %.4f, \"caller_cpu_s\": %.4f, \"process_cpu_s\": %.4f, "
            "\"io_thread_cpu_s\": %.5f, \"subscriber_cpu_s\": %.5f, \"redis_cpu_s\": %.5f,\n"
            "    \"absent\": {\"wall_s\": %.4f, \"caller_cpu_s\": %.4f, \"process_cpu_s\": %.4f},\n"
            "    \"line_bytes\": %llu, \"resp_bytes\": %llu, \"net_input_bytes\": %llu, "
            "\"headroom\": %.4g},\n",
            d->mails, (unsigned long long)d->events, (unsigned long long)d->published, d->wall_s[1],
            d->caller_cpu_s[1], d->process_cpu_s[1], d->io_thread_cpu_s, d->sub_cpu_s, d->redis_cpu_s,
            d->wall_s[0], d->caller_cpu_s[0], d->process_cpu_s[0],
            (unsigned long long)d->line_bytes, (unsigned long long)d->resp_bytes,
            (unsigned long long)d->net_input_bytes, d->headroom);

    mem_result *m = &r->mem;
    fprintf(f,
            "  \"memory\": {\"down_s\": %d, \"rate\": %d, \"recover_s\": %d, "
            "\"queue_max_events\": %llu, \"queue_max_bytes\": %llu,\n"
            "    \"rss_before_kib\": %llu, \"rss_peak_kib\": %llu, \"vmhwm_kib\": %llu, "
            "\"rss_end_down_kib\": %llu, \"rss_end_kib\": %llu,\n"
            "    \"queued_end_down\": %llu, \"queued_bytes_end_down\": %llu, \"max_queued\": %llu, "
            "\"queued_end\": %llu, \"dropped_queue_full\": %llu, \"calls\": %llu,\n"
            "    \"published_after_restart\": %llu, \"drain_s\": %.2f, "
            "\"rss_growth_after_drain_kib\": %.0f, \"restart_t\": %.2f,\n    \"series\": [",
            m->down_s, m->rate, m->recover_s, (unsigned long long)m->queue_max_events,
            (unsigned long long)m->queue_max_bytes, (unsigned long long)m->rss_before_kib,
            (unsigned long long)m->rss_peak_kib, (unsigned long long)m->hwm_kib,
            (unsigned long long)m->rss_end_down_kib, (unsigned long long)m->rss_end_kib,
            (unsigned long long)m->queued_end_down, (unsigned long long)m->queued_bytes_end_down,
            (unsigned long long)m->max_queued, (unsigned long long)m->queued_end,
            (unsigned long long)m->dropped_queue_full, (unsigned long long)m->calls,
            (unsigned long long)m->published_after, m->drain_s, m->rss_growth_recover_kib,
            m->restart_t);
    for (size_t i = 0; i < m->nseries; i++)
        fprintf(f, "%s[%.1f, %u, %u]", i ? ", " : "", m->series[i].t, m->series[i].rss_kib,
                m->series[i].queued);
    fprintf(f, "]},\n");
    const idle_result *id = &r->idle;
    fprintf(f,
            "  \"idle\": {\"seconds\": %.2f, \"voluntary\": %llu, \"involuntary\": %llu, "
            "\"runtime_ns\": %llu, \"wakeups_per_s\": %.3f, \"cpu_ms_per_hour\": %.3f},\n",
            id->seconds, (unsigned long long)id->voluntary, (unsigned long long)id->involuntary,
            (unsigned long long)id->runtime_ns, id->wakeups_per_s, id->cpu_ms_per_hour);
    const isolated_result *is = &r->iso;
    fprintf(f, "  \"isolated\": {\"events\": %d, \"gap_ms\": %d, \"lost\": %llu, "
               "\"io_voluntary\": %llu,\n",
            is->events, is->gap_ms, (unsigned long long)is->lost,
            (unsigned long long)is->io_voluntary);
    json_lat(f, "to_ack", &is->ack, true);
    json_lat(f, "to_subscriber", &is->sub, true);
    json_lat(f, "replaced_to_reply", &is->sync_ack, true);
    json_lat(f, "replaced_to_subscriber", &is->sync_sub, true);
    json_lat(f, "machine_thread_wakeup", &is->hop, false);
    fprintf(f, "  },\n  \"stream_mode\": {\n");
    for (int m = 0; m < 2; m++) {
        const stream_mode_result *x = &r->stream.mode[m];
        fprintf(f, "    \"%s\": {\"events\": %llu, \"received\": %llu, \"dropped\": %llu, "
                   "\"events_per_s\": %.0f, \"redis_cpu_ms_per_100k\": %.1f, "
                   "\"memory_bytes_per_100k\": %llu,\n",
                m ? "stream" : "pubsub", (unsigned long long)x->events,
                (unsigned long long)x->received, (unsigned long long)x->dropped, x->eps,
                x->redis_cpu_ms_per_100k, (unsigned long long)x->mem_per_100k);
        json_lat(f, "call", &x->call, false);
        fprintf(f, "    }%s\n", m ? "" : ",");
    }
    fprintf(f, "  }\n}\n");
    return fclose(f) == 0 ? 0 : -1;
}

/* ---- the plot --------------------------------------------------------------------- */

static int plot(const bench_opts *o, const char *data, const char *png)
{
    char expr[1400], out[2048];
    snprintf(expr, sizeof expr, "datafile='%s'; outfile='%s'; quick=%d", data, png, o->full ? 0 : 1);
    char *argv[] = {"gnuplot", "-e", expr, (char *)o->plot_script, NULL};
    int st = run_capture(argv, out, sizeof out);
    if (st != 0)
        fprintf(stderr, "bench: gnuplot failed (status %d): %.500s\n", st, out);
    return st == 0 ? 0 : -1;
}

/* ---- main ---------------------------------------------------------------------------- */

#define PARTS 8

/* Parses the command line into o and run (the parts to run). -1 to go on,
 * or the exit status (help printed, or a usage error). */
static int parse_args(int argc, char **argv, bench_opts *o, bool run[PARTS])
{
    set_quick(o);
    o->results_dir = "bench/results";
    o->plot_script = "bench/plot.gp";
    for (int k = 0; k < PARTS; k++)
        run[k] = true;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            set_quick(o);
        } else if (strcmp(argv[i], "--full") == 0) {
            set_full(o);
        } else if (strcmp(argv[i], "--results") == 0 && i + 1 < argc) {
            o->results_dir = argv[++i];
        } else if (strcmp(argv[i], "--plot") == 0 && i + 1 < argc) {
            o->plot_script = argv[++i];
        } else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
            const char *s = argv[++i];
            for (int k = 0; k < PARTS; k++)
                run[k] = strchr(s, '1' + k) != NULL;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    return -1;
}

/* Runs the chosen parts into r; returns how many failed. */
static int run_parts(const bench_opts *o, const bool run[PARTS], bench_results *r,
                     const char *cdfpath)
{
    uint64_t t0 = now_ns();
    int failed = 0;

    /* Part 5 first: its RSS figures are cleanest in a process that has not
     * yet grown and freed the large queues of parts 1 and 2. */
    if (run[4] && part_memory(o, r) != 0)
        failed++;
    if (run[0]) {
        FILE *cdf = fopen(cdfpath, "w");
        if (!cdf)
            perror(cdfpath);
        if (part_latency(o, r, cdf) != 0)
            failed++;
        if (cdf)
            fclose(cdf);
    }
    if (run[1] && part_throughput(o, r) != 0)
        failed++;
    if (run[2] && part_stores(o, r) != 0)
        failed++;
    if (run[3] && part_day(o, r) != 0)
        failed++;
    if (run[5] && part_idle(o, r) != 0)
        failed++;
    if (run[6] && part_isolated(o, r) != 0)
        failed++;
    if (run[7] && part_stream(o, r) != 0)
        failed++;
    r->total_s = (double)(now_ns() - t0) / 1e9;
    progress_done();
    return failed;
}

/* Prints each part's table that has figures. */
static void print_parts(const bench_opts *o, bench_results *r, const char *mach)
{
    printf("mailagent-events %s benchmark, %s mode%s, %.0f s\n", MAE_VERSION_STRING,
           o->full ? "full" : "quick",
           o->full ? "" : " (part 5 keeps Redis down 15 s instead of 60 s; --full for all of it)",
           r->total_s);
    printf("machine: %s\n", mach);
    if (r->have[0])
        print_latency(o, r);
    if (r->have[1])
        print_throughput(r);
    if (r->have[2])
        print_stores(o, r);
    if (r->have[3])
        print_day(r);
    if (r->have[4])
        print_memory(o, r);
    if (r->have[5])
        print_idle(r);
    if (r->have[6])
        print_isolated(r);
    if (r->have[7])
        print_stream(r);
}

/* The last line: the summary, with the count of targets met. */
static void print_summary(bench_results *r, int failed)
{
    char a[8][32];
    printf("summary:");
    if (r->have[0])
        printf(" publish p50/p99");
    for (int s = 0; s < ST_COUNT && r->have[0]; s++)
        printf(" %s %s/%s%s", state_names[s], fmt_ns(r->lat[s].ours.p50, a[0], 32),
               fmt_ns(r->lat[s].ours.p99, a[1], 32), s + 1 < ST_COUNT ? "," : "");
    int met = 0, total = 0;
    if (r->have[0]) {
        bool all = true;
        for (int s = 0; s < ST_COUNT; s++)
            all = all && latency_met(&r->lat[s]);
        met += all;
        met += hung_ratio(r) >= TARGET_HUNG_RATIO;
        total += 2;
        printf("; hung ratio %sx", fmt_num(hung_ratio(r), a[2], 32));
    }
    if (r->have[1]) {
        double rt = r->tput.rb16_eps > 0 ? r->tput.ours_eps / r->tput.rb16_eps : 0;
        met += rt >= TARGET_TPUT_RATIO;
        total++;
        printf("; throughput %s ev/s = %.2fx redis-benchmark -P16", fmt_num(r->tput.ours_eps, a[3], 32),
               rt);
    }
    if (r->have[2]) {
        const struct store_cfg *n = &r->store.cfg[SYNC_NORMAL], *f = &r->store.cfg[SYNC_FULL];
        met += store_met(&r->store);
        total++;
        printf("; store overhead %+.1f %% healthy / %+.1f %% hung (fsync per commit: %+.1f / %+.1f %%)",
               overhead_all(n, PS_HEALTHY), overhead_all(n, PS_HUNG), overhead_all(f, PS_HEALTHY),
               overhead_all(f, PS_HUNG));
    }
    if (r->have[3])
        printf("; day %.1f ms CPU, headroom %sx", 1e3 * (r->day.process_cpu_s[1]),
               fmt_num(r->day.headroom, a[4], 32));
    if (r->have[4])
        printf("; peak RSS %.0f MiB (Redis down %d s)", r->mem.rss_peak_kib / 1024.0, r->mem.down_s);
    if (r->have[5]) {
        met += idle_met(&r->idle);
        total++;
        printf("; idle %.2f wake-ups/s", r->idle.wakeups_per_s);
    }
    if (r->have[6]) {
        met += isolated_met(&r->iso);
        total++;
        printf("; isolated event p99 %s to Redis, %s to a subscriber",
               fmt_ns(r->iso.ack.p99, a[5], 32), fmt_ns(r->iso.sub.p99, a[6], 32));
    }
    if (r->have[7])
        printf("; stream mode %s ev/s (pub/sub %s)", fmt_num(r->stream.mode[1].eps, a[5], 32),
               fmt_num(r->stream.mode[0].eps, a[6], 32));
    printf("; targets met %d/%d%s\n", met, total, failed ? "; SOME PARTS FAILED" : "");
}

int main(int argc, char **argv)
{
    bench_opts o;
    bool run[PARTS];
    char path[600], cdfpath[600], png[600], mach[400];
    int rc = parse_args(argc, argv, &o, run);
    if (rc >= 0)
        return rc;
    bench_results *r = calloc(1, sizeof *r);
    if (!r)
        return 1;

    /* The replaced design writes to sockets on this thread, as the original
     * did; a server vanishing mid-write must cost it an error, not the
     * process. (The library's own I/O thread needs no such help.) */
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    atexit(redis_kill_all);

    machine(mach, sizeof mach);
    snprintf(cdfpath, sizeof cdfpath, "%s/latency-cdf.tmp", o.results_dir);
    snprintf(png, sizeof png, "%s/latency.png", o.results_dir);
    int failed = run_parts(&o, run, r, cdfpath);

    bool plotted = r->have[0] && plot(&o, cdfpath, png) == 0;
    bool all = r->have[0];
    for (int k = 0; k < PARTS; k++)
        all = all && run[k];
    /* A partial run must not overwrite the figures of a whole one. */
    snprintf(path, sizeof path, "%s/%s", o.results_dir, all ? "latest.json" : "partial.json.tmp");
    bool wrote = write_json(path, &o, r, mach) == 0;

    print_parts(&o, r, mach);
    printf("\nraw figures: %s%s; plot: %s\n", path, wrote ? "" : " (NOT written)",
           plotted ? png : "(not drawn)");
    print_summary(r, failed);
    free(r);
    return failed ? 1 : 0;
}
