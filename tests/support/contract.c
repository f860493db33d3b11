/* Test support: the harness of the contract suites (test_it_contract_*.c):
 * soft checks, a fixture with a real redis-server, a subscriber, a publisher
 * and a database on a fake clock, the raw-byte and envelope checks every
 * received line goes through, and row readers (see contract.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "contract.h"

#ifndef MAE_TEST_TMPDIR
#define MAE_TEST_TMPDIR "/tmp"
#endif
#ifndef MAE_REDIS_SERVER
#define MAE_REDIS_SERVER "redis-server"
#endif

const double SCHEDULE[5] = {60, 300, 900, 3600, 7200};

/* ---- soft checks ---------------------------------------------------------- */

int g_fail;
unsigned long g_checks;

const char *nz(const char *s)
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

bool u8_valid(const char *s)
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

size_t u8_count(const char *s)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p & 0xC0) != 0x80)
            n++;
    return n;
}

/* The first ncp code points of a valid UTF-8 string (malloc'd). */
char *u8_prefix(const char *s, size_t ncp)
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
char *make_text(size_t ncp)
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

double g_now = 1716096000.25;

static double fake_clock(void *user)
{
    return *(double *)user;
}

bool near(double a, double b)
{
    return fabs(a - b) < 1e-3;
}

/* ---- the fixture: one Redis for all, per test a channel, a subscriber, a
 *      publisher and a database ------------------------------------------- */

static mtr_redis g_redis;
static int g_seq;

mae_db *open_db(fx *f, const char *path, int limit)
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
void fx_open(fx *f, bool default_channel, int limit)
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

void check_counters(mae_publisher *p, const char *when)
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
                          st.dropped_invalid + st.dropped_too_large,
          "docs/publisher.md Counters: every call is counted exactly once (%s): calls %llu",
          when, (unsigned long long)st.calls);
}

void fx_close(fx *f)
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
          "docs/publisher.md: published counts what Redis acknowledged: %llu, the subscriber "
          "got %zu",
          (unsigned long long)st.published, mtr_sub_count(f->sub));
    mae_db_close(f->db);
    assert_int_equal(mae_publisher_close(f->p, 2000), MAE_OK);
    mtr_sub_close(f->sub);
    tu_remove_db(f->path);
    int fails = g_fail;
    g_fail = 0;
    if (fails)
        print_message("%d deviation(s) from docs/ in this test\n", fails);
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
void expect_none_(fx *f, const char *what, int line)
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

/* The next event: checks its raw bytes, its envelope, its type, mail,
 * source, and that data has exactly the keys of keys_csv. Returns data
 * (borrowed until the next call), or NULL when no line came. */
json_object *expect_event_(fx *f, const char *type, int64_t id, const char *source,
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

const char *last_raw(fx *f)
{
    return f->seen ? mtr_sub_message(f->sub, f->seen - 1) : "";
}

void d_int(fx *f, json_object *data, const char *key, int64_t want)
{
    json_object *v;
    if (!data)
        return;
    bool ok = json_object_object_get_ex(data, key, &v) && v &&
              json_object_is_type(v, json_type_int) && json_object_get_int64(v) == want;
    CHECK(ok, "docs/events.md: data.%s is the integer %lld: %s", key, (long long)want, last_raw(f));
}

void d_num(fx *f, json_object *data, const char *key, double want)
{
    json_object *v;
    if (!data)
        return;
    bool ok = json_object_object_get_ex(data, key, &v) && v &&
              (json_object_is_type(v, json_type_double) ||
               json_object_is_type(v, json_type_int)) &&
              near(json_object_get_double(v), want);
    CHECK(ok, "docs/events.md, docs/stores.md: data.%s is the number %.6f: %s", key, want,
          last_raw(f));
}

void d_str(fx *f, json_object *data, const char *key, const char *want)
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

void row4_free(row4 *r)
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

row4 read_row4(mae_db *db, const char *sql, int64_t id)
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

int64_t sql_int(mae_db *db, const char *sql)
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
char *sql_text(mae_db *db, const char *fmt, ...)
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

bool streq(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

void add_mail(mae_db *db, int64_t id)
{
    char mid[64];
    snprintf(mid, sizeof mid, "<m%lld@example.org>", (long long)id);
    mae_email m = {.internal_id = id, .message_id = mid, .subject = "Hello \xE4\xB8\xAD",
                   .sender = "a@example.org", .mailbox = "INBOX",
                   .date_received = "2024-05-19T06:00:00Z"};
    assert_int_equal(mae_sync_store_upsert(db, &m), MAE_OK);
}

/* ---- the group fixture ------------------------------------------------------ */

int contract_group_setup(void **state)
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

int contract_group_teardown(void **state)
{
    (void)state;
    mtr_cleanup(&g_redis);
    print_message("%lu contract checks evaluated\n", g_checks);
    return 0;
}
