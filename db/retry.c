/* This module implements the retry rules of docs/stores.md shared by the three
 * stores: the backoff schedule and the counting of one failure. */
#include <stdint.h>

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

void mae__failure_count(mae_db *db, int64_t stored, int limit, mae__failure *f)
{
    /* A negative count (another writer's doing) restarts from 0; a count at
     * INT64_MAX stays there, since count + 1 would overflow, which is
     * undefined behaviour. Every limit is an int, so a saturated count is
     * past it: the failure is terminal. */
    if (stored < 0)
        f->attempts = 1;
    else if (stored == INT64_MAX)
        f->attempts = INT64_MAX;
    else
        f->attempts = stored + 1;
    f->terminal = f->attempts >= limit;
    f->now = mae__db_now(db);
    f->next_retry_at = f->terminal ? 0 : f->now + mae__retry_delay(f->attempts);
}

int mae__failure_end(mae_db *db, int rc, const mae__failure *f, mae_retry_outcome *out)
{
    rc = mae__db_write_end(db, rc);
    if (rc == MAE_OK && out) {
        out->attempts = f->attempts;
        out->next_retry_at = f->next_retry_at;
        out->terminal = f->terminal;
    }
    return rc;
}
