"""mailagent_events: record mail-sync state in SQLite and announce every
change as a JSON event on Redis, through libmailagent-events.

The one-import switch for MailAgent: its src/events/publisher.py becomes ::

    from mailagent_events import *

and its calls run unchanged::

    safe_publish("email.new")
    safe_publish("outbox.failed", internal_id=53675, data={"outbox_id": 17}, source="outbox")
    get_publisher().publish("email.synced", internal_id=53675, data={"notion_page_id": "abc"})

The rest: Publisher (the fire-and-forget publisher), Db with its stores
(db.sync_store, db.outbox, db.llm_store) and transactions, the row
dataclasses, and one exception class per failure under MailagentError.
"""

from __future__ import annotations

from ._default import default_publisher
from ._mailagent import (
    DEFAULT_CHANNEL,
    EventPublisher,
    _build_payload,
    get_publisher,
    reset_publisher_for_tests,
    safe_publish,
)
from ._lib import version as library_version
from ._util import NO_ID
from .db import Db, LlmStore, Outbox, SyncStore
from .errors import (
    OK,
    SKIPPED,
    Busy,
    Closed,
    DatabaseError,
    InvalidArgument,
    InvalidState,
    MailagentError,
    NoMemory,
    NotFound,
    Result,
    Timeout,
)
from .publisher import LOG_ERROR, LOG_INFO, LOG_WARN, LogFn, Publisher, has_stream_mode
from .rows import (
    Email,
    EmailRow,
    Enqueued,
    LlmRow,
    LlmTotals,
    OutboxRow,
    QueueDepth,
    RetryOutcome,
    TargetDepth,
)

__version__ = "2.0.0"

# The documented source tags (events.md).
SOURCE_CLI = "cli"
SOURCE_NOTION_WEBHOOK = "notion_webhook"
SOURCE_AI_REVIEWED_HANDLER = "ai_reviewed_handler"
SOURCE_REVERSE_SYNC_POLL = "reverse_sync_poll"
SOURCE_OUTBOX = "outbox"
SOURCE_SYNC_STORE = "sync_store"
SOURCE_NEW_WATCHER = "new_watcher"
SOURCE_LLM_AGENT = "llm_agent"

# MailAgent's publisher module's names come first: `from mailagent_events
# import *` in place of its src/events/publisher.py gives its code and tests
# every name they import from it (its private _build_payload included).
__all__ = [
    "safe_publish",
    "DEFAULT_CHANNEL",
    "EventPublisher",
    "get_publisher",
    "reset_publisher_for_tests",
    "_build_payload",
    "default_publisher",
    "Publisher",
    "has_stream_mode",
    "LogFn",
    "LOG_ERROR",
    "LOG_WARN",
    "LOG_INFO",
    "Db",
    "SyncStore",
    "Outbox",
    "LlmStore",
    "Email",
    "EmailRow",
    "OutboxRow",
    "LlmRow",
    "RetryOutcome",
    "Enqueued",
    "QueueDepth",
    "TargetDepth",
    "LlmTotals",
    "Result",
    "OK",
    "SKIPPED",
    "NO_ID",
    "MailagentError",
    "InvalidArgument",
    "NoMemory",
    "NotFound",
    "InvalidState",
    "Busy",
    "DatabaseError",
    "Timeout",
    "Closed",
    "library_version",
    "SOURCE_CLI",
    "SOURCE_NOTION_WEBHOOK",
    "SOURCE_AI_REVIEWED_HANDLER",
    "SOURCE_REVERSE_SYNC_POLL",
    "SOURCE_OUTBOX",
    "SOURCE_SYNC_STORE",
    "SOURCE_NEW_WATCHER",
    "SOURCE_LLM_AGENT",
]
