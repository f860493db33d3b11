/* The `mailagent events serve` command: reads the relay's flags and the
 * credentials from the environment, checks them, and runs the SSE relay
 * (relay/relay.h) until SIGTERM or SIGINT. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/env.h"
#include "core/url.h"
#include "relay/relay.h"

#include "cli.h"

/* Splits HOST:PORT ("[v6]:PORT" for IPv6) into host (brackets removed,
 * written into buf) and port. */
static bool parse_listen(const char *s, char *buf, size_t size, int *port)
{
    const char *colon;
    size_t hlen;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return false;
        hlen = (size_t)(close - s - 1);
        memcpy(buf, s + 1, hlen < size ? hlen : 0);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || memchr(s, ':', (size_t)(colon - s)))
            return false;   /* a bare IPv6 address needs its brackets */
        hlen = (size_t)(colon - s);
        memcpy(buf, s, hlen < size ? hlen : 0);
    }
    if (hlen == 0 || hlen >= size)
        return false;
    buf[hlen] = '\0';
    int64_t p;
    if (!cli_parse_int64(colon + 1, 0, 65535, &p))
        return false;
    *port = (int)p;
    return true;
}

/* A stream path: '/' then visible ASCII without '?' or '#', and none of
 * the relay's own paths. */
static bool valid_path(const char *p)
{
    if (p[0] != '/' || strlen(p) > 512)
        return false;
    for (const char *c = p; *c; c++)
        if (*c <= ' ' || *c >= 0x7F || *c == '?' || *c == '#')
            return false;
    return strcmp(p, "/") != 0 && strcmp(p, "/healthz") != 0 && strcmp(p, "/metrics") != 0 &&
           strcmp(p, MAE__RELAY_HEALTH_PATH) != 0 && strcmp(p, MAE__RELAY_PUBLISH_PATH) != 0;
}

/* The relay's credentials from the environment (docs/relay.md's table):
 * WEBHOOK_SECRET, and the local token under MailAgent's name
 * MAILAGENT_LOCAL_API_TOKEN or our earlier MAILAGENT_LOCAL_TOKEN (both set
 * must agree). A value no header could match is refused. Returns CLI_OK or
 * CLI_USAGE after saying which variable is wrong. */
static int credentials_from_env(mae__relay_config *rc)
{
    const char *secret, *api_token, *token;
    char err[256];
    if (mae__env_credential(NULL, "WEBHOOK_SECRET", &secret, err, sizeof err) != MAE_OK ||
        mae__env_credential(NULL, "MAILAGENT_LOCAL_API_TOKEN", &api_token, err,
                            sizeof err) != MAE_OK ||
        mae__env_credential(NULL, "MAILAGENT_LOCAL_TOKEN", &token, err, sizeof err) != MAE_OK) {
        cli_error("%s", err);
        return CLI_USAGE;
    }
    if (api_token && token && strcmp(api_token, token) != 0) {
        cli_error("MAILAGENT_LOCAL_API_TOKEN and MAILAGENT_LOCAL_TOKEN are both set and "
                  "differ: set only MAILAGENT_LOCAL_API_TOKEN (MailAgent's name; "
                  "MAILAGENT_LOCAL_TOKEN is its alias)");
        return CLI_USAGE;
    }
    rc->credentials.webhook_secret = secret;
    rc->credentials.local_token = api_token ? api_token : token;
    return CLI_OK;
}

/* The default port from SSE_LOCAL_PORT (MailAgent's desktop app sets it),
 * else 9200. Returns CLI_OK or CLI_USAGE after saying why. */
static int port_from_env(int *port)
{
    const char *v = mae__env_get(NULL, "SSE_LOCAL_PORT");
    char buf[16];
    int64_t p;
    if (!v)
        return CLI_OK;
    while (*v == ' ' || *v == '\t')
        v++;
    size_t n = strcspn(v, " \t\r\n");
    if (n >= sizeof buf || v[n + strspn(v + n, " \t\r\n")] != '\0') {
        cli_error("SSE_LOCAL_PORT wants a port from 0 to 65535");
        return CLI_USAGE;
    }
    memcpy(buf, v, n);
    buf[n] = '\0';
    if (!cli_parse_int64(buf, 0, 65535, &p)) {
        cli_error("SSE_LOCAL_PORT wants a port from 0 to 65535, not '%s'", buf);
        return CLI_USAGE;
    }
    *port = (int)p;
    return CLI_OK;
}

/* Reads optarg, the value of the size option name, from lo to hi into *out.
 * False after the usage error "name wants what from lo to hi, not '...'",
 * whose range is the one checked. */
static bool size_arg(const cli_command *cmd, const char *name, const char *what, int64_t lo,
                     int64_t hi, size_t *out)
{
    int64_t n;
    if (!cli_parse_int64(optarg, lo, hi, &n)) {
        cli_usage_error(cmd, "%s wants %s from %lld to %lld, not '%s'", name, what, (long long)lo,
                        (long long)hi, optarg);
        return false;
    }
    *out = (size_t)n;
    return true;
}

static int run(const cli_command *cmd, cli_config *cfg, int argc, char **argv)
{
    static const struct option opts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"path", required_argument, NULL, 'p'},
        {"ping-interval", required_argument, NULL, 'i'},
        {"max-clients", required_argument, NULL, 'm'},
        {"client-buffer", required_argument, NULL, 'b'},
        {"max-event-bytes", required_argument, NULL, 'e'},
        {"max-body-bytes", required_argument, NULL, 'B'},
        {"history", required_argument, NULL, 'H'},
        {"history-bytes", required_argument, NULL, 'Y'},
        {"allow-open", no_argument, NULL, 'o'},
        {"quiet", no_argument, NULL, 'q'},
        CLI_GLOBAL_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    mae__relay_config rc;
    char host[256];
    bool allow_open = false, listen_given = false;
    int c;

    mae__relay_config_init(&rc);
    snprintf(host, sizeof host, "%s", rc.host);
    while ((c = cli_getopt(cmd, cfg, argc, argv, "", opts)) != -1) {
        switch (c) {
        case 'l':
            if (!parse_listen(optarg, host, sizeof host, &rc.port))
                return cli_usage_error(cmd, "--listen wants HOST:PORT (IPv6 as [::1]:9200), "
                                       "not '%s'", optarg);
            listen_given = true;
            break;
        case 'p':
            if (!valid_path(optarg))
                return cli_usage_error(cmd, "--path wants a path like /api/events/stream "
                                       "(not /, /healthz or /metrics), not '%s'", optarg);
            rc.path = optarg;
            break;
        case 'i':
            if (!cli_parse_seconds(optarg, &rc.ping_interval) ||
                rc.ping_interval < MAE__RELAY_MIN_PING || rc.ping_interval > 86400)
                return cli_usage_error(cmd, "--ping-interval wants seconds from 0.05 to 86400, "
                                       "not '%s'", optarg);
            break;
        case 'm':
            if (!size_arg(cmd, "--max-clients", "a number", 1, 1000000, &rc.max_clients))
                return CLI_USAGE;
            break;
        case 'b':
            if (!size_arg(cmd, "--client-buffer", "bytes", 1024, (int64_t)1 << 30,
                          &rc.client_buffer))
                return CLI_USAGE;
            break;
        case 'e':
            if (!size_arg(cmd, "--max-event-bytes", "bytes", 1024, (int64_t)1 << 30,
                          &rc.max_event_bytes))
                return CLI_USAGE;
            break;
        case 'B':
            if (!size_arg(cmd, "--max-body-bytes", "bytes", 1024, (int64_t)1 << 32,
                          &rc.max_body_bytes))
                return CLI_USAGE;
            break;
        case 'H':
            if (!size_arg(cmd, "--history", "a number of events", 0, 100000000,
                          &rc.history_events))
                return CLI_USAGE;
            break;
        case 'Y':
            if (!size_arg(cmd, "--history-bytes", "bytes", 0, (int64_t)1 << 40, &rc.history_bytes))
                return CLI_USAGE;
            break;
        case 'o':
            allow_open = true;
            break;
        case 'q':
            rc.quiet = true;
            break;
        case 'h':
            return CLI_OK;
        default:
            return CLI_USAGE;
        }
    }
    if (!cli_positionals(cmd, argc, argv, 0, 0))
        return CLI_USAGE;
    if (!listen_given && port_from_env(&rc.port) != CLI_OK)
        return CLI_USAGE;
    char err[256];
    if (cfg->redis_url) {
        /* rediss:// too (the relay's link speaks TLS), and redis-sentinel:// (its
         * link asks the Sentinels where the master is). */
        mae__url url;
        if (mae__url_parse_for(cfg->redis_url, MAE__URL_ALLOW_TLS | MAE__URL_ALLOW_SENTINEL,
                                &url, err, sizeof err) !=
            MAE_OK) {
            cli_error("invalid Redis URL: %s", err);
            return CLI_USAGE;
        }
        mae__url_free(&url);
    } else if (cfg->stream_key) {
        return cli_usage_error(cmd, "--stream needs a Redis URL: the hub (no Redis URL) keeps "
                               "its own history, see --history");
    }

    rc.host = host;
    rc.redis_url = cfg->redis_url;
    rc.channel = cfg->channel;
    rc.stream_key = cfg->stream_key;   /* --stream or $MAILAGENT_STREAM */
    if (credentials_from_env(&rc) != CLI_OK)
        return CLI_USAGE;
    if (!mae__credentials_required(&rc.credentials) && !allow_open &&
        !mae__relay_host_is_loopback(host)) {
        cli_error("refusing to serve without credentials on %s, which is not a loopback "
                  "address: set WEBHOOK_SECRET or MAILAGENT_LOCAL_API_TOKEN, or pass --allow-open",
                  host);
        return CLI_USAGE;
    }
    if (!rc.redis_url)
        fprintf(stderr, "mailagent: no Redis URL: hub mode, events arrive on POST "
                        "/api/events/publish\n");
    if (mae__relay_run(&rc, err, sizeof err) != 0) {
        cli_error("%s", err);
        return CLI_FAIL;
    }
    return CLI_OK;
}

const cli_command cli_events_serve = {
    "events", "serve",
    "[--listen HOST:PORT] [--path PATH] [--ping-interval SECONDS] [--stream KEY] "
    "[--max-clients N] [--client-buffer BYTES] [--max-event-bytes BYTES] "
    "[--max-body-bytes BYTES] [--history N] [--history-bytes BYTES] [--allow-open] [--quiet]",
    "Serve the events to HTTP clients as Server-Sent Events, with a live dashboard.",
    "One Redis subscription fanned out to every client (curl -N, EventSource,\n"
    "httpx...). GET PATH is the stream, GET / the dashboard page, GET /healthz,\n"
    "GET /api/events/health and GET /metrics (Prometheus) the relay's state;\n"
    "POST /api/events/publish takes events (JSON or NDJSON) and publishes them.\n"
    "With no Redis URL at all the relay is the hub of one machine: events\n"
    "arrive only on POST /api/events/publish, each gets an id, and the last\n"
    "--history are kept in memory for clients that resume.\n"
    "Stops on SIGINT or SIGTERM; SIGHUP is ignored.\n"
    "Credentials come from the environment: WEBHOOK_SECRET (sent as\n"
    "X-Webhook-Token or Authorization: Bearer) and MAILAGENT_LOCAL_API_TOKEN\n"
    "(alias MAILAGENT_LOCAL_TOKEN; sent as X-MailAgent-Local-Token); with\n"
    "neither, the stream is open, which is only allowed on a loopback address\n"
    "unless --allow-open. A credential with surrounding whitespace or a control\n"
    "character is refused.\n"
    "Options:\n"
    "  --listen HOST:PORT     address to listen on (default 127.0.0.1 and port\n"
    "                         $SSE_LOCAL_PORT, else 9200;\n"
    "                         IPv6 as [::1]:9200; port 0 picks a free one)\n"
    "  --path PATH            the stream's path (default /api/events/stream)\n"
    "  --ping-interval SECONDS  heartbeat period, at least 0.05 (default 15)\n"
    "  --stream KEY           stream mode: read the events' Redis Stream instead\n"
    "                         of the channel (default $MAILAGENT_STREAM); every\n"
    "                         frame has an id, and a client that comes back with\n"
    "                         Last-Event-ID (or ?last_event_id=) gets what it missed\n"
    "  --max-clients N        streams served at once (default 10000); over it a\n"
    "                         client is told to retry later\n"
    "  --client-buffer BYTES  most bytes a client may leave unread (default\n"
    "                         1048576); a client over it for 2 s, or over 4\n"
    "                         times it at once, is cut\n"
    "  --max-event-bytes BYTES  larger events go out as an \"event: skipped\"\n"
    "                         frame naming them (default 1048576)\n"
    "  --max-body-bytes BYTES  a POST /api/events/publish body over this is\n"
    "                         refused (413) unread (default 16777216)\n"
    "  --history N            hub mode: events kept for resuming (default 10000;\n"
    "                         0: none)\n"
    "  --history-bytes BYTES  hub mode: and at most this many bytes of them\n"
    "                         (default 67108864)\n"
    "  --allow-open           serve without credentials on a non-loopback address\n"
    "  --quiet                no per-client log lines\n",
    run,
};
