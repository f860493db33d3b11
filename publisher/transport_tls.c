/* This module implements the publisher's TLS transport for rediss:// URLs:
 * a non-blocking TCP connect and the TLS handshake (core/tls.h) under the
 * connect timeout, commands written and replies read through OpenSSL under
 * the I/O timeout, and hiredis' redisReader as the reply parser, so a
 * batch goes over TLS exactly as over plain TCP. */
#define _GNU_SOURCE /* SOCK_NONBLOCK, SOCK_CLOEXEC */
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <openssl/err.h>

#include "core/tls.h"
#include "publisher/publisher_internal.h"

/* How much one read asks OpenSSL for: a TLS record holds at most 16 KiB. */
#define READ_CHUNK 16384

/* Per publisher (the transport's user), used on the I/O thread only: the
 * context, built at the first connect and kept, and the last connection's
 * session, offered again so a reconnect can skip the full handshake. */
typedef struct tls_state {
    SSL_CTX *ctx;
    SSL_SESSION *session;
} tls_state;

typedef struct tls_conn {
    tls_state *st;
    int fd;
    SSL *ssl;
    redisReader *reader;
    char *out;               /* commands appended, not yet written */
    size_t out_len, out_off, out_cap;
    int io_timeout_ms;
    bool session_kept;       /* the session was saved for the next connect */
} tls_conn;

/* Connects a non-blocking TCP socket to one address by deadline; the fd,
 * or -1 with the reason in err. */
static int connect_addr(const struct addrinfo *ai, double deadline, char *err, size_t errlen)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create a socket (errno %d)", errno);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
        snprintf(err, errlen, errno == ECONNREFUSED ? "Connection refused"
                                                     : "connect failed (errno %d)", errno);
        close(fd);
        return -1;
    }
    int w = mae__tls_wait(fd, SSL_ERROR_WANT_WRITE, deadline);
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (w == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 && soerr == 0)
        return fd;
    if (w == 0)
        snprintf(err, errlen, "Connection timed out");
    else if (soerr == ECONNREFUSED)
        snprintf(err, errlen, "Connection refused");
    else
        snprintf(err, errlen, "connect failed (errno %d)", soerr ? soerr : errno);
    close(fd);
    return -1;
}

static void conn_free(tls_conn *c)
{
    if (!c)
        return;
    if (c->ssl) {
        /* No close_notify is sent (the peer may be hung, and nothing is
         * owed), but the session stays resumable for the next connect. */
        SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
        SSL_free(c->ssl);
    }
    if (c->fd >= 0)
        close(c->fd);
    if (c->reader)
        redisReaderFree(c->reader);
    free(c->out);
    free(c);
}

static void *tls_connect(void *user, const mae__url *url, int connect_timeout_ms,
                         int io_timeout_ms, char *err, size_t errlen)
{
    tls_state *st = user;
    char why[112] = "";

    if (url->is_unix || !url->tls.enabled) {
        snprintf(err, errlen, "the TLS transport needs a rediss:// URL");
        return NULL;
    }
    /* Built at the first connect, not at open: open never reads files.
     * A context that could not be built (a CA file missing) is tried
     * again at the next connect. */
    if (!st->ctx && mae__tls_ctx_new(&url->tls, &st->ctx, err, errlen) != 0)
        return NULL;
    /* The timeout covers the network (name resolution aside, as with
     * hiredis): reading the CA files above is local work. */
    double deadline = mae__tls_now() + connect_timeout_ms / 1000.0;

    tls_conn *c = calloc(1, sizeof *c);
    if (!c || !(c->reader = redisReaderCreate())) {
        free(c);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->st = st;
    c->fd = -1;
    c->io_timeout_ms = io_timeout_ms;

    char port[8];
    snprintf(port, sizeof port, "%d", url->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(url->host, port, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "%s:%d: cannot resolve the host (%s)", url->host, url->port,
                 gai == EAI_NONAME ? "unknown name" : "resolver error");
        conn_free(c);
        return NULL;
    }
    for (struct addrinfo *ai = res; ai && c->fd < 0; ai = ai->ai_next)
        c->fd = connect_addr(ai, deadline, why, sizeof why);
    freeaddrinfo(res);
    if (c->fd < 0) {
        snprintf(err, errlen, "%s:%d: %s", url->host, url->port, why);
        conn_free(c);
        return NULL;
    }
    if (mae__tls_session_new(st->ctx, &url->tls, url->host, c->fd, &c->ssl, why,
                             sizeof why) != 0) {
        snprintf(err, errlen, "%s", why);
        conn_free(c);
        return NULL;
    }
    if (st->session)
        SSL_set_session(c->ssl, st->session);
    if (mae__tls_handshake(c->ssl, c->fd, deadline, why, sizeof why) != 0) {
        /* The reason first: last_error holds 127 bytes, and a long host
         * name must not push out why its certificate was refused. */
        snprintf(err, errlen, "%s (%s:%d)", why, url->host, url->port);
        conn_free(c);
        return NULL;
    }
    return c;
}

static int tls_append(void *conn, int argc, const char **argv, const size_t *lens)
{
    tls_conn *c = conn;
    size_t need = c->out_len + mae__resp_size(argc, lens);
    if (need > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap < need)
            cap *= 2;
        char *nb = realloc(c->out, cap);
        if (!nb)
            return -1;
        c->out = nb;
        c->out_cap = cap;
    }
    c->out_len = (size_t)(mae__resp_encode(c->out + c->out_len, argc, argv, lens) - c->out);
    return 0;
}

/* The deadline of the next wait: the I/O timeout counts from the last
 * progress, as a socket timeout counts per read or write. */
static double io_deadline(const tls_conn *c)
{
    return mae__tls_now() + c->io_timeout_ms / 1000.0;
}

/* After an SSL_read or SSL_write that returned n <= 0: waits for the
 * socket when OpenSSL asks to. 0 to try again, -1 with the reason in err. */
static int wait_or_fail(tls_conn *c, int n, double deadline, char *err, size_t errlen)
{
    int e = SSL_get_error(c->ssl, n);
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
        mae__tls_failure_text(c->ssl, e, err, errlen);
        return -1;
    }
    int w = mae__tls_wait(c->fd, e, deadline);
    if (w == 1)
        return 0;
    snprintf(err, errlen, w == 0 ? "Resource temporarily unavailable (I/O timeout)"
                                 : "poll failed");
    return -1;
}

/* Writes everything appended. 0, or -1 with the reason in err. */
static int flush_out(tls_conn *c, char *err, size_t errlen)
{
    double deadline = io_deadline(c);
    while (c->out_off < c->out_len) {
        ERR_clear_error();
        size_t left = c->out_len - c->out_off;
        int n = SSL_write(c->ssl, c->out + c->out_off, left > INT_MAX ? INT_MAX : (int)left);
        if (n > 0) {
            c->out_off += (size_t)n;
            deadline = io_deadline(c);
        } else if (wait_or_fail(c, n, deadline, err, errlen) != 0) {
            return -1;
        }
    }
    c->out_off = c->out_len = 0;
    if (c->out_cap > MAE__CMD_KEEP) {
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
    return 0;
}

/* The connection's session, once Redis has answered on it (so TLS 1.3's
 * tickets, sent after the handshake, have arrived), replaces the one kept
 * for the next connect. */
static void keep_session(tls_conn *c)
{
    c->session_kept = true;
    SSL_SESSION *s = SSL_get1_session(c->ssl);
    if (!s)
        return;
    if (!SSL_SESSION_is_resumable(s)) {
        SSL_SESSION_free(s);
        return;
    }
    SSL_SESSION_free(c->st->session);
    c->st->session = s;
}

static int tls_get_reply(void *conn, mae__reply *out, char *err, size_t errlen)
{
    tls_conn *c = conn;
    char buf[READ_CHUNK];
    void *r = NULL;

    if (flush_out(c, err, errlen) != 0)
        return MAE__REPLY_IO;
    double deadline = io_deadline(c);
    for (;;) {
        if (redisReaderGetReply(c->reader, &r) != REDIS_OK) {
            snprintf(err, errlen, "protocol error: %s", c->reader->errstr);
            return MAE__REPLY_IO;
        }
        if (r)
            break;
        ERR_clear_error();
        int n = SSL_read(c->ssl, buf, sizeof buf);
        if (n > 0) {
            if (redisReaderFeed(c->reader, buf, (size_t)n) != REDIS_OK) {
                snprintf(err, errlen, "out of memory");
                return MAE__REPLY_IO;
            }
            deadline = io_deadline(c);
        } else if (wait_or_fail(c, n, deadline, err, errlen) != 0) {
            return MAE__REPLY_IO;
        }
    }
    if (!c->session_kept)
        keep_session(c);
    return mae__reply_take(r, out, err, errlen);
}

/* An idle connection that is readable holds either the server's goodbye
 * (EOF, a close_notify) or TLS records of its own (a session ticket, a key
 * update), which OpenSSL consumes. Application data nobody asked for is
 * kept for the next reply read. */
static bool tls_peer_closed(void *conn)
{
    tls_conn *c = conn;
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    if (poll(&pfd, 1, 0) <= 0)
        return false;
    if (pfd.revents & (POLLERR | POLLHUP | POLLNVAL))
        return true;
    char buf[READ_CHUNK];
    ERR_clear_error();
    int n = SSL_read(c->ssl, buf, sizeof buf);
    if (n > 0)
        return redisReaderFeed(c->reader, buf, (size_t)n) != REDIS_OK;
    int e = SSL_get_error(c->ssl, n);
    ERR_clear_error();
    return e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE;
}

static int tls_fd(void *conn)
{
    return ((tls_conn *)conn)->fd;
}

static size_t tls_held(void *conn)
{
    return ((tls_conn *)conn)->out_cap;
}

static void tls_free(void *conn)
{
    conn_free(conn);
}

static void state_release(void *user)
{
    tls_state *st = user;
    if (!st)
        return;
    SSL_SESSION_free(st->session);
    SSL_CTX_free(st->ctx);
    free(st);
}

static const mae__transport_ops tls_transport = {
    .connect = tls_connect,
    .append = tls_append,
    .get_reply = tls_get_reply,
    .peer_closed = tls_peer_closed,
    .fd = tls_fd,
    .free = tls_free,
    .held = tls_held,
    .user = NULL,
    .release = state_release,
};

int mae__publisher_open_tls(const mae_publisher_config *cfg, mae_publisher **out)
{
    mae__transport_ops ops = tls_transport;
    ops.user = calloc(1, sizeof(tls_state));
    if (!ops.user) {
        if (cfg && cfg->error_buf && cfg->error_buf_size > 0)
            snprintf(cfg->error_buf, cfg->error_buf_size, "out of memory");
        return MAE_ENOMEM;
    }
    int rc = mae__publisher_open_with(cfg, &ops, out);
    if (rc != MAE_OK)
        state_release(ops.user); /* open leaves the user to its caller on failure */
    return rc;
}
