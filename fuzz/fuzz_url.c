/* libFuzzer target for the Redis URL parser: any input either fails with a
 * proper error sentence or yields fields (TLS options included) that are
 * well-formed and survive being written back as a URL and parsed again. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mailagent/common.h>

#include "core/text.h"
#include "core/url.h"

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        if (!(cond))                                                                        \
            __builtin_trap();                                                               \
    } while (0)

/* Appends s percent-encoded except for unreserved characters (and '/' when
 * keep_slash), so the parser sees exactly the decoded text again. */
static void encode(mae__buf *b, const char *s, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        bool plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                     (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.' ||
                     (keep_slash && *p == '/');
        if (plain) {
            mae__buf_putc(b, (char)*p);
        } else {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            mae__buf_put(b, e, 3);
        }
    }
}

static bool same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    char err[160];
    mae__url u, v;
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';

    memset(err, 'x', sizeof err);
    int rc = mae__url_parse_for(s, MAE__URL_ALLOW_TLS, &u, err, sizeof err);
    CHECK(rc == 0 || rc == MAE_EINVAL);
    CHECK(mae__url_parse_for(s, MAE__URL_ALLOW_TLS, &v, NULL, 0) == rc);
    /* Without TLS allowed, a TLS URL is refused and every other one parses
     * the same. */
    {
        mae__url w;
        int rw = mae__url_parse(s, &w, NULL, 0);
        if (rc == 0 && u.tls.enabled)
            CHECK(rw == MAE_EINVAL);
        else
            CHECK(rw == rc);
        if (rw == 0)
            mae__url_free(&w);
    }
    if (rc != 0) {
        CHECK(memchr(err, '\0', sizeof err) != NULL);
        CHECK(strncmp(err, "redis URL: ", 11) == 0 && strlen(err) > 11);
        free(s);
        return 0;
    }
    mae__url_free(&v);

    CHECK(u.db >= 0);
    mae__buf b;
    mae__buf_init(&b);
    if (u.is_unix) {
        CHECK(!u.host && u.path && u.path[0] == '/' && u.path[1] != '\0');
        CHECK(!u.user && !u.password && !u.tls.enabled);
        mae__buf_puts(&b, "unix://");
        encode(&b, u.path, true);
    } else {
        CHECK(u.host && u.host[0] && !u.path);
        CHECK(u.port >= 1 && u.port <= 65535);
        CHECK(!u.user || u.password); /* a user comes with a password */
        mae__buf_puts(&b, u.tls.enabled ? "rediss://" : "redis://");
        if (u.password) {
            if (u.user)
                encode(&b, u.user, false);
            mae__buf_putc(&b, ':');
            encode(&b, u.password, false);
            mae__buf_putc(&b, '@');
        }
        bool v6 = strchr(u.host, ':') != NULL;
        if (v6)
            mae__buf_putc(&b, '[');
        mae__buf_puts(&b, u.host);
        if (v6)
            mae__buf_putc(&b, ']');
        char tail[32];
        snprintf(tail, sizeof tail, ":%d/%d", u.port, u.db);
        mae__buf_puts(&b, tail);
        if (u.tls.enabled) {
            CHECK(!u.tls.keyfile || u.tls.certfile);
            CHECK(!u.tls.check_hostname || u.tls.cert_reqs != MAE__TLS_VERIFY_NONE);
            static const char *const reqs[] = {"required", "optional", "none"};
            CHECK(u.tls.cert_reqs >= 0 && u.tls.cert_reqs <= 2);
            mae__buf_puts(&b, "?ssl_cert_reqs=");
            mae__buf_puts(&b, reqs[u.tls.cert_reqs]);
            mae__buf_puts(&b, u.tls.check_hostname ? "&ssl_check_hostname=true"
                                                   : "&ssl_check_hostname=false");
            const char *const names[] = {"ssl_ca_certs", "ssl_ca_path", "ssl_certfile",
                                         "ssl_keyfile"};
            const char *const vals[] = {u.tls.ca_certs, u.tls.ca_path, u.tls.certfile,
                                        u.tls.keyfile};
            for (int i = 0; i < 4; i++) {
                if (!vals[i])
                    continue;
                CHECK(vals[i][0]);
                mae__buf_putc(&b, '&');
                mae__buf_puts(&b, names[i]);
                mae__buf_putc(&b, '=');
                encode(&b, vals[i], true);
            }
        } else {
            CHECK(!u.tls.ca_certs && !u.tls.ca_path && !u.tls.certfile && !u.tls.keyfile);
        }
    }
    if (u.is_unix && u.db) {
        char q[24];
        snprintf(q, sizeof q, "?db=%d", u.db);
        mae__buf_puts(&b, q);
    }
    CHECK(!b.oom);

    /* Written back, the URL parses to the same fields. */
    CHECK(mae__url_parse_for(b.ptr, MAE__URL_ALLOW_TLS, &v, err, sizeof err) == 0);
    CHECK(v.is_unix == u.is_unix && v.db == u.db);
    CHECK(v.tls.enabled == u.tls.enabled && v.tls.cert_reqs == u.tls.cert_reqs);
    CHECK(v.tls.check_hostname == u.tls.check_hostname);
    CHECK(same(v.tls.ca_certs, u.tls.ca_certs) && same(v.tls.ca_path, u.tls.ca_path));
    CHECK(same(v.tls.certfile, u.tls.certfile) && same(v.tls.keyfile, u.tls.keyfile));
    CHECK(same(v.host, u.host) && same(v.path, u.path));
    CHECK(same(v.user, u.user) && same(v.password, u.password));
    CHECK(u.is_unix || v.port == u.port);
    mae__url_free(&v);
    mae__buf_free(&b);
    mae__url_free(&u);
    free(s);
    return 0;
}
