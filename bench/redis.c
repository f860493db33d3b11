/* This module implements the redis-server processes the harness starts,
 * hangs, resumes and stops on loopback, an INFO reader, and a counting
 * SUBSCRIBE connection on its own thread. */
#define _GNU_SOURCE /* prctl's PR_SET_PDEATHSIG, mkdtemp */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <hiredis/hiredis.h>

#include "bench.h"

/* Every server still running, so an early exit never leaves one behind. */
#define MAX_SERVERS 8
static pid_t live[MAX_SERVERS];

static void track(pid_t pid, bool add)
{
    for (int i = 0; i < MAX_SERVERS; i++) {
        if (add ? live[i] == 0 : live[i] == pid) {
            live[i] = add ? pid : 0;
            return;
        }
    }
}

void redis_kill_all(void)
{
    for (int i = 0; i < MAX_SERVERS; i++) {
        if (live[i] > 0) {
            kill(live[i], SIGKILL);
            waitpid(live[i], NULL, 0);
            live[i] = 0;
        }
    }
}

/* A port the kernel just handed out on 127.0.0.1; free again when it
 * returns (a tiny race with other programs, retried by the caller). */
static int free_port(void)
{
    struct sockaddr_in a;
    socklen_t alen = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &alen) != 0) {
        close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static bool answers_ping(int port)
{
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    bool ok = false;
    if (c && !c->err) {
        redisSetTimeout(c, tv);
        redisReply *rep = redisCommand(c, "PING");
        ok = rep && rep->type == REDIS_REPLY_STATUS;
        if (rep)
            freeReplyObject(rep);
    }
    if (c)
        redisFree(c);
    return ok;
}

static pid_t spawn(bench_redis *r)
{
    char port[16], logfile[300];
    snprintf(port, sizeof port, "%d", r->port);
    snprintf(logfile, sizeof logfile, "%s/redis.log", r->dir);
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    /* The child: dies with the harness, talks to nobody on its terminal. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) {
        dup2(devnull, STDIN_FILENO);
        dup2(devnull, STDOUT_FILENO);
        dup2(devnull, STDERR_FILENO);
    }
    /* No output-buffer limit for subscribers: the throughput run pushes a
     * million events at one, and a slow reader must lag, not be cut off. */
    if (!r->tls_dir[0])
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save",
               "", "--appendonly", "no", "--dir", r->dir, "--logfile", logfile,
               "--client-output-buffer-limit", "pubsub 0 0 0", "--daemonize", "no",
               (char *)NULL);
    /* With TLS as well (the tls part): tls_dir holds server.pem/.key, ca.pem. */
    char tport[16], cert[300], key[300], ca[300];
    snprintf(tport, sizeof tport, "%d", r->tls_port);
    snprintf(cert, sizeof cert, "%s/server.pem", r->tls_dir);
    snprintf(key, sizeof key, "%s/server.key", r->tls_dir);
    snprintf(ca, sizeof ca, "%s/ca.pem", r->tls_dir);
    execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
           "--appendonly", "no", "--dir", r->dir, "--logfile", logfile,
           "--client-output-buffer-limit", "pubsub 0 0 0", "--daemonize", "no", "--tls-port",
           tport, "--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", ca,
           "--tls-auth-clients", "no", (char *)NULL);
    _exit(127);
}

int redis_start(bench_redis *r, int port)
{
    if (r->dir[0] == 0) {
        const char *tmp = getenv("TMPDIR");
        snprintf(r->dir, sizeof r->dir, "%s/mae-bench-redis.XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(r->dir)) {
            r->dir[0] = 0;
            return -1;
        }
    }
    for (int attempt = 0; attempt < 5; attempt++) {
        r->port = port > 0 ? port : free_port();
        if (r->port <= 0)
            continue;
        if (r->tls_dir[0] && (port <= 0 || r->tls_port <= 0))
            r->tls_port = free_port();
        pid_t pid = spawn(r);
        if (pid < 0)
            return -1;
        track(pid, true);
        for (int i = 0; i < 100; i++) {
            if (answers_ping(r->port)) {
                r->pid = pid;
                r->stopped = false;
                return 0;
            }
            if (waitpid(pid, NULL, WNOHANG) == pid) {
                track(pid, false);
                pid = 0;
                break;
            }
            sleep_ms(50);
        }
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            track(pid, false);
        }
        if (port > 0)
            sleep_ms(200); /* the fixed port may still be in TIME_WAIT use */
    }
    return -1;
}

void redis_stop(bench_redis *r)
{
    if (r->pid <= 0)
        return;
    /* A stopped process keeps SIGTERM pending: resume it first. */
    kill(r->pid, SIGCONT);
    kill(r->pid, SIGTERM);
    for (int i = 0; i < 60; i++) {
        if (waitpid(r->pid, NULL, WNOHANG) == r->pid)
            goto gone;
        sleep_ms(50);
    }
    kill(r->pid, SIGKILL);
    waitpid(r->pid, NULL, 0);
gone:
    track(r->pid, false);
    r->pid = 0;
    r->stopped = false;
}

void redis_hang(bench_redis *r)
{
    if (r->pid > 0 && kill(r->pid, SIGSTOP) == 0)
        r->stopped = true;
}

void redis_unhang(bench_redis *r)
{
    if (r->pid > 0 && kill(r->pid, SIGCONT) == 0)
        r->stopped = false;
}

void redis_cleanup(bench_redis *r)
{
    redis_stop(r);
    if (r->dir[0]) {
        char path[300];
        snprintf(path, sizeof path, "%s/redis.log", r->dir);
        unlink(path);
        rmdir(r->dir);
        r->dir[0] = 0;
    }
}

int redis_info_u64(int port, const char *section, const char *field, uint64_t *out)
{
    struct timeval tv = {2, 0};
    int rc = -1;
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (!c || c->err)
        goto done;
    redisSetTimeout(c, tv);
    redisReply *rep = redisCommand(c, "INFO %s", section);
    if (rep && rep->type == REDIS_REPLY_STRING) {
        size_t flen = strlen(field);
        for (const char *s = rep->str; s && *s; s = strchr(s, '\n') ? strchr(s, '\n') + 1 : NULL) {
            if (strncmp(s, field, flen) == 0 && s[flen] == ':') {
                *out = strtoull(s + flen + 1, NULL, 10);
                rc = 0;
                break;
            }
        }
    }
    if (rep)
        freeReplyObject(rep);
done:
    if (c)
        redisFree(c);
    return rc;
}

/* ---- the counting subscriber -------------------------------------------------- */

struct bench_sub {
    redisContext *c;
    pthread_t thread;
    atomic_bool stop;
    atomic_uint_least64_t count, bytes, resp_bytes, first_ns, last_ns;
    size_t channel_len;
    atomic_int tid;
    pthread_mutex_t mu;      /* guards first[] */
    char first[4096];
    bool have_first;
};

static size_t digits(size_t v)
{
    size_t d = 1;
    while (v >= 10) {
        v /= 10;
        d++;
    }
    return d;
}

/* The bytes of "PUBLISH channel message" in RESP, as a client sends it:
 * *3, then $7 PUBLISH, then the channel and the message as bulk strings. */
static size_t resp_publish_len(size_t channel_len, size_t len)
{
    return 4 + 13 + (1 + digits(channel_len) + 2 + channel_len + 2) + (1 + digits(len) + 2 + len + 2);
}

/* Reads with poll() and hiredis' reader instead of redisGetReply, so the
 * thread can notice the stop flag without a read timeout (which would leave
 * the hiredis context in an error state). */
static void *sub_main(void *arg)
{
    bench_sub *s = arg;
    atomic_store(&s->tid, (int)bench_gettid());
    struct pollfd pfd = {s->c->fd, POLLIN, 0};
    while (!atomic_load(&s->stop)) {
        int n = poll(&pfd, 1, 50);
        if (n <= 0)
            continue;
        if (redisBufferRead(s->c) != REDIS_OK)
            break;
        void *reply = NULL;
        while (redisGetReplyFromReader(s->c, &reply) == REDIS_OK && reply) {
            redisReply *r = reply;
            if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
                r->element[0]->type == REDIS_REPLY_STRING &&
                strcmp(r->element[0]->str, "message") == 0) {
                uint64_t t = now_ns();
                if (atomic_fetch_add(&s->count, 1) == 0) {
                    atomic_store(&s->first_ns, t);
                    pthread_mutex_lock(&s->mu);
                    if (!s->have_first) {
                        size_t len = r->element[2]->len;
                        if (len >= sizeof s->first)
                            len = sizeof s->first - 1;
                        memcpy(s->first, r->element[2]->str, len);
                        s->first[len] = 0;
                        s->have_first = true;
                    }
                    pthread_mutex_unlock(&s->mu);
                }
                size_t len = r->element[2]->len;
                atomic_fetch_add(&s->bytes, len);
                atomic_fetch_add(&s->resp_bytes, resp_publish_len(s->channel_len, len));
                atomic_store(&s->last_ns, t);
            }
            freeReplyObject(r);
            reply = NULL;
        }
    }
    return NULL;
}

bench_sub *sub_open(int port, const char *channel)
{
    struct timeval tv = {2, 0};
    bench_sub *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    pthread_mutex_init(&s->mu, NULL);
    s->channel_len = strlen(channel);
    s->c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (!s->c || s->c->err)
        goto fail;
    redisSetTimeout(s->c, tv);
    redisReply *rep = redisCommand(s->c, "SUBSCRIBE %s", channel);
    bool ok = rep && rep->type == REDIS_REPLY_ARRAY;
    if (rep)
        freeReplyObject(rep);
    if (!ok)
        goto fail;
    if (pthread_create(&s->thread, NULL, sub_main, s) != 0)
        goto fail;
    while (atomic_load(&s->tid) == 0)
        sleep_ms(1);
    return s;
fail:
    if (s->c)
        redisFree(s->c);
    pthread_mutex_destroy(&s->mu);
    free(s);
    return NULL;
}

void sub_reset(bench_sub *s)
{
    pthread_mutex_lock(&s->mu);
    s->have_first = false;
    s->first[0] = 0;
    atomic_store(&s->count, 0);
    atomic_store(&s->bytes, 0);
    atomic_store(&s->resp_bytes, 0);
    atomic_store(&s->first_ns, 0);
    atomic_store(&s->last_ns, 0);
    pthread_mutex_unlock(&s->mu);
}

uint64_t sub_count(bench_sub *s) { return atomic_load(&s->count); }
uint64_t sub_bytes(bench_sub *s) { return atomic_load(&s->bytes); }
uint64_t sub_resp_bytes(bench_sub *s) { return atomic_load(&s->resp_bytes); }
uint64_t sub_first_ns(bench_sub *s) { return atomic_load(&s->first_ns); }
uint64_t sub_last_ns(bench_sub *s) { return atomic_load(&s->last_ns); }
pid_t sub_tid(bench_sub *s) { return (pid_t)atomic_load(&s->tid); }

int sub_first_message(bench_sub *s, char *buf, size_t len)
{
    int rc = -1;
    pthread_mutex_lock(&s->mu);
    if (s->have_first && len > strlen(s->first)) {
        strcpy(buf, s->first);
        rc = 0;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

uint64_t sub_wait(bench_sub *s, uint64_t n, int idle_ms, int total_ms)
{
    uint64_t start = now_ns(), last_change = start, seen = sub_count(s);
    for (;;) {
        uint64_t c = sub_count(s), t = now_ns();
        if (c >= n)
            return c;
        if (c != seen) {
            seen = c;
            last_change = t;
        }
        if (t - last_change >= (uint64_t)idle_ms * 1000000u ||
            t - start >= (uint64_t)total_ms * 1000000u)
            return c;
        sleep_ms(1);
    }
}

void sub_close(bench_sub *s)
{
    if (!s)
        return;
    atomic_store(&s->stop, true);
    pthread_join(s->thread, NULL);
    redisFree(s->c);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
