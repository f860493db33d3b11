/* libFuzzer target for the command's SSE client parsers (stream/sse_parse.h
 * and stream/chunked.h), fed what a relay, or anything posing as one, may
 * send: the events of the input fed whole are the events of the input fed
 * in two pieces split anywhere, every event stays within the limits, and
 * the chunked decoder never writes more than it read nor reads past the
 * input. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Compiled into the target so libFuzzer's coverage sees the parsers. */
#include "stream/chunked.c"
#include "stream/sse_parse.c"

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        if (!(cond))                                                                        \
            __builtin_trap();                                                               \
    } while (0)

#define MAX_LINE 64

/* A running digest of the events seen, in order. */
typedef struct digest {
    uint64_t h;
    size_t n;
} digest;

static void mix(digest *d, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        d->h = (d->h ^ b[i]) * 1099511628211ULL;
}

static bool on_event(void *user, const mae__sse_event *ev)
{
    digest *d = user;
    CHECK(ev->data_len <= MAX_LINE);
    CHECK(strlen(ev->type) <= MAE__SSE_TYPE_MAX);
    CHECK(strlen(ev->id) <= MAE__SSE_ID_MAX);
    CHECK(!ev->oversize || ev->data_len == 0);
    mix(d, ev->type, strlen(ev->type) + 1);
    mix(d, ev->data, ev->data_len);
    mix(d, ev->id, strlen(ev->id) + 1);
    unsigned char flags = (unsigned char)(ev->has_id | ev->oversize << 1);
    mix(d, &flags, 1);
    d->n++;
    return true;
}

static digest run_sse(const uint8_t *data, size_t size, size_t split)
{
    mae__sse_parser p;
    digest d = {14695981039346656037ULL, 0};
    if (mae__sse_init(&p, MAX_LINE) != MAE_OK)
        return d;
    CHECK(mae__sse_feed(&p, (const char *)data, split, on_event, &d) == split);
    CHECK(mae__sse_feed(&p, (const char *)data + split, size - split, on_event, &d) ==
          size - split);
    mix(&d, &p.retry_ms, sizeof p.retry_ms);
    mae__sse_free(&p);
    return d;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t split = size ? data[0] % (size + 1) : 0;
    digest a = run_sse(data, size, size);
    digest b = run_sse(data, size, split);
    CHECK(a.h == b.h && a.n == b.n);

    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    mae__chunked d;
    size_t out, used;
    mae__chunked_init(&d);
    int rc = mae__chunked_feed(&d, buf, size, &out, &used);
    CHECK(rc == MAE__CHUNKED_MORE || rc == MAE__CHUNKED_END || rc == MAE__CHUNKED_BAD);
    if (rc != MAE__CHUNKED_BAD) {
        CHECK(used <= size && out <= used);
        CHECK(rc == MAE__CHUNKED_END || used == size);
    }
    free(buf);
    return 0;
}
