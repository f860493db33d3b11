/* Tests of the one JSON grammar (core/text.h) that an event's data_json and
 * a stored payload share: the compactor and the canonical parser accept and
 * refuse the same texts (depth limit, \u0000, the rest of RFC 8259), and the
 * public calls apply it: mae_safe_publish drops what mae_outbox_enqueue
 * refuses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "capture.h"
#include "testutil.h"
#include "core/json.h"
#include "core/text.h"

/* An object nested levels deep (the object itself is level 1), its
 * innermost container an array when arrays is true: {"k":{"k":[]}}. */
static char *nest(int levels, bool arrays)
{
    mae__buf b;
    mae__buf_init(&b);
    mae__buf_putc(&b, '{');
    for (int i = 2; i <= levels; i++)
        mae__buf_puts(&b, i == levels && arrays ? "\"k\":[" : "\"k\":{");
    for (int i = levels; i >= 2; i--)
        mae__buf_putc(&b, i == levels && arrays ? ']' : '}');
    mae__buf_putc(&b, '}');
    char *s = mae__buf_take(&b, NULL);
    assert_non_null(s);
    return s;
}

/* 1 when the compactor accepts text, asserting the parser agrees. */
static int accepted(const char *text)
{
    mae__buf b;
    char *canon = NULL;
    mae__buf_init(&b);
    int compact = mae__json_compact_object(&b, text) == 0;
    int rc = mae__json_canonical(text, 0, &canon);
    assert_true(rc == MAE_OK || rc == MAE_EINVAL);
    int parsed = rc == MAE_OK;
    if (compact != parsed)
        fail_msg("the two readers disagree on %s: compactor %s, parser %s", text,
                 compact ? "accepts" : "refuses", parsed ? "accepts" : "refuses");
    mae__buf_free(&b);
    free(canon);
    return compact;
}

static void readers_agree_on_every_case(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int ok;
    } cases[] = {
        {"{}", 1},
        {" {\"a\" : [1, -2.5e3, true, false, null, \"s\", {}]} ", 1},
        {"{\"a\":\"\\u0001\\u00e9\\uD83D\\uDE00\"}", 1},
        {"{\"lone\":\"\\ud800\",\"low\":\"\\udc00\"}", 1}, /* repaired, not refused */
        {"{\"bad\":\"\xff\xc3\"}", 1},                     /* repaired, not refused */
        {"{\"dup\":1,\"dup\":2}", 1},
        {"{\"a\":\"\\u0000\"}", 0},
        {"{\"a\\u0000b\":1}", 0},
        {"{\"a\":[\"\\u0000\"]}", 0},
        {"{\"a\":\"\\ud800\\u0000\"}", 0},
        {"{\"n\":NaN}", 0},
        {"{\"n\":Infinity}", 0},
        {"{\"n\":01}", 0},
        {"{\"a\":\"raw\ttab\"}", 0},
        {"{\"a\":\"\\x\"}", 0},
        {"{\"a\":1,}", 0},
        {"{}x", 0},
        {"[]", 0},
        {"\"s\"", 0},
        {"", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (accepted(cases[i].text) != cases[i].ok)
            fail_msg("case %zu: %s should be %s", i, cases[i].text,
                     cases[i].ok ? "accepted" : "refused");
}

static void one_depth_limit_for_objects_and_arrays(void **state)
{
    (void)state;
    assert_int_equal(MAE_JSON_MAX_DEPTH, 64);
    for (int arrays = 0; arrays <= 1; arrays++) {
        char *at = nest(MAE_JSON_MAX_DEPTH, arrays);
        char *over = nest(MAE_JSON_MAX_DEPTH + 1, arrays);
        assert_int_equal(accepted(at), 1);
        assert_int_equal(accepted(over), 0);
        free(at);
        free(over);
    }
}

/* The public calls: the same text is dropped as an event's data and refused
 * as a payload, and the limit text passes both. */
static void publish_and_enqueue_apply_the_same_grammar(void **state)
{
    (void)state;
    tu_db *f = tu_db_new("grammar");
    mae_db_config cfg;
    tu_db_config(&cfg, f->path, f->pub, &tu_t0);
    assert_int_equal(mae_db_open(&cfg, &f->db), MAE_OK);
    mae_email m = {.internal_id = 1, .message_id = "<m1@example.com>"};
    assert_int_equal(mae_sync_store_upsert(f->db, &m), MAE_OK);

    char *at = nest(MAE_JSON_MAX_DEPTH, false), *over = nest(MAE_JSON_MAX_DEPTH + 1, false);
    const char *refused[] = {"{\"a\":\"\\u0000\"}", over};
    for (size_t i = 0; i < 2; i++) {
        mae_publisher_stats before, after;
        mae_publisher_stats_get(f->pub, &before);
        mae_safe_publish(f->pub, "custom.event", 1, refused[i], "test");
        mae_publisher_stats_get(f->pub, &after);
        assert_int_equal(after.dropped_invalid, before.dropped_invalid + 1);
        assert_int_equal(mae_outbox_enqueue(f->db, 1, "op", "notion", refused[i], NULL, NULL,
                                            NULL),
                         MAE_EINVAL);
    }
    cap_clear(f->pub);
    mae_safe_publish(f->pub, "custom.event", 1, at, "test");
    assert_int_equal(cap_count(f->pub), 1);
    assert_non_null(strstr(cap_line(f->pub, 0), at));
    assert_int_equal(mae_outbox_enqueue(f->db, 1, "op", "notion", at, NULL, NULL, NULL), MAE_OK);
    free(at);
    free(over);
    tu_db_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(readers_agree_on_every_case),
        cmocka_unit_test(one_depth_limit_for_objects_and_arrays),
        cmocka_unit_test(publish_and_enqueue_apply_the_same_grammar),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
