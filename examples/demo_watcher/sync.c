/* This file implements the demo's sync path: a new mail's metadata goes
 * into the sync store, then each attempt to fetch it and create its Notion
 * page, first on arrival and later from the store's retry schedule. */
#include <inttypes.h>
#include <stdio.h>

#include "demo.h"

static const char *const fetch_errors[] = {
    "IMAP FETCH timed out after 30s",
    "Mail.app AppleEvent timed out (-1712)",
    "message body not yet downloaded (partial fetch)",
};
static const char *const notion_errors[] = {
    "notion 502: bad gateway",
    "notion 429: rate limited, retry after 30s",
    "notion 409: conflict while saving page",
};

/* One attempt to fetch a mail and create its Notion page. The first attempt
 * is the new-mail path (source new_watcher); retries come from the retry
 * loop, which leaves the source to the store ("sync_store"). */
static int sync_attempt(watcher *w, int64_t id, mail_state *m, bool first)
{
    int rc;
    if (m->fetch_failures < m->fetch_fate) {
        /* Most failures are on the Mail.app side (fetch_failed); some are
         * Notion refusing the page (failed). */
        bool notion_side = fate_draw(w, 4, id) < 0.25;
        const char *status = notion_side ? "failed" : "fetch_failed";
        const char *err = notion_side ? PICK(notion_errors, (uint64_t)id + (uint64_t)m->fetch_failures)
                                      : PICK(fetch_errors, (uint64_t)id + (uint64_t)m->fetch_failures);
        mae_retry_outcome out;
        rc = mae_sync_store_mark_failed(w->db, id, status, err, &out);
        if (rc != MAE_OK)
            return fail(w, "mae_sync_store_mark_failed", id, rc);
        m->fetch_failures++;
        w->ev[out.terminal ? EV_EMAIL_DEAD_LETTER : EV_EMAIL_FAILED]++;
        return 0;
    }
    rc = mae_sync_store_mark_synced(w->db, id, m->page, NULL,
                                    first ? MAE_SOURCE_NEW_WATCHER : NULL);
    if (rc != MAE_OK)
        return fail(w, "mae_sync_store_mark_synced", id, rc);
    m->synced = true;
    w->ev[EV_EMAIL_SYNCED]++;
    return llm_run(w, id, m);
}

/* A new mail reaches the watcher: record its metadata, then try to sync it. */
int new_mail(watcher *w, long i)
{
    mail_state *m = &w->mails[i];
    int64_t id = w->base_id + i;
    const topic *t = &topics[m->topic];
    char message_id[96], thread_id[48], date[32];
    snprintf(message_id, sizeof message_id, "<%016" PRIx64 ".%" PRId64 "@mail.example.com>",
             mix64(w->opt.seed ^ (uint64_t)id), id);
    snprintf(thread_id, sizeof thread_id, "thread-%" PRId64, w->base_id + i - i % 3);
    format_sim_time(w->sim_now, date, sizeof date);
    mae_email mail = {
        .internal_id = id,
        .message_id = message_id,
        .thread_id = thread_id,
        .subject = t->subject,
        .sender = t->sender,
        .sender_name = t->sender_name,
        .to_addr = "me@example.com",
        .cc_addr = NULL,
        .date_received = date,
        .mailbox = mailboxes[m->mailbox],
    };
    int rc = mae_sync_store_upsert(w->db, &mail);
    if (rc != MAE_OK)
        return fail(w, "mae_sync_store_upsert", id, rc);
    w->arrived = i + 1;
    return sync_attempt(w, id, m, true);
}

/* The retry loop, driven by the store's own "due" read. */
int retry_sync(watcher *w)
{
    mae_email_list *due = NULL;
    int rc = mae_sync_store_due_for_retry(w->db, 0, 100, &due);
    if (rc != MAE_OK)
        return fail(w, "mae_sync_store_due_for_retry", 0, rc);
    for (size_t i = 0; i < due->count; i++) {
        int64_t id = due->rows[i].internal_id;
        mail_state *m = mail_of(w, id);
        if (m == NULL) {
            /* Left over from an earlier, interrupted run on the same file:
             * let it go through rather than keep it due forever. */
            rc = mae_sync_store_mark_synced(w->db, id, "page-recovered", NULL, NULL);
            if (rc != MAE_OK) {
                rc = fail(w, "mae_sync_store_mark_synced", id, rc);
                break;
            }
            w->ev[EV_EMAIL_SYNCED]++;
            continue;
        }
        if ((rc = sync_attempt(w, id, m, false)) < 0)
            break;
    }
    mae_email_list_free(due);
    return rc < 0 ? -1 : 0;
}
