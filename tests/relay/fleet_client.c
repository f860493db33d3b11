/* This file implements the EventSource-like client of fleet_client.h:
 * an HTTP/1.1 response reader (head, then chunked or plain body), the
 * event stream interpretation of the HTML standard (fields id, event,
 * data, retry; comments; dispatch on a blank line) and the reconnection
 * after the reconnection time with Last-Event-ID. */
#include "fleet_client.h"

#include <ctype.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* A browser's default reconnection time before any retry: field. */
#define FC_DEFAULT_RETRY_MS 3000

static bool grow(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return true;
    size_t n = *cap ? *cap : 256;
    while (n < need)
        n *= 2;
    char *b = realloc(*buf, n);
    if (!b)
        return false;
    *buf = b;
    *cap = n;
    return true;
}

static void connect_now(fc_client *c)
{
    char headers[480];
    snprintf(headers, sizeof headers, "Accept: text/event-stream\r\nCache-Control: no-cache\r\n%s",
             c->headers);
    if (c->last_id[0]) {
        size_t k = strlen(headers);
        snprintf(headers + k, sizeof headers - k, "Last-Event-ID: %s\r\n", c->last_id);
    }
    c->c = rh_get(c->port, c->path, headers);
    c->connects++;
    c->status = 0;
    c->chunked = false;
    c->via = 0;
    c->raw = 0;
    c->chunk_left = -1;
    c->body_len = c->parsed = 0;
    c->id_buf[0] = c->event[0] = '\0';
    c->data_len = 0;
    /* The last event ID buffer starts as the string (the standard keeps
     * one buffer per EventSource; a new stream keeps it). */
    snprintf(c->id_buf, sizeof c->id_buf, "%s", c->last_id);
}

fc_client *fc_open(int port, const char *path, const char *headers, const char *const *sources)
{
    fc_client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->port = port;
    snprintf(c->path, sizeof c->path, "%s", path);
    snprintf(c->headers, sizeof c->headers, "%s", headers ? headers : "");
    c->sources = sources;
    c->retry_ms = FC_DEFAULT_RETRY_MS;
    c->t_back = -1;
    connect_now(c);
    if (!c->c) {
        fc_free(c);
        return NULL;
    }
    return c;
}

void fc_free(fc_client *c)
{
    if (!c)
        return;
    if (c->c)
        rh_close(c->c);
    free(c->body);
    free(c->data);
    free(c->ev);
    free(c->resets);
    free(c);
}

/* The stream ended (closed, cut, or a bad answer): wait, then connect
 * again, as EventSource's "reestablish the connection". */
static void ended(fc_client *c)
{
    rh_close(c->c);
    c->c = NULL;
    c->ends++;
    c->t_end = rh_now();
    c->retry_at_end = c->retry_ms;
    c->t_back = -1;
    c->reconnect_at = c->t_end + c->retry_ms / 1000.0;
}

static int source_index(const fc_client *c, const char *line)
{
    for (int i = 0; c->sources && c->sources[i]; i++) {
        char want[64];
        snprintf(want, sizeof want, "\"source\":\"%s\"", c->sources[i]);
        if (strstr(line, want))
            return i;
    }
    return -1;
}

static void dispatch(fc_client *c)
{
    snprintf(c->last_id, sizeof c->last_id, "%s", c->id_buf);
    if (c->data_len == 0) {
        c->event[0] = '\0';
        return;
    }
    c->data[--c->data_len] = '\0';   /* the last LF */
    const char *type = c->event[0] ? c->event : "message";
    if (strcmp(type, "mailagent") == 0) {
        if (c->nev == c->cap) {
            size_t n = c->cap ? c->cap * 2 : 1024;
            fc_event *e = realloc(c->ev, n * sizeof *e);
            if (!e)
                abort();
            c->ev = e;
            c->cap = n;
        }
        fc_event *e = &c->ev[c->nev++];
        e->pub = source_index(c, c->data);
        const char *q = strstr(c->data, "\"n\":");
        e->n = q ? atoi(q + 4) : -1;
        e->conn = c->connects;
        e->via = c->via;
        e->t = rh_now();
        snprintf(e->id, sizeof e->id, "%s", c->last_id);
        if (c->t_back < 0 && c->ends > 0)
            c->t_back = rh_now() - c->t_end;
    } else if (strcmp(type, "reset") == 0) {
        fc_reset *r = realloc(c->resets, (c->nresets + 1) * sizeof *r);
        if (!r)
            abort();
        c->resets = r;
        r[c->nresets].at = c->nev;
        snprintf(r[c->nresets].data, sizeof r[c->nresets].data, "%s", c->data);
        c->nresets++;
    }
    c->data_len = 0;
    c->event[0] = '\0';
}

static void field(fc_client *c, const char *line, size_t len)
{
    if (len == 0) {
        dispatch(c);
        return;
    }
    if (line[0] == ':')
        return;
    const char *colon = memchr(line, ':', len);
    size_t nlen = colon ? (size_t)(colon - line) : len;
    const char *v = colon ? colon + 1 : line + len;
    size_t vlen = (size_t)(line + len - v);
    if (vlen > 0 && *v == ' ') {
        v++;
        vlen--;
    }
    if (nlen == 4 && memcmp(line, "data", 4) == 0) {
        if (!grow(&c->data, &c->data_cap, c->data_len + vlen + 2))
            abort();
        memcpy(c->data + c->data_len, v, vlen);
        c->data_len += vlen;
        c->data[c->data_len++] = '\n';
        c->data[c->data_len] = '\0';
    } else if (nlen == 5 && memcmp(line, "event", 5) == 0) {
        snprintf(c->event, sizeof c->event, "%.*s", (int)vlen, v);
    } else if (nlen == 2 && memcmp(line, "id", 2) == 0) {
        if (!memchr(v, '\0', vlen))
            snprintf(c->id_buf, sizeof c->id_buf, "%.*s", (int)vlen, v);
    } else if (nlen == 5 && memcmp(line, "retry", 5) == 0) {
        bool digits = vlen > 0;
        for (size_t i = 0; i < vlen; i++)
            digits = digits && isdigit((unsigned char)v[i]);
        if (digits)
            c->retry_ms = atoi(v);
    }
}

/* Interprets the complete lines of the body (LF, CR LF or CR ends one;
 * the relay writes LF). */
static void interpret(fc_client *c)
{
    while (c->parsed < c->body_len) {
        const char *p = c->body + c->parsed;
        size_t left = c->body_len - c->parsed, k = 0;
        while (k < left && p[k] != '\n' && p[k] != '\r')
            k++;
        if (k == left)
            return;
        size_t skip = k + 1;
        if (p[k] == '\r') {
            if (k + 1 == left)
                return;     /* CR LF may be cut between reads */
            if (p[k + 1] == '\n')
                skip++;
        }
        field(c, p, k);
        c->parsed += skip;
    }
}

static void append_body(fc_client *c, const char *p, size_t n)
{
    if (!grow(&c->body, &c->body_cap, c->body_len + n + 1))
        abort();
    memcpy(c->body + c->body_len, p, n);
    c->body_len += n;
    c->body[c->body_len] = '\0';
}

/* Moves what arrived into body: returns false once the response is over
 * (the last chunk). */
static bool dechunk(fc_client *c)
{
    rh_conn *k = c->c;
    if (!c->chunked) {
        append_body(c, k->buf + c->raw, k->len - c->raw);
        c->raw = k->len;
        return true;
    }
    while (c->raw < k->len) {
        if (c->chunk_left == -1) {
            const char *crlf = strstr(k->buf + c->raw, "\r\n");
            if (!crlf)
                return true;
            long size = strtol(k->buf + c->raw, NULL, 16);
            c->raw = (size_t)(crlf + 2 - k->buf);
            if (size == 0)
                return false;
            c->chunk_left = size;
        } else if (c->chunk_left == -2) {
            if (k->len - c->raw < 2)
                return true;
            c->raw += 2;
            c->chunk_left = -1;
        } else {
            size_t n = k->len - c->raw;
            if (n > (size_t)c->chunk_left)
                n = (size_t)c->chunk_left;
            append_body(c, k->buf + c->raw, n);
            c->raw += n;
            c->chunk_left -= (long)n;
            if (c->chunk_left == 0)
                c->chunk_left = -2;
        }
    }
    return true;
}

/* The port of the last address in the (lower-cased) head's X-Upstream
 * header: nginx's $upstream_addr lists every upstream it tried, "a:p1,
 * a:p2", the one that answered last. 0 without the header. */
static int upstream_port(const char *head)
{
    const char *h = strstr(head, "\nx-upstream:");
    if (!h)
        return 0;
    const char *eol = strstr(h + 1, "\r\n"), *colon = NULL;
    if (!eol)
        return 0;
    for (const char *p = h + 12; p < eol; p++)
        if (*p == ':')
            colon = p;
    return colon ? atoi(colon + 1) : 0;
}

void fc_step(fc_client *c)
{
    if (!c->c) {
        if (rh_now() >= c->reconnect_at) {
            connect_now(c);
            if (!c->c) {    /* refused: wait again */
                c->reconnect_at = rh_now() + c->retry_ms / 1000.0;
                return;
            }
        } else {
            return;
        }
    }
    rh_conn *k = c->c;
    rh_pump(k);
    if (c->status == 0) {
        const char *end = strstr(k->buf, "\r\n\r\n");
        if (!end) {
            if (k->eof)
                ended(c);
            return;
        }
        c->raw = (size_t)(end + 4 - k->buf);
        char head[4096];
        snprintf(head, sizeof head, "%.*s", (int)(c->raw), k->buf);
        c->status = strncmp(head, "HTTP/1.1 ", 9) == 0 || strncmp(head, "HTTP/1.0 ", 9) == 0
                        ? atoi(head + 9)
                        : -1;
        for (char *h = head; *h; h++)
            *h = (char)tolower((unsigned char)*h);
        c->chunked = strstr(head, "\ntransfer-encoding: chunked") != NULL;
        c->via = upstream_port(head);
        if (c->status != 200 || !strstr(head, "\ncontent-type: text/event-stream")) {
            /* EventSource fails the connection for good; a test counts it
             * and goes on as if it reconnected. */
            c->bad_status++;
            ended(c);
            return;
        }
    }
    bool more = dechunk(c);
    interpret(c);
    if (!more || k->eof)
        ended(c);
}

bool fc_run_until(fc_client **cs, int n, bool (*cond)(void *), void *arg, int timeout_ms)
{
    double until = rh_now() + timeout_ms / 1000.0;
    for (;;) {
        struct pollfd p[64];
        int np = 0;
        for (int i = 0; i < n; i++) {
            fc_step(cs[i]);
            if (cs[i]->c && np < 64)
                p[np++] = (struct pollfd){cs[i]->c->fd, POLLIN, 0};
        }
        if (cond(arg))
            return true;
        if (rh_now() > until)
            return false;
        poll(p, (nfds_t)np, 5);
    }
}

int fc_highest(const fc_client *c, int pub)
{
    int top = 0;
    for (size_t i = 0; i < c->nev; i++)
        if (c->ev[i].pub == pub && c->ev[i].n > top)
            top = c->ev[i].n;
    return top;
}

int fc_tally_of(const fc_client *c, int pub, int sent, fc_tally *out)
{
    memset(out, 0, sizeof *out);
    /* The reset epoch (resets before it) each N was first seen in. */
    int *epoch_seen = malloc(((size_t)sent + 1) * sizeof *epoch_seen);
    if (!epoch_seen)
        abort();
    for (int n = 0; n <= sent; n++)
        epoch_seen[n] = -1;
    int last = 0, last_epoch = 0, rc = 0;
    size_t r = 0;
    for (size_t i = 0; i < c->nev; i++) {
        while (r < c->nresets && c->resets[r].at <= i)
            r++;
        const fc_event *e = &c->ev[i];
        if (e->pub != pub)
            continue;
        int epoch = (int)r;
        out->events++;
        if (e->n < 1 || e->n > sent) {
            rc = -1;
            continue;
        }
        if (epoch_seen[e->n] >= 0) {
            out->twice++;
            out->twice_explained += epoch_seen[e->n] < epoch;
        } else {
            epoch_seen[e->n] = epoch;
            if (e->n > last + 1) {
                out->gaps++;
                out->gaps_explained += last_epoch < epoch;
            }
        }
        last = e->n;
        last_epoch = epoch;
    }
    for (int n = 1; n <= sent; n++)
        out->missing += epoch_seen[n] < 0;
    free(epoch_seen);
    return rc;
}
