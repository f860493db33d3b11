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
        int rc = mae__url_parse(url, &u, err, sizeof err);
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
        assert_int_equal(mae__url_parse(url, &u, NULL, 0), MAE_EINVAL);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepted_url_forms),
        cmocka_unit_test(test_malformed_urls_refused_with_the_reason),
        cmocka_unit_test(test_error_quotes_are_clipped),
        cmocka_unit_test(test_tls_url_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
