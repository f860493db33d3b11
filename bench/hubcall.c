/* This module implements the hubcall part: the publish call on the
 * caller's thread in hub mode (relay_url), with the hub healthy, hung and
 * absent, timed as part 1 times it over Redis. The hub is a loopback HTTP
 * server in this process that answers the publish route as a relay in hub
 * mode does; "hung" is a socket that listens and never accepts (the kernel
 * completes connections into its backlog, nothing ever answers, as with a
 * SIGSTOPped relay); "absent" is a port nothing listens on. */
#define _GNU_SOURCE /* strcasestr */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mailagent/events.h>

#include "bench.h"

const char *const hub_state_names[HUB_STATES] = {"healthy", "hung", "absent"};

/* ---- the loopback hub ------------------------------------------------------------ */

typedef struct mini_hub {
    int lfd, port;
    pthread_t thread;
    char *buf;
    size_t cap;
} mini_hub;

/* A socket bound to a free loopback port: the fd, or -1. */
static int bind_free(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t al = sizeof a;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &al) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

/* Serves one connection until it closes: each request read whole (head and
 * Content-Length body), answered 200 with its events counted as accepted. */
static void serve(mini_hub *h, int fd)
{
    size_t len = 0;
    for (;;) {
        char *end;
        size_t need;
        for (;;) {
            if (len + 65536 > h->cap) {
                size_t cap = h->cap ? h->cap * 2 : 1 << 20;
                char *nb = realloc(h->buf, cap + 1);
                if (!nb)
                    return;
                h->buf = nb;
                h->cap = cap;
            }
            h->buf[len] = '\0';
            end = strstr(h->buf, "\r\n\r\n");
            if (end) {
                const char *cl = strcasestr(h->buf, "\r\nContent-Length:");
                size_t body = cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0;
                need = (size_t)(end - h->buf) + 4 + body;
                if (len >= need)
                    break;
            }
            ssize_t r = read(fd, h->buf + len, h->cap - len);
            if (r <= 0)
                return;
            len += (size_t)r;
        }
        size_t events = 0;
        for (const char *c = end + 4; c < h->buf + need; c++)
            events += *c == '\n';
        /* One write for the whole answer: written in two, the second part
         * waits (Nagle) for the ACK of the first, which the publisher
         * delays (delayed ACK): some 40 ms per batch. */
        char body[96], ans[256];
        int bl = snprintf(body, sizeof body, "{\"accepted\":%zu,\"skipped\":0,\"last_id\":\"0-0\"}",
                          events);
        int al = snprintf(ans, sizeof ans,
                          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          "Content-Length: %d\r\n\r\n%s",
                          bl, body);
        if (write(fd, ans, (size_t)al) != al)
            return;
        memmove(h->buf, h->buf + need, len - need);
        len -= need;
    }
}

static void *hub_main(void *arg)
{
    mini_hub *h = arg;
    for (;;) {
        int fd = accept(h->lfd, NULL, NULL);
        if (fd < 0)
            return NULL; /* shut down */
        serve(h, fd);
        close(fd);
    }
}

/* ---- the calls ---------------------------------------------------------------------- */

static int run_state(const bench_opts *o, int state, int port, hub_call_result *x)
{
    char url[64], err[160] = "";
    mae_publisher_config cfg;
    mae_publisher *p = NULL;
    size_t n = o->lat_calls, warm = 2000;
    lat l = {0};

    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    mae_publisher_config_init(&cfg);
    cfg.relay_url = url;
    /* Room for every call, as in part 1: the call is measured, not drops. */
    cfg.queue_max_events = n + warm + 1024;
    cfg.queue_max_bytes = cfg.queue_max_events * 256;
    cfg.error_buf = err;
    cfg.error_buf_size = sizeof err;
    if (lat_init(&l, n) != 0)
        return -1;
    if (mae_publisher_open(&cfg, &p) != MAE_OK) {
        fprintf(stderr, "bench: mae_publisher_open: %s\n", err);
        lat_free(&l);
        return -1;
    }
    for (size_t i = 0; i < warm; i++)
        mae_safe_publish(p, BENCH_EVENT, (int64_t)(i + 1), BENCH_DATA, BENCH_SOURCE);
    if (state == HUB_HEALTHY)
        mae_publisher_flush(p, 5000);
    progress("hubcall: the hub %s, %zu calls", hub_state_names[state], n);
    for (size_t i = 0; i < n; i++) {
        uint64_t t0 = now_ns();
        mae_safe_publish(p, BENCH_EVENT, (int64_t)(100000 + i), BENCH_DATA, BENCH_SOURCE);
        lat_add(&l, now_ns() - t0);
    }
    if (state == HUB_HEALTHY)
        mae_publisher_flush(p, 30000);
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    x->call = lat_summarise(&l);
    x->calls = st.calls;
    x->published = st.published;
    x->dropped = st.dropped_queue_full + st.dropped_send_error;
    x->connects = st.connects;
    x->connect_failures = st.connect_failures;
    uint64_t c0 = now_ns();
    mae_publisher_close(p, state == HUB_HEALTHY ? 5000 : 300);
    x->close_ms = (double)(now_ns() - c0) / 1e6;
    lat_free(&l);
    return 0;
}

int part_hubcall(const bench_opts *o, bench_results *res)
{
    mini_hub h = {.lfd = -1};
    int hung_port = 0, absent_port = 0, rc = -1;
    int hung_fd = bind_free(&hung_port);
    int absent_fd = bind_free(&absent_port);

    h.lfd = bind_free(&h.port);
    if (h.lfd < 0 || hung_fd < 0 || absent_fd < 0 || listen(h.lfd, 16) != 0 ||
        listen(hung_fd, 1024) != 0) {
        fprintf(stderr, "bench: cannot set up the loopback hubs\n");
        goto out;
    }
    close(absent_fd); /* bound, then freed: nothing listens there */
    absent_fd = -1;
    if (pthread_create(&h.thread, NULL, hub_main, &h) != 0)
        goto out;
    int ports[HUB_STATES] = {h.port, hung_port, absent_port};
    rc = 0;
    for (int s = 0; s < HUB_STATES && rc == 0; s++)
        rc = run_state(o, s, ports[s], &res->hubcall.state[s]);
    shutdown(h.lfd, SHUT_RDWR);
    pthread_join(h.thread, NULL);
    if (rc == 0)
        res->have[PART_HUBCALL] = true;
out:
    if (h.lfd >= 0)
        close(h.lfd);
    if (hung_fd >= 0)
        close(hung_fd);
    if (absent_fd >= 0)
        close(absent_fd);
    free(h.buf);
    return rc;
}
