/* This module implements mae__url_parse: the redis:// and unix:// URL forms
 * of docs/publisher.md, rejecting anything malformed with a sentence that names
 * the offending part. */
#include <arpa/inet.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>

#include <mailagent/common.h>

#include "core/text.h"
#include "core/url.h"

/* How much of an offending piece an error quotes: enough to recognise it,
 * short enough for the publisher's error line. */
#define PIECE 40
#define DEFAULT_PORT 6379

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return MAE_EINVAL;
}

static int clip(size_t n)
{
    return n > PIECE ? PIECE : (int)n;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Copies s[0..n) percent-decoded into *out (malloc'd). A secret piece (the
 * password) is never quoted in the error text, since errors end up in logs. */
static int decode(const char *s, size_t n, const char *what, bool secret, char **out, char *err,
                  size_t errlen)
{
    char *d = malloc(n + 1);
    size_t j = 0;
    if (!d)
        return MAE_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            d[j++] = s[i];
            continue;
        }
        int hi = i + 1 < n ? mae__hex_digit((unsigned char)s[i + 1]) : -1;
        int lo = hi >= 0 && i + 2 < n ? mae__hex_digit((unsigned char)s[i + 2]) : -1;
        if (lo < 0) {
            free(d);
            if (secret)
                return fail(err, errlen, "redis URL: bad percent escape in the %s", what);
            return fail(err, errlen, "redis URL: bad percent escape \"%.*s\" in the %s",
                        (int)(n - i < 3 ? n - i : 3), s + i, what);
        }
        if (hi == 0 && lo == 0) {
            free(d);
            return fail(err, errlen, "redis URL: %%00 is not allowed in the %s", what);
        }
        d[j++] = (char)(hi << 4 | lo);
        i += 2;
    }
    d[j] = '\0';
    *out = d;
    return 0;
}

/* Parses a non-negative decimal of s[0..n) no greater than max; -1 when s is
 * not all digits (or empty), -2 when it is too large. */
static long number(const char *s, size_t n, long max)
{
    long v = 0;
    if (n == 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return -1;
        if (v > (max - (s[i] - '0')) / 10)
            return -2;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static int parse_db(const char *s, size_t n, mae__url *u, char *err, size_t errlen)
{
    long v = number(s, n, INT_MAX);
    if (v == -1)
        return fail(err, errlen, "redis URL: database \"%.*s\" is not a non-negative integer",
                    clip(n), s);
    if (v == -2)
        return fail(err, errlen, "redis URL: database \"%.*s\" is out of range", clip(n), s);
    u->db = (int)v;
    return 0;
}

static bool host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '-' ||
           c == '_' || c == '.';
}

/* A host name (labels of letters, digits, '-' and '_', one optional final
 * dot) or, when it is all digits and dots, a dotted IPv4 address. */
static int check_host(const char *h, size_t n, char *err, size_t errlen)
{
    bool numeric = true;
    size_t label = 0;

    if (n == 0)
        return fail(err, errlen, "redis URL: missing host");
    if (n > 253)
        return fail(err, errlen, "redis URL: host name is longer than 253 characters");
    for (size_t i = 0; i < n; i++) {
        if (!host_char(h[i]))
            return fail(err, errlen,
                        "redis URL: host \"%.*s\" contains a character not allowed in a host name",
                        clip(n), h);
        if (h[i] == '.') {
            if (label == 0)
                return fail(err, errlen, "redis URL: host \"%.*s\" has an empty label", clip(n),
                            h);
            label = 0;
            continue;
        }
        if (!is_digit(h[i]))
            numeric = false;
        if (++label > 63)
            return fail(err, errlen,
                        "redis URL: host \"%.*s\" has a label longer than 63 characters",
                        clip(n), h);
    }
    if (numeric) {
        char tmp[INET_ADDRSTRLEN];
        struct in_addr a;
        bool ok = n < sizeof tmp;
        if (ok) {
            memcpy(tmp, h, n);
            tmp[n] = '\0';
            ok = inet_pton(AF_INET, tmp, &a) == 1;
        }
        if (!ok)
            return fail(err, errlen, "redis URL: host \"%.*s\" is not a valid IPv4 address",
                        clip(n), h);
    }
    return 0;
}

static int check_ipv6(const char *h, size_t n, char *err, size_t errlen)
{
    char tmp[INET6_ADDRSTRLEN];
    struct in6_addr a;
    bool ok = n > 0 && n < sizeof tmp;
    if (ok) {
        memcpy(tmp, h, n);
        tmp[n] = '\0';
        ok = inet_pton(AF_INET6, tmp, &a) == 1;
    }
    if (!ok)
        return fail(err, errlen, "redis URL: \"[%.*s]\" is not a valid IPv6 address", clip(n),
                    h);
    return 0;
}

static int copy(const char *s, size_t n, char **out)
{
    char *d = malloc(n + 1);
    if (!d)
        return MAE_ENOMEM;
    memcpy(d, s, n);
    d[n] = '\0';
    *out = d;
    return 0;
}

/* [[user]:password@]host[:port][/db] after "redis://". */
static int parse_tcp(const char *s, mae__url *u, char *err, size_t errlen)
{
    size_t alen = strcspn(s, "/?#");
    const char *hp = s, *end = s + alen, *at = NULL;
    int rc;

    for (const char *q = s; q < end; q++)
        if (*q == '@')
            at = q; /* the last one: an unencoded '@' in a password still works */
    if (at) {
        const char *colon = memchr(s, ':', (size_t)(at - s));
        if (!colon)
            return fail(err, errlen,
                        "redis URL: the part before '@' has no ':'; write "
                        "redis://:password@host or redis://user:password@host");
        if (colon > s && (rc = decode(s, (size_t)(colon - s), "user name", false, &u->user,
                                      err, errlen)) != 0)
            return rc;
        rc = decode(colon + 1, (size_t)(at - colon - 1), "password", true, &u->password, err,
                    errlen);
        if (rc != 0)
            return rc;
        hp = at + 1;
    }

    const char *host = hp, *hend, *port = NULL;
    if (*hp == '[') {
        const char *close = memchr(hp, ']', (size_t)(end - hp));
        if (!close)
            return fail(err, errlen, "redis URL: IPv6 address has no closing ']'");
        host = hp + 1;
        hend = close;
        if ((rc = check_ipv6(host, (size_t)(hend - host), err, errlen)) != 0)
            return rc;
        if (close + 1 < end) {
            if (close[1] != ':')
                return fail(err, errlen, "redis URL: unexpected \"%.*s\" after the IPv6 address",
                            clip((size_t)(end - close - 1)), close + 1);
            port = close + 2;
        }
    } else {
        const char *colon = memchr(hp, ':', (size_t)(end - hp));
        hend = colon ? colon : end;
        if (colon && memchr(colon + 1, ':', (size_t)(end - colon - 1)))
            return fail(err, errlen,
                        "redis URL: an IPv6 address must be written in brackets, e.g. "
                        "redis://[::1]:6379");
        if ((rc = check_host(host, (size_t)(hend - host), err, errlen)) != 0)
            return rc;
        if (colon)
            port = colon + 1;
    }

    u->port = DEFAULT_PORT;
    if (port) {
        size_t n = (size_t)(end - port);
        long v = number(port, n, 1000000);
        if (n == 0)
            return fail(err, errlen, "redis URL: empty port after ':'");
        if (v == -1)
            return fail(err, errlen, "redis URL: port \"%.*s\" is not a number", clip(n), port);
        if (v < 1 || v > 65535)
            return fail(err, errlen, "redis URL: port \"%.*s\" is out of range 1-65535", clip(n),
                        port);
        u->port = (int)v;
    }

    if (*end == '/') {
        const char *db = end + 1;
        size_t n = strcspn(db, "/?#");
        if (n > 0 && (rc = parse_db(db, n, u, err, errlen)) != 0)
            return rc;
        end = db + n;
    }
    if (*end == '?') {
        size_t n = strcspn(end + 1, "#");
        if ((rc = mae__url_parse_wait_query(end + 1, n, u, err, errlen)) != 0)
            return rc;
        end += 1 + n;
    }
    if (*end)
        return fail(err, errlen, "redis URL: unexpected \"%.*s\" at the end", clip(strlen(end)),
                    end);
    return copy(host, (size_t)(hend - host), &u->host);
}

int mae__url_parse_wait_query(const char *q, size_t n, mae__url *u, char *err, size_t errlen)
{
    const char *end = q + n;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(stop - q));
        size_t kn = eq ? (size_t)(eq - q) : (size_t)(stop - q);
        int *field = NULL;
        long lo = 0, hi = 0;
        if (kn == 13 && memcmp(q, "wait_replicas", 13) == 0)
            field = &u->wait_replicas, lo = 0, hi = 1000;
        else if (kn == 15 && memcmp(q, "wait_timeout_ms", 15) == 0)
            field = &u->wait_timeout_ms, lo = 1, hi = 3600000;
        if (!field)
            return fail(err, errlen,
                        "redis URL: unsupported query option \"%.*s\"; known: wait_replicas, "
                        "wait_timeout_ms",
                        clip(kn), q);
        size_t vn = eq ? (size_t)(stop - eq - 1) : 0;
        long v = eq ? number(eq + 1, vn, 1000000000) : -1;
        if (v < lo || v > hi)
            return fail(err, errlen, "redis URL: %.*s must be an integer from %ld to %ld", (int)kn,
                        q, lo, hi);
        *field = (int)v;
        q = amp ? amp + 1 : end;
    }
    return 0;
}

/* One Sentinel address, s[0..n): host[:port] or [v6][:port], checked by
 * parse_tcp; the port defaults to 26379. */
static int parse_sentinel_addr(const char *s, size_t n, struct mae__url_addr *a, char *err,
                               size_t errlen)
{
    char *piece = NULL;
    mae__url t = {0};
    if (n == 0)
        return fail(err, errlen, "redis URL: empty Sentinel address in the list");
    int rc = copy(s, n, &piece);
    if (rc != 0)
        return rc;
    rc = strpbrk(piece, "@/?#") ? fail(err, errlen, "redis URL: bad Sentinel address \"%.*s\"",
                                       clip(n), s)
                                : parse_tcp(piece, &t, err, errlen);
    const char *after = piece[0] == '[' ? strchr(piece, ']') : piece;
    bool has_port = after && strchr(after, ':');
    free(piece);
    if (rc != 0) {
        mae__url_free(&t);
        return rc;
    }
    a->host = t.host;
    a->port = has_port ? t.port : 26379;
    t.host = NULL;
    mae__url_free(&t);
    return 0;
}

/* [[user]:password@]host[:port][,host[:port]...][/db][?query]#MASTER after
 * "redis-sentinel://": the user information, database and query are
 * parsed by parse_tcp on the same URL cut to its first address. */
static int parse_sentinel(const char *s, mae__url *u, char *err, size_t errlen)
{
    const char *hash = strchr(s, '#');
    if (!hash || !hash[1])
        return fail(err, errlen, "redis URL: redis-sentinel:// needs the master's name after '#'");
    int rc = decode(hash + 1, strlen(hash + 1), "master name", false, &u->master_name, err, errlen);
    if (rc != 0)
        return rc;
    size_t alen = strcspn(s, "/?#");
    const char *hosts = s;
    for (const char *q = s; q < s + alen; q++)
        if (*q == '@')
            hosts = q + 1;
    size_t count = 1;
    for (const char *q = hosts; q < s + alen; q++)
        count += *q == ',';
    u->sentinels = calloc(count, sizeof *u->sentinels);
    if (!u->sentinels)
        return MAE_ENOMEM;
    const char *q = hosts;
    for (size_t i = 0; i < count; i++) {
        size_t n = strcspn(q, ",/?#");
        if ((rc = parse_sentinel_addr(q, n, &u->sentinels[i], err, errlen)) != 0)
            return rc;
        u->nsentinels++;
        q += n + 1;
    }
    /* The first address with the user information, database and query. */
    size_t first = strcspn(hosts, ",/?#");
    size_t tail = (size_t)(hash - (s + alen));
    char *cut = malloc((size_t)(hosts - s) + first + tail + 1);
    if (!cut)
        return MAE_ENOMEM;
    memcpy(cut, s, (size_t)(hosts - s) + first);
    memcpy(cut + (hosts - s) + first, s + alen, tail);
    cut[(hosts - s) + first + tail] = '\0';
    rc = parse_tcp(cut, u, err, errlen);
    free(cut);
    if (rc == 0)
        u->port = u->sentinels[0].port;
    return rc;
}

/* /absolute/path[?db=N] after "unix://". */
static int parse_unix(const char *s, mae__url *u, char *err, size_t errlen)
{
    size_t n = strcspn(s, "?#");
    int rc;

    if (*s != '/')
        return fail(err, errlen,
                    "redis URL: unix socket path must be absolute, as in unix:///path/to/socket");
    if (n == 1)
        return fail(err, errlen, "redis URL: unix socket path is missing");
    if ((rc = decode(s, n, "unix socket path", false, &u->path, err, errlen)) != 0)
        return rc;
    if (strlen(u->path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return fail(err, errlen, "redis URL: unix socket path is longer than %zu bytes",
                    sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
    const char *rest = s + n;
    if (*rest == '?') {
        if (strncmp(rest, "?db=", 4) != 0)
            return fail(err, errlen, "redis URL: unsupported query \"%.*s\"; only ?db=N is allowed",
                        clip(strlen(rest)), rest);
        size_t dn = strcspn(rest + 4, "&#");
        if ((rc = parse_db(rest + 4, dn, u, err, errlen)) != 0)
            return rc;
        rest += 4 + dn;
    }
    if (*rest)
        return fail(err, errlen, "redis URL: unexpected \"%.*s\" at the end", clip(strlen(rest)),
                    rest);
    u->is_unix = true;
    u->port = 0;
    return 0;
}

int mae__url_parse(const char *url, mae__url *out, char *err, size_t errlen)
{
    mae__url u = {0};
    int rc;

    u.wait_replicas = u.wait_timeout_ms = -1;
    if (!url || !out)
        return fail(err, errlen, "redis URL: missing");
    for (size_t i = 0; url[i]; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c == ' ')
            return fail(err, errlen, "redis URL: space at offset %zu (write it as %%20)", i);
        if (c < 0x20 || c == 0x7f)
            return fail(err, errlen, "redis URL: control character 0x%02x at offset %zu", c, i);
    }
    const char *sep = strstr(url, "://");
    if (!sep || sep == url)
        return fail(err, errlen, "redis URL: missing scheme; expected redis://, redis-sentinel:// or unix://");
    size_t sn = (size_t)(sep - url);
    if (sn == 5 && strncasecmp(url, "redis", 5) == 0)
        rc = parse_tcp(sep + 3, &u, err, errlen);
    else if (sn == 14 && strncasecmp(url, "redis-sentinel", 14) == 0)
        rc = parse_sentinel(sep + 3, &u, err, errlen);
    else if (sn == 4 && strncasecmp(url, "unix", 4) == 0)
        rc = parse_unix(sep + 3, &u, err, errlen);
    else
        return fail(err, errlen, "redis URL: unknown scheme \"%.*s\"; expected redis://, "
                    "redis-sentinel:// or unix://",
                    clip(sn), url);
    if (rc != 0) {
        if (rc == MAE_ENOMEM && err && errlen)
            snprintf(err, errlen, "out of memory");
        mae__url_free(&u);
        return rc;
    }
    *out = u;
    return 0;
}

void mae__url_free(mae__url *u)
{
    if (!u)
        return;
    free(u->host);
    free(u->path);
    free(u->user);
    free(u->password);
    for (size_t i = 0; i < u->nsentinels; i++)
        free(u->sentinels[i].host);
    free(u->sentinels);
    free(u->master_name);
    u->host = u->path = u->user = u->password = u->master_name = NULL;
    u->sentinels = NULL;
    u->nsentinels = 0;
}
