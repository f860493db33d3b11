/* This module implements the dispatch of relay/source.h: each call goes
 * through the source's function table. */
#include <stddef.h>

#include "relay/source.h"

int mae__source_new(const mae__source_config *cfg, const mae__source_cb *cb, mae__source **out,
                    char *err, size_t errlen)
{
    if (cfg->hub)
        return mae__source_hub_new(cfg, cb, out, err, errlen);
    return cfg->stream_key ? mae__source_stream_new(cfg, cb, out, err, errlen)
                           : mae__source_pubsub_new(cfg, cb, out, err, errlen);
}

bool mae__source_up(const mae__source *s)
{
    return s && s->ops->up(s);
}

const mae__history *mae__source_history(mae__source *s)
{
    return s ? s->ops->history(s) : NULL;
}

void mae__source_free(mae__source *s)
{
    if (s)
        s->ops->free(s);
}
