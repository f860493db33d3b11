/* Internal: the Redis URL parser shared by the publisher, the relay and the
 * command. Never installed. */
#ifndef MAE_URL_H
#define MAE_URL_H

#include <stdbool.h>
#include <stddef.h>

typedef struct mae__url {
    bool is_unix;
    char *host;         /* host name or address, brackets removed; NULL for unix */
    int port;           /* default 6379 */
    char *path;         /* unix socket path; NULL for tcp */
    char *user;         /* NULL when none */
    char *password;     /* NULL when none ("" is a password) */
    int db;             /* default 0 */
    /* Later additions go at the end. */
    /* ?wait_replicas=N&wait_timeout_ms=M on a redis:// or redis-sentinel://
     * URL; -1 when absent (mae__url_parse_wait_query). */
    int wait_replicas, wait_timeout_ms;
    /* redis-sentinel:// only (nsentinels 0 otherwise): the Sentinels to ask,
     * in the URL's order (default port 26379), and the master's name. host
     * and port above are the first Sentinel's. */
    size_t nsentinels;
    struct mae__url_addr {
        char *host;
        int port;
    } *sentinels;
    char *master_name;
} mae__url;

/* Parses redis://[[user]:password@]host[:port][/db][?wait query] (host may
 * be [v6]), redis-sentinel://[[user]:password@]host[:port][,host[:port]...]
 * [/db][?wait query]#MASTER and unix:///path[?db=N]; user and password are percent-decoded. Returns 0, or
 * MAE_EINVAL with a sentence naming the problem in err, or MAE_ENOMEM. */
int mae__url_parse(const char *url, mae__url *out, char *err, size_t errlen);
void mae__url_free(mae__url *u);

/* Parses the query of a redis:// URL, q[0..n) after the '?':
 * wait_replicas=N (0-1000) and wait_timeout_ms=M (1-3600000), '&'-separated,
 * into u. Anything else is refused with a sentence in err (MAE_EINVAL). */
int mae__url_parse_wait_query(const char *q, size_t n, mae__url *u, char *err, size_t errlen);

#endif
