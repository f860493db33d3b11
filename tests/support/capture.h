/* Test support: a publisher whose Redis is a scripted fake in memory, so a
 * test can read back the exact lines the library published (cmocka unit
 * tests of the envelope and the stores). */
#ifndef MAE_TEST_CAPTURE_H
#define MAE_TEST_CAPTURE_H

#include <stdbool.h>
#include <stddef.h>

#include <mailagent/events.h>

#include "fake_transport.h"

/* A publisher on a fresh fake Redis that acknowledges everything. The fake
 * is reachable as cap_fake(p). Close with mae_publisher_close as usual. */
mae_publisher *cap_open(void);
fake_redis *cap_fake(mae_publisher *p);

/* Flushes p (asserting success) and returns how many lines the fake has
 * received on the publisher's channel so far. */
size_t cap_count(mae_publisher *p);
/* The i-th received line (0-based), borrowed until cap_clear/close. */
const char *cap_line(mae_publisher *p, size_t i);
/* Forgets the lines received so far. */
void cap_clear(mae_publisher *p);

/* Asserts that line equals expected after replacing the value of "ts" in
 * line by the literal TS (the rest must match byte for byte), and that ts is
 * a number with exactly six decimals. */
void cap_assert_line(const char *line, const char *expected_with_TS);

#endif
