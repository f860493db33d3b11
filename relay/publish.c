/* This module implements POST /api/events/publish (docs/relay.md,
 * "Publishing"): what can be refused from the headers alone is refused
 * before the body is read; the body is read whole, under its deadline, and
 * parsed by core/envelope (all or nothing); hub publishers' resent batches
 * are applied exactly once through a bounded table of their last applied
 * numbers; accepted events go to the hub (hub mode) or to Redis through
 * the library's own publisher (the Redis modes), so every relay and every
 * tail sees them. It also renders the health answers. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include <mailagent/common.h>
#include <mailagent/publisher.h>

#include "core/envelope.h"
#include "core/tls.h"
#include "publisher/publisher_internal.h"
#include "relay/hub_source.h"
#include "relay/server.h"

typedef mae__relay_client client;
typedef mae__relay_server relay;

/* ---- the exactly-once table ---------------------------------------------------------- */

/* One hub publisher: the last event number applied for it. The table is
 * small and searched linearly; the least recently seen entry makes room. */
typedef struct pub_entry {
    char id[33];
    uint64_t last;
    uint64_t seen;            /* tick of its last batch */
} pub_entry;

struct mae__pub_table {
    pub_entry *v;
    size_t n;
    uint64_t tick;
};

/* The entry of id, made when absent (evicting the least recently seen
 * when full; *fresh true then). */
static pub_entry *pub_find(relay *r, const char *id, bool *fresh)
{
    mae__pub_table *t = r->pubs;
    size_t lru = 0;
    *fresh = false;
    t->tick++;
    for (size_t i = 0; i < t->n; i++) {
        if (memcmp(t->v[i].id, id, 32) == 0) {
            t->v[i].seen = t->tick;
            return &t->v[i];
        }
        if (t->v[i].seen < t->v[lru].seen)
            lru = i;
    }
    pub_entry *e;
    if (t->n < MAE__RELAY_MAX_PUBLISHERS) {
        e = &t->v[t->n++];
    } else {
        e = &t->v[lru];
        r->counters.pub_publishers_forgotten++;
    }
    memcpy(e->id, id, 33);
    e->last = 0;
    e->seen = t->tick;
    *fresh = true;
    return e;
}

/* ---- starting and stopping ----------------------------------------------------------- */

const char *mae__relay_mode(const relay *r)
{
    if (!r->cfg->redis_url)
        return "hub";
    return r->cfg->stream_key ? "stream" : "pubsub";
}

static void on_publisher_log(void *user, int level, const char *msg, uint64_t repeats)
{
    (void)user;
    (void)level;
    mae__relay_say("publisher: %s (%llu times)", msg, (unsigned long long)repeats + 1);
}

int mae__publish_start(relay *r, char *err, size_t errlen)
{
    r->pubs = calloc(1, sizeof *r->pubs);
    if (r->pubs)
        r->pubs->v = calloc(MAE__RELAY_MAX_PUBLISHERS, sizeof *r->pubs->v);
    if (!r->pubs || !r->pubs->v) {
        snprintf(err, errlen, "out of memory");
        return 1;
    }
    return 0;
}

/* The Redis modes' publisher, opened on the first publish that needs it,
 * so a relay nobody publishes through holds no connection, thread or
 * descriptor for it. NULL when it cannot be opened (logged). */
static mae_publisher *redis_publisher(relay *r)
{
    if (r->publisher)
        return r->publisher;
    char perr[256] = "";
    mae_publisher_config pc;
    mae_publisher_config_init(&pc);
    pc.redis_url = r->cfg->redis_url;
    if (r->cfg->channel)
        pc.channel = r->cfg->channel;
    pc.stream_key = r->cfg->stream_key;
    pc.max_event_bytes = r->cfg->max_event_bytes;
    pc.log = on_publisher_log;
    pc.error_buf = perr;
    pc.error_buf_size = sizeof perr;
    if (mae_publisher_open(&pc, &r->publisher) != MAE_OK) {
        mae__relay_say("cannot open the publisher of POST %s: %s", MAE__RELAY_PUBLISH_PATH,
                       *perr ? perr : "out of memory");
        r->publisher = NULL;
    }
    return r->publisher;
}

void mae__publish_stop(relay *r)
{
    if (r->publisher)
        mae_publisher_close(r->publisher, 1000);
    r->publisher = NULL;
    if (r->pubs)
        free(r->pubs->v);
    free(r->pubs);
    r->pubs = NULL;
}

/* ---- answers ----------------------------------------------------------------------- */

static void refuse(client *c, int status, const char *reason, const char *error,
                   const char *why, size_t line, bool keep)
{
    mae__buf b;
    mae__buf_init(&b);
    mae__buf_puts(&b, "{\"error\":\"");
    mae__buf_puts(&b, error);
    mae__buf_puts(&b, "\",\"reason\":");
    mae__json_str(&b, why, 0);
    if (line) {
        mae__buf_puts(&b, ",\"line\":");
        mae__json_i64(&b, (int64_t)line);
    }
    mae__buf_putc(&b, '}');
    c->r->counters.pub_requests_total++;
    if (b.oom)
        mae__client_close(c, "out of memory");
    else
        mae__client_answer(c, status, reason, "application/json",
                           status == 503 ? "Retry-After: 1\r\n" : NULL, b.ptr, b.len, keep);
    mae__buf_free(&b);
}

static bool is_hex32(mae__span s)
{
    if (s.n != 32)
        return false;
    for (size_t i = 0; i < 32; i++)
        if (!((s.p[i] >= '0' && s.p[i] <= '9') || (s.p[i] >= 'a' && s.p[i] <= 'f')))
            return false;
    return true;
}

static bool read_u64(mae__span s, uint64_t *out)
{
    uint64_t v = 0;
    if (s.n == 0 || s.n > 20)
        return false;
    for (size_t i = 0; i < s.n; i++) {
        if (s.p[i] < '0' || s.p[i] > '9')
            return false;
        unsigned d = (unsigned)(s.p[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return v > 0;
}

static bool is_ndjson(mae__span ct)
{
    static const char want[] = "application/x-ndjson";
    size_t n = sizeof want - 1;
    if (!ct.p || ct.n < n)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = ct.p[i];
        if (ch >= 'A' && ch <= 'Z')
            ch = (char)(ch - 'A' + 'a');
        if (ch != want[i])
            return false;
    }
    return ct.n == n || ct.p[n] == ';' || ct.p[n] == ' ' || ct.p[n] == '\t';
}

/* The bytes of the publish bodies being read now. */
static unsigned long long in_flight(relay *r)
{
    unsigned long long n = 0;
    client *c;
    TAILQ_FOREACH(c, &r->conns, conn_link)
        if (c->state == C_BODY && !c->close_asap)
            n += c->pub.length;
    return n;
}

bool mae__publish_begin(client *c, const mae__request *req)
{
    relay *r = c->r;
    mae__publish_req *p = &c->pub;
    memset(p, 0, sizeof *p);
    /* A credential is configured, or the peer is on this machine. */
    if (!mae__credentials_required(&r->cfg->credentials) && !c->loopback) {
        r->counters.pub_refused_forbidden++;
        refuse(c, 403, "Forbidden", "forbidden",
               "no credential is configured: only loopback clients may publish", 0, false);
        return false;
    }
    if (req->chunked) {
        r->counters.pub_refused_length_required++;
        refuse(c, 411, "Length Required", "length_required",
               "a chunked body is not taken: send Content-Length", 0, false);
        return false;
    }
    if (req->has_length && req->content_length > r->cfg->max_body_bytes) {
        r->counters.pub_refused_too_large++;
        char why[128];
        snprintf(why, sizeof why, "the body is over --max-body-bytes (%zu)",
                 r->cfg->max_body_bytes);
        refuse(c, 413, "Content Too Large", "too_large", why, 0, false);
        return false;
    }
    /* Bodies being read at once are bounded too, so many connections
     * cannot make the relay hold many times --max-body-bytes. */
    if (req->has_length && in_flight(r) + req->content_length >
                               (unsigned long long)MAE__RELAY_BODIES_IN_FLIGHT * r->cfg->max_body_bytes) {
        r->counters.pub_refused_unavailable++;
        refuse(c, 503, "Service Unavailable", "unavailable",
               "too many publish bodies are being read at once; retry later", 0, false);
        return false;
    }
    if (!req->has_length || req->content_length == 0) {
        r->counters.pub_refused_bad_request++;
        refuse(c, 400, "Bad Request", "bad_request", "the body is empty", 0, req->conn_keep);
        return false;
    }
    p->length = (size_t)req->content_length;
    p->keep = req->conn_keep;
    p->ndjson = is_ndjson(req->content_type);
    if (req->publisher.p || req->batch_start.p) {
        if (is_hex32(req->publisher) && read_u64(req->batch_start, &p->batch_start)) {
            p->has_publisher = true;
            memcpy(p->publisher, req->publisher.p, 32);
            p->publisher[32] = '\0';
        } else {
            p->bad_publisher = true;
        }
    }
    return true;
}

void mae__publish_timeout(client *c)
{
    c->r->counters.pub_refused_timeout++;
    char why[96];
    snprintf(why, sizeof why, "the body did not arrive within %d ms",
             MAE__RELAY_BODY_DEADLINE_MS);
    refuse(c, 408, "Request Timeout", "timeout", why, 0, false);
}

/* Queues the lines to Redis through the publisher, all or none: 503 when
 * its queue has no room for all of them now. */
static bool to_redis(relay *r, const char *lines, size_t len, size_t count)
{
    mae_publisher_stats st;
    if (!redis_publisher(r) || !mae__publisher_live(r->publisher))
        return false;
    mae_publisher_stats_get(r->publisher, &st);
    /* The relay is the publisher's only producer: room seen now only grows. */
    mae_publisher_config dflt;
    mae_publisher_config_init(&dflt);
    if (st.queued + count > dflt.queue_max_events || st.queued_bytes + len > dflt.queue_max_bytes)
        return false;
    const char *p = lines, *end = lines + len;
    for (size_t i = 0; i < count && p < end; i++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = (size_t)((nl ? nl : end) - p);
        mae__buf *b = mae__publisher_line_begin(r->publisher);
        mae__buf_put(b, p, n);
        mae__publisher_line_end(r->publisher, true);
        p = nl ? nl + 1 : end;
    }
    return true;
}

/* The events of lines from the k-th on (skipping k lines). */
static const char *skip_lines(const char *lines, size_t len, size_t k)
{
    const char *p = lines, *end = lines + len;
    while (k-- && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        p = nl ? nl + 1 : end;
    }
    return p;
}

void mae__publish_body(client *c, const char *body, size_t len)
{
    relay *r = c->r;
    mae__publish_req *p = &c->pub;
    bool keep = p->keep;
    if (p->bad_publisher) {
        r->counters.pub_refused_bad_request++;
        refuse(c, 400, "Bad Request", "bad_request",
               "X-MailAgent-Publisher wants 32 lowercase hex digits and X-MailAgent-Batch-Start "
               "a number from 1, both or neither",
               0, keep);
        return;
    }
    mae__envelope_result res;
    int status = mae__envelope_parse(body, len, p->ndjson ? "application/x-ndjson" : NULL,
                                     r->cfg->max_event_bytes, &res);
    if (status != 200) {
        if (status == 413) {
            r->counters.pub_refused_too_large++;
            refuse(c, 413, "Content Too Large", "too_large", res.reason, res.line_no, keep);
        } else if (status == 503) {
            r->counters.pub_refused_unavailable++;
            refuse(c, 503, "Service Unavailable", "unavailable", res.reason, 0, keep);
        } else {
            r->counters.pub_refused_bad_request++;
            refuse(c, 400, "Bad Request", "bad_request", res.reason, res.line_no, keep);
        }
        mae__envelope_result_free(&res);
        return;
    }

    /* Exactly once: only the numbers above the last applied. */
    size_t skip = 0;
    pub_entry *pe = NULL;
    if (p->has_publisher) {
        bool fresh;
        pe = pub_find(r, p->publisher, &fresh);
        if (pe->last >= p->batch_start) {
            uint64_t done = pe->last - p->batch_start + 1;
            skip = done > res.count ? res.count : (size_t)done;
        }
    }
    size_t n = res.count - skip;
    const char *from = skip_lines(res.lines, res.len, skip);
    size_t flen = res.len - (size_t)(from - res.lines);
    mae__stream_id last;
    bool has_last = false;
    /* More events at once than the queue to Redis can ever hold: no
     * retry would help (a 503 would be retried for ever). */
    mae_publisher_config qc;
    mae_publisher_config_init(&qc);
    if (r->cfg->redis_url && (n > qc.queue_max_events || flen > qc.queue_max_bytes)) {
        char why[160];
        snprintf(why, sizeof why,
                 "%zu events at once: more than the relay's queue to Redis holds (%zu)", n,
                 qc.queue_max_events);
        r->counters.pub_refused_too_large++;
        refuse(c, 413, "Content Too Large", "too_large", why, 0, keep);
        mae__envelope_result_free(&res);
        return;
    }
    if (n) {
        bool ok;
        if (r->cfg->redis_url) {
            ok = to_redis(r, from, flen, n);
        } else {
            /* No source while the relay stops: not taken, the sender retries. */
            ok = r->source && mae__hub_publish(r->source, from, flen, n, &last) == MAE_OK;
            has_last = ok;
        }
        if (!ok) {
            r->counters.pub_refused_unavailable++;
            refuse(c, 503, "Service Unavailable", "unavailable",
                   r->cfg->redis_url ? "the relay's queue to Redis is full; retry later"
                                     : "out of memory; retry later",
                   0, keep);
            mae__envelope_result_free(&res);
            return;
        }
    }
    if (pe && p->batch_start + res.count - 1 > pe->last)
        pe->last = p->batch_start + res.count - 1;
    r->counters.pub_events_accepted += n;
    r->counters.pub_events_duplicate += skip;
    r->counters.pub_requests_total++;
    mae__envelope_result_free(&res);

    char answer[160], text[MAE__STREAM_ID_BUFSIZE];
    int m;
    if (has_last) {
        mae__stream_id_format(&last, text);
        m = snprintf(answer, sizeof answer, "{\"accepted\":%zu,\"skipped\":%zu,\"last_id\":\"%s\"}",
                     n, skip, text);
    } else {
        m = snprintf(answer, sizeof answer, "{\"accepted\":%zu,\"skipped\":%zu,\"last_id\":null}",
                     n, skip);
    }
    mae__client_answer(c, 200, "OK", "application/json", NULL, answer, (size_t)m, keep);
}

void mae__publish_fill_counters(relay *r)
{
    r->counters.pub_publishers = r->pubs ? r->pubs->n : 0;
    if (!r->cfg->redis_url && r->source) {
        mae__hub_stats hs;
        mae__hub_get_stats(r->source, &hs);
        r->counters.hub_history_events = hs.kept;
        r->counters.hub_history_bytes = hs.kept_bytes;
        r->counters.hub_history_evicted_total = hs.evicted;
    }
}

/* ---- health ------------------------------------------------------------------------ */

void mae__health_render(relay *r, mae__buf *b, bool healthz)
{
    bool up = mae__fanout_source_up(r);
    r->counters.redis_connected = up && r->cfg->redis_url;
    const char *mode = mae__relay_mode(r);
    char line[256];
    int n;
    if (healthz) {
        /* The progress rule (docs/relay.md, "Health"): a Redis source with
         * no entry and no answered probe for 2 x the ping interval + 5 s is
         * stuck (a hung or demoted server), whatever its connection says. */
        bool progressing = !r->cfg->redis_url ||
                           mae__tls_now() - r->last_progress <=
                               MAE__HEALTHZ_STALL_S(r->cfg->ping_interval);
        mae__healthz_render(b, &r->counters, mode, progressing);
        return;
    }
    n = snprintf(line, sizeof line,
                 "{\"ok\":%s,\"source\":\"%s\",\"mode\":\"%s\",\"subscriber_count\":%" PRIu64
                 ",\"last_event_ts\":",
                 up ? "true" : "false", mode, mode, r->counters.clients);
    mae__buf_put(b, line, (size_t)n);
    if (r->last_event_ts > 0)
        mae__json_epoch(b, r->last_event_ts);
    else
        mae__buf_puts(b, "null");
    mae__buf_puts(b, ",\"last_error\":");
    /* Down: the source's last word on it (a source that never came up
     * has logged its failure without reporting a change). */
    const char *why = NULL;
    if (!up)
        why = r->last_error[0] ? r->last_error : r->last_log[0] ? r->last_log : "not connected yet";
    mae__json_str(b, why, 0);
    n = snprintf(line, sizeof line, ",\"events_total\":%" PRIu64 "}", r->counters.events_total);
    mae__buf_put(b, line, (size_t)n);
}
