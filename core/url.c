/* This module implements mae__url_parse: the redis://, rediss://,
 * redis-sentinel:// and unix:// URL forms of docs/publisher.md with
 * redis-py's TLS options and the WAIT options, rejecting anything malformed
 * with a sentence that names the offending part. */
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

/* A query value as redis-py reads it (urllib's parse_qs): '+' is a space,
 * then percent escapes are decoded. */
static int decode_value(const char *s, size_t n, const char *name, char **out, char *err,
                        size_t errlen)
{
    char what[48];
    char *tmp = malloc(n + 1);
    if (!tmp)
        return MAE_ENOMEM;
    for (size_t i = 0; i < n; i++)
        tmp[i] = s[i] == '+' ? ' ' : s[i];
    snprintf(what, sizeof what, "value of %s", name);
    int rc = decode(tmp, n, what, false, out, err, errlen);
    free(tmp);
    return rc;
}

/* The boolean words redis-py's to_bool reads as false, and their
 * counterparts; anything else is refused rather than taken as true. */
static int parse_bool(const char *v, bool *out)
{
    static const char *const no[] = {"0", "f", "false", "n", "no", "off"};
    static const char *const yes[] = {"1", "t", "true", "y", "yes", "on"};
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
    }
    return -1;
}

/* The query's options seen so far, so that one given twice is refused. */
enum { OPT_DB = 1, OPT_REQS = 2, OPT_CA = 4, OPT_CAPATH = 8, OPT_CERT = 16, OPT_KEY = 32,
       OPT_HOST = 64, PATH_DB = 128 /* not an option: the path named a database */,
       OPT_WREP = 256, OPT_WTMO = 512 };

/* wait_replicas (0-1000) or wait_timeout_ms (1-3600000) into *field. */
static int parse_wait(const char *name, const char *v, long lo, long hi, int *field, char *err,
                      size_t errlen)
{
    long n = number(v, strlen(v), 1000000000);
    if (n < lo || n > hi)
        return fail(err, errlen, "redis URL: %s must be an integer from %ld to %ld", name, lo,
                    hi);
    *field = (int)n;
    return 0;
}

/* One name=value of the query. *seen collects the options given. */
static int parse_option(const char *name, size_t nn, const char *val, size_t vn, mae__url *u,
                        unsigned *seen, char *err, size_t errlen)
{
    static const struct {
        const char *name;
        unsigned bit;
        bool tls;
    } known[] = {
        {"db", OPT_DB, false},           {"ssl_cert_reqs", OPT_REQS, true},
        {"ssl_ca_certs", OPT_CA, true},  {"ssl_ca_path", OPT_CAPATH, true},
        {"ssl_certfile", OPT_CERT, true}, {"ssl_keyfile", OPT_KEY, true},
        {"ssl_check_hostname", OPT_HOST, true},
        {"wait_replicas", OPT_WREP, false}, {"wait_timeout_ms", OPT_WTMO, false},
    };
    size_t k = 0;
    while (k < sizeof known / sizeof known[0] &&
           !(strlen(known[k].name) == nn && memcmp(known[k].name, name, nn) == 0))
        k++;
    if (k == sizeof known / sizeof known[0])
        return fail(err, errlen,
                    "redis URL: unknown option \"%.*s\" (docs/publisher.md lists the options)",
                    clip(nn), name);
    const char *kn = known[k].name;
    if (known[k].tls && u->master_name)
        return fail(err, errlen, "redis URL: %s is a TLS option, and redis-sentinel:// does not "
                    "support TLS", kn);
    if (known[k].tls && !u->tls.enabled)
        return fail(err, errlen, "redis URL: %s is a TLS option; write rediss:// to use TLS", kn);
    if (*seen & known[k].bit)
        return fail(err, errlen, "redis URL: option %s is given twice", kn);
    *seen |= known[k].bit;
    if (vn == 0)
        return fail(err, errlen, "redis URL: option %s has no value", kn);

    char *v = NULL;
    int rc = decode_value(val, vn, kn, &v, err, errlen);
    if (rc != 0)
        return rc;
    switch (known[k].bit) {
    case OPT_DB: {
        int before = u->db;
        rc = parse_db(v, strlen(v), u, err, errlen);
        if (rc == 0 && (*seen & PATH_DB) && before != u->db)
            rc = fail(err, errlen, "redis URL: the database is given twice (/%d and ?db=%d)",
                      before, u->db);
        break;
    }
    case OPT_REQS:
        if (strcmp(v, "required") == 0)
            u->tls.cert_reqs = MAE__TLS_VERIFY_REQUIRED;
        else if (strcmp(v, "optional") == 0)
            u->tls.cert_reqs = MAE__TLS_VERIFY_OPTIONAL;
        else if (strcmp(v, "none") == 0)
            u->tls.cert_reqs = MAE__TLS_VERIFY_NONE;
        else
            rc = fail(err, errlen,
                      "redis URL: ssl_cert_reqs \"%.*s\" is not required, optional or none",
                      clip(strlen(v)), v);
        break;
    case OPT_WREP:
        rc = parse_wait(kn, v, 0, 1000, &u->wait_replicas, err, errlen);
        break;
    case OPT_WTMO:
        rc = parse_wait(kn, v, 1, 3600000, &u->wait_timeout_ms, err, errlen);
        break;
    case OPT_HOST:
        if (parse_bool(v, &u->tls.check_hostname) != 0)
            rc = fail(err, errlen, "redis URL: ssl_check_hostname \"%.*s\" is not true or false",
                      clip(strlen(v)), v);
        break;
    case OPT_CA:
        u->tls.ca_certs = v;
        return 0;
    case OPT_CAPATH:
        u->tls.ca_path = v;
        return 0;
    case OPT_CERT:
        u->tls.certfile = v;
        return 0;
    case OPT_KEY:
        u->tls.keyfile = v;
        return 0;
    }
    free(v);
    return rc;
}

/* The query after '?' up to '#' or the end: name=value pairs joined by
 * '&' (an empty pair, as in a trailing '&', is skipped). Then the TLS
 * defaults that depend on more than one option. */
static int parse_query(const char *q, size_t n, bool db_in_path, mae__url *u, char *err,
                       size_t errlen)
{
    unsigned seen = db_in_path ? PATH_DB : 0;
    const char *end = q + n;
    int rc;

    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *pe = amp ? amp : end;
        if (pe > q) {
            const char *eq = memchr(q, '=', (size_t)(pe - q));
            if (!eq || eq == q)
                return fail(err, errlen, "redis URL: query part \"%.*s\" is not name=value",
                            clip((size_t)(pe - q)), q);
            rc = parse_option(q, (size_t)(eq - q), eq + 1, (size_t)(pe - eq - 1), u, &seen, err,
                              errlen);
            if (rc != 0)
                return rc;
        }
        q = amp ? amp + 1 : end;
    }
    if (u->tls.keyfile && !u->tls.certfile)
        return fail(err, errlen, "redis URL: ssl_keyfile needs ssl_certfile, the certificate "
                    "it belongs to");
    if (!u->tls.enabled)
        return 0;
    if (!(seen & OPT_HOST))
        u->tls.check_hostname = u->tls.cert_reqs != MAE__TLS_VERIFY_NONE;
    else if (u->tls.cert_reqs == MAE__TLS_VERIFY_NONE)
        u->tls.check_hostname = false; /* nothing is verified: redis-py 6 does the same */
    return 0;
}

/* [[user]:password@]host[:port][/db][?options] after "redis://" or
 * "rediss://" (u->tls.enabled set for the latter). */
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

    bool db_in_path = false;
    if (*end == '/') {
        const char *db = end + 1;
        size_t n = strcspn(db, "/?#");
        if (n > 0 && (rc = parse_db(db, n, u, err, errlen)) != 0)
            return rc;
        db_in_path = n > 0;
        end = db + n;
    }
    if (*end == '?') {
        size_t n = strcspn(end + 1, "#");
        if ((rc = parse_query(end + 1, n, db_in_path, u, err, errlen)) != 0)
            return rc;
        end += 1 + n;
    } else if (u->tls.enabled) {
        u->tls.check_hostname = true; /* the defaults: required, host name checked */
    }
    if (*end)
        return fail(err, errlen, "redis URL: unexpected \"%.*s\" at the end", clip(strlen(end)),
                    end);
    return copy(host, (size_t)(hend - host), &u->host);
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

bool mae__url_is_tls(const char *url)
{
    return url && strncasecmp(url, "rediss://", 9) == 0;
}

/* The schemes a caller given allow can use, for an error's "expected". */
static const char *schemes(unsigned allow)
{
    static const char *const names[] = {
        "redis:// or unix://",
        "redis://, rediss:// or unix://",
        "redis://, redis-sentinel:// or unix://",
        "redis://, rediss://, redis-sentinel:// or unix://",
    };
    return names[allow & (MAE__URL_ALLOW_TLS | MAE__URL_ALLOW_SENTINEL)];
}

int mae__url_parse(const char *url, mae__url *out, char *err, size_t errlen)
{
    return mae__url_parse_for(url, 0, out, err, errlen);
}

int mae__url_parse_for(const char *url, unsigned allow, mae__url *out, char *err,
                       size_t errlen)
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
        return fail(err, errlen, "redis URL: missing scheme; expected %s", schemes(allow));
    size_t sn = (size_t)(sep - url);
    if (sn == 5 && strncasecmp(url, "redis", 5) == 0) {
        rc = parse_tcp(sep + 3, &u, err, errlen);
    } else if (sn == 6 && strncasecmp(url, "rediss", 6) == 0) {
        if (!(allow & MAE__URL_ALLOW_TLS))
            return fail(err, errlen, "redis URL: rediss:// (TLS) is not supported here yet");
        u.tls.enabled = true;
        rc = parse_tcp(sep + 3, &u, err, errlen);
    } else if (sn == 14 && strncasecmp(url, "redis-sentinel", 14) == 0) {
        if (!(allow & MAE__URL_ALLOW_SENTINEL))
            return fail(err, errlen, "redis URL: redis-sentinel:// is not supported here yet; "
                        "only the publisher looks up a master through Sentinel");
        rc = parse_sentinel(sep + 3, &u, err, errlen);
    } else if (sn == 15 && strncasecmp(url, "rediss-sentinel", 15) == 0) {
        return fail(err, errlen, "redis URL: rediss-sentinel:// (Sentinel over TLS) is not "
                    "supported; use redis-sentinel:// or rediss:// to one server");
    } else if (sn == 4 && strncasecmp(url, "unix", 4) == 0) {
        rc = parse_unix(sep + 3, &u, err, errlen);
    } else {
        return fail(err, errlen, "redis URL: unknown scheme \"%.*s\"; expected %s", clip(sn),
                    url, schemes(allow));
    }
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
    free(u->tls.ca_certs);
    free(u->tls.ca_path);
    free(u->tls.certfile);
    free(u->tls.keyfile);
    for (size_t i = 0; i < u->nsentinels; i++)
        free(u->sentinels[i].host);
    free(u->sentinels);
    free(u->master_name);
    u->host = u->path = u->user = u->password = u->master_name = NULL;
    u->tls.ca_certs = u->tls.ca_path = u->tls.certfile = u->tls.keyfile = NULL;
    u->sentinels = NULL;
    u->nsentinels = 0;
}

/* ---- the hello ------------------------------------------------------------------ */

static void hello_add(mae__hello *h, const char *name, int argc, const char *a1, const char *a2)
{
    mae__hello_cmd *c = &h->cmd[h->n++];
    memset(c, 0, sizeof *c);
    c->name = name;
    c->argc = argc;
    c->argv[0] = name;
    c->argv[1] = a1;
    c->argv[2] = a2;
    for (int i = 0; i < argc; i++)
        c->argvlen[i] = strlen(c->argv[i]);
}

void mae__hello_init(mae__hello *h, const mae__url *u, bool with_select)
{
    memset(h, 0, sizeof *h);
    if (u->password) {
        if (u->user)
            hello_add(h, "AUTH", 3, u->user, u->password);
        else
            hello_add(h, "AUTH", 2, u->password, NULL);
    }
    if (with_select && u->db != 0) {
        snprintf(h->db_text, sizeof h->db_text, "%d", u->db);
        hello_add(h, "SELECT", 2, h->db_text, NULL);
    }
}

const char *mae__hello_format(const mae__hello_cmd *c)
{
    return c->argc == 3 ? "%b %b %b" : "%b %b";
}

bool mae__hello_accepts(const char *name, bool is_error, const char *text, char *err,
                        size_t errlen)
{
    if (!is_error)
        return true;
    snprintf(err, errlen, "%s refused: %s", name, text ? text : "");
    return false;
}
