/* Internal: the one TLS client setup every part that talks to Redis uses
 * (the publisher's transport now; the relay's libevent link and the
 * command's blocking connection next), on OpenSSL 3. Never installed.
 *
 * How a caller uses it:
 *   1. Once, mae__tls_ctx_new(&url.tls, &ctx, ...): the trust store, the
 *      client certificate and the verify mode of the URL. Keep ctx for
 *      every reconnect (it holds the loaded CAs and the session cache).
 *   2. Per connection, once TCP is connected, mae__tls_session_new(ctx,
 *      &url.tls, url.host, fd, &ssl, ...): SNI and the host name check.
 *   3. The handshake:
 *      - on a non-blocking socket with a deadline: mae__tls_handshake
 *        (the publisher, and the command with its connect timeout);
 *      - on libevent: pass fd -1 in step 2, then
 *        bufferevent_openssl_socket_new(base, fd, ssl,
 *        BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE) and treat
 *        BEV_EVENT_ERROR before BEV_EVENT_CONNECTED as a failed handshake.
 *   4. On any failure, mae__tls_failure_text(ssl, SSL_get_error(...), ...)
 *      (or with ssl_error 0 from a bufferevent callback) gives the sentence
 *      for the log and last_error: a certificate that failed verification
 *      is named with the reason (unknown CA, host name mismatch, expired).
 *   Never fall back to plain text after a failure.
 *
 * Threading: an SSL_CTX may be shared by threads once built; an SSL is
 * used by one thread at a time. After fork(), a child must not use, shut
 * down or free an SSL or SSL_CTX of its parent's connections: it forgets
 * them (their memory is the parent's state, its socket the parent's
 * connection). */
#ifndef MAE_TLS_H
#define MAE_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

#include "core/url.h"

/* Builds a client context from opt: TLS 1.2 or later; for cert_reqs
 * REQUIRED or OPTIONAL, the peer is verified against ssl_ca_certs and/or
 * ssl_ca_path, or the system's default store when neither is given; the
 * client certificate chain and key when ssl_certfile is given (an
 * encrypted key is refused, never prompted for). Reads the files now.
 * Returns 0 with *out (SSL_CTX_free it), or MAE_EINVAL with a sentence
 * naming the file and the problem in err, or MAE_ENOMEM. */
int mae__tls_ctx_new(const mae__url_tls *opt, SSL_CTX **out, char *err, size_t errlen);

/* Makes the client session of one connection to host (a name or an IP
 * address, as in the URL): SNI when host is a name, and, when
 * opt->check_hostname, the certificate must be for that name or address.
 * fd >= 0 binds it to the socket; -1 leaves that to the caller. Returns 0
 * with *out (SSL_free it), or MAE_ENOMEM with a sentence in err. */
int mae__tls_session_new(SSL_CTX *ctx, const mae__url_tls *opt, const char *host, int fd,
                         SSL **out, char *err, size_t errlen);

/* Waits until fd is ready for what ssl_error (SSL_ERROR_WANT_READ or
 * _WRITE) asks, or until deadline (a CLOCK_MONOTONIC time in seconds).
 * Returns 1 when ready, 0 at the deadline, -1 on a poll error. */
int mae__tls_wait(int fd, int ssl_error, double deadline);

/* Runs the handshake of ssl on its non-blocking socket fd until it is done
 * or deadline passes. Returns 0, or -1 with the reason in err ("TLS
 * handshake timed out", or mae__tls_failure_text's sentence). */
int mae__tls_handshake(SSL *ssl, int fd, double deadline, char *err, size_t errlen);

/* The sentence for a failed TLS call on ssl (ssl_error: what SSL_get_error
 * returned, or 0 when unknown): a failed certificate verification first
 * ("certificate verify failed: certificate has expired"), then the
 * earliest error OpenSSL queued, then the connection closing. Clears this
 * thread's OpenSSL error queue. ssl may be NULL. */
void mae__tls_failure_text(const SSL *ssl, int ssl_error, char *err, size_t errlen);

/* The monotonic clock in seconds, the one deadlines above are on. */
double mae__tls_now(void);

#endif
