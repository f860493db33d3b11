/* This module parses a Server-Sent Events stream on the client side, one
 * byte at a time, as the HTML standard's "Interpreting an event stream"
 * says: lines end with CRLF, LF or CR; a blank line dispatches; a line
 * starting with ':' is a comment; "field: value" loses one space after the
 * colon; data lines are joined with '\n'; an id with a NUL is ignored; a
 * retry that is not all digits is ignored. Every buffer is bounded. */
#include <stdlib.h>
#include <string.h>

#include <mailagent/common.h>

#include "stream/sse_parse.h"

int mae__sse_init(mae__sse_parser *p, size_t max_line)
{
    memset(p, 0, sizeof *p);
    if (max_line < 16)
        max_line = 16;
    p->max_line = max_line;
    p->line = malloc(max_line + 1);
    p->data = malloc(max_line + 1);
    if (!p->line || !p->data) {
        mae__sse_free(p);
        return MAE_ENOMEM;
    }
    p->retry_ms = -1;
    return MAE_OK;
}

void mae__sse_free(mae__sse_parser *p)
{
    free(p->line);
    free(p->data);
    p->line = p->data = NULL;
}

static void reset_frame(mae__sse_parser *p)
{
    p->data_len = 0;
    p->has_data = false;
    p->over = false;
    p->type[0] = '\0';
    p->has_id = false;
}

void mae__sse_reset_connection(mae__sse_parser *p)
{
    reset_frame(p);
    memcpy(p->id_buf, p->id, sizeof p->id);
    p->line_len = 0;
    p->line_over = false;
    p->after_cr = false;
    p->started = false;
    p->bom_seen = 0;
}

/* The blank line: hands the frame to cb. Returns cb's answer. */
static bool dispatch(mae__sse_parser *p, mae__sse_event_fn cb, void *user)
{
    bool go_on = true;
    /* The standard's first step, whether or not the frame has data: an id
     * counts once its frame is complete, never before. */
    memcpy(p->id, p->id_buf, sizeof p->id);
    if (p->has_data || p->over) {
        mae__sse_event ev;
        if (p->data_len > 0 && p->data[p->data_len - 1] == '\n')
            p->data_len--;
        p->data[p->data_len] = '\0';
        ev.type = p->type[0] ? p->type : "message";
        ev.data = p->over ? "" : p->data;
        ev.data_len = p->over ? 0 : p->data_len;
        ev.id = p->id;
        ev.has_id = p->has_id;
        ev.oversize = p->over;
        if (p->over)
            p->oversize_frames++;
        go_on = cb(user, &ev);
    }
    reset_frame(p);
    return go_on;
}

static bool all_digits(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

static void field(mae__sse_parser *p, const char *name, size_t nlen, const char *v, size_t vlen)
{
    if (nlen == 4 && memcmp(name, "data", 4) == 0) {
        if (p->data_len + vlen + 1 > p->max_line) {
            p->over = true;
            return;
        }
        memcpy(p->data + p->data_len, v, vlen);
        p->data_len += vlen;
        p->data[p->data_len++] = '\n';
        p->has_data = true;
    } else if (nlen == 5 && memcmp(name, "event", 5) == 0) {
        if (vlen > MAE__SSE_TYPE_MAX) {
            p->over = true;
            return;
        }
        memcpy(p->type, v, vlen);
        p->type[vlen] = '\0';
    } else if (nlen == 2 && memcmp(name, "id", 2) == 0) {
        if (memchr(v, '\0', vlen) || vlen > MAE__SSE_ID_MAX)
            return;
        memcpy(p->id_buf, v, vlen);
        p->id_buf[vlen] = '\0';
        p->has_id = true;
    } else if (nlen == 5 && memcmp(name, "retry", 5) == 0) {
        if (!all_digits(v, vlen))
            return;
        long ms = 0;
        for (size_t i = 0; i < vlen; i++) {
            ms = ms * 10 + (v[i] - '0');
            if (ms > 3600000L) {   /* an hour: more is a relay's mistake */
                ms = 3600000L;
                break;
            }
        }
        p->retry_ms = ms;
    }
    /* Any other field is ignored, as the standard says. */
}

/* One complete line (without its end). Returns false when cb stopped. */
static bool line(mae__sse_parser *p, mae__sse_event_fn cb, void *user)
{
    if (p->line_over) {
        /* Its content is lost: the frame it belongs to is unusable. */
        p->line_over = false;
        p->line_len = 0;
        p->over = true;
        return true;
    }
    size_t n = p->line_len;
    p->line_len = 0;
    if (n == 0)
        return dispatch(p, cb, user);
    const char *s = p->line;
    if (s[0] == ':')
        return true;
    const char *colon = memchr(s, ':', n);
    if (!colon) {
        field(p, s, n, "", 0);
        return true;
    }
    size_t nlen = (size_t)(colon - s);
    const char *v = colon + 1;
    size_t vlen = n - nlen - 1;
    if (vlen > 0 && *v == ' ') {
        v++;
        vlen--;
    }
    field(p, s, nlen, v, vlen);
    return true;
}

size_t mae__sse_feed(mae__sse_parser *p, const char *buf, size_t len, mae__sse_event_fn cb,
                     void *user)
{
    static const unsigned char bom[3] = {0xEF, 0xBB, 0xBF};
    size_t i = 0;
    while (i < len) {
        unsigned char c = (unsigned char)buf[i];
        if (!p->started) {
            /* One UTF-8 BOM at the very start is dropped. A partial match
             * that then differs is the start of a line. */
            if (c == bom[p->bom_seen]) {
                i++;
                if (++p->bom_seen == 3)
                    p->started = true;
                continue;
            }
            p->started = true;
            size_t seen = p->bom_seen;
            p->bom_seen = 0;
            for (size_t k = 0; k < seen; k++) {
                if (p->line_len < p->max_line)
                    p->line[p->line_len++] = (char)bom[k];
                else
                    p->line_over = true;
            }
        }
        i++;
        if (c == '\n' && p->after_cr) {
            p->after_cr = false;
            continue;
        }
        p->after_cr = c == '\r';
        if (c == '\n' || c == '\r') {
            if (!line(p, cb, user))
                return i;
            continue;
        }
        if (p->line_len < p->max_line)
            p->line[p->line_len++] = (char)c;
        else
            p->line_over = true;
    }
    return i;
}
