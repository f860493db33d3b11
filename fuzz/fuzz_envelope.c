/* libFuzzer target for the publish route's parser (core/envelope.c): any
 * body either is refused with 400/413 and a reason and no lines, or gives
 * count lines, each one JSON object of the grammar no longer than the bound,
 * which read again as NDJSON give back exactly themselves (the canonical
 * form is a fixed point: ts, now written, is kept). The first input byte
 * picks the content type and a small bound, the rest is the body. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/envelope.h"
#include "core/json.h"

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        if (!(cond))                                                                        \
            __builtin_trap();                                                               \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *ct = (data[0] & 1) ? "application/x-ndjson" : "application/json";
    size_t max = (data[0] & 2) ? 64 + data[0] : 0;
    mae__envelope_result r;
    int status = mae__envelope_parse((const char *)data + 1, size - 1, ct, max, &r);
    CHECK(status == r.status);
    if (status != 200) {
        CHECK(status == 400 || status == 413 || status == 503);
        CHECK(r.lines == NULL && r.count == 0 && r.reason[0] != '\0');
        mae__envelope_result_free(&r);
        return 0;
    }
    CHECK(r.lines && r.count > 0 && r.len == strlen(r.lines) && r.lines[r.len - 1] == '\n');
    size_t lines = 0;
    for (char *p = r.lines; *p;) {
        char *nl = strchr(p, '\n');
        CHECK(nl != NULL);
        CHECK((size_t)(nl - p) <= (max ? max : MAE_ENVELOPE_MAX_EVENT_BYTES));
        *nl = '\0';
        char *canon = NULL;
        int rc = mae__json_canonical(p, 0, &canon);
        CHECK(rc == 0 || canon == NULL);
        free(canon);
        CHECK(rc == 0 || rc == -2);
        *nl = '\n';
        lines++;
        p = nl + 1;
    }
    CHECK(lines == r.count);
    mae__envelope_result again;
    int st2 = mae__envelope_parse(r.lines, r.len, "application/x-ndjson", max, &again);
    if (st2 != 503) {
        CHECK(st2 == 200 && again.count == r.count && again.len == r.len &&
              memcmp(again.lines, r.lines, r.len) == 0);
    }
    mae__envelope_result_free(&again);
    mae__envelope_result_free(&r);
    return 0;
}
