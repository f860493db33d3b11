/* Test support for the relay's integration tests: the relay command run as
 * a child process on a free loopback port, raw HTTP connections read with
 * deadlines, other programs (curl, python3, chromium, nginx) spawned and
 * reaped, and the "fail, not skip, in CI" rule for missing tools. */
#ifndef MAE_TEST_RELAY_HARNESS_H
#define MAE_TEST_RELAY_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Skips the calling test when the program at path is missing, or fails it
 * when CI=true (a bare CI machine must not pass by skipping). */
bool rh_have(const char *path);
#define RH_REQUIRE(path)                                                                  \
    do {                                                                                  \
        if (!rh_have(path))                                                               \
            skip();                                                                       \
    } while (0)

/* The test's output directory, MAE_RELAY_OUT_DIR/<name>, created empty. */
const char *rh_out_dir(const char *name, char *buf, size_t size);

/* ---- the relay ---- */

typedef struct rh_relay {
    pid_t pid;
    int port;
    char log[512];      /* its stderr */
} rh_relay;

/* Starts `mailagent --redis URL events serve --listen 127.0.0.1:0 ARGS`
 * (the command at $MAE_RELAY_TEST_CLI when set, to run a test against
 * another build)
 * (args NULL-terminated, may be NULL) with env ("K=V", NULL-terminated, may
 * be NULL) added to the environment, stderr into log_path; waits for the
 * "listening on" line and reads the port from it. 0 or -1. */
int rh_relay_start(rh_relay *r, const char *redis_url, const char *const *args,
                   const char *const *env, const char *log_path);
/* As rh_relay_start with no Redis URL at all (the Redis variables set
 * blank): the relay runs as the hub (docs/relay.md, "Hub mode"). A later
 * --listen in args (e.g. to restart on the same port) wins. */
int rh_hub_start(rh_relay *r, const char *const *args, const char *const *env,
                 const char *log_path);
/* POSTs body (len bytes) to /api/events/publish on a new connection with
 * the extra header lines (each ending in \r\n, may be NULL) and
 * Content-Length; returns the whole answer (malloc'd), NULL on timeout. */
char *rh_post(int port, const char *headers, const char *body, size_t len);
/* Sends sig and waits up to timeout_ms; returns the exit status, or -1
 * (after SIGKILL) when it did not exit in time or died of a signal.
 * *seconds (NULL ok) gets how long it took. */
int rh_relay_stop(rh_relay *r, int sig, int timeout_ms, double *seconds);
/* True when the relay's log has a line containing s. */
bool rh_log_has(const rh_relay *r, const char *s);

/* ---- raw connections ---- */

typedef struct rh_conn {
    int fd;
    char *buf;          /* everything received, NUL-terminated */
    size_t len, cap;
    bool eof;           /* the peer closed (or reset) */
} rh_conn;

/* Connects to 127.0.0.1:port (rcvbuf > 0 sets SO_RCVBUF before connect). */
rh_conn *rh_connect(int port, int rcvbuf);
/* Connects and sends "GET path HTTP/1.1" with the extra header lines
 * (each ending in \r\n, may be NULL). */
rh_conn *rh_get(int port, const char *path, const char *headers);
bool rh_send(rh_conn *c, const char *s, size_t n);
/* Reads what is there without waiting. */
void rh_pump(rh_conn *c);
/* Reads until needle occurs at or after offset from, or timeout_ms;
 * returns its offset or -1. */
long rh_wait_for(rh_conn *c, size_t from, const char *needle, int timeout_ms);
/* Reads until the peer closes or timeout_ms; true when it closed. */
bool rh_wait_eof(rh_conn *c, int timeout_ms);
/* Occurrences of needle in what was received. */
size_t rh_count(const rh_conn *c, const char *needle);
void rh_close(rh_conn *c);

/* One request on a new connection (with "Connection: close" semantics
 * expected from req); returns the whole answer (malloc'd) once the relay
 * closes or Content-Length is complete, NULL on timeout. */
char *rh_request(int port, const char *req);
/* GET /metrics (with the header lines extra, may be NULL) and the value of
 * one counter; -1 when absent. */
long long rh_metric(int port, const char *extra, const char *name);
/* Waits up to timeout_ms until the relay on port reports n open streams
 * (mailagent_relay_clients, read with the extra header auth, NULL ok), and
 * asserts that it did. */
void rh_wait_clients(int port, const char *auth, long long n, int timeout_ms);

/* ---- other programs ---- */

/* Forks and execs argv[0] (a path) with env added, stdout and stderr to the
 * files given (NULL: /dev/null); the child dies with the test. */
pid_t rh_spawn(const char *const *argv, const char *const *env, const char *out_path,
               const char *err_path);
/* Waits up to timeout_ms; the exit status, or -1 after killing it. */
int rh_wait(pid_t pid, int timeout_ms);
/* True while the child has not exited. */
bool rh_running(pid_t pid);
/* Reads a whole file (malloc'd, NUL-terminated); NULL when missing. */
char *rh_slurp(const char *path);
/* Reads path every step_ms until its text contains needle or timeout_ms
 * pass; returns the last text read (malloc'd; NULL when the file never
 * appeared), so the caller asserts on what was there. */
char *rh_wait_text(const char *path, const char *needle, int timeout_ms, int step_ms);

double rh_now(void);
void rh_sleep_ms(int ms);

#endif
