/* Test support: a replicated Redis set watched by Sentinel, all real
 * processes on free loopback ports: three redis-server (redis[0] starts as
 * the master, the two others replicate it; appendonly yes,
 * min-replicas-to-write 1, repl-diskless-sync-delay 0) and three Sentinels
 * (redis-server --sentinel; quorum 2, down-after-milliseconds 1000,
 * failover-timeout 5000) monitoring it as "mymaster". Shared by the
 * publisher's and the relay's failover tests. */
#ifndef MAE_TEST_SENTINEL_HARNESS_H
#define MAE_TEST_SENTINEL_HARNESS_H

#include <stdbool.h>

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
/* Asks Sentinel i for a planned failover (SENTINEL FAILOVER mymaster);
 * 0 unless it answers an error. */
int mts_sentinel_failover(mts_set *s, int i);
/* Seconds on the monotonic clock. */
double mts_now(void);

#endif
