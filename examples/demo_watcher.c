/* This program implements the demo sync watcher: a simulated day of mail
 * driven through the sync store, the outbox and the LLM store exactly as a
 * real watcher links the library, with a summary that can be reconciled
 * against the event stream and the database.
 *
 *   demo_watcher [--mails N] [--db PATH] [--redis URL] [--channel C]
 *                [--seed N] [--fast]
 *
 * Environment: MAILAGENT_DB, MAILAGENT_REDIS_URL, MAILAGENT_CHANNEL (the
 * options win). Without a Redis URL the publisher is disabled and only the
 * state is written.
 *
 * Time: the stores run on a simulated clock (mae_db_config.clock) that
 * starts a day ago and advances with each mail, so retry schedules of
 * minutes and hours become due within seconds of real time. Event `ts`
 * values are stamped by the publisher with the real clock. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include <mailagent/events.h>

#define PROG "demo_watcher"

/* Real time per mail when paced: 500 mails in about 7 s, slow enough to
 * watch a tail scroll, fast enough for `make demo`. */
#define PACE_S_PER_MAIL 0.014

/* The simulated day: mails arrive over 20 h that end 4 h ago, which leaves
 * the retry schedule (60 s ... 7200 s) room to settle before "now". */
#define SIM_BACK_S (24.0 * 3600.0)
#define SIM_SPAN_S (20.0 * 3600.0)
#define DRAIN_STEP_S 300.0
#define DRAIN_MAX_ROUNDS 2000

/* A fate at or above this is "fails until the store gives up". */
#define FATE_FOREVER 1000

/* ---- the events this watcher caused, counted from return codes ----------- */

enum {
    EV_EMAIL_SYNCED,
    EV_EMAIL_FAILED,
    EV_EMAIL_DEAD_LETTER,
    EV_OUTBOX_ENQUEUED,
    EV_OUTBOX_DONE,
    EV_OUTBOX_FAILED,
    EV_OUTBOX_DEAD_LETTER,
    EV_LLM_SUCCESS,
    EV_LLM_FAILED,
    EV_LLM_GAVE_UP,
    EV_COUNT
};

static const char *const ev_names[EV_COUNT] = {
    "email.synced",   "email.failed",       "email.dead_letter", "outbox.enqueued",
    "outbox.done",    "outbox.failed",      "outbox.dead_letter", "llm.success",
    "llm.failed",     "llm.gave_up",
};

/* What the simulation decided about one mail up front, so that a mail that
 * is doomed keeps failing on every retry instead of rolling dice again. */
typedef struct mail_state {
    int fetch_fate;      /* failures before the fetch succeeds */
    int fetch_failures;
    int llm_fate;        /* failures before the LLM run succeeds */
    int llm_failures;
    bool synced;
    int mailbox;         /* index into mailboxes[] */
    int topic;           /* index into topics[] */
    char page[40];       /* the Notion page id it syncs to */
} mail_state;

typedef struct options {
    long mails;
    const char *db_path;
    const char *redis_url;
    const char *channel;
    uint64_t seed;
    bool seed_given;
    bool fast;
} options;

typedef struct watcher {
    options opt;
    mae_db *db;
    mae_publisher *pub;
    double sim_now;          /* the stores' clock */
    double sim_start;
    uint64_t rng;
    int64_t base_id;         /* internal_id of mail 0 */
    long arrived;            /* mails that have reached the watcher */
    mail_state *mails;

    uint64_t ev[EV_COUNT];
    uint64_t enq_inserted, enq_merged, enq_skipped;
    uint64_t llm_runs, tx_committed;
    bool flush_timed_out;
} watcher;

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* ---- deterministic randomness --------------------------------------------- */

/* splitmix64: tiny, good enough for a simulation, and identical on every
 * platform so that --seed reproduces a run exactly. */
static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static double rnd(watcher *w)
{
    w->rng = mix64(w->rng);
    return (double)(w->rng >> 11) / 9007199254740992.0;
}

static long rnd_range(watcher *w, long lo, long hi) /* inclusive */
{
    return lo + (long)(rnd(w) * (double)(hi - lo + 1));
}

/* A per-entity uniform draw that does not depend on the order of calls:
 * an outbox row's fate must not change because another row failed first. */
static double fate_draw(const watcher *w, uint64_t kind, int64_t id)
{
    uint64_t h = mix64(w->opt.seed ^ mix64(kind * 0x100000001b3ULL ^ (uint64_t)id));
    return (double)(h >> 11) / 9007199254740992.0;
}

/* ---- the simulated world --------------------------------------------------- */

static const char *const mailboxes[] = {"INBOX", "INBOX", "INBOX", "Work", "Receipts",
                                        "Newsletters"};

typedef struct topic {
    const char *subject, *sender, *sender_name, *category, *priority;
} topic;

static const topic topics[] = {
    {"Your order has shipped", "ship-confirm@amazon.com", "Amazon.com", "receipt", "low"},
    {"Q3 planning: draft agenda", "maria.keller@acme.io", "Maria Keller", "work", "high"},
    {"Invoice INV-20931 due in 7 days", "billing@hetzner.com", "Hetzner Billing", "finance",
     "medium"},
    {"Weekly digest: 12 new posts", "digest@substack.com", "Substack", "newsletter", "low"},
    {"Re: PR #482 flaky test in CI", "noreply@github.com", "GitHub", "work", "medium"},
    {"Réunion d'équipe jeudi", "camille.roux@exemple.fr", "Camille Roux", "work", "medium"},
    {"会议纪要：周一产品评审", "li.wei@example.cn", "李伟", "work", "high"},
    {"Security alert: new sign-in", "no-reply@accounts.google.com", "Google", "security", "high"},
    {"Your receipt from Apple", "no_reply@email.apple.com", "Apple", "receipt", "low"},
    {"Dinner on Saturday?", "sam.taylor@fastmail.com", "Sam Taylor", "personal", "medium"},
    {"[incident] api latency p95 > 2s", "alerts@pagerduty.com", "PagerDuty", "alert", "high"},
    {"Flight LH 455 check-in open", "info@lufthansa.com", "Lufthansa", "travel", "medium"},
};
#define N_TOPICS (sizeof topics / sizeof topics[0])
#define N_MAILBOXES (sizeof mailboxes / sizeof mailboxes[0])

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
static const char *const llm_errors[] = {
    "upstream 529: overloaded",
    "upstream 500: internal server error",
    "request timed out after 60s",
    "labels JSON did not validate against schema",
};
static const char *const outbox_errors_notion[] = {
    "notion 502: bad gateway",
    "notion 429: rate limited",
};
static const char *const outbox_errors_mailapp[] = {
    "Mail.app AppleEvent timed out (-1712)",
    "Mail.app: message not found in mailbox",
};

#define PICK(arr, r) ((arr)[(size_t)(r) % (sizeof(arr) / sizeof((arr)[0]))])

/* ---- errors ----------------------------------------------------------------- */

/* One line saying which call failed on which row and why; returns -1 so the
 * caller can `return fail(...)`. A demo that reconciles counts must stop at
 * the first unexpected error rather than carry on with numbers that lie. */
static int fail(watcher *w, const char *what, int64_t id, int rc)
{
    const char *detail = w->db ? mae_db_errmsg(w->db) : "";
    fprintf(stderr, "\n" PROG ": %s(%" PRId64 ") failed: %s%s%s\n", what, id, mae_strerror(rc),
            detail && *detail ? ": " : "", detail ? detail : "");
    return -1;
}

static double sim_clock(void *user)
{
    return ((const watcher *)user)->sim_now;
}

static mail_state *mail_of(watcher *w, int64_t id)
{
    int64_t i = id - w->base_id;
    return (i >= 0 && i < w->arrived) ? &w->mails[i] : NULL;
}

/* ---- outbox ------------------------------------------------------------------ */

/* Enqueues one intent and counts what the library says happened: only a
 * newly inserted row announces itself. */
static int enqueue(watcher *w, int64_t id, const char *op, const char *target,
                   const char *payload, const char *source)
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
static int fan_out(watcher *w)
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

/* ---- LLM --------------------------------------------------------------------- */

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
static int llm_run(watcher *w, int64_t id, mail_state *m)
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

/* ---- sync ----------------------------------------------------------------------- */

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

static void format_sim_time(double t, char *buf, size_t size)
{
    time_t s = (time_t)t;
    struct tm tm;
    gmtime_r(&s, &tm);
    strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm);
}

/* A new mail reaches the watcher: record its metadata, then try to sync it. */
static int new_mail(watcher *w, long i)
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

/* ---- retry loops, driven by the stores' own "due" reads ------------------------ */

static int retry_sync(watcher *w)
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

static int retry_llm(watcher *w)
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

/* ---- what users do meanwhile ------------------------------------------------------ */

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

static int user_actions(watcher *w)
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

/* Everything the watcher does whenever the clock moves. */
static int tick(watcher *w)
{
    if (retry_sync(w) < 0 || retry_llm(w) < 0 || fan_out(w) < 0)
        return -1;
    return 0;
}

/* Whether anything is still scheduled: a far-future "now" asks the stores
 * for every row that still has a retry ahead of it. */
static int outstanding(watcher *w, bool *any)
{
    mae_email_list *el = NULL;
    mae_llm_list *ll = NULL;
    mae_outbox_depth d;
    int rc = mae_sync_store_due_for_retry(w->db, 1e15, 1, &el);
    if (rc != MAE_OK)
        return fail(w, "mae_sync_store_due_for_retry", 0, rc);
    *any = el->count > 0;
    mae_email_list_free(el);
    rc = mae_llm_store_due_for_retry(w->db, 1e15, 1, &ll);
    if (rc != MAE_OK)
        return fail(w, "mae_llm_store_due_for_retry", 0, rc);
    *any = *any || ll->count > 0;
    mae_llm_list_free(ll);
    rc = mae_outbox_queue_depth(w->db, &d);
    if (rc != MAE_OK)
        return fail(w, "mae_outbox_queue_depth", 0, rc);
    *any = *any || d.pending + d.processing + d.failed > 0;
    return 0;
}

/* ---- progress and summary ------------------------------------------------------- */

static uint64_t total_events(const watcher *w)
{
    uint64_t n = 0;
    for (int i = 0; i < EV_COUNT; i++)
        n += w->ev[i];
    return n;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* On a terminal the line is redrawn in place; in a log (make demo piped,
 * CI) a line every 10 % keeps the log short. */
static void progress(watcher *w, bool tty, bool draining, bool done)
{
    static double last_draw;
    static int last_decile = -1;
    long n = w->opt.mails;
    int pct = n > 0 ? (int)(w->arrived * 100 / n) : 100;
    if (tty) {
        double now = mono_s();
        if (!done && now - last_draw < 0.1)
            return;
        last_draw = now;
    } else {
        int decile = pct / 10;
        if (!done && decile == last_decile)
            return;
        last_decile = decile;
    }
    /* Short enough for an 80-column terminal, or \r cannot redraw it. */
    char sim[32];
    format_sim_time(w->sim_now, sim, sizeof sim);
    fprintf(stderr, "%s[%3d%%] %ld/%ld mails, sim %.5s, %" PRIu64 " events, %" PRIu64
            " synced, %" PRIu64 " dead%s%s",
            tty ? "\r" : "", pct, w->arrived, n, sim + 11, total_events(w),
            w->ev[EV_EMAIL_SYNCED],
            w->ev[EV_EMAIL_DEAD_LETTER] + w->ev[EV_OUTBOX_DEAD_LETTER] + w->ev[EV_LLM_GAVE_UP],
            done ? (interrupted ? ", interrupted" : ", done") : draining ? ", draining" : "",
            tty ? "\033[K" : "\n");
    fflush(stderr);
}

static void print_counts(const char *table, mae_counts *c)
{
    int64_t total = 0;
    printf("  %-15s", table);
    for (size_t i = 0; i < c->count; i++) {
        printf(" %s=%" PRId64, c->items[i].key ? c->items[i].key : "(null)", c->items[i].count);
        total += c->items[i].count;
    }
    printf("  (total %" PRId64 ")\n", total);
}

static int summary(watcher *w, double elapsed)
{
    char from[32], to[32];
    format_sim_time(w->sim_start, from, sizeof from);
    format_sim_time(w->sim_now, to, sizeof to);
    printf("\n" PROG ": %ld mails, seed %" PRIu64 ", simulated %s .. %s UTC, %.1f s real\n",
           w->arrived, w->opt.seed, from, to, elapsed);

    printf("events by type (successful store calls that announce a change):\n");
    for (int i = 0; i < EV_COUNT; i++)
        printf("  %-20s %6" PRIu64 "\n", ev_names[i], w->ev[i]);
    printf("  %-20s %6" PRIu64 "\n", "total", total_events(w));
    printf("outbox enqueues: inserted=%" PRIu64 " merged=%" PRIu64 " (no event) echo_skipped=%" PRIu64
           " (no event)\n", w->enq_inserted, w->enq_merged, w->enq_skipped);
    printf("work: llm runs=%" PRIu64 ", caller transactions committed=%" PRIu64
           " (mark read + notion intent)\n", w->llm_runs, w->tx_committed);

    /* Flush first so that the counters describe the whole run. Redis being
     * away is not an error of the run: the counters will say so. */
    int frc = mae_publisher_flush(w->pub, 3000);
    w->flush_timed_out = frc != MAE_OK;
    mae_publisher_stats ps;
    mae_publisher_stats_get(w->pub, &ps);
    printf("publisher%s: calls=%" PRIu64 " enqueued=%" PRIu64 " published=%" PRIu64 " queued=%" PRIu64
           " dropped_queue_full=%" PRIu64 " dropped_disabled=%" PRIu64 " dropped_invalid=%" PRIu64
           " dropped_send_error=%" PRIu64 " connects=%" PRIu64 " connect_failures=%" PRIu64 "\n",
           frc == MAE_OK ? "" : " (flush timed out)", ps.calls, ps.enqueued, ps.published,
           ps.queued, ps.dropped_queue_full, ps.dropped_disabled, ps.dropped_invalid,
           ps.dropped_send_error, ps.connects, ps.connect_failures);
    if (ps.last_error[0])
        printf("publisher last error: %s\n", ps.last_error);
    if (ps.calls != total_events(w))
        fprintf(stderr, PROG ": warning: %" PRIu64 " events counted from return codes but the "
                "publisher saw %" PRIu64 " calls\n", total_events(w), ps.calls);

    printf("rows by status (read back through the store API):\n");
    mae_counts *c = NULL;
    int rc = mae_sync_store_count_by_status(w->db, &c);
    if (rc != MAE_OK)
        return fail(w, "mae_sync_store_count_by_status", 0, rc);
    print_counts("email_metadata", c);
    mae_counts_free(c);
    mae_outbox_depth d;
    rc = mae_outbox_queue_depth(w->db, &d);
    if (rc != MAE_OK)
        return fail(w, "mae_outbox_queue_depth", 0, rc);
    printf("  %-15s pending=%" PRId64 " processing=%" PRId64 " done=%" PRId64 " failed=%" PRId64
           " dead_letter=%" PRId64 "  (total %" PRId64 ")\n",
           "email_outbox", d.pending, d.processing, d.done, d.failed, d.dead_letter,
           d.pending + d.processing + d.done + d.failed + d.dead_letter);
    rc = mae_llm_store_count_by_status(w->db, &c);
    if (rc != MAE_OK)
        return fail(w, "mae_llm_store_count_by_status", 0, rc);
    print_counts("llm_processing", c);
    mae_counts_free(c);
    mae_llm_totals t;
    rc = mae_llm_store_totals(w->db, &t);
    if (rc != MAE_OK)
        return fail(w, "mae_llm_store_totals", 0, rc);
    printf("llm totals: successes=%" PRId64 " input_tokens=%" PRId64 " output_tokens=%" PRId64
           " cache_read=%" PRId64 " latency mean %.0f ms, p95 %.0f ms\n",
           t.successes, t.input_tokens, t.output_tokens, t.cache_read_input_tokens,
           t.latency_mean_ms, t.latency_p95_ms);
    return 0;
}

/* ---- setup -------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: " PROG " [--mails N] [--db PATH] [--redis URL] [--channel C] [--seed N] [--fast]\n"
            "  --mails N     mails in the simulated day (default 500)\n"
            "  --db PATH     SQLite file (default $MAILAGENT_DB, else mailagent-demo.db)\n"
            "  --redis URL   e.g. redis://127.0.0.1:6379 (default $MAILAGENT_REDIS_URL;\n"
            "                none: publisher disabled, state only)\n"
            "  --channel C   default $MAILAGENT_CHANNEL, else mailagent:events:v1\n"
            "  --seed N      reproducible run (default: from the time)\n"
            "  --fast        do not pace (default: about 7 s per 500 mails)\n");
}

static bool parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (s == NULL || *s == '\0' || *s == '-')
        return false;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *out = v;
    return true;
}

/* Returns 0, or the exit status to leave with. */
static int parse_args(int argc, char **argv, options *o)
{
    o->mails = 500;
    o->db_path = getenv("MAILAGENT_DB");
    o->redis_url = getenv("MAILAGENT_REDIS_URL");
    o->channel = getenv("MAILAGENT_CHANNEL");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t v;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return -1;
        } else if (strcmp(a, "--fast") == 0) {
            o->fast = true;
            continue;
        } else if (strcmp(a, "--mails") != 0 && strcmp(a, "--seed") != 0 &&
                   strcmp(a, "--db") != 0 && strcmp(a, "--redis") != 0 &&
                   strcmp(a, "--channel") != 0) {
            fprintf(stderr, PROG ": unknown option '%s' (see --help)\n", a);
            return 2;
        } else if (val == NULL) {
            fprintf(stderr, PROG ": %s needs a value (see --help)\n", a);
            return 2;
        } else if (strcmp(a, "--mails") == 0) {
            if (!parse_u64(val, &v) || v < 1 || v > 10000000) {
                fprintf(stderr, PROG ": --mails wants a number from 1 to 10000000, not '%s'\n", val);
                return 2;
            }
            o->mails = (long)v;
        } else if (strcmp(a, "--seed") == 0) {
            if (!parse_u64(val, &v)) {
                fprintf(stderr, PROG ": --seed wants a non-negative number, not '%s'\n", val);
                return 2;
            }
            o->seed = v;
            o->seed_given = true;
        } else if (strcmp(a, "--db") == 0) {
            o->db_path = val;
        } else if (strcmp(a, "--redis") == 0) {
            o->redis_url = val;
        } else {
            o->channel = val;
        }
        i++;
    }
    if (o->db_path == NULL || *o->db_path == '\0')
        o->db_path = "mailagent-demo.db";
    if (o->channel != NULL && *o->channel == '\0')
        o->channel = NULL;
    if (!o->seed_given) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        o->seed = ((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u) % 1000000u;
    }
    return 0;
}

/* Starts after the highest id already in the file, so a second run on the
 * same database adds another day instead of rewriting the first. */
static int64_t first_free_id(mae_db *db)
{
    int64_t id = 53000;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(mae_db_sqlite(db), "SELECT MAX(internal_id) FROM email_metadata", -1,
                           &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        id = sqlite3_column_int64(st, 0) + 1;
    sqlite3_finalize(st);
    return id;
}

static void decide_fates(watcher *w)
{
    for (long i = 0; i < w->opt.mails; i++) {
        mail_state *m = &w->mails[i];
        int64_t id = w->base_id + i;
        /* ~10 % of mails fail to fetch at least once, ~2 % never make it. */
        double f = fate_draw(w, 1, id);
        m->fetch_fate = f < 0.02 ? FATE_FOREVER : f < 0.10 ? 1 + (int)(f * 1000) % 3 : 0;
        /* ~8 % of LLM runs fail at least once, ~1 % give up. */
        double l = fate_draw(w, 2, id);
        m->llm_fate = l < 0.01 ? FATE_FOREVER : l < 0.08 ? 1 + (int)(l * 1000) % 2 : 0;
        m->mailbox = (int)(mix64(w->opt.seed + (uint64_t)id * 7) % N_MAILBOXES);
        m->topic = (int)(mix64(w->opt.seed + (uint64_t)id * 13) % N_TOPICS);
        uint64_t h = mix64(w->opt.seed ^ ((uint64_t)id << 20));
        snprintf(m->page, sizeof m->page, "%08" PRIx64 "-%04" PRIx64 "-4%03" PRIx64 "-a%03" PRIx64
                 "-%012" PRIx64, h >> 32, (h >> 16) & 0xffff, (h >> 4) & 0xfff, h & 0xfff,
                 (uint64_t)(mix64(h) & 0xffffffffffffULL));
    }
}

/* Sleeps until mail i's slot on the real clock, so that the time the work
 * itself takes (more on a busy machine) is absorbed rather than added. */
static void pace(const watcher *w, double t0, long i)
{
    if (w->opt.fast)
        return;
    double left = t0 + (double)(i + 1) * PACE_S_PER_MAIL - mono_s();
    if (left <= 0)
        return;
    /* No floor(): examples link no libm. */
    time_t whole = (time_t)left;
    struct timespec ts = {whole, (long)((left - (double)whole) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !interrupted) {
    }
}

static int run(watcher *w, bool tty)
{
    /* Arrivals are spread evenly over the span with jitter inside each
     * slot, so they stay in order. */
    double slot = SIM_SPAN_S / (double)w->opt.mails;
    double t0 = mono_s();
    for (long i = 0; i < w->opt.mails && !interrupted; i++) {
        w->sim_now = w->sim_start + slot * ((double)i + 0.9 * rnd(w));
        if (tick(w) < 0 || new_mail(w, i) < 0 || user_actions(w) < 0 || fan_out(w) < 0)
            return -1;
        progress(w, tty, false, false);
        pace(w, t0, i);
    }
    /* The day is over: let the clock run until every retry has either
     * succeeded or given up, so the final counts are settled. */
    for (int r = 0; r < DRAIN_MAX_ROUNDS && !interrupted; r++) {
        bool any = false;
        if (outstanding(w, &any) < 0)
            return -1;
        if (!any)
            return 0;
        w->sim_now += DRAIN_STEP_S;
        if (tick(w) < 0)
            return -1;
        progress(w, tty, true, false);
    }
    if (!interrupted)
        fprintf(stderr, "\n" PROG ": warning: retries still scheduled after the drain\n");
    return 0;
}

int main(int argc, char **argv)
{
    watcher w;
    memset(&w, 0, sizeof w);
    int prc = parse_args(argc, argv, &w.opt);
    if (prc != 0)
        return prc < 0 ? 0 : prc;

    char perr[256] = "";
    mae_publisher_config pcfg;
    mae_publisher_config_init(&pcfg);
    pcfg.redis_url = w.opt.redis_url;
    if (w.opt.channel)
        pcfg.channel = w.opt.channel;
    pcfg.error_buf = perr;
    pcfg.error_buf_size = sizeof perr;
    int rc = mae_publisher_open(&pcfg, &w.pub);
    if (rc != MAE_OK) {
        fprintf(stderr, PROG ": cannot open the publisher for '%s': %s\n",
                w.opt.redis_url ? w.opt.redis_url : "", perr[0] ? perr : mae_strerror(rc));
        return 1;
    }
    bool publishing = w.opt.redis_url != NULL && *w.opt.redis_url != '\0';
    if (!publishing)
        fprintf(stderr, PROG ": no --redis URL or MAILAGENT_REDIS_URL: publisher disabled, "
                        "writing state only\n");

    char derr[256] = "";
    mae_db_config dcfg;
    mae_db_config_init(&dcfg);
    dcfg.path = w.opt.db_path;
    dcfg.publisher = w.pub;
    dcfg.clock = sim_clock;
    dcfg.clock_user = &w;
    dcfg.error_buf = derr;
    dcfg.error_buf_size = sizeof derr;
    /* The simulated day ends about now, so the rows' times look like a
     * real day's; set before open, which may already read the clock. */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    w.sim_start = (double)now.tv_sec - SIM_BACK_S;
    w.sim_now = w.sim_start;
    rc = mae_db_open(&dcfg, &w.db);
    if (rc != MAE_OK) {
        fprintf(stderr, PROG ": cannot open database '%s': %s\n", w.opt.db_path,
                derr[0] ? derr : mae_strerror(rc));
        mae_publisher_close(w.pub, 1000);
        return 1;
    }

    w.base_id = first_free_id(w.db);
    w.rng = mix64(w.opt.seed ^ 0x5eedULL);
    w.mails = calloc((size_t)w.opt.mails, sizeof *w.mails);
    if (w.mails == NULL) {
        fprintf(stderr, PROG ": out of memory for %ld mails\n", w.opt.mails);
        mae_db_close(w.db);
        mae_publisher_close(w.pub, 1000);
        return 1;
    }
    decide_fates(&w);

    fprintf(stderr, PROG ": %ld mails into %s%s%s, seed %" PRIu64 "%s\n", w.opt.mails,
            w.opt.db_path, publishing ? ", events to " : "", publishing ? w.opt.redis_url : "",
            w.opt.seed, w.opt.fast ? ", not paced" : "");

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    bool tty = isatty(STDERR_FILENO) == 1;
    double t0 = mono_s();
    int status = run(&w, tty) < 0 ? 1 : 0;
    progress(&w, tty, false, true);
    if (tty)
        fputc('\n', stderr);
    if (interrupted)
        fprintf(stderr, PROG ": interrupted; summary of what was done so far\n");
    if (summary(&w, mono_s() - t0) < 0)
        status = 1;
    if (status == 0 && interrupted)
        status = 130;

    mae_db_close(w.db);
    /* When the flush already timed out, Redis is away: do not wait again. */
    rc = mae_publisher_close(w.pub, w.flush_timed_out ? 200 : 2000);
    if (rc != MAE_OK && status == 0)
        fprintf(stderr, PROG ": warning: some events were still queued at close: %s\n",
                mae_strerror(rc));
    free(w.mails);
    return status;
}
