"""The binding ledger in Azure Table storage: the API's source of truth, surviving restarts.

One entity per binding (PartitionKey "binding", RowKey = binding key). Writes are
conditional on the ETag read, so two workers never overwrite each other's outcome blindly.

Quotas (shared.domain.access.Grant) are counted in an index of their own: one partition per quota
(PartitionKey "quota-<hash>", RowKey = binding key), so counting a quota reads at most its limit
of rows, never the whole ledger.

The same table holds short-lived leases (PartitionKey "lease"): a name held by one worker until
it releases it or the lease runs out. The service uses them so that one binding is reconciled
by one worker at a time, and so that a storm of events about one cluster queues one re-read.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.adapters.counting import attempt_hook
from shared.domain import retry_policy
from shared.domain.errors import LedgerConflict, TemporaryError
from shared.domain.naming import short_hash
from shared.domain.records import BindingRecord

PARTITION = "binding"
LEASES = "lease"


def _client_options() -> dict[str, Any]:
    """Retries and timeouts from shared.domain.retry_policy.TABLES (a few quick tries: a worker or an
    HTTP caller should not hang on a storage outage), every attempt counted."""
    connect, read = retry_policy.TABLES.timeouts()
    return {
        **retry_policy.TABLES.retry.kwargs(),
        "connection_timeout": connect,
        "read_timeout": read,
        "raw_request_hook": attempt_hook("table"),
    }


# Lists and dicts are stored as JSON text (Table properties are scalars): every record field
# whose default is an empty list or dict, so that a new such field needs no change here.
_JSON_FIELDS = frozenset(
    f.name
    for f in dataclasses.fields(BindingRecord)
    if f.default_factory in (list, dict)  # type: ignore[comparison-overlap]
)


def _lease_entity(name: str, owner: str, seconds: float) -> dict[str, Any]:
    row = short_hash(name, length=40)
    return {"PartitionKey": LEASES, "RowKey": row, "name": name[:1000], "until": time.time() + seconds, "owner": owner}


def _to_entity(record: BindingRecord) -> dict[str, Any]:
    entity: dict[str, Any] = {"PartitionKey": PARTITION, "RowKey": record.key}
    for field, value in record.__dict__.items():
        if field in ("key", "etag"):
            continue
        entity[field] = json.dumps(value) if field in _JSON_FIELDS else value
    entity["cluster_key"] = record.cluster.lower()
    entity["account_key"] = record.account.lower()
    return entity


def _from_entity(entity: Any) -> BindingRecord:
    fields = {f for f in BindingRecord.__dataclass_fields__ if f not in ("key", "etag")}
    values: dict[str, Any] = {}
    for field in fields:
        if field not in entity:
            continue
        value = entity[field]
        values[field] = json.loads(value) if field in _JSON_FIELDS else value
    record = BindingRecord(key=entity["RowKey"], **values)
    record.etag = entity.metadata.get("etag")
    return record


class Ledger:
    def __init__(self, table_client: Any) -> None:
        self._table = table_client
        self._ready = False
        self._owned: dict[str, str] = {}  # lease name -> the owner token this process wrote
        self._owned_lock = threading.Lock()

    @classmethod
    def connect(
        cls,
        table_name: str,
        connection_string: str | None = None,
        account_name: str | None = None,
        credential: Any = None,
    ) -> Ledger:
        """From a connection string (Azurite), or an account name + Entra credential (Azure)."""
        from azure.data.tables import TableClient

        if connection_string:
            return cls(TableClient.from_connection_string(connection_string, table_name, **_client_options()))
        url = f"https://{account_name}.table.core.windows.net"
        return cls(TableClient(url, table_name, credential=credential, **_client_options()))

    def _ensure(self) -> None:
        if self._ready:
            return
        try:
            self._table.create_table()
        except ResourceExistsError:
            pass
        self._ready = True

    def ping(self) -> None:
        """Raises if the table cannot be reached (for /api/health)."""
        self._ensure()
        next(iter(self._table.query_entities("PartitionKey eq 'none'", results_per_page=1)), None)

    def get(self, key: str) -> BindingRecord | None:
        self._ensure()
        try:
            return _from_entity(self._table.get_entity(PARTITION, key))
        except ResourceNotFoundError:
            return None

    def create(self, record: BindingRecord) -> bool:
        """Insert; False if a record with this key exists already."""
        self._ensure()
        try:
            meta = self._table.create_entity(_to_entity(record))
        except ResourceExistsError:
            return False
        record.etag = meta.get("etag")
        return True

    def save(self, record: BindingRecord) -> None:
        """Replace, only if unchanged since read (LedgerConflict otherwise)."""
        from azure.data.tables import UpdateMode

        self._ensure()
        try:
            if record.etag:
                meta = self._table.update_entity(
                    _to_entity(record),
                    mode=UpdateMode.REPLACE,
                    etag=record.etag,
                    match_condition=MatchConditions.IfNotModified,
                )
            else:
                meta = self._table.upsert_entity(_to_entity(record), mode=UpdateMode.REPLACE)
        except (ResourceModifiedError, ResourceNotFoundError) as exc:
            raise LedgerConflict(record.key) from exc
        except HttpResponseError as exc:
            if exc.status_code == 412:
                raise LedgerConflict(record.key) from exc
            raise TemporaryError(
                f"ledger write failed ({exc.status_code})", retry_policy.LEDGER_WRITE_FAILED_SECONDS
            ) from exc
        record.etag = meta.get("etag")

    # --- leases ---------------------------------------------------------------------------

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

    # --- quotas ---------------------------------------------------------------------------

    def claim_quota(self, quota: str, key: str, limit: int | None) -> tuple[bool, int]:
        """Count binding `key` in `quota`: (True, count) when it is counted (it was already, or
        there was room), (False, count) when `limit` live bindings use the quota already. `limit`
        None: count it whatever the count (a binding granted before keeps its place).

        Insert, then count again: of two requests racing for the last place, neither goes over
        (both may be refused; the caller asks again)."""
        self._ensure()
        partition = _quota_partition(quota)
        try:
            self._table.get_entity(partition, key, select=["RowKey"])
            return True, -1
        except ResourceNotFoundError:
            pass
        if limit is not None:
            count = self._count(partition, limit + 1)
            if count >= limit:
                return False, count
        self._table.upsert_entity({"PartitionKey": partition, "RowKey": key, "quota": quota[:1000]})
        count = self._count(partition, (limit or 0) + 2)
        if limit is not None and count > limit:
            self.release_quota(quota, key)
            return False, count - 1
        return True, count

    def release_quota(self, quota: str, key: str) -> None:
        """Stop counting binding `key` in `quota` (nothing if it was not counted)."""
        if not quota:
            return
        self._ensure()
        try:
            self._table.delete_entity(_quota_partition(quota), key)
        except ResourceNotFoundError:
            pass

    def _count(self, partition: str, at_most: int) -> int:
        """Rows in the partition, reading no more than `at_most` of them."""
        rows = self._table.query_entities(
            "PartitionKey eq @pk", parameters={"pk": partition}, select=["RowKey"], results_per_page=min(at_most, 1000)
        )
        count = 0
        for _ in rows:
            count += 1
            if count >= at_most:
                break
        return count

    # --- queries --------------------------------------------------------------------------

    def query(
        self,
        cluster: str | None = None,
        namespace: str | None = None,
        account: str | None = None,
        page_size: int = 50,
        continuation: str | None = None,
        live_only: bool = False,
    ) -> tuple[list[BindingRecord], str | None]:
        """One page of records matching the filters, and the token for the next page."""
        self._ensure()
        clauses = ["PartitionKey eq @pk"]
        params: dict[str, Any] = {"pk": PARTITION}
        if cluster:
            clauses.append("cluster_key eq @cluster")
            params["cluster"] = cluster.lower()
        if namespace:
            clauses.append("namespace eq @ns")
            params["ns"] = namespace
        if account:
            clauses.append("account_key eq @account")
            params["account"] = account.lower()
        if live_only:
            clauses.append("desired eq 'present'")
        pages = self._table.query_entities(
            " and ".join(clauses), parameters=params, results_per_page=page_size
        ).by_page(continuation_token=_decode_token(continuation))
        page: Any = next(pages, [])
        records = [_from_entity(e) for e in page]
        return records, _encode_token(pages.continuation_token)  # type: ignore[attr-defined]

    def all(self, **filters: Any) -> Iterator[BindingRecord]:
        token: str | None = None
        while True:
            records, token = self.query(continuation=token, page_size=200, **filters)
            yield from records
            if not token:
                return


def _quota_partition(quota: str) -> str:
    return "quota-" + short_hash(quota.lower(), length=40)


def _encode_token(token: Any) -> str | None:
    if not token:
        return None
    import base64

    return base64.urlsafe_b64encode(json.dumps(token).encode()).decode()


def _decode_token(token: str | None) -> Any:
    if not token:
        return None
    import base64

    try:
        return json.loads(base64.urlsafe_b64decode(token.encode()))
    except ValueError:
        raise ValueError("continuation token is not valid") from None
