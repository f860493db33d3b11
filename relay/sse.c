/* This module implements the relay's framing: Server-Sent Events frames as
 * the WHATWG grammar reads them, inside HTTP/1.1 chunks. */
#include <stdio.h>
#include <string.h>

#include "relay/sse.h"

#define PING_FRAME "event: ping\ndata: \n\n"

/* "14\r\n" + the ping frame (20 bytes = 0x14) + "\r\n". */
const char mae__sse_ping_chunk[] = "14\r\n" PING_FRAME "\r\n";
const size_t mae__sse_ping_chunk_len = sizeof mae__sse_ping_chunk - 1;

void mae__sse_frame(mae__buf *b, const char *event, const char *id, const char *data, size_t len)
{
    if (id) {
        mae__buf_puts(b, "id: ");
        mae__buf_puts(b, id);
        mae__buf_putc(b, '\n');
    }
    mae__buf_puts(b, "event: ");
    mae__buf_puts(b, event);
    mae__buf_putc(b, '\n');
    size_t i = 0;
    for (;;) {
        size_t start = i;
        while (i < len && data[i] != '\n' && data[i] != '\r')
            i++;
        mae__buf_put(b, "data: ", 6);
        mae__buf_put(b, data + start, i - start);
        mae__buf_putc(b, '\n');
        if (i >= len)
            break;
        /* CRLF is one line end, not two. */
        i += data[i] == '\r' && i + 1 < len && data[i + 1] == '\n' ? 2 : 1;
    }
    mae__buf_putc(b, '\n');
}

void mae__sse_chunk(mae__buf *b, const char *bytes, size_t len)
{
    char head[24];
    if (len == 0)
        return;
    int n = snprintf(head, sizeof head, "%zx\r\n", len);
    mae__buf_put(b, head, (size_t)n);
    mae__buf_put(b, bytes, len);
    mae__buf_put(b, "\r\n", 2);
}

void mae__sse_chunk_end(mae__buf *b)
{
    mae__buf_put(b, "0\r\n\r\n", 5);
}

void mae__sse_chunked_frame(mae__buf *b, const char *event, const char *id, const char *data,
                            size_t len)
{
    mae__buf frame;
    mae__buf_init(&frame);
    mae__sse_frame(&frame, event, id, data, len);
    if (frame.oom)
        b->oom = true;
    else
        mae__sse_chunk(b, frame.ptr, frame.len);
    mae__buf_free(&frame);
}
