/* The contract of docs/events.md, checked end to end: the bytes a real
 * subscriber receives for the envelope, through mae_safe_publish on the
 * default channel. The payloads of the ten event types are checked where
 * the stores emit them (test_it_contract_stores.c). Harness: contract.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "contract.h"

#ifndef MAE_TEST_TMPDIR
#define MAE_TEST_TMPDIR "/tmp"
#endif

static void test_envelope_bytes_on_the_default_channel(void **state)
{
    (void)state;
    fx f;
    fx_open(&f, true, 0);

    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    double t0 = (double)rt.tv_sec + rt.tv_nsec / 1e9;
    mae_safe_publish(f.p, "custom.thing", MAE_NO_ID, NULL, "contract");
    json_object *d = expect_event(&f, "custom.thing", MAE_NO_ID, "contract", "");
    CHECK(d != NULL && json_object_object_length(d) == 0,
          "docs/api.md: data_json NULL gives data {}");
    CHECK(strstr(last_raw(&f), "\"internal_id\":null") != NULL,
          "docs/events.md Envelope: internal_id null for MAE_NO_ID: %s", last_raw(&f));
    if (f.root) {
        json_object *ts;
        json_object_object_get_ex(f.root, "ts", &ts);
        double tv = json_object_get_double(ts);
        CHECK(tv >= t0 - 1 && tv <= t0 + 5,
              "docs/events.md Envelope: ts is the epoch time the event was built: %.6f vs %.6f", tv,
              t0);
    }

    /* nested data passes through; raw UTF-8; '/' unescaped; negative and big ids */
    const char *data = "{ \"url\" : \"https://notion.so/a/b\", \"t\":\"\xE4\xB8\xAD\xC3\xA9"
                       "\xF0\x9F\x98\x80\", \"n\":[1,2,{\"k\":null}], \"o\":{} }";
    mae_safe_publish(f.p, "custom.nested", 9007199254740993LL, data, MAE_SOURCE_CLI);
    d = expect_event(&f, "custom.nested", 9007199254740993LL, "cli", "url,t,n,o");
    d_str(&f, d, "url", "https://notion.so/a/b");
    d_str(&f, d, "t", "\xE4\xB8\xAD\xC3\xA9\xF0\x9F\x98\x80");
    CHECK(strstr(last_raw(&f), "https://notion.so/a/b") != NULL,
          "docs/events.md Envelope: '/' is not escaped: %s", last_raw(&f));

    /* every call counted once: invalid ones as dropped_invalid, nothing sent */
    mae_publisher_stats before, after;
    mae_publisher_stats_get(f.p, &before);
    const char *bad_data[] = {"[1]", "{", "{\"a\":1} {\"b\":2}", "\"str\"", "null", "",
                              "{\"a\":1,}", "42"};
    for (size_t i = 0; i < sizeof bad_data / sizeof *bad_data; i++)
        mae_safe_publish(f.p, "custom.bad", 1, bad_data[i], "contract");
    mae_safe_publish(f.p, NULL, 1, NULL, "contract");
    mae_safe_publish(f.p, "", 1, NULL, "contract");
    mae_safe_publish(f.p, "custom.bad", 1, NULL, NULL);
    mae_safe_publish(f.p, "custom.bad", 1, NULL, "");
    mae_publisher_stats_get(f.p, &after);
    CHECK(after.dropped_invalid - before.dropped_invalid == 12 &&
              after.enqueued == before.enqueued,
          "docs/publisher.md Counters / docs/api.md: invalid data_json or arguments are counted "
          "dropped_invalid and not enqueued: dropped_invalid +%llu (want +12), enqueued +%llu",
          (unsigned long long)(after.dropped_invalid - before.dropped_invalid),
          (unsigned long long)(after.enqueued - before.enqueued));
    expect_none(&f, "mae_safe_publish with invalid arguments");
    check_counters(f.p, "after invalid publishes");

    /* NULL publisher: a harmless no-op */
    mae_safe_publish(NULL, "custom.thing", 1, "{}", "contract");
    mae_publisher_stats z;
    memset(&z, 0xff, sizeof z);
    mae_publisher_stats_get(NULL, &z);
    CHECK(z.enqueued == 0 && z.published == 0, "docs/api.md: a NULL publisher is a harmless no-op");
    CHECK(mae_publisher_flush(NULL, 10) == MAE_OK, "docs/api.md: flush of NULL is harmless");
    fx_close(&f);
}

/* A disabled publisher (NULL or "" URL) counts every call as dropped_disabled;
 * the stores still write their state. */

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_envelope_bytes_on_the_default_channel),
    };
    return cmocka_run_group_tests(tests, contract_group_setup, contract_group_teardown);
}
