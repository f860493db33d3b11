/* Integration tests of `mailagent events serve` with the real clients of
 * the SSE cookbook, each started and stopped here on loopback, and events
 * published through the library's stores: a Python httpx reader, headless
 * Chromium on the dashboard page (EventSource, and fetch with a token),
 * and curl behind a real nginx with the README's proxy settings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <mailagent/events.h>

#include "harness.h"
#include "redis_harness.h"
#include "testutil.h"

#define PYTHON "/usr/bin/python3"
#define CHROMIUM "/usr/bin/chromium"
#define CURL "/usr/bin/curl"
#define NGINX "/usr/sbin/nginx"

static mtr_redis g_redis;

static int setup(void **state)
{
    (void)state;
    if (!rh_have(MAE_REDIS_SERVER))
        return -1;
    return mtr_start(&g_redis, NULL);
}

static int teardown(void **state)
{
    (void)state;
    mtr_cleanup(&g_redis);
    return 0;
}

/* ---- events through the stores ---------------------------------------------------- */

typedef struct stores {
    mae_publisher *pub;
    mae_db *db;
    char path[256];
} stores;

static void stores_open(stores *s, const char *tag)
{
    mae_publisher_config pc;
    mae_publisher_config_init(&pc);
    pc.redis_url = g_redis.url;
    assert_int_equal(mae_publisher_open(&pc, &s->pub), MAE_OK);
    tu_db_path(s->path, sizeof s->path, tag);
    mae_db_config dc;
    tu_db_config(&dc, s->path, s->pub, NULL);
    assert_int_equal(mae_db_open(&dc, &s->db), MAE_OK);
}

static void stores_close(stores *s)
{
    mae_db_close(s->db);
    mae_publisher_close(s->pub, 2000);
    tu_remove_db(s->path);
}

/* A mail synced, its LLM run done, an outbox intent: email.synced,
 * llm.success and outbox.enqueued, with an unwanted email.failed first. */
static void mail_lifecycle(stores *s, int64_t id)
{
    char msgid[64], page[64];
    snprintf(msgid, sizeof msgid, "<m%lld@example.org>", (long long)id);
    snprintf(page, sizeof page, "page-%lld", (long long)id);
    mae_email m = {.internal_id = id, .message_id = msgid, .subject = "Quarterly \xc3\xa9tat",
                   .sender = "a@example.org", .mailbox = "INBOX"};
    assert_int_equal(mae_sync_store_upsert(s->db, &m), MAE_OK);
    assert_int_equal(mae_sync_store_mark_failed(s->db, id, "fetch_failed", "timeout", NULL),
                     MAE_OK);
    assert_int_equal(mae_sync_store_mark_synced(s->db, id, page, NULL, "new_watcher"), MAE_OK);
    mae_llm_usage u = {.model = "claude-test", .input_tokens = 1200, .output_tokens = 80,
                       .latency_ms = 950};
    assert_int_equal(mae_llm_store_mark_success(s->db, id, page, &u), MAE_OK);
    assert_int_equal(mae_outbox_enqueue(s->db, id, "set_flag", "mailapp", "{\"flagged\":true}",
                                        "ai_reviewed_handler", NULL, NULL),
                     MAE_OK);
    assert_int_equal(mae_publisher_flush(s->pub, 5000), MAE_OK);
}

/* ---- Python httpx ------------------------------------------------------------------- */

static void test_python_httpx(void **state)
{
    (void)state;
    RH_REQUIRE(PYTHON);
    char dir[512], log[600], out[600], err[600], url[64];
    rh_out_dir("python_httpx", dir, sizeof dir);
    snprintf(log, sizeof log, "%s/relay.log", dir);
    snprintf(out, sizeof out, "%s/reader.out", dir);
    snprintf(err, sizeof err, "%s/reader.err", dir);
    static const char *const env[] = {"WEBHOOK_SECRET=py-s3cret", NULL};
    rh_relay r;
    assert_int_equal(rh_relay_start(&r, g_redis.url, NULL, env, log), 0);
    snprintf(url, sizeof url, "http://127.0.0.1:%d", r.port);
    const char *argv[] = {PYTHON, MAE_RELAY_TEST_DIR "/httpx_reader.py", url, "py-s3cret", "3",
                          NULL};
    pid_t py = rh_spawn(argv, NULL, out, err);
    rh_wait_clients(r.port, "X-Webhook-Token: py-s3cret\r\n", 1, 20000);

    stores s;
    stores_open(&s, "relay-httpx");
    mail_lifecycle(&s, 101);
    int rc = rh_wait(py, 20000);
    char *got = rh_slurp(out), *why = rh_slurp(err);
    if (rc != 0)
        fail_msg("reader exit %d\nstdout: %s\nstderr: %s", rc, got ? got : "", why ? why : "");
    assert_string_equal(got, "new mail synced: 101 -> page-101\n"
                             "AI done: 101 (claude-test)\n"
                             "outbox intent: set_flag -> mailapp\n");
    free(got);
    free(why);
    /* Four events went out (the email.failed the reader skipped included). */
    assert_int_equal(rh_metric(r.port, "X-Webhook-Token: py-s3cret\r\n",
                               "mailagent_relay_events_total"), 4);
    stores_close(&s);
    assert_int_equal(rh_relay_stop(&r, SIGTERM, 5000, NULL), 0);
}

/* ---- Chromium on the dashboard ------------------------------------------------------------- */

static void dashboard(const char *name, const char *const *env, const char *fragment,
                      const char *auth)
{
    RH_REQUIRE(PYTHON);
    RH_REQUIRE(CHROMIUM);
    char dir[512], log[600], out[600], err[600], url[160];
    rh_out_dir(name, dir, sizeof dir);
    snprintf(log, sizeof log, "%s/relay.log", dir);
    snprintf(out, sizeof out, "%s/driver.out", dir);
    snprintf(err, sizeof err, "%s/driver.err", dir);
    static const char *const args[] = {"--ping-interval", "0.5", NULL};
    rh_relay r;
    assert_int_equal(rh_relay_start(&r, g_redis.url, args, env, log), 0);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/%s", r.port, fragment);
    const char *argv[] = {PYTHON, MAE_RELAY_TEST_DIR "/chromium_driver.py", CHROMIUM, url, dir,
                          "email.synced", "llm.success", "outbox.enqueued", "page-202",
                          "claude-test", "ai_reviewed_handler", "redis_reconnected",
                          NULL};
    pid_t drv = rh_spawn(argv, NULL, out, err);
    /* The page is live (the driver says so) before anything is published:
     * what it shows came in over the stream. */
    char *o = rh_wait_text(out, "\n", 30000, 50);
    if (!o || strncmp(o, "ready\n", 6) != 0) {
        char *e = rh_slurp(err);
        fail_msg("the page did not go live: %s %s", o ? o : "", e ? e : "");
    }
    free(o);
    rh_wait_clients(r.port, auth, 1, 20000);

    stores s;
    stores_open(&s, name);
    mail_lifecycle(&s, 202);
    /* The relay loses its subscription: the page lists the reset. */
    assert_int_equal(mtr_command(&g_redis, "CLIENT KILL TYPE pubsub"), 0);
    int rc = rh_wait(drv, 40000);
    char path[600];
    snprintf(path, sizeof path, "%s/page.txt", dir);
    char *text = rh_slurp(path);
    o = rh_slurp(out);
    if (rc != 0)
        fail_msg("driver exit %d: %s\npage: %s", rc, o ? o : "", text ? text : "");
    /* The page's own words: live, counts by type, newest first. */
    assert_non_null(text);
    assert_non_null(strstr(text, "live"));
    const char *newest = strstr(text, "Events, newest first");
    assert_non_null(newest);
    const char *o_row = strstr(newest, "outbox.enqueued");
    const char *s_row = strstr(newest, "email.synced");
    assert_non_null(o_row);
    assert_non_null(s_row);
    assert_true(o_row < s_row);   /* the outbox intent came last, shows first */
    assert_non_null(strstr(text, "email.failed\t1"));
    assert_non_null(strstr(text, "llm.success\t1"));
    assert_non_null(strstr(text, "redis_reconnected: events may have been missed"));
    assert_non_null(strstr(text, "HEARTBEAT_SEEN"));
    struct stat st;
    snprintf(path, sizeof path, "%s/page.png", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_true(st.st_size > 1000);
    print_message("screenshot: %s\n", path);
    free(text);
    free(o);
    stores_close(&s);
    assert_int_equal(rh_relay_stop(&r, SIGTERM, 5000, NULL), 0);
}

static void test_chromium_eventsource(void **state)
{
    (void)state;
    dashboard("chromium_eventsource", NULL, "", NULL);
}

static void test_chromium_fetch_with_token(void **state)
{
    (void)state;
    static const char *const env[] = {"MAILAGENT_LOCAL_TOKEN=page-t0ken", NULL};
    dashboard("chromium_fetch", env, "#token=page-t0ken",
              "X-MailAgent-Local-Token: page-t0ken\r\n");
}

/* ---- behind nginx ---------------------------------------------------------------------------- */

static int free_port(void)
{
    mtr_redis tmp;
    memset(&tmp, 0, sizeof tmp);
    snprintf(tmp.dir, sizeof tmp.dir, "/nonexistent");
    if (mtr_reserve_port(&tmp) != 0)
        return -1;
    return tmp.port;
}

/* The example's location blocks with their read timeout shortened. */
static char *example_locations(const char *read_timeout)
{
    char *ex = rh_slurp(MAE_RELAY_TEST_DIR "/../../examples/relay/nginx.conf");
    assert_non_null(ex);
    const char *t = "proxy_read_timeout 1h;";
    char *at = strstr(ex, t);
    assert_non_null(at);   /* the README's recommendation is what is tested */
    size_t n = strlen(ex) + 64;
    char *out = malloc(n);
    assert_non_null(out);
    snprintf(out, n, "%.*sproxy_read_timeout %s;%s", (int)(at - ex), ex, read_timeout,
             at + strlen(t));
    free(ex);
    return out;
}

static void write_conf(const char *dir, int port, int upstream, const char *read_timeout)
{
    char *tmpl = rh_slurp(MAE_RELAY_TEST_DIR "/nginx.conf.in");
    assert_non_null(tmpl);
    char *locations = example_locations(read_timeout);
    char path[600], num[16];
    snprintf(path, sizeof path, "%s/nginx.conf", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (const char *p = tmpl; *p;) {
        if (strncmp(p, "@DIR@", 5) == 0) {
            fputs(dir, f);
            p += 5;
        } else if (strncmp(p, "@PORT@", 6) == 0) {
            snprintf(num, sizeof num, "%d", port);
            fputs(num, f);
            p += 6;
        } else if (strncmp(p, "@UPSTREAM@", 10) == 0) {
            snprintf(num, sizeof num, "%d", upstream);
            fputs(num, f);
            p += 10;
        } else if (strncmp(p, "@READ_TIMEOUT@", 14) == 0) {
            fputs(read_timeout, f);
            p += 14;
        } else if (strncmp(p, "@LOCATIONS@", 11) == 0) {
            fputs(locations, f);
            p += 11;
        } else {
            fputc(*p++, f);
        }
    }
    fclose(f);
    free(tmpl);
    free(locations);
}

static void test_behind_nginx(void **state)
{
    (void)state;
    RH_REQUIRE(NGINX);
    RH_REQUIRE(CURL);
    char dir[512], log[600], out[600], conf[600], pid[1200], elog[600], url[128];
    rh_out_dir("nginx", dir, sizeof dir);
    snprintf(log, sizeof log, "%s/relay.log", dir);
    snprintf(out, sizeof out, "%s/curl.out", dir);
    snprintf(conf, sizeof conf, "%s/nginx.conf", dir);
    snprintf(pid, sizeof pid, "pid %s/nginx.pid; error_log %s/error.log; daemon off;", dir, dir);
    snprintf(elog, sizeof elog, "%s/nginx.err", dir);
    /* Heartbeat 0.3 s, proxy_read_timeout 1 s: without the heartbeat nginx
     * would cut the stream after a second of silence. */
    static const char *const args[] = {"--ping-interval", "0.3", NULL};
    rh_relay r;
    assert_int_equal(rh_relay_start(&r, g_redis.url, args, NULL, log), 0);
    int port = free_port();
    assert_true(port > 0);
    write_conf(dir, port, r.port, "1s");
    const char *nargv[] = {NGINX, "-p", dir, "-c", conf, "-g", pid, NULL};
    pid_t ngx = rh_spawn(nargv, NULL, NULL, elog);
    /* Wait for nginx to answer (a 404 from it for another path). */
    char *a = NULL;
    double until = rh_now() + 10;
    while (rh_now() < until && !a) {
        a = rh_request(port, "GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        if (!a)
            rh_sleep_ms(50);
    }
    assert_non_null(a);
    free(a);

    snprintf(url, sizeof url, "http://127.0.0.1:%d/api/events/stream", port);
    const char *cargv[] = {CURL, "-sN", url, NULL};
    pid_t curl = rh_spawn(cargv, NULL, out, NULL);
    rh_wait_clients(r.port, NULL, 1, 20000);
    mtr_command(&g_redis, "PUBLISH %s %s", MAE_DEFAULT_CHANNEL, "{\"event_type\":\"first\"}");
    /* It passes at once: nginx does not hold it in a buffer. */
    char *got = rh_wait_text(out, "data: {\"event_type\":\"first\"}\n\n", 5000, 10);
    assert_non_null(got);
    assert_non_null(strstr(got, "data: {\"event_type\":\"first\"}\n\n"));
    free(got);
    /* Three read timeouts later the stream is still open (curl still runs,
     * the relay still counts it) and still delivers. */
    rh_sleep_ms(3000);
    assert_true(rh_running(curl));
    assert_int_equal(rh_metric(r.port, NULL, "mailagent_relay_clients"), 1);
    mtr_command(&g_redis, "PUBLISH %s %s", MAE_DEFAULT_CHANNEL, "{\"event_type\":\"second\"}");
    got = rh_wait_text(out, "data: {\"event_type\":\"second\"}\n\n", 5000, 10);
    assert_non_null(got);
    assert_non_null(strstr(got, "data: {\"event_type\":\"second\"}\n\n"));
    assert_true(rh_count(&(rh_conn){.buf = got}, "event: ping\n") >= 5);
    free(got);
    kill(ngx, SIGQUIT);
    rh_wait(ngx, 5000);
    rh_wait(curl, 5000);
    assert_int_equal(rh_relay_stop(&r, SIGTERM, 5000, NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_python_httpx),
        cmocka_unit_test(test_chromium_eventsource),
        cmocka_unit_test(test_chromium_fetch_with_token),
        cmocka_unit_test(test_behind_nginx),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
