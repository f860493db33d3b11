/* This program implements the demo sync watcher: a simulated day of mail
 * driven through the sync store, the outbox and the LLM store exactly as a
 * real watcher links the library, with a summary that can be reconciled
 * against the event stream and the database. This file holds the options,
 * the setup, the day's loop and the exit codes.
 *
 *   demo_watcher [--mails N] [--db PATH] [--redis URL | --relay URL] [--channel C]
 *                [--stream KEY] [--seed N] [--fast]
 *
 * Environment: MAILAGENT_DB, MAILAGENT_REDIS_URL (else MailAgent's
 * REDIS_URL + REDIS_DB), MAILAGENT_RELAY_URL and MAILAGENT_LOCAL_API_TOKEN,
 * MAILAGENT_CHANNEL, MAILAGENT_STREAM (the options win; blank counts as
 * unset), read by the project's own reader so that the demo takes the same
 * configuration as the command and the relay. Without a Redis URL the events
 * are posted to the relay URL (a relay running as the hub); with neither the
 * publisher is disabled and only the state is written. With a stream key the events also
 * go to that Redis Stream (stream mode), exactly once.
 *
 * Time: the stores run on a simulated clock (mae_db_config.clock) that
 * starts a day ago and advances with each mail, so retry schedules of
 * minutes and hours become due within seconds of real time. Event `ts`
 * values are stamped by the publisher with the real clock.
 *
 * Exit status: 0 after a complete run (or --help), 1 when the setup or a
 * store call fails, 2 on bad options, 130 when interrupted. */
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

/* The project's environment reader (not part of the installed API). */
#include "../../core/env.h"
#include "demo.h"

/* The simulated day: mails arrive over 20 h that end 4 h ago, which leaves
 * the retry schedule (60 s ... 7200 s) room to settle before "now". */
#define SIM_BACK_S (24.0 * 3600.0)
#define SIM_SPAN_S (20.0 * 3600.0)
#define DRAIN_STEP_S 300.0
#define DRAIN_MAX_ROUNDS 2000

volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* ---- errors ----------------------------------------------------------------- */

/* One line saying which call failed on which row and why; returns -1 so the
 * caller can `return fail(...)`. A demo that reconciles counts must stop at
 * the first unexpected error rather than carry on with numbers that lie. */
int fail(watcher *w, const char *what, int64_t id, int rc)
{
    const char *detail = w->db ? mae_db_errmsg(w->db) : "";
    fprintf(stderr, "\n" PROG ": %s(%" PRId64 ") failed: %s%s%s\n", what, id, mae_strerror(rc),
            detail && *detail ? ": " : "", detail ? detail : "");
    return -1;
}

/* ---- options and setup ------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: " PROG " [--mails N] [--db PATH] [--redis URL | --relay URL] [--channel C]\n"
            "                    [--stream KEY] [--seed N] [--fast]\n"
            "  --mails N     mails in the simulated day (default 500)\n"
            "  --db PATH     SQLite file (default $MAILAGENT_DB, else mailagent-demo.db)\n"
            "  --redis URL   e.g. redis://127.0.0.1:6379 (default $MAILAGENT_REDIS_URL,\n"
            "                else $REDIS_URL/$REDIS_DB)\n"
            "  --relay URL   with no Redis URL: post the events to a relay running as\n"
            "                the hub, e.g. http://127.0.0.1:9200 (default\n"
            "                $MAILAGENT_RELAY_URL, token $MAILAGENT_LOCAL_API_TOKEN;\n"
            "                neither URL: publisher disabled, state only)\n"
            "  --channel C   default $MAILAGENT_CHANNEL, else mailagent:events:v1\n"
            "  --stream KEY  also append each event to this Redis Stream (default\n"
            "                $MAILAGENT_STREAM; none: pub/sub only)\n"
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
    static char *env_url; /* reachable for the life of the process */
    char err[320];
    o->db_path = mae__env_get(NULL, "MAILAGENT_DB");
    o->channel = mae__env_get(NULL, "MAILAGENT_CHANNEL");
    o->stream_key = mae__env_get(NULL, "MAILAGENT_STREAM");
    if (mae__env_redis_url(NULL, &env_url, NULL, err, sizeof err) != 0) {
        fprintf(stderr, PROG ": %s\n", err[0] ? err : "out of memory");
        return 2;
    }
    o->redis_url = env_url;
    /* The relay's variables matter only without a Redis URL: checked once
     * the options are known. */
    static char *env_relay; /* likewise */
    char relay_err[320];
    int relay_rc = mae__env_relay(NULL, 0, &env_relay, &o->relay_token, relay_err,
                                  sizeof relay_err);
    o->relay_url = env_relay;
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
                   strcmp(a, "--db") != 0 && strcmp(a, "--redis") != 0 && strcmp(a, "--relay") != 0 &&
                   strcmp(a, "--channel") != 0 && strcmp(a, "--stream") != 0) {
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
        } else if (strcmp(a, "--relay") == 0) {
            o->relay_url = val;
        } else if (strcmp(a, "--stream") == 0) {
            o->stream_key = val;
        } else {
            o->channel = val;
        }
        i++;
    }
    if (relay_rc != 0 && (o->redis_url == NULL || *o->redis_url == '\0')) {
        fprintf(stderr, PROG ": %s\n", relay_rc == MAE_ENOMEM ? "out of memory" : relay_err);
        return 2;
    }
    if (o->db_path == NULL || *o->db_path == '\0')
        o->db_path = "mailagent-demo.db";
    if (o->channel != NULL && *o->channel == '\0')
        o->channel = NULL;
    if (o->stream_key != NULL && *o->stream_key == '\0')
        o->stream_key = NULL;
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

/* ---- the day's loop --------------------------------------------------------- */

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

/* Opens w->pub from the options: disabled (state only) without a Redis URL.
 * 0, or 1 with the reason printed. */
static int open_publisher(watcher *w)
{
    char err[256] = "";
    mae_publisher_config cfg;
    mae_publisher_config_init(&cfg);
    cfg.redis_url = w->opt.redis_url;
    /* One destination: Redis when there is a URL for it, else the hub. */
    if (!w->opt.redis_url || !*w->opt.redis_url) {
        cfg.relay_url = w->opt.relay_url;
        cfg.relay_token = w->opt.relay_token;
    }
    if (w->opt.channel)
        cfg.channel = w->opt.channel;
    cfg.stream_key = w->opt.stream_key;
    cfg.error_buf = err;
    cfg.error_buf_size = sizeof err;
    int rc = mae_publisher_open(&cfg, &w->pub);
    if (rc != MAE_OK) {
        fprintf(stderr, PROG ": cannot open the publisher for '%s': %s\n",
                cfg.relay_url ? cfg.relay_url : w->opt.redis_url ? w->opt.redis_url : "",
                err[0] ? err : mae_strerror(rc));
        return 1;
    }
    if ((!w->opt.redis_url || !*w->opt.redis_url) && (!cfg.relay_url || !*cfg.relay_url))
        fprintf(stderr, PROG ": no --redis URL, MAILAGENT_REDIS_URL or REDIS_URL, and no "
                        "--relay URL or MAILAGENT_RELAY_URL: publisher disabled, "
                        "writing state only\n");
    return 0;
}

/* Opens w->db on the simulated clock, publishing through w->pub. 0, or 1
 * with the reason printed. */
static int open_database(watcher *w)
{
    char err[256] = "";
    mae_db_config cfg;
    mae_db_config_init(&cfg);
    cfg.path = w->opt.db_path;
    cfg.publisher = w->pub;
    cfg.clock = sim_clock;
    cfg.clock_user = w;
    cfg.error_buf = err;
    cfg.error_buf_size = sizeof err;
    /* The simulated day ends about now, so the rows' times look like a
     * real day's; set before open, which may already read the clock. */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    w->sim_start = (double)now.tv_sec - SIM_BACK_S;
    w->sim_now = w->sim_start;
    int rc = mae_db_open(&cfg, &w->db);
    if (rc != MAE_OK) {
        fprintf(stderr, PROG ": cannot open database '%s': %s\n", w->opt.db_path,
                err[0] ? err : mae_strerror(rc));
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    watcher w;
    memset(&w, 0, sizeof w);
    int prc = parse_args(argc, argv, &w.opt);
    if (prc != 0)
        return prc < 0 ? 0 : prc;

    if (open_publisher(&w) != 0)
        return 1;
    bool to_redis = w.opt.redis_url != NULL && *w.opt.redis_url != '\0';
    bool publishing = to_redis || (w.opt.relay_url != NULL && *w.opt.relay_url != '\0');
    const char *dest = to_redis ? w.opt.redis_url : w.opt.relay_url;
    if (open_database(&w) != 0) {
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

    fprintf(stderr, PROG ": %ld mails into %s%s%s%s%s, seed %" PRIu64 "%s\n", w.opt.mails,
            w.opt.db_path, publishing ? ", events to " : "", publishing ? dest : "",
            to_redis && w.opt.stream_key ? " and the stream " : "",
            to_redis && w.opt.stream_key ? w.opt.stream_key : "", w.opt.seed,
            w.opt.fast ? ", not paced" : "");

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
    int rc = mae_publisher_close(w.pub, w.flush_timed_out ? 200 : 2000);
    if (rc != MAE_OK && status == 0)
        fprintf(stderr, PROG ": warning: some events were still queued at close: %s\n",
                mae_strerror(rc));
    free(w.mails);
    return status;
}
