/* Internal: the Redis URL parser shared by the publisher, the relay and the
 * command. Never installed. */
#ifndef MAE_URL_H
#define MAE_URL_H

#include <stdbool.h>
#include <stddef.h>

/* ssl_cert_reqs: how the server's certificate is checked. In a client,
 * "optional" means what "required" means (as in Python's ssl module, whose
 * names redis-py takes): the certificate is verified and a failure ends the
 * handshake. "none" verifies nothing, the host name included. */
enum { MAE__TLS_VERIFY_REQUIRED = 0, MAE__TLS_VERIFY_OPTIONAL, MAE__TLS_VERIFY_NONE };

/* The TLS options of a rediss:// URL, kept apart so that every URL form
 * that can run over TLS carries the same sub-struct. Strings are
 * percent-decoded and owned by the URL (freed by mae__url_free). */
typedef struct mae__url_tls {
    bool enabled;          /* rediss:// */
    int cert_reqs;         /* MAE__TLS_VERIFY_*; default REQUIRED */
    bool check_hostname;   /* resolved: default on unless cert_reqs is NONE */
    char *ca_certs;        /* ssl_ca_certs: PEM file of trusted CAs; NULL = the system's */
    char *ca_path;         /* ssl_ca_path: a hashed directory of CAs; NULL = none */
    char *certfile;        /* ssl_certfile: client certificate (PEM); NULL = none */
    char *keyfile;         /* ssl_keyfile: its key; NULL = in certfile */
} mae__url_tls;

typedef struct mae__url {
    bool is_unix;
    char *host;         /* host name or address, brackets removed; NULL for unix */
    int port;           /* default 6379 */
    char *path;         /* unix socket path; NULL for tcp */
    char *user;         /* NULL when none */
    char *password;     /* NULL when none ("" is a password) */
    int db;             /* default 0 */
    mae__url_tls tls;   /* tls.enabled false for redis://, redis-sentinel:// and unix:// */
    /* Later additions go at the end. */
    /* ?wait_replicas=N&wait_timeout_ms=M on a redis://, rediss:// or
     * redis-sentinel:// URL; -1 when absent. */
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

/* The forms a caller can connect to beyond redis:// and unix://, given to
 * mae__url_parse_for. A form a caller cannot speak is refused by the
 * parser with a sentence saying so, so that no caller ever connects in
 * plain text to what the URL says must be encrypted, nor to a Sentinel as
 * if it were the Redis server. */
enum { MAE__URL_ALLOW_TLS = 1u << 0, MAE__URL_ALLOW_SENTINEL = 1u << 1 };

/* Parses redis://[[user]:password@]host[:port][/db][?options] (host may be
 * [v6]), rediss://...same...[?ssl options] (when allow has
 * MAE__URL_ALLOW_TLS), redis-sentinel://[[user]:password@]host[:port]
 * [,host[:port]...][/db][?options]#MASTER (when allow has
 * MAE__URL_ALLOW_SENTINEL; never with TLS) and unix:///path[?db=N]
 * (docs/publisher.md, "The Redis URL"). The options are db,
 * wait_replicas, wait_timeout_ms and, for rediss://, the ssl_* ones; user,
 * password and option values are percent-decoded. Returns 0, or MAE_EINVAL
 * with a sentence naming the problem in err, or MAE_ENOMEM. *out is
 * written only on success. */
int mae__url_parse_for(const char *url, unsigned allow, mae__url *out, char *err,
                       size_t errlen);
/* mae__url_parse_for with nothing beyond redis:// and unix:// allowed. */
int mae__url_parse(const char *url, mae__url *out, char *err, size_t errlen);
/* True when url names a TLS form (rediss://), without parsing the rest. */
bool mae__url_is_tls(const char *url);
/* Frees the strings of u and resets them; NULL or freed twice is harmless. */
void mae__url_free(mae__url *u);

/* ---- the hello ----------------------------------------------------------------
 * What a client sends on a fresh connection to the Redis server a URL names
 * (the master, through Sentinel), before anything else, and how it judges
 * each reply: one description for the publisher's I/O thread, the relay's
 * link and the command's blocking connection. In order:
 *   AUTH [user] password   when the URL has a password ("" is one), with
 *                          the user when it has one (Redis 6 ACL);
 *   SELECT db              when db is not 0 and the caller reads or writes
 *                          keys (a link used for pub/sub only leaves it out:
 *                          channels are not per database).
 * Each reply is awaited before the caller's own commands count: an error
 * reply refuses the connection, anything else accepts it. What a caller
 * sends after the hello (PING, SCRIPT LOAD, ROLE, SUBSCRIBE) is its own. */
enum { MAE__HELLO_MAX = 2, MAE__HELLO_MAX_ARGS = 3 };

typedef struct mae__hello_cmd {
    const char *name;                       /* "AUTH" or "SELECT", as argv[0]; static
                                               storage: an asynchronous caller may
                                               keep it until the reply comes */
    int argc;                               /* 2 or 3 */
    const char *argv[MAE__HELLO_MAX_ARGS];  /* unused ones NULL */
    size_t argvlen[MAE__HELLO_MAX_ARGS];    /* unused ones 0 */
} mae__hello_cmd;

typedef struct mae__hello {
    size_t n;                               /* 0 to MAE__HELLO_MAX */
    mae__hello_cmd cmd[MAE__HELLO_MAX];
    char db_text[12];                       /* SELECT's argument */
} mae__hello;

/* Fills *h with the commands for u, in the order they are sent; with_select
 * false leaves SELECT out. The argv point into u (user, password) and into
 * *h itself: valid while both are, and *h is used where it was filled,
 * never copied. */
void mae__hello_init(mae__hello *h, const mae__url *u, bool with_select);

/* The command as a hiredis format ("%b %b" or "%b %b %b"), for a caller
 * whose only way to send takes one: given argv[i], argvlen[i] in turn. */
const char *mae__hello_format(const mae__hello_cmd *c);

/* Judges the reply to the hello's command called name (a cmd's name):
 * is_error and text (its message) as read. True when it accepts the
 * connection; false with "<name> refused: <text>" in err (the publisher's
 * I/O thread says "server refused: <text>" instead, as its last_error
 * always has). */
bool mae__hello_accepts(const char *name, bool is_error, const char *text, char *err,
                        size_t errlen);

#endif
