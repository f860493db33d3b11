/* relay/log.c's limit (relay.md, "Log lines"): at most
 * MAE__RELAY_LOG_BURST lines of one kind a second, the rest counted and
 * named in one line once the second is over; a kind is a format, or for a
 * line passed through whole, its text. stderr is read back from a file.
 * Sums are asserted, not splits: a burst may straddle a second. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "relay/log.h"
#include "relay/server.h"

static char g_path[] = "/tmp/mae-relay-log-XXXXXX";
static long g_read;   /* what earlier tests left in the file */

static int setup(void **state)
{
    (void)state;
    int fd = mkstemp(g_path);
    if (fd < 0)
        return -1;
    close(fd);
    return freopen(g_path, "w", stderr) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    unlink(g_path);
    return 0;
}

/* What was written since the last call (malloc'd). */
static char *written(void)
{
    fflush(stderr);
    FILE *f = fopen(g_path, "r");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long end = ftell(f);
    fseek(f, g_read, SEEK_SET);
    char *s = calloc(1, (size_t)(end - g_read) + 1);
    assert_non_null(s);
    assert_int_equal(fread(s, 1, (size_t)(end - g_read), f), (size_t)(end - g_read));
    fclose(f);
    g_read = end;
    return s;
}

static size_t count(const char *s, const char *needle)
{
    size_t n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

/* The sum of the counts in lines "<name> (K similar lines suppressed)". */
static unsigned long long counted(const char *s, const char *name)
{
    unsigned long long sum = 0;
    char want[200];
    snprintf(want, sizeof want, "%s (", name);
    for (const char *p = s; (p = strstr(p, want)); p++) {
        unsigned long long k;
        if (sscanf(p + strlen(want), "%llu similar lines suppressed)", &k) == 1)
            sum += k;
    }
    return sum;
}

static void test_burst_of_one_kind(void **state)
{
    (void)state;
    for (int i = 0; i < 25; i++)
        mae__relay_say("client %s unauthorized", i % 2 ? "127.0.0.1:1" : "[::1]:2");
    mae__relay_log_flush();
    char *s = written();
    size_t shown = count(s, "unauthorized\n");
    unsigned long long n = counted(s, "client ... unauthorized");
    assert_true(shown <= 2 * MAE__RELAY_LOG_BURST);
    assert_int_equal(shown + n, 25);
    assert_true(n > 0);
    free(s);
}

static void test_kinds_are_apart(void **state)
{
    (void)state;
    for (int i = 0; i < MAE__RELAY_LOG_BURST; i++)
        mae__relay_say("event %s skipped: %zu bytes", "1-0", (size_t)i);
    /* Another format is another kind: written though the first is full. */
    mae__relay_say("client %s refused: too many clients", "x");
    /* Lines passed through whole are kinds by their text. */
    for (int i = 0; i < 14; i++) {
        mae__relay_say("%s", "redis: A; retrying with backoff");
        mae__relay_say("%s", "redis: B; retrying with backoff");
    }
    mae__relay_log_flush();
    char *s = written();
    assert_int_equal(count(s, "refused: too many clients\n"), 1);
    for (const char *k = "redis: A; retrying with backoff"; k;
         k = k[7] == 'A' ? "redis: B; retrying with backoff" : NULL) {
        char line[100];
        snprintf(line, sizeof line, "%s\n", k);
        assert_int_equal(count(s, line) + counted(s, k), 14);
    }
    free(s);
}

static void test_many_kinds(void **state)
{
    (void)state;
    /* More kinds than the table holds: each first line is written. */
    for (int i = 0; i < 200; i++) {
        char text[64];
        snprintf(text, sizeof text, "redis: kind %d", i);
        mae__relay_say("%s", text);
    }
    mae__relay_log_flush();
    char *s = written();
    assert_int_equal(count(s, "redis: kind "), 200);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_of_one_kind),
        cmocka_unit_test(test_kinds_are_apart),
        cmocka_unit_test(test_many_kinds),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
