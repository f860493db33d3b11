/* Internal: Redis Stream entry ids ("<ms>-<seq>") as the relay and
 * `mailagent events tail` receive them from a client (the Last-Event-ID
 * header, ?last_event_id=, --since): a strict parser that treats its input
 * as hostile, an order, and the canonical text. Pure functions, no
 * allocation, safe from any thread. Never installed. */
#ifndef MAE_STREAM_ID_H_
#define MAE_STREAM_ID_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* An entry id: milliseconds and a sequence number, both 64-bit unsigned as
 * in Redis. {0, 0} is the id before every entry ("from the beginning"). */
typedef struct mae__stream_id {
    uint64_t ms;
    uint64_t seq;
} mae__stream_id;

/* The longest id text a client may send, in bytes. The canonical text is
 * at most 41 bytes; the margin admits leading zeros, nothing else. */
#define MAE__STREAM_ID_MAX_LEN 64
/* A buffer for the canonical text: two 20-digit numbers, '-', NUL. */
#define MAE__STREAM_ID_BUFSIZE 42

/* Why a text is not an id, for log lines. */
enum {
    MAE__STREAM_ID_OK = 0,
    MAE__STREAM_ID_EMPTY = -1,     /* no bytes (a missing header is not an error) */
    MAE__STREAM_ID_TOO_LONG = -2,  /* over MAE__STREAM_ID_MAX_LEN bytes */
    MAE__STREAM_ID_BAD_CHAR = -3,  /* a byte other than digits and one '-' (NUL, CR, LF, space, '+') */
    MAE__STREAM_ID_BAD_FORM = -4,  /* not "<digits>-<digits>" */
    MAE__STREAM_ID_OVERFLOW = -5,  /* a part over 18446744073709551615 */
};

/* Parses exactly len bytes of s (not NUL-terminated; an embedded NUL is a
 * bad character) as "<ms>-<seq>", both parts plain decimal digits. Returns
 * MAE__STREAM_ID_OK and writes *out, or one of the negative codes above and
 * leaves *out alone. s may be NULL when len is 0. This function can't fail
 * otherwise. */
int mae__stream_id_parse(const char *s, size_t len, mae__stream_id *out);

/* The sentence for a code of mae__stream_id_parse (static). */
const char *mae__stream_id_strerror(int code);

/* -1, 0 or 1 as a is before, equal to or after b in the stream. */
int mae__stream_id_cmp(const mae__stream_id *a, const mae__stream_id *b);

/* True for {0, 0}. */
bool mae__stream_id_is_zero(const mae__stream_id *id);

/* Writes the canonical text ("1716096000123-0") and its NUL into buf and
 * returns its length (3 to 41). This function can't fail. */
size_t mae__stream_id_format(const mae__stream_id *id, char buf[MAE__STREAM_ID_BUFSIZE]);

#endif
