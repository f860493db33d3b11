/* Output of the mailagent command: aligned text tables for people, and JSON
 * values built with json-c for scripts. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "core/text.h"

/* ---- UTF-8 ---------------------------------------------------------------- */

/* Decodes the code point at s (n bytes left). Returns it and its length in
 * *len, or -1 with *len = 1 for a byte that starts no valid sequence
 * (stray continuation, overlong form, surrogate, beyond U+10FFFF, cut). */
static long next_cp(const unsigned char *s, size_t n, size_t *len)
{
    unsigned char c = s[0];
    long cp, min;
    size_t need;
    *len = 1;
    if (c < 0x80)
        return c;
    if (c >= 0xC2 && c <= 0xDF)
        need = 2, cp = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF)
        need = 3, cp = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4)
        need = 4, cp = c & 0x07, min = 0x10000;
    else
        return -1;
    if (n < need)
        return -1;
    for (size_t i = 1; i < need; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return -1;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return -1;
    *len = need;
    return cp;
}

/* Columns a code point takes in a terminal: 2 for the East Asian wide and
 * emoji blocks (subjects are often Chinese), else 1. A table, not a
 * terminal emulator: combining marks are not special-cased. */
static int cp_width(long cp)
{
    if ((cp >= 0x1100 && cp <= 0x115F) || (cp >= 0x2E80 && cp <= 0xA4CF && cp != 0x303F) ||
        (cp >= 0xAC00 && cp <= 0xD7A3) || (cp >= 0xF900 && cp <= 0xFAFF) ||
        (cp >= 0xFE30 && cp <= 0xFE4F) || (cp >= 0xFF00 && cp <= 0xFF60) ||
        (cp >= 0xFFE0 && cp <= 0xFFE6) || (cp >= 0x1F300 && cp <= 0x1F64F) ||
        (cp >= 0x1F900 && cp <= 0x1F9FF) || (cp >= 0x20000 && cp <= 0x3FFFD))
        return 2;
    return 1;
}

static size_t text_width(const char *s)
{
    size_t w = 0, n = strlen(s), len;
    const unsigned char *p = (const unsigned char *)s;
    while (n > 0) {
        long cp = next_cp(p, n, &len);
        w += cp < 0 ? 1 : (size_t)cp_width(cp);
        p += len;
        n -= len;
    }
    return w;
}

/* A malloc'd copy of s where each invalid byte is U+FFFD; NULL on OOM. */
static char *utf8_repair(const char *s)
{
    size_t n = strlen(s), len;
    /* A bad byte grows to 3 bytes. */
    char *out = n < (SIZE_MAX - 1) / 3 ? malloc(n * 3 + 1) : NULL;
    char *o = out;
    const unsigned char *p = (const unsigned char *)s;
    if (!out)
        return NULL;
    while (n > 0) {
        if (next_cp(p, n, &len) < 0) {
            memcpy(o, "\xEF\xBF\xBD", 3);
            o += 3;
        } else {
            memcpy(o, p, len);
            o += len;
        }
        p += len;
        n -= len;
    }
    *o = '\0';
    return out;
}

/* ---- cells ---------------------------------------------------------------- */

const char *cli_fmt_cell(const char *s, size_t max, char *buf, size_t size)
{
    size_t n, len, used = 0, cps = 0;
    const unsigned char *p;
    if (!s)
        return NULL;
    n = strlen(s);
    p = (const unsigned char *)s;
    /* Room for one code point (4 bytes) plus "..." and the NUL. */
    while (n > 0 && used + 8 <= size) {
        long cp = next_cp(p, n, &len);
        if (cps == max) {
            memcpy(buf + used, "...", 3);
            used += 3;
            break;
        }
        if (cp < 0) {
            buf[used++] = '?';
        } else if (cp < 0x20 || cp == 0x7F) {
            buf[used++] = ' ';
        } else {
            memcpy(buf + used, p, len);
            used += len;
        }
        cps++;
        p += len;
        n -= len;
    }
    buf[used] = '\0';
    return buf;
}

const char *cli_fmt_time(double epoch, char *buf, size_t size)
{
    struct tm tm;
    time_t t = (time_t)epoch;
    if (epoch <= 0 || !localtime_r(&t, &tm) || strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm) == 0)
        snprintf(buf, size, "-");
    return buf;
}

const char *cli_fmt_int(int64_t v, char *buf, size_t size)
{
    snprintf(buf, size, "%lld", (long long)v);
    return buf;
}

/* ---- tables --------------------------------------------------------------- */

struct cli_table {
    size_t ncols, nrows, cap;
    char *align;
    char **cells;        /* (nrows + 1) * ncols, the header first */
};

static bool add_row(cli_table *t, const char *const *cells)
{
    /* Grown a row (ncols cells) at a time; the header is row 0. */
    char **c = mae__grow(t->cells, &t->cap, t->nrows + 1, t->ncols * sizeof *c, 8);
    if (!c)
        return false;
    t->cells = c;
    char **row = t->cells + (t->nrows + 1) * t->ncols;
    for (size_t i = 0; i < t->ncols; i++) {
        row[i] = strdup(cells[i] ? cells[i] : "-");
        if (!row[i]) {
            while (i-- > 0)
                free(row[i]);
            return false;
        }
    }
    t->nrows++;
    return true;
}

cli_table *cli_table_new(const char *align, const char *const *headers)
{
    cli_table *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->ncols = strlen(align);
    t->align = strdup(align);
    t->cap = 8;
    t->cells = calloc(t->cap * t->ncols, sizeof *t->cells);
    if (!t->align || !t->cells)
        goto fail;
    /* The header is row "-1": add_row counts data rows only. */
    for (size_t i = 0; i < t->ncols; i++)
        if (!(t->cells[i] = strdup(headers[i])))
            goto fail;
    return t;
fail:
    cli_table_free(t);
    return NULL;
}

bool cli_table_row(cli_table *t, const char *const *cells)
{
    return t && add_row(t, cells);
}

void cli_table_print(const cli_table *t)
{
    size_t *w;
    if (!t || !(w = calloc(t->ncols, sizeof *w)))
        return;
    for (size_t r = 0; r <= t->nrows; r++)
        for (size_t c = 0; c < t->ncols; c++) {
            size_t cw = text_width(t->cells[r * t->ncols + c]);
            if (cw > w[c])
                w[c] = cw;
        }
    for (size_t r = 0; r <= t->nrows; r++) {
        for (size_t c = 0; c < t->ncols; c++) {
            const char *cell = t->cells[r * t->ncols + c];
            size_t pad = w[c] - text_width(cell);
            bool last = c + 1 == t->ncols;
            if (c > 0)
                fputs("  ", stdout);
            if (t->align[c] == 'r')
                printf("%*s%s", (int)pad, "", cell);
            else if (last)   /* no trailing blanks */
                fputs(cell, stdout);
            else
                printf("%s%*s", cell, (int)pad, "");
        }
        fputc('\n', stdout);
    }
    free(w);
}

void cli_table_free(cli_table *t)
{
    if (!t)
        return;
    if (t->cells)
        for (size_t i = 0; i < (t->nrows + 1) * t->ncols; i++)
            free(t->cells[i]);
    free(t->cells);
    free(t->align);
    free(t);
}

/* ---- JSON ----------------------------------------------------------------- */

json_object *cli_json_string(const char *s)
{
    if (!s)
        return NULL;
    char *fixed = utf8_repair(s);
    json_object *o = fixed ? json_object_new_string(fixed) : NULL;
    free(fixed);
    return o;
}

json_object *cli_json_fixed(double v, int decimals)
{
    char text[64];
    snprintf(text, sizeof text, "%.*f", decimals, v);
    /* json-c would print a plain double with 17 significant digits
     * (1716096000.1234560013); the given text is printed as is. */
    return json_object_new_double_s(v, text);
}

json_object *cli_json_time(double epoch)
{
    char text[MAE__EPOCH_MAX + 1];
    if (!(epoch > 0))
        return NULL;
    /* The formatter of the events' times, so both print the same digits. */
    *mae__put_epoch(text, epoch) = '\0';
    return json_object_new_double_s(epoch, text);
}

json_object *cli_json_counts(const mae_counts *counts)
{
    json_object *o = json_object_new_object();
    for (size_t i = 0; o && counts && i < counts->count; i++)
        json_object_object_add(o, counts->items[i].key ? counts->items[i].key : "null",
                               json_object_new_int64(counts->items[i].count));
    return o;
}

json_object *cli_json_embed(const char *text)
{
    if (!text)
        return NULL;
    json_object *o = json_tokener_parse(text);
    return o ? o : cli_json_string(text);
}

int cli_json_print(json_object *obj)
{
    const char *text = json_object_to_json_string_ext(
        obj, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE);
    if (!text) {
        json_object_put(obj);
        cli_error("out of memory");
        return CLI_FAIL;
    }
    fputs(text, stdout);
    fputc('\n', stdout);
    json_object_put(obj);
    return cli_finish_stdout();
}

int cli_finish_stdout(void)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        cli_error("cannot write the output: %s", strerror(errno));
        return CLI_FAIL;
    }
    return CLI_OK;
}

/* ---- counts --------------------------------------------------------------- */

int64_t cli_counts_total(const mae_counts *counts)
{
    int64_t total = 0;
    for (size_t i = 0; counts && i < counts->count; i++)
        total += counts->items[i].count;
    return total;
}

int64_t cli_counts_get(const mae_counts *counts, const char *key)
{
    for (size_t i = 0; counts && i < counts->count; i++)
        if (counts->items[i].key && strcmp(counts->items[i].key, key) == 0)
            return counts->items[i].count;
    return 0;
}

void cli_counts_table(const char *head, const mae_counts *counts)
{
    const char *const headers[] = {head, "COUNT"};
    char n[32], key[128];
    cli_table *t = cli_table_new("lr", headers);
    for (size_t i = 0; t && counts && i < counts->count; i++) {
        const char *cells[] = {cli_fmt_cell(counts->items[i].key, 40, key, sizeof key),
                               cli_fmt_int(counts->items[i].count, n, sizeof n)};
        cli_table_row(t, cells);
    }
    const char *total[] = {"total", cli_fmt_int(cli_counts_total(counts), n, sizeof n)};
    cli_table_row(t, total);
    cli_table_print(t);
    cli_table_free(t);
}
