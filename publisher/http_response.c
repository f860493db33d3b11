/* This module implements the hub transport's response parser: the status
 * line, the few headers that decide how the answer ends (Content-Length,
 * Transfer-Encoding, Connection), and a body of at most MAE__HTTP_BODY_MAX
 * bytes, each limit checked before a byte is stored. */
#include <string.h>
#include <strings.h>

#include "publisher/http_response.h"

enum { S_STATUS, S_HEADER, S_BODY, S_DONE };

void mae__http_resp_init(mae__http_resp *r, char *body)
{
    memset(r, 0, sizeof *r);
    r->body = body;
    r->content_length = -1;
    r->state = S_STATUS;
}

static int bad(mae__http_resp *r, const char *why)
{
    r->why = why;
    return MAE__HTTP_BAD;
}

/* "HTTP/1.x SSS[ reason]" */
static int status_line(mae__http_resp *r, const char *s, size_t n)
{
    if (n < 12 || memcmp(s, "HTTP/1.", 7) != 0 || (s[7] != '0' && s[7] != '1') || s[8] != ' ')
        return bad(r, "not an HTTP/1.x status line");
    int st = 0;
    for (int i = 9; i < 12; i++) {
        if (s[i] < '0' || s[i] > '9')
            return bad(r, "malformed status code");
        st = st * 10 + (s[i] - '0');
    }
    if (st < 100 || st > 599 || (n > 12 && s[12] != ' '))
        return bad(r, "malformed status code");
    r->status = st;
    r->http10 = s[7] == '0';
    return MAE__HTTP_MORE;
}

/* Whether the comma-separated list v[0..n) holds token (any case). */
static bool has_token(const char *v, size_t n, const char *token)
{
    size_t tl = strlen(token), i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t start = i;
        while (i < n && v[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (end - start == tl && strncasecmp(v + start, token, tl) == 0)
            return true;
    }
    return false;
}

static int header_line(mae__http_resp *r, const char *s, size_t n)
{
    if (s[0] == ' ' || s[0] == '\t')
        return bad(r, "folded header line");
    const char *colon = memchr(s, ':', n);
    if (!colon || colon == s)
        return bad(r, "malformed header line");
    size_t nl = (size_t)(colon - s);
    const char *v = colon + 1;
    size_t vn = n - nl - 1;
    while (vn && (*v == ' ' || *v == '\t'))
        v++, vn--;
    while (vn && (v[vn - 1] == ' ' || v[vn - 1] == '\t'))
        vn--;
    if (++r->headers > MAE__HTTP_HEADERS_MAX)
        return bad(r, "too many header lines");
    if (nl == 14 && strncasecmp(s, "content-length", 14) == 0) {
        long long len = 0;
        if (vn == 0)
            return bad(r, "empty Content-Length");
        for (size_t i = 0; i < vn; i++) {
            if (v[i] < '0' || v[i] > '9')
                return bad(r, "malformed Content-Length");
            if (len > (1LL << 50))
                return bad(r, "Content-Length out of range");
            len = len * 10 + (v[i] - '0');
        }
        if (r->content_length >= 0 && r->content_length != len)
            return bad(r, "conflicting Content-Length headers");
        r->content_length = len;
    } else if (nl == 17 && strncasecmp(s, "transfer-encoding", 17) == 0) {
        /* Any coding but identity leaves the length to the server's framing,
         * which this parser does not read: the body is left unread. */
        if (!(vn == 8 && strncasecmp(v, "identity", 8) == 0))
            r->chunked = true;
    } else if (nl == 10 && strncasecmp(s, "connection", 10) == 0) {
        if (has_token(v, vn, "close"))
            r->close = true;
        if (has_token(v, vn, "keep-alive"))
            r->keep_alive = true;
    }
    return MAE__HTTP_MORE;
}

/* The blank line after the headers: decides how (and whether) the body is
 * read. Returns DONE, MORE (a body follows) or, for an interim 1xx answer,
 * MORE with the parser back at a status line. */
static int end_of_head(mae__http_resp *r)
{
    if (r->status < 200 && r->status != 101) {
        char *body = r->body;
        mae__http_resp_init(r, body);
        return MAE__HTTP_MORE;
    }
    if (r->http10 && !r->keep_alive)
        r->close = true;
    if (r->status == 101)
        return bad(r, "the server switched protocols");
    if (r->status == 204 || r->status == 304) {
        r->state = S_DONE;
        return MAE__HTTP_DONE;
    }
    if (r->chunked || r->content_length < 0 || (size_t)r->content_length > MAE__HTTP_BODY_MAX) {
        /* Chunked, too long, or delimited by the end of the connection: the
         * status is all the publisher needs, and a connection with unread
         * bytes on it cannot carry the next request. */
        r->body_unread = r->chunked || r->content_length != 0;
        r->close = true;
        r->state = S_DONE;
        return MAE__HTTP_DONE;
    }
    if (r->content_length == 0) {
        r->state = S_DONE;
        return MAE__HTTP_DONE;
    }
    r->state = S_BODY;
    return MAE__HTTP_MORE;
}

int mae__http_resp_feed(mae__http_resp *r, const char *buf, size_t n, size_t *used)
{
    size_t i = 0;
    int rc = MAE__HTTP_MORE;
    *used = 0;
    if (r->state == S_DONE)
        return MAE__HTTP_DONE;
    while (i < n) {
        if (r->state == S_BODY) {
            size_t want = (size_t)r->content_length - r->body_len;
            size_t take = n - i < want ? n - i : want;
            memcpy(r->body + r->body_len, buf + i, take);
            r->body_len += take;
            i += take;
            if (r->body_len == (size_t)r->content_length) {
                r->state = S_DONE;
                *used = i;
                return MAE__HTTP_DONE;
            }
            continue;
        }
        char c = buf[i++];
        if (c != '\n') {
            if (r->line_len == sizeof r->line)
                return bad(r, "header line too long");
            r->line[r->line_len++] = c;
            continue;
        }
        size_t len = r->line_len;
        if (len && r->line[len - 1] == '\r')
            len--;
        r->line_len = 0;
        if (memchr(r->line, '\0', len))
            return bad(r, "NUL byte in the head");
        if (r->state == S_STATUS)
            rc = status_line(r, r->line, len);
        else if (len == 0)
            rc = end_of_head(r);
        else
            rc = header_line(r, r->line, len);
        if (rc == MAE__HTTP_BAD)
            return rc;
        if (r->state == S_STATUS && r->status != 0)
            r->state = S_HEADER;
        if (rc == MAE__HTTP_DONE) {
            *used = i;
            return rc;
        }
    }
    *used = i;
    return MAE__HTTP_MORE;
}
