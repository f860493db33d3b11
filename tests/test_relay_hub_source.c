/* Unit tests of the hub (relay/hub_source.h) on a real event loop with a
 * fake clock: ids strictly increasing when many events share a millisecond
 * and when the clock steps back, the history's two bounds, an event too
 * large to keep, and the history table's reads (bounds and pages after an
 * id, answered from the loop, never from inside the call). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>

#include <mailagent/common.h>

#include "relay/hub_source.h"

static uint64_t g_now = 10000000000;
static uint64_t fake_clock(void)
{
    return g_now;
}

typedef struct seen {
    mae__stream_id ids[64];
    size_t n;
    int batches;
} seen;

static void on_event(void *ctx, const mae__stream_id *id, const char *data, size_t len)
{
    seen *s = ctx;
    (void)data;
    (void)len;
    if (s->n < 64)
        s->ids[s->n] = *id;
    s->n++;
}
static void on_state(void *ctx, bool up, bool re)
{
    (void)ctx;
    (void)up;
    (void)re;
}
static void on_reset(void *ctx, const char *j, size_t n)
{
    (void)ctx;
    (void)j;
    (void)n;
    fail_msg("the hub never resets");
}
static void on_log(void *ctx, const char *l)
{
    (void)ctx;
    (void)l;
}
static void on_batch(void *ctx, bool begin)
{
    seen *s = ctx;
    if (begin)
        s->batches++;
}

static mae__source *hub(struct event_base *base, seen *s, size_t events, size_t bytes)
{
    mae__source_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.base = base;
    cfg.hub = true;
    cfg.history_events = events;
    cfg.history_bytes = bytes;
    mae__source_cb cb = {s, on_event, on_state, on_reset, on_log, on_batch, NULL, NULL};
    mae__source *src = NULL;
    char err[128];
    assert_int_equal(mae__source_new(&cfg, &cb, &src, err, sizeof err), MAE_OK);
    return src;
}

static void test_ids(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    seen s;
    memset(&s, 0, sizeof s);
    g_now = 10000000000;
    mae__hub_set_clock(fake_clock);
    mae__source *src = hub(base, &s, 100, 1 << 20);
    assert_true(mae__source_up(src));
    mae__stream_id last;
    const char *three = "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n";
    assert_int_equal(mae__hub_publish(src, three, strlen(three), 3, &last), MAE_OK);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.batches, 1);
    /* The start's millisecond is the floor: the first id is above it. */
    assert_true(s.ids[0].ms == 10000000000 && s.ids[0].seq == 1);
    assert_true(s.ids[2].ms == 10000000000 && s.ids[2].seq == 3);
    assert_int_equal(mae__stream_id_cmp(&last, &s.ids[2]), 0);
    g_now = 10000000005;
    assert_int_equal(mae__hub_publish(src, "{}\n", 3, 1, &last), MAE_OK);
    assert_true(last.ms == 10000000005 && last.seq == 0);
    /* The clock steps back an hour: the ids go on increasing. */
    g_now = 10000000005 - 3600000;
    assert_int_equal(mae__hub_publish(src, "{}\n{}\n", 6, 2, &last), MAE_OK);
    assert_true(s.ids[4].ms == 10000000005 && s.ids[4].seq == 1);
    assert_true(last.ms == 10000000005 && last.seq == 2);
    for (size_t i = 1; i < s.n; i++)
        assert_true(mae__stream_id_cmp(&s.ids[i - 1], &s.ids[i]) < 0);
    mae__hub_stats st;
    mae__hub_get_stats(src, &st);
    assert_int_equal(st.issued, 6);
    assert_int_equal(st.clock_steps, 2);
    mae__source_free(src);
    mae__hub_set_clock(NULL);
    event_base_free(base);
}

static void test_bounds_of_history(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    seen s;
    memset(&s, 0, sizeof s);
    /* By count: 3 kept of 5. */
    mae__source *src = hub(base, &s, 3, 1 << 20);
    for (int i = 0; i < 5; i++)
        assert_int_equal(mae__hub_publish(src, "{\"e\":1}\n", 8, 1, NULL), MAE_OK);
    mae__hub_stats st;
    mae__hub_get_stats(src, &st);
    assert_int_equal(st.kept, 3);
    assert_int_equal(st.evicted, 2);
    assert_int_equal(st.kept_bytes, 3 * (7 + MAE__HUB_ENTRY_OVERHEAD));
    mae__source_free(src);
    /* By bytes: each costs 7 + overhead; room for two. */
    src = hub(base, &s, 100, 2 * (7 + MAE__HUB_ENTRY_OVERHEAD) + 5);
    for (int i = 0; i < 4; i++)
        assert_int_equal(mae__hub_publish(src, "{\"e\":1}\n", 8, 1, NULL), MAE_OK);
    mae__hub_get_stats(src, &st);
    assert_int_equal(st.kept, 2);
    /* One larger than the whole budget: delivered, not kept, nothing else lost. */
    char big[200];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\n';
    size_t before = s.n;
    assert_int_equal(mae__hub_publish(src, big, sizeof big, 1, NULL), MAE_OK);
    assert_int_equal(s.n, before + 1);
    mae__hub_get_stats(src, &st);
    assert_int_equal(st.kept, 2);
    mae__source_free(src);
    /* --history 0: ids, no history. */
    src = hub(base, &s, 0, 1 << 20);
    assert_int_equal(mae__hub_publish(src, "{}\n", 3, 1, NULL), MAE_OK);
    mae__hub_get_stats(src, &st);
    assert_int_equal(st.kept, 0);
    mae__source_free(src);
    event_base_free(base);
}

typedef struct got {
    bool bounds_called, range_called;
    mae__stream_bounds b;
    size_t n;
    mae__stream_id first, sent_at;
    char line0[32];
} got;

static void on_bounds(void *user, const mae__stream_bounds *b)
{
    got *g = user;
    g->bounds_called = true;
    g->b = *b;
}

static void on_range(void *user, const mae__stream_entry *v, size_t n, const mae__stream_id *at)
{
    got *g = user;
    g->range_called = true;
    g->n = n;
    g->sent_at = *at;
    if (n) {
        g->first = v[0].id;
        snprintf(g->line0, sizeof g->line0, "%.*s", (int)v[0].len, v[0].line);
    }
}

static void test_history_reads(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    seen s;
    memset(&s, 0, sizeof s);
    g_now = 5000;
    mae__hub_set_clock(fake_clock);
    mae__source *src = hub(base, &s, 4, 1 << 20);
    const mae__history *h = mae__source_history(src);
    assert_non_null(h);
    mae__stream_id pos, floor;
    assert_true(h->ops->position(h->self, &pos));
    assert_true(mae__stream_id_is_zero(&pos));   /* nothing yet: 0-0 */
    assert_true(h->ops->floor(h->self, &floor));
    assert_true(floor.ms == 5000 && floor.seq == 0);
    for (int i = 1; i <= 6; i++) {
        char line[16];
        int n = snprintf(line, sizeof line, "{\"i\":%d}\n", i);
        assert_int_equal(mae__hub_publish(src, line, (size_t)n, 1, NULL), MAE_OK);
    }
    got g;
    memset(&g, 0, sizeof g);
    assert_non_null(h->ops->bounds(h->self, on_bounds, &g));
    assert_false(g.bounds_called);   /* from the loop, not from the call */
    event_base_loop(base, EVLOOP_NONBLOCK);
    assert_true(g.bounds_called);
    assert_int_equal(g.b.length, 4);
    assert_true(g.b.first.ms == 5000 && g.b.first.seq == 3);
    assert_true(g.b.last.ms == 5000 && g.b.last.seq == 6);
    assert_true(g.b.added_known);
    assert_int_equal(g.b.entries_added, 6);
    /* A page after 5000-4, at most 1. */
    mae__stream_id after = {5000, 4};
    assert_non_null(h->ops->range(h->self, &after, 1, on_range, &g));
    event_base_loop(base, EVLOOP_NONBLOCK);
    assert_true(g.range_called);
    assert_int_equal(g.n, 1);
    assert_true(g.first.seq == 5);
    assert_string_equal(g.line0, "{\"i\":5}");
    assert_true(g.sent_at.seq == 6);
    /* A cancelled read never calls back; the source frees pending ones. */
    memset(&g, 0, sizeof g);
    mae__stream_req *q = h->ops->range(h->self, &after, 10, on_range, &g);
    h->ops->cancel(h->self, q);
    h->ops->bounds(h->self, on_bounds, &g);
    mae__source_free(src);
    event_base_loop(base, EVLOOP_NONBLOCK);
    assert_false(g.range_called);
    assert_false(g.bounds_called);
    mae__hub_set_clock(NULL);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_bounds_of_history),
        cmocka_unit_test(test_history_reads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
