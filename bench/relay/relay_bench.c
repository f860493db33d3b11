/* The relay's benchmark (part of `make bench`): `mailagent events serve`
 * with 100, 1 000 and 10 000 idle clients held open, the relay's resident
 * memory per client, the delay from PUBLISH to the last client's receipt
 * of each event (p50/p99), and the relay's CPU per event per 1 000
 * clients. Then stream mode: the time a client that comes back with
 * Last-Event-ID takes to receive 10 000 missed events. The clients live in this process (one epoll loop, its own file
 * descriptors), the relay and redis-server in their own.
 *
 * Usage: mae_relay_bench MAILAGENT REDIS_SERVER [--events N] [--clients a,b,c]
 *                        [--replay N] [--json PATH]
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "clients.h"

#define CHANNEL "mailagent:events:v1"

typedef struct result {
    int clients;
    long rss_base_kib, rss_idle_kib;
    double rss_per_client_kib;
    int events, complete;
    double p50_ms, p99_ms, max_ms;
    double cpu_per_event_per_1000_ms;
} result;

static int run_one(pid_t relay, int port, redisContext *rc, int n, int events, result *out)
{
    rb_crowd f;
    memset(out, 0, sizeof *out);
    out->clients = n;
    out->events = events;
    rb_sleep_ms(300);
    out->rss_base_kib = rb_rss_kib(relay);
    if (rb_crowd_open(&f, n, port, NULL, NULL) != 0) {
        fprintf(stderr, "relay bench: could not open %d streams\n", n);
        rb_crowd_close(&f);
        return -1;
    }
    /* Idle: settle, then the relay's memory. */
    for (int i = 0; i < 30; i++)
        rb_crowd_pump(&f, 10);
    out->rss_idle_kib = rb_rss_kib(relay);
    out->rss_per_client_kib = (double)(out->rss_idle_kib - out->rss_base_kib) / n;

    /* Fan-out: one event at a time, the next once every client has the
     * last; a fixed-size frame, so a client has event k when it holds k
     * frames' bytes. */
    char payload[256];
    size_t *start = calloc((size_t)n, sizeof *start);
    for (int i = 0; i < n; i++)
        start[i] = f.c[i].bytes;
    double *delay = calloc((size_t)events, sizeof *delay);
    int frame = 0;
    double cpu0 = rb_cpu_s(relay);
    for (int k = 1; k <= events; k++) {
        int len = snprintf(payload, sizeof payload,
                           "{\"event_type\":\"bench.fanout\",\"ts\":1716096000.000000,"
                           "\"internal_id\":%08d,\"data\":{},\"source\":\"bench\"}", k);
        /* "event: mailagent\n" + "data: " + payload + "\n\n", chunked. */
        int body = 17 + 6 + len + 2;
        char hex[16];
        frame = snprintf(hex, sizeof hex, "%x", body) + 2 + body + 2;
        double t0 = rb_now();
        redisReply *r = redisCommand(rc, "PUBLISH %s %b", CHANNEL, payload, (size_t)len);
        if (r)
            freeReplyObject(r);
        int have = 0;
        double until = t0 + 10;
        int next = 0;
        while (rb_now() < until) {
            while (next < n && f.c[next].bytes - start[next] >= (size_t)frame * (size_t)k)
                next++;
            if (next == n)
                break;
            rb_crowd_pump(&f, 5);
        }
        have = next;
        if (have < n) {
            fprintf(stderr, "relay bench: event %d reached %d of %d clients\n", k, have, n);
            break;
        }
        delay[k - 1] = (rb_now() - t0) * 1000.0;
        out->complete = k;
    }
    double cpu = rb_cpu_s(relay) - cpu0;
    qsort(delay, (size_t)out->complete, sizeof *delay, rb_cmp_double);
    if (out->complete > 0) {
        out->p50_ms = delay[(out->complete - 1) / 2];
        out->p99_ms = delay[(int)((out->complete - 1) * 0.99)];
        out->max_ms = delay[out->complete - 1];
        out->cpu_per_event_per_1000_ms = cpu * 1000.0 / out->complete / (n / 1000.0);
    }
    free(delay);
    free(start);
    rb_crowd_close(&f);
    /* Let the relay see every close before the next size. */
    rb_sleep_ms(n >= 5000 ? 1500 : 500);
    return out->complete == events ? 0 : -1;
}

/* Stream mode: n entries appended while no client listens, then one
 * client asks for everything after 0-0; the time from its request to its
 * last frame. Returns milliseconds, or -1. */
static double replay_ms(const char *mailagent, const char *url, redisContext *rc, int n,
                        const char *dir)
{
    const char *key = "bench:replay";
    redisReply *r = redisCommand(rc, "DEL %s", key);
    if (r)
        freeReplyObject(r);
    char line[160];
    for (int i = 1; i <= n; i++) {
        snprintf(line, sizeof line, "{\"event_type\":\"bench.replay\",\"internal_id\":%08d}", i);
        redisAppendCommand(rc, "XADD %s * event %s", key, line);
    }
    for (int i = 1; i <= n; i++) {
        if (redisGetReply(rc, (void **)&r) != REDIS_OK)
            return -1;
        freeReplyObject(r);
    }
    char log[300];
    snprintf(log, sizeof log, "%s/relay-stream.log", dir);
    const char *argv[] = {mailagent, "--redis", url, "--stream", key, "events",
                          "serve", "--listen", "127.0.0.1:0", "--quiet", NULL};
    pid_t relay = rb_spawn(argv, log, false);
    int port = rb_wait_listening(log);
    rb_sleep_ms(300);   /* the reader's position established */
    double ms = -1;
    int fd = port > 0 ? rb_connect(port, false) : -1;
    if (fd >= 0) {
        rb_sleep_ms(20);
        char want[64];
        snprintf(want, sizeof want, "\"internal_id\":%08d}", n);
        size_t cap = (size_t)n * 200 + 65536, len = 0;
        char *buf = malloc(cap);
        double t0 = rb_now();
        if (buf && rb_sse_request(fd, "0-0") == 0) {
            struct timeval tv = {10, 0};
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            for (;;) {
                ssize_t got = recv(fd, buf + len, cap - len - 1, 0);
                if (got <= 0)
                    break;
                len += (size_t)got;
                buf[len] = '\0';
                size_t from = len > (size_t)got + 64 ? len - (size_t)got - 64 : 0;
                if (strstr(buf + from, want)) {
                    ms = (rb_now() - t0) * 1000.0;
                    break;
                }
                if (cap - len < 4096)
                    break;
            }
            /* Every event once, in order. */
            int frames = 0;
            for (const char *p = buf; (p = strstr(p, "event: mailagent\n")) != NULL; p++)
                frames++;
            if (frames != n) {
                fprintf(stderr, "relay bench: replay gave %d frames, want %d\n", frames, n);
                ms = -1;
            }
        }
        free(buf);
        close(fd);
    }
    rb_stop(relay);
    return ms;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s MAILAGENT REDIS_SERVER [--events N] [--clients a,b,c] "
                        "[--json PATH]\n", argv[0]);
        return 2;
    }
    int events = 200;
    int replay = 10000;
    int sizes[8] = {100, 1000, 10000};
    int nsizes = 3;
    const char *json = NULL;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--events") == 0 && i + 1 < argc) {
            events = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--clients") == 0 && i + 1 < argc) {
            nsizes = 0;
            for (char *t = strtok(argv[++i], ","); t && nsizes < 8; t = strtok(NULL, ","))
                sizes[nsizes++] = atoi(t);
        } else if (strcmp(argv[i], "--replay") == 0 && i + 1 < argc) {
            replay = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--json") == 0 && i + 1 < argc) {
            json = argv[++i];
        }
    }
    rb_raise_nofile(0);
    signal(SIGPIPE, SIG_IGN);

    char dir[] = "/tmp/mae-relay-bench-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    int rport;
    char relay_log[300], url[64];
    pid_t redis = rb_redis_start(argv[2], dir, &rport);
    redisContext *rc = redis > 0 ? redisConnect("127.0.0.1", rport) : NULL;
    if (!rc || rc->err) {
        fprintf(stderr, "relay bench: redis-server did not start\n");
        return 1;
    }
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", rport);
    snprintf(relay_log, sizeof relay_log, "%s/relay.log", dir);
    const char *margv[] = {argv[1], "--redis", url, "events", "serve", "--listen", "127.0.0.1:0",
                           "--quiet", "--max-clients", "20000", "--ping-interval", "3600", NULL};
    pid_t relay = rb_spawn(margv, relay_log, false);
    int port = rb_wait_listening(relay_log);
    rb_sleep_ms(300);   /* subscribed */
    int status = 0;
    result res[8];
    printf("relay: clients  RSS/client  fan-out p50    p99     max   CPU/event/1000 clients\n");
    for (int s = 0; s < nsizes && port > 0; s++) {
        if (run_one(relay, port, rc, sizes[s], events, &res[s]) != 0)
            status = 1;
        result *r = &res[s];
        printf("relay: %7d  %6.2f KiB  %7.2f ms %7.2f ms %7.2f ms  %.3f ms\n", r->clients,
               r->rss_per_client_kib, r->p50_ms, r->p99_ms, r->max_ms,
               r->cpu_per_event_per_1000_ms);
        fflush(stdout);
    }
    rb_stop(relay);
    double rms = replay > 0 ? replay_ms(argv[1], url, rc, replay, dir) : 0;
    if (replay > 0) {
        if (rms < 0)
            status = 1;
        printf("relay: stream mode, a client back with Last-Event-ID gets %d missed events in "
               "%.1f ms (%.0f events/s)\n", replay, rms, rms > 0 ? replay / (rms / 1000.0) : 0);
    }
    if (json) {
        FILE *f = fopen(json, "w");
        if (f) {
            fprintf(f, "{\n  \"events_per_size\": %d,\n", events);
            fprintf(f, "  \"stream_replay\": {\"events\": %d, \"ms\": %.3f},\n", replay, rms);
            fprintf(f, "  \"sizes\": [\n");
            for (int s = 0; s < nsizes; s++) {
                result *r = &res[s];
                fprintf(f,
                        "    {\"clients\": %d, \"rss_base_kib\": %ld, \"rss_idle_kib\": %ld, "
                        "\"rss_per_client_kib\": %.3f, \"events\": %d, \"p50_ms\": %.3f, "
                        "\"p99_ms\": %.3f, \"max_ms\": %.3f, "
                        "\"cpu_per_event_per_1000_clients_ms\": %.4f}%s\n",
                        r->clients, r->rss_base_kib, r->rss_idle_kib, r->rss_per_client_kib,
                        r->complete, r->p50_ms, r->p99_ms, r->max_ms,
                        r->cpu_per_event_per_1000_ms, s + 1 < nsizes ? "," : "");
            }
            fprintf(f, "  ]\n}\n");
            fclose(f);
        }
    }
    redisFree(rc);
    rb_stop(redis);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        status = 1;
    return port > 0 ? status : 1;
}
