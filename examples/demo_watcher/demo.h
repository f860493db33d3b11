/* Internal header of the demo watcher: the watcher's state and the few
 * functions its files share. Not installed; one program, one thread. */
#ifndef MAE_DEMO_WATCHER_DEMO_H
#define MAE_DEMO_WATCHER_DEMO_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mailagent/events.h>

#define PROG "demo_watcher"

/* A fate at or above this is "fails until the store gives up". */
#define FATE_FOREVER 1000

/* One element of a constant array, chosen by any integer. */
#define PICK(arr, r) ((arr)[(size_t)(r) % (sizeof(arr) / sizeof((arr)[0]))])

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
    const char *relay_url;   /* hub mode, used when redis_url is unset */
    const char *relay_token; /* X-MailAgent-Local-Token for the hub; NULL: none */
    const char *channel;
    const char *stream_key; /* NULL: pub/sub only */
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

/* The kind of mail a topic stands for: what it looks like and how the
 * review classifies it. */
typedef struct topic {
    const char *subject, *sender, *sender_name, *category, *priority;
} topic;

/* ---- main.c: the run ------------------------------------------------------ */

/* Set by SIGINT and SIGTERM; every loop stops at the next mail. */
extern volatile sig_atomic_t interrupted;

/* One line saying which call failed on which row and why; returns -1 so the
 * caller can `return fail(...)`. */
int fail(watcher *w, const char *what, int64_t id, int rc);

/* ---- sim.c: randomness, the simulated world and the clocks ---------------- */

extern const char *const mailboxes[];
extern const topic topics[];

uint64_t mix64(uint64_t x);
/* Uniform in [0, 1) from the run's sequence: the order of calls matters. */
double rnd(watcher *w);
/* Uniform in [lo, hi], both inclusive, from the run's sequence. */
long rnd_range(watcher *w, long lo, long hi);
/* Uniform in [0, 1) for one entity, independent of the order of calls. */
double fate_draw(const watcher *w, uint64_t kind, int64_t id);
/* Decides every mail's fates, mailbox, topic and page from the seed. */
void decide_fates(watcher *w);
/* The state of mail `id`, or NULL when it has not arrived in this run. */
mail_state *mail_of(watcher *w, int64_t id);

/* The stores' clock (mae_db_config.clock); user is the watcher. */
double sim_clock(void *user);
/* "YYYY-MM-DD HH:MM:SS" in UTC; size 20 or more. */
void format_sim_time(double t, char *buf, size_t size);
/* Seconds on the monotonic clock. */
double mono_s(void);
/* Sleeps until mail i's slot after t0 on the real clock, unless --fast. */
void pace(const watcher *w, double t0, long i);

/* ---- sync.c: the new-mail path and its retries ---------------------------- */

/* Mail i reaches the watcher: its metadata is stored, then synced. */
int new_mail(watcher *w, long i);
/* Runs every sync retry that is due on the stores' clock. */
int retry_sync(watcher *w);

/* ---- llm.c: LLM runs ------------------------------------------------------ */

/* One LLM run for a synced mail, with the AI-reviewed intents on success. */
int llm_run(watcher *w, int64_t id, mail_state *m);
/* Runs every LLM retry that is due on the stores' clock. */
int retry_llm(watcher *w);

/* ---- outbox_worker.c: intents and the fan-out worker ---------------------- */

/* Enqueues one intent and counts what the library says happened. */
int enqueue(watcher *w, int64_t id, const char *op, const char *target, const char *payload,
            const char *source);
/* Runs every ready intent once against its simulated target. */
int fan_out(watcher *w);

/* ---- users.c: what users do meanwhile ------------------------------------- */

/* Perhaps one user edit (Notion, the poll or the CLI) after a mail. */
int user_actions(watcher *w);

/* ---- summary.c: the progress line and the final summary ------------------- */

void progress(watcher *w, bool tty, bool draining, bool done);
/* Prints the counts and the stores' read-back to stdout; flushes the
 * publisher first. Returns 0, or -1 after a failed read. */
int summary(watcher *w, double elapsed);

#endif
