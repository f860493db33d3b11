/* libFuzzer target for the stream id parser (stream/id.h), fed what a
 * client may put in Last-Event-ID: any input is either rejected with a
 * known code, or is an id whose canonical text parses back to the same id,
 * is no longer than the input and orders consistently with its neighbours. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Compiled into the target so libFuzzer's coverage sees the parser; it
 * needs nothing else from the relay. */
#include "stream/id.c"

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        if (!(cond))                                                                        \
            __builtin_trap();                                                               \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mae__stream_id id = {7, 7};
    int rc = mae__stream_id_parse((const char *)data, size, &id);
    if (rc != MAE__STREAM_ID_OK) {
        CHECK(rc >= MAE__STREAM_ID_OVERFLOW && rc < 0);
        CHECK(id.ms == 7 && id.seq == 7);
        CHECK(size == 0 || rc != MAE__STREAM_ID_EMPTY);
        CHECK(size <= MAE__STREAM_ID_MAX_LEN || rc == MAE__STREAM_ID_TOO_LONG);
        return 0;
    }
    CHECK(size > 0 && size <= MAE__STREAM_ID_MAX_LEN);
    for (size_t i = 0; i < size; i++)
        CHECK((data[i] >= '0' && data[i] <= '9') || data[i] == '-');

    char text[MAE__STREAM_ID_BUFSIZE];
    size_t n = mae__stream_id_format(&id, text);
    CHECK(n == strlen(text) && n <= size && n < MAE__STREAM_ID_BUFSIZE);
    mae__stream_id back;
    CHECK(mae__stream_id_parse(text, n, &back) == MAE__STREAM_ID_OK);
    CHECK(mae__stream_id_cmp(&back, &id) == 0);
    /* Without leading zeros the input is the canonical text itself. */
    const uint8_t *dash = memchr(data, '-', size);
    bool padded = (data[0] == '0' && dash - data > 1) || (dash[1] == '0' && data + size - dash > 2);
    CHECK(padded ? n < size : n == size && memcmp(text, data, n) == 0);

    mae__stream_id next = id;
    if (next.seq < UINT64_MAX) {
        next.seq++;
        CHECK(mae__stream_id_cmp(&id, &next) < 0 && mae__stream_id_cmp(&next, &id) > 0);
    } else if (next.ms < UINT64_MAX) {
        next.ms++;
        next.seq = 0;
        CHECK(mae__stream_id_cmp(&id, &next) < 0);
    }
    CHECK(mae__stream_id_is_zero(&id) == (id.ms == 0 && id.seq == 0));
    return 0;
}
