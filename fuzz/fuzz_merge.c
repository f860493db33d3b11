/* libFuzzer target for canonical JSON payloads and the RFC 7396 merge
 * patch: the input, split at its first NUL or newline into a target and a
 * patch, must give canonical texts that are fixed points and valid JSON for
 * json-c, and a merge that agrees with an independent merge done by json-c. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include <mailagent/common.h>

#include "core/json.h"

#define CHECK(cond)              \
    do {                         \
        if (!(cond))             \
            __builtin_trap();    \
    } while (0)

/* json-c's reading of text we produced: one object, nothing after it. */
static struct json_object *judge(const char *text)
{
    json_tokener *tok = json_tokener_new_ex(MAE_JSON_MAX_DEPTH * 2 + 4);
    CHECK(tok != NULL);
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    size_t len = strlen(text);
    struct json_object *obj = json_tokener_parse_ex(tok, text, (int)len);
    CHECK(json_tokener_get_error(tok) == json_tokener_success);
    CHECK(json_tokener_get_parse_end(tok) == len);
    CHECK(json_object_is_type(obj, json_type_object));
    json_tokener_free(tok);
    return obj;
}

/* Canonical text is a fixed point, valid JSON, and has no whitespace
 * outside strings. Returns json-c's tree of it (caller puts). */
static struct json_object *check_canonical(const char *text)
{
    char *again = NULL;
    CHECK(mae__json_canonical(text, 0, &again) == MAE_OK);
    CHECK(strcmp(again, text) == 0);
    free(again);
    bool in_string = false;
    for (const char *p = text; *p; p++) {
        if (in_string && *p == '\\')
            p++;
        else if (*p == '"')
            in_string = !in_string;
        else if (!in_string)
            CHECK(*p != ' ' && *p != '\n' && *p != '\t' && *p != '\r');
    }
    return judge(text);
}

/* RFC 7396 MergePatch on json-c trees, applied to target in place. */
static void reference_merge(struct json_object *target, struct json_object *patch)
{
    json_object_object_foreach(patch, key, val)
    {
        if (val == NULL) {
            json_object_object_del(target, key);
        } else if (json_object_is_type(val, json_type_object)) {
            struct json_object *sub = NULL;
            if (!json_object_object_get_ex(target, key, &sub) ||
                !json_object_is_type(sub, json_type_object)) {
                sub = json_object_new_object();
                CHECK(sub != NULL);
                CHECK(json_object_object_add(target, key, sub) == 0);
            }
            reference_merge(sub, val);
        } else {
            CHECK(json_object_object_add(target, key, json_object_get(val)) == 0);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';

    const char *target = buf, *patch = buf;
    size_t cut = 0;
    while (cut < size && buf[cut] != '\0' && buf[cut] != '\n')
        cut++;
    if (cut < size) {
        buf[cut] = '\0';
        patch = buf + cut + 1;
    }

    char *ct = NULL, *cp = NULL, *merged = NULL, *cut_text = NULL;
    int rt = mae__json_canonical(target, 0, &ct);
    int rp = mae__json_canonical(patch, 0, &cp);
    CHECK(rt == MAE_OK || rt == MAE_EINVAL);
    CHECK(rp == MAE_OK || rp == MAE_EINVAL);
    struct json_object *jt = rt == MAE_OK ? check_canonical(ct) : NULL;
    struct json_object *jp = rp == MAE_OK ? check_canonical(cp) : NULL;

    /* Cut strings: still valid, and canonical as they are. */
    if (rt == MAE_OK) {
        CHECK(mae__json_canonical(target, 3, &cut_text) == MAE_OK);
        json_object_put(check_canonical(cut_text));
        free(cut_text);
    }

    int rm = mae__json_merge_patch(target, patch, &merged);
    if (rt == MAE_OK && rp == MAE_OK) {
        CHECK(rm == MAE_OK);
        struct json_object *jm = check_canonical(merged);
        reference_merge(jt, jp);
        CHECK(json_object_equal(jt, jm));
        json_object_put(jm);
        /* Merging the canonical texts gives the same result. */
        char *merged2 = NULL;
        CHECK(mae__json_merge_patch(ct, cp, &merged2) == MAE_OK);
        CHECK(strcmp(merged, merged2) == 0);
        free(merged2);
        /* A patch applied twice changes nothing more. */
        char *twice = NULL;
        CHECK(mae__json_merge_patch(merged, cp, &twice) == MAE_OK);
        CHECK(strcmp(merged, twice) == 0);
        free(twice);
    } else {
        CHECK(rm == MAE_EINVAL);
    }

    json_object_put(jt);
    json_object_put(jp);
    free(merged);
    free(ct);
    free(cp);
    free(buf);
    return 0;
}
