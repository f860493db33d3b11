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
    metric(b, "mailagent_relay_resets_total", "counter", "Reset frames sent to clients.",
           c->resets_total);
    metric(b, "mailagent_relay_events_skipped_total", "counter",
           "Events over --max-event-bytes, sent as a skipped frame.", c->events_skipped_total);
}

void mae__healthz_render(mae__buf *b, const mae__relay_counters *c)
{
    char line[96];
    int n = snprintf(line, sizeof line, "{\"status\":\"ok\",\"redis\":%s,\"clients\":%" PRIu64 "}",
                     c->redis_connected ? "true" : "false", c->clients);
    mae__buf_put(b, line, (size_t)n);
}
