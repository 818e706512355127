"""Short-lived leases in the ledger's table (PartitionKey "lease", RowKey a hash of the name): a name
held by one worker until it releases it or the lease runs out. The service uses them so that one
binding is reconciled by one worker at a time, and so that a storm of events about one cluster
queues one re-read.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)

from shared.adapters.ledger_migration import CurrentLayout
from shared.domain import retry_policy
from shared.domain.naming import short_hash

LEASES = "lease"


def _lease_entity(name: str, owner: str, seconds: float) -> dict[str, Any]:
    row = short_hash(name, length=40)
    return {"PartitionKey": LEASES, "RowKey": row, "name": name[:1000], "until": time.time() + seconds, "owner": owner}


class Leases(CurrentLayout):
    """Leases by name, and which of them this process holds (the owner token it wrote)."""

    def __init__(self, table_client: Any) -> None:
        super().__init__(table_client)
        self._owned: dict[str, str] = {}  # lease name -> the owner token this process wrote
        self._owned_lock = threading.Lock()

    def acquire(self, name: str, seconds: float) -> bool:
        """Hold `name` for `seconds`; False if someone else holds it (and their lease is running).

        Insert-if-absent, or take over an expired lease with an ETag-conditional replace: of two
        workers racing for it, exactly one wins."""

        self._ensure()
        row = short_hash(name, length=40)
        owner = uuid.uuid4().hex
        entity = _lease_entity(name, owner, seconds)
        for _ in range(retry_policy.LEASE_ACQUIRE_ROUNDS):
            try:
                self._table.create_entity(entity)
                self._own(name, owner)
                return True
            except ResourceExistsError:
                pass
            try:
                held = self._table.get_entity(LEASES, row)
            except ResourceNotFoundError:
                continue  # released meanwhile: try to insert again
            if float(held.get("until") or 0) > time.time():
                return False
            if self._replace_unchanged(entity, held):
                self._own(name, owner)
                return True
        return False

    def _replace_unchanged(self, entity: dict[str, Any], held: Any) -> bool:
        """Replace the lease row `held` was read from, only if nobody wrote it since; False if they did."""
        from azure.data.tables import UpdateMode

        try:
            self._table.update_entity(
                entity,
                mode=UpdateMode.REPLACE,
                etag=held.metadata.get("etag"),
                match_condition=MatchConditions.IfNotModified,
            )
            return True
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        except HttpResponseError as exc:
            if exc.status_code != 412:
                raise
            return False

    def _own(self, name: str, owner: str | None) -> None:
        with self._owned_lock:
            if owner is None:
                self._owned.pop(name, None)
            else:
                self._owned[name] = owner

    def renew(self, name: str, seconds: float) -> bool:
        """Extend a lease this process holds to `seconds` from now; False if it is no longer ours
        (it ran out and someone took it over, or it was released)."""
        with self._owned_lock:
            owner = self._owned.get(name)
        if owner is None:
            return False
        row = short_hash(name, length=40)
        try:
            held = self._table.get_entity(LEASES, row)
        except ResourceNotFoundError:
            return False
        if held.get("owner") != owner:
            self._own(name, None)
            return False
        return self._replace_unchanged(_lease_entity(name, owner, seconds), held)

    def seconds_left(self, name: str) -> float:
        """Seconds left on the lease of `name` (0 if nobody holds it)."""
        self._ensure()
        try:
            held = self._table.get_entity(LEASES, short_hash(name, length=40))
        except ResourceNotFoundError:
            return 0.0
        return max(float(held.get("until") or 0) - time.time(), 0.0)

    def release(self, name: str, only_own: bool = False) -> None:
        """Give the lease up (nothing if nobody holds it). `only_own`: only if this process still
        holds it (a run that outlived its lease must not free the worker that took over)."""
        self._ensure()
        with self._owned_lock:
            owner = self._owned.pop(name, None)
        row = short_hash(name, length=40)
        try:
            if only_own:
                held = self._table.get_entity(LEASES, row)
                if owner is None or held.get("owner") != owner:
                    return
                self._table.delete_entity(
                    LEASES, row, etag=held.metadata.get("etag"), match_condition=MatchConditions.IfNotModified
                )
            else:
                self._table.delete_entity(LEASES, row)
        except (ResourceNotFoundError, ResourceModifiedError):
            pass
        except HttpResponseError as exc:
            if exc.status_code != 412:  # taken over between our read and our delete: theirs now
                raise
