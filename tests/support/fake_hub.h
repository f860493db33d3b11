/* Test support: a fake hub, a thread serving the publish route of hub mode
 * over HTTP/1.1 on a free loopback port. It applies each batch by the
 * hub's exactly-once rule (an event whose number is not above the last
 * applied for its publisher is skipped) and records what it got; each
 * request can instead be answered with a chosen status, closed mid-answer,
 * dropped unanswered, hung, trickled a byte at a time or answered chunked.
 * Thread-safe: tests script and inspect it while it serves. */
#ifndef MAE_TEST_FAKE_HUB_H
#define MAE_TEST_FAKE_HUB_H

#include <stdbool.h>
#include <stddef.h>

typedef struct fake_hub fake_hub;

/* What the hub does with one request. */
enum {
    HUB_OK,         /* apply, answer 200 {"accepted":N,"skipped":K,"last_id":"..."} */
    HUB_STATUS,     /* apply nothing, answer the given status with a short body */
    HUB_CLOSE_MID,  /* apply, write half of the 200 answer, close */
    HUB_DROP,       /* apply nothing, close without a byte */
    HUB_HANG,       /* apply nothing, never answer (until fake_hub_unhang) */
    HUB_TRICKLE,    /* apply, write the 200 answer a byte every 50 ms */
    HUB_CHUNKED,    /* apply, answer 200 with a chunked body */
};

/* Listens on 127.0.0.1, a free port; asserts on failure. */
fake_hub *fake_hub_start(void);
/* Stops the thread, closes every connection and frees h. */
void fake_hub_stop(fake_hub *h);
/* The same on a given port (a hub restarted where the last one was). */
fake_hub *fake_hub_start_on(int port);
/* "http://127.0.0.1:<port>", borrowed for h's life. */
const char *fake_hub_url(fake_hub *h);
int fake_hub_port(fake_hub *h);

/* ---- scripting (any time) ---- */
/* Requests without X-MailAgent-Local-Token equal to token get 401 (NULL:
 * no check). Copied. */
void fake_hub_require_token(fake_hub *h, const char *token);
/* A request whose Content-Length is over bytes (0: no limit) is answered
 * 413 with Connection: close as soon as its head is in, unread; with
 * linger, the hub reads and discards the rest before closing (as careful
 * servers do), else it closes at once. */
void fake_hub_body_limit(fake_hub *h, size_t bytes, bool linger);
/* The next request is handled with act (status for HUB_STATUS); queued
 * behind earlier ones. */
void fake_hub_push(fake_hub *h, int act, int status);
/* How requests are handled once the queue is empty (HUB_OK at start). */
void fake_hub_default(fake_hub *h, int act, int status);
/* Closes the hung connections and goes back to HUB_OK. */
void fake_hub_unhang(fake_hub *h);

/* ---- inspection ---- */
size_t fake_hub_events(fake_hub *h);        /* events applied, in order */
/* Copies the i-th applied event line into buf; false when there is none. */
bool fake_hub_event(fake_hub *h, size_t i, char *buf, size_t n);
size_t fake_hub_requests(fake_hub *h);      /* complete requests received */
size_t fake_hub_connections(fake_hub *h);   /* connections accepted */
size_t fake_hub_skipped(fake_hub *h);       /* events skipped as already applied */
size_t fake_hub_gaps(fake_hub *h);          /* batches starting past last + 1 */
size_t fake_hub_bad(fake_hub *h);           /* requests breaking the wire protocol */
size_t fake_hub_max_body(fake_hub *h);      /* the longest request body so far */
/* Copies the last request's header name (any case) into buf; false when
 * absent. The request line is under the name ":request". */
bool fake_hub_header(fake_hub *h, const char *name, char *buf, size_t n);

#endif
