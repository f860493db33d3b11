/* This module implements a relay client's resume of relay/resume.h: the
 * decision table, the reset texts and the replay with its hand-off to the
 * live fan-out. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "relay/resume.h"

const char mae__resume_rewound_json[] = "{\"reason\":\"unknown_id\"}";

#define DEFAULT_PAGE 500

mae__resume_plan mae__resume_decide(int parse_rc, const mae__stream_id *id,
                                    const mae__stream_bounds *b)
{
    mae__resume_plan p;
    memset(&p, 0, sizeof p);
    if (parse_rc > 0) {
        p.kind = MAE__RESUME_LIVE;
        return p;
    }
    if (parse_rc != MAE__STREAM_ID_OK) {
        p.kind = MAE__RESUME_BAD_ID;
        return p;
    }
    if (mae__stream_id_cmp(id, &b->last) > 0) {
        p.kind = MAE__RESUME_UNKNOWN_ID;
        return p;
    }
    /* Is the client's id before everything kept? For an empty stream,
     * before its newest id (nothing after that is kept either). */
    bool before_kept = b->length == 0 ? mae__stream_id_cmp(id, &b->last) < 0
                                      : mae__stream_id_cmp(id, &b->first) < 0;
    /* Redis says how many entries were ever added, not which ones were
     * trimmed: any loss counts, and an older server is assumed to have
     * lost some. A non-zero id before the first entry of a stream that
     * never lost one comes from an earlier stream under the same key: what
     * was added in between is unknown too. Only 0-0 on an intact stream
     * ("from the beginning") misses nothing. */
    bool lost_any = !b->added_known || b->entries_added > b->length;
    bool missed = before_kept && (lost_any || !mae__stream_id_is_zero(id));
    p.replay = true;
    p.after = *id;
    if (missed) {
        p.kind = MAE__RESUME_TRIMMED;
        p.has_oldest = b->length > 0;
        p.oldest = b->first;
    } else {
        p.kind = MAE__RESUME_REPLAY;
    }
    return p;
}

size_t mae__resume_reset_json(const mae__resume_plan *plan, char *buf, size_t size)
{
    char id[MAE__STREAM_ID_BUFSIZE];
    int n;
    switch (plan->kind) {
    case MAE__RESUME_BAD_ID:
        n = snprintf(buf, size, "{\"reason\":\"bad_last_event_id\"}");
        break;
    case MAE__RESUME_UNKNOWN_ID:
        n = snprintf(buf, size, "%s", mae__resume_rewound_json);
        break;
    case MAE__RESUME_TRIMMED:
        if (plan->has_oldest) {
            mae__stream_id_format(&plan->oldest, id);
            n = snprintf(buf, size, "{\"reason\":\"history_trimmed\",\"oldest_id\":\"%s\"}", id);
        } else {
            n = snprintf(buf, size, "{\"reason\":\"history_trimmed\",\"oldest_id\":null}");
        }
        break;
    default:
        if (size)
            buf[0] = '\0';
        return 0;
    }
    return n > 0 && (size_t)n < size ? (size_t)n : 0;
}

/* ---- the catch-up -------------------------------------------------------- */

enum state { ST_PENDING, ST_BOUNDS, ST_PAGE, ST_PARKED, ST_LIVE };

struct mae__resume {
    mae__stream_source *src;
    mae__resume_events ev;
    void *user;
    unsigned page;
    enum state state;
    int parse_rc;
    mae__stream_id id;         /* the client's, when parse_rc is OK */
    mae__resume_plan plan;
    mae__stream_id last;       /* L */
    uint64_t epoch;            /* the source's, when L was last valid */
    mae__stream_req *req;      /* the read in flight */
    struct event *kick;        /* the reset of a malformed id, from the loop */
    bool busy;                 /* inside a user callback */
    bool dead;                 /* freed during one: free when it returns */
};

static void destroy(mae__resume *r)
{
    mae__stream_req_cancel(r->req);
    if (r->kick)
        event_free(r->kick);
    free(r);
}

/* Each user callback is wrapped so that mae__resume_free inside it only
 * marks the resume; the caller then returns at once through `gone`. */
#define CALL(r, expr)                                                                       \
    do {                                                                                    \
        (r)->busy = true;                                                                   \
        expr;                                                                               \
        (r)->busy = false;                                                                  \
    } while (0)

static bool gone(mae__resume *r)
{
    if (!r->dead)
        return false;
    destroy(r);
    return true;
}

static void go_live(mae__resume *r)
{
    r->state = ST_LIVE;
    if (r->ev.live)
        CALL(r, r->ev.live(r->user));
    gone(r);
}

static bool send_reset(mae__resume *r)
{
    char json[MAE__RESUME_RESET_MAX];
    size_t n = mae__resume_reset_json(&r->plan, json, sizeof json);
    if (n && r->ev.reset)
        CALL(r, r->ev.reset(r->user, json, n));
    return !gone(r);
}

static void on_page(void *user, const mae__stream_entry *v, size_t n, const mae__stream_id *sent_at);

static void fetch_page(mae__resume *r)
{
    r->state = ST_PAGE;
    r->req = mae__stream_source_range(r->src, &r->last, r->page, on_page, r);
    /* Out of memory: nothing better than going live with what was sent. */
    if (!r->req)
        go_live(r);
}

static void on_page(void *user, const mae__stream_entry *v, size_t n, const mae__stream_id *sent_at)
{
    mae__resume *r = user;
    mae__stream_id s;

    r->req = NULL;
    for (size_t i = 0; i < n; i++) {
        r->last = v[i].id;
        if (v[i].line && r->ev.entry) {
            CALL(r, r->ev.entry(r->user, &v[i].id, v[i].line, v[i].len));
            if (gone(r))
                return;
        }
    }
    if (r->epoch != mae__stream_source_epoch(r->src)) {
        /* The stream went backwards under the replay: the relay resets
         * every client; this one restarts from the stream's new ids. */
        r->epoch = mae__stream_source_epoch(r->src);
        r->last = (mae__stream_id){0, 0};
        go_live(r);
        return;
    }
    if (n < r->page && mae__stream_id_cmp(&r->last, sent_at) < 0)
        r->last = *sent_at;
    /* The source answers pages only once its position is known. */
    if (!mae__stream_source_position(r->src, &s) || mae__stream_id_cmp(&r->last, &s) >= 0) {
        go_live(r);
        return;
    }
    if (r->ev.want_more) {
        bool more;
        CALL(r, more = r->ev.want_more(r->user));
        if (gone(r))
            return;
        if (!more) {
            r->state = ST_PARKED;
            return;
        }
    }
    fetch_page(r);
}

static void on_bounds(void *user, const mae__stream_bounds *b)
{
    mae__resume *r = user;
    r->req = NULL;
    r->plan = mae__resume_decide(r->parse_rc, &r->id, b);
    if (!send_reset(r))
        return;
    if (r->plan.replay) {
        r->last = r->plan.after;
        fetch_page(r);
    } else {
        go_live(r);
    }
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    mae__resume *r = arg;
    (void)fd;
    (void)what;
    if (send_reset(r))
        go_live(r);
}

mae__resume *mae__resume_start(mae__stream_source *src, const char *last_event_id, size_t len,
                               unsigned page, const mae__resume_events *ev, void *user)
{
    mae__resume *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->src = src;
    r->ev = *ev;
    r->user = user;
    r->page = page ? page : DEFAULT_PAGE;
    r->epoch = mae__stream_source_epoch(src);
    if (!last_event_id) {
        r->parse_rc = 1;
        r->state = ST_LIVE;
        return r;
    }
    r->parse_rc = mae__stream_id_parse(last_event_id, len, &r->id);
    if (r->parse_rc != MAE__STREAM_ID_OK) {
        /* Needs no Redis, but the reset still comes from the loop. */
        r->plan = mae__resume_decide(r->parse_rc, NULL, NULL);
        r->state = ST_PENDING;
        r->kick = evtimer_new(mae__stream_source_base(src), on_kick, r);
        struct timeval now = {0, 0};
        if (!r->kick || evtimer_add(r->kick, &now) != 0) {
            destroy(r);
            return NULL;
        }
        return r;
    }
    r->state = ST_BOUNDS;
    r->req = mae__stream_source_bounds(src, on_bounds, r);
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
    uint64_t epoch = mae__stream_source_epoch(r->src);
    if (r->epoch != epoch) {
        r->epoch = epoch;
        r->last = (mae__stream_id){0, 0};
    }
    if (mae__stream_id_cmp(id, &r->last) <= 0)
        return false;
    r->last = *id;
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
    if (r && r->state == ST_PARKED)
        fetch_page(r);
}

void mae__resume_free(mae__resume *r)
{
    if (!r)
        return;
    if (r->busy) {
        r->dead = true;
        return;
    }
    destroy(r);
}
