/* This file implements stream mode's resend window (issue 21): the lines
 * Redis acknowledged stay here for a while, bounded in time and bytes, so
 * that when a new master after a failover answers that it lacks some of
 * them (the batch script's gap reply) they are sent again, in order,
 * before the batch in flight. What a gap reply names that is no longer
 * here is counted lost_failover. All of it runs on the I/O thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "publisher/publisher_impl.h"

#define DEFAULT_WINDOW_MS 10000
#define DEFAULT_WINDOW_BYTES ((size_t)8 << 20)
#define DEFAULT_WAIT_TIMEOUT_MS 100
#define WINDOW_KEEP ((size_t)64 << 10) /* an emptied window keeps buffers up to this */

/* One kept line: where its bytes are (a position counted since the
 * window's first byte ever, so compaction moves no offsets) and when
 * Redis acknowledged it. Lines are numbered consecutively from seq0. */
typedef struct wline {
    uint64_t pos;
    size_t len;
    double acked;
} wline;

struct mae__window {
    char *buf;               /* bytes of positions [base, base + used) */
    uint64_t base;
    size_t used, cap;
    wline *e;                /* lines e[first .. first + n) */
    size_t first, n, ecap;
    uint64_t seq0;           /* the number of e[first] */
    size_t bytes;            /* line bytes kept */
};

int mae__resend_init(mae_publisher *p, const mae_publisher_config *cfg, char *err, size_t errlen)
{
    int wr = cfg->wait_replicas, wt = cfg->wait_timeout_ms;
    if (wr < 0 || wt < 0 || cfg->resend_window_ms < 0) {
        snprintf(err, errlen, "wait_replicas, wait_timeout_ms and resend_window_ms must not be "
                              "negative");
        return MAE_EINVAL;
    }
    if (wr == 0 && p->url.wait_replicas > 0)
        wr = p->url.wait_replicas;
    if (wt == 0 && p->url.wait_timeout_ms > 0)
        wt = p->url.wait_timeout_ms;
    if (wt == 0)
        wt = DEFAULT_WAIT_TIMEOUT_MS;
    if (wr > 0 && wt >= p->io_timeout_ms) {
        snprintf(err, errlen, "wait_timeout_ms (%d) must be below io_timeout_ms (%d)", wt,
                 p->io_timeout_ms);
        return MAE_EINVAL;
    }
    p->wait_replicas = wr;
    p->wait_timeout_ms = wt;
    p->window_s = (cfg->resend_window_ms ? cfg->resend_window_ms : DEFAULT_WINDOW_MS) / 1000.0;
    p->window_max = cfg->resend_window_bytes ? cfg->resend_window_bytes : DEFAULT_WINDOW_BYTES;
    if (!p->stream_key)
        return MAE_OK;
    p->win = calloc(1, sizeof *p->win);
    if (!p->win) {
        snprintf(err, errlen, "out of memory");
        return MAE_ENOMEM;
    }
    return MAE_OK;
}

void mae__resend_free(mae_publisher *p)
{
    if (!p->win)
        return;
    free(p->win->buf);
    free(p->win->e);
    free(p->win);
    p->win = NULL;
}

static void window_clear(struct mae__window *w)
{
    w->base += w->used;
    w->used = 0;
    w->first = w->n = 0;
    w->bytes = 0;
}

/* Drops the oldest lines while over the byte bound or older than the time
 * bound (now < 0: only the byte bound), and compacts the buffers. */
static void window_trim(mae_publisher *p, double now)
{
    struct mae__window *w = p->win;
    while (w->n > 0) {
        const wline *l = &w->e[w->first];
        if (w->bytes <= p->window_max && (now < 0 || now - l->acked <= p->window_s))
            break;
        w->bytes -= l->len;
        w->first++;
        w->n--;
        w->seq0++;
    }
    if (w->n == 0) {
        window_clear(w);
        /* Emptied (traffic stopped for the window's time): give a large
         * buffer back rather than keep a burst's size for good. */
        if (w->cap > WINDOW_KEEP) {
            free(w->buf);
            free(w->e);
            w->buf = NULL;
            w->e = NULL;
            w->cap = w->ecap = 0;
        }
        return;
    }
    if (w->first > w->n) {
        memmove(w->e, w->e + w->first, w->n * sizeof *w->e);
        w->first = 0;
    }
    size_t dead = (size_t)(w->e[w->first].pos - w->base);
    if (dead > w->used / 2) {
        memmove(w->buf, w->buf + dead, w->used - dead);
        w->used -= dead;
        w->base += dead;
    }
}

/* Adds the batch just acknowledged (n lines from first_seq). A window that
 * does not end right before it (out of memory earlier) starts anew. */
static void window_push(mae_publisher *p, const batch *b, double now)
{
    struct mae__window *w = p->win;
    if (w->n > 0 && w->seq0 + w->n != b->first_seq)
        window_clear(w);
    if (w->n == 0)
        w->seq0 = b->first_seq;
    size_t bytes = 0;
    for (size_t i = 0; i < b->n; i++)
        bytes += b->lens[i];
    if (w->used + bytes > w->cap) {
        size_t cap = w->cap ? w->cap : 4096;
        while (cap < w->used + bytes)
            cap *= 2;
        char *nb = realloc(w->buf, cap);
        if (!nb) {
            window_clear(w);
            mae__io_problem(p, LOG_SEND, "out of memory keeping the resend window");
            return;
        }
        w->buf = nb;
        w->cap = cap;
    }
    if (w->first + w->n + b->n > w->ecap) {
        size_t ecap = w->ecap ? w->ecap : 256;
        while (ecap < w->first + w->n + b->n)
            ecap *= 2;
        wline *ne = realloc(w->e, ecap * sizeof *ne);
        if (!ne) {
            window_clear(w);
            mae__io_problem(p, LOG_SEND, "out of memory keeping the resend window");
            return;
        }
        w->e = ne;
        w->ecap = ecap;
    }
    for (size_t i = 0; i < b->n; i++) {
        memcpy(w->buf + w->used, b->buf + b->off[i], b->lens[i]);
        w->e[w->first + w->n++] = (wline){w->base + w->used, b->lens[i], now};
        w->used += b->lens[i];
    }
    w->bytes += bytes;
    window_trim(p, -1);
}

static void count_locked(mae_publisher *p, uint64_t *field, uint64_t n)
{
    if (n == 0)
        return;
    io_lock(p);
    *field += n;
    pthread_mutex_unlock(&p->mu);
}

/* A gap reply: Redis holds this publisher's events up to last (0: its key
 * is missing). Resend from last + 1 when the window still holds it;
 * otherwise the events before the window's oldest are lost (unless the key
 * simply expired: no batch for longer than its time to live), and the next
 * batch concedes the gap. */
static void on_gap(mae_publisher *p, const stream_result *res, uint64_t first_seq)
{
    struct mae__window *w = p->win;
    uint64_t want = res->gap_last + 1;
    uint64_t lo = w->n > 0 ? w->seq0 : first_seq;
    if (want >= first_seq) {
        /* Redis says it holds what came before this batch; only a reply we
         * cannot explain says so with a gap: send it as it is. */
        p->replay_from = 0;
        p->concede = true;
        mae__io_problem(p, LOG_SEND, "gap reply names %llu, at or past the batch's first %llu",
                        (unsigned long long)res->gap_last, (unsigned long long)first_seq);
        return;
    }
    if (want >= lo) {
        p->replay_from = want;
        mae__io_problem(p, LOG_SEND, "the master lacks events %llu to %llu: resending them",
                        (unsigned long long)want, (unsigned long long)(first_seq - 1));
        return;
    }
    bool expired = !res->gap_key && p->last_ack > 0 && mono_now() - p->last_ack > APPLIED_TTL;
    uint64_t lost = expired ? 0 : lo - want;
    count_locked(p, &p->st.lost_failover, lost);
    p->replay_from = lo < first_seq ? lo : 0;
    p->concede = true;
    if (lost)
        mae__io_problem(p, LOG_SEND,
                        "the master lacks events %llu to %llu, no longer in the resend window: "
                        "%llu lost in a failover",
                        (unsigned long long)want, (unsigned long long)(lo - 1),
                        (unsigned long long)lost);
}

/* Sends p->out (stream mode) and, first, whatever a gap reply asked to be
 * sent again from the window. Returns SENT_OK (with *skipped for p->out),
 * or the first other outcome (the batch stays in flight, the window and
 * what to resend from it are kept for the next try). */
int mae__stream_deliver(mae_publisher *p, void *conn, uint64_t *skipped)
{
    batch *b = &p->out;
    struct mae__window *w = p->win;
    stream_result res;
    window_trim(p, mono_now());
    *skipped = 0;
    /* Each gap reply moves the resend point back or concedes; a server
     * that keeps answering gaps is not followed forever. */
    for (int round = 0; round < 8; round++) {
        uint64_t from = p->replay_from;
        if (from != 0 && from < b->first_seq) {
            if (w->n == 0 || from < w->seq0) {
                /* Trimmed meanwhile: what is gone is lost. */
                uint64_t lo = w->n > 0 ? w->seq0 : b->first_seq;
                count_locked(p, &p->st.lost_failover, lo - from);
                p->concede = true;
                p->replay_from = lo < b->first_seq ? lo : 0;
                continue;
            }
            size_t n = (size_t)(b->first_seq - from);
            if (n > p->batch_max)
                n = p->batch_max;
            const char **lines = malloc(n * sizeof *lines);
            size_t *lens = malloc(n * sizeof *lens);
            if (!lines || !lens) {
                free(lines);
                free(lens);
                mae__io_problem(p, LOG_SEND, "out of memory resending the window");
                return SENT_BROKEN;
            }
            for (size_t i = 0; i < n; i++) {
                const wline *l = &w->e[w->first + (size_t)(from - w->seq0) + i];
                lines[i] = w->buf + (size_t)(l->pos - w->base);
                lens[i] = l->len;
            }
            int rc = mae__send_stream_lines(p, conn, from, n, lines, lens, p->concede, &res);
            free(lines);
            free(lens);
            if (rc == SENT_GAP) {
                on_gap(p, &res, b->first_seq);
                continue;
            }
            if (rc != SENT_OK)
                return rc;
            p->concede = false;
            p->replay_from = from + n < b->first_seq ? from + n : 0;
            io_lock(p);
            p->st.resent += n;
            p->st.skipped += res.skipped;
            pthread_mutex_unlock(&p->mu);
            continue;
        }
        p->replay_from = 0;
        int rc = mae__send_stream_lines(p, conn, b->first_seq, b->n, NULL, NULL, p->concede,
                                        &res);
        if (rc == SENT_GAP) {
            on_gap(p, &res, b->first_seq);
            continue;
        }
        *skipped = res.skipped; /* also when WAIT fell short: applied, not confirmed */
        if (rc != SENT_OK)
            return rc;
        p->concede = false;
        p->last_ack = mono_now();
        window_push(p, b, p->last_ack);
        return SENT_OK;
    }
    mae__io_problem(p, LOG_SEND, "the master keeps answering gaps: trying again later");
    return SENT_RETRY;
}
