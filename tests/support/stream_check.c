/* Test support: the stream-mode checks of stream_check.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "stream_check.h"

int sc_number_of(const char *line)
{
    const char *d = line ? strstr(line, "\"data\":{\"n\":") : NULL;
    return d ? atoi(d + strlen("\"data\":{\"n\":")) : -1;
}

static void *feed_main(void *arg)
{
    sc_feeder *f = arg;
    char data[32];
    for (int i = 0; i < f->n; i++) {
        snprintf(data, sizeof data, "{\"n\":%d}", i);
        mae_safe_publish(f->p, "test.event", i, data, "test");
        if (f->gap_us) {
            struct timespec ts = {0, (long)f->gap_us * 1000};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

void sc_feed_start(sc_feeder *f, mae_publisher *p, int n, int gap_us)
{
    f->p = p;
    f->n = n;
    f->gap_us = gap_us;
    assert_int_equal(pthread_create(&f->thread, NULL, feed_main, f), 0);
}

void sc_feed_join(sc_feeder *f)
{
    pthread_join(f->thread, NULL);
}

void sc_assert_stream_exactly(mtr_redis *r, const char *key, int n)
{
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    redisReply *rep = redisCommand(c, "XRANGE %s - +", key);
    assert_non_null(rep);
    assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
    if ((int)rep->elements != n) {
        int dup = -1, seen_max = -1;
        for (size_t i = 0; i < rep->elements && dup < 0; i++) {
            int k = sc_number_of(rep->element[i]->element[1]->element[1]->str);
            if (k <= seen_max)
                dup = k;
            seen_max = k > seen_max ? k : seen_max;
        }
        fail_msg("the stream holds %zu entries for %d events (first out of order or doubled: %d)",
                 rep->elements, n, dup);
    }
    for (int i = 0; i < n; i++) {
        redisReply *e = rep->element[i];
        assert_int_equal(e->type, REDIS_REPLY_ARRAY);
        redisReply *fields = e->element[1];
        assert_int_equal(fields->elements, 2);
        assert_string_equal(fields->element[0]->str, "event");
        assert_int_equal(sc_number_of(fields->element[1]->str), i);
    }
    freeReplyObject(rep);
    redisFree(c);
}

int sc_assert_channel_no_doubles(mtr_sub **subs, int nsubs, int n)
{
    char *seen = calloc((size_t)n, 1);
    int distinct = 0;
    assert_non_null(seen);
    for (int s = 0; s < nsubs; s++) {
        int last = -1;
        for (size_t i = 0; i < mtr_sub_count(subs[s]); i++) {
            int k = sc_number_of(mtr_sub_message(subs[s], i));
            assert_true(k >= 0 && k < n);
            if (seen[k])
                fail_msg("the channel delivered event %d twice", k);
            assert_true(k > last);
            last = k;
            seen[k] = 1;
            distinct++;
        }
    }
    free(seen);
    return distinct;
}
