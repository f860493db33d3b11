/* Unit tests of stream mode across a failover (issue 21), with a fake Redis
 * at the transport seam that runs the batch script's rules: the gap reply
 * and the resend window, lost_failover, WAIT, the failover error replies
 * (NOREPLICAS, READONLY, LOADING, also inside a script's error) and the
 * master lookup through Sentinel with ROLE. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include <mailagent/publisher.h>

#include "publisher/publisher_impl.h"

/* ---- the fake --------------------------------------------------------------- */

#define MAXQ 16

typedef struct fake {
    pthread_mutex_t mu;
    /* The master's state: the stream's events (their numbers n) and this
     * publisher's key. */
    int *stream;
    size_t nstream, capstream;
    long long last;          /* the key's value */
    bool has_key;
    bool concede_seen;
    int gaps;                /* gap replies given */
    /* Scripted answers. */
    const char *errors[8];   /* the next EVALSHAs answer these errors */
    int nerrors;
    int wait_short;          /* the next WAITs answer 0 replicas */
    int role_slave;          /* the next ROLEs answer "slave" */
    bool sentinel_down[4];   /* Sentinel i refuses connections */
    /* Records. */
    char targets[64][32];    /* every connect's host:port */
    int ntargets;
    int evals, waits;
    char key[160];           /* the last script call's KEYS[2] */
} fake;

typedef struct conn {
    fake *f;
    struct {
        int rc;
        mae__reply r;
        char err[256];
    } q[MAXQ];
    int head, n;
} conn;

static fake *fake_new(void)
{
    fake *f = calloc(1, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
    return f;
}

static void fake_free(void *user)
{
    fake *f = user;
    pthread_mutex_destroy(&f->mu);
    free(f->stream);
    free(f);
}

/* The number in an event line's data, {"n":N}. */
static int event_n(const char *line, size_t len)
{
    char tmp[512];
    size_t k = len < sizeof tmp - 1 ? len : sizeof tmp - 1;
    memcpy(tmp, line, k);
    tmp[k] = '\0';
    const char *q = strstr(tmp, "\"n\":");
    return q ? atoi(q + 4) : -1;
}

static void *f_connect(void *user, const mae__url *url, int cto, int ito, char *err, size_t errlen)
{
    (void)cto;
    (void)ito;
    fake *f = user;
    pthread_mutex_lock(&f->mu);
    if (f->ntargets < 64)
        snprintf(f->targets[f->ntargets++], 32, "%s:%d", url->host, url->port);
    bool down = false;
    for (int i = 0; i < 4; i++) {
        char name[16];
        snprintf(name, sizeof name, "s%d", i);
        if (f->sentinel_down[i] && strcmp(url->host, name) == 0)
            down = true;
    }
    pthread_mutex_unlock(&f->mu);
    if (down) {
        snprintf(err, errlen, "Connection refused");
        return NULL;
    }
    conn *c = calloc(1, sizeof *c);
    c->f = f;
    return c;
}

static void push(conn *c, int rc, const mae__reply *r, const char *err)
{
    assert_true(c->n < MAXQ);
    int i = (c->head + c->n++) % MAXQ;
    c->q[i].rc = rc;
    memset(&c->q[i].r, 0, sizeof c->q[i].r);
    if (r)
        c->q[i].r = *r;
    snprintf(c->q[i].err, sizeof c->q[i].err, "%s", err ? err : "");
}

/* The batch script's rules (publisher/send.c), on the fake's state. */
static void run_script(conn *c, int argc, const char **argv, const size_t *lens)
{
    fake *f = c->f;
    mae__reply r = {0};
    snprintf(f->key, sizeof f->key, "%s", argv[4]);
    long long first = atoll(argv[SCRIPT_ARGS - 3]);
    bool concede = argv[SCRIPT_ARGS - 1][0] == '1';
    long long last = f->has_key ? f->last : 0;
    if (first > last + 1 && !concede) {
        r.nints = 2;
        r.ints[0] = f->has_key ? -1 : -2;
        r.ints[1] = f->has_key ? last : 0;
        f->gaps++;
        push(c, MAE__REPLY_OK, &r, NULL);
        return;
    }
    if (concede)
        f->concede_seen = true;
    long long applied = 0;
    for (int i = SCRIPT_ARGS; i < argc; i++) {
        if (first + (i - SCRIPT_ARGS) <= last)
            continue;
        if (f->nstream == f->capstream) {
            f->capstream = f->capstream ? 2 * f->capstream : 256;
            f->stream = realloc(f->stream, f->capstream * sizeof *f->stream);
        }
        f->stream[f->nstream++] = event_n(argv[i], lens[i]);
        applied++;
    }
    long long top = first + (argc - SCRIPT_ARGS) - 1;
    if (top > last) {
        f->last = top;
        f->has_key = true;
    }
    r.nints = 2;
    r.ints[0] = applied;
    r.ints[1] = (argc - SCRIPT_ARGS) - applied;
    push(c, MAE__REPLY_OK, &r, NULL);
}

static int f_append(void *cv, int argc, const char **argv, const size_t *lens)
{
    conn *c = cv;
    fake *f = c->f;
    mae__reply r = {0};
    pthread_mutex_lock(&f->mu);
    if (strcmp(argv[0], "SCRIPT") == 0) {
        snprintf(r.str, sizeof r.str, "%040d", 7);
        push(c, MAE__REPLY_OK, &r, NULL);
    } else if (strcmp(argv[0], "EVALSHA") == 0) {
        f->evals++;
        if (f->nerrors > 0) {
            push(c, MAE__REPLY_ERROR, NULL, f->errors[0]);
            memmove(f->errors, f->errors + 1, sizeof f->errors[0] * (size_t)--f->nerrors);
        } else {
            run_script(c, argc, argv, lens);
        }
    } else if (strcmp(argv[0], "WAIT") == 0) {
        f->waits++;
        r.nints = 1;
        r.ints[0] = f->wait_short > 0 ? 0 : atoi(argv[1]);
        if (f->wait_short > 0)
            f->wait_short--;
        push(c, MAE__REPLY_OK, &r, NULL);
    } else if (strcmp(argv[0], "ROLE") == 0) {
        r.nelems = 1;
        snprintf(r.elems[0], sizeof r.elems[0], "%s", f->role_slave > 0 ? "slave" : "master");
        if (f->role_slave > 0)
            f->role_slave--;
        push(c, MAE__REPLY_OK, &r, NULL);
    } else if (strcmp(argv[0], "SENTINEL") == 0) {
        assert_string_equal(argv[1], "get-master-addr-by-name");
        assert_string_equal(argv[2], "mymaster");
        r.nelems = 2;
        snprintf(r.elems[0], sizeof r.elems[0], "m1");
        snprintf(r.elems[1], sizeof r.elems[1], "7000");
        push(c, MAE__REPLY_OK, &r, NULL);
    } else {
        snprintf(r.str, sizeof r.str, "OK");
        push(c, MAE__REPLY_OK, &r, NULL);
    }
    pthread_mutex_unlock(&f->mu);
    return 0;
}

static int f_get_reply(void *cv, mae__reply *out, char *err, size_t errlen)
{
    conn *c = cv;
    if (c->n == 0) {
        snprintf(err, errlen, "no reply");
        return MAE__REPLY_IO;
    }
    int i = c->head;
    c->head = (c->head + 1) % MAXQ;
    c->n--;
    if (out)
        *out = c->q[i].r;
    snprintf(err, errlen, "%s", c->q[i].err);
    return c->q[i].rc;
}

static bool f_peer_closed(void *cv)
{
    (void)cv;
    return false;
}

static int f_fd(void *cv)
{
    (void)cv;
    return -1;
}

static void f_free(void *cv)
{
    free(cv);
}

static mae__transport_ops fake_ops(fake *f)
{
    return (mae__transport_ops){.connect = f_connect,
                                .append = f_append,
                                .get_reply = f_get_reply,
                                .peer_closed = f_peer_closed,
                                .fd = f_fd,
                                .free = f_free,
                                .held = NULL,
                                .user = f,
                                .release = NULL};
}

/* A failover to a replica that holds the events up to `keep` (0: none of
 * this publisher's, and no key). */
static void fake_failover(fake *f, int keep)
{
    pthread_mutex_lock(&f->mu);
    size_t k = 0;
    while (k < f->nstream && f->stream[k] <= keep)
        k++;
    f->nstream = k;
    f->last = keep;
    f->has_key = keep > 0;
    pthread_mutex_unlock(&f->mu);
}

/* ---- helpers ------------------------------------------------------------------ */

static const char *stream_key = "t:events";
static int window_ms = 0;

static mae_publisher *open_with(fake *f, const char *url, size_t window_bytes, int wait)
{
    mae_publisher_config cfg;
    mae_publisher *p = NULL;
    char err[200] = "";
    mae_publisher_config_init(&cfg);
    cfg.redis_url = url;
    cfg.stream_key = stream_key;
    cfg.backoff_min_ms = 1;
    cfg.backoff_max_ms = 5;
    cfg.batch_max_events = 16;
    cfg.resend_window_bytes = window_bytes;
    cfg.resend_window_ms = window_ms;
    cfg.wait_replicas = wait;
    cfg.error_buf = err;
    cfg.error_buf_size = sizeof err;
    mae__transport_ops ops = fake_ops(f);
    int rc = mae__publisher_open_with(&cfg, &ops, &p);
    if (rc != MAE_OK)
        fail_msg("open: %s", err);
    return p;
}

static void publish_range(mae_publisher *p, int from, int to)
{
    char data[32];
    for (int i = from; i <= to; i++) {
        snprintf(data, sizeof data, "{\"n\":%d}", i);
        mae_safe_publish(p, "test.event", i, data, "test");
    }
    assert_int_equal(mae_publisher_flush(p, 10000), MAE_OK);
}

/* The stream holds exactly the numbers listed by the ranges [a,b] given,
 * in order, each once. */
static void expect_stream(fake *f, int nranges, ...)
{
    va_list ap;
    size_t k = 0;
    pthread_mutex_lock(&f->mu);
    va_start(ap, nranges);
    for (int r = 0; r < nranges; r++) {
        int a = va_arg(ap, int), b = va_arg(ap, int);
        for (int n = a; n <= b; n++, k++) {
            if (k >= f->nstream || f->stream[k] != n)
                fail_msg("stream[%zu] is %d, want %d", k, k < f->nstream ? f->stream[k] : -1, n);
        }
    }
    va_end(ap);
    size_t have = f->nstream;
    pthread_mutex_unlock(&f->mu);
    assert_int_equal(have, k);
}

static void expect_counters(mae_publisher *p, uint64_t calls, uint64_t lost)
{
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.calls, calls);
    assert_int_equal(st.enqueued, calls);
    assert_int_equal(st.published, calls);
    assert_int_equal(st.dropped_send_error, 0);
    assert_int_equal(st.queued + st.in_flight, 0);
    assert_int_equal(st.lost_failover, lost);
    assert_true(st.lost_failover <= st.published);
}

/* ---- tests ---------------------------------------------------------------------- */

/* A new master that lacks the last 60 acknowledged events answers the next
 * batch with a gap; the publisher resends them from its window, in order,
 * before that batch: nothing lost, nothing twice. */
static void test_gap_is_filled_from_the_window(void **state)
{
    (void)state;
    fake *f = fake_new();
    mae_publisher *p = open_with(f, "redis://fake", 0, 0);
    publish_range(p, 1, 100);
    fake_failover(f, 40);
    publish_range(p, 101, 110);
    expect_stream(f, 1, 1, 110);
    expect_counters(p, 110, 0);
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_true(st.resent >= 60);
    assert_true(f->gaps >= 1);
    assert_false(f->concede_seen);
    assert_int_equal(mae_publisher_close(p, 5000), MAE_OK);
    fake_free(f);
}

/* The same failover with a window too small to hold anything: the 60
 * events are gone, counted lost_failover, and the stream goes on after a
 * conceded gap (no silent one). */
static void test_gap_beyond_the_window_is_counted_lost(void **state)
{
    (void)state;
    fake *f = fake_new();
    mae_publisher *p = open_with(f, "redis://fake", 1, 0);
    publish_range(p, 1, 100);
    fake_failover(f, 40);
    publish_range(p, 101, 110);
    expect_stream(f, 2, 1, 40, 101, 110);
    expect_counters(p, 110, 60);
    assert_true(f->concede_seen);
    assert_int_equal(mae_publisher_close(p, 5000), MAE_OK);
    fake_free(f);
}

/* The window's time bound: events acknowledged longer ago than
 * resend_window_ms are gone from it, so a gap reply naming them counts
 * them lost; what is still in it is sent again. */
static void test_window_forgets_after_its_time(void **state)
{
    (void)state;
    fake *f = fake_new();
    window_ms = 400;
    mae_publisher *p = open_with(f, "redis://fake", 0, 0);
    window_ms = 0;
    publish_range(p, 1, 100);
    nanosleep(&(struct timespec){0, 800000000L}, NULL); /* twice the window */
    publish_range(p, 101, 105); /* trims 1..100 out */
    fake_failover(f, 40);
    publish_range(p, 106, 110);
    expect_stream(f, 2, 1, 40, 101, 110);
    expect_counters(p, 110, 60);
    assert_int_equal(mae_publisher_close(p, 5000), MAE_OK);
    fake_free(f);
}

/* A new master that never saw this publisher (its key is missing): the
 * window still holds everything, so all of it is sent again from 1. */
static void test_missing_key_resends_the_whole_window(void **state)
{
    (void)state;
    fake *f = fake_new();
    mae_publisher *p = open_with(f, "redis://fake", 0, 0);
    publish_range(p, 1, 50);
    fake_failover(f, 0);
    publish_range(p, 51, 60);
    expect_stream(f, 1, 1, 60);
    expect_counters(p, 60, 0);
    assert_int_equal(mae_publisher_close(p, 5000), MAE_OK);
    fake_free(f);
}

/* NOREPLICAS, READONLY and LOADING, bare or inside a script's error, are
 * not refusals: the batch is kept, the master looked up again (a new
 * connection) and the batch delivered once. Another error refuses it. */
static void test_failover_errors_are_retried_not_refused(void **state)
{
    (void)state;
    fake *f = fake_new();
    mae_publisher *p = open_with(f, "redis://fake", 0, 0);
    publish_range(p, 1, 5);
    f->errors[0] = "READONLY You can't write against a read only replica.";
    f->errors[1] = "ERR Error running script (call to f_0123): @user_script:12: "
                   "@user_script: 12: -NOREPLICAS Not enough good replicas to write.";
    f->errors[2] = "LOADING Redis is loading the dataset in memory";
    f->nerrors = 3;
    publish_range(p, 6, 10);
    expect_stream(f, 1, 1, 10);
    expect_counters(p, 10, 0);
    assert_true(f->ntargets >= 4); /* a new connection after each */

    f->errors[0] = "WRONGTYPE Operation against a key holding the wrong kind of value";
    f->nerrors = 1;
    publish_range(p, 11, 11);
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.dropped_send_error, 1);
    assert_int_equal(st.published, 10);
    assert_int_equal(mae_publisher_close(p, 5000), MAE_OK);
    fake_free(f);
}

static void test_failover_error_classification(void **state)
{
    (void)state;
    static const char *const yes[] = {
        "NOREPLICAS Not enough good replicas to write.",
        "READONLY You can't write against a read only replica.",
        "LOADING Redis is loading the dataset in memory",
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
        ("ERR Error running script (call to f_x): @user_script:5: @user_script: 5: -READONLY "
         "You can't write against a read only replica."),
        "NOREPLICAS",
    };
    static const char *const no[] = {
        "ERR unknown command",
        "WRONGTYPE Operation against a key holding the wrong kind of value",
        "NOSCRIPT No matching script.",
        "ERR my READONLYNESS",
        "ERR xNOREPLICAS y",
        "",
    };
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        if (!mae__failover_error(yes[i]))
            fail_msg("not seen as a failover error: %s", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        if (mae__failover_error(no[i]))
            fail_msg("seen as a failover error: %s", no[i]);
}

/* wait_replicas from the URL's query: a batch WAIT confirms on too few
 * replicas stays in flight and is sent again (the script skips what it
 * applied) until WAIT confirms it; only then is it published. */
static void test_wait_keeps_a_batch_until_confirmed(void **state)
{
    (void)state;
    fake *f = fake_new();
    f->wait_short = 3;
    mae_publisher *p = open_with(f, "redis://fake?wait_replicas=1&wait_timeout_ms=50", 0, 0);
    publish_range(p, 1, 8);
    expect_stream(f, 1, 1, 8);
    expect_counters(p, 8, 0);
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_true(f->waits >= 4);
    assert_true(st.skipped >= 3); /* the resends applied nothing twice */
    assert_int_equal(st.resent, st.skipped);
    assert_int_equal(mae_publisher_close(p, 5000), MAE_OK);
    fake_free(f);

    /* WAIT must answer before the I/O timeout. */
    mae_publisher_config cfg;
    mae_publisher *q = NULL;
    char err[200] = "";
    mae_publisher_config_init(&cfg);
    cfg.redis_url = "redis://h";
    cfg.stream_key = "k";
    cfg.wait_replicas = 1;
    cfg.wait_timeout_ms = 1000;
    cfg.error_buf = err;
    cfg.error_buf_size = sizeof err;
    assert_int_equal(mae_publisher_open(&cfg, &q), MAE_EINVAL);
    assert_non_null(strstr(err, "below io_timeout_ms"));
    cfg.wait_timeout_ms = 0;
    cfg.resend_window_ms = -1;
    assert_int_equal(mae_publisher_open(&cfg, &q), MAE_EINVAL);
    assert_non_null(strstr(err, "must not be negative"));
}

/* redis-sentinel://: the Sentinels are asked in turn (a dead one passed
 * over, the one that answered asked first next time), the address they
 * give is connected to and confirmed with ROLE; a "slave" answer means
 * looking up again. */
static void test_sentinel_lookup_and_role(void **state)
{
    (void)state;
    fake *f = fake_new();
    f->sentinel_down[0] = true;
    f->role_slave = 1;
    mae_publisher *p = open_with(f, "redis-sentinel://s0:1,s1:2#mymaster", 0, 0);
    publish_range(p, 1, 3);
    expect_stream(f, 1, 1, 3);
    expect_counters(p, 3, 0);
    pthread_mutex_lock(&f->mu);
    assert_true(f->ntargets >= 5);
    assert_string_equal(f->targets[0], "s0:1");
    assert_string_equal(f->targets[1], "s1:2");
    assert_string_equal(f->targets[2], "m1:7000"); /* ROLE: slave */
    assert_string_equal(f->targets[3], "s1:2");    /* the one that answered, first */
    assert_string_equal(f->targets[4], "m1:7000");
    pthread_mutex_unlock(&f->mu);
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.connects, 1);
    assert_int_equal(st.connect_failures, 1);
    assert_int_equal(mae_publisher_close(p, 5000), MAE_OK);
    fake_free(f);
}

/* The per-publisher key shares the stream's Redis Cluster slot: the stream
 * key becomes its hash tag, unless it has a tag of its own (then the key
 * starts with it) or a '}' that makes tagging impossible. */
static void test_publisher_key_is_hash_tagged(void **state)
{
    (void)state;
    static const struct {
        const char *stream, *prefix;
    } cases[] = {
        {"t:events", "{t:events}:publisher:"},
        {"{app}:events", "{app}:events:publisher:"},
        {"a{b}c", "a{b}c:publisher:"},
        {"a{}b", "a{}b:publisher:"}, /* empty tag and a '}': cannot be tagged */
        {"x}y", "x}y:publisher:"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fake *f = fake_new();
        stream_key = cases[i].stream;
        mae_publisher *p = open_with(f, "redis://fake", 0, 0);
        publish_range(p, 1, 1);
        size_t n = strlen(cases[i].prefix);
        if (strncmp(f->key, cases[i].prefix, n) != 0 || strlen(f->key) != n + 32)
            fail_msg("stream %s: key %s, want %s<32 hex>", cases[i].stream, f->key,
                     cases[i].prefix);
        assert_int_equal(mae_publisher_close(p, 5000), MAE_OK);
        fake_free(f);
    }
    stream_key = "t:events";
}

/* The reply parsing both Redis transports share (mae__reply_fill: hiredis
 * and TLS): an integer reply (WAIT's count), and an array's first strings
 * (SENTINEL get-master-addr-by-name, ROLE) next to its integers. */
static void test_reply_fill_integers_and_strings(void **state)
{
    (void)state;
    mae__reply r;
    redisReply integer = {.type = REDIS_REPLY_INTEGER, .integer = 2};
    mae__reply_fill(&integer, &r);
    assert_int_equal(r.nints, 1);
    assert_int_equal(r.ints[0], 2);
    assert_int_equal(r.nelems, 0);

    redisReply host = {.type = REDIS_REPLY_STRING, .str = "10.0.0.2", .len = 8};
    redisReply port = {.type = REDIS_REPLY_STRING, .str = "6380", .len = 4};
    redisReply third = {.type = REDIS_REPLY_STRING, .str = "x", .len = 1};
    redisReply offset = {.type = REDIS_REPLY_INTEGER, .integer = 77};
    redisReply *elems[4] = {&host, &offset, &port, &third};
    redisReply array = {.type = REDIS_REPLY_ARRAY, .elements = 4, .element = elems};
    mae__reply_fill(&array, &r);
    assert_int_equal(r.nelems, 2);
    assert_string_equal(r.elems[0], "10.0.0.2");
    assert_string_equal(r.elems[1], "6380");
    assert_int_equal(r.nints, 1);
    assert_int_equal(r.ints[0], 77);

    /* A string longer than an element holds is cut, still terminated. */
    char big[600];
    memset(big, 'h', sizeof big);
    redisReply longstr = {.type = REDIS_REPLY_STATUS, .str = big, .len = sizeof big};
    redisReply *one[1] = {&longstr};
    redisReply array1 = {.type = REDIS_REPLY_ARRAY, .elements = 1, .element = one};
    mae__reply_fill(&array1, &r);
    assert_int_equal(r.nelems, 1);
    assert_int_equal(strlen(r.elems[0]), sizeof r.elems[0] - 1);
}

/* Hub mode has no WAIT and no resend window: setting any of their fields
 * with relay_url is refused at open, naming them, never ignored. */
static void test_hub_mode_refuses_failover_fields(void **state)
{
    (void)state;
    for (int k = 0; k < 4; k++) {
        mae_publisher_config cfg;
        mae_publisher_config_init(&cfg);
        char why[256] = "";
        cfg.relay_url = "http://127.0.0.1:9";
        cfg.error_buf = why;
        cfg.error_buf_size = sizeof why;
        if (k == 0)
            cfg.wait_replicas = 1;
        else if (k == 1)
            cfg.wait_timeout_ms = 50;
        else if (k == 2)
            cfg.resend_window_ms = 1000;
        else
            cfg.resend_window_bytes = 1024;
        mae_publisher *p = NULL;
        assert_int_equal(mae_publisher_open(&cfg, &p), MAE_EINVAL);
        assert_null(p);
        assert_non_null(strstr(why, "hub mode (relay_url) has no WAIT"));
    }
    /* Without them, hub mode opens (it never connects at open). */
    mae_publisher_config cfg;
    mae_publisher_config_init(&cfg);
    cfg.relay_url = "http://127.0.0.1:9";
    mae_publisher *p = NULL;
    assert_int_equal(mae_publisher_open(&cfg, &p), MAE_OK);
    mae_publisher_close(p, 0);
}

/* Sentinel over TLS is refused at open with the reason. */
static void test_sentinel_over_tls_is_refused(void **state)
{
    (void)state;
    static const char *const urls[] = {
        "rediss-sentinel://127.0.0.1:26379#m",
        "redis-sentinel://127.0.0.1:26379?ssl_cert_reqs=none#m",
    };
    for (size_t i = 0; i < 2; i++) {
        mae_publisher_config cfg;
        mae_publisher_config_init(&cfg);
        char why[256] = "";
        cfg.redis_url = urls[i];
        cfg.error_buf = why;
        cfg.error_buf_size = sizeof why;
        mae_publisher *p = NULL;
        assert_int_equal(mae_publisher_open(&cfg, &p), MAE_EINVAL);
        assert_null(p);
        assert_non_null(strstr(why, "TLS"));
        assert_non_null(strstr(why, "sentinel"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gap_is_filled_from_the_window),
        cmocka_unit_test(test_gap_beyond_the_window_is_counted_lost),
        cmocka_unit_test(test_missing_key_resends_the_whole_window),
        cmocka_unit_test(test_window_forgets_after_its_time),
        cmocka_unit_test(test_failover_errors_are_retried_not_refused),
        cmocka_unit_test(test_failover_error_classification),
        cmocka_unit_test(test_wait_keeps_a_batch_until_confirmed),
        cmocka_unit_test(test_sentinel_lookup_and_role),
        cmocka_unit_test(test_publisher_key_is_hash_tagged),
        cmocka_unit_test(test_reply_fill_integers_and_strings),
        cmocka_unit_test(test_hub_mode_refuses_failover_fields),
        cmocka_unit_test(test_sentinel_over_tls_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
