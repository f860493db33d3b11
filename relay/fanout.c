/* This module implements what goes out on the relay's streams: opening a
 * stream (or refusing it over --max-clients), frames built once per event
 * and handed to every stream through mae__client_send, events over
 * --max-event-bytes replaced by a "skipped" frame, events that arrive
 * together written in one send per client, the heartbeat, the
 * reset frames, the source's callbacks, and each client's catch-up in a
 * source with ids (relay/resume.h). It never frees a client and never asks
 * which source is live: a client has a resume exactly when the source has
 * a history. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "core/backoff.h"
#include "core/tls.h"
#include "relay/server.h"
#include "relay/sse.h"

typedef mae__relay_client client;
typedef mae__relay_server relay;

/* ---- frames ------------------------------------------------------------------------ */

/* Builds a frame in r->frame (chunked) and r->raw (HTTP/1.0). */
static void build_frame(relay *r, const char *event, const mae__stream_id *id, const char *data,
                        size_t len)
{
    char text[MAE__STREAM_ID_BUFSIZE];
    if (id)
        mae__stream_id_format(id, text);
    r->frame.len = r->raw.len = 0;
    r->frame.oom = r->raw.oom = false;
    mae__sse_frame(&r->raw, event, id ? text : NULL, data, len);
    if (!r->raw.oom)
        mae__sse_chunk(&r->frame, r->raw.ptr, r->raw.len);
}

/* Builds the frame of an event: as it is, or, over --max-event-bytes, the
 * "skipped" frame that names it (relay.md, "Large events"). */
static void build_event(relay *r, const mae__stream_id *id, const char *data, size_t len)
{
    if (len <= r->cfg->max_event_bytes) {
        build_frame(r, "mailagent", id, data, len);
        return;
    }
    char json[128], text[MAE__STREAM_ID_BUFSIZE];
    int n;
    if (id) {
        mae__stream_id_format(id, text);
        n = snprintf(json, sizeof json, "{\"reason\":\"too_large\",\"id\":\"%s\",\"bytes\":%zu}",
                     text, len);
    } else {
        n = snprintf(json, sizeof json, "{\"reason\":\"too_large\",\"id\":null,\"bytes\":%zu}",
                     len);
    }
    build_frame(r, "skipped", id, json, (size_t)n);
}

/* A frame buffer larger than this is given back once its frame is sent, so
 * one large event does not keep its size in the relay (issue 18 #3). */
#define FRAME_KEEP_BYTES (256 * 1024)

static void release_large(mae__buf *b)
{
    if (b->cap > FRAME_KEEP_BYTES) {
        mae__buf_free(b);
        mae__buf_init(b);
    }
}

static void frames_release(relay *r)
{
    release_large(&r->frame);
    release_large(&r->raw);
}

/* Writes the frame in r->frame / r->raw to one stream. */
static void frame_to(client *c)
{
    relay *r = c->r;
    if (r->frame.oom || r->raw.oom)
        return;
    if (c->chunked)
        mae__client_send(c, r->frame.ptr, r->frame.len);
    else
        mae__client_send(c, r->raw.ptr, r->raw.len);
}

/* Sends the frame to every stream; with an id, only to those whose
 * position admits it (a client still replaying gets nothing live yet; one
 * whose replay ran ahead gets only what it has not had). Returns how many
 * streams it went to. */
static uint64_t broadcast(relay *r, const mae__stream_id *id)
{
    uint64_t sent = 0;
    client *c, *next;
    if (r->frame.oom || r->raw.oom)
        return 0;
    /* A send may close the client (taking it out of the list): the next
     * one is read first. */
    for (c = TAILQ_FIRST(&r->streams); c; c = next) {
        next = TAILQ_NEXT(c, stream_link);
        if (id && c->resume && !mae__resume_admit(c->resume, id))
            continue;
        frame_to(c);
        sent++;
    }
    return sent;
}

/* ---- coalesced batches -------------------------------------------------------------- */

/* A batch is written out before it holds more than this. */
#define BATCH_MAX_BYTES (256 * 1024)

static void batch_reset(relay *r)
{
    r->batch.len = r->batch_raw.len = 0;
    r->batch.oom = r->batch_raw.oom = false;
    r->nbent = 0;
    /* One large frame grows a batch past its usual size: given back. */
    if (r->batch.cap > 2 * BATCH_MAX_BYTES)
        release_large(&r->batch);
    if (r->batch_raw.cap > 2 * BATCH_MAX_BYTES)
        release_large(&r->batch_raw);
}

/* Writes the batch to every stream: in one send to each client that takes
 * all of it (every live client), entry by entry to the others. */
static void batch_flush(relay *r)
{
    client *c, *next;
    if (r->nbent == 0)
        return;
    const mae__batch_entry *v = r->bent;
    size_t n = r->nbent;
    for (c = TAILQ_FIRST(&r->streams); c; c = next) {
        next = TAILQ_NEXT(c, stream_link);
        const mae__buf *b = c->chunked ? &r->batch : &r->batch_raw;
        if (!v[0].has_id || !c->resume ||
            mae__resume_admit_run(c->resume, &v[0].id, &v[n - 1].id)) {
            mae__client_send(c, b->ptr, b->len);
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            if (v[i].has_id && !mae__resume_admit(c->resume, &v[i].id))
                continue;
            if (c->chunked)
                mae__client_send(c, r->batch.ptr + v[i].off, v[i].len);
            else
                mae__client_send(c, r->batch_raw.ptr + v[i].roff, v[i].rlen);
        }
    }
    batch_reset(r);
}

/* Adds the frame in r->frame / r->raw to the batch; false when it cannot
 * (out of memory), and then the caller broadcasts it alone. */
static bool batch_add(relay *r, const mae__stream_id *id)
{
    if (r->nbent == r->capbent) {
        size_t cap = r->capbent ? r->capbent * 2 : 64;
        mae__batch_entry *v = realloc(r->bent, cap * sizeof *v);
        if (!v)
            return false;
        r->bent = v;
        r->capbent = cap;
    }
    mae__batch_entry *e = &r->bent[r->nbent];
    e->has_id = id != NULL;
    if (id)
        e->id = *id;
    e->off = r->batch.len;
    e->len = r->frame.len;
    e->roff = r->batch_raw.len;
    e->rlen = r->raw.len;
    mae__buf_put(&r->batch, r->frame.ptr, r->frame.len);
    mae__buf_put(&r->batch_raw, r->raw.ptr, r->raw.len);
    if (r->batch.oom || r->batch_raw.oom) {
        r->batch.len = e->off;
        r->batch_raw.len = e->roff;
        r->batch.oom = r->batch_raw.oom = false;
        return false;
    }
    r->nbent++;
    return true;
}

/* ---- one client's catch-up (relay/resume.h) -------------------------------------------- */

static void on_resume_reset(void *user, const char *json, size_t len)
{
    client *c = user;
    c->r->counters.resets_total++;
    build_frame(c->r, "reset", NULL, json, len);
    frame_to(c);
}

static void on_resume_entry(void *user, const mae__stream_id *id, const char *line, size_t len)
{
    client *c = user;
    build_event(c->r, id, line, len);
    frame_to(c);
    frames_release(c->r);
}

/* The replay is paced per entry: it goes on while the client has at most
 * half its --client-buffer unread, so a resuming client is never cut for
 * its own history. */
static bool on_resume_want_more(void *user)
{
    client *c = user;
    return !c->close_asap && mae__client_unread(c) < c->r->cfg->client_buffer / 2;
}

static const mae__resume_events resume_events = {on_resume_reset, on_resume_entry, NULL,
                                                 on_resume_want_more};

/* The id a client resumes after: the Last-Event-ID header (what EventSource
 * sends when it reconnects), else ?last_event_id= (percent-decoded into
 * buf, at most size bytes). NULL when it gave none. */
static const char *resume_id(const mae__request *req, char *buf, size_t size, size_t *len)
{
    if (req->last_event_id.p) {
        *len = req->last_event_id.n;
        return req->last_event_id.p;
    }
    static const char key[] = "last_event_id=";
    const char *q = req->query.p, *end = q ? q + req->query.n : NULL;
    while (q && q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - q) >= sizeof key - 1 && memcmp(q, key, sizeof key - 1) == 0) {
            size_t n = 0;
            for (const char *p = q + sizeof key - 1; p < stop && n < size; p++) {
                int hi, lo;
                if (*p == '%' && stop - p >= 3 && (hi = mae__hex_digit((unsigned char)p[1])) >= 0 &&
                    (lo = mae__hex_digit((unsigned char)p[2])) >= 0) {
                    buf[n++] = (char)(hi * 16 + lo);
                    p += 2;
                } else {
                    buf[n++] = *p;
                }
            }
            *len = n;
            return buf;
        }
        q = stop + 1;
    }
    return NULL;
}

/* ---- opening a stream -------------------------------------------------------------- */

static const char stream_head[] = "HTTP/1.1 200 OK\r\n"
                                  "Content-Type: text/event-stream; charset=utf-8\r\n"
                                  "Cache-Control: no-cache, no-transform\r\n"
                                  "X-Accel-Buffering: no\r\n";

static void refuse(client *c)
{
    relay *r = c->r;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    char first[128];
    /* 200, not 503: EventSource gives up for good on an error status, but
     * reconnects after `retry` when a stream simply ends. */
    int retry = MAE__RELAY_REFUSED_RETRY_MS +
                (int)(mae__rand_unit(&r->rng) * MAE__RELAY_REFUSED_RETRY_MS);
    int n = snprintf(first, sizeof first,
                     "retry: %d\n: too many clients (%zu streams open), retry later\n\n", retry,
                     r->cfg->max_clients);
    evbuffer_add_printf(out, "%s%sConnection: close\r\n\r\n", stream_head,
                        c->chunked ? "Transfer-Encoding: chunked\r\n" : "");
    if (c->chunked)
        evbuffer_add_printf(out, "%x\r\n%s\r\n0\r\n\r\n", n, first);
    else
        evbuffer_add(out, first, (size_t)n);
    r->counters.clients_refused_total++;
    if (!r->cfg->quiet)
        mae__relay_say("client %s refused: too many clients", c->addr);
    c->state = C_ANSWERED;
}

void mae__fanout_open(client *c, const mae__request *req)
{
    relay *r = c->r;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    const mae__history *h = mae__source_history(r->source);
    char first[128];
    c->chunked = req->minor == 1;

    if (r->counters.clients >= r->cfg->max_clients) {
        refuse(c);
        return;
    }

    /* Sized past the longest id the parser takes, so an over-long one
     * stays over-long (and is refused as such). */
    char buf[MAE__STREAM_ID_MAX_LEN + 8];
    size_t idlen = 0;
    const char *last_id = h ? resume_id(req, buf, sizeof buf, &idlen) : NULL;

    /* The first frame: retry, and for a client that gave no id in a
     * source with ids, its position now as an id with no data (relay.md,
     * "Stream mode"): EventSource keeps it, so a client that received
     * nothing yet still resumes from where it joined. */
    int n = snprintf(first, sizeof first, "retry: %d\n", MAE__RELAY_RETRY_MS);
    mae__stream_id at;
    if (h && !last_id) {
        if (h->ops->position(h->self, &at)) {
            char text[MAE__STREAM_ID_BUFSIZE];
            mae__stream_id_format(&at, text);
            n += snprintf(first + n, sizeof first - (size_t)n, "id: %s\n", text);
        } else {
            /* Redis not read yet (starting, or unreachable since the
             * relay started): the id follows once it is (give_positions). */
            c->awaits_position = true;
        }
    }
    n += snprintf(first + n, sizeof first - (size_t)n, "\n");
    evbuffer_add_printf(out, "%s%s\r\n", stream_head,
                        c->chunked ? "Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n"
                                   : "Connection: close\r\n");
    if (c->chunked)
        evbuffer_add_printf(out, "%x\r\n%s\r\n", n, first);
    else
        evbuffer_add(out, first, (size_t)n);

    mae__client_stream_begin(c);
    if (!r->cfg->quiet)
        mae__relay_say("client %s connected (%llu streams)", c->addr,
                       (unsigned long long)r->counters.clients);
    if (h) {
        c->resume = mae__resume_start(h, last_id, idlen, 0, &resume_events, c);
        if (!c->resume)
            mae__client_close(c, "out of memory");
    }
}

void mae__fanout_drained(client *c)
{
    if (c->resume && !mae__resume_is_live(c->resume))
        mae__resume_wake(c->resume);
}

/* ---- the source's callbacks ------------------------------------------------------------ */

/* The source knows its position: every stream opened before it did gets
 * the frame a later one has in its first, its position as an id with no
 * data, before any event (relay.md, "Stream mode"). Only a source that
 * came up calls this, and it comes up before its first event. */
static void give_positions(relay *r)
{
    const mae__history *h = mae__source_history(r->source);
    mae__stream_id at;
    if (!h || !h->ops->position(h->self, &at))
        return;
    char text[MAE__STREAM_ID_BUFSIZE], frame[MAE__STREAM_ID_BUFSIZE + 16];
    char chunk[sizeof frame + 16];
    mae__stream_id_format(&at, text);
    int n = snprintf(frame, sizeof frame, "id: %s\n\n", text);
    int cn = snprintf(chunk, sizeof chunk, "%x\r\n%s\r\n", n, frame);
    client *c, *next;
    for (c = TAILQ_FIRST(&r->streams); c; c = next) {
        next = TAILQ_NEXT(c, stream_link);
        if (!c->awaits_position)
            continue;
        c->awaits_position = false;
        if (c->chunked)
            mae__client_send(c, chunk, (size_t)cn);
        else
            mae__client_send(c, frame, (size_t)n);
    }
}

static void on_source_event(void *ctx, const mae__stream_id *id, const char *data, size_t len)
{
    relay *r = ctx;
    r->counters.events_total++;
    r->last_progress = mae__tls_now();
    struct timeval tv;
    gettimeofday(&tv, NULL);
    r->last_event_ts = (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
    if (!data)
        return;   /* a foreign entry: a place in the order, nothing to send */
    if (len > r->cfg->max_event_bytes) {
        char text[MAE__STREAM_ID_BUFSIZE] = "(no id)";
        if (id)
            mae__stream_id_format(id, text);
        r->counters.events_skipped_total++;
        mae__relay_say("event %s skipped: %zu bytes, over --max-event-bytes %zu", text, len,
                       r->cfg->max_event_bytes);
    }
    build_event(r, id, data, len);
    if (r->batching && !r->frame.oom && !r->raw.oom) {
        if (r->batch.len + r->frame.len > BATCH_MAX_BYTES)
            batch_flush(r);
        if (batch_add(r, id)) {
            frames_release(r);
            return;
        }
        batch_flush(r);   /* keep the order: what is queued goes first */
    }
    broadcast(r, id);
    frames_release(r);
}

static void on_source_batch(void *ctx, bool begin)
{
    relay *r = ctx;
    if (!begin)
        batch_flush(r);
    r->batching = begin;
}

static void on_source_state(void *ctx, bool up, bool reconnected)
{
    relay *r = ctx;
    r->counters.redis_connected = up;
    if (up)
        r->last_error[0] = '\0';
    else
        snprintf(r->last_error, sizeof r->last_error, "%s",
                 r->last_log[0] ? r->last_log : "the source is down");
    if (up && reconnected)
        r->counters.redis_reconnects_total++;
    if (up)
        give_positions(r);
}

static void on_source_reset(void *ctx, const char *json, size_t len)
{
    relay *r = ctx;
    build_frame(r, "reset", NULL, json, len);
    r->counters.resets_total += broadcast(r, NULL);
}

static void on_source_progress(void *ctx)
{
    relay *r = ctx;
    r->last_progress = mae__tls_now();
}

static void on_source_connect_failed(void *ctx, const char *why)
{
    relay *r = ctx;
    (void)why;   /* logged by the source, once per run of failures */
    r->counters.redis_connect_failures_total++;
}

static void on_source_log(void *ctx, const char *line)
{
    relay *r = ctx;
    snprintf(r->last_log, sizeof r->last_log, "%s", line);
    mae__relay_say("%s", line);
}

bool mae__fanout_source_up(const relay *r)
{
    return mae__source_up(r->source);
}

/* ---- the heartbeat --------------------------------------------------------------------- */

void mae__fanout_on_ping(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    relay *r = arg;
    static const char raw[] = "event: ping\ndata: \n\n";
    client *c, *next;
    for (c = TAILQ_FIRST(&r->streams); c; c = next) {
        next = TAILQ_NEXT(c, stream_link);
        if (c->chunked)
            mae__client_send(c, mae__sse_ping_chunk, mae__sse_ping_chunk_len);
        else
            mae__client_send(c, raw, sizeof raw - 1);
    }
}

/* ---- starting and stopping the source ---------------------------------------------------- */

int mae__fanout_start(relay *r, char *err, size_t errlen)
{
    char serr[256] = "";
    mae__source_config sc = {r->base,
                             r->cfg->redis_url,
                             r->cfg->channel,
                             r->cfg->stream_key,
                             r->cfg->redis_url == NULL,
                             r->cfg->history_events,
                             r->cfg->history_bytes};
    mae__source_cb cb = {r,             on_source_event, on_source_state,
                         on_source_reset, on_source_log,  on_source_batch,
                         on_source_connect_failed, on_source_progress};
    r->last_progress = mae__tls_now();   /* the rule counts from the start */
    if (mae__source_new(&sc, &cb, &r->source, serr, sizeof serr) != 0) {
        snprintf(err, errlen, "%s", *serr ? serr : "out of memory");
        return 1;
    }
    return 0;
}

void mae__fanout_stop(relay *r)
{
    /* A resume holds reads of the source's history: gone before it is. */
    client *c;
    TAILQ_FOREACH(c, &r->conns, conn_link) {
        mae__resume_free(c->resume);
        c->resume = NULL;
    }
    mae__source_free(r->source);
    r->source = NULL;
}
