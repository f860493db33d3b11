/* The `mailagent events tail` command: subscribes to the event channel with
 * hiredis and prints each event as it arrives, surviving Redis restarts; or,
 * with --stream, reads the events' Redis Stream from an id (--since) and
 * follows it, continuing from the last id after a reconnect, so nothing is
 * missed or printed twice; or, with --relay, reads a relay's SSE stream
 * (cli/sse_http.c, stream/sse_parse.c) and resumes it by id. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "core/backoff.h"
#include "core/env.h"
#include "core/url.h"
#include "stream/decide.h"
#include "stream/id.h"
#include "stream/reply.h"
#include "stream/sse_parse.h"
#include "stream/sync.h"

#include "cli.h"
#include "sse_http.h"

/* Reconnect delays, as the publisher's: doubling, capped, with jitter. */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define CONNECT_TIMEOUT_MS 1000
/* The longest the loop sleeps in poll(): a signal that lands just before
 * poll() is still seen this soon. */
#define POLL_SLICE_MS 250
/* Stream mode: XREAD BLOCK for at most this long, and a server that has not
 * answered STREAM_MARGIN_MS after that is taken for hung. */
#define STREAM_BLOCK_MS 2000
#define STREAM_MARGIN_MS 3000
/* Entries per XREAD: the history comes in pages of this many. */
#define STREAM_PAGE 500
/* --relay: connecting and reading the answer's head; a stream silent this
 * long is taken for lost (the relay pings every 15 s by default); the
 * longest SSE line taken (the relay's --max-event-bytes is 1 MiB by
 * default, and a line holds one event). */
#define RELAY_CONNECT_MS 5000
#define RELAY_IDLE_MS 45000
#define RELAY_MAX_LINE (4u << 20)
#define RELAY_PATH "/api/events/stream"

typedef struct tail {
    const cli_config *cfg;
    mae__url addr;
    char where[320];            /* host:port or the socket, never the password */
    const char *type_prefix;    /* NULL = every event */
    bool json;
    int64_t count;              /* stop after this many events; 0 = never */
    int64_t printed;
    int write_errno;            /* why stdout failed */
    double deadline;            /* monotonic seconds; 0 = none */
    mae__sync_conn *c;          /* stream/sync.h: TCP, unix or TLS */
    uint64_t rng;               /* the backoff's jitter */
    /* Stream mode (cfg->stream_key set). */
    bool stream;
    bool since_set;             /* --since given: print history after since */
    mae__stream_id since;       /* 0-0 for --since start */
    mae__stream_id pos;         /* the last entry seen (printed or filtered) */
    bool positioned;            /* pos is set: reconnects continue from it */
    /* Relay mode (--relay). */
    bool relay;
    cli_http_url url;
    const char *secret;         /* sent as X-Webhook-Token */
    const char *local_token;    /* sent as X-MailAgent-Local-Token */
    mae__sse_parser *sse;
    bool has_floor;             /* floor: the newest id printed; an event at */
    mae__stream_id floor;       /* or below it is not printed again */
    bool got_data;              /* the current connection delivered bytes */
    bool output_failed;
} tail;

/* Why a read loop returned; TAIL_MORE: a step succeeded, go on. */
enum { TAIL_DONE, TAIL_LOST, TAIL_OUTPUT_FAILED, TAIL_MORE };

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Milliseconds left before the deadline, at most cap; 0 when passed. */
static int ms_left(const tail *t, int cap)
{
    if (t->deadline <= 0)
        return cap;
    double left = (t->deadline - mono_now()) * 1000.0;
    if (left <= 0)
        return 0;
    return left < cap ? (int)left + 1 : cap;
}

static bool finished(const tail *t)
{
    return stop_requested || (t->count > 0 && t->printed >= t->count) ||
           (t->deadline > 0 && mono_now() >= t->deadline);
}

/* ---- printing -------------------------------------------------------------- */

/* A string value is printed bare when that cannot be misread; otherwise it
 * is quoted the JSON way (spaces, '=', quotes, control characters). */
static bool bare(const char *s)
{
    if (!*s)
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p == 0x7F)
            return false;
    return true;
}

static void print_value(json_object *v)
{
    if (json_object_is_type(v, json_type_string) && bare(json_object_get_string(v)))
        fputs(json_object_get_string(v), stdout);
    else
        fputs(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN |
                                                     JSON_C_TO_STRING_NOSLASHESCAPE),
              stdout);
}

/* "12:00:01.123456" in local time; the ts of docs/events.md has microseconds. */
static void print_ts(json_object *ts)
{
    struct tm tm;
    char hms[16];
    if (!ts || !(json_object_is_type(ts, json_type_double) ||
                 json_object_is_type(ts, json_type_int))) {
        fputs("--:--:--.------", stdout);
        return;
    }
    /* Rounded to the microsecond: the double nearest 1716096000.123456 is
     * a hair above or below it. Event times are positive, so truncating
     * is the floor. */
    double v = json_object_get_double(ts);
    int64_t secs = (int64_t)v;
    long usec = (long)((v - (double)secs) * 1e6 + 0.5);
    if (v < 0) {
        fputs("--:--:--.------", stdout);
        return;
    }
    if (usec >= 1000000) {
        secs += 1;
        usec -= 1000000;
    }
    time_t tt = (time_t)secs;
    if (!localtime_r(&tt, &tm) || strftime(hms, sizeof hms, "%H:%M:%S", &tm) == 0) {
        fputs("--:--:--.------", stdout);
        return;
    }
    printf("%s.%06ld", hms, usec);
}

static void print_line(json_object *ev)
{
    json_object *v, *data;
    print_ts(json_object_object_get_ex(ev, "ts", &v) ? v : NULL);
    fputc(' ', stdout);
    if (json_object_object_get_ex(ev, "event_type", &v) && v)
        print_value(v);
    else
        fputs("?", stdout);
    if (json_object_object_get_ex(ev, "internal_id", &v) && v &&
        json_object_is_type(v, json_type_int))
        printf(" #%lld", (long long)json_object_get_int64(v));
    else
        fputs(" -", stdout);
    fputc(' ', stdout);
    if (json_object_object_get_ex(ev, "source", &v) && v)
        print_value(v);
    else
        fputs("-", stdout);
    if (json_object_object_get_ex(ev, "data", &data) && json_object_is_type(data, json_type_object)) {
        json_object_object_foreach(data, key, val) {
            printf(" %s=", key);
            if (val)
                print_value(val);
            else
                fputs("null", stdout);
        }
    }
    fputc('\n', stdout);
}

/* With --json in stream mode: {"id":"<id>","event":<message>}, the message
 * byte for byte when it is one JSON value, else as a JSON string. */
static void print_json_with_id(const char *id, const char *msg, size_t len, bool is_json)
{
    printf("{\"id\":\"%s\",\"event\":", id);
    if (is_json) {
        fwrite(msg, 1, len, stdout);
    } else {
        json_object *str = json_object_new_string_len(msg, (int)len);
        fputs(str ? json_object_to_json_string_ext(str, JSON_C_TO_STRING_PLAIN |
                                                             JSON_C_TO_STRING_NOSLASHESCAPE)
                  : "null",
              stdout);
        json_object_put(str);
    }
    fputs("}\n", stdout);
}

/* Prints one message if it passes the filter; id is its stream id (NULL in
 * pub/sub mode), printed first. Returns false when stdout cannot be
 * written. */
static bool on_message(tail *t, const char *id, const char *msg, size_t len)
{
    json_tokener *tok = json_tokener_new();
    json_object *ev = tok ? json_tokener_parse_ex(tok, msg, (int)len) : NULL;
    json_object *type = NULL;
    bool is_json = ev && json_tokener_get_parse_end(tok) == len;
    bool is_event = ev && json_object_is_type(ev, json_type_object) &&
                    json_object_object_get_ex(ev, "event_type", &type) &&
                    json_object_is_type(type, json_type_string);
    json_tokener_free(tok);

    if (t->type_prefix && (!is_event || strncmp(json_object_get_string(type), t->type_prefix,
                                                strlen(t->type_prefix)) != 0)) {
        json_object_put(ev);
        return true;
    }
    /* With --json the message is passed on byte for byte; a message that
     * is not an event is shown raw rather than hidden. */
    if (id && t->json) {
        print_json_with_id(id, msg, len, is_json);
    } else if (id) {
        printf("%s ", id);
        if (is_event) {
            print_line(ev);
        } else {
            fwrite(msg, 1, len, stdout);
            fputc('\n', stdout);
        }
    } else if (t->json || !is_event) {
        fwrite(msg, 1, len, stdout);
        fputc('\n', stdout);
    } else {
        print_line(ev);
    }
    json_object_put(ev);
    t->printed++;
    if (fflush(stdout) == 0 && !ferror(stdout))
        return true;
    t->write_errno = errno;
    return false;
}

/* ---- Redis ---------------------------------------------------------------- */

static void disconnect(tail *t)
{
    mae__sync_free(t->c);
    t->c = NULL;
}

static bool stream_position(tail *t, char *err, size_t errlen);

/* Connects, authenticates and subscribes (in stream mode: settles the
 * position to read from). Returns false with the reason. */
static bool connect_once(tail *t, char *err, size_t errlen)
{
    int ms = ms_left(t, CONNECT_TIMEOUT_MS);
    redisReply *r = NULL;
    mae__sync_conn *c;

    if (ms == 0) {
        snprintf(err, errlen, "timed out");
        return false;
    }
    /* Connect, AUTH and SELECT: the database in the URL counts. A signal
     * ends every wait in it, and in the connection's later commands. */
    c = mae__redis_connect_sync_until(&t->addr, ms, &stop_requested, err, errlen);
    if (!c)
        return false;
    t->c = c;
    if (t->stream) {
        if (stream_position(t, err, errlen))
            return true;
        disconnect(t);
        return false;
    }
    r = mae__sync_command(c, ms, err, errlen, "SUBSCRIBE %b", t->cfg->channel,
                          strlen(t->cfg->channel));
    if (!r) {
        disconnect(t);
        return false;
    }
    if (r->type != REDIS_REPLY_ARRAY) {
        snprintf(err, errlen, "SUBSCRIBE refused: %s",
                 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        goto refused;
    }
    freeReplyObject(r);
    return true;
refused:
    freeReplyObject(r);
    disconnect(t);
    return false;
}

/* Reads messages until finished (TAIL_DONE), the connection is lost
 * (TAIL_LOST, reason in err) or stdout fails (TAIL_OUTPUT_FAILED). */
static int read_loop(tail *t, char *err, size_t errlen)
{
    for (;;) {
        redisReply *reply = NULL;
        if (finished(t))
            return TAIL_DONE;
        /* Replies already in hiredis' buffer first: one read may carry
         * several messages. */
        if (mae__sync_take(t->c, &reply, err, errlen) != 0)
            return TAIL_LOST;
        if (reply) {
            redisReply *r = reply;
            bool ok = true;
            if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
                r->element[0]->type == REDIS_REPLY_STRING &&
                strcmp(r->element[0]->str, "message") == 0 &&
                r->element[2]->type == REDIS_REPLY_STRING)
                ok = on_message(t, NULL, r->element[2]->str, r->element[2]->len);
            freeReplyObject(r);
            if (!ok)
                return TAIL_OUTPUT_FAILED;
            continue;
        }
        struct pollfd pfd = {.fd = mae__sync_fd(t->c), .events = POLLIN};
        int n = poll(&pfd, 1, ms_left(t, POLL_SLICE_MS));
        if (n < 0 && errno != EINTR) {
            snprintf(err, errlen, "poll: %s", strerror(errno));
            return TAIL_LOST;
        }
        if (n > 0 && mae__sync_read(t->c, err, errlen) != 0)
            return TAIL_LOST;
    }
}

/* ---- stream mode -------------------------------------------------------- */

static const char *key_of(const tail *t)
{
    return t->cfg->stream_key;
}

/* The stream's bounds on the fresh connection, in one MULTI/EXEC as the
 * relay reads them. Returns false with the reason. */
static bool stream_bounds(tail *t, mae__stream_bounds *b, char *err, size_t errlen)
{
    const char *key = key_of(t);
    return mae__stream_bounds_sync(t->c, key, strlen(key), b, err, errlen) == 0;
}

/* Where to read from. The first time: after --since (with a word on
 * stderr when the history it asks for was trimmed, or the id is newer than
 * the stream), or after the newest entry. After a reconnect: after the last
 * entry seen, unless the stream went back meanwhile (recreated, or Redis
 * restored an older copy), which is said and followed. */
static bool stream_position(tail *t, char *err, size_t errlen)
{
    mae__stream_bounds b;
    char a[MAE__STREAM_ID_BUFSIZE], z[MAE__STREAM_ID_BUFSIZE];
    if (!stream_bounds(t, &b, err, errlen))
        return false;
    mae__stream_id_format(&b.last, z);
    if (!t->positioned) {
        t->pos = b.last;
        if (t->since_set) {
            mae__resume_plan plan = mae__resume_decide(MAE__STREAM_ID_OK, &t->since, &b);
            mae__stream_id_format(&t->since, a);
            t->pos = t->since;
            if (plan.kind == MAE__RESUME_TRIMMED && plan.has_oldest &&
                mae__stream_id_is_zero(&t->since)) {
                mae__stream_id_format(&plan.oldest, z);
                cli_error("the stream's history before %s was trimmed; printing from %s", z, z);
            } else if (plan.kind == MAE__RESUME_TRIMMED && plan.has_oldest) {
                mae__stream_id_format(&plan.oldest, z);
                cli_error("the stream's history before %s was trimmed: events after %s may be "
                          "missing; printing from %s", z, a, z);
            } else if (plan.kind == MAE__RESUME_TRIMMED) {
                cli_error("the stream's history was trimmed away: events after %s may be missing",
                          a);
            } else if (plan.kind == MAE__RESUME_UNKNOWN_ID) {
                cli_error("%s is newer than the stream's last id %s (was the stream recreated?); "
                          "following it from there", a, z);
                t->pos = b.last;
            }
        }
        t->positioned = true;
    } else if (mae__stream_id_cmp(&b.last, &t->pos) < 0) {
        mae__stream_id_format(&t->pos, a);
        cli_error("the stream went back from %s to %s while Redis was away (recreated, or an "
                  "older copy restored): events may be missing; following it from there", a, z);
        t->pos = b.last;
    }
    return true;
}

/* Sends what hiredis has buffered and waits for one reply, up to
 * timeout_ms, in slices so that a signal or the deadline is seen: TAIL_MORE
 * and *out, TAIL_DONE when the tail is finished meanwhile, or TAIL_LOST with
 * the reason (a hung server included). */
static int await_reply(tail *t, int timeout_ms, redisReply **out, char *err, size_t errlen)
{
    if (mae__sync_flush(t->c, timeout_ms, err, errlen) != 0)
        return TAIL_LOST;
    double until = mono_now() + timeout_ms / 1000.0;
    for (;;) {
        redisReply *reply = NULL;
        if (mae__sync_take(t->c, &reply, err, errlen) != 0)
            return TAIL_LOST;
        if (reply) {
            *out = reply;
            return TAIL_MORE;
        }
        if (finished(t))
            return TAIL_DONE;
        double left = (until - mono_now()) * 1000.0;
        if (left <= 0) {
            snprintf(err, errlen, "no reply within %d ms", timeout_ms);
            return TAIL_LOST;
        }
        struct pollfd pfd = {.fd = mae__sync_fd(t->c), .events = POLLIN};
        int n = poll(&pfd, 1, ms_left(t, left < POLL_SLICE_MS ? (int)left + 1 : POLL_SLICE_MS));
        if (n < 0 && errno != EINTR) {
            snprintf(err, errlen, "poll: %s", strerror(errno));
            return TAIL_LOST;
        }
        if (n > 0 && mae__sync_read(t->c, err, errlen) != 0)
            return TAIL_LOST;
    }
}

/* Prints the entries of one XREAD reply (nil: none yet), advancing the
 * position past each, printed or filtered out. */
static int print_entries(tail *t, const redisReply *r, char *err, size_t errlen)
{
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "%s", r->str);
        return TAIL_LOST;
    }
    if (r->type == REDIS_REPLY_NIL)
        return TAIL_MORE;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 1 ||
        r->element[0]->type != REDIS_REPLY_ARRAY || r->element[0]->elements != 2 ||
        r->element[0]->element[1]->type != REDIS_REPLY_ARRAY) {
        snprintf(err, errlen, "unexpected reply to XREAD");
        return TAIL_LOST;
    }
    const redisReply *list = r->element[0]->element[1];
    for (size_t i = 0; i < list->elements; i++) {
        mae__stream_entry e;
        char id[MAE__STREAM_ID_BUFSIZE];
        if (!mae__stream_parse_entry(list->element[i], &e)) {
            snprintf(err, errlen, "unexpected entry in a reply to XREAD");
            return TAIL_LOST;
        }
        if (mae__stream_id_cmp(&e.id, &t->pos) <= 0)
            continue;
        t->pos = e.id;
        if (!e.line)
            continue;
        mae__stream_id_format(&e.id, id);
        if (!on_message(t, id, e.line, e.len))
            return TAIL_OUTPUT_FAILED;
        if (finished(t))
            return TAIL_DONE;
    }
    return TAIL_MORE;
}

/* Reads the stream after the position until finished: the history first,
 * in pages of STREAM_PAGE (XREAD answers at once while entries are there),
 * then new entries as they come (it blocks when caught up). One loop for
 * both, so a reconnect in the middle of the history needs nothing
 * special. Returns like read_loop. */
static int stream_loop(tail *t, char *err, size_t errlen)
{
    const char *key = key_of(t);
    for (;;) {
        char id[MAE__STREAM_ID_BUFSIZE];
        redisReply *r = NULL;
        if (finished(t))
            return TAIL_DONE;
        int block = ms_left(t, STREAM_BLOCK_MS);
        if (block < 1)
            block = 1;   /* BLOCK 0 would wait forever */
        mae__stream_id_format(&t->pos, id);
        if (mae__sync_append(t->c, "XREAD COUNT %d BLOCK %d STREAMS %b %s", STREAM_PAGE, block,
                             key, strlen(key), id) != 0) {
            snprintf(err, errlen, "out of memory");
            return TAIL_LOST;
        }
        int rc = await_reply(t, block + STREAM_MARGIN_MS, &r, err, errlen);
        if (rc != TAIL_MORE)
            return rc;
        rc = print_entries(t, r, err, errlen);
        freeReplyObject(r);
        if (rc != TAIL_MORE)
            return rc;
    }
}

/* Sleeps the schedule's delay before attempt `failures`, cut short by a
 * signal or the deadline: in slices, so that a signal landing between the
 * check and the sleep waits one slice, not the whole delay (up to 5 s). */
static void backoff_sleep(tail *t, int failures)
{
    double s = mae__backoff_delay(BACKOFF_MIN_MS, BACKOFF_MAX_MS, failures,
                                  mae__rand_unit(&t->rng));
    double until = mono_now() + s;
    while (!finished(t) && mono_now() < until) {
        int left = (int)((until - mono_now()) * 1000) + 1;
        poll(NULL, 0, ms_left(t, left < POLL_SLICE_MS ? left : POLL_SLICE_MS));
    }
}

/* Reconnects until it works or the tail is finished. */
static bool reconnect(tail *t, const char *why)
{
    char err[256];
    int failures = 1;
    cli_error("lost the connection to Redis at %s (%s); reconnecting", t->where, why);
    while (!finished(t)) {
        backoff_sleep(t, failures);
        if (finished(t))
            break;
        if (connect_once(t, err, sizeof err)) {
            cli_error("reconnected to Redis at %s", t->where);
            return true;
        }
        failures++;
    }
    return false;
}

static int run_tail(const tail *proto)
{
    tail t = *proto;
    char err[256];
    int rc = CLI_OK;

    if (!connect_once(&t, err, sizeof err)) {
        /* Stopped while connecting (a hung server, a slow Sentinel): the
         * stop asked for, not a failure to report. */
        if (stop_requested)
            return CLI_OK;
        cli_error("cannot connect to Redis at %s: %s", t.where, err);
        return CLI_FAIL;
    }
    for (;;) {
        int r = t.stream ? stream_loop(&t, err, sizeof err) : read_loop(&t, err, sizeof err);
        if (r == TAIL_DONE)
            break;
        if (r == TAIL_OUTPUT_FAILED) {
            /* A reader that went away (`| head -1`) is the end of the tail,
             * not an error worth a message. */
            if (t.write_errno != EPIPE) {
                cli_error("cannot write the output: %s", strerror(t.write_errno));
                rc = CLI_FAIL;
            }
            break;
        }
        disconnect(&t);
        if (!reconnect(&t, err))
            break;
    }
    disconnect(&t);
    return rc;
}

/* ---- relay mode -------------------------------------------------------- */

/* One frame of the relay's stream (docs/relay.md, "Frames"). */
static bool on_frame(void *user, const mae__sse_event *ev)
{
    tail *t = user;
    if (ev->oversize) {
        cli_error("a frame of the relay's stream was over %u bytes: dropped",
                  (unsigned)RELAY_MAX_LINE);
        return true;
    }
    if (strcmp(ev->type, "reset") == 0) {
        /* Events may have been missed: said as the relay says it. The ids
         * after a reset may start lower (a new stream, a new hub). */
        cli_error("reset from the relay: %.*s (events may have been missed)",
                  (int)ev->data_len, ev->data);
        t->has_floor = false;
        return true;
    }
    if (strcmp(ev->type, "skipped") == 0) {
        cli_error("the relay skipped an event: %.*s", (int)ev->data_len, ev->data);
        return true;
    }
    if (strcmp(ev->type, "mailagent") != 0)
        return true;   /* ping, and whatever a later relay adds */
    mae__stream_id id;
    bool has_id = ev->has_id && ev->id[0] &&
                  mae__stream_id_parse(ev->id, strlen(ev->id), &id) == MAE__STREAM_ID_OK;
    if (has_id) {
        /* A relay replaying from our Last-Event-ID starts after it; this
         * holds even for one that would not. */
        if (t->has_floor && mae__stream_id_cmp(&id, &t->floor) <= 0)
            return true;
        t->floor = id;
        t->has_floor = true;
    }
    if (!on_message(t, ev->has_id && ev->id[0] ? ev->id : NULL, ev->data, ev->data_len)) {
        t->output_failed = true;
        return false;
    }
    return !finished(t);
}

/* The request's extra headers: the position and the credentials. */
static void relay_headers(const tail *t, char *buf, size_t size)
{
    int n = 0;
    buf[0] = '\0';
    if (t->sse->id[0])
        n += snprintf(buf + n, size - (size_t)n, "Last-Event-ID: %s\r\n", t->sse->id);
    if (t->secret && (size_t)n < size)
        n += snprintf(buf + n, size - (size_t)n, "X-Webhook-Token: %s\r\n", t->secret);
    if (t->local_token && (size_t)n < size)
        snprintf(buf + n, size - (size_t)n, "X-MailAgent-Local-Token: %s\r\n", t->local_token);
}

/* Opens the stream. TAIL_MORE on a 200; TAIL_LOST with the reason for
 * what a retry may cure (no connection, 5xx, 429); TAIL_OUTPUT_FAILED
 * (reused: "give up") with the reason for what it cannot (401, 404...). */
static int relay_open(tail *t, cli_http *h, char *err, size_t errlen)
{
    char headers[1024];
    relay_headers(t, headers, sizeof headers);
    if (!cli_http_get(h, &t->url, headers, RELAY_CONNECT_MS, &stop_requested, err, errlen))
        return TAIL_LOST;
    if (h->status == 200) {
        mae__sse_reset_connection(t->sse);
        return TAIL_MORE;
    }
    snprintf(err, errlen, "HTTP %d %s", h->status, h->reason);
    cli_http_close(h);
    if (h->status == 401 || h->status == 403) {
        snprintf(err + strlen(err), errlen - strlen(err),
                 ": the relay wants a credential: set WEBHOOK_SECRET or "
                 "MAILAGENT_LOCAL_API_TOKEN, or pass --secret or --local-token");
        return TAIL_OUTPUT_FAILED;
    }
    return h->status >= 500 || h->status == 429 ? TAIL_LOST : TAIL_OUTPUT_FAILED;
}

/* Reads the stream until finished, lost or stdout fails. */
static int relay_loop(tail *t, cli_http *h, char *err, size_t errlen)
{
    static char body[CLI_HTTP_HEAD_MAX];
    double idle_until = mono_now() + RELAY_IDLE_MS / 1000.0;
    for (;;) {
        if (finished(t))
            return TAIL_DONE;
        if (!cli_http_buffered(h)) {
            struct pollfd pfd = {.fd = h->fd, .events = POLLIN};
            int n = poll(&pfd, 1, ms_left(t, POLL_SLICE_MS));
            if (n < 0 && errno != EINTR) {
                snprintf(err, errlen, "poll: %s", strerror(errno));
                return TAIL_LOST;
            }
            if (n <= 0) {
                if (mono_now() >= idle_until) {
                    snprintf(err, errlen, "nothing for %d s, not even a ping",
                             RELAY_IDLE_MS / 1000);
                    return TAIL_LOST;
                }
                continue;
            }
        }
        size_t got;
        int rc = cli_http_read(h, body, sizeof body, &got, err, errlen);
        if (rc < 0)
            return TAIL_LOST;
        if (rc == 0) {
            snprintf(err, errlen, "the relay ended the stream");
            return TAIL_LOST;
        }
        if (got == 0)
            continue;
        idle_until = mono_now() + RELAY_IDLE_MS / 1000.0;
        t->got_data = true;
        size_t off = 0;
        while (off < got) {
            off += mae__sse_feed(t->sse, body + off, got - off, on_frame, t);
            if (t->output_failed)
                return TAIL_OUTPUT_FAILED;
            if (finished(t))
                return TAIL_DONE;
        }
    }
}

/* Waits before the next attempt: the relay's retry: when it gave one,
 * else the backoff; the longer of the two. */
static void relay_wait(tail *t, int failures)
{
    double s = mae__backoff_delay(BACKOFF_MIN_MS, BACKOFF_MAX_MS, failures,
                                  mae__rand_unit(&t->rng));
    int ms = (int)(s * 1000);
    if (t->sse->retry_ms > ms)
        ms = (int)t->sse->retry_ms;
    double until = mono_now() + ms / 1000.0;
    while (!finished(t) && mono_now() < until) {
        int left = (int)((until - mono_now()) * 1000) + 1;
        poll(NULL, 0, ms_left(t, left < POLL_SLICE_MS ? left : POLL_SLICE_MS));
    }
}

static int run_relay(tail *t, const char *where)
{
    cli_http h;
    char err[512];
    int failures = 0;
    bool connected_once = false, lost = false;
    int rc = CLI_OK;

    for (;;) {
        if (finished(t))
            break;
        int r = relay_open(t, &h, err, sizeof err);
        if (r == TAIL_OUTPUT_FAILED) {
            cli_error("the relay at %s refused the stream: %s", where, err);
            rc = CLI_FAIL;
            break;
        }
        if (r == TAIL_LOST) {
            if (finished(t))
                break;
            if (!connected_once) {
                cli_error("cannot connect to the relay at %s: %s", where, err);
                rc = CLI_FAIL;
                break;
            }
            relay_wait(t, ++failures);
            continue;
        }
        if (lost)
            cli_error("reconnected to the relay at %s%s%s", where,
                      t->sse->id[0] ? ", resuming after " : "", t->sse->id);
        connected_once = true;
        lost = false;
        t->got_data = false;
        r = relay_loop(t, &h, err, sizeof err);
        cli_http_close(&h);
        if (r == TAIL_DONE)
            break;
        if (r == TAIL_OUTPUT_FAILED) {
            if (t->write_errno != EPIPE) {
                cli_error("cannot write the output: %s", strerror(t->write_errno));
                rc = CLI_FAIL;
            }
            break;
        }
        if (finished(t))
            break;
        cli_error("lost the relay stream at %s (%s); reconnecting", where, err);
        lost = true;
        failures = t->got_data ? 1 : failures + 1;
        relay_wait(t, failures);
    }
    return rc;
}

static int tail_relay(tail *t, const char *url, const char *since)
{
    char err[320], where[300];
    mae__sse_parser sse;
    if (!cli_http_url_parse(url, RELAY_PATH, &t->url, err, sizeof err)) {
        cli_error("invalid relay URL: %s", err);
        return CLI_USAGE;
    }
    if (mae__sse_init(&sse, RELAY_MAX_LINE) != MAE_OK) {
        cli_error("out of memory");
        return CLI_FAIL;
    }
    t->sse = &sse;
    if (since)
        snprintf(sse.id, sizeof sse.id, "%s", since);
    snprintf(where, sizeof where, strchr(t->url.host, ':') ? "[%s]:%d" : "%s:%d", t->url.host,
             t->url.port);
    int rc = run_relay(t, where);
    mae__sse_free(&sse);
    return rc;
}

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    /* No SA_RESTART: poll() must return so the loop sees the request. */
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* A write to a dropped connection is reported by hiredis as an error;
     * the default SIGPIPE would kill the tail instead of reconnecting. */
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}

/* --relay: the credentials from the flags, else the environment (read as
 * the relay reads them), then the tail. */
static int run_relay_mode(const cli_command *cmd, tail *t, const char *url, const char *since,
                          const char *secret, const char *local_token)
{
    char err[256];
    mae__stream_id id;
    if (since && mae__stream_id_parse(since, strlen(since), &id) != MAE__STREAM_ID_OK)
        return cli_usage_error(cmd, "--since wants a stream id such as 1716096000123-0, not "
                                    "'%s'", since);
    if (!secret && mae__env_credential(NULL, "WEBHOOK_SECRET", &secret, err, sizeof err) != 0)
        return cli_usage_error(cmd, "%s", err);
    if (!local_token && mae__env_credential(NULL, "MAILAGENT_LOCAL_API_TOKEN", &local_token, err,
                                            sizeof err) != 0)
        return cli_usage_error(cmd, "%s", err);
    static const char *const flags[2] = {"--secret", "--local-token"};
    const char *vals[2] = {secret, local_token};
    for (int i = 0; i < 2; i++)
        for (const char *c = vals[i]; c && *c; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7F)
                return cli_usage_error(cmd, "%s has a control character", flags[i]);
    t->relay = true;
    t->secret = secret && *secret ? secret : NULL;
    t->local_token = local_token && *local_token ? local_token : NULL;
    install_signals();
    return tail_relay(t, url, since);
}

static int run(const cli_command *cmd, cli_config *cfg, int argc, char **argv)
{
    static const struct option opts[] = {
        {"type", required_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},
        {"count", required_argument, NULL, 'n'},
        {"timeout", required_argument, NULL, 'T'},
        {"since", required_argument, NULL, 's'},
        {"relay", required_argument, NULL, 'r'},
        {"secret", required_argument, NULL, 'S'},
        {"local-token", required_argument, NULL, 'L'},
        CLI_GLOBAL_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    tail t;
    double timeout = 0;
    const char *since = NULL, *relay = NULL, *secret = NULL, *local_token = NULL;
    char err[256];
    int c, rc;

    memset(&t, 0, sizeof t);
    t.cfg = cfg;
    while ((c = cli_getopt(cmd, cfg, argc, argv, "", opts)) != -1) {
        switch (c) {
        case 't':
            t.type_prefix = optarg;
            break;
        case 'j':
            t.json = true;
            break;
        case 'n':
            if (!cli_parse_int64(optarg, 1, INT64_MAX, &t.count))
                return cli_usage_error(cmd, "--count wants a positive number, not '%s'", optarg);
            break;
        case 'T':
            if (!cli_parse_seconds(optarg, &timeout))
                return cli_usage_error(cmd, "--timeout wants a positive number of seconds, "
                                       "not '%s'", optarg);
            break;
        case 's':
            since = optarg;
            break;
        case 'r':
            relay = optarg;
            break;
        case 'S':
            secret = optarg;
            break;
        case 'L':
            local_token = optarg;
            break;
        case 'h':
            return CLI_OK;
        default:
            return CLI_USAGE;
        }
    }
    if (!cli_positionals(cmd, argc, argv, 0, 0))
        return CLI_USAGE;
    if (timeout > 0)
        t.deadline = mono_now() + timeout;
    t.rng = mae__rand_seed(&t);
    if (relay)
        return run_relay_mode(cmd, &t, relay, since, secret, local_token);
    if (secret || local_token)
        return cli_usage_error(cmd, "--secret and --local-token are for --relay");
    t.stream = cfg->stream_key != NULL;
    if (since && !t.stream)
        return cli_usage_error(cmd, "--since reads a stream: pass --stream KEY or set "
                                    "MAILAGENT_STREAM");
    if (since) {
        t.since_set = true;
        if (strcmp(since, "start") != 0 &&
            mae__stream_id_parse(since, strlen(since), &t.since) != MAE__STREAM_ID_OK)
            return cli_usage_error(cmd, "--since wants a stream id such as 1716096000123-0, or "
                                        "start, not '%s'", since);
    }
    if (!cfg->redis_url)
        return cli_usage_error(cmd, "no Redis URL: set MAILAGENT_REDIS_URL or pass --redis URL");
    if (mae__url_parse_for(cfg->redis_url, MAE__URL_ALLOW_TLS | MAE__URL_ALLOW_SENTINEL, &t.addr,
                           err, sizeof err) != MAE_OK) {
        cli_error("invalid Redis URL: %s", err);
        return CLI_USAGE;
    }
    if (t.addr.path)
        snprintf(t.where, sizeof t.where, "%s", t.addr.path);
    else if (t.addr.nsentinels > 0)   /* the master Sentinel names, found per connect */
        snprintf(t.where, sizeof t.where, "master %s", t.addr.master_name);
    else
        snprintf(t.where, sizeof t.where, strchr(t.addr.host, ':') ? "[%s]:%d" : "%s:%d",
                 t.addr.host, t.addr.port);
    install_signals();
    rc = run_tail(&t);
    mae__url_free(&t.addr);
    return rc;
}

const cli_command cli_events_tail = {
    "events", "tail",
    "[--type PREFIX] [--json] [--count N] [--timeout SECONDS] [--stream KEY [--since ID|start]] "
    "[--relay URL [--since ID] [--secret SECRET] [--local-token TOKEN]]",
    "Print the events published on the channel as they arrive.",
    "Each event is one line: local time, event type, #mail, source, then the\n"
    "data fields, e.g.\n"
    "  12:00:01.123456 email.synced #53675 new_watcher notion_page_id=page-abc\n"
    "With --stream the entry's id comes first:\n"
    "  1716096000123-0 12:00:01.123456 email.synced #53675 new_watcher ...\n"
    "When Redis goes away the tail says so on stderr and reconnects (events\n"
    "published meanwhile are missed: pub/sub keeps no history; with --stream\n"
    "it continues after the last id). Stops on SIGINT or SIGTERM. Needs a\n"
    "Redis URL, or --relay.\n"
    "Options:\n"
    "  --type PREFIX    only events whose event_type starts with PREFIX\n"
    "                   (e.g. outbox. or email.synced)\n"
    "  --json           print each message exactly as published, one a line\n"
    "  --count N        exit after N events\n"
    "  --timeout SECONDS  exit after this long (may have a fraction)\n"
    "  --stream KEY     read the events' Redis Stream instead of the channel\n"
    "                   (default: $MAILAGENT_STREAM): each line starts with the\n"
    "                   entry's id, and --json prints {\"id\":\"ID\",\"event\":EVENT}\n"
    "                   with the event byte for byte. Nothing is missed across\n"
    "                   a reconnect: it continues after the last id seen.\n"
    "  --since ID|start print the stream's history after ID (or all of it) first,\n"
    "                   then follow; says so on stderr when part of that history\n"
    "                   was trimmed. Needs --stream or --relay.\n"
    "  --relay URL      read a relay's SSE stream instead of Redis (any mode:\n"
    "                   hub, pub/sub or stream), e.g. http://127.0.0.1:9200;\n"
    "                   lines as above, the id first when the relay gives one.\n"
    "                   After a disconnect it reconnects with the last id\n"
    "                   (Last-Event-ID): nothing printed twice, nothing missed\n"
    "                   that the relay still holds. reset and skipped frames go\n"
    "                   to stderr. --since ID starts after ID.\n"
    "  --secret SECRET  the relay's WEBHOOK_SECRET (default: $WEBHOOK_SECRET)\n"
    "  --local-token TOKEN  the relay's local token (default:\n"
    "                   $MAILAGENT_LOCAL_API_TOKEN)\n",
    run,
};
