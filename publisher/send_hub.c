/* This file implements a batch on the wire to a hub: one POST of the
 * batch's lines, numbered so the hub applies each event once however often
 * the batch is resent, and the hub's answer sorted into acknowledged,
 * refused (by why) and "send again later". */
#include <stdio.h>
#include <string.h>

#include "publisher/publisher_impl.h"

/* How many 5xx answers other than 503 one batch gets before it is given
 * up as refused: a hub failing on this batch alone (a bug, a poison
 * event) must not hold every later event back for ever, while a hub that
 * restarts or fails once gets the batch again. */
#define SERVER_ERROR_SENDS 3

static const char *const WHY_TEXT[] = {
    [REFUSED_AUTH] = "refused the credential",
    [REFUSED_INVALID] = "refused the batch",
    [REFUSED_SERVER] = "failed on the batch",
};

/* Sends p->out as one POST and reads the answer: SENT_OK with *skipped
 * (events the hub had applied from an earlier send), SENT_BROKEN (no
 * complete answer: resend on a new connection), SENT_BUSY (503, or another
 * 5xx fewer than SERVER_ERROR_SENDS times: resend after a backoff) or
 * SENT_REFUSED with *why (REFUSED_*: the batch is dropped). Each outcome
 * but OK is logged (rate-limited, LOG_SEND) and is in last_error. */
int mae__send_hub_batch(mae_publisher *p, void *conn, uint64_t *skipped, int *why)
{
    char err[128] = "", first[24];
    batch *b = &p->out;
    mae__reply r;

    snprintf(first, sizeof first, "%llu", (unsigned long long)b->first_seq);
    p->argv[0] = p->pub_id;
    p->argl[0] = 32;
    p->argv[1] = first;
    p->argl[1] = strlen(first);
    for (size_t i = 0; i < b->n; i++) {
        p->argv[2 + i] = b->buf + b->off[i];
        p->argl[2 + i] = b->lens[i];
    }
    if (p->ops.append(conn, 2 + (int)b->n, p->argv, p->argl) != 0) {
        mae__io_problem(p, LOG_SEND, "out of memory building a batch");
        return SENT_BROKEN;
    }
    int rc = p->ops.get_reply(conn, &r, err, sizeof err);
    if (rc == MAE__REPLY_OK) {
        b->server_errors = 0;
        *skipped = r.ints[1] > 0 ? (uint64_t)r.ints[1] : 0;
        if (*skipped > b->n)
            *skipped = b->n;
        return SENT_OK;
    }
    if (rc == MAE__REPLY_IO) {
        mae__io_problem(p, LOG_SEND, "connection lost: %s", err[0] ? err : "I/O error");
        return SENT_BROKEN;
    }
    if (r.status == 503) {
        mae__io_problem(p, LOG_SEND, "hub busy, batch kept for a resend: %s", err);
        return SENT_BUSY;
    }
    if (r.status >= 500 && ++b->server_errors < SERVER_ERROR_SENDS) {
        mae__io_problem(p, LOG_SEND, "hub error, batch kept for a resend: %s", err);
        return SENT_BUSY;
    }
    *why = r.status >= 500                      ? REFUSED_SERVER
           : r.status == 401 || r.status == 403 ? REFUSED_AUTH
                                                : REFUSED_INVALID;
    b->server_errors = 0;
    mae__io_problem(p, LOG_SEND, "hub %s, %zu events dropped: %s", WHY_TEXT[*why], b->n, err);
    return SENT_REFUSED;
}
