/* This module implements the reconnect schedule of core/backoff.h. */
#include "core/backoff.h"

double mae__backoff_delay(int min_ms, int max_ms, int failures, double r)
{
    double d = (double)min_ms;
    for (int i = 1; i < failures && d < max_ms; i++)
        d *= 2;
    if (d > max_ms)
        d = max_ms;
    return d * (0.75 + 0.75 * r) / 1000.0;
}

double mae__rand_unit(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return (double)(x >> 11) / (double)(1ull << 53);
}
