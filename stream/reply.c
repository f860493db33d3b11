/* This module implements the stream reply parsers of stream/reply.h. */
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "stream/reply.h"

static bool is_str(const redisReply *r)
{
    return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

static bool reply_id(const redisReply *r, mae__stream_id *out)
{
    return is_str(r) && mae__stream_id_parse(r->str, r->len, out) == MAE__STREAM_ID_OK;
}

bool mae__stream_parse_entry(const redisReply *r, mae__stream_entry *out)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 || !reply_id(r->element[0], &out->id))
        return false;
    out->line = NULL;
    out->len = 0;
    const redisReply *f = r->element[1];
    /* A deleted entry still listed (consumer-group history) has no fields. */
    if (f->type == REDIS_REPLY_NIL)
        return true;
    if (f->type != REDIS_REPLY_ARRAY || f->elements % 2)
        return false;
    for (size_t i = 0; i < f->elements; i += 2) {
        const redisReply *name = f->element[i], *value = f->element[i + 1];
        if (is_str(name) && name->len == 5 && memcmp(name->str, "event", 5) == 0 &&
            is_str(value)) {
            out->line = value->str;
            out->len = value->len;
            return true;
        }
    }
    return true;
}

bool mae__stream_parse_entries(const redisReply *r, mae__stream_entry **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!r || r->type != REDIS_REPLY_ARRAY)
        return false;
    if (r->elements == 0)
        return true;
    mae__stream_entry *v = calloc(r->elements, sizeof *v);
    if (!v)
        return false;
    for (size_t i = 0; i < r->elements; i++) {
        if (!mae__stream_parse_entry(r->element[i], &v[i]) ||
            (i > 0 && mae__stream_id_cmp(&v[i - 1].id, &v[i].id) >= 0)) {
            free(v);
            return false;
        }
    }
    *out = v;
    *n = r->elements;
    return true;
}

static bool name_is(const redisReply *r, const char *name)
{
    return is_str(r) && r->len == strlen(name) && memcmp(r->str, name, r->len) == 0;
}

bool mae__stream_parse_info(const redisReply *r, mae__stream_bounds *out)
{
    mae__stream_bounds b;
    bool have_last = false, have_length = false;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements % 2)
        return false;
    memset(&b, 0, sizeof b);
    b.exists = true;
    for (size_t i = 0; i < r->elements; i += 2) {
        const redisReply *name = r->element[i], *v = r->element[i + 1];
        if (name_is(name, "length")) {
            if (v->type != REDIS_REPLY_INTEGER || v->integer < 0)
                return false;
            b.length = (uint64_t)v->integer;
            have_length = true;
        } else if (name_is(name, "last-generated-id")) {
            if (!reply_id(v, &b.last))
                return false;
            have_last = true;
        } else if (name_is(name, "entries-added")) {
            if (v->type != REDIS_REPLY_INTEGER || v->integer < 0)
                return false;
            b.entries_added = (uint64_t)v->integer;
            b.added_known = true;
        } else if (name_is(name, "first-entry")) {
            mae__stream_entry e;
            if (v->type == REDIS_REPLY_NIL)
                continue;
            if (!mae__stream_parse_entry(v, &e))
                return false;
            b.first = e.id;
        }
    }
    if (!have_last || !have_length)
        return false;
    *out = b;
    return true;
}

int mae__stream_parse_bounds(const redisReply *r, mae__stream_bounds *out, const char **err)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER)
        return 0;
    if (r->element[0]->integer == 0) {
        memset(out, 0, sizeof *out);
        return 1;
    }
    if (r->element[1]->type == REDIS_REPLY_ERROR) {
        *err = r->element[1]->str;
        return -1;
    }
    return mae__stream_parse_info(r->element[1], out) ? 1 : 0;
}
