/* Test support: start, stop, hang and restart a real redis-server on a free
 * loopback port, and subscribe to a channel (see redis_harness.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "redis_harness.h"

#ifndef MAE_REDIS_SERVER
#define MAE_REDIS_SERVER "redis-server"
#endif
#ifndef MAE_TEST_TMPDIR
#define MAE_TEST_TMPDIR "/tmp"
#endif

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

bool mtr_available(void)
{
    return access(MAE_REDIS_SERVER, X_OK) == 0;
}

int mtr_reserve_port(mtr_redis *r)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        close(fd);
        return -1;
    }
    close(fd);
    r->port = ntohs(a.sin_port);
    snprintf(r->url, sizeof r->url, "redis://127.0.0.1:%d", r->port);
    if (!r->dir[0]) {
        snprintf(r->dir, sizeof r->dir, "%s/redis-XXXXXX", MAE_TEST_TMPDIR);
        mkdir(MAE_TEST_TMPDIR, 0755);
        if (!mkdtemp(r->dir))
            return -1;
    }
    return 0;
}

/* True when the server on r->port answers and is the process pid: the
 * port is free when it is reserved, but on a busy machine another test's
 * server may take it before this one binds it (this one then exits), and
 * that server must not be taken for ours (its SIGSTOP would stop nothing). */
static bool answers_ping(mtr_redis *r, pid_t pid)
{
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return false;
    }
    redisSetTimeout(c, tv);
    redisReply *rep = redisCommand(c, "INFO server");
    /* With requirepass, INFO answers NOAUTH: up, though not told whose. */
    bool ok = rep != NULL;
    if (rep && rep->type == REDIS_REPLY_STRING) {
        const char *p = strstr(rep->str, "process_id:");
        ok = p && atol(p + 11) == (long)pid;
    }
    if (rep)
        freeReplyObject(rep);
    redisFree(c);
    return ok;
}

/* Servers still running, killed at exit: a failed assertion leaves its test
 * function without reaching mtr_cleanup. */
#define MAX_LIVE 64
static pid_t live[MAX_LIVE];
static bool atexit_done;

static void kill_leftovers(void)
{
    for (int i = 0; i < MAX_LIVE; i++) {
        if (live[i] > 0) {
            kill(live[i], SIGCONT);
            kill(live[i], SIGKILL);
            waitpid(live[i], NULL, 0);
            live[i] = 0;
        }
    }
}

static void track(pid_t pid, bool add)
{
    if (!atexit_done) {
        atexit(kill_leftovers);
        atexit_done = true;
    }
    for (int i = 0; i < MAX_LIVE; i++) {
        if (add ? live[i] == 0 : live[i] == pid) {
            live[i] = add ? pid : 0;
            return;
        }
    }
}

static int spawn(mtr_redis *r)
{
    char port[16], log[300];
    snprintf(port, sizeof port, "%d", r->port);
    snprintf(log, sizeof log, "%s/redis.log", r->dir);
    char *argv[48];
    int argc = 0;
    argv[argc++] = (char *)MAE_REDIS_SERVER;
    argv[argc++] = (char *)"--port";
    argv[argc++] = port;
    argv[argc++] = (char *)"--bind";
    argv[argc++] = (char *)"127.0.0.1";
    argv[argc++] = (char *)"--save";
    argv[argc++] = (char *)"";
    argv[argc++] = (char *)"--appendonly";
    argv[argc++] = (char *)"no";
    argv[argc++] = (char *)"--dir";
    argv[argc++] = r->dir;
    argv[argc++] = (char *)"--logfile";
    argv[argc++] = log;
    char extra[sizeof r->extra];
    snprintf(extra, sizeof extra, "%s", r->extra);
    for (char *tok = strtok(extra, " "); tok && argc < 46; tok = strtok(NULL, " "))
        argv[argc++] = tok;
    argv[argc] = NULL;

    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        /* Dies with the test, even when the test crashes. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    r->pid = pid;
    track(pid, true);
    for (int i = 0; i < 250; i++) {
        if (answers_ping(r, pid))
            return 0;
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            track(pid, false);
            r->pid = 0;
            return -1;
        }
        sleep_ms(20);
    }
    mtr_kill(r);
    return -1;
}

int mtr_start(mtr_redis *r, const char *extra)
{
    memset(r, 0, sizeof *r);
    snprintf(r->extra, sizeof r->extra, "%s", extra ? extra : "");
    for (int attempt = 0; attempt < 5; attempt++) {
        if (mtr_reserve_port(r) != 0)
            return -1;
        if (spawn(r) == 0)
            return 0;
    }
    return -1;
}

int mtr_restart(mtr_redis *r)
{
    if (r->pid)
        return 0;
    for (int attempt = 0; attempt < 50; attempt++) {
        if (spawn(r) == 0)
            return 0;
        sleep_ms(50); /* the port may still be in TIME_WAIT for a moment */
    }
    return -1;
}

static void signal_and_wait(mtr_redis *r, int sig)
{
    if (!r->pid)
        return;
    kill(r->pid, SIGCONT);
    kill(r->pid, sig);
    int status;
    while (waitpid(r->pid, &status, 0) < 0 && errno == EINTR) {
    }
    track(r->pid, false);
    r->pid = 0;
}

void mtr_stop(mtr_redis *r)
{
    signal_and_wait(r, SIGTERM);
}

void mtr_kill(mtr_redis *r)
{
    signal_and_wait(r, SIGKILL);
}

void mtr_pause(mtr_redis *r)
{
    if (r->pid)
        kill(r->pid, SIGSTOP);
}

void mtr_resume(mtr_redis *r)
{
    if (r->pid)
        kill(r->pid, SIGCONT);
}

void mtr_cleanup(mtr_redis *r)
{
    mtr_kill(r);
    if (r->dir[0]) {
        char path[300];
        snprintf(path, sizeof path, "%s/redis.log", r->dir);
        unlink(path);
        snprintf(path, sizeof path, "%s/dump.rdb", r->dir);
        unlink(path);
        /* Redis 7 keeps its append-only files in a directory of their own. */
        snprintf(path, sizeof path, "%s/appendonlydir", r->dir);
        DIR *d = opendir(path);
        if (d) {
            for (struct dirent *e; (e = readdir(d));) {
                char file[600];
                if (e->d_name[0] == '.')
                    continue;
                snprintf(file, sizeof file, "%s/%s", path, e->d_name);
                unlink(file);
            }
            closedir(d);
            rmdir(path);
        }
        rmdir(r->dir);
        r->dir[0] = 0;
    }
}

int mtr_command(mtr_redis *r, const char *fmt, ...)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return -1;
    }
    redisSetTimeout(c, tv);
    if (r->password[0]) {
        redisReply *a = redisCommand(c, "AUTH %s", r->password);
        if (a)
            freeReplyObject(a);
    }
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(c, fmt, ap);
    va_end(ap);
    int rc = rep && rep->type != REDIS_REPLY_ERROR ? 0 : -1;
    if (rep)
        freeReplyObject(rep);
    redisFree(c);
    return rc;
}

/* ---- subscriber ---------------------------------------------------------- */

struct mtr_sub {
    redisContext *c;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    char **msgs;
    size_t n, cap;
};

static void *sub_main(void *arg)
{
    mtr_sub *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        bool stop = s->stop;
        pthread_mutex_unlock(&s->mu);
        if (stop)
            break;
        void *v = NULL;
        if (redisGetReply(s->c, &v) != REDIS_OK) {
            /* The 100 ms read timeout: look at stop again. */
            if (s->c->err == REDIS_ERR_IO && strstr(s->c->errstr, "temporarily unavailable")) {
                s->c->err = 0;
                s->c->errstr[0] = 0;
                continue;
            }
            break;
        }
        redisReply *r = v;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
            strcmp(r->element[0]->str, "message") == 0) {
            pthread_mutex_lock(&s->mu);
            if (s->n == s->cap) {
                s->cap = s->cap ? s->cap * 2 : 64;
                s->msgs = realloc(s->msgs, s->cap * sizeof *s->msgs);
                if (!s->msgs)
                    abort();
            }
            char *m = malloc(r->element[2]->len + 1);
            if (!m)
                abort();
            memcpy(m, r->element[2]->str, r->element[2]->len);
            m[r->element[2]->len] = 0;
            s->msgs[s->n++] = m;
            pthread_cond_broadcast(&s->cv);
            pthread_mutex_unlock(&s->mu);
        }
        freeReplyObject(r);
    }
    return NULL;
}

mtr_sub *mtr_subscribe(mtr_redis *r, const char *channel)
{
    struct timeval tv = {2, 0};
    mtr_sub *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    if (!s->c || s->c->err)
        goto fail;
    redisSetTimeout(s->c, tv);
    if (r->password[0]) {
        redisReply *a = redisCommand(s->c, "AUTH %s", r->password);
        if (a)
            freeReplyObject(a);
    }
    redisReply *rep = redisCommand(s->c, "SUBSCRIBE %s", channel);
    if (!rep)
        goto fail;
    freeReplyObject(rep);
    struct timeval poll_tv = {0, 100000};
    redisSetTimeout(s->c, poll_tv);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (pthread_create(&s->thread, NULL, sub_main, s) != 0)
        goto fail;
    return s;
fail:
    if (s->c)
        redisFree(s->c);
    free(s);
    return NULL;
}

mtr_sub *mtr_restart_gated(mtr_redis *r, const char *channel)
{
    char saved[sizeof r->extra];
    snprintf(saved, sizeof saved, "%s", r->extra);
    static const char gate[] = " --requirepass mtr-gate";
    size_t n = strlen(saved);
    if (n + sizeof gate > sizeof r->extra)
        return NULL;
    memcpy(r->extra + n, gate, sizeof gate);
    snprintf(r->password, sizeof r->password, "mtr-gate");
    int rc = mtr_restart(r);
    snprintf(r->extra, sizeof r->extra, "%s", saved);
    mtr_sub *s = rc == 0 ? mtr_subscribe(r, channel) : NULL;
    if (s && mtr_command(r, "CONFIG SET requirepass %s", "") != 0) {
        mtr_sub_close(s);
        s = NULL;
    }
    r->password[0] = 0;
    return s;
}

size_t mtr_sub_wait(mtr_sub *s, size_t n, int timeout_ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->mu);
    while (s->n < n) {
        if (pthread_cond_timedwait(&s->cv, &s->mu, &deadline) == ETIMEDOUT)
            break;
    }
    size_t got = s->n;
    pthread_mutex_unlock(&s->mu);
    return got;
}

size_t mtr_sub_count(mtr_sub *s)
{
    pthread_mutex_lock(&s->mu);
    size_t n = s->n;
    pthread_mutex_unlock(&s->mu);
    return n;
}

const char *mtr_sub_message(mtr_sub *s, size_t i)
{
    pthread_mutex_lock(&s->mu);
    const char *m = i < s->n ? s->msgs[i] : NULL;
    pthread_mutex_unlock(&s->mu);
    return m;
}

void mtr_sub_close(mtr_sub *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    redisFree(s->c);
    for (size_t i = 0; i < s->n; i++)
        free(s->msgs[i]);
    free(s->msgs);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
