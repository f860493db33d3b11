/* Internal: the reconnect schedule shared by everything that talks to Redis
 * (the publisher's I/O thread, the relay, `mailagent events tail`):
 * capped exponential backoff with jitter. Never installed. */
#ifndef MAE_BACKOFF_H
#define MAE_BACKOFF_H

#include <stdint.h>

/* The delay in seconds before reconnect attempt number `failures` (>= 1):
 * min_ms doubling per failure up to max_ms, then jitter from -25 % (r = 0)
 * to +50 % (r -> 1), r uniform in [0, 1). */
double mae__backoff_delay(int min_ms, int max_ms, int failures, double r);

/* A uniform number in [0, 1) from the xorshift64 state *state, which must
 * start non-zero: take it from mae__rand_seed. Jitter only needs to spread
 * reconnects apart, so no stronger generator is used. */
double mae__rand_unit(uint64_t *state);

/* A non-zero starting state for mae__rand_unit: bytes from getrandom(2),
 * or, if that fails, the clock, the pid and salt (any address that differs
 * between users) mixed through splitmix64. Processes started in the same
 * second must draw differently from their first number on: xorshift's
 * first outputs of two nearby unmixed seeds are nearly equal. */
uint64_t mae__rand_seed(const void *salt);

#endif
