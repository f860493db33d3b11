/* This module implements canonical JSON payloads (core/json.h): a strict
 * parser into a small tree whose objects are kept sorted, the RFC 7396
 * merge patch on that tree, and a compact serialisation.
 *
 * Why not json-c's tokener: under allocation failure json-c 0.16 dereferences
 * a NULL key (crash), leaks table keys, and turns values it failed to
 * allocate into null, so a payload could be stored altered. Out of memory
 * must be a clean MAE_ENOMEM here (an OOM sweep drives every allocation of
 * an enqueue), so parsing is done by this file; json-c stays the independent
 * judge of validity in the fuzzer. Owning the parser also keeps numbers
 * exactly as written (no clamping of big integers, no locale). */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <mailagent/common.h>

#include "core/text.h"
#include "core/json.h"

typedef enum { J_NULL, J_TRUE, J_FALSE, J_NUM, J_STR, J_ARR, J_OBJ } jtype;

struct jval;

typedef struct member {
    char *key;          /* valid UTF-8 (repaired when parsed) */
    struct jval *val;
    size_t order;       /* position in the text, for "last duplicate wins" */
} member;

/* A parsed value. Objects hold their members sorted bytewise by key with no
 * duplicates, so serialising and merging are walks in order. A NULL slot
 * (key and val NULL) is one whose contents moved elsewhere. */
typedef struct jval {
    jtype type;
    char *text;         /* J_NUM: as written; J_STR: decoded bytes, no NUL */
    size_t n, cap;
    struct jval **items;  /* J_ARR */
    member *members;      /* J_OBJ */
} jval;

static void jfree(jval *v)
{
    if (v == NULL)
        return;
    free(v->text);
    if (v->type == J_ARR) {
        for (size_t i = 0; i < v->n; i++)
            jfree(v->items[i]);
        free(v->items);
    } else if (v->type == J_OBJ) {
        for (size_t i = 0; i < v->n; i++) {
            free(v->members[i].key);
            jfree(v->members[i].val);
        }
        free(v->members);
    }
    free(v);
}

static jval *jnew(jtype type)
{
    jval *v = calloc(1, sizeof *v);
    if (v != NULL)
        v->type = type;
    return v;
}


/* ---- parsing -------------------------------------------------------------- */

typedef struct parser {
    const unsigned char *p;
    size_t next_order;
    int err;            /* MAE_EINVAL or MAE_ENOMEM once something failed */
} parser;

static jval *fail(parser *ps, int code)
{
    if (ps->err == MAE_OK)
        ps->err = code;
    return NULL;
}

static void skip_ws(parser *ps)
{
    ps->p = mae__json_skip_ws(ps->p);
}

static void put_utf8(mae__buf *b, unsigned cp)
{
    char u[4];
    if (cp < 0x80) {
        u[0] = (char)cp;
        mae__buf_put(b, u, 1);
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | cp >> 6);
        u[1] = (char)(0x80 | (cp & 0x3F));
        mae__buf_put(b, u, 2);
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | cp >> 12);
        u[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        mae__buf_put(b, u, 3);
    } else {
        u[0] = (char)(0xF0 | cp >> 18);
        u[1] = (char)(0x80 | (cp >> 12 & 0x3F));
        u[2] = (char)(0x80 | (cp >> 6 & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        mae__buf_put(b, u, 4);
    }
}

/* Parses a string at ps->p (on the opening quote) into a new C string.
 * Escapes are decoded; a lone surrogate becomes U+FFFD; raw bytes are kept
 * as they are (invalid UTF-8 is repaired on output). "\u0000" is refused,
 * as the grammar of core/text.h says. */
static char *parse_string(parser *ps)
{
    mae__buf b;
    const unsigned char *p = ps->p + 1, *run = p;
    mae__buf_init(&b);
    for (;;) {
        unsigned char c = *p;
        if (c == '"')
            break;
        if (c < 0x20) { /* raw control character, or the end of the text */
            mae__buf_free(&b);
            fail(ps, MAE_EINVAL);
            return NULL;
        }
        if (c != '\\') {
            p++;
            continue;
        }
        mae__buf_put(&b, (const char *)run, (size_t)(p - run));
        c = p[1];
        if (c == 'u') {
            unsigned cp;
            bool lone;
            size_t n = mae__json_u_escape(p, &cp, &lone);
            if (n == 0) {
                mae__buf_free(&b);
                fail(ps, MAE_EINVAL);
                return NULL;
            }
            put_utf8(&b, cp);
            p += n;
            run = p;
            continue;
        }
        p += 2;
        switch (c) {
        case '"': mae__buf_putc(&b, '"'); break;
        case '\\': mae__buf_putc(&b, '\\'); break;
        case '/': mae__buf_putc(&b, '/'); break;
        case 'b': mae__buf_putc(&b, '\b'); break;
        case 'f': mae__buf_putc(&b, '\f'); break;
        case 'n': mae__buf_putc(&b, '\n'); break;
        case 'r': mae__buf_putc(&b, '\r'); break;
        case 't': mae__buf_putc(&b, '\t'); break;
        default:
            mae__buf_free(&b);
            fail(ps, MAE_EINVAL);
            return NULL;
        }
        run = p;
    }
    mae__buf_put(&b, (const char *)run, (size_t)(p - run));
    ps->p = p + 1;
    char *s = mae__buf_take(&b, NULL);
    if (s == NULL)
        fail(ps, MAE_ENOMEM);
    return s;
}

/* A number exactly as RFC 8259 writes it, kept as text. */
static jval *parse_number(parser *ps)
{
    const unsigned char *s = ps->p, *p = mae__json_number_end(s);
    if (p == NULL)
        return fail(ps, MAE_EINVAL);
    jval *v = jnew(J_NUM);
    if (v == NULL)
        return fail(ps, MAE_ENOMEM);
    v->text = malloc((size_t)(p - s) + 1);
    if (v->text == NULL) {
        free(v);
        return fail(ps, MAE_ENOMEM);
    }
    memcpy(v->text, s, (size_t)(p - s));
    v->text[p - s] = '\0';
    ps->p = p;
    return v;
}

static int member_cmp(const void *a, const void *b)
{
    const member *x = a, *y = b;
    /* strcmp compares as unsigned char: bytewise, which is code point order. */
    int c = strcmp(x->key, y->key);
    if (c != 0)
        return c;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* Sorts obj's members and drops all but the last of each duplicate key. */
static void sort_members(jval *obj)
{
    size_t w = 0;
    qsort(obj->members, obj->n, sizeof *obj->members, member_cmp);
    for (size_t i = 0; i < obj->n; i++) {
        if (i + 1 < obj->n && strcmp(obj->members[i].key, obj->members[i + 1].key) == 0) {
            free(obj->members[i].key);
            jfree(obj->members[i].val);
            continue;
        }
        obj->members[w++] = obj->members[i];
    }
    obj->n = w;
}

static jval *parse_value(parser *ps, int depth);

static jval *parse_object(parser *ps, int depth)
{
    if (depth > MAE_JSON_MAX_DEPTH)
        return fail(ps, MAE_EINVAL);
    jval *obj = jnew(J_OBJ);
    if (obj == NULL)
        return fail(ps, MAE_ENOMEM);
    ps->p++;
    skip_ws(ps);
    if (*ps->p == '}') {
        ps->p++;
        return obj;
    }
    for (;;) {
        bool oom = false;
        if (*ps->p != '"')
            goto bad;
        char *raw = parse_string(ps);
        if (raw == NULL)
            goto out;
        /* Keys are repaired now, so that duplicates, order and merging are
         * about the names a reader of the stored text sees. */
        char *key = mae__utf8_clean(raw, 0, &oom);
        free(raw);
        if (key == NULL) {
            fail(ps, MAE_ENOMEM);
            goto out;
        }
        skip_ws(ps);
        if (*ps->p != ':') {
            free(key);
            goto bad;
        }
        ps->p++;
        skip_ws(ps);
        jval *val = parse_value(ps, depth + 1);
        member *members = val ? mae__grow(obj->members, &obj->cap, obj->n, sizeof(member), 4)
                              : NULL;
        if (members == NULL) {
            free(key);
            jfree(val);
            fail(ps, MAE_ENOMEM); /* no-op when parse_value set the reason */
            goto out;
        }
        obj->members = members;
        obj->members[obj->n].key = key;
        obj->members[obj->n].val = val;
        obj->members[obj->n].order = ps->next_order++;
        obj->n++;
        skip_ws(ps);
        if (*ps->p == ',') {
            ps->p++;
            skip_ws(ps);
            continue;
        }
        if (*ps->p == '}') {
            ps->p++;
            sort_members(obj);
            return obj;
        }
        goto bad;
    }
bad:
    fail(ps, MAE_EINVAL);
out:
    jfree(obj);
    return NULL;
}

static jval *parse_array(parser *ps, int depth)
{
    if (depth > MAE_JSON_MAX_DEPTH)
        return fail(ps, MAE_EINVAL);
    jval *arr = jnew(J_ARR);
    if (arr == NULL)
        return fail(ps, MAE_ENOMEM);
    ps->p++;
    skip_ws(ps);
    if (*ps->p == ']') {
        ps->p++;
        return arr;
    }
    for (;;) {
        jval *val = parse_value(ps, depth + 1);
        jval **items = val ? mae__grow(arr->items, &arr->cap, arr->n, sizeof(jval *), 4) : NULL;
        if (items == NULL) {
            jfree(val);
            fail(ps, MAE_ENOMEM);
            jfree(arr);
            return NULL;
        }
        arr->items = items;
        arr->items[arr->n++] = val;
        skip_ws(ps);
        if (*ps->p == ',') {
            ps->p++;
            skip_ws(ps);
            continue;
        }
        if (*ps->p == ']') {
            ps->p++;
            return arr;
        }
        jfree(arr);
        return fail(ps, MAE_EINVAL);
    }
}

static jval *parse_word(parser *ps, const char *word, jtype type)
{
    size_t n = strlen(word);
    if (strncmp((const char *)ps->p, word, n) != 0)
        return fail(ps, MAE_EINVAL);
    jval *v = jnew(type);
    if (v == NULL)
        return fail(ps, MAE_ENOMEM);
    ps->p += n;
    return v;
}

/* depth is the container depth the value would open (the top object is 1). */
static jval *parse_value(parser *ps, int depth)
{
    switch (*ps->p) {
    case '{':
        return parse_object(ps, depth);
    case '[':
        return parse_array(ps, depth);
    case '"': {
        char *s = parse_string(ps);
        if (s == NULL)
            return NULL;
        jval *v = jnew(J_STR);
        if (v == NULL) {
            free(s);
            return fail(ps, MAE_ENOMEM);
        }
        v->text = s;
        return v;
    }
    case 't':
        return parse_word(ps, "true", J_TRUE);
    case 'f':
        return parse_word(ps, "false", J_FALSE);
    case 'n':
        return parse_word(ps, "null", J_NULL);
    default:
        return parse_number(ps);
    }
}

/* Parses json, which must be exactly one object within the depth limit.
 * MAE_OK and *out, MAE_EINVAL or MAE_ENOMEM. */
static int parse_payload(const char *json, jval **out)
{
    parser ps = {.p = (const unsigned char *)json, .next_order = 0, .err = MAE_OK};
    if (json == NULL)
        return MAE_EINVAL;
    skip_ws(&ps);
    if (*ps.p != '{')
        return MAE_EINVAL;
    jval *v = parse_object(&ps, 1);
    if (v == NULL)
        return ps.err != MAE_OK ? ps.err : MAE_EINVAL;
    skip_ws(&ps);
    if (*ps.p != '\0') { /* trailing garbage */
        jfree(v);
        return MAE_EINVAL;
    }
    *out = v;
    return MAE_OK;
}

/* ---- serialisation -------------------------------------------------------- */

static void emit(mae__buf *b, const jval *v, size_t max_cp)
{
    switch (v->type) {
    case J_NULL:
        mae__buf_puts(b, "null");
        break;
    case J_TRUE:
        mae__buf_puts(b, "true");
        break;
    case J_FALSE:
        mae__buf_puts(b, "false");
        break;
    case J_NUM:
        mae__buf_puts(b, v->text);
        break;
    case J_STR:
        mae__json_str(b, v->text, max_cp);
        break;
    case J_ARR:
        mae__buf_putc(b, '[');
        for (size_t i = 0; i < v->n; i++) {
            if (i > 0)
                mae__buf_putc(b, ',');
            emit(b, v->items[i], max_cp);
        }
        mae__buf_putc(b, ']');
        break;
    case J_OBJ:
        mae__buf_putc(b, '{');
        for (size_t i = 0; i < v->n; i++) {
            if (i > 0)
                mae__buf_putc(b, ',');
            mae__json_str(b, v->members[i].key, 0);
            mae__buf_putc(b, ':');
            emit(b, v->members[i].val, max_cp);
        }
        mae__buf_putc(b, '}');
        break;
    }
}

/* Serialises v into a new string (*out). MAE_OK or MAE_ENOMEM. */
static int serialise(const jval *v, size_t max_cp, char **out)
{
    mae__buf b;
    mae__buf_init(&b);
    emit(&b, v, max_cp);
    char *s = mae__buf_take(&b, NULL); /* NULL only when the buffer ran out */
    if (s == NULL)
        return MAE_ENOMEM;
    *out = s;
    return MAE_OK;
}

int mae__json_canonical(const char *json, size_t max_string_cp, char **out)
{
    jval *v = NULL;
    if (out == NULL)
        return MAE_EINVAL;
    int rc = parse_payload(json, &v);
    if (rc == MAE_OK)
        rc = serialise(v, max_string_cp, out);
    jfree(v);
    return rc;
}

/* ---- merge patch ---------------------------------------------------------- */

/* MergePatch({}, obj): drops the null members of obj at every level of
 * nested objects (arrays are values and keep theirs). Cannot fail. */
static void strip_nulls(jval *obj)
{
    size_t w = 0;
    for (size_t i = 0; i < obj->n; i++) {
        member m = obj->members[i];
        if (m.val->type == J_NULL) {
            free(m.key);
            jfree(m.val);
            continue;
        }
        if (m.val->type == J_OBJ)
            strip_nulls(m.val);
        obj->members[w++] = m;
    }
    obj->n = w;
}

/* Applies patch to target (RFC 7396 MergePatch), both objects, moving what
 * it keeps out of patch. On MAE_ENOMEM both trees are left partly moved but
 * each node is owned by exactly one of them (moved slots are cleared), so
 * freeing both is all the caller does. */
static int merge_into(jval *target, jval *patch)
{
    size_t cap = target->n + patch->n, n = 0, i = 0, j = 0;
    if (cap == 0)
        return MAE_OK;
    if (cap > SIZE_MAX / sizeof(member))
        return MAE_ENOMEM;
    member *m = calloc(cap, sizeof *m);
    if (m == NULL)
        return MAE_ENOMEM;

    while (i < target->n || j < patch->n) {
        int c;
        if (i == target->n)
            c = 1;
        else if (j == patch->n)
            c = -1;
        else
            c = strcmp(target->members[i].key, patch->members[j].key);

        if (c < 0) { /* only in the target: kept */
            m[n++] = target->members[i];
            memset(&target->members[i++], 0, sizeof(member));
            continue;
        }
        member *pm = &patch->members[j++];
        member *tm = c == 0 ? &target->members[i++] : NULL;
        if (pm->val->type == J_NULL) { /* removes the key */
            if (tm != NULL) {
                free(tm->key);
                jfree(tm->val);
                memset(tm, 0, sizeof *tm);
            }
            continue;
        }
        if (pm->val->type == J_OBJ && tm != NULL && tm->val->type == J_OBJ) {
            int rc = merge_into(tm->val, pm->val);
            if (rc != MAE_OK) {
                for (size_t k = 0; k < n; k++) {
                    free(m[k].key);
                    jfree(m[k].val);
                }
                free(m);
                return rc;
            }
            m[n++] = *tm;
            memset(tm, 0, sizeof *tm);
            continue;
        }
        /* Replaced wholesale (an object replacing a non-object starts
         * from {}, so its nulls go). */
        if (pm->val->type == J_OBJ)
            strip_nulls(pm->val);
        if (tm != NULL) {
            free(tm->key);
            jfree(tm->val);
            memset(tm, 0, sizeof *tm);
        }
        m[n++] = *pm;
        memset(pm, 0, sizeof *pm);
    }

    /* Every slot of target was moved or freed above. */
    free(target->members);
    target->members = m;
    target->n = n;
    target->cap = cap;
    return MAE_OK;
}

int mae__json_merge_patch(const char *target, const char *patch, char **out)
{
    jval *t = NULL, *p = NULL;
    if (out == NULL)
        return MAE_EINVAL;
    int rc = parse_payload(target, &t);
    if (rc == MAE_OK)
        rc = parse_payload(patch, &p);
    if (rc == MAE_OK)
        rc = merge_into(t, p);
    if (rc == MAE_OK)
        rc = serialise(t, 0, out);
    jfree(p);
    jfree(t);
    return rc;
}
