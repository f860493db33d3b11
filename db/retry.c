/* This module implements the retry rules of stores.md shared by the three
 * stores: the backoff schedule and the counting of one failure. */
#include "db/db_internal.h"

double mae__retry_delay(int64_t n)
{
    static const double schedule[] = {60, 300, 900, 3600, 7200};
    if (n < 1)
        n = 1;
    if (n > 5)
        n = 5;
    return schedule[n - 1];
}
