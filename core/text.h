/* Internal: a growable byte buffer and the JSON text writers built on it
 * (strings with UTF-8 repair and code-point cuts, integers, epoch times,
 * validation and compaction of caller-supplied JSON objects, and the hex
 * and number pieces of the JSON grammar). Used by the envelope encoder, the
 * URL parser and the stores. Never installed. */
#ifndef MAE_TEXT_H
#define MAE_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A buffer that remembers running out of memory: writers become no-ops
 * after the first failed allocation and `oom` is set, so a sequence of
 * writes is checked once at the end. ptr is NUL-terminated when non-NULL
 * and not oom. Zero-initialise, or mae__buf_init. */
typedef struct mae__buf {
    char *ptr;
    size_t len, cap;
    bool oom;
} mae__buf;

void mae__buf_init(mae__buf *b);
bool mae__buf_reserve(mae__buf *b, size_t extra);
void mae__buf_put(mae__buf *b, const char *s, size_t n);
void mae__buf_puts(mae__buf *b, const char *s);
void mae__buf_putc(mae__buf *b, char c);
/* Hands the text over (caller frees) and resets b; NULL when oom. */
char *mae__buf_take(mae__buf *b, size_t *len);
void mae__buf_free(mae__buf *b);

/* The growth of every array of the library: returns arr, or a reallocation
 * of it, with room for more than n elements of elem bytes; *cap (the
 * elements arr has room for) becomes first when 0, else doubles. NULL, with
 * arr and *cap untouched (arr still the caller's), when the size in bytes
 * would overflow size_t or realloc fails. */
void *mae__grow(void *arr, size_t *cap, size_t n, size_t elem, size_t first);

/* Writes s as a JSON string with quotes: raw UTF-8, '/' unescaped, '"' '\\'
 * and control characters escaped, each byte that is not part of a valid
 * UTF-8 sequence (overlong, surrogate, > U+10FFFF, truncated) replaced by
 * U+FFFD. max_cp > 0 cuts after that many code points (a replaced byte is
 * one), never inside a sequence. NULL s writes null. */
void mae__json_str(mae__buf *b, const char *s, size_t max_cp);
void mae__json_i64(mae__buf *b, int64_t v);
/* Epoch seconds as a JSON number with exactly six decimals (mae__put_epoch). */
void mae__json_epoch(mae__buf *b, double t);

/* The one decimal writer and the one epoch formatter of the library (the
 * envelope, the event fields and the command's JSON all use them). They
 * write at p, which has room for the _MAX bytes, no NUL, and return the
 * end. Independent of the locale (no printf). */
#define MAE__I64_MAX 20   /* "-9223372036854775808" */
#define MAE__EPOCH_MAX 28 /* "-18446744073709551615.000000" */
char *mae__put_i64(char *p, int64_t v);
/* Epoch seconds with exactly six decimals, rounded to the microsecond.
 * Non-finite t is written as 0.000000; |t| >= 2^64 is clamped. */
char *mae__put_epoch(char *p, double t);
/* The same from whole seconds (>= 0) and microseconds (< 1000000): exact,
 * where a double near 1.7e9 resolves only about a quarter of a microsecond. */
char *mae__put_epoch_us(char *p, uint64_t sec, uint32_t us);

/* ---- the JSON grammar -------------------------------------------------------
 *
 * The library reads caller-supplied JSON in two places, with one grammar:
 * mae__json_compact_object (an event's data_json, copied as written) and
 * mae__json_canonical / mae__json_merge_patch in core/json.h (outbox
 * payloads and LLM labels, parsed and rewritten). Both accept exactly one
 * RFC 8259 object with:
 * - at most MAE_JSON_MAX_DEPTH levels of nesting, the object itself being
 *   level 1 (the parser of json.h recurses; 64 levels keep its stack small
 *   on any thread);
 * - no "\u0000" escape: every consumer of these texts (SQLite columns read
 *   as C strings, subscribers in C) works on NUL-terminated text, where a
 *   NUL would silently cut the value;
 * - no NaN or Infinity, no raw control characters in strings, nothing but
 *   whitespace after the object;
 * - invalid UTF-8 and lone surrogate escapes accepted and repaired to
 *   U+FFFD (never refused).
 * The pieces below are that grammar's shared parts. Each stops at the first
 * byte that does not fit, so none reads past a terminating NUL. */
#define MAE_JSON_MAX_DEPTH 64

/* Validates json as one JSON object of the grammar above and appends it
 * compacted: whitespace between tokens removed, "\/" written as "/", other
 * escapes kept as written, invalid UTF-8 and lone surrogates repaired to
 * U+FFFD, key order and duplicates kept. Returns 0, or -1 (b unchanged in
 * length) when json is not such an object. */
int mae__json_compact_object(mae__buf *b, const char *json);

/* The first byte at or after p that is not JSON whitespace. */
const unsigned char *mae__json_skip_ws(const unsigned char *p);
/* Reads the \u escape at p (p[0] == '\\', p[1] == 'u'), joined with the
 * \u escape of a low surrogate that follows a high one. Returns the bytes
 * read (6 or 12) with the code point in *cp, U+FFFD for a lone surrogate
 * (*lone set); or 0 when the escape is outside the grammar: a bad hex
 * digit, or \u0000. */
size_t mae__json_u_escape(const unsigned char *p, unsigned *cp, bool *lone);
/* The value of the hex digit c (either case), or -1. */
int mae__hex_digit(unsigned char c);
/* Reads the four hex digits of a \u escape at p into *v; false (*v
 * untouched) when one of them is not a hex digit. */
bool mae__hex4(const unsigned char *p, unsigned *v);
/* The end of the number -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? that
 * starts at p, or NULL when none does. */
const unsigned char *mae__json_number_end(const unsigned char *p);

/* Copies s into a new string repaired to valid UTF-8 and cut to max_cp
 * code points (0 = no cut). NULL when s is NULL or out of memory (*oom set). */
char *mae__utf8_clean(const char *s, size_t max_cp, bool *oom);

#endif
