/* Unit tests of the environment's configuration (core/env.c): the Redis URL
 * from MAILAGENT_REDIS_URL or MailAgent's REDIS_URL + REDIS_DB, blank
 * variables as unset, and credentials refused when no header could match
 * them. tests/python/test_env_parity.py runs the same table through the
 * Python mirror and this program's --table output. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <mailagent/common.h>

#include "core/env.h"

/* A fake environment: name=value pairs, NULL-terminated. */
static const char *const *fake;

static const char *fake_get(const char *name)
{
    for (const char *const *p = fake; p && *p; p += 2)
        if (strcmp(p[0], name) == 0)
            return p[1];
    return NULL;
}

#define ENV(...) ((const char *const[]){__VA_ARGS__, NULL})
#define ERR NULL

/* The table both implementations are held to: environment, then the URL
 * (NULL: none) or ERR with a fragment the error must contain. */
static const struct url_case {
    const char *const *env;
    const char *url;
    const char *from;
    const char *err_has;
} url_cases[] = {
    {ENV("X", "1"), NULL, NULL, NULL},
    {ENV("MAILAGENT_REDIS_URL", "redis://a:1/3"), "redis://a:1/3", "MAILAGENT_REDIS_URL", NULL},
    {ENV("MAILAGENT_REDIS_URL", "  redis://a:1/3\n"), "redis://a:1/3", "MAILAGENT_REDIS_URL", NULL},
    {ENV("MAILAGENT_REDIS_URL", "redis://m", "REDIS_URL", "redis://r", "REDIS_DB", "5"),
     "redis://m", "MAILAGENT_REDIS_URL", NULL},
    {ENV("MAILAGENT_REDIS_URL", "", "REDIS_URL", "redis://r"), "redis://r/2", "REDIS_URL", NULL},
    {ENV("MAILAGENT_REDIS_URL", " \t", "REDIS_URL", "redis://r"), "redis://r/2", "REDIS_URL", NULL},
    {ENV("REDIS_URL", "redis://localhost:6379"), "redis://localhost:6379/2", "REDIS_URL", NULL},
    {ENV("REDIS_URL", "redis://localhost:6379", "REDIS_DB", "0"), "redis://localhost:6379/0",
     "REDIS_URL", NULL},
    {ENV("REDIS_URL", "redis://h", "REDIS_DB", " 7 "), "redis://h/7", "REDIS_URL", NULL},
    {ENV("REDIS_URL", "redis://h", "REDIS_DB", ""), "redis://h/2", "REDIS_URL", NULL},
    {ENV("REDIS_URL", "redis://h/", "REDIS_DB", "4"), "redis://h/4", "REDIS_URL", NULL},
    {ENV("REDIS_URL", "redis://h:1/0", "REDIS_DB", "4"), "redis://h:1/4", "REDIS_URL", NULL},
    {ENV("REDIS_URL", "redis://:pw@h:1"), "redis://:pw@h:1/2", "REDIS_URL", NULL},
    {ENV("REDIS_URL", "redis://u:p/w@h:1"), "redis://u:p/w@h:1/2", "REDIS_URL", NULL},
    {ENV("REDIS_URL", "redis://u:p/w@h:1/0", "REDIS_DB", "3"), "redis://u:p/w@h:1/3",
     "REDIS_URL", NULL},
    {ENV("REDIS_URL", "redis://u:p/w@h:1/9"), ERR, NULL, "already names a database (/9)"},
    {ENV("REDIS_URL", "unix:///run/redis.sock", "REDIS_DB", "3"), "unix:///run/redis.sock?db=3",
     "REDIS_URL", NULL},
    {ENV("REDIS_URL", "", "REDIS_DB", "3"), NULL, NULL, NULL},
    {ENV("REDIS_URL", "   "), NULL, NULL, NULL},
    {ENV("REDIS_URL", "redis://h:1/5"), ERR, NULL, "REDIS_URL already names a database (/5)"},
    {ENV("REDIS_URL", "redis://h?db=1"), ERR, NULL, "REDIS_URL has a query"},
    {ENV("REDIS_URL", "redis://h", "REDIS_DB", "two"), ERR, NULL, "REDIS_DB must be"},
    {ENV("REDIS_URL", "redis://h", "REDIS_DB", "-1"), ERR, NULL, "REDIS_DB must be"},
    {ENV("REDIS_URL", "redis://h", "REDIS_DB", "99999999999"), ERR, NULL, "REDIS_DB must be"},
};

/* Where events go with no Redis URL: MAILAGENT_RELAY_URL, else (for the
 * Python drop-in's process-wide publisher only, local_default) the
 * loopback MailAgent posts to; the token alongside. */
static const struct relay_case {
    const char *const *env;
    int local_default;
    const char *url;
    const char *token;
    const char *err_has;
} relay_cases[] = {
    {ENV("X", "1"), 0, NULL, NULL, NULL},
    {ENV("X", "1"), 1, "http://127.0.0.1:9200", NULL, NULL},
    {ENV("SSE_LOCAL_PORT", "9300"), 1, "http://127.0.0.1:9300", NULL, NULL},
    {ENV("SSE_LOCAL_PORT", " 9300 "), 1, "http://127.0.0.1:9300", NULL, NULL},
    {ENV("SSE_LOCAL_PORT", ""), 1, "http://127.0.0.1:9200", NULL, NULL},
    {ENV("SSE_LOCAL_PORT", "9300"), 0, NULL, NULL, NULL},
    {ENV("SSE_LOCAL_PORT", "0"), 1, ERR, NULL, "SSE_LOCAL_PORT must be a port"},
    {ENV("SSE_LOCAL_PORT", "65536"), 1, ERR, NULL, "SSE_LOCAL_PORT must be a port"},
    {ENV("SSE_LOCAL_PORT", "http"), 1, ERR, NULL, "SSE_LOCAL_PORT must be a port"},
    {ENV("SSE_LOCAL_PORT", "99999999999"), 1, ERR, NULL, "SSE_LOCAL_PORT must be a port"},
    {ENV("MAILAGENT_RELAY_URL", "http://h:1"), 0, "http://h:1", NULL, NULL},
    {ENV("MAILAGENT_RELAY_URL", " http://h:1/\n", "SSE_LOCAL_PORT", "5"), 1, "http://h:1/",
     NULL, NULL},
    {ENV("MAILAGENT_RELAY_URL", " ", "SSE_LOCAL_PORT", "5"), 1, "http://127.0.0.1:5", NULL,
     NULL},
    {ENV("MAILAGENT_RELAY_URL", "http://h", "SSE_LOCAL_PORT", "x"), 1, "http://h", NULL, NULL},
    {ENV("MAILAGENT_RELAY_URL", "http://h", "MAILAGENT_LOCAL_API_TOKEN", "t0k"), 0, "http://h",
     "t0k", NULL},
    {ENV("MAILAGENT_LOCAL_API_TOKEN", "t0k"), 0, NULL, "t0k", NULL},
    {ENV("MAILAGENT_LOCAL_API_TOKEN", ""), 1, "http://127.0.0.1:9200", NULL, NULL},
    {ENV("MAILAGENT_LOCAL_API_TOKEN", "t0k "), 1, ERR, NULL, "MAILAGENT_LOCAL_API_TOKEN has"},
};

static void test_relay_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof relay_cases / sizeof *relay_cases; i++) {
        const struct relay_case *c = &relay_cases[i];
        char *url = (char *)"unset";
        const char *token = "unset";
        char err[256];
        fake = c->env;
        int rc = mae__env_relay(fake_get, c->local_default, &url, &token, err, sizeof err);
        if (c->err_has) {
            if (rc != MAE_EINVAL || url || token || !strstr(err, c->err_has))
                fail_msg("relay case %zu: rc %d err '%s', want EINVAL with '%s'", i, rc, err,
                         c->err_has);
            continue;
        }
        if (rc != MAE_OK)
            fail_msg("relay case %zu: rc %d (%s)", i, rc, err);
        if ((c->url == NULL) != (url == NULL) || (url && strcmp(url, c->url) != 0))
            fail_msg("relay case %zu: url %s, want %s", i, url ? url : "(null)",
                     c->url ? c->url : "(null)");
        if ((c->token == NULL) != (token == NULL) || (token && strcmp(token, c->token) != 0))
            fail_msg("relay case %zu: token %s, want %s", i, token ? token : "(null)",
                     c->token ? c->token : "(null)");
        free(url);
    }
}

static void test_redis_url_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof url_cases / sizeof *url_cases; i++) {
        const struct url_case *c = &url_cases[i];
        char *url = (char *)"unset";
        const char *from = "unset";
        char err[256];
        fake = c->env;
        int rc = mae__env_redis_url(fake_get, &url, &from, err, sizeof err);
        if (c->err_has) {
            if (rc != MAE_EINVAL || url != NULL || !strstr(err, c->err_has))
                fail_msg("case %zu: rc %d url %s err '%s', want EINVAL with '%s'", i, rc,
                         url ? url : "(null)", err, c->err_has);
            continue;
        }
        if (rc != MAE_OK)
            fail_msg("case %zu: rc %d (%s)", i, rc, err);
        if ((c->url == NULL) != (url == NULL) || (url && strcmp(url, c->url) != 0))
            fail_msg("case %zu: url %s, want %s", i, url ? url : "(null)",
                     c->url ? c->url : "(null)");
        if ((c->from == NULL) != (from == NULL) || (from && strcmp(from, c->from) != 0))
            fail_msg("case %zu: from %s, want %s", i, from ? from : "(null)",
                     c->from ? c->from : "(null)");
        free(url);
    }
}

static void test_blank_is_unset(void **state)
{
    (void)state;
    fake = ENV("A", "", "B", " \t\r\n", "C", " x ");
    assert_null(mae__env_get(fake_get, "A"));
    assert_null(mae__env_get(fake_get, "B"));
    assert_string_equal(mae__env_get(fake_get, "C"), " x ");
    assert_null(mae__env_get(fake_get, "D"));
}

static void test_credentials(void **state)
{
    (void)state;
    static const struct {
        const char *value;
        int rc;
        const char *err_has;
    } cases[] = {
        {NULL, MAE_OK, NULL},
        {"", MAE_OK, NULL},
        {"abc", MAE_OK, NULL},
        {"a b", MAE_OK, NULL},
        {"abc ", MAE_EINVAL, "leading or trailing whitespace"},
        {" abc", MAE_EINVAL, "leading or trailing whitespace"},
        {"abc\n", MAE_EINVAL, "leading or trailing whitespace"},
        {"\tabc", MAE_EINVAL, "leading or trailing whitespace"},
        {"   ", MAE_EINVAL, "leading or trailing whitespace"},
        {"ab\x01" "c", MAE_EINVAL, "control character"},
        {"ab\x7f" "c", MAE_EINVAL, "control character"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *env[] = {"WEBHOOK_SECRET", cases[i].value, NULL};
        const char *out = "unset";
        char err[256];
        fake = cases[i].value ? env : NULL;
        int rc = mae__env_credential(fake_get, "WEBHOOK_SECRET", &out, err, sizeof err);
        if (rc != cases[i].rc)
            fail_msg("case %zu: rc %d, want %d", i, rc, cases[i].rc);
        if (rc == MAE_OK) {
            bool want_null = !cases[i].value || !*cases[i].value;
            if (want_null ? out != NULL : (!out || strcmp(out, cases[i].value) != 0))
                fail_msg("case %zu: wrong value", i);
        } else {
            if (out || !strstr(err, cases[i].err_has) || !strstr(err, "WEBHOOK_SECRET"))
                fail_msg("case %zu: err '%s'", i, err);
            if (strstr(err, "abc"))
                fail_msg("case %zu: the error shows the secret: '%s'", i, err);
        }
    }
}

static void print_env(const char *const *env)
{
    printf("{");
    for (const char *const *p = env; *p; p += 2) {
        printf("%s\"%s\":\"", p == env ? "" : ",", p[0]);
        for (const char *s = p[1]; *s; s++) {
            if (*s == '\n' || *s == '\t')
                printf("\\%c", *s == '\n' ? 'n' : 't');
            else
                putchar(*s);
        }
        putchar('"');
    }
    printf("}");
}

static void print_str(const char *s)
{
    if (s)
        printf("\"%s\"", s);
    else
        printf("null");
}

/* --table: both tables as JSON lines ("kind" says which), for the Python
 * parity test. */
static void print_table(void)
{
    for (size_t i = 0; i < sizeof relay_cases / sizeof *relay_cases; i++) {
        const struct relay_case *c = &relay_cases[i];
        printf("{\"kind\":\"relay\",\"env\":");
        print_env(c->env);
        printf(",\"local_default\":%s,\"url\":", c->local_default ? "true" : "false");
        print_str(c->url);
        printf(",\"token\":");
        print_str(c->token);
        printf(",\"error\":");
        print_str(c->err_has);
        printf("}\n");
    }
    for (size_t i = 0; i < sizeof url_cases / sizeof *url_cases; i++) {
        const struct url_case *c = &url_cases[i];
        printf("{\"kind\":\"redis\",\"env\":{");
        for (const char *const *p = c->env; *p; p += 2) {
            printf("%s\"%s\":\"", p == c->env ? "" : ",", p[0]);
            for (const char *s = p[1]; *s; s++) {
                if (*s == '\n' || *s == '\t')
                    printf("\\%c", *s == '\n' ? 'n' : 't');
                else
                    putchar(*s);
            }
            putchar('"');
        }
        printf("},\"url\":");
        if (c->url)
            printf("\"%s\"", c->url);
        else
            printf("null");
        printf(",\"error\":");
        if (c->err_has)
            printf("\"%s\"", c->err_has);
        else
            printf("null");
        printf("}\n");
    }
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--table") == 0) {
        print_table();
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redis_url_table),
        cmocka_unit_test(test_relay_table),
        cmocka_unit_test(test_blank_is_unset),
        cmocka_unit_test(test_credentials),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
