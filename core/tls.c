/* This module implements the TLS client setup of core/tls.h: a context
 * from a rediss:// URL's options, a session per connection with SNI and
 * the host name check, a handshake under a deadline, and the sentence
 * that names why a handshake failed. */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <mailagent/common.h>

#include "core/tls.h"

double mae__tls_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The reason of the earliest queued OpenSSL error ("no such file", "bad
 * decrypt", ...), or fallback; the queue is cleared. */
static const char *queued_reason(const char *fallback)
{
    unsigned long e = ERR_get_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return r ? r : fallback;
}

/* An encrypted key would make OpenSSL ask for its pass phrase on the
 * terminal; a library must never do that: no pass phrase, the load fails. */
static int no_passphrase(char *buf, int size, int rwflag, void *user)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)user;
    return 0;
}

/* A file (or directory) of the URL that cannot be read is named with the
 * reason; OpenSSL's own error for it says less. True when it cannot. */
static bool unreadable(const char *path, const char *option, char *err, size_t errlen)
{
    if (!path || access(path, R_OK) == 0)
        return false;
    const char *why = errno == ENOENT    ? "no such file or directory"
                      : errno == EACCES  ? "permission denied"
                      : errno == ENOTDIR ? "a part of the path is not a directory"
                                         : "cannot be read";
    snprintf(err, errlen, "TLS: cannot read %s %s: %s", option, path, why);
    return true;
}

/* OpenSSL would free its global state from an atexit handler, while a
 * publisher's I/O thread that close() left detached (stuck in a handshake
 * or a name lookup) may still be using it: a crash at exit. A library
 * must not make the program's exit racy, so the state is left to the
 * operating system. When the program initialised OpenSSL first, its own
 * choice stands. */
static void init_openssl(void)
{
    OPENSSL_init_ssl(OPENSSL_INIT_NO_ATEXIT, NULL);
}

int mae__tls_ctx_new(const mae__url_tls *opt, SSL_CTX **out, char *err, size_t errlen)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, init_openssl);
    bool verify = opt->cert_reqs != MAE__TLS_VERIFY_NONE;
    if ((verify && (unreadable(opt->ca_certs, "ssl_ca_certs", err, errlen) ||
                    unreadable(opt->ca_path, "ssl_ca_path", err, errlen))) ||
        unreadable(opt->certfile, "ssl_certfile", err, errlen) ||
        unreadable(opt->keyfile, "ssl_keyfile", err, errlen))
        return MAE_EINVAL;
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(err, errlen, "TLS: cannot create a context: %s", queued_reason("out of memory"));
        return MAE_ENOMEM;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* Writes on a non-blocking socket go out in parts and may be retried
     * from a buffer that moved; an idle connection gives its buffers back. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);

    if (opt->cert_reqs == MAE__TLS_VERIFY_NONE) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (opt->ca_certs || opt->ca_path) {
            if (SSL_CTX_load_verify_locations(ctx, opt->ca_certs, opt->ca_path) != 1) {
                if (opt->ca_certs)
                    snprintf(err, errlen, "TLS: cannot load ssl_ca_certs %s: %s", opt->ca_certs,
                             queued_reason("not a PEM file of certificates"));
                else
                    snprintf(err, errlen, "TLS: cannot use ssl_ca_path %s: %s", opt->ca_path,
                             queued_reason("not a directory of certificates"));
                goto fail;
            }
        } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
            snprintf(err, errlen, "TLS: cannot load the system's CA certificates: %s",
                     queued_reason("unknown error"));
            goto fail;
        }
    }
    if (opt->certfile) {
        const char *key = opt->keyfile ? opt->keyfile : opt->certfile;
        if (SSL_CTX_use_certificate_chain_file(ctx, opt->certfile) != 1) {
            snprintf(err, errlen, "TLS: cannot load ssl_certfile %s: %s", opt->certfile,
                     queued_reason("not a PEM certificate"));
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
            /* An encrypted key fails here too: no pass phrase is given. */
            snprintf(err, errlen, "TLS: cannot load %s %s: %s",
                     opt->keyfile ? "ssl_keyfile" : "the key in ssl_certfile", key,
                     queued_reason("not a PEM private key"));
            goto fail;
        }
        if (SSL_CTX_check_private_key(ctx) != 1) {
            snprintf(err, errlen, "TLS: the key %s does not belong to ssl_certfile %s", key,
                     opt->certfile);
            ERR_clear_error();
            goto fail;
        }
    }
    *out = ctx;
    return 0;
fail:
    SSL_CTX_free(ctx);
    return MAE_EINVAL;
}

int mae__tls_session_new(SSL_CTX *ctx, const mae__url_tls *opt, const char *host, int fd,
                         SSL **out, char *err, size_t errlen)
{
    unsigned char addr[sizeof(struct in6_addr)];
    bool is_ip = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;

    ERR_clear_error();
    SSL *ssl = SSL_new(ctx);
    if (!ssl)
        goto oom;
    SSL_set_connect_state(ssl);
    /* SNI carries a host name only, never an address (RFC 6066, 3). */
    if (!is_ip && SSL_set_tlsext_host_name(ssl, host) != 1)
        goto oom;
    if (opt->check_hostname && opt->cert_reqs != MAE__TLS_VERIFY_NONE) {
        X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
        /* "*.example.com" matches a whole label only, as in Python's ssl. */
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, host)
                       : X509_VERIFY_PARAM_set1_host(param, host, 0);
        if (ok != 1)
            goto oom;
    }
    if (fd >= 0 && SSL_set_fd(ssl, fd) != 1)
        goto oom;
    *out = ssl;
    return 0;
oom:
    snprintf(err, errlen, "TLS: cannot set up the session: %s", queued_reason("out of memory"));
    SSL_free(ssl);
    return MAE_ENOMEM;
}

int mae__tls_wait(int fd, int ssl_error, double deadline)
{
    struct pollfd pfd = {.fd = fd, .events = ssl_error == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN};
    for (;;) {
        double left = deadline - mae__tls_now();
        if (left <= 0)
            return 0;
        int n = poll(&pfd, 1, (int)(left * 1000.0) + 1);
        if (n > 0)
            return 1;
        if (n < 0 && errno != EINTR)
            return -1;
    }
}

int mae__tls_handshake(SSL *ssl, int fd, double deadline, char *err, size_t errlen)
{
    for (;;) {
        ERR_clear_error();
        int rc = SSL_do_handshake(ssl);
        if (rc == 1)
            return 0;
        int e = SSL_get_error(ssl, rc);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            mae__tls_failure_text(ssl, e, err, errlen);
            return -1;
        }
        int w = mae__tls_wait(fd, e, deadline);
        if (w == 0) {
            snprintf(err, errlen, "TLS handshake timed out");
            return -1;
        }
        if (w < 0) {
            snprintf(err, errlen, "TLS handshake: poll failed");
            return -1;
        }
    }
}

/* A word on the usual verification failure whose text does not say what
 * it means to a reader who set up the URL. */
static const char *verify_hint(long v)
{
    switch (v) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        return "unknown CA, ";
    default:
        return "";
    }
}

void mae__tls_failure_text(const SSL *ssl, int ssl_error, char *err, size_t errlen)
{
    /* Without SSL_VERIFY_PEER (ssl_cert_reqs=none) a result is recorded
     * but ignored: it is not why anything failed. */
    long v = ssl && (SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER) ? SSL_get_verify_result(ssl)
                                                                  : X509_V_OK;
    if (v != X509_V_OK) {
        snprintf(err, errlen, "TLS certificate verify failed: %s%s", verify_hint(v),
                 X509_verify_cert_error_string(v));
        ERR_clear_error();
        return;
    }
    unsigned long e = ERR_get_error();
    if (e) {
        const char *r = ERR_reason_error_string(e);
        if (r)
            snprintf(err, errlen, "TLS: %s", r);
        else
            snprintf(err, errlen, "TLS: error %lx", e);
        ERR_clear_error();
        return;
    }
    if (ssl_error == SSL_ERROR_ZERO_RETURN)
        snprintf(err, errlen, "TLS: the server closed the connection");
    else if (ssl_error == SSL_ERROR_SYSCALL)
        snprintf(err, errlen, "TLS: connection closed or reset by the server");
    else
        snprintf(err, errlen, "TLS: failed (error %d)", ssl_error);
}
