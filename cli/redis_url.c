/* Parsing of the Redis URL for `events tail`, which talks to Redis itself
 * (the library's parser is internal to its publisher). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* A copy of s[0..n) with %XX decoded (passwords may hold '@' or ':'). */
static char *decode(const char *s, size_t n)
{
    char *d = malloc(n + 1), *o = d;
    if (!d)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
            isxdigit((unsigned char)s[i + 2])) {
            char hex[3] = {s[i + 1], s[i + 2], 0};
            *o++ = (char)strtol(hex, NULL, 16);
            i += 2;
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return d;
}

void cli_redis_addr_free(cli_redis_addr *a)
{
    if (!a)
        return;
    free(a->host);
    free(a->socket_path);
    free(a->user);
    free(a->password);
    memset(a, 0, sizeof *a);
}

static bool fail(cli_redis_addr *a, char *err, size_t errlen, const char *why)
{
    cli_redis_addr_free(a);
    snprintf(err, errlen, "%s", why);
    return false;
}

bool cli_redis_addr_parse(const char *url, cli_redis_addr *out, char *err, size_t errlen)
{
    cli_redis_addr a = {0};
    const char *p, *at, *end, *hostend, *colon;

    if (strncmp(url, "unix://", 7) == 0) {
        if (url[7] != '/')
            return fail(&a, err, errlen, "unix:// wants an absolute socket path");
        if (!(a.socket_path = strdup(url + 7)))
            return fail(&a, err, errlen, "out of memory");
        *out = a;
        return true;
    }
    if (strncmp(url, "redis://", 8) != 0)
        return fail(&a, err, errlen, "the URL must start with redis:// or unix://");
    p = url + 8;
    end = p + strcspn(p, "/?#");
    /* The last '@' ends the credentials: a password may contain '@'. */
    at = NULL;
    for (const char *q = p; q < end; q++)
        if (*q == '@')
            at = q;
    if (at) {
        colon = memchr(p, ':', (size_t)(at - p));
        if (colon) {
            if (colon > p && !(a.user = decode(p, (size_t)(colon - p))))
                return fail(&a, err, errlen, "out of memory");
            if (!(a.password = decode(colon + 1, (size_t)(at - colon - 1))))
                return fail(&a, err, errlen, "out of memory");
        } else if (!(a.password = decode(p, (size_t)(at - p)))) {
            /* redis://secret@host: a bare word is the password, as redis-cli. */
            return fail(&a, err, errlen, "out of memory");
        }
        p = at + 1;
    }
    a.port = 6379;
    if (*p == '[') {   /* [IPv6]:port */
        const char *close = memchr(p, ']', (size_t)(end - p));
        if (!close || close == p + 1)
            return fail(&a, err, errlen, "unterminated [IPv6] host");
        a.host = dup_n(p + 1, (size_t)(close - p - 1));
        hostend = close + 1;
        if (hostend < end && *hostend != ':')
            return fail(&a, err, errlen, "garbage after the [IPv6] host");
    } else {
        colon = memchr(p, ':', (size_t)(end - p));
        hostend = colon ? colon : end;
        if (hostend == p)
            return fail(&a, err, errlen, "missing host");
        a.host = dup_n(p, (size_t)(hostend - p));
    }
    if (!a.host)
        return fail(&a, err, errlen, "out of memory");
    if (hostend < end && *hostend == ':') {
        int64_t port;
        char digits[16];
        size_t n = (size_t)(end - hostend - 1);
        if (n == 0 || n >= sizeof digits)
            return fail(&a, err, errlen, "bad port");
        memcpy(digits, hostend + 1, n);
        digits[n] = '\0';
        if (!cli_parse_int64(digits, 1, 65535, &port))
            return fail(&a, err, errlen, "bad port");
        a.port = (int)port;
    }
    /* "/db" is accepted and ignored: pub/sub channels span all databases. */
    if (*end == '/' && end[1]) {
        int64_t db;
        if (!cli_parse_int64(end + 1, 0, 1000000, &db))
            return fail(&a, err, errlen, "bad database number");
    } else if (*end && *end != '/') {
        return fail(&a, err, errlen, "unexpected query or fragment");
    }
    *out = a;
    return true;
}
