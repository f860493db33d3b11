/* Test support for rediss://: certificates made with the openssl command
 * into a temporary directory, and a real redis-server that listens on a
 * plain loopback port (for the harness's PING, subscribers and checks) and
 * on a TLS loopback port (for the code under test). */
#ifndef MAE_TEST_TLS_HARNESS_H
#define MAE_TEST_TLS_HARNESS_H

#include <stdbool.h>
#include <stddef.h>

#include "redis_harness.h"

/* The files in dir, each NAME.pem with its key NAME.key:
 *   ca        the test CA (ca.pem is what ssl_ca_certs points at)
 *   other_ca  a CA nobody's certificate comes from (for "unknown CA")
 *   server    for localhost and 127.0.0.1, signed by ca
 *   wrong     for wrong.example.com only, signed by ca
 *   expired   for localhost and 127.0.0.1, signed by ca, already expired
 *   client    a client certificate signed by ca */
typedef struct mtr_certs {
    char dir[64];
} mtr_certs;

/* True when the openssl command is available. */
bool mtr_tls_available(void);
/* Makes the certificates in a fresh directory under /tmp (short paths:
 * redis-server's arguments go through mtr_redis.extra). 0 or -1. */
int mtr_certs_make(mtr_certs *c);
/* The path of dir/name.ext into out (ext "pem" or "key"). */
const char *mtr_cert_path(const mtr_certs *c, const char *name, const char *ext, char *out,
                          size_t n);
void mtr_certs_remove(mtr_certs *c);

/* Starts r (mtr_start) with a TLS port as well, serving the certificate
 * `cert` ("server", "wrong", "expired"), and asking clients for a
 * certificate signed by ca when auth_clients. *tls_port gets the port.
 * mtr_restart keeps both ports and the certificate. 0 or -1. */
int mtr_tls_start(mtr_redis *r, int *tls_port, const mtr_certs *c, const char *cert,
                  bool auth_clients, const char *extra);

/* A plain TCP listener on a free loopback port that plays a hung TLS
 * server: it accepts connections and reads whatever comes, and after
 * reading a ClientHello writes `reply_bytes` bytes of a TLS handshake
 * record (0: nothing at all) and then never writes again. Runs on its own
 * thread until mtr_stall_stop. */
typedef struct mtr_stall mtr_stall;
mtr_stall *mtr_stall_start(size_t reply_bytes, int *port);
/* How many connections it accepted so far. */
int mtr_stall_accepted(mtr_stall *s);
void mtr_stall_stop(mtr_stall *s);

#endif
