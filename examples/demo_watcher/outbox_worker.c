/* This file implements the demo's side of the outbox: enqueueing an intent
 * with the counts of what the library did, and the fan-out worker that
 * runs ready intents against their simulated targets. */
#include <string.h>

#include "demo.h"

static const char *const outbox_errors_notion[] = {
    "notion 502: bad gateway",
    "notion 429: rate limited",
};
static const char *const outbox_errors_mailapp[] = {
    "Mail.app AppleEvent timed out (-1712)",
    "Mail.app: message not found in mailbox",
};

/* Enqueues one intent and counts what the library says happened: only a
 * newly inserted row announces itself. */
int enqueue(watcher *w, int64_t id, const char *op, const char *target, const char *payload,
            const char *source)
{
    bool inserted = false;
    int64_t oid = 0;
    int rc = mae_outbox_enqueue(w->db, id, op, target, payload, source, &oid, &inserted);
    if (rc == MAE_SKIPPED) {
        w->enq_skipped++;        /* notion_webhook -> notion: echo prevention */
        return 0;
    }
    if (rc != MAE_OK)
        return fail(w, "mae_outbox_enqueue", id, rc);
    if (inserted) {
        w->enq_inserted++;
        w->ev[EV_OUTBOX_ENQUEUED]++;
    } else {
        w->enq_merged++;
    }
    return 0;
}

/* The fan-out worker: runs every ready intent once against its (simulated)
 * target. A failed intent waits for its retry time on the stores' clock. */
int fan_out(watcher *w)
{
    for (int round = 0; round < 100; round++) {
        mae_outbox_list *ready = NULL;
        int rc = mae_outbox_poll_ready(w->db, NULL, 50, &ready);
        if (rc != MAE_OK)
            return fail(w, "mae_outbox_poll_ready", 0, rc);
        size_t n = ready->count;
        for (size_t i = 0; i < n && rc >= 0; i++) {
            const mae_outbox_row *row = &ready->rows[i];
            rc = mae_outbox_mark_processing(w->db, row->outbox_id);
            if (rc == MAE_ESTATE) {      /* another worker got there first */
                rc = 0;
                continue;
            }
            if (rc < 0) {
                fail(w, "mae_outbox_mark_processing", row->outbox_id, rc);
                break;
            }
            /* About 5 % of intents fail at least once; 1 % never get through. */
            double u = fate_draw(w, 3, row->outbox_id);
            int fate = u < 0.01 ? FATE_FOREVER : u < 0.05 ? 1 + (int)(u * 100) % 2 : 0;
            if (row->attempts < fate) {
                bool notion = strcmp(row->target, "notion") == 0;
                const char *err = notion ? PICK(outbox_errors_notion, row->outbox_id + row->attempts)
                                         : PICK(outbox_errors_mailapp, row->outbox_id + row->attempts);
                mae_retry_outcome out;
                rc = mae_outbox_mark_failed(w->db, row->outbox_id, err, &out);
                if (rc == MAE_OK) {
                    w->ev[out.terminal ? EV_OUTBOX_DEAD_LETTER : EV_OUTBOX_FAILED]++;
                } else {
                    fail(w, "mae_outbox_mark_failed", row->outbox_id, rc);
                }
            } else {
                rc = mae_outbox_mark_done(w->db, row->outbox_id);
                if (rc == MAE_OK)
                    w->ev[EV_OUTBOX_DONE]++;
                else if (rc != MAE_SKIPPED)
                    fail(w, "mae_outbox_mark_done", row->outbox_id, rc);
            }
        }
        mae_outbox_list_free(ready);
        if (rc < 0)
            return -1;
        if (n == 0)
            return 0;
    }
    return 0;
}
