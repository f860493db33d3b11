/* This module implements the publisher's queue and its I/O thread: the
 * caller's thread copies each built line into a ring reserved and touched at
 * open; one background thread per publisher sleeps until there is work,
 * connects, pipelines PUBLISH batches, reads the replies with a timeout and
 * reconnects with backoff and jitter. In stream mode each batch is one call
 * of a server-side script that appends to the stream and publishes each
 * event exactly once, however often the batch is resent. */
#define _GNU_SOURCE /* ppoll, MADV_POPULATE_WRITE, MADV_DONTFORK, adaptive mutexes */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/backoff.h"
#include "publisher/publisher_internal.h"

#define DEFAULT_CHANNEL MAE_DEFAULT_CHANNEL

/* Under a steady trickle of events a batch is gathered for this long after
 * the previous one was sent (unless it is full, or flush or close is
 * waiting): sending each event as it comes costs a round trip and a Redis
 * wake-up per few events, CPU the caller's own work competes for. The I/O
 * thread stays awake for this long after a send, so the rest of a burst
 * never has to wake it; an event after an idle spell goes out at once. */
#define LINGER_S 0.001

/* Each line in the ring is preceded by its length. */
#define HDR sizeof(uint32_t)

/* The line builder's buffer starts this large (a typical line is 150 to
 * 400 bytes); it is given back to this size after an unusually long line. */
#define SCRATCH_CAP 4096
#define SCRATCH_KEEP (64u << 10)

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
 * others are appended and published. A script runs atomically, so a batch
 * is applied whole or not at all. Returns {applied, skipped}. */
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

/* The arguments of EVALSHA before the events. */
#define SCRIPT_ARGS 9

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
    bool pending;           /* stream mode: sent, not yet acknowledged */
} batch;

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
    int wake_fd;             /* eventfd: a sleeping I/O thread waits on it */
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

    mae_publisher *reg_next; /* the registry of live publishers (fork) */

    /* I/O thread only. */
    uint64_t rng;
    struct { double last; uint64_t repeats; } logged[LOG_KINDS];
    batch out;
    uint64_t next_seq;       /* stream mode: the next event's number */
    char sha[48];            /* stream mode: the script's SHA1 on this connection */
    const char **argv;       /* stream mode: SCRIPT_ARGS + batch_max each */
    size_t *argl;
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

static struct timespec to_timespec(double t)
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

/* Waits on cv (a CLOCK_MONOTONIC condition) until the absolute time t. */
static void wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, double t)
{
    struct timespec ts = to_timespec(t);
    pthread_cond_timedwait(cv, mu, &ts);
}

/* The text of the few errors thread creation reports: strerror is not
 * thread-safe, and this file never calls it. */
static const char *errno_text(int e)
{
    switch (e) {
    case EAGAIN: return "out of threads or memory (EAGAIN)";
    case EINVAL: return "invalid thread attributes (EINVAL)";
    case EPERM: return "not permitted (EPERM)";
    case ENOMEM: return "out of memory (ENOMEM)";
    case EMFILE: return "too many open files (EMFILE)";
    case ENFILE: return "too many open files in the system (ENFILE)";
    default: return "system error";
    }
}

/* ---- fork safety -----------------------------------------------------------
 * Every publisher is in a registry. Before fork() the registry and each
 * publisher's mutex are taken, so the child inherits consistent queues and
 * unlocked mutexes; the child marks its copies forked, and from then on its
 * calls are counted as dropped_disabled and nothing talks to the parent's
 * connection (the I/O thread does not exist in the child). This relies on
 * glibc letting the child of a threaded process unlock, in its atfork
 * handler, mutexes the parent's forking thread held (publisher.h). */
static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static mae_publisher *registry;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static int atfork_rc;

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
    atfork_rc = pthread_atfork(before_fork, after_fork_parent, after_fork_child);
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

static void batch_free(batch *b)
{
    free(b->buf);
    free(b->off);
    free(b->lens);
    memset(b, 0, sizeof *b);
}

/* Frees a publisher in any state of construction; the thread is gone. */
static void destroy(mae_publisher *p)
{
    /* A fork()ed child never had the ring (MADV_DONTFORK), and the address
     * range may hold the child's own memory by now: it is not unmapped. */
    if (p->ring && !p->forked)
        munmap(p->ring, p->ring_cap);
    if (p->wake_fd >= 0)
        close(p->wake_fd);
    mae__buf_free(&p->scratch);
    batch_free(&p->out);
    free(p->argv);
    free(p->argl);
    free(p->stream_key);
    free(p->applied_key);
    free(p->channel);
    mae__url_free(&p->url);
    if (p->ops.release)
        p->ops.release(p->ops.user);
    /* In a fork()ed child the condition variable may still count a thread
     * of the parent as a waiter, and glibc's pthread_cond_destroy waits for
     * waiters that will never come: a child only frees the memory. */
    if (!p->forked) {
        pthread_cond_destroy(&p->idle);
        pthread_mutex_destroy(&p->mu);
    }
    free(p);
}

static void *io_main(void *arg);

/* The mutex spins briefly before sleeping: every critical section is a
 * few dozen nanoseconds, so a publishing thread that meets the I/O thread
 * in it waits without a system call. */
static int init_sync(mae_publisher *p)
{
    pthread_mutexattr_t ma;
    pthread_condattr_t ca;
    int rc = -1;
    if (pthread_mutexattr_init(&ma) != 0)
        return -1;
#ifdef __GLIBC__
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif
    if (pthread_mutex_init(&p->mu, &ma) != 0)
        goto out_mattr;
    if (pthread_condattr_init(&ca) != 0)
        goto fail_mutex;
    /* flush and close measure their deadlines on the monotonic clock; a
     * condition on the wall clock would make them wrong when it jumps. */
    if (pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 ||
        pthread_cond_init(&p->idle, &ca) != 0) {
        pthread_condattr_destroy(&ca);
        goto fail_mutex;
    }
    pthread_condattr_destroy(&ca);
    rc = 0;
    goto out_mattr;
fail_mutex:
    pthread_mutex_destroy(&p->mu);
out_mattr:
    pthread_mutexattr_destroy(&ma);
    return rc;
}

/* How much of the ring is made resident: room for a full queue of lines of
 * up to this many bytes (this system's lines are 150 to 400 bytes), or the
 * whole ring when that is smaller. With the default bounds that is 16 MiB
 * of the 64 MiB: the byte bound only binds for lines averaging over 1 KiB,
 * and resident memory nobody writes would be waste. A backlog past it (a
 * long outage with large lines) takes its page faults on the caller's
 * thread once; the pages stay resident afterwards. */
#define RESIDENT_PER_EVENT 256

/* Makes n bytes of the ring from off resident (written, as far as the
 * kernel is concerned, without changing them). False when the kernel
 * cannot (before Linux 5.14). */
static bool populate(mae_publisher *p, size_t off, size_t n)
{
    return madvise(p->ring + off, n, MADV_POPULATE_WRITE) == 0;
}

/* Maps the ring (a fork()ed child does not inherit it) and makes its
 * resident part resident; reserves the line builder's buffer and the I/O
 * thread's batch. Returns MAE_OK, MAE_EINVAL (bounds too large) or
 * MAE_ENOMEM. */
static int init_storage(mae_publisher *p)
{
    if (p->max_events > (SIZE_MAX - p->max_bytes) / HDR)
        return MAE_EINVAL;
    p->ring_cap = p->max_bytes + p->max_events * HDR;
    void *m = mmap(NULL, p->ring_cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return MAE_ENOMEM;
    p->ring = m;
    madvise(m, p->ring_cap, MADV_DONTFORK);
    p->resident = p->max_events < p->ring_cap / RESIDENT_PER_EVENT
                      ? p->max_events * RESIDENT_PER_EVENT
                      : p->ring_cap;
    /* At open, on the caller's thread (about 4 ms for 16 MiB): left to the
     * I/O thread, a caller publishing at once into a Redis that is down
     * outran it on a busy machine and took the page faults itself. */
    if (!populate(p, 0, p->resident))
        memset(p->ring, 0, p->resident); /* no other thread yet */
    if (!mae__buf_reserve(&p->scratch, SCRATCH_CAP))
        return MAE_ENOMEM;
    memset(p->scratch.ptr, 0, p->scratch.cap);
    p->out.off = malloc(p->batch_max * sizeof *p->out.off);
    p->out.lens = malloc(p->batch_max * sizeof *p->out.lens);
    if (!p->out.off || !p->out.lens)
        return MAE_ENOMEM;
    if (p->stream_key) {
        p->argv = malloc((SCRIPT_ARGS + p->batch_max) * sizeof *p->argv);
        p->argl = malloc((SCRIPT_ARGS + p->batch_max) * sizeof *p->argl);
        if (!p->argv || !p->argl)
            return MAE_ENOMEM;
    }
    return MAE_OK;
}

/* A publisher's identity in stream mode: 128 random bits in hex, so two
 * publishers (or one reopened) never share the record of applied numbers. */
static void make_id(mae_publisher *p, char hex[33])
{
    unsigned char raw[16];
    if (getrandom(raw, sizeof raw, GRND_NONBLOCK) != (ssize_t)sizeof raw) {
        for (size_t i = 0; i < sizeof raw; i++) /* entropy not ready yet: time, pid, address */
            raw[i] = (unsigned char)(mae__rand_unit(&p->rng) * 256.0);
    }
    for (size_t i = 0; i < sizeof raw; i++) {
        hex[2 * i] = "0123456789abcdef"[raw[i] >> 4];
        hex[2 * i + 1] = "0123456789abcdef"[raw[i] & 15];
    }
    hex[32] = '\0';
}

/* Copies the stream settings and names this publisher's applied key. */
static int init_stream(mae_publisher *p, const mae_publisher_config *cfg)
{
    char id[33];
    size_t klen = strlen(cfg->stream_key);
    make_id(p, id);
    p->stream_key = malloc(klen + 1);
    p->applied_key = malloc(klen + sizeof ":publisher:" + 32);
    if (!p->stream_key || !p->applied_key)
        return MAE_ENOMEM;
    memcpy(p->stream_key, cfg->stream_key, klen + 1);
    snprintf(p->applied_key, klen + sizeof ":publisher:" + 32, "%s:publisher:%s", cfg->stream_key,
             id);
    snprintf(p->maxlen_text, sizeof p->maxlen_text, "%zu",
             cfg->stream_maxlen ? cfg->stream_maxlen : (size_t)100000);
    p->next_seq = 1;
    return MAE_OK;
}

/* Refuses a configuration open cannot work with: MAE_OK, or MAE_EINVAL with
 * the reason in err. */
static int check_config(const mae_publisher_config *cfg, char *err, size_t errlen)
{
    const char *why = NULL;
    if (cfg->channel && !cfg->channel[0])
        why = "channel must not be empty";
    else if (cfg->queue_max_events == 0 || cfg->queue_max_bytes == 0)
        why = "queue bounds must be positive";
    else if (cfg->connect_timeout_ms <= 0 || cfg->io_timeout_ms <= 0)
        why = "connect and I/O timeouts must be positive";
    else if (cfg->backoff_min_ms < 0 || cfg->backoff_max_ms < cfg->backoff_min_ms)
        why = "backoff must satisfy 0 <= min <= max";
    if (!why)
        return MAE_OK;
    snprintf(err, errlen, "%s", why);
    return MAE_EINVAL;
}

/* Copies cfg's settings into p: the URL (parsed), the channel, the bounds,
 * timeouts and log, the stream settings. MAE_OK, or an error with the
 * reason in err. */
static int copy_settings(mae_publisher *p, const mae_publisher_config *cfg, char *err,
                         size_t errlen)
{
    p->disabled = !cfg->redis_url || !cfg->redis_url[0];
    if (!p->disabled) {
        int rc = mae__url_parse(cfg->redis_url, &p->url, err, errlen);
        if (rc != MAE_OK) {
            if (rc == MAE_ENOMEM)
                snprintf(err, errlen, "out of memory");
            return rc;
        }
    }
    const char *channel = cfg->channel ? cfg->channel : DEFAULT_CHANNEL;
    p->channel_len = strlen(channel);
    p->channel = malloc(p->channel_len + 1);
    if (!p->channel) {
        snprintf(err, errlen, "out of memory");
        return MAE_ENOMEM;
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
    if (cfg->stream_key && cfg->stream_key[0] && init_stream(p, cfg) != MAE_OK) {
        snprintf(err, errlen, "out of memory");
        return MAE_ENOMEM;
    }
    return MAE_OK;
}

/* Reserves the queue, creates the wake-up eventfd and starts the I/O
 * thread. MAE_OK, or an error with the reason in err. */
static int start_io(mae_publisher *p, char *err, size_t errlen)
{
    int rc = init_storage(p);
    if (rc != MAE_OK) {
        snprintf(err, errlen, "%s", rc == MAE_EINVAL ? "queue bounds are too large"
                                                     : "cannot reserve the queue's memory");
        return rc;
    }
    p->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (p->wake_fd < 0) {
        snprintf(err, errlen, "cannot create the wake-up eventfd: %s", errno_text(errno));
        return MAE_ENOMEM;
    }
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
        snprintf(err, errlen, "cannot start the I/O thread: %s", errno_text(rc));
        return MAE_ENOMEM;
    }
    p->has_thread = true;
    return MAE_OK;
}

int mae__publisher_open_with(const mae_publisher_config *cfg, const mae__transport_ops *ops,
                             mae_publisher **out)
{
    char err[160] = "";
    int rc;

    if (!cfg || !out || !ops)
        return open_fail(cfg, MAE_EINVAL, "publisher config and out pointer are required");
    if (check_config(cfg, err, sizeof err) != MAE_OK)
        return open_fail(cfg, MAE_EINVAL, "%s", err);
    pthread_once(&atfork_once, install_atfork);
    if (atfork_rc != 0)
        return open_fail(cfg, MAE_ENOMEM, "cannot register the fork handlers: %s",
                         errno_text(atfork_rc));

    mae_publisher *p = calloc(1, sizeof *p);
    if (!p)
        return open_fail(cfg, MAE_ENOMEM, "out of memory");
    p->ops = *ops;
    p->ops.release = NULL; /* the caller keeps the transport's user when open fails */
    p->sock_fd = -1;
    p->wake_fd = -1;
    if (init_sync(p) != 0) {
        free(p);
        return open_fail(cfg, MAE_ENOMEM, "cannot create the publisher's mutex");
    }
    /* From here on destroy() undoes whatever was built. */
    rc = copy_settings(p, cfg, err, sizeof err);
    if (rc == MAE_OK && !p->disabled)
        rc = start_io(p, err, sizeof err);
    if (rc != MAE_OK) {
        destroy(p);
        return open_fail(cfg, rc, "%s", err);
    }
    p->ops.release = ops->release;
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

/* ---- the ring --------------------------------------------------------------
 * A byte FIFO of lines, each after its 4-byte length; a line may wrap
 * around the end. Its capacity, queue_max_bytes plus a length for each of
 * queue_max_events lines, holds every queue the bounds allow, so the
 * bounds alone decide what is dropped. Producers write at head under mu;
 * the I/O thread reads from tail without mu (the bytes between tail and
 * head are not written until it gives them back under mu). */

static size_t ring_put(mae_publisher *p, size_t at, const void *src, size_t n)
{
    size_t first = p->ring_cap - at < n ? p->ring_cap - at : n;
    memcpy(p->ring + at, src, first);
    memcpy(p->ring, (const char *)src + first, n - first);
    at += n;
    return at >= p->ring_cap ? at - p->ring_cap : at;
}

static size_t ring_get(const mae_publisher *p, size_t at, void *dst, size_t n)
{
    size_t first = p->ring_cap - at < n ? p->ring_cap - at : n;
    memcpy(dst, p->ring + at, first);
    memcpy((char *)dst + first, p->ring, n - first);
    at += n;
    return at >= p->ring_cap ? at - p->ring_cap : at;
}

/* Counts one call and queues line, or counts why not. With mu held.
 * Returns true when the I/O thread sleeps and must be woken. */
static bool push_locked(mae_publisher *p, const char *line, size_t len)
{
    p->st.calls++;
    if (p->st.queued + 1 > p->max_events || len > p->max_bytes - p->st.queued_bytes ||
        len > UINT32_MAX) {
        p->st.dropped_queue_full++;
        return false;
    }
    if (p->ring_used == 0)
        p->ring_head = p->ring_tail = 0; /* an empty ring starts over: its first pages stay hot */
    uint32_t n32 = (uint32_t)len;
    p->ring_head = ring_put(p, p->ring_head, &n32, HDR);
    p->ring_head = ring_put(p, p->ring_head, line, len);
    p->ring_used += HDR + len;
    p->st.queued++;
    p->st.queued_bytes += len;
    p->st.enqueued++;
    if (!p->sleeping)
        return false;
    p->sleeping = false; /* the first event after an idle spell wakes it; the rest need not */
    return true;
}

/* The one system call a publish call can make: waking a sleeping thread. */
static void wake(mae_publisher *p)
{
    uint64_t one = 1;
    ssize_t n = write(p->wake_fd, &one, sizeof one);
    (void)n; /* EAGAIN only when the counter is full, and then it is awake anyway */
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
    bool w = false;
    if (!p) {
        mae__buf_free(b);
        return;
    }
    pthread_mutex_lock(&p->mu);
    if (p->disabled || p->forked) {
        p->st.calls++;
        p->st.dropped_disabled++;
    } else if (!b || b->oom || !b->ptr) {
        /* The line could not be built: out of memory. */
        p->st.calls++;
        p->st.dropped_invalid++;
    } else {
        w = push_locked(p, b->ptr, b->len);
    }
    pthread_mutex_unlock(&p->mu);
    if (b)
        mae__buf_free(b);
    if (w)
        wake(p);
}

mae__buf *mae__publisher_line_begin(mae_publisher *p)
{
    pthread_mutex_lock(&p->mu);
    p->scratch.len = 0;
    p->scratch.oom = false;
    return &p->scratch;
}

void mae__publisher_line_end(mae_publisher *p, bool built)
{
    mae__buf *b = &p->scratch;
    bool w = false;
    if (!built || b->oom) {
        p->st.calls++;
        p->st.dropped_invalid++;
    } else {
        w = push_locked(p, b->ptr, b->len);
    }
    if (b->cap > SCRATCH_KEEP) {
        /* An unusually long line (a large data object) grew the buffer:
         * give the memory back rather than keep it for every later call. */
        mae__buf_free(b);
        if (mae__buf_reserve(b, SCRATCH_CAP))
            memset(b->ptr, 0, b->cap);
    }
    pthread_mutex_unlock(&p->mu);
    if (w)
        wake(p);
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

/* ---- the I/O thread: problems and the connection ------------------------------ */

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
static void io_lock(mae_publisher *p)
{
    for (unsigned spins = 0; pthread_mutex_trylock(&p->mu) != 0; spins++) {
        if (spins % 64 == 63)
            sched_yield();
        else
            cpu_relax();
    }
}

/* What the I/O thread keeps between its steps. */
typedef struct io_state {
    void *conn;
    int failures;            /* connect failures in a row */
    double next_attempt;     /* no connect before this (backoff) */
    double next_send;        /* no batch before this unless it is full (linger) */
    bool watch_conn;         /* an idle wait also watches the connection */
} io_state;

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

/* Loads the batch script (stream mode) and keeps its SHA1 for EVALSHA: on
 * each new connection, and again when Redis answers NOSCRIPT (its script
 * cache was flushed). Doubles as the handshake's PING. */
static int load_script(mae_publisher *p, void *conn, char *err, size_t errlen)
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
    if (p->stream_key)
        return load_script(p, conn, err, errlen);
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
    io_lock(p);
    p->sock_fd = p->ops.fd(conn);
    bool give_up = p->abandon;
    pthread_mutex_unlock(&p->mu);
    int rc = give_up ? MAE__REPLY_IO : handshake(p, conn, err, sizeof err);
    if (rc != MAE__REPLY_OK) {
        io_lock(p);
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
        io->next_attempt = mono_now() + backoff_delay(p, io->failures);
        return false;
    }
    io->failures = 0;
    io->watch_conn = true;
    p->st.connects++;
    p->st.connected = true;
    return true;
}

/* ---- the I/O thread: waiting ---------------------------------------------------
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
            problem(p, LOG_SEND, "connection closed by the server");
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

/* ---- the I/O thread: sending ---------------------------------------------------- */

/* Copies up to batch_max queued lines out of the ring into p->out, and gives
 * their ring space back. With mu held (released for the copy). Returns
 * false when out of memory (nothing taken). */
static bool take_batch(mae_publisher *p)
{
    batch *b = &p->out;
    size_t n = p->st.queued < p->batch_max ? p->st.queued : p->batch_max;
    size_t at = p->ring_tail, bytes = 0;
    pthread_mutex_unlock(&p->mu);

    b->len = 0;
    b->n = 0;
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        uint32_t len;
        at = ring_get(p, at, &len, HDR);
        if (b->len + len > b->cap) {
            size_t cap = b->cap ? b->cap : 16384;
            while (cap < b->len + len)
                cap *= 2;
            char *nb = realloc(b->buf, cap);
            if (!nb) {
                ok = false;
                break;
            }
            b->buf = nb;
            b->cap = cap;
        }
        at = ring_get(p, at, b->buf + b->len, len);
        b->off[i] = b->len;
        b->lens[i] = len;
        b->len += len;
        bytes += len;
        b->n++;
    }

    io_lock(p);
    if (!ok) {
        b->n = 0;
        return false;
    }
    p->ring_tail = at;
    p->ring_used -= bytes + n * HDR;
    p->st.queued -= n;
    p->st.queued_bytes -= bytes;
    p->st.in_flight += n;
    return true;
}

/* Pipelines p->out: every PUBLISH is appended, then the replies are read
 * in order. Returns how many were acknowledged; *broken is set when the
 * connection failed (the rest of the batch is lost, not resent, since Redis
 * may already have delivered some of it: the stream is at-most-once). */
static size_t send_batch(mae_publisher *p, void *conn, bool *broken)
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
            problem(p, LOG_SEND, "PUBLISH refused: %s", err);
        } else {
            *broken = true;
            problem(p, LOG_SEND, "connection lost: %s", err[0] ? err : "I/O error");
            break;
        }
    }
    if (appended < b->n && !*broken) {
        /* The output buffer could not grow: the connection's state is
         * unknown, so it is dropped like a broken one. */
        *broken = true;
        problem(p, LOG_SEND, "out of memory building a batch");
    }
    return acked;
}

/* How a stream-mode batch went. */
enum { SENT_OK, SENT_REFUSED, SENT_BROKEN };

static void number_text(char *buf, size_t len, uint64_t v)
{
    snprintf(buf, len, "%llu", (unsigned long long)v);
}

/* Sends p->out as one EVALSHA of the batch script and reads its reply:
 * SENT_OK with *skipped (events an earlier send had applied), SENT_REFUSED
 * (an error reply: the batch cannot be applied), or SENT_BROKEN (the
 * connection failed; the batch stays for a resend). NOSCRIPT reloads the
 * script and sends once more. */
static int send_stream_batch(mae_publisher *p, void *conn, uint64_t *skipped)
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
            problem(p, LOG_SEND, "out of memory building a batch");
            return SENT_BROKEN;
        }
        int rc = p->ops.get_reply(conn, &r, err, sizeof err);
        if (rc == MAE__REPLY_OK) {
            *skipped = r.nints == 2 && r.ints[1] > 0 ? (uint64_t)r.ints[1] : 0;
            return SENT_OK;
        }
        if (rc == MAE__REPLY_IO) {
            problem(p, LOG_SEND, "connection lost: %s", err[0] ? err : "I/O error");
            return SENT_BROKEN;
        }
        if (strncmp(err, "NOSCRIPT", 8) != 0 || attempt > 0) {
            problem(p, LOG_SEND, "stream batch refused: %s", err);
            return SENT_REFUSED;
        }
        rc = load_script(p, conn, err, sizeof err);
        if (rc != MAE__REPLY_OK) {
            problem(p, LOG_SEND, "cannot reload the batch script: %s", err);
            return rc == MAE__REPLY_IO ? SENT_BROKEN : SENT_REFUSED;
        }
    }
    return SENT_REFUSED;
}

/* Sends one batch, with mu held (released for the I/O), and counts the
 * outcome. A connection the peer closed while idle (Redis restarted) is
 * replaced first, so nothing is lost on it. */
static void io_send(mae_publisher *p, io_state *io)
{
    pthread_mutex_unlock(&p->mu);
    bool closed = p->ops.peer_closed(io->conn);
    if (closed) {
        problem(p, LOG_SEND, "connection closed by the server");
        drop_connection(p, &io->conn);
    }
    io_lock(p);
    if (closed)
        return;
    if (p->out.pending) {
        /* Stream mode: the batch a broken connection left unacknowledged
         * goes again, with the same numbers; the script skips what landed. */
        p->st.resent += p->out.n;
    } else if (!take_batch(p)) {
        pthread_mutex_unlock(&p->mu);
        problem(p, LOG_SEND, "out of memory taking a batch");
        io_lock(p);
        io->next_send = mono_now() + LINGER_S;
        return;
    } else if (p->stream_key) {
        p->out.first_seq = p->next_seq;
        p->next_seq += p->out.n;
        p->out.pending = true;
    }
    size_t n = p->out.n;
    pthread_mutex_unlock(&p->mu);

    bool broken;
    size_t acked;
    uint64_t skipped = 0;
    if (p->stream_key) {
        int sent = send_stream_batch(p, io->conn, &skipped);
        broken = sent == SENT_BROKEN;
        acked = sent == SENT_OK ? n : 0;
    } else {
        acked = send_batch(p, io->conn, &broken);
    }
    io->next_send = mono_now() + LINGER_S;
    io->watch_conn = true;
    if (broken)
        drop_connection(p, &io->conn);

    io_lock(p);
    if (broken) {
        io->failures = 1;
        io->next_attempt = 0; /* reconnect at once: the server may be fine */
        if (p->out.pending)
            return; /* kept, still in flight */
    }
    p->out.pending = false;
    p->st.in_flight -= n;
    p->st.published += acked;
    p->st.skipped += skipped;
    p->st.dropped_send_error += n - acked;
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
    io_send(p, io);
    return true;
}

static void *io_main(void *arg)
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
    wake(p); /* flush is off the hot path: no need to wait for a linger */
    while ((p->st.queued || p->st.in_flight) && !p->exited) {
        if (mono_now() >= deadline) {
            rc = MAE_ETIMEDOUT;
            break;
        }
        wait_until(&p->idle, &p->mu, deadline);
    }
    if (p->st.queued || p->st.in_flight)
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
        int rc = (p->has_thread && p->st.queued) ? MAE_ETIMEDOUT : MAE_OK;
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
    wake(p);
    while (!p->exited && mono_now() < soft)
        wait_until(&p->idle, &p->mu, soft);
    int rc = (p->st.queued || p->st.in_flight) ? MAE_ETIMEDOUT : MAE_OK;
    if (!p->exited) {
        /* Give up on what is left. A thread blocked writing to or reading
         * from a hung server is woken by shutting its socket down; the fd is
         * only closed by that thread, after it has cleared sock_fd under mu. */
        p->abandon = true;
        rc = MAE_ETIMEDOUT;
        if (p->sock_fd >= 0)
            shutdown(p->sock_fd, SHUT_RDWR);
        wake(p);
        while (!p->exited && mono_now() < hard)
            wait_until(&p->idle, &p->mu, hard);
    }
    if (!p->exited) {
        /* Still inside a blocking call we cannot interrupt (name resolution
         * in hiredis' connect): let the thread free everything on its way
         * out. Detach before unlocking: once mu is released the thread may
         * see detached, free p and exit, and p->thread would be read from
         * freed memory. */
        p->detached = true;
        pthread_detach(p->thread);
        pthread_mutex_unlock(&p->mu);
        return MAE_ETIMEDOUT;
    }
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    destroy(p);
    return rc;
}
