/* Test support: make the n-th allocation of this thread fail (see failalloc.c). */
#ifndef MAE_TEST_FAILALLOC_H
#define MAE_TEST_FAILALLOC_H

#include <stdbool.h>

void failalloc_arm(long n);     /* the n-th allocation from now fails (n >= 1) */
void failalloc_disarm(void);
bool failalloc_failed(void);    /* did the armed failure happen? */
long failalloc_live(void);      /* blocks allocated and not freed, process-wide */

#endif
