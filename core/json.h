/* Internal: canonical JSON objects for stored payloads: parse, RFC 7396
 * merge patch, and compact serialisation with keys sorted at every level
 * (SQLite's json_patch keeps insertion order). Used by the outbox and by the
 * LLM store's labels. Never installed. */
#ifndef MAE_MERGE_H
#define MAE_MERGE_H

#include <stddef.h>

#include "core/text.h"

/* Parses json, which must be one JSON object of the grammar in core/text.h
 * (at most MAE_JSON_MAX_DEPTH levels, no \u0000), and writes it compact
 * with keys sorted (bytewise) at every level, raw UTF-8, '/' unescaped.
 * String values longer than max_string_cp code points are cut there
 * (0 = no cut); keys are never cut. *out is malloc'd (caller frees).
 * Numbers are kept exactly as written (no locale, no rounding). Invalid
 * UTF-8 is repaired, not rejected. Returns MAE_OK, MAE_EINVAL (outside
 * the grammar) or MAE_ENOMEM. The parser is our own rather than
 * json-c's, which does not fail cleanly when an allocation fails. */
int mae__json_canonical(const char *json, size_t max_string_cp, char **out);

/* RFC 7396: applies patch (an object) to target (an object): members of the
 * patch replace those of the target, recursively for objects, and a null in
 * the patch removes the key. *out is canonical as above. Same returns. */
int mae__json_merge_patch(const char *target, const char *patch, char **out);

#endif
