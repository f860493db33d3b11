/* This module implements one connection of the relay as the layers above
 * see it (relay/server.h): making it, sending to it with the output limit
 * judged over time, and closing it the Redis way, marked and queued, then
 * freed by the reaper once the running callback has returned. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "relay/log.h"
#include "relay/server.h"

typedef mae__relay_client client;
typedef mae__relay_server relay;

static uint64_t now_ms(const relay *r)
{
    struct timeval tv;
    event_base_gettimeofday_cached(r->base, &tv);
    return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

void mae__relay_maybe_finish(relay *r)
{
    if (r->stopping && r->nconns == 0)
        event_base_loopbreak(r->base);
}

/* ---- addresses and short answers -------------------------------------------- */

bool mae__addr_is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a))
            return true;
        if (IN6_IS_ADDR_V4MAPPED(a))
            return a->s6_addr[12] == 127;
    }
    return false;
}

void mae__client_answer(client *c, int status, const char *reason, const char *type,
                        const char *extra_headers, const char *body, size_t body_len, bool keep_alive)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\n"
                     "Content-Type: %s\r\n"
                     "Content-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n"
                     "%s"
                     "Connection: %s\r\n\r\n",
                     status, reason, type, body_len, extra_headers ? extra_headers : "",
                     keep_alive ? "keep-alive" : "close");
    if (n < 0 || (size_t)n >= sizeof head) {
        mae__client_close(c, "answer head too long");
        return;
    }
    struct evbuffer_iovec v[2];
    size_t total = (size_t)n + body_len;
    int k = evbuffer_reserve_space(out, (ev_ssize_t)total, v, 1);
    if (k == 1 && v[0].iov_len >= total) {
        memcpy(v[0].iov_base, head, (size_t)n);
        if (body_len)
            memcpy((char *)v[0].iov_base + n, body, body_len);
        v[0].iov_len = total;
        evbuffer_commit_space(out, v, 1);
    } else {
        evbuffer_add(out, head, (size_t)n);
        evbuffer_add(out, body, body_len);
    }
    if (!keep_alive)
        c->state = C_ANSWERED;
}


/* ---- making and freeing --------------------------------------------------------- */

static void on_client_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    /* The header deadline passed, a publish body did not come in time
     * (answered 408), or a lingering client never closed. */
    client *c = arg;
    if (c->state == C_BODY && c->on_deadline)
        c->on_deadline(c);
    else
        mae__client_close(c, NULL);
}

void mae__client_arm_timer(client *c, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    if (!c->timer)
        c->timer = evtimer_new(c->r->base, on_client_timer, c);
    if (!c->timer || evtimer_add(c->timer, &tv) != 0)
        mae__client_close(c, NULL);   /* no deadline: not kept */
}

client *mae__client_new(relay *r, evutil_socket_t fd, const struct sockaddr *sa)
{
    client *c = calloc(1, sizeof *c);
    if (!c) {
        evutil_closesocket(fd);
        return NULL;
    }
    c->r = r;
    c->state = C_REQUEST;
    mae__format_addr(sa, c->addr, sizeof c->addr);
    /* Frames are small and must leave at once, not wait for Nagle. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
#ifdef TCP_USER_TIMEOUT
    /* A peer that vanished without a FIN (cable, NAT, suspended laptop)
     * leaves the heartbeats unacknowledged in the kernel, where the write
     * timeout cannot see them: the kernel gives the connection up after
     * this long instead of after its ~15 minutes of retransmissions, and
     * the read side reports the error. */
    unsigned int user_timeout = MAE__RELAY_WRITE_TIMEOUT_MS;
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof user_timeout);
#endif
    c->bev = bufferevent_socket_new(r->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) {
        evutil_closesocket(fd);
        free(c);
        return NULL;
    }
    struct timeval wt = {MAE__RELAY_WRITE_TIMEOUT_MS / 1000, 0};
    bufferevent_set_timeouts(c->bev, NULL, &wt);
    TAILQ_INSERT_HEAD(&r->conns, c, conn_link);
    r->nconns++;
    return c;
}

static void over_clear(client *c)
{
    if (c->in_over) {
        TAILQ_REMOVE(&c->r->over, c, over_link);
        c->in_over = false;
    }
}

void mae__client_stream_begin(client *c)
{
    relay *r = c->r;
    if (c->in_streams || c->close_asap)
        return;
    TAILQ_INSERT_TAIL(&r->streams, c, stream_link);
    c->in_streams = true;
    c->state = C_STREAM;
    r->counters.clients++;
    r->counters.clients_total++;
}

void mae__client_stream_end(client *c)
{
    if (!c->in_streams)
        return;
    TAILQ_REMOVE(&c->r->streams, c, stream_link);
    c->in_streams = false;
    c->r->counters.clients--;
    over_clear(c);
}

void mae__client_close(client *c, const char *reason)
{
    relay *r = c->r;
    if (c->close_asap)
        return;
    c->close_asap = true;
    if (c->in_streams) {
        mae__client_stream_end(c);
        if (!r->cfg->quiet && reason)
            mae__relay_say("client %s disconnected: %s", c->addr, reason);
    }
    over_clear(c);
    /* No callback of its own runs from here on. */
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
    if (c->timer)
        evtimer_del(c->timer);
    TAILQ_INSERT_TAIL(&r->to_close, c, close_link);
    if (r->reaper)
        event_active(r->reaper, EV_TIMEOUT, 1);
}

void mae__client_reap(relay *r)
{
    client *c;
    while ((c = TAILQ_FIRST(&r->to_close))) {
        TAILQ_REMOVE(&r->to_close, c, close_link);
        TAILQ_REMOVE(&r->conns, c, conn_link);
        r->nconns--;
        mae__resume_free(c->resume);
        if (c->timer)
            event_free(c->timer);
        bufferevent_free(c->bev);
        free(c);
    }
    mae__relay_maybe_finish(r);
}

/* ---- sending ------------------------------------------------------------------ */

size_t mae__client_unread(const client *c)
{
    return evbuffer_get_length(bufferevent_get_output(c->bev));
}

static void cut(client *c)
{
    c->r->counters.clients_cut_slow_total++;
    mae__client_close(c, "cut: over --client-buffer (not reading fast enough)");
}

void mae__client_send(client *c, const char *bytes, size_t len)
{
    relay *r = c->r;
    if (c->close_asap)
        return;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    size_t waiting = evbuffer_get_length(out);
    size_t limit = r->cfg->client_buffer;
    if (waiting >= MAE__RELAY_OVER_HARD * limit) {
        /* Past OVER_HARD times the limit: no grace, the memory is bounded. */
        cut(c);
        return;
    }
    r->counters.bytes_total += len;
    /* Nothing waiting: try the socket first. Most clients take the whole
     * frame at once, and then the write costs one send() instead of
     * arming and disarming a write event (two epoll_ctl calls and a loop
     * turn) per client per event, which dominated the fan-out to 10 000. */
    if (waiting == 0) {
        ssize_t n = send(bufferevent_getfd(c->bev), bytes, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n == (ssize_t)len)
            return;
        if (n < 0) {
            int err = errno;
            if (err != EAGAIN && err != EWOULDBLOCK && err != EINTR) {
                mae__client_close(c, strerror(err));
                return;
            }
            n = 0;
        }
        bytes += n;
        len -= (size_t)n;
    }
    if (bufferevent_write(c->bev, bytes, len) != 0) {
        mae__client_close(c, "out of memory");
        return;
    }
    /* Over the limit from now: judged by the limits timer, over time. */
    if (!c->in_over && c->in_streams && waiting + len > limit) {
        c->in_over = true;
        c->over_since_ms = now_ms(r);
        TAILQ_INSERT_TAIL(&r->over, c, over_link);
    }
}

void mae__client_check_limits(relay *r)
{
    uint64_t now = now_ms(r);
    mae__relay_log_tick();   /* a flood's count comes out once its second is over */
    client *c, *next;
    for (c = TAILQ_FIRST(&r->over); c; c = next) {
        next = TAILQ_NEXT(c, over_link);
        if (mae__client_unread(c) <= r->cfg->client_buffer)
            over_clear(c);
        else if (now - c->over_since_ms >= MAE__RELAY_OVER_GRACE_MS)
            cut(c);
    }
}

void mae__format_addr(const struct sockaddr *sa, char *out, size_t size)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        port = ntohs(in->sin_port);
        snprintf(out, size, "%s:%d", host, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        port = ntohs(in6->sin6_port);
        snprintf(out, size, "[%s]:%d", host, port);
    } else {
        snprintf(out, size, "?");
    }
}
