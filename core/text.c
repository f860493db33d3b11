/* This module implements the growable buffer and the JSON text writers of
 * text.h: strings with UTF-8 repair and code-point cuts, integers, epoch
 * times, and the validating compactor for caller-supplied objects. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/text.h"

/* A typical event line fits in the first allocation, so building one costs
 * a single malloc (the line is then handed over to the queue as is). */
#define FIRST_CAP 256

/* ---- buffer ------------------------------------------------------------- */

void mae__buf_init(mae__buf *b)
{
    b->ptr = NULL;
    b->len = b->cap = 0;
    b->oom = false;
}

bool mae__buf_reserve(mae__buf *b, size_t extra)
{
    if (b->oom)
        return false;
    if (b->cap > b->len && extra < b->cap - b->len)
        return true; /* room for extra bytes and the NUL */
    if (extra > SIZE_MAX - b->len - 1) {
        b->oom = true;
        return false;
    }
    size_t need = b->len + extra + 1;
    size_t cap = b->cap ? b->cap : need > FIRST_CAP ? need : FIRST_CAP;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = realloc(b->ptr, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    p[b->len] = '\0';
    b->ptr = p;
    b->cap = cap;
    return true;
}

void mae__buf_put(mae__buf *b, const char *s, size_t n)
{
    if (n == 0 || !mae__buf_reserve(b, n))
        return;
    memcpy(b->ptr + b->len, s, n);
    b->len += n;
    b->ptr[b->len] = '\0';
}

void mae__buf_puts(mae__buf *b, const char *s)
{
    mae__buf_put(b, s, strlen(s));
}

void mae__buf_putc(mae__buf *b, char c)
{
    if (!mae__buf_reserve(b, 1))
        return;
    b->ptr[b->len++] = c;
    b->ptr[b->len] = '\0';
}

char *mae__buf_take(mae__buf *b, size_t *len)
{
    char *s = NULL;
    size_t n = 0;
    /* An untouched buffer still yields "", so NULL always means oom. */
    if (!b->oom && (b->ptr || mae__buf_reserve(b, 0))) {
        s = b->ptr;
        n = b->len;
        b->ptr = NULL;
    }
    mae__buf_free(b);
    if (len)
        *len = n;
    return s;
}

void mae__buf_free(mae__buf *b)
{
    free(b->ptr);
    mae__buf_init(b);
}

void *mae__grow(void *arr, size_t *cap, size_t n, size_t elem, size_t first)
{
    if (n < *cap)
        return arr;
    size_t ncap = *cap ? *cap : first ? first : 1;
    while (ncap <= n) {
        if (ncap > SIZE_MAX / 2)
            return NULL;
        ncap *= 2;
    }
    if (elem == 0 || ncap > SIZE_MAX / elem)
        return NULL;
    void *p = realloc(arr, ncap * elem);
    if (!p)
        return NULL;
    *cap = ncap;
    return p;
}

/* ---- UTF-8 -------------------------------------------------------------- */

/* Byte classes of the string scanners. PLAIN bytes are copied in runs; the
 * others stop the run. */
enum { PLAIN = 0, ESC = 1, HIGH = 2, END = 3 };

#define X4(c) c, c, c, c
#define X16(c) X4(c), X4(c), X4(c), X4(c)
#define HIGH_HALF X16(HIGH), X16(HIGH), X16(HIGH), X16(HIGH), \
                  X16(HIGH), X16(HIGH), X16(HIGH), X16(HIGH)

/* JSON output: control characters, '"' and '\\' are escaped. */
static const unsigned char json_class[256] = {
    END, ESC, ESC, ESC, X4(ESC), X4(ESC), X4(ESC),                     /* 0x00 */
    X16(ESC),                                                          /* 0x10 */
    PLAIN, PLAIN, ESC, PLAIN, X4(PLAIN), X4(PLAIN), X4(PLAIN),         /* 0x20 */
    X16(PLAIN), X16(PLAIN),                                            /* 0x30 */
    X4(PLAIN), X4(PLAIN), X4(PLAIN), ESC, PLAIN, PLAIN, PLAIN,         /* 0x50 */
    X16(PLAIN), X16(PLAIN),                                            /* 0x60 */
    HIGH_HALF,                                                         /* 0x80 */
};

/* Plain text output: only the UTF-8 structure matters. */
static const unsigned char raw_class[256] = {
    END, PLAIN, PLAIN, PLAIN, X4(PLAIN), X4(PLAIN), X4(PLAIN),
    X16(PLAIN), X16(PLAIN), X16(PLAIN), X16(PLAIN), X16(PLAIN), X16(PLAIN), X16(PLAIN),
    HIGH_HALF,
};

static const char replacement[3] = {'\xEF', '\xBF', '\xBD'}; /* U+FFFD */

static bool cont(unsigned char c)
{
    return (c & 0xC0) == 0x80;
}

/* The length of the valid UTF-8 sequence starting with the byte p[0] >= 0x80,
 * or 0 when that byte starts none. The second byte's range excludes overlong
 * forms, surrogates and code points above U+10FFFF. Stops at the first bad
 * byte, so it never reads past a terminating NUL. */
static size_t utf8_len(const unsigned char *p)
{
    unsigned char c = p[0], lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        return cont(p[1]) ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
        return p[1] >= lo && p[1] <= hi && cont(p[2]) ? 3 : 0;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
        return p[1] >= lo && p[1] <= hi && cont(p[2]) && cont(p[3]) ? 4 : 0;
    }
    return 0;
}

static void put_escape(mae__buf *b, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";
    char e[6] = {'\\', (char)c, '0', '0', '0', '0'};
    switch (c) {
    case '"':
    case '\\':
        break;
    case '\b': e[1] = 'b'; break;
    case '\f': e[1] = 'f'; break;
    case '\n': e[1] = 'n'; break;
    case '\r': e[1] = 'r'; break;
    case '\t': e[1] = 't'; break;
    default:
        e[1] = 'u';
        e[4] = hex[c >> 4];
        e[5] = hex[c & 15];
        mae__buf_put(b, e, 6);
        return;
    }
    mae__buf_put(b, e, 2);
}

/* Word-at-a-time scanning: eight bytes are tested with a few integer
 * operations, so long runs of plain ASCII cost far less than a byte each. */
#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

/* Nonzero when a byte of x is below 0x20, '"', '\\' or 0x80 and above. When
 * no byte has its high bit set, a subtraction borrows into a byte's high bit
 * only where that byte (or one below it) is under the subtrahend, so each
 * term is exact; when one has, the x term alone flags the word. */
static uint64_t special8(uint64_t x)
{
    uint64_t q = x ^ (ONES * '"'), s = x ^ (ONES * '\\');
    return (x | (x - ONES * 0x20) | (q - ONES) | (s - ONES)) & HIGHS;
}

/* How many of the n bytes at p are PLAIN in cls (n stops before the NUL). */
static size_t plain_len(const unsigned char *p, size_t n, const unsigned char *cls)
{
    size_t i = 0;
    uint64_t x;
    if (cls == json_class) {
        for (; n - i >= 8; i += 8) {
            memcpy(&x, p + i, 8);
            if (special8(x))
                break;
        }
    } else {
        for (; n - i >= 8; i += 8) {
            memcpy(&x, p + i, 8);
            if (x & HIGHS)
                break;
        }
    }
    while (i < n && cls[p[i]] == PLAIN)
        i++;
    return i;
}

/* Appends the n bytes at p (NUL-terminated there) repaired to valid UTF-8,
 * escaping what cls marks ESC, stopping after max_cp code points (0 = no
 * cut). Valid text is copied in runs. */
static void put_text(mae__buf *b, const unsigned char *p, size_t n, size_t max_cp,
                     const unsigned char *cls)
{
    const unsigned char *end = p + n, *run = p;
    size_t left = max_cp ? max_cp : SIZE_MAX;

    /* Enough for the usual case (nothing escaped), bounded for a cut. */
    mae__buf_reserve(b, (max_cp && n / 4 > max_cp ? 4 * max_cp : n) + 2);
    while (p < end && left) {
        size_t k = plain_len(p, (size_t)(end - p), cls);
        if (k > left)
            k = left; /* plain bytes are one code point each */
        p += k;
        left -= k;
        if (p == end || !left)
            break;
        left--;
        if (*p >= 0x80) {
            size_t m = utf8_len(p);
            if (m) {
                p += m;
                continue;
            }
            mae__buf_put(b, (const char *)run, (size_t)(p - run));
            mae__buf_put(b, replacement, 3);
        } else {
            mae__buf_put(b, (const char *)run, (size_t)(p - run));
            put_escape(b, *p);
        }
        run = ++p;
    }
    mae__buf_put(b, (const char *)run, (size_t)(p - run));
}

void mae__json_str(mae__buf *b, const char *s, size_t max_cp)
{
    if (!s) {
        mae__buf_put(b, "null", 4);
        return;
    }
    mae__buf_putc(b, '"');
    put_text(b, (const unsigned char *)s, strlen(s), max_cp, json_class);
    mae__buf_putc(b, '"');
}

char *mae__utf8_clean(const char *s, size_t max_cp, bool *oom)
{
    mae__buf b;
    if (oom)
        *oom = false;
    if (!s)
        return NULL;
    mae__buf_init(&b);
    put_text(&b, (const unsigned char *)s, strlen(s), max_cp, raw_class);
    char *out = mae__buf_take(&b, NULL);
    if (!out && oom)
        *oom = true;
    return out;
}

/* ---- numbers ------------------------------------------------------------ */

/* Writes u in decimal at p; returns the end. */
static char *put_u64(char *p, uint64_t u)
{
    char tmp[20];
    char *e = tmp + sizeof tmp, *s = e;
    do {
        *--s = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    memcpy(p, s, (size_t)(e - s));
    return p + (e - s);
}

char *mae__put_i64(char *p, int64_t v)
{
    if (v < 0)
        *p++ = '-';
    /* Negating in unsigned arithmetic makes INT64_MIN work. */
    return put_u64(p, v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v);
}

char *mae__put_epoch_us(char *p, uint64_t sec, uint32_t us)
{
    p = put_u64(p, sec);
    *p = '.';
    for (int i = 6; i >= 1; i--) {
        p[i] = (char)('0' + us % 10);
        us /= 10;
    }
    return p + 7;
}

char *mae__put_epoch(char *p, double t)
{
    bool neg = t < 0;
    double a = neg ? -t : t;
    uint64_t ip;
    uint32_t us;

    if (!isfinite(t)) {
        neg = false;
        a = 0;
    }
    if (a >= 18446744073709551616.0) {
        /* Beyond any meaningful time; clamped instead of formatting a huge
         * double exactly. */
        ip = UINT64_MAX;
        us = 0;
    } else {
        ip = (uint64_t)a;
        /* Exact: the fraction is the low bits of a's mantissa. */
        double frac = a - (double)ip;
        us = (uint32_t)(frac * 1e6 + 0.5);
        if (us >= 1000000) {
            us -= 1000000;
            ip++;
        }
    }
    /* No "-0.000000": a negative time that rounds to zero is zero. */
    if (neg && (ip != 0 || us != 0))
        *p++ = '-';
    return mae__put_epoch_us(p, ip, us);
}

void mae__json_i64(mae__buf *b, int64_t v)
{
    char tmp[MAE__I64_MAX];
    mae__buf_put(b, tmp, (size_t)(mae__put_i64(tmp, v) - tmp));
}

void mae__json_epoch(mae__buf *b, double t)
{
    char tmp[MAE__EPOCH_MAX];
    mae__buf_put(b, tmp, (size_t)(mae__put_epoch(tmp, t) - tmp));
}

/* ---- validation and compaction of a JSON object --------------------------- */

const unsigned char *mae__json_skip_ws(const unsigned char *p)
{
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')
        p++;
    return p;
}

int mae__hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20; /* folds 'A'-'F' onto 'a'-'f' and no other byte onto them */
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

bool mae__hex4(const unsigned char *p, unsigned *v)
{
    unsigned x = 0;
    for (int i = 0; i < 4; i++) {
        int d = mae__hex_digit(p[i]);
        if (d < 0)
            return false;
        x = x << 4 | (unsigned)d;
    }
    *v = x;
    return true;
}

size_t mae__json_u_escape(const unsigned char *p, unsigned *cp, bool *lone)
{
    unsigned v, w;
    *lone = false;
    if (!mae__hex4(p + 2, &v) || v == 0)
        return 0;
    if (v < 0xD800 || v > 0xDFFF) {
        *cp = v;
        return 6;
    }
    if (v <= 0xDBFF && p[6] == '\\' && p[7] == 'u' && mae__hex4(p + 8, &w) && w >= 0xDC00 &&
        w <= 0xDFFF) {
        *cp = 0x10000 + ((v - 0xD800) << 10) + (w - 0xDC00);
        return 12;
    }
    *cp = 0xFFFD;
    *lone = true;
    return 6;
}

/* Copies the string starting at the quote p; returns the byte after its
 * closing quote, or NULL when it is not a valid JSON string. Escapes are kept
 * as written except "\/" (written "/") and a \u escape of a lone surrogate,
 * which no strict parser accepts as text: it becomes U+FFFD like a bad byte. */
static const unsigned char *copy_string(mae__buf *b, const unsigned char *p,
                                        const unsigned char *end)
{
    const unsigned char *run = p++;
    unsigned cp;
    bool lone;
    size_t n;

    for (;;) {
        p += plain_len(p, (size_t)(end - p), json_class);
        unsigned char c = *p;
        if (c == '"') {
            p++;
            mae__buf_put(b, (const char *)run, (size_t)(p - run));
            return p;
        }
        if (c >= 0x80) {
            size_t n = utf8_len(p);
            if (n) {
                p += n;
                continue;
            }
            mae__buf_put(b, (const char *)run, (size_t)(p - run));
            mae__buf_put(b, replacement, 3);
            run = ++p;
            continue;
        }
        if (c != '\\')
            return NULL; /* a raw control character, or the input ended */
        switch (p[1]) {
        case '"': case '\\': case 'b': case 'f': case 'n': case 'r': case 't':
            p += 2;
            continue;
        case '/':
            mae__buf_put(b, (const char *)run, (size_t)(p - run));
            mae__buf_putc(b, '/');
            run = p += 2;
            continue;
        case 'u':
            if (!(n = mae__json_u_escape(p, &cp, &lone)))
                return NULL;
            if (!lone) {
                p += n;
                continue;
            }
            mae__buf_put(b, (const char *)run, (size_t)(p - run));
            mae__buf_put(b, replacement, 3);
            run = p += n;
            continue;
        default:
            return NULL;
        }
    }
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

const unsigned char *mae__json_number_end(const unsigned char *p)
{
    if (*p == '-')
        p++;
    if (*p == '0')
        p++;
    else if (is_digit(*p))
        while (is_digit(*p))
            p++;
    else
        return NULL;
    if (*p == '.') {
        if (!is_digit(*++p))
            return NULL;
        while (is_digit(*p))
            p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!is_digit(*p))
            return NULL;
        while (is_digit(*p))
            p++;
    }
    return p;
}

/* A number copied as written. */
static const unsigned char *copy_number(mae__buf *b, const unsigned char *p)
{
    const unsigned char *end = mae__json_number_end(p);
    if (end)
        mae__buf_put(b, (const char *)p, (size_t)(end - p));
    return end;
}

static const unsigned char *copy_word(mae__buf *b, const unsigned char *p, const char *word,
                                      size_t n)
{
    /* strncmp stops at the input's NUL, so a short input is never overread. */
    if (strncmp((const char *)p, word, n) != 0)
        return NULL;
    mae__buf_put(b, word, n);
    return p + n;
}

/* A scalar value (string, literal or number) copied; NULL when p starts
 * none. */
static const unsigned char *copy_scalar(mae__buf *b, const unsigned char *p,
                                        const unsigned char *end)
{
    switch (*p) {
    case '"':
        return copy_string(b, p, end);
    case 't':
        return copy_word(b, p, "true", 4);
    case 'f':
        return copy_word(b, p, "false", 5);
    case 'n':
        return copy_word(b, p, "null", 4);
    default:
        return copy_number(b, p);
    }
}

/* What the parser expects next. */
enum { VALUE, OBJ_FIRST, OBJ_KEY, ARR_FIRST, AFTER };

/* The state of the compactor's walk: the nesting lives here, one byte per
 * open container ('}' or ']' to close it), not on the C stack, so deep
 * input cannot overflow it. */
typedef struct walk {
    char closer[MAE_JSON_MAX_DEPTH];
    size_t depth;
    int want;
} walk;

/* One step of the walk at p (past whitespace): copies the token there and
 * returns the byte after it, or NULL when it does not fit the grammar. */
static const unsigned char *step(walk *w, mae__buf *b, const unsigned char *p,
                                 const unsigned char *end)
{
    unsigned char c = *p;
    switch (w->want) {
    case OBJ_FIRST:
    case OBJ_KEY:
        if (c == '}' && w->want == OBJ_FIRST)
            break; /* closed below */
        if (c != '"' || !(p = copy_string(b, p, end)))
            return NULL;
        p = mae__json_skip_ws(p);
        if (*p++ != ':')
            return NULL;
        mae__buf_putc(b, ':');
        w->want = VALUE;
        return p;
    case ARR_FIRST:
    case VALUE:
        if (c == ']' && w->want == ARR_FIRST)
            break;
        if (c == '{' || c == '[') {
            if (w->depth == MAE_JSON_MAX_DEPTH)
                return NULL;
            w->closer[w->depth++] = c == '{' ? '}' : ']';
            mae__buf_putc(b, (char)c);
            w->want = c == '{' ? OBJ_FIRST : ARR_FIRST;
            return p + 1;
        }
        w->want = AFTER;
        return copy_scalar(b, p, end);
    default: /* AFTER, inside a container */
        if (c == ',') {
            mae__buf_putc(b, ',');
            w->want = w->closer[w->depth - 1] == '}' ? OBJ_KEY : VALUE;
            return p + 1;
        }
        if (c != (unsigned char)w->closer[w->depth - 1])
            return NULL;
        break;
    }
    /* c closes the innermost container. */
    mae__buf_putc(b, (char)c);
    w->depth--;
    w->want = AFTER;
    return p + 1;
}

int mae__json_compact_object(mae__buf *b, const char *json)
{
    walk w = {.depth = 0, .want = VALUE};
    size_t start = b->len;

    if (!json)
        return -1;
    const unsigned char *p = mae__json_skip_ws((const unsigned char *)json);
    if (*p != '{')
        return -1;
    /* Compaction never grows the text except where a bad byte is repaired,
     * so one reservation usually covers the whole copy. */
    const unsigned char *end = p + strlen((const char *)p);
    mae__buf_reserve(b, (size_t)(end - p));

    for (;;) {
        p = mae__json_skip_ws(p);
        if (w.want == AFTER && w.depth == 0) {
            if (*p == '\0')
                return 0;
            break; /* something after the object */
        }
        if (!(p = step(&w, b, p, end)))
            break;
    }
    if (b->ptr && b->len > start) {
        b->len = start;
        b->ptr[start] = '\0';
    }
    return -1;
}
