/* This module implements the held events of a mae_db handle: the event
 * lines of uncommitted writes, kept in order until their commit hands them
 * to the publisher, or dropped when the write is undone. */
#include <stdlib.h>

#include "db/db_internal.h"
#include "publisher/publisher_internal.h"

static void free_events(mae__held_event *e)
{
    while (e) {
        mae__held_event *next = e->next;
        mae__buf_free(&e->line);
        free(e);
        e = next;
    }
}

void mae__db_discard_from(mae_db *db, mae__held_event **from)
{
    free_events(*from);
    *from = NULL;
    db->held_tail = from;
}

void mae__db_discard_all(mae_db *db)
{
    mae__db_discard_from(db, &db->held);
    db->held_mark = NULL;
}

/* The one place where the stores' events leave for the publisher. */
void mae__db_publish_held(mae_db *db)
{
    mae__held_event *e = db->held;
    db->held = NULL;
    db->held_tail = &db->held;
    db->held_mark = NULL;
    while (e) {
        mae__held_event *next = e->next;
        mae__publisher_enqueue(db->publisher, &e->line);
        free(e);
        e = next;
    }
}

int mae__db_hold(mae_db *db, mae__buf *b)
{
    /* No publisher at all: the write is state only. */
    if (!db->publisher) {
        mae__buf_free(b);
        return MAE_OK;
    }
    if (b->oom) {
        mae__buf_free(b);
        return mae__db_error(db, MAE_ENOMEM, "building the event: out of memory");
    }
    /* An event the publisher would refuse fails the write instead (rolled
     * back by the caller), so a store change is never silently unannounced. */
    size_t max = mae__publisher_max_line(db->publisher);
    if (b->len > max) {
        size_t len = b->len;
        mae__buf_free(b);
        return mae__db_error(db, MAE_EINVAL, "the event is %zu bytes, over max_event_bytes (%zu)",
                             len, max);
    }
    /* A disabled publisher still gets the (empty) line after the commit, so
     * its dropped_disabled counter sees every event it was handed. */
    mae__held_event *e = malloc(sizeof *e);
    if (!e) {
        mae__buf_free(b);
        return mae__db_error(db, MAE_ENOMEM, "holding the event: out of memory");
    }
    e->next = NULL;
    e->line = *b;
    mae__buf_init(b);
    *db->held_tail = e;
    db->held_tail = &e->next;
    return MAE_OK;
}

bool mae__db_wants_events(const mae_db *db)
{
    return db && mae__publisher_live(db->publisher);
}
