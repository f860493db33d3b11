/* The fleet benchmark (issue 21, "2 relays x 5 000 clients behind nginx,
 * fan-out p99"): one redis-server, two `mailagent events serve --stream`
 * relays and a real nginx in front of them (the stream's proxy settings of
 * examples/relay/nginx.conf, least_conn or round-robin), with N idle SSE
 * clients held by this process in one epoll loop (clients.h). In one run,
 * so the ratios mean something on a shared machine, three configurations:
 *   direct   N clients on relay 1, no proxy
 *   nginx-1  N clients through nginx to relay 1 only
 *   nginx-2  N clients through nginx to both relays
 * For each: events appended to the stream at a steady pace (XADD, as the
 * publisher's stream mode leaves them), and every arrival at every client
 * timed from just before its XADD: p50/p99/max over all (event, client)
 * pairs and per relay, the last client's arrival per event, how nginx split
 * the clients (its X-Upstream header per client, and each relay's
 * /healthz), every event once per client (duplicates and gaps counted),
 * the relays' and nginx's CPU per event, and the load average around it.
 *
 * Usage: mae_fleet_bench MAILAGENT REDIS_SERVER NGINX [--clients N] [--events N]
 *          [--interval-ms MS] [--balance least_conn|round_robin]
 *          [--nginx-workers N] [--rounds N] [--json PATH]
 */
#define _GNU_SOURCE   /* memmem */
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "clients.h"

#define STREAM_KEY "bench:fleet"
#define MARK "\"internal_id\":"
#define MARK_LEN (sizeof MARK - 1)
#define NUM_LEN 8
#define TAIL (MARK_LEN + NUM_LEN - 1)   /* what may hold a split marker */

enum { DIRECT, NGINX_ONE, NGINX_TWO, NCONFIGS };
static const char *const config_name[NCONFIGS] = {"direct", "nginx-1", "nginx-2"};

/* ---- the clients' view of the events ---- */

typedef struct watcher {
    int last_k;          /* the last event this client got */
    int slot;            /* 0 or 1: the relay it reads (by X-Upstream) */
    unsigned char tail_len;
    char tail[TAIL];
} watcher;

typedef struct run {
    watcher *w;
    int n, events, first_k;
    double *pub_at;      /* per event: just before its XADD */
    double *last_at;     /* per event: its last arrival */
    int *got;            /* per event: clients that have it */
    float *lat[3];       /* ms per arrival: all, relay slot 0, relay slot 1 */
    size_t nlat[3];
    long dups, gaps, received;
} run;

static void arrived(run *r, int i, int k, double at)
{
    watcher *w = &r->w[i];
    int e = k - r->first_k;
    if (e < 0 || e >= r->events)
        return;   /* an event of an earlier configuration */
    if (k <= w->last_k) {
        r->dups++;
        return;
    }
    if (k != w->last_k + 1)
        r->gaps += k - w->last_k - 1;
    w->last_k = k;
    float ms = (float)((at - r->pub_at[e]) * 1000.0);
    r->lat[0][r->nlat[0]++] = ms;
    r->lat[1 + w->slot][r->nlat[1 + w->slot]++] = ms;
    if (at > r->last_at[e])
        r->last_at[e] = at;
    r->got[e]++;
    r->received++;
}

/* The event number after a marker at p (NUM_LEN digits), or -1. */
static int number_at(const char *p)
{
    int k = 0;
    for (size_t d = 0; d < NUM_LEN; d++) {
        if (p[d] < '0' || p[d] > '9')
            return -1;
        k = k * 10 + (p[d] - '0');
    }
    return k;
}

/* Finds every marker in the body; one split across two reads is found
 * in the last bytes of the first joined to the start of the second. */
static void on_body(rb_crowd *cr, int i, const char *data, size_t len, double at)
{
    run *r = cr->arg;
    watcher *w = &r->w[i];
    char joint[2 * TAIL + 1];
    size_t head = len < TAIL ? len : TAIL;
    memcpy(joint, w->tail, w->tail_len);
    memcpy(joint + w->tail_len, data, head);
    size_t jl = w->tail_len + head;
    for (size_t s = 0; s < w->tail_len && s + MARK_LEN + NUM_LEN <= jl; s++) {
        if (memcmp(joint + s, MARK, MARK_LEN) == 0) {
            int k = number_at(joint + s + MARK_LEN);
            if (k >= 0)
                arrived(r, i, k, at);
        }
    }
    const char *p = data, *end = data + len;
    while ((size_t)(end - p) >= MARK_LEN + NUM_LEN &&
           (p = memmem(p, (size_t)(end - p), MARK, MARK_LEN)) != NULL) {
        if ((size_t)(end - p) < MARK_LEN + NUM_LEN)
            break;
        int k = number_at(p + MARK_LEN);
        if (k >= 0)
            arrived(r, i, k, at);
        p += MARK_LEN;
    }
    /* The new tail: the last TAIL bytes of tail + data. */
    if (len >= TAIL) {
        memcpy(w->tail, end - TAIL, TAIL);
        w->tail_len = TAIL;
    } else {
        size_t keep = w->tail_len + len > TAIL ? TAIL - len : w->tail_len;
        memmove(w->tail, w->tail + w->tail_len - keep, keep);
        memcpy(w->tail + keep, data, len);
        w->tail_len = (unsigned char)(keep + len);
    }
}

/* ---- the processes ---- */

typedef struct fleet {
    const char *mailagent, *dir;
    pid_t redis, relay[2], nginx;
    int redis_port, relay_port[2];
    int nginx_one, nginx_two;   /* nginx's ports: to relay 1 only, to both */
    redisContext *rc;
} fleet;

/* The location block of examples/relay/nginx.conf for the stream, with the
 * upstream's address in a header so each client knows its relay. */
static const char location_fmt[] =
    "        location /api/events/stream {\n"
    "            proxy_pass http://%s;\n"
    "            proxy_http_version 1.1;\n"
    "            proxy_set_header Connection \"\";\n"
    "            proxy_buffering off;\n"
    "            proxy_cache off;\n"
    "            gzip off;\n"
    "            proxy_read_timeout 1h;\n"
    "            proxy_send_timeout 1h;\n"
    "            add_header X-Upstream $upstream_addr always;\n"
    "        }\n";

static int nginx_start(fleet *f, const char *nginx, int clients, const char *balance,
                       int workers, long nofile)
{
    char path[400], conf[4096], loc1[700], loc2[700];
    f->nginx_one = rb_free_port();
    f->nginx_two = rb_free_port();
    while (f->nginx_two == f->nginx_one)
        f->nginx_two = rb_free_port();
    snprintf(loc1, sizeof loc1, location_fmt, "single");
    snprintf(loc2, sizeof loc2, location_fmt, "fleet");
    /* A client's connection and its upstream one, per worker (reuseport
     * spreads the clients evenly over the workers), with a margin for an
     * uneven hash; never above the file limit nginx gets. */
    long conns = 2L * clients * 11 / 10 / workers + 512;
    if (conns > nofile - 64)
        conns = nofile - 64;
    int n = snprintf(conf, sizeof conf,
                     "worker_processes %d;\n"
                     "worker_rlimit_nofile %ld;\n"
                     "events { worker_connections %ld; }\n"
                     "http {\n"
                     "    access_log off;\n"
                     "    client_body_temp_path %s/body;\n"
                     "    proxy_temp_path %s/proxy;\n"
                     "    fastcgi_temp_path %s/fastcgi;\n"
                     "    uwsgi_temp_path %s/uwsgi;\n"
                     "    scgi_temp_path %s/scgi;\n"
                     "    upstream fleet {\n"
                     "        %s\n"
                     "        zone fleet 64k;\n"
                     "        server 127.0.0.1:%d;\n"
                     "        server 127.0.0.1:%d;\n"
                     "        keepalive 16;\n"
                     "    }\n"
                     "    upstream single { server 127.0.0.1:%d; keepalive 16; }\n"
                     "    server {\n"
                     "        listen 127.0.0.1:%d reuseport backlog=4096;\n%s"
                     "    }\n"
                     "    server {\n"
                     "        listen 127.0.0.1:%d reuseport backlog=4096;\n%s"
                     "    }\n"
                     "}\n",
                     workers, nofile, conns, f->dir,
                     f->dir, f->dir, f->dir, f->dir,
                     strcmp(balance, "least_conn") == 0 ? "least_conn;" : "# round-robin",
                     f->relay_port[0], f->relay_port[1], f->relay_port[0], f->nginx_one, loc1,
                     f->nginx_two, loc2);
    if (n <= 0 || (size_t)n >= sizeof conf)
        return -1;
    snprintf(path, sizeof path, "%s/nginx.conf", f->dir);
    FILE *fp = fopen(path, "w");
    if (!fp)
        return -1;
    fputs(conf, fp);
    fclose(fp);
    char g[600], err[400];
    snprintf(g, sizeof g, "daemon off; pid %s/nginx.pid; error_log %s/nginx-error.log;", f->dir,
             f->dir);
    snprintf(err, sizeof err, "%s/nginx.err", f->dir);
    const char *argv[] = {nginx, "-p", f->dir, "-c", path, "-g", g, NULL};
    f->nginx = rb_spawn(argv, err, false);
    if (rb_wait_port(f->nginx_one, 5000) != 0 || rb_wait_port(f->nginx_two, 5000) != 0) {
        fprintf(stderr, "fleet bench: nginx did not start (see %s, %s/nginx-error.log)\n", err,
                f->dir);
        return -1;
    }
    return 0;
}

static int relay_start(fleet *f, int which, int max_clients)
{
    char url[64], log[400], maxc[16];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", f->redis_port);
    snprintf(log, sizeof log, "%s/relay-%d.log", f->dir, which + 1);
    snprintf(maxc, sizeof maxc, "%d", max_clients);
    const char *argv[] = {f->mailagent, "--redis", url, "--stream", STREAM_KEY, "events",
                          "serve", "--listen", "127.0.0.1:0", "--quiet", "--max-clients", maxc,
                          "--ping-interval", "3600", NULL};
    f->relay[which] = rb_spawn(argv, log, false);
    f->relay_port[which] = rb_wait_listening(log);
    return f->relay_port[which] > 0 ? 0 : -1;
}

/* A relay's open streams from its /healthz, or -1. */
static long relay_clients(int port)
{
    char buf[1024];
    if (rb_http_get(port, "/healthz", buf, sizeof buf) < 0)
        return -1;
    const char *p = strstr(buf, "\"clients\":");
    return p ? strtol(p + 10, NULL, 10) : -1;
}

/* CPU seconds of nginx's workers (the master's children). */
static double nginx_cpu_s(pid_t master)
{
    char path[96];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)master, (int)master);
    FILE *fp = fopen(path, "r");
    double sum = 0;
    int child;
    while (fp && fscanf(fp, "%d", &child) == 1) {
        double c = rb_cpu_s(child);
        if (c > 0)
            sum += c;
    }
    if (fp)
        fclose(fp);
    return sum;
}

/* ---- one configuration ---- */

typedef struct result {
    int config, round;
    int clients, connected;
    double connect_s;
    int split[2];              /* by X-Upstream (direct: all on relay 1) */
    long healthz[2];
    int events;
    long expected, received, dups, gaps;
    double p50_ms, p99_ms, max_ms;                 /* all (event, client) arrivals */
    double last_p50_ms, last_p99_ms, last_max_ms;  /* per event, its last client */
    double relay_p50_ms[2], relay_p99_ms[2], relay_max_ms[2];
    double relay_cpu_ms_per_event, nginx_cpu_ms_per_event;
    double load_before, load_after;
} result;

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

static void pct(float *v, size_t n, double *p50, double *p99, double *max)
{
    *p50 = *p99 = *max = 0;
    if (n == 0)
        return;
    qsort(v, n, sizeof *v, cmp_float);
    *p50 = v[(n - 1) / 2];
    *p99 = v[(size_t)((double)(n - 1) * 0.99)];
    *max = v[n - 1];
}

static int xadd(redisContext *rc, int k)
{
    char line[200];
    snprintf(line, sizeof line,
             "{\"event_type\":\"bench.fleet\",\"ts\":1716096000.000000," MARK "%08d,"
             "\"data\":{},\"source\":\"bench\"}", k);
    redisReply *r = redisCommand(rc, "XADD %s * event %s", STREAM_KEY, line);
    int ok = r && r->type == REDIS_REPLY_STRING;
    if (r)
        freeReplyObject(r);
    return ok ? 0 : -1;
}

static int run_config(fleet *f, int config, int n, int events, int interval_ms, int *next_k,
                      result *out)
{
    memset(out, 0, sizeof *out);
    out->config = config;
    out->clients = n;
    out->events = events;
    out->load_before = rb_loadavg();
    int port = config == DIRECT ? f->relay_port[0]
                                : config == NGINX_ONE ? f->nginx_one : f->nginx_two;
    run r = {.n = n, .events = events, .first_k = *next_k};
    r.w = calloc((size_t)n, sizeof *r.w);
    r.pub_at = calloc((size_t)events, sizeof *r.pub_at);
    r.last_at = calloc((size_t)events, sizeof *r.last_at);
    r.got = calloc((size_t)events, sizeof *r.got);
    for (int s = 0; s < 3; s++)
        r.lat[s] = malloc((size_t)n * (size_t)events * sizeof(float));
    int status = -1;
    rb_crowd cr;
    if (!r.w || !r.pub_at || !r.last_at || !r.got || !r.lat[0] || !r.lat[1] || !r.lat[2]) {
        memset(&cr, 0, sizeof cr);
        cr.ep = -1;
        goto done;
    }
    for (int i = 0; i < n; i++)
        r.w[i].last_k = r.first_k - 1;
    double t0 = rb_now();
    int opened = rb_crowd_open(&cr, n, port, on_body, &r);
    out->connect_s = rb_now() - t0;
    for (int i = 0; i < cr.n; i++) {
        out->connected += cr.c[i].ready;
        int slot = config != NGINX_TWO || cr.c[i].upstream != f->relay_port[1] ? 0 : 1;
        r.w[i].slot = slot;
        if (cr.c[i].ready)
            out->split[slot]++;
    }
    if (opened != 0) {
        fprintf(stderr, "fleet bench: %s: %d of %d streams opened\n", config_name[config],
                out->connected, n);
        goto done;
    }
    /* Settle, then each relay's own count. */
    for (int i = 0; i < 30; i++)
        rb_crowd_pump(&cr, 10);
    for (int s = 0; s < 2; s++)
        out->healthz[s] = relay_clients(f->relay_port[s]);

    double cpu_r0 = rb_cpu_s(f->relay[0]) + rb_cpu_s(f->relay[1]);
    double cpu_n0 = nginx_cpu_s(f->nginx);
    double start = rb_now() + 0.05;
    int sent = 0;
    while (sent < events) {
        double due = start + (double)sent * interval_ms / 1000.0;
        double now = rb_now();
        if (now >= due) {
            r.pub_at[sent] = rb_now();
            if (xadd(f->rc, r.first_k + sent) != 0) {
                fprintf(stderr, "fleet bench: XADD failed\n");
                goto done;
            }
            sent++;
            continue;
        }
        int wait = (int)((due - now) * 1000.0);
        rb_crowd_pump(&cr, wait < 1 ? 0 : wait);
    }
    out->expected = (long)n * events;
    double until = rb_now() + 10;
    while (r.received < out->expected && rb_now() < until)
        rb_crowd_pump(&cr, 5);
    out->relay_cpu_ms_per_event =
        (rb_cpu_s(f->relay[0]) + rb_cpu_s(f->relay[1]) - cpu_r0) * 1000.0 / events;
    out->nginx_cpu_ms_per_event = (nginx_cpu_s(f->nginx) - cpu_n0) * 1000.0 / events;
    out->received = r.received;
    out->dups = r.dups;
    out->gaps = r.gaps;
    pct(r.lat[0], r.nlat[0], &out->p50_ms, &out->p99_ms, &out->max_ms);
    for (int s = 0; s < 2; s++)
        pct(r.lat[1 + s], r.nlat[1 + s], &out->relay_p50_ms[s], &out->relay_p99_ms[s],
            &out->relay_max_ms[s]);
    /* The last client's arrival, over the events every client got. */
    size_t m = 0;
    for (int e = 0; e < events; e++)
        if (r.got[e] == n)
            r.lat[1][m++] = (float)((r.last_at[e] - r.pub_at[e]) * 1000.0);
    pct(r.lat[1], m, &out->last_p50_ms, &out->last_p99_ms, &out->last_max_ms);
    status = out->received == out->expected && out->dups == 0 && out->gaps == 0 ? 0 : -1;
    if (status != 0)
        fprintf(stderr, "fleet bench: %s: %ld of %ld arrivals, %ld duplicates, %ld gaps\n",
                config_name[config], out->received, out->expected, out->dups, out->gaps);
done:
    out->load_after = rb_loadavg();
    *next_k += events;
    rb_crowd_close(&cr);
    for (int s = 0; s < 3; s++)
        free(r.lat[s]);
    free(r.got);
    free(r.last_at);
    free(r.pub_at);
    free(r.w);
    /* Every stream gone from both relays before the next configuration. */
    for (int i = 0; i < 100; i++) {
        long a = relay_clients(f->relay_port[0]), b = relay_clients(f->relay_port[1]);
        if (a == 0 && b == 0)
            break;
        rb_sleep_ms(100);
    }
    rb_sleep_ms(500);
    return status;
}

/* ---- main ---- */

/* nginx's workers do not die with their master (only the master has
 * PR_SET_PDEATHSIG): on Ctrl-C the master is stopped first, and it waits
 * for its workers, so none is left holding the ports. */
static volatile pid_t nginx_master = -1;

static void on_stop_signal(int sig)
{
    if (nginx_master > 0) {
        kill(nginx_master, SIGTERM);
        waitpid(nginx_master, NULL, 0);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

/* The median over the rounds of a configuration's p50 (q 50) or p99. */
static double median_of(const result *res, int nres, int config, int q)
{
    double v[64];
    int m = 0;
    for (int i = 0; i < nres && m < 64; i++)
        if (res[i].config == config)
            v[m++] = q == 50 ? res[i].p50_ms : res[i].p99_ms;
    if (m == 0)
        return 0;
    qsort(v, (size_t)m, sizeof *v, rb_cmp_double);
    return m % 2 ? v[m / 2] : (v[m / 2 - 1] + v[m / 2]) / 2;
}

static void print_result(const result *x)
{
    printf("fleet: %-8s %6d/%-6d %5.1f s  %5d / %-5d %8.2f %8.2f %8.2f   %8.2f %8.2f   "
           "%6.2f %6.2f  %4.2f-%4.2f\n",
           config_name[x->config], x->connected, x->clients, x->connect_s, x->split[0],
           x->split[1], x->p50_ms, x->p99_ms, x->max_ms, x->last_p50_ms, x->last_p99_ms,
           x->relay_cpu_ms_per_event, x->nginx_cpu_ms_per_event, x->load_before, x->load_after);
    if (x->config == NGINX_TWO)
        printf("fleet:          per relay: 1: p50 %.2f p99 %.2f max %.2f ms; "
               "2: p50 %.2f p99 %.2f max %.2f ms; /healthz clients %ld / %ld\n",
               x->relay_p50_ms[0], x->relay_p99_ms[0], x->relay_max_ms[0], x->relay_p50_ms[1],
               x->relay_p99_ms[1], x->relay_max_ms[1], x->healthz[0], x->healthz[1]);
    fflush(stdout);
}

static void write_json(const char *path, const result *res, int nres, int clients, int events,
                       int interval_ms, const char *balance, int workers, long nofile)
{
    FILE *fp = fopen(path, "w");
    if (!fp)
        return;
    fprintf(fp, "{\n  \"clients\": %d,\n  \"events\": %d,\n  \"interval_ms\": %d,\n", clients,
            events, interval_ms);
    fprintf(fp, "  \"balance\": \"%s\",\n  \"nginx_workers\": %d,\n  \"nofile\": %ld,\n",
            balance, workers, nofile);
    for (int q = 50; q <= 99; q += 49) {
        double d = median_of(res, nres, DIRECT, q), one = median_of(res, nres, NGINX_ONE, q),
               two = median_of(res, nres, NGINX_TWO, q);
        fprintf(fp, "  \"p%d_ratio\": {\"nginx1_over_direct\": %.3f, \"nginx2_over_nginx1\": "
                    "%.3f, \"nginx2_over_direct\": %.3f},\n",
                q, d > 0 ? one / d : 0, one > 0 ? two / one : 0, d > 0 ? two / d : 0);
    }
    fprintf(fp, "  \"runs\": [\n");
    for (int i = 0; i < nres; i++) {
        const result *x = &res[i];
        fprintf(fp,
                "    {\"config\": \"%s\", \"round\": %d, \"clients\": %d, \"connected\": %d, "
                "\"connect_s\": %.3f, \"split\": [%d, %d], \"healthz_clients\": [%ld, %ld], "
                "\"events\": %d, \"expected\": %ld, \"received\": %ld, \"duplicates\": %ld, "
                "\"gaps\": %ld, \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"max_ms\": %.3f, "
                "\"last_client_p50_ms\": %.3f, \"last_client_p99_ms\": %.3f, "
                "\"last_client_max_ms\": %.3f, \"per_relay\": [{\"p50_ms\": %.3f, \"p99_ms\": "
                "%.3f, \"max_ms\": %.3f}, {\"p50_ms\": %.3f, \"p99_ms\": %.3f, \"max_ms\": "
                "%.3f}], \"relay_cpu_ms_per_event\": %.3f, \"nginx_cpu_ms_per_event\": %.3f, "
                "\"loadavg_before\": %.2f, \"loadavg_after\": %.2f}%s\n",
                config_name[x->config], x->round, x->clients, x->connected, x->connect_s,
                x->split[0], x->split[1], x->healthz[0], x->healthz[1], x->events, x->expected,
                x->received, x->dups, x->gaps, x->p50_ms, x->p99_ms, x->max_ms, x->last_p50_ms,
                x->last_p99_ms, x->last_max_ms, x->relay_p50_ms[0], x->relay_p99_ms[0],
                x->relay_max_ms[0], x->relay_p50_ms[1], x->relay_p99_ms[1], x->relay_max_ms[1],
                x->relay_cpu_ms_per_event, x->nginx_cpu_ms_per_event, x->load_before,
                x->load_after, i + 1 < nres ? "," : "");
    }
    fprintf(fp, "  ]\n}\n");
    fclose(fp);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s MAILAGENT REDIS_SERVER NGINX [--clients N] [--events N] "
                        "[--interval-ms MS] [--balance least_conn|round_robin] "
                        "[--nginx-workers N] [--rounds N] [--json PATH]\n", argv[0]);
        return 2;
    }
    /* 1 s apart: through nginx, 10 000 streams take about 0.3 s of CPU per
     * event here, so a faster pace measures a queue, not a fan-out
     * (bench/README.md, "A fleet"). */
    int clients = 10000, events = 40, interval_ms = 1000, workers = 0, rounds = 4;
    const char *balance = "least_conn", *json = NULL;
    for (int i = 4; i + 1 < argc; i += 2) {
        const char *o = argv[i], *v = argv[i + 1];
        if (strcmp(o, "--clients") == 0)
            clients = atoi(v);
        else if (strcmp(o, "--events") == 0)
            events = atoi(v);
        else if (strcmp(o, "--interval-ms") == 0)
            interval_ms = atoi(v);
        else if (strcmp(o, "--balance") == 0)
            balance = v;
        else if (strcmp(o, "--nginx-workers") == 0)
            workers = atoi(v);
        else if (strcmp(o, "--rounds") == 0)
            rounds = atoi(v);
        else if (strcmp(o, "--json") == 0)
            json = v;
        else {
            fprintf(stderr, "fleet bench: unknown option %s\n", o);
            return 2;
        }
    }
    if (clients < 2 || events < 1 || interval_ms < 1 || workers < 0 || rounds < 1 ||
        rounds > 16 || (strcmp(balance, "least_conn") != 0 && strcmp(balance, "round_robin") != 0)) {
        fprintf(stderr, "fleet bench: bad option value\n");
        return 2;
    }
    /* The clients here need one descriptor each; nginx two per client
     * (the client's and its upstream connection), which one worker cannot
     * have where the hard limit is below that (20 000 on this machine, and
     * not CAP_SYS_RESOURCE to raise it): then as many workers as it takes,
     * each its own limit. The relays inherit the raised limit. */
    long nofile = rb_raise_nofile(2L * clients + 4096);
    if (nofile < clients + 256) {
        fprintf(stderr, "fleet bench: RLIMIT_NOFILE is %ld, %d clients need %d\n", nofile,
                clients, clients + 256);
        return 1;
    }
    long need = 2L * clients * 11 / 10 + 512;
    if (workers == 0)
        workers = (int)((need + nofile - 257) / (nofile - 256));
    if (need / workers > nofile - 64) {
        fprintf(stderr, "fleet bench: %d nginx worker(s) with RLIMIT_NOFILE %ld cannot hold %d "
                        "clients (2 connections each); use --nginx-workers %ld\n",
                workers, nofile, clients, (need + nofile - 257) / (nofile - 256));
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_stop_signal);
    signal(SIGTERM, on_stop_signal);

    char dir[] = "/tmp/mae-fleet-bench-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    chmod(dir, 0755);   /* nginx's workers (nobody, when started as root) read under it */
    fleet f = {.mailagent = argv[1], .dir = dir};
    int status = 1;
    result res[16 * NCONFIGS];
    int nres = 0;
    f.redis = rb_redis_start(argv[2], dir, &f.redis_port);
    f.rc = f.redis > 0 ? redisConnect("127.0.0.1", f.redis_port) : NULL;
    if (!f.rc || f.rc->err) {
        fprintf(stderr, "fleet bench: redis-server did not start\n");
        goto out;
    }
    if (relay_start(&f, 0, clients + 1000) != 0 || relay_start(&f, 1, clients + 1000) != 0) {
        fprintf(stderr, "fleet bench: a relay did not start (logs in %s)\n", dir);
        goto out;
    }
    int started = nginx_start(&f, argv[3], clients, balance, workers, nofile);
    nginx_master = f.nginx;
    if (started != 0)
        goto out;
    rb_sleep_ms(300);   /* the relays' read positions established */

    printf("fleet: %d clients, %d events %d ms apart, nginx %s, %d worker(s); RLIMIT_NOFILE %ld\n",
           clients, events, interval_ms, balance, workers, nofile);
    printf("fleet: config   streams       connect  relay1/relay2   p50 ms   p99 ms   max ms   "
           "last p50 last p99   CPU ms/event  load\n"
           "fleet:                                                (every arrival)              "
           "(per event)     relays nginx\n");
    status = 0;
    int next_k = 1;
    for (int round = 1; round <= rounds; round++) {
        for (int c = 0; c < NCONFIGS; c++) {
            result *x = &res[nres++];
            if (run_config(&f, c, clients, events, interval_ms, &next_k, x) != 0)
                status = 1;
            x->round = round;
            print_result(x);
        }
    }
    for (int q = 50; q <= 99; q += 49) {
        double d = median_of(res, nres, DIRECT, q), one = median_of(res, nres, NGINX_ONE, q),
               two = median_of(res, nres, NGINX_TWO, q);
        printf("fleet: p%d (median over %d round(s)): direct %.1f ms, nginx-1 %.1f ms, nginx-2 "
               "%.1f ms; nginx-1 / direct %.2f, nginx-2 / nginx-1 %.2f, nginx-2 / direct %.2f\n",
               q, rounds, d, one, two, d > 0 ? one / d : 0, one > 0 ? two / one : 0,
               d > 0 ? two / d : 0);
    }
    if (json)
        write_json(json, res, nres, clients, events, interval_ms, balance, workers, nofile);
out:
    nginx_master = -1;
    rb_stop(f.nginx);
    rb_stop(f.relay[0]);
    rb_stop(f.relay[1]);
    if (f.rc)
        redisFree(f.rc);
    rb_stop(f.redis);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        status = 1;
    return status;
}
