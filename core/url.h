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
} mae__url;

/* Parses redis://[[user]:password@]host[:port][/db] (host may be [v6]) and
 * unix:///path[?db=N]; user and password are percent-decoded. Returns 0, or
 * MAE_EINVAL with a sentence naming the problem in err, or MAE_ENOMEM. */
int mae__url_parse(const char *url, mae__url *out, char *err, size_t errlen);
void mae__url_free(mae__url *u);

#endif
