/* This module decodes HTTP/1.1's chunked transfer coding: hex size, optional
 * extensions, CRLF, the data, CRLF; a zero size ends the body after the
 * trailer lines and an empty line. A bare LF is taken where CRLF is due,
 * as RFC 9112 lets a recipient do; anything else is BAD. */
#include <stdbool.h>

#include "stream/chunked.h"

enum { SIZE, EXT, SIZE_LF, DATA, DATA_CR, DATA_LF, TRAILER, TRAILER_LF, DONE };

void mae__chunked_init(mae__chunked *d)
{
    d->state = SIZE;
    d->left = 0;
    d->line = 0;
    d->digits = 0;
}

static int hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* After the size line: data, or the trailers for the last chunk. */
static void size_done(mae__chunked *d)
{
    d->state = d->left ? DATA : TRAILER;
    d->line = 0;
}

int mae__chunked_feed(mae__chunked *d, char *buf, size_t len, size_t *out_len, size_t *used)
{
    size_t out = 0, i = 0;
    int rc = MAE__CHUNKED_MORE;
    while (i < len && rc == MAE__CHUNKED_MORE) {
        char c = buf[i];
        switch (d->state) {
        case SIZE: {
            int h = hex(c);
            d->line++;
            if (h >= 0) {
                /* 15 hex digits: far beyond any body, and no overflow. */
                if (++d->digits > 15)
                    return MAE__CHUNKED_BAD;
                d->left = d->left * 16 + (uint64_t)h;
            } else if (d->digits == 0) {
                return MAE__CHUNKED_BAD;
            } else if (c == ';' || c == ' ' || c == '\t') {
                d->state = EXT;
            } else if (c == '\r') {
                d->state = SIZE_LF;
            } else if (c == '\n') {
                size_done(d);
            } else {
                return MAE__CHUNKED_BAD;
            }
            i++;
            break;
        }
        case EXT:
            if (c == '\r')
                d->state = SIZE_LF;
            else if (c == '\n')
                size_done(d);
            else if ((unsigned char)c < 0x20 && c != '\t')
                return MAE__CHUNKED_BAD;
            if (++d->line > MAE__CHUNKED_LINE_MAX)
                return MAE__CHUNKED_BAD;
            i++;
            break;
        case SIZE_LF:
            if (c != '\n')
                return MAE__CHUNKED_BAD;
            size_done(d);
            i++;
            break;
        case DATA: {
            size_t n = len - i;
            if ((uint64_t)n > d->left)
                n = (size_t)d->left;
            for (size_t k = 0; k < n; k++)
                buf[out + k] = buf[i + k];   /* overlapping, forward: safe */
            out += n;
            i += n;
            d->left -= n;
            if (d->left == 0)
                d->state = DATA_CR;
            break;
        }
        case DATA_CR:
            if (c == '\r')
                d->state = DATA_LF;
            else if (c != '\n')
                return MAE__CHUNKED_BAD;
            else {
                d->state = SIZE;
                d->digits = 0;
                d->line = 0;
            }
            i++;
            break;
        case DATA_LF:
            if (c != '\n')
                return MAE__CHUNKED_BAD;
            d->state = SIZE;
            d->digits = 0;
            d->line = 0;
            i++;
            break;
        case TRAILER:
            /* A trailer field line, or the empty line that ends the body. */
            if (c == '\r') {
                d->state = TRAILER_LF;
            } else if (c == '\n') {
                if (d->line == 0) {
                    d->state = DONE;
                    rc = MAE__CHUNKED_END;
                }
                d->line = 0;
            } else if (++d->line > MAE__CHUNKED_LINE_MAX) {
                return MAE__CHUNKED_BAD;
            }
            i++;
            break;
        case TRAILER_LF:
            if (c != '\n')
                return MAE__CHUNKED_BAD;
            if (d->line == 0) {
                d->state = DONE;
                rc = MAE__CHUNKED_END;
            }
            d->line = 0;
            d->state = rc == MAE__CHUNKED_END ? DONE : TRAILER;
            i++;
            break;
        default: /* DONE */
            rc = MAE__CHUNKED_END;
            break;
        }
    }
    if (d->state == DONE)
        rc = MAE__CHUNKED_END;
    *out_len = out;
    if (used)
        *used = i;
    return rc;
}
