/* The hub's benchmark (bench part `hubpath`, issue 20): in one run, the
 * same publisher (the C library) and the same SSE reader through the three
 * ways an event can travel to a client:
 *   hub     publisher --POST--> relay (hub mode) --SSE--> reader
 *   pubsub  publisher --PUBLISH--> redis-server --> relay --SSE--> reader
 *   stream  publisher --XADD+PUBLISH--> redis-server --> relay --stream--> reader
 * For each: publish -> client latency p50/p99 at a paced 2 000 events/s
 * (the send time travels in the event, CLOCK_MONOTONIC is shared by the
 * processes of one machine), and events/s when the publisher goes as fast
 * as it can (until the reader has them all). Then the hub's resident
 * memory per 10 000 kept events (--history 10000, events of ~200 bytes).
 *
 * Usage: mae_hub_bench MAILAGENT REDIS_SERVER [--events N] [--json PATH]
 */
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mailagent/publisher.h>

#include "clients.h"

/* ---- the reader: one SSE stream on its own thread ------------------------------ */

typedef struct reader {
    int fd;
    pthread_t thread;
    volatile bool stop;
    double *lat;              /* seconds, per event received (up to cap) */
    size_t cap;
    volatile size_t n;        /* events received */
    volatile double last_at;  /* when the last one came */
} reader;

static void *reader_main(void *arg)
{
    reader *r = arg;
    static char buf[1 << 20];
    size_t have = 0;
    while (!r->stop) {
        ssize_t k = recv(r->fd, buf + have, sizeof buf - have - 1, 0);
        if (k <= 0)
            break;
        double at = rb_now();
        have += (size_t)k;
        buf[have] = '\0';
        char *p = buf, *nl;
        while ((nl = strchr(p, '\n'))) {
            *nl = '\0';
            const char *t = strstr(p, "\"data\":{\"t\":");
            if (t) {
                double sent = strtod(t + 12, NULL);
                if (r->n < r->cap)
                    r->lat[r->n] = at - sent;
                r->n++;
                r->last_at = at;
            }
            p = nl + 1;
        }
        have = (size_t)(buf + have - p);
        memmove(buf, p, have);
    }
    return NULL;
}

static int reader_start(reader *r, int port, size_t cap)
{
    memset(r, 0, sizeof *r);
    r->lat = calloc(cap, sizeof *r->lat);
    r->cap = cap;
    r->fd = rb_connect(port, false);
    if (r->fd < 0 || rb_sse_request(r->fd, NULL) != 0)
        return -1;
    rb_sleep_ms(200);   /* the stream is open and the relay subscribed */
    return pthread_create(&r->thread, NULL, reader_main, r);
}

static void reader_stop(reader *r)
{
    r->stop = true;
    shutdown(r->fd, SHUT_RDWR);
    pthread_join(r->thread, NULL);
    close(r->fd);
    free(r->lat);
}

/* ---- one path ------------------------------------------------------------------- */

typedef struct path_result {
    const char *name;
    double p50_ms, p99_ms, events_per_s;
    size_t paced, got_paced, burst, got_burst;
} path_result;

static void publish_one(mae_publisher *p, int i)
{
    char data[64];
    snprintf(data, sizeof data, "{\"t\":%.9f}", rb_now());
    mae_safe_publish(p, "bench.hub", i, data, "bench");
}

static void run_path(path_result *res, int relay_port, const mae_publisher_config *pc,
                     size_t burst)
{
    const size_t paced = 4000;
    reader rd;
    if (reader_start(&rd, relay_port, paced) != 0) {
        fprintf(stderr, "%s: cannot read the relay\n", res->name);
        return;
    }
    mae_publisher *p = NULL;
    if (mae_publisher_open(pc, &p) != MAE_OK) {
        fprintf(stderr, "%s: cannot open the publisher\n", res->name);
        reader_stop(&rd);
        return;
    }
    /* Warm up the connection. */
    publish_one(p, 0);
    mae_publisher_flush(p, 5000);
    rb_sleep_ms(100);
    rd.n = 0;
    double t0 = rb_now();
    for (size_t i = 0; i < paced; i++) {
        publish_one(p, (int)i);
        double due = t0 + (double)(i + 1) / 2000.0;
        while (rb_now() < due)
            ;
    }
    mae_publisher_flush(p, 10000);
    for (int i = 0; i < 200 && rd.n < paced; i++)
        rb_sleep_ms(10);
    res->paced = paced;
    res->got_paced = rd.n;
    size_t m = rd.n < paced ? rd.n : paced;
    qsort(rd.lat, m, sizeof *rd.lat, rb_cmp_double);
    if (m) {
        res->p50_ms = rd.lat[m / 2] * 1e3;
        res->p99_ms = rd.lat[(m * 99) / 100] * 1e3;
    }
    /* The burst: as fast as the publisher takes them. */
    size_t base = rd.n;
    double b0 = rb_now();
    for (size_t i = 0; i < burst; i++)
        publish_one(p, (int)i);
    mae_publisher_flush(p, 60000);
    for (int i = 0; i < 3000 && rd.n < base + burst; i++)
        rb_sleep_ms(10);
    res->burst = burst;
    res->got_burst = rd.n - base;
    if (rd.n > base)
        res->events_per_s = (double)(rd.n - base) / (rd.last_at - b0);
    mae_publisher_close(p, 5000);
    reader_stop(&rd);
}

static pid_t start_relay(const char *cli, const char *redis_url, const char *const *more,
                         const char *log, int *port)
{
    const char *argv[16] = {cli};
    int n = 1;
    if (redis_url) {
        argv[n++] = "--redis";
        argv[n++] = redis_url;
    }
    argv[n++] = "events";
    argv[n++] = "serve";
    argv[n++] = "--listen";
    argv[n++] = "127.0.0.1:0";
    argv[n++] = "--quiet";
    argv[n++] = "--client-buffer";
    argv[n++] = "67108864";
    for (const char *const *m = more; m && *m; m++)
        argv[n++] = *m;
    argv[n] = NULL;
    unlink(log);
    pid_t pid = rb_spawn(argv, log, redis_url == NULL);
    *port = rb_wait_listening(log);
    return pid;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: mae_hub_bench MAILAGENT REDIS_SERVER [--events N] [--json PATH]\n");
        return 2;
    }
    const char *cli = argv[1], *redis_server = argv[2], *json = NULL;
    size_t burst = 100000;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--events") == 0)
            burst = (size_t)strtoul(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--json") == 0)
            json = argv[i + 1];
    }
    signal(SIGPIPE, SIG_IGN);
    char tmp[] = "/tmp/mae_hub_bench.XXXXXX";
    if (!mkdtemp(tmp))
        return 1;
    char log[128], url[64];
    path_result res[3] = {{.name = "hub"}, {.name = "pubsub"}, {.name = "stream"}};

    /* Hub. */
    int port;
    snprintf(log, sizeof log, "%s/hub.log", tmp);
    pid_t relay = start_relay(cli, NULL, NULL, log, &port);
    char hub_url[64];
    snprintf(hub_url, sizeof hub_url, "http://127.0.0.1:%d", port);
    mae_publisher_config pc;
    mae_publisher_config_init(&pc);
    pc.relay_url = hub_url;
    pc.queue_max_events = burst + 10000;
    fprintf(stderr, "hubpath: hub\n");
    run_path(&res[0], port, &pc, burst);
    rb_stop(relay);

    /* Redis. */
    int rp;
    pid_t redis = rb_redis_start(redis_server, tmp, &rp);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", rp);
    snprintf(log, sizeof log, "%s/pubsub.log", tmp);
    relay = start_relay(cli, url, NULL, log, &port);
    mae_publisher_config_init(&pc);
    pc.redis_url = url;
    pc.queue_max_events = burst + 10000;
    fprintf(stderr, "hubpath: pubsub\n");
    run_path(&res[1], port, &pc, burst);
    rb_stop(relay);
    const char *sargs[] = {"--stream", "bench:hub", NULL};
    snprintf(log, sizeof log, "%s/stream.log", tmp);
    relay = start_relay(cli, url, sargs, log, &port);
    pc.stream_key = "bench:hub";
    pc.stream_maxlen = burst * 2;
    fprintf(stderr, "hubpath: stream\n");
    run_path(&res[2], port, &pc, burst);
    rb_stop(relay);
    rb_stop(redis);

    /* The hub's memory per 10 000 kept events of ~200 bytes. */
    const char *hargs[] = {"--history", "10000", NULL};
    snprintf(log, sizeof log, "%s/hubmem.log", tmp);
    relay = start_relay(cli, NULL, hargs, log, &port);
    snprintf(hub_url, sizeof hub_url, "http://127.0.0.1:%d", port);
    mae_publisher_config_init(&pc);
    pc.relay_url = hub_url;
    mae_publisher *p = NULL;
    long before = rb_rss_kib(relay), after = -1;
    if (mae_publisher_open(&pc, &p) == MAE_OK) {
        char data[160];
        memset(data, 0, sizeof data);
        snprintf(data, sizeof data, "{\"pad\":\"%0120d\"}", 0);
        for (int i = 0; i < 10000; i++)
            mae_safe_publish(p, "email.synced", i, data, "bench");
        mae_publisher_flush(p, 20000);
        rb_sleep_ms(200);
        after = rb_rss_kib(relay);
        mae_publisher_close(p, 5000);
    }
    rb_stop(relay);

    printf("hubpath: publish -> SSE client, paced 2 000 events/s, then %zu as fast as possible\n",
           burst);
    printf("%-8s %10s %10s %12s %14s\n", "path", "p50 ms", "p99 ms", "events/s", "received");
    for (int i = 0; i < 3; i++)
        printf("%-8s %10.3f %10.3f %12.0f %7zu/%zu\n", res[i].name, res[i].p50_ms,
               res[i].p99_ms, res[i].events_per_s, res[i].got_paced + res[i].got_burst,
               res[i].paced + res[i].burst);
    printf("hub memory: %ld KiB more RSS with 10 000 events of ~230 bytes kept\n",
           after >= 0 && before >= 0 ? after - before : -1);
    if (json) {
        FILE *f = fopen(json, "w");
        if (f) {
            fprintf(f, "{\n");
            for (int i = 0; i < 3; i++)
                fprintf(f,
                        "\"%s\": {\"p50_ms\": %.4f, \"p99_ms\": %.4f, \"events_per_s\": %.0f, "
                        "\"received\": %zu, \"sent\": %zu},\n",
                        res[i].name, res[i].p50_ms, res[i].p99_ms, res[i].events_per_s,
                        res[i].got_paced + res[i].got_burst, res[i].paced + res[i].burst);
            fprintf(f, "\"hub_rss_kib_per_10000_events\": %ld\n}\n",
                    after >= 0 && before >= 0 ? after - before : -1);
            fclose(f);
        }
    }
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    return system(cmd) == 0 ? 0 : 1;
}
