/* This module reads the environment's Redis URL and credentials the one way
 * docs/operations.md describes, for the command, the relay and the demo
 * watcher alike. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mailagent/common.h>

#include "core/env.h"

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

const char *mae__env_get(mae__getenv_fn get, const char *name)
{
    const char *v = get ? get(name) : getenv(name);
    if (!v)
        return NULL;
    for (const char *c = v; *c; c++)
        if (!is_ws(*c))
            return v;
    return NULL;
}

/* The bounds of v without its surrounding whitespace. */
static void trim(const char *v, const char **start, size_t *len)
{
    const char *e = v + strlen(v);
    while (is_ws(*v))
        v++;
    while (e > v && is_ws(e[-1]))
        e--;
    *start = v;
    *len = (size_t)(e - v);
}

static char *dup_n(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

/* REDIS_DB as MailAgent's configuration takes it: a whole number, written
 * into db (digits only, no leading zeros kept). */
static bool parse_db(const char *v, char *db, size_t size)
{
    const char *s;
    size_t n;
    trim(v, &s, &n);
    if (n > 0 && *s == '+') {
        s++;
        n--;
    }
    if (n == 0)
        return false;
    unsigned long long x = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        x = x * 10 + (unsigned)(s[i] - '0');
        if (x > 2147483647ULL)
            return false;
    }
    snprintf(db, size, "%llu", x);
    return true;
}

int mae__env_redis_url(mae__getenv_fn get, char **out, const char **from, char *err,
                       size_t errlen)
{
    const char *v, *s;
    size_t n;

    *out = NULL;
    if (from)
        *from = NULL;
    if (errlen)
        err[0] = '\0';
    if ((v = mae__env_get(get, "MAILAGENT_REDIS_URL"))) {
        trim(v, &s, &n);
        if (!(*out = dup_n(s, n)))
            return MAE_ENOMEM;
        if (from)
            *from = "MAILAGENT_REDIS_URL";
        return MAE_OK;
    }
    if (!(v = mae__env_get(get, "REDIS_URL")))
        return MAE_OK;

    char db[16];
    const char *dbv = mae__env_get(get, "REDIS_DB");
    if (!parse_db(dbv ? dbv : MAE_ENV_DEFAULT_REDIS_DB, db, sizeof db)) {
        snprintf(err, errlen, "REDIS_DB must be a database number from 0 to 2147483647, "
                 "not '%s'", dbv);
        return MAE_EINVAL;
    }
    trim(v, &s, &n);
    while (n > 0 && s[n - 1] == '/')
        n--;
    const char *scheme_end = memchr(s, ':', n);
    bool is_unix = n >= 7 && memcmp(s, "unix://", 7) == 0;
    if (memchr(s, '?', n) || memchr(s, '#', n)) {
        snprintf(err, errlen, "REDIS_URL has a query or fragment, to which MailAgent's "
                 "\"/$REDIS_DB\" cannot be appended: give the database in REDIS_DB, or "
                 "the whole URL in MAILAGENT_REDIS_URL");
        return MAE_EINVAL;
    }
    if (!is_unix && scheme_end && (size_t)(scheme_end - s) + 3 <= n &&
        memcmp(scheme_end, "://", 3) == 0) {
        /* The host starts after the last '@': a password may hold a '/'. */
        const char *auth = scheme_end + 3;
        for (const char *c = auth; c < s + n; c++)
            if (*c == '@')
                auth = c + 1;
        const char *slash = memchr(auth, '/', n - (size_t)(auth - s));
        if (slash) {
            size_t path = n - (size_t)(slash - s);
            if (path == 2 && slash[1] == '0') {
                n = (size_t)(slash - s); /* "/0": REDIS_DB takes its place */
            } else {
                snprintf(err, errlen, "REDIS_URL already names a database (%.*s), to which "
                         "MailAgent would append \"/%s\": give the database in REDIS_DB, or "
                         "the whole URL in MAILAGENT_REDIS_URL",
                         (int)(path > 40 ? 40 : path), slash, db);
                return MAE_EINVAL;
            }
        }
    }
    size_t len = n + 1 + strlen(db) + 4;
    char *url = malloc(len + 1);
    if (!url)
        return MAE_ENOMEM;
    snprintf(url, len + 1, "%.*s%s%s", (int)n, s, is_unix ? "?db=" : "/", db);
    *out = url;
    if (from)
        *from = "REDIS_URL";
    return MAE_OK;
}

int mae__env_credential(mae__getenv_fn get, const char *name, const char **out, char *err,
                        size_t errlen)
{
    const char *v = get ? get(name) : getenv(name);
    *out = NULL;
    if (errlen)
        err[0] = '\0';
    if (!v || !*v)
        return MAE_OK;
    size_t n = strlen(v);
    if (is_ws(v[0]) || is_ws(v[n - 1]) || v[0] == '\v' || v[0] == '\f' ||
        v[n - 1] == '\v' || v[n - 1] == '\f') {
        snprintf(err, errlen, "%s has leading or trailing whitespace, so no request could "
                 "ever match it (header values arrive trimmed): remove it", name);
        return MAE_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c < 0x20 || c == 0x7F) {
            snprintf(err, errlen, "%s contains a control character, which no request "
                     "header can carry: remove it", name);
            return MAE_EINVAL;
        }
    }
    *out = v;
    return MAE_OK;
}

int mae__env_relay(mae__getenv_fn get, int local_default, char **url, const char **token,
                   char *err, size_t errlen)
{
    const char *v, *s;
    size_t n;

    *url = NULL;
    *token = NULL;
    int rc = mae__env_credential(get, "MAILAGENT_LOCAL_API_TOKEN", token, err, errlen);
    if (rc != MAE_OK)
        return rc;
    if ((v = mae__env_get(get, "MAILAGENT_RELAY_URL"))) {
        trim(v, &s, &n);
        if (!(*url = dup_n(s, n)))
            return MAE_ENOMEM;
        return MAE_OK;
    }
    if (!local_default)
        return MAE_OK;
    char port[16];
    const char *pv = mae__env_get(get, "SSE_LOCAL_PORT");
    if (!parse_db(pv ? pv : MAE_ENV_DEFAULT_LOCAL_PORT, port, sizeof port) ||
        strtol(port, NULL, 10) < 1 || strtol(port, NULL, 10) > 65535) {
        snprintf(err, errlen, "SSE_LOCAL_PORT must be a port number from 1 to 65535, not '%s'",
                 pv);
        *token = NULL;
        return MAE_EINVAL;
    }
    char buf[40];
    snprintf(buf, sizeof buf, "http://127.0.0.1:%s", port);
    if (!(*url = dup_n(buf, strlen(buf))))
        return MAE_ENOMEM;
    return MAE_OK;
}
