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

/* Writes s as a JSON string with quotes: raw UTF-8, '/' unescaped, '"' '\\'
 * and control characters escaped, each byte that is not part of a valid
 * UTF-8 sequence (overlong, surrogate, > U+10FFFF, truncated) replaced by
 * U+FFFD. max_cp > 0 cuts after that many code points (a replaced byte is
 * one), never inside a sequence. NULL s writes null. */
void mae__json_str(mae__buf *b, const char *s, size_t max_cp);
void mae__json_i64(mae__buf *b, int64_t v);
/* Epoch seconds as a JSON number with exactly six decimals, independent of
 * the locale (no printf %f). Non-finite values are written as 0. */
void mae__json_epoch(mae__buf *b, double t);

/* Validates json as exactly one JSON object (nesting at most
 * MAE_JSON_MAX_DEPTH) and appends it compacted: whitespace between tokens
 * removed, "\/" written as "/", invalid UTF-8 inside strings repaired to
 * U+FFFD. Returns 0, or -1 (b unchanged in length) when json is not an
 * object or not valid JSON. */
#define MAE_JSON_MAX_DEPTH 256
int mae__json_compact_object(mae__buf *b, const char *json);

/* Pieces of the JSON grammar, shared with the outbox's payload parser and
 * the URL parser. Each stops at the first byte that does not fit, so none
 * reads past a terminating NUL. */
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
