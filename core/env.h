/* Internal: the configuration the environment gives every program of the
 * project (the command, the relay, the demo watcher), read one way:
 * docs/operations.md#environment is its reference, and the Python package
 * mirrors it (mailagent_events/_env.py, checked against this by
 * tests/python/test_env_parity.py). Never installed. */
#ifndef MAE_ENV_H
#define MAE_ENV_H

#include <stddef.h>

/* Looks a variable up: getenv, or a test's fake environment. */
typedef const char *(*mae__getenv_fn)(const char *name);

/* The value of name, or NULL when it is unset or blank (empty or only
 * spaces, tabs, CR and LF): a blank variable counts as unset. get NULL is
 * getenv. The value is returned as set, untrimmed. */
const char *mae__env_get(mae__getenv_fn get, const char *name);

/* The default database MailAgent appends to REDIS_URL. */
#define MAE_ENV_DEFAULT_REDIS_DB "2"

/* The Redis URL of the environment:
 * - MAILAGENT_REDIS_URL, trimmed, when set;
 * - else REDIS_URL with REDIS_DB (default 2) appended as MailAgent does,
 *   f"{REDIS_URL}/{REDIS_DB}": trailing '/' of REDIS_URL dropped first; a
 *   REDIS_URL that already names database 0 ("/0") gets REDIS_DB in its
 *   place (what redis-py makes of MailAgent's "/0/2"); one naming another
 *   database is refused (MailAgent's "/5/2" is database 52 to redis-py).
 *   A unix:///path REDIS_URL gets "?db=N" (our URL form for a socket).
 * - else none: *out NULL.
 * Returns 0 with *out malloc'd (or NULL) and *from (when non-NULL) the
 * variable it came from ("MAILAGENT_REDIS_URL" or "REDIS_URL", NULL for
 * none); MAE_EINVAL with a sentence naming the variable in err (a REDIS_DB
 * that is not a number from 0 to 2147483647, a REDIS_URL naming a database
 * or with a query); MAE_ENOMEM. The URL itself is not parsed here
 * (mae__url_parse does that, naming what is wrong). */
int mae__env_redis_url(mae__getenv_fn get, char **out, const char **from, char *err,
                       size_t errlen);

/* A credential (WEBHOOK_SECRET, MAILAGENT_LOCAL_API_TOKEN, ...): *out is
 * its value, NULL when unset or empty. A value with leading or trailing
 * whitespace, or with a control character anywhere, can never match a
 * header (header values arrive trimmed and without controls): refused,
 * MAE_EINVAL with a sentence naming the variable (never the value) in err.
 * Returns 0 otherwise. */
int mae__env_credential(mae__getenv_fn get, const char *name, const char **out, char *err,
                        size_t errlen);

/* The port MailAgent's processes post to when there is no Redis
 * (SSE_LOCAL_PORT's default). */
#define MAE_ENV_DEFAULT_LOCAL_PORT "9200"

/* Where events go when the environment names no Redis URL (hub mode):
 * - MAILAGENT_RELAY_URL, trimmed, when set (the publisher checks its form,
 *   http://host[:port]);
 * - else, when local_default is true (the Python drop-in's process-wide
 *   publisher, as MailAgent's loopback),
 *   "http://127.0.0.1:${SSE_LOCAL_PORT:-9200}";
 * - else none: *url NULL.
 * *token is MAILAGENT_LOCAL_API_TOKEN read as mae__env_credential reads it
 * (borrowed from the environment; NULL when unset).
 * Returns 0 with *url malloc'd (or NULL); MAE_EINVAL with a sentence naming
 * the variable in err (an SSE_LOCAL_PORT that is not a port from 1 to
 * 65535, a token no header can carry); MAE_ENOMEM. *url is NULL on error. */
int mae__env_relay(mae__getenv_fn get, int local_default, char **url, const char **token,
                   char *err, size_t errlen);

#endif
