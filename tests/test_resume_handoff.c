/* Unit tests of a client's replay and hand-off to the live fan-out
 * (relay/resume.h) against a fake history (relay/history.h's function
 * table, the seam every source with ids implements), so that the orders of replies a real Redis produces only
 * now and then are played every time: a short page read before the reader
 * delivered more (the client must not go live yet), a page running ahead of
 * the reader, entries deleted under the replay, a rewind in the middle, flow
 * control per entry, a client that came while its decision waited, a
 * resume freed with its read in flight, and that every callback comes from
 * the loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>

#include "relay/resume.h"

#define ID(ms) ((mae__stream_id){(ms), 0})

/* ---- the fake source -------------------------------------------------------- */

static struct {
    struct event_base *base;
    mae__stream_id pos;          /* S */
    bool positioned;
    uint64_t epoch;
    /* The one request in flight (a resume never has two). */
    int pending;                 /* 0 none, 1 range, 2 bounds */
    mae__stream_id after;
    unsigned count;
    mae__stream_range_fn range_fn;
    mae__stream_bounds_fn bounds_fn;
    void *user;
    int requests, cancels;
} fk;

static mae__stream_req *const REQ = (mae__stream_req *)&fk.pending;

static mae__stream_req *fake_range(void *self, const mae__stream_id *after, unsigned count,
                                   mae__stream_range_fn fn, void *user)
{
    assert_ptr_equal(self, &fk);
    assert_int_equal(fk.pending, 0);
    fk.pending = 1;
    fk.after = *after;
    fk.count = count;
    fk.range_fn = fn;
    fk.user = user;
    fk.requests++;
    return REQ;
}

static mae__stream_req *fake_bounds(void *self, mae__stream_bounds_fn fn, void *user)
{
    assert_ptr_equal(self, &fk);
    assert_int_equal(fk.pending, 0);
    fk.pending = 2;
    fk.bounds_fn = fn;
    fk.user = user;
    fk.requests++;
    return REQ;
}

static void fake_cancel(void *self, mae__stream_req *r)
{
    (void)self;
    if (!r)
        return;
    assert_ptr_equal(r, REQ);
    assert_int_not_equal(fk.pending, 0);
    fk.pending = 0;
    fk.cancels++;
}

static bool fake_position(void *self, mae__stream_id *out)
{
    (void)self;
    if (!fk.positioned)
        return false;
    *out = fk.pos;
    return true;
}

static uint64_t fake_epoch(void *self)
{
    (void)self;
    return fk.epoch;
}

static struct event_base *fake_evbase(void *self)
{
    (void)self;
    return fk.base;
}

static const mae__history_ops fake_ops = {fake_position, fake_epoch, fake_evbase,
                                          fake_bounds,   fake_range, fake_cancel, NULL, NULL};
static const mae__history fake_history = {&fake_ops, &fk};
#define SRC (&fake_history)

/* Answers the pending range with entries ms = from..to (seq 0), as read
 * when the reader's position was sent_at. */
static void answer_page(uint64_t from, uint64_t to, uint64_t sent_at)
{
    mae__stream_entry v[64];
    size_t n = 0;
    char lines[64][16];
    assert_int_equal(fk.pending, 1);
    for (uint64_t ms = from; from && ms <= to; ms++, n++) {
        assert_true(n < 64);
        snprintf(lines[n], sizeof lines[n], "line %llu", (unsigned long long)ms);
        v[n].id = ID(ms);
        v[n].line = lines[n];
        v[n].len = strlen(lines[n]);
    }
    fk.pending = 0;
    mae__stream_id at = ID(sent_at);
    fk.range_fn(fk.user, v, n, &at);
}

static void answer_bounds(const mae__stream_bounds *b)
{
    assert_int_equal(fk.pending, 2);
    fk.pending = 0;
    fk.bounds_fn(fk.user, b);
}

/* ---- the client --------------------------------------------------------------- */

typedef struct client {
    mae__resume *r;
    char log[2048];              /* "reset {...}|e5|e6|live|" */
    size_t entries;
    bool park;
    size_t park_at;              /* parks once it has this many entries */
} client;

static void note(client *c, const char *fmt, ...)
{
    va_list ap;
    size_t n = strlen(c->log);
    va_start(ap, fmt);
    vsnprintf(c->log + n, sizeof c->log - n, fmt, ap);
    va_end(ap);
}

static void on_reset(void *user, const char *json, size_t len)
{
    note(user, "reset %.*s|", (int)len, json);
}

static void on_entry(void *user, const mae__stream_id *id, const char *line, size_t len)
{
    client *c = user;
    char want[32];
    snprintf(want, sizeof want, "line %llu", (unsigned long long)id->ms);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(line, want, len);
    note(c, "e%llu|", (unsigned long long)id->ms);
    c->entries++;
    if (c->park_at && c->entries == c->park_at)
        c->park = true;
}

static void on_live(void *user)
{
    note(user, "live|");
}

static bool want_more(void *user)
{
    client *c = user;
    if (c->park)
        note(c, "park|");
    return !c->park;
}

static const mae__resume_events events = {on_reset, on_entry, on_live, want_more};

static int setup(void **state)
{
    (void)state;
    memset(&fk, 0, sizeof fk);
    fk.base = event_base_new();
    fk.positioned = true;
    return fk.base ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    event_base_free(fk.base);
    return 0;
}

static void start(client *c, const char *id, unsigned page)
{
    memset(c, 0, sizeof *c);
    c->r = mae__resume_start(SRC, id, id ? strlen(id) : 0, page, &events, c);
    assert_non_null(c->r);
}

static mae__stream_bounds stream_of(uint64_t first, uint64_t last)
{
    mae__stream_bounds b = {true, last - first + 1, ID(first), ID(last), true, last - first + 1};
    return b;
}

/* Resumes after 3 with pages of 4, the reader at 10, and answers the
 * bounds. */
static void resume_after_3(client *c)
{
    fk.pos = ID(10);
    start(c, "3-0", 4);
    assert_int_equal(fk.pending, 2);
    mae__stream_bounds b = stream_of(1, 10);
    answer_bounds(&b);
    assert_int_equal(fk.pending, 1);
    assert_true(fk.after.ms == 3 && fk.count == 4);
}

/* ---- tests ---------------------------------------------------------------- */

static void test_pages_until_the_reader(void **state)
{
    (void)state;
    client c;
    resume_after_3(&c);
    answer_page(4, 7, 10);               /* full page: L=7 < S=10 */
    assert_false(mae__resume_is_live(c.r));
    assert_true(fk.pending == 1 && fk.after.ms == 7);
    answer_page(8, 10, 10);              /* short, L = S */
    assert_string_equal(c.log, "e4|e5|e6|e7|e8|e9|e10|live|");
    assert_true(mae__resume_is_live(c.r));
    /* The fan-out: nothing up to L again, then everything after. */
    assert_false(mae__resume_admit(c.r, &ID(10)));
    assert_true(mae__resume_admit(c.r, &ID(11)));
    assert_false(mae__resume_admit(c.r, &ID(11)));
    assert_true(mae__resume_admit(c.r, &ID(12)));
    /* A run arriving together: all of it, or nothing (then one by one). */
    assert_true(mae__resume_admit_run(c.r, &ID(13), &ID(15)));
    assert_false(mae__resume_admit_run(c.r, &ID(15), &ID(18)));
    assert_false(mae__resume_admit(c.r, &ID(15)));
    assert_true(mae__resume_admit(c.r, &ID(16)));
    mae__resume_free(c.r);
    assert_int_equal(fk.cancels, 0);
}

/* The race: XRANGE ran before the XADD of 11 and 12, but the reader's reply
 * with them was handled first. A short page is then not the end: going live
 * at L=10 would lose 11 and 12 (the fan-out gave them out while the client
 * replayed). */
static void test_short_page_before_the_reader_is_not_the_end(void **state)
{
    (void)state;
    client c;
    resume_after_3(&c);
    answer_page(4, 7, 10);
    fk.pos = ID(12);                     /* the reader delivered 11, 12 */
    answer_page(8, 10, 10);              /* short, read when S was 10 */
    assert_false(mae__resume_is_live(c.r));
    assert_true(fk.pending == 1 && fk.after.ms == 10);
    answer_page(11, 12, 12);
    assert_string_equal(c.log, "e4|e5|e6|e7|e8|e9|e10|e11|e12|live|");
    assert_false(mae__resume_admit(c.r, &ID(12)));
    assert_true(mae__resume_admit(c.r, &ID(13)));
    mae__resume_free(c.r);
}

/* A page read after the reader moved on runs ahead of it: the client goes
 * live at once, and the fan-out skips what the page already gave. */
static void test_page_ahead_of_the_reader(void **state)
{
    (void)state;
    client c;
    fk.pos = ID(5);
    start(&c, "3-0", 10);
    mae__stream_bounds b = stream_of(1, 5);
    answer_bounds(&b);
    answer_page(4, 8, 5);
    assert_string_equal(c.log, "e4|e5|e6|e7|e8|live|");
    for (uint64_t ms = 6; ms <= 8; ms++)
        assert_false(mae__resume_admit(c.r, &ID(ms)));
    assert_true(mae__resume_admit(c.r, &ID(9)));
    mae__resume_free(c.r);
}

/* Entries between the page's last and the reader's position were deleted:
 * the page was read after the reader had them, so the hand-off is done. */
static void test_deleted_entries_end_the_replay(void **state)
{
    (void)state;
    client c;
    resume_after_3(&c);
    answer_page(4, 5, 10);               /* 6..10 gone */
    assert_string_equal(c.log, "e4|e5|live|");
    assert_int_equal(fk.pending, 0);
    assert_false(mae__resume_admit(c.r, &ID(10)));
    assert_true(mae__resume_admit(c.r, &ID(11)));
    mae__resume_free(c.r);
}

static void test_rewind_during_the_replay(void **state)
{
    (void)state;
    client c;
    resume_after_3(&c);
    fk.epoch++;                          /* the stream went back meanwhile */
    fk.pos = ID(0);
    answer_page(4, 7, 10);
    assert_string_equal(c.log, "e4|e5|e6|e7|live|");
    /* The new stream's ids, however small, reach the client. */
    assert_true(mae__resume_admit(c.r, &ID(1)));
    /* And a live client forgets its position at the next rewind. */
    fk.epoch++;
    assert_true(mae__resume_admit(c.r, &ID(1)));
    mae__resume_free(c.r);
}

/* The replay is paced per entry: a client that falls behind in the middle
 * of a page parks there, and the rest of the page comes when it wakes. */
static void test_flow_control(void **state)
{
    (void)state;
    client c;
    resume_after_3(&c);
    c.park_at = 2;
    answer_page(4, 7, 10);
    assert_string_equal(c.log, "e4|e5|park|");
    assert_int_equal(fk.pending, 0);
    mae__resume_wake(c.r);               /* still behind */
    assert_string_equal(c.log, "e4|e5|park|park|");
    c.park = false;
    mae__resume_wake(c.r);
    assert_string_equal(c.log, "e4|e5|park|park|e6|e7|");
    assert_true(fk.pending == 1 && fk.after.ms == 7);
    mae__resume_wake(c.r);               /* not parked: nothing */
    assert_int_equal(fk.requests, 3);
    answer_page(8, 10, 10);
    assert_true(mae__resume_is_live(c.r));
    assert_string_equal(c.log, "e4|e5|park|park|e6|e7|e8|e9|e10|live|");
    mae__resume_free(c.r);

    /* Freed while parked with part of a page held: nothing leaks (ASan). */
    resume_after_3(&c);
    c.park_at = 1;
    answer_page(4, 7, 10);
    assert_string_equal(c.log, "e4|park|");
    mae__resume_free(c.r);
}

static void test_freed_with_its_read_in_flight(void **state)
{
    (void)state;
    client c;
    resume_after_3(&c);
    mae__resume_free(c.r);
    assert_int_equal(fk.cancels, 1);
    assert_int_equal(fk.pending, 0);
}

/* A client whose id gets no replay (unknown_id) goes live from where the
 * reader stood when it came: what the fan-out delivered while its decision
 * waited for the bounds is replayed first, so nothing after joining is
 * lost (this hand-off was a second resume started from the fan-out). */
static void test_unknown_id_catches_up_from_where_it_joined(void **state)
{
    (void)state;
    client c;
    fk.pos = ID(20);
    start(&c, "99-0", 0);
    fk.pos = ID(23);                     /* 21..23 delivered meanwhile */
    mae__stream_bounds b = stream_of(1, 23);
    answer_bounds(&b);
    assert_true(fk.pending == 1 && fk.after.ms == 20);
    answer_page(21, 23, 23);
    assert_string_equal(c.log, "reset {\"reason\":\"unknown_id\"}|e21|e22|e23|live|");
    assert_false(mae__resume_admit(c.r, &ID(23)));
    assert_true(mae__resume_admit(c.r, &ID(24)));
    mae__resume_free(c.r);
}

static void test_reset_comes_first(void **state)
{
    (void)state;
    client c;
    fk.pos = ID(20);
    start(&c, "3-0", 100);
    mae__stream_bounds b = stream_of(10, 20);
    b.entries_added = 20;                /* 1..9 trimmed */
    answer_bounds(&b);
    answer_page(10, 20, 20);
    assert_string_equal(c.log, "reset {\"reason\":\"history_trimmed\",\"oldest_id\":\"10-0\"}|"
                               "e10|e11|e12|e13|e14|e15|e16|e17|e18|e19|e20|live|");
    assert_int_equal(mae__resume_get_plan(c.r).kind, MAE__RESUME_TRIMMED);
    mae__resume_free(c.r);

    /* Unknown id: reset, live, no read. */
    start(&c, "99-0", 0);
    answer_bounds(&b);
    assert_string_equal(c.log, "reset {\"reason\":\"unknown_id\"}|live|");
    assert_int_equal(fk.pending, 0);
    assert_true(mae__resume_admit(c.r, &ID(21)));
    mae__resume_free(c.r);
}

static void test_no_id_and_bad_id(void **state)
{
    (void)state;
    client c;
    start(&c, NULL, 0);
    assert_true(mae__resume_is_live(c.r));
    assert_int_equal(fk.requests, 0);
    assert_true(mae__resume_admit(c.r, &ID(1)));
    mae__resume_free(c.r);

    /* A malformed id needs no Redis, yet its reset comes from the loop,
     * never from inside mae__resume_start. */
    start(&c, "1-0\r\n", 0);
    assert_string_equal(c.log, "");
    assert_false(mae__resume_is_live(c.r));
    assert_false(mae__resume_admit(c.r, &ID(5)));
    event_base_loop(fk.base, EVLOOP_NONBLOCK);
    assert_string_equal(c.log, "reset {\"reason\":\"bad_last_event_id\"}|live|");
    assert_true(mae__resume_admit(c.r, &ID(5)));
    assert_int_equal(fk.requests, 0);
    mae__resume_free(c.r);

    /* Freed before the loop ran: nothing is called. */
    start(&c, "", 0);
    mae__resume_free(c.r);
    event_base_loop(fk.base, EVLOOP_NONBLOCK);
    assert_string_equal(c.log, "");
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_pages_until_the_reader),
        T(test_short_page_before_the_reader_is_not_the_end),
        T(test_page_ahead_of_the_reader),
        T(test_deleted_entries_end_the_replay),
        T(test_rewind_during_the_replay),
        T(test_flow_control),
        T(test_freed_with_its_read_in_flight),
        T(test_unknown_id_catches_up_from_where_it_joined),
        T(test_reset_comes_first),
        T(test_no_id_and_bad_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
