/* This file implements the demo's simulated world: the seeded random
 * sequence, the mails' fates and looks, and the two clocks (the stores'
 * simulated one and the real one that paces the run). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "demo.h"

/* Real time per mail when paced: 500 mails in about 7 s, slow enough to
 * watch a tail scroll, fast enough for `make demo`. */
#define PACE_S_PER_MAIL 0.014

/* ---- deterministic randomness --------------------------------------------- */

/* splitmix64: tiny, good enough for a simulation, and identical on every
 * platform so that --seed reproduces a run exactly. */
uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

double rnd(watcher *w)
{
    w->rng = mix64(w->rng);
    return (double)(w->rng >> 11) / 9007199254740992.0;
}

long rnd_range(watcher *w, long lo, long hi) /* inclusive */
{
    return lo + (long)(rnd(w) * (double)(hi - lo + 1));
}

/* A per-entity uniform draw that does not depend on the order of calls:
 * an outbox row's fate must not change because another row failed first. */
double fate_draw(const watcher *w, uint64_t kind, int64_t id)
{
    uint64_t h = mix64(w->opt.seed ^ mix64(kind * 0x100000001b3ULL ^ (uint64_t)id));
    return (double)(h >> 11) / 9007199254740992.0;
}

/* ---- the simulated world --------------------------------------------------- */

const char *const mailboxes[] = {"INBOX", "INBOX", "INBOX", "Work", "Receipts", "Newsletters"};

const topic topics[] = {
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

void decide_fates(watcher *w)
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

mail_state *mail_of(watcher *w, int64_t id)
{
    int64_t i = id - w->base_id;
    return (i >= 0 && i < w->arrived) ? &w->mails[i] : NULL;
}

/* ---- the clocks -------------------------------------------------------------- */

double sim_clock(void *user)
{
    return ((const watcher *)user)->sim_now;
}

void format_sim_time(double t, char *buf, size_t size)
{
    time_t s = (time_t)t;
    struct tm tm;
    gmtime_r(&s, &tm);
    strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm);
}

double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Sleeps until mail i's slot on the real clock, so that the time the work
 * itself takes (more on a busy machine) is absorbed rather than added. */
void pace(const watcher *w, double t0, long i)
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
