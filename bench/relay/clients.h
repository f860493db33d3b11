/* What the relay's benchmarks share (relay_bench.c, hub_bench.c,
 * fleet_bench.c): the clock, the processes they start on loopback
 * (redis-server, relays, nginx) and the SSE clients they hold open, one
 * blocking stream or a crowd of idle streams read by one epoll loop.
 *
 * Not thread-safe: a crowd belongs to the thread that pumps it. Every
 * process started here dies with the benchmark (PR_SET_PDEATHSIG). */
#ifndef MAE_BENCH_RELAY_CLIENTS_H
#define MAE_BENCH_RELAY_CLIENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "stream/chunked.h"

/* ---- clock, ports, limits ---- */

double rb_now(void);   /* CLOCK_MONOTONIC seconds: shared by the processes of one machine */
void rb_sleep_ms(int ms);
int rb_free_port(void);   /* a loopback port nothing listens on now, or -1 */
/* The soft RLIMIT_NOFILE raised to at least `want` (the hard limit too,
 * where the process may), else to the hard limit. Returns the soft limit
 * in force. Children started afterwards inherit it. */
long rb_raise_nofile(long want);
/* The 1-minute load average from /proc/loadavg, or -1. */
double rb_loadavg(void);

/* ---- processes ---- */

/* Starts argv[0] with stdin and stdout on /dev/null and stderr into
 * err_path (or /dev/null). no_redis_env: without MAILAGENT_REDIS_URL,
 * REDIS_URL and MAILAGENT_STREAM, so a relay in hub mode stays one. */
pid_t rb_spawn(const char *const *argv, const char *err_path, bool no_redis_env);
/* SIGTERM, then waits for it. pid <= 0 is a no-op. */
void rb_stop(pid_t pid);
/* A relay's port from the "listening on http://127.0.0.1:PORT" line in
 * its log, waiting up to 5 s; -1 if it never came. */
int rb_wait_listening(const char *log);
/* Until a TCP connect to 127.0.0.1:port succeeds, up to timeout_ms;
 * 0 or -1. */
int rb_wait_port(int port, int timeout_ms);
/* A redis-server on a free loopback port, no persistence, its files in
 * dir; waits until it accepts. Returns its pid (or -1) and sets *port. */
pid_t rb_redis_start(const char *redis_server, const char *dir, int *port);
long rb_rss_kib(pid_t pid);   /* VmRSS, or -1 */
double rb_cpu_s(pid_t pid);   /* utime + stime in seconds, or -1 */

/* ---- one stream ---- */

/* A TCP connection to 127.0.0.1:port (non-blocking: connect started, maybe
 * not finished), or -1. */
int rb_connect(int port, bool nonblocking);
/* Sends GET /api/events/stream (with Last-Event-ID when last_id is not
 * NULL). 0 once the whole request is sent, -1 otherwise (nothing or part
 * of it: on a fresh loopback connection it is all or nothing). */
int rb_sse_request(int fd, const char *last_id);
/* GET path on 127.0.0.1:port, blocking, 2 s at most; the body, NUL
 * terminated, into buf. Returns its length, or -1. */
int rb_http_get(int port, const char *path, char *buf, size_t len);

/* ---- a crowd of idle streams, one epoll loop ---- */

typedef struct rb_client {
    int fd;
    bool headed;         /* the response head is in */
    bool ready;          /* the head and the stream's first frame are in */
    bool chunked;        /* Transfer-Encoding: chunked */
    bool body_nl;        /* the last body byte was '\n' (finding the first frame's end) */
    mae__chunked ch;     /* the library's decoder, for a chunked stream */
    int upstream;        /* the port in an "X-Upstream: 127.0.0.1:PORT" header, else 0 */
    size_t bytes;        /* raw bytes received after the head, chunk framing included */
    char *head;          /* the response head until it is complete */
    size_t head_len;
} rb_client;

typedef struct rb_crowd rb_crowd;
/* Body bytes (chunk framing removed) that arrived after the first frame,
 * with the time of the recv() that brought them. */
typedef void rb_on_body(rb_crowd *cr, int i, const char *data, size_t len, double at);

struct rb_crowd {
    int ep;
    int n;
    rb_client *c;
    rb_on_body *on_body;   /* NULL: only `bytes` is counted, no clock read */
    void *arg;
    char scratch[65536];
};

/* Opens n streams to 127.0.0.1:port, paced so the listen backlog never
 * overflows, and waits up to 60 s until each has its first frame. 0 when
 * all did; -1 otherwise (close it anyway). on_body may be NULL. */
int rb_crowd_open(rb_crowd *cr, int n, int port, rb_on_body *on_body, void *arg);
/* Reads whatever is ready, waiting up to timeout_ms for the first. */
void rb_crowd_pump(rb_crowd *cr, int timeout_ms);
void rb_crowd_close(rb_crowd *cr);

/* ---- figures ---- */

int rb_cmp_double(const void *a, const void *b);   /* for qsort */

#endif
