/* This module implements what goes out on the relay's streams: frames
 * built once per event and written to every stream (straight to the socket
 * when nothing is queued), the per-client bound of --client-buffer, the
 * heartbeat, the reset frames, the sources' callbacks (the pub/sub
 * subscriber, or the stream reader), and in stream mode each client's
 * catch-up (relay/resume.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "relay/server.h"
#include "relay/sse.h"
#include "relay/stream_id.h"

typedef mae__relay_client client;
typedef mae__relay_server relay;

/* Queues bytes to a stream; a client already holding --client-buffer
 * bytes is cut instead, so nobody else waits for it. Returns false when
 * the client was freed. */
static bool stream_write(client *c, const char *bytes, size_t len)
{
    relay *r = c->r;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (evbuffer_get_length(out) + len > r->cfg->client_buffer) {
        r->counters.clients_cut_slow_total++;
        mae__client_free(c, "cut: over --client-buffer (not reading fast enough)");
        return false;
    }
    r->counters.bytes_total += len;
    /* Nothing waiting: try the socket first. Most clients take the whole
     * frame at once, and then the write costs one send() instead of
     * arming and disarming a write event (two epoll_ctl calls and a loop
     * turn) per client per event, which dominated the fan-out to 10 000. */
    if (evbuffer_get_length(out) == 0) {
        ssize_t n = send(bufferevent_getfd(c->bev), bytes, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n == (ssize_t)len)
            return true;
        if (n < 0) {
            int err = errno;
            if (err != EAGAIN && err != EWOULDBLOCK && err != EINTR) {
                mae__client_free(c, strerror(err));
                return false;
            }
            n = 0;
        }
        bytes += n;
        len -= (size_t)n;
    }
    if (bufferevent_write(c->bev, bytes, len) != 0) {
        mae__client_free(c, "out of memory");
        return false;
    }
    return true;
}

/* Sends a frame built in r->frame (chunked) and r->raw to every stream. */
static size_t broadcast(relay *r)
{
    size_t sent = 0;
    if (r->frame.oom || r->raw.oom)
        return 0;
    for (client *c = r->streams, *next; c; c = next) {
        next = c->next;
        if (c->chunked ? stream_write(c, r->frame.ptr, r->frame.len)
                       : stream_write(c, r->raw.ptr, r->raw.len))
            sent++;
    }
    return sent;
}

static void build_frame(relay *r, const char *event, const char *id, const char *data, size_t len)
{
    r->frame.len = r->raw.len = 0;
    r->frame.oom = r->raw.oom = false;
    mae__sse_frame(&r->raw, event, id, data, len);
    if (!r->raw.oom)
        mae__sse_chunk(&r->frame, r->raw.ptr, r->raw.len);
}

/* True while events arrive from Redis, in either mode. */
bool mae__fanout_source_up(const relay *r)
{
    return r->stream ? mae__stream_source_connected(r->stream) : mae__source_up(r->source);
}

/* Writes the frame in r->frame / r->raw to one stream. */
static bool frame_to(client *c)
{
    relay *r = c->r;
    if (r->frame.oom || r->raw.oom)
        return true;
    return c->chunked ? stream_write(c, r->frame.ptr, r->frame.len)
                      : stream_write(c, r->raw.ptr, r->raw.len);
}

/* ---- stream mode: one client's catch-up (relay/resume.h) ------------------------ */

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
    char text[MAE__STREAM_ID_BUFSIZE];
    mae__stream_id_format(id, text);
    build_frame(c->r, "mailagent", text, line, len);
    frame_to(c);
}

static void on_resume_live(void *user)
{
    (void)user;
}

/* A replay goes on while the client keeps up: at most half its buffer
 * waiting, so a resuming client is never cut for its own history. */
static bool on_resume_want_more(void *user)
{
    client *c = user;
    return evbuffer_get_length(bufferevent_get_output(c->bev)) < c->r->cfg->client_buffer / 2;
}

static const mae__resume_events resume_events = {on_resume_reset, on_resume_entry,
                                                 on_resume_live, on_resume_want_more};

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

bool mae__fanout_resume_start(client *c, const mae__request *req)
{
    /* Sized past the longest id the parser takes, so an over-long one
     * stays over-long (and is refused as such). */
    char buf[MAE__STREAM_ID_MAX_LEN + 8];
    size_t len = 0;
    const char *id = resume_id(req, buf, sizeof buf, &len);
    c->resume = mae__resume_start(c->r->stream, id, len, 0, &resume_events, c);
    return c->resume != NULL;
}

/* ---- source callbacks -------------------------------------------------------------- */

static void on_source_event(void *ctx, const char *data, size_t len, const char *id)
{
    relay *r = ctx;
    r->counters.events_total++;
    build_frame(r, "mailagent", id, data, len);
    broadcast(r);
}

static void on_source_up(void *ctx, bool after_loss, bool reconnected)
{
    relay *r = ctx;
    r->counters.redis_connected = true;
    if (reconnected)
        r->counters.redis_reconnects_total++;
    if (after_loss) {
        static const char reset[] = "{\"reason\":\"redis_reconnected\"}";
        build_frame(r, "reset", NULL, reset, sizeof reset - 1);
        r->counters.resets_total += broadcast(r);
    }
}

static void on_source_down(void *ctx)
{
    relay *r = ctx;
    r->counters.redis_connected = false;
}

static void on_source_log(void *ctx, const char *line)
{
    (void)ctx;
    mae__relay_say("%s", line);
}

/* ---- stream source callbacks (stream mode) -------------------------------------------- */

static void on_stream_entry(void *user, const mae__stream_entry *e)
{
    relay *r = user;
    r->counters.events_total++;
    if (!e->line)
        return;   /* a foreign entry: a place in the order, nothing to send */
    char text[MAE__STREAM_ID_BUFSIZE];
    mae__stream_id_format(&e->id, text);
    build_frame(r, "mailagent", text, e->line, e->len);
    for (client *c = r->streams, *next; c; c = next) {
        next = c->next;
        /* A client still replaying gets nothing live yet; one whose replay
         * ran ahead of the reader gets only what it has not had. */
        if (c->resume && !mae__resume_admit(c->resume, &e->id))
            continue;
        frame_to(c);
    }
}

static void on_stream_state(void *user, bool connected, const char *why)
{
    relay *r = user;
    if (connected == r->counters.redis_connected)
        return;   /* repeated failures while down */
    r->counters.redis_connected = connected;
    if (connected) {
        if (r->stream_was_up)
            r->counters.redis_reconnects_total++;
        r->stream_was_up = true;
        mae__relay_say("redis: reading the stream %s", r->cfg->stream_key);
    } else {
        mae__relay_say("redis: %s; retrying with backoff", why ? why : "connection lost");
    }
}

static void on_stream_rewound(void *user, const mae__stream_id *last)
{
    relay *r = user;
    char text[MAE__STREAM_ID_BUFSIZE];
    mae__stream_id_format(last, text);
    mae__relay_say("redis: the stream %s went back before %s (recreated or restored); clients get a reset",
        r->cfg->stream_key, text);
    build_frame(r, "reset", NULL, mae__resume_rewound_json, strlen(mae__resume_rewound_json));
    r->counters.resets_total += broadcast(r);
}

/* ---- timers and signals ------------------------------------------------------------ */

void mae__fanout_on_ping(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    relay *r = arg;
    static const char raw[] = "event: ping\ndata: \n\n";
    for (client *c = r->streams, *next; c; c = next) {
        next = c->next;
        if (c->chunked)
            stream_write(c, mae__sse_ping_chunk, mae__sse_ping_chunk_len);
        else
            stream_write(c, raw, sizeof raw - 1);
    }
}

/* ---- starting and stopping the source ------------------------------------------------ */

int mae__fanout_start(relay *r, char *err, size_t errlen)
{
    char serr[256] = "";
    int src;
    if (r->cfg->stream_key) {
        mae__stream_source_config sc;
        mae__stream_source_config_init(&sc);
        sc.base = r->base;
        sc.redis_url = r->cfg->redis_url;
        sc.key = r->cfg->stream_key;
        sc.on_entry = on_stream_entry;
        sc.on_state = on_stream_state;
        sc.on_rewound = on_stream_rewound;
        sc.user = r;
        src = mae__stream_source_new(&sc, &r->stream, serr, sizeof serr);
    } else {
        mae__source_config sc = {r->cfg->redis_url, r->cfg->channel};
        mae__source_cb cb = {r, on_source_event, on_source_up, on_source_down, on_source_log};
        src = mae__subscriber_new(r->base, &sc, &cb, &r->source, serr, sizeof serr);
    }
    if (src != 0) {
        snprintf(err, errlen, "%s", *serr ? serr : "out of memory");
        return 1;
    }
    return 0;

}

void mae__fanout_stop(relay *r)
{
    /* A resume holds requests of the stream source: gone before it is. */
    for (client *c = r->conns; c; c = c->cnext) {
        mae__resume_free(c->resume);
        c->resume = NULL;
    }
    mae__source_free(r->source);
    r->source = NULL;
    mae__stream_source_free(r->stream);
    r->stream = NULL;
}
