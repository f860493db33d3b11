/* This module implements the stream id parser, order and text of
 * stream/id.h. */
#include "stream/id.h"

/* Parses the digits s[0..n) into *out; false on overflow. n > 0 and every
 * byte is a digit (checked by the caller). */
static bool parse_u64(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

int mae__stream_id_parse(const char *s, size_t len, mae__stream_id *out)
{
    size_t dash = len;
    mae__stream_id id;

    if (len == 0)
        return MAE__STREAM_ID_EMPTY;
    if (len > MAE__STREAM_ID_MAX_LEN)
        return MAE__STREAM_ID_TOO_LONG;
    /* One pass over every byte first: a header value with CR, LF or NUL is
     * an attack or a bug, and is named as such whatever else is wrong. */
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '-') {
            if (dash != len)
                return MAE__STREAM_ID_BAD_FORM;
            dash = i;
        } else if (c < '0' || c > '9') {
            return MAE__STREAM_ID_BAD_CHAR;
        }
    }
    if (dash == len || dash == 0 || dash == len - 1)
        return MAE__STREAM_ID_BAD_FORM;
    if (!parse_u64(s, dash, &id.ms) || !parse_u64(s + dash + 1, len - dash - 1, &id.seq))
        return MAE__STREAM_ID_OVERFLOW;
    *out = id;
    return MAE__STREAM_ID_OK;
}

const char *mae__stream_id_strerror(int code)
{
    switch (code) {
    case MAE__STREAM_ID_OK:
        return "valid stream id";
    case MAE__STREAM_ID_EMPTY:
        return "empty stream id";
    case MAE__STREAM_ID_TOO_LONG:
        return "stream id longer than 64 bytes";
    case MAE__STREAM_ID_BAD_CHAR:
        return "stream id with a character other than digits and '-'";
    case MAE__STREAM_ID_BAD_FORM:
        return "stream id not of the form <ms>-<seq>";
    case MAE__STREAM_ID_OVERFLOW:
        return "stream id part over 18446744073709551615";
    default:
        return "unknown stream id error";
    }
}

int mae__stream_id_cmp(const mae__stream_id *a, const mae__stream_id *b)
{
    if (a->ms != b->ms)
        return a->ms < b->ms ? -1 : 1;
    if (a->seq != b->seq)
        return a->seq < b->seq ? -1 : 1;
    return 0;
}

bool mae__stream_id_is_zero(const mae__stream_id *id)
{
    return id->ms == 0 && id->seq == 0;
}

/* Writes v in decimal at p and returns the number of digits. */
static size_t put_u64(char *p, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        p[i] = tmp[n - 1 - i];
    return n;
}

size_t mae__stream_id_format(const mae__stream_id *id, char buf[MAE__STREAM_ID_BUFSIZE])
{
    size_t n = put_u64(buf, id->ms);
    buf[n++] = '-';
    n += put_u64(buf + n, id->seq);
    buf[n] = '\0';
    return n;
}
