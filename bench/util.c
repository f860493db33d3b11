/* This module implements the harness's clocks, CPU and memory probes, the
 * latency sample arrays with their percentiles and CDF output, and the
 * progress line. */
#define _GNU_SOURCE /* RUSAGE_THREAD, SYS_gettid */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double now_s(void)
{
    return (double)now_ns() / 1e9;
}

void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void sleep_until_ns(uint64_t t)
{
    struct timespec ts = {(time_t)(t / 1000000000u), (long)(t % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static double tv_s(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

double cpu_thread_s(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_THREAD, &ru) != 0)
        return 0;
    return tv_s(ru.ru_utime) + tv_s(ru.ru_stime);
}

uint64_t minflt_thread(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_THREAD, &ru) != 0)
        return 0;
    return (uint64_t)ru.ru_minflt;
}

double cpu_process_s(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return tv_s(ru.ru_utime) + tv_s(ru.ru_stime);
}

pid_t bench_gettid(void)
{
    return (pid_t)syscall(SYS_gettid);
}

/* schedstat's first field is the nanoseconds the task ran: finer than the
 * 10 ms ticks of /proc/.../stat, which matters for a day that costs only a
 * few milliseconds of CPU. */
uint64_t task_runtime_ns(pid_t pid, pid_t tid)
{
    char path[96];
    unsigned long long ns = 0;
    if (tid > 0)
        snprintf(path, sizeof path, "/proc/%d/task/%d/schedstat", (int)pid, (int)tid);
    else
        snprintf(path, sizeof path, "/proc/%d/schedstat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    if (fscanf(f, "%llu", &ns) != 1)
        ns = 0;
    fclose(f);
    return ns;
}

static uint64_t status_kib(const char *key)
{
    char line[256];
    size_t klen = strlen(key);
    unsigned long long v = 0;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            v = strtoull(line + klen + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

uint64_t rss_kib(void)
{
    return status_kib("VmRSS");
}

uint64_t hwm_kib(void)
{
    return status_kib("VmHWM");
}

bool reset_hwm(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f)
        return false;
    bool ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok;
}

/* ---- latency samples ------------------------------------------------------- */

int lat_init(lat *l, size_t cap)
{
    memset(l, 0, sizeof *l);
    l->ns = malloc((cap ? cap : 1) * sizeof *l->ns);
    if (!l->ns)
        return -1;
    /* Touch every page now so the first measured calls do not pay for the
     * page faults of the array they are recorded in. Not with zeros: the
     * compiler turns malloc + memset(0) into calloc, which leaves a fresh
     * mapping untouched, and the faults then land in the timed loop. */
    memset(l->ns, 0xff, (cap ? cap : 1) * sizeof *l->ns);
    l->cap = cap;
    return 0;
}

void lat_free(lat *l)
{
    free(l->ns);
    memset(l, 0, sizeof *l);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static void lat_sort(lat *l)
{
    if (!l->sorted) {
        qsort(l->ns, l->n, sizeof *l->ns, cmp_u64);
        l->sorted = true;
    }
}

uint64_t lat_pct(lat *l, double p)
{
    if (l->n == 0)
        return 0;
    lat_sort(l);
    /* Nearest rank: the smallest sample with at least p of them at or below. */
    double rank = ceil(p * (double)l->n);
    size_t i = rank < 1 ? 0 : (size_t)rank - 1;
    if (i >= l->n)
        i = l->n - 1;
    return l->ns[i];
}

uint64_t lat_max(lat *l)
{
    if (l->n == 0)
        return 0;
    lat_sort(l);
    return l->ns[l->n - 1];
}

double lat_mean(const lat *l)
{
    double s = 0;
    for (size_t i = 0; i < l->n; i++)
        s += (double)l->ns[i];
    return l->n ? s / (double)l->n : 0;
}

lat_summary lat_summarise(lat *l)
{
    lat_summary s;
    s.n = l->n;
    s.p50 = (double)lat_pct(l, 0.50);
    s.p99 = (double)lat_pct(l, 0.99);
    s.p999 = (double)lat_pct(l, 0.999);
    s.max = (double)lat_max(l);
    s.mean = lat_mean(l);
    return s;
}

void lat_write_cdf(lat *l, FILE *f, const char *title)
{
    fprintf(f, "# %s\n", title);
    if (l->n == 0) {
        /* gnuplot refuses an empty block; one invisible point keeps the
         * block indices aligned with the titles. */
        fprintf(f, "NaN NaN NaN\n\n\n");
        return;
    }
    lat_sort(l);
    if (l->n <= 2000) {
        for (size_t i = 0; i < l->n; i++) {
            double frac = (double)(i + 1) / (double)l->n;
            double nines = frac >= 1 ? log10((double)l->n) + 0.3 : -log10(1 - frac);
            fprintf(f, "%llu %.7f %.4f\n", (unsigned long long)l->ns[i], frac, nines);
        }
    } else {
        /* Sample evenly on the "nines" axis so the tail keeps its detail. */
        double top = log10((double)l->n);
        for (double x = 0; x < top; x += 0.01) {
            double frac = 1 - pow(10, -x);
            fprintf(f, "%llu %.7f %.4f\n", (unsigned long long)lat_pct(l, frac), frac, x);
        }
        fprintf(f, "%llu %.7f %.4f\n", (unsigned long long)lat_max(l), 1.0, top + 0.3);
    }
    fprintf(f, "\n\n");
}

/* Runs argv with stdout (and stderr) captured into out; returns the exit
 * status, or -1. No shell: the JSON payload is one argument as it is. */
int run_capture(char *const argv[], char *out, size_t len)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
        close(fds[1]);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    size_t used = 0;
    for (;;) {
        char chunk[4096];
        ssize_t n = read(fds[0], chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        /* Keep the tail: the figure is on the last line, after the
         * carriage-return progress redis-benchmark writes. */
        if (used + (size_t)n >= len) {
            size_t keep = len / 2;
            if (used > keep) {
                memmove(out, out + used - keep, keep);
                used = keep;
            }
            if ((size_t)n >= len - used)
                n = (ssize_t)(len - used - 1);
        }
        memcpy(out + used, chunk, (size_t)n);
        used += (size_t)n;
    }
    out[used] = 0;
    close(fds[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* ---- progress ------------------------------------------------------------------ */

static bool progress_open;

void progress(const char *fmt, ...)
{
    char line[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (isatty(STDERR_FILENO)) {
        fprintf(stderr, "\r\033[K%s", line);
        progress_open = true;
    } else {
        fprintf(stderr, "%s\n", line);
    }
    fflush(stderr);
}

void progress_done(void)
{
    if (progress_open) {
        fprintf(stderr, "\r\033[K");
        fflush(stderr);
        progress_open = false;
    }
}

const char *fmt_ns(double ns, char *buf, size_t len)
{
    if (ns <= 0)
        snprintf(buf, len, "-");
    else if (ns < 1e3)
        snprintf(buf, len, "%.0f ns", ns);
    else if (ns < 1e4)
        snprintf(buf, len, "%.2f µs", ns / 1e3);
    else if (ns < 1e6)
        snprintf(buf, len, "%.1f µs", ns / 1e3);
    else if (ns < 1e9)
        snprintf(buf, len, "%.1f ms", ns / 1e6);
    else
        snprintf(buf, len, "%.2f s", ns / 1e9);
    return buf;
}

const char *fmt_num(double v, char *buf, size_t len)
{
    if (v != v)
        snprintf(buf, len, "-");
    else if (v >= 1e7 || (v > 0 && v < 0.01))
        snprintf(buf, len, "%.1e", v);
    else if (v >= 100)
        snprintf(buf, len, "%.0f", v);
    else
        snprintf(buf, len, "%.2f", v);
    return buf;
}
