/* This file implements what the demo's users do while mail arrives: flags
 * and reads from Notion (webhook and poll) and from the CLI, the last one
 * inside a caller's transaction. */
#include <inttypes.h>
#include <stdio.h>

#include <sqlite3.h>

#include "demo.h"

static mail_state *pick_synced(watcher *w, int64_t *id)
{
    for (int tries = 0; tries < 8 && w->arrived > 0; tries++) {
        long i = rnd_range(w, 0, w->arrived - 1);
        if (w->mails[i].synced) {
            *id = w->base_id + i;
            return &w->mails[i];
        }
    }
    return NULL;
}

/* The CLI marks a mail read locally and tells Notion in the same
 * transaction, so that a crash between the two cannot leave them apart. The
 * enqueue's event is held by the library until the commit succeeds. */
static int cli_mark_read(watcher *w, int64_t id)
{
    uint64_t before_ins = w->enq_inserted, before_ev = w->ev[EV_OUTBOX_ENQUEUED];
    uint64_t before_merged = w->enq_merged;
    int rc = mae_db_begin(w->db);
    if (rc != MAE_OK)
        return fail(w, "mae_db_begin", id, rc);
    sqlite3_stmt *st = NULL;
    int src = sqlite3_prepare_v2(mae_db_sqlite(w->db),
                                 "UPDATE email_metadata SET is_read = 1 WHERE internal_id = ?",
                                 -1, &st, NULL);
    if (src == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, id);
        src = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    if (src != SQLITE_DONE) {
        fprintf(stderr, "\n" PROG ": UPDATE email_metadata(%" PRId64 "): %s\n", id,
                sqlite3_errmsg(mae_db_sqlite(w->db)));
        mae_db_rollback(w->db);
        return -1;
    }
    if (enqueue(w, id, "mark_read", "notion", "{\"is_read\":true}", MAE_SOURCE_CLI) < 0) {
        mae_db_rollback(w->db);
        return -1;
    }
    rc = mae_db_commit(w->db);
    if (rc != MAE_OK) {
        /* Nothing was published: take back what we counted. */
        mae_db_rollback(w->db);
        w->enq_inserted = before_ins;
        w->ev[EV_OUTBOX_ENQUEUED] = before_ev;
        w->enq_merged = before_merged;
        return fail(w, "mae_db_commit", id, rc);
    }
    w->tx_committed++;
    return 0;
}

int user_actions(watcher *w)
{
    int64_t id;
    double u = rnd(w);
    if (u < 0.06 && pick_synced(w, &id)) {
        /* Someone ticked "Flagged" in Notion. The webhook handler asks for
         * both targets; the notion half is echo-skipped by the library. */
        if (enqueue(w, id, "flag", "mailapp", "{\"is_flagged\":true}", MAE_SOURCE_NOTION_WEBHOOK) < 0 ||
            enqueue(w, id, "flag", "notion", "{\"is_flagged\":true}", MAE_SOURCE_NOTION_WEBHOOK) < 0)
            return -1;
        /* Sometimes the 30 s poll sees the same edit before the worker ran:
         * it merges into the pending intent, no second event. */
        if (rnd(w) < 0.4 &&
            enqueue(w, id, "flag", "mailapp", "{\"is_flagged\":true,\"seen_by_poll\":true}",
                    MAE_SOURCE_REVERSE_SYNC_POLL) < 0)
            return -1;
    } else if (u < 0.10 && pick_synced(w, &id)) {
        /* The poll catches an edit whose webhook was missed. */
        if (enqueue(w, id, "mark_read", "mailapp", "{\"is_read\":true}", MAE_SOURCE_REVERSE_SYNC_POLL) < 0)
            return -1;
    } else if (u < 0.12 && pick_synced(w, &id)) {
        if (enqueue(w, id, "flag", "mailapp", "{\"is_flagged\":true}", MAE_SOURCE_CLI) < 0 ||
            enqueue(w, id, "flag", "notion", "{\"is_flagged\":true}", MAE_SOURCE_CLI) < 0)
            return -1;
    } else if (u < 0.14 && pick_synced(w, &id)) {
        if (cli_mark_read(w, id) < 0)
            return -1;
    }
    return 0;
}
