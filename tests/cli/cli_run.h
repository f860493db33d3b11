/* Test helper for the mailagent command: runs the built binary
 * (MAE_CLI_PATH) with a chosen environment and collects its stdout, stderr
 * and exit status, either to completion or in the background. */
#ifndef MAE_TEST_CLI_RUN_H
#define MAE_TEST_CLI_RUN_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MAE_CLI_PATH
#error "MAE_CLI_PATH must name the built mailagent binary"
#endif

extern char **environ;

typedef struct cli_proc {
    pid_t pid;
    int out_fd, err_fd;
    char *out, *err;          /* NUL-terminated, grown as read */
    size_t out_len, err_len;
    int status;               /* exit code; 128 + signal when killed; -1 unknown */
} cli_proc;

/* Environment for the next runs: the test's own, minus every MAILAGENT_*
 * (so the developer's settings never leak in), plus these NAME=value
 * entries (NULL-terminated list, may be NULL). */
static inline char **cli_env(const char *const *extra)
{
    size_t n = 0, m = 0, k = 0;
    while (environ[n])
        n++;
    while (extra && extra[m])
        m++;
    char **env = calloc(n + m + 1, sizeof *env);
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "MAILAGENT_", 10) != 0)
            env[k++] = environ[i];
    for (size_t i = 0; i < m; i++)
        env[k++] = (char *)extra[i];
    env[k] = NULL;
    return env;
}

/* Starts `mailagent args...` (args NULL-terminated) in the background. */
static inline void cli_start(cli_proc *p, const char *const *env_extra, const char *const *args)
{
    int out[2], err[2];
    size_t n = 0;
    while (args[n])
        n++;
    char **argv = calloc(n + 2, sizeof *argv);
    argv[0] = (char *)MAE_CLI_PATH;
    for (size_t i = 0; i < n; i++)
        argv[i + 1] = (char *)args[i];
    char **env = cli_env(env_extra);
    memset(p, 0, sizeof *p);
    p->status = -1;
    if (pipe(out) != 0 || pipe(err) != 0)
        abort();
    fflush(NULL);
    p->pid = fork();
    if (p->pid < 0)
        abort();
    if (p->pid == 0) {
        dup2(out[1], 1);
        dup2(err[1], 2);
        close(out[0]);
        close(out[1]);
        close(err[0]);
        close(err[1]);
        execve(MAE_CLI_PATH, argv, env);
        _exit(127);
    }
    close(out[1]);
    close(err[1]);
    p->out_fd = out[0];
    p->err_fd = err[0];
    p->out = calloc(1, 1);
    p->err = calloc(1, 1);
    free(argv);
    free(env);
}

static inline void cli_append(char **buf, size_t *len, const char *data, size_t n)
{
    *buf = realloc(*buf, *len + n + 1);
    memcpy(*buf + *len, data, n);
    *len += n;
    (*buf)[*len] = '\0';
}

static inline double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Reads whatever is available for up to timeout_ms. Returns true once both
 * pipes reached EOF. */
static inline bool cli_pump(cli_proc *p, int timeout_ms)
{
    double end = cli_now() + timeout_ms / 1000.0;
    while (p->out_fd >= 0 || p->err_fd >= 0) {
        struct pollfd fds[2] = {{.fd = p->out_fd, .events = POLLIN},
                                {.fd = p->err_fd, .events = POLLIN}};
        int left = (int)((end - cli_now()) * 1000);
        if (left < 0)
            left = 0;
        int n = poll(fds, 2, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        for (int i = 0; i < 2; i++) {
            char buf[4096];
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t r = read(fds[i].fd, buf, sizeof buf);
            if (r > 0) {
                if (i == 0)
                    cli_append(&p->out, &p->out_len, buf, (size_t)r);
                else
                    cli_append(&p->err, &p->err_len, buf, (size_t)r);
            } else {
                close(fds[i].fd);
                if (i == 0)
                    p->out_fd = -1;
                else
                    p->err_fd = -1;
            }
        }
    }
    return true;
}

/* Waits up to timeout_ms for the process to finish (killing it after
 * that) and returns its exit status. */
static inline int cli_wait(cli_proc *p, int timeout_ms)
{
    int st;
    if (!cli_pump(p, timeout_ms))
        kill(p->pid, SIGKILL);
    cli_pump(p, 2000);
    while (waitpid(p->pid, &st, 0) < 0 && errno == EINTR)
        ;
    p->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return p->status;
}

static inline void cli_free(cli_proc *p)
{
    free(p->out);
    free(p->err);
    p->out = p->err = NULL;
}

/* Runs to completion (at most 30 s). */
static inline int cli_run(cli_proc *p, const char *const *env_extra, const char *const *args)
{
    cli_start(p, env_extra, args);
    return cli_wait(p, 30000);
}

/* Lines in s. */
static inline size_t cli_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

#endif
