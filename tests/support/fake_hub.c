/* Test support: the fake hub of fake_hub.h, one thread polling a loopback
 * listener, its connections and a wake-up pipe. */
#define _GNU_SOURCE /* accept4, strcasestr */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "fake_hub.h"

#define MAX_CONNS 32
#define MAX_SCRIPT 64
#define MAX_PUBLISHERS 8
#define REQ_MAX ((size_t)8 << 20)

typedef struct hub_conn {
    int fd;
    bool hung;
    char *buf;
    size_t len, cap;
} hub_conn;

struct fake_hub {
    int lfd, wake[2];
    char url[64];
    pthread_t thread;
    pthread_mutex_t mu;
    bool stop;
    hub_conn conns[MAX_CONNS];

    /* Guarded by mu. */
    char *token;
    size_t body_limit;           /* 0: none; else 413 after the head, then close */
    bool linger;                 /* after that 413, read what comes before closing */
    struct { int act, status; } script[MAX_SCRIPT];
    size_t script_n;
    int def_act, def_status;
    bool unhang;
    char **events;
    size_t nevents, cap_events;
    size_t requests, connections, skipped, gaps, bad, max_body;
    struct { char id[33]; unsigned long long last; } pubs[MAX_PUBLISHERS];
    size_t npubs;
    unsigned long long next_seq; /* for last_id */
    char *last_head;             /* the last request's head, for fake_hub_header */
};

/* ---- the wire ---------------------------------------------------------------------- */

static void write_all(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w <= 0) {
            if (w < 0 && errno == EINTR)
                continue;
            return; /* the publisher went away: nothing to do */
        }
        s += w;
        n -= (size_t)w;
    }
}

static void answer(int fd, int status, const char *extra, const char *body)
{
    char head[1024];
    const char *reason = status == 200   ? "OK"
                         : status == 400 ? "Bad Request"
                         : status == 401 ? "Unauthorized"
                         : status == 413 ? "Payload Too Large"
                         : status == 503 ? "Service Unavailable"
                                         : "Error";
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n%s\r\n%s",
                     status, reason, strlen(body), extra ? extra : "", body);
    /* One write: in two, the second waits for the ACK of the first (Nagle
     * against the publisher's delayed ACK), some 40 ms per batch. */
    write_all(fd, head, (size_t)n);
}

/* The value of header name in head (a copy in out), or false. */
static bool find_header(const char *head, const char *name, char *out, size_t n)
{
    size_t nl = strlen(name);
    for (const char *line = strstr(head, "\r\n"); line && line[2]; line = strstr(line + 2, "\r\n")) {
        const char *s = line + 2;
        if (strncasecmp(s, name, nl) == 0 && s[nl] == ':') {
            s += nl + 1;
            while (*s == ' ')
                s++;
            size_t len = strcspn(s, "\r\n");
            if (len >= n)
                len = n - 1;
            memcpy(out, s, len);
            out[len] = '\0';
            return true;
        }
    }
    return false;
}

static bool is_id(const char *s)
{
    if (strlen(s) != 32)
        return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return false;
    return true;
}

/* Applies the batch by the exactly-once rule; with mu held. Returns false
 * when the request breaks the wire protocol (counted in bad). */
static bool apply(fake_hub *h, const char *id, unsigned long long start, const char *body,
                  size_t blen, size_t *accepted, size_t *skipped)
{
    size_t k;
    for (k = 0; k < h->npubs && strcmp(h->pubs[k].id, id) != 0; k++) {
    }
    if (k == h->npubs) {
        assert_true(h->npubs < MAX_PUBLISHERS);
        snprintf(h->pubs[k].id, sizeof h->pubs[k].id, "%s", id);
        h->pubs[k].last = 0;
        h->npubs++;
    }
    if (start > h->pubs[k].last + 1)
        h->gaps++;
    *accepted = *skipped = 0;
    unsigned long long num = start;
    for (size_t i = 0; i < blen; num++) {
        const char *nl = memchr(body + i, '\n', blen - i);
        if (!nl || nl == body + i)
            return false; /* every line non-empty and ending in \n */
        size_t len = (size_t)(nl - body - i);
        if (num > h->pubs[k].last) {
            if (h->nevents == h->cap_events) {
                h->cap_events = h->cap_events ? 2 * h->cap_events : 256;
                h->events = realloc(h->events, h->cap_events * sizeof *h->events);
                assert_non_null(h->events);
            }
            h->events[h->nevents] = strndup(body + i, len);
            assert_non_null(h->events[h->nevents]);
            h->nevents++;
            h->pubs[k].last = num;
            (*accepted)++;
        } else {
            (*skipped)++;
            h->skipped++;
        }
        i += len + 1;
    }
    return true;
}

/* Handles one complete request (head: its first head_len bytes, body the
 * rest). Returns false when the connection is closed or hung. */
static bool handle(fake_hub *h, hub_conn *c, const char *head, const char *body, size_t blen)
{
    char id[64] = "", start_text[32] = "", type[64] = "", token[256] = "", te[32];
    pthread_mutex_lock(&h->mu);
    h->requests++;
    if (blen > h->max_body)
        h->max_body = blen;
    free(h->last_head);
    h->last_head = strdup(head);
    int act = h->def_act, status = h->def_status;
    if (h->script_n) {
        act = h->script[0].act;
        status = h->script[0].status;
        memmove(h->script, h->script + 1, --h->script_n * sizeof h->script[0]);
    }
    bool ok = strncmp(head, "POST /api/events/publish HTTP/1.1\r\n", 35) == 0 &&
              find_header(head, "X-MailAgent-Publisher", id, sizeof id) && is_id(id) &&
              find_header(head, "X-MailAgent-Batch-Start", start_text, sizeof start_text) &&
              start_text[0] && strspn(start_text, "0123456789") == strlen(start_text) &&
              find_header(head, "Content-Type", type, sizeof type) &&
              strcmp(type, "application/x-ndjson") == 0 &&
              !find_header(head, "Transfer-Encoding", te, sizeof te) && blen > 0;
    bool has_token = find_header(head, "X-MailAgent-Local-Token", token, sizeof token);
    bool authorised = !h->token || (has_token && strcmp(token, h->token) == 0);
    size_t accepted = 0, skipped = 0;
    bool applies = act == HUB_OK || act == HUB_CLOSE_MID || act == HUB_TRICKLE ||
                   act == HUB_CHUNKED;
    if (ok && authorised && applies)
        ok = apply(h, id, strtoull(start_text, NULL, 10), body, blen, &accepted, &skipped);
    if (!ok)
        h->bad++;
    unsigned long long seq = h->next_seq++;
    pthread_mutex_unlock(&h->mu);

    char json[160];
    snprintf(json, sizeof json, "{\"accepted\":%zu,\"skipped\":%zu,\"last_id\":\"1700000000000-%llu\"}",
             accepted, skipped, seq);
    if (!ok) {
        answer(c->fd, 400, NULL, "{\"error\":\"bad request\"}");
        return true;
    }
    if (!authorised) {
        answer(c->fd, 401, NULL, "{\"error\":\"unauthorized\"}");
        return true;
    }
    switch (act) {
    case HUB_STATUS: {
        char b[64];
        snprintf(b, sizeof b, "{\"error\":\"status %d\"}", status);
        answer(c->fd, status, NULL, b);
        return true;
    }
    case HUB_CLOSE_MID: {
        const char *half = "HTTP/1.1 200 OK\r\nContent-Le";
        write_all(c->fd, half, strlen(half));
        return false;
    }
    case HUB_DROP:
        return false;
    case HUB_HANG:
        c->hung = true;
        return true;
    case HUB_TRICKLE: {
        char full[512];
        int n = snprintf(full, sizeof full,
                         "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s", strlen(json), json);
        for (int i = 0; i < n; i++) {
            if (send(c->fd, full + i, 1, MSG_NOSIGNAL) != 1)
                return false;
            struct timespec ts = {0, 50 * 1000000L};
            nanosleep(&ts, NULL);
        }
        return true;
    }
    case HUB_CHUNKED: {
        char full[512];
        int n = snprintf(full, sizeof full,
                         "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%zx\r\n%s\r\n0\r\n\r\n",
                         strlen(json), json);
        write_all(c->fd, full, (size_t)n);
        return true;
    }
    default:
        answer(c->fd, 200, NULL, json);
        return true;
    }
}

static void conn_close(hub_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c->buf);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}

/* Reads what c has and handles each complete request in it. */
static void conn_read(fake_hub *h, hub_conn *c)
{
    if (c->cap - c->len < 65536) {
        c->cap = c->cap ? c->cap * 2 : 131072;
        c->buf = realloc(c->buf, c->cap + 1);
        assert_non_null(c->buf);
    }
    ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len, MSG_DONTWAIT);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
        conn_close(c);
        return;
    }
    if (r < 0)
        return;
    c->len += (size_t)r;
    while (c->fd >= 0 && !c->hung) {
        c->buf[c->len] = '\0';
        char *end = strstr(c->buf, "\r\n\r\n");
        if (!end) {
            if (c->len > REQ_MAX)
                conn_close(c);
            return;
        }
        size_t head_len = (size_t)(end - c->buf) + 4;
        char cl[32];
        c->buf[head_len - 2] = '\0'; /* the head, ending in one \r\n */
        size_t blen = find_header(c->buf, "Content-Length", cl, sizeof cl) ? strtoul(cl, NULL, 10) : 0;
        c->buf[head_len - 2] = '\r';
        pthread_mutex_lock(&h->mu);
        size_t limit = h->body_limit;
        bool linger = h->linger;
        pthread_mutex_unlock(&h->mu);
        if (limit && blen > limit) {
            /* As a hub refuses a body over its limit: before reading it. */
            answer(c->fd, 413, "Connection: close\r\n", "{\"error\":\"body too large\"}");
            pthread_mutex_lock(&h->mu);
            h->requests++;
            pthread_mutex_unlock(&h->mu);
            if (linger) {
                /* Read the rest before closing, so the close sends no
                 * reset that could take the answer with it. */
                shutdown(c->fd, SHUT_WR);
                char sink[65536];
                struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
                while (poll(&pfd, 1, 2000) > 0 && recv(c->fd, sink, sizeof sink, 0) > 0) {
                }
            }
            conn_close(c);
            return;
        }
        if (c->len < head_len + blen)
            return;
        char *head = strndup(c->buf, head_len - 2);
        char *body = malloc(blen + 1);
        assert_non_null(head);
        assert_non_null(body);
        memcpy(body, c->buf + head_len, blen);
        body[blen] = '\0';
        memmove(c->buf, c->buf + head_len + blen, c->len - head_len - blen);
        c->len -= head_len + blen;
        bool keep = handle(h, c, head, body, blen);
        free(head);
        free(body);
        if (!keep)
            conn_close(c);
    }
}

static void *hub_main(void *arg)
{
    fake_hub *h = arg;
    for (;;) {
        struct pollfd fds[MAX_CONNS + 2];
        int map[MAX_CONNS + 2];
        nfds_t n = 0;
        fds[n] = (struct pollfd){.fd = h->wake[0], .events = POLLIN};
        map[n++] = -1;
        fds[n] = (struct pollfd){.fd = h->lfd, .events = POLLIN};
        map[n++] = -2;
        for (int i = 0; i < MAX_CONNS; i++) {
            if (h->conns[i].fd >= 0 && !h->conns[i].hung) {
                fds[n] = (struct pollfd){.fd = h->conns[i].fd, .events = POLLIN};
                map[n++] = i;
            }
        }
        if (poll(fds, n, -1) < 0 && errno != EINTR)
            break;
        pthread_mutex_lock(&h->mu);
        bool stop = h->stop, unhang = h->unhang;
        h->unhang = false;
        pthread_mutex_unlock(&h->mu);
        if (stop)
            break;
        if (fds[0].revents) {
            char b[16];
            ssize_t r = read(h->wake[0], b, sizeof b);
            (void)r;
        }
        if (unhang)
            for (int i = 0; i < MAX_CONNS; i++)
                if (h->conns[i].fd >= 0 && h->conns[i].hung)
                    conn_close(&h->conns[i]);
        for (nfds_t k = 1; k < n; k++) {
            if (!fds[k].revents)
                continue;
            if (map[k] == -2) {
                int fd = accept4(h->lfd, NULL, NULL, SOCK_CLOEXEC);
                if (fd < 0)
                    continue;
                int slot = -1;
                for (int i = 0; i < MAX_CONNS && slot < 0; i++)
                    if (h->conns[i].fd < 0)
                        slot = i;
                if (slot < 0) {
                    close(fd);
                    continue;
                }
                h->conns[slot].fd = fd;
                pthread_mutex_lock(&h->mu);
                h->connections++;
                pthread_mutex_unlock(&h->mu);
            } else if (h->conns[map[k]].fd >= 0) {
                conn_read(h, &h->conns[map[k]]);
            }
        }
    }
    return NULL;
}

static void poke(fake_hub *h)
{
    ssize_t w = write(h->wake[1], "x", 1);
    (void)w;
}

fake_hub *fake_hub_start(void)
{
    return fake_hub_start_on(0);
}

fake_hub *fake_hub_start_on(int port)
{
    fake_hub *h = calloc(1, sizeof *h);
    assert_non_null(h);
    for (int i = 0; i < MAX_CONNS; i++)
        h->conns[i].fd = -1;
    h->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(h->lfd >= 0);
    int one = 1;
    setsockopt(h->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(h->lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(h->lfd, 64), 0);
    socklen_t al = sizeof a;
    assert_int_equal(getsockname(h->lfd, (struct sockaddr *)&a, &al), 0);
    snprintf(h->url, sizeof h->url, "http://127.0.0.1:%d", ntohs(a.sin_port));
    assert_int_equal(pipe2(h->wake, O_CLOEXEC | O_NONBLOCK), 0);
    pthread_mutex_init(&h->mu, NULL);
    h->def_act = HUB_OK;
    h->next_seq = 1;
    assert_int_equal(pthread_create(&h->thread, NULL, hub_main, h), 0);
    return h;
}

void fake_hub_stop(fake_hub *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    h->stop = true;
    pthread_mutex_unlock(&h->mu);
    poke(h);
    pthread_join(h->thread, NULL);
    for (int i = 0; i < MAX_CONNS; i++)
        conn_close(&h->conns[i]);
    close(h->lfd);
    close(h->wake[0]);
    close(h->wake[1]);
    for (size_t i = 0; i < h->nevents; i++)
        free(h->events[i]);
    free(h->events);
    free(h->token);
    free(h->last_head);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

const char *fake_hub_url(fake_hub *h)
{
    return h->url;
}

int fake_hub_port(fake_hub *h)
{
    return atoi(strrchr(h->url, ':') + 1);
}

void fake_hub_require_token(fake_hub *h, const char *token)
{
    pthread_mutex_lock(&h->mu);
    free(h->token);
    h->token = token ? strdup(token) : NULL;
    pthread_mutex_unlock(&h->mu);
}

void fake_hub_body_limit(fake_hub *h, size_t bytes, bool linger)
{
    pthread_mutex_lock(&h->mu);
    h->body_limit = bytes;
    h->linger = linger;
    pthread_mutex_unlock(&h->mu);
}

void fake_hub_push(fake_hub *h, int act, int status)
{
    pthread_mutex_lock(&h->mu);
    assert_true(h->script_n < MAX_SCRIPT);
    h->script[h->script_n].act = act;
    h->script[h->script_n].status = status;
    h->script_n++;
    pthread_mutex_unlock(&h->mu);
}

void fake_hub_default(fake_hub *h, int act, int status)
{
    pthread_mutex_lock(&h->mu);
    h->def_act = act;
    h->def_status = status;
    pthread_mutex_unlock(&h->mu);
}

void fake_hub_unhang(fake_hub *h)
{
    pthread_mutex_lock(&h->mu);
    h->def_act = HUB_OK;
    h->unhang = true;
    pthread_mutex_unlock(&h->mu);
    poke(h);
}

#define COUNTER(name)                                                                      \
    size_t fake_hub_##name(fake_hub *h)                                                    \
    {                                                                                      \
        pthread_mutex_lock(&h->mu);                                                        \
        size_t v = h->name;                                                                \
        pthread_mutex_unlock(&h->mu);                                                      \
        return v;                                                                          \
    }
COUNTER(requests)
COUNTER(connections)
COUNTER(skipped)
COUNTER(gaps)
COUNTER(bad)
COUNTER(max_body)

size_t fake_hub_events(fake_hub *h)
{
    pthread_mutex_lock(&h->mu);
    size_t v = h->nevents;
    pthread_mutex_unlock(&h->mu);
    return v;
}

bool fake_hub_event(fake_hub *h, size_t i, char *buf, size_t n)
{
    pthread_mutex_lock(&h->mu);
    bool ok = i < h->nevents;
    if (ok)
        snprintf(buf, n, "%s", h->events[i]);
    pthread_mutex_unlock(&h->mu);
    return ok;
}

bool fake_hub_header(fake_hub *h, const char *name, char *buf, size_t n)
{
    pthread_mutex_lock(&h->mu);
    bool ok = false;
    if (h->last_head) {
        if (strcmp(name, ":request") == 0) {
            size_t len = strcspn(h->last_head, "\r\n");
            snprintf(buf, n, "%.*s", (int)len, h->last_head);
            ok = true;
        } else {
            size_t hl = strlen(h->last_head);
            char *tmp = malloc(hl + 3);
            assert_non_null(tmp);
            memcpy(tmp, h->last_head, hl);
            memcpy(tmp + hl, "\r\n", 3);
            ok = find_header(tmp, name, buf, n);
            free(tmp);
        }
    }
    pthread_mutex_unlock(&h->mu);
    return ok;
}
