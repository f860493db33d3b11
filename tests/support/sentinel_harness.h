/* Test support: a replicated Redis set watched by Sentinel, all real
 * processes on free loopback ports: three redis-server (redis[0] starts as
 * the master, the two others replicate it; appendonly yes,
 * min-replicas-to-write 1, repl-diskless-sync-delay 0) and three Sentinels
 * (redis-server --sentinel; quorum 2, down-after-milliseconds 1000,
 * failover-timeout 5000) monitoring it as "mymaster". Shared by the
 * publisher's and the relay's failover tests. */
#ifndef MAE_TEST_SENTINEL_HARNESS_H
#define MAE_TEST_SENTINEL_HARNESS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include <mailagent/publisher.h>

#include "redis_harness.h"

#define MTS_MASTER_NAME "mymaster"

typedef struct mts_set {
    mtr_redis redis[3];
    mtr_redis sentinel[3];  /* their port, dir and pid */
    char url[256];          /* redis-sentinel://127.0.0.1:P1,...:P3#mymaster */
} mts_set;

/* Starts the set and waits until every Sentinel sees the master with two
 * replicas and the two other Sentinels, and both replicas are in sync.
 * Returns 0 or -1 (everything started is stopped). */
int mts_start(mts_set *s);
/* Stops every process and removes their directories. */
void mts_stop(mts_set *s);

/* The index in redis[] of the master the Sentinels name (asking each in
 * turn), or -1 when none answers with one of ours. */
int mts_master(mts_set *s);
/* Waits up to timeout_ms until a majority of the Sentinels name a master
 * other than old and that server answers ROLE master; its index or -1.
 * timeout_ms 0 asks once. */
int mts_wait_new_master(mts_set *s, int old, int timeout_ms);
/* Waits until redis[i] answers ROLE master (true) or timeout_ms passed. */
bool mts_is_master(mts_set *s, int i);
/* Waits up to timeout_ms until redis[m] has n replicas connected and none
 * in a full sync; true then. */
bool mts_wait_replicas(mts_set *s, int m, int n, int timeout_ms);
/* An entry id, MS-SEQ. */
typedef struct mts_entry_id {
    long long ms, seq;
} mts_entry_id;
/* The ids of the entries of stream on redis[m] whose time is above ms
 * (milliseconds since the epoch, as in entry ids), in the stream's order,
 * into *ids (malloc'd, the caller frees; NULL when none) and their number
 * into *n. 0, or -1 when redis[m] does not answer XRANGE. */
int mts_entry_ids_after(const mts_set *s, int m, const char *stream, long long ms,
                        mts_entry_id **ids, size_t *n);
/* The wall clock in milliseconds since the epoch (the clock of entry ids
 * on this machine). */
long long mts_wall_ms(void);
/* Asks Sentinel i for a planned failover (SENTINEL FAILOVER mymaster);
 * 0 unless it answers an error. */
int mts_sentinel_failover(mts_set *s, int i);
/* Seconds on the monotonic clock. */
double mts_now(void);

/* ---- a publisher writing numbered events through the set ---- */

/* The set's URL with "?wait_replicas=1&wait_timeout_ms=100" before the
 * '#' (what the failover tests publish with). */
void mts_wait_url(const mts_set *s, char *buf, size_t size);

/* A publisher in stream mode through mts_wait_url (connect 500 ms, I/O
 * 1000 ms, backoff 50..1000 ms) and a thread calling mae_safe_publish with
 * event_type "test.event", data {"n":N} (N from 1, also the internal_id)
 * and the source given, every interval_ms. */
typedef struct mts_feeder {
    mae_publisher *p;
    char source[32];
    int interval_ms;
    atomic_bool stop;
    atomic_int sent;        /* the last N published */
    bool running;
    pthread_t thread;
    char err[200];          /* the publisher's error_buf */
} mts_feeder;

/* Opens the publisher (not the thread); MAE_OK or the open's error. */
int mts_feeder_open(mts_feeder *f, const mts_set *s, const char *stream, const char *source);
/* The same with any URL (a deployment the test did not start). */
int mts_feeder_open_url(mts_feeder *f, const char *url, const char *stream, const char *source);
/* Starts the thread; 0 or -1. */
int mts_feeder_start(mts_feeder *f, int interval_ms);
/* Stops the thread and flushes (up to flush_ms); returns the number of
 * events published (the last N), or -1 when the flush timed out. */
int mts_feeder_stop(mts_feeder *f, int flush_ms);
/* Closes the publisher (stopping the thread first if it runs); what
 * mae_publisher_close returned. */
int mts_feeder_close(mts_feeder *f);

/* What the stream holds of one source's events 1..sent, read with XRANGE
 * on redis[m]. */
typedef struct mts_stream_count {
    size_t entries;         /* entries of that source */
    int missing;            /* N in 1..sent absent */
    int first_missing;      /* the first of them, 0 for none */
    int twice;              /* entries whose N came before */
    int out_of_order;       /* entries whose N is below the one before */
    int strays;             /* entries with no N in 1..sent */
} mts_stream_count;

/* Counts into *out; source NULL counts every entry. 0, or -1 when
 * redis[m] does not answer XRANGE. */
int mts_count_stream(const mts_set *s, int m, const char *stream, const char *source, int sent,
                     mts_stream_count *out);
/* The same on the server at 127.0.0.1:port, after AUTH password when
 * password is not NULL. */
int mts_count_stream_at(int port, const char *password, const char *stream, const char *source,
                        int sent, mts_stream_count *out);

#endif
