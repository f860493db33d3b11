/* Unit tests of the stream reply parsers (relay/stream_source.h) on replies
 * built by hand: entries with and without the `event` field, XINFO STREAM
 * of Redis 7 and of an older server, and replies of the wrong shape, which
 * must be refused rather than read out of bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "stream/reply.h"

/* A pool of reply nodes, reset by each test. */
static redisReply pool[64];
static redisReply *ptrs[64][16];
static size_t used;

static redisReply *node(int type)
{
    assert_true(used < 64);
    redisReply *r = &pool[used];
    memset(r, 0, sizeof *r);
    r->type = type;
    r->element = ptrs[used];
    used++;
    return r;
}

static redisReply *str(const char *s)
{
    redisReply *r = node(REDIS_REPLY_STRING);
    r->str = (char *)s;
    r->len = strlen(s);
    return r;
}

static redisReply *num(long long v)
{
    redisReply *r = node(REDIS_REPLY_INTEGER);
    r->integer = v;
    return r;
}

static redisReply *nil(void)
{
    return node(REDIS_REPLY_NIL);
}

/* An array of the given nodes, NULL-terminated. */
static redisReply *arr(redisReply *first, ...)
{
    redisReply *r = node(REDIS_REPLY_ARRAY);
    va_list ap;
    va_start(ap, first);
    for (redisReply *e = first; e; e = va_arg(ap, redisReply *)) {
        assert_true(r->elements < 16);
        r->element[r->elements++] = e;
    }
    va_end(ap);
    return r;
}

static redisReply *empty_arr(void)
{
    return node(REDIS_REPLY_ARRAY);
}

static void test_entries(void **state)
{
    (void)state;
    used = 0;
    mae__stream_entry e;
    redisReply *r = arr(str("1716096000123-4"),
                        arr(str("other"), str("x"), str("event"), str("{\"a\":1}"), NULL), NULL);
    assert_true(mae__stream_parse_entry(r, &e));
    assert_true(e.id.ms == 1716096000123u && e.id.seq == 4);
    assert_int_equal(e.len, 7);
    assert_memory_equal(e.line, "{\"a\":1}", 7);
    /* A foreign entry: its id, no line. */
    r = arr(str("5-0"), arr(str("data"), str("x"), NULL), NULL);
    assert_true(mae__stream_parse_entry(r, &e));
    assert_true(e.id.ms == 5 && e.line == NULL && e.len == 0);
    r = arr(str("5-0"), nil(), NULL);
    assert_true(mae__stream_parse_entry(r, &e));
    assert_null(e.line);
    /* A line with a NUL inside is kept whole. */
    redisReply *v = str("ab");
    v->str = (char *)"a\0b";
    v->len = 3;
    r = arr(str("6-0"), arr(str("event"), v, NULL), NULL);
    assert_true(mae__stream_parse_entry(r, &e));
    assert_int_equal(e.len, 3);
}

static void test_bad_entries(void **state)
{
    (void)state;
    used = 0;
    mae__stream_entry e;
    assert_false(mae__stream_parse_entry(NULL, &e));
    assert_false(mae__stream_parse_entry(str("1-0"), &e));
    assert_false(mae__stream_parse_entry(arr(str("1-0"), NULL), &e));
    assert_false(mae__stream_parse_entry(arr(str("nope"), empty_arr(), NULL), &e));
    assert_false(mae__stream_parse_entry(arr(num(1), empty_arr(), NULL), &e));
    /* An odd field list, a field list of the wrong type. */
    assert_false(mae__stream_parse_entry(arr(str("1-0"), arr(str("event"), NULL), NULL), &e));
    assert_false(mae__stream_parse_entry(arr(str("1-0"), str("event"), NULL), &e));
    /* An `event` whose value is not a string is no line. */
    assert_true(mae__stream_parse_entry(arr(str("1-0"), arr(str("event"), num(3), NULL), NULL), &e));
    assert_null(e.line);
}

static void test_info_redis7(void **state)
{
    (void)state;
    used = 0;
    mae__stream_bounds b;
    redisReply *r = arr(str("length"), num(2), str("radix-tree-keys"), num(1),
                        str("last-generated-id"), str("5-0"), str("max-deleted-entry-id"),
                        str("0-0"), str("entries-added"), num(5),
                        str("recorded-first-entry-id"), str("4-0"), str("groups"), num(0),
                        str("first-entry"), arr(str("4-0"), arr(str("event"), str("x"), NULL), NULL),
                        NULL);
    assert_true(mae__stream_parse_info(r, &b));
    assert_true(b.exists);
    assert_int_equal(b.length, 2);
    assert_true(b.first.ms == 4 && b.first.seq == 0);
    assert_true(b.last.ms == 5 && b.last.seq == 0);
    assert_true(b.added_known);
    assert_int_equal(b.entries_added, 5);

    /* An empty stream (first-entry nil), from a server without
     * entries-added. */
    used = 0;
    r = arr(str("length"), num(0), str("last-generated-id"), str("9-1"), str("first-entry"), nil(),
            str("last-entry"), nil(), NULL);
    assert_true(mae__stream_parse_info(r, &b));
    assert_int_equal(b.length, 0);
    assert_true(b.first.ms == 0 && b.first.seq == 0);
    assert_true(b.last.ms == 9 && b.last.seq == 1);
    assert_false(b.added_known);
}

static void test_info_refused(void **state)
{
    (void)state;
    mae__stream_bounds b;
    memset(&b, 0x5a, sizeof b);
    used = 0;
    assert_false(mae__stream_parse_info(NULL, &b));
    assert_false(mae__stream_parse_info(str("length"), &b));
    /* Odd list, missing fields, wrong types, a bad id. */
    assert_false(mae__stream_parse_info(arr(str("length"), NULL), &b));
    assert_false(mae__stream_parse_info(arr(str("length"), num(1), NULL), &b));
    assert_false(mae__stream_parse_info(arr(str("last-generated-id"), str("1-0"), NULL), &b));
    assert_false(mae__stream_parse_info(
        arr(str("length"), str("1"), str("last-generated-id"), str("1-0"), NULL), &b));
    assert_false(mae__stream_parse_info(
        arr(str("length"), num(-1), str("last-generated-id"), str("1-0"), NULL), &b));
    assert_false(mae__stream_parse_info(
        arr(str("length"), num(1), str("last-generated-id"), str("1-x"), NULL), &b));
    assert_false(mae__stream_parse_info(arr(str("length"), num(1), str("last-generated-id"),
                                            str("1-0"), str("first-entry"), str("1-0"), NULL),
                                        &b));
    /* Nothing written on refusal. */
    assert_int_equal(b.length, 0x5a5a5a5a5a5a5a5aull);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entries),
        cmocka_unit_test(test_bad_entries),
        cmocka_unit_test(test_info_redis7),
        cmocka_unit_test(test_info_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
