"""What the use cases need of storage and messaging, as Protocols: the seams the composition root
fills with adapters (shared.adapters.ledger, .workqueue, .topic) and mypy checks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from shared.domain.errors import LedgerConflict
from shared.domain.outcome_events import OutcomeEvent
from shared.domain.records import BindingRecord

__all__ = ["Ledger", "LedgerConflict", "OutcomeTopic", "WorkQueue"]


class Ledger(Protocol):
    """The bindings' records (ETag-conditional writes: `save` raises LedgerConflict when someone
    wrote since the read), leases, and quota counts."""

    def ping(self) -> None: ...
    def get(self, key: str) -> BindingRecord | None: ...
    def create(self, record: BindingRecord) -> bool: ...
    def save(self, record: BindingRecord) -> None: ...
    def acquire(self, name: str, seconds: float) -> bool: ...
    def renew(self, name: str, seconds: float) -> bool: ...
    def seconds_left(self, name: str) -> float: ...
    def release(self, name: str, only_own: bool = False) -> None: ...
    def claim_quota(self, quota: str, key: str, limit: int | None) -> tuple[bool, int]: ...
    def release_quota(self, quota: str, key: str) -> None: ...
    def query(
        self,
        cluster: str | None = None,
        namespace: str | None = None,
        account: str | None = None,
        page_size: int = 50,
        continuation: str | None = None,
        live_only: bool = False,
    ) -> tuple[list[BindingRecord], str | None]: ...
    def all(self, **filters: Any) -> Iterator[BindingRecord]: ...


class WorkQueue(Protocol):
    """The work queue the reconcile worker is triggered by."""

    def ping(self) -> None: ...
    def enqueue_raw(self, body: str, delay_seconds: float = 0) -> None: ...


class OutcomeTopic(Protocol):
    """Where outcome events go (an Event Grid topic)."""

    def publish(self, event: OutcomeEvent) -> None: ...
