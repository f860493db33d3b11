/* This header defines the publisher's private state, struct mae_publisher,
 * and what its files (publisher.c, fork.c, ring.c, io.c, send.c,
 * send_hub.c) share:
 * the clocks, the I/O thread's lock, the wake-up and the calls between
 * them; it is never installed, and nothing in it is exported. */
#ifndef MAE_PUBLISHER_IMPL_H
#define MAE_PUBLISHER_IMPL_H

#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "publisher/publisher_internal.h"

/* The arguments of EVALSHA before the events. */
#define SCRIPT_ARGS 10

/* Stream mode: how long the key that remembers a publisher's last applied
 * event number lives after its last batch, in seconds (refreshed by each
 * batch). A resend comes within a reconnect, so a week is ample; a
 * publisher that is gone leaves nothing behind for longer. */
#define APPLIED_TTL 604800

/* The kinds of problem the log callback hears about, each rate-limited. */
enum { LOG_CONNECT, LOG_SEND, LOG_KINDS };

/* The I/O thread's copy of the lines it is sending: taken out of the ring
 * in one pass, so the ring's space is free again before any I/O. */
typedef struct batch {
    char *buf;              /* the lines, back to back */
    size_t len, cap;
    size_t *off, *lens;     /* batch_max entries each */
    size_t n;
    uint64_t first_seq;     /* stream mode: the number of the first line */
    bool pending;           /* stream and hub mode: sent, not yet acknowledged */
    int server_errors;      /* hub mode: 5xx answers (but 503) to this batch so far */
} batch;

struct mae_publisher {
    /* Set at open, read-only afterwards. */
    bool disabled;
    char *channel;
    size_t channel_len;
    mae__url url;
    size_t max_events, max_bytes, batch_max;
    size_t max_line;         /* max_event_bytes: longer lines are refused */
    int connect_timeout_ms, io_timeout_ms, backoff_min_ms, backoff_max_ms;
    mae_log_fn log;
    void *log_user;
    mae__transport_ops ops;
    pthread_t thread;
    bool has_thread;
    int wake_fd;             /* eventfd: a sleeping I/O thread waits on it */
    bool hub;                /* hub mode: batches are POSTed to relay_url */
    char pub_id[33];         /* stream and hub mode: 128 random bits in hex */
    size_t batch_bytes_max;  /* hub mode: a batch's most body bytes; 0 = no bound */
    char *stream_key;        /* NULL: stream mode off */
    char *applied_key;       /* <stream_key>:publisher:<id> */
    char maxlen_text[24];
    char *ring;              /* ring_cap bytes, mapped at open */
    size_t ring_cap;
    size_t resident;         /* ring bytes made resident at open */

    /* Everything below is guarded by mu. */
    pthread_mutex_t mu;
    pthread_cond_t idle;     /* flush and close wait here */
    size_t ring_head;        /* where the next line's length goes */
    size_t ring_tail;        /* the oldest queued line (moved by the I/O thread) */
    size_t ring_used;        /* bytes from tail to head, lengths included */
    mae__buf scratch;        /* the line being built (publish.c, under mu) */
    bool sleeping;           /* the I/O thread waits on wake_fd: wake it */
    bool stopping;           /* close asked: send what is queued, then exit */
    bool abandon;            /* close gave up: exit now, drop the rest */
    bool exited;
    bool detached;           /* close returned first: the thread frees p */
    bool forked;             /* this is a fork()ed child's copy */
    int flushers;            /* threads waiting in flush: send without lingering */
    int sock_fd;             /* the live connection's socket, or -1 */
    mae_publisher_stats st;
    size_t held_bytes;       /* kept for sending after the last batch (tests) */

    mae_publisher *reg_next; /* the registry of live publishers (fork) */

    /* I/O thread only. */
    uint64_t rng;
    struct { double last; uint64_t repeats; } logged[LOG_KINDS];
    batch out;
    uint64_t next_seq;       /* stream and hub mode: the next event's number */
    char sha[48];            /* stream mode: the script's SHA1 on this connection */
    const char **argv;       /* stream mode: SCRIPT_ARGS + batch_max each */
    size_t *argl;

    /* Failover (issue 21; resend.c, sentinel.c). Set at open: */
    int wait_replicas, wait_timeout_ms; /* 0: no WAIT */
    double window_s;         /* the resend window's bounds */
    size_t window_max;
    /* I/O thread only: */
    struct mae__window *win; /* acknowledged lines kept for a resend */
    uint64_t replay_from;    /* resend the window from here first; 0 = nothing to */
    bool concede;            /* the next batch may leave a gap: its predecessors are lost */
    double last_ack;         /* mono_now() of the last acknowledged batch; 0 = none */
};

/* ---- time ----------------------------------------------------------------- */

static inline double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline struct timespec to_timespec(double t)
{
    struct timespec ts;
    if (t < 0)
        t = 0;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* ---- locking and waking ---------------------------------------------------- */

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    __asm__ __volatile__("" ::: "memory");
#endif
}

/* How the I/O thread takes the mutex: it spins (yielding the CPU now and
 * then) rather than sleep in the kernel, so a publishing thread that
 * unlocks never finds a sleeper to wake: no system call on the caller's
 * path because of the I/O thread. The publishing threads hold the mutex
 * for the copy of one line, a fraction of a microsecond. */
static inline void io_lock(mae_publisher *p)
{
    for (unsigned spins = 0; pthread_mutex_trylock(&p->mu) != 0; spins++) {
        if (spins % 64 == 63)
            sched_yield();
        else
            cpu_relax();
    }
}

/* The one system call a publish call can make: waking a sleeping thread. */
static inline void wake(mae_publisher *p)
{
    uint64_t one = 1;
    ssize_t n = write(p->wake_fd, &one, sizeof one);
    (void)n; /* EAGAIN only when the counter is full, and then it is awake anyway */
}

/* ---- between the files ------------------------------------------------------
 * Each is described where it is defined. None is on a publish call's path:
 * that stays within ring.c. */

/* publisher.c */
void mae__publisher_destroy(mae_publisher *p);

/* fork.c: the handlers (installed once; 0 or pthread_atfork's error) and
 * the registry of live publishers they lock and mark. */
int mae__fork_handlers_install(void);
void mae__fork_registry_add(mae_publisher *p);
void mae__fork_registry_remove(mae_publisher *p);

/* ring.c */
int mae__ring_reserve(mae_publisher *p);
bool mae__ring_take_batch(mae_publisher *p);

/* io.c */
void *mae__io_main(void *arg);
void mae__io_problem(mae_publisher *p, int kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* send.c. How a stream-mode or hub batch went: applied (OK); refused for
 * good (an error reply); the connection broke (BROKEN); the script answered
 * that Redis lacks the events before it (GAP); the server is not (or no
 * longer) a writable master with its replicas (RETRY: NOREPLICAS,
 * READONLY, LOADING, MASTERDOWN: look the master up again, back off,
 * resend); WAIT confirmed it on fewer replicas than asked (UNCONFIRMED:
 * resend later); or the hub said "not now" (BUSY: the batch waits for a
 * resend after a backoff). */
enum { SENT_OK, SENT_REFUSED, SENT_BROKEN, SENT_GAP, SENT_RETRY, SENT_UNCONFIRMED, SENT_BUSY };
/* Why the hub refused a batch: the counter it goes to (rejected_*). */
enum { REFUSED_AUTH, REFUSED_INVALID, REFUSED_SERVER };
typedef struct stream_result {
    uint64_t skipped;        /* OK: events an earlier send had applied */
    uint64_t gap_last;       /* GAP: the last number Redis holds (0: none) */
    bool gap_key;            /* GAP: the publisher's key exists */
} stream_result;
int mae__send_load_script(mae_publisher *p, void *conn, char *err, size_t errlen);
size_t mae__send_publish_batch(mae_publisher *p, void *conn, bool *broken);
int mae__send_stream_lines(mae_publisher *p, void *conn, uint64_t first_seq, size_t n,
                           const char *const *lines, const size_t *lens, bool concede,
                           stream_result *res);
/* True for the error replies of a server that is not a writable master
 * with enough replicas, also inside a script's error text. */
bool mae__failover_error(const char *err);
/* send_hub.c: one batch to the hub. */
int mae__send_hub_batch(mae_publisher *p, void *conn, uint64_t *skipped, int *why);

/* resend.c: the resend window and a stream batch's delivery through it
 * (SENT_* above, never SENT_GAP or SENT_BUSY). Not used in hub mode. */
int mae__resend_init(mae_publisher *p, const mae_publisher_config *cfg, char *err, size_t errlen);
void mae__resend_free(mae_publisher *p);
int mae__stream_deliver(mae_publisher *p, void *conn, uint64_t *skipped);

/* sentinel.c: the master's address from the first Sentinel that knows it
 * (that one is asked first next time); 0 with *host malloc'd, or -1 with
 * the reason in err. And ROLE on a connection: MAE__REPLY_OK when master. */
int mae__sentinel_lookup(mae_publisher *p, char **host, int *port, char *err, size_t errlen);
int mae__sentinel_confirm_master(mae_publisher *p, void *conn, char *err, size_t errlen);

#endif
