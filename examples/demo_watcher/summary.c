/* This file implements the demo's output: the progress line on stderr while
 * the day runs, and the final summary on stdout that `make demo` reconciles
 * against the event stream and the database. */
#include <inttypes.h>
#include <stdio.h>

#include "demo.h"

static const char *const ev_names[EV_COUNT] = {
    "email.synced",   "email.failed",       "email.dead_letter", "outbox.enqueued",
    "outbox.done",    "outbox.failed",      "outbox.dead_letter", "llm.success",
    "llm.failed",     "llm.gave_up",
};

static uint64_t total_events(const watcher *w)
{
    uint64_t n = 0;
    for (int i = 0; i < EV_COUNT; i++)
        n += w->ev[i];
    return n;
}

/* On a terminal the line is redrawn in place; in a log (make demo piped,
 * CI) a line every 10 % keeps the log short. */
void progress(watcher *w, bool tty, bool draining, bool done)
{
    static double last_draw;
    static int last_decile = -1;
    long n = w->opt.mails;
    int pct = n > 0 ? (int)(w->arrived * 100 / n) : 100;
    if (tty) {
        double now = mono_s();
        if (!done && now - last_draw < 0.1)
            return;
        last_draw = now;
    } else {
        int decile = pct / 10;
        if (!done && decile == last_decile)
            return;
        last_decile = decile;
    }
    /* Short enough for an 80-column terminal, or \r cannot redraw it. */
    char sim[32];
    format_sim_time(w->sim_now, sim, sizeof sim);
    fprintf(stderr, "%s[%3d%%] %ld/%ld mails, sim %.5s, %" PRIu64 " events, %" PRIu64
            " synced, %" PRIu64 " dead%s%s",
            tty ? "\r" : "", pct, w->arrived, n, sim + 11, total_events(w),
            w->ev[EV_EMAIL_SYNCED],
            w->ev[EV_EMAIL_DEAD_LETTER] + w->ev[EV_OUTBOX_DEAD_LETTER] + w->ev[EV_LLM_GAVE_UP],
            done ? (interrupted ? ", interrupted" : ", done") : draining ? ", draining" : "",
            tty ? "\033[K" : "\n");
    fflush(stderr);
}

static void print_counts(const char *table, mae_counts *c)
{
    int64_t total = 0;
    printf("  %-15s", table);
    for (size_t i = 0; i < c->count; i++) {
        printf(" %s=%" PRId64, c->items[i].key ? c->items[i].key : "(null)", c->items[i].count);
        total += c->items[i].count;
    }
    printf("  (total %" PRId64 ")\n", total);
}

int summary(watcher *w, double elapsed)
{
    char from[32], to[32];
    format_sim_time(w->sim_start, from, sizeof from);
    format_sim_time(w->sim_now, to, sizeof to);
    printf("\n" PROG ": %ld mails, seed %" PRIu64 ", simulated %s .. %s UTC, %.1f s real\n",
           w->arrived, w->opt.seed, from, to, elapsed);

    printf("events by type (successful store calls that announce a change):\n");
    for (int i = 0; i < EV_COUNT; i++)
        printf("  %-20s %6" PRIu64 "\n", ev_names[i], w->ev[i]);
    printf("  %-20s %6" PRIu64 "\n", "total", total_events(w));
    printf("outbox enqueues: inserted=%" PRIu64 " merged=%" PRIu64 " (no event) echo_skipped=%" PRIu64
           " (no event)\n", w->enq_inserted, w->enq_merged, w->enq_skipped);
    printf("work: llm runs=%" PRIu64 ", caller transactions committed=%" PRIu64
           " (mark read + notion intent)\n", w->llm_runs, w->tx_committed);

    /* Flush first so that the counters describe the whole run. Redis being
     * away is not an error of the run: the counters will say so. */
    int frc = mae_publisher_flush(w->pub, 3000);
    w->flush_timed_out = frc != MAE_OK;
    mae_publisher_stats ps;
    mae_publisher_stats_get(w->pub, &ps);
    printf("publisher%s: calls=%" PRIu64 " enqueued=%" PRIu64 " published=%" PRIu64 " queued=%" PRIu64
           " dropped_queue_full=%" PRIu64 " dropped_disabled=%" PRIu64 " dropped_invalid=%" PRIu64
           " dropped_send_error=%" PRIu64 " connects=%" PRIu64 " connect_failures=%" PRIu64 "\n",
           frc == MAE_OK ? "" : " (flush timed out)", ps.calls, ps.enqueued, ps.published,
           ps.queued, ps.dropped_queue_full, ps.dropped_disabled, ps.dropped_invalid,
           ps.dropped_send_error, ps.connects, ps.connect_failures);
    /* Stream mode: what a broken connection made the publisher send again,
     * and how much of that Redis had already applied and skipped. */
    if (w->opt.stream_key && w->opt.redis_url && *w->opt.redis_url)
        printf("publisher stream %s: resent=%" PRIu64 " skipped=%" PRIu64 "\n",
               w->opt.stream_key, ps.resent, ps.skipped);
    /* Hub mode: the same, and the batches the hub refused, by why. */
    if ((!w->opt.redis_url || !*w->opt.redis_url) && w->opt.relay_url && *w->opt.relay_url)
        printf("publisher hub %s: resent=%" PRIu64 " skipped=%" PRIu64 " rejected_auth=%" PRIu64
               " rejected_invalid=%" PRIu64 " rejected_server=%" PRIu64 "\n",
               w->opt.relay_url, ps.resent, ps.skipped, ps.rejected_auth, ps.rejected_invalid,
               ps.rejected_server);
    if (ps.last_error[0])
        printf("publisher last error: %s\n", ps.last_error);
    if (ps.calls != total_events(w))
        fprintf(stderr, PROG ": warning: %" PRIu64 " events counted from return codes but the "
                "publisher saw %" PRIu64 " calls\n", total_events(w), ps.calls);

    printf("rows by status (read back through the store API):\n");
    mae_counts *c = NULL;
    int rc = mae_sync_store_count_by_status(w->db, &c);
    if (rc != MAE_OK)
        return fail(w, "mae_sync_store_count_by_status", 0, rc);
    print_counts("email_metadata", c);
    mae_counts_free(c);
    mae_outbox_depth d;
    rc = mae_outbox_queue_depth(w->db, &d);
    if (rc != MAE_OK)
        return fail(w, "mae_outbox_queue_depth", 0, rc);
    printf("  %-15s pending=%" PRId64 " processing=%" PRId64 " done=%" PRId64 " failed=%" PRId64
           " dead_letter=%" PRId64 "  (total %" PRId64 ")\n",
           "email_outbox", d.pending, d.processing, d.done, d.failed, d.dead_letter,
           d.pending + d.processing + d.done + d.failed + d.dead_letter);
    rc = mae_llm_store_count_by_status(w->db, &c);
    if (rc != MAE_OK)
        return fail(w, "mae_llm_store_count_by_status", 0, rc);
    print_counts("llm_processing", c);
    mae_counts_free(c);
    mae_llm_totals t;
    rc = mae_llm_store_totals(w->db, &t);
    if (rc != MAE_OK)
        return fail(w, "mae_llm_store_totals", 0, rc);
    printf("llm totals: successes=%" PRId64 " input_tokens=%" PRId64 " output_tokens=%" PRId64
           " cache_read=%" PRId64 " latency mean %.0f ms, p95 %.0f ms\n",
           t.successes, t.input_tokens, t.output_tokens, t.cache_read_input_tokens,
           t.latency_mean_ms, t.latency_p95_ms);
    return 0;
}
