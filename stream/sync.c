/* This module implements the command's blocking Redis handshake and
 * bounds read of stream/sync.h. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "stream/sync.h"

/* The context's error as one sentence; a read timeout surfaces as
 * EAGAIN's text. */
static void context_error(const redisContext *c, int timeout_ms, char *err, size_t errlen)
{
    if (strcmp(c->errstr, strerror(EAGAIN)) == 0)
        snprintf(err, errlen, "no answer within %d ms", timeout_ms);
    else
        snprintf(err, errlen, "%s", c->errstr[0] ? c->errstr : "connection failed");
}

/* Runs one handshake command; false with err on an error or no reply. */
static bool step(redisContext *c, redisReply *r, const char *what, int timeout_ms, char *err,
                 size_t errlen)
{
    if (!r) {
        context_error(c, timeout_ms, err, errlen);
        return false;
    }
    bool ok = r->type != REDIS_REPLY_ERROR;
    if (!ok)
        snprintf(err, errlen, "%s refused: %s", what, r->str);
    freeReplyObject(r);
    return ok;
}

redisContext *mae__redis_connect_sync(const mae__url *u, int timeout_ms, char *err, size_t errlen)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisContext *c = u->path ? redisConnectUnixWithTimeout(u->path, tv)
                              : redisConnectWithTimeout(u->host, u->port, tv);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (c->err) {
        context_error(c, timeout_ms, err, errlen);
        goto fail;
    }
    /* A server that accepts and never answers must not hang the handshake. */
    redisSetTimeout(c, tv);
    redisEnableKeepAlive(c);
    if (u->password &&
        !step(c,
              u->user ? redisCommand(c, "AUTH %s %s", u->user, u->password)
                      : redisCommand(c, "AUTH %s", u->password),
              "AUTH", timeout_ms, err, errlen))
        goto fail;
    if (u->db != 0 && !step(c, redisCommand(c, "SELECT %d", u->db), "SELECT", timeout_ms, err,
                            errlen))
        goto fail;
    return c;
fail:
    redisFree(c);
    return NULL;
}

int mae__stream_bounds_sync(redisContext *c, const char *key, size_t len, mae__stream_bounds *out,
                            char *err, size_t errlen)
{
    redisReply *r = NULL;
    const char *why = NULL;
    int rc = -1;
    /* Pipelined: one round trip, and the four replies read in order. */
    redisAppendCommand(c, MAE__STREAM_BOUNDS_MULTI);
    redisAppendCommand(c, MAE__STREAM_BOUNDS_EXISTS, key, len);
    redisAppendCommand(c, MAE__STREAM_BOUNDS_XINFO, key, len);
    redisAppendCommand(c, MAE__STREAM_BOUNDS_EXEC);
    for (int i = 0; i < 4; i++) {
        void *reply = NULL;
        if (redisGetReply(c, &reply) != REDIS_OK) {
            snprintf(err, errlen, "%s", c->errstr[0] ? c->errstr : "connection lost");
            return -1;
        }
        if (i < 3) {
            redisReply *q = reply;
            if (q->type == REDIS_REPLY_ERROR && !why) {
                snprintf(err, errlen, "%s", q->str);
                why = err;
            }
            freeReplyObject(q);
        } else {
            r = reply;
        }
    }
    if (why)
        goto done;
    int p = mae__stream_parse_bounds(r, out, &why);
    if (p > 0)
        rc = 0;
    else
        snprintf(err, errlen, "%s", p < 0 ? why
                                    : r->type == REDIS_REPLY_ERROR ? r->str
                                                                   : "unexpected reply to XINFO STREAM");
done:
    freeReplyObject(r);
    return rc;
}
