/* Internal: the relay's HTTP request parser and router. A pure function
 * over bytes (no socket, no allocation), so it is unit-tested and fuzzed on
 * its own. It reads the request line and headers, and the length of a
 * body: only POST /api/events/publish takes one (relay/publish.c reads it,
 * by Content-Length). Never installed. */
#ifndef MAE_RELAY_REQUEST_H
#define MAE_RELAY_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

/* The request line and headers together may take at most this many bytes;
 * over it the answer is 431 and the connection is closed. */
#define MAE__REQ_MAX_BYTES 8192
/* At most this many header lines (431 over it). */
#define MAE__REQ_MAX_HEADERS 100
/* A request's headers must be complete this long after the connection was
 * accepted (or the previous answer was sent); otherwise it is closed. */
#define MAE__REQ_DEADLINE_MS 10000

/* A piece of the parsed buffer: borrowed, not NUL-terminated. p is NULL
 * when the piece is absent (a header not sent). */
typedef struct mae__span {
    const char *p;
    size_t n;
} mae__span;

typedef enum mae__req_status {
    MAE__REQ_INCOMPLETE = 0,  /* no blank line yet, and under the limit */
    MAE__REQ_DONE,            /* parsed; out->length bytes consumed */
    MAE__REQ_BAD,             /* malformed: 400, closed */
    MAE__REQ_TOO_LARGE,       /* over MAE__REQ_MAX_BYTES or _MAX_HEADERS: 431, closed */
} mae__req_status;

typedef struct mae__request {
    size_t length;            /* bytes of request line and headers, with the blank line */
    mae__span method;         /* "GET" */
    mae__span target;         /* "/api/events/stream?last_event_id=1-0" */
    mae__span path;           /* the target before '?' */
    mae__span query;          /* after '?'; p NULL when there is no '?' */
    int minor;                /* HTTP/1.<minor>: 0 or 1 */
    bool keep_alive;          /* the connection may carry another request */
    bool has_body;            /* Content-Length > 0 or Transfer-Encoding: close after answering */
    bool conn_keep;           /* the client allows keep-alive (body aside) */
    bool has_length;          /* a Content-Length was given */
    unsigned long long content_length; /* its value; ULLONG_MAX when it overflows */
    bool chunked;             /* a Transfer-Encoding was given (any: only chunked exists) */
    bool expect_continue;     /* Expect: 100-continue (curl sends it for bodies over 1 KiB) */
    /* The values (surrounding blanks removed) of the headers the relay reads. */
    mae__span authorization;
    mae__span webhook_token;  /* X-Webhook-Token */
    mae__span local_token;    /* X-MailAgent-Local-Token */
    mae__span last_event_id;  /* Last-Event-ID */
    mae__span content_type;   /* Content-Type */
    mae__span publisher;      /* X-MailAgent-Publisher (docs/publisher.md, "Hub mode") */
    mae__span batch_start;    /* X-MailAgent-Batch-Start */
} mae__request;

/* Parses the request that starts at buf (len bytes available). Returns
 * MAE__REQ_DONE and fills *out (its spans point into buf) once the blank
 * line that ends the headers is in buf; MAE__REQ_INCOMPLETE while it is not
 * and len is under MAE__REQ_MAX_BYTES; MAE__REQ_BAD or MAE__REQ_TOO_LARGE
 * otherwise. Line ends may be CRLF or a bare LF; empty lines before the
 * request line are skipped (RFC 9112, 2.2). *out is written only on DONE. */
mae__req_status mae__request_parse(const char *buf, size_t len, mae__request *out);

/* True when the span equals the NUL-terminated s, byte for byte. */
bool mae__span_eq(mae__span a, const char *s);

/* The credentials the relay accepts, read from the environment by the
 * command. NULL or "" = not configured. Borrowed. */
typedef struct mae__credentials {
    const char *webhook_secret;   /* X-Webhook-Token or Authorization: Bearer */
    const char *local_token;      /* X-MailAgent-Local-Token */
} mae__credentials;

/* True when at least one credential is configured. */
bool mae__credentials_required(const mae__credentials *c);

/* True when the request may read the stream and the metrics: no credential
 * is configured, or one the request presents matches (each compared in
 * constant time). */
bool mae__request_authorized(const mae__request *r, const mae__credentials *c);

/* Compares a (alen bytes) with b (blen bytes) in time that depends only on
 * alen, never on where they differ or on b's content: a presented token is
 * a, the secret b. True when equal. */
bool mae__ct_equal(const char *a, size_t alen, const char *b, size_t blen);

/* What the relay answers, decided from the request alone. */
typedef enum mae__route {
    MAE__ROUTE_STREAM,        /* 200, the event stream */
    MAE__ROUTE_HEALTHZ,       /* 200, {"status":"ok",...} */
    MAE__ROUTE_METRICS,       /* 200, Prometheus text */
    MAE__ROUTE_PAGE,          /* 200, the dashboard page */
    MAE__ROUTE_UNAUTHORIZED,  /* 401 */
    MAE__ROUTE_NOT_FOUND,     /* 404 */
    MAE__ROUTE_BAD_METHOD,    /* 405, Allow: GET */
    MAE__ROUTE_HEALTH,        /* 200, GET /api/events/health (MailAgent's) */
    MAE__ROUTE_PUBLISH,       /* POST /api/events/publish, authorized: read its body */
    MAE__ROUTE_BAD_METHOD_POST, /* 405, Allow: POST (the publish path) */
} mae__route;

#define MAE__RELAY_HEALTH_PATH "/api/events/health"
#define MAE__RELAY_PUBLISH_PATH "/api/events/publish"

/* Routes a parsed request: stream_path is the --path (an exact match of the
 * path without the query), "/" the page, "/healthz", "/metrics",
 * /api/events/health and POST /api/events/publish (credentials as the
 * stream's; whether a loopback-only publish is allowed is the caller's). */
mae__route mae__request_route(const mae__request *r, const char *stream_path,
                              const mae__credentials *c);

#endif
