/* Test support: a real redis-server on a free loopback port, started and
 * stopped by the test (never any other address), and a subscriber that
 * collects the messages of one channel on a background thread. */
#ifndef MAE_TEST_REDIS_HARNESS_H
#define MAE_TEST_REDIS_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct mtr_redis {
    pid_t pid;           /* 0 when not running */
    int port;
    char dir[256];       /* its working directory (removed by mtr_stop) */
    char url[96];        /* "redis://127.0.0.1:PORT" */
    char extra[256];     /* extra arguments given at start, reused by restart */
    char password[64];   /* AUTH sent by mtr_command and mtr_subscribe; "" = none */
} mtr_redis;

/* True when a redis-server binary is available. Without one, an
 * integration test fails; only test_it_cli skips its tests, and not when
 * CI is set (tu_in_ci): CI must not pass by running less. */
bool mtr_available(void);

/* Picks a free loopback port and starts redis-server there (no persistence)
 * with extra arguments (NULL ok, e.g. "--requirepass secret"); waits until
 * it answers PING. Returns 0 or -1. */
int mtr_start(mtr_redis *r, const char *extra);
/* Reserves a free port without starting (for "Redis comes up late"). */
int mtr_reserve_port(mtr_redis *r);
/* Starts on r->port again (after kill/stop), same extra arguments. */
int mtr_restart(mtr_redis *r);
/* Restarts behind a password and subscribes to channel through it, then
 * lifts the password: a client without one (the publisher under test)
 * cannot deliver anything before the subscriber is listening. */
struct mtr_sub *mtr_restart_gated(mtr_redis *r, const char *channel);
void mtr_stop(mtr_redis *r);       /* SIGTERM and wait; keeps r->port */
void mtr_kill(mtr_redis *r);       /* SIGKILL and wait */
void mtr_pause(mtr_redis *r);      /* SIGSTOP: the server hangs */
void mtr_resume(mtr_redis *r);     /* SIGCONT */
void mtr_cleanup(mtr_redis *r);    /* stop if running and remove its dir */
/* Runs one command on a fresh connection (e.g. "CLIENT KILL TYPE pubsub");
 * returns 0 when the reply is not an error. */
int mtr_command(mtr_redis *r, const char *fmt, ...);

typedef struct mtr_sub mtr_sub;
/* Subscribes to channel; returns once the subscription is confirmed. */
mtr_sub *mtr_subscribe(mtr_redis *r, const char *channel);
/* Waits until at least n messages arrived or timeout_ms passed; returns the
 * count received. */
size_t mtr_sub_wait(mtr_sub *s, size_t n, int timeout_ms);
size_t mtr_sub_count(mtr_sub *s);
const char *mtr_sub_message(mtr_sub *s, size_t i);  /* borrowed */
void mtr_sub_close(mtr_sub *s);

#endif
