/* Fork with a publisher in hub mode: the child's calls are no-ops counted
 * as dropped_disabled, its close frees only its memory, and the parent's
 * kept-alive connection to the hub goes on carrying batches (the hub sees
 * no new connection and no gap). Its own CTest label: it forks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "fake_hub.h"
#include "testutil.h"

static void publish_n(mae_publisher *p, int from, int n)
{
    char data[64];
    for (int i = from; i < from + n; i++) {
        snprintf(data, sizeof data, "{\"n\":%d}", i);
        mae_safe_publish(p, "test.event", i, data, "test");
    }
}

static void test_child_is_harmless_parent_keeps_its_connection(void **state)
{
    (void)state;
    fake_hub *h = fake_hub_start();
    mae_publisher_config cfg;
    mae_publisher *p = NULL;
    mae_publisher_config_init(&cfg);
    cfg.relay_url = fake_hub_url(h);
    assert_int_equal(mae_publisher_open(&cfg, &p), MAE_OK);
    publish_n(p, 0, 10);
    assert_int_equal(mae_publisher_flush(p, 10000), MAE_OK);
    assert_int_equal(fake_hub_connections(h), 1);

    /* The child reports through a pipe, not its exit status (see
     * test_publisher.c's fork test). */
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        mae_publisher_stats before, after;
        close(fds[0]);
        mae_publisher_stats_get(p, &before);
        publish_n(p, 100, 10);
        mae_publisher_stats_get(p, &after);
        char verdict = after.dropped_disabled == before.dropped_disabled + 10 &&
                               after.enqueued == before.enqueued &&
                               mae_publisher_flush(p, 100) == MAE_OK &&
                               mae_publisher_close(p, 100) == MAE_OK
                           ? 'Y'
                           : 'N';
        if (write(fds[1], &verdict, 1) != 1)
            _exit(2);
        _exit(0);
    }
    close(fds[1]);
    char verdict = 0;
    assert_int_equal(read(fds[0], &verdict, 1), 1);
    close(fds[0]);
    assert_int_equal(verdict, 'Y');
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    publish_n(p, 10, 10);
    assert_int_equal(mae_publisher_flush(p, 10000), MAE_OK);
    assert_int_equal(fake_hub_events(h), 20);
    assert_int_equal(fake_hub_connections(h), 1); /* the same connection carried on */
    assert_int_equal(fake_hub_gaps(h), 0);
    assert_int_equal(fake_hub_bad(h), 0);
    char line[512];
    assert_true(fake_hub_event(h, 19, line, sizeof line));
    assert_non_null(strstr(line, "\"data\":{\"n\":19}"));
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.published, 20);
    assert_int_equal(st.connects, 1);
    tu_assert_counters_add_up(p);
    assert_int_equal(mae_publisher_close(p, 2000), MAE_OK);
    fake_hub_stop(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_child_is_harmless_parent_keeps_its_connection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
