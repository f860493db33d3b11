/* Test support: an SSE client that behaves as a browser's EventSource
 * does (the HTML standard's "Server-sent events" processing model), for
 * the tests with several relays behind a proxy. It reads one stream
 * (chunked or not), keeps the last event ID string (updated at each
 * dispatch, also by a frame with an id and no data) and the reconnection
 * time (retry:); when the stream ends or the connection drops it waits
 * that long and connects again to the same port with Last-Event-ID.
 * Every event it dispatches is recorded, so the test can count what each
 * client saw. Not thread-safe: one thread steps all clients. */
#ifndef MAE_TEST_FLEET_CLIENT_H
#define MAE_TEST_FLEET_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "harness.h"

/* A dispatched "mailagent" event: whose (index of its source in the
 * client's sources) and its number (data {"n":N}). */
typedef struct fc_event {
    int pub;                /* -1: a source not among the client's */
    int n;                  /* -1: no "n" */
    int conn;               /* which connection brought it (1, 2, ...) */
    int via;                /* the port its response's X-Upstream named, 0: none */
    double t;               /* when it was dispatched (rh_now) */
    char id[64];
} fc_event;

/* A dispatched "reset" event, after `at` recorded events. */
typedef struct fc_reset {
    size_t at;
    char data[160];
} fc_reset;

typedef struct fc_client {
    int port;               /* where it connects (the proxy) */
    char path[128];
    char headers[256];      /* extra header lines, each ending in CR LF */
    const char *const *sources;     /* borrowed, NULL-terminated */

    rh_conn *c;             /* the open connection, NULL while waiting */
    int status;             /* HTTP status of this connection, 0 before the head */
    bool chunked;
    int via;                /* the port in this response's X-Upstream header (a proxy's
                             * $upstream_addr; the last address when it tried several),
                             * 0 without one */
    size_t raw;             /* bytes of c->buf consumed */
    long chunk_left;        /* -1: a size line next; -2: a CRLF next */
    char *body;             /* the stream's bytes, de-chunked */
    size_t body_len, body_cap, parsed;

    char id_buf[64];        /* the last event ID buffer */
    char event[32];         /* the event type buffer */
    char *data;             /* the data buffer */
    size_t data_len, data_cap;

    char last_id[64];       /* the last event ID string: sent as Last-Event-ID */
    int retry_ms;           /* the reconnection time */
    double reconnect_at;    /* while c is NULL */

    int connects;           /* connections opened */
    int bad_status;         /* answers other than 200 text/event-stream */
    int ends;               /* streams that ended (closed or cut) */
    double t_end;           /* when the last one ended */
    int retry_at_end;       /* the reconnection time then */
    double t_back;          /* seconds from t_end to the next event, -1 until then */

    fc_event *ev;
    size_t nev, cap;
    fc_reset *resets;
    size_t nresets;
} fc_client;

/* A client of path on 127.0.0.1:port, connected at once (no
 * Last-Event-ID), sending the header lines given on every connection
 * (each ending in CR LF; NULL for none, e.g. a credential); sources name
 * the events' "source" values it tells apart. NULL on failure. */
fc_client *fc_open(int port, const char *path, const char *headers, const char *const *sources);
/* Reads what has arrived, dispatches it, and reconnects when the wait
 * after an end is over. Never blocks. */
void fc_step(fc_client *c);
/* Steps every client until cond(arg) holds or timeout_ms pass (polling
 * every few ms); true when it held. */
bool fc_run_until(fc_client **cs, int n, bool (*cond)(void *), void *arg, int timeout_ms);
/* The highest N of source index pub received so far (0: none). */
int fc_highest(const fc_client *c, int pub);
void fc_free(fc_client *c);

/* What a client saw of one source's events 1..sent. Walking its events in
 * order, an N seen before is doubled, an N beyond the previous one + 1
 * leaves a gap; either is explained when a reset came in between (after
 * the earlier sighting, or after the source's previous event). */
typedef struct fc_tally {
    int events, twice, twice_explained, gaps, gaps_explained, missing;
} fc_tally;
/* -1 when an event of that source has no N in 1..sent; 0 otherwise. */
int fc_tally_of(const fc_client *c, int pub, int sent, fc_tally *out);

#endif
