/* The fire-and-forget publisher: builds each event's JSON line on the
 * caller's thread, queues it, and lets one background I/O thread per
 * publisher PUBLISH it to Redis, or POST it to a relay running as the hub
 * (relay_url, when there is no Redis).
 *
 * Threading: a mae_publisher is thread-safe. Any number of threads may
 * publish through one publisher and read its counters; open and close are
 * called once each, by the owner. After fork(), calls in the child are
 * harmless no-ops (counted as dropped_disabled) and close in the child
 * frees what it can without touching the parent's connection.
 *
 * The fork promise relies on glibc's behaviour after fork() in a threaded
 * process: the library's pthread_atfork handlers take every publisher's
 * mutex before the fork and the child's handler unlocks them, which POSIX
 * leaves undefined but glibc supports (as libuv's uv_loop_fork documents
 * for its own loops). The child may call only async-signal-safe functions
 * before exec in strict POSIX terms; with glibc, publish calls and close
 * are safe there too.
 *
 * Memory: an enabled publisher maps its queue at open, queue_max_bytes
 * plus 4 bytes per queue_max_events, and makes room for a full queue of
 * lines up to 256 bytes resident (queue_max_events x 256 bytes, at most
 * all of it: 16 MiB with the defaults, about 4 ms of open's time). So no
 * publish call allocates,
 * and none takes a page fault unless a backlog of unusually long lines
 * outgrows that part (each page then faults once, on the caller). */
#ifndef MAILAGENT_PUBLISHER_H
#define MAILAGENT_PUBLISHER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mailagent/common.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mae_publisher mae_publisher;

/* The channel events go to when none is configured (docs/events.md). */
#define MAE_DEFAULT_CHANNEL "mailagent:events:v1"

/* The default of max_event_bytes: 1 MiB. */
#define MAE_DEFAULT_MAX_EVENT_BYTES ((size_t)1 << 20)

/* Log levels given to the log callback. */
enum { MAE_LOG_ERROR = 0, MAE_LOG_WARN = 1, MAE_LOG_INFO = 2 };

/* Called on the I/O thread, never on a publishing thread, and for each kind
 * of problem at most once a minute; `repeats` counts the occurrences that
 * were folded into this call since the last one. `msg` is borrowed. */
typedef void (*mae_log_fn)(void *user, int level, const char *msg, uint64_t repeats);

typedef struct mae_publisher_config {
    const char *redis_url;      /* NULL or "" = none: hub mode with relay_url, else disabled */
    const char *channel;        /* default "mailagent:events:v1" */
    size_t queue_max_events;    /* default 65536 */
    size_t queue_max_bytes;     /* default 64 MiB */
    int connect_timeout_ms;     /* default 1000 */
    int io_timeout_ms;          /* default 1000 */
    int backoff_min_ms;         /* default 100: first reconnect delay */
    int backoff_max_ms;         /* default 5000: cap of the doubling delay */
    size_t batch_max_events;    /* default 256: PUBLISHes pipelined per batch */
    mae_log_fn log;             /* NULL = silent */
    void *log_user;
    /* Where open writes one line saying why it failed (e.g. which part of the
     * URL is malformed); may be NULL. Written only when open fails. */
    char *error_buf;
    size_t error_buf_size;
    /* Later additions, in the order they came: new fields go only at the
     * end (docs/api.md, "ABI"). */
    /* Stream mode (docs/relay.md): also append each event to this Redis Stream
     * (XADD key MAXLEN ~ stream_maxlen * event <line>), exactly once across
     * broken connections, and still PUBLISH it to the channel, once. Each
     * batch is one EVALSHA of a script loaded per connection, which skips
     * the events of a resent batch that Redis had already applied; the
     * last applied number lives in the key "<stream_key>:publisher:<id>"
     * (id: 128 random bits made at open), expiring a week after the last
     * batch. Needs Redis >= 5. A batch stays in flight until acknowledged,
     * and is resent on the next connection; a batch Redis refuses with an
     * error (e.g. the key holds another type) is counted in
     * dropped_send_error and not resent. NULL or "" = off. Copied. */
    const char *stream_key;
    size_t stream_maxlen;       /* default 100000 (0 = default), approximate */
    /* The longest event line accepted, in bytes (the whole JSON line as
     * published, envelope included); default 1048576 (1 MiB), 0 = default.
     * A longer line is refused before it is queued: the fire-and-forget
     * calls count it in dropped_too_large and nothing is sent; a store write
     * whose event would be longer fails with MAE_EINVAL and changes nothing
     * (only while the publisher is live: publisher.md, "Event size"). */
    size_t max_event_bytes;
    /* Hub mode (docs/publisher.md, "Hub mode"): with no redis_url, post each
     * batch to a relay running as the hub, at this base URL: http://host[:port]
     * with an optional trailing '/' and nothing else (no path, query, user
     * or https; port 80 when absent). Each batch is one
     * POST <relay_url>/api/events/publish of NDJSON on a kept-alive
     * connection, applied exactly once by the hub however often it is
     * resent. Setting both redis_url and relay_url is an error (MAE_EINVAL
     * naming both). NULL or "" = unset. Copied. */
    const char *relay_url;
    /* Hub mode: sent as X-MailAgent-Local-Token with every batch; must not
     * contain control characters. NULL or "" = no token header. Copied. */
    const char *relay_token;
    /* Stream mode across a failover (publisher.md, "Failover"). A batch
     * counts as delivered only once WAIT confirms it reached wait_replicas
     * replicas within wait_timeout_ms; until then it stays in flight and is
     * resent (the script applies it once). 0 = off (the URL's query
     * ?wait_replicas=N&wait_timeout_ms=M sets them when these are 0);
     * wait_timeout_ms defaults to 100 and must be below io_timeout_ms.
     * Hub mode has no WAIT and no resend window: set with relay_url, these
     * four are refused (MAE_EINVAL naming them). */
    int wait_replicas;
    int wait_timeout_ms;
    /* The resend window: what Redis acknowledged is kept this long and up to
     * this many bytes of lines, to be sent again when a new master answers
     * that it lacks them. Defaults 10000 ms and 8 MiB (0 = default). */
    int resend_window_ms;
    size_t resend_window_bytes;
} mae_publisher_config;

/* Counters. They add up at every instant:
 *   calls = enqueued + dropped_queue_full + dropped_disabled + dropped_invalid
 *           + dropped_too_large
 *   enqueued = published + dropped_send_error + queued + in_flight
 *   rejected_auth + rejected_invalid + rejected_server <= dropped_send_error
 *   lost_failover <= published                                               */
typedef struct mae_publisher_stats {
    uint64_t enqueued, published;
    uint64_t dropped_queue_full, dropped_disabled, dropped_invalid, dropped_send_error;
    uint64_t queued, queued_bytes, connects, connect_failures;
    bool connected;
    uint64_t in_flight;         /* taken off the queue, reply not read yet */
    uint64_t calls;             /* every publish call on this publisher */
    char last_error[128];       /* "" when none */
    double last_error_at;       /* epoch s; 0 when none */
    /* Stream mode and hub mode (0 otherwise). resent: events sent again
     * after a connection broke before Redis (the hub) acknowledged them;
     * skipped: of those, the ones already applied, so they were appended
     * and published only once. Both are already counted in published once
     * each. */
    uint64_t resent, skipped;
    /* Later additions, in the order they came: new fields go only at the
     * end (docs/api.md, "ABI"). */
    /* Calls whose line was longer than max_event_bytes: refused, not sent. */
    uint64_t dropped_too_large;
    /* Hub mode only (0 otherwise): events of batches the hub refused, by why.
     * Each is also counted in dropped_send_error, so
     *   rejected_auth + rejected_invalid + rejected_server <= dropped_send_error.
     * rejected_auth: answered 401 or 403 (relay_token wrong or missing);
     * rejected_invalid: answered 400, 413 or another 4xx;
     * rejected_server: answered 500 or another 5xx but 503, three sends in a
     * row (503 means "not now": retried with backoff, never dropped). */
    uint64_t rejected_auth, rejected_invalid, rejected_server;
    /* Stream mode: events Redis had acknowledged (counted in published) that
     * a new master after a failover did not hold and that were no longer in
     * the resend window, so they could not be sent again: lost. A part of
     * published, so the sums above still hold. */
    uint64_t lost_failover;
} mae_publisher_stats;

/* The size handshake (docs/api.md, "ABI"): sizeof each struct as this
 * library was built, for programs that load it at run time (the Python
 * package) and must allocate exactly what it reads and writes. A C program
 * compiled against these headers needs none of it: the soname ties it to a
 * library of the same layout. These functions can't fail. */
MAE_EXTERN size_t mae_publisher_config_size(void);
MAE_EXTERN size_t mae_publisher_stats_size(void);

/* Fills every field with its default. This function can't fail. */
MAE_EXTERN void mae_publisher_config_init(mae_publisher_config *cfg);

/* Creates a publisher and starts its I/O thread. Returns at once: it never
 * resolves, connects or waits. cfg and its strings are copied.
 * Returns MAE_OK and writes *out, or MAE_EINVAL (NULL cfg/out, malformed URL,
 * both redis_url and relay_url set, a relay_token with a control character,
 * empty channel, zero queue bounds, negative timeouts; the reason goes to
 * cfg->error_buf), or MAE_ENOMEM. With neither redis_url nor relay_url
 * (NULL or "") the publisher is disabled: its calls are counted as
 * dropped_disabled. */
MAE_EXTERN int mae_publisher_open(const mae_publisher_config *cfg, mae_publisher **out);

/* Waits until everything queued so far has been acknowledged or dropped.
 * Returns MAE_OK, or MAE_ETIMEDOUT when timeout_ms passed first (a negative
 * timeout waits forever). NULL or disabled publisher: MAE_OK at once. */
MAE_EXTERN int mae_publisher_flush(mae_publisher *p, int timeout_ms);

/* Flushes within timeout_ms, stops the I/O thread and frees everything.
 * Returns within timeout_ms (plus scheduling) even when Redis (or the hub)
 * is hung:
 * a blocked socket is shut down; a thread stuck in name resolution is
 * detached and frees its own state when it returns. Returns MAE_OK when all
 * queued events were sent, MAE_ETIMEDOUT when some were abandoned.
 * Closing NULL is a no-op that returns MAE_OK. */
MAE_EXTERN int mae_publisher_close(mae_publisher *p, int timeout_ms);

/* Copies the counters. NULL p gives all zeros. This function can't fail. */
MAE_EXTERN void mae_publisher_stats_get(const mae_publisher *p, mae_publisher_stats *out);

/* Fire-and-forget. Never blocks on I/O, never reports failure. data_json is
 * a JSON object text or NULL for {}; internal_id may be MAE_NO_ID. A NULL or
 * empty event_type or source, or a data_json that is not one JSON object, is
 * counted as dropped_invalid and nothing is sent. data_json follows the
 * grammar of outbox payloads: strict RFC 8259, at most 64 levels of nesting,
 * no "\u0000" (invalid UTF-8 is repaired, not refused); it is sent compacted,
 * keys in the order given. All strings are borrowed. */
MAE_EXTERN void mae_safe_publish(mae_publisher *p, const char *event_type, int64_t internal_id,
                                 const char *data_json, const char *source);

/* ---- typed builders: one per event type of docs/events.md ----------------
 * Same promise as mae_safe_publish: never block, never fail; a NULL
 * required string counts as dropped_invalid. Error texts are cut to 200
 * code points; invalid UTF-8 is repaired to U+FFFD. Epoch times are seconds. */

/* source NULL = "sync_store" */
MAE_EXTERN void mae_publish_email_synced(mae_publisher *p, int64_t internal_id,
                                         const char *notion_page_id, const char *source);
/* status is "fetch_failed" or "failed" */
MAE_EXTERN void mae_publish_email_failed(mae_publisher *p, int64_t internal_id, const char *status,
                                         int64_t retry_count, double next_retry_at,
                                         const char *error);
MAE_EXTERN void mae_publish_email_dead_letter(mae_publisher *p, int64_t internal_id,
                                              int64_t retry_count, const char *error);
/* intent_source NULL = null in data.source */
MAE_EXTERN void mae_publish_outbox_enqueued(mae_publisher *p, int64_t internal_id,
                                            int64_t outbox_id, const char *op_type,
                                            const char *target, const char *intent_source);
MAE_EXTERN void mae_publish_outbox_done(mae_publisher *p, int64_t internal_id, int64_t outbox_id);
MAE_EXTERN void mae_publish_outbox_failed(mae_publisher *p, int64_t internal_id,
                                          int64_t outbox_id, int64_t attempts,
                                          const char *last_error, double next_retry_at);
MAE_EXTERN void mae_publish_outbox_dead_letter(mae_publisher *p, int64_t internal_id,
                                               int64_t outbox_id, int64_t attempts,
                                               const char *last_error);
MAE_EXTERN void mae_publish_llm_success(mae_publisher *p, int64_t internal_id, const char *model,
                                        int64_t input_tokens, int64_t output_tokens,
                                        int64_t latency_ms);
MAE_EXTERN void mae_publish_llm_failed(mae_publisher *p, int64_t internal_id, int64_t retry_count,
                                       double next_retry_at, const char *error);
MAE_EXTERN void mae_publish_llm_gave_up(mae_publisher *p, int64_t internal_id,
                                        int64_t retry_count, const char *error);

#ifdef __cplusplus
}
#endif
#endif
