/* This module implements the texts of the relay's counters: the /metrics
 * page in Prometheus's text format and the /healthz answer. */
#include <inttypes.h>
#include <stdio.h>

#include "relay/metrics.h"

static void metric(mae__buf *b, const char *name, const char *type, const char *help,
                   uint64_t value)
{
    char line[320];
    int n = snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s %s\n%s %" PRIu64 "\n", name,
                     help, name, type, name, value);
    if (n > 0 && (size_t)n < sizeof line)
        mae__buf_put(b, line, (size_t)n);
    else
        b->oom = true;
}

void mae__metrics_render(mae__buf *b, const mae__relay_counters *c)
{
    metric(b, "mailagent_relay_clients", "gauge", "Event streams open now.", c->clients);
    metric(b, "mailagent_relay_clients_total", "counter", "Event streams opened.",
           c->clients_total);
    metric(b, "mailagent_relay_events_total", "counter", "Events received from Redis.",
           c->events_total);
    metric(b, "mailagent_relay_bytes_total", "counter", "Bytes queued to stream clients.",
           c->bytes_total);
    metric(b, "mailagent_relay_clients_cut_slow_total", "counter",
           "Streams closed because the client read too slowly.", c->clients_cut_slow_total);
    metric(b, "mailagent_relay_clients_refused_total", "counter",
           "Streams refused over --max-clients.", c->clients_refused_total);
    metric(b, "mailagent_relay_auth_failures_total", "counter",
           "Requests answered 401.", c->auth_failures_total);
    metric(b, "mailagent_relay_redis_connected", "gauge",
           "1 while the relay is subscribed to Redis.", c->redis_connected ? 1 : 0);
    metric(b, "mailagent_relay_redis_reconnects_total", "counter",
           "Connections to Redis after the first.", c->redis_reconnects_total);
    metric(b, "mailagent_relay_redis_connect_failures_total", "counter",
           "Attempts to connect to Redis that failed (refused, timed out, TLS verification).",
           c->redis_connect_failures_total);
    metric(b, "mailagent_relay_resets_total", "counter", "Reset frames sent to clients.",
           c->resets_total);
    metric(b, "mailagent_relay_events_skipped_total", "counter",
           "Events over --max-event-bytes, sent as a skipped frame.", c->events_skipped_total);
    metric(b, "mailagent_relay_publish_requests_total", "counter",
           "POST /api/events/publish requests answered.", c->pub_requests_total);
    metric(b, "mailagent_relay_publish_events_total", "counter",
           "Events accepted on POST /api/events/publish.", c->pub_events_accepted);
    metric(b, "mailagent_relay_publish_duplicates_total", "counter",
           "Events of resent batches already applied (not applied again).",
           c->pub_events_duplicate);
    metric(b, "mailagent_relay_publish_refused_bad_request_total", "counter",
           "Publish requests answered 400.", c->pub_refused_bad_request);
    metric(b, "mailagent_relay_publish_refused_unauthorized_total", "counter",
           "Publish requests answered 401.", c->pub_refused_unauthorized);
    metric(b, "mailagent_relay_publish_refused_forbidden_total", "counter",
           "Publish requests answered 403 (not loopback, no credential configured).",
           c->pub_refused_forbidden);
    metric(b, "mailagent_relay_publish_refused_too_large_total", "counter",
           "Publish requests answered 413.", c->pub_refused_too_large);
    metric(b, "mailagent_relay_publish_refused_unavailable_total", "counter",
           "Publish requests answered 503.", c->pub_refused_unavailable);
    metric(b, "mailagent_relay_publish_refused_timeout_total", "counter",
           "Publish requests answered 408 (body past its deadline).", c->pub_refused_timeout);
    metric(b, "mailagent_relay_publish_refused_length_required_total", "counter",
           "Publish requests answered 411 (chunked body).", c->pub_refused_length_required);
    metric(b, "mailagent_relay_publishers", "gauge",
           "Hub publishers in the exactly-once table.", c->pub_publishers);
    metric(b, "mailagent_relay_publishers_forgotten_total", "counter",
           "Hub publishers evicted from the exactly-once table.", c->pub_publishers_forgotten);
    metric(b, "mailagent_relay_hub_history_events", "gauge",
           "Hub mode: events kept for resuming.", c->hub_history_events);
    metric(b, "mailagent_relay_hub_history_bytes", "gauge",
           "Hub mode: bytes of the events kept, overhead included.", c->hub_history_bytes);
    metric(b, "mailagent_relay_hub_history_evicted_total", "counter",
           "Hub mode: events dropped from the history by its bounds.",
           c->hub_history_evicted_total);
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
