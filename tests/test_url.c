/* Unit tests of the Redis URL parser: the accepted forms with every field,
 * and the rejected ones with an error that names the offending piece. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <mailagent/common.h>

#include "core/url.h"

#define NONE ((const char *)0)

static void expect_str(size_t i, const char *what, const char *got, const char *want)
{
    if (!want && !got)
        return;
    if (!want || !got || strcmp(got, want) != 0)
        fail_msg("case %zu: %s is \"%s\", want \"%s\"", i, what, got ? got : "(null)",
                 want ? want : "(null)");
}

static void test_accepted_url_forms(void **state)
{
    (void)state;
    static const struct {
        const char *url;
        bool is_unix;
        const char *host;
        int port;
        const char *path, *user, *password;
        int db;
    } cases[] = {
        {"redis://localhost", false, "localhost", 6379, NONE, NONE, NONE, 0},
        {"redis://127.0.0.1:6380/2", false, "127.0.0.1", 6380, NONE, NONE, NONE, 2},
        {"redis://h/", false, "h", 6379, NONE, NONE, NONE, 0},
        {"redis://h:1", false, "h", 1, NONE, NONE, NONE, 0},
        {"redis://h:65535/15", false, "h", 65535, NONE, NONE, NONE, 15},
        {"redis://h:06379", false, "h", 6379, NONE, NONE, NONE, 0},
        {"redis://h/2147483647", false, "h", 6379, NONE, NONE, NONE, 2147483647},
        {"REDIS://Cache-01.example.com.:7000", false, "Cache-01.example.com.", 7000, NONE, NONE,
         NONE, 0},
        {"redis://redis_host", false, "redis_host", 6379, NONE, NONE, NONE, 0},
        {"redis://:secret@h", false, "h", 6379, NONE, NONE, "secret", 0},
        {"redis://user:@h", false, "h", 6379, NONE, "user", "", 0},
        {"redis://:@h", false, "h", 6379, NONE, NONE, "", 0},
        {"redis://alice:s3cret@10.0.0.5:6390/4", false, "10.0.0.5", 6390, NONE, "alice",
         "s3cret", 4},
        {"redis://us%40er:p%3Ass%2f%25@h", false, "h", 6379, NONE, "us@er", "p:ss/%", 0},
        {"redis://a:b:c@h", false, "h", 6379, NONE, "a", "b:c", 0},
        {"redis://a:b@c@h", false, "h", 6379, NONE, "a", "b@c", 0},
        {"redis://%C3%A9:%E2%82%AC@h", false, "h", 6379, NONE, "\xC3\xA9", "\xE2\x82\xAC", 0},
        {"redis://[::1]", false, "::1", 6379, NONE, NONE, NONE, 0},
        {"redis://[::1]:6380/3", false, "::1", 6380, NONE, NONE, NONE, 3},
        {"redis://:pw@[2001:db8::1]:7000", false, "2001:db8::1", 7000, NONE, NONE, "pw", 0},
        {"redis://[::ffff:192.0.2.1]", false, "::ffff:192.0.2.1", 6379, NONE, NONE, NONE, 0},
        {"unix:///tmp/redis.sock", true, NONE, 0, "/tmp/redis.sock", NONE, NONE, 0},
        {"unix:///var/run/redis/r.sock?db=4", true, NONE, 0, "/var/run/redis/r.sock", NONE,
         NONE, 4},
        {"UNIX:///tmp/a%20b.sock", true, NONE, 0, "/tmp/a b.sock", NONE, NONE, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mae__url u;
        char err[160] = "";
        memset(&u, 0x5a, sizeof u);
        int rc = mae__url_parse(cases[i].url, &u, err, sizeof err);
        if (rc != 0)
            fail_msg("case %zu (%s) rejected: %d %s", i, cases[i].url, rc, err);
        assert_int_equal(u.is_unix, cases[i].is_unix);
        expect_str(i, "host", u.host, cases[i].host);
        expect_str(i, "path", u.path, cases[i].path);
        expect_str(i, "user", u.user, cases[i].user);
        expect_str(i, "password", u.password, cases[i].password);
        if (!cases[i].is_unix)
            assert_int_equal(u.port, cases[i].port);
        assert_int_equal(u.db, cases[i].db);
        mae__url_free(&u);
        assert_null(u.host);
        assert_null(u.password);
        mae__url_free(&u); /* twice is harmless */
    }
}

/* The Sentinel form: every address with its port (26379 by default), the
 * master's name, and the user information, database and query that apply
 * to the master; the wait query on the plain form too. */
static void test_sentinel_and_wait_forms(void **state)
{
    (void)state;
    mae__url u;
    char err[160] = "";
    assert_int_equal(mae__url_parse_for("redis-sentinel://alice:s%40cret@s1,10.0.0.2:26380,"
                                        "[::1]:7000,[::2]/3?wait_replicas=2&wait_timeout_ms=150"
                                        "#my%20master",
                                        MAE__URL_ALLOW_SENTINEL, &u, err, sizeof err),
                     0);
    assert_int_equal(u.nsentinels, 4);
    assert_string_equal(u.sentinels[0].host, "s1");
    assert_int_equal(u.sentinels[0].port, 26379);
    assert_string_equal(u.sentinels[1].host, "10.0.0.2");
    assert_int_equal(u.sentinels[1].port, 26380);
    assert_string_equal(u.sentinels[2].host, "::1");
    assert_int_equal(u.sentinels[2].port, 7000);
    assert_string_equal(u.sentinels[3].host, "::2");
    assert_int_equal(u.sentinels[3].port, 26379);
    assert_string_equal(u.master_name, "my master");
    assert_string_equal(u.user, "alice");
    assert_string_equal(u.password, "s@cret");
    assert_int_equal(u.db, 3);
    assert_int_equal(u.wait_replicas, 2);
    assert_int_equal(u.wait_timeout_ms, 150);
    assert_string_equal(u.host, "s1");
    assert_int_equal(u.port, 26379);
    assert_false(u.is_unix);
    mae__url_free(&u);
    assert_null(u.sentinels);
    assert_null(u.master_name);
    assert_int_equal(u.nsentinels, 0);

    assert_int_equal(
        mae__url_parse_for("REDIS-SENTINEL://h:1#m", MAE__URL_ALLOW_SENTINEL, &u, err, sizeof err),
        0);
    assert_int_equal(u.nsentinels, 1);
    assert_int_equal(u.sentinels[0].port, 1);
    assert_int_equal(u.wait_replicas, -1);
    assert_int_equal(u.wait_timeout_ms, -1);
    assert_null(u.password);
    mae__url_free(&u);

    assert_int_equal(mae__url_parse("redis://h:6380/2?wait_replicas=1&wait_timeout_ms=100", &u,
                                    err, sizeof err),
                     0);
    assert_int_equal(u.wait_replicas, 1);
    assert_int_equal(u.wait_timeout_ms, 100);
    assert_int_equal(u.db, 2);
    assert_int_equal(u.nsentinels, 0);
    mae__url_free(&u);
    /* On rediss:// too, next to the TLS options. */
    assert_int_equal(mae__url_parse_for("rediss://h?ssl_cert_reqs=none&wait_replicas=0",
                                        MAE__URL_ALLOW_TLS, &u, err, sizeof err),
                     0);
    assert_true(u.tls.enabled);
    assert_int_equal(u.wait_replicas, 0);
    assert_int_equal(u.wait_timeout_ms, -1);
    mae__url_free(&u);
    /* Without a query both are absent (-1), never 0 by accident. */
    assert_int_equal(mae__url_parse("redis://h", &u, err, sizeof err), 0);
    assert_int_equal(u.wait_replicas, -1);
    mae__url_free(&u);
}

static void test_malformed_urls_refused_with_the_reason(void **state)
{
    (void)state;
    char long_path[300] = "unix:///";
    memset(long_path + 8, 'p', 200);
    long_path[208] = '\0';

    static const struct {
        const char *url;
        const char *must;     /* the error contains this */
        const char *must_not; /* and never this (secrets) */
    } fixed[] = {
        {"http://localhost", "unknown scheme \"http\"; expected redis:// or unix://", NONE},
        {"redis+sentinel://h", "\"redis+sentinel\"", NONE},
        {"localhost:6379", "missing scheme", NONE},
        {"", "missing scheme", NONE},
        {"://h", "missing scheme", NONE},
        {"redis://127.0.0.1:99999", "port \"99999\" is out of range 1-65535", NONE},
        {"redis://h:0", "port \"0\" is out of range", NONE},
        {"redis://h:65536", "\"65536\"", NONE},
        {"redis://h:99999999999999999999", "is out of range", NONE},
        {"redis://h:", "empty port", NONE},
        {"redis://h:/1", "empty port", NONE},
        {"redis://h:abc", "port \"abc\" is not a number", NONE},
        {"redis://h:-1", "\"-1\"", NONE},
        {"redis://h:63 79", "space", NONE},
        {"redis://", "missing host", NONE},
        {"redis:///0", "missing host", NONE},
        {"redis://:6379", "missing host", NONE},
        {"redis://:pw@", "missing host", "pw"},
        {"redis://:pw@:6379", "missing host", "pw"},
        {"redis://h/x", "database \"x\"", NONE},
        {"redis://h/-1", "database \"-1\"", NONE},
        {"redis://h/99999999999", "database \"99999999999\" is out of range", NONE},
        {"redis://h/1/2", "\"/2\"", NONE},
        {"redis://h/1?db=2", "database is given twice (/1 and ?db=2)", NONE},
        {"redis://h?x", "query part \"x\" is not name=value", NONE},
        {"redis://h?db=1&db=1", "option db is given twice", NONE},
        {"redis://h?ssl_ca_certs=/ca.pem", "ssl_ca_certs is a TLS option; write rediss://", NONE},
        {"redis://h?ssl_cert_reqs=none", "write rediss://", NONE},
        {"rediss://h", "rediss:// (TLS) is not supported here yet", NONE},
        {"redis://h?wait_replicas=", "option wait_replicas has no value", NONE},
        {"redis://h?wait_replicas=x", "wait_replicas must be an integer from 0 to 1000", NONE},
        {"redis://h?wait_replicas=1001", "from 0 to 1000", NONE},
        {"redis://h?wait_replicas=-1", "from 0 to 1000", NONE},
        {"redis://h?wait_timeout_ms=0", "wait_timeout_ms must be an integer from 1", NONE},
        {"redis://h?wait_timeout_ms", "query part \"wait_timeout_ms\" is not name=value", NONE},
        {"redis://h?wait_replicas=1&wait_replicas=2", "option wait_replicas is given twice",
         NONE},
        {"redis://h?wait_replicas=1#x", "\"#x\"", NONE},
        {"redis-sentinel://h#m", "redis-sentinel:// is not supported here yet", NONE},
        /* From here on a redis-sentinel:// URL is parsed with Sentinel allowed. */
        {"redis-sentinel://h", "needs the master's name after '#'", NONE},
        {"redis-sentinel://h#", "needs the master's name", NONE},
        {"redis-sentinel://h,,g#m", "empty Sentinel address", NONE},
        {"redis-sentinel://h,#m", "empty Sentinel address", NONE},
        {"redis-sentinel://#m", "empty Sentinel address", NONE},
        {"redis-sentinel://h:0#m", "out of range", NONE},
        {"redis-sentinel://h,g:x#m", "port \"x\" is not a number", NONE},
        {"redis-sentinel://:pw@h,b*d#m", "\"b*d\"", "pw"},
        {"redis-sentinel://h/x#m", "database \"x\"", NONE},
        {"redis-sentinel://h?foo=1#m", "unknown option \"foo\"", NONE},
        {"redis-sentinel://h?ssl_cert_reqs=none#m",
         "ssl_cert_reqs is a TLS option, and redis-sentinel:// does not support TLS", NONE},
        {"redis-sentinel://h#m%zz", "bad percent escape", NONE},
        {"rediss-sentinel://h#m", "rediss-sentinel:// (Sentinel over TLS) is not supported",
         NONE},
        {"redis://h#frag", "\"#frag\"", NONE},
        {"redis://::1:6379", "brackets", NONE},
        {"redis://fe80::1", "brackets", NONE},
        {"redis://[::1", "closing ']'", NONE},
        {"redis://[]", "\"[]\"", NONE},
        {"redis://[zz::1]", "\"[zz::1]\"", NONE},
        {"redis://[::1]x", "\"x\"", NONE},
        {"redis://[::1]:", "empty port", NONE},
        {"redis://[::1]:0", "\"0\"", NONE},
        {"redis://ho%41st", "\"ho%41st\"", NONE},
        {"redis://h*st", "\"h*st\"", NONE},
        {"redis://h\xC3\xA9", "not allowed in a host name", NONE},
        {"redis://999.1.1.1", "\"999.1.1.1\" is not a valid IPv4 address", NONE},
        {"redis://1.2.3", "\"1.2.3\"", NONE},
        {"redis://a..b", "empty label", NONE},
        {"redis://.a", "empty label", NONE},
        {"redis://secret@h", "no ':'", "secret"},
        {"redis://@h", "no ':'", NONE},
        {"redis://u:p%zzword@h", "bad percent escape in the password", "p%zz"},
        {"redis://u:pw%4@h", "bad percent escape in the password", "pw"},
        {"redis://:pw%00@h", "%00", "pw"},
        {"redis://u%zz:p@h", "bad percent escape \"%zz\" in the user name", NONE},
        {"redis://u%4:p@h", "\"%4\"", NONE},
        {"redis://u%:p@h", "\"%\"", NONE},
        {"redis://h x", "space at offset 9", NONE},
        {"redis://h\n", "control character 0x0a at offset 9", NONE},
        {"redis://h\t:1", "0x09", NONE},
        {"redis://:pw\x7f@h", "0x7f", "pw"},
        {"redis://\x1b[31mh", "0x1b", NONE},
        {"unix://tmp/x", "unix socket path must be absolute", NONE},
        {"unix://", "must be absolute", NONE},
        {"unix:///", "unix socket path is missing", NONE},
        {"unix:///tmp/x?foo=1", "unsupported query \"?foo=1\"", NONE},
        {"unix:///tmp/x?db=a", "database \"a\"", NONE},
        {"unix:///tmp/x?db=", "database \"\"", NONE},
        {"unix:///tmp/x?db=1&x=2", "\"&x=2\"", NONE},
        {"unix:///tmp/x#f", "\"#f\"", NONE},
        {"unix:///tmp/%zz", "\"%zz\" in the unix socket path", NONE},
        {"unix:///tmp/%00x", "%00", NONE},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0] + 1; i++) {
        const char *url = i < sizeof fixed / sizeof fixed[0] ? fixed[i].url : long_path;
        const char *must = i < sizeof fixed / sizeof fixed[0] ? fixed[i].must : "longer than";
        const char *must_not = i < sizeof fixed / sizeof fixed[0] ? fixed[i].must_not : NONE;
        mae__url u;
        char err[160] = "";
        memset(&u, 0x5a, sizeof u);
        /* Sentinel is allowed for the cases after the first Sentinel one,
         * which checks that a caller that does not allow it refuses it;
         * TLS is allowed for rediss-sentinel://, refused all the same. */
        unsigned allow = 0;
        if (i < sizeof fixed / sizeof fixed[0] && strstr(url, "-sentinel://") &&
            strcmp(url, "redis-sentinel://h#m") != 0)
            allow = MAE__URL_ALLOW_SENTINEL | MAE__URL_ALLOW_TLS;
        int rc = mae__url_parse_for(url, allow, &u, err, sizeof err);
        if (rc != MAE_EINVAL)
            fail_msg("case %zu (%s): rc %d, want MAE_EINVAL", i, url, rc);
        if (!strstr(err, must))
            fail_msg("case %zu (%s): error \"%s\" lacks \"%s\"", i, url, err, must);
        if (must_not && strstr(err, must_not))
            fail_msg("case %zu (%s): error \"%s\" reveals \"%s\"", i, url, err, must_not);
        if (strncmp(err, "redis URL: ", 11) != 0)
            fail_msg("case %zu: error \"%s\" does not say what it is about", i, err);
        /* out is written only on success */
        for (size_t k = 0; k < sizeof u; k++)
            assert_int_equal(((unsigned char *)&u)[k], 0x5a);
        /* err may be absent */
        assert_int_equal(mae__url_parse_for(url, allow, &u, NULL, 0), MAE_EINVAL);
    }
    mae__url u = {0};
    char err[8];
    assert_int_equal(mae__url_parse(NULL, &u, err, sizeof err), MAE_EINVAL);
    assert_int_equal(mae__url_parse("redis://h", NULL, err, sizeof err), MAE_EINVAL);
    /* A short error buffer is cut, still terminated. */
    assert_int_equal(mae__url_parse("http://x", &u, err, sizeof err), MAE_EINVAL);
    assert_int_equal(strlen(err), sizeof err - 1);
    mae__url_free(NULL);
}

/* The parts an error quotes are clipped, so a long piece cannot push the
 * reason out of the publisher's error line. */
/* rediss:// with redis-py's query options, as the publisher parses it. */
static void test_tls_url_options(void **state)
{
    (void)state;
    static const struct {
        const char *url;
        int reqs;
        bool check_host;
        const char *ca, *ca_path, *cert, *key;
        int db;
    } cases[] = {
        {"rediss://h", MAE__TLS_VERIFY_REQUIRED, true, NONE, NONE, NONE, NONE, 0},
        {"REDISS://:pw@h:6380/3", MAE__TLS_VERIFY_REQUIRED, true, NONE, NONE, NONE, NONE, 3},
        {"rediss://h?ssl_cert_reqs=none", MAE__TLS_VERIFY_NONE, false, NONE, NONE, NONE, NONE, 0},
        /* none verifies nothing, whatever ssl_check_hostname says (redis-py 6) */
        {"rediss://h?ssl_cert_reqs=none&ssl_check_hostname=true", MAE__TLS_VERIFY_NONE, false,
         NONE, NONE, NONE, NONE, 0},
        {"rediss://h?ssl_cert_reqs=optional", MAE__TLS_VERIFY_OPTIONAL, true, NONE, NONE, NONE,
         NONE, 0},
        {"rediss://h?ssl_check_hostname=False", MAE__TLS_VERIFY_REQUIRED, false, NONE, NONE, NONE,
         NONE, 0},
        {"rediss://h?ssl_check_hostname=no&ssl_cert_reqs=required", MAE__TLS_VERIFY_REQUIRED,
         false, NONE, NONE, NONE, NONE, 0},
        {"rediss://h?ssl_check_hostname=1", MAE__TLS_VERIFY_REQUIRED, true, NONE, NONE, NONE, NONE,
         0},
        {"rediss://h:6380/2?ssl_ca_certs=/etc/ssl/ca.pem", MAE__TLS_VERIFY_REQUIRED, true,
         "/etc/ssl/ca.pem", NONE, NONE, NONE, 2},
        {"rediss://h?ssl_ca_certs=%2Ftmp%2Fmy+ca%2B1.pem&", MAE__TLS_VERIFY_REQUIRED, true,
         "/tmp/my ca+1.pem", NONE, NONE, NONE, 0},
        {"rediss://h?ssl_ca_path=/etc/ssl/certs&ssl_certfile=/c.pem&ssl_keyfile=/k.pem",
         MAE__TLS_VERIFY_REQUIRED, true, NONE, "/etc/ssl/certs", "/c.pem", "/k.pem", 0},
        {"rediss://h?ssl_certfile=/both.pem", MAE__TLS_VERIFY_REQUIRED, true, NONE, NONE,
         "/both.pem", NONE, 0},
        {"rediss://h?db=5", MAE__TLS_VERIFY_REQUIRED, true, NONE, NONE, NONE, NONE, 5},
        {"rediss://h/5?db=5", MAE__TLS_VERIFY_REQUIRED, true, NONE, NONE, NONE, NONE, 5},
        {"redis://h?db=7", -1, false, NONE, NONE, NONE, NONE, 7},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mae__url u;
        char err[160] = "";
        int rc = mae__url_parse_for(cases[i].url, MAE__URL_ALLOW_TLS, &u, err, sizeof err);
        if (rc != 0)
            fail_msg("case %zu (%s) rejected: %d %s", i, cases[i].url, rc, err);
        assert_int_equal(u.tls.enabled, cases[i].reqs >= 0);
        if (cases[i].reqs >= 0)
            assert_int_equal(u.tls.cert_reqs, cases[i].reqs);
        assert_int_equal(u.tls.check_hostname, cases[i].check_host);
        expect_str(i, "ssl_ca_certs", u.tls.ca_certs, cases[i].ca);
        expect_str(i, "ssl_ca_path", u.tls.ca_path, cases[i].ca_path);
        expect_str(i, "ssl_certfile", u.tls.certfile, cases[i].cert);
        expect_str(i, "ssl_keyfile", u.tls.keyfile, cases[i].key);
        assert_int_equal(u.db, cases[i].db);
        mae__url_free(&u);
        assert_null(u.tls.ca_certs);
        assert_null(u.tls.certfile);
    }

    static const struct {
        const char *url, *must;
    } bad[] = {
        {"rediss://h?ssl_cert_reqs=strict", "ssl_cert_reqs \"strict\" is not required, optional"},
        {"rediss://h?ssl_cert_reqs=REQUIRED", "\"REQUIRED\""},
        {"rediss://h?ssl_check_hostname=maybe", "ssl_check_hostname \"maybe\" is not true"},
        {"rediss://h?decode_responses=True", "unknown option \"decode_responses\""},
        {"rediss://h?ssl_password=x", "unknown option \"ssl_password\""},
        {"rediss://h?ssl_ca_certs=", "option ssl_ca_certs has no value"},
        {"rediss://h?ssl_ca_certs=/a&ssl_ca_certs=/b", "ssl_ca_certs is given twice"},
        {"rediss://h?ssl_keyfile=/k.pem", "ssl_keyfile needs ssl_certfile"},
        {"rediss://h?ssl_ca_certs=/a%zz", "bad percent escape \"%zz\" in the value of ssl_ca_certs"},
        {"rediss://h?=x", "query part \"=x\" is not name=value"},
        {"rediss://h?ssl_ca_certs", "\"ssl_ca_certs\" is not name=value"},
        {"rediss://h/1?db=2", "database is given twice"},
        {"rediss://h?db=x", "database \"x\""},
        {"rediss://h?ssl_cert_reqs=none#f", "\"#f\""},
        {"rediss://", "missing host"},
        {"rediss://h:0", "out of range"},
        {"ftp://h", "expected redis://, rediss:// or unix://"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mae__url u;
        char err[160] = "";
        memset(&u, 0x5a, sizeof u);
        int rc = mae__url_parse_for(bad[i].url, MAE__URL_ALLOW_TLS, &u, err, sizeof err);
        if (rc != MAE_EINVAL)
            fail_msg("bad case %zu (%s): rc %d, want MAE_EINVAL", i, bad[i].url, rc);
        if (!strstr(err, bad[i].must))
            fail_msg("bad case %zu (%s): error \"%s\" lacks \"%s\"", i, bad[i].url, err,
                     bad[i].must);
        for (size_t k = 0; k < sizeof u; k++)
            assert_int_equal(((unsigned char *)&u)[k], 0x5a);
    }
    assert_true(mae__url_is_tls("rediss://h"));
    assert_true(mae__url_is_tls("REDISS://h"));
    assert_false(mae__url_is_tls("redis://h"));
    assert_false(mae__url_is_tls(NULL));
}

static void test_error_quotes_are_clipped(void **state)
{
    (void)state;
    char url[600] = "redis://h:";
    memset(url + 10, '9', 500);
    url[510] = '\0';
    char err[160] = "";
    mae__url u;
    assert_int_equal(mae__url_parse(url, &u, err, sizeof err), MAE_EINVAL);
    assert_non_null(strstr(err, "out of range 1-65535"));
}

/* The hello (core/url.h): the commands a client sends after connecting,
 * from the parsed URL, in order, as argv arrays. */
static void test_hello_commands_from_the_url(void **state)
{
    (void)state;
    static const struct {
        const char *url;
        bool with_select;
        const char *want;   /* the commands' argv, '|' between words, ';' after each */
    } cases[] = {
        {"redis://h", true, ""},
        {"redis://h/0", true, ""},
        {"redis://:secret@h", true, "AUTH|secret;"},
        {"redis://:@h", true, "AUTH|;"},                       /* "" is a password */
        {"redis://alice:s3@h:6380/2", true, "AUTH|alice|s3;SELECT|2;"},
        {"redis://alice:s3@h:6380/2", false, "AUTH|alice|s3;"},
        {"redis://alice:@h/3", true, "AUTH|alice|;SELECT|3;"},
        {"redis://h?db=15", true, "SELECT|15;"},
        {"redis://:p%20w%3Ax@h", true, "AUTH|p w:x;"},          /* decoded, one word */
        {"unix:///tmp/r.sock?db=4", true, "SELECT|4;"},
        {"rediss://:pw@h:6380/1?ssl_cert_reqs=none", true, "AUTH|pw;SELECT|1;"},
        /* Through Sentinel the hello goes to the master: the URL's
         * credential and database, never to a Sentinel. */
        {"redis-sentinel://u:pw@s1,s2:26380/5#mymaster", true, "AUTH|u|pw;SELECT|5;"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mae__url u;
        char err[200] = "", got[200] = "";
        if (mae__url_parse_for(cases[i].url, MAE__URL_ALLOW_TLS | MAE__URL_ALLOW_SENTINEL, &u,
                               err, sizeof err) != MAE_OK)
            fail_msg("case %zu: %s: %s", i, cases[i].url, err);
        mae__hello h;
        mae__hello_init(&h, &u, cases[i].with_select);
        assert_true(h.n <= MAE__HELLO_MAX);
        for (size_t k = 0; k < h.n; k++) {
            const mae__hello_cmd *c = &h.cmd[k];
            assert_true(c->argc == 2 || c->argc == 3);
            assert_string_equal(c->argv[0], c->name);
            assert_string_equal(mae__hello_format(c), c->argc == 3 ? "%b %b %b" : "%b %b");
            for (int a = 0; a < MAE__HELLO_MAX_ARGS; a++) {
                if (a >= c->argc) {
                    assert_null(c->argv[a]);
                    assert_int_equal(c->argvlen[a], 0);
                    continue;
                }
                assert_int_equal(c->argvlen[a], strlen(c->argv[a]));
                strcat(got, c->argv[a]);
                strcat(got, a + 1 < c->argc ? "|" : ";");
            }
        }
        expect_str(i, "hello", got, cases[i].want);
        mae__url_free(&u);
    }
}

/* An error reply refuses the connection, naming the command; any other
 * reply accepts it. */
static void test_hello_replies_judged(void **state)
{
    (void)state;
    mae__url u;
    char err[200] = "";
    assert_int_equal(mae__url_parse("redis://alice:pw@h/2", &u, err, sizeof err), MAE_OK);
    mae__hello h;
    mae__hello_init(&h, &u, true);
    assert_int_equal(h.n, 2);
    strcpy(err, "untouched");
    assert_true(mae__hello_accepts(h.cmd[0].name, false, "OK", err, sizeof err));
    assert_true(mae__hello_accepts(h.cmd[1].name, false, NULL, err, sizeof err));
    assert_string_equal(err, "untouched");
    assert_false(mae__hello_accepts(h.cmd[0].name, true,
                                    "WRONGPASS invalid username-password pair or user is "
                                    "disabled.", err, sizeof err));
    assert_string_equal(err, "AUTH refused: WRONGPASS invalid username-password pair or user "
                             "is disabled.");
    assert_false(mae__hello_accepts(h.cmd[1].name, true, "ERR DB index is out of range", err,
                                    sizeof err));
    assert_string_equal(err, "SELECT refused: ERR DB index is out of range");
    char small[16];
    assert_false(mae__hello_accepts(h.cmd[1].name, true, "ERR DB index is out of range", small,
                                    sizeof small));
    assert_string_equal(small, "SELECT refused:");
    mae__url_free(&u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepted_url_forms),
        cmocka_unit_test(test_sentinel_and_wait_forms),
        cmocka_unit_test(test_malformed_urls_refused_with_the_reason),
        cmocka_unit_test(test_error_quotes_are_clipped),
        cmocka_unit_test(test_tls_url_options),
        cmocka_unit_test(test_hello_commands_from_the_url),
        cmocka_unit_test(test_hello_replies_judged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
