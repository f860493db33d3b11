/* This file implements fork safety: the registry of live publishers and
 * the pthread_atfork handlers that lock it and mark the child's copies. */
#include <pthread.h>

#include "publisher/publisher_impl.h"

/* Every publisher is in a registry. Before fork() the registry and each
 * publisher's mutex are taken, so the child inherits consistent queues and
 * unlocked mutexes; the child marks its copies forked, and from then on its
 * calls are counted as dropped_disabled and nothing talks to the parent's
 * connection (the I/O thread does not exist in the child). This relies on
 * glibc letting the child of a threaded process unlock, in its atfork
 * handler, mutexes the parent's forking thread held (publisher.h). */
static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static mae_publisher *registry;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static int atfork_rc;

static void before_fork(void)
{
    pthread_mutex_lock(&registry_mu);
    for (mae_publisher *p = registry; p; p = p->reg_next)
        pthread_mutex_lock(&p->mu);
}

static void after_fork_parent(void)
{
    for (mae_publisher *p = registry; p; p = p->reg_next)
        pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&registry_mu);
}

static void after_fork_child(void)
{
    for (mae_publisher *p = registry; p; p = p->reg_next) {
        p->forked = true;
        pthread_mutex_unlock(&p->mu);
    }
    pthread_mutex_unlock(&registry_mu);
}

static void install_atfork(void)
{
    atfork_rc = pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

/* Installs the handlers once per process: 0, or pthread_atfork's error. */
int mae__fork_handlers_install(void)
{
    pthread_once(&atfork_once, install_atfork);
    return atfork_rc;
}

void mae__fork_registry_add(mae_publisher *p)
{
    pthread_mutex_lock(&registry_mu);
    p->reg_next = registry;
    registry = p;
    pthread_mutex_unlock(&registry_mu);
}

void mae__fork_registry_remove(mae_publisher *p)
{
    pthread_mutex_lock(&registry_mu);
    for (mae_publisher **pp = &registry; *pp; pp = &(*pp)->reg_next) {
        if (*pp == p) {
            *pp = p->reg_next;
            break;
        }
    }
    pthread_mutex_unlock(&registry_mu);
}

