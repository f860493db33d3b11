/* Internal: the relay's dashboard page (GET /), one self-contained HTML
 * document with its script and style inline. Never installed. */
#ifndef MAE_RELAY_PAGE_H
#define MAE_RELAY_PAGE_H

#include <stdbool.h>

#include "core/text.h"

/* Appends the page, reading the stream at stream_path: with fetch and a
 * token the user types (or passes as #token=... in the address) when
 * token_needed, with EventSource otherwise. */
void mae__page_render(mae__buf *b, const char *stream_path, bool token_needed);

#endif
