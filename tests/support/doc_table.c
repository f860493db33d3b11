/* Test support: reading the Markdown tables of docs/ (see doc_table.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "doc_table.h"

#ifndef MAE_SOURCE_DIR
#error "MAE_SOURCE_DIR must name the source tree"
#endif

char *doc_read(const char *path)
{
    char full[1024];
    snprintf(full, sizeof full, "%s/%s", MAE_SOURCE_DIR, path);
    FILE *f = fopen(full, "rb");
    if (!f)
        fail_msg("cannot open %s", full);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    assert_true(n >= 0);
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    fclose(f);
    return s;
}

const char *doc_find_row(const char *text, const char *key)
{
    char want[300];
    int n = snprintf(want, sizeof want, "| `%s` |", key);
    if (n < 0 || (size_t)n >= sizeof want)
        fail_msg("key too long: %s", key);
    for (const char *p = text; (p = strstr(p, want)) != NULL; p++)
        if (p == text || p[-1] == '\n')
            return p;
    return NULL;
}

const char *doc_row(const char *text, const char *what, const char *key)
{
    const char *r = doc_find_row(text, key);
    if (!r)
        fail_msg("%s has no table row for `%s`", what, key);
    return r;
}

char *doc_cell(const char *line, int i)
{
    const char *eol = strchr(line, '\n');
    if (!eol)
        eol = line + strlen(line);
    const char *p = line;
    for (int k = 0; k <= i; k++) {
        p = memchr(p, '|', (size_t)(eol - p));
        if (!p)
            fail_msg("the row \"%.*s\" has no cell %d", (int)(eol - line), line, i);
        p++;
    }
    const char *end = memchr(p, '|', (size_t)(eol - p));
    if (!end)
        fail_msg("the row \"%.*s\" has no cell %d", (int)(eol - line), line, i);
    while (*p == ' ')
        p++;
    while (end > p && end[-1] == ' ')
        end--;
    char *out = malloc((size_t)(end - p) + 1);
    assert_non_null(out);
    memcpy(out, p, (size_t)(end - p));
    out[end - p] = '\0';
    return out;
}
