/* libFuzzer target for the relay's request parser and router: any input
 * gives a status without reading past it; a parsed request describes
 * bytes inside the input that obey the grammar (a token method, an
 * origin-form target, no control byte in a kept header), the status does
 * not change when more bytes follow a complete request, and routing it
 * with and without credentials never lets a wrong token in. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "relay/request.h"

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        if (!(cond))                                                                        \
            __builtin_trap();                                                               \
    } while (0)

static bool inside(mae__span s, const char *buf, size_t len)
{
    return !s.p || (s.p >= buf && s.p + s.n <= buf + len);
}

static bool no_controls(mae__span s)
{
    for (size_t i = 0; s.p && i < s.n; i++)
        if (((unsigned char)s.p[i] < 0x20 && s.p[i] != '\t') || s.p[i] == 0x7F)
            return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy, so ASan sees a read one byte too far. */
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    mae__request r;
    mae__req_status st = mae__request_parse(buf, size, &r);
    CHECK(st >= MAE__REQ_INCOMPLETE && st <= MAE__REQ_TOO_LARGE);
    if (size < MAE__REQ_MAX_BYTES)
        CHECK(st != MAE__REQ_TOO_LARGE || memchr(buf, '\n', size));
    if (st == MAE__REQ_DONE) {
        CHECK(r.length > 0 && r.length <= size && r.length <= MAE__REQ_MAX_BYTES);
        CHECK(buf[r.length - 1] == '\n');
        CHECK(inside(r.method, buf, size) && inside(r.target, buf, size) &&
              inside(r.path, buf, size) && inside(r.query, buf, size));
        CHECK(r.method.n > 0 && r.path.n > 0 && r.path.p[0] == '/');
        CHECK(r.minor == 0 || r.minor == 1);
        CHECK(memchr(r.path.p, '?', r.path.n) == NULL);
        CHECK(!r.has_body || !r.keep_alive);
        mae__span kept[] = {r.authorization, r.webhook_token, r.local_token, r.last_event_id,
                            r.content_type,  r.publisher,     r.batch_start};
        for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++)
            CHECK(inside(kept[i], buf, size) && no_controls(kept[i]));
        /* A prefix of the complete request is incomplete, the request
         * itself parses to the same length. */
        mae__request again;
        CHECK(mae__request_parse(buf, r.length, &again) == MAE__REQ_DONE);
        CHECK(again.length == r.length);
        CHECK(mae__request_parse(buf, r.length - 1, &again) != MAE__REQ_DONE);

        mae__credentials none = {NULL, NULL};
        mae__credentials secret = {"fuzz-secret-\x01", "fuzz-local-\x02"};
        mae__route open = mae__request_route(&r, "/api/events/stream", &none);
        mae__route closed = mae__request_route(&r, "/api/events/stream", &secret);
        CHECK(open != MAE__ROUTE_UNAUTHORIZED);
        /* The secrets hold a control byte no header value can carry, so
         * nothing the fuzzer writes can match them. */
        CHECK(closed != MAE__ROUTE_STREAM && closed != MAE__ROUTE_METRICS &&
              closed != MAE__ROUTE_PUBLISH);
        /* Both framings at once never parse (request smuggling). */
        CHECK(!(r.chunked && r.has_length));
        if (open == MAE__ROUTE_STREAM || open == MAE__ROUTE_METRICS || open == MAE__ROUTE_PUBLISH)
            CHECK(closed == MAE__ROUTE_UNAUTHORIZED);
        else
            CHECK(closed == open);
    }
    free(buf);
    return 0;
}
