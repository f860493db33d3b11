/* Internal: HTTP/1.1 chunked transfer decoding (RFC 9112 section 7.1) for
 * the command's SSE client, the relay's streams being chunked. A pure
 * function over bytes, every field bounded. Never installed. */
#ifndef MAE_STREAM_CHUNKED_H
#define MAE_STREAM_CHUNKED_H

#include <stddef.h>
#include <stdint.h>

/* The longest chunk-size line (size, extensions) and trailer line taken. */
#define MAE__CHUNKED_LINE_MAX 4096

enum {
    MAE__CHUNKED_MORE = 0,     /* all input used, the body goes on */
    MAE__CHUNKED_END = 1,      /* the last chunk and trailers came */
    MAE__CHUNKED_BAD = -1,     /* not chunked encoding: drop the connection */
};

typedef struct mae__chunked {
    int state;
    uint64_t left;      /* bytes of the current chunk still to come */
    size_t line;        /* bytes of the current size or trailer line */
    int digits;
} mae__chunked;

/* Starts a body. */
void mae__chunked_init(mae__chunked *d);

/* Decodes buf[0..len) in place: the body's bytes are moved to the start of
 * buf and *out_len says how many. Returns MAE__CHUNKED_MORE,
 * MAE__CHUNKED_END (*used: the bytes consumed, the rest belongs to what
 * follows the body) or MAE__CHUNKED_BAD. used may be NULL. */
int mae__chunked_feed(mae__chunked *d, char *buf, size_t len, size_t *out_len, size_t *used);

#endif
