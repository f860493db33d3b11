/* The `mailagent events tail` command: subscribes to the event channel with
 * hiredis and prints each event as it arrives, surviving Redis restarts. */
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
#include "core/url.h"

#include "cli.h"

/* Reconnect delays, as the publisher's: doubling, capped, with jitter. */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define CONNECT_TIMEOUT_MS 1000
/* The longest the loop sleeps in poll(): a signal that lands just before
 * poll() is still seen this soon. */
#define POLL_SLICE_MS 250

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
    redisContext *c;
    uint64_t rng;               /* the backoff's jitter */
} tail;

/* Why a read loop returned. */
enum { TAIL_DONE, TAIL_LOST, TAIL_OUTPUT_FAILED };

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

/* Prints one message if it passes the filter. Returns false when stdout
 * cannot be written. */
static bool on_message(tail *t, const char *msg, size_t len)
{
    json_tokener *tok = json_tokener_new();
    json_object *ev = tok ? json_tokener_parse_ex(tok, msg, (int)len) : NULL;
    json_object *type = NULL;
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
    if (t->json || !is_event) {
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
    if (t->c)
        redisFree(t->c);
    t->c = NULL;
}

/* Connects, authenticates and subscribes. Returns false with the reason. */
static bool connect_once(tail *t, char *err, size_t errlen)
{
    int ms = ms_left(t, CONNECT_TIMEOUT_MS);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    redisReply *r = NULL;
    redisContext *c;

    if (ms == 0) {
        snprintf(err, errlen, "timed out");
        return false;
    }
    c = t->addr.path ? redisConnectUnixWithTimeout(t->addr.path, tv)
                            : redisConnectWithTimeout(t->addr.host, t->addr.port, tv);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    t->c = c;
    if (c->err)
        goto fail;
    /* A server that accepts and never answers must not hang the handshake;
     * later reads only happen when poll() says there is data. */
    tv.tv_sec = CONNECT_TIMEOUT_MS / 1000;
    tv.tv_usec = (CONNECT_TIMEOUT_MS % 1000) * 1000;
    redisSetTimeout(c, tv);
    redisEnableKeepAlive(c);
    if (t->addr.password) {
        r = t->addr.user ? redisCommand(c, "AUTH %s %s", t->addr.user, t->addr.password)
                         : redisCommand(c, "AUTH %s", t->addr.password);
        if (!r)
            goto fail;
        if (r->type == REDIS_REPLY_ERROR) {
            snprintf(err, errlen, "AUTH refused: %s", r->str);
            goto refused;
        }
        freeReplyObject(r);
    }
    r = redisCommand(c, "SUBSCRIBE %b", t->cfg->channel, strlen(t->cfg->channel));
    if (!r)
        goto fail;
    if (r->type != REDIS_REPLY_ARRAY) {
        snprintf(err, errlen, "SUBSCRIBE refused: %s",
                 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        goto refused;
    }
    freeReplyObject(r);
    return true;
fail:
    /* The handshake's read timeout surfaces as EAGAIN's text. */
    if (strcmp(c->errstr, strerror(EAGAIN)) == 0)
        snprintf(err, errlen, "no answer within %d ms", CONNECT_TIMEOUT_MS);
    else
        snprintf(err, errlen, "%s", c->errstr[0] ? c->errstr : "connection failed");
    disconnect(t);
    return false;
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
        void *reply = NULL;
        if (finished(t))
            return TAIL_DONE;
        /* Replies already in hiredis' buffer first: one read may carry
         * several messages. */
        if (redisGetReplyFromReader(t->c, &reply) != REDIS_OK) {
            snprintf(err, errlen, "%s", t->c->errstr);
            return TAIL_LOST;
        }
        if (reply) {
            redisReply *r = reply;
            bool ok = true;
            if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
                r->element[0]->type == REDIS_REPLY_STRING &&
                strcmp(r->element[0]->str, "message") == 0 &&
                r->element[2]->type == REDIS_REPLY_STRING)
                ok = on_message(t, r->element[2]->str, r->element[2]->len);
            freeReplyObject(r);
            if (!ok)
                return TAIL_OUTPUT_FAILED;
            continue;
        }
        struct pollfd pfd = {.fd = t->c->fd, .events = POLLIN};
        int n = poll(&pfd, 1, ms_left(t, POLL_SLICE_MS));
        if (n < 0 && errno != EINTR) {
            snprintf(err, errlen, "poll: %s", strerror(errno));
            return TAIL_LOST;
        }
        if (n > 0 && redisBufferRead(t->c) != REDIS_OK) {
            snprintf(err, errlen, "%s", t->c->errstr);
            return TAIL_LOST;
        }
    }
}

/* Sleeps the schedule's delay before attempt `failures`, cut short by a
 * signal or the deadline. */
static void backoff_sleep(tail *t, int failures)
{
    double s = mae__backoff_delay(BACKOFF_MIN_MS, BACKOFF_MAX_MS, failures,
                                  mae__rand_unit(&t->rng));
    poll(NULL, 0, ms_left(t, (int)(s * 1000)));
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
        cli_error("cannot connect to Redis at %s: %s", t.where, err);
        return CLI_FAIL;
    }
    for (;;) {
        int r = read_loop(&t, err, sizeof err);
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

static int run(const cli_command *cmd, cli_config *cfg, int argc, char **argv)
{
    static const struct option opts[] = {
        {"type", required_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},
        {"count", required_argument, NULL, 'n'},
        {"timeout", required_argument, NULL, 'T'},
        CLI_GLOBAL_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    tail t;
    double timeout = 0;
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
        case 'h':
            return CLI_OK;
        default:
            return CLI_USAGE;
        }
    }
    if (!cli_positionals(cmd, argc, argv, 0, 0))
        return CLI_USAGE;
    if (!cfg->redis_url)
        return cli_usage_error(cmd, "no Redis URL: set MAILAGENT_REDIS_URL or pass --redis URL");
    if (mae__url_parse(cfg->redis_url, &t.addr, err, sizeof err) != MAE_OK) {
        cli_error("invalid Redis URL: %s", err);
        return CLI_USAGE;
    }
    if (t.addr.path)
        snprintf(t.where, sizeof t.where, "%s", t.addr.path);
    else
        snprintf(t.where, sizeof t.where, strchr(t.addr.host, ':') ? "[%s]:%d" : "%s:%d",
                 t.addr.host, t.addr.port);
    if (timeout > 0)
        t.deadline = mono_now() + timeout;
    t.rng = ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL) ^ 0x9e3779b97f4a7c15ull;
    install_signals();
    rc = run_tail(&t);
    mae__url_free(&t.addr);
    return rc;
}

const cli_command cli_events_tail = {
    "events", "tail", "[--type PREFIX] [--json] [--count N] [--timeout SECONDS]",
    "Print the events published on the channel as they arrive.",
    "Each event is one line: local time, event type, #mail, source, then the\n"
    "data fields, e.g.\n"
    "  12:00:01.123456 email.synced #53675 new_watcher notion_page_id=page-abc\n"
    "When Redis goes away the tail says so on stderr and reconnects (events\n"
    "published meanwhile are missed: pub/sub keeps no history). Stops on\n"
    "SIGINT or SIGTERM. Needs a Redis URL.\n"
    "Options:\n"
    "  --type PREFIX    only events whose event_type starts with PREFIX\n"
    "                   (e.g. outbox. or email.synced)\n"
    "  --json           print each message exactly as published, one a line\n"
    "  --count N        exit after N events\n"
    "  --timeout SECONDS  exit after this long (may have a fraction)\n",
    run,
};
