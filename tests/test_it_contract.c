/* Independent contract harness: drives the stores and the publisher through
 * the fixed public API only (docs/api.md, plus the read functions and
 * mae_db_sqlite for reading rows back), with a real redis-server and a real
 * subscriber, and compares every line received and every row written with
 * the normative spec (docs/events.md, docs/stores.md, docs/publisher.md, docs/api.md).
 *
 * Checks are "soft": a deviation is printed with the spec promise it breaks
 * and counted, the test goes on, and each test fails at its end when any
 * deviation was counted, so that one run lists them all. */
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
#include <json-c/json.h>

#include <mailagent/events.h>

#include "redis_harness.h"
#include "testutil.h"

#ifndef MAE_TEST_TMPDIR
#define MAE_TEST_TMPDIR "/tmp"
#endif

#define DEFAULT_CHANNEL "mailagent:events:v1"
#define MARKER "contract.marker"

static const double SCHEDULE[5] = {60, 300, 900, 3600, 7200};

/* ---- soft checks ---------------------------------------------------------- */

static int g_fail;
static unsigned long g_checks;

#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        g_checks++;                                                             \
        if (!(cond)) {                                                          \
            g_fail++;                                                           \
            print_message("DEVIATION %s:%d: ", __FILE__, __LINE__);             \
            print_message(__VA_ARGS__);                                         \
            print_message("\n");                                                \
        }                                                                       \
    } while (0)

static const char *nz(const char *s)
{
    return s ? s : "(null)";
}

/* ---- UTF-8 helpers -------------------------------------------------------- */

/* Length of the valid sequence at s (1..4), 0 when s starts an invalid one. */
static size_t u8_seq(const unsigned char *s, size_t avail)
{
    unsigned c = s[0];
    size_t n;
    unsigned min;
    unsigned cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2; cp = c & 0x1F; min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3; cp = c & 0x0F; min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4; cp = c & 0x07; min = 0x10000;
    } else {
        return 0;
    }
    if (avail < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

static bool u8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t len = strlen(s);
    for (size_t i = 0; i < len;) {
        size_t n = u8_seq(p + i, len - i);
        if (!n)
            return false;
        i += n;
    }
    return true;
}

static size_t u8_count(const char *s)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p & 0xC0) != 0x80)
            n++;
    return n;
}

/* The first ncp code points of a valid UTF-8 string (malloc'd). */
static char *u8_prefix(const char *s, size_t ncp)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, cps = 0, len = strlen(s);
    while (i < len && cps < ncp) {
        size_t n = u8_seq(p + i, len - i);
        i += n ? n : 1;
        cps++;
    }
    char *out = malloc(i + 1);
    memcpy(out, s, i);
    out[i] = 0;
    return out;
}

/* A text of ncp code points of 1, 2, 3 and 4 bytes, with '/' and spaces. */
static char *make_text(size_t ncp)
{
    static const char *const parts[] = {"a", "\xC3\xA9", "\xE4\xB8\xAD", "\xF0\x9F\x98\x80",
                                        "/", " ", "Z", "\xD0\x96"};
    char *out = malloc(ncp * 4 + 1);
    size_t len = 0;
    for (size_t i = 0; i < ncp; i++) {
        const char *pt = parts[(i * 7 + i / 3) % 8];
        size_t l = strlen(pt);
        memcpy(out + len, pt, l);
        len += l;
    }
    out[len] = 0;
    return out;
}

/* ---- the fake clock --------------------------------------------------------- */

static double g_now = 1716096000.25;

static double fake_clock(void *user)
{
    return *(double *)user;
}

static bool near(double a, double b)
{
    return fabs(a - b) < 1e-3;
}

/* ---- the fixture: one Redis for all, per test a channel, a subscriber, a
 *      publisher and a database ------------------------------------------- */

static mtr_redis g_redis;
static int g_seq;

typedef struct fx {
    char channel[96];
    char path[512];
    mtr_sub *sub;
    mae_publisher *p;
    mae_db *db;
    size_t seen;              /* messages consumed from the subscriber */
    json_object *root;        /* the last event parsed */
    uint64_t markers;         /* marker events sent through mae_safe_publish */
} fx;

static mae_db *open_db(fx *f, const char *path, int limit)
{
    mae_db_config dc;
    mae_db *db = NULL;
    mae_db_config_init(&dc);
    dc.path = path;
    dc.publisher = f->p;
    dc.clock = fake_clock;
    dc.clock_user = &g_now;
    if (limit) {
        dc.email_max_retries = limit;
        dc.outbox_max_attempts = limit;
        dc.llm_max_retries = limit;
    }
    assert_int_equal(mae_db_open(&dc, &db), MAE_OK);
    return db;
}

/* channel NULL: the publisher's default channel (the config leaves it unset). */
static void fx_open(fx *f, bool default_channel, int limit)
{
    memset(f, 0, sizeof *f);
    g_fail = 0;
    g_now = 1716096000.25;
    g_seq++;
    if (default_channel)
        snprintf(f->channel, sizeof f->channel, "%s", DEFAULT_CHANNEL);
    else
        snprintf(f->channel, sizeof f->channel, "contract:%d:%d", (int)getpid(), g_seq);
    snprintf(f->path, sizeof f->path, "%s/contract-%d-%d.db", MAE_TEST_TMPDIR, (int)getpid(),
             g_seq);
    tu_remove_db(f->path);
    f->sub = mtr_subscribe(&g_redis, f->channel);
    assert_non_null(f->sub);

    mae_publisher_config pc;
    mae_publisher_config_init(&pc);
    pc.redis_url = g_redis.url;
    if (!default_channel)
        pc.channel = f->channel;
    pc.backoff_min_ms = 20;
    pc.backoff_max_ms = 200;
    assert_int_equal(mae_publisher_open(&pc, &f->p), MAE_OK);
    f->db = open_db(f, f->path, limit);
}

static void check_counters(mae_publisher *p, const char *when)
{
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    CHECK(st.enqueued == st.published + st.dropped_send_error + st.queued + st.in_flight,
          "docs/publisher.md Counters: enqueued = published + dropped_send_error + queued "
          "(+ in flight) (%s): %llu != %llu + %llu + %llu + %llu",
          when, (unsigned long long)st.enqueued, (unsigned long long)st.published,
          (unsigned long long)st.dropped_send_error, (unsigned long long)st.queued,
          (unsigned long long)st.in_flight);
    CHECK(st.calls == st.enqueued + st.dropped_queue_full + st.dropped_disabled +
                          st.dropped_invalid,
          "docs/publisher.md Counters: every call is counted exactly once (%s): calls %llu",
          when, (unsigned long long)st.calls);
}

static void fx_close(fx *f)
{
    if (f->root)
        json_object_put(f->root);
    f->root = NULL;
    CHECK(mae_publisher_flush(f->p, 5000) == MAE_OK,
          "docs/publisher.md: flush empties the queue of a healthy Redis");
    check_counters(f->p, "at the end of the test");
    mae_publisher_stats st;
    mae_publisher_stats_get(f->p, &st);
    CHECK(st.queued == 0 && st.dropped_send_error == 0,
          "docs/publisher.md: a flushed publisher on a healthy Redis has nothing queued or lost "
          "(queued %llu, dropped_send_error %llu)",
          (unsigned long long)st.queued, (unsigned long long)st.dropped_send_error);
    mtr_sub_wait(f->sub, (size_t)st.published, 3000);
    CHECK(mtr_sub_count(f->sub) == st.published,
          "docs/publisher.md: published counts what Redis acknowledged: %llu, the subscriber got %zu",
          (unsigned long long)st.published, mtr_sub_count(f->sub));
    mae_db_close(f->db);
    assert_int_equal(mae_publisher_close(f->p, 2000), MAE_OK);
    mtr_sub_close(f->sub);
    tu_remove_db(f->path);
    int fails = g_fail;
    g_fail = 0;
    if (fails)
        print_message("%d deviation(s) from the spec in this test\n", fails);
    assert_int_equal(fails, 0);
}

/* ---- raw-byte checks of one received line -------------------------------- */

static const char *skip_ws(const char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
        s++;
    return s;
}

/* The raw token of the value of a top-level key: the first occurrence of
 * "key" followed by ':' (good for the envelope's first keys). */
static const char *raw_value(const char *raw, const char *key)
{
    char needle[64];
    snprintf(needle, sizeof needle, "\"%s\"", key);
    const char *k = strstr(raw, needle);
    if (!k)
        return NULL;
    const char *v = skip_ws(k + strlen(needle));
    if (*v != ':')
        return NULL;
    return skip_ws(v + 1);
}

static void check_raw_line(const char *raw)
{
    size_t len = strlen(raw);
    CHECK(u8_valid(raw), "docs/events.md Envelope: every message is valid UTF-8: %s", raw);
    CHECK(strchr(raw, '\n') == NULL && len > 0 && raw[len - 1] == '}',
          "docs/events.md Transport: one JSON object on one line, no trailing newline: [%s]", raw);
    CHECK(strstr(raw, "\\/") == NULL, "docs/events.md Envelope: '/' is not escaped: %s", raw);

    /* ts: a number with a fractional part of microsecond resolution */
    const char *ts = raw_value(raw, "ts");
    CHECK(ts != NULL, "docs/events.md Envelope: a ts key: %s", raw);
    if (ts) {
        size_t i = 0, intd = 0, frac = 0;
        while (ts[i] >= '0' && ts[i] <= '9')
            i++, intd++;
        bool dot = ts[i] == '.';
        if (dot) {
            i++;
            while (ts[i] >= '0' && ts[i] <= '9')
                i++, frac++;
        }
        const char *after = skip_ws(ts + i);
        CHECK(intd >= 10 && dot && frac == 6 && *after == ',',
              "docs/events.md Envelope: ts is epoch seconds with a fractional part of microsecond "
              "resolution (6 digits, e.g. 1716096000.123456), no exponent: %.30s", ts);
    }
    /* internal_id: an integer token or null */
    const char *id = raw_value(raw, "internal_id");
    CHECK(id != NULL, "docs/events.md Envelope: an internal_id key: %s", raw);
    if (id) {
        size_t i = 0;
        if (strncmp(id, "null", 4) == 0) {
            i = 4;
        } else {
            if (id[i] == '-')
                i++;
            size_t d = i;
            while (id[i] >= '0' && id[i] <= '9')
                i++;
            CHECK(i > d, "docs/events.md Envelope: internal_id is an integer or null: %.30s", id);
        }
        CHECK(*skip_ws(id + i) == ',',
              "docs/events.md Envelope: internal_id is an integer (no fraction/exponent) or null: "
              "%.30s", id);
    }
}

/* Parses a line strictly and checks the envelope: keys exactly event_type,
 * ts, internal_id, data, source in this order, and their JSON types. */
static json_object *parse_envelope(const char *raw)
{
    json_tokener *tok = json_tokener_new();
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    json_object *root = json_tokener_parse_ex(tok, raw, (int)strlen(raw));
    enum json_tokener_error err = json_tokener_get_error(tok);
    json_tokener_free(tok);
    CHECK(root && err == json_tokener_success,
          "docs/events.md Envelope: every message is valid JSON for a strict parser: %s", raw);
    if (!root || !json_object_is_type(root, json_type_object)) {
        CHECK(false, "docs/events.md Envelope: the message is one JSON object: %s", raw);
        if (root)
            json_object_put(root);
        return NULL;
    }
    static const char *const order[] = {"event_type", "ts", "internal_id", "data", "source"};
    size_t i = 0;
    bool ok = json_object_object_length(root) == 5;
    json_object_object_foreach(root, key, val)
    {
        (void)val;
        if (i >= 5 || strcmp(key, order[i]) != 0)
            ok = false;
        i++;
    }
    CHECK(ok, "docs/events.md Envelope: exactly the keys event_type, ts, internal_id, data, source "
              "in this order: %s", raw);
    json_object *v;
    CHECK(json_object_object_get_ex(root, "event_type", &v) &&
              json_object_is_type(v, json_type_string),
          "docs/events.md Envelope: event_type is a string: %s", raw);
    CHECK(json_object_object_get_ex(root, "ts", &v) && json_object_is_type(v, json_type_double),
          "docs/events.md Envelope: ts is a number with a fractional part: %s", raw);
    CHECK(json_object_object_get_ex(root, "internal_id", &v) &&
              (v == NULL || json_object_is_type(v, json_type_int)),
          "docs/events.md Envelope: internal_id is an integer or null: %s", raw);
    CHECK(json_object_object_get_ex(root, "data", &v) && v &&
              json_object_is_type(v, json_type_object),
          "docs/events.md Envelope: data is an object, {} never null: %s", raw);
    CHECK(json_object_object_get_ex(root, "source", &v) && v &&
              json_object_is_type(v, json_type_string) && json_object_get_string_len(v) > 0,
          "docs/events.md Envelope: source is a non-empty string: %s", raw);
    return root;
}

/* ---- receiving ------------------------------------------------------------ */

/* The next raw line, or NULL when none arrives within 5 s. */
static const char *next_raw(fx *f)
{
    mae_publisher_flush(f->p, 5000);
    if (mtr_sub_wait(f->sub, f->seen + 1, 5000) < f->seen + 1)
        return NULL;
    return mtr_sub_message(f->sub, f->seen++);
}

static void send_marker(fx *f)
{
    f->markers++;
    mae_safe_publish(f->p, MARKER, MAE_NO_ID, NULL, "contract");
}

/* Nothing was published by the last operation(s): the next line is a marker
 * sent now. Anything before it is reported, and skipped. */
static void expect_none_(fx *f, const char *what, int line)
{
    send_marker(f);
    for (;;) {
        const char *raw = next_raw(f);
        if (!raw) {
            CHECK(false, "(line %d) the marker event never arrived after %s", line, what);
            return;
        }
        if (strstr(raw, "\"" MARKER "\""))
            return;
        CHECK(false, "(line %d) %s must publish nothing; got: %s", line, what, raw);
    }
}
#define expect_none(f, what) expect_none_((f), (what), __LINE__)

/* The next event: checks its raw bytes, its envelope, its type, mail,
 * source, and that data has exactly the keys of keys_csv. Returns data
 * (borrowed until the next call), or NULL when no line came. */
static json_object *expect_event_(fx *f, const char *type, int64_t id, const char *source,
                                  const char *keys_csv, int line)
{
    if (f->root)
        json_object_put(f->root);
    f->root = NULL;
    const char *raw = next_raw(f);
    if (!raw) {
        CHECK(false, "(line %d) no %s event was published", line, type);
        return NULL;
    }
    check_raw_line(raw);
    json_object *root = parse_envelope(raw);
    if (!root)
        return NULL;
    f->root = root;
    json_object *v = NULL, *data = NULL;
    json_object_object_get_ex(root, "event_type", &v);
    const char *got = v ? json_object_get_string(v) : "";
    if (strcmp(got, type) != 0) {
        CHECK(false, "(line %d) expected a %s event, got: %s", line, type, raw);
        return NULL;
    }
    json_object_object_get_ex(root, "internal_id", &v);
    if (id == MAE_NO_ID)
        CHECK(v == NULL, "(line %d) docs/events.md: internal_id null for MAE_NO_ID: %s", line, raw);
    else
        CHECK(v && json_object_is_type(v, json_type_int) && json_object_get_int64(v) == id,
              "(line %d) docs/events.md: %s carries the mail %lld as internal_id: %s", line, type,
              (long long)id, raw);
    json_object_object_get_ex(root, "source", &v);
    CHECK(v && strcmp(json_object_get_string(v), source) == 0,
          "(line %d) docs/events.md: %s has envelope source \"%s\": %s", line, type, source, raw);
    json_object_object_get_ex(root, "data", &data);
    if (!data || !json_object_is_type(data, json_type_object))
        return NULL;
    /* exactly the keys of docs/events.md */
    char buf[256];
    snprintf(buf, sizeof buf, "%s", keys_csv);
    size_t want = 0;
    for (char *save = NULL, *k = strtok_r(buf, ",", &save); k; k = strtok_r(NULL, ",", &save)) {
        want++;
        CHECK(json_object_object_get_ex(data, k, NULL),
              "(line %d) docs/events.md: %s data has the key %s: %s", line, type, k, raw);
    }
    CHECK((size_t)json_object_object_length(data) == want,
          "(line %d) docs/events.md: %s data has exactly the keys {%s}, no extras: %s", line, type,
          keys_csv, raw);
    return data;
}
#define expect_event(f, type, id, source, keys) \
    expect_event_((f), (type), (id), (source), (keys), __LINE__)

static const char *last_raw(fx *f)
{
    return f->seen ? mtr_sub_message(f->sub, f->seen - 1) : "";
}

static void d_int(fx *f, json_object *data, const char *key, int64_t want)
{
    json_object *v;
    if (!data)
        return;
    bool ok = json_object_object_get_ex(data, key, &v) && v &&
              json_object_is_type(v, json_type_int) && json_object_get_int64(v) == want;
    CHECK(ok, "docs/events.md: data.%s is the integer %lld: %s", key, (long long)want, last_raw(f));
}

static void d_num(fx *f, json_object *data, const char *key, double want)
{
    json_object *v;
    if (!data)
        return;
    bool ok = json_object_object_get_ex(data, key, &v) && v &&
              (json_object_is_type(v, json_type_double) ||
               json_object_is_type(v, json_type_int)) &&
              near(json_object_get_double(v), want);
    CHECK(ok, "docs/events.md, docs/stores.md: data.%s is the number %.6f: %s", key, want, last_raw(f));
}

static void d_str(fx *f, json_object *data, const char *key, const char *want)
{
    json_object *v;
    if (!data)
        return;
    bool has = json_object_object_get_ex(data, key, &v);
    bool ok;
    if (!want)
        ok = has && v == NULL;
    else
        ok = has && v && json_object_is_type(v, json_type_string) &&
             strcmp(json_object_get_string(v), want) == 0;
    CHECK(ok, "docs/events.md: data.%s is %s%s%s: %s", key, want ? "\"" : "", want ? want : "null",
          want ? "\"" : "", last_raw(f));
    /* raw UTF-8, not \u-escaped */
    if (ok && want) {
        bool ascii = true;
        for (const unsigned char *p = (const unsigned char *)want; *p; p++)
            if (*p >= 0x80)
                ascii = false;
        if (!ascii)
            CHECK(strstr(last_raw(f), want) != NULL,
                  "docs/events.md Envelope: text is emitted as raw UTF-8, not \\u-escaped: %s",
                  last_raw(f));
    }
}

/* ---- reading rows back (mae_db_sqlite: the caller's own SQL) -------------- */

typedef struct row4 {
    bool found;
    char *status;
    int64_t count;
    bool nra_null;
    double nra;
    char *err;
} row4;

static void row4_free(row4 *r)
{
    free(r->status);
    free(r->err);
    memset(r, 0, sizeof *r);
}

static char *col_text(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? strdup((const char *)t) : NULL;
}

static row4 read_row4(mae_db *db, const char *sql, int64_t id)
{
    row4 r;
    memset(&r, 0, sizeof r);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(mae_db_sqlite(db), sql, -1, &st, NULL), SQLITE_OK);
    sqlite3_bind_int64(st, 1, id);
    if (sqlite3_step(st) == SQLITE_ROW) {
        r.found = true;
        r.status = col_text(st, 0);
        r.count = sqlite3_column_int64(st, 1);
        r.nra_null = sqlite3_column_type(st, 2) == SQLITE_NULL;
        r.nra = sqlite3_column_double(st, 2);
        r.err = col_text(st, 3);
    }
    sqlite3_finalize(st);
    return r;
}

static int64_t sql_int(mae_db *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    assert_int_equal(sqlite3_prepare_v2(mae_db_sqlite(db), sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* The text of the first column of the first row (malloc'd), NULL for NULL. */
static char *sql_text(mae_db *db, const char *fmt, ...)
{
    char sql[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    sqlite3_stmt *st = NULL;
    char *v = NULL;
    assert_int_equal(sqlite3_prepare_v2(mae_db_sqlite(db), sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = col_text(st, 0);
    sqlite3_finalize(st);
    return v;
}

static bool streq(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

#define MAIL_SQL \
    "SELECT sync_status, retry_count, next_retry_at, sync_error FROM email_metadata " \
    "WHERE internal_id = ?"
#define OUTBOX_SQL \
    "SELECT status, attempts, next_retry_at, last_error FROM email_outbox WHERE outbox_id = ?"
#define LLM_SQL \
    "SELECT status, retry_count, next_retry_at, last_error FROM llm_processing " \
    "WHERE internal_id = ?"

static void add_mail(mae_db *db, int64_t id)
{
    char mid[64];
    snprintf(mid, sizeof mid, "<m%lld@example.org>", (long long)id);
    mae_email m = {.internal_id = id, .message_id = mid, .subject = "Hello \xE4\xB8\xAD",
                   .sender = "a@example.org", .mailbox = "INBOX",
                   .date_received = "2024-05-19T06:00:00Z"};
    assert_int_equal(mae_sync_store_upsert(db, &m), MAE_OK);
}

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
          "docs/api.md, docs/stores.md: %s failure %d of limit %d: outcome attempts %d, terminal %d, "
          "next_retry_at %s; got %lld, %d, %.3f (now %.3f)",
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
          "docs/stores.md: after %s failure %d/%d the row is %s with count %d; got %s, %lld", name, n,
          limit, want_status, n, nz(r.status), (long long)r.count);
    if (terminal)
        CHECK(r.nra_null, "docs/stores.md Retries: a terminal row has next_retry_at NULL (%s): %.3f",
              name, r.nra);
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

/* ---- tests ---------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    if (!mtr_available()) {
        /* A failure, not a skip: this suite is the contract. */
        print_message("redis-server not found (" MAE_REDIS_SERVER "): scripts/install-deps.sh "
                      "installs it\n");
        return -1;
    }
    memset(&g_redis, 0, sizeof g_redis);
    return mtr_start(&g_redis, NULL) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    mtr_cleanup(&g_redis);
    print_message("%lu contract checks evaluated\n", g_checks);
    return 0;
}

/* Envelope bytes through mae_safe_publish, on the default channel. */
static void test_envelope_and_safe_publish(void **state)
{
    (void)state;
    fx f;
    fx_open(&f, true, 0);

    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    double t0 = (double)rt.tv_sec + rt.tv_nsec / 1e9;
    mae_safe_publish(f.p, "custom.thing", MAE_NO_ID, NULL, "contract");
    json_object *d = expect_event(&f, "custom.thing", MAE_NO_ID, "contract", "");
    CHECK(d != NULL && json_object_object_length(d) == 0,
          "docs/api.md: data_json NULL gives data {}");
    CHECK(strstr(last_raw(&f), "\"internal_id\":null") != NULL,
          "docs/events.md Envelope: internal_id null for MAE_NO_ID: %s", last_raw(&f));
    if (f.root) {
        json_object *ts;
        json_object_object_get_ex(f.root, "ts", &ts);
        double tv = json_object_get_double(ts);
        CHECK(tv >= t0 - 1 && tv <= t0 + 5,
              "docs/events.md Envelope: ts is the epoch time the event was built: %.6f vs %.6f", tv,
              t0);
    }

    /* nested data passes through; raw UTF-8; '/' unescaped; negative and big ids */
    const char *data = "{ \"url\" : \"https://notion.so/a/b\", \"t\":\"\xE4\xB8\xAD\xC3\xA9"
                       "\xF0\x9F\x98\x80\", \"n\":[1,2,{\"k\":null}], \"o\":{} }";
    mae_safe_publish(f.p, "custom.nested", 9007199254740993LL, data, MAE_SOURCE_CLI);
    d = expect_event(&f, "custom.nested", 9007199254740993LL, "cli", "url,t,n,o");
    d_str(&f, d, "url", "https://notion.so/a/b");
    d_str(&f, d, "t", "\xE4\xB8\xAD\xC3\xA9\xF0\x9F\x98\x80");
    CHECK(strstr(last_raw(&f), "https://notion.so/a/b") != NULL,
          "docs/events.md Envelope: '/' is not escaped: %s", last_raw(&f));

    /* every call counted once: invalid ones as dropped_invalid, nothing sent */
    mae_publisher_stats before, after;
    mae_publisher_stats_get(f.p, &before);
    const char *bad_data[] = {"[1]", "{", "{\"a\":1} {\"b\":2}", "\"str\"", "null", "",
                              "{\"a\":1,}", "42"};
    for (size_t i = 0; i < sizeof bad_data / sizeof *bad_data; i++)
        mae_safe_publish(f.p, "custom.bad", 1, bad_data[i], "contract");
    mae_safe_publish(f.p, NULL, 1, NULL, "contract");
    mae_safe_publish(f.p, "", 1, NULL, "contract");
    mae_safe_publish(f.p, "custom.bad", 1, NULL, NULL);
    mae_safe_publish(f.p, "custom.bad", 1, NULL, "");
    mae_publisher_stats_get(f.p, &after);
    CHECK(after.dropped_invalid - before.dropped_invalid == 12 &&
              after.enqueued == before.enqueued,
          "docs/publisher.md Counters / docs/api.md: invalid data_json or arguments are counted "
          "dropped_invalid and not enqueued: dropped_invalid +%llu (want +12), enqueued +%llu",
          (unsigned long long)(after.dropped_invalid - before.dropped_invalid),
          (unsigned long long)(after.enqueued - before.enqueued));
    expect_none(&f, "mae_safe_publish with invalid arguments");
    check_counters(f.p, "after invalid publishes");

    /* NULL publisher: a harmless no-op */
    mae_safe_publish(NULL, "custom.thing", 1, "{}", "contract");
    mae_publisher_stats z;
    memset(&z, 0xff, sizeof z);
    mae_publisher_stats_get(NULL, &z);
    CHECK(z.enqueued == 0 && z.published == 0, "docs/api.md: a NULL publisher is a harmless no-op");
    CHECK(mae_publisher_flush(NULL, 10) == MAE_OK, "docs/api.md: flush of NULL is harmless");
    fx_close(&f);
}

/* A disabled publisher (NULL or "" URL) counts every call as dropped_disabled;
 * the stores still write their state. */
static void test_disabled_publisher(void **state)
{
    (void)state;
    const char *urls[] = {NULL, ""};
    for (int u = 0; u < 2; u++) {
        mae_publisher_config pc;
        mae_publisher *p = NULL;
        mae_publisher_config_init(&pc);
        pc.redis_url = urls[u];
        CHECK(mae_publisher_open(&pc, &p) == MAE_OK,
              "docs/publisher.md: a publisher with no Redis URL is a valid no-op publisher");
        if (!p)
            continue;
        mae_safe_publish(p, "custom.thing", 1, NULL, "contract");
        mae_safe_publish(p, "custom.thing", MAE_NO_ID, "{\"a\":1}", "contract");
        char path[512];
        snprintf(path, sizeof path, "%s/contract-disabled-%d-%d.db", MAE_TEST_TMPDIR,
                 (int)getpid(), u);
        tu_remove_db(path);
        mae_db_config dc;
        mae_db *db = NULL;
        mae_db_config_init(&dc);
        dc.path = path;
        dc.publisher = p;
        assert_int_equal(mae_db_open(&dc, &db), MAE_OK);
        add_mail(db, 7);
        CHECK(mae_sync_store_mark_synced(db, 7, "page-7", NULL, NULL) == MAE_OK,
              "docs/stores.md: a publishing problem never fails a write");
        char *st = sql_text(db, "SELECT sync_status FROM email_metadata WHERE internal_id=7");
        CHECK(streq(st, "synced"), "docs/stores.md: the state is written with a disabled publisher");
        free(st);
        mae_db_close(db);
        tu_remove_db(path);
        mae_publisher_stats s;
        mae_publisher_stats_get(p, &s);
        CHECK(s.dropped_disabled == 3 && s.enqueued == 0 && s.published == 0,
              "docs/publisher.md: a disabled publisher counts every call as dropped_disabled "
              "(url %s): dropped_disabled %llu (want 3), enqueued %llu",
              urls[u] ? "\"\"" : "NULL", (unsigned long long)s.dropped_disabled,
              (unsigned long long)s.enqueued);
        CHECK(mae_publisher_flush(p, 10) == MAE_OK, "docs/api.md: flush of a disabled publisher");
        CHECK(mae_publisher_close(p, 100) == MAE_OK, "docs/api.md: close of a disabled publisher");
    }
    /* a store with no publisher at all: state only */
    char path[512];
    snprintf(path, sizeof path, "%s/contract-nopub-%d.db", MAE_TEST_TMPDIR, (int)getpid());
    tu_remove_db(path);
    mae_db_config dc;
    mae_db *db = NULL;
    mae_db_config_init(&dc);
    dc.path = path;
    assert_int_equal(mae_db_open(&dc, &db), MAE_OK);
    add_mail(db, 8);
    CHECK(mae_llm_store_mark_failed(db, 8, "x", NULL) == MAE_OK,
          "docs/api.md: a db with a NULL publisher works, state only");
    mae_db_close(db);
    tu_remove_db(path);
    int fails = g_fail;
    g_fail = 0;
    assert_int_equal(fails, 0);
}

/* A mail's sync life: pending, fetch_failed/failed with the schedule,
 * dead_letter at the limit, synced. */
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
    CHECK(streq(src, "cli"), "docs/stores.md Outbox: merge keeps the old source when none is given: "
                             "%s", nz(src));
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
static void test_limits_and_schedule_cap(void **state)
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
static void test_caller_transactions(void **state)
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
    CHECK(streq(r.status, "synced") && r.count == 0, "docs/stores.md: a rollback writes nothing: %s",
          nz(r.status));
    row4_free(&r);
    r = read_row4(f.db, OUTBOX_SQL, oid);
    CHECK(streq(r.status, "pending"), "docs/stores.md: a rollback writes nothing: %s", nz(r.status));
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
static void test_reads_and_stale_reset(void **state)
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
static void test_queue_bounds_and_late_redis(void **state)
{
    (void)state;
    mtr_redis late;
    memset(&late, 0, sizeof late);
    assert_int_equal(mtr_reserve_port(&late), 0);
    mae_publisher_config pc;
    mae_publisher *p = NULL;
    mae_publisher_config_init(&pc);
    pc.redis_url = late.url;
    pc.queue_max_events = 3;
    pc.backoff_min_ms = 20;
    pc.backoff_max_ms = 100;
    pc.connect_timeout_ms = 200;
    assert_int_equal(mae_publisher_open(&pc, &p), MAE_OK);
    for (int i = 0; i < 5; i++) {
        char d[32];
        snprintf(d, sizeof d, "{\"n\":%d}", i);
        mae_safe_publish(p, "custom.n", i, d, "contract");
    }
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    CHECK(st.enqueued == 3 && st.dropped_queue_full == 2 && st.queued + st.in_flight == 3,
          "docs/publisher.md: a full queue drops the new event and counts it: enqueued %llu, "
          "dropped_queue_full %llu, queued %llu",
          (unsigned long long)st.enqueued, (unsigned long long)st.dropped_queue_full,
          (unsigned long long)st.queued);
    check_counters(p, "queue full, Redis away");

    assert_int_equal(mtr_restart(&late), 0);
    mtr_sub *sub = mtr_subscribe(&late, DEFAULT_CHANNEL);
    assert_non_null(sub);
    /* the subscriber may come after the first sends: only check what came */
    CHECK(mae_publisher_flush(p, 5000) == MAE_OK, "docs/publisher.md: flush once Redis is back");
    mae_publisher_stats_get(p, &st);
    CHECK(st.published == 3 && st.queued == 0,
          "docs/publisher.md: events queued while Redis is away are sent when it comes back: "
          "published %llu", (unsigned long long)st.published);
    check_counters(p, "after Redis came back");
    mtr_sub_close(sub);
    mae_publisher_close(p, 1000);

    /* bounded by bytes */
    p = NULL;
    mae_publisher_config_init(&pc);
    pc.redis_url = late.url;
    pc.queue_max_bytes = 1000;
    mtr_pause(&late);
    assert_int_equal(mae_publisher_open(&pc, &p), MAE_OK);
    char big[512];
    snprintf(big, sizeof big, "{\"pad\":\"%0400d\"}", 0);
    for (int i = 0; i < 4; i++)
        mae_safe_publish(p, "custom.big", i, big, "contract");
    mae_publisher_stats_get(p, &st);
    CHECK(st.dropped_queue_full >= 2 && st.queued_bytes <= 1000,
          "docs/publisher.md: the queue is bounded by bytes: dropped_queue_full %llu, queued_bytes "
          "%llu", (unsigned long long)st.dropped_queue_full,
          (unsigned long long)st.queued_bytes);
    check_counters(p, "queue full by bytes");
    mae_publisher_close(p, 300);
    mtr_resume(&late);
    mtr_cleanup(&late);
    int fails = g_fail;
    g_fail = 0;
    assert_int_equal(fails, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_envelope_and_safe_publish),
        cmocka_unit_test(test_disabled_publisher),
        cmocka_unit_test(test_sync_store_lifecycle),
        cmocka_unit_test(test_outbox_lifecycle),
        cmocka_unit_test(test_llm_lifecycle),
        cmocka_unit_test(test_limits_and_schedule_cap),
        cmocka_unit_test(test_caller_transactions),
        cmocka_unit_test(test_schema_and_pragmas),
        cmocka_unit_test(test_existing_database),
        cmocka_unit_test(test_reads_and_stale_reset),
        cmocka_unit_test(test_queue_bounds_and_late_redis),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
