/* This module implements the publisher's queue and its I/O thread: the
 * caller's thread only appends a built line to a bounded in-memory queue;
 * one background thread per publisher connects, pipelines PUBLISH batches,
 * reads the replies with a timeout and reconnects with backoff and jitter. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/backoff.h"
#include "publisher/publisher_internal.h"

#define DEFAULT_CHANNEL MAE_DEFAULT_CHANNEL

typedef struct qnode {
    struct qnode *next;
    size_t len;
    char *line;
} qnode;

/* How the idle I/O thread looks for work: it polls the queue with a timed
 * wait that starts short after activity and doubles up to the maximum, so a
 * publishing thread never has to wake it (no system call on the caller's
 * path), events go out within a few milliseconds under load and in batches,
 * and an idle publisher costs a few dozen wake-ups a second. */
#define IDLE_POLL_MIN_S 0.0005
#define IDLE_POLL_MAX_S 0.02

/* Under a steady trickle of events a batch is gathered for this long
 * before it is sent (unless it is full, or flush or close is waiting):
 * sending each event as it comes costs a round trip and a Redis wake-up
 * per few events, CPU the caller's own work competes for. */
#define LINGER_S 0.001

/* The kinds of problem the log callback hears about, each rate-limited. */
enum { LOG_CONNECT, LOG_SEND, LOG_KINDS };

struct mae_publisher {
    /* Set at open, read-only afterwards. */
    bool disabled;
    char *channel;
    size_t channel_len;
    mae__url url;
    size_t max_events, max_bytes, batch_max;
    int connect_timeout_ms, io_timeout_ms, backoff_min_ms, backoff_max_ms;
    mae_log_fn log;
    void *log_user;
    mae__transport_ops ops;
    pthread_t thread;
    bool has_thread;

    /* Everything below is guarded by mu. */
    pthread_mutex_t mu;
    pthread_cond_t wake;     /* the I/O thread waits here for work or stop */
    pthread_cond_t idle;     /* flush and close wait here */
    qnode *head, *tail;
    bool stopping;           /* close asked: send what is queued, then exit */
    bool abandon;            /* close gave up: exit now, drop the rest */
    bool exited;
    bool detached;           /* close returned first: the thread frees p */
    bool forked;             /* this is a fork()ed child's copy */
    int flushers;            /* threads waiting in flush: send without lingering */
    int sock_fd;             /* the live connection's socket, or -1 */
    mae_publisher_stats st;

    mae_publisher *reg_next; /* the registry of live publishers (fork) */

    /* I/O thread only. */
    uint64_t rng;
    struct { double last; uint64_t repeats; } logged[LOG_KINDS];
};

/* ---- time ----------------------------------------------------------------- */

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct timespec mono_abs(double t)
{
    struct timespec ts;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* Waits on cv (a CLOCK_MONOTONIC condition) until the absolute time t. */
static void wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, double t)
{
    struct timespec ts = mono_abs(t);
    pthread_cond_timedwait(cv, mu, &ts);
}

/* ---- fork safety -----------------------------------------------------------
 * Every publisher is in a registry. Before fork() the registry and each
 * publisher's mutex are taken, so the child inherits consistent queues and
 * unlocked mutexes; the child marks its copies forked, and from then on its
 * calls are counted as dropped_disabled and nothing talks to the parent's
 * connection (the I/O thread does not exist in the child). */
static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static mae_publisher *registry;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void before_fork(void)
{
    pthread_mutex_lock(&registry_mu);
    for (mae_publisher *p = registry; p; p = p->reg_next)
        pthread_mutex_lock(&p->mu);
}

static void after_fork_parent(void)
{
    for (mae_publisher *p = registry; p; p = p->reg_next)
        pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&registry_mu);
}

static void after_fork_child(void)
{
    for (mae_publisher *p = registry; p; p = p->reg_next) {
        p->forked = true;
        pthread_mutex_unlock(&p->mu);
    }
    pthread_mutex_unlock(&registry_mu);
}

static void install_atfork(void)
{
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

static void registry_add(mae_publisher *p)
{
    pthread_mutex_lock(&registry_mu);
    p->reg_next = registry;
    registry = p;
    pthread_mutex_unlock(&registry_mu);
}

static void registry_remove(mae_publisher *p)
{
    pthread_mutex_lock(&registry_mu);
    for (mae_publisher **pp = &registry; *pp; pp = &(*pp)->reg_next) {
        if (*pp == p) {
            *pp = p->reg_next;
            break;
        }
    }
    pthread_mutex_unlock(&registry_mu);
}

/* ---- configuration ---------------------------------------------------------- */

void mae_publisher_config_init(mae_publisher_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->channel = DEFAULT_CHANNEL;
    cfg->queue_max_events = 65536;
    cfg->queue_max_bytes = 64u << 20;
    cfg->connect_timeout_ms = 1000;
    cfg->io_timeout_ms = 1000;
    cfg->stream_maxlen = 100000;
    cfg->backoff_min_ms = 100;
    cfg->backoff_max_ms = 5000;
    cfg->batch_max_events = 256;
}

static int open_fail(const mae_publisher_config *cfg, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int open_fail(const mae_publisher_config *cfg, int code, const char *fmt, ...)
{
    if (cfg && cfg->error_buf && cfg->error_buf_size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(cfg->error_buf, cfg->error_buf_size, fmt, ap);
        va_end(ap);
    }
    return code;
}

static void free_queue(qnode *n)
{
    while (n) {
        qnode *next = n->next;
        free(n->line);
        free(n);
        n = next;
    }
}

/* Frees a publisher in any state of construction; the thread is gone. */
static void destroy(mae_publisher *p)
{
    free_queue(p->head);
    free(p->channel);
    mae__url_free(&p->url);
    if (p->ops.release)
        p->ops.release(p->ops.user);
    /* In a fork()ed child the condition variables still count the parent's
     * I/O thread as a waiter, and glibc's pthread_cond_destroy waits for
     * waiters that will never come: a child only frees the memory. */
    if (!p->forked) {
        pthread_cond_destroy(&p->wake);
        pthread_cond_destroy(&p->idle);
        pthread_mutex_destroy(&p->mu);
    }
    free(p);
}

static void *io_main(void *arg);

static int init_sync(mae_publisher *p)
{
    pthread_condattr_t ca;
    if (pthread_mutex_init(&p->mu, NULL) != 0)
        return -1;
    if (pthread_condattr_init(&ca) != 0)
        goto fail_mutex;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (pthread_cond_init(&p->wake, &ca) != 0)
        goto fail_attr;
    if (pthread_cond_init(&p->idle, &ca) != 0)
        goto fail_wake;
    pthread_condattr_destroy(&ca);
    return 0;
fail_wake:
    pthread_cond_destroy(&p->wake);
fail_attr:
    pthread_condattr_destroy(&ca);
fail_mutex:
    pthread_mutex_destroy(&p->mu);
    return -1;
}

int mae__publisher_open_with(const mae_publisher_config *cfg, const mae__transport_ops *ops,
                             mae_publisher **out)
{
    char err[160] = "";
    int rc;

    if (!cfg || !out || !ops)
        return open_fail(cfg, MAE_EINVAL, "publisher config and out pointer are required");
    if (cfg->channel && !cfg->channel[0])
        return open_fail(cfg, MAE_EINVAL, "channel must not be empty");
    if (cfg->queue_max_events == 0 || cfg->queue_max_bytes == 0)
        return open_fail(cfg, MAE_EINVAL, "queue bounds must be positive");
    if (cfg->connect_timeout_ms <= 0 || cfg->io_timeout_ms <= 0)
        return open_fail(cfg, MAE_EINVAL, "connect and I/O timeouts must be positive");
    if (cfg->backoff_min_ms < 0 || cfg->backoff_max_ms < cfg->backoff_min_ms)
        return open_fail(cfg, MAE_EINVAL, "backoff must satisfy 0 <= min <= max");
    if (cfg->stream_key && cfg->stream_key[0])
        return open_fail(cfg, MAE_EINVAL, "stream mode is not available in this version");

    pthread_once(&atfork_once, install_atfork);

    mae_publisher *p = calloc(1, sizeof *p);
    if (!p)
        return open_fail(cfg, MAE_ENOMEM, "out of memory");
    p->ops = *ops;
    p->sock_fd = -1;
    if (init_sync(p) != 0) {
        free(p);
        return open_fail(cfg, MAE_ENOMEM, "cannot create the publisher's mutex");
    }
    p->disabled = !cfg->redis_url || !cfg->redis_url[0];
    if (!p->disabled) {
        rc = mae__url_parse(cfg->redis_url, &p->url, err, sizeof err);
        if (rc != MAE_OK) {
            p->ops.release = NULL; /* the caller keeps user when open fails */
            destroy(p);
            return open_fail(cfg, rc, "%s", rc == MAE_ENOMEM ? "out of memory" : err);
        }
    }
    const char *channel = cfg->channel ? cfg->channel : DEFAULT_CHANNEL;
    p->channel_len = strlen(channel);
    p->channel = malloc(p->channel_len + 1);
    if (!p->channel) {
        p->ops.release = NULL;
        destroy(p);
        return open_fail(cfg, MAE_ENOMEM, "out of memory");
    }
    memcpy(p->channel, channel, p->channel_len + 1);
    p->max_events = cfg->queue_max_events;
    p->max_bytes = cfg->queue_max_bytes;
    p->batch_max = cfg->batch_max_events ? cfg->batch_max_events : 256;
    p->connect_timeout_ms = cfg->connect_timeout_ms;
    p->io_timeout_ms = cfg->io_timeout_ms;
    p->backoff_min_ms = cfg->backoff_min_ms;
    p->backoff_max_ms = cfg->backoff_max_ms;
    p->log = cfg->log;
    p->log_user = cfg->log_user;
    p->rng = (uint64_t)(uintptr_t)p ^ (uint64_t)(wall_now() * 1e6) ^ ((uint64_t)getpid() << 32);
    if (p->rng == 0)
        p->rng = 0x9e3779b97f4a7c15ull;

    if (!p->disabled) {
        /* The I/O thread starts with every signal blocked: SIGPIPE from a
         * hiredis write stays pending on that thread instead of reaching the
         * process, and the application's handlers never run on our thread.
         * The process-wide disposition is not touched. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        rc = pthread_create(&p->thread, NULL, io_main, p);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (rc != 0) {
            p->ops.release = NULL;
            destroy(p);
            return open_fail(cfg, MAE_ENOMEM, "cannot start the I/O thread: %s", strerror(rc));
        }
        p->has_thread = true;
    }
    registry_add(p);
    *out = p;
    return MAE_OK;
}

int mae_publisher_open(const mae_publisher_config *cfg, mae_publisher **out)
{
    return mae__publisher_open_with(cfg, &mae__hiredis_transport, out);
}

void *mae__publisher_transport_user(mae_publisher *p)
{
    return p ? p->ops.user : NULL;
}

/* ---- the caller's side: counting and queueing ------------------------------ */

bool mae__publisher_live(const mae_publisher *p)
{
    /* forked is read without the lock: it only ever turns true, in a child
     * that then has a single thread, so a stale false in the parent is the
     * truth and in the child it is set before any code of the child runs. */
    return p && !p->disabled && !p->forked;
}

void mae__publisher_drop_invalid(mae_publisher *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->st.calls++;
    if (p->disabled || p->forked)
        p->st.dropped_disabled++;
    else
        p->st.dropped_invalid++;
    pthread_mutex_unlock(&p->mu);
}

void mae__publisher_enqueue(mae_publisher *p, mae__buf *b)
{
    size_t len = 0;
    char *line = NULL;
    qnode *n = NULL;

    if (!p) {
        mae__buf_free(b);
        return;
    }
    /* Allocate before taking the lock, so the lock is held for pointer
     * updates only. */
    if (!p->disabled && !p->forked && b && !b->oom && b->ptr) {
        n = malloc(sizeof *n);
        if (n) {
            size_t cap = b->cap;
            line = mae__buf_take(b, &len);
            /* The builder reserves generously; a queued line keeps only its
             * own bytes, so queue_max_bytes bounds the memory really held.
             * Shrinking in place is cheap in glibc. */
            if (line && cap > len + 1 + 32) {
                char *fit = realloc(line, len + 1);
                if (fit)
                    line = fit;
            }
        }
    }
    if (b)
        mae__buf_free(b);

    pthread_mutex_lock(&p->mu);
    p->st.calls++;
    if (p->disabled || p->forked) {
        p->st.dropped_disabled++;
    } else if (!n || !line) {
        /* The line could not be built or held: out of memory. */
        p->st.dropped_invalid++;
    } else if (p->st.queued + 1 > p->max_events || p->st.queued_bytes + len > p->max_bytes) {
        p->st.dropped_queue_full++;
    } else {
        n->next = NULL;
        n->len = len;
        n->line = line;
        if (p->tail)
            p->tail->next = n;
        else
            p->head = n;
        p->tail = n;
        p->st.queued++;
        p->st.queued_bytes += len;
        p->st.enqueued++;
        line = NULL;
        n = NULL;
        /* No wake-up here: signalling a sleeping thread is a system call on
         * the caller's path. The I/O thread polls instead (see IDLE_POLL). */
    }
    pthread_mutex_unlock(&p->mu);
    free(line);
    free(n);
}

/* ---- counters --------------------------------------------------------------- */

void mae_publisher_stats_get(const mae_publisher *cp, mae_publisher_stats *out)
{
    if (!out)
        return;
    if (!cp) {
        memset(out, 0, sizeof *out);
        return;
    }
    /* The mutex is the only mutable part of a const publisher. */
    mae_publisher *p = (mae_publisher *)cp;
    pthread_mutex_lock(&p->mu);
    *out = p->st;
    pthread_mutex_unlock(&p->mu);
}

/* ---- the I/O thread ---------------------------------------------------------- */

static double backoff_delay(mae_publisher *p, int failures)
{
    return mae__backoff_delay(p->backoff_min_ms, p->backoff_max_ms, failures,
                              mae__rand_unit(&p->rng));
}

/* Records a problem for the counters and, rate-limited, for the log. Called
 * on the I/O thread with mu NOT held. */
static void problem(mae_publisher *p, int kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void problem(mae_publisher *p, int kind, const char *fmt, ...)
{
    char msg[sizeof p->st.last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    pthread_mutex_lock(&p->mu);
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
    return p->ops.get_reply(conn, err, errlen);
}

/* AUTH, SELECT and a PING: a connection counts only once Redis answers, so a
 * hung server (which still accepts connections into its backlog) never gets
 * a batch that would be lost. */
static int handshake(mae_publisher *p, void *conn, char *err, size_t errlen)
{
    const mae__url *u = &p->url;
    char dbtext[16];
    int rc;

    if (u->password) {
        const char *argv[3] = {"AUTH", u->user ? u->user : u->password, u->password};
        rc = roundtrip(p, conn, u->user ? 3 : 2, argv, err, errlen);
        if (rc != MAE__REPLY_OK)
            return rc;
    }
    if (u->db != 0) {
        snprintf(dbtext, sizeof dbtext, "%d", u->db);
        const char *argv[2] = {"SELECT", dbtext};
        rc = roundtrip(p, conn, 2, argv, err, errlen);
        if (rc != MAE__REPLY_OK)
            return rc;
    }
    const char *argv[1] = {"PING"};
    return roundtrip(p, conn, 1, argv, err, errlen);
}

static void *try_connect(mae_publisher *p)
{
    char err[128] = "";
    void *conn = p->ops.connect(p->ops.user, &p->url, p->connect_timeout_ms,
                                p->io_timeout_ms, err, sizeof err);
    if (!conn) {
        problem(p, LOG_CONNECT, "connect failed: %s", err[0] ? err : "unknown error");
        return NULL;
    }
    pthread_mutex_lock(&p->mu);
    p->sock_fd = p->ops.fd(conn);
    bool give_up = p->abandon;
    pthread_mutex_unlock(&p->mu);
    int rc = give_up ? MAE__REPLY_IO : handshake(p, conn, err, sizeof err);
    if (rc != MAE__REPLY_OK) {
        pthread_mutex_lock(&p->mu);
        p->sock_fd = -1;
        pthread_mutex_unlock(&p->mu);
        p->ops.free(conn);
        drain_sigpipe();
        if (!give_up)
            problem(p, LOG_CONNECT, "connect failed: %s%s",
                    rc == MAE__REPLY_ERROR ? "server refused: " : "", err);
        return NULL;
    }
    return conn;
}

static void drop_connection(mae_publisher *p, void **conn)
{
    pthread_mutex_lock(&p->mu);
    p->sock_fd = -1;
    p->st.connected = false;
    pthread_mutex_unlock(&p->mu);
    p->ops.free(*conn);
    *conn = NULL;
    drain_sigpipe();
}

/* Pipelines one batch: every PUBLISH is appended, then the replies are read
 * in order. Returns how many were acknowledged; *broken is set when the
 * connection failed (the rest of the batch is lost, not resent, since Redis
 * may already have delivered some of it: the stream is at-most-once). */
static size_t send_batch(mae_publisher *p, void *conn, qnode *batch, size_t n, size_t *errors,
                         bool *broken)
{
    char err[128] = "";
    size_t acked = 0, appended = 0;
    const char *argv[3] = {"PUBLISH", p->channel, NULL};
    size_t lens[3] = {7, p->channel_len, 0};

    *errors = 0;
    *broken = false;
    for (qnode *q = batch; q; q = q->next) {
        argv[2] = q->line;
        lens[2] = q->len;
        if (p->ops.append(conn, 3, argv, lens) != 0)
            break;
        appended++;
    }
    for (size_t i = 0; i < appended; i++) {
        int rc = p->ops.get_reply(conn, err, sizeof err);
        if (rc == MAE__REPLY_OK) {
            acked++;
        } else if (rc == MAE__REPLY_ERROR) {
            (*errors)++;
            problem(p, LOG_SEND, "PUBLISH refused: %s", err);
        } else {
            *broken = true;
            problem(p, LOG_SEND, "connection lost: %s", err[0] ? err : "I/O error");
            break;
        }
    }
    if (appended < n && !*broken) {
        /* The output buffer could not grow: the connection's state is
         * unknown, so it is dropped like a broken one. */
        *broken = true;
        problem(p, LOG_SEND, "out of memory building a batch");
    }
    return acked;
}

static void *io_main(void *arg)
{
    mae_publisher *p = arg;
    void *conn = NULL;
    int failures = 0;
    double next_attempt = 0;
    double idle_poll = IDLE_POLL_MIN_S;
    double next_send = 0;

    pthread_mutex_lock(&p->mu);
    for (;;) {
        if (p->abandon)
            break;
        if (!p->head) {
            if (p->stopping)
                break;
            wait_until(&p->wake, &p->mu, mono_now() + idle_poll);
            if (idle_poll < IDLE_POLL_MAX_S)
                idle_poll *= 2;
            continue;
        }
        idle_poll = IDLE_POLL_MIN_S;
        if (!conn) {
            double now = mono_now();
            if (now < next_attempt) {
                wait_until(&p->wake, &p->mu, next_attempt);
                continue;
            }
            pthread_mutex_unlock(&p->mu);
            conn = try_connect(p);
            pthread_mutex_lock(&p->mu);
            if (!conn) {
                failures++;
                p->st.connect_failures++;
                next_attempt = mono_now() + backoff_delay(p, failures);
                continue;
            }
            failures = 0;
            p->st.connects++;
            p->st.connected = true;
            continue;
        }

        if (p->st.queued < p->batch_max && !p->stopping && p->flushers == 0) {
            double now = mono_now();
            if (now < next_send) {
                wait_until(&p->wake, &p->mu, next_send);
                continue;
            }
        }

        /* A connection the peer closed while idle (Redis restarted) is
         * replaced before a batch goes out on it, so nothing is lost. */
        pthread_mutex_unlock(&p->mu);
        bool closed = p->ops.peer_closed(conn);
        if (closed) {
            problem(p, LOG_SEND, "connection closed by the server");
            drop_connection(p, &conn);
        }
        pthread_mutex_lock(&p->mu);
        if (closed)
            continue;

        qnode *batch = p->head, *last = p->head;
        size_t n = 1, bytes = batch->len;
        while (n < p->batch_max && last->next) {
            last = last->next;
            bytes += last->len;
            n++;
        }
        p->head = last->next;
        if (!p->head)
            p->tail = NULL;
        last->next = NULL;
        p->st.queued -= n;
        p->st.queued_bytes -= bytes;
        p->st.in_flight += n;
        pthread_mutex_unlock(&p->mu);

        size_t errors;
        bool broken;
        size_t acked = send_batch(p, conn, batch, n, &errors, &broken);
        next_send = mono_now() + LINGER_S;
        free_queue(batch);
        if (broken)
            drop_connection(p, &conn);

        pthread_mutex_lock(&p->mu);
        p->st.in_flight -= n;
        p->st.published += acked;
        p->st.dropped_send_error += n - acked;
        if (broken) {
            failures = 1;
            next_attempt = 0; /* reconnect at once: the server may be fine */
        }
        if (!p->head && p->st.in_flight == 0)
            pthread_cond_broadcast(&p->idle);
    }

    /* Leaving: with mu held. */
    bool detached = p->detached;
    p->exited = true;
    pthread_cond_broadcast(&p->idle);
    pthread_mutex_unlock(&p->mu);
    if (conn)
        drop_connection(p, &conn);
    if (detached)
        destroy(p);
    return NULL;
}

/* ---- flush and close ---------------------------------------------------------- */

int mae_publisher_flush(mae_publisher *p, int timeout_ms)
{
    if (!mae__publisher_live(p))
        return MAE_OK;
    double deadline = mono_now() + (timeout_ms < 0 ? 1e9 : timeout_ms / 1000.0);
    int rc = MAE_OK;
    pthread_mutex_lock(&p->mu);
    p->flushers++;
    pthread_cond_signal(&p->wake); /* flush is off the hot path: no need to wait for a poll */
    while ((p->head || p->st.in_flight) && !p->exited) {
        if (mono_now() >= deadline) {
            rc = MAE_ETIMEDOUT;
            break;
        }
        wait_until(&p->idle, &p->mu, deadline);
    }
    if (p->head || p->st.in_flight)
        rc = MAE_ETIMEDOUT;
    p->flushers--;
    pthread_mutex_unlock(&p->mu);
    return rc;
}

int mae_publisher_close(mae_publisher *p, int timeout_ms)
{
    if (!p)
        return MAE_OK;
    registry_remove(p);
    if (!p->has_thread || p->forked) {
        /* No thread here (disabled, or a child of fork whose I/O thread
         * stayed in the parent): the parent's connection, if any, is left
         * alone; only this process's memory is freed. */
        int rc = (p->has_thread && p->head) ? MAE_ETIMEDOUT : MAE_OK;
        if (p->forked)
            p->ops.release = NULL;
        destroy(p);
        return rc;
    }

    double start = mono_now();
    double budget = timeout_ms < 0 ? 1e9 : timeout_ms / 1000.0;
    /* Keep a slice of the budget for unblocking a stuck thread. */
    double margin = budget > 0.1 ? 0.01 : budget / 10;
    double soft = start + budget - margin, hard = start + budget;

    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_signal(&p->wake);
    while (!p->exited && mono_now() < soft)
        wait_until(&p->idle, &p->mu, soft);
    int rc = (p->head || p->st.in_flight) ? MAE_ETIMEDOUT : MAE_OK;
    if (!p->exited) {
        /* Give up on what is left. A thread blocked writing to or reading
         * from a hung server is woken by shutting its socket down; the fd is
         * only closed by that thread, after it has cleared sock_fd under mu. */
        p->abandon = true;
        rc = MAE_ETIMEDOUT;
        if (p->sock_fd >= 0)
            shutdown(p->sock_fd, SHUT_RDWR);
        pthread_cond_signal(&p->wake);
        while (!p->exited && mono_now() < hard)
            wait_until(&p->idle, &p->mu, hard);
    }
    if (!p->exited) {
        /* Still inside a blocking call we cannot interrupt (name resolution
         * in hiredis' connect): let the thread free everything on its way out. */
        p->detached = true;
        pthread_mutex_unlock(&p->mu);
        pthread_detach(p->thread);
        return MAE_ETIMEDOUT;
    }
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    destroy(p);
    return rc;
}
