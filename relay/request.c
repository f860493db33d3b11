/* This module implements the relay's request parser and router: the request
 * line and headers of HTTP/1.x, checked byte by byte against RFC 9112's
 * grammar, within fixed limits, and the table of answers of relay.md. */
#include <limits.h>
#include <string.h>

#include "relay/request.h"

/* RFC 9110's tchar: the bytes of a method or a header name. */
static bool is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* A byte of a request target: visible ASCII (RFC 3986 characters and the
 * few others browsers send unescaped); no space, no control, no 8-bit. */
static bool is_target(unsigned char c)
{
    return c > 0x20 && c < 0x7F;
}

/* A byte of a header value: visible, space, tab or obs-text; never a
 * control character (CR, LF and NUL in particular). */
static bool is_value(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7F);
}

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* Case-insensitive equality of a span with a lower-case name. */
static bool span_ieq(mae__span a, const char *lc)
{
    size_t n = strlen(lc);
    if (a.n != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (lower(a.p[i]) != lc[i])
            return false;
    return true;
}

bool mae__span_eq(mae__span a, const char *s)
{
    size_t n = strlen(s);
    return a.p && a.n == n && memcmp(a.p, s, n) == 0;
}

/* The end of the line that starts at p (the position of its LF), or NULL
 * when there is none before end. A CR is allowed only right before the
 * LF; *content_end is where the line's content stops. */
static const char *line_end(const char *p, const char *end, const char **content_end, bool *bad)
{
    const char *lf = memchr(p, '\n', (size_t)(end - p));
    if (!lf)
        return NULL;
    *content_end = lf > p && lf[-1] == '\r' ? lf - 1 : lf;
    *bad = memchr(p, '\r', (size_t)(*content_end - p)) != NULL;
    return lf;
}

/* Connection: a comma-separated list of tokens; "close" ends keep-alive,
 * "keep-alive" asks for it under HTTP/1.0. */
static void read_connection(mae__span v, bool *close, bool *keep)
{
    size_t i = 0;
    while (i < v.n) {
        while (i < v.n && (v.p[i] == ' ' || v.p[i] == '\t' || v.p[i] == ','))
            i++;
        size_t start = i;
        while (i < v.n && v.p[i] != ',' && v.p[i] != ' ' && v.p[i] != '\t')
            i++;
        mae__span tok = {v.p + start, i - start};
        if (span_ieq(tok, "close"))
            *close = true;
        else if (span_ieq(tok, "keep-alive"))
            *keep = true;
    }
}

/* Stores a header the relay reads; a second one of the same name is
 * ambiguous (which token counts?), so the request is refused. */
static bool keep_once(mae__span *slot, mae__span v)
{
    if (slot->p)
        return false;
    *slot = v;
    return true;
}

static mae__req_status parse_request_line(const char *p, const char *e, mae__request *r)
{
    const char *q = p;
    while (q < e && is_tchar((unsigned char)*q))
        q++;
    if (q == p || q == e || *q != ' ')
        return MAE__REQ_BAD;
    r->method = (mae__span){p, (size_t)(q - p)};
    p = ++q;
    while (q < e && is_target((unsigned char)*q))
        q++;
    if (q == p || q == e || *q != ' ')
        return MAE__REQ_BAD;
    r->target = (mae__span){p, (size_t)(q - p)};
    /* Only the origin form ("/path?query"): the relay is no proxy. */
    if (*p != '/')
        return MAE__REQ_BAD;
    const char *qm = memchr(p, '?', (size_t)(q - p));
    r->path = (mae__span){p, (size_t)((qm ? qm : q) - p)};
    r->query = qm ? (mae__span){qm + 1, (size_t)(q - qm - 1)} : (mae__span){NULL, 0};
    q++;
    if (e - q != 8 || memcmp(q, "HTTP/1.", 7) != 0 || (q[7] != '0' && q[7] != '1'))
        return MAE__REQ_BAD;
    r->minor = q[7] - '0';
    return MAE__REQ_DONE;
}

static mae__req_status parse_header(const char *p, const char *e, mae__request *r,
                                    bool *close, bool *keep, bool *bad_length)
{
    const char *colon = p;
    while (colon < e && is_tchar((unsigned char)*colon))
        colon++;
    /* No space before the colon (RFC 9112, 5.1), no empty name. */
    if (colon == p || colon == e || *colon != ':')
        return MAE__REQ_BAD;
    mae__span name = {p, (size_t)(colon - p)};
    const char *v = colon + 1, *ve = e;
    for (const char *c = v; c < e; c++)
        if (!is_value((unsigned char)*c))
            return MAE__REQ_BAD;
    while (v < ve && (*v == ' ' || *v == '\t'))
        v++;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
        ve--;
    mae__span value = {v, (size_t)(ve - v)};

    bool ok = true;
    if (span_ieq(name, "authorization"))
        ok = keep_once(&r->authorization, value);
    else if (span_ieq(name, "x-webhook-token"))
        ok = keep_once(&r->webhook_token, value);
    else if (span_ieq(name, "x-mailagent-local-token"))
        ok = keep_once(&r->local_token, value);
    else if (span_ieq(name, "last-event-id"))
        ok = keep_once(&r->last_event_id, value);
    else if (span_ieq(name, "connection"))
        read_connection(value, close, keep);
    else if (span_ieq(name, "content-type"))
        ok = keep_once(&r->content_type, value);
    else if (span_ieq(name, "x-mailagent-publisher"))
        ok = keep_once(&r->publisher, value);
    else if (span_ieq(name, "x-mailagent-batch-start"))
        ok = keep_once(&r->batch_start, value);
    else if (span_ieq(name, "expect"))
        r->expect_continue = span_ieq(value, "100-continue");
    else if (span_ieq(name, "transfer-encoding"))
        r->has_body = r->chunked = true;
    else if (span_ieq(name, "content-length")) {
        /* Two lengths are ambiguous (which one frames the body?). */
        if (value.n == 0 || r->has_length)
            *bad_length = true;
        r->has_length = true;
        unsigned long long v = 0;
        for (size_t i = 0; i < value.n; i++) {
            if (value.p[i] < '0' || value.p[i] > '9') {
                *bad_length = true;
                break;
            }
            unsigned d = (unsigned)(value.p[i] - '0');
            v = v > (ULLONG_MAX - d) / 10 ? ULLONG_MAX : v * 10 + d;
        }
        r->content_length = v;
        if (v)
            r->has_body = true;
    }
    return ok ? MAE__REQ_DONE : MAE__REQ_BAD;
}

mae__req_status mae__request_parse(const char *buf, size_t len, mae__request *out)
{
    if (len == 0)
        return MAE__REQ_INCOMPLETE;   /* buf may be NULL then */
    const char *p = buf, *end = buf + (len > MAE__REQ_MAX_BYTES ? MAE__REQ_MAX_BYTES : len);
    const char *ce;
    bool bad = false;

    /* Empty lines before the request line are skipped; they count against
     * the limit like any other byte. */
    while (p < end && (*p == '\n' || (*p == '\r' && p + 1 < end && p[1] == '\n')))
        p += *p == '\n' ? 1 : 2;

    mae__request r;
    memset(&r, 0, sizeof r);
    const char *lf = line_end(p, end, &ce, &bad);
    if (!lf)
        return len >= MAE__REQ_MAX_BYTES ? MAE__REQ_TOO_LARGE : MAE__REQ_INCOMPLETE;
    if (bad || parse_request_line(p, ce, &r) != MAE__REQ_DONE)
        return MAE__REQ_BAD;
    p = lf + 1;

    bool close = false, keep = false, bad_length = false;
    int headers = 0;
    for (;;) {
        lf = line_end(p, end, &ce, &bad);
        if (!lf)
            return len >= MAE__REQ_MAX_BYTES ? MAE__REQ_TOO_LARGE : MAE__REQ_INCOMPLETE;
        if (bad)
            return MAE__REQ_BAD;
        if (ce == p)
            break;                      /* the blank line */
        if (++headers > MAE__REQ_MAX_HEADERS)
            return MAE__REQ_TOO_LARGE;
        /* A line starting with a blank continues the previous one
         * (obs-fold): rejected, as RFC 9112 5.2 allows. */
        if (*p == ' ' || *p == '\t')
            return MAE__REQ_BAD;
        if (parse_header(p, ce, &r, &close, &keep, &bad_length) != MAE__REQ_DONE)
            return MAE__REQ_BAD;
        p = lf + 1;
    }
    /* Both framings at once is how requests are smuggled (RFC 9112 6.1). */
    if (bad_length || (r.chunked && r.has_length))
        return MAE__REQ_BAD;
    r.length = (size_t)(lf + 1 - buf);
    r.conn_keep = !close && (r.minor == 1 || keep);
    r.keep_alive = r.conn_keep && !r.has_body;
    *out = r;
    return MAE__REQ_DONE;
}

bool mae__ct_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    /* Every byte of a is compared against some byte of b whatever the
     * contents, and the lengths are folded into the same accumulator, so
     * the loop's duration tells nothing about the secret b but that it is
     * not empty. */
    if (blen == 0)
        return false;
    volatile unsigned char diff = (unsigned char)(alen != blen);
    for (size_t i = 0; i < alen; i++)
        diff |= (unsigned char)(a[i] ^ b[i % blen]);
    return diff == 0;
}

static bool configured(const char *s)
{
    return s && *s;
}

bool mae__credentials_required(const mae__credentials *c)
{
    return c && (configured(c->webhook_secret) || configured(c->local_token));
}

static bool matches(mae__span presented, const char *secret)
{
    return presented.p && configured(secret) &&
           mae__ct_equal(presented.p, presented.n, secret, strlen(secret));
}

/* The token of "Authorization: Bearer <token>" (scheme case-insensitive,
 * RFC 6750); p NULL when the header is absent or another scheme. */
static mae__span bearer_token(mae__span auth)
{
    mae__span none = {NULL, 0};
    if (!auth.p || auth.n < 7)
        return none;
    if (!span_ieq((mae__span){auth.p, 6}, "bearer") || (auth.p[6] != ' ' && auth.p[6] != '\t'))
        return none;
    size_t i = 7;
    while (i < auth.n && (auth.p[i] == ' ' || auth.p[i] == '\t'))
        i++;
    return (mae__span){auth.p + i, auth.n - i};
}

bool mae__request_authorized(const mae__request *r, const mae__credentials *c)
{
    if (!mae__credentials_required(c))
        return true;
    /* Each form is checked even after one matched, so the time taken does
     * not say which one did. */
    bool ok = false;
    ok |= matches(r->webhook_token, c->webhook_secret);
    ok |= matches(bearer_token(r->authorization), c->webhook_secret);
    ok |= matches(r->local_token, c->local_token);
    return ok;
}

mae__route mae__request_route(const mae__request *r, const char *stream_path,
                              const mae__credentials *c)
{
    bool get = mae__span_eq(r->method, "GET");
    if (mae__span_eq(r->path, MAE__RELAY_PUBLISH_PATH)) {
        if (!mae__span_eq(r->method, "POST"))
            return MAE__ROUTE_BAD_METHOD_POST;
        return mae__request_authorized(r, c) ? MAE__ROUTE_PUBLISH : MAE__ROUTE_UNAUTHORIZED;
    }
    if (mae__span_eq(r->path, MAE__RELAY_HEALTH_PATH))
        return get ? MAE__ROUTE_HEALTH : MAE__ROUTE_BAD_METHOD;
    bool stream = mae__span_eq(r->path, stream_path);
    bool metrics = mae__span_eq(r->path, "/metrics");
    if (!stream && !metrics && !mae__span_eq(r->path, "/healthz") && !mae__span_eq(r->path, "/"))
        return MAE__ROUTE_NOT_FOUND;
    if (!get)
        return MAE__ROUTE_BAD_METHOD;
    if ((stream || metrics) && !mae__request_authorized(r, c))
        return MAE__ROUTE_UNAUTHORIZED;
    if (stream)
        return MAE__ROUTE_STREAM;
    if (metrics)
        return MAE__ROUTE_METRICS;
    return mae__span_eq(r->path, "/") ? MAE__ROUTE_PAGE : MAE__ROUTE_HEALTHZ;
}
