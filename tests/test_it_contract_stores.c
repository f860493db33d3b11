/* The contract of docs/stores.md, checked end to end: each store's writes
 * through the public API, the rows they leave (read back with the caller's
 * own SQL), and the events a real subscriber receives for them; retries and
 * their schedule, caller-owned transactions, the schema and pragmas, an
 * existing database, and the reads. Harness: contract.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <math.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "contract.h"

#ifndef MAE_TEST_TMPDIR
#define MAE_TEST_TMPDIR "/tmp"
#endif

/* ---- one counted failure, checked everywhere -------------------------------- */

enum store_kind { MAIL, OUTBOX, LLM };

/* Fails row `id` (mail id, or outbox id with its mail in mail_id) as its
 * n-th failure under `limit`, and checks the outcome, the event and the row.
 * pub_err: the text the event must carry (NULL: err cut to 200 code points);
 * check_stored: compare the stored error (err cut to 500 code points). */
static void fail_once(fx *f, enum store_kind kind, int64_t id, int64_t mail_id, int n, int limit,
                      const char *status, const char *err, const char *pub_err,
                      bool check_stored)
{
    g_now += 1000.5;
    double now = g_now;
    bool terminal = n >= limit;
    double delay = SCHEDULE[n - 1 < 4 ? n - 1 : 4];
    mae_retry_outcome out = {-99, -99, false};
    int rc;
    const char *name = kind == MAIL ? "sync store" : kind == OUTBOX ? "outbox" : "LLM store";
    if (kind == MAIL)
        rc = mae_sync_store_mark_failed(f->db, id, status, err, &out);
    else if (kind == OUTBOX)
        rc = mae_outbox_mark_failed(f->db, id, err, &out);
    else
        rc = mae_llm_store_mark_failed(f->db, id, err, &out);
    CHECK(rc == MAE_OK, "docs/stores.md: %s mark failed (failure %d) succeeds: %d %s", name, n, rc,
          mae_db_errmsg(f->db));
    CHECK(out.attempts == n && out.terminal == terminal &&
              (terminal ? out.next_retry_at == 0 : near(out.next_retry_at, now + delay)),
          "docs/api.md, docs/stores.md: %s failure %d of limit %d: outcome attempts %d, "
          "terminal %d, next_retry_at %s; got %lld, %d, %.3f (now %.3f)",
          name, n, limit, n, terminal, terminal ? "0" : "now + schedule[min(n-1,4)]",
          (long long)out.attempts, out.terminal, out.next_retry_at, now);

    char *cut200 = u8_prefix(err, 200);
    const char *pe = pub_err ? pub_err : cut200;
    json_object *d;
    if (kind == MAIL) {
        if (!terminal) {
            d = expect_event(f, "email.failed", id, "sync_store",
                             "status,retry_count,next_retry_at,error");
            d_str(f, d, "status", status);
            d_int(f, d, "retry_count", n);
            d_num(f, d, "next_retry_at", now + delay);
            d_str(f, d, "error", pe);
        } else {
            d = expect_event(f, "email.dead_letter", id, "sync_store", "retry_count,error");
            d_int(f, d, "retry_count", n);
            d_str(f, d, "error", pe);
        }
    } else if (kind == OUTBOX) {
        if (!terminal) {
            d = expect_event(f, "outbox.failed", mail_id, "outbox",
                             "outbox_id,attempts,last_error,next_retry_at");
            d_int(f, d, "outbox_id", id);
            d_int(f, d, "attempts", n);
            d_str(f, d, "last_error", pe);
            d_num(f, d, "next_retry_at", now + delay);
        } else {
            d = expect_event(f, "outbox.dead_letter", mail_id, "outbox",
                             "outbox_id,attempts,last_error");
            d_int(f, d, "outbox_id", id);
            d_int(f, d, "attempts", n);
            d_str(f, d, "last_error", pe);
        }
    } else {
        if (!terminal) {
            d = expect_event(f, "llm.failed", id, "llm_agent", "retry_count,next_retry_at,error");
            d_int(f, d, "retry_count", n);
            d_num(f, d, "next_retry_at", now + delay);
            d_str(f, d, "error", pe);
        } else {
            d = expect_event(f, "llm.gave_up", id, "llm_agent", "retry_count,error");
            d_int(f, d, "retry_count", n);
            d_str(f, d, "error", pe);
        }
    }

    row4 r = read_row4(f->db, kind == MAIL ? MAIL_SQL : kind == OUTBOX ? OUTBOX_SQL : LLM_SQL, id);
    const char *want_status = kind == MAIL ? (terminal ? "dead_letter" : status)
                              : kind == OUTBOX ? (terminal ? "dead_letter" : "failed")
                                               : (terminal ? "gave_up" : "failed");
    CHECK(r.found && streq(r.status, want_status) && r.count == n,
          "docs/stores.md: after %s failure %d/%d the row is %s with count %d; got %s, %lld",
          name, n, limit, want_status, n, nz(r.status), (long long)r.count);
    if (terminal)
        CHECK(r.nra_null,
              "docs/stores.md Retries: a terminal row has next_retry_at NULL (%s): %.3f", name,
              r.nra);
    else
        CHECK(!r.nra_null && near(r.nra, now + delay),
              "docs/stores.md Retries: failure %d waits schedule[min(n-1,4)] = %.0f s from now: "
              "next_retry_at %.3f, want %.3f (%s)", n, delay, r.nra, now + delay, name);
    if (check_stored) {
        char *cut500 = u8_prefix(err, 500);
        if (kind == MAIL && terminal) {
            if (u8_count(err) < 400) {
                char want[1200];
                snprintf(want, sizeof want, "Max retries exceeded: %s", err);
                CHECK(streq(r.err, want),
                      "docs/stores.md Retries: a dead-lettered mail stores \"Max retries exceeded: "
                      "<error>\" in sync_error; got \"%s\"", nz(r.err));
            } else {
                const char *pfx = "Max retries exceeded: ";
                bool ok = r.err && strncmp(r.err, pfx, strlen(pfx)) == 0 &&
                          strncmp(r.err + strlen(pfx), err, strlen(r.err) - strlen(pfx)) == 0 &&
                          u8_valid(r.err) && u8_count(r.err) <= 500 + strlen(pfx);
                CHECK(ok, "docs/stores.md Retries: a dead-lettered mail stores \"Max retries "
                          "exceeded: <error>\" (error cut to 500 code points); got \"%.80s...\"",
                      nz(r.err));
            }
        } else {
            CHECK(streq(r.err, cut500),
                  "docs/stores.md Retries: the error is stored cut to 500 code points (%s, %zu "
                  "code points stored, want %zu)", name, r.err ? u8_count(r.err) : 0,
                  u8_count(cut500));
        }
        free(cut500);
    }
    row4_free(&r);
    free(cut200);
}


static void test_sync_store_lifecycle(void **state)
{
    (void)state;
    fx f;
    fx_open(&f, false, 0);
    const int64_t A = 53675, B = 53676, C = 53677, E = 53678;

    add_mail(f.db, A);
    expect_none(&f, "adding a mail");
    row4 r = read_row4(f.db, MAIL_SQL, A);
    CHECK(r.found && streq(r.status, "pending") && r.count == 0 && r.nra_null,
          "docs/stores.md Sync store: new mails start pending with 0 retries; got %s %lld",
          nz(r.status), (long long)r.count);
    row4_free(&r);
    mae_email upd = {.internal_id = A, .message_id = "<m53675@example.org>",
                     .subject = "Updated"};
    CHECK(mae_sync_store_upsert(f.db, &upd) == MAE_OK, "docs/stores.md: update a mail's metadata");
    expect_none(&f, "updating a mail's metadata");

    /* four failures with a long multi-byte error, then the terminal one */
    char *longerr = make_text(700);
    for (int n = 1; n <= 4; n++)
        fail_once(&f, MAIL, A, A, n, 5, n % 2 ? "fetch_failed" : "failed", longerr, NULL, true);
    fail_once(&f, MAIL, A, A, 5, 5, "failed", "final boom /\xC3\xA9", NULL, true);

    /* synced: cleared, default source */
    g_now += 10;
    CHECK(mae_sync_store_mark_synced(f.db, A, "https://notion.so/page-uuid-abc", "thread-1",
                                     NULL) == MAE_OK, "docs/stores.md: mark synced");
    json_object *d = expect_event(&f, "email.synced", A, "sync_store", "notion_page_id");
    d_str(&f, d, "notion_page_id", "https://notion.so/page-uuid-abc");
    r = read_row4(f.db, MAIL_SQL, A);
    CHECK(streq(r.status, "synced") && r.nra_null && r.err == NULL,
          "docs/stores.md Sync store: mark synced sets synced, clears sync_error and "
          "next_retry_at; got %s, nra null %d, error %s", nz(r.status), r.nra_null, nz(r.err));
    row4_free(&r);
    char *pg = sql_text(f.db, "SELECT notion_page_id FROM email_metadata WHERE internal_id=%lld",
                        (long long)A);
    char *th = sql_text(f.db,
                        "SELECT notion_thread_id FROM email_metadata WHERE internal_id=%lld",
                        (long long)A);
    CHECK(streq(pg, "https://notion.so/page-uuid-abc") && streq(th, "thread-1"),
          "docs/stores.md Sync store: mark synced sets notion_page_id and notion_thread_id");
    free(pg);
    free(th);

    /* invalid UTF-8 repaired in the event; the watcher's source tag */
    add_mail(f.db, B);
    fail_once(&f, MAIL, B, B, 1, 5, "fetch_failed", "bad\xFFtext\xC3(x\x80y",
              "bad\xEF\xBF\xBDtext\xEF\xBF\xBD(x\xEF\xBF\xBDy", false);
    CHECK(mae_sync_store_mark_synced(f.db, B, "page-b", NULL, MAE_SOURCE_NEW_WATCHER) == MAE_OK,
          "docs/stores.md: mark synced with a source");
    d = expect_event(&f, "email.synced", B, "new_watcher", "notion_page_id");
    d_str(&f, d, "notion_page_id", "page-b");
    add_mail(f.db, C);
    CHECK(mae_sync_store_mark_synced(f.db, C, "page-c", NULL, MAE_SOURCE_CLI) == MAE_OK,
          "docs/stores.md: mark synced with a source");
    d = expect_event(&f, "email.synced", C, "cli", "notion_page_id");

    /* dead letter with a long error: the event carries the plain error, cut */
    add_mail(f.db, E);
    for (int n = 1; n <= 5; n++)
        fail_once(&f, MAIL, E, E, n, 5, "failed", longerr, NULL, true);

    /* errors: no such mail, bad status; no event, nothing changed */
    CHECK(mae_sync_store_mark_synced(f.db, 999, "p", NULL, NULL) == MAE_ENOTFOUND,
          "docs/api.md: marking a missing mail is MAE_ENOTFOUND");
    CHECK(mae_sync_store_mark_failed(f.db, 999, "failed", "x", NULL) == MAE_ENOTFOUND,
          "docs/api.md: marking a missing mail is MAE_ENOTFOUND");
    CHECK(mae_sync_store_mark_failed(f.db, C, "bogus", "x", NULL) == MAE_EINVAL,
          "docs/api.md: a bad status is MAE_EINVAL");
    expect_none(&f, "failed sync-store writes");
    r = read_row4(f.db, MAIL_SQL, C);
    CHECK(streq(r.status, "synced") && r.count == 0,
          "docs/api.md: MAE_EINVAL writes nothing; got %s %lld", nz(r.status), (long long)r.count);
    row4_free(&r);
    CHECK(sql_int(f.db, "SELECT COUNT(*) FROM email_metadata WHERE internal_id=999") == 0,
          "docs/stores.md: marking a missing mail writes nothing");
    free(longerr);
    fx_close(&f);
}

/* An intent's life: enqueue, merge, echo prevention, processing, failures,
 * dead letter, admin retry, done. */
static void test_outbox_lifecycle(void **state)
{
    (void)state;
    fx f;
    fx_open(&f, false, 0);
    const int64_t M = 53675;
    add_mail(f.db, M);
    expect_none(&f, "adding a mail");

    /* insert */
    int64_t id = 0;
    bool ins = false;
    double created = g_now;
    int rc = mae_outbox_enqueue(f.db, M, "flag", "notion",
                                "{ \"b\": 1, \"a\": {\"d\": 2, \"c\": 3}, \"arr\": [1, 2] }",
                                MAE_SOURCE_CLI, &id, &ins);
    CHECK(rc == MAE_OK && ins && id > 0, "docs/api.md: a new intent is inserted: rc %d ins %d", rc,
          ins);
    json_object *d = expect_event(&f, "outbox.enqueued", M, "outbox",
                                  "outbox_id,op_type,target,source");
    d_int(&f, d, "outbox_id", id);
    d_str(&f, d, "op_type", "flag");
    d_str(&f, d, "target", "notion");
    d_str(&f, d, "source", "cli");
    char *pl = sql_text(f.db, "SELECT payload_json FROM email_outbox WHERE outbox_id=%lld",
                        (long long)id);
    CHECK(streq(pl, "{\"a\":{\"c\":3,\"d\":2},\"arr\":[1,2],\"b\":1}"),
          "docs/stores.md Outbox: payload stored compact with sorted keys at every level: %s",
          nz(pl));
    free(pl);
    row4 r = read_row4(f.db, OUTBOX_SQL, id);
    CHECK(streq(r.status, "pending") && r.count == 0,
          "docs/stores.md Outbox: a new intent is pending with 0 attempts: %s %lld", nz(r.status),
          (long long)r.count);
    row4_free(&r);

    /* merge (RFC 7396), no event, source kept when none given */
    g_now += 100;
    int64_t id2 = 0;
    ins = true;
    rc = mae_outbox_enqueue(f.db, M, "flag", "notion",
                            "{\"a\":{\"c\":null,\"e\":{\"z\":1,\"y\":[{\"q\":1,\"p\":2}]}},"
                            "\"arr\":[3],\"b\":{\"y\":1,\"x\":null},\"f\":\"v\"}",
                            NULL, &id2, &ins);
    CHECK(rc == MAE_OK && !ins && id2 == id,
          "docs/api.md: merge into a pending intent: MAE_OK, *inserted = false, existing id: "
          "rc %d ins %d id %lld/%lld", rc, ins, (long long)id2, (long long)id);
    expect_none(&f, "a merge into a pending intent");
    pl = sql_text(f.db, "SELECT payload_json FROM email_outbox WHERE outbox_id=%lld",
                  (long long)id);
    CHECK(streq(pl, "{\"a\":{\"d\":2,\"e\":{\"y\":[{\"p\":2,\"q\":1}],\"z\":1}},\"arr\":[3],"
                    "\"b\":{\"y\":1},\"f\":\"v\"}"),
          "docs/stores.md Outbox: merge is an RFC 7396 merge patch (null removes, objects merge, "
          "arrays replace), stored compact with sorted keys at every level: %s", nz(pl));
    free(pl);
    char *src = sql_text(f.db, "SELECT source FROM email_outbox WHERE outbox_id=%lld",
                         (long long)id);
    CHECK(streq(src, "cli"),
          "docs/stores.md Outbox: merge keeps the old source when none is given: %s", nz(src));
    free(src);
    char *ts = sql_text(f.db, "SELECT printf('%%.3f|%%.3f', created_at, updated_at) FROM "
                              "email_outbox WHERE outbox_id=%lld", (long long)id);
    char want_ts[64];
    snprintf(want_ts, sizeof want_ts, "%.3f|%.3f", created, g_now);
    CHECK(streq(ts, want_ts), "docs/stores.md Outbox: merge refreshes updated_at (created|updated "
                              "%s, want %s)", nz(ts), want_ts);
    free(ts);
    rc = mae_outbox_enqueue(f.db, M, "flag", "notion", "{}", MAE_SOURCE_REVERSE_SYNC_POLL, &id2,
                            &ins);
    CHECK(rc == MAE_OK && !ins && id2 == id, "docs/api.md: merge again");
    expect_none(&f, "a merge into a pending intent");
    src = sql_text(f.db, "SELECT source FROM email_outbox WHERE outbox_id=%lld", (long long)id);
    CHECK(streq(src, "reverse_sync_poll"),
          "docs/stores.md Outbox: merge takes the new source when given: %s", nz(src));
    free(src);
    CHECK(sql_int(f.db, "SELECT COUNT(*) FROM email_outbox") == 1,
          "docs/stores.md Outbox: a merge leaves one pending row");

    /* echo prevention */
    int64_t eid = 12345;
    ins = true;
    rc = mae_outbox_enqueue(f.db, M, "archive", "notion", "{\"x\":1}", MAE_SOURCE_NOTION_WEBHOOK,
                            &eid, &ins);
    CHECK(rc == MAE_SKIPPED && eid == -1,
          "docs/api.md: echo prevention: MAE_SKIPPED, *outbox_id = -1: rc %d id %lld", rc,
          (long long)eid);
    expect_none(&f, "echo prevention");
    CHECK(sql_int(f.db, "SELECT COUNT(*) FROM email_outbox") == 1,
          "docs/stores.md Outbox: echo prevention writes nothing");

    /* invalid arguments: nothing written, no event */
    const char *bad[][3] = {{"flag", "slack", "{}"},  {"", "notion", "{}"},
                            {"flag", "mailapp", "[1]"}, {"flag", "mailapp", "not json"},
                            {"flag", "mailapp", "\"s\""}, {"flag", "Notion", "{}"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        rc = mae_outbox_enqueue(f.db, M, bad[i][0], bad[i][1], bad[i][2], MAE_SOURCE_CLI, NULL,
                                NULL);
        CHECK(rc == MAE_EINVAL, "docs/api.md: a bad target, op_type or payload is MAE_EINVAL "
                                "(%s/%s/%s): %d", bad[i][0], bad[i][1], bad[i][2], rc);
    }
    expect_none(&f, "invalid enqueues");
    CHECK(sql_int(f.db, "SELECT COUNT(*) FROM email_outbox") == 1,
          "docs/stores.md Outbox: invalid enqueues write nothing");

    /* notion_webhook towards mailapp is not an echo; intent source null */
    int64_t m1 = 0, m2 = 0;
    rc = mae_outbox_enqueue(f.db, M, "mark_read", "mailapp", "{\"read\":true}",
                            MAE_SOURCE_NOTION_WEBHOOK, &m1, &ins);
    CHECK(rc == MAE_OK && ins, "docs/stores.md: notion_webhook -> mailapp is enqueued: %d", rc);
    d = expect_event(&f, "outbox.enqueued", M, "outbox", "outbox_id,op_type,target,source");
    d_int(&f, d, "outbox_id", m1);
    d_str(&f, d, "target", "mailapp");
    d_str(&f, d, "source", "notion_webhook");
    rc = mae_outbox_enqueue(f.db, M, "move", "mailapp",
                            "{\"l\":[{\"z\":1,\"y\":{\"k\":2,\"j\":1}}],\"a\":0}", NULL, &m2,
                            &ins);
    CHECK(rc == MAE_OK && ins, "docs/stores.md: enqueue with no source");
    d = expect_event(&f, "outbox.enqueued", M, "outbox", "outbox_id,op_type,target,source");
    d_int(&f, d, "outbox_id", m2);
    d_str(&f, d, "op_type", "move");
    d_str(&f, d, "source", NULL);
    pl = sql_text(f.db, "SELECT payload_json FROM email_outbox WHERE outbox_id=%lld",
                  (long long)m2);
    CHECK(streq(pl, "{\"a\":0,\"l\":[{\"y\":{\"j\":1,\"k\":2},\"z\":1}]}"),
          "docs/stores.md Outbox: payload stored compact with sorted keys at every level "
          "(objects inside arrays too): %s", nz(pl));
    free(pl);

    /* processing, failures with the schedule, dead letter */
    CHECK(mae_outbox_mark_processing(f.db, id) == MAE_OK, "docs/stores.md: pending -> processing");
    expect_none(&f, "mark processing");
    r = read_row4(f.db, OUTBOX_SQL, id);
    CHECK(streq(r.status, "processing"), "docs/stores.md: the row is processing: %s", nz(r.status));
    row4_free(&r);
    char *longerr = make_text(650);
    fail_once(&f, OUTBOX, id, M, 1, 5, NULL, longerr, NULL, true);
    CHECK(mae_outbox_mark_processing(f.db, id) == MAE_OK, "docs/stores.md: failed -> processing");
    expect_none(&f, "mark processing");
    fail_once(&f, OUTBOX, id, M, 2, 5, NULL, "HTTP 502 /v1/pages \xE4\xB8\xAD", NULL, true);
    fail_once(&f, OUTBOX, id, M, 3, 5, NULL, longerr, NULL, true); /* from failed */
    CHECK(mae_outbox_mark_processing(f.db, id) == MAE_OK, "docs/stores.md: failed -> processing");
    fail_once(&f, OUTBOX, id, M, 4, 5, NULL, "bad\xFF", "bad\xEF\xBF\xBD", false);
    fail_once(&f, OUTBOX, id, M, 5, 5, NULL, longerr, NULL, true);

    /* a dead letter: done refused, processing refused, failed refused */
    CHECK(mae_outbox_mark_done(f.db, id) == MAE_ESTATE,
          "docs/api.md: mae_outbox_mark_done on a dead letter is MAE_ESTATE");
    CHECK(mae_outbox_mark_processing(f.db, id) == MAE_ESTATE,
          "docs/stores.md: mark processing only from pending or failed (dead letter: MAE_ESTATE)");
    rc = mae_outbox_mark_failed(f.db, id, "again", NULL);
    CHECK(rc == MAE_ESTATE, "docs/stores.md: mark failed only from pending, processing or failed "
                            "(dead letter): %d", rc);
    expect_none(&f, "refused transitions of a dead letter");
    r = read_row4(f.db, OUTBOX_SQL, id);
    CHECK(streq(r.status, "dead_letter") && r.count == 5 && r.nra_null,
          "docs/stores.md: refused transitions change nothing: %s %lld", nz(r.status),
          (long long)r.count);
    row4_free(&r);

    /* admin retry -> pending with 0 attempts, no event */
    CHECK(mae_outbox_retry_dead_letter(f.db, id) == MAE_OK, "docs/stores.md: admin retry");
    expect_none(&f, "admin retry of a dead letter");
    r = read_row4(f.db, OUTBOX_SQL, id);
    CHECK(streq(r.status, "pending") && r.count == 0,
          "docs/stores.md Outbox: admin retry -> pending with 0 attempts: %s %lld", nz(r.status),
          (long long)r.count);
    row4_free(&r);

    /* done from pending; done again skipped; missing rows */
    CHECK(mae_outbox_mark_done(f.db, id) == MAE_OK, "docs/stores.md: pending -> done");
    d = expect_event(&f, "outbox.done", M, "outbox", "outbox_id");
    d_int(&f, d, "outbox_id", id);
    r = read_row4(f.db, OUTBOX_SQL, id);
    CHECK(streq(r.status, "done") && r.nra_null && r.err == NULL,
          "docs/stores.md Outbox: mark done clears last_error and next_retry_at: %s %d %s",
          nz(r.status), r.nra_null, nz(r.err));
    row4_free(&r);
    CHECK(mae_outbox_mark_done(f.db, id) == MAE_SKIPPED,
          "docs/api.md: mae_outbox_mark_done on a row already done is MAE_SKIPPED");
    CHECK(mae_outbox_mark_done(f.db, 99999) == MAE_ENOTFOUND,
          "docs/api.md: marking a missing outbox row is MAE_ENOTFOUND");
    CHECK(mae_outbox_mark_failed(f.db, 99999, "x", NULL) == MAE_ENOTFOUND,
          "docs/api.md: marking a missing outbox row is MAE_ENOTFOUND");
    CHECK(mae_outbox_mark_processing(f.db, id) == MAE_ESTATE,
          "docs/stores.md: mark processing only from pending or failed (done: MAE_ESTATE)");
    CHECK(mae_outbox_mark_failed(f.db, id, "late", NULL) == MAE_ESTATE,
          "docs/stores.md: mark failed only from pending, processing or failed (done: MAE_ESTATE)");
    expect_none(&f, "mark done on done / missing rows");

    /* done from failed clears last_error and next_retry_at */
    fail_once(&f, OUTBOX, m1, M, 1, 5, NULL, "timeout", NULL, true);
    CHECK(mae_outbox_mark_done(f.db, m1) == MAE_OK, "docs/stores.md: failed -> done");
    d = expect_event(&f, "outbox.done", M, "outbox", "outbox_id");
    d_int(&f, d, "outbox_id", m1);
    r = read_row4(f.db, OUTBOX_SQL, m1);
    CHECK(streq(r.status, "done") && r.nra_null && r.err == NULL,
          "docs/stores.md Outbox: mark done clears last_error and next_retry_at: %s nra-null %d "
          "err %s", nz(r.status), r.nra_null, nz(r.err));
    row4_free(&r);
    /* done from processing */
    CHECK(mae_outbox_mark_processing(f.db, m2) == MAE_OK, "docs/stores.md: pending -> processing");
    CHECK(mae_outbox_mark_done(f.db, m2) == MAE_OK, "docs/stores.md: processing -> done");
    d = expect_event(&f, "outbox.done", M, "outbox", "outbox_id");
    d_int(&f, d, "outbox_id", m2);
    /* failed straight from pending */
    int64_t m3 = 0;
    mae_outbox_enqueue(f.db, M, "flag", "mailapp", "{\"flagged\":true}", MAE_SOURCE_AI_REVIEWED_HANDLER,
                       &m3, &ins);
    d = expect_event(&f, "outbox.enqueued", M, "outbox", "outbox_id,op_type,target,source");
    d_str(&f, d, "source", "ai_reviewed_handler");
    fail_once(&f, OUTBOX, m3, M, 1, 5, NULL, "x/y", NULL, true);

    /* once the pending intent is done, the same intent is a new insert */
    rc = mae_outbox_enqueue(f.db, M, "flag", "notion", "{\"z\":1}", MAE_SOURCE_CLI, &id2, &ins);
    CHECK(rc == MAE_OK && ins && id2 != id,
          "docs/stores.md: with no pending twin the intent is inserted: %d %d", rc, ins);
    d = expect_event(&f, "outbox.enqueued", M, "outbox", "outbox_id,op_type,target,source");
    d_int(&f, d, "outbox_id", id2);

    /* missing mail */
    rc = mae_outbox_enqueue(f.db, 424242, "flag", "notion", "{}", MAE_SOURCE_CLI, NULL, NULL);
    CHECK(rc == MAE_ENOTFOUND, "docs/api.md, outbox.h: enqueue for a missing mail: %d", rc);
    expect_none(&f, "enqueue for a missing mail");
    free(longerr);
    fx_close(&f);
}

/* The LLM store: failures from the first step of the schedule, gave_up,
 * then success resets. */
static void test_llm_lifecycle(void **state)
{
    (void)state;
    fx f;
    fx_open(&f, false, 0);
    const int64_t M = 53675, N = 53680;
    add_mail(f.db, M);
    CHECK(mae_llm_store_mark_pending(f.db, M, "page-1", "INBOX") == MAE_OK,
          "docs/stores.md LLM: mark pending");
    expect_none(&f, "LLM mark pending");
    row4 r = read_row4(f.db, LLM_SQL, M);
    CHECK(streq(r.status, "pending"), "docs/stores.md LLM: mark pending: status pending: %s",
          nz(r.status));
    row4_free(&r);

    char *longerr = make_text(520);
    fail_once(&f, LLM, M, M, 1, 5, NULL, "upstream 529: overloaded", NULL, true);
    fail_once(&f, LLM, M, M, 2, 5, NULL, longerr, NULL, true);
    fail_once(&f, LLM, M, M, 3, 5, NULL, "x\x80y", "x\xEF\xBF\xBDy", false);
    fail_once(&f, LLM, M, M, 4, 5, NULL, longerr, NULL, true);
    fail_once(&f, LLM, M, M, 5, 5, NULL, longerr, NULL, true);

    mae_llm_usage u = {.model = "claude-\xE4\xB8\xAD/x", .input_tokens = 1200,
                       .output_tokens = 340, .cache_read_input_tokens = 5,
                       .cache_creation_input_tokens = 6, .latency_ms = 950,
                       .labels_json = "{\"labels\":[\"a\"]}"};
    CHECK(mae_llm_store_mark_success(f.db, M, "page-1", &u) == MAE_OK,
          "docs/stores.md LLM: mark success");
    json_object *d = expect_event(&f, "llm.success", M, "llm_agent",
                                  "model,input_tokens,output_tokens,latency_ms");
    d_str(&f, d, "model", "claude-\xE4\xB8\xAD/x");
    d_int(&f, d, "input_tokens", 1200);
    d_int(&f, d, "output_tokens", 340);
    d_int(&f, d, "latency_ms", 950);
    r = read_row4(f.db, LLM_SQL, M);
    CHECK(streq(r.status, "success") && r.count == 0 && r.err == NULL && r.nra_null,
          "docs/stores.md LLM: mark success: status success, retries and errors reset: %s %lld %s "
          "nra-null %d", nz(r.status), (long long)r.count, nz(r.err), r.nra_null);
    row4_free(&r);

    /* a mail with no row; an invalid model repaired in the event */
    add_mail(f.db, N);
    fail_once(&f, LLM, N, N, 1, 5, NULL, "first", NULL, true);
    mae_llm_usage u2 = {.model = "m\xFF", .input_tokens = 1, .output_tokens = 2,
                        .latency_ms = 3};
    fail_once(&f, LLM, N, N, 2, 5, NULL, "tab\t nl\n q\" bs\\ c\x01 del\x7f", NULL, true);
    CHECK(mae_llm_store_mark_success(f.db, N, NULL, &u2) == MAE_OK, "docs/stores.md LLM: success");
    d = expect_event(&f, "llm.success", N, "llm_agent",
                     "model,input_tokens,output_tokens,latency_ms");
    d_str(&f, d, "model", "m\xEF\xBF\xBD");
    free(longerr);
    fx_close(&f);
}

/* Limits are configurable per store; the schedule caps at 7200 s. */
static void test_configured_limits_and_the_7200_s_cap(void **state)
{
    (void)state;
    fx f;
    fx_open(&f, false, 7);
    const int64_t M = 700;
    add_mail(f.db, M);
    int64_t oid = 0;
    assert_int_equal(mae_outbox_enqueue(f.db, M, "flag", "notion", "{}", NULL, &oid, NULL),
                     MAE_OK);
    expect_event(&f, "outbox.enqueued", M, "outbox", "outbox_id,op_type,target,source");
    for (int n = 1; n <= 7; n++) {
        fail_once(&f, MAIL, M, M, n, 7, "failed", "e", NULL, true);
        fail_once(&f, OUTBOX, oid, M, n, 7, NULL, "e", NULL, true);
        fail_once(&f, LLM, M, M, n, 7, NULL, "e", NULL, true);
    }
    /* a separate database with limit 2 on every store */
    mae_db *db7 = f.db;
    char path2[600];
    snprintf(path2, sizeof path2, "%s.two", f.path);
    tu_remove_db(path2);
    f.db = open_db(&f, path2, 2);
    add_mail(f.db, M);
    assert_int_equal(mae_outbox_enqueue(f.db, M, "flag", "notion", "{}", NULL, &oid, NULL),
                     MAE_OK);
    expect_event(&f, "outbox.enqueued", M, "outbox", "outbox_id,op_type,target,source");
    for (int n = 1; n <= 2; n++) {
        fail_once(&f, MAIL, M, M, n, 2, "fetch_failed", "e", NULL, true);
        fail_once(&f, OUTBOX, oid, M, n, 2, NULL, "e", NULL, true);
        fail_once(&f, LLM, M, M, n, 2, NULL, "e", NULL, true);
    }
    mae_db_close(f.db);
    tu_remove_db(path2);
    f.db = db7;
    fx_close(&f);
}

/* Caller transactions: events held until commit, in order; dropped on rollback. */
static void test_events_wait_for_the_callers_commit(void **state)
{
    (void)state;
    fx f;
    fx_open(&f, false, 0);
    const int64_t M = 53675;
    add_mail(f.db, M);

    assert_int_equal(mae_db_begin(f.db), MAE_OK);
    int64_t oid = 0;
    bool ins = false;
    CHECK(mae_outbox_enqueue(f.db, M, "mark_read", "notion", "{\"read\":true}", MAE_SOURCE_CLI,
                             &oid, &ins) == MAE_OK, "docs/stores.md: enqueue inside a transaction");
    CHECK(sqlite3_exec(mae_db_sqlite(f.db),
                       "UPDATE email_metadata SET is_read = 1 WHERE internal_id = 53675", NULL,
                       NULL, NULL) == SQLITE_OK, "docs/stores.md: the caller's own SQL in it");
    CHECK(mae_sync_store_mark_synced(f.db, M, "page-t", NULL, MAE_SOURCE_NEW_WATCHER) == MAE_OK,
          "docs/stores.md: mark synced inside a transaction");
    CHECK(mae_llm_store_mark_failed(f.db, M, "in tx", NULL) == MAE_OK,
          "docs/stores.md: LLM failure inside a transaction");
    expect_none(&f, "store writes inside an open caller transaction (events are held)");
    CHECK(mae_db_commit(f.db) == MAE_OK, "docs/stores.md: commit");
    json_object *d = expect_event(&f, "outbox.enqueued", M, "outbox",
                                  "outbox_id,op_type,target,source");
    d_int(&f, d, "outbox_id", oid);
    d = expect_event(&f, "email.synced", M, "new_watcher", "notion_page_id");
    d_str(&f, d, "notion_page_id", "page-t");
    d = expect_event(&f, "llm.failed", M, "llm_agent", "retry_count,next_retry_at,error");
    d_int(&f, d, "retry_count", 1);
    CHECK(sql_int(f.db, "SELECT is_read FROM email_metadata WHERE internal_id=53675") == 1,
          "docs/stores.md: the caller's SQL committed with the store writes");

    /* rollback: nothing published, nothing written */
    assert_int_equal(mae_db_begin(f.db), MAE_OK);
    CHECK(mae_outbox_enqueue(f.db, M, "archive", "mailapp", "{}", NULL, NULL, NULL) == MAE_OK,
          "enqueue in tx");
    CHECK(mae_sync_store_mark_failed(f.db, M, "failed", "boom", NULL) == MAE_OK, "fail in tx");
    CHECK(mae_outbox_mark_done(f.db, oid) == MAE_OK, "done in tx");
    CHECK(mae_db_rollback(f.db) == MAE_OK, "docs/stores.md: rollback");
    expect_none(&f, "a rolled-back caller transaction");
    CHECK(sql_int(f.db, "SELECT COUNT(*) FROM email_outbox WHERE op_type='archive'") == 0,
          "docs/stores.md: a rollback writes nothing");
    row4 r = read_row4(f.db, MAIL_SQL, M);
    CHECK(streq(r.status, "synced") && r.count == 0,
          "docs/stores.md: a rollback writes nothing: %s", nz(r.status));
    row4_free(&r);
    r = read_row4(f.db, OUTBOX_SQL, oid);
    CHECK(streq(r.status, "pending"), "docs/stores.md: a rollback writes nothing: %s",
          nz(r.status));
    row4_free(&r);

    /* a failing write inside a transaction publishes nothing, the rest commits */
    assert_int_equal(mae_db_begin(f.db), MAE_OK);
    CHECK(mae_outbox_mark_done(f.db, oid) == MAE_OK, "done in tx");
    CHECK(mae_sync_store_mark_failed(f.db, 31337, "failed", "x", NULL) == MAE_ENOTFOUND,
          "docs/api.md: missing mail in tx");
    CHECK(mae_db_commit(f.db) == MAE_OK, "commit");
    d = expect_event(&f, "outbox.done", M, "outbox", "outbox_id");
    d_int(&f, d, "outbox_id", oid);
    expect_none(&f, "a failed write inside a committed transaction");
    fx_close(&f);
}

/* ---- schema, pragmas, an existing database ------------------------------- */

typedef struct colspec {
    const char *name, *type;
    int notnull;
    const char *dflt;  /* NULL: not checked */
} colspec;

static void check_table(mae_db *db, const char *table, const colspec *cols, size_t n)
{
    char sql[128];
    snprintf(sql, sizeof sql, "PRAGMA table_info(%s)", table);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(mae_db_sqlite(db), sql, -1, &st, NULL), SQLITE_OK);
    bool seen[32] = {false};
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 1);
        const char *type = (const char *)sqlite3_column_text(st, 2);
        int notnull = sqlite3_column_int(st, 3);
        const char *dflt = (const char *)sqlite3_column_text(st, 4);
        for (size_t i = 0; i < n; i++) {
            if (strcmp(cols[i].name, name) != 0)
                continue;
            seen[i] = true;
            CHECK(strcasecmp(type, cols[i].type) == 0 && notnull == cols[i].notnull,
                  "docs/stores.md Tables: %s.%s is %s%s; got %s%s", table, name, cols[i].type,
                  cols[i].notnull ? " NOT NULL" : "", type, notnull ? " NOT NULL" : "");
            if (cols[i].dflt)
                CHECK(dflt && strcmp(dflt, cols[i].dflt) == 0,
                      "docs/stores.md Tables: %s.%s DEFAULT %s; got %s", table, name, cols[i].dflt,
                      nz(dflt));
        }
    }
    sqlite3_finalize(st);
    for (size_t i = 0; i < n; i++)
        CHECK(seen[i], "docs/stores.md Tables: %s has the column %s", table, cols[i].name);
}

/* An index on `table` whose leading columns are `cols` (comma-separated);
 * unique/partial: -1 not checked. Returns whether one was found. */
static bool has_index(mae_db *db, const char *table, const char *cols, int unique, int partial)
{
    char sql[160];
    snprintf(sql, sizeof sql, "PRAGMA index_list(%s)", table);
    sqlite3_stmt *st = NULL;
    bool found = false;
    assert_int_equal(sqlite3_prepare_v2(mae_db_sqlite(db), sql, -1, &st, NULL), SQLITE_OK);
    while (!found && sqlite3_step(st) == SQLITE_ROW) {
        const char *iname = (const char *)sqlite3_column_text(st, 1);
        int u = sqlite3_column_int(st, 2);
        int part = sqlite3_column_int(st, 4);
        if ((unique >= 0 && u != unique) || (partial >= 0 && part != partial))
            continue;
        char q[200], got[200] = "";
        snprintf(q, sizeof q, "PRAGMA index_info(\"%s\")", iname);
        sqlite3_stmt *st2 = NULL;
        assert_int_equal(sqlite3_prepare_v2(mae_db_sqlite(db), q, -1, &st2, NULL), SQLITE_OK);
        while (sqlite3_step(st2) == SQLITE_ROW) {
            const char *c = (const char *)sqlite3_column_text(st2, 2);
            if (got[0])
                strncat(got, ",", sizeof got - strlen(got) - 1);
            strncat(got, c ? c : "?", sizeof got - strlen(got) - 1);
        }
        sqlite3_finalize(st2);
        if (strncmp(got, cols, strlen(cols)) == 0 &&
            (got[strlen(cols)] == 0 || got[strlen(cols)] == ','))
            found = true;
    }
    sqlite3_finalize(st);
    return found;
}

static void test_schema_and_pragmas(void **state)
{
    (void)state;
    fx f;
    fx_open(&f, false, 0);
    static const colspec mail[] = {
        {"internal_id", "INTEGER", 0, NULL}, {"message_id", "TEXT", 0, NULL},
        {"thread_id", "TEXT", 0, NULL},      {"subject", "TEXT", 0, NULL},
        {"sender", "TEXT", 0, NULL},         {"sender_name", "TEXT", 0, NULL},
        {"to_addr", "TEXT", 0, NULL},        {"cc_addr", "TEXT", 0, NULL},
        {"date_received", "TEXT", 0, NULL},  {"mailbox", "TEXT", 0, NULL},
        {"is_read", "INTEGER", 0, "0"},      {"is_flagged", "INTEGER", 0, "0"},
        {"sync_status", "TEXT", 0, "'pending'"}, {"notion_page_id", "TEXT", 0, NULL},
        {"notion_thread_id", "TEXT", 0, NULL},   {"sync_error", "TEXT", 0, NULL},
        {"retry_count", "INTEGER", 0, "0"},  {"next_retry_at", "REAL", 0, NULL},
        {"created_at", "REAL", 0, NULL},     {"updated_at", "REAL", 0, NULL}};
    static const colspec outbox[] = {
        {"outbox_id", "INTEGER", 0, NULL},   {"internal_id", "INTEGER", 1, NULL},
        {"op_type", "TEXT", 1, NULL},        {"target", "TEXT", 1, NULL},
        {"payload_json", "TEXT", 1, NULL},   {"source", "TEXT", 0, NULL},
        {"status", "TEXT", 1, "'pending'"},  {"attempts", "INTEGER", 1, "0"},
        {"last_error", "TEXT", 0, NULL},     {"next_retry_at", "REAL", 0, NULL},
        {"created_at", "REAL", 1, NULL},     {"updated_at", "REAL", 1, NULL}};
    static const colspec llm[] = {
        {"internal_id", "INTEGER", 0, NULL}, {"notion_page_id", "TEXT", 0, NULL},
        {"mailbox", "TEXT", 0, NULL},        {"status", "TEXT", 0, NULL},
        {"retry_count", "INTEGER", 0, "0"},  {"next_retry_at", "REAL", 0, NULL},
        {"last_error", "TEXT", 0, NULL},     {"model", "TEXT", 0, NULL},
        {"input_tokens", "INTEGER", 0, NULL}, {"output_tokens", "INTEGER", 0, NULL},
        {"cache_read_input_tokens", "INTEGER", 0, NULL},
        {"cache_creation_input_tokens", "INTEGER", 0, NULL},
        {"latency_ms", "INTEGER", 0, NULL},  {"labels_json", "TEXT", 0, NULL},
        {"created_at", "REAL", 0, NULL},     {"updated_at", "REAL", 0, NULL}};
    check_table(f.db, "email_metadata", mail, sizeof mail / sizeof *mail);
    check_table(f.db, "email_outbox", outbox, sizeof outbox / sizeof *outbox);
    check_table(f.db, "llm_processing", llm, sizeof llm / sizeof *llm);

    CHECK(has_index(f.db, "email_metadata", "message_id", -1, -1),
          "docs/stores.md: index on email_metadata(message_id)");
    CHECK(has_index(f.db, "email_metadata", "thread_id", -1, -1),
          "docs/stores.md: index on email_metadata(thread_id)");
    CHECK(has_index(f.db, "email_metadata", "date_received", -1, -1),
          "docs/stores.md: index on email_metadata(date_received DESC)");
    CHECK(has_index(f.db, "email_metadata", "sync_status", -1, -1),
          "docs/stores.md: index on email_metadata(sync_status)");
    CHECK(has_index(f.db, "email_metadata", "mailbox", -1, -1),
          "docs/stores.md: index on email_metadata(mailbox)");
    CHECK(has_index(f.db, "email_metadata", "next_retry_at", -1, 1),
          "docs/stores.md: partial index on email_metadata(next_retry_at) WHERE sync_status IN "
          "('fetch_failed','failed')");
    CHECK(sql_int(f.db, "SELECT COUNT(*) FROM sqlite_master WHERE type='index' AND "
                        "name='ux_outbox_pending_intent'") == 1 &&
              has_index(f.db, "email_outbox", "internal_id,op_type,target", 1, 1),
          "docs/stores.md: ux_outbox_pending_intent UNIQUE on (internal_id, op_type, target) "
          "WHERE status='pending'");
    CHECK(has_index(f.db, "email_outbox", "status,next_retry_at", -1, 1),
          "docs/stores.md: partial index on email_outbox(status, next_retry_at)");
    CHECK(has_index(f.db, "email_outbox", "internal_id", -1, 0),
          "docs/stores.md: index on email_outbox(internal_id)");
    CHECK(has_index(f.db, "email_outbox", "target,status", -1, -1),
          "docs/stores.md: index on email_outbox(target, status)");
    CHECK(has_index(f.db, "llm_processing", "status", -1, -1),
          "docs/stores.md: index on llm_processing(status)");
    CHECK(has_index(f.db, "llm_processing", "next_retry_at", -1, 1),
          "docs/stores.md: partial index on llm_processing(next_retry_at) WHERE status='failed'");
    CHECK(sql_int(f.db, "SELECT COUNT(*) FROM sqlite_master WHERE name='sqlite_sequence'") == 1,
          "docs/stores.md: email_outbox.outbox_id is AUTOINCREMENT");

    char *jm = sql_text(f.db, "PRAGMA journal_mode");
    CHECK(jm && strcasecmp(jm, "wal") == 0, "docs/stores.md: journal_mode=WAL: %s", nz(jm));
    free(jm);
    CHECK(sql_int(f.db, "PRAGMA foreign_keys") == 1, "docs/stores.md: foreign_keys=ON");
    CHECK(sql_int(f.db, "PRAGMA busy_timeout") == 30000,
          "docs/stores.md, docs/api.md: busy timeout default 30 s: %lld",
          (long long)sql_int(f.db, "PRAGMA busy_timeout"));

    /* constraints: CHECK on target/status, cascade on delete */
    add_mail(f.db, 1);
    CHECK(sqlite3_exec(mae_db_sqlite(f.db),
                       "INSERT INTO email_outbox(internal_id,op_type,target,payload_json,"
                       "created_at,updated_at) VALUES(1,'x','slack','{}',1,1)",
                       NULL, NULL, NULL) != SQLITE_OK,
          "docs/stores.md: CHECK (target IN ('mailapp','notion'))");
    CHECK(sqlite3_exec(mae_db_sqlite(f.db),
                       "INSERT INTO email_outbox(internal_id,op_type,target,payload_json,status,"
                       "created_at,updated_at) VALUES(1,'x','notion','{}','weird',1,1)",
                       NULL, NULL, NULL) != SQLITE_OK,
          "docs/stores.md: CHECK on email_outbox.status");
    assert_int_equal(mae_outbox_enqueue(f.db, 1, "flag", "notion", "{}", NULL, NULL, NULL),
                     MAE_OK);
    expect_event(&f, "outbox.enqueued", 1, "outbox", "outbox_id,op_type,target,source");
    CHECK(sqlite3_exec(mae_db_sqlite(f.db), "DELETE FROM email_metadata WHERE internal_id=1",
                       NULL, NULL, NULL) == SQLITE_OK, "delete a mail");
    CHECK(sql_int(f.db, "SELECT COUNT(*) FROM email_outbox") == 0,
          "docs/stores.md: email_outbox.internal_id REFERENCES email_metadata ON DELETE CASCADE");

    /* timestamps are REAL epoch seconds */
    add_mail(f.db, 2);
    CHECK(sql_int(f.db, "SELECT typeof(created_at)='real' AND typeof(updated_at)='real' FROM "
                        "email_metadata WHERE internal_id=2") == 1,
          "docs/stores.md: all timestamps are REAL Unix epoch seconds");
    fx_close(&f);
}

/* Pointed at a database made by the original system (with extra columns of
 * its own), the library works unchanged and leaves them alone. */
static void test_existing_database(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/contract-orig-%d.db", MAE_TEST_TMPDIR, (int)getpid());
    tu_remove_db(path);
    sqlite3 *raw = NULL;
    assert_int_equal(sqlite3_open(path, &raw), SQLITE_OK);
    const char *ddl =
        "CREATE TABLE email_metadata (internal_id INTEGER PRIMARY KEY, message_id TEXT UNIQUE,"
        " thread_id TEXT, subject TEXT, sender TEXT, sender_name TEXT, to_addr TEXT, cc_addr"
        " TEXT, date_received TEXT, mailbox TEXT, is_read INTEGER DEFAULT 0, is_flagged INTEGER"
        " DEFAULT 0, sync_status TEXT DEFAULT 'pending', notion_page_id TEXT, notion_thread_id"
        " TEXT, sync_error TEXT, retry_count INTEGER DEFAULT 0, next_retry_at REAL, created_at"
        " REAL, updated_at REAL, legacy_note TEXT);"
        "CREATE TABLE llm_processing (internal_id INTEGER PRIMARY KEY, notion_page_id TEXT,"
        " mailbox TEXT, status TEXT, retry_count INTEGER DEFAULT 0, next_retry_at REAL,"
        " last_error TEXT, model TEXT, input_tokens INTEGER, output_tokens INTEGER,"
        " cache_read_input_tokens INTEGER, cache_creation_input_tokens INTEGER, latency_ms"
        " INTEGER, labels_json TEXT, created_at REAL, updated_at REAL, extra_x INTEGER);"
        "INSERT INTO email_metadata(internal_id, message_id, sync_status, retry_count,"
        " legacy_note, created_at, updated_at) VALUES (42, '<old@x>', 'failed', 2, 'keep me',"
        " 1.0, 1.0);"
        "INSERT INTO llm_processing(internal_id, status, retry_count, extra_x) VALUES"
        " (42, 'failed', 1, 7);";
    assert_int_equal(sqlite3_exec(raw, ddl, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(raw);

    fx f;
    fx_open(&f, false, 0);
    mae_db_close(f.db);
    tu_remove_db(f.path);
    snprintf(f.path, sizeof f.path, "%s", path);
    f.db = open_db(&f, path, 0);
    fail_once(&f, MAIL, 42, 42, 3, 5, "failed", "again", NULL, true);
    fail_once(&f, LLM, 42, 42, 2, 5, NULL, "again", NULL, true);
    mae_email upd = {.internal_id = 42, .message_id = "<old@x>", .subject = "s"};
    CHECK(mae_sync_store_upsert(f.db, &upd) == MAE_OK, "docs/stores.md: update in an existing db");
    char *note = sql_text(f.db, "SELECT legacy_note FROM email_metadata WHERE internal_id=42");
    CHECK(streq(note, "keep me"), "docs/stores.md: extra columns are left alone: %s", nz(note));
    free(note);
    CHECK(sql_int(f.db, "SELECT extra_x FROM llm_processing WHERE internal_id=42") == 7,
          "docs/stores.md: extra columns are left alone");
    CHECK(sql_int(f.db, "SELECT COUNT(*) FROM sqlite_master WHERE name='email_outbox'") == 1,
          "docs/stores.md: the library creates the missing tables");
    fx_close(&f);
}

/* LLM stale pending reset, and the due-for-retry / poll-ready reads. */
static void test_reads_and_stale_pending_reset(void **state)
{
    (void)state;
    fx f;
    fx_open(&f, false, 0);
    add_mail(f.db, 1);
    add_mail(f.db, 2);
    add_mail(f.db, 3);
    assert_int_equal(mae_llm_store_mark_pending(f.db, 1, NULL, NULL), MAE_OK);
    g_now += 301;
    assert_int_equal(mae_llm_store_mark_pending(f.db, 2, NULL, NULL), MAE_OK);
    g_now += 1;
    int64_t n = -1;
    CHECK(mae_llm_store_reset_stale_pending(f.db, 0, &n) == MAE_OK && n == 1,
          "docs/stores.md LLM: reset stale pending rows (older than 300 s by default): %lld",
          (long long)n);
    expect_none(&f, "reset of stale pending rows");
    row4 r = read_row4(f.db, LLM_SQL, 1);
    CHECK(streq(r.status, "failed") && !r.nra_null && r.nra <= g_now + 1e-3,
          "docs/stores.md LLM: a stale pending row becomes failed, due now: %s %.3f (now %.3f)",
          nz(r.status), r.nra, g_now);
    row4_free(&r);
    r = read_row4(f.db, LLM_SQL, 2);
    CHECK(streq(r.status, "pending"), "docs/stores.md LLM: a recent pending row is left: %s",
          nz(r.status));
    row4_free(&r);
    mae_llm_list *ll = NULL;
    CHECK(mae_llm_store_due_for_retry(f.db, 0, 10, &ll) == MAE_OK && ll && ll->count == 1 &&
              ll->rows[0].internal_id == 1,
          "docs/stores.md LLM: rows due for retry include the reset row");
    mae_llm_list_free(ll);

    /* mails due for retry */
    fail_once(&f, MAIL, 3, 3, 1, 5, "fetch_failed", "x", NULL, true);
    double due = g_now + 60;
    mae_email_list *el = NULL;
    CHECK(mae_sync_store_due_for_retry(f.db, due - 1, 10, &el) == MAE_OK && el &&
              el->count == 0, "docs/stores.md: a mail is not due before next_retry_at");
    mae_email_list_free(el);
    el = NULL;
    CHECK(mae_sync_store_due_for_retry(f.db, due, 10, &el) == MAE_OK && el && el->count == 1 &&
              el->rows[0].internal_id == 3, "docs/stores.md: a mail is due at next_retry_at");
    mae_email_list_free(el);

    /* poll ready: pending, or failed and due; oldest first */
    int64_t a = 0, b = 0, c = 0;
    mae_outbox_enqueue(f.db, 1, "op_a", "notion", "{}", NULL, &a, NULL);
    g_now += 1;
    mae_outbox_enqueue(f.db, 1, "op_b", "mailapp", "{}", NULL, &b, NULL);
    g_now += 1;
    mae_outbox_enqueue(f.db, 1, "op_c", "notion", "{}", NULL, &c, NULL);
    for (int i = 0; i < 3; i++)
        expect_event(&f, "outbox.enqueued", 1, "outbox", "outbox_id,op_type,target,source");
    fail_once(&f, OUTBOX, a, 1, 1, 5, NULL, "x", NULL, true);
    CHECK(mae_outbox_mark_processing(f.db, c) == MAE_OK, "processing");
    mae_outbox_list *ol = NULL;
    CHECK(mae_outbox_poll_ready(f.db, NULL, 0, &ol) == MAE_OK && ol && ol->count == 1 &&
              ol->rows[0].outbox_id == b,
          "docs/stores.md Outbox: poll ready gives pending and due failed intents only (a failed "
          "intent not yet due is left out, processing too)");
    mae_outbox_list_free(ol);
    g_now += 61;
    ol = NULL;
    CHECK(mae_outbox_poll_ready(f.db, NULL, 0, &ol) == MAE_OK && ol && ol->count == 2 &&
              ol->rows[0].outbox_id == a && ol->rows[1].outbox_id == b,
          "docs/stores.md Outbox: poll ready, oldest first, includes due failed intents");
    mae_outbox_list_free(ol);
    ol = NULL;
    CHECK(mae_outbox_poll_ready(f.db, "mailapp", 0, &ol) == MAE_OK && ol && ol->count == 1 &&
              ol->rows[0].outbox_id == b, "docs/stores.md Outbox: poll ready by target");
    mae_outbox_list_free(ol);
    fx_close(&f);
}

/* The queue is bounded by count and bytes; a full queue drops the new event
 * and counts it; what was queued while Redis was away arrives when it comes
 * back, in order. */

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sync_store_lifecycle),
        cmocka_unit_test(test_outbox_lifecycle),
        cmocka_unit_test(test_llm_lifecycle),
        cmocka_unit_test(test_configured_limits_and_the_7200_s_cap),
        cmocka_unit_test(test_events_wait_for_the_callers_commit),
        cmocka_unit_test(test_schema_and_pragmas),
        cmocka_unit_test(test_existing_database),
        cmocka_unit_test(test_reads_and_stale_pending_reset),
    };
    return cmocka_run_group_tests(tests, contract_group_setup, contract_group_teardown);
}
