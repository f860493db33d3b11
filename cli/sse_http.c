/* This module implements the command's small HTTP/1.1 client: connect
 * within a deadline, one GET, a bounded response head, and the body decoded
 * from chunked transfer coding (stream/chunked.c), a Content-Length, or
 * read to the close. It serves `events tail --relay`. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cli/sse_http.h"

/* The longest a poll() sleeps before looking at *stop again. */
#define SLICE_MS 250

bool cli_http_url_parse(const char *url, const char *default_path, cli_http_url *u, char *err,
                        size_t errlen)
{
    memset(u, 0, sizeof *u);
    if (strncasecmp(url, "http://", 7) != 0) {
        snprintf(err, errlen, "'%s' is not an http:// URL (https is not supported: use a "
                 "proxy on this machine, or http to the relay itself)", url);
        return false;
    }
    const char *h = url + 7, *end;
    if (strchr(h, '@')) {
        snprintf(err, errlen, "a credential goes in WEBHOOK_SECRET or "
                 "MAILAGENT_LOCAL_API_TOKEN, not in the URL");
        return false;
    }
    if (*h == '[') {
        end = strchr(h, ']');
        if (!end || end == h + 1 || (size_t)(end - h - 1) >= sizeof u->host) {
            snprintf(err, errlen, "bad IPv6 address in '%s'", url);
            return false;
        }
        memcpy(u->host, h + 1, (size_t)(end - h - 1));
        end++;
    } else {
        end = h + strcspn(h, ":/?#");
        if (end == h || (size_t)(end - h) >= sizeof u->host) {
            snprintf(err, errlen, "no host in '%s'", url);
            return false;
        }
        memcpy(u->host, h, (size_t)(end - h));
    }
    u->port = 80;
    if (*end == ':') {
        long port = 0;
        const char *p = end + 1;
        for (; *p >= '0' && *p <= '9'; p++)
            if ((port = port * 10 + (*p - '0')) > 65535)
                break;
        if (p == end + 1 || port < 1 || port > 65535 || (*p && !strchr("/?#", *p))) {
            snprintf(err, errlen, "bad port in '%s'", url);
            return false;
        }
        u->port = (int)port;
        end = p;
    }
    size_t plen = strcspn(end, "#");
    for (size_t i = 0; i < plen; i++) {
        unsigned char c = (unsigned char)end[i];
        if (c <= ' ' || c == 0x7F) {
            snprintf(err, errlen, "the URL's path has a space or control character");
            return false;
        }
    }
    if (plen == 0 || (plen == 1 && *end == '/')) {
        snprintf(u->path, sizeof u->path, "%s", default_path);
    } else {
        if (plen >= sizeof u->path) {
            snprintf(err, errlen, "the URL's path is too long");
            return false;
        }
        if (*end == '?')
            snprintf(u->path, sizeof u->path, "%s%.*s", default_path, (int)plen, end);
        else
            memcpy(u->path, end, plen);
    }
    return true;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* Waits for events on fd until the deadline; 1 ready, 0 timed out or
 * stopped, -1 error (errno). */
static int wait_fd(int fd, short events, double deadline, volatile sig_atomic_t *stop)
{
    for (;;) {
        if (stop && *stop)
            return 0;
        double left = deadline - now_ms();
        if (left <= 0)
            return 0;
        struct pollfd pfd = {.fd = fd, .events = events};
        int n = poll(&pfd, 1, left < SLICE_MS ? (int)left + 1 : SLICE_MS);
        if (n > 0)
            return 1;
        if (n < 0 && errno != EINTR)
            return -1;
    }
}

static int connect_to(const cli_http_url *u, double deadline, volatile sig_atomic_t *stop,
                      char *err, size_t errlen)
{
    struct addrinfo hints, *res = NULL;
    char port[8];
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof port, "%d", u->port);
    int rc = getaddrinfo(u->host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", u->host, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    snprintf(err, errlen, "no address");
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
        if (fd < 0) {
            snprintf(err, errlen, "socket: %s", strerror(errno));
            continue;
        }
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
            break;
        if (errno == EINPROGRESS) {
            int w = wait_fd(fd, POLLOUT, deadline, stop);
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            if (w > 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0)
                break;
            snprintf(err, errlen, "%s", w > 0 ? strerror(soerr) : w == 0 ? "timed out"
                                                                        : strerror(errno));
        } else {
            snprintf(err, errlen, "%s", strerror(errno));
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

static bool send_all(int fd, const char *s, size_t n, double deadline,
                     volatile sig_atomic_t *stop, char *err, size_t errlen)
{
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w > 0) {
            s += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            snprintf(err, errlen, "send: %s", strerror(errno));
            return false;
        }
        if (wait_fd(fd, POLLOUT, deadline, stop) <= 0) {
            snprintf(err, errlen, "cannot send the request: timed out");
            return false;
        }
    }
    return true;
}

/* The value of header name in head (lines after the status line), or
 * NULL; *vlen its length, trimmed. */
static const char *header(const char *head, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    for (const char *l = strstr(head, "\r\n"); l && l[2]; l = strstr(l + 2, "\r\n")) {
        const char *s = l + 2;
        if (strncasecmp(s, name, nl) == 0 && s[nl] == ':') {
            const char *v = s + nl + 1, *e = strstr(v, "\r\n");
            while (*v == ' ' || *v == '\t')
                v++;
            if (!e)
                e = v + strlen(v);
            while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            *vlen = (size_t)(e - v);
            return v;
        }
    }
    return NULL;
}

/* Parses the head in h->buf[0..head_len) (ending "\r\n\r\n"). */
static bool parse_head(cli_http *h, size_t head_len, char *err, size_t errlen)
{
    char head[CLI_HTTP_HEAD_MAX + 1];
    memcpy(head, h->buf, head_len);
    head[head_len] = '\0';
    if (strncmp(head, "HTTP/1.", 7) != 0 || !(head[7] == '0' || head[7] == '1') ||
        head[8] != ' ' || head[9] < '1' || head[9] > '5' || head[10] < '0' || head[10] > '9' ||
        head[11] < '0' || head[11] > '9' || (head[12] != ' ' && head[12] != '\r')) {
        snprintf(err, errlen, "not an HTTP/1.x response");
        return false;
    }
    h->status = (head[9] - '0') * 100 + (head[10] - '0') * 10 + (head[11] - '0');
    const char *r = head + 12 + (head[12] == ' ');
    size_t rl = strcspn(r, "\r");
    snprintf(h->reason, sizeof h->reason, "%.*s", (int)(rl < 100 ? rl : 100), r);
    size_t vl;
    const char *v = header(head, "Transfer-Encoding", &vl);
    if (v) {
        if (!(vl >= 7 && strncasecmp(v + vl - 7, "chunked", 7) == 0)) {
            snprintf(err, errlen, "unsupported Transfer-Encoding");
            return false;
        }
        h->chunked = true;
        mae__chunked_init(&h->ch);
    } else if ((v = header(head, "Content-Length", &vl))) {
        uint64_t n = 0;
        if (vl == 0 || vl > 18) {
            snprintf(err, errlen, "bad Content-Length");
            return false;
        }
        for (size_t i = 0; i < vl; i++) {
            if (v[i] < '0' || v[i] > '9') {
                snprintf(err, errlen, "bad Content-Length");
                return false;
            }
            n = n * 10 + (uint64_t)(v[i] - '0');
        }
        h->sized = true;
        h->left = n;
        h->done = n == 0;
    }
    /* What came after the head is the body's start. */
    memmove(h->buf, h->buf + head_len, h->len - head_len);
    h->len -= head_len;
    return true;
}

/* The "\r\n\r\n" that ends a head in buf[0..len), or NULL. */
static char *head_end(char *buf, size_t len)
{
    for (size_t i = 0; i + 4 <= len; i++)
        if (memcmp(buf + i, "\r\n\r\n", 4) == 0)
            return buf + i;
    return NULL;
}

bool cli_http_get(cli_http *h, const cli_http_url *u, const char *headers, int timeout_ms,
                  volatile sig_atomic_t *stop, char *err, size_t errlen)
{
    char req[4096];
    double deadline = now_ms() + timeout_ms;
    memset(h, 0, sizeof *h);
    h->fd = -1;
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s%s%s:%d\r\nAccept: text/event-stream\r\n"
                     "Cache-Control: no-cache\r\nUser-Agent: mailagent-events-tail\r\n%s\r\n",
                     u->path, strchr(u->host, ':') ? "[" : "", u->host,
                     strchr(u->host, ':') ? "]" : "", u->port, headers ? headers : "");
    if (n < 0 || (size_t)n >= sizeof req) {
        snprintf(err, errlen, "the request is too long");
        return false;
    }
    if ((h->fd = connect_to(u, deadline, stop, err, errlen)) < 0)
        return false;
    if (!send_all(h->fd, req, (size_t)n, deadline, stop, err, errlen))
        goto fail;
    for (;;) {
        char *end = head_end(h->buf, h->len);
        if (end) {
            if (!parse_head(h, (size_t)(end - h->buf) + 4, err, errlen))
                goto fail;
            return true;
        }
        if (h->len == sizeof h->buf) {
            snprintf(err, errlen, "the response head is over %d bytes", CLI_HTTP_HEAD_MAX);
            goto fail;
        }
        ssize_t r = recv(h->fd, h->buf + h->len, sizeof h->buf - h->len, 0);
        if (r > 0) {
            h->len += (size_t)r;
            continue;
        }
        if (r == 0) {
            snprintf(err, errlen, "the connection closed before a response");
            goto fail;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            snprintf(err, errlen, "recv: %s", strerror(errno));
            goto fail;
        }
        int w = wait_fd(h->fd, POLLIN, deadline, stop);
        if (w <= 0) {
            snprintf(err, errlen, w == 0 ? "no response within %d ms" : "poll failed",
                     timeout_ms);
            goto fail;
        }
    }
fail:
    cli_http_close(h);
    return false;
}

bool cli_http_buffered(const cli_http *h)
{
    return h->len > 0 && !h->done;
}

int cli_http_read(cli_http *h, char *out, size_t cap, size_t *n, char *err, size_t errlen)
{
    *n = 0;
    if (h->done)
        return 0;
    if (h->len == 0) {
        ssize_t r = recv(h->fd, h->buf, sizeof h->buf, 0);
        if (r == 0) {
            if (h->chunked || (h->sized && h->left > 0)) {
                snprintf(err, errlen, "the connection closed in the middle of the body");
                return -1;
            }
            h->done = true;
            return 0;
        }
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                return 1;
            snprintf(err, errlen, "recv: %s", strerror(errno));
            return -1;
        }
        h->len = (size_t)r;
    }
    /* Decode at most cap bytes' worth of input: decoding never grows it. */
    size_t take = h->len < cap ? h->len : cap, got = take, used = take;
    memcpy(out, h->buf, take);
    if (h->chunked) {
        int rc = mae__chunked_feed(&h->ch, out, take, &got, &used);
        if (rc == MAE__CHUNKED_BAD) {
            snprintf(err, errlen, "malformed chunked body");
            return -1;
        }
        if (rc == MAE__CHUNKED_END)
            h->done = true;
    } else if (h->sized) {
        if (got > h->left)
            got = used = (size_t)h->left;
        h->left -= got;
        h->done = h->left == 0;
    }
    memmove(h->buf, h->buf + used, h->len - used);
    h->len -= used;
    *n = got;
    return 1;
}

void cli_http_close(cli_http *h)
{
    if (h->fd >= 0)
        close(h->fd);
    h->fd = -1;
}
