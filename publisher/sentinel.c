/* This file implements finding the master through Redis Sentinel for a
 * redis-sentinel:// URL, on the I/O thread, as Redis's Sentinel client
 * guidelines describe: ask each Sentinel in turn with a short timeout for
 * the master's address, move the first that answers to the front of the
 * list, and, once connected, confirm with ROLE that the server is the
 * master (a demoted master answers for a while before Sentinel reconfigures
 * it). The lookup runs before every connect, so every reconnect and every
 * NOREPLICAS, READONLY or LOADING reply (which drops the connection) asks
 * again. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "publisher/publisher_impl.h"

/* A Sentinel that does not answer within this long (or the connect and I/O
 * timeouts, when shorter) is passed over for the next one. */
#define SENTINEL_TIMEOUT_MS 250

static void set_sock(mae_publisher *p, int fd)
{
    io_lock(p);
    p->sock_fd = fd;
    pthread_mutex_unlock(&p->mu);
}

/* Asks one Sentinel; 0 with the address, or -1 with why in err. */
static int ask(mae_publisher *p, const struct mae__url_addr *s, char **host, int *port, char *err,
               size_t errlen)
{
    int t = SENTINEL_TIMEOUT_MS;
    if (p->connect_timeout_ms < t)
        t = p->connect_timeout_ms;
    if (p->io_timeout_ms < t)
        t = p->io_timeout_ms;
    mae__url a = {.host = s->host, .port = s->port, .wait_replicas = -1, .wait_timeout_ms = -1};
    char why[160] = "";
    void *conn = p->ops.connect(p->ops.user, &a, t, t, why, sizeof why);
    if (!conn) {
        snprintf(err, errlen, "Sentinel %s:%d: %s", s->host, s->port, why);
        return -1;
    }
    set_sock(p, p->ops.fd(conn));
    const char *argv[3] = {"SENTINEL", "get-master-addr-by-name", p->url.master_name};
    size_t lens[3] = {8, 23, strlen(p->url.master_name)};
    mae__reply r;
    memset(&r, 0, sizeof r);
    int rc = p->ops.append(conn, 3, argv, lens) == 0 ? p->ops.get_reply(conn, &r, why, sizeof why)
                                                     : MAE__REPLY_IO;
    set_sock(p, -1);
    p->ops.free(conn);
    if (rc != MAE__REPLY_OK) {
        snprintf(err, errlen, "Sentinel %s:%d: %s", s->host, s->port, why[0] ? why : "no reply");
        return -1;
    }
    char *end = NULL;
    long v = r.nelems == 2 ? strtol(r.elems[1], &end, 10) : 0;
    if (r.nelems != 2 || !r.elems[0][0] || !end || *end || v < 1 || v > 65535) {
        snprintf(err, errlen, "Sentinel %s:%d does not know master \"%s\"", s->host, s->port,
                 p->url.master_name);
        return -1;
    }
    *host = strdup(r.elems[0]);
    if (!*host) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    *port = (int)v;
    return 0;
}

int mae__sentinel_lookup(mae_publisher *p, char **host, int *port, char *err, size_t errlen)
{
    mae__url *u = &p->url;
    char why[200] = "no Sentinel";
    for (size_t i = 0; i < u->nsentinels; i++) {
        io_lock(p);
        bool give_up = p->abandon;
        pthread_mutex_unlock(&p->mu);
        if (give_up)
            break;
        if (ask(p, &u->sentinels[i], host, port, why, sizeof why) == 0) {
            /* The one that answered is asked first next time. */
            struct mae__url_addr found = u->sentinels[i];
            memmove(u->sentinels + 1, u->sentinels, i * sizeof *u->sentinels);
            u->sentinels[0] = found;
            return 0;
        }
    }
    snprintf(err, errlen, "no Sentinel gave master \"%s\" (last: %s)", u->master_name, why);
    return -1;
}

int mae__sentinel_confirm_master(mae_publisher *p, void *conn, char *err, size_t errlen)
{
    const char *argv[1] = {"ROLE"};
    size_t lens[1] = {4};
    mae__reply r;
    memset(&r, 0, sizeof r);
    if (p->ops.append(conn, 1, argv, lens) != 0) {
        snprintf(err, errlen, "out of memory");
        return MAE__REPLY_IO;
    }
    int rc = p->ops.get_reply(conn, &r, err, errlen);
    if (rc != MAE__REPLY_OK)
        return rc;
    if (r.nelems < 1 || strcmp(r.elems[0], "master") != 0) {
        snprintf(err, errlen, "the address Sentinel gave answers ROLE %s, not master",
                 r.nelems ? r.elems[0] : "(nothing)");
        return MAE__REPLY_ERROR;
    }
    return MAE__REPLY_OK;
}
