/* Integration tests of the relay's stream reader and resume
 * (relay/stream_source.h, relay/resume.h) against a real redis-server, on a
 * libevent loop and without HTTP: a small fan-out in the test plays the
 * relay. Entries are written with XADD ... * event <line>, as the
 * publisher's stream mode does. Checked: live delivery in order; a client
 * resuming with its last id gets exactly the missed entries, then the live
 * ones, with no gap and no duplicate, also while entries are added during
 * its replay; trimmed history, unknown and malformed ids give their reset;
 * a killed connection, a hung server and a restarted one lose and double
 * nothing. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "redis_harness.h"
#include "testutil.h"

#include "relay/resume.h"
#include "stream/reply.h"
#include "relay/stream_source.h"

#define KEY "mailagent:test-stream"
#define MAX_CLIENTS 16

/* ---- a client of the test's fan-out -------------------------------------- */

typedef struct client {
    struct harness *h;
    mae__resume *resume;
    bool used;
    bool live;
    bool free_after_entries;      /* frees its resume inside entry() at n */
    size_t free_at;
    bool park;                    /* want_more answers false until woken */
    int parked;
    char reset[MAE__RESUME_RESET_MAX];
    int resets;
    bool entry_after_live;        /* a replayed entry came after live(): a bug */
    size_t n, cap;
    mae__stream_id *ids;
    long *nums;                   /* the "n" of each line */
    bool bad_order;
} client;

typedef struct harness {
    mtr_redis redis;
    struct event_base *base;
    struct event *ticker;
    mae__stream_source *src;
    client clients[MAX_CLIENTS];
    int ups, downs, rewinds;
    char last_down[200];
    redisContext *sync;           /* the test's own link, for XADD/XRANGE */
} harness;

static void record(client *c, const mae__stream_id *id, const char *line, size_t len)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 256;
        c->ids = realloc(c->ids, c->cap * sizeof *c->ids);
        c->nums = realloc(c->nums, c->cap * sizeof *c->nums);
        assert_non_null(c->ids);
        assert_non_null(c->nums);
    }
    if (c->n > 0 && mae__stream_id_cmp(&c->ids[c->n - 1], id) >= 0)
        c->bad_order = true;
    char buf[64];
    snprintf(buf, sizeof buf, "%.*s", (int)(len < 63 ? len : 63), line);
    long num = -1;
    if (sscanf(buf, "{\"n\":%ld}", &num) != 1)
        num = -1;
    c->ids[c->n] = *id;
    c->nums[c->n] = num;
    c->n++;
}

static void ev_reset(void *user, const char *json, size_t len)
{
    client *c = user;
    assert_int_equal(strlen(json), len);
    snprintf(c->reset, sizeof c->reset, "%s", json);
    c->resets++;
}

static void ev_entry(void *user, const mae__stream_id *id, const char *line, size_t len)
{
    client *c = user;
    if (c->live)
        c->entry_after_live = true;
    record(c, id, line, len);
}

static void ev_live(void *user)
{
    client *c = user;
    c->live = true;
}

static bool ev_want_more(void *user)
{
    client *c = user;
    /* A client to be freed stops at free_at: the test frees it from
     * outside the resume's callbacks, as the relay's reaper does. */
    if (c->free_after_entries && c->n >= c->free_at)
        return false;
    if (!c->park || c->n < 10)
        return true;
    c->parked++;
    return false;
}

static const mae__resume_events events = {ev_reset, ev_entry, ev_live, ev_want_more};

/* ---- the source's callbacks: the fan-out ---------------------------------- */

static void on_entry(void *user, const mae__stream_entry *e)
{
    harness *h = user;
    for (int i = 0; i < MAX_CLIENTS; i++) {
        client *c = &h->clients[i];
        if (c->used && c->resume && mae__resume_admit(c->resume, &e->id))
            record(c, &e->id, e->line, e->len);
    }
}

static void on_state(void *user, bool connected, const char *why)
{
    harness *h = user;
    if (connected) {
        h->ups++;
    } else {
        h->downs++;
        snprintf(h->last_down, sizeof h->last_down, "%s", why ? why : "?");
    }
}

static void on_rewound(void *user, const mae__stream_id *last)
{
    harness *h = user;
    (void)last;
    h->rewinds++;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

static harness *harness_new(int block_ms, int margin_ms)
{
    harness *h = calloc(1, sizeof *h);
    assert_non_null(h);
    assert_int_equal(mtr_start(&h->redis, NULL), 0);
    h->base = event_base_new();
    assert_non_null(h->base);
    /* Wakes the loop now and then so run_until sees time pass. */
    h->ticker = event_new(h->base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tick = {0, 5000};
    event_add(h->ticker, &tick);
    struct timeval tv = {2, 0};
    h->sync = redisConnectWithTimeout("127.0.0.1", h->redis.port, tv);
    assert_true(h->sync && !h->sync->err);

    mae__stream_source_config cfg;
    mae__stream_source_config_init(&cfg);
    cfg.base = h->base;
    cfg.redis_url = h->redis.url;
    cfg.key = KEY;
    cfg.block_ms = block_ms;
    cfg.reply_margin_ms = margin_ms;
    cfg.backoff_min_ms = 20;
    cfg.backoff_max_ms = 200;
    cfg.read_count = 50;
    cfg.on_entry = on_entry;
    cfg.on_state = on_state;
    cfg.on_rewound = on_rewound;
    cfg.user = h;
    char err[200];
    assert_int_equal(mae__stream_source_new(&cfg, &h->src, err, sizeof err), 0);
    return h;
}

static void harness_free(harness *h)
{
    for (int i = 0; i < MAX_CLIENTS; i++) {
        mae__resume_free(h->clients[i].resume);
        free(h->clients[i].ids);
        free(h->clients[i].nums);
    }
    mae__stream_source_free(h->src);
    event_free(h->ticker);
    event_base_free(h->base);
    if (h->sync)
        redisFree(h->sync);
    mtr_cleanup(&h->redis);
    free(h);
}

/* Runs the loop until cond(h) or timeout_ms; returns cond's last value. */
static bool run_until(harness *h, bool (*cond)(harness *), int timeout_ms)
{
    double end = tu_now_s() + timeout_ms / 1000.0;
    while (!cond(h) && tu_now_s() < end)
        event_base_loop(h->base, EVLOOP_ONCE);
    return cond(h);
}

static void run_for(harness *h, int ms)
{
    double end = tu_now_s() + ms / 1000.0;
    while (tu_now_s() < end)
        event_base_loop(h->base, EVLOOP_ONCE);
}

static bool is_up(harness *h)
{
    return mae__stream_source_connected(h->src);
}

static client *add_client(harness *h, const char *last_id, unsigned page)
{
    for (int i = 0; i < MAX_CLIENTS; i++) {
        client *c = &h->clients[i];
        if (!c->used) {
            c->used = true;
            c->h = h;
            c->resume = mae__resume_start(mae__stream_source_history(h->src), last_id, last_id ? strlen(last_id) : 0, page,
                                          &events, c);
            assert_non_null(c->resume);
            c->live = mae__resume_is_live(c->resume);
            return c;
        }
    }
    fail_msg("too many clients");
    return NULL;
}

/* A fresh link for the test's own commands (after CLIENT KILL or a
 * restart). */
static void resync(harness *h)
{
    struct timeval tv = {2, 0};
    if (h->sync)
        redisFree(h->sync);
    h->sync = redisConnectWithTimeout("127.0.0.1", h->redis.port, tv);
    assert_true(h->sync && !h->sync->err);
}

/* XADD of {"n":num} on the test's own link; returns the id's text. */
static void xadd(harness *h, long num, char id[MAE__STREAM_ID_BUFSIZE])
{
    char line[64];
    snprintf(line, sizeof line, "{\"n\":%ld}", num);
    redisReply *r = redisCommand(h->sync, "XADD %s * event %s", KEY, line);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    if (id)
        snprintf(id, MAE__STREAM_ID_BUFSIZE, "%s", r->str);
    freeReplyObject(r);
}

/* Every id of the stream, in order, with the n of each line. */
static size_t read_all(harness *h, mae__stream_id **ids, long **nums)
{
    redisReply *r = redisCommand(h->sync, "XRANGE %s - +", KEY);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    *ids = calloc(r->elements + 1, sizeof **ids);
    *nums = calloc(r->elements + 1, sizeof **nums);
    for (size_t i = 0; i < r->elements; i++) {
        redisReply *e = r->element[i];
        assert_int_equal(mae__stream_id_parse(e->element[0]->str, e->element[0]->len, &(*ids)[i]),
                         0);
        assert_int_equal(sscanf(e->element[1]->element[1]->str, "{\"n\":%ld}", &(*nums)[i]), 1);
    }
    size_t n = r->elements;
    freeReplyObject(r);
    return n;
}

/* The client got exactly the stream's entries after `after`, in order. */
static void expect_exactly_after(client *c, harness *h, const mae__stream_id *after)
{
    mae__stream_id *ids;
    long *nums;
    size_t n = read_all(h, &ids, &nums);
    size_t k = 0;
    while (k < n && mae__stream_id_cmp(&ids[k], after) <= 0)
        k++;
    assert_false(c->bad_order);
    assert_false(c->entry_after_live);
    if (c->n != n - k)
        fail_msg("client got %zu entries, the stream has %zu after its id", c->n, n - k);
    for (size_t i = 0; i < c->n; i++) {
        if (mae__stream_id_cmp(&c->ids[i], &ids[k + i]) != 0 || c->nums[i] != nums[k + i])
            fail_msg("entry %zu: got n=%ld, want n=%ld", i, c->nums[i], nums[k + i]);
    }
    free(ids);
    free(nums);
}

static mae__stream_id parse_id(const char *s)
{
    mae__stream_id id;
    assert_int_equal(mae__stream_id_parse(s, strlen(s), &id), 0);
    return id;
}

/* ---- conditions ------------------------------------------------------------ */

static size_t want_n;
static client *watch;

static bool watch_has_n(harness *h)
{
    (void)h;
    return watch->n >= want_n;
}

static bool watch_live(harness *h)
{
    (void)h;
    return watch->live;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_live_in_order(void **state)
{
    (void)state;
    if (!mtr_available())
        tu_missing_prerequisite("redis-server not found");
    harness *h = harness_new(500, 1000);
    /* Entries already there are history: a client without an id gets
     * only what comes after it connected. */
    xadd(h, -1, NULL);
    assert_true(run_until(h, is_up, 5000));
    assert_int_equal(h->ups, 1);
    client *c = add_client(h, NULL, 0);
    assert_true(c->live);
    for (long i = 0; i < 300; i++)
        xadd(h, i, NULL);
    watch = c;
    want_n = 300;
    assert_true(run_until(h, watch_has_n, 10000));
    run_for(h, 100);
    mae__stream_id first_id;
    mae__stream_id *ids;
    long *nums;
    read_all(h, &ids, &nums);
    first_id = ids[0];
    free(ids);
    free(nums);
    expect_exactly_after(c, h, &first_id);
    assert_int_equal(c->resets, 0);
    mae__stream_source_stats st;
    mae__stream_source_get_stats(h->src, &st);
    assert_int_equal(st.entries, 300);
    harness_free(h);
}

static void test_resume_after_missed(void **state)
{
    (void)state;
    if (!mtr_available())
        tu_missing_prerequisite("redis-server not found");
    harness *h = harness_new(500, 1000);
    char ids[60][MAE__STREAM_ID_BUFSIZE];
    for (long i = 0; i < 60; i++)
        xadd(h, i, ids[i]);
    assert_true(run_until(h, is_up, 5000));
    /* Resumes after entry 19 with pages of 7: 40 missed entries, then 25
     * added once it is live. */
    client *c = add_client(h, ids[19], 7);
    assert_false(c->live);
    watch = c;
    assert_true(run_until(h, watch_live, 5000));
    assert_int_equal(c->n, 40);
    assert_int_equal(c->nums[0], 20);
    assert_int_equal(c->nums[39], 59);
    for (long i = 60; i < 85; i++)
        xadd(h, i, NULL);
    want_n = 65;
    assert_true(run_until(h, watch_has_n, 5000));
    run_for(h, 100);
    mae__stream_id after = parse_id(ids[19]);
    expect_exactly_after(c, h, &after);
    assert_int_equal(c->resets, 0);
    assert_int_equal(mae__resume_get_plan(c->resume).kind, MAE__RESUME_REPLAY);

    /* 0-0 on a stream never trimmed: everything, no reset. */
    client *all = add_client(h, "0-0", 0);
    watch = all;
    assert_true(run_until(h, watch_live, 5000));
    assert_int_equal(all->n, 85);
    assert_int_equal(all->resets, 0);
    /* The newest id: nothing to replay, live at once. */
    char newest[MAE__STREAM_ID_BUFSIZE];
    xadd(h, 85, newest);
    client *tip = add_client(h, newest, 0);
    watch = tip;
    assert_true(run_until(h, watch_live, 5000));
    assert_int_equal(tip->n, 0);
    xadd(h, 86, NULL);
    want_n = 1;
    assert_true(run_until(h, watch_has_n, 5000));
    assert_int_equal(tip->nums[0], 86);
    harness_free(h);
}

/* ---- resume while a writer adds entries --------------------------------------- */

typedef struct writer {
    int port;
    long count;
    atomic_long written;
    pthread_t thread;
} writer;

static void *writer_main(void *arg)
{
    writer *w = arg;
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", w->port, tv);
    if (!c || c->err)
        abort();
    for (long i = 0; i < w->count; i++) {
        char line[64];
        snprintf(line, sizeof line, "{\"n\":%ld}", i);
        redisReply *r = redisCommand(c, "XADD %s * event %s", KEY, line);
        /* Killed too by CLIENT KILL: reconnect. Whether that XADD landed
         * does not matter, the checks compare with the stream itself. */
        while (!r) {
            redisFree(c);
            c = redisConnectWithTimeout("127.0.0.1", w->port, tv);
            if (!c || c->err)
                abort();
            r = redisCommand(c, "PING");
        }
        if (r->type == REDIS_REPLY_ERROR)
            abort();
        freeReplyObject(r);
        atomic_store(&w->written, i + 1);
    }
    redisFree(c);
    return NULL;
}

static mae__stream_id all_done_last;

static bool all_caught_up(harness *h)
{
    for (int i = 0; i < MAX_CLIENTS; i++) {
        client *c = &h->clients[i];
        if (c->used && (!c->live || c->n == 0 ||
                        mae__stream_id_cmp(&c->ids[c->n - 1], &all_done_last) < 0))
            return false;
    }
    return true;
}

static void test_resume_during_writes(void **state)
{
    (void)state;
    if (!mtr_available())
        tu_missing_prerequisite("redis-server not found");
    harness *h = harness_new(500, 1000);
    for (long i = 0; i < 200; i++)
        xadd(h, -1000 + i, NULL);
    assert_true(run_until(h, is_up, 5000));
    writer w = {.port = h->redis.port, .count = 4000};
    assert_int_equal(pthread_create(&w.thread, NULL, writer_main, &w), 0);

    /* While the writer runs, clients come back with ids from the
     * history, each replaying in pages of 50 into a moving stream. */
    mae__stream_id afters[8];
    for (int k = 0; k < 8; k++) {
        run_for(h, 15);
        long written = atomic_load(&w.written);
        redisReply *r = redisCommand(h->sync, "XRANGE %s - + COUNT %ld", KEY,
                                     (long)(100 + written / 2 + 1));
        assert_non_null(r);
        redisReply *e = r->element[r->elements - 1];
        afters[k] = parse_id(e->element[0]->str);
        add_client(h, e->element[0]->str, 50);
        freeReplyObject(r);
    }
    pthread_join(w.thread, NULL);
    char last[MAE__STREAM_ID_BUFSIZE];
    xadd(h, 99999, last);
    all_done_last = parse_id(last);
    assert_true(run_until(h, all_caught_up, 20000));
    run_for(h, 100);
    for (int k = 0; k < 8; k++) {
        client *c = &h->clients[k];
        assert_int_equal(c->resets, 0);
        expect_exactly_after(c, h, &afters[k]);
    }
    harness_free(h);
}

static void test_trimmed_history(void **state)
{
    (void)state;
    if (!mtr_available())
        tu_missing_prerequisite("redis-server not found");
    harness *h = harness_new(500, 1000);
    char ids[50][MAE__STREAM_ID_BUFSIZE];
    for (long i = 0; i < 50; i++)
        xadd(h, i, ids[i]);
    redisReply *r = redisCommand(h->sync, "XTRIM %s MAXLEN 10", KEY);
    assert_non_null(r);
    assert_int_equal(r->integer, 40);
    freeReplyObject(r);
    assert_true(run_until(h, is_up, 5000));

    client *c = add_client(h, ids[5], 4);
    watch = c;
    assert_true(run_until(h, watch_live, 5000));
    char want[MAE__RESUME_RESET_MAX];
    snprintf(want, sizeof want, "{\"reason\":\"history_trimmed\",\"oldest_id\":\"%s\"}", ids[40]);
    assert_string_equal(c->reset, want);
    assert_int_equal(c->resets, 1);
    /* Then everything kept, then live. */
    assert_int_equal(c->n, 10);
    assert_int_equal(c->nums[0], 40);
    assert_int_equal(c->nums[9], 49);
    xadd(h, 50, NULL);
    want_n = 11;
    assert_true(run_until(h, watch_has_n, 5000));
    assert_int_equal(c->nums[10], 50);

    /* A client at the oldest kept entry missed nothing. */
    client *ok = add_client(h, ids[40], 0);
    watch = ok;
    assert_true(run_until(h, watch_live, 5000));
    assert_int_equal(ok->resets, 0);
    assert_int_equal(ok->n, 10);
    assert_int_equal(ok->nums[0], 41);
    harness_free(h);
}

static void test_unknown_and_bad_ids(void **state)
{
    (void)state;
    if (!mtr_available())
        tu_missing_prerequisite("redis-server not found");
    harness *h = harness_new(500, 1000);
    for (long i = 0; i < 5; i++)
        xadd(h, i, NULL);
    assert_true(run_until(h, is_up, 5000));
    client *future = add_client(h, "18446744073709551615-18446744073709551615", 0);
    client *ahead = add_client(h, "9999999999999-0", 0);
    client *bad[5];
    bad[0] = add_client(h, "", 0);
    bad[1] = add_client(h, "1-0\r\nevent: x", 0);
    bad[2] = add_client(h, "99999999999999999999-0", 0);
    /* An id with a NUL inside: strlen would stop at it, the header's
     * length does not. */
    bad[3] = &h->clients[5];
    bad[3]->used = true;
    bad[3]->resume = mae__resume_start(mae__stream_source_history(h->src), "1-\0" "0", 4, 0, &events, bad[3]);
    char longid[80];
    memset(longid, '1', sizeof longid - 1);
    longid[sizeof longid - 1] = 0;
    longid[10] = '-';
    bad[4] = add_client(h, longid, 0);
    /* Nothing comes before the loop runs: every callback is from it. */
    assert_int_equal(bad[0]->resets, 0);
    watch = future;
    assert_true(run_until(h, watch_live, 5000));
    watch = ahead;
    assert_true(run_until(h, watch_live, 5000));
    run_for(h, 50);
    assert_string_equal(future->reset, "{\"reason\":\"unknown_id\"}");
    assert_string_equal(ahead->reset, "{\"reason\":\"unknown_id\"}");
    assert_int_equal(future->n, 0);
    for (int i = 0; i < 5; i++) {
        assert_true(bad[i]->live);
        assert_int_equal(bad[i]->resets, 1);
        assert_string_equal(bad[i]->reset, "{\"reason\":\"bad_last_event_id\"}");
        assert_int_equal(bad[i]->n, 0);
    }
    /* Then live: the next entry reaches all of them, whatever their id. */
    xadd(h, 5, NULL);
    watch = future;
    want_n = 1;
    assert_true(run_until(h, watch_has_n, 5000));
    run_for(h, 50);
    assert_int_equal(ahead->n, 1);
    for (int i = 0; i < 5; i++)
        assert_int_equal(bad[i]->n, 1);
    harness_free(h);
}

/* A client cut during its replay (its resume freed inside entry()) and one
 * whose replay is parked by flow control and woken. */
static void test_free_and_park_during_replay(void **state)
{
    (void)state;
    if (!mtr_available())
        tu_missing_prerequisite("redis-server not found");
    harness *h = harness_new(500, 1000);
    for (long i = 0; i < 100; i++)
        xadd(h, i, NULL);
    assert_true(run_until(h, is_up, 5000));
    client *cut = add_client(h, "0-0", 10);
    cut->free_after_entries = true;
    cut->free_at = 15;
    client *slow = add_client(h, "0-0", 10);
    slow->park = true;
    run_for(h, 300);
    assert_int_equal(cut->n, 15);
    /* Freed parked, with the rest of its page held: nothing leaks. */
    mae__resume_free(cut->resume);
    cut->resume = NULL;
    /* Parked after its tenth entry (paced per entry), until woken. */
    assert_int_equal(slow->n, 10);
    assert_int_equal(slow->parked, 1);
    assert_false(slow->live);
    slow->park = false;
    mae__resume_wake(slow->resume);
    watch = slow;
    assert_true(run_until(h, watch_live, 5000));
    assert_int_equal(slow->n, 100);
    mae__stream_id zero = {0, 0};
    expect_exactly_after(slow, h, &zero);
    harness_free(h);
}

/* ---- faults ------------------------------------------------------------------- */

static void test_killed_connections_lose_nothing(void **state)
{
    (void)state;
    if (!mtr_available())
        tu_missing_prerequisite("redis-server not found");
    harness *h = harness_new(500, 1000);
    assert_true(run_until(h, is_up, 5000));
    client *c = add_client(h, NULL, 0);
    client *r = add_client(h, "0-0", 25);
    writer w = {.port = h->redis.port, .count = 3000};
    assert_int_equal(pthread_create(&w.thread, NULL, writer_main, &w), 0);
    /* Both links are killed again and again while entries arrive, and a
     * few times more if the writer was quick: the kills, not the writer's
     * speed, are what this test is about. */
    int kills = 0;
    for (int round = 0; (atomic_load(&w.written) < w.count || kills < 8) && round < 2000; round++) {
        run_for(h, 20);
        if (mtr_command(&h->redis, "CLIENT KILL TYPE normal") == 0)
            kills++;
    }
    pthread_join(w.thread, NULL);
    resync(h);
    char last[MAE__STREAM_ID_BUFSIZE];
    xadd(h, 99999, last);
    all_done_last = parse_id(last);
    assert_true(run_until(h, all_caught_up, 20000));
    run_for(h, 100);
    mae__stream_id zero = {0, 0};
    expect_exactly_after(c, h, &zero);
    expect_exactly_after(r, h, &zero);
    assert_true(kills > 5);
    assert_true(h->downs > 0);
    assert_true(h->ups > 1);
    assert_int_equal(h->rewinds, 0);
    mae__stream_source_stats st;
    mae__stream_source_get_stats(h->src, &st);
    assert_true(st.reconnects > 0);
    harness_free(h);
}

static bool is_down(harness *h)
{
    return h->downs > 0;
}

static void test_hung_redis(void **state)
{
    (void)state;
    if (!mtr_available())
        tu_missing_prerequisite("redis-server not found");
    harness *h = harness_new(200, 300);
    assert_true(run_until(h, is_up, 5000));
    client *c = add_client(h, NULL, 0);
    for (long i = 0; i < 10; i++)
        xadd(h, i, NULL);
    watch = c;
    want_n = 10;
    assert_true(run_until(h, watch_has_n, 5000));
    /* SIGSTOP: the server keeps its sockets but answers nothing. The loop
     * keeps running (this loop iterates) and the watchdog gives up. */
    mtr_pause(&h->redis);
    assert_true(run_until(h, is_down, 5000));
    assert_non_null(strstr(h->last_down, "no reply within 500 ms"));
    assert_false(mae__stream_source_connected(h->src));
    mtr_resume(&h->redis);
    int ups = h->ups;
    for (long i = 10; i < 20; i++)
        xadd(h, i, NULL);
    want_n = 20;
    assert_true(run_until(h, watch_has_n, 10000));
    run_for(h, 100);
    assert_true(h->ups > ups);
    mae__stream_id zero = {0, 0};
    expect_exactly_after(c, h, &zero);
    assert_int_equal(h->rewinds, 0);
    harness_free(h);
}

static bool is_rewound(harness *h)
{
    return h->rewinds > 0;
}

/* A restart without persistence loses the stream: the reader reports the
 * rewind and follows the new stream from its start. */
static void test_restart_without_persistence_rewinds(void **state)
{
    (void)state;
    if (!mtr_available())
        tu_missing_prerequisite("redis-server not found");
    harness *h = harness_new(300, 500);
    assert_true(run_until(h, is_up, 5000));
    client *c = add_client(h, NULL, 0);
    for (long i = 0; i < 10; i++)
        xadd(h, i, NULL);
    watch = c;
    want_n = 10;
    assert_true(run_until(h, watch_has_n, 5000));
    mtr_kill(&h->redis);
    assert_true(run_until(h, is_down, 5000));
    assert_int_equal(mtr_restart(&h->redis), 0);
    resync(h);
    assert_true(run_until(h, is_rewound, 10000));
    /* Entries of the new stream reach the live client even if their ids
     * were below its old position. */
    redisReply *r = redisCommand(h->sync, "XADD %s 1-1 event {\"n\":100}", KEY);
    assert_non_null(r);
    freeReplyObject(r);
    want_n = 11;
    assert_true(run_until(h, watch_has_n, 5000));
    assert_int_equal(c->nums[10], 100);
    assert_int_equal(mae__stream_source_epoch(h->src), 1);
    harness_free(h);
}

/* A URL with a password and a database: AUTH and SELECT on both links. A
 * key of another type: the reader says why it is down, and retries. */
static void test_auth_select_and_wrong_type(void **state)
{
    (void)state;
    if (!mtr_available())
        tu_missing_prerequisite("redis-server not found");
    harness *h = calloc(1, sizeof *h);
    assert_non_null(h);
    assert_int_equal(mtr_start(&h->redis, "--requirepass s3cret"), 0);
    h->base = event_base_new();
    h->ticker = event_new(h->base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tick = {0, 5000};
    event_add(h->ticker, &tick);
    resync(h);
    redisReply *r = redisCommand(h->sync, "AUTH s3cret");
    freeReplyObject(r);
    r = redisCommand(h->sync, "SELECT 3");
    freeReplyObject(r);
    char ids[5][MAE__STREAM_ID_BUFSIZE];
    for (long i = 0; i < 5; i++)
        xadd(h, i, ids[i]);

    char url[160];
    snprintf(url, sizeof url, "redis://:s3cret@127.0.0.1:%d/3", h->redis.port);
    mae__stream_source_config cfg;
    mae__stream_source_config_init(&cfg);
    cfg.base = h->base;
    cfg.redis_url = url;
    cfg.key = KEY;
    cfg.block_ms = 300;
    cfg.backoff_min_ms = 20;
    cfg.backoff_max_ms = 100;
    cfg.on_entry = on_entry;
    cfg.on_state = on_state;
    cfg.user = h;
    char err[200];
    assert_int_equal(mae__stream_source_new(&cfg, &h->src, err, sizeof err), 0);
    client *c = add_client(h, ids[1], 0);
    watch = c;
    assert_true(run_until(h, watch_live, 5000));
    xadd(h, 5, NULL);
    want_n = 4;
    assert_true(run_until(h, watch_has_n, 5000));
    mae__stream_id after = parse_id(ids[1]);
    expect_exactly_after(c, h, &after);
    mae__stream_source_free(h->src);

    /* The same key holding a string. */
    r = redisCommand(h->sync, "SET other-key text");
    freeReplyObject(r);
    cfg.key = "other-key";
    h->ups = h->downs = 0;
    assert_int_equal(mae__stream_source_new(&cfg, &h->src, err, sizeof err), 0);
    assert_true(run_until(h, is_down, 5000));
    assert_non_null(strstr(h->last_down, "WRONGTYPE"));
    run_for(h, 300);
    assert_true(h->downs > 1);   /* tried again */
    assert_int_equal(h->ups, 0);
    /* A wrong password says so too. */
    mae__stream_source_free(h->src);
    snprintf(url, sizeof url, "redis://:wrong@127.0.0.1:%d/3", h->redis.port);
    cfg.key = KEY;
    h->downs = 0;
    assert_int_equal(mae__stream_source_new(&cfg, &h->src, err, sizeof err), 0);
    assert_true(run_until(h, is_down, 5000));
    assert_true(strstr(h->last_down, "WRONGPASS") || strstr(h->last_down, "invalid password"));
    harness_free(h);
}

static void test_rejects_bad_config(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    mae__stream_source_config cfg;
    mae__stream_source *s = NULL;
    char err[200];
    mae__stream_source_config_init(&cfg);
    cfg.base = base;
    cfg.on_entry = on_entry;
    cfg.redis_url = "redis://127.0.0.1:1";
    cfg.key = "";
    assert_int_equal(mae__stream_source_new(&cfg, &s, err, sizeof err), MAE_EINVAL);
    cfg.key = KEY;
    cfg.redis_url = "http://nope";
    assert_int_equal(mae__stream_source_new(&cfg, &s, err, sizeof err), MAE_EINVAL);
    assert_null(s);
    mae__stream_source_free(NULL);
    mae__resume_free(NULL);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rejects_bad_config),
        cmocka_unit_test(test_live_in_order),
        cmocka_unit_test(test_resume_after_missed),
        cmocka_unit_test(test_resume_during_writes),
        cmocka_unit_test(test_trimmed_history),
        cmocka_unit_test(test_unknown_and_bad_ids),
        cmocka_unit_test(test_free_and_park_during_replay),
        cmocka_unit_test(test_killed_connections_lose_nothing),
        cmocka_unit_test(test_hung_redis),
        cmocka_unit_test(test_restart_without_persistence_rewinds),
        cmocka_unit_test(test_auth_select_and_wrong_type),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
