/* libFuzzer target for the JSON text writers: the string writer with and
 * without a code-point cut, mae__utf8_clean, and the object compactor,
 * checked against properties written independently of their code, and
 * against the canonical parser of core/json.h: one grammar, so both accept
 * or both refuse every input. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <mailagent/common.h>

#include "core/json.h"
#include "core/text.h"

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        if (!(cond))                                                                        \
            __builtin_trap();                                                               \
    } while (0)

/* Strict UTF-8 by decoding: shortest form, no surrogates, at most U+10FFFF. */
static bool valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i], need, cp;
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xE0) == 0xC0) {
            need = 1;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            need = 2;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            need = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i <= need)
            return false;
        for (unsigned k = 1; k <= need; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        static const unsigned min[4] = {0, 0x80, 0x800, 0x10000};
        if (cp < min[need] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += need + 1;
    }
    return true;
}

/* Code points in the body of a JSON string as json_str writes it: an escape
 * is one, a UTF-8 sequence is one. */
static size_t json_cps(const unsigned char *s, size_t n)
{
    size_t cps = 0;
    for (size_t i = 0; i < n; cps++) {
        if (s[i] == '\\')
            i += s[i + 1] == 'u' ? 6 : 2;
        else if (s[i] < 0x80)
            i++;
        else if (s[i] < 0xE0)
            i += 2;
        else if (s[i] < 0xF0)
            i += 3;
        else
            i += 4;
    }
    return cps;
}

static void check_string(const char *s, size_t slen)
{
    mae__buf full, cut, obj, again;
    mae__buf_init(&full);
    mae__buf_init(&cut);
    mae__buf_init(&obj);
    mae__buf_init(&again);

    mae__json_str(&full, s, 0);
    CHECK(!full.oom && full.len >= 2);
    CHECK(full.ptr[0] == '"' && full.ptr[full.len - 1] == '"');
    CHECK(valid_utf8((const unsigned char *)full.ptr, full.len));
    for (size_t i = 0; i < full.len; i++)
        CHECK((unsigned char)full.ptr[i] >= 0x20);
    /* Every input byte is kept, escaped, or replaced by one U+FFFD. */
    CHECK(json_cps((const unsigned char *)full.ptr + 1, full.len - 2) <= slen);

    /* Clean text that needs no escape comes out as it went in. */
    bool plain = valid_utf8((const unsigned char *)s, slen);
    for (size_t i = 0; i < slen && plain; i++)
        plain = (unsigned char)s[i] >= 0x20 && s[i] != '"' && s[i] != '\\';
    if (plain)
        CHECK(full.len == slen + 2 && memcmp(full.ptr + 1, s, slen) == 0);

    /* The output is a JSON string the compactor accepts and keeps as is. */
    mae__buf_puts(&obj, "{\"k\":");
    mae__buf_put(&obj, full.ptr, full.len);
    mae__buf_putc(&obj, '}');
    CHECK(mae__json_compact_object(&again, obj.ptr) == 0);
    CHECK(again.len == obj.len && memcmp(again.ptr, obj.ptr, obj.len) == 0);

    /* A cut output is a prefix of the full one with at most max_cp code
     * points, and all of them when the text is that short. */
    size_t max_cp = 1 + slen % 250;
    mae__json_str(&cut, s, max_cp);
    CHECK(!cut.oom && cut.len >= 2 && cut.len <= full.len);
    CHECK(memcmp(cut.ptr, full.ptr, cut.len - 1) == 0 && cut.ptr[cut.len - 1] == '"');
    size_t cps = json_cps((const unsigned char *)cut.ptr + 1, cut.len - 2);
    size_t all = json_cps((const unsigned char *)full.ptr + 1, full.len - 2);
    CHECK(cps == (all < max_cp ? all : max_cp));
    CHECK(valid_utf8((const unsigned char *)cut.ptr, cut.len));

    mae__buf_free(&full);
    mae__buf_free(&cut);
    mae__buf_free(&obj);
    mae__buf_free(&again);

    bool oom = true;
    char *clean = mae__utf8_clean(s, 0, &oom);
    CHECK(clean && !oom);
    size_t clen = strlen(clean);
    CHECK(valid_utf8((const unsigned char *)clean, clen));
    if (valid_utf8((const unsigned char *)s, slen))
        CHECK(clen == slen && memcmp(clean, s, slen) == 0);
    free(clean);
}

static void check_compact(const char *s, size_t slen)
{
    mae__buf b, again;
    mae__buf_init(&b);
    mae__buf_init(&again);
    mae__buf_puts(&b, "<");

    int compact = mae__json_compact_object(&b, s);
    char *canon = NULL;
    int parsed = mae__json_canonical(s, 0, &canon);
    free(canon);
    if (parsed != MAE_ENOMEM)
        CHECK((compact == 0) == (parsed == MAE_OK));

    if (compact != 0) {
        CHECK(b.len == 1 && strcmp(b.ptr, "<") == 0);
    } else {
        const char *out = b.ptr + 1;
        size_t n = b.len - 1;
        CHECK(!b.oom && n >= 2 && out[0] == '{' && out[n - 1] == '}');
        CHECK(n <= 3 * slen);
        CHECK(strlen(out) == n);
        CHECK(valid_utf8((const unsigned char *)out, n));
        /* Compaction is idempotent. */
        CHECK(mae__json_compact_object(&again, out) == 0);
        CHECK(again.len == n && memcmp(again.ptr, out, n) == 0);
    }
    mae__buf_free(&b);
    mae__buf_free(&again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    size_t slen = strlen(s); /* the writers take C strings: stop at a NUL */
    check_string(s, slen);
    check_compact(s, slen);
    free(s);
    return 0;
}
