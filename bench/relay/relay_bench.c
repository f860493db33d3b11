/* The relay's benchmark (part of `make bench`): `mailagent events serve`
 * with 100, 1 000 and 10 000 idle clients held open, the relay's resident
 * memory per client, the delay from PUBLISH to the last client's receipt
 * of each event (p50/p99), and the relay's CPU per event per 1 000
 * clients. Then stream mode: the time a client that comes back with
 * Last-Event-ID takes to receive 10 000 missed events. The clients live in this process (one epoll loop, its own file
 * descriptors), the relay and redis-server in their own.
 *
 * Usage: mae_relay_bench MAILAGENT REDIS_SERVER [--events N] [--clients a,b,c]
 *                        [--replay N] [--json PATH]
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#define CHANNEL "mailagent:events:v1"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static pid_t spawn(char *const *argv, const char *err_path)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int null = open("/dev/null", O_RDWR);
    int err = err_path ? open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644) : null;
    dup2(null, 0);
    dup2(null, 1);
    dup2(err, 2);
    execv(argv[0], argv);
    _exit(127);
}

/* ---- the relay's process ---- */

static long rss_kib(pid_t pid)
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

/* utime + stime in seconds. */
static double cpu_s(pid_t pid)
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

/* ---- clients ---- */

typedef struct client {
    int fd;
    size_t bytes;        /* received in all */
    bool headed;         /* the response head and the retry line are in */
} client;

static int connect_nb(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The relay's first answer: head + "d\r\nretry: 3000\n\n\r\n". */
static const char head_end[] = "\r\n\r\nd\r\nretry: 3000\n\n\r\n";

typedef struct fleet {
    int ep;
    client *c;
    int n;
    int port;
    char scratch[65536];
} fleet;

/* Reads what is ready for up to timeout_ms; counts bytes per client. */
static void pump(fleet *f, int timeout_ms)
{
    struct epoll_event evs[512];
    int k = epoll_wait(f->ep, evs, 512, timeout_ms);
    for (int i = 0; i < k; i++) {
        client *c = &f->c[evs[i].data.u32];
        for (;;) {
            ssize_t r = recv(c->fd, f->scratch, sizeof f->scratch, 0);
            if (r <= 0)
                break;
            if (!c->headed) {
                /* The head comes in one segment on loopback. */
                f->scratch[r < (ssize_t)sizeof f->scratch ? r : r - 1] = '\0';
                char *e = strstr(f->scratch, head_end);
                if (e) {
                    c->headed = true;
                    c->bytes = (size_t)r - (size_t)(e + strlen(head_end) - f->scratch);
                }
                continue;
            }
            c->bytes += (size_t)r;
        }
    }
}

static int fleet_open(fleet *f, int n, int port)
{
    static const char req[] = "GET /api/events/stream HTTP/1.1\r\nHost: bench\r\n\r\n";
    f->ep = epoll_create1(0);
    f->c = calloc((size_t)n, sizeof *f->c);
    f->n = n;
    f->port = port;
    for (int i = 0; i < n; i++) {
        f->c[i].fd = connect_nb(port);
        if (f->c[i].fd < 0) {
            fprintf(stderr, "relay bench: connect %d: %s\n", i, strerror(errno));
            return -1;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(f->ep, EPOLL_CTL_ADD, f->c[i].fd, &ev);
        /* Paced so the listen backlog never overflows. */
        if (i % 256 == 255)
            pump(f, 1);
    }
    /* Send the requests once connected (a non-blocking connect on
     * loopback completes at once; a send that fails is retried). */
    double until = now_s() + 60;
    int sent = 0;
    bool *done = calloc((size_t)n, 1);
    while (sent < n && now_s() < until) {
        for (int i = 0; i < n; i++) {
            if (done[i])
                continue;
            if (send(f->c[i].fd, req, sizeof req - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof req - 1)) {
                done[i] = true;
                sent++;
            }
        }
        pump(f, 1);
    }
    free(done);
    int headed = 0;
    while (now_s() < until) {
        headed = 0;
        for (int i = 0; i < n; i++)
            headed += f->c[i].headed;
        if (headed == n)
            break;
        pump(f, 10);
    }
    return headed == n ? 0 : -1;
}

static void fleet_close(fleet *f)
{
    for (int i = 0; i < f->n; i++)
        close(f->c[i].fd);
    close(f->ep);
    free(f->c);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct result {
    int clients;
    long rss_base_kib, rss_idle_kib;
    double rss_per_client_kib;
    int events, complete;
    double p50_ms, p99_ms, max_ms;
    double cpu_per_event_per_1000_ms;
} result;

static int run_one(pid_t relay, int port, redisContext *rc, int n, int events, result *out)
{
    fleet f;
    memset(&f, 0, sizeof f);
    memset(out, 0, sizeof *out);
    out->clients = n;
    out->events = events;
    sleep_ms(300);
    out->rss_base_kib = rss_kib(relay);
    if (fleet_open(&f, n, port) != 0) {
        fprintf(stderr, "relay bench: could not open %d streams\n", n);
        fleet_close(&f);
        return -1;
    }
    /* Idle: settle, then the relay's memory. */
    for (int i = 0; i < 30; i++)
        pump(&f, 10);
    out->rss_idle_kib = rss_kib(relay);
    out->rss_per_client_kib = (double)(out->rss_idle_kib - out->rss_base_kib) / n;

    /* Fan-out: one event at a time, the next once every client has the
     * last; a fixed-size frame, so a client has event k when it holds k
     * frames' bytes. */
    char payload[256];
    size_t base[1];
    (void)base;
    size_t *start = calloc((size_t)n, sizeof *start);
    for (int i = 0; i < n; i++)
        start[i] = f.c[i].bytes;
    double *delay = calloc((size_t)events, sizeof *delay);
    int frame = 0;
    double cpu0 = cpu_s(relay);
    for (int k = 1; k <= events; k++) {
        int len = snprintf(payload, sizeof payload,
                           "{\"event_type\":\"bench.fanout\",\"ts\":1716096000.000000,"
                           "\"internal_id\":%08d,\"data\":{},\"source\":\"bench\"}", k);
        /* "event: mailagent\n" + "data: " + payload + "\n\n", chunked. */
        int body = 17 + 6 + len + 2;
        char hex[16];
        frame = snprintf(hex, sizeof hex, "%x", body) + 2 + body + 2;
        double t0 = now_s();
        redisReply *r = redisCommand(rc, "PUBLISH %s %b", CHANNEL, payload, (size_t)len);
        if (r)
            freeReplyObject(r);
        int have = 0;
        double until = t0 + 10;
        int next = 0;
        while (now_s() < until) {
            while (next < n && f.c[next].bytes - start[next] >= (size_t)frame * (size_t)k)
                next++;
            if (next == n)
                break;
            pump(&f, 5);
        }
        have = next;
        if (have < n) {
            fprintf(stderr, "relay bench: event %d reached %d of %d clients\n", k, have, n);
            break;
        }
        delay[k - 1] = (now_s() - t0) * 1000.0;
        out->complete = k;
    }
    double cpu = cpu_s(relay) - cpu0;
    qsort(delay, (size_t)out->complete, sizeof *delay, cmp_double);
    if (out->complete > 0) {
        out->p50_ms = delay[(out->complete - 1) / 2];
        out->p99_ms = delay[(int)((out->complete - 1) * 0.99)];
        out->max_ms = delay[out->complete - 1];
        out->cpu_per_event_per_1000_ms = cpu * 1000.0 / out->complete / (n / 1000.0);
    }
    free(delay);
    free(start);
    fleet_close(&f);
    /* Let the relay see every close before the next size. */
    sleep_ms(n >= 5000 ? 1500 : 500);
    return out->complete == events ? 0 : -1;
}

/* Stream mode: n entries appended while no client listens, then one
 * client asks for everything after 0-0; the time from its request to its
 * last frame. Returns milliseconds, or -1. */
static double replay_ms(const char *mailagent, const char *url, redisContext *rc, int n,
                        const char *dir)
{
    const char *key = "bench:replay";
    redisReply *r = redisCommand(rc, "DEL %s", key);
    if (r)
        freeReplyObject(r);
    char line[160];
    for (int i = 1; i <= n; i++) {
        snprintf(line, sizeof line, "{\"event_type\":\"bench.replay\",\"internal_id\":%08d}", i);
        redisAppendCommand(rc, "XADD %s * event %s", key, line);
    }
    for (int i = 1; i <= n; i++) {
        if (redisGetReply(rc, (void **)&r) != REDIS_OK)
            return -1;
        freeReplyObject(r);
    }
    char log[300];
    snprintf(log, sizeof log, "%s/relay-stream.log", dir);
    char *argv[] = {(char *)mailagent, "--redis", (char *)url, "--stream", (char *)key, "events",
                    "serve", "--listen", "127.0.0.1:0", "--quiet", NULL};
    pid_t relay = spawn(argv, log);
    int port = 0;
    for (int i = 0; i < 500 && port == 0; i++) {
        sleep_ms(10);
        FILE *f = fopen(log, "r");
        char l[256];
        while (f && fgets(l, sizeof l, f)) {
            char *p = strstr(l, "listening on http://127.0.0.1:");
            if (p)
                port = atoi(p + strlen("listening on http://127.0.0.1:"));
        }
        if (f)
            fclose(f);
    }
    sleep_ms(300);   /* the reader's position established */
    double ms = -1;
    int fd = port ? connect_nb(port) : -1;
    if (fd >= 0) {
        int flags = fcntl(fd, F_GETFL);
        fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
        sleep_ms(20);
        static const char req[] = "GET /api/events/stream HTTP/1.1\r\nHost: bench\r\n"
                                  "Last-Event-ID: 0-0\r\n\r\n";
        char want[64];
        snprintf(want, sizeof want, "\"internal_id\":%08d}", n);
        size_t cap = (size_t)n * 200 + 65536, len = 0;
        char *buf = malloc(cap);
        double t0 = now_s();
        if (buf && send(fd, req, sizeof req - 1, 0) == (ssize_t)(sizeof req - 1)) {
            struct timeval tv = {10, 0};
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            for (;;) {
                ssize_t got = recv(fd, buf + len, cap - len - 1, 0);
                if (got <= 0)
                    break;
                len += (size_t)got;
                buf[len] = '\0';
                size_t from = len > (size_t)got + 64 ? len - (size_t)got - 64 : 0;
                if (strstr(buf + from, want)) {
                    ms = (now_s() - t0) * 1000.0;
                    break;
                }
                if (cap - len < 4096)
                    break;
            }
            /* Every event once, in order. */
            int frames = 0;
            for (const char *p = buf; (p = strstr(p, "event: mailagent\n")) != NULL; p++)
                frames++;
            if (frames != n) {
                fprintf(stderr, "relay bench: replay gave %d frames, want %d\n", frames, n);
                ms = -1;
            }
        }
        free(buf);
        close(fd);
    }
    kill(relay, SIGTERM);
    waitpid(relay, NULL, 0);
    return ms;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s MAILAGENT REDIS_SERVER [--events N] [--clients a,b,c] "
                        "[--json PATH]\n", argv[0]);
        return 2;
    }
    int events = 200;
    int replay = 10000;
    int sizes[8] = {100, 1000, 10000};
    int nsizes = 3;
    const char *json = NULL;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--events") == 0 && i + 1 < argc) {
            events = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--clients") == 0 && i + 1 < argc) {
            nsizes = 0;
            for (char *t = strtok(argv[++i], ","); t && nsizes < 8; t = strtok(NULL, ","))
                sizes[nsizes++] = atoi(t);
        } else if (strcmp(argv[i], "--replay") == 0 && i + 1 < argc) {
            replay = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--json") == 0 && i + 1 < argc) {
            json = argv[++i];
        }
    }
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    signal(SIGPIPE, SIG_IGN);

    char dir[] = "/tmp/mae-relay-bench-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    int rport = free_port();
    char rport_s[16], relay_log[300], url[64];
    snprintf(rport_s, sizeof rport_s, "%d", rport);
    char *rargv[] = {argv[2], "--port", rport_s, "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--dir", dir, NULL};
    pid_t redis = spawn(rargv, NULL);
    redisContext *rc = NULL;
    for (int i = 0; i < 200 && !rc; i++) {
        sleep_ms(20);
        rc = redisConnect("127.0.0.1", rport);
        if (rc && rc->err) {
            redisFree(rc);
            rc = NULL;
        }
    }
    if (!rc) {
        fprintf(stderr, "relay bench: redis-server did not start\n");
        return 1;
    }
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", rport);
    snprintf(relay_log, sizeof relay_log, "%s/relay.log", dir);
    char *margv[] = {argv[1], "--redis", url, "events", "serve", "--listen", "127.0.0.1:0",
                     "--quiet", "--max-clients", "20000", "--ping-interval", "3600", NULL};
    pid_t relay = spawn(margv, relay_log);
    int port = 0;
    for (int i = 0; i < 500 && port == 0; i++) {
        sleep_ms(10);
        FILE *f = fopen(relay_log, "r");
        char line[256];
        while (f && fgets(line, sizeof line, f)) {
            char *p = strstr(line, "listening on http://127.0.0.1:");
            if (p)
                port = atoi(p + strlen("listening on http://127.0.0.1:"));
        }
        if (f)
            fclose(f);
    }
    sleep_ms(300);   /* subscribed */
    int status = 0;
    result res[8];
    printf("relay: clients  RSS/client  fan-out p50    p99     max   CPU/event/1000 clients\n");
    for (int s = 0; s < nsizes && port > 0; s++) {
        if (run_one(relay, port, rc, sizes[s], events, &res[s]) != 0)
            status = 1;
        result *r = &res[s];
        printf("relay: %7d  %6.2f KiB  %7.2f ms %7.2f ms %7.2f ms  %.3f ms\n", r->clients,
               r->rss_per_client_kib, r->p50_ms, r->p99_ms, r->max_ms,
               r->cpu_per_event_per_1000_ms);
        fflush(stdout);
    }
    kill(relay, SIGTERM);
    waitpid(relay, NULL, 0);
    double rms = replay > 0 ? replay_ms(argv[1], url, rc, replay, dir) : 0;
    if (replay > 0) {
        if (rms < 0)
            status = 1;
        printf("relay: stream mode, a client back with Last-Event-ID gets %d missed events in "
               "%.1f ms (%.0f events/s)\n", replay, rms, rms > 0 ? replay / (rms / 1000.0) : 0);
    }
    if (json) {
        FILE *f = fopen(json, "w");
        if (f) {
            fprintf(f, "{\n  \"events_per_size\": %d,\n", events);
            fprintf(f, "  \"stream_replay\": {\"events\": %d, \"ms\": %.3f},\n", replay, rms);
            fprintf(f, "  \"sizes\": [\n");
            for (int s = 0; s < nsizes; s++) {
                result *r = &res[s];
                fprintf(f,
                        "    {\"clients\": %d, \"rss_base_kib\": %ld, \"rss_idle_kib\": %ld, "
                        "\"rss_per_client_kib\": %.3f, \"events\": %d, \"p50_ms\": %.3f, "
                        "\"p99_ms\": %.3f, \"max_ms\": %.3f, "
                        "\"cpu_per_event_per_1000_clients_ms\": %.4f}%s\n",
                        r->clients, r->rss_base_kib, r->rss_idle_kib, r->rss_per_client_kib,
                        r->complete, r->p50_ms, r->p99_ms, r->max_ms,
                        r->cpu_per_event_per_1000_ms, s + 1 < nsizes ? "," : "");
            }
            fprintf(f, "  ]\n}\n");
            fclose(f);
        }
    }
    redisFree(rc);
    kill(redis, SIGTERM);
    waitpid(redis, NULL, 0);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        status = 1;
    return port > 0 ? status : 1;
}
