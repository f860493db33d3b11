/* This module implements the publisher's real transport on hiredis 0.14:
 * connect with a timeout, socket timeouts for every read and write,
 * pipelined commands (encoded here, without an allocation per command) and
 * replies, and a check for a peer that has closed. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "publisher/publisher_internal.h"

/* A connection: hiredis' context and the buffer commands are encoded in. */
typedef struct hr_conn {
    redisContext *c;
    char *cmd;
    size_t cap;
} hr_conn;

static struct timeval to_timeval(int ms)
{
    struct timeval tv;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    return tv;
}

static void *hr_connect(void *user, const mae__url *url, int connect_timeout_ms,
                        int io_timeout_ms, char *err, size_t errlen)
{
    (void)user;
    struct timeval ctv = to_timeval(connect_timeout_ms);
    redisContext *c = url->is_unix ? redisConnectUnixWithTimeout(url->path, ctv)
                                   : redisConnectWithTimeout(url->host, url->port, ctv);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (c->err) {
        if (url->is_unix)
            snprintf(err, errlen, "%s: %s", url->path, c->errstr);
        else
            snprintf(err, errlen, "%s:%d: %s", url->host, url->port, c->errstr);
        redisFree(c);
        return NULL;
    }
    /* SO_RCVTIMEO/SO_SNDTIMEO: every blocking read or write gives up after
     * the I/O timeout, so a hung server costs at most that per call. */
    if (redisSetTimeout(c, to_timeval(io_timeout_ms)) != REDIS_OK) {
        snprintf(err, errlen, "cannot set socket timeouts: %s", c->errstr);
        redisFree(c);
        return NULL;
    }
    hr_conn *hc = calloc(1, sizeof *hc);
    if (!hc) {
        snprintf(err, errlen, "out of memory");
        redisFree(c);
        return NULL;
    }
    hc->c = c;
    return hc;
}

/* Writes "<prefix><n>\r\n" at out; returns the end. */
static char *put_count(char *out, char prefix, size_t n)
{
    char digits[24];
    int k = 0;
    *out++ = prefix;
    do {
        digits[k++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    while (k)
        *out++ = digits[--k];
    *out++ = '\r';
    *out++ = '\n';
    return out;
}

size_t mae__resp_size(int argc, const size_t *lens)
{
    size_t need = 24;
    for (int i = 0; i < argc; i++)
        need += lens[i] + 26;
    return need;
}

char *mae__resp_encode(char *out, int argc, const char **argv, const size_t *lens)
{
    out = put_count(out, '*', (size_t)argc);
    for (int i = 0; i < argc; i++) {
        out = put_count(out, '$', lens[i]);
        memcpy(out, argv[i], lens[i]);
        out += lens[i];
        *out++ = '\r';
        *out++ = '\n';
    }
    return out;
}

/* Encodes the command in RESP into the connection's buffer (grown only for
 * a longer command than any before, up to MAE__CMD_KEEP) and appends it to
 * hiredis' output: hiredis' own encoder allocates and frees a buffer per
 * command. hiredis itself frees its output buffer once written and its
 * reader's buffer once idle and over 16 KiB. */
static int hr_append(void *conn, int argc, const char **argv, const size_t *lens)
{
    hr_conn *hc = conn;
    size_t need = mae__resp_size(argc, lens);
    if (need > hc->cap) {
        char *nb = realloc(hc->cmd, need);
        if (!nb)
            return -1;
        hc->cmd = nb;
        hc->cap = need;
    }
    char *out = mae__resp_encode(hc->cmd, argc, argv, lens);
    int rc = redisAppendFormattedCommand(hc->c, hc->cmd, (size_t)(out - hc->cmd));
    if (hc->cap > MAE__CMD_KEEP) {
        free(hc->cmd);
        hc->cmd = NULL;
        hc->cap = 0;
    }
    return rc == REDIS_OK ? 0 : -1;
}

void mae__reply_fill(const struct redisReply *r, mae__reply *out)
{
    memset(out, 0, sizeof *out);
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) {
        size_t n = r->len < sizeof out->str - 1 ? r->len : sizeof out->str - 1;
        memcpy(out->str, r->str, n);
        out->str[n] = '\0';
    } else if (r->type == REDIS_REPLY_INTEGER) {
        out->ints[out->nints++] = r->integer;
    } else if (r->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < r->elements; i++) {
            const redisReply *e = r->element[i];
            if (e->type == REDIS_REPLY_INTEGER && out->nints < 2) {
                out->ints[out->nints++] = e->integer;
            } else if ((e->type == REDIS_REPLY_STRING || e->type == REDIS_REPLY_STATUS) &&
                       out->nelems < 2) {
                size_t n = e->len < sizeof out->elems[0] - 1 ? e->len : sizeof out->elems[0] - 1;
                memcpy(out->elems[out->nelems], e->str, n);
                out->elems[out->nelems++][n] = '\0';
            }
        }
    }
}

int mae__reply_take(struct redisReply *r, mae__reply *out, char *err, size_t errlen)
{
    int rc = MAE__REPLY_OK;
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "%.*s", (int)r->len, r->str);
        rc = MAE__REPLY_ERROR;
    } else if (out) {
        mae__reply_fill(r, out);
    }
    freeReplyObject(r);
    return rc;
}

static int hr_get_reply(void *conn, mae__reply *out, char *err, size_t errlen)
{
    redisContext *c = ((hr_conn *)conn)->c;
    void *r = NULL;
    if (redisGetReply(c, &r) != REDIS_OK || !r) {
        snprintf(err, errlen, "%s", c->err ? c->errstr : "no reply");
        if (r)
            freeReplyObject(r);
        return MAE__REPLY_IO;
    }
    return mae__reply_take(r, out, err, errlen);
}

static bool hr_peer_closed(void *conn)
{
    redisContext *c = ((hr_conn *)conn)->c;
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    if (poll(&pfd, 1, 0) <= 0)
        return false;
    if (pfd.revents & (POLLERR | POLLHUP | POLLNVAL))
        return true;
    char byte;
    ssize_t n = recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    /* Nothing is owed to us on an idle connection: EOF or an error both
     * mean the server is gone. Unexpected data is left for hiredis. */
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static int hr_fd(void *conn)
{
    return ((hr_conn *)conn)->c->fd;
}

static size_t hr_held(void *conn)
{
    return ((hr_conn *)conn)->cap;
}

static void hr_free(void *conn)
{
    hr_conn *hc = conn;
    redisFree(hc->c);
    free(hc->cmd);
    free(hc);
}

const mae__transport_ops mae__hiredis_transport = {
    .connect = hr_connect,
    .append = hr_append,
    .get_reply = hr_get_reply,
    .peer_closed = hr_peer_closed,
    .fd = hr_fd,
    .free = hr_free,
    .held = hr_held,
    .user = NULL,
    .release = NULL,
};
