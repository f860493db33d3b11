/* Test support for the relay's integration tests (see harness.h). */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <cmocka.h>

#include "harness.h"

#ifndef MAE_CLI_PATH
#define MAE_CLI_PATH "mailagent"
#endif
#ifndef MAE_RELAY_OUT_DIR
#define MAE_RELAY_OUT_DIR "/tmp"
#endif

double rh_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void rh_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

bool rh_have(const char *path)
{
    if (path && access(path, X_OK) == 0)
        return true;
    const char *ci = getenv("CI");
    if (ci && strcmp(ci, "true") == 0)
        fail_msg("%s is missing, and CI=true: an integration test must not skip in CI "
                 "(scripts/install-deps.sh installs it)", path ? path : "(tool)");
    print_message("skipped: %s not installed\n", path ? path : "(tool)");
    return false;
}

const char *rh_out_dir(const char *name, char *buf, size_t size)
{
    mkdir(MAE_RELAY_OUT_DIR, 0755);
    snprintf(buf, size, "%s/%s", MAE_RELAY_OUT_DIR, name);
    mkdir(buf, 0755);
    return buf;
}

char *rh_slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, len = 0;
    char *s = malloc(cap);
    size_t n;
    while (s && (n = fread(s + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 2048) {
            char *t = realloc(s, cap *= 2);
            if (!t) {
                free(s);
                s = NULL;
            }
            s = t;
        }
    }
    fclose(f);
    if (s)
        s[len] = '\0';
    return s;
}

char *rh_wait_text(const char *path, const char *needle, int timeout_ms, int step_ms)
{
    char *text = NULL;
    double until = rh_now() + timeout_ms / 1000.0;
    for (;;) {
        free(text);
        text = rh_slurp(path);
        if ((text && strstr(text, needle)) || rh_now() >= until)
            return text;
        rh_sleep_ms(step_ms);
    }
}

/* ---- processes ---- */

pid_t rh_spawn(const char *const *argv, const char *const *env, const char *out_path,
               const char *err_path)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    /* The child dies with the test, even when the test crashes. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
    int out = open(out_path ? out_path : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int err = open(err_path ? err_path : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int in = open("/dev/null", O_RDONLY);
    if (out < 0 || err < 0 || in < 0)
        _exit(127);
    dup2(in, 0);
    dup2(out, 1);
    dup2(err, 2);
    for (int fd = 3; fd < 1024; fd++)
        close(fd);
    for (const char *const *e = env; e && *e; e++) {
        char kv[1024];
        snprintf(kv, sizeof kv, "%s", *e);
        char *eq = strchr(kv, '=');
        if (eq) {
            *eq = '\0';
            setenv(kv, eq + 1, 1);
        }
    }
    signal(SIGPIPE, SIG_DFL);
    execv(argv[0], (char *const *)argv);
    _exit(127);
}

int rh_wait(pid_t pid, int timeout_ms)
{
    int status;
    double until = rh_now() + timeout_ms / 1000.0;
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        if (w < 0)
            return -1;
        if (rh_now() > until) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        rh_sleep_ms(5);
    }
}

bool rh_running(pid_t pid)
{
    int status;
    return waitpid(pid, &status, WNOHANG) == 0;
}

/* ---- the relay ---- */

/* Appends the NULL-terminated list more (may be NULL) to v, which holds n
 * entries and room for RH_ARGV_MAX; returns the new count, v NULL-ended. */
#define RH_ARGV_MAX 40
static int append(const char **v, int n, const char *const *more)
{
    for (const char *const *m = more; m && *m && n < RH_ARGV_MAX - 2; m++)
        v[n++] = *m;
    v[n] = NULL;
    return n;
}

/* The command under test: MAE_RELAY_TEST_CLI runs the tests against another
 * build of it (an older relay, to see a new test fail before its fix). */
static const char *relay_cli(void)
{
    const char *cli = getenv("MAE_RELAY_TEST_CLI");
    return cli && *cli ? cli : MAE_CLI_PATH;
}

/* Starts the relay as argv with env, stderr into log_path, and waits up to
 * 10 s for its "listening on" line, reading r->port from it. 0, or -1 when
 * it exited first, gave no port or said nothing in time. */
static int relay_spawn(rh_relay *r, const char *const *argv, const char *const *env,
                       const char *log_path)
{
    static const char listening[] = "listening on http://127.0.0.1:";
    memset(r, 0, sizeof *r);
    snprintf(r->log, sizeof r->log, "%s", log_path);
    /* An earlier run's log would give an earlier run's port. */
    unlink(log_path);
    r->pid = rh_spawn(argv, env, NULL, log_path);
    if (r->pid < 0)
        return -1;
    double until = rh_now() + 10;
    while (rh_now() < until) {
        char *log = rh_slurp(log_path);
        const char *p = log ? strstr(log, listening) : NULL;
        if (p) {
            r->port = atoi(p + strlen(listening));
            free(log);
            return r->port > 0 ? 0 : -1;
        }
        free(log);
        int status;
        if (waitpid(r->pid, &status, WNOHANG) == r->pid) {
            r->pid = 0;
            return -1;
        }
        rh_sleep_ms(10);
    }
    return -1;
}

int rh_relay_start(rh_relay *r, const char *redis_url, const char *const *args,
                   const char *const *env, const char *log_path)
{
    const char *argv[RH_ARGV_MAX] = {relay_cli(), "--redis", redis_url, "events", "serve",
                                     "--listen", "127.0.0.1:0"};
    append(argv, 7, args);
    return relay_spawn(r, argv, env, log_path);
}

int rh_hub_start(rh_relay *r, const char *const *args, const char *const *env,
                 const char *log_path)
{
    const char *argv[RH_ARGV_MAX] = {relay_cli(), "events", "serve", "--listen", "127.0.0.1:0"};
    append(argv, 5, args);
    /* No Redis from the environment either: blank, the variables name none. */
    const char *envv[RH_ARGV_MAX] = {"MAILAGENT_REDIS_URL=", "REDIS_URL=", "MAILAGENT_STREAM="};
    append(envv, 3, env);
    return relay_spawn(r, argv, envv, log_path);
}

char *rh_post(int port, const char *headers, const char *body, size_t len)
{
    size_t cap = len + 1024 + (headers ? strlen(headers) : 0);
    char *req = malloc(cap);
    if (!req)
        return NULL;
    int n = snprintf(req, cap,
                     "POST /api/events/publish HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     "%sContent-Length: %zu\r\n\r\n",
                     headers ? headers : "", len);
    memcpy(req + n, body, len);
    req[(size_t)n + len] = '\0';
    rh_conn *c = rh_connect(port, 0);
    char *out = NULL;
    if (c) {
        rh_send(c, req, (size_t)n + len);
        double until = rh_now() + 10;
        while (rh_now() < until && !c->eof) {
            struct pollfd p = {c->fd, POLLIN, 0};
            poll(&p, 1, 20);
            rh_pump(c);
            const char *end = strstr(c->buf, "\r\n\r\n");
            const char *cl = strstr(c->buf, "Content-Length: ");
            if (end && cl && cl < end &&
                c->len >= (size_t)(end + 4 - c->buf) + strtoul(cl + 16, NULL, 10))
                break;
        }
        if (c->len > 0)
            out = strdup(c->buf);
        rh_close(c);
    }
    free(req);
    return out;
}

int rh_relay_stop(rh_relay *r, int sig, int timeout_ms, double *seconds)
{
    if (r->pid <= 0)
        return -1;
    double t0 = rh_now();
    kill(r->pid, sig);
    int rc = rh_wait(r->pid, timeout_ms);
    if (seconds)
        *seconds = rh_now() - t0;
    r->pid = 0;
    return rc;
}

bool rh_log_has(const rh_relay *r, const char *s)
{
    char *log = rh_slurp(r->log);
    bool has = log && strstr(log, s);
    free(log);
    return has;
}

/* ---- connections ---- */

rh_conn *rh_connect(int port, int rcvbuf)
{
    rh_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (rcvbuf > 0)
        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0) {
        if (c->fd >= 0)
            close(c->fd);
        free(c);
        return NULL;
    }
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    c->cap = 4096;
    c->buf = calloc(1, c->cap);
    if (!c->buf) {
        close(c->fd);
        free(c);
        return NULL;
    }
    return c;
}

bool rh_send(rh_conn *c, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = send(c->fd, s, n, MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            struct pollfd p = {c->fd, POLLOUT, 0};
            poll(&p, 1, 100);
            continue;
        }
        if (w <= 0)
            return false;
        s += w;
        n -= (size_t)w;
    }
    return true;
}

rh_conn *rh_get(int port, const char *path, const char *headers)
{
    rh_conn *c = rh_connect(port, 0);
    if (!c)
        return NULL;
    char req[2048];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n", path,
                     headers ? headers : "");
    rh_send(c, req, (size_t)n);
    return c;
}

void rh_pump(rh_conn *c)
{
    for (;;) {
        if (c->cap - c->len < 4096) {
            char *b = realloc(c->buf, c->cap * 2);
            if (!b)
                return;
            c->buf = b;
            c->cap *= 2;
        }
        ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len - 1, 0);
        if (n > 0) {
            c->len += (size_t)n;
            c->buf[c->len] = '\0';
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            c->eof = true;
        return;
    }
}

long rh_wait_for(rh_conn *c, size_t from, const char *needle, int timeout_ms)
{
    double until = rh_now() + timeout_ms / 1000.0;
    for (;;) {
        rh_pump(c);
        if (from <= c->len) {
            const char *p = strstr(c->buf + from, needle);
            if (p)
                return (long)(p - c->buf);
        }
        if (c->eof || rh_now() > until)
            return -1;
        struct pollfd p = {c->fd, POLLIN, 0};
        poll(&p, 1, 20);
    }
}

bool rh_wait_eof(rh_conn *c, int timeout_ms)
{
    double until = rh_now() + timeout_ms / 1000.0;
    while (!c->eof && rh_now() < until) {
        struct pollfd p = {c->fd, POLLIN, 0};
        poll(&p, 1, 20);
        rh_pump(c);
    }
    return c->eof;
}

size_t rh_count(const rh_conn *c, const char *needle)
{
    size_t n = 0, k = strlen(needle);
    for (const char *p = c->buf; (p = strstr(p, needle)) != NULL; p += k)
        n++;
    return n;
}

void rh_close(rh_conn *c)
{
    if (!c)
        return;
    close(c->fd);
    free(c->buf);
    free(c);
}

char *rh_request(int port, const char *req)
{
    rh_conn *c = rh_connect(port, 0);
    if (!c)
        return NULL;
    rh_send(c, req, strlen(req));
    double until = rh_now() + 5;
    char *out = NULL;
    while (rh_now() < until) {
        struct pollfd p = {c->fd, POLLIN, 0};
        poll(&p, 1, 20);
        rh_pump(c);
        const char *end = strstr(c->buf, "\r\n\r\n");
        const char *cl = strstr(c->buf, "Content-Length: ");
        if (end && cl && cl < end &&
            c->len >= (size_t)(end + 4 - c->buf) + strtoul(cl + 16, NULL, 10))
            break;
        if (c->eof)
            break;
    }
    if (c->len > 0 || c->eof)
        out = strdup(c->buf);
    rh_close(c);
    return out;
}

long long rh_metric(int port, const char *extra, const char *name)
{
    char req[1024], key[200];
    snprintf(req, sizeof req, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s\r\n",
             extra ? extra : "");
    char *a = rh_request(port, req);
    long long v = -1;
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = a ? strstr(a, key) : NULL;
    if (p)
        v = strtoll(p + strlen(key), NULL, 10);
    free(a);
    return v;
}

void rh_wait_clients(int port, const char *auth, long long n, int timeout_ms)
{
    long long got = -1;
    double until = rh_now() + timeout_ms / 1000.0;
    while ((got = rh_metric(port, auth, "mailagent_relay_clients")) != n && rh_now() < until)
        rh_sleep_ms(20);
    assert_int_equal(got, n);
}
