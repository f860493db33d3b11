/* This module implements what the relay's benchmarks share (clients.h):
 * the processes they start on loopback and the SSE clients they hold. */
#include "clients.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- clock, ports, limits ---- */

double rb_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void rb_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int rb_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

long rb_raise_nofile(long want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    if (want > 0 && (rlim_t)want > rl.rlim_max) {
        struct rlimit up = {(rlim_t)want, (rlim_t)want};
        if (setrlimit(RLIMIT_NOFILE, &up) == 0)
            return want;
    }
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    return (long)rl.rlim_cur;
}

double rb_loadavg(void)
{
    FILE *f = fopen("/proc/loadavg", "r");
    double l = -1;
    if (f) {
        if (fscanf(f, "%lf", &l) != 1)
            l = -1;
        fclose(f);
    }
    return l;
}

/* ---- processes ---- */

pid_t rb_spawn(const char *const *argv, const char *err_path, bool no_redis_env)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (no_redis_env) {
        unsetenv("MAILAGENT_REDIS_URL");
        unsetenv("REDIS_URL");
        unsetenv("MAILAGENT_STREAM");
    }
    int null = open("/dev/null", O_RDWR);
    int err = err_path ? open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644) : null;
    dup2(null, 0);
    dup2(null, 1);
    dup2(err < 0 ? null : err, 2);
    execv(argv[0], (char *const *)argv);
    _exit(127);
}

void rb_stop(pid_t pid)
{
    if (pid > 0) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
    }
}

int rb_wait_listening(const char *log)
{
    static const char mark[] = "listening on http://127.0.0.1:";
    for (int i = 0; i < 500; i++) {
        FILE *f = fopen(log, "r");
        char line[512];
        while (f && fgets(line, sizeof line, f)) {
            const char *p = strstr(line, mark);
            if (p) {
                fclose(f);
                return atoi(p + strlen(mark));
            }
        }
        if (f)
            fclose(f);
        rb_sleep_ms(10);
    }
    return -1;
}

int rb_wait_port(int port, int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 20) {
        int fd = rb_connect(port, false);
        if (fd >= 0) {
            close(fd);
            return 0;
        }
        rb_sleep_ms(20);
    }
    return -1;
}

pid_t rb_redis_start(const char *redis_server, const char *dir, int *port)
{
    *port = rb_free_port();
    char port_s[16];
    snprintf(port_s, sizeof port_s, "%d", *port);
    const char *argv[] = {redis_server, "--port", port_s, "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--dir", dir, NULL};
    pid_t pid = rb_spawn(argv, NULL, false);
    if (pid < 0 || rb_wait_port(*port, 4000) != 0) {
        rb_stop(pid);
        return -1;
    }
    return pid;
}

long rb_rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kib = strtol(line + 6, NULL, 10);
    if (f)
        fclose(f);
    return kib;
}

double rb_cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    /* Fields after the name: state(3) ... utime(14) stime(15). */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* ---- one stream ---- */

int rb_connect(int port, bool nonblocking)
{
    int fd = socket(AF_INET, SOCK_STREAM | (nonblocking ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 &&
        !(nonblocking && errno == EINPROGRESS)) {
        close(fd);
        return -1;
    }
    return fd;
}

int rb_sse_request(int fd, const char *last_id)
{
    char req[256];
    int n = snprintf(req, sizeof req, "GET /api/events/stream HTTP/1.1\r\nHost: bench\r\n%s%s%s\r\n",
                     last_id ? "Last-Event-ID: " : "", last_id ? last_id : "",
                     last_id ? "\r\n" : "");
    if (n <= 0 || (size_t)n >= sizeof req)
        return -1;
    return send(fd, req, (size_t)n, MSG_NOSIGNAL) == n ? 0 : -1;
}

int rb_http_get(int port, const char *path, char *buf, size_t len)
{
    int fd = rb_connect(port, false);
    if (fd < 0)
        return -1;
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char req[512];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n",
                     path);
    size_t have = 0;
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) == n) {
        ssize_t r;
        while (have + 1 < len && (r = recv(fd, buf + have, len - have - 1, 0)) > 0)
            have += (size_t)r;
    }
    close(fd);
    buf[have] = '\0';
    char *body = strstr(buf, "\r\n\r\n");
    if (!body)
        return -1;
    body += 4;
    size_t blen = have - (size_t)(body - buf);
    memmove(buf, body, blen + 1);
    return (int)blen;
}

/* ---- a crowd of idle streams ---- */

/* Body bytes, chunk framing removed, to the first frame's end (ready) and
 * then to on_body. */
static void body(rb_crowd *cr, int i, const char *p, size_t len, double at)
{
    rb_client *c = &cr->c[i];
    if (!c->ready) {
        size_t k = 0;
        while (k < len && !c->ready) {
            if (p[k] == '\n' && c->body_nl)
                c->ready = true;
            c->body_nl = p[k] == '\n';
            k++;
        }
        p += k;
        len -= k;
    }
    if (len > 0 && cr->on_body)
        cr->on_body(cr, i, p, len, at);
}

/* Raw bytes after the head: through the library's chunked decoder (in
 * place) when the stream is chunked. */
static void dechunk(rb_crowd *cr, int i, char *p, size_t len, double at)
{
    rb_client *c = &cr->c[i];
    if (c->chunked) {
        size_t out = 0;
        if (mae__chunked_feed(&c->ch, p, len, &out, NULL) == MAE__CHUNKED_BAD)
            c->chunked = false;   /* not chunked after all: taken as it is from here */
        len = out;
    }
    body(cr, i, p, len, at);
}

/* The response head, gathered until "\r\n\r\n"; what follows it is body. */
static void head(rb_crowd *cr, int i, char *p, size_t len, double at)
{
    rb_client *c = &cr->c[i];
    static const size_t cap = 4096;
    if (!c->head && !(c->head = malloc(cap)))
        return;
    size_t take = len < cap - 1 - c->head_len ? len : cap - 1 - c->head_len;
    memcpy(c->head + c->head_len, p, take);
    size_t before = c->head_len;
    c->head_len += take;
    c->head[c->head_len] = '\0';
    char *end = strstr(c->head, "\r\n\r\n");
    if (!end) {
        if (c->head_len == cap - 1)
            c->head_len = 0;   /* no head fits: it never becomes ready */
        return;
    }
    end[2] = '\0';
    c->chunked = strstr(c->head, "\r\nTransfer-Encoding: chunked\r\n") != NULL;
    const char *up = strstr(c->head, "\r\nX-Upstream: ");
    if (up) {
        const char *colon = strchr(up + 14, ':');
        c->upstream = colon ? atoi(colon + 1) : 0;
    }
    size_t used = (size_t)(end + 4 - c->head) - before;
    free(c->head);
    c->head = NULL;
    c->head_len = 0;
    c->headed = true;
    c->bytes = len - used;
    mae__chunked_init(&c->ch);
    dechunk(cr, i, p + used, len - used, at);
}

void rb_crowd_pump(rb_crowd *cr, int timeout_ms)
{
    struct epoll_event evs[512];
    int k = epoll_wait(cr->ep, evs, 512, timeout_ms);
    for (int e = 0; e < k; e++) {
        int i = (int)evs[e].data.u32;
        rb_client *c = &cr->c[i];
        for (;;) {
            ssize_t r = recv(c->fd, cr->scratch, sizeof cr->scratch, 0);
            if (r <= 0)
                break;
            double at = cr->on_body ? rb_now() : 0;
            if (!c->headed) {
                head(cr, i, cr->scratch, (size_t)r, at);
                continue;
            }
            c->bytes += (size_t)r;
            /* Without on_body, bytes are all that is counted once ready
             * (the relay's own bench: no parsing in its loop). */
            if (!c->ready || cr->on_body)
                dechunk(cr, i, cr->scratch, (size_t)r, at);
        }
    }
}

int rb_crowd_open(rb_crowd *cr, int n, int port, rb_on_body *on_body, void *arg)
{
    memset(cr, 0, sizeof *cr);
    cr->on_body = on_body;
    cr->arg = arg;
    cr->ep = epoll_create1(0);
    cr->c = calloc((size_t)n, sizeof *cr->c);
    if (cr->ep < 0 || !cr->c)
        return -1;
    for (int i = 0; i < n; i++) {
        cr->c[i].fd = rb_connect(port, true);
        if (cr->c[i].fd < 0) {
            fprintf(stderr, "relay bench: connect %d: %s\n", i, strerror(errno));
            return -1;
        }
        cr->n = i + 1;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(cr->ep, EPOLL_CTL_ADD, cr->c[i].fd, &ev);
        /* Paced so the listen backlog never overflows. */
        if (i % 256 == 255)
            rb_crowd_pump(cr, 1);
    }
    /* Send the requests once connected (a non-blocking connect on
     * loopback completes at once; a send that fails is retried). */
    double until = rb_now() + 60;
    int sent = 0;
    bool *done = calloc((size_t)n, 1);
    if (!done)
        return -1;
    while (sent < n && rb_now() < until) {
        for (int i = 0; i < n; i++) {
            if (!done[i] && rb_sse_request(cr->c[i].fd, NULL) == 0) {
                done[i] = true;
                sent++;
            }
        }
        rb_crowd_pump(cr, 1);
    }
    free(done);
    int ready = 0;
    while (rb_now() < until) {
        ready = 0;
        for (int i = 0; i < n; i++)
            ready += cr->c[i].ready;
        if (ready == n)
            break;
        rb_crowd_pump(cr, 10);
    }
    return ready == n ? 0 : -1;
}

void rb_crowd_close(rb_crowd *cr)
{
    for (int i = 0; i < cr->n; i++) {
        close(cr->c[i].fd);
        free(cr->c[i].head);
    }
    if (cr->ep >= 0)
        close(cr->ep);
    free(cr->c);
    cr->c = NULL;
    cr->n = 0;
}

int rb_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
