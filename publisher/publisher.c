/* This file implements the publisher's life: its configuration, open,
 * the counters, flush and close. */
#define _GNU_SOURCE /* adaptive mutexes */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>

#include "core/backoff.h"
#include "publisher/publisher_impl.h"

#define DEFAULT_CHANNEL MAE_DEFAULT_CHANNEL

/* Waits on cv (a CLOCK_MONOTONIC condition) until the absolute time t. */
static void wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, double t)
{
    struct timespec ts = to_timespec(t);
    pthread_cond_timedwait(cv, mu, &ts);
}

/* The text of the few errors thread creation reports: strerror is not
 * thread-safe, and the publisher never calls it. */
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
    cfg->max_event_bytes = MAE_DEFAULT_MAX_EVENT_BYTES;
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
void mae__publisher_destroy(mae_publisher *p)
{
    /* A fork()ed child never had the ring (MADV_DONTFORK), and the address
     * range may hold the child's own memory by now: it is not unmapped. */
    if (p->ring && !p->forked)
        munmap(p->ring, p->ring_cap);
    if (p->wake_fd >= 0)
        close(p->wake_fd);
    mae__buf_free(&p->scratch);
    /* The batch is the I/O thread's, grown without the lock: a fork() that
     * lands inside that realloc leaves the child a pointer already freed.
     * A child leaves it alone (its copy of the memory, nothing more). */
    if (!p->forked)
        batch_free(&p->out);
    free(p->argv);
    free(p->argl);
    free(p->stream_key);
    free(p->applied_key);
    mae__resend_free(p);
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
    p->applied_key = malloc(klen + sizeof "{}:publisher:" + 32);
    if (!p->stream_key || !p->applied_key)
        return MAE_ENOMEM;
    memcpy(p->stream_key, cfg->stream_key, klen + 1);
    /* Hash-tagged so a Redis Cluster keeps it in the stream's slot: a key
     * with a tag of its own keeps it (ours then starts with the same tag);
     * one with a stray '}' cannot be tagged and keeps the old name. */
    const char *open_brace = strchr(cfg->stream_key, '{');
    const char *close_brace = open_brace ? strchr(open_brace + 1, '}') : NULL;
    bool own_tag = close_brace && close_brace > open_brace + 1;
    bool plain = own_tag || strchr(cfg->stream_key, '}');
    snprintf(p->applied_key, klen + sizeof "{}:publisher:" + 32,
             plain ? "%s:publisher:%s" : "{%s}:publisher:%s", cfg->stream_key, id);
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
    else if (cfg->redis_url && cfg->redis_url[0] && cfg->relay_url && cfg->relay_url[0])
        why = "redis_url and relay_url are both set; set one: redis_url publishes to Redis, "
              "relay_url posts to a relay running as the hub";
    else if (!(cfg->redis_url && cfg->redis_url[0]) && cfg->relay_url && cfg->relay_url[0] &&
             (cfg->wait_replicas || cfg->wait_timeout_ms || cfg->resend_window_ms ||
              cfg->resend_window_bytes))
        why = "wait_replicas, wait_timeout_ms, resend_window_ms and resend_window_bytes are for "
              "stream mode on Redis; hub mode (relay_url) has no WAIT and no resend window";
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
    bool redis = cfg->redis_url && cfg->redis_url[0];
    p->hub = !redis && cfg->relay_url && cfg->relay_url[0];
    p->disabled = !redis && !p->hub;
    if (p->hub) {
        int rc = mae__hub_url_parse(cfg->relay_url, cfg->relay_token, &p->url, err, errlen);
        if (rc != MAE_OK)
            return rc;
    } else if (!p->disabled) {
        int rc = mae__url_parse_for(cfg->redis_url, MAE__URL_ALLOW_TLS | MAE__URL_ALLOW_SENTINEL,
                                    &p->url, err, errlen);
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
    p->max_line = cfg->max_event_bytes ? cfg->max_event_bytes : MAE_DEFAULT_MAX_EVENT_BYTES;
    /* A batch never holds more than the queue: this also keeps the batch's
     * arrays (batch_max entries each) from a size that overflows. */
    if (p->batch_max > p->max_events)
        p->batch_max = p->max_events;
    p->connect_timeout_ms = cfg->connect_timeout_ms;
    p->io_timeout_ms = cfg->io_timeout_ms;
    p->backoff_min_ms = cfg->backoff_min_ms;
    p->backoff_max_ms = cfg->backoff_max_ms;
    p->log = cfg->log;
    p->log_user = cfg->log_user;
    p->rng = mae__rand_seed(p);
    if (p->hub) {
        make_id(p, p->pub_id);
        p->next_seq = 1;
        p->batch_bytes_max = MAE__HUB_BATCH_BYTES;
    }
    /* The hub applies each event once and gives it an id itself: there is
     * no Redis Stream to write, so stream_key is not used in hub mode. */
    if (!p->hub && cfg->stream_key && cfg->stream_key[0] && init_stream(p, cfg) != MAE_OK) {
        snprintf(err, errlen, "out of memory");
        return MAE_ENOMEM;
    }
    return p->disabled ? MAE_OK : mae__resend_init(p, cfg, err, errlen);
}

/* Reserves the queue, creates the wake-up eventfd and starts the I/O
 * thread. MAE_OK, or an error with the reason in err. */
static int start_io(mae_publisher *p, char *err, size_t errlen)
{
    int rc = mae__ring_reserve(p);
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
    rc = pthread_create(&p->thread, NULL, mae__io_main, p);
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
    int atfork_rc = mae__fork_handlers_install();
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
    /* From here on mae__publisher_destroy() undoes whatever was built. */
    rc = copy_settings(p, cfg, err, sizeof err);
    if (rc == MAE_OK && !p->disabled)
        rc = start_io(p, err, sizeof err);
    if (rc != MAE_OK) {
        mae__publisher_destroy(p);
        return open_fail(cfg, rc, "%s", err);
    }
    p->ops.release = ops->release;
    mae__fork_registry_add(p);
    *out = p;
    return MAE_OK;
}

int mae_publisher_open(const mae_publisher_config *cfg, mae_publisher **out)
{
    bool hub = cfg && !(cfg->redis_url && cfg->redis_url[0]) && cfg->relay_url &&
               cfg->relay_url[0];
    if (hub)
        return mae__publisher_open_with(cfg, &mae__http_transport, out);
    /* The transport follows the URL's scheme: rediss:// is TLS. */
    if (cfg && mae__url_is_tls(cfg->redis_url))
        return mae__publisher_open_tls(cfg, out);
    return mae__publisher_open_with(cfg, &mae__hiredis_transport, out);
}

void *mae__publisher_transport_user(mae_publisher *p)
{
    return p ? p->ops.user : NULL;
}

size_t mae__publisher_max_line(const mae_publisher *p)
{
    return p ? p->max_line : MAE_DEFAULT_MAX_EVENT_BYTES;
}

size_t mae__publisher_held_bytes(mae_publisher *p)
{
    if (!p)
        return 0;
    pthread_mutex_lock(&p->mu);
    size_t n = p->held_bytes;
    pthread_mutex_unlock(&p->mu);
    return n;
}

/* ---- the size handshake (docs/api.md, "ABI") ------------------------------------ */

size_t mae_publisher_config_size(void)
{
    return sizeof(mae_publisher_config);
}

size_t mae_publisher_stats_size(void)
{
    return sizeof(mae_publisher_stats);
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
    mae__fork_registry_remove(p);
    if (!p->has_thread || p->forked) {
        /* No thread here (disabled, or a child of fork whose I/O thread
         * stayed in the parent): the parent's connection, if any, is left
         * alone; only this process's memory is freed. */
        int rc = (p->has_thread && p->st.queued) ? MAE_ETIMEDOUT : MAE_OK;
        if (p->forked)
            p->ops.release = NULL;
        mae__publisher_destroy(p);
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
    /* MAE_ETIMEDOUT only when events are abandoned: an idle thread that
     * had no time to leave (close(p, 0)) loses nothing. */
    int rc = (p->st.queued || p->st.in_flight) ? MAE_ETIMEDOUT : MAE_OK;
    if (!p->exited) {
        /* Give up on what is left. A thread blocked writing to or reading
         * from a hung server is woken by shutting its socket down; the fd is
         * only closed by that thread, after it has cleared sock_fd under mu. */
        p->abandon = true;
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
        return rc;
    }
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    mae__publisher_destroy(p);
    return rc;
}
