/* Internal: what the stores and the tests see of the publisher beyond the
 * public API: queueing a prebuilt line, the transport seam the I/O thread
 * talks to Redis through. Never installed. */
#ifndef MAE_PUBLISHER_INTERNAL_H
#define MAE_PUBLISHER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include <mailagent/publisher.h>

#include "core/text.h"
#include "core/url.h"

/* Queues a copy of the complete line in b and frees b's text (b is reset).
 * Counts it like a publish call: disabled, queue full, or enqueued. A NULL
 * publisher just frees the line; an oom buffer counts as dropped_invalid. */
void mae__publisher_enqueue(mae_publisher *p, mae__buf *b);

/* The publish calls' path, which allocates nothing: line_begin locks p and
 * lends its line buffer (empty, reserved at open); the caller writes one
 * line into it and calls line_end, which copies the line into the queue
 * (built true) or counts the call as dropped_invalid (built false, or the
 * buffer ran out of memory), and unlocks. Only for a live publisher
 * (mae__publisher_live); nothing else may be called in between. */
mae__buf *mae__publisher_line_begin(mae_publisher *p);
void mae__publisher_line_end(mae_publisher *p, bool built);

/* The longest line p accepts (its max_event_bytes; the default for NULL).
 * The stores check their events against it before they write. */
size_t mae__publisher_max_line(const mae_publisher *p);

/* Tests: the bytes the I/O thread keeps allocated for sending (its batch
 * buffer and the transport's command buffer) as of its last batch. */
size_t mae__publisher_held_bytes(mae_publisher *p);

/* Counts one call as dropped_invalid (a builder's bad argument). */
void mae__publisher_drop_invalid(mae_publisher *p);

/* True when events given to p would be sent (not NULL, not disabled, not a
 * forked child's copy): lets callers skip building lines nobody will send. */
bool mae__publisher_live(const mae_publisher *p);

/* ---- transport seam ---------------------------------------------------------
 * The I/O thread speaks to Redis (or to the hub) only through these calls,
 * so unit tests can put a scripted fake in place of hiredis. All are called
 * on the I/O thread only. */
enum {
    MAE__REPLY_OK = 0,      /* a non-error reply */
    MAE__REPLY_ERROR = 1,   /* Redis answered with an error (-ERR ...) */
    MAE__REPLY_IO = -1,     /* the connection is broken or timed out */
};

/* The parts of a reply stream mode reads: a string (SCRIPT LOAD's SHA1)
 * and the integers of an array (the batch script's applied and skipped). */
typedef struct mae__reply {
    char str[48];           /* a bulk or status string, cut; "" when none */
    long long ints[2];
    int nints;              /* integers of an array reply, up to 2; an integer reply: 1 */
    int status;             /* the hub transport: the answer's HTTP status (OK or ERROR) */
    /* The first strings of an array reply (Sentinel's master address,
     * ROLE's role), cut; nelems how many. */
    char elems[2][256];
    int nelems;
} mae__reply;

typedef struct mae__transport_ops {
    /* Connects; returns a connection or NULL with a reason in err. */
    void *(*connect)(void *user, const mae__url *url, int connect_timeout_ms,
                     int io_timeout_ms, char *err, size_t errlen);
    /* Appends one command to the output buffer (nothing is written yet).
     * Returns 0 or -1 (out of memory). */
    int (*append)(void *conn, int argc, const char **argv, const size_t *lens);
    /* Writes what is pending and reads one reply (blocking up to the I/O
     * timeout). MAE__REPLY_*; err gets the text of an error or failure.
     * out, when not NULL, gets what stream mode needs of an OK reply. */
    int (*get_reply)(void *conn, mae__reply *out, char *err, size_t errlen);
    /* True when the peer has closed an idle connection (checked before a
     * batch, so an event is not lost on a connection known to be dead). */
    bool (*peer_closed)(void *conn);
    /* The socket, so close() can shut it down to unblock a stuck call;
     * -1 when there is none. */
    int (*fd)(void *conn);
    void (*free)(void *conn);
    /* The bytes the connection keeps allocated between commands (its
     * command buffer), for the tests' view of memory; NULL = not known. */
    size_t (*held)(void *conn);
    void *user;
    /* Called with user when the publisher is freed (NULL: user not owned). */
    void (*release)(void *user);
} mae__transport_ops;

/* The real transport: hiredis. */
extern const mae__transport_ops mae__hiredis_transport;

/* The hub transport (transport_http.c): HTTP/1.1 to a relay running as the
 * hub. Its command is one batch: argv[0] the publisher's id, argv[1] the
 * number of the batch's first event, argv[2..] the lines; its reply is the
 * hub's answer (ints: accepted, skipped; str: last_id; status). */
extern const mae__transport_ops mae__http_transport;

/* The most body bytes of one POST to a hub (a longer single event goes
 * alone): half the relay's default --max-body-bytes of 16 MiB, so a batch
 * of large events is never refused whole for its size. */
#define MAE__HUB_BATCH_BYTES ((size_t)8 << 20)

/* Parses a relay base URL, http://host[:port][/], into out (host, port;
 * password = token, copied, when token is not NULL or ""). Returns MAE_OK,
 * MAE_EINVAL with a sentence naming the problem in err (https, a path, a
 * query, user information, a bad host or port, a token with a control
 * character), or MAE_ENOMEM. */
int mae__hub_url_parse(const char *url, const char *token, mae__url *out, char *err,
                       size_t errlen);

/* What every transport that writes RESP itself shares (transport_hiredis.c):
 * the bytes a command may take at most, its encoding at out (returns the
 * end), and what stream mode needs of a hiredis reply. */
struct redisReply;
/* A command buffer grown past this (a long event, a stream batch of long
 * lines) is freed once its command is written or handed on, so one large
 * event does not pin its size for the connection's life; below it, the
 * buffer is kept and reused. */
#define MAE__CMD_KEEP ((size_t)256 << 10)
size_t mae__resp_size(int argc, const size_t *lens);
char *mae__resp_encode(char *out, int argc, const char **argv, const size_t *lens);
void mae__reply_fill(const struct redisReply *r, mae__reply *out);
/* Turns one whole reply into get_reply's result and frees it (takes r): an
 * error reply is MAE__REPLY_ERROR with its text in err; anything else is
 * MAE__REPLY_OK, filled into out when out is not NULL. */
int mae__reply_take(struct redisReply *r, mae__reply *out, char *err, size_t errlen);

/* Opens a publisher on the TLS transport (transport_tls.c): rediss:// URLs. */
int mae__publisher_open_tls(const mae_publisher_config *cfg, mae_publisher **out);

/* Opens a publisher that talks through ops instead of hiredis (tests). */
int mae__publisher_open_with(const mae_publisher_config *cfg, const mae__transport_ops *ops,
                             mae_publisher **out);
/* The user pointer of p's transport (tests reach their fake through it). */
void *mae__publisher_transport_user(mae_publisher *p);

#endif
