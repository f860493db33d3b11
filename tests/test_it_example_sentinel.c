/* Integration test of examples/sentinel/: its run-local.sh starts the
 * deployment on loopback from the example's own redis.conf, sentinel.conf,
 * relay.env and nginx.conf (3 redis-server, 3 Sentinels, 2 relays behind
 * nginx); a publisher writes numbered events through the example's
 * publisher URL (redis-sentinel://...?wait_replicas=1#mymaster), an
 * EventSource-like client (tests/relay/fleet_client) reads them through
 * nginx with the example's token, a Sentinel is asked for a planned
 * failover, and the stream must keep flowing to the client: every event
 * once or a reset that says why, every acknowledged event once in the
 * stream, lost_failover 0. Then run-local.sh stop ends every process. A
 * mistake in the example's files shows as a start that fails (its stderr
 * is in the failure message). */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include <mailagent/publisher.h>

#include "fleet_client.h"
#include "harness.h"
#include "sentinel_harness.h"
#include "testutil.h"

#define NGINX "/usr/sbin/nginx"
#define SCRIPT MAE_SOURCE_DIR "/examples/sentinel/run-local.sh"
#define PATH "/api/events/stream"

static const char *const sources[] = {"example", NULL};
static char g_dir[512];

/* Runs run-local.sh cmd DIR; its exit status (its stderr in *err, malloc'd). */
static int script(const char *cmd, char **err)
{
    char out[600], errp[600];
    snprintf(out, sizeof out, "%s.%s.out", g_dir, cmd);
    snprintf(errp, sizeof errp, "%s.%s.err", g_dir, cmd);
    const char *argv[] = {"/bin/bash", SCRIPT, cmd, g_dir, NULL};
    const char *env[] = {"MAILAGENT=" MAE_CLI_PATH, "REDIS_SERVER=" MAE_REDIS_SERVER,
                         "REDIS_CLI=" MAE_REDIS_CLI, "NGINX_BIN=" NGINX, NULL};
    int rc = rh_wait(rh_spawn(argv, env, out, errp), 180000);
    if (err)
        *err = rh_slurp(errp);
    return rc;
}

/* The value of KEY in DIR/local.env (quotes dropped), malloc'd. */
static char *setting(const char *key)
{
    char path[600];
    snprintf(path, sizeof path, "%s/local.env", g_dir);
    char *text = rh_slurp(path);
    assert_non_null(text);
    size_t k = strlen(key);
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
        if (strncmp(line, key, k) == 0 && line[k] == '=') {
            char *v = line + k + 1;
            size_t n = strlen(v);
            if (n >= 2 && v[0] == '\'' && v[n - 1] == '\'') {
                v[n - 1] = '\0';
                v++;
            }
            char *copy = strdup(v);
            free(text);
            return copy;
        }
    fail_msg("%s not in %s", key, path);
    return NULL;
}

static int port_of(const char *key)
{
    char *v = setting(key);
    int p = atoi(v);
    free(v);
    return p;
}

/* The port Sentinel (at port) names as the master, or -1. */
static int named_master(int port)
{
    struct timeval tv = {0, 500000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    int master = -1;
    if (c && !c->err) {
        redisSetTimeout(c, tv);
        redisReply *r = redisCommand(c, "SENTINEL get-master-addr-by-name mymaster");
        if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2)
            master = atoi(r->element[1]->str);
        if (r)
            freeReplyObject(r);
    }
    if (c)
        redisFree(c);
    return master;
}

/* True while pid runs (a zombie does not: nothing may reap it here). */
static bool alive(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    char *st = rh_slurp(path);
    const char *close = st ? strrchr(st, ')') : NULL;
    bool up = close && close[1] == ' ' && close[2] != 'Z' && close[2] != 'X';
    free(st);
    return up;
}

static bool positioned(void *arg)
{
    return ((fc_client *)arg)->last_id[0] != '\0';
}

typedef struct goal {
    fc_client *c;
    int n;
} goal;

static bool reached(void *arg)
{
    goal *g = arg;
    return fc_highest(g->c, 0) >= g->n;
}

static int teardown(void **state)
{
    (void)state;
    script("stop", NULL);
    return 0;
}

static void test_example_runs_and_fails_over(void **state)
{
    (void)state;
    if (!mtr_available())
        tu_missing_prerequisite("redis-server");
    if (!rh_have(NGINX) || !rh_have("/usr/bin/curl") || !rh_have(MAE_REDIS_CLI))
        tu_missing_prerequisite("nginx, curl and redis-cli");
    rh_out_dir("example_sentinel", g_dir, sizeof g_dir);

    char *err = NULL;
    double t0 = rh_now();
    int rc = script("start", &err);
    if (rc != 0)
        fail_msg("run-local.sh start failed (%d): %s", rc, err ? err : "");
    print_message("run-local.sh start: ready after %.1f s\n", rh_now() - t0);
    free(err);

    int nginx = port_of("NGINX_PORT");
    int redis1 = port_of("REDIS1_PORT");
    int sentinel[3] = {port_of("SENTINEL1_PORT"), port_of("SENTINEL2_PORT"),
                       port_of("SENTINEL3_PORT")};
    char *token = setting("TOKEN"), *password = setting("PASSWORD");
    char *stream = setting("STREAM"), *url = setting("PUBLISHER_URL");
    assert_int_equal(named_master(sentinel[0]), redis1);

    /* Without the token the relays refuse the stream (relay.env sets one). */
    char *a = rh_request(nginx, "GET " PATH " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_non_null(a);
    assert_true(strncmp(a, "HTTP/1.1 401", 12) == 0);
    free(a);

    char headers[300];
    snprintf(headers, sizeof headers, "X-Webhook-Token: %s\r\n", token);
    fc_client *c = fc_open(nginx, PATH, headers, sources);
    assert_non_null(c);
    fc_client *cs[1] = {c};
    assert_true(fc_run_until(cs, 1, positioned, c, 20000));

    mts_feeder f;
    assert_int_equal(mts_feeder_open_url(&f, url, stream, "example"), MAE_OK);
    assert_int_equal(mts_feeder_start(&f, 5), 0);
    goal g = {c, 100};
    assert_true(fc_run_until(cs, 1, reached, &g, 20000));

    /* A planned failover: the stream goes on through the new master. */
    redisContext *s = redisConnect("127.0.0.1", sentinel[1]);
    assert_true(s && !s->err);
    redisReply *r = redisCommand(s, "SENTINEL FAILOVER mymaster");
    assert_non_null(r);
    assert_int_not_equal(r->type, REDIS_REPLY_ERROR);
    freeReplyObject(r);
    redisFree(s);
    t0 = rh_now();
    int nm = -1;
    while (rh_now() < t0 + 30) {
        fc_run_until(cs, 1, reached, &g, 20);
        int votes = 0, m = named_master(sentinel[0]);
        for (int i = 0; i < 3; i++)
            votes += m > 0 && m != redis1 && named_master(sentinel[i]) == m;
        if (votes >= 2) {
            nm = m;
            break;
        }
    }
    double t_agree = rh_now() - t0;
    assert_true(nm > 0);
    g.n = atomic_load(&f.sent);
    bool flowing = fc_run_until(cs, 1, reached, &g, 30000);
    print_message("SENTINEL FAILOVER: the Sentinels agreed on port %d after %.2f s; the client "
                  "through nginx had an event written after that %.2f s after the request\n",
                  nm, t_agree, rh_now() - t0);
    assert_true(flowing);

    fc_run_until(cs, 1, reached, &g, 1000);
    int sent = mts_feeder_stop(&f, 30000);
    assert_true(sent > 0);
    g.n = sent;
    assert_true(fc_run_until(cs, 1, reached, &g, 20000));
    fc_run_until(cs, 1, reached, &(goal){c, sent + 1}, 500);   /* anything doubled */

    mae_publisher_stats st;
    mae_publisher_stats_get(f.p, &st);
    print_message("publisher: %d events, published %llu, resent %llu, lost_failover %llu\n", sent,
                  (unsigned long long)st.published, (unsigned long long)st.resent,
                  (unsigned long long)st.lost_failover);
    tu_assert_counters_add_up(f.p);
    assert_int_equal(st.published, (uint64_t)sent);
    assert_int_equal(st.lost_failover, 0);

    mts_stream_count k;
    assert_int_equal(mts_count_stream_at(nm, password, stream, "example", sent, &k), 0);
    print_message("stream on the new master: %zu entries for %d events: %d missing, %d twice, "
                  "%d out of order\n",
                  k.entries, sent, k.missing, k.twice, k.out_of_order);
    assert_int_equal(k.missing + k.twice + k.out_of_order + k.strays, 0);

    fc_tally t;
    assert_int_equal(fc_tally_of(c, 0, sent, &t), 0);
    for (size_t i = 0; i < c->nresets; i++)
        print_message("client: reset after %zu events: %s\n", c->resets[i].at, c->resets[i].data);
    print_message("client: %d events over %d connections: %d missing, %d twice (%d after a "
                  "reset), %d gaps (%d after a reset)\n",
                  t.events, c->connects, t.missing, t.twice, t.twice_explained, t.gaps,
                  t.gaps_explained);
    assert_int_equal(t.twice - t.twice_explained, 0);
    assert_int_equal(t.gaps - t.gaps_explained, 0);
    assert_int_equal(c->bad_status, 0);
    fc_free(c);
    assert_int_equal(mts_feeder_close(&f), MAE_OK);

    /* Stopping leaves nothing running: every pid file's process is gone. */
    static const char *const pidfiles[] = {"redis-1/redis.pid", "redis-2/redis.pid",
                                           "redis-3/redis.pid", "sentinel-1/sentinel.pid",
                                           "sentinel-2/sentinel.pid", "sentinel-3/sentinel.pid",
                                           "relay-1/relay.pid", "relay-2/relay.pid",
                                           "nginx/nginx.pid"};
    pid_t pids[9];
    for (int i = 0; i < 9; i++) {
        char path[700];
        snprintf(path, sizeof path, "%s/%s", g_dir, pidfiles[i]);
        char *p = rh_slurp(path);
        if (!p)
            fail_msg("%s missing while the deployment runs", path);
        pids[i] = (pid_t)atoi(p);
        free(p);
        assert_true(pids[i] > 0 && alive(pids[i]));
    }
    assert_int_equal(script("stop", NULL), 0);
    for (int i = 0; i < 9; i++)
        if (alive(pids[i]))
            fail_msg("%s (pid %d) still runs after run-local.sh stop", pidfiles[i], (int)pids[i]);
    free(token);
    free(password);
    free(stream);
    free(url);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_example_runs_and_fails_over, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
