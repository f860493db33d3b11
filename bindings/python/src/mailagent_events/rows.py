"""What the stores take and give back, as dataclasses.

Field names are those of the C structs (and of the SQLite columns). Strings
are None where the column is NULL; times are epoch seconds, 0.0 where the
column is NULL (as in C).
"""

from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass, fields
from typing import Any, Dict, Optional, Type, TypeVar

from .errors import Result

__all__ = [
    "Email",
    "EmailRow",
    "OutboxRow",
    "LlmRow",
    "RetryOutcome",
    "Enqueued",
    "TargetDepth",
    "QueueDepth",
    "LlmTotals",
]


@dataclass
class Email:
    """A mail's metadata as the watcher gives it to sync_store.upsert.
    Only internal_id and message_id are required."""

    internal_id: int
    message_id: str
    thread_id: Optional[str] = None
    subject: Optional[str] = None
    sender: Optional[str] = None
    sender_name: Optional[str] = None
    to_addr: Optional[str] = None
    cc_addr: Optional[str] = None
    date_received: Optional[str] = None
    mailbox: Optional[str] = None


@dataclass(frozen=True)
class EmailRow:
    """One row of email_metadata."""

    internal_id: int
    message_id: Optional[str]
    thread_id: Optional[str]
    subject: Optional[str]
    sender: Optional[str]
    sender_name: Optional[str]
    to_addr: Optional[str]
    cc_addr: Optional[str]
    date_received: Optional[str]
    mailbox: Optional[str]
    is_read: bool
    is_flagged: bool
    sync_status: Optional[str]
    notion_page_id: Optional[str]
    notion_thread_id: Optional[str]
    sync_error: Optional[str]
    retry_count: int
    next_retry_at: float
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class OutboxRow:
    """One row of email_outbox (an intent)."""

    outbox_id: int
    internal_id: int
    op_type: Optional[str]
    target: Optional[str]
    payload_json: Optional[str]
    source: Optional[str]
    status: Optional[str]
    attempts: int
    last_error: Optional[str]
    next_retry_at: float
    created_at: float
    updated_at: float

    @property
    def payload(self) -> Dict[str, Any]:
        """payload_json parsed."""
        return json.loads(self.payload_json) if self.payload_json else {}


@dataclass(frozen=True)
class LlmRow:
    """One row of llm_processing. Token counts and latency are 0 where NULL."""

    internal_id: int
    notion_page_id: Optional[str]
    mailbox: Optional[str]
    status: Optional[str]
    retry_count: int
    next_retry_at: float
    last_error: Optional[str]
    model: Optional[str]
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_creation_input_tokens: int
    latency_ms: int
    labels_json: Optional[str]
    created_at: float
    updated_at: float

    @property
    def labels(self) -> Optional[Dict[str, Any]]:
        """labels_json parsed, None where NULL."""
        return json.loads(self.labels_json) if self.labels_json else None


@dataclass(frozen=True)
class RetryOutcome:
    """What a mark_failed did: the row's count after this failure, when it
    will be retried (0.0 when terminal), and whether it was terminal
    (dead_letter / gave_up)."""

    attempts: int
    next_retry_at: float
    terminal: bool


@dataclass(frozen=True)
class Enqueued:
    """What outbox.enqueue did. result is Result.OK (inserted: a new intent
    and an outbox.enqueued event; or merged into the pending intent
    outbox_id, with no event) or Result.SKIPPED (echo prevention: nothing
    written, outbox_id -1)."""

    result: Result
    outbox_id: int
    inserted: bool

    @property
    def skipped(self) -> bool:
        """True for echo prevention."""
        return self.result == Result.SKIPPED


@dataclass(frozen=True)
class TargetDepth:
    """Intents of one target by status."""

    pending: int
    processing: int
    failed: int


@dataclass(frozen=True)
class QueueDepth:
    """The outbox's depth for `mailagent admin queue-depth`."""

    pending: int
    processing: int
    done: int
    failed: int
    dead_letter: int
    mailapp: TargetDepth
    notion: TargetDepth
    pending_under_1m: int
    pending_under_5m: int
    pending_under_30m: int
    pending_over_30m: int
    oldest_pending_age_s: float


@dataclass(frozen=True)
class LlmTotals:
    """Totals for `mailagent llm stats`; latencies over successes, 0 when none."""

    successes: int
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_creation_input_tokens: int
    latency_mean_ms: float
    latency_p95_ms: float


D = TypeVar("D")


def from_c(cls: Type[D], s: ctypes.Structure) -> D:
    """The dataclass `cls` filled from the C struct `s`, field by name;
    bytes become str (invalid UTF-8, which the stores never write, as
    U+FFFD), nested structs become their dataclass."""
    values: Dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        v = getattr(s, f.name)
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, ctypes.Structure):
            v = from_c(TargetDepth, v)
        values[f.name] = v
    return cls(**values)
