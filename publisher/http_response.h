/* Internal: the hub transport's HTTP/1.1 response parser, a pure function
 * over bytes with its limits named here, so it is tested (and can be
 * fuzzed) without a socket. Never installed. */
#ifndef MAE_HTTP_RESPONSE_H
#define MAE_HTTP_RESPONSE_H

#include <stdbool.h>
#include <stddef.h>

/* The longest status or header line, and the most header lines: a hub's
 * answer has a handful of short ones. */
#define MAE__HTTP_LINE_MAX 1024
#define MAE__HTTP_HEADERS_MAX 64
/* The most body bytes read. A longer body (by Content-Length) is not read:
 * the status alone decides, and the connection is closed. */
#define MAE__HTTP_BODY_MAX ((size_t)64 << 10)

enum {
    MAE__HTTP_MORE = 0,  /* feed more bytes */
    MAE__HTTP_DONE = 1,  /* a final answer is complete */
    MAE__HTTP_BAD = -1,  /* not an HTTP/1.x answer, or over a limit: why says which */
};

typedef struct mae__http_resp {
    /* The outcome, valid once DONE. */
    int status;            /* 100..599 */
    bool close;            /* the connection cannot carry another request */
    bool body_unread;      /* a body was there but not read (chunked, too long, to EOF) */
    char *body;            /* MAE__HTTP_BODY_MAX bytes, owned by the caller */
    size_t body_len;
    const char *why;       /* a static sentence when BAD */

    /* Parser state. */
    int state;
    char line[MAE__HTTP_LINE_MAX];
    size_t line_len;
    int headers;
    long long content_length; /* -1: none given */
    bool chunked, http10, keep_alive;
} mae__http_resp;

/* Starts parsing an answer into r, with body a buffer of MAE__HTTP_BODY_MAX
 * bytes (borrowed). This function can't fail. */
void mae__http_resp_init(mae__http_resp *r, char *body);

/* Feeds n bytes. Returns MAE__HTTP_MORE (all n used), MAE__HTTP_DONE (*used
 * says how many bytes belonged to the answer; any after it are not ours)
 * or MAE__HTTP_BAD. Interim 1xx answers are skipped. */
int mae__http_resp_feed(mae__http_resp *r, const char *buf, size_t n, size_t *used);

#endif
