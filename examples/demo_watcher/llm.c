/* This file implements the demo's LLM runs: each review of a synced mail
 * with realistic usage or a counted failure, the intents a successful
 * review asks for, and the retries the LLM store schedules. */
#include <stdio.h>
#include <string.h>

#include "demo.h"

static const char *const llm_errors[] = {
    "upstream 529: overloaded",
    "upstream 500: internal server error",
    "request timed out after 60s",
    "labels JSON did not validate against schema",
};

/* After a successful review the AI-reviewed handler wants both sides to
 * show the verdict: file the mail in Mail.app, set properties in Notion. */
static int ai_reviewed(watcher *w, int64_t id, const mail_state *m)
{
    const topic *t = &topics[m->topic];
    char payload[256];
    if (strcmp(t->priority, "high") == 0)
        snprintf(payload, sizeof payload, "{\"is_flagged\":true}");
    else
        snprintf(payload, sizeof payload, "{\"mailbox\":\"AI/%s\"}", t->category);
    if (enqueue(w, id, strcmp(t->priority, "high") == 0 ? "flag" : "move", "mailapp", payload,
                MAE_SOURCE_AI_REVIEWED_HANDLER) < 0)
        return -1;
    snprintf(payload, sizeof payload,
             "{\"properties\":{\"AI Category\":\"%s\",\"AI Priority\":\"%s\",\"Reviewed\":true}}",
             t->category, t->priority);
    return enqueue(w, id, "update_properties", "notion", payload, MAE_SOURCE_AI_REVIEWED_HANDLER);
}

/* One LLM run for a synced mail: pending while it runs, then success with
 * realistic usage, or a counted failure that the retry loop picks up. */
int llm_run(watcher *w, int64_t id, mail_state *m)
{
    int rc = mae_llm_store_mark_pending(w->db, id, m->page, mailboxes[m->mailbox]);
    if (rc != MAE_OK)
        return fail(w, "mae_llm_store_mark_pending", id, rc);
    w->llm_runs++;
    if (m->llm_failures < m->llm_fate) {
        mae_retry_outcome out;
        const char *err = PICK(llm_errors, (uint64_t)id + (uint64_t)m->llm_failures);
        rc = mae_llm_store_mark_failed(w->db, id, err, &out);
        if (rc != MAE_OK)
            return fail(w, "mae_llm_store_mark_failed", id, rc);
        m->llm_failures++;
        w->ev[out.terminal ? EV_LLM_GAVE_UP : EV_LLM_FAILED]++;
        return 0;
    }
    const topic *t = &topics[m->topic];
    bool big = rnd(w) < 0.15;    /* a few mails go to the larger model */
    mae_llm_usage u = {0};
    u.model = big ? "claude-3-5-sonnet-20241022" : "claude-3-5-haiku-20241022";
    u.input_tokens = rnd_range(w, 900, big ? 9000 : 5200);
    u.output_tokens = rnd_range(w, 60, 420);
    /* The system prompt is cached: most runs read it, a few write it. */
    double c = rnd(w);
    u.cache_read_input_tokens = c < 0.75 ? 2048 : 0;
    u.cache_creation_input_tokens = c >= 0.75 && c < 0.85 ? 2048 : 0;
    u.latency_ms = (big ? 1400 : 600) + u.output_tokens * (big ? 14 : 7) + rnd_range(w, 0, 900);
    char labels[384];
    snprintf(labels, sizeof labels,
             "{\"category\":\"%s\",\"priority\":\"%s\",\"needs_reply\":%s,"
             "\"summary\":\"%s from %s\"}",
             t->category, t->priority, rnd(w) < 0.3 ? "true" : "false", t->category,
             t->sender_name);
    u.labels_json = labels;
    rc = mae_llm_store_mark_success(w->db, id, m->page, &u);
    if (rc != MAE_OK)
        return fail(w, "mae_llm_store_mark_success", id, rc);
    w->ev[EV_LLM_SUCCESS]++;
    return ai_reviewed(w, id, m);
}

/* The retry loop, driven by the store's own "due" read. */
int retry_llm(watcher *w)
{
    mae_llm_list *due = NULL;
    int rc = mae_llm_store_due_for_retry(w->db, 0, 100, &due);
    if (rc != MAE_OK)
        return fail(w, "mae_llm_store_due_for_retry", 0, rc);
    for (size_t i = 0; i < due->count; i++) {
        int64_t id = due->rows[i].internal_id;
        mail_state *m = mail_of(w, id);
        if (m == NULL) {
            /* Not ours (an earlier run): give it the smallest real success. */
            mae_llm_usage u = {.model = "claude-3-5-haiku-20241022", .input_tokens = 900,
                               .output_tokens = 60, .latency_ms = 700};
            rc = mae_llm_store_mark_success(w->db, id, due->rows[i].notion_page_id, &u);
            if (rc != MAE_OK) {
                rc = fail(w, "mae_llm_store_mark_success", id, rc);
                break;
            }
            w->ev[EV_LLM_SUCCESS]++;
            continue;
        }
        if ((rc = llm_run(w, id, m)) < 0)
            break;
    }
    mae_llm_list_free(due);
    return rc < 0 ? -1 : 0;
}
