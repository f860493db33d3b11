/* This module implements the resume decision of stream/decide.h: the
 * decision table and the reset texts. */
#include <stdio.h>
#include <string.h>

#include "stream/decide.h"

const char mae__resume_rewound_json[] = "{\"reason\":\"unknown_id\"}";

mae__resume_plan mae__resume_decide(int parse_rc, const mae__stream_id *id,
                                    const mae__stream_bounds *b)
{
    mae__resume_plan p;
    memset(&p, 0, sizeof p);
    if (parse_rc > 0) {
        p.kind = MAE__RESUME_LIVE;
        return p;
    }
    if (parse_rc != MAE__STREAM_ID_OK) {
        p.kind = MAE__RESUME_BAD_ID;
        return p;
    }
    if (mae__stream_id_cmp(id, &b->last) > 0) {
        p.kind = MAE__RESUME_UNKNOWN_ID;
        return p;
    }
    /* Is the client's id before everything kept? For an empty stream,
     * before its newest id (nothing after that is kept either). */
    bool before_kept = b->length == 0 ? mae__stream_id_cmp(id, &b->last) < 0
                                      : mae__stream_id_cmp(id, &b->first) < 0;
    /* Redis says how many entries were ever added, not which ones were
     * trimmed: any loss counts, and an older server is assumed to have
     * lost some. A non-zero id before the first entry of a stream that
     * never lost one comes from an earlier stream under the same key: what
     * was added in between is unknown too. Only 0-0 on an intact stream
     * ("from the beginning") misses nothing. */
    bool lost_any = !b->added_known || b->entries_added > b->length;
    bool missed = before_kept && (lost_any || !mae__stream_id_is_zero(id));
    p.replay = true;
    p.after = *id;
    if (missed) {
        p.kind = MAE__RESUME_TRIMMED;
        p.has_oldest = b->length > 0;
        p.oldest = b->first;
    } else {
        p.kind = MAE__RESUME_REPLAY;
    }
    return p;
}

size_t mae__resume_reset_json(const mae__resume_plan *plan, char *buf, size_t size)
{
    char id[MAE__STREAM_ID_BUFSIZE];
    int n;
    switch (plan->kind) {
    case MAE__RESUME_BAD_ID:
        n = snprintf(buf, size, "{\"reason\":\"bad_last_event_id\"}");
        break;
    case MAE__RESUME_UNKNOWN_ID:
        n = snprintf(buf, size, "%s", mae__resume_rewound_json);
        break;
    case MAE__RESUME_TRIMMED:
        if (plan->has_oldest) {
            mae__stream_id_format(&plan->oldest, id);
            n = snprintf(buf, size, "{\"reason\":\"history_trimmed\",\"oldest_id\":\"%s\"}", id);
        } else {
            n = snprintf(buf, size, "{\"reason\":\"history_trimmed\",\"oldest_id\":null}");
        }
        break;
    case MAE__RESUME_ROLLED_BACK:
        if (plan->has_oldest) {
            mae__stream_id_format(&plan->oldest, id);
            n = snprintf(buf, size, "{\"reason\":\"rolled_back\",\"last_kept\":\"%s\"}", id);
        } else {
            n = snprintf(buf, size, "{\"reason\":\"rolled_back\",\"last_kept\":null}");
        }
        break;
    default:
        if (size)
            buf[0] = '\0';
        return 0;
    }
    return n > 0 && (size_t)n < size ? (size_t)n : 0;
}

