/* Test support for stream mode's exactly-once checks, shared by the tests
 * over plain TCP (test_it_stream) and over TLS (test_it_tls): numbered
 * events published from a thread, and the assertions that a stream and a
 * channel hold each number once, in order. */
#ifndef MAE_TEST_STREAM_CHECK_H
#define MAE_TEST_STREAM_CHECK_H

#include <pthread.h>

#include <mailagent/events.h>

#include "redis_harness.h"

/* The number an event line carries in {"n":N}, or -1. */
int sc_number_of(const char *line);

/* A thread publishing events 0..n-1 ("test.event", data {"n":i}), one every
 * gap_us (0: flat out). */
typedef struct sc_feeder {
    mae_publisher *p;
    int n, gap_us;
    pthread_t thread;
} sc_feeder;
void sc_feed_start(sc_feeder *f, mae_publisher *p, int n, int gap_us);
void sc_feed_join(sc_feeder *f);

/* Reads the whole stream key of r (on its plain port) and asserts it holds
 * events 0..n-1, each once, in order, every entry with one field "event". */
void sc_assert_stream_exactly(mtr_redis *r, const char *key, int n);

/* Asserts the subscribers together saw no event twice and each in order;
 * returns how many distinct events they saw. */
int sc_assert_channel_no_doubles(mtr_sub **subs, int nsubs, int n);

#endif
