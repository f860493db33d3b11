/* Internal: the bytes the relay writes: Server-Sent Events frames, each
 * wrapped as one HTTP/1.1 chunk, and the fixed response heads. Pure
 * functions over mae__buf, unit-tested without a socket. Never installed. */
#ifndef MAE_RELAY_SSE_H
#define MAE_RELAY_SSE_H

#include <stddef.h>

#include "core/text.h"

/* Appends one SSE frame: "id: <id>\n" when id is not NULL (stream mode),
 * "event: <event>\n", then data as "data: <line>\n" for each line of data
 * (split at CRLF, CR or LF, the three line ends of the SSE grammar, so a
 * foreign message can never end the frame early or forge a field), and the
 * blank line. Every other byte is copied as it is: UTF-8 passes through
 * byte for byte. An empty data gives one "data: " line. */
void mae__sse_frame(mae__buf *b, const char *event, const char *id, const char *data, size_t len);

/* Appends bytes as one chunk of the chunked transfer coding: the length in
 * hex, CRLF, the bytes, CRLF. len 0 writes nothing (a zero-length chunk is
 * the end of the body: mae__sse_chunk_end). */
void mae__sse_chunk(mae__buf *b, const char *bytes, size_t len);

/* Appends the last chunk that ends a chunked body: "0\r\n\r\n". */
void mae__sse_chunk_end(mae__buf *b);

/* Appends one whole frame, chunked: what a client receives for one event. */
void mae__sse_chunked_frame(mae__buf *b, const char *event, const char *id, const char *data,
                            size_t len);

/* The heartbeat as a client receives it (chunked), a constant. */
extern const char mae__sse_ping_chunk[];
extern const size_t mae__sse_ping_chunk_len;

#endif
