/* Internal: the relay's counters and the two texts made of them, /metrics
 * (Prometheus text format 0.0.4) and /healthz (JSON). Pure, unit-tested.
 * Never installed. */
#ifndef MAE_RELAY_METRICS_H
#define MAE_RELAY_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/text.h"

/* Only the event loop's thread touches them: plain integers. */
typedef struct mae__relay_counters {
    uint64_t clients;               /* streams open now */
    uint64_t clients_total;         /* streams ever opened (refused ones excluded) */
    uint64_t events_total;          /* events received from Redis, each counted once */
    uint64_t bytes_total;           /* bytes queued to stream clients (frames, pings, resets) */
    uint64_t clients_cut_slow_total;/* streams closed for --client-buffer or a write timeout */
    uint64_t clients_refused_total; /* answered "too many clients" (over --max-clients) */
    uint64_t auth_failures_total;   /* 401 answers */
    bool redis_connected;           /* subscribed (or reading the stream) now */
    uint64_t redis_reconnects_total;/* connections to Redis after the first */
    uint64_t redis_connect_failures_total; /* attempts to connect that failed */
    uint64_t resets_total;          /* reset frames sent, one per client */
    uint64_t events_skipped_total;  /* events over --max-event-bytes, each counted once */
    /* POST /api/events/publish (relay.md, "Publishing"). */
    uint64_t pub_requests_total;    /* requests answered */
    uint64_t pub_events_accepted;   /* events applied (fanned out, or queued to Redis) */
    uint64_t pub_events_duplicate;  /* events of resent batches already applied: not again */
    uint64_t pub_refused_bad_request, pub_refused_unauthorized, pub_refused_forbidden;
    uint64_t pub_refused_too_large, pub_refused_unavailable, pub_refused_timeout;
    uint64_t pub_refused_length_required;
    uint64_t pub_publishers;        /* hub publishers in the exactly-once table */
    uint64_t pub_publishers_forgotten; /* evicted from it, least recently seen first */
    /* Hub mode's history (0 otherwise). */
    uint64_t hub_history_events, hub_history_bytes, hub_history_evicted_total;
} mae__relay_counters;

/* One metric of /metrics: its name, Prometheus type ("counter" or
 * "gauge"), HELP text, and where its value is in mae__relay_counters (a
 * uint64_t at offset, or with flag a bool read as 0 or 1). */
typedef struct mae__relay_metric {
    const char *name;
    const char *type;
    const char *help;
    size_t offset;
    bool flag;
} mae__relay_metric;

/* Every metric, in the order /metrics lists them. */
extern const mae__relay_metric mae__relay_metrics[];
extern const size_t mae__relay_metric_count;

/* The value of metric m in c. */
uint64_t mae__relay_metric_value(const mae__relay_metric *m, const mae__relay_counters *c);

/* Appends every metric of mae__relay_metrics in the Prometheus text
 * format, each with its HELP and TYPE lines (three lines a metric). */
void mae__metrics_render(mae__buf *b, const mae__relay_counters *c);

/* Appends {"status":"ok","redis":true|false,"clients":N,"source":M,"mode":M}
 * with M the mode ("pubsub", "stream" or "hub"). */
void mae__healthz_render(mae__buf *b, const mae__relay_counters *c, const char *mode,
                         bool ok);

/* /healthz says "ok":false when a Redis source made no progress (no entry,
 * no probe answered) for this many seconds, given the ping interval. */
#define MAE__HEALTHZ_STALL_S(ping_interval) (2.0 * (ping_interval) + 5.0)

#endif
