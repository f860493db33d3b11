/* Test support: a fake Redis at the transport seam of the publisher. It
 * records every command, answers as scripted, and can fail connects, AUTH,
 * single replies, or break the connection mid-batch; it can also hang (block
 * in a read until the publisher shuts the socket down). Thread-safe: the
 * publisher's I/O thread drives it while the test inspects it. */
#ifndef MAE_TEST_FAKE_TRANSPORT_H
#define MAE_TEST_FAKE_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>

#include "publisher/publisher_internal.h"

typedef struct fake_redis fake_redis;

fake_redis *fake_redis_new(void);
void fake_redis_free(fake_redis *f);
/* The ops to pass to mae__publisher_open_with (user = f). */
mae__transport_ops fake_redis_ops(fake_redis *f);

/* ---- scripting (any time) ---- */
void fake_redis_fail_connects(fake_redis *f, int n);        /* next n connects fail */
void fake_redis_auth_error(fake_redis *f, bool on);         /* AUTH answers -ERR */
void fake_redis_error_replies(fake_redis *f, int n);        /* next n PUBLISH answer -ERR */
void fake_redis_break_after(fake_redis *f, int n);          /* after n more replies the connection breaks */
void fake_redis_hang(fake_redis *f, bool on);               /* get_reply blocks until shut down / unhung */
void fake_redis_close_peer(fake_redis *f);                  /* peer_closed() true on the open connection */

/* ---- inspection ---- */
int fake_redis_connects(fake_redis *f);                     /* successful connects */
int fake_redis_connect_attempts(fake_redis *f);
size_t fake_redis_published(fake_redis *f);                 /* PUBLISH acknowledged OK */
/* i-th acknowledged PUBLISH's channel and message, borrowed. */
const char *fake_redis_message(fake_redis *f, size_t i);
const char *fake_redis_channel(fake_redis *f, size_t i);
/* Every command seen, as argv joined by spaces (e.g. "AUTH user pw"). */
size_t fake_redis_commands(fake_redis *f);
const char *fake_redis_command(fake_redis *f, size_t i);
void fake_redis_clear(fake_redis *f);                       /* forget recorded messages/commands */

#endif
