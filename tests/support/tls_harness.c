/* Test support: the TLS certificates, the redis-server with a TLS port and
 * the hung TLS listener of tls_harness.h. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tls_harness.h"

bool mtr_tls_available(void)
{
    return system("openssl version >/dev/null 2>&1") == 0;
}

const char *mtr_cert_path(const mtr_certs *c, const char *name, const char *ext, char *out,
                          size_t n)
{
    snprintf(out, n, "%s/%s.%s", c->dir, name, ext);
    return out;
}

/* Runs a shell command in dir, quietly; 0 when it succeeded. */
static int run(const mtr_certs *c, const char *fmt, const char *a, const char *b)
{
    char cmd[1024], body[800];
    snprintf(body, sizeof body, fmt, a, b, b);
    snprintf(cmd, sizeof cmd, "cd '%s' && %s >/dev/null 2>&1", c->dir, body);
    return system(cmd) == 0 ? 0 : -1;
}

#define EC_KEY "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"

/* A key and a certificate NAME signed by ca, for the subjectAltName san
 * (and extended key usage usage), valid for days (0: expired at once). */
static int signed_cert(const mtr_certs *c, const char *name, const char *ext, int days)
{
    char extfile[64], req[256], sign[256];
    snprintf(extfile, sizeof extfile, "%s.ext", name);
    FILE *f = fopen(mtr_cert_path(c, name, "ext", (char[128]){0}, 128), "w");
    if (!f)
        return -1;
    fprintf(f, "%s\n", ext);
    fclose(f);
    snprintf(req, sizeof req, "openssl req " EC_KEY " -keyout %%s.key -out %%s.csr -subj /CN=%s",
             name);
    snprintf(sign, sizeof sign,
             "openssl x509 -req -in %%s.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
             "-out %%s.pem -days %d -extfile %s",
             days, extfile);
    return run(c, req, name, name) == 0 && run(c, sign, name, name) == 0 ? 0 : -1;
}

int mtr_certs_make(mtr_certs *c)
{
    snprintf(c->dir, sizeof c->dir, "/tmp/mtls-XXXXXX");
    if (!mkdtemp(c->dir))
        return -1;
    const char *ca = "openssl req -x509 " EC_KEY " -keyout %s.key -out %s.pem -days 2 "
                     "-subj /CN=mailagent-test-%s";
    if (run(c, ca, "ca", "ca") != 0 || run(c, ca, "other_ca", "other_ca") != 0)
        return -1;
    if (signed_cert(c, "server", "subjectAltName=DNS:localhost,IP:127.0.0.1", 2) != 0 ||
        signed_cert(c, "wrong", "subjectAltName=DNS:wrong.example.com", 2) != 0 ||
        signed_cert(c, "expired", "subjectAltName=DNS:localhost,IP:127.0.0.1", 0) != 0 ||
        signed_cert(c, "client", "extendedKeyUsage=clientAuth", 2) != 0)
        return -1;
    /* "expired" is valid until the second it was made: let it pass. */
    sleep(1);
    return 0;
}

void mtr_certs_remove(mtr_certs *c)
{
    if (!c->dir[0])
        return;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", c->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", c->dir);
    c->dir[0] = '\0';
}

int mtr_tls_start(mtr_redis *r, int *tls_port, const mtr_certs *c, const char *cert,
                  bool auth_clients, const char *extra)
{
    mtr_redis probe;
    memset(&probe, 0, sizeof probe);
    /* A free port for TLS: reserve one, then let mtr_start find another. */
    for (int attempt = 0; attempt < 5; attempt++) {
        if (mtr_reserve_port(&probe) != 0)
            return -1;
        mtr_cleanup(&probe); /* removes the directory reserve made */
        char args[512];
        snprintf(args, sizeof args,
                 "--tls-port %d --tls-cert-file %s/%s.pem --tls-key-file %s/%s.key "
                 "--tls-ca-cert-file %s/ca.pem --tls-auth-clients %s%s%s",
                 probe.port, c->dir, cert, c->dir, cert, c->dir, auth_clients ? "yes" : "no",
                 extra ? " " : "", extra ? extra : "");
        if (strlen(args) >= sizeof r->extra - 1)
            return -1;
        if (mtr_start(r, args) == 0) {
            *tls_port = probe.port;
            return 0;
        }
    }
    return -1;
}

/* ---- the hung listener ---- */

struct mtr_stall {
    int lfd;
    int wake[2];
    size_t reply_bytes;
    pthread_t thread;
    pthread_mutex_t mu;
    int accepted;
    int conns[64];
    int nconns;
};

static void *stall_main(void *arg)
{
    mtr_stall *s = arg;
    /* The first bytes of a ServerHello: a handshake record header whose
     * body never comes in full. */
    static const unsigned char hello[] = {0x16, 0x03, 0x03, 0x00, 0x7a, 0x02, 0x00, 0x00,
                                          0x76, 0x03, 0x03, 0x11, 0x22, 0x33, 0x44, 0x55};
    bool answered[64] = {false};
    for (;;) {
        struct pollfd fds[66];
        nfds_t n = 0;
        fds[n++] = (struct pollfd){.fd = s->wake[0], .events = POLLIN};
        fds[n++] = (struct pollfd){.fd = s->lfd, .events = POLLIN};
        for (int i = 0; i < s->nconns; i++)
            fds[n++] = (struct pollfd){.fd = s->conns[i], .events = POLLIN};
        if (poll(fds, n, -1) < 0 && errno != EINTR)
            break;
        if (fds[0].revents)
            break;
        if ((fds[1].revents & POLLIN) && s->nconns < 64) {
            int fd = accept(s->lfd, NULL, NULL);
            if (fd >= 0) {
                pthread_mutex_lock(&s->mu);
                s->accepted++;
                pthread_mutex_unlock(&s->mu);
                s->conns[s->nconns++] = fd;
            }
        }
        for (int i = 0; i < s->nconns; i++) {
            if (!(fds[2 + i].revents & POLLIN))
                continue;
            char buf[4096];
            ssize_t got = read(s->conns[i], buf, sizeof buf);
            (void)got; /* a closed peer stays in the list, read as EOF */
            if (!answered[i] && s->reply_bytes > 0) {
                size_t k = s->reply_bytes < sizeof hello ? s->reply_bytes : sizeof hello;
                ssize_t w = write(s->conns[i], hello, k);
                (void)w;
                answered[i] = true;
            }
        }
        /* A peer that hung up is closed here, its slot taken by the last. */
        for (int i = 0; i < s->nconns; i++) {
            char b;
            if (recv(s->conns[i], &b, 1, MSG_PEEK | MSG_DONTWAIT) == 0) {
                close(s->conns[i]);
                s->conns[i] = s->conns[--s->nconns];
                answered[i] = answered[s->nconns];
                i--;
            }
        }
    }
    return NULL;
}

mtr_stall *mtr_stall_start(size_t reply_bytes, int *port)
{
    mtr_stall *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->reply_bytes = reply_bytes;
    pthread_mutex_init(&s->mu, NULL);
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(s->lfd, 64) != 0 || getsockname(s->lfd, (struct sockaddr *)&a, &len) != 0 ||
        pipe(s->wake) != 0 || pthread_create(&s->thread, NULL, stall_main, s) != 0) {
        if (s->lfd >= 0)
            close(s->lfd);
        free(s);
        return NULL;
    }
    *port = ntohs(a.sin_port);
    return s;
}

int mtr_stall_accepted(mtr_stall *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->accepted;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void mtr_stall_stop(mtr_stall *s)
{
    if (!s)
        return;
    ssize_t w = write(s->wake[1], "x", 1);
    (void)w;
    pthread_join(s->thread, NULL);
    for (int i = 0; i < s->nconns; i++)
        close(s->conns[i]);
    close(s->lfd);
    close(s->wake[0]);
    close(s->wake[1]);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
