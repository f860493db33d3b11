/* Test support: malloc, calloc, realloc and strdup that fail on demand, for
 * out-of-memory sweeps ("fail the n-th allocation for n = 1, 2, ..."). They
 * replace the C library's for the whole process, including SQLite, json-c
 * and hiredis, and count live blocks so a sweep can check for leaks.
 * Linked only into tests/test_oom*.c, never under a sanitizer or valgrind
 * (both replace malloc themselves). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "failalloc.h"

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);

/* Countdown to the failing allocation: 0 = off. Only the thread that armed
 * it is affected, so a publisher's I/O thread does not eat the count. */
static _Thread_local long countdown;
static _Thread_local bool failed_once;
static atomic_long live_blocks;

void failalloc_arm(long n)
{
    countdown = n;
    failed_once = false;
}

void failalloc_disarm(void)
{
    countdown = 0;
}

bool failalloc_failed(void)
{
    return failed_once;
}

long failalloc_live(void)
{
    return atomic_load(&live_blocks);
}

/* The project builds with hidden visibility; these must be seen by the
 * shared libraries (SQLite, json-c, hiredis, libc) to replace theirs. */
#define EXPORT __attribute__((visibility("default")))

static bool should_fail(void)
{
    if (countdown > 0 && --countdown == 0) {
        failed_once = true;
        return true;
    }
    return false;
}

EXPORT void *malloc(size_t n)
{
    if (should_fail()) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = __libc_malloc(n);
    if (p)
        atomic_fetch_add(&live_blocks, 1);
    return p;
}

EXPORT void *calloc(size_t a, size_t b)
{
    if (should_fail()) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = __libc_calloc(a, b);
    if (p)
        atomic_fetch_add(&live_blocks, 1);
    return p;
}

EXPORT void *realloc(void *old, size_t n)
{
    if (!old)
        return malloc(n);
    if (n == 0) {
        free(old);
        return NULL;
    }
    if (should_fail()) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_realloc(old, n);
}

EXPORT void free(void *p)
{
    if (p) {
        atomic_fetch_sub(&live_blocks, 1);
        __libc_free(p);
    }
}

EXPORT char *strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}
