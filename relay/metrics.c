/* This module implements the texts of the relay's counters: the /metrics
 * page in Prometheus's text format, rendered from one table of metrics, and
 * the /healthz answer. */
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "relay/metrics.h"

/* A field of mae__relay_counters: a uint64_t, or (FLAG) a bool read as 0/1. */
#define FIELD(f) offsetof(mae__relay_counters, f), false
#define FLAG(f) offsetof(mae__relay_counters, f), true

/* In the order /metrics lists them; docs/relay.md's counters table has a
 * row for each (tests/test_docs_relay.c). */
const mae__relay_metric mae__relay_metrics[] = {
    {"mailagent_relay_clients", "gauge", "Event streams open now.", FIELD(clients)},
    {"mailagent_relay_clients_total", "counter", "Event streams opened.", FIELD(clients_total)},
    {"mailagent_relay_events_total", "counter", "Events received from Redis.",
     FIELD(events_total)},
    {"mailagent_relay_bytes_total", "counter", "Bytes queued to stream clients.",
     FIELD(bytes_total)},
    {"mailagent_relay_clients_cut_slow_total", "counter",
     "Streams closed because the client read too slowly.", FIELD(clients_cut_slow_total)},
    {"mailagent_relay_clients_refused_total", "counter", "Streams refused over --max-clients.",
     FIELD(clients_refused_total)},
    {"mailagent_relay_auth_failures_total", "counter", "Requests answered 401.",
     FIELD(auth_failures_total)},
    {"mailagent_relay_redis_connected", "gauge", "1 while the relay is subscribed to Redis.",
     FLAG(redis_connected)},
    {"mailagent_relay_redis_reconnects_total", "counter", "Connections to Redis after the first.",
     FIELD(redis_reconnects_total)},
    {"mailagent_relay_redis_connect_failures_total", "counter",
     "Attempts to connect to Redis that failed (refused, timed out, TLS verification).",
     FIELD(redis_connect_failures_total)},
    {"mailagent_relay_resets_total", "counter", "Reset frames sent to clients.",
     FIELD(resets_total)},
    {"mailagent_relay_events_skipped_total", "counter",
     "Events over --max-event-bytes, sent as a skipped frame.", FIELD(events_skipped_total)},
    {"mailagent_relay_publish_requests_total", "counter",
     "POST /api/events/publish requests answered.", FIELD(pub_requests_total)},
    {"mailagent_relay_publish_events_total", "counter",
     "Events accepted on POST /api/events/publish.", FIELD(pub_events_accepted)},
    {"mailagent_relay_publish_duplicates_total", "counter",
     "Events of resent batches already applied (not applied again).",
     FIELD(pub_events_duplicate)},
    {"mailagent_relay_publish_refused_bad_request_total", "counter",
     "Publish requests answered 400.", FIELD(pub_refused_bad_request)},
    {"mailagent_relay_publish_refused_unauthorized_total", "counter",
     "Publish requests answered 401.", FIELD(pub_refused_unauthorized)},
    {"mailagent_relay_publish_refused_forbidden_total", "counter",
     "Publish requests answered 403 (not loopback, no credential configured).",
     FIELD(pub_refused_forbidden)},
    {"mailagent_relay_publish_refused_too_large_total", "counter",
     "Publish requests answered 413.", FIELD(pub_refused_too_large)},
    {"mailagent_relay_publish_refused_unavailable_total", "counter",
     "Publish requests answered 503.", FIELD(pub_refused_unavailable)},
    {"mailagent_relay_publish_refused_timeout_total", "counter",
     "Publish requests answered 408 (body past its deadline).", FIELD(pub_refused_timeout)},
    {"mailagent_relay_publish_refused_length_required_total", "counter",
     "Publish requests answered 411 (chunked body).", FIELD(pub_refused_length_required)},
    {"mailagent_relay_publishers", "gauge", "Hub publishers in the exactly-once table.",
     FIELD(pub_publishers)},
    {"mailagent_relay_publishers_forgotten_total", "counter",
     "Hub publishers evicted from the exactly-once table.", FIELD(pub_publishers_forgotten)},
    {"mailagent_relay_hub_history_events", "gauge", "Hub mode: events kept for resuming.",
     FIELD(hub_history_events)},
    {"mailagent_relay_hub_history_bytes", "gauge",
     "Hub mode: bytes of the events kept, overhead included.", FIELD(hub_history_bytes)},
    {"mailagent_relay_hub_history_evicted_total", "counter",
     "Hub mode: events dropped from the history by its bounds.",
     FIELD(hub_history_evicted_total)},
};

const size_t mae__relay_metric_count = sizeof mae__relay_metrics / sizeof mae__relay_metrics[0];

uint64_t mae__relay_metric_value(const mae__relay_metric *m, const mae__relay_counters *c)
{
    const char *p = (const char *)c + m->offset;
    if (m->flag) {
        bool v;
        memcpy(&v, p, sizeof v);
        return v ? 1 : 0;
    }
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

void mae__metrics_render(mae__buf *b, const mae__relay_counters *c)
{
    for (size_t i = 0; i < mae__relay_metric_count; i++) {
        const mae__relay_metric *m = &mae__relay_metrics[i];
        char line[320];
        int n = snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s %s\n%s %" PRIu64 "\n",
                         m->name, m->help, m->name, m->type, m->name,
                         mae__relay_metric_value(m, c));
        if (n > 0 && (size_t)n < sizeof line)
            mae__buf_put(b, line, (size_t)n);
        else
            b->oom = true;
    }
}

void mae__healthz_render(mae__buf *b, const mae__relay_counters *c, const char *mode,
                         bool ok)
{
    char line[200];
    int n = snprintf(line, sizeof line,
                     "{\"status\":\"%s\",\"redis\":%s,\"clients\":%" PRIu64
                     ",\"source\":\"%s\",\"mode\":\"%s\",\"ok\":%s}",
                     ok ? "ok" : "stalled", c->redis_connected ? "true" : "false", c->clients,
                     mode, mode, ok ? "true" : "false");
    mae__buf_put(b, line, (size_t)n);
}
