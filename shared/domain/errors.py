"""Errors by what the caller should do about them, not by where they came from.

    KeylessError
    ├── TemporaryError   "not yet": retry after `delay_seconds` (queue redelivery, never a sleep)
    └── PermanentError   "failed": a person must fix something; `reason` says what
        └── NotFoundError   the resource does not exist (ARM 404): a deletion, not a refusal

Adapters translate SDK exceptions into these by HTTP status and error *code* (never message
text) and chain the original as `__cause__`.
"""

from __future__ import annotations


class KeylessError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TemporaryError(KeylessError):
    """The world is not ready yet (replication, an operation in progress, throttling)."""

    def __init__(self, reason: str, delay_seconds: float = 30.0) -> None:
        super().__init__(reason)
        self.delay_seconds = delay_seconds


class PermanentError(KeylessError):
    """Retrying will not help until someone changes an input or a resource."""


class NotFoundError(PermanentError):
    """The resource does not exist. Callers that react to deletions tell it from a refusal (403)."""


class LedgerConflict(Exception):
    """Someone else wrote the ledger record since we read it: re-read and decide again."""
