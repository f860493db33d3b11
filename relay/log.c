/* This module implements the relay's log: one line on stderr per call
 * (relay.md, "Log lines"), at most MAE__RELAY_LOG_BURST lines of one kind
 * per second. A kind is a format (the line "client ... unauthorized" is one
 * kind whatever the client); a line a source wrote whole (passed through
 * as "%s") is its own kind by its text. The lines over the limit are
 * counted, and once their second is over one line says how many there
 * were: "client ... unauthorized (2990 similar lines suppressed)". So a
 * flood of 401s, refusals, cuts or skipped events costs a few lines a
 * second, and the counts add up to what happened (issue 18 #6). At the
 * bottom of the relay's modules: it calls none of them. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "relay/log.h"
#include "relay/server.h"

#define KINDS 64
#define LABEL_MAX 200

typedef struct kind {
    const char *fmt;                /* NULL: a free slot */
    char text[LABEL_MAX];           /* a pass-through line's text */
    long long second;               /* the monotonic second of its window */
    unsigned shown;                 /* lines written in that second */
    unsigned long long suppressed;  /* lines counted, not written */
} kind;

static kind g_kinds[KINDS];
static bool g_atexit;

static long long now_second(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec;
}

static void say_line(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

static void say_line(const char *fmt, ...)
{
    char line[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line);
}

/* The kind's name in its count line: the format with each conversion
 * written "..." (as relay.md's table writes them), or the line itself. */
static void label(const kind *k, char *out, size_t size)
{
    if (!k->fmt[0] || strcmp(k->fmt, "%s") == 0) {
        snprintf(out, size, "%s", k->text);
        return;
    }
    size_t n = 0;
    for (const char *p = k->fmt; *p && n + 4 < size; p++) {
        if (*p != '%') {
            out[n++] = *p;
            continue;
        }
        p++;
        while (*p && strchr("0123456789.-lhzj", *p))
            p++;
        if (*p == '%') {
            out[n++] = '%';
            continue;
        }
        if (!*p)
            break;
        if (n < 3 || memcmp(out + n - 3, "...", 3) != 0) {
            memcpy(out + n, "...", 3);
            n += 3;
        }
    }
    out[n] = '\0';
}

static void write_count(kind *k)
{
    char name[LABEL_MAX];
    label(k, name, sizeof name);
    say_line("%s (%llu similar lines suppressed)", name, k->suppressed);
    k->suppressed = 0;
}

static void flush_before(long long second)
{
    for (int i = 0; i < KINDS; i++)
        if (g_kinds[i].fmt && g_kinds[i].suppressed && g_kinds[i].second < second)
            write_count(&g_kinds[i]);
}

void mae__relay_log_tick(void)
{
    flush_before(now_second());
    fflush(stderr);
}

void mae__relay_log_flush(void)
{
    flush_before(now_second() + 1);
    fflush(stderr);
}

static void flush_at_exit(void)
{
    mae__relay_log_flush();
}

/* The kind of a line: its format, or for a pass-through, its text. A full
 * table reuses the slot idle longest (its count, if any, written first). */
static kind *kind_of(const char *fmt, const char *line)
{
    bool whole = strcmp(fmt, "%s") == 0;
    kind *oldest = &g_kinds[0];
    for (int i = 0; i < KINDS; i++) {
        kind *k = &g_kinds[i];
        if (!k->fmt) {
            oldest = k;
            break;
        }
        if (k->fmt == fmt && (!whole || strncmp(k->text, line, LABEL_MAX - 1) == 0))
            return k;
        if (k->second < oldest->second)
            oldest = k;
    }
    if (oldest->fmt && oldest->suppressed)
        write_count(oldest);
    memset(oldest, 0, sizeof *oldest);
    oldest->fmt = fmt;
    oldest->second = -1;
    if (whole) {
        size_t n = strnlen(line, sizeof oldest->text - 1);
        memcpy(oldest->text, line, n);
        oldest->text[n] = '\0';
    }
    return oldest;
}

void mae__relay_say(const char *fmt, ...)
{
    char line[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (!g_atexit) {
        g_atexit = true;
        atexit(flush_at_exit);
    }
    long long second = now_second();
    flush_before(second);
    kind *k = kind_of(fmt, line);
    if (k->second != second) {
        k->second = second;
        k->shown = 0;
    }
    if (k->shown >= MAE__RELAY_LOG_BURST) {
        k->suppressed++;
        return;
    }
    k->shown++;
    fprintf(stderr, "%s\n", line);
}
