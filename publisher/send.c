/* This file implements a batch on the wire: PUBLISH pipelining, and in
 * stream mode one EVALSHA of a server-side script that appends to the
 * stream and publishes each event exactly once, however often the batch
 * is resent. */
#include <stdio.h>
#include <string.h>

#include "publisher/publisher_impl.h"

/* Stream mode: how long the key that remembers a publisher's last applied
 * event number lives after its last batch (refreshed by each batch). A
 * resend comes within a reconnect, so a week is ample; a publisher that
 * is gone leaves nothing behind for longer. */
#define APPLIED_TTL_S "604800"

/* Stream mode's batch script. KEYS[1] the stream, KEYS[2] the last number
 * this publisher had applied; ARGV[1] the channel, ARGV[2] the stream's
 * approximate maximum length, ARGV[3] the number of the first event, ARGV[4]
 * the key's time to live, ARGV[5..] the events. An event whose number is
 * not above the last applied one was applied by an earlier send of the same
 * batch (the connection broke before the reply came) and is skipped; the
 * others are appended and published. A script runs atomically (no other
 * client's command comes between its commands), but Redis does not undo
 * what it did before a command that fails: a batch refused midway (the
 * key holds another type fails at the first XADD, so in practice before
 * anything) would leave its first events applied and the number
 * unrecorded; such a batch is counted as lost and not resent. Returns
 * {applied, skipped}. */
static const char BATCH_SCRIPT[] =
    "local last = tonumber(redis.call('GET', KEYS[2]) or 0)\n"
    "local first = tonumber(ARGV[3])\n"
    "local applied = 0\n"
    "for i = 5, #ARGV do\n"
    "  if first + i - 5 > last then\n"
    "    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'event', ARGV[i])\n"
    "    redis.call('PUBLISH', ARGV[1], ARGV[i])\n"
    "    applied = applied + 1\n"
    "  end\n"
    "end\n"
    "local top = first + #ARGV - 5\n"
    "if top > last then\n"
    "  redis.call('SET', KEYS[2], string.format('%d', top), 'EX', ARGV[4])\n"
    "else\n"
    "  redis.call('EXPIRE', KEYS[2], ARGV[4])\n"
    "end\n"
    "return {applied, #ARGV - 4 - applied}\n";

/* Loads the batch script (stream mode) and keeps its SHA1 for EVALSHA: on
 * each new connection, and again when Redis answers NOSCRIPT (its script
 * cache was flushed). Doubles as the handshake's PING. */
int mae__send_load_script(mae_publisher *p, void *conn, char *err, size_t errlen)
{
    const char *argv[3] = {"SCRIPT", "LOAD", BATCH_SCRIPT};
    size_t lens[3] = {6, 4, sizeof BATCH_SCRIPT - 1};
    mae__reply r;
    if (p->ops.append(conn, 3, argv, lens) != 0) {
        snprintf(err, errlen, "out of memory");
        return MAE__REPLY_IO;
    }
    int rc = p->ops.get_reply(conn, &r, err, errlen);
    if (rc == MAE__REPLY_OK && strlen(r.str) != 40) {
        snprintf(err, errlen, "SCRIPT LOAD answered no SHA1");
        return MAE__REPLY_ERROR;
    }
    if (rc == MAE__REPLY_OK)
        memcpy(p->sha, r.str, 41);
    return rc;
}

/* Pipelines p->out: every PUBLISH is appended, then the replies are read
 * in order. Returns how many were acknowledged; *broken is set when the
 * connection failed (the rest of the batch is lost, not resent, since Redis
 * may already have delivered some of it: the stream is at-most-once). */
size_t mae__send_publish_batch(mae_publisher *p, void *conn, bool *broken)
{
    char err[128] = "";
    const batch *b = &p->out;
    size_t acked = 0, appended = 0;
    const char *argv[3] = {"PUBLISH", p->channel, NULL};
    size_t lens[3] = {7, p->channel_len, 0};

    *broken = false;
    for (size_t i = 0; i < b->n; i++) {
        argv[2] = b->buf + b->off[i];
        lens[2] = b->lens[i];
        if (p->ops.append(conn, 3, argv, lens) != 0)
            break;
        appended++;
    }
    for (size_t i = 0; i < appended; i++) {
        int rc = p->ops.get_reply(conn, NULL, err, sizeof err);
        if (rc == MAE__REPLY_OK) {
            acked++;
        } else if (rc == MAE__REPLY_ERROR) {
            mae__io_problem(p, LOG_SEND, "PUBLISH refused: %s", err);
        } else {
            *broken = true;
            mae__io_problem(p, LOG_SEND, "connection lost: %s", err[0] ? err : "I/O error");
            break;
        }
    }
    if (appended < b->n && !*broken) {
        /* The output buffer could not grow: the connection's state is
         * unknown, so it is dropped like a broken one. */
        *broken = true;
        mae__io_problem(p, LOG_SEND, "out of memory building a batch");
    }
    return acked;
}

static void number_text(char *buf, size_t len, uint64_t v)
{
    snprintf(buf, len, "%llu", (unsigned long long)v);
}

/* Sends p->out as one EVALSHA of the batch script and reads its reply:
 * SENT_OK with *skipped (events an earlier send had applied), SENT_REFUSED
 * (an error reply: the batch cannot be applied), or SENT_BROKEN (the
 * connection failed; the batch stays for a resend). NOSCRIPT reloads the
 * script and sends once more. */
int mae__send_stream_batch(mae_publisher *p, void *conn, uint64_t *skipped)
{
    char err[128] = "", first[24];
    const batch *b = &p->out;
    mae__reply r;
    number_text(first, sizeof first, b->first_seq);
    for (int attempt = 0; attempt < 2; attempt++) {
        const char *head[SCRIPT_ARGS] = {"EVALSHA",      p->sha,         "2",
                                         p->stream_key,  p->applied_key, p->channel,
                                         p->maxlen_text, first,          APPLIED_TTL_S};
        for (int i = 0; i < SCRIPT_ARGS; i++) {
            p->argv[i] = head[i];
            p->argl[i] = strlen(head[i]);
        }
        for (size_t i = 0; i < b->n; i++) {
            p->argv[SCRIPT_ARGS + i] = b->buf + b->off[i];
            p->argl[SCRIPT_ARGS + i] = b->lens[i];
        }
        if (p->ops.append(conn, SCRIPT_ARGS + (int)b->n, p->argv, p->argl) != 0) {
            mae__io_problem(p, LOG_SEND, "out of memory building a batch");
            return SENT_BROKEN;
        }
        int rc = p->ops.get_reply(conn, &r, err, sizeof err);
        if (rc == MAE__REPLY_OK) {
            *skipped = r.nints == 2 && r.ints[1] > 0 ? (uint64_t)r.ints[1] : 0;
            return SENT_OK;
        }
        if (rc == MAE__REPLY_IO) {
            mae__io_problem(p, LOG_SEND, "connection lost: %s", err[0] ? err : "I/O error");
            return SENT_BROKEN;
        }
        if (strncmp(err, "NOSCRIPT", 8) != 0 || attempt > 0) {
            mae__io_problem(p, LOG_SEND, "stream batch refused: %s", err);
            return SENT_REFUSED;
        }
        rc = mae__send_load_script(p, conn, err, sizeof err);
        if (rc != MAE__REPLY_OK) {
            mae__io_problem(p, LOG_SEND, "cannot reload the batch script: %s", err);
            return rc == MAE__REPLY_IO ? SENT_BROKEN : SENT_REFUSED;
        }
    }
    return SENT_REFUSED;
}
