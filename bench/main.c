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
#include "core/text.h"

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
            "usage: mae_bench [--quick | --full] [--results DIR] [--plot FILE] [--only PART,...]\n"
            "  --only   the parts to run, by name: latency, throughput, stores, day, memory,\n"
            "           idle, isolated, stream, hubcall, tls (or the first nine's numbers, as in \"--only 13\")\n"
            "  --quick  the memory part keeps Redis down 15 s (default); fewer replaced calls where it stalls\n"
            "  --full   the memory part keeps Redis down 60 s, 500 000 calls per state, 2 000 000 events\n");
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

static void print_hubcall(bench_results *r)
{
    char a[4][32];
    printf("\n9. The publish call in hub mode (relay_url; a loopback hub in this process; "
           "hung = listening, never answering)\n");
    printf("   %-8s %9s %9s %9s %9s %10s %10s %9s %9s %10s\n", "hub", "call p50", "p99", "p99.9",
           "max", "calls", "published", "connects", "failures", "close");
    for (int s = 0; s < HUB_STATES; s++) {
        const hub_call_result *x = &r->hubcall.state[s];
        char cl[32];
        snprintf(cl, sizeof cl, "%.0f ms", x->close_ms);
        printf("   %-8s %9s %9s %9s %9s %10llu %10llu %9llu %9llu %10s\n", hub_state_names[s],
               fmt_ns(x->call.p50, a[0], 32), fmt_ns(x->call.p99, a[1], 32),
               fmt_ns(x->call.p999, a[2], 32), fmt_ns(x->call.max, a[3], 32),
               (unsigned long long)x->calls, (unsigned long long)x->published,
               (unsigned long long)x->connects, (unsigned long long)x->connect_failures, cl);
    }
    printf("   target p99.9 < %s in every state: %s\n", fmt_ns(TARGET_P999_NS, a[0], 32),
           r->hubcall.state[0].call.p999 < TARGET_P999_NS &&
                   r->hubcall.state[1].call.p999 < TARGET_P999_NS &&
                   r->hubcall.state[2].call.p999 < TARGET_P999_NS
               ? "met"
               : "missed");
}

static void print_tls(bench_results *r)
{
    char a[6][32];
    const tls_result *t = &r->tls;
    printf("\n10. TLS (rediss://) next to plain TCP (one redis-server on both ports, one "
           "subscriber, default bounds)\n");
    printf("   %-8s %9s %9s %9s %10s %12s %10s\n", "link", "call p50", "p99", "p99.9", "events",
           "to sub ev/s", "dropped");
    for (int m = 0; m < 2; m++) {
        const tls_mode_result *x = &t->mode[m];
        printf("   %-8s %9s %9s %9s %10llu %12s %10llu\n", m ? "TLS" : "TCP",
               fmt_ns(x->call.p50, a[0], 32), fmt_ns(x->call.p99, a[1], 32),
               fmt_ns(x->call.p999, a[2], 32), (unsigned long long)x->received,
               fmt_num(x->eps, a[3], 32), (unsigned long long)x->dropped);
    }
    printf("   TLS throughput = %.2fx plain TCP's\n",
           t->mode[0].eps > 0 ? t->mode[1].eps / t->mode[0].eps : 0);
    printf("   reconnect (connect + handshake + PING, p50 / p99): plain %s / %s, TLS full %s / %s, "
           "TLS resumed %s / %s (%llu of %zu resumed)\n",
           fmt_ns(t->connect_plain.p50, a[0], 32), fmt_ns(t->connect_plain.p99, a[1], 32),
           fmt_ns(t->connect_full.p50, a[2], 32), fmt_ns(t->connect_full.p99, a[3], 32),
           fmt_ns(t->connect_resumed.p50, a[4], 32), fmt_ns(t->connect_resumed.p99, a[5], 32),
           (unsigned long long)t->resumed, t->connect_resumed.n);
}

/* ---- JSON --------------------------------------------------------------------------
 * latest.json is written with the library's own JSON writer (core/text.h:
 * mae__buf, mae__json_str, mae__json_i64) through a small layer that keeps
 * the commas and the indentation: one member per line, except inside a
 * "flat" container (a percentile summary, a series point) which stays on
 * one line. A figure that is not finite (a part that did not run into a
 * ratio) is written as null, never as "nan". */

typedef struct jw {
    mae__buf b;
    int depth;
    int flat;                 /* > 0: depth at which a one-line container began */
    bool first;               /* nothing written yet in the open container */
} jw;

static void jw_newline(jw *w)
{
    mae__buf_putc(&w->b, '\n');
    for (int i = 0; i < w->depth; i++)
        mae__buf_puts(&w->b, "  ");
}

/* The separator before a member (or element, key NULL), and its key. */
static void jw_sep(jw *w, const char *key)
{
    if (!w->first)
        mae__buf_putc(&w->b, ',');
    if (w->flat) {
        if (!w->first)
            mae__buf_putc(&w->b, ' ');
    } else if (w->depth > 0) {
        jw_newline(w);
    }
    w->first = false;
    if (key) {
        mae__json_str(&w->b, key, 0);
        mae__buf_puts(&w->b, ": ");
    }
}

static void jw_open(jw *w, const char *key, char c, bool flat)
{
    jw_sep(w, key);
    mae__buf_putc(&w->b, c);
    w->depth++;
    if (flat && !w->flat)
        w->flat = w->depth;
    w->first = true;
}

static void jw_close(jw *w, char c)
{
    bool was_flat = w->flat != 0;
    if (w->flat == w->depth)
        w->flat = 0;
    w->depth--;
    if (!was_flat && !w->first)
        jw_newline(w);
    mae__buf_putc(&w->b, c);
    w->first = false;
}

#define jw_obj(w, key) jw_open((w), (key), '{', false)
#define jw_flat_obj(w, key) jw_open((w), (key), '{', true)
#define jw_end(w) jw_close((w), '}')

/* A number written with printf's fmt ("%.0f", "%.4g", ...). */
static void jw_num(jw *w, const char *key, const char *fmt, double v)
{
    char text[64];
    jw_sep(w, key);
    if (!isfinite(v)) {
        mae__buf_puts(&w->b, "null");
        return;
    }
    snprintf(text, sizeof text, fmt, v);
    mae__buf_puts(&w->b, text);
}

static void jw_u64(jw *w, const char *key, uint64_t v)
{
    jw_sep(w, key);
    if (v > (uint64_t)INT64_MAX) {
        char text[24];
        snprintf(text, sizeof text, "%llu", (unsigned long long)v);
        mae__buf_puts(&w->b, text);
    } else {
        mae__json_i64(&w->b, (int64_t)v);
    }
}

static void jw_i64(jw *w, const char *key, int64_t v)
{
    jw_sep(w, key);
    mae__json_i64(&w->b, v);
}

static void jw_str(jw *w, const char *key, const char *v)
{
    jw_sep(w, key);
    mae__json_str(&w->b, v, 0);
}

static void jw_bool(jw *w, const char *key, bool v)
{
    jw_sep(w, key);
    mae__buf_puts(&w->b, v ? "true" : "false");
}

static void json_lat(jw *w, const char *name, const lat_summary *s)
{
    jw_flat_obj(w, name);
    jw_u64(w, "calls", s->n);
    jw_num(w, "p50_ns", "%.0f", s->p50);
    jw_num(w, "p99_ns", "%.0f", s->p99);
    jw_num(w, "p999_ns", "%.0f", s->p999);
    jw_num(w, "max_ns", "%.0f", s->max);
    jw_num(w, "mean_ns", "%.1f", s->mean);
    jw_end(w);
}

static void json_latency(jw *w, bench_results *r)
{
    jw_obj(w, "latency");
    for (int s = 0; s < ST_COUNT; s++) {
        lat_result *l = &r->lat[s];
        jw_obj(w, state_names[s]);
        json_lat(w, "ours", &l->ours);
        json_lat(w, "ours_typed_builder", &l->ours_typed);
        json_lat(w, "ours_cold_start", &l->ours_cold);
        json_lat(w, "control_copy", &l->control);
        json_lat(w, "control_copy_cold_start", &l->control_cold);
        jw_u64(w, "cold_start_minflt", l->minflt_cold);
        json_lat(w, "replaced", &l->replaced);
        jw_num(w, "ratio_p50", "%.4g", ratio(l->replaced.p50, l->ours.p50));
        jw_num(w, "ratio_p99", "%.4g", ratio(l->replaced.p99, l->ours.p99));
        jw_u64(w, "replaced_errors", l->replaced_errors);
        jw_num(w, "replaced_wall_s", "%.2f", l->replaced_wall_s);
        jw_obj(w, "counters");
        jw_u64(w, "calls", l->calls);
        jw_u64(w, "enqueued", l->enqueued);
        jw_u64(w, "published", l->published);
        jw_u64(w, "dropped_queue_full", l->dropped_queue_full);
        jw_u64(w, "dropped_disabled", l->dropped_disabled);
        jw_u64(w, "dropped_invalid", l->dropped_invalid);
        jw_u64(w, "dropped_send_error", l->dropped_send_error);
        jw_u64(w, "caller_minor_faults", l->minflt);
        jw_u64(w, "caller_minor_faults_typed", l->minflt_typed);
        jw_end(w);
        jw_bool(w, "target_met", latency_met(l));
        jw_end(w);
    }
    jw_end(w);
    jw_num(w, "hung_ratio", "%.4g", hung_ratio(r));
}

static void json_throughput(jw *w, const tput_result *t)
{
    jw_obj(w, "throughput");
    jw_u64(w, "events", t->events);
    jw_u64(w, "received", t->received);
    jw_u64(w, "dropped", t->dropped);
    jw_u64(w, "payload_bytes", t->payload_len);
    jw_num(w, "ours_eps", "%.0f", t->ours_eps);
    jw_num(w, "ours_acked_eps", "%.0f", t->ours_acked_eps);
    jw_num(w, "caller_eps", "%.0f", t->caller_eps);
    jw_num(w, "redis_benchmark_p16_eps", "%.0f", t->rb16_eps);
    jw_num(w, "redis_benchmark_p16_subscriber_eps", "%.0f", t->rb16_sub_eps);
    jw_u64(w, "redis_benchmark_p16_received", t->rb16_received);
    jw_num(w, "redis_benchmark_p128_eps", "%.0f", t->rb128_eps);
    jw_num(w, "redis_benchmark_p128_subscriber_eps", "%.0f", t->rb128_sub_eps);
    jw_u64(w, "redis_benchmark_p128_received", t->rb128_received);
    jw_num(w, "ratio_p16", "%.3f", t->rb16_eps > 0 ? t->ours_eps / t->rb16_eps : 0);
    jw_num(w, "ratio_p128", "%.3f", t->rb128_eps > 0 ? t->ours_eps / t->rb128_eps : 0);
    jw_end(w);
}

static void json_overheads(jw *w, double healthy, double hung, double ci_healthy, double ci_hung)
{
    jw_num(w, "overhead_pct_healthy", "%.2f", healthy);
    jw_num(w, "overhead_pct_hung", "%.2f", hung);
    jw_num(w, "ci95_pct_healthy", "%.2f", ci_healthy);
    jw_num(w, "ci95_pct_hung", "%.2f", ci_hung);
}

static void json_stores(jw *w, const store_result *st)
{
    jw_obj(w, "store_writes");
    for (int sync = 0; sync < SYNC_COUNT; sync++) {
        const struct store_cfg *s = &st->cfg[sync];
        jw_obj(w, sync == SYNC_FULL ? "synchronous_full" : "synchronous_normal");
        jw_num(w, "cap_s", "%.1f", s->cap_s);
        for (int op = 0; op < OP_COUNT; op++) {
            jw_obj(w, op_names[op]);
            for (int ps = 0; ps < PS_COUNT; ps++) {
                const struct store_cell *c = &s->cell[op][ps];
                jw_flat_obj(w, pub_state_names[ps]);
                jw_u64(w, "ops", c->ops);
                jw_num(w, "ops_per_s", "%.0f", c->ops_per_s);
                jw_num(w, "p50_ns", "%.0f", c->p50_ns);
                jw_num(w, "p99_ns", "%.0f", c->p99_ns);
                jw_num(w, "mean_ns", "%.0f", c->mean_ns);
                jw_num(w, "sd_ns", "%.0f", c->sd_ns);
                jw_end(w);
            }
            json_overheads(w, overhead_pct(s, op, PS_HEALTHY), overhead_pct(s, op, PS_HUNG),
                           overhead_ci(s, op, PS_HEALTHY), overhead_ci(s, op, PS_HUNG));
            jw_end(w);
        }
        json_overheads(w, overhead_all(s, PS_HEALTHY), overhead_all(s, PS_HUNG),
                       overhead_all_ci(s, PS_HEALTHY), overhead_all_ci(s, PS_HUNG));
        jw_flat_obj(w, "publisher_healthy");
        jw_u64(w, "enqueued", s->enqueued[PS_HEALTHY]);
        jw_u64(w, "published", s->published[PS_HEALTHY]);
        jw_end(w);
        jw_flat_obj(w, "publisher_hung");
        jw_u64(w, "enqueued", s->enqueued[PS_HUNG]);
        jw_u64(w, "dropped_queue_full", s->dropped_queue_full[PS_HUNG]);
        jw_end(w);
        jw_end(w);
    }
    jw_end(w);
}

static void json_day(jw *w, const day_result *d)
{
    jw_obj(w, "day");
    jw_i64(w, "mails", d->mails);
    jw_u64(w, "events", d->events);
    jw_u64(w, "published", d->published);
    jw_num(w, "wall_s", "%.4f", d->wall_s[1]);
    jw_num(w, "caller_cpu_s", "%.4f", d->caller_cpu_s[1]);
    jw_num(w, "process_cpu_s", "%.4f", d->process_cpu_s[1]);
    jw_num(w, "io_thread_cpu_s", "%.5f", d->io_thread_cpu_s);
    jw_num(w, "subscriber_cpu_s", "%.5f", d->sub_cpu_s);
    jw_num(w, "redis_cpu_s", "%.5f", d->redis_cpu_s);
    jw_flat_obj(w, "absent");
    jw_num(w, "wall_s", "%.4f", d->wall_s[0]);
    jw_num(w, "caller_cpu_s", "%.4f", d->caller_cpu_s[0]);
    jw_num(w, "process_cpu_s", "%.4f", d->process_cpu_s[0]);
    jw_end(w);
    jw_u64(w, "line_bytes", d->line_bytes);
    jw_u64(w, "resp_bytes", d->resp_bytes);
    jw_u64(w, "net_input_bytes", d->net_input_bytes);
    jw_num(w, "headroom", "%.4g", d->headroom);
    jw_end(w);
}

static void json_memory(jw *w, const mem_result *m)
{
    jw_obj(w, "memory");
    jw_i64(w, "down_s", m->down_s);
    jw_i64(w, "rate", m->rate);
    jw_i64(w, "recover_s", m->recover_s);
    jw_u64(w, "queue_max_events", m->queue_max_events);
    jw_u64(w, "queue_max_bytes", m->queue_max_bytes);
    jw_u64(w, "rss_before_kib", m->rss_before_kib);
    jw_u64(w, "rss_peak_kib", m->rss_peak_kib);
    jw_u64(w, "vmhwm_kib", m->hwm_kib);
    jw_u64(w, "rss_end_down_kib", m->rss_end_down_kib);
    jw_u64(w, "rss_end_kib", m->rss_end_kib);
    jw_u64(w, "queued_end_down", m->queued_end_down);
    jw_u64(w, "queued_bytes_end_down", m->queued_bytes_end_down);
    jw_u64(w, "max_queued", m->max_queued);
    jw_u64(w, "queued_end", m->queued_end);
    jw_u64(w, "dropped_queue_full", m->dropped_queue_full);
    jw_u64(w, "calls", m->calls);
    jw_u64(w, "published_after_restart", m->published_after);
    jw_num(w, "drain_s", "%.2f", m->drain_s);
    jw_num(w, "rss_growth_after_drain_kib", "%.0f", m->rss_growth_recover_kib);
    jw_num(w, "restart_t", "%.2f", m->restart_t);
    jw_open(w, "series", '[', true);
    for (size_t i = 0; i < m->nseries; i++) {
        jw_open(w, NULL, '[', true);
        jw_num(w, NULL, "%.1f", m->series[i].t);
        jw_u64(w, NULL, m->series[i].rss_kib);
        jw_u64(w, NULL, m->series[i].queued);
        jw_close(w, ']');
    }
    jw_close(w, ']');
    jw_end(w);
}

static void json_idle(jw *w, const idle_result *id)
{
    jw_obj(w, "idle");
    jw_num(w, "seconds", "%.2f", id->seconds);
    jw_u64(w, "voluntary", id->voluntary);
    jw_u64(w, "involuntary", id->involuntary);
    jw_u64(w, "runtime_ns", id->runtime_ns);
    jw_num(w, "wakeups_per_s", "%.3f", id->wakeups_per_s);
    jw_num(w, "cpu_ms_per_hour", "%.3f", id->cpu_ms_per_hour);
    jw_end(w);
}

static void json_isolated(jw *w, const isolated_result *is)
{
    jw_obj(w, "isolated");
    jw_i64(w, "events", is->events);
    jw_i64(w, "gap_ms", is->gap_ms);
    jw_u64(w, "lost", is->lost);
    jw_u64(w, "io_voluntary", is->io_voluntary);
    json_lat(w, "to_ack", &is->ack);
    json_lat(w, "to_subscriber", &is->sub);
    json_lat(w, "replaced_to_reply", &is->sync_ack);
    json_lat(w, "replaced_to_subscriber", &is->sync_sub);
    json_lat(w, "machine_thread_wakeup", &is->hop);
    jw_end(w);
}

static void json_hubcall(jw *w, const hubcall_result *h)
{
    jw_obj(w, "hub_caller");
    for (int s = 0; s < HUB_STATES; s++) {
        const hub_call_result *x = &h->state[s];
        jw_obj(w, hub_state_names[s]);
        jw_u64(w, "calls", x->calls);
        jw_u64(w, "published", x->published);
        jw_u64(w, "dropped", x->dropped);
        jw_u64(w, "connects", x->connects);
        jw_u64(w, "connect_failures", x->connect_failures);
        jw_num(w, "close_ms", "%.1f", x->close_ms);
        json_lat(w, "call", &x->call);
        jw_end(w);
    }
    jw_end(w);
}

static void json_stream(jw *w, const stream_result *st)
{
    jw_obj(w, "stream_mode");
    for (int m = 0; m < 2; m++) {
        const stream_mode_result *x = &st->mode[m];
        jw_obj(w, m ? "stream" : "pubsub");
        jw_u64(w, "events", x->events);
        jw_u64(w, "received", x->received);
        jw_u64(w, "dropped", x->dropped);
        jw_num(w, "events_per_s", "%.0f", x->eps);
        jw_num(w, "redis_cpu_ms_per_100k", "%.1f", x->redis_cpu_ms_per_100k);
        jw_u64(w, "memory_bytes_per_100k", x->mem_per_100k);
        json_lat(w, "call", &x->call);
        jw_end(w);
    }
    jw_end(w);
}

static void json_tls(jw *w, const tls_result *t)
{
    jw_obj(w, "tls");
    for (int m = 0; m < 2; m++) {
        const tls_mode_result *x = &t->mode[m];
        jw_obj(w, m ? "tls" : "tcp");
        jw_u64(w, "events", x->events);
        jw_u64(w, "received", x->received);
        jw_u64(w, "dropped", x->dropped);
        jw_num(w, "events_per_s", "%.0f", x->eps);
        json_lat(w, "call", &x->call);
        jw_end(w);
    }
    json_lat(w, "connect_plain", &t->connect_plain);
    json_lat(w, "connect_tls_full", &t->connect_full);
    json_lat(w, "connect_tls_resumed", &t->connect_resumed);
    jw_u64(w, "resumed", t->resumed);
    jw_end(w);
}

/* Writes every part's figures (zeros for a part that did not run, as
 * before) to path. 0, or -1 (out of memory or a write error). */
static int write_json(const char *path, const bench_opts *o, bench_results *r, const char *mach)
{
    jw w = {.first = true};
    time_t now = time(NULL);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));

    jw_obj(&w, NULL);
    jw_str(&w, "generated_at", when);
    jw_str(&w, "mode", o->full ? "full" : "quick");
    jw_str(&w, "machine", mach);
    jw_str(&w, "library_version", MAE_VERSION_STRING);
    jw_num(&w, "total_s", "%.1f", r->total_s);
    jw_num(&w, "timer_overhead_ns", "%.1f", r->timer_overhead_ns);
    jw_flat_obj(&w, "targets");
    jw_num(&w, "p50_ns", "%.0f", TARGET_P50_NS);
    jw_num(&w, "p99_ns", "%.0f", TARGET_P99_NS);
    jw_num(&w, "hung_ratio", "%.0f", TARGET_HUNG_RATIO);
    jw_num(&w, "throughput_ratio", "%.2f", TARGET_TPUT_RATIO);
    jw_num(&w, "store_overhead_pct", "%.1f", TARGET_OVERHEAD_PCT);
    jw_end(&w);
    json_latency(&w, r);
    json_throughput(&w, &r->tput);
    json_stores(&w, &r->store);
    json_day(&w, &r->day);
    json_memory(&w, &r->mem);
    json_idle(&w, &r->idle);
    json_isolated(&w, &r->iso);
    json_stream(&w, &r->stream);
    json_hubcall(&w, &r->hubcall);
    json_tls(&w, &r->tls);
    jw_end(&w);
    mae__buf_putc(&w.b, '\n');
    if (w.b.oom) {
        mae__buf_free(&w.b);
        return -1;
    }

    FILE *f = fopen(path, "w");
    bool ok = f && fwrite(w.b.ptr, 1, w.b.len, f) == w.b.len;
    if (f && fclose(f) != 0)
        ok = false;
    mae__buf_free(&w.b);
    return ok ? 0 : -1;
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

static const char *const part_names[PART_COUNT] = {
#define BENCH_PART_NAME(id, name) [PART_##id] = name,
    BENCH_PARTS(BENCH_PART_NAME)
#undef BENCH_PART_NAME
};

/* Marks in run the parts named in list: names separated by commas
 * ("latency,stores"), or their numbers in the order of the table, for the
 * older form ("13"). False, with a message, for a name that is none. */
static bool parse_only(const char *list, bool run[PART_COUNT])
{
    for (int k = 0; k < PART_COUNT; k++)
        run[k] = false;
    if (strspn(list, "123456789") == strlen(list) && list[0]) {
        for (const char *c = list; *c; c++)
            run[*c - '1'] = true;
        return true;
    }
    const char *p = list;
    while (*p) {
        size_t n = strcspn(p, ",");
        int k = 0;
        while (k < PART_COUNT && !(strlen(part_names[k]) == n && strncmp(p, part_names[k], n) == 0))
            k++;
        if (k == PART_COUNT) {
            fprintf(stderr, "mae_bench: no part named \"%.*s\"\n", (int)n, p);
            return false;
        }
        run[k] = true;
        p += n;
        if (*p == ',')
            p++;
    }
    return true;
}

/* Parses the command line into o and run (the parts to run). -1 to go on,
 * or the exit status (help printed, or a usage error). */
static int parse_args(int argc, char **argv, bench_opts *o, bool run[PART_COUNT])
{
    set_quick(o);
    o->results_dir = "bench/results";
    o->plot_script = "bench/plot.gp";
    for (int k = 0; k < PART_COUNT; k++)
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
            if (!parse_only(argv[++i], run)) {
                usage(stderr);
                return 2;
            }
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
static int run_parts(const bench_opts *o, const bool run[PART_COUNT], bench_results *r,
                     const char *cdfpath)
{
    uint64_t t0 = now_ns();
    int failed = 0;

    /* The memory part first: its RSS figures are cleanest in a process that
     * has not yet grown and freed the large queues of latency and
     * throughput. */
    if (run[PART_MEMORY] && part_memory(o, r) != 0)
        failed++;
    if (run[PART_LATENCY]) {
        FILE *cdf = fopen(cdfpath, "w");
        if (!cdf)
            perror(cdfpath);
        if (part_latency(o, r, cdf) != 0)
            failed++;
        if (cdf)
            fclose(cdf);
    }
    if (run[PART_THROUGHPUT] && part_throughput(o, r) != 0)
        failed++;
    if (run[PART_STORES] && part_stores(o, r) != 0)
        failed++;
    if (run[PART_DAY] && part_day(o, r) != 0)
        failed++;
    if (run[PART_IDLE] && part_idle(o, r) != 0)
        failed++;
    if (run[PART_ISOLATED] && part_isolated(o, r) != 0)
        failed++;
    if (run[PART_STREAM] && part_stream(o, r) != 0)
        failed++;
    if (run[PART_HUBCALL] && part_hubcall(o, r) != 0)
        failed++;
    if (run[PART_TLS] && part_tls(o, r) != 0)
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
           o->full ? "" : " (the memory part keeps Redis down 15 s instead of 60 s; --full for all of it)",
           r->total_s);
    printf("machine: %s\n", mach);
    if (r->have[PART_LATENCY])
        print_latency(o, r);
    if (r->have[PART_THROUGHPUT])
        print_throughput(r);
    if (r->have[PART_STORES])
        print_stores(o, r);
    if (r->have[PART_DAY])
        print_day(r);
    if (r->have[PART_MEMORY])
        print_memory(o, r);
    if (r->have[PART_IDLE])
        print_idle(r);
    if (r->have[PART_ISOLATED])
        print_isolated(r);
    if (r->have[PART_STREAM])
        print_stream(r);
    if (r->have[PART_HUBCALL])
        print_hubcall(r);
    if (r->have[PART_TLS])
        print_tls(r);
}

/* The last line: the summary, with the count of targets met. */
static void print_summary(bench_results *r, int failed)
{
    char a[8][32];
    printf("summary:");
    if (r->have[PART_LATENCY])
        printf(" publish p50/p99");
    for (int s = 0; s < ST_COUNT && r->have[PART_LATENCY]; s++)
        printf(" %s %s/%s%s", state_names[s], fmt_ns(r->lat[s].ours.p50, a[0], 32),
               fmt_ns(r->lat[s].ours.p99, a[1], 32), s + 1 < ST_COUNT ? "," : "");
    int met = 0, total = 0;
    if (r->have[PART_LATENCY]) {
        bool all = true;
        for (int s = 0; s < ST_COUNT; s++)
            all = all && latency_met(&r->lat[s]);
        met += all;
        met += hung_ratio(r) >= TARGET_HUNG_RATIO;
        total += 2;
        printf("; hung ratio %sx", fmt_num(hung_ratio(r), a[2], 32));
    }
    if (r->have[PART_THROUGHPUT]) {
        double rt = r->tput.rb16_eps > 0 ? r->tput.ours_eps / r->tput.rb16_eps : 0;
        met += rt >= TARGET_TPUT_RATIO;
        total++;
        printf("; throughput %s ev/s = %.2fx redis-benchmark -P16", fmt_num(r->tput.ours_eps, a[3], 32),
               rt);
    }
    if (r->have[PART_STORES]) {
        const struct store_cfg *n = &r->store.cfg[SYNC_NORMAL], *f = &r->store.cfg[SYNC_FULL];
        met += store_met(&r->store);
        total++;
        printf("; store overhead %+.1f %% healthy / %+.1f %% hung (fsync per commit: %+.1f / %+.1f %%)",
               overhead_all(n, PS_HEALTHY), overhead_all(n, PS_HUNG), overhead_all(f, PS_HEALTHY),
               overhead_all(f, PS_HUNG));
    }
    if (r->have[PART_DAY])
        printf("; day %.1f ms CPU, headroom %sx", 1e3 * (r->day.process_cpu_s[1]),
               fmt_num(r->day.headroom, a[4], 32));
    if (r->have[PART_MEMORY])
        printf("; peak RSS %.0f MiB (Redis down %d s)", r->mem.rss_peak_kib / 1024.0, r->mem.down_s);
    if (r->have[PART_IDLE]) {
        met += idle_met(&r->idle);
        total++;
        printf("; idle %.2f wake-ups/s", r->idle.wakeups_per_s);
    }
    if (r->have[PART_ISOLATED]) {
        met += isolated_met(&r->iso);
        total++;
        printf("; isolated event p99 %s to Redis, %s to a subscriber",
               fmt_ns(r->iso.ack.p99, a[5], 32), fmt_ns(r->iso.sub.p99, a[6], 32));
    }
    if (r->have[PART_STREAM])
        printf("; stream mode %s ev/s (pub/sub %s)", fmt_num(r->stream.mode[1].eps, a[5], 32),
               fmt_num(r->stream.mode[0].eps, a[6], 32));
    if (r->have[PART_TLS])
        printf("; TLS %s ev/s (TCP %s), reconnect %s (resumed %s)",
               fmt_num(r->tls.mode[1].eps, a[5], 32), fmt_num(r->tls.mode[0].eps, a[6], 32),
               fmt_ns(r->tls.connect_full.p50, a[0], 32),
               fmt_ns(r->tls.connect_resumed.p50, a[1], 32));
    printf("; targets met %d/%d%s\n", met, total, failed ? "; SOME PARTS FAILED" : "");
}

int main(int argc, char **argv)
{
    bench_opts o;
    bool run[PART_COUNT];
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

    bool plotted = r->have[PART_LATENCY] && plot(&o, cdfpath, png) == 0;
    bool all = r->have[PART_LATENCY];
    for (int k = 0; k < PART_COUNT; k++)
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
