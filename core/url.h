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
    mae__url_tls tls;   /* tls.enabled false for redis:// and unix:// */
} mae__url;

/* The forms a caller can connect to beyond redis:// and unix://, given to
 * mae__url_parse_for. A form a caller cannot speak is refused by the
 * parser with a sentence saying so, so that no caller ever connects in
 * plain text to what the URL says must be encrypted. */
enum { MAE__URL_ALLOW_TLS = 1u << 0 };

/* Parses redis://[[user]:password@]host[:port][/db][?db=N],
 * rediss://...same...[?ssl options] (when allow has MAE__URL_ALLOW_TLS) and
 * unix:///path[?db=N] (docs/publisher.md, "The Redis URL"); user, password
 * and option values are percent-decoded. Returns 0, or MAE_EINVAL with a
 * sentence naming the problem in err, or MAE_ENOMEM. *out is written only
 * on success. */
int mae__url_parse_for(const char *url, unsigned allow, mae__url *out, char *err,
                       size_t errlen);
/* mae__url_parse_for with nothing beyond redis:// and unix:// allowed. */
int mae__url_parse(const char *url, mae__url *out, char *err, size_t errlen);
/* True when url names a TLS form (rediss://), without parsing the rest. */
bool mae__url_is_tls(const char *url);
/* Frees the strings of u and resets them; NULL or freed twice is harmless. */
void mae__url_free(mae__url *u);

#endif
