/* This module implements the reconnect schedule of core/backoff.h. */
#include "core/backoff.h"

#include <sys/random.h>
#include <time.h>
#include <unistd.h>

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

uint64_t mae__rand_seed(const void *salt)
{
    uint64_t x = 0;
    if (getrandom(&x, sizeof x, GRND_NONBLOCK) != (ssize_t)sizeof x) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        x = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
        x ^= (uint64_t)getpid() << 32 ^ (uint64_t)(uintptr_t)salt;
    }
    /* splitmix64's finaliser: every input bit reaches every output bit. */
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x ? x : 0x9e3779b97f4a7c15ull;
}
