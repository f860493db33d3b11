/* This module implements the publisher's hub transport: a relay's base URL,
 * a non-blocking connect under connect_timeout_ms, one HTTP/1.1 POST per
 * batch on a kept-alive connection, and its answer read by the bounded
 * parser of http_response.c, the whole exchange under io_timeout_ms. */
#define _GNU_SOURCE /* SOCK_NONBLOCK, SOCK_CLOEXEC */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <mailagent/common.h>

#include "publisher/http_response.h"
#include "publisher/publisher_internal.h"

#define PUBLISH_PATH "/api/events/publish"
#define DEFAULT_HTTP_PORT 80
/* The longest relay_token accepted: a header line, not a document. */
#define TOKEN_MAX 1024
/* A request buffer grown past this for a batch of long lines is freed once
 * sent, as the Redis transport does with its command buffer. */
#define REQ_KEEP ((size_t)256 << 10)

/* ---- the base URL ---------------------------------------------------------------- */

static int url_fail(char *err, size_t errlen, const char *why, const char *url)
{
    snprintf(err, errlen, "relay URL \"%.60s\": %s", url, why);
    return MAE_EINVAL;
}

static bool host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_';
}

int mae__hub_url_parse(const char *url, const char *token, mae__url *out, char *err,
                       size_t errlen)
{
    mae__url u = {0};
    const char *s;

    for (const char *q = url; *q; q++)
        if ((unsigned char)*q <= 0x20 || *q == 0x7f)
            return url_fail(err, errlen, "contains a space or control character", url);
    if (strncasecmp(url, "https://", 8) == 0)
        return url_fail(err, errlen, "https is not supported; the hub is on this machine: "
                        "use http://127.0.0.1:PORT", url);
    if (strncasecmp(url, "http://", 7) != 0)
        return url_fail(err, errlen, "expected http://host[:port]", url);
    s = url + 7;
    size_t alen = strcspn(s, "/?#");
    const char *end = s + alen, *host = s, *hend, *port = NULL;
    if (memchr(s, '@', alen))
        return url_fail(err, errlen, "user information is not allowed; put the credential "
                        "in relay_token", url);
    if (*s == '[') {
        const char *close = memchr(s, ']', alen);
        char tmp[INET6_ADDRSTRLEN];
        struct in6_addr a6;
        if (!close || (size_t)(close - s - 1) >= sizeof tmp)
            return url_fail(err, errlen, "malformed IPv6 address", url);
        memcpy(tmp, s + 1, (size_t)(close - s - 1));
        tmp[close - s - 1] = '\0';
        if (inet_pton(AF_INET6, tmp, &a6) != 1)
            return url_fail(err, errlen, "malformed IPv6 address", url);
        host = s + 1;
        hend = close;
        if (close + 1 < end) {
            if (close[1] != ':')
                return url_fail(err, errlen, "unexpected text after the IPv6 address", url);
            port = close + 2;
        }
    } else {
        const char *colon = memchr(s, ':', alen);
        hend = colon ? colon : end;
        if (hend == host)
            return url_fail(err, errlen, "missing host", url);
        if (hend - host > 253)
            return url_fail(err, errlen, "host name is longer than 253 characters", url);
        for (const char *q = host; q < hend; q++)
            if (!host_char(*q))
                return url_fail(err, errlen, "the host contains a character not allowed in a "
                                "host name", url);
        if (colon)
            port = colon + 1;
    }
    u.port = DEFAULT_HTTP_PORT;
    if (port) {
        long v = 0;
        if (port == end)
            return url_fail(err, errlen, "empty port after ':'", url);
        for (const char *q = port; q < end; q++) {
            if (*q < '0' || *q > '9' || v > 65535)
                return url_fail(err, errlen, "the port is not a number in 1-65535", url);
            v = v * 10 + (*q - '0');
        }
        if (v < 1 || v > 65535)
            return url_fail(err, errlen, "the port is not a number in 1-65535", url);
        u.port = (int)v;
    }
    if (*end && strcmp(end, "/") != 0)
        return url_fail(err, errlen, "a base URL only: no path, query or fragment (the "
                        "publisher posts to " PUBLISH_PATH " under it)", url);
    if (token && token[0]) {
        size_t tl = strlen(token);
        if (tl > TOKEN_MAX) {
            snprintf(err, errlen, "relay_token is longer than %d bytes", TOKEN_MAX);
            return MAE_EINVAL;
        }
        for (size_t i = 0; i < tl; i++) {
            unsigned char c = (unsigned char)token[i];
            if (c < 0x20 || c == 0x7f) {
                snprintf(err, errlen, "relay_token contains a control character");
                return MAE_EINVAL;
            }
        }
        u.password = strdup(token);
        if (!u.password)
            goto oom;
    }
    u.host = strndup(host, (size_t)(hend - host));
    if (!u.host)
        goto oom;
    *out = u;
    return MAE_OK;
oom:
    mae__url_free(&u);
    snprintf(err, errlen, "out of memory");
    return MAE_ENOMEM;
}

/* ---- the connection ---------------------------------------------------------------- */

typedef struct http_conn {
    int fd;
    int io_timeout_ms;
    bool dead;              /* the server said close, or the stream's state is unknown */
    char *host;             /* the Host header's value, e.g. "127.0.0.1:9200" */
    char *token;            /* NULL: no token header */
    char *req;              /* the request being sent */
    size_t req_len, req_cap;
    mae__http_resp resp;
    char body[MAE__HTTP_BODY_MAX];
} http_conn;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Milliseconds left until deadline, at least 0, for poll. */
static int left_ms(double deadline)
{
    double left = deadline - now_s();
    return left <= 0 ? 0 : (int)(left * 1000.0) + 1;
}

/* Waits until fd is ready for events or deadline passes: 1 ready, 0 time
 * up, -1 error. Every signal is blocked on the I/O thread, so EINTR only
 * comes from a debugger: then it waits again. */
static int wait_fd(int fd, short events, double deadline)
{
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = events};
        int rc = poll(&pfd, 1, left_ms(deadline));
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            return rc;
        return 1;
    }
}

static int errno_text(int e, char *err, size_t errlen, const char *what)
{
    const char *t = e == ECONNREFUSED ? "connection refused"
                  : e == ETIMEDOUT ? "timed out"
                  : e == ECONNRESET ? "connection reset by the server"
                  : e == EPIPE ? "connection closed by the server"
                  : e == ENETUNREACH || e == EHOSTUNREACH ? "host unreachable"
                  : e == EADDRNOTAVAIL ? "address not available"
                  : "system error";
    snprintf(err, errlen, "%s: %s (errno %d)", what, t, e);
    return -1;
}

/* One non-blocking connect to ai within deadline: the socket, or -1. */
static int connect_one(const struct addrinfo *ai, double deadline, char *err, size_t errlen)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
    if (fd < 0)
        return errno_text(errno, err, errlen, "socket");
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        if (errno != EINPROGRESS) {
            errno_text(errno, err, errlen, "connect");
            close(fd);
            return -1;
        }
        int rc = wait_fd(fd, POLLOUT, deadline);
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (rc == 0) {
            snprintf(err, errlen, "connect: timed out");
            close(fd);
            return -1;
        }
        if (rc < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0) {
            errno_text(rc < 0 ? errno : soerr, err, errlen, "connect");
            close(fd);
            return -1;
        }
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void http_free(void *conn)
{
    http_conn *hc = conn;
    if (!hc)
        return;
    if (hc->fd >= 0)
        close(hc->fd);
    free(hc->host);
    free(hc->token);
    free(hc->req);
    free(hc);
}

/* Resolves the host (blocking, as hiredis does: close() detaches a thread
 * stuck here) and connects to its addresses in turn, all within
 * connect_timeout_ms. */
static void *http_connect(void *user, const mae__url *url, int connect_timeout_ms,
                          int io_timeout_ms, char *err, size_t errlen)
{
    (void)user;
    char port[8];
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    double deadline = now_s() + connect_timeout_ms / 1000.0;
    snprintf(port, sizeof port, "%d", url->port);
    int gai = getaddrinfo(url->host, port, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "%s:%d: cannot resolve the host (%s)", url->host, url->port,
                 gai == EAI_NONAME ? "unknown name" : gai == EAI_AGAIN ? "try again later"
                                                                      : "lookup failed");
        return NULL;
    }
    http_conn *hc = calloc(1, sizeof *hc);
    if (!hc) {
        freeaddrinfo(res);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    hc->fd = -1;
    hc->io_timeout_ms = io_timeout_ms;
    bool v6 = strchr(url->host, ':') != NULL;
    size_t hl = strlen(url->host) + 10;
    hc->host = malloc(hl);
    hc->token = url->password ? strdup(url->password) : NULL;
    if (!hc->host || (url->password && !hc->token)) {
        freeaddrinfo(res);
        http_free(hc);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(hc->host, hl, v6 ? "[%s]:%d" : "%s:%d", url->host, url->port);
    char why[96] = "no address";
    for (const struct addrinfo *ai = res; ai && hc->fd < 0; ai = ai->ai_next)
        hc->fd = connect_one(ai, deadline, why, sizeof why);
    freeaddrinfo(res);
    if (hc->fd < 0) {
        snprintf(err, errlen, "%s: %s", hc->host, why);
        http_free(hc);
        return NULL;
    }
    return hc;
}

/* Appends s[0..n) to the request (grown as needed): 0 or -1 (memory). */
static int put(http_conn *hc, const char *s, size_t n)
{
    if (n > hc->req_cap - hc->req_len) {
        size_t cap = hc->req_cap ? hc->req_cap : 4096;
        while (cap - hc->req_len < n)
            cap *= 2;
        char *nb = realloc(hc->req, cap);
        if (!nb)
            return -1;
        hc->req = nb;
        hc->req_cap = cap;
    }
    memcpy(hc->req + hc->req_len, s, n);
    hc->req_len += n;
    return 0;
}

static int puts_(http_conn *hc, const char *s)
{
    return put(hc, s, strlen(s));
}

/* Builds one batch's request; nothing is written yet. The seam's command
 * is argv[0] the publisher's id, argv[1] the number of the batch's first
 * event, argv[2..] the events' lines. Returns 0 or -1 (out of memory). */
static int http_append(void *conn, int argc, const char **argv, const size_t *lens)
{
    http_conn *hc = conn;
    size_t body = 0;
    char num[24];
    if (argc < 2)
        return -1;
    for (int i = 2; i < argc; i++)
        body += lens[i] + 1;
    hc->req_len = 0;
    snprintf(num, sizeof num, "%zu", body);
    int rc = puts_(hc, "POST " PUBLISH_PATH " HTTP/1.1\r\nHost: ") | puts_(hc, hc->host) |
             puts_(hc, "\r\nContent-Type: application/x-ndjson\r\nContent-Length: ") |
             puts_(hc, num) | puts_(hc, "\r\nConnection: keep-alive\r\n");
    if (hc->token)
        rc |= puts_(hc, "X-MailAgent-Local-Token: ") | puts_(hc, hc->token) | puts_(hc, "\r\n");
    rc |= puts_(hc, "X-MailAgent-Publisher: ") | put(hc, argv[0], lens[0]) |
          puts_(hc, "\r\nX-MailAgent-Batch-Start: ") | put(hc, argv[1], lens[1]) |
          puts_(hc, "\r\n\r\n");
    for (int i = 2; i < argc && rc == 0; i++)
        rc |= put(hc, argv[i], lens[i]) | put(hc, "\n", 1);
    return rc ? -1 : 0;
}

/* The number after "key": in a small JSON object, or -1. The hub's answer
 * is ours and flat; anything unexpected reads as absent. */
static long long json_number(const char *body, size_t n, const char *key)
{
    char pat[24];
    size_t pl = (size_t)snprintf(pat, sizeof pat, "\"%s\"", key);
    for (size_t i = 0; i + pl <= n; i++) {
        if (memcmp(body + i, pat, pl) != 0)
            continue;
        size_t j = i + pl;
        while (j < n && (body[j] == ' ' || body[j] == ':' || body[j] == '\t'))
            j++;
        long long v = -1;
        for (; j < n && body[j] >= '0' && body[j] <= '9' && v < (1LL << 50); j++)
            v = (v < 0 ? 0 : v * 10) + (body[j] - '0');
        return v;
    }
    return -1;
}

static void json_string(const char *body, size_t n, const char *key, char *out, size_t outlen)
{
    char pat[24];
    size_t pl = (size_t)snprintf(pat, sizeof pat, "\"%s\"", key);
    out[0] = '\0';
    for (size_t i = 0; i + pl <= n; i++) {
        if (memcmp(body + i, pat, pl) != 0)
            continue;
        size_t j = i + pl;
        while (j < n && (body[j] == ' ' || body[j] == ':' || body[j] == '\t'))
            j++;
        if (j >= n || body[j] != '"')
            return;
        size_t k = 0;
        for (j++; j < n && body[j] != '"' && body[j] != '\\' && k + 1 < outlen; j++)
            out[k++] = body[j];
        out[k] = '\0';
        return;
    }
}

/* A short, printable excerpt of an error answer's body for last_error. */
static void excerpt(const char *body, size_t n, char *out, size_t outlen)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < outlen && k < 60; i++) {
        unsigned char c = (unsigned char)body[i];
        if (c == '\r' || c == '\n')
            break;
        out[k++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    out[k] = '\0';
}

/* Writes the request and reads its answer, the whole exchange within the
 * I/O timeout (a hub that trickles its answer a byte at a time is cut off
 * as one that never answers). MAE__REPLY_OK for 2xx, with out's ints the
 * answer's accepted and skipped and str its last_id; MAE__REPLY_ERROR for
 * any other status, with err "HTTP <status>: <body excerpt>"; out->status
 * is the status either way. MAE__REPLY_IO when the connection failed or
 * timed out before a complete answer: the batch was not acknowledged. */
static int http_get_reply(void *conn, mae__reply *out, char *err, size_t errlen)
{
    http_conn *hc = conn;
    double deadline = now_s() + hc->io_timeout_ms / 1000.0;
    size_t off = 0;
    if (out)
        memset(out, 0, sizeof *out);
    hc->dead = true; /* until a complete answer says otherwise */
    /* A hub may answer before it has read the whole request (a 413 for a
     * body it will not take) and close: then writing fails, or stalls, and
     * the answer already sent is what decides. `cut` records that the
     * request did not go out whole, and why. */
    char cut[96] = "";
    while (off < hc->req_len) {
        ssize_t w = send(hc->fd, hc->req + off, hc->req_len - off, MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            errno_text(errno, cut, sizeof cut, "sending");
            break;
        }
        struct pollfd pfd = {.fd = hc->fd, .events = POLLOUT | POLLIN};
        int rc = poll(&pfd, 1, left_ms(deadline));
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0) {
            snprintf(err, errlen, "sending: %s", rc == 0 ? "timed out" : "poll failed");
            return MAE__REPLY_IO;
        }
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
            snprintf(cut, sizeof cut, "sending: the hub answered or closed before the whole request");
            break;
        }
    }
    if (hc->req_cap > REQ_KEEP) {
        free(hc->req);
        hc->req = NULL;
        hc->req_cap = 0;
    }
    hc->req_len = 0;

    mae__http_resp_init(&hc->resp, hc->body);
    char buf[4096];
    int prc = MAE__HTTP_MORE;
    while (prc == MAE__HTTP_MORE) {
        ssize_t r = recv(hc->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (r == 0) {
            snprintf(err, errlen, "%s", cut[0] ? cut : "connection closed before a complete answer");
            return MAE__REPLY_IO;
        }
        if (r < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                if (cut[0])
                    snprintf(err, errlen, "%s", cut);
                else
                    errno_text(errno, err, errlen, "reading the answer");
                return MAE__REPLY_IO;
            }
            int rc = wait_fd(hc->fd, POLLIN, deadline);
            if (rc <= 0) {
                snprintf(err, errlen, "reading the answer: %s",
                         rc == 0 ? "timed out" : "poll failed");
                return MAE__REPLY_IO;
            }
            continue;
        }
        size_t used;
        prc = mae__http_resp_feed(&hc->resp, buf, (size_t)r, &used);
        if (prc == MAE__HTTP_BAD) {
            snprintf(err, errlen, "malformed answer: %s", hc->resp.why);
            return MAE__REPLY_IO;
        }
        /* Bytes after the answer were never asked for, or the request did
         * not go out whole: the stream is no longer in step, so the
         * connection is not reused. */
        if (prc == MAE__HTTP_DONE)
            hc->dead = cut[0] || used < (size_t)r || hc->resp.close;
    }
    const mae__http_resp *a = &hc->resp;
    if (out)
        out->status = a->status;
    if (a->status >= 200 && a->status < 300) {
        if (out) {
            long long acc = json_number(a->body, a->body_len, "accepted");
            long long sk = json_number(a->body, a->body_len, "skipped");
            out->ints[0] = acc < 0 ? 0 : acc;
            out->ints[1] = sk < 0 ? 0 : sk;
            out->nints = 2;
            json_string(a->body, a->body_len, "last_id", out->str, sizeof out->str);
        }
        return MAE__REPLY_OK;
    }
    char ex[64];
    excerpt(a->body, a->body_len, ex, sizeof ex);
    snprintf(err, errlen, "HTTP %d%s%s", a->status, ex[0] ? ": " : "", ex);
    return MAE__REPLY_ERROR;
}

static bool http_peer_closed(void *conn)
{
    http_conn *hc = conn;
    if (hc->dead)
        return true;
    struct pollfd pfd = {.fd = hc->fd, .events = POLLIN};
    if (poll(&pfd, 1, 0) <= 0)
        return false;
    if (pfd.revents & (POLLERR | POLLHUP | POLLNVAL))
        return true;
    char byte;
    ssize_t n = recv(hc->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    /* Nothing is owed to us between requests: EOF, an error or bytes all
     * mean this connection cannot carry the next batch. */
    return n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static int http_fd(void *conn)
{
    return ((http_conn *)conn)->fd;
}

static size_t http_held(void *conn)
{
    return ((http_conn *)conn)->req_cap;
}

const mae__transport_ops mae__http_transport = {
    .connect = http_connect,
    .append = http_append,
    .get_reply = http_get_reply,
    .peer_closed = http_peer_closed,
    .fd = http_fd,
    .free = http_free,
    .held = http_held,
    .user = NULL,
    .release = NULL,
};
