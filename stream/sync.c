/* This module implements the command's blocking Redis connection of
 * stream/sync.h: a non-blocking socket waited on with poll() under
 * deadlines, OpenSSL over it for rediss://, redisReader for the replies. */
#define _GNU_SOURCE /* SOCK_NONBLOCK, SOCK_CLOEXEC */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "core/tls.h"
#include "stream/sync.h"

struct mae__sync_conn {
    int fd;
    SSL_CTX *ctx;               /* rediss:// only */
    SSL *ssl;
    redisReader *reader;
    char *out;                  /* appended, not yet written */
    size_t out_len, out_cap;
    int timeout_ms;             /* each reply's */
    volatile sig_atomic_t *stop;   /* set by a signal handler: give up; NULL = never */
};

int mae__sync_fd(const mae__sync_conn *c)
{
    return c->fd;
}

void mae__sync_free(mae__sync_conn *c)
{
    if (!c)
        return;
    if (c->ssl)
        SSL_free(c->ssl);   /* no shutdown alert: the command is leaving */
    if (c->ctx)
        SSL_CTX_free(c->ctx);
    if (c->fd >= 0)
        close(c->fd);
    if (c->reader)
        redisReaderFree(c->reader);
    free(c->out);
    free(c);
}

/* ---- the socket ---------------------------------------------------------------- */

/* The longest one poll() sleeps before looking at the stop flag again: a
 * signal that lands just before poll() is still seen this soon. */
#define STOP_SLICE_MS 250

/* Waits for the socket as an SSL_ERROR_WANT_* asks, until the deadline or
 * *stop: 1 ready, 0 timed out, WAIT_STOPPED, -1 error (errno). poll() is
 * interrupted by the signal that sets *stop (the command installs its
 * handlers without SA_RESTART); EINTR is not taken for a failure. */
enum { WAIT_STOPPED = -2 };
static int wait_io(int fd, int ssl_error, double deadline, volatile sig_atomic_t *stop)
{
    struct pollfd pfd = {.fd = fd, .events = ssl_error == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN};
    for (;;) {
        if (stop && *stop)
            return WAIT_STOPPED;
        double left = (deadline - mae__tls_now()) * 1000.0;
        if (left <= 0)
            return 0;
        int n = poll(&pfd, 1, left < STOP_SLICE_MS ? (int)left + 1 : STOP_SLICE_MS);
        if (n > 0)
            return 1;
        if (n < 0 && errno != EINTR)
            return -1;
    }
}

static void keepalive(int fd, bool tcp)
{
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    if (!tcp)
        return;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
#ifdef TCP_KEEPIDLE
    int idle = 15, intvl = 5, cnt = 3;   /* as hiredis' redisEnableKeepAlive */
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
#endif
}

/* A non-blocking connect to one address by deadline: the fd, or -1 with
 * the reason in err. */
static int connect_addr(const struct sockaddr *sa, socklen_t len, double deadline,
                        volatile sig_atomic_t *stop, char *err, size_t errlen)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create a socket: %s", strerror(errno));
        return -1;
    }
    if (connect(fd, sa, len) == 0)
        return fd;
    if (errno != EINPROGRESS) {
        snprintf(err, errlen, "%s", strerror(errno));
        close(fd);
        return -1;
    }
    int w = wait_io(fd, SSL_ERROR_WANT_WRITE, deadline, stop);
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (w == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0)
        return fd;
    snprintf(err, errlen, "%s", w == 0              ? "Connection timed out"
                                : w == WAIT_STOPPED ? "stopped"
                                                    : strerror(soerr ? soerr : errno));
    close(fd);
    return -1;
}

static int open_socket(const mae__url *u, double deadline, volatile sig_atomic_t *stop, char *err,
                       size_t errlen)
{
    if (u->is_unix) {
        struct sockaddr_un sun;
        memset(&sun, 0, sizeof sun);
        sun.sun_family = AF_UNIX;
        if (strlen(u->path) >= sizeof sun.sun_path) {
            snprintf(err, errlen, "the socket path is too long");
            return -1;
        }
        memcpy(sun.sun_path, u->path, strlen(u->path) + 1);
        return connect_addr((struct sockaddr *)&sun, sizeof sun, deadline, stop, err, errlen);
    }
    struct addrinfo hints, *res = NULL;
    char port[16];
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof port, "%d", u->port);
    int g = getaddrinfo(u->host, port, &hints, &res);
    if (g != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", u->host, gai_strerror(g));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *ai = res; ai && fd < 0 && !(stop && *stop); ai = ai->ai_next)
        fd = connect_addr(ai->ai_addr, ai->ai_addrlen, deadline, stop, err, errlen);
    freeaddrinfo(res);
    return fd;
}

/* ---- reading and writing --------------------------------------------------------- */

/* Appends one formatted command (cmd, len bytes; freed here). */
static int append_raw(mae__sync_conn *c, char *cmd, int len)
{
    if (len < 0)
        return -1;
    if (c->out_len + (size_t)len > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 256;
        while (cap < c->out_len + (size_t)len)
            cap *= 2;
        char *p = realloc(c->out, cap);
        if (!p) {
            free(cmd);
            return -1;
        }
        c->out = p;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, cmd, (size_t)len);
    c->out_len += (size_t)len;
    free(cmd);
    return 0;
}

int mae__sync_append(mae__sync_conn *c, const char *fmt, ...)
{
    char *cmd = NULL;
    va_list ap;
    va_start(ap, fmt);
    int len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    return append_raw(c, cmd, len);
}

/* One write or SSL_write: bytes written, 0 when it must wait (*want says
 * for what), -1 with err. */
static long write_some(mae__sync_conn *c, const char *p, size_t n, int *want, char *err,
                       size_t errlen)
{
    *want = SSL_ERROR_WANT_WRITE;
    if (!c->ssl) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w >= 0)
            return (long)w;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return 0;
        snprintf(err, errlen, "%s", strerror(errno));
        return -1;
    }
    ERR_clear_error();
    int w = SSL_write(c->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
    if (w > 0)
        return w;
    int e = SSL_get_error(c->ssl, w);
    if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
        *want = e;
        return 0;
    }
    mae__tls_failure_text(c->ssl, e, err, errlen);
    return -1;
}

int mae__sync_flush(mae__sync_conn *c, int timeout_ms, char *err, size_t errlen)
{
    double deadline = mae__tls_now() + timeout_ms / 1000.0;
    size_t off = 0;
    while (off < c->out_len) {
        int want;
        long w = write_some(c, c->out + off, c->out_len - off, &want, err, errlen);
        if (w < 0)
            return -1;
        off += (size_t)w;
        int ready = w == 0 ? wait_io(c->fd, want, deadline, c->stop) : 1;
        if (ready != 1) {
            if (ready == WAIT_STOPPED)
                snprintf(err, errlen, "stopped");
            else
                snprintf(err, errlen, "could not send within %d ms", timeout_ms);
            return -1;
        }
    }
    c->out_len = 0;
    return 0;
}

int mae__sync_read(mae__sync_conn *c, char *err, size_t errlen)
{
    char buf[16384];
    for (;;) {
        long n;
        if (!c->ssl) {
            ssize_t r = recv(c->fd, buf, sizeof buf, 0);
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
                return 0;
            if (r < 0) {
                snprintf(err, errlen, "%s", strerror(errno));
                return -1;
            }
            n = r;
        } else {
            ERR_clear_error();
            int r = SSL_read(c->ssl, buf, sizeof buf);
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                    return 0;
                if (e == SSL_ERROR_ZERO_RETURN) {
                    n = 0;
                } else {
                    mae__tls_failure_text(c->ssl, e, err, errlen);
                    return -1;
                }
            } else {
                n = r;
            }
        }
        if (n == 0) {
            snprintf(err, errlen, "connection closed by the server");
            return -1;
        }
        if (redisReaderFeed(c->reader, buf, (size_t)n) != REDIS_OK) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
}

int mae__sync_take(mae__sync_conn *c, redisReply **out, char *err, size_t errlen)
{
    void *reply = NULL;
    *out = NULL;
    if (redisReaderGetReply(c->reader, &reply) != REDIS_OK) {
        snprintf(err, errlen, "protocol error: %s", c->reader->errstr);
        return -1;
    }
    *out = reply;
    return 0;
}

/* Waits up to timeout_ms for one whole reply. */
static redisReply *await_reply(mae__sync_conn *c, int timeout_ms, char *err, size_t errlen)
{
    double deadline = mae__tls_now() + timeout_ms / 1000.0;
    for (;;) {
        redisReply *r;
        if (mae__sync_take(c, &r, err, errlen) != 0)
            return NULL;
        if (r)
            return r;
        int w = wait_io(c->fd, SSL_ERROR_WANT_READ, deadline, c->stop);
        if (w == WAIT_STOPPED) {
            snprintf(err, errlen, "stopped");
            return NULL;
        }
        if (w == 0) {
            snprintf(err, errlen, "no answer within %d ms", timeout_ms);
            return NULL;
        }
        if (w < 0) {
            snprintf(err, errlen, "poll: %s", strerror(errno));
            return NULL;
        }
        if (mae__sync_read(c, err, errlen) != 0)
            return NULL;
    }
}

redisReply *mae__sync_command(mae__sync_conn *c, int timeout_ms, char *err, size_t errlen,
                              const char *fmt, ...)
{
    char *cmd = NULL;
    va_list ap;
    va_start(ap, fmt);
    int len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    if (append_raw(c, cmd, len) != 0) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (mae__sync_flush(c, timeout_ms, err, errlen) != 0)
        return NULL;
    return await_reply(c, timeout_ms, err, errlen);
}

/* ---- the handshake -------------------------------------------------------------- */

/* Judges the reply r to the hello's command k (freed here); false with
 * err on an error reply or none (err then already says why). */
static bool step(const mae__hello_cmd *k, redisReply *r, char *err, size_t errlen)
{
    if (!r)
        return false;
    bool ok = mae__hello_accepts(k->name, r->type == REDIS_REPLY_ERROR, r->str, err, errlen);
    freeReplyObject(r);
    return ok;
}

/* A Sentinel that does not answer within this long is skipped. */
#define SENTINEL_TIMEOUT_MS 500

static mae__sync_conn *connect_direct(const mae__url *u, int timeout_ms,
                                      volatile sig_atomic_t *stop, char *err, size_t errlen);

/* redis-sentinel://: asks each Sentinel in turn (SENTINEL_TIMEOUT_MS each,
 * at most timeout_ms) for the master, connects there and confirms it with
 * ROLE (Redis's Sentinel client guidelines). */
static mae__sync_conn *connect_sentinel(const mae__url *u, int timeout_ms,
                                        volatile sig_atomic_t *stop, char *err, size_t errlen)
{
    char why[200] = "no Sentinel";
    int t = timeout_ms < SENTINEL_TIMEOUT_MS ? timeout_ms : SENTINEL_TIMEOUT_MS;
    for (size_t i = 0; i < u->nsentinels; i++) {
        const struct mae__url_addr *s = &u->sentinels[i];
        if (stop && *stop) {
            snprintf(err, errlen, "stopped");
            return NULL;
        }
        mae__url a = {.host = s->host, .port = s->port, .wait_replicas = -1,
                      .wait_timeout_ms = -1};
        char e[160] = "";
        mae__sync_conn *q = connect_direct(&a, t, stop, e, sizeof e);
        redisReply *r = q ? mae__sync_command(q, t, e, sizeof e,
                                              "SENTINEL get-master-addr-by-name %s",
                                              u->master_name)
                          : NULL;
        mae__sync_free(q);
        char *end = NULL;
        long port = 0;
        if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
            r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_STRING)
            port = strtol(r->element[1]->str, &end, 10);
        if (!r) {
            snprintf(why, sizeof why, "Sentinel %.60s:%d: %.100s", s->host, s->port,
                     e[0] ? e : "no reply");
            continue;
        }
        if (port < 1 || port > 65535 || !end || *end) {
            snprintf(why, sizeof why, "Sentinel %.60s:%d does not know master \"%.60s\"", s->host,
                     s->port, u->master_name);
            freeReplyObject(r);
            continue;
        }
        mae__url m = *u;
        m.host = r->element[0]->str;
        m.port = (int)port;
        m.nsentinels = 0;
        m.sentinels = NULL;
        mae__sync_conn *c = connect_direct(&m, timeout_ms, stop, err, errlen);
        redisReply *role = c ? mae__sync_command(c, timeout_ms, err, errlen, "ROLE") : NULL;
        bool master = role && role->type == REDIS_REPLY_ARRAY && role->elements > 0 &&
                      role->element[0]->type == REDIS_REPLY_STRING &&
                      strcmp(role->element[0]->str, "master") == 0;
        if (c && role && !master)
            snprintf(err, errlen, "%.100s:%ld is not the master of \"%.60s\" (ROLE %.20s)",
                     r->element[0]->str, port, u->master_name,
                     role->type == REDIS_REPLY_ARRAY && role->elements > 0 &&
                             role->element[0]->type == REDIS_REPLY_STRING
                         ? role->element[0]->str
                         : "?");
        if (role)
            freeReplyObject(role);
        freeReplyObject(r);
        if (master)
            return c;
        mae__sync_free(c);
        return NULL;
    }
    snprintf(err, errlen, "no Sentinel gave master \"%.60s\" (last: %s)", u->master_name, why);
    return NULL;
}

mae__sync_conn *mae__redis_connect_sync_until(const mae__url *u, int timeout_ms,
                                              volatile sig_atomic_t *stop, char *err,
                                              size_t errlen)
{
    if (u->nsentinels > 0)
        return connect_sentinel(u, timeout_ms, stop, err, errlen);
    return connect_direct(u, timeout_ms, stop, err, errlen);
}

mae__sync_conn *mae__redis_connect_sync(const mae__url *u, int timeout_ms, char *err, size_t errlen)
{
    return mae__redis_connect_sync_until(u, timeout_ms, NULL, err, errlen);
}

static mae__sync_conn *connect_direct(const mae__url *u, int timeout_ms,
                                      volatile sig_atomic_t *stop, char *err, size_t errlen)
{
    mae__sync_conn *c = calloc(1, sizeof *c);
    if (!c || !(c->reader = redisReaderCreate())) {
        free(c);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->fd = -1;
    c->timeout_ms = timeout_ms;
    c->stop = stop;
    /* The CA files are read before the clock starts (core/tls.h). */
    if (u->tls.enabled && mae__tls_ctx_new(&u->tls, &c->ctx, err, errlen) != 0)
        goto fail;
    double deadline = mae__tls_now() + timeout_ms / 1000.0;
    c->fd = open_socket(u, deadline, stop, err, errlen);
    if (c->fd < 0)
        goto fail;
    keepalive(c->fd, !u->is_unix);
    if (c->ctx) {
        /* A failure here is final: never plain text instead. */
        if (mae__tls_session_new(c->ctx, &u->tls, u->host, c->fd, &c->ssl, err, errlen) != 0 ||
            mae__tls_handshake(c->ssl, c->fd, deadline, err, errlen) != 0)
            goto fail;
    }
    /* The hello (core/url.h): AUTH and SELECT as the URL asks. */
    mae__hello h;
    mae__hello_init(&h, u, true);
    for (size_t i = 0; i < h.n; i++) {
        const mae__hello_cmd *k = &h.cmd[i];
        if (!step(k, mae__sync_command(c, timeout_ms, err, errlen, mae__hello_format(k),
                                       k->argv[0], k->argvlen[0], k->argv[1], k->argvlen[1],
                                       k->argv[2], k->argvlen[2]),
                  err, errlen))
            goto fail;
    }
    return c;
fail:
    mae__sync_free(c);
    return NULL;
}

int mae__stream_bounds_sync(mae__sync_conn *c, const char *key, size_t len,
                            mae__stream_bounds *out, char *err, size_t errlen)
{
    redisReply *r = NULL;
    const char *why = NULL;
    int rc = -1;
    /* Pipelined: one round trip, and the four replies read in order. */
    if (mae__sync_append(c, MAE__STREAM_BOUNDS_MULTI) != 0 ||
        mae__sync_append(c, MAE__STREAM_BOUNDS_EXISTS, key, len) != 0 ||
        mae__sync_append(c, MAE__STREAM_BOUNDS_XINFO, key, len) != 0 ||
        mae__sync_append(c, MAE__STREAM_BOUNDS_EXEC) != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (mae__sync_flush(c, c->timeout_ms, err, errlen) != 0)
        return -1;
    for (int i = 0; i < 4; i++) {
        redisReply *q = await_reply(c, c->timeout_ms, err, errlen);
        if (!q)
            return -1;
        if (i < 3) {
            if (q->type == REDIS_REPLY_ERROR && !why) {
                snprintf(err, errlen, "%s", q->str);
                why = err;
            }
            freeReplyObject(q);
        } else {
            r = q;
        }
    }
    if (why)
        goto done;
    int p = mae__stream_parse_bounds(r, out, &why);
    if (p > 0)
        rc = 0;
    else
        snprintf(err, errlen, "%s", p < 0 ? why
                                    : r->type == REDIS_REPLY_ERROR ? r->str
                                                                   : "unexpected reply to XINFO STREAM");
done:
    freeReplyObject(r);
    return rc;
}
