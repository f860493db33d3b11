"""The C structs this package passes to and reads from the library, mirrored
with ctypes: the one place their layout is written.

Each class names its fields exactly like the C struct in include/mailagent/,
in the same order, and nothing else: no spare bytes. Two checks keep it
true. tests/python/test_layout.py compiles a C program against the headers
that prints the size, alignment and offset of every field of every struct
here (and the result codes and source tags mirrored elsewhere in the
package) and compares them all. At import, _lib.py asks the loaded library
for the size of each struct it reads from or writes into (SIZE_FUNCTIONS,
the mae_*_size() handshake of docs/api.md) and refuses a library whose
sizes differ. When a header changes, change the class here (and nothing
else: the rest of the package reads fields by name).
"""

from __future__ import annotations

from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_bool,
    c_char,
    c_char_p,
    c_double,
    c_int,
    c_int64,
    c_size_t,
    c_uint64,
    c_void_p,
)

__all__ = [
    "LOG_FN",
    "CLOCK_FN",
    "PublisherConfig",
    "PublisherStats",
    "DbConfig",
    "RetryOutcome",
    "Count",
    "Counts",
    "Email",
    "EmailRow",
    "EmailList",
    "OutboxRow",
    "OutboxList",
    "TargetDepth",
    "OutboxDepth",
    "LlmUsage",
    "LlmRow",
    "LlmList",
    "LlmTotals",
    "C_NAMES",
    "SIZE_FUNCTIONS",
]

# typedef void (*mae_log_fn)(void *user, int level, const char *msg, uint64_t repeats);
LOG_FN = CFUNCTYPE(None, c_void_p, c_int, c_char_p, c_uint64)
# double (*clock)(void *user)
CLOCK_FN = CFUNCTYPE(c_double, c_void_p)


class PublisherConfig(Structure):
    """mae_publisher_config (publisher.h)."""

    _fields_ = [
        ("redis_url", c_char_p),
        ("channel", c_char_p),
        ("queue_max_events", c_size_t),
        ("queue_max_bytes", c_size_t),
        ("connect_timeout_ms", c_int),
        ("io_timeout_ms", c_int),
        ("backoff_min_ms", c_int),
        ("backoff_max_ms", c_int),
        ("batch_max_events", c_size_t),
        ("log", LOG_FN),
        ("log_user", c_void_p),
        ("error_buf", POINTER(c_char)),
        ("error_buf_size", c_size_t),
        # added after the first release, at the end (docs/api.md, ABI)
        ("stream_key", c_char_p),
        ("stream_maxlen", c_size_t),
        ("max_event_bytes", c_size_t),
        ("relay_url", c_char_p),
        ("relay_token", c_char_p),
        ("wait_replicas", c_int),
        ("wait_timeout_ms", c_int),
        ("resend_window_ms", c_int),
        ("resend_window_bytes", c_size_t),
    ]


class PublisherStats(Structure):
    """mae_publisher_stats (publisher.h)."""

    _fields_ = [
        ("enqueued", c_uint64),
        ("published", c_uint64),
        ("dropped_queue_full", c_uint64),
        ("dropped_disabled", c_uint64),
        ("dropped_invalid", c_uint64),
        ("dropped_send_error", c_uint64),
        ("queued", c_uint64),
        ("queued_bytes", c_uint64),
        ("connects", c_uint64),
        ("connect_failures", c_uint64),
        ("connected", c_bool),
        ("in_flight", c_uint64),
        ("calls", c_uint64),
        ("last_error", c_char * 128),
        ("last_error_at", c_double),
        ("resent", c_uint64),
        ("skipped", c_uint64),
        # added after the first release, at the end (docs/api.md, ABI)
        ("dropped_too_large", c_uint64),
        ("rejected_auth", c_uint64),
        ("rejected_invalid", c_uint64),
        ("rejected_server", c_uint64),
        ("lost_failover", c_uint64),
    ]


class DbConfig(Structure):
    """mae_db_config (db.h)."""

    _fields_ = [
        ("path", c_char_p),
        ("publisher", c_void_p),
        ("busy_timeout_ms", c_int),
        ("email_max_retries", c_int),
        ("outbox_max_attempts", c_int),
        ("llm_max_retries", c_int),
        ("clock", CLOCK_FN),
        ("clock_user", c_void_p),
        ("read_only", c_bool),
        ("error_buf", POINTER(c_char)),
        ("error_buf_size", c_size_t),
    ]


class RetryOutcome(Structure):
    """mae_retry_outcome (db.h)."""

    _fields_ = [
        ("attempts", c_int64),
        ("next_retry_at", c_double),
        ("terminal", c_bool),
    ]


class Count(Structure):
    """mae_count (db.h)."""

    _fields_ = [("key", c_char_p), ("count", c_int64)]


class Counts(Structure):
    """mae_counts (db.h)."""

    _fields_ = [("items", POINTER(Count)), ("count", c_size_t)]


class Email(Structure):
    """mae_email (sync_store.h): a mail's metadata as the watcher gives it."""

    _fields_ = [
        ("internal_id", c_int64),
        ("message_id", c_char_p),
        ("thread_id", c_char_p),
        ("subject", c_char_p),
        ("sender", c_char_p),
        ("sender_name", c_char_p),
        ("to_addr", c_char_p),
        ("cc_addr", c_char_p),
        ("date_received", c_char_p),
        ("mailbox", c_char_p),
    ]


class EmailRow(Structure):
    """mae_email_row (sync_store.h)."""

    _fields_ = [
        ("internal_id", c_int64),
        ("message_id", c_char_p),
        ("thread_id", c_char_p),
        ("subject", c_char_p),
        ("sender", c_char_p),
        ("sender_name", c_char_p),
        ("to_addr", c_char_p),
        ("cc_addr", c_char_p),
        ("date_received", c_char_p),
        ("mailbox", c_char_p),
        ("is_read", c_bool),
        ("is_flagged", c_bool),
        ("sync_status", c_char_p),
        ("notion_page_id", c_char_p),
        ("notion_thread_id", c_char_p),
        ("sync_error", c_char_p),
        ("retry_count", c_int64),
        ("next_retry_at", c_double),
        ("created_at", c_double),
        ("updated_at", c_double),
    ]


class EmailList(Structure):
    """mae_email_list (sync_store.h)."""

    _fields_ = [("rows", POINTER(EmailRow)), ("count", c_size_t)]


class OutboxRow(Structure):
    """mae_outbox_row (outbox.h)."""

    _fields_ = [
        ("outbox_id", c_int64),
        ("internal_id", c_int64),
        ("op_type", c_char_p),
        ("target", c_char_p),
        ("payload_json", c_char_p),
        ("source", c_char_p),
        ("status", c_char_p),
        ("attempts", c_int64),
        ("last_error", c_char_p),
        ("next_retry_at", c_double),
        ("created_at", c_double),
        ("updated_at", c_double),
    ]


class OutboxList(Structure):
    """mae_outbox_list (outbox.h)."""

    _fields_ = [("rows", POINTER(OutboxRow)), ("count", c_size_t)]


class TargetDepth(Structure):
    """The anonymous struct of mae_outbox_depth's `mailapp` and `notion`."""

    _fields_ = [("pending", c_int64), ("processing", c_int64), ("failed", c_int64)]


class OutboxDepth(Structure):
    """mae_outbox_depth (outbox.h)."""

    _fields_ = [
        ("pending", c_int64),
        ("processing", c_int64),
        ("done", c_int64),
        ("failed", c_int64),
        ("dead_letter", c_int64),
        ("mailapp", TargetDepth),
        ("notion", TargetDepth),
        ("pending_under_1m", c_int64),
        ("pending_under_5m", c_int64),
        ("pending_under_30m", c_int64),
        ("pending_over_30m", c_int64),
        ("oldest_pending_age_s", c_double),
    ]


class LlmUsage(Structure):
    """mae_llm_usage (llm.h)."""

    _fields_ = [
        ("model", c_char_p),
        ("input_tokens", c_int64),
        ("output_tokens", c_int64),
        ("cache_read_input_tokens", c_int64),
        ("cache_creation_input_tokens", c_int64),
        ("latency_ms", c_int64),
        ("labels_json", c_char_p),
    ]


class LlmRow(Structure):
    """mae_llm_row (llm.h)."""

    _fields_ = [
        ("internal_id", c_int64),
        ("notion_page_id", c_char_p),
        ("mailbox", c_char_p),
        ("status", c_char_p),
        ("retry_count", c_int64),
        ("next_retry_at", c_double),
        ("last_error", c_char_p),
        ("model", c_char_p),
        ("input_tokens", c_int64),
        ("output_tokens", c_int64),
        ("cache_read_input_tokens", c_int64),
        ("cache_creation_input_tokens", c_int64),
        ("latency_ms", c_int64),
        ("labels_json", c_char_p),
        ("created_at", c_double),
        ("updated_at", c_double),
    ]


class LlmList(Structure):
    """mae_llm_list (llm.h)."""

    _fields_ = [("rows", POINTER(LlmRow)), ("count", c_size_t)]


class LlmTotals(Structure):
    """mae_llm_totals (llm.h)."""

    _fields_ = [
        ("successes", c_int64),
        ("input_tokens", c_int64),
        ("output_tokens", c_int64),
        ("cache_read_input_tokens", c_int64),
        ("cache_creation_input_tokens", c_int64),
        ("latency_mean_ms", c_double),
        ("latency_p95_ms", c_double),
    ]


# The C type each class mirrors, for the layout test. TargetDepth has no C
# name: it is checked through mae_outbox_depth's `mailapp` member.
C_NAMES: dict[type, str] = {
    PublisherConfig: "mae_publisher_config",
    PublisherStats: "mae_publisher_stats",
    DbConfig: "mae_db_config",
    RetryOutcome: "mae_retry_outcome",
    Count: "mae_count",
    Counts: "mae_counts",
    Email: "mae_email",
    EmailRow: "mae_email_row",
    EmailList: "mae_email_list",
    OutboxRow: "mae_outbox_row",
    OutboxList: "mae_outbox_list",
    OutboxDepth: "mae_outbox_depth",
    LlmUsage: "mae_llm_usage",
    LlmRow: "mae_llm_row",
    LlmList: "mae_llm_list",
    LlmTotals: "mae_llm_totals",
}

# Every struct the package allocates and hands to the library (configs, the
# mail and usage it reads; stats, totals and outcomes it writes), with the
# library's size function for each: checked at import (_lib.py). The others are read through pointers
# the library returns, where fields it adds at the end are never reached.
SIZE_FUNCTIONS: dict[type, str] = {
    PublisherConfig: "mae_publisher_config_size",
    PublisherStats: "mae_publisher_stats_size",
    DbConfig: "mae_db_config_size",
    OutboxDepth: "mae_outbox_depth_size",
    LlmTotals: "mae_llm_totals_size",
    RetryOutcome: "mae_retry_outcome_size",
    Email: "mae_email_size",
    LlmUsage: "mae_llm_usage_size",
}
