/* docs/relay.md agrees with the relay it describes: its options table with
 * the command's usage line and the relay's defaults, its counters table
 * with the relay's table of metrics (mae__relay_metrics: names and
 * Prometheus types), and its log lines table with every line the relay's
 * sources can write (read from the C files of relay/, each format's
 * conversions written as "..."), both ways. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "doc_table.h"
#include "relay/metrics.h"
#include "relay/relay.h"

#ifndef MAE_SOURCE_DIR
#error "MAE_SOURCE_DIR must name the source tree"
#endif

static char *page(void)
{
    return doc_read("docs/relay.md");
}

/* ---- options ------------------------------------------------------------------ */

static void expect_default(const char *doc, const char *key, double want)
{
    char *c = doc_cell(doc_row(doc, "docs/relay.md's options", key), 1);
    if (strtod(c, NULL) != want)
        fail_msg("docs/relay.md: `%s` defaults to %s; the relay has %g", key, c, want);
    free(c);
}

static void test_options_table(void **state)
{
    (void)state;
#ifndef MAE_CLI_PATH
    skip();
#else
    char *doc = page();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "%s events serve --help 2>&1", MAE_CLI_PATH);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char help[8192];
    size_t n = fread(help, 1, sizeof help - 1, p);
    help[n] = '\0';
    pclose(p);
    /* The usage line's options: "[--flag ARG]" each. */
    const char *serve = strstr(help, "events serve");
    assert_non_null(serve);
    const char *eol = strchr(serve, '\n');
    int options = 0;
    for (const char *q = serve; (q = strstr(q, "[--")) && q < eol; q++) {
        const char *close = strchr(q, ']');
        char key[128];
        snprintf(key, sizeof key, "%.*s", (int)(close - q - 1), q + 1);
        if (!doc_find_row(doc, key))
            fail_msg("docs/relay.md has no option row for `%s` (the usage line has it)", key);
        options++;
    }
    assert_true(options >= 9);
    mae__relay_config c;
    mae__relay_config_init(&c);
    expect_default(doc, "--ping-interval SECONDS", c.ping_interval);
    expect_default(doc, "--max-clients N", (double)c.max_clients);
    expect_default(doc, "--client-buffer BYTES", (double)c.client_buffer);
    expect_default(doc, "--max-event-bytes BYTES", (double)c.max_event_bytes);
    char want[128];
    snprintf(want, sizeof want, "`%s`", c.path);
    char *got = doc_cell(doc_row(doc, "docs/relay.md's options", "--path PATH"), 1);
    assert_string_equal(got, want);
    free(got);
    free(doc);
#endif
}

/* ---- counters ------------------------------------------------------------------- */

static void test_counters_table(void **state)
{
    (void)state;
    char *doc = page();
    /* Each metric of the relay's table has its row, with its type. */
    for (size_t i = 0; i < mae__relay_metric_count; i++) {
        const mae__relay_metric *m = &mae__relay_metrics[i];
        char *c = doc_cell(doc_row(doc, "docs/relay.md's counters", m->name), 1);
        if (strcmp(c, m->type) != 0)
            fail_msg("docs/relay.md gives `%s` the type %s; /metrics says %s", m->name, c,
                     m->type);
        free(c);
    }
    /* And every row names a metric of the table. */
    size_t rows = 0;
    for (const char *q = doc; (q = strstr(q, "\n| `mailagent_relay_")); q++) {
        char name[128];
        assert_int_equal(sscanf(q, "\n| `%127[a-z_]`", name), 1);
        bool found = false;
        for (size_t i = 0; i < mae__relay_metric_count && !found; i++)
            found = strcmp(mae__relay_metrics[i].name, name) == 0;
        if (!found)
            fail_msg("docs/relay.md lists `%s`, which /metrics does not have", name);
        rows++;
    }
    assert_int_equal(rows, mae__relay_metric_count);
    free(doc);
}

/* ---- log lines ---------------------------------------------------------------------- */

#define MAX_LINES 64
static char g_lines[MAX_LINES][200];
static int g_nlines;

/* The format literal after `call` at p, with each conversion as "...". */
static void add_format(const char *p)
{
    char out[200];
    size_t n = 0;
    for (; *p && *p != '"' && n + 4 < sizeof out; p++) {
        if (*p == '%') {
            p++;
            while (*p && strchr("0123456789.-lhzj", *p))
                p++;
            /* Two conversions in a row read as one "...". */
            if (n < 3 || memcmp(out + n - 3, "...", 3) != 0) {
                memcpy(out + n, "...", 3);
                n += 3;
            }
        } else {
            out[n++] = *p;
        }
    }
    out[n] = '\0';
    if (strcmp(out, "...") == 0)
        return;   /* a source's own line, passed through */
    for (int i = 0; i < g_nlines; i++)
        if (strcmp(g_lines[i], out) == 0)
            return;
    assert_true(g_nlines < MAX_LINES);
    snprintf(g_lines[g_nlines++], sizeof g_lines[0], "%s", out);
}

static void scan_sources(void)
{
    static const char *const calls[] = {"mae__relay_say(\"", "logf_(s, \"", "src_log(s, \"",
                                        "say_line(\""};
    DIR *d = opendir(MAE_SOURCE_DIR "/relay");
    assert_non_null(d);
    struct dirent *e;
    g_nlines = 0;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 3 || strcmp(e->d_name + len - 2, ".c") != 0)
            continue;
        char path[600];
        snprintf(path, sizeof path, "relay/%s", e->d_name);
        char *src = doc_read(path);
        for (size_t k = 0; k < sizeof calls / sizeof calls[0]; k++)
            for (const char *q = src; (q = strstr(q, calls[k])); q++)
                add_format(q + strlen(calls[k]));
        free(src);
    }
    closedir(d);
}

static void test_log_lines_table(void **state)
{
    (void)state;
    char *doc = page();
    scan_sources();
    assert_true(g_nlines >= 10);
    for (int i = 0; i < g_nlines; i++)
        if (!doc_find_row(doc, g_lines[i]))
            fail_msg("docs/relay.md's log lines have no row for `%s`", g_lines[i]);
    /* Every row of the table is a line the relay writes. */
    const char *t = strstr(doc, "### Log lines");
    assert_non_null(t);
    const char *end = strstr(t, "\n## ");
    int rows = 0;
    for (const char *q = t; (q = strstr(q, "\n| `")) && q < end; q++) {
        char key[200];
        assert_int_equal(sscanf(q, "\n| `%199[^`]`", key), 1);
        bool found = false;
        for (int i = 0; i < g_nlines && !found; i++)
            found = strcmp(g_lines[i], key) == 0;
        if (!found)
            fail_msg("docs/relay.md lists the log line `%s`, which the relay never writes", key);
        rows++;
    }
    assert_int_equal(rows, g_nlines);
    free(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_options_table),
        cmocka_unit_test(test_counters_table),
        cmocka_unit_test(test_log_lines_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
