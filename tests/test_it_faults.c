/* Fault injection against a real redis-server: a writer runs store
 * operations at a steady rate while Redis is absent, killed, hung, paused,
 * kicked, password-protected, full or unreachable. At the end: the process
 * is alive, every state write is in SQLite, no call was held up, the
 * counters add up, and events resume within a second of recovery. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <mailagent/events.h>

#include "redis_harness.h"
#include "testutil.h"

#define CHANNEL "mailagent:events:v1"
/* "Never held up": a blocking publisher with these timeouts (2 s, as in the
 * design this library replaces) would hold a store call for 2 s or more
 * under these faults; ours must stay far below, with a margin for
 * sanitizers, valgrind and a busy disk. The benchmark measures the real
 * figures. */
#define IO_TIMEOUT_MS 2000
#define HELD_UP_BOUND_S 1.0

typedef struct writer {
    mae_db *db;
    mae_publisher *pub;
    pthread_t thread;
    pthread_mutex_t mu;
    bool stop;
    int64_t next_id;     /* mails written so far: ids 1..next_id-1 */
    int64_t writes;      /* successful store calls */
    int64_t errors;
    double worst;        /* slowest single store call */
} writer;

static void timed(writer *w, int rc, double t0)
{
    double dt = tu_now_s() - t0;
    pthread_mutex_lock(&w->mu);
    if (dt > w->worst)
        w->worst = dt;
    if (rc >= 0)
        w->writes++;
    else
        w->errors++;
    pthread_mutex_unlock(&w->mu);
}

/* One mail's chain: new, synced, an outbox intent and its completion. */
static void *writer_main(void *arg)
{
    writer *w = arg;
    char msgid[64];
    for (;;) {
        pthread_mutex_lock(&w->mu);
        bool stop = w->stop;
        int64_t id = w->next_id;
        pthread_mutex_unlock(&w->mu);
        if (stop)
            break;
        snprintf(msgid, sizeof msgid, "<fault-%lld@example.com>", (long long)id);
        mae_email m = {.internal_id = id, .message_id = msgid, .subject = "fault"};
        double t0 = tu_now_s();
        timed(w, mae_sync_store_upsert(w->db, &m), t0);
        t0 = tu_now_s();
        timed(w, mae_sync_store_mark_synced(w->db, id, "page", NULL, MAE_SOURCE_NEW_WATCHER), t0);
        int64_t oid = 0;
        t0 = tu_now_s();
        timed(w, mae_outbox_enqueue(w->db, id, "flag", "notion", "{\"flagged\":true}", "cli",
                                    &oid, NULL),
              t0);
        t0 = tu_now_s();
        timed(w, mae_outbox_mark_done(w->db, oid), t0);
        pthread_mutex_lock(&w->mu);
        w->next_id++;
        pthread_mutex_unlock(&w->mu);
        tu_sleep_ms(5);
    }
    return NULL;
}

typedef struct scenario {
    mtr_redis redis;
    mae_publisher *pub;
    writer w;
    char dbpath[256];
    uint64_t markers;    /* test.marker events published after recovery */
} scenario;

static void start(scenario *s, const char *url)
{
    mae_publisher_config pc;
    mae_publisher_config_init(&pc);
    pc.redis_url = url;
    pc.connect_timeout_ms = IO_TIMEOUT_MS;
    pc.io_timeout_ms = IO_TIMEOUT_MS;
    pc.backoff_min_ms = 20;
    pc.backoff_max_ms = 300; /* so events resume within a second of recovery */
    assert_int_equal(mae_publisher_open(&pc, &s->pub), MAE_OK);

    tu_db_path(s->dbpath, sizeof s->dbpath, "faults");
    mae_db_config dc;
    tu_db_config(&dc, s->dbpath, s->pub, NULL);
    memset(&s->w, 0, sizeof s->w);
    assert_int_equal(mae_db_open(&dc, &s->w.db), MAE_OK);
    /* The bound is about the publisher, not the disk: no fsync per commit
     * on this scratch database. */
    assert_int_equal(sqlite3_exec(mae_db_sqlite(s->w.db), "PRAGMA synchronous=OFF", NULL, NULL,
                                  NULL),
                     SQLITE_OK);
    s->w.pub = s->pub;
    s->w.next_id = 1;
    pthread_mutex_init(&s->w.mu, NULL);
    assert_int_equal(pthread_create(&s->w.thread, NULL, writer_main, &s->w), 0);
}

/* Stops the writer and checks what every scenario promises. */
static void finish(scenario *s)
{
    pthread_mutex_lock(&s->w.mu);
    s->w.stop = true;
    pthread_mutex_unlock(&s->w.mu);
    pthread_join(s->w.thread, NULL);

    int64_t mails = s->w.next_id - 1;
    assert_true(mails > 10);
    assert_int_equal(s->w.errors, 0);
    assert_int_equal(s->w.writes, mails * 4);
    if (s->w.worst >= HELD_UP_BOUND_S)
        fail_msg("a store call took %.3f s", s->w.worst);

    /* Every state write is in SQLite. */
    mae_counts *c = NULL;
    assert_int_equal(mae_sync_store_count_by_status(s->w.db, &c), MAE_OK);
    int64_t synced = 0;
    for (size_t i = 0; i < c->count; i++)
        if (strcmp(c->items[i].key, "synced") == 0)
            synced = c->items[i].count;
    mae_counts_free(c);
    assert_int_equal(synced, mails);
    mae_outbox_depth d;
    assert_int_equal(mae_outbox_queue_depth(s->w.db, &d), MAE_OK);
    assert_int_equal(d.done, mails);

    mae_publisher_stats st;
    mae_publisher_stats_get(s->pub, &st);
    /* synced, enqueued, done per mail, and the recovery markers */
    assert_int_equal(st.calls, (uint64_t)mails * 3 + s->markers);
    tu_assert_counters_add_up(s->pub);
    mae_db_close(s->w.db);
    pthread_mutex_destroy(&s->w.mu);
}

static void cleanup(scenario *s)
{
    mae_publisher_close(s->pub, 500);
    mtr_cleanup(&s->redis);
    tu_remove_db(s->dbpath);
}

/* After recovery, a fresh event reaches a subscriber within a second. */
static void assert_events_resume(scenario *s)
{
    mtr_sub *sub = mtr_subscribe(&s->redis, CHANNEL);
    assert_non_null(sub);
    double t0 = tu_now_s();
    bool seen = false;
    size_t checked = 0;
    while (!seen && tu_now_s() - t0 < 1.0) {
        mae_safe_publish(s->pub, "test.marker", MAE_NO_ID, NULL, "test");
        s->markers++;
        size_t n = mtr_sub_wait(sub, checked + 1, 50);
        for (; checked < n && !seen; checked++)
            seen = strstr(mtr_sub_message(sub, checked), "test.marker") != NULL;
    }
    mtr_sub_close(sub);
    if (!seen)
        fail_msg("no event reached a subscriber within 1 s of recovery");
}

static int setup(void **state)
{
    (void)state;
    if (!mtr_available()) {
        print_message("redis-server not found: these tests cannot run, so they fail\n");
        return -1;
    }
    return 0;
}

static void test_absent_then_up(void **state)
{
    (void)state;
    scenario s;
    memset(&s, 0, sizeof s);
    assert_int_equal(mtr_reserve_port(&s.redis), 0);
    start(&s, s.redis.url);
    tu_sleep_ms(1000);
    assert_int_equal(mtr_restart(&s.redis), 0);
    tu_sleep_ms(300);
    assert_events_resume(&s);
    finish(&s);
    cleanup(&s);
}

static void test_killed_and_restarted(void **state)
{
    (void)state;
    scenario s;
    memset(&s, 0, sizeof s);
    assert_int_equal(mtr_start(&s.redis, NULL), 0);
    start(&s, s.redis.url);
    tu_sleep_ms(300);
    mtr_kill(&s.redis);
    tu_sleep_ms(1000);
    assert_int_equal(mtr_restart(&s.redis), 0);
    assert_events_resume(&s);
    finish(&s);
    cleanup(&s);
}

static void test_hung_for_five_seconds(void **state)
{
    (void)state;
    scenario s;
    memset(&s, 0, sizeof s);
    assert_int_equal(mtr_start(&s.redis, NULL), 0);
    start(&s, s.redis.url);
    tu_sleep_ms(300);
    mtr_pause(&s.redis);
    tu_sleep_ms(5000);
    mtr_resume(&s.redis);
    assert_events_resume(&s);
    finish(&s);
    cleanup(&s);
}

static void test_client_kill(void **state)
{
    (void)state;
    scenario s;
    memset(&s, 0, sizeof s);
    assert_int_equal(mtr_start(&s.redis, NULL), 0);
    start(&s, s.redis.url);
    for (int i = 0; i < 5; i++) {
        tu_sleep_ms(200);
        assert_int_equal(mtr_command(&s.redis, "CLIENT KILL TYPE normal"), 0);
    }
    assert_events_resume(&s);
    finish(&s);
    cleanup(&s);
}

static void test_client_pause(void **state)
{
    (void)state;
    scenario s;
    memset(&s, 0, sizeof s);
    assert_int_equal(mtr_start(&s.redis, NULL), 0);
    start(&s, s.redis.url);
    tu_sleep_ms(200);
    assert_int_equal(mtr_command(&s.redis, "CLIENT PAUSE 1500"), 0);
    tu_sleep_ms(1700);
    assert_events_resume(&s);
    finish(&s);
    cleanup(&s);
}

static void test_wrong_or_missing_password(void **state)
{
    (void)state;
    const char *pw[] = {"wrong", NULL};
    for (int i = 0; i < 2; i++) {
        scenario s;
        memset(&s, 0, sizeof s);
        assert_int_equal(mtr_start(&s.redis, "--requirepass right"), 0);
        char url[128];
        if (pw[i])
            snprintf(url, sizeof url, "redis://:%s@127.0.0.1:%d", pw[i], s.redis.port);
        else
            snprintf(url, sizeof url, "redis://127.0.0.1:%d", s.redis.port);
        start(&s, url);
        tu_sleep_ms(800);
        mae_publisher_stats st;
        mae_publisher_stats_get(s.pub, &st);
        assert_int_equal(st.published, 0);
        assert_true(st.connect_failures > 0);
        assert_true(st.last_error[0] != 0);
        /* The operator makes the server's password what the client has
         * (or drops it): events flow again. */
        mtr_stop(&s.redis);
        snprintf(s.redis.extra, sizeof s.redis.extra, "%s", pw[i] ? "--requirepass wrong" : "");
        assert_int_equal(mtr_restart(&s.redis), 0);
        double t0 = tu_now_s();
        while (tu_now_s() - t0 < 1.0) {
            mae_publisher_stats_get(s.pub, &st);
            if (st.published > 0)
                break;
            tu_sleep_ms(20);
        }
        assert_true(st.published > 0);
        finish(&s);
        cleanup(&s);
    }
}

static void test_maxclients_reached(void **state)
{
    (void)state;
    scenario s;
    memset(&s, 0, sizeof s);
    assert_int_equal(mtr_start(&s.redis, "--maxclients 1"), 0);
    mtr_sub *hog = mtr_subscribe(&s.redis, "other"); /* takes the only slot */
    assert_non_null(hog);
    start(&s, s.redis.url);
    tu_sleep_ms(800);
    mae_publisher_stats st;
    mae_publisher_stats_get(s.pub, &st);
    assert_int_equal(st.published, 0);
    assert_true(st.connect_failures > 0);
    mtr_sub_close(hog); /* a slot frees up */
    tu_sleep_ms(400);
    double t0 = tu_now_s();
    while (tu_now_s() - t0 < 1.0) {
        mae_publisher_stats_get(s.pub, &st);
        if (st.published > 0)
            break;
        tu_sleep_ms(20);
    }
    assert_true(st.published > 0);
    finish(&s);
    cleanup(&s);
}

static void test_unresolvable_host_and_missing_socket(void **state)
{
    (void)state;
    const char *urls[] = {"redis://no-such-host.invalid:6379", "unix:///nonexistent/redis.sock"};
    for (int i = 0; i < 2; i++) {
        scenario s;
        memset(&s, 0, sizeof s);
        start(&s, urls[i]);
        tu_sleep_ms(800);
        mae_publisher_stats st;
        mae_publisher_stats_get(s.pub, &st);
        assert_int_equal(st.published, 0);
        assert_false(st.connected);
        finish(&s);
        double t0 = tu_now_s();
        mae_publisher_close(s.pub, 200);
        s.pub = NULL;
        assert_true(tu_now_s() - t0 < 0.2 + HELD_UP_BOUND_S);
        cleanup(&s);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_absent_then_up),
        cmocka_unit_test(test_killed_and_restarted),
        cmocka_unit_test(test_hung_for_five_seconds),
        cmocka_unit_test(test_client_kill),
        cmocka_unit_test(test_client_pause),
        cmocka_unit_test(test_wrong_or_missing_password),
        cmocka_unit_test(test_maxclients_reached),
        cmocka_unit_test(test_unresolvable_host_and_missing_socket),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
