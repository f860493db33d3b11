/* Test support: the clock, sleep, counter and database-file helpers of
 * testutil.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "capture.h"
#include "testutil.h"

const double tu_t0 = TU_T0;

bool tu_in_ci(void)
{
    const char *v = getenv("CI");
    return v && *v && strcmp(v, "0") != 0 && strcmp(v, "false") != 0;
}

void tu_missing_prerequisite(const char *what)
{
    if (tu_in_ci())
        fail_msg("%s, and CI is set: install it (scripts/install-deps.sh does)", what);
    print_message("%s: test skipped (it fails instead when CI=true)\n", what);
    skip();
}

void tu_assert_counters_add_up(mae_publisher *p)
{
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    assert_int_equal(st.calls, st.enqueued + st.dropped_queue_full + st.dropped_disabled +
                                   st.dropped_invalid + st.dropped_too_large);
    assert_int_equal(st.enqueued, st.published + st.dropped_send_error + st.queued + st.in_flight);
}

double tu_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void tu_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

void tu_db_path(char *out, size_t n, const char *tag)
{
    /* One counter for the whole test program, so two fixtures of one test
     * never share a file; the pid keeps parallel test programs apart. */
    static int counter;
    snprintf(out, n, "%s/%s-%d-%d.db", MAE_TEST_TMPDIR, tag, (int)getpid(), counter++);
    tu_remove_db(out);
}

void tu_remove_db(const char *path)
{
    char p[300];
    unlink(path);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", path);
    unlink(p);
}

/* The stores call this for every timestamp; user is the tu_db_config now. */
static double read_clock(void *user)
{
    return *(const double *)user;
}

void tu_db_config(mae_db_config *cfg, const char *path, mae_publisher *pub, const double *now)
{
    mae_db_config_init(cfg);
    cfg->path = path;
    cfg->publisher = pub;
    if (now) {
        cfg->clock = read_clock;
        cfg->clock_user = (void *)now; /* only ever read, by read_clock */
    }
}

tu_db *tu_db_new(const char *tag)
{
    tu_db *f = calloc(1, sizeof *f);
    assert_non_null(f);
    tu_db_path(f->path, sizeof f->path, tag);
    f->pub = cap_open();
    return f;
}

void tu_db_free(tu_db *f)
{
    mae_db_close(f->db);
    mae_publisher_close(f->pub, 5000);
    tu_remove_db(f->path);
    free(f);
}
