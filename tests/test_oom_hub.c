/* Out-of-memory sweep of opening a publisher in hub mode: fail the n-th
 * allocation of mae_publisher_open for n = 1, 2, ... until it succeeds.
 * Each failure must be MAE_ENOMEM with the reason in error_buf, write no
 * publisher, and leak nothing (the relay URL's host and token copies
 * included); the publisher that finally opens delivers to a hub. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fake_hub.h"
#include "failalloc.h"
#include "testutil.h"

#define MAX_N 5000

static void test_hub_open_fails_cleanly(void **state)
{
    (void)state;
    fake_hub *h = fake_hub_start();
    fake_hub_require_token(h, "tok");
    long n;
    /* Warm up: the process's first thread makes glibc keep some state. */
    mae_publisher_config warm;
    mae_publisher *wp = NULL;
    mae_publisher_config_init(&warm);
    warm.relay_url = fake_hub_url(h);
    assert_int_equal(mae_publisher_open(&warm, &wp), MAE_OK);
    mae_publisher_close(wp, 1000);

    mae_publisher *p = NULL;
    for (n = 1; n < MAX_N; n++) {
        long live0 = failalloc_live();
        char why[160] = "";
        mae_publisher_config cfg;
        mae_publisher_config_init(&cfg);
        cfg.relay_url = fake_hub_url(h);
        cfg.relay_token = "tok";
        cfg.error_buf = why;
        cfg.error_buf_size = sizeof why;
        p = NULL;
        failalloc_arm(n);
        int rc = mae_publisher_open(&cfg, &p);
        bool failed = failalloc_failed();
        failalloc_disarm();
        if (rc != MAE_OK) {
            assert_int_equal(rc, MAE_ENOMEM);
            assert_null(p);
            assert_true(why[0] != '\0');
            if (failalloc_live() != live0)
                fail_msg("hub open: n=%ld leaked %ld blocks", n, failalloc_live() - live0);
        }
        if (!failed)
            break;
        if (rc == MAE_OK) {
            mae_publisher_close(p, 1000);
            p = NULL;
            if (failalloc_live() != live0)
                fail_msg("hub open: n=%ld leaked %ld blocks", n, failalloc_live() - live0);
        }
    }
    print_message("hub open: succeeded at n=%ld\n", n);
    assert_true(n < MAX_N);
    assert_non_null(p);
    mae_safe_publish(p, "test.event", 1, "{\"n\":1}", "test");
    assert_int_equal(mae_publisher_flush(p, 10000), MAE_OK);
    assert_int_equal(fake_hub_events(h), 1);
    assert_int_equal(mae_publisher_close(p, 1000), MAE_OK);
    fake_hub_stop(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hub_open_fails_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
