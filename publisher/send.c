/* This file implements a batch on the wire: PUBLISH pipelining, and in
 * stream mode one EVALSHA of a server-side script that appends to the
 * stream and publishes each event exactly once, however often the batch
 * is resent. */
#include <stdio.h>
#include <string.h>

#include "publisher/publisher_impl.h"

#define APPLIED_TTL_S "604800" /* APPLIED_TTL as text */

/* Stream mode's batch script. KEYS[1] the stream, KEYS[2] the last number
 * this publisher had applied; ARGV[1] the channel, ARGV[2] the stream's
 * approximate maximum length, ARGV[3] the number of the first event, ARGV[4]
 * the key's time to live, ARGV[5] "1" when the publisher concedes a gap
 * before this batch (it knows those events are lost), ARGV[6..] the events.
 * A batch whose first number is beyond the last applied one + 1 would
 * leave a gap: Redis lost events it had acknowledged (a failover to a
 * replica that had not received them), and the script refuses it with
 * {-1, last applied}, or {-2, 0} when the key is missing (a new master
 * that never saw this publisher, or a key expired after a week idle), so
 * that the publisher resends from there. A first batch (number 1) never
 * leaves a gap. An event whose number is not above the last applied one
 * was applied by an earlier send of the same batch (the connection broke
 * before the reply came) and is skipped; the others are appended and
 * published. A script runs atomically (no other client's command comes
 * between its commands), but Redis does not undo what it did before a
 * command that fails: a batch refused midway (the key holds another type
 * fails at the first XADD, so in practice before anything) would leave its
 * first events applied and the number unrecorded; such a batch is counted
 * as lost and not resent. Returns {applied, skipped}. */
static const char BATCH_SCRIPT[] =
    "local cur = redis.call('GET', KEYS[2])\n"
    "local last = tonumber(cur or 0)\n"
    "local first = tonumber(ARGV[3])\n"
    "if first > last + 1 and ARGV[5] ~= '1' then\n"
    "  if cur then return {-1, last} end\n"
    "  return {-2, 0}\n"
    "end\n"
    "local applied = 0\n"
    "for i = 6, #ARGV do\n"
    "  if first + i - 6 > last then\n"
    "    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'event', ARGV[i])\n"
    "    redis.call('PUBLISH', ARGV[1], ARGV[i])\n"
    "    applied = applied + 1\n"
    "  end\n"
    "end\n"
    "local top = first + #ARGV - 6\n"
    "if top > last then\n"
    "  redis.call('SET', KEYS[2], string.format('%d', top), 'EX', ARGV[4])\n"
    "else\n"
    "  redis.call('EXPIRE', KEYS[2], ARGV[4])\n"
    "end\n"
    "return {applied, #ARGV - 5 - applied}\n";

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

bool mae__failover_error(const char *err)
{
    static const char *const codes[] = {"NOREPLICAS", "READONLY", "LOADING", "MASTERDOWN"};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        size_t n = strlen(codes[i]);
        /* At the start, or after a space or '-' inside a script's error. */
        for (const char *q = strstr(err, codes[i]); q; q = strstr(q + 1, codes[i]))
            if ((q == err || q[-1] == ' ' || q[-1] == '-') && (q[n] == ' ' || q[n] == '\0'))
                return true;
    }
    return false;
}

/* Sends n lines (lines NULL: those of p->out) numbered from first_seq as one EVALSHA of the batch script,
 * followed (wait_replicas > 0) by WAIT in the same round trip, and reads
 * the replies: SENT_* (publisher_impl.h) with res filled. NOSCRIPT reloads
 * the script and sends once more. */
int mae__send_stream_lines(mae_publisher *p, void *conn, uint64_t first_seq, size_t n,
                           const char *const *lines, const size_t *lens, bool concede,
                           stream_result *res)
{
    char err[256] = "", first[24], werr[256] = "";
    char wn[16], wt[16];
    mae__reply r, w;
    memset(res, 0, sizeof *res);
    number_text(first, sizeof first, first_seq);
    snprintf(wn, sizeof wn, "%d", p->wait_replicas);
    snprintf(wt, sizeof wt, "%d", p->wait_timeout_ms);
    for (int attempt = 0; attempt < 2; attempt++) {
        const char *head[SCRIPT_ARGS] = {"EVALSHA",      p->sha,         "2",
                                         p->stream_key,  p->applied_key, p->channel,
                                         p->maxlen_text, first,          APPLIED_TTL_S,
                                         concede ? "1" : "0"};
        for (int i = 0; i < SCRIPT_ARGS; i++) {
            p->argv[i] = head[i];
            p->argl[i] = strlen(head[i]);
        }
        for (size_t i = 0; i < n; i++) {
            p->argv[SCRIPT_ARGS + i] = lines ? lines[i] : p->out.buf + p->out.off[i];
            p->argl[SCRIPT_ARGS + i] = lines ? lens[i] : p->out.lens[i];
        }
        const char *wait[3] = {"WAIT", wn, wt};
        size_t waitl[3] = {4, strlen(wn), strlen(wt)};
        if (p->ops.append(conn, SCRIPT_ARGS + (int)n, p->argv, p->argl) != 0 ||
            (p->wait_replicas > 0 && p->ops.append(conn, 3, wait, waitl) != 0)) {
            mae__io_problem(p, LOG_SEND, "out of memory building a batch");
            return SENT_BROKEN;
        }
        int rc = p->ops.get_reply(conn, &r, err, sizeof err);
        int wrc = MAE__REPLY_OK;
        if (rc != MAE__REPLY_IO && p->wait_replicas > 0)
            wrc = p->ops.get_reply(conn, &w, werr, sizeof werr);
        if (rc == MAE__REPLY_IO || wrc == MAE__REPLY_IO) {
            const char *why = rc == MAE__REPLY_IO ? err : werr;
            mae__io_problem(p, LOG_SEND, "connection lost: %s", why[0] ? why : "I/O error");
            return SENT_BROKEN;
        }
        if (rc == MAE__REPLY_OK && r.nints == 2 && r.ints[0] < 0) {
            res->gap_key = r.ints[0] == -1;
            res->gap_last = r.ints[1] > 0 ? (uint64_t)r.ints[1] : 0;
            return SENT_GAP;
        }
        if (rc == MAE__REPLY_OK) {
            res->skipped = r.nints == 2 && r.ints[1] > 0 ? (uint64_t)r.ints[1] : 0;
            if (p->wait_replicas == 0)
                return SENT_OK;
            if (wrc == MAE__REPLY_OK && w.nints == 1 && w.ints[0] >= p->wait_replicas)
                return SENT_OK;
            if (wrc == MAE__REPLY_OK)
                mae__io_problem(p, LOG_SEND, "WAIT confirmed %lld of %d replicas: batch kept",
                                w.nints == 1 ? w.ints[0] : -1LL, p->wait_replicas);
            else
                mae__io_problem(p, LOG_SEND, "WAIT refused: %s", werr);
            return SENT_UNCONFIRMED;
        }
        if (mae__failover_error(err)) {
            mae__io_problem(p, LOG_SEND, "not a writable master: %s", err);
            return SENT_RETRY;
        }
        if (strncmp(err, "NOSCRIPT", 8) != 0 || attempt > 0) {
            mae__io_problem(p, LOG_SEND, "stream batch refused: %s", err);
            return SENT_REFUSED;
        }
        rc = mae__send_load_script(p, conn, err, sizeof err);
        if (rc != MAE__REPLY_OK) {
            mae__io_problem(p, LOG_SEND, "cannot reload the batch script: %s", err);
            if (rc == MAE__REPLY_ERROR && mae__failover_error(err))
                return SENT_RETRY;
            return rc == MAE__REPLY_IO ? SENT_BROKEN : SENT_REFUSED;
        }
    }
    return SENT_REFUSED;
}
