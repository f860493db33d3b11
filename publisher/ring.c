/* This file implements the queue: the byte ring reserved at open, the
 * caller's side that copies each built line into it, and the I/O
 * thread's side that takes batches out of it. */
#define _GNU_SOURCE /* MADV_POPULATE_WRITE, MADV_DONTFORK */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "publisher/publisher_impl.h"

/* The ring is a byte FIFO of lines, each after its 4-byte length; a line
 * may wrap around the end. Its capacity, queue_max_bytes plus a length for
 * each of queue_max_events lines, holds every queue the bounds allow, so
 * the bounds alone decide what is dropped. Producers write at head under
 * mu; the I/O thread reads from tail without mu (the bytes between tail
 * and head are not written until it gives them back under mu). */

/* Each line in the ring is preceded by its length. */
#define HDR sizeof(uint32_t)

/* The line builder's buffer starts this large (a typical line is 150 to
 * 400 bytes); it is given back to this size after an unusually long line. */
#define SCRATCH_CAP 4096
#define SCRATCH_KEEP (64u << 10)

/* ---- reserved at open --------------------------------------------------------- */

/* How much of the ring is made resident: room for a full queue of lines of
 * up to this many bytes (this system's lines are 150 to 400 bytes), or the
 * whole ring when that is smaller. With the default bounds that is 16 MiB
 * of the 64 MiB: the byte bound only binds for lines averaging over 1 KiB,
 * and resident memory nobody writes would be waste. A backlog past it (a
 * long outage with large lines) takes its page faults on the caller's
 * thread once; the pages stay resident afterwards. */
#define RESIDENT_PER_EVENT 256

/* Makes n bytes of the ring from off resident (written, as far as the
 * kernel is concerned, without changing them). False when the kernel
 * cannot (before Linux 5.14). */
static bool populate(mae_publisher *p, size_t off, size_t n)
{
    return madvise(p->ring + off, n, MADV_POPULATE_WRITE) == 0;
}

/* Maps the ring (a fork()ed child does not inherit it) and makes its
 * resident part resident; reserves the line builder's buffer and the I/O
 * thread's batch. Returns MAE_OK, MAE_EINVAL (bounds too large) or
 * MAE_ENOMEM. */
int mae__ring_reserve(mae_publisher *p)
{
    if (p->max_events > (SIZE_MAX - p->max_bytes) / HDR)
        return MAE_EINVAL;
    p->ring_cap = p->max_bytes + p->max_events * HDR;
    void *m = mmap(NULL, p->ring_cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return MAE_ENOMEM;
    p->ring = m;
    madvise(m, p->ring_cap, MADV_DONTFORK);
    p->resident = p->max_events < p->ring_cap / RESIDENT_PER_EVENT
                      ? p->max_events * RESIDENT_PER_EVENT
                      : p->ring_cap;
    /* At open, on the caller's thread (about 4 ms for 16 MiB): left to the
     * I/O thread, a caller publishing at once into a Redis that is down
     * outran it on a busy machine and took the page faults itself. */
    if (!populate(p, 0, p->resident))
        memset(p->ring, 0, p->resident); /* no other thread yet */
    if (!mae__buf_reserve(&p->scratch, SCRATCH_CAP))
        return MAE_ENOMEM;
    memset(p->scratch.ptr, 0, p->scratch.cap);
    p->out.off = malloc(p->batch_max * sizeof *p->out.off);
    p->out.lens = malloc(p->batch_max * sizeof *p->out.lens);
    if (!p->out.off || !p->out.lens)
        return MAE_ENOMEM;
    if (p->stream_key || p->hub) {
        p->argv = malloc((SCRIPT_ARGS + p->batch_max) * sizeof *p->argv);
        p->argl = malloc((SCRIPT_ARGS + p->batch_max) * sizeof *p->argl);
        if (!p->argv || !p->argl)
            return MAE_ENOMEM;
    }
    return MAE_OK;
}

/* ---- the ring's bytes --------------------------------------------------------- */

static size_t ring_put(mae_publisher *p, size_t at, const void *src, size_t n)
{
    size_t first = p->ring_cap - at < n ? p->ring_cap - at : n;
    memcpy(p->ring + at, src, first);
    memcpy(p->ring, (const char *)src + first, n - first);
    at += n;
    return at >= p->ring_cap ? at - p->ring_cap : at;
}

static size_t ring_get(const mae_publisher *p, size_t at, void *dst, size_t n)
{
    size_t first = p->ring_cap - at < n ? p->ring_cap - at : n;
    memcpy(dst, p->ring + at, first);
    memcpy((char *)dst + first, p->ring, n - first);
    at += n;
    return at >= p->ring_cap ? at - p->ring_cap : at;
}

/* Counts one call and queues line, or counts why not. With mu held.
 * Returns true when the I/O thread sleeps and must be woken. */
static bool push_locked(mae_publisher *p, const char *line, size_t len)
{
    p->st.calls++;
    if (len > p->max_line) {
        p->st.dropped_too_large++;
        return false;
    }
    if (p->st.queued + 1 > p->max_events || len > p->max_bytes - p->st.queued_bytes ||
        len > UINT32_MAX) {
        p->st.dropped_queue_full++;
        return false;
    }
    if (p->ring_used == 0)
        p->ring_head = p->ring_tail = 0; /* an empty ring starts over: its first pages stay hot */
    uint32_t n32 = (uint32_t)len;
    p->ring_head = ring_put(p, p->ring_head, &n32, HDR);
    p->ring_head = ring_put(p, p->ring_head, line, len);
    p->ring_used += HDR + len;
    p->st.queued++;
    p->st.queued_bytes += len;
    p->st.enqueued++;
    if (!p->sleeping)
        return false;
    p->sleeping = false; /* the first event after an idle spell wakes it; the rest need not */
    return true;
}

/* ---- the caller's side: counting and queueing ------------------------------ */

bool mae__publisher_live(const mae_publisher *p)
{
    /* forked is read without the lock: it only ever turns true, in a child
     * that then has a single thread, so a stale false in the parent is the
     * truth and in the child it is set before any code of the child runs. */
    return p && !p->disabled && !p->forked;
}

void mae__publisher_drop_invalid(mae_publisher *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->st.calls++;
    if (p->disabled || p->forked)
        p->st.dropped_disabled++;
    else
        p->st.dropped_invalid++;
    pthread_mutex_unlock(&p->mu);
}

void mae__publisher_enqueue(mae_publisher *p, mae__buf *b)
{
    bool w = false;
    if (!p) {
        mae__buf_free(b);
        return;
    }
    pthread_mutex_lock(&p->mu);
    if (p->disabled || p->forked) {
        p->st.calls++;
        p->st.dropped_disabled++;
    } else if (!b || b->oom || !b->ptr) {
        /* The line could not be built: out of memory. */
        p->st.calls++;
        p->st.dropped_invalid++;
    } else {
        w = push_locked(p, b->ptr, b->len);
    }
    pthread_mutex_unlock(&p->mu);
    if (b)
        mae__buf_free(b);
    if (w)
        wake(p);
}

mae__buf *mae__publisher_line_begin(mae_publisher *p)
{
    pthread_mutex_lock(&p->mu);
    p->scratch.len = 0;
    p->scratch.oom = false;
    return &p->scratch;
}

void mae__publisher_line_end(mae_publisher *p, bool built)
{
    mae__buf *b = &p->scratch;
    bool w = false;
    if (!built || b->oom) {
        p->st.calls++;
        p->st.dropped_invalid++;
    } else {
        w = push_locked(p, b->ptr, b->len);
    }
    if (b->cap > SCRATCH_KEEP) {
        /* An unusually long line (a large data object) grew the buffer:
         * give the memory back rather than keep it for every later call. */
        mae__buf_free(b);
        if (mae__buf_reserve(b, SCRATCH_CAP))
            memset(b->ptr, 0, b->cap);
    }
    pthread_mutex_unlock(&p->mu);
    if (w)
        wake(p);
}

/* ---- the I/O thread's side --------------------------------------------------- */

/* Copies up to batch_max queued lines (in hub mode, up to batch_bytes_max
 * bytes of body) out of the ring into p->out, and gives their ring space
 * back. With mu held (released for the copy). Returns
 * false when out of memory (nothing taken). */
bool mae__ring_take_batch(mae_publisher *p)
{
    batch *b = &p->out;
    size_t n = p->st.queued < p->batch_max ? p->st.queued : p->batch_max;
    size_t at = p->ring_tail, bytes = 0;
    pthread_mutex_unlock(&p->mu);

    b->len = 0;
    b->n = 0;
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        uint32_t len;
        size_t line_at = at;
        at = ring_get(p, at, &len, HDR);
        /* Hub mode: the body (each line and its '\n') stays under the
         * byte bound, so a batch of large events is not refused whole by a
         * hub's body limit; a line longer than the bound goes alone. */
        if (p->batch_bytes_max && b->n > 0 &&
            b->len + b->n + len + 1 > p->batch_bytes_max) {
            at = line_at;
            break;
        }
        if (b->len + len > b->cap) {
            size_t cap = b->cap ? b->cap : 16384;
            while (cap < b->len + len)
                cap *= 2;
            char *nb = realloc(b->buf, cap);
            if (!nb) {
                ok = false;
                break;
            }
            b->buf = nb;
            b->cap = cap;
        }
        at = ring_get(p, at, b->buf + b->len, len);
        b->off[i] = b->len;
        b->lens[i] = len;
        b->len += len;
        bytes += len;
        b->n++;
    }

    io_lock(p);
    if (!ok) {
        b->n = 0;
        return false;
    }
    n = b->n;
    p->ring_tail = at;
    p->ring_used -= bytes + n * HDR;
    p->st.queued -= n;
    p->st.queued_bytes -= bytes;
    p->st.in_flight += n;
    return true;
}

