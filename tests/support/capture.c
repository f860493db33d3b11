/* Test support: a publisher on a fake Redis that keeps every line it
 * receives (see capture.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "capture.h"

static void release_fake(void *user)
{
    fake_redis_free(user);
}

mae_publisher *cap_open(void)
{
    mae_publisher_config cfg;
    mae_publisher *p = NULL;
    fake_redis *f = fake_redis_new();
    mae__transport_ops ops = fake_redis_ops(f);
    ops.release = release_fake;
    mae_publisher_config_init(&cfg);
    cfg.redis_url = "redis://127.0.0.1:6379"; /* never dialled: the fake answers */
    cfg.backoff_min_ms = 1;
    cfg.backoff_max_ms = 10;
    int rc = mae__publisher_open_with(&cfg, &ops, &p);
    assert_int_equal(rc, MAE_OK);
    assert_non_null(p);
    return p;
}

fake_redis *cap_fake(mae_publisher *p)
{
    return mae__publisher_transport_user(p);
}

size_t cap_count(mae_publisher *p)
{
    assert_int_equal(mae_publisher_flush(p, 10000), MAE_OK);
    return fake_redis_published(cap_fake(p));
}

const char *cap_line(mae_publisher *p, size_t i)
{
    return fake_redis_message(cap_fake(p), i);
}

void cap_clear(mae_publisher *p)
{
    assert_int_equal(mae_publisher_flush(p, 10000), MAE_OK);
    fake_redis_clear(cap_fake(p));
}

void cap_assert_line(const char *line, const char *expected)
{
    assert_non_null(line);
    const char *key = "\"ts\":";
    const char *ts = strstr(line, key);
    assert_non_null(ts);
    ts += strlen(key);
    const char *end = ts;
    while ((*end >= '0' && *end <= '9') || *end == '.' || *end == '-')
        end++;
    const char *dot = memchr(ts, '.', (size_t)(end - ts));
    assert_non_null(dot);
    assert_int_equal(end - dot - 1, 6); /* microsecond resolution, always six digits */

    size_t n = (size_t)(ts - line) + 2 + strlen(end) + 1;
    char *norm = malloc(n);
    assert_non_null(norm);
    memcpy(norm, line, (size_t)(ts - line));
    strcpy(norm + (ts - line), "TS");
    strcat(norm, end);
    assert_string_equal(norm, expected);
    free(norm);
}
