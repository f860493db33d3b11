/* This module reads the body of the publish route into canonical event
 * lines: the grammar and the writers are the library's own (core/text.h),
 * this file only picks the envelope's members out of an object the grammar
 * has already accepted, and writes the line in docs/events.md's order. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <mailagent/common.h>

#include "core/envelope.h"
#include "core/text.h"

#define LIT(s) s, sizeof(s) - 1

/* One member of the envelope: where its value starts and ends in the
 * compacted object, or NULL when absent. */
typedef struct span {
    const char *p, *e;
} span;

typedef struct members {
    span event_type, internal_id, data, source, ts;
} members;

static int refuse(mae__envelope_result *r, int status, const char *why)
{
    snprintf(r->reason, sizeof r->reason, "%s", why);
    return status;
}

/* The end of the JSON string that opens at p (p[0] == '"'), in text the
 * grammar accepted: past its closing quote. */
static const char *string_end(const char *p)
{
    for (p++; *p != '"'; p++)
        if (*p == '\\')
            p++;
    return p + 1;
}

/* The end of the value at p, in compacted text the grammar accepted. */
static const char *value_end(const char *p)
{
    if (*p == '"')
        return string_end(p);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        for (;;) {
            if (*p == '"') {
                p = string_end(p);
                continue;
            }
            if (*p == '{' || *p == '[')
                depth++;
            else if ((*p == '}' || *p == ']') && --depth == 0)
                return p + 1;
            p++;
        }
    }
    while (*p != ',' && *p != '}' && *p != ']')
        p++;
    return p;
}

static void put_utf8(mae__buf *b, unsigned cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    mae__buf_put(b, u, n);
}

/* Decodes the accepted JSON string at s (with its quotes) into b, as C text
 * (the grammar allows no \u0000, so no NUL inside). */
static void decode_string(mae__buf *b, span s)
{
    const unsigned char *p = (const unsigned char *)s.p + 1;
    const unsigned char *e = (const unsigned char *)s.e - 1;
    b->len = 0;
    if (b->ptr)
        b->ptr[0] = '\0';
    while (p < e) {
        if (*p != '\\') {
            const unsigned char *q = p;
            while (q < e && *q != '\\')
                q++;
            mae__buf_put(b, (const char *)p, (size_t)(q - p));
            p = q;
            continue;
        }
        char c = (char)p[1];
        switch (c) {
        case 'b': mae__buf_putc(b, '\b'); break;
        case 'f': mae__buf_putc(b, '\f'); break;
        case 'n': mae__buf_putc(b, '\n'); break;
        case 'r': mae__buf_putc(b, '\r'); break;
        case 't': mae__buf_putc(b, '\t'); break;
        case 'u': {
            unsigned cp;
            bool lone;
            size_t n = mae__json_u_escape(p, &cp, &lone);
            put_utf8(b, cp);
            p += n;
            continue;
        }
        default: mae__buf_putc(b, c); break; /* " \ / */
        }
        p += 2;
    }
}

static bool key_is(const mae__buf *k, const char *name)
{
    return k->ptr && strcmp(k->ptr, name) == 0;
}

/* Picks the envelope's members out of the compacted object at obj. */
static bool pick(const char *obj, members *m, mae__buf *key)
{
    const char *p = obj + 1;
    memset(m, 0, sizeof *m);
    while (*p == '"') {
        span k = {p, string_end(p)};
        decode_string(key, k);
        if (key->oom)
            return false;
        p = k.e + 1; /* ':' */
        span v = {p, value_end(p)};
        span *slot = key_is(key, "event_type") ? &m->event_type
                     : key_is(key, "internal_id") ? &m->internal_id
                     : key_is(key, "data")        ? &m->data
                     : key_is(key, "source")      ? &m->source
                     : key_is(key, "ts")          ? &m->ts
                                                  : NULL;
        if (slot)
            *slot = v; /* a repeated key: the last one counts */
        p = v.e;
        if (*p == ',')
            p++;
    }
    return true;
}

static bool is_null(span s)
{
    return s.p && s.e - s.p == 4 && memcmp(s.p, "null", 4) == 0;
}

static bool absent(span s)
{
    return !s.p || is_null(s);
}

/* The falsy values of Python that are not objects: MailAgent's
 * `data or {}` turns them into {}. */
static bool falsy(span s)
{
    size_t n = (size_t)(s.e - s.p);
    if ((n == 2 && (memcmp(s.p, "[]", 2) == 0 || memcmp(s.p, "\"\"", 2) == 0)) ||
        (n == 5 && memcmp(s.p, "false", 5) == 0))
        return true;
    /* a number equal to zero: 0, -0, 0.0, 0e5 ... */
    for (const char *c = s.p; c < s.e; c++) {
        if (*c == 'e' || *c == 'E')
            break;
        if (*c >= '1' && *c <= '9')
            return false;
        if (*c != '0' && *c != '-' && *c != '.')
            return false;
    }
    return true;
}

static bool parse_id(span s, int64_t *id)
{
    const char *p = s.p;
    bool neg = *p == '-';
    if (neg)
        p++;
    if (p == s.e || (*p == '0' && s.e - p > 1))
        return false;
    uint64_t v = 0;
    for (; p < s.e; p++) {
        if (*p < '0' || *p > '9')
            return false;
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_C(9223372036854775807) - d) / 10)
            return false; /* past INT64_MAX; -2^63 is MAE_NO_ID, refused too */
        v = v * 10 + d;
    }
    *id = neg ? -(int64_t)v : (int64_t)v;
    return true;
}

static void put_now(mae__buf *b)
{
    char tmp[MAE__EPOCH_MAX];
    struct timespec now;
    if (clock_gettime(CLOCK_REALTIME, &now) != 0 || now.tv_sec < 0) {
        now.tv_sec = 0;
        now.tv_nsec = 0;
    }
    uint64_t sec = (uint64_t)now.tv_sec;
    uint32_t us = (uint32_t)((now.tv_nsec + 500) / 1000);
    if (us >= 1000000) {
        us -= 1000000;
        sec++;
    }
    mae__buf_put(b, tmp, (size_t)(mae__put_epoch_us(tmp, sec, us) - tmp));
}

/* One envelope (n bytes at text, any bytes) into one line appended to out.
 * Returns 200, or the refusal's status with r->reason set. */
static int one(const char *text, size_t n, size_t max, mae__buf *out, mae__envelope_result *r)
{
    int status = 200;
    char *copy = NULL, *clean = NULL;
    mae__buf obj, key, tmp;
    members m;
    bool oom = false;

    if (n > max)
        return refuse(r, 413, "the event is larger than the relay's --max-event-bytes");
    if (memchr(text, '\0', n))
        return refuse(r, 400, "the body holds a NUL byte");
    mae__buf_init(&obj);
    mae__buf_init(&key);
    mae__buf_init(&tmp);
    if (!(copy = malloc(n + 1)))
        return refuse(r, 503, "out of memory");
    memcpy(copy, text, n);
    copy[n] = '\0';
    clean = mae__utf8_clean(copy, 0, &oom);
    if (!clean) {
        status = refuse(r, 503, "out of memory");
        goto done;
    }
    if (strcmp(clean, copy) != 0) {
        status = refuse(r, 400, "the body is not valid UTF-8");
        goto done;
    }
    const unsigned char *first = mae__json_skip_ws((const unsigned char *)copy);
    if (*first != '{') {
        status = refuse(r, 400, "an envelope must be a JSON object");
        goto done;
    }
    if (mae__json_compact_object(&obj, copy) != 0) {
        status = obj.oom ? refuse(r, 503, "out of memory")
                         : refuse(r, 400, "the body is not one JSON object (RFC 8259, at most "
                                          "64 levels deep, no \\u0000)");
        goto done;
    }
    if (obj.oom || !pick(obj.ptr, &m, &key)) {
        status = refuse(r, 503, "out of memory");
        goto done;
    }

    /* event_type */
    if (absent(m.event_type) || *m.event_type.p != '"' ||
        m.event_type.e - m.event_type.p == 2) {
        status = refuse(r, 400, "event_type is required, a non-empty string");
        goto done;
    }
    /* internal_id */
    int64_t id = MAE_NO_ID;
    if (!absent(m.internal_id) && !parse_id(m.internal_id, &id)) {
        status = refuse(r, 400, "internal_id must be an integer (64-bit, not -2^63) or null");
        goto done;
    }
    /* data */
    bool empty_data = absent(m.data);
    if (!empty_data && *m.data.p != '{') {
        if (!falsy(m.data)) {
            status = refuse(r, 400, "data must be a JSON object (or null)");
            goto done;
        }
        empty_data = true;
    }
    /* source */
    if (!absent(m.source) && (*m.source.p != '"' || m.source.e - m.source.p == 2)) {
        status = refuse(r, 400, "source must be a non-empty string (or null)");
        goto done;
    }
    /* ts */
    double ts = 0;
    bool has_ts = !absent(m.ts);
    if (has_ts) {
        char num[64];
        size_t tn = (size_t)(m.ts.e - m.ts.p);
        char *end = NULL;
        if (tn < sizeof num && (*m.ts.p == '-' || (*m.ts.p >= '0' && *m.ts.p <= '9'))) {
            memcpy(num, m.ts.p, tn);
            num[tn] = '\0';
            ts = strtod(num, &end);
        }
        if (!end || *end || !isfinite(ts)) {
            status = refuse(r, 400, "ts must be a number of epoch seconds (or null)");
            goto done;
        }
    }

    /* The line, in docs/events.md's order and forms. */
    size_t start = out->len;
    mae__buf_put(out, LIT("{\"event_type\":"));
    decode_string(&tmp, m.event_type);
    mae__json_str(out, tmp.ptr, 0);
    mae__buf_put(out, LIT(",\"ts\":"));
    if (has_ts)
        mae__json_epoch(out, ts);
    else
        put_now(out);
    mae__buf_put(out, LIT(",\"internal_id\":"));
    if (id == MAE_NO_ID)
        mae__buf_put(out, LIT("null"));
    else
        mae__json_i64(out, id);
    mae__buf_put(out, LIT(",\"data\":"));
    if (empty_data) {
        mae__buf_put(out, LIT("{}"));
    } else {
        size_t dn = (size_t)(m.data.e - m.data.p);
        memcpy(copy, m.data.p, dn); /* the data object is shorter than the body */
        copy[dn] = '\0';
        if (mae__json_compact_object(out, copy) != 0)
            mae__buf_put(out, LIT("{}")); /* cannot happen: the grammar accepted it */
    }
    mae__buf_put(out, LIT(",\"source\":"));
    if (absent(m.source)) {
        mae__json_str(out, "mailagent", 0);
    } else {
        decode_string(&tmp, m.source);
        mae__json_str(out, tmp.ptr, 0);
    }
    mae__buf_put(out, LIT("}\n"));
    if (out->oom || tmp.oom) {
        status = refuse(r, 503, "out of memory");
    } else if (out->len - start - 1 > max) {
        out->len = start;
        out->ptr[start] = '\0';
        status = refuse(r, 413, "the event is larger than the relay's --max-event-bytes "
                                "once written");
    }
done:
    free(copy);
    free(clean);
    mae__buf_free(&obj);
    mae__buf_free(&key);
    mae__buf_free(&tmp);
    return status;
}

static bool is_ndjson(const char *ct)
{
    static const char want[] = "application/x-ndjson";
    if (!ct)
        return false;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    if (strncasecmp(ct, want, sizeof want - 1) != 0)
        return false;
    ct += sizeof want - 1;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    return *ct == '\0' || *ct == ';';
}

static bool blank(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n')
            return false;
    return true;
}

int mae__envelope_parse(const char *body, size_t len, const char *content_type,
                        size_t max_event_bytes, mae__envelope_result *r)
{
    mae__buf out;
    size_t max = max_event_bytes ? max_event_bytes : MAE_ENVELOPE_MAX_EVENT_BYTES;

    memset(r, 0, sizeof *r);
    mae__buf_init(&out);
    if (!body)
        len = 0;
    if (!is_ndjson(content_type)) {
        if (len == 0 || blank(body, len)) {
            r->status = refuse(r, 400, "the body is empty: it must be one JSON envelope");
            return r->status;
        }
        r->status = one(body, len, max, &out, r);
        r->count = r->status == 200;
    } else {
        const char *p = body, *end = body + len;
        size_t line = 0;
        r->status = 200;
        while (p < end && r->status == 200) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            const char *e = nl ? nl : end;
            line++;
            if (!blank(p, (size_t)(e - p))) {
                r->status = one(p, (size_t)(e - p), max, &out, r);
                if (r->status == 200)
                    r->count++;
                else
                    r->line_no = line;
            }
            p = nl ? nl + 1 : end;
        }
        if (r->status == 200 && r->count == 0)
            r->status = refuse(r, 400, "the body holds no envelope: NDJSON wants one a line");
    }
    if (r->status != 200) {
        r->count = 0;
        mae__buf_free(&out);
        return r->status;
    }
    r->lines = mae__buf_take(&out, &r->len);
    if (!r->lines) {
        r->count = 0;
        r->status = refuse(r, 503, "out of memory");
    }
    return r->status;
}

void mae__envelope_result_free(mae__envelope_result *r)
{
    if (!r)
        return;
    free(r->lines);
    r->lines = NULL;
    r->len = 0;
    r->count = 0;
}
