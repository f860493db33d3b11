/* Integration test of the relay's log under a flood (issue 18 #6), with a
 * real redis-server: a pipelined burst of 3 000 bad-credential requests on
 * one connection wrote 3 095 "unauthorized" lines; now at most
 * MAE__RELAY_LOG_BURST lines of one kind a second are written, then one
 * line with the count of the rest, and the two add up to 3 000. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "harness.h"
#include "redis_harness.h"
#include "relay/log.h"

static mtr_redis g_redis;
static char g_out[512];

static int setup(void **state)
{
    (void)state;
    if (!rh_have(MAE_REDIS_SERVER))
        return -1;
    rh_out_dir("test_it_relay_log", g_out, sizeof g_out);
    return mtr_start(&g_redis, NULL);
}

static int teardown(void **state)
{
    (void)state;
    mtr_cleanup(&g_redis);
    return 0;
}

static void test_unauthorized_flood_is_counted(void **state)
{
    (void)state;
    enum { REQUESTS = 3000, PER_SEND = 100 };
    static const char *const env[] = {"WEBHOOK_SECRET=s3cret", "MAILAGENT_LOCAL_API_TOKEN=",
                                      "MAILAGENT_LOCAL_TOKEN=", NULL};
    char log[600];
    snprintf(log, sizeof log, "%s/flood.log", g_out);
    rh_relay r;
    assert_int_equal(rh_relay_start(&r, g_redis.url, NULL, env, log), 0);

    static const char req[] = "GET /api/events/stream HTTP/1.1\r\nHost: x\r\n"
                              "Authorization: Bearer wrong\r\n\r\n";
    char *burst = malloc(PER_SEND * (sizeof req - 1));
    assert_non_null(burst);
    for (int i = 0; i < PER_SEND; i++)
        memcpy(burst + i * (sizeof req - 1), req, sizeof req - 1);
    rh_conn *c = rh_connect(r.port, 0);
    assert_non_null(c);
    for (int sent = 0; sent < REQUESTS; sent += PER_SEND) {
        assert_true(rh_send(c, burst, PER_SEND * (sizeof req - 1)));
        rh_pump(c);
    }
    free(burst);
    /* Every request answered 401 on the one connection. */
    double end = rh_now() + 30;
    while (rh_count(c, "{\"error\":\"unauthorized\"}") < REQUESTS && !c->eof && rh_now() < end) {
        rh_sleep_ms(20);
        rh_pump(c);
    }
    assert_int_equal(rh_count(c, "{\"error\":\"unauthorized\"}"), REQUESTS);
    rh_close(c);
    assert_int_equal(rh_metric(r.port, "Authorization: Bearer s3cret\r\n",
                               "mailagent_relay_auth_failures_total"),
                     REQUESTS);
    /* The count comes out within a second or two, with nothing else logged. */
    char *text = rh_wait_text(log, "similar lines suppressed)", 5000, 50);
    assert_non_null(text);
    assert_non_null(strstr(text, "similar lines suppressed)"));
    free(text);
    assert_int_equal(rh_relay_stop(&r, SIGTERM, 10000, NULL), 0);

    text = rh_slurp(log);
    assert_non_null(text);
    long shown = 0, counted = 0, lines = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        lines++;
        unsigned long long k;
        if (sscanf(line, "client ... unauthorized (%llu similar lines suppressed)", &k) == 1)
            counted += (long)k;
        else if (strstr(line, " unauthorized"))
            shown++;
    }
    free(text);
    print_message("%ld log lines: %ld unauthorized written, %ld counted\n", lines, shown, counted);
    assert_int_equal(shown + counted, REQUESTS);
    assert_true(counted > 0);
    /* A few seconds' worth at most: 10 a second and one count line each. */
    assert_true(shown <= 10 * MAE__RELAY_LOG_BURST);
    assert_true(lines < 200);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unauthorized_flood_is_counted),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
