/* This module implements a relay client's catch-up of relay/resume.h: the
 * replay, paced per entry, and its hand-off to the live fan-out. */
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "relay/resume.h"

#define DEFAULT_PAGE 500

/* ---- the catch-up -------------------------------------------------------- */

enum state { ST_PENDING, ST_BOUNDS, ST_PAGE, ST_PARKED, ST_LIVE };

struct mae__resume {
    const mae__history *h;
    mae__resume_events ev;
    void *user;
    unsigned page;
    enum state state;
    int parse_rc;
    mae__stream_id id;         /* the client's, when parse_rc is OK */
    mae__resume_plan plan;
    mae__stream_id last;       /* L */
    mae__stream_id joined;     /* S when the client came, if known */
    bool joined_known;
    uint64_t epoch;            /* the source's, when L was last valid */
    mae__stream_req *req;      /* the read in flight */
    struct event *kick;        /* the reset of a malformed id, from the loop */
    /* The page being delivered: its size and S when it was read, and the
     * entries not yet given when the replay parked (an owned copy). */
    size_t page_n;
    mae__stream_id page_sent_at;
    mae__stream_entry *held;
    size_t nheld, iheld;
};

static bool h_position(const mae__resume *r, mae__stream_id *out)
{
    return r->h->ops->position(r->h->self, out);
}

static uint64_t h_epoch(const mae__resume *r)
{
    return r->h->ops->epoch(r->h->self);
}

static void drop_held(mae__resume *r)
{
    free(r->held);   /* entries and their lines are one block */
    r->held = NULL;
    r->nheld = r->iheld = 0;
}

static void go_live(mae__resume *r)
{
    r->state = ST_LIVE;
    if (r->ev.live)
        r->ev.live(r->user);
}

static void on_page(void *user, const mae__stream_entry *v, size_t n, const mae__stream_id *sent_at);

static void fetch_page(mae__resume *r)
{
    r->state = ST_PAGE;
    r->req = r->h->ops->range(r->h->self, &r->last, r->page, on_page, r);
    /* Out of memory: nothing better than going live with what was sent. */
    if (!r->req)
        go_live(r);
}

/* After a page was given: live once L reached S, else the next page. */
static void page_done(mae__resume *r)
{
    mae__stream_id s;
    if (r->epoch != h_epoch(r)) {
        /* The ids went backwards under the replay: the relay resets every
         * client; this one goes on from the source's new ids. */
        r->epoch = h_epoch(r);
        r->last = (mae__stream_id){0, 0};
        go_live(r);
        return;
    }
    if (r->page_n < r->page && mae__stream_id_cmp(&r->last, &r->page_sent_at) < 0)
        r->last = r->page_sent_at;
    /* The source answers pages only once its position is known. */
    if (!h_position(r, &s) || mae__stream_id_cmp(&r->last, &s) >= 0) {
        go_live(r);
        return;
    }
    fetch_page(r);
}

/* Keeps v[0..n) for later: the page's entries are borrowed. False on out
 * of memory. */
static bool hold(mae__resume *r, const mae__stream_entry *v, size_t n)
{
    size_t bytes = n * sizeof *v;
    for (size_t i = 0; i < n; i++)
        bytes += v[i].len;
    mae__stream_entry *copy = malloc(bytes ? bytes : 1);
    if (!copy)
        return false;
    char *text = (char *)(copy + n);
    for (size_t i = 0; i < n; i++) {
        copy[i] = v[i];
        if (v[i].line) {
            memcpy(text, v[i].line, v[i].len);
            copy[i].line = text;
            text += v[i].len;
        }
    }
    r->held = copy;
    r->nheld = n;
    r->iheld = 0;
    return true;
}

/* Gives the client v[0..n) one entry at a time while it keeps up. False
 * when the replay parked (the rest is held). */
static bool give(mae__resume *r, const mae__stream_entry *v, size_t n, bool borrowed)
{
    for (size_t i = 0; i < n; i++) {
        if (r->ev.want_more && !r->ev.want_more(r->user)) {
            r->state = ST_PARKED;
            if (!borrowed) {
                r->iheld += i;
                return false;
            }
            if (!hold(r, v + i, n - i)) {
                /* Out of memory: the rest is read again after L, as if
                 * the page had been full. */
                r->page_n = r->page;
            }
            return false;
        }
        r->last = v[i].id;
        if (v[i].line && r->ev.entry)
            r->ev.entry(r->user, &v[i].id, v[i].line, v[i].len);
    }
    return true;
}

static void on_page(void *user, const mae__stream_entry *v, size_t n, const mae__stream_id *sent_at)
{
    mae__resume *r = user;
    r->req = NULL;
    r->page_n = n;
    r->page_sent_at = *sent_at;
    if (give(r, v, n, true))
        page_done(r);
}

/* After the reset: the plan's replay; or, for a plan without one, the
 * entries delivered since the client came (the decision may have waited
 * for the bounds), then live. */
static void after_reset(mae__resume *r)
{
    mae__stream_id s;
    if (r->plan.replay) {
        r->last = r->plan.after;
        fetch_page(r);
    } else if (r->joined_known && r->epoch == h_epoch(r) && h_position(r, &s) &&
               mae__stream_id_cmp(&s, &r->joined) > 0) {
        r->last = r->joined;
        fetch_page(r);
    } else {
        if (r->joined_known && r->epoch == h_epoch(r))
            r->last = r->joined;
        go_live(r);
    }
}

static void send_reset(mae__resume *r)
{
    char json[MAE__RESUME_RESET_MAX];
    size_t n = mae__resume_reset_json(&r->plan, json, sizeof json);
    if (n && r->ev.reset)
        r->ev.reset(r->user, json, n);
}

/* The answer of kept(): the client's id exists (replay after it as
 * planned) or is gone although newer entries exist: rolled back. */
static void on_kept(void *user, bool exists, bool has_before, const mae__stream_id *before)
{
    mae__resume *r = user;
    r->req = NULL;
    if (!exists) {
        r->plan.kind = MAE__RESUME_ROLLED_BACK;
        r->plan.has_oldest = has_before;
        r->plan.oldest = *before;
        /* Nothing lies between last_kept and the id: the replay after the
         * id is what followed. */
    }
    send_reset(r);
    after_reset(r);
}

static void on_bounds(void *user, const mae__stream_bounds *b)
{
    mae__resume *r = user;
    r->req = NULL;
    r->plan = mae__resume_decide(r->parse_rc, &r->id, b);
    /* A replay from an id inside the stream: check that the id is there
     * (issue 21: a failover may have rolled it back; being below the
     * newest id says nothing about that). */
    if (r->plan.kind == MAE__RESUME_REPLAY && r->h->ops->kept &&
        !mae__stream_id_is_zero(&r->id) && mae__stream_id_cmp(&r->id, &b->last) < 0) {
        r->req = r->h->ops->kept(r->h->self, &r->id, on_kept, r);
        if (r->req)
            return;
        /* Out of memory: replay without the check. */
    }
    /* An id below the source's floor was never issued by it (a hub's id
     * from before it started): unknown, not trimmed. */
    mae__stream_id floor;
    if (r->plan.kind == MAE__RESUME_TRIMMED && r->h->ops->floor &&
        r->h->ops->floor(r->h->self, &floor) && !mae__stream_id_is_zero(&r->id) &&
        mae__stream_id_cmp(&r->id, &floor) < 0) {
        memset(&r->plan, 0, sizeof r->plan);
        r->plan.kind = MAE__RESUME_UNKNOWN_ID;
    }
    send_reset(r);
    after_reset(r);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    mae__resume *r = arg;
    (void)fd;
    (void)what;
    send_reset(r);
    after_reset(r);
}

mae__resume *mae__resume_start(const mae__history *h, const char *last_event_id, size_t len,
                               unsigned page, const mae__resume_events *ev, void *user)
{
    mae__resume *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->h = h;
    r->ev = *ev;
    r->user = user;
    r->page = page ? page : DEFAULT_PAGE;
    r->epoch = h_epoch(r);
    if (!last_event_id) {
        r->parse_rc = 1;
        r->state = ST_LIVE;
        return r;
    }
    r->joined_known = h_position(r, &r->joined);
    r->parse_rc = mae__stream_id_parse(last_event_id, len, &r->id);
    if (r->parse_rc != MAE__STREAM_ID_OK) {
        /* Needs no bounds, but the reset still comes from the loop. */
        r->plan = mae__resume_decide(r->parse_rc, NULL, NULL);
        r->state = ST_PENDING;
        r->kick = evtimer_new(h->ops->base(h->self), on_kick, r);
        struct timeval now = {0, 0};
        if (!r->kick || evtimer_add(r->kick, &now) != 0) {
            mae__resume_free(r);
            return NULL;
        }
        return r;
    }
    r->state = ST_BOUNDS;
    r->req = h->ops->bounds(h->self, on_bounds, r);
    if (!r->req) {
        free(r);
        return NULL;
    }
    return r;
}

bool mae__resume_admit(mae__resume *r, const mae__stream_id *id)
{
    if (r->state != ST_LIVE)
        return false;
    uint64_t epoch = h_epoch(r);
    if (r->epoch != epoch) {
        r->epoch = epoch;
        r->last = (mae__stream_id){0, 0};
    }
    if (mae__stream_id_cmp(id, &r->last) <= 0)
        return false;
    r->last = *id;
    return true;
}

bool mae__resume_admit_run(mae__resume *r, const mae__stream_id *first, const mae__stream_id *last)
{
    if (r->state != ST_LIVE)
        return false;
    uint64_t epoch = h_epoch(r);
    if (r->epoch != epoch) {
        r->epoch = epoch;
        r->last = (mae__stream_id){0, 0};
    }
    if (mae__stream_id_cmp(first, &r->last) <= 0)
        return false;
    r->last = *last;
    return true;
}

bool mae__resume_is_live(const mae__resume *r)
{
    return r->state == ST_LIVE;
}

mae__stream_id mae__resume_last(const mae__resume *r)
{
    return r->last;
}

mae__resume_plan mae__resume_get_plan(const mae__resume *r)
{
    return r->plan;
}

void mae__resume_wake(mae__resume *r)
{
    if (!r || r->state != ST_PARKED)
        return;
    r->state = ST_PAGE;
    if (r->held) {
        size_t from = r->iheld;
        if (!give(r, r->held + from, r->nheld - from, false))
            return;
        drop_held(r);
    }
    page_done(r);
}

void mae__resume_free(mae__resume *r)
{
    if (!r)
        return;
    if (r->req)
        r->h->ops->cancel(r->h->self, r->req);
    if (r->kick)
        event_free(r->kick);
    drop_held(r);
    free(r);
}
