/* This file implements the I/O thread: it sleeps until there is work,
 * connects with backoff and jitter, watches an idle connection and sends
 * each batch (send.c, send_hub.c) with its outcome counted. */
#define _GNU_SOURCE /* ppoll */
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backoff.h"
#include "core/url.h"
#include "publisher/publisher_impl.h"

/* Under a steady trickle of events a batch is gathered for this long after
 * the previous one was sent (unless it is full, or flush or close is
 * waiting): sending each event as it comes costs a round trip and a Redis
 * wake-up per few events, CPU the caller's own work competes for. The I/O
 * thread stays awake for this long after a send, so the rest of a burst
 * never has to wake it; an event after an idle spell goes out at once. */
#define LINGER_S 0.001

/* The longest wait between connect attempts with a redis-sentinel:// URL
 * (backoff_max_ms applies when lower). */
#define SENTINEL_RETRY_MAX_S 0.5

/* ---- problems and the connection --------------------------------------------- */

/* What the I/O thread keeps between its steps. */
typedef struct io_state {
    void *conn;
    int failures;            /* connect failures in a row */
    double next_attempt;     /* no connect before this (backoff) */
    double next_send;        /* no batch before this unless it is full (linger) */
    bool watch_conn;         /* an idle wait also watches the connection */
    int retries;             /* stream batches answered "not a writable master" or
                                confirmed on too few replicas, in a row */
    double hold_until;       /* no resend of the batch in flight before this */
    int unanswered;          /* hub mode: sends in a row without a final answer, or busy */
} io_state;

static double backoff_delay(mae_publisher *p, int failures)
{
    return mae__backoff_delay(p->backoff_min_ms, p->backoff_max_ms, failures,
                              mae__rand_unit(&p->rng));
}

/* Records a problem for the counters and, rate-limited, for the log. Called
 * on the I/O thread with mu NOT held. */
void mae__io_problem(mae_publisher *p, int kind, const char *fmt, ...)
{
    char msg[sizeof p->st.last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    io_lock(p);
    memcpy(p->st.last_error, msg, sizeof msg);
    p->st.last_error_at = wall_now();
    pthread_mutex_unlock(&p->mu);

    if (!p->log)
        return;
    double now = mono_now();
    if (p->logged[kind].last != 0 && now - p->logged[kind].last < 60.0) {
        p->logged[kind].repeats++;
        return;
    }
    uint64_t repeats = p->logged[kind].repeats;
    p->logged[kind].last = now;
    p->logged[kind].repeats = 0;
    p->log(p->log_user, MAE_LOG_ERROR, msg, repeats);
}

/* A SIGPIPE raised by a write on this thread is blocked here and would stay
 * pending forever; take it off so it never lingers. */
static void drain_sigpipe(void)
{
    sigset_t set;
    struct timespec zero = {0, 0};
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    while (sigtimedwait(&set, NULL, &zero) > 0) {
    }
}

/* Sends one command and reads its reply: MAE__REPLY_*. */
static int roundtrip(mae_publisher *p, void *conn, int argc, const char **argv, char *err,
                     size_t errlen)
{
    size_t lens[3];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    if (p->ops.append(conn, argc, argv, lens) != 0) {
        snprintf(err, errlen, "out of memory");
        return MAE__REPLY_IO;
    }
    return p->ops.get_reply(conn, NULL, err, errlen);
}

/* AUTH, SELECT and a PING: a connection counts only once Redis answers, so a
 * hung server (which still accepts connections into its backlog) never gets
 * a batch that would be lost. */
static int handshake(mae_publisher *p, void *conn, char *err, size_t errlen)
{
    int rc;

    /* A hub needs no handshake: a batch it never answers stays in flight
     * and is resent, and the hub applies each event once. */
    if (p->hub)
        return MAE__REPLY_OK;

    /* The hello (core/url.h): AUTH and SELECT as the URL asks; an error
     * reply (MAE__REPLY_ERROR) refuses the connection. */
    mae__hello h;
    mae__hello_init(&h, &p->url, true);
    for (size_t i = 0; i < h.n; i++) {
        rc = roundtrip(p, conn, h.cmd[i].argc, h.cmd[i].argv, err, errlen);
        if (rc != MAE__REPLY_OK)
            return rc;
    }
    if (p->stream_key)
        return mae__send_load_script(p, conn, err, errlen);
    const char *argv[1] = {"PING"};
    return roundtrip(p, conn, 1, argv, err, errlen);
}

static void *try_connect(mae_publisher *p)
{
    char err[256] = "";
    /* redis-sentinel://: the master's address, asked before every connect. */
    mae__url target = p->url;
    char *master = NULL;
    if (p->url.nsentinels > 0 &&
        mae__sentinel_lookup(p, &master, &target.port, err, sizeof err) != 0) {
        mae__io_problem(p, LOG_CONNECT, "connect failed: %s", err);
        return NULL;
    }
    if (master)
        target.host = master;
    void *conn = p->ops.connect(p->ops.user, &target, p->connect_timeout_ms,
                                p->io_timeout_ms, err, sizeof err);
    free(master);
    if (!conn) {
        mae__io_problem(p, LOG_CONNECT, "connect failed: %s", err[0] ? err : "unknown error");
        return NULL;
    }
    io_lock(p);
    p->sock_fd = p->ops.fd(conn);
    bool give_up = p->abandon;
    pthread_mutex_unlock(&p->mu);
    int rc = give_up ? MAE__REPLY_IO : handshake(p, conn, err, sizeof err);
    if (rc == MAE__REPLY_OK && p->url.nsentinels > 0)
        rc = mae__sentinel_confirm_master(p, conn, err, sizeof err);
    if (rc != MAE__REPLY_OK) {
        io_lock(p);
        p->sock_fd = -1;
        pthread_mutex_unlock(&p->mu);
        p->ops.free(conn);
        drain_sigpipe();
        if (!give_up)
            mae__io_problem(p, LOG_CONNECT, "connect failed: %s%s",
                    rc == MAE__REPLY_ERROR ? "server refused: " : "", err);
        return NULL;
    }
    return conn;
}

static void drop_connection(mae_publisher *p, void **conn)
{
    io_lock(p);
    p->sock_fd = -1;
    p->st.connected = false;
    pthread_mutex_unlock(&p->mu);
    p->ops.free(*conn);
    *conn = NULL;
    drain_sigpipe();
}

/* Connects, with mu held (released meanwhile), unless the backoff says not
 * yet. Returns true with io->conn set. */
static bool io_connect(mae_publisher *p, io_state *io)
{
    pthread_mutex_unlock(&p->mu);
    io->conn = try_connect(p);
    io_lock(p);
    if (!io->conn) {
        io->failures++;
        p->st.connect_failures++;
        double delay = backoff_delay(p, io->failures);
        /* Through Sentinel a failed connect is usually a failover under
         * way: asking the Sentinels again soon costs them little and finds
         * the new master within SENTINEL_RETRY_MAX_S of its promotion. */
        if (p->url.nsentinels > 0 && delay > SENTINEL_RETRY_MAX_S)
            delay = SENTINEL_RETRY_MAX_S * (0.5 + 0.5 * mae__rand_unit(&p->rng));
        io->next_attempt = mono_now() + delay;
        return false;
    }
    io->failures = 0;
    io->watch_conn = true;
    p->st.connects++;
    p->st.connected = true;
    return true;
}

/* ---- waiting -------------------------------------------------------------------
 * The thread waits on its eventfd. Asleep (nothing queued), it says so in
 * `sleeping`, and the first publish call after that wakes it; it then also
 * watches an idle connection, so a Redis that goes away is noticed without
 * a timer. Lingering or backing off, it waits with a timeout and no
 * publisher wakes it (flush and close always do). */
static void io_wait(mae_publisher *p, io_state *io, double until, bool asleep)
{
    struct pollfd fds[2] = {{.fd = p->wake_fd, .events = POLLIN}};
    nfds_t n = 1;
    int cfd = asleep && io->conn && io->watch_conn ? p->ops.fd(io->conn) : -1;
    if (cfd >= 0)
        fds[n++] = (struct pollfd){.fd = cfd, .events = POLLIN};
    struct timespec ts, *tsp = NULL;
    if (until >= 0) {
        ts = to_timespec(until - mono_now());
        tsp = &ts;
    }
    p->sleeping = asleep;
    pthread_mutex_unlock(&p->mu);

    /* Every signal is blocked on this thread: ppoll is never interrupted. */
    int ready = ppoll(fds, n, tsp, NULL);
    if (ready > 0 && fds[0].revents) {
        uint64_t v;
        ssize_t r = read(p->wake_fd, &v, sizeof v);
        (void)r;
    }
    if (ready > 0 && n > 1 && fds[1].revents) {
        if (p->ops.peer_closed(io->conn)) {
            mae__io_problem(p, LOG_SEND, "connection closed by the server");
            drop_connection(p, &io->conn);
        } else {
            /* Data nobody asked for: left for the next reply read, and not
             * watched again until then, so it cannot spin this loop. */
            io->watch_conn = false;
        }
    }
    io_lock(p);
    p->sleeping = false;
}

/* ---- sending and the loop ------------------------------------------------------ */

/* A batch buffer that grew past BATCH_SHRINK_OVER for a large batch (long
 * lines, a backlog) goes back to BATCH_FLOOR once that batch is done, so
 * one burst does not pin its memory for the process's life. The floor
 * holds a full batch of ordinary lines (256 x 150 to 400 bytes, at most
 * 100 KiB), so in steady state nothing is reallocated. Called with mu
 * held, so a fork() never lands inside this realloc. */
#define BATCH_FLOOR ((size_t)128 << 10)
#define BATCH_SHRINK_OVER (4 * BATCH_FLOOR)

static void shrink_batch(mae_publisher *p)
{
    batch *b = &p->out;
    if (b->cap <= BATCH_SHRINK_OVER)
        return;
    char *nb = realloc(b->buf, BATCH_FLOOR);
    if (!nb)
        return; /* keep the larger buffer: still valid */
    b->buf = nb;
    b->cap = BATCH_FLOOR;
    b->len = 0;
}

/* Sends one batch, with mu held (released for the I/O), and counts the
 * outcome. A connection the peer closed while idle (Redis restarted) is
 * replaced first, so nothing is lost on it. */
static void io_send(mae_publisher *p, io_state *io)
{
    pthread_mutex_unlock(&p->mu);
    bool closed = p->ops.peer_closed(io->conn);
    if (closed) {
        mae__io_problem(p, LOG_SEND, "connection closed by the server");
        drop_connection(p, &io->conn);
    }
    io_lock(p);
    if (closed)
        return;
    if (p->out.pending) {
        /* Stream and hub mode: the batch a broken connection (or a busy hub)
         * left unacknowledged goes again, with the same numbers; the script
         * (the hub) skips what landed. */
        p->st.resent += p->out.n;
    } else if (!mae__ring_take_batch(p)) {
        pthread_mutex_unlock(&p->mu);
        mae__io_problem(p, LOG_SEND, "out of memory taking a batch");
        io_lock(p);
        io->next_send = mono_now() + LINGER_S;
        return;
    } else if (p->stream_key || p->hub) {
        p->out.first_seq = p->next_seq;
        p->next_seq += p->out.n;
        p->out.pending = true;
    }
    size_t n = p->out.n;
    pthread_mutex_unlock(&p->mu);

    bool broken, retry = false, busy = false;
    size_t acked;
    uint64_t skipped = 0;
    int why = -1;
    if (p->hub) {
        int sent = mae__send_hub_batch(p, io->conn, &skipped, &why);
        busy = sent == SENT_BUSY;
        broken = sent == SENT_BROKEN || busy; /* either way, resent on a new connection */
        acked = sent == SENT_OK ? n : 0;
    } else if (p->stream_key) {
        int sent = mae__stream_deliver(p, io->conn, &skipped);
        /* Not a writable master (failover): look it up again, after a
         * backoff that grows while it lasts, so a publisher does not bounce
         * between an old and a new master; too few replicas confirmed:
         * resend on this connection after the same backoff. Either way the
         * batch stays in flight. */
        retry = sent == SENT_RETRY || sent == SENT_UNCONFIRMED;
        broken = sent == SENT_BROKEN || sent == SENT_RETRY;
        acked = sent == SENT_OK ? n : 0;
        io->retries = retry ? io->retries + 1 : 0;
        if (retry)
            io->hold_until = mono_now() + backoff_delay(p, io->retries);
    } else {
        acked = mae__send_publish_batch(p, io->conn, &broken);
    }
    io->next_send = mono_now() + LINGER_S;
    io->watch_conn = true;
    if (broken)
        drop_connection(p, &io->conn);
    else if (p->hub && p->ops.peer_closed(io->conn))
        drop_connection(p, &io->conn); /* the answer closed it (Connection: close): no problem */

    io_lock(p);
    p->st.skipped += skipped;
    if (broken) {
        io->failures = 1;
        io->next_attempt = retry ? io->hold_until : 0; /* else at once: the server may be fine */
        if (p->hub) {
            /* Hub mode has no handshake to fail, so the backoff is here: the
             * first send left unanswered goes again at once (the hub may
             * have closed a kept-alive connection just then); the next ones,
             * and every "not now", wait the shared backoff. */
            if (busy || io->unanswered > 0)
                io->next_attempt = mono_now() + backoff_delay(p, io->unanswered + 1);
            io->unanswered++;
        }
    }
    if ((broken || retry) && p->out.pending)
        return; /* kept, still in flight */
    io->unanswered = 0;
    p->out.pending = false;
    p->st.in_flight -= n;
    p->st.published += acked;
    p->st.dropped_send_error += n - acked;
    if (why == REFUSED_AUTH)
        p->st.rejected_auth += n;
    else if (why == REFUSED_INVALID)
        p->st.rejected_invalid += n;
    else if (why == REFUSED_SERVER)
        p->st.rejected_server += n;
    shrink_batch(p);
    p->held_bytes = p->out.cap + (io->conn && p->ops.held ? p->ops.held(io->conn) : 0);
}

/* One turn of the I/O thread's loop, with mu held: wait, connect or send.
 * Returns false when the thread should exit. */
static bool io_step(mae_publisher *p, io_state *io)
{
    if (p->abandon)
        return false;
    bool hurry = p->stopping || p->flushers > 0;
    if (p->st.queued == 0 && !p->out.pending) {
        if (p->stopping)
            return false;
        if (p->st.in_flight == 0)
            pthread_cond_broadcast(&p->idle);
        /* Awake for a linger after a send, then asleep until woken. */
        if (mono_now() < io->next_send && !hurry)
            io_wait(p, io, io->next_send, false);
        else
            io_wait(p, io, -1, true);
        return true;
    }
    if (!io->conn) {
        if (mono_now() < io->next_attempt)
            io_wait(p, io, io->next_attempt, false);
        else
            io_connect(p, io);
        return true;
    }
    if (p->st.queued < p->batch_max && !hurry && !p->out.pending && mono_now() < io->next_send) {
        io_wait(p, io, io->next_send, false);
        return true;
    }
    if (p->out.pending && mono_now() < io->hold_until) {
        io_wait(p, io, io->hold_until, false);
        return true;
    }
    io_send(p, io);
    return true;
}

/* The I/O thread's body, started by open with the publisher as arg. */
void *mae__io_main(void *arg)
{
    mae_publisher *p = arg;
    io_state io = {.conn = NULL};

    io_lock(p);
    while (io_step(p, &io)) {
    }
    /* Leaving, with mu held. A batch still unacknowledged is given up. */
    if (p->out.pending) {
        p->out.pending = false;
        p->st.in_flight -= p->out.n;
        p->st.dropped_send_error += p->out.n;
    }
    bool detached = p->detached;
    p->exited = true;
    pthread_cond_broadcast(&p->idle);
    pthread_mutex_unlock(&p->mu);
    if (io.conn)
        drop_connection(p, &io.conn);
    if (detached)
        mae__publisher_destroy(p);
    return NULL;
}
