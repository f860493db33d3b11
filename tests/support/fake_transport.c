/* Test support: a scripted fake Redis at the publisher's transport seam
 * (see fake_transport.h). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fake_transport.h"

typedef struct strvec {
    char **v;
    size_t n, cap;
} strvec;

struct fake_redis {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int fail_connects, error_replies, break_after;
    bool auth_error, hang, peer_closed;
    int connects, attempts;
    struct fake_conn *cur;   /* the open connection, for unhang */
    strvec commands, channels, messages;
};

/* One connection: the commands appended and not yet answered, and a
 * socketpair so close() has a real fd to shut down while we "hang". */
typedef struct fake_conn {
    fake_redis *f;
    strvec pending;     /* argv joined, for AUTH/PING/PUBLISH decisions */
    strvec pend_chan, pend_msg;
    size_t next;        /* index of the next reply in pending */
    int fds[2];
    bool broken;
} fake_conn;

static void push(strvec *s, const char *text, size_t len)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (!s->v)
            abort(); /* test support: out of memory here is a broken test machine */
    }
    char *c = malloc(len + 1);
    if (!c)
        abort();
    memcpy(c, text, len);
    c[len] = 0;
    s->v[s->n++] = c;
}

static void clear(strvec *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    s->n = 0;
}

static void vfree(strvec *s)
{
    clear(s);
    free(s->v);
    s->v = NULL;
    s->cap = 0;
}

fake_redis *fake_redis_new(void)
{
    fake_redis *f = calloc(1, sizeof *f);
    if (!f)
        abort();
    f->break_after = -1; /* never */
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    return f;
}

void fake_redis_free(fake_redis *f)
{
    if (!f)
        return;
    vfree(&f->commands);
    vfree(&f->channels);
    vfree(&f->messages);
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

static void *fk_connect(void *user, const mae__url *url, int cto, int ito, char *err,
                        size_t errlen)
{
    (void)url;
    (void)cto;
    (void)ito;
    fake_redis *f = user;
    pthread_mutex_lock(&f->mu);
    f->attempts++;
    if (f->fail_connects > 0) {
        f->fail_connects--;
        pthread_mutex_unlock(&f->mu);
        snprintf(err, errlen, "Connection refused (fake)");
        return NULL;
    }
    f->connects++;
    f->peer_closed = false;
    pthread_mutex_unlock(&f->mu);
    fake_conn *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->f = f;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, c->fds) != 0)
        abort();
    pthread_mutex_lock(&f->mu);
    f->cur = c;
    pthread_mutex_unlock(&f->mu);
    return c;
}

static int fk_append(void *conn, int argc, const char **argv, const size_t *lens)
{
    fake_conn *c = conn;
    size_t total = 0;
    for (int i = 0; i < argc; i++)
        total += lens[i] + 1;
    char *joined = malloc(total + 1);
    size_t off = 0;
    if (!joined)
        abort();
    for (int i = 0; i < argc; i++) {
        memcpy(joined + off, argv[i], lens[i]);
        off += lens[i];
        if (i + 1 < argc)
            joined[off++] = ' ';
    }
    joined[off] = 0;
    push(&c->pending, joined, off);
    free(joined);
    if (argc == 3 && strcmp(argv[0], "PUBLISH") == 0) {
        push(&c->pend_chan, argv[1], lens[1]);
        push(&c->pend_msg, argv[2], lens[2]);
    } else {
        push(&c->pend_chan, "", 0);
        push(&c->pend_msg, "", 0);
    }
    return 0;
}

static int fk_get_reply(void *conn, mae__reply *out, char *err, size_t errlen)
{
    fake_conn *c = conn;
    fake_redis *f = c->f;

    if (out)
        memset(out, 0, sizeof *out); /* the fake speaks no stream mode */
    pthread_mutex_lock(&f->mu);
    while (f->hang && !c->broken) {
        pthread_mutex_unlock(&f->mu);
        /* Block like a read from a hung server; close() shuts the socket
         * down (recv returns 0), or unhang writes a byte. */
        char b;
        ssize_t n = recv(c->fds[0], &b, 1, 0);
        pthread_mutex_lock(&f->mu);
        if (n <= 0) {
            c->broken = true;
            break;
        }
    }
    if (c->broken || c->next >= c->pending.n) {
        c->broken = true;
        pthread_mutex_unlock(&f->mu);
        snprintf(err, errlen, "connection reset (fake)");
        return MAE__REPLY_IO;
    }
    if (f->break_after == 0) {
        f->break_after = -1;
        c->broken = true;
        pthread_mutex_unlock(&f->mu);
        snprintf(err, errlen, "connection broke mid-batch (fake)");
        return MAE__REPLY_IO;
    }
    if (f->break_after > 0)
        f->break_after--;
    size_t i = c->next++;
    const char *cmd = c->pending.v[i];
    push(&f->commands, cmd, strlen(cmd));
    int rc = MAE__REPLY_OK;
    if (strncmp(cmd, "AUTH ", 5) == 0 && f->auth_error) {
        snprintf(err, errlen, "WRONGPASS invalid username-password pair (fake)");
        rc = MAE__REPLY_ERROR;
    } else if (strncmp(cmd, "PUBLISH ", 8) == 0) {
        if (f->error_replies > 0) {
            f->error_replies--;
            snprintf(err, errlen, "ERR fake error");
            rc = MAE__REPLY_ERROR;
        } else {
            push(&f->channels, c->pend_chan.v[i], strlen(c->pend_chan.v[i]));
            push(&f->messages, c->pend_msg.v[i], strlen(c->pend_msg.v[i]));
        }
    }
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    return rc;
}

static bool fk_peer_closed(void *conn)
{
    fake_conn *c = conn;
    pthread_mutex_lock(&c->f->mu);
    bool closed = c->f->peer_closed;
    c->f->peer_closed = false;
    pthread_mutex_unlock(&c->f->mu);
    return closed;
}

static int fk_fd(void *conn)
{
    return ((fake_conn *)conn)->fds[0];
}

static void fk_free(void *conn)
{
    fake_conn *c = conn;
    pthread_mutex_lock(&c->f->mu);
    if (c->f->cur == c)
        c->f->cur = NULL;
    pthread_mutex_unlock(&c->f->mu);
    close(c->fds[0]);
    close(c->fds[1]);
    vfree(&c->pending);
    vfree(&c->pend_chan);
    vfree(&c->pend_msg);
    free(c);
}

mae__transport_ops fake_redis_ops(fake_redis *f)
{
    mae__transport_ops ops = {
        .connect = fk_connect,
        .append = fk_append,
        .get_reply = fk_get_reply,
        .peer_closed = fk_peer_closed,
        .fd = fk_fd,
        .free = fk_free,
        .user = f,
        .release = NULL,
    };
    return ops;
}

#define SETTER(name, field, type)                                                          \
    void fake_redis_##name(fake_redis *f, type v)                                          \
    {                                                                                      \
        pthread_mutex_lock(&f->mu);                                                        \
        f->field = v;                                                                      \
        pthread_mutex_unlock(&f->mu);                                                      \
    }
SETTER(fail_connects, fail_connects, int)
SETTER(auth_error, auth_error, bool)
SETTER(error_replies, error_replies, int)
SETTER(break_after, break_after, int)

void fake_redis_hang(fake_redis *f, bool on)
{
    pthread_mutex_lock(&f->mu);
    f->hang = on;
    if (!on && f->cur) {
        /* Wake a reader blocked in the hang. */
        char b = 1;
        if (write(f->cur->fds[1], &b, 1) < 0)
            abort();
    }
    pthread_mutex_unlock(&f->mu);
}

void fake_redis_close_peer(fake_redis *f)
{
    pthread_mutex_lock(&f->mu);
    f->peer_closed = true;
    pthread_mutex_unlock(&f->mu);
}

#define GETTER(name, expr, type)                                                           \
    type fake_redis_##name(fake_redis *f)                                                  \
    {                                                                                      \
        pthread_mutex_lock(&f->mu);                                                        \
        type v = (expr);                                                                   \
        pthread_mutex_unlock(&f->mu);                                                      \
        return v;                                                                          \
    }
GETTER(connects, f->connects, int)
GETTER(connect_attempts, f->attempts, int)
GETTER(published, f->messages.n, size_t)
GETTER(commands, f->commands.n, size_t)

const char *fake_redis_message(fake_redis *f, size_t i)
{
    pthread_mutex_lock(&f->mu);
    const char *s = i < f->messages.n ? f->messages.v[i] : NULL;
    pthread_mutex_unlock(&f->mu);
    return s;
}

const char *fake_redis_channel(fake_redis *f, size_t i)
{
    pthread_mutex_lock(&f->mu);
    const char *s = i < f->channels.n ? f->channels.v[i] : NULL;
    pthread_mutex_unlock(&f->mu);
    return s;
}

const char *fake_redis_command(fake_redis *f, size_t i)
{
    pthread_mutex_lock(&f->mu);
    const char *s = i < f->commands.n ? f->commands.v[i] : NULL;
    pthread_mutex_unlock(&f->mu);
    return s;
}

void fake_redis_clear(fake_redis *f)
{
    pthread_mutex_lock(&f->mu);
    clear(&f->commands);
    clear(&f->channels);
    clear(&f->messages);
    pthread_mutex_unlock(&f->mu);
}
