/* This module implements the publisher's real transport on hiredis 0.14:
 * connect with a timeout, socket timeouts for every read and write,
 * pipelined commands and replies, and a check for a peer that has closed. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "publisher/publisher_internal.h"

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
    return c;
}

static int hr_append(void *conn, int argc, const char **argv, const size_t *lens)
{
    return redisAppendCommandArgv(conn, argc, argv, lens) == REDIS_OK ? 0 : -1;
}

static int hr_get_reply(void *conn, char *err, size_t errlen)
{
    redisContext *c = conn;
    void *r = NULL;
    if (redisGetReply(c, &r) != REDIS_OK || !r) {
        snprintf(err, errlen, "%s", c->err ? c->errstr : "no reply");
        if (r)
            freeReplyObject(r);
        return MAE__REPLY_IO;
    }
    redisReply *reply = r;
    int rc = MAE__REPLY_OK;
    if (reply->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "%.*s", (int)reply->len, reply->str);
        rc = MAE__REPLY_ERROR;
    }
    freeReplyObject(reply);
    return rc;
}

static bool hr_peer_closed(void *conn)
{
    redisContext *c = conn;
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
    return ((redisContext *)conn)->fd;
}

static void hr_free(void *conn)
{
    redisFree(conn);
}

const mae__transport_ops mae__hiredis_transport = {
    .connect = hr_connect,
    .append = hr_append,
    .get_reply = hr_get_reply,
    .peer_closed = hr_peer_closed,
    .fd = hr_fd,
    .free = hr_free,
    .user = NULL,
    .release = NULL,
};
