/* This module implements the hub (relay/hub_source.h): ids made from the
 * clock and a sequence, a ring of the last events kept in memory under two
 * bounds, and the history table (relay/history.h) that serves the clients
 * who resume, its reads answered from the loop on the next turn. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/time.h>

#include <event2/event.h>

#include <mailagent/common.h>
#include "relay/hub_source.h"

typedef struct entry {
    mae__stream_id id;
    char *line;               /* without its '\n' */
    size_t len;
} entry;

/* A history read waiting for its turn of the loop. */
struct mae__stream_req {
    struct mae__hub *h;
    struct event *ev;
    bool is_range;
    mae__stream_id after;
    unsigned count;
    mae__stream_range_fn range_fn;
    mae__stream_bounds_fn bounds_fn;
    void *user;
    TAILQ_ENTRY(mae__stream_req) link;
};
TAILQ_HEAD(req_list, mae__stream_req);

typedef struct mae__hub {
    mae__source as_source;    /* first: the relay sees this */
    mae__history history_if;
    mae__source_cb cb;
    struct event_base *base;
    size_t max_events, max_bytes;
    entry *ring;              /* capacity cap, head the oldest, n kept */
    size_t cap, head, n;
    mae__stream_id floor;     /* {start ms, 0}: nothing issued is below it */
    mae__stream_id last;      /* the last id given (floor before the first) */
    bool issued_any;
    mae__hub_stats stats;
    struct req_list reqs;
} mae__hub;

static uint64_t real_wall_ms(void);
static uint64_t (*wall_ms)(void) = real_wall_ms;

void mae__hub_set_clock(uint64_t (*clock_ms)(void))
{
    wall_ms = clock_ms ? clock_ms : real_wall_ms;
}

static uint64_t real_wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

static entry *at(mae__hub *h, size_t i)
{
    return &h->ring[(h->head + i) % h->cap];
}

static void evict_oldest(mae__hub *h)
{
    entry *e = at(h, 0);
    h->stats.kept_bytes -= e->len + MAE__HUB_ENTRY_OVERHEAD;
    free(e->line);
    e->line = NULL;
    h->head = (h->head + 1) % h->cap;
    h->n--;
    h->stats.evicted++;
}

/* Room for one more entry in the ring (grown by doubling up to
 * max_events); false on out of memory. */
static bool ring_room(mae__hub *h)
{
    if (h->n < h->cap)
        return true;
    if (h->cap >= h->max_events) {
        evict_oldest(h);
        return true;
    }
    size_t cap = h->cap ? h->cap * 2 : 1024;
    if (cap > h->max_events)
        cap = h->max_events;
    entry *v = malloc(cap * sizeof *v);
    if (!v)
        return false;
    for (size_t i = 0; i < h->n; i++)
        v[i] = *at(h, i);
    free(h->ring);
    h->ring = v;
    h->cap = cap;
    h->head = 0;
    return true;
}

/* The next id: the clock's millisecond when it is past the last id's,
 * else the last id's with the next sequence number (a clock that stepped
 * back, or many events in one millisecond). */
static mae__stream_id next_id(mae__hub *h)
{
    uint64_t now = wall_ms();
    mae__stream_id id;
    if (now > h->last.ms) {
        id.ms = now;
        id.seq = 0;
    } else {
        if (now < h->last.ms)
            h->stats.clock_steps++;
        id.ms = h->last.ms;
        id.seq = h->last.seq + 1;
    }
    return id;
}

/* Keeps one event; the oldest go first while a bound would be passed. An
 * event larger than --history-bytes alone is not kept. */
static void keep(mae__hub *h, const mae__stream_id *id, char *line, size_t len)
{
    size_t cost = len + MAE__HUB_ENTRY_OVERHEAD;
    if (h->max_events == 0 || cost > h->max_bytes || !ring_room(h)) {
        free(line);
        if (h->max_events)
            h->stats.evicted++;
        return;
    }
    while (h->n && h->stats.kept_bytes + cost > h->max_bytes)
        evict_oldest(h);
    entry *e = at(h, h->n);
    e->id = *id;
    e->line = line;
    e->len = len;
    h->n++;
    h->stats.kept_bytes += cost;
}

int mae__hub_publish(mae__source *src, const char *lines, size_t len, size_t count,
                     mae__stream_id *last)
{
    mae__hub *h = (mae__hub *)src;
    /* Copies first, so out of memory delivers nothing. */
    char **copies = calloc(count ? count : 1, sizeof *copies);
    if (!copies)
        return MAE_ENOMEM;
    const char *p = lines, *end = lines + len;
    size_t k = 0;
    while (p < end && k < count) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = (size_t)((nl ? nl : end) - p);
        if (h->max_events) {
            copies[k] = malloc(n ? n : 1);
            if (!copies[k]) {
                for (size_t i = 0; i < k; i++)
                    free(copies[i]);
                free(copies);
                return MAE_ENOMEM;
            }
            memcpy(copies[k], p, n);
        }
        k++;
        p = nl ? nl + 1 : end;
    }
    bool batch = k > 1 && h->cb.on_batch;
    if (batch)
        h->cb.on_batch(h->cb.ctx, true);
    p = lines;
    for (size_t i = 0; i < k; i++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = (size_t)((nl ? nl : end) - p);
        mae__stream_id id = next_id(h);
        h->last = id;
        h->issued_any = true;
        h->stats.issued++;
        keep(h, &id, copies[i], n);
        h->cb.on_event(h->cb.ctx, &id, p, n);
        p = nl ? nl + 1 : end;
    }
    if (batch)
        h->cb.on_batch(h->cb.ctx, false);
    free(copies);
    if (last)
        *last = h->last;
    return MAE_OK;
}

void mae__hub_get_stats(const mae__source *src, mae__hub_stats *out)
{
    const mae__hub *h = (const mae__hub *)src;
    *out = h->stats;
    out->kept = h->n;
}

/* ---- the history (relay/history.h) ---------------------------------------------- */

static bool hist_position(void *self, mae__stream_id *out)
{
    mae__hub *h = self;
    /* Before the first event: 0-0, "from the beginning", so a client that
     * joined then and comes back gets everything since. */
    if (h->issued_any)
        *out = h->last;
    else
        *out = (mae__stream_id){0, 0};
    return true;
}

static uint64_t hist_epoch(void *self)
{
    (void)self;
    return 0;   /* the hub's ids never go backwards */
}

static struct event_base *hist_base(void *self)
{
    return ((mae__hub *)self)->base;
}

static bool hist_floor(void *self, mae__stream_id *out)
{
    *out = ((mae__hub *)self)->floor;
    return true;
}

/* The first kept entry with id > after (binary search: ids increase). */
static size_t first_after(mae__hub *h, const mae__stream_id *after)
{
    size_t lo = 0, hi = h->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (mae__stream_id_cmp(&at(h, mid)->id, after) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void req_done(mae__stream_req *q)
{
    TAILQ_REMOVE(&q->h->reqs, q, link);
    event_free(q->ev);
    free(q);
}

static void on_req(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mae__stream_req *q = arg;
    mae__hub *h = q->h;
    mae__stream_range_fn range_fn = q->range_fn;
    mae__stream_bounds_fn bounds_fn = q->bounds_fn;
    void *user = q->user;
    if (!q->is_range) {
        mae__stream_bounds b;
        memset(&b, 0, sizeof b);
        b.exists = true;
        b.length = h->n;
        if (h->n)
            b.first = at(h, 0)->id;
        if (h->issued_any)
            b.last = h->last;
        b.added_known = true;
        b.entries_added = h->stats.issued;
        req_done(q);
        bounds_fn(user, &b);
        return;
    }
    /* The page is taken now: every entry kept was already handed to the
     * fan-out, so the position sent with it is the newest id. */
    size_t from = first_after(h, &q->after), n = h->n - from;
    if (n > q->count)
        n = q->count;
    mae__stream_entry *v = malloc((n ? n : 1) * sizeof *v);
    mae__stream_id sent_at;
    hist_position(h, &sent_at);
    if (!v)
        n = 0;   /* a short page: the resume asks again after what it got */
    for (size_t i = 0; i < n; i++) {
        entry *e = at(h, from + i);
        v[i].id = e->id;
        v[i].line = e->line;
        v[i].len = e->len;
    }
    req_done(q);
    /* The lines stay valid through the call: nothing is published while
     * the loop runs this callback. */
    range_fn(user, v, n, &sent_at);
    free(v);
}

static mae__stream_req *new_req(mae__hub *h, void *user)
{
    mae__stream_req *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->h = h;
    q->user = user;
    q->ev = event_new(h->base, -1, 0, on_req, q);
    if (!q->ev) {
        free(q);
        return NULL;
    }
    TAILQ_INSERT_TAIL(&h->reqs, q, link);
    event_active(q->ev, 0, 0);
    return q;
}

static mae__stream_req *hist_bounds(void *self, mae__stream_bounds_fn fn, void *user)
{
    mae__stream_req *q = new_req(self, user);
    if (q)
        q->bounds_fn = fn;
    return q;
}

static mae__stream_req *hist_range(void *self, const mae__stream_id *after, unsigned count,
                                   mae__stream_range_fn fn, void *user)
{
    mae__stream_req *q = new_req(self, user);
    if (q) {
        q->is_range = true;
        q->after = *after;
        q->count = count ? count : 500;
        q->range_fn = fn;
    }
    return q;
}

static void hist_cancel(void *self, mae__stream_req *req)
{
    (void)self;
    if (req)
        req_done(req);
}

static const mae__history_ops history_ops = {hist_position, hist_epoch, hist_base,
                                             hist_bounds,   hist_range, hist_cancel,
                                             hist_floor, NULL};

/* ---- relay/source.h -------------------------------------------------------------- */

static bool src_up(const mae__source *src)
{
    (void)src;
    return true;   /* listening is all the hub needs */
}

static const mae__history *src_history(mae__source *src)
{
    return &((mae__hub *)src)->history_if;
}

static void src_free(mae__source *src)
{
    mae__hub *h = (mae__hub *)src;
    while (!TAILQ_EMPTY(&h->reqs))
        req_done(TAILQ_FIRST(&h->reqs));
    while (h->n)
        evict_oldest(h);
    free(h->ring);
    free(h);
}

static const mae__source_ops source_ops = {src_up, src_history, src_free};

int mae__source_hub_new(const mae__source_config *cfg, const mae__source_cb *cb,
                        mae__source **out, char *err, size_t errlen)
{
    if (!cfg->base) {
        snprintf(err, errlen, "the hub needs an event loop");
        return MAE_EINVAL;
    }
    mae__hub *h = calloc(1, sizeof *h);
    if (!h)
        return MAE_ENOMEM;
    h->as_source.ops = &source_ops;
    h->history_if.ops = &history_ops;
    h->history_if.self = h;
    h->cb = *cb;
    h->base = cfg->base;
    h->max_events = cfg->history_events;
    h->max_bytes = cfg->history_bytes;
    h->floor = (mae__stream_id){wall_ms(), 0};
    h->last = h->floor;
    TAILQ_INIT(&h->reqs);
    *out = &h->as_source;
    return MAE_OK;
}
