"""The binding ledger in Azure Table storage: the API's source of truth, surviving restarts.

Layout (one table; a lookup or a list reads its own partitions, never the whole table):

    PartitionKey              RowKey                         what
    "c-" + hash(cluster)      <namespace>|<sa>|<key>         a binding's record (its cluster's partition)
    "id"                      <key>                          pointer: key -> the record's PartitionKey/RowKey
    "a-" + hash(account)      "c-" + hash(cluster)|<key>     account index -> the record's PartitionKey/RowKey
    "meta"                    "layout"                       the layout version (written after a migration)
    "quota-<hash>"            <key>                          quota counts (below)
    "lease"                   <hash of the name>             leases (below)
    "paging"                  <until>|<hash of a secret>     API continuation tokens (shared.adapters.list_cursors)

so `get` is two point reads, a cluster's list (or a namespace's: a RowKey range, `N|` to `N}`) reads
one partition, an account's list reads its index partition and then, per cluster holding some of its
bindings, one range of that cluster's partition, and a list of everything scans the record partitions
only (`c-` <= PartitionKey < `c.`). Namespace and service account names are DNS-1123 (they never hold
`|`); any other character is %-encoded in a RowKey, so a range can never take in another namespace
("team" vs "team-a": `-` sorts before `|`). The cluster, namespace and service account of a key never
change, so a record never moves.

Writes are conditional on the ETag read, so two workers never overwrite each other's outcome blindly.
A new record's account index row and pointer are written before the record, so no crash leaves a
record `get` cannot find; a pointer (or index row) without its record means "no record".

Records removed (desired absent, status removed) longer ago than the retention are deleted with their
pointer and index rows (`purge_removed`); the record first, conditional on the ETag read, so a
binding asked for again meanwhile is kept.

Before this layout, every record was in one partition ("binding", RowKey = key). On first use an
instance that does not find the layout marker moves every such row (record created if absent, with
all its properties; pointer; account index; then the old row deleted) and then writes the marker.
Each step is idempotent, so several instances may migrate at once and a crash anywhere is finished
by the next start. While an instance migrates, `get` from its other threads falls back to the old row.
An instance of the old version still running after the marker was written would write old rows that
nothing moves: deploy so that the old version stops before the new one starts (as a restart does).

Quotas (shared.domain.access.Grant) are counted in an index of their own: one partition per quota
(PartitionKey "quota-<hash>", RowKey = binding key), so counting a quota reads at most its limit
of rows, never the whole ledger.

The same table holds short-lived leases (PartitionKey "lease"): a name held by one worker until
it releases it or the lease runs out. The service uses them so that one binding is reconciled
by one worker at a time, and so that a storm of events about one cluster queues one re-read.
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import datetime as dt
import itertools
import json
import math
import re
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)

from shared.adapters import list_cursors, telemetry
from shared.adapters.tables import storage_error, table_client
from shared.domain import retry_policy
from shared.domain.errors import LedgerConflict, TemporaryError
from shared.domain.naming import short_hash
from shared.domain.records import BindingRecord

LEGACY = "binding"  # the one partition of the layout before this one (rows moved on first use)
POINTERS = "id"
META, LAYOUT_ROW, LAYOUT_VERSION = "meta", "layout", 2
RECORDS_FROM, RECORDS_TO = "c-", "c."  # every record partition, and nothing else, is in [c-, c.)
LEASES = "lease"

PAGE = 1000  # rows per request when reading everything (Table storage's most)
_BATCH_OPS = 100  # operations per transaction (Table storage's most)
_BATCH_BYTES = 2_000_000  # well inside a transaction's 4 MiB
_MIGRATION_ROUND = 5000  # old rows moved at a time (a few MB in memory)
_PARALLEL_PARTITIONS = 8  # partitions written at once by a migration or a purge
_NARROWINGS = 3  # a transaction narrowed to what is still to do at most this often, then one at a time
_KEEP = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-")  # DNS-1123 characters, kept as they are in a RowKey
_TOKEN_TEXT = re.compile(r"[^\x00-\x1f\x7f/\\#?]{1,1024}")  # what a RowKey may hold
_RECORD_PARTITION = re.compile(r"c-[0-9a-f]{32}")


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


def _segment(text: str) -> str:
    """`text` as one part of a record's RowKey: DNS-1123 characters as they are, any other %-encoded
    (so a part never holds `|`, `}` or a character a RowKey forbids)."""
    if all(c in _KEEP for c in text):
        return text
    return "".join(c if c in _KEEP else urllib.parse.quote(c, safe="") for c in text)


def _cluster_partition(cluster: str) -> str:
    return RECORDS_FROM + short_hash(cluster.lower(), length=32)


def _account_partition(account: str) -> str:
    return "a-" + short_hash(account.lower(), length=32)


def _key_of(row_key: str) -> str:
    """The binding key in a record's RowKey (`<namespace>|<sa>|<key>`, or `<key>` in the old layout)."""
    return urllib.parse.unquote(row_key.rsplit("|", 1)[-1])


@dataclasses.dataclass(frozen=True)
class _Place:
    """Where one binding's rows are: its record, its pointer, its account index row."""

    key: str
    partition: str  # the record's PartitionKey: its cluster's
    row: str  # the record's RowKey
    account: str  # the account index's PartitionKey; "" when the binding names no account

    @classmethod
    def of(cls, key: str, cluster: str, namespace: str, service_account: str, account: str) -> _Place:
        row = f"{_segment(namespace)}|{_segment(service_account)}|{_segment(key)}"
        return cls(key, _cluster_partition(cluster), row, _account_partition(account) if account else "")

    @classmethod
    def of_record(cls, record: BindingRecord) -> _Place:
        return cls.of(record.key, record.cluster, record.namespace, record.service_account, record.account)

    @classmethod
    def of_entity(cls, entity: Any, key: str) -> _Place:
        """From a record's properties (either layout)."""
        return cls.of(
            key,
            str(entity.get("cluster_key") or entity.get("cluster") or ""),
            str(entity.get("namespace") or ""),
            str(entity.get("service_account") or ""),
            str(entity.get("account_key") or entity.get("account") or ""),
        )

    @property
    def index_row(self) -> str:
        return f"{self.partition}|{self.key}"

    def pointer(self) -> dict[str, Any]:
        return {"PartitionKey": POINTERS, "RowKey": self.key, "pk": self.partition, "rk": self.row}

    def index(self) -> dict[str, Any] | None:
        if not self.account:
            return None
        return {"PartitionKey": self.account, "RowKey": self.index_row, "pk": self.partition, "rk": self.row}

    def located(self, pointer: Any) -> bool:
        return pointer.get("pk") == self.partition and pointer.get("rk") == self.row


def _to_entity(record: BindingRecord) -> dict[str, Any]:
    place = _Place.of_record(record)
    entity: dict[str, Any] = {"PartitionKey": place.partition, "RowKey": place.row}
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
    record = BindingRecord(key=_key_of(entity["RowKey"]), **values)
    record.etag = entity.metadata.get("etag")
    return record


def _older_than(updated_at: Any, cutoff: float) -> bool:
    """`updated_at` (ISO 8601, "...Z") is before `cutoff` (epoch seconds); False when it is no date."""
    if not isinstance(updated_at, str) or not updated_at:
        return False
    try:
        when = dt.datetime.fromisoformat(updated_at.replace("Z", "+00:00"))
    except ValueError:
        return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp() < cutoff


Operation = tuple[str, dict[str, Any], dict[str, Any]]


def _transactions(ops: list[Operation]) -> list[list[list[Operation]]]:
    """`ops` as transactions, by partition: at most 100 operations and ~2 MB each."""
    by_partition: dict[str, list[Operation]] = {}
    for op in ops:
        by_partition.setdefault(op[1]["PartitionKey"], []).append(op)
    partitions = []
    for group in by_partition.values():
        chunks: list[list[Operation]] = [[]]
        size = 0
        for op in group:
            weight = len(json.dumps(op[1], default=str))
            if chunks[-1] and (len(chunks[-1]) >= _BATCH_OPS or size + weight > _BATCH_BYTES):
                chunks.append([])
                size = 0
            chunks[-1].append(op)
            size += weight
        partitions.append(chunks)
    return partitions


class Ledger:
    def __init__(self, table_client: Any) -> None:
        self._table = table_client
        self._current = False  # the table exists and holds the current layout (migrated if it was old)
        self._opening = threading.Lock()
        self._owned: dict[str, str] = {}  # lease name -> the owner token this process wrote
        self._owned_lock = threading.Lock()

    @classmethod
    def connect(
        cls,
        table_name: str,
        connection_string: str | None = None,
        endpoint: str | None = None,
        credential: Any = None,
        connection_verify: str | None = None,
    ) -> Ledger:
        """From a connection string (Azurite), or a table service URI + Entra credential (Azure)."""
        return cls(table_client(table_name, connection_string, endpoint, credential, connection_verify))

    # --- the table and its layout -----------------------------------------------------------

    def _ensure(self, wait: bool = True) -> bool:
        """Make sure the table exists and holds the current layout (migrating it on first use).
        True once it does; False only when `wait` is off and another thread of this instance is
        migrating right now (the caller then reads old rows too)."""
        if self._current:
            return True
        if not self._opening.acquire(blocking=wait):
            return False
        try:
            if not self._current:
                self._open()
            return True
        finally:
            self._opening.release()

    def _open(self) -> None:
        """One read when the table is current; creates the table when there is none."""
        marker = self._read(META, LAYOUT_ROW)
        if marker is None:
            try:
                self._table.create_table()
            except ResourceExistsError:
                pass
            else:  # a new table holds nothing of the old layout
                self._write_marker()
                self._current = True
                return
        if marker is None or int(marker.get("version") or 0) < LAYOUT_VERSION:
            self._migrate()
            self._write_marker()
        self._current = True

    def _write_marker(self) -> None:
        from azure.data.tables import UpdateMode

        entity = {"PartitionKey": META, "RowKey": LAYOUT_ROW, "version": LAYOUT_VERSION}
        self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)

    def _migrate(self) -> int:
        """Move every row of the old layout (PartitionKey "binding") to this one; returns how many
        this call moved. Idempotent, and safe with other instances doing the same: a record is
        created only where none is (a record moved and changed since is kept), pointer and index rows
        are the same whoever writes them, and an old row is deleted only once its record exists.

        Reads 1,000 old rows a request, 5,000 a round; writes a round in transactions (100 rows of one
        partition each: the more rows a round, the fuller a cluster's transactions). Starts at a random
        key, so that instances starting together mostly move different rows."""
        moved = 0
        legacy = {"pk": LEGACY, "start": uuid.uuid4().hex}
        for where in ("PartitionKey eq @pk and RowKey ge @start", "PartitionKey eq @pk"):
            while True:
                rows = list(itertools.islice(self._rows(where, legacy, PAGE), _MIGRATION_ROUND))
                if not rows:
                    break
                self._move(rows)
                moved += len(rows)
        return moved

    def _move(self, rows: list[Any]) -> None:
        from azure.data.tables import UpdateMode

        places = [_Place.of_entity(row, row["RowKey"]) for row in rows]
        upsert: dict[str, Any] = {"mode": UpdateMode.REPLACE}
        self._apply([("upsert", index, upsert) for p in places if (index := p.index()) is not None])
        self._apply([("upsert", p.pointer(), upsert) for p in places])
        records: list[Operation] = []
        for row, place in zip(rows, places, strict=True):
            entity = dict(row)
            entity.setdefault("cluster_key", str(row.get("cluster") or "").lower())
            entity.setdefault("account_key", str(row.get("account") or "").lower())
            entity["PartitionKey"], entity["RowKey"] = place.partition, place.row
            records.append(("create", entity, {}))
        self._apply(records)
        self._apply([("delete", {"PartitionKey": LEGACY, "RowKey": row["RowKey"]}, {}) for row in rows])

    # --- rows -------------------------------------------------------------------------------

    def _read(self, partition: str, row: str) -> Any:
        """One entity, or None."""
        try:
            return self._table.get_entity(partition, row)
        except ResourceNotFoundError:
            return None

    def _rows(
        self, where: str, parameters: dict[str, Any], per_page: int, select: list[str] | None = None
    ) -> Iterator[Any]:
        """Every row matching `where`, `per_page` a request; the SDK follows continuation tokens (an
        empty page with a token included), and fetches a page only when iteration reaches it."""
        return iter(self._table.query_entities(where, parameters=parameters, results_per_page=per_page, select=select))

    def _apply(self, ops: list[Operation]) -> set[tuple[str, str]]:
        """Run `ops` ("upsert", "create", "delete" with their keyword arguments) as transactions of one
        partition each. A transaction of creates or plain deletes that fails (another instance made or
        deleted some of its rows meanwhile) is narrowed, after one read of its rows, to what is still
        to do, and sent again; any other failing one is run one operation at a time. Partitions are
        written in parallel (a few at a time), a partition's transactions one after the other (one
        partition takes ~2,000 entities a second). Returns the (PartitionKey, RowKey) of the operations
        done: all but the creates of an entity that was there already and the conditional deletes of
        one changed since (a delete of one gone counts as done)."""
        partitions = _transactions(ops)
        if len(partitions) < 2:
            return set().union(*(self._transact(chunk) for chunks in partitions for chunk in chunks))
        with concurrent.futures.ThreadPoolExecutor(min(len(partitions), _PARALLEL_PARTITIONS)) as pool:
            done = pool.map(lambda chunks: set().union(*(self._transact(chunk) for chunk in chunks)), partitions)
            return set().union(*done)

    def _transact(self, chunk: list[Operation]) -> set[tuple[str, str]]:
        """One transaction (see `_apply`): what it did."""
        from azure.data.tables import TableTransactionError

        done: set[tuple[str, str]] = set()
        for _ in range(_NARROWINGS + 1):
            if len(chunk) < 2:
                break
            try:
                self._table.submit_transaction(chunk)
            except TableTransactionError:
                narrowed = self._still_to_do(chunk)
                if narrowed is None:
                    break
                if chunk[0][0] == "delete":  # those gone already
                    left = {op[1]["RowKey"] for op in narrowed}
                    done.update((e["PartitionKey"], e["RowKey"]) for _, e, _ in chunk if e["RowKey"] not in left)
                chunk = narrowed
            else:
                done.update((e["PartitionKey"], e["RowKey"]) for _, e, _ in chunk)
                return done
        done.update((e["PartitionKey"], e["RowKey"]) for kind, e, kw in chunk if self._one(kind, e, kw))
        return done

    def _still_to_do(self, chunk: list[Operation]) -> list[Operation] | None:
        """The creates of `chunk` whose entity is not there, or its plain deletes whose entity is (one
        range read of the partition); None for a chunk of other operations."""
        kinds = {kind for kind, _, _ in chunk}
        if any(kwargs for _, _, kwargs in chunk) or kinds not in ({"create"}, {"delete"}):
            return None
        (kind,) = kinds
        rows = {e["RowKey"] for _, e, _ in chunk}
        where = "PartitionKey eq @pk and RowKey ge @lo and RowKey le @hi"
        params = {"pk": chunk[0][1]["PartitionKey"], "lo": min(rows), "hi": max(rows)}
        there = {e["RowKey"] for e in self._rows(where, params, PAGE, select=["RowKey"])}
        return [op for op in chunk if (op[1]["RowKey"] in there) == (kind == "delete")]

    def _one(self, kind: str, entity: dict[str, Any], kwargs: dict[str, Any]) -> bool:
        try:
            if kind == "upsert":
                self._table.upsert_entity(entity, **kwargs)
            elif kind == "create":
                self._table.create_entity(entity)
            else:  # a delete of a missing entity succeeds (the SDK ignores its 404)
                self._table.delete_entity(entity["PartitionKey"], entity["RowKey"], **kwargs)
        except (ResourceExistsError, ResourceModifiedError):
            return False
        except HttpResponseError as exc:
            if exc.status_code == 412:
                return False
            raise
        return True

    def _index_and_point(self, place: _Place) -> None:
        """The account index row, then the pointer (a pointer means its index row exists)."""
        from azure.data.tables import UpdateMode

        index = place.index()
        if index is not None:
            self._table.upsert_entity(index, mode=UpdateMode.REPLACE)
        self._table.upsert_entity(place.pointer(), mode=UpdateMode.REPLACE)

    # --- records ----------------------------------------------------------------------------

    def ping(self) -> None:
        """Raises a KeylessError naming AzureWebJobsStorage and the fix if the table cannot be reached
        (for /api/health)."""
        try:
            self._ensure()
            next(iter(self._table.query_entities("PartitionKey eq 'none'", results_per_page=1)), None)
        except AzureError as exc:
            raise storage_error(exc, "the ledger's table") from exc

    def get(self, key: str) -> BindingRecord | None:
        """The record of `key`, or None: its pointer, then the record (two point reads). While this
        instance is migrating the table in another thread, a row of the old layout is found too."""
        current = self._ensure(wait=False)
        pointer = self._read(POINTERS, key)
        if pointer is not None:
            entity = self._read(str(pointer.get("pk") or ""), str(pointer.get("rk") or ""))
            if entity is not None:
                return _from_entity(entity)
        if current:
            return None
        entity = self._read(LEGACY, key)
        return _from_entity(entity) if entity is not None else None

    def create(self, record: BindingRecord) -> bool:
        """Insert; False if a record with this key exists already.

        Index row and pointer first (one read when the pointer is there already, as for every
        binding asked for again), then the record; then the pointer is read again, in case a purge
        of an older record with this key deleted it meanwhile (see `purge_removed`)."""
        self._ensure()
        place = _Place.of_record(record)
        pointer = self._read(POINTERS, record.key)
        if pointer is None or not place.located(pointer):
            self._index_and_point(place)
        try:
            meta = self._table.create_entity(_to_entity(record))
        except ResourceExistsError:
            return False
        record.etag = meta.get("etag")
        if self._read(POINTERS, record.key) is None:
            self._index_and_point(place)
        return True

    def create_many(self, records: list[BindingRecord]) -> int:
        """Insert many records at once (an import or a restore), in transactions of a hundred rows of one
        partition: index rows and pointers first, then the records, as `create` orders them. A record
        whose key exists already is left as it is; returns how many were inserted. Their ETags are not
        kept: read a record before saving it."""
        from azure.data.tables import UpdateMode

        self._ensure()
        places = [_Place.of_record(r) for r in records]
        upsert: dict[str, Any] = {"mode": UpdateMode.REPLACE}
        self._apply([("upsert", index, upsert) for p in places if (index := p.index()) is not None])
        self._apply([("upsert", p.pointer(), upsert) for p in places])
        done = self._apply([("create", _to_entity(r), {}) for r in records])
        return len(done)

    def save(self, record: BindingRecord) -> None:
        """Replace, only if unchanged since read (LedgerConflict otherwise, a missing record too).
        Without an ETag: create or replace (index row and pointer first, as `create`)."""
        from azure.data.tables import UpdateMode

        self._ensure()
        entity = _to_entity(record)
        try:
            if record.etag:
                meta = self._table.update_entity(
                    entity,
                    mode=UpdateMode.REPLACE,
                    etag=record.etag,
                    match_condition=MatchConditions.IfNotModified,
                )
            else:
                self._index_and_point(_Place.of_record(record))
                meta = self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)
        except (ResourceModifiedError, ResourceNotFoundError) as exc:
            raise LedgerConflict(record.key) from exc
        except HttpResponseError as exc:
            if exc.status_code == 412:
                raise LedgerConflict(record.key) from exc
            raise TemporaryError(
                f"ledger write failed ({exc.status_code})", retry_policy.LEDGER_WRITE_FAILED_SECONDS
            ) from exc
        record.etag = meta.get("etag")

    def purge_removed(self, older_than_seconds: float, now: float | None = None) -> int:
        """Delete the records removed (desired absent, status removed) whose `updated_at` is more than
        `older_than_seconds` before `now`, with their pointer and account index rows; returns how many.

        Reads the removed records (1,000 a request, the record partitions only); deletes each record
        conditional on the ETag read (one asked for again meanwhile stays), then its pointer and index
        row, in transactions. Last, it looks again at the records it deleted: one created again
        meanwhile (a `create` that wrote its pointer before this purge deleted it) gets its pointer
        and index row back."""
        self._ensure()
        cutoff = (time.time() if now is None else now) - older_than_seconds
        if math.isnan(cutoff):
            return 0
        where = "PartitionKey ge @from and PartitionKey lt @to and status eq 'removed' and desired eq 'absent'"
        rows = self._rows(where, {"from": RECORDS_FROM, "to": RECORDS_TO}, PAGE)
        purged = 0
        while chunk := list(itertools.islice(rows, PAGE)):
            purged += self._purge([row for row in chunk if _older_than(row.get("updated_at"), cutoff)])
        return purged

    def _purge(self, rows: list[Any]) -> int:
        if not rows:
            return 0
        conditional = {"match_condition": MatchConditions.IfNotModified}
        deleted = self._apply(
            [
                (
                    "delete",
                    {"PartitionKey": r["PartitionKey"], "RowKey": r["RowKey"]},
                    {**conditional, "etag": r.metadata["etag"]},
                )
                for r in rows
            ]
        )
        places = [
            _Place.of_entity(r, _key_of(r["RowKey"])) for r in rows if (r["PartitionKey"], r["RowKey"]) in deleted
        ]
        self._apply([("delete", p.pointer(), {}) for p in places])
        self._apply([("delete", index, {}) for p in places if (index := p.index()) is not None])
        for place in self._still_there(places):
            self._index_and_point(place)
        return len(places)

    def _still_there(self, places: list[_Place]) -> list[_Place]:
        """Those of `places` whose record exists: one range read per cluster partition."""
        by_partition: dict[str, list[_Place]] = {}
        for place in places:
            by_partition.setdefault(place.partition, []).append(place)
        found: list[_Place] = []
        for partition, group in by_partition.items():
            rows = {p.row for p in group}
            where = "PartitionKey eq @pk and RowKey ge @lo and RowKey le @hi"
            params = {"pk": partition, "lo": min(rows), "hi": max(rows)}
            present = {e["RowKey"] for e in self._rows(where, params, PAGE, select=["RowKey"]) if e["RowKey"] in rows}
            found.extend(p for p in group if p.row in present)
        return found

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
        visible: Callable[[BindingRecord], bool] | None = None,
        scan_limit: int | None = None,
    ) -> tuple[list[BindingRecord], str | None]:
        """One page of records matching the filters, and the token for the next page (None: no more).

        With `cluster`: its partition only (a namespace: a RowKey range of it), in RowKey order
        (`<namespace>|<sa>|<key>`). With `account` alone: its index, then the records it names, ordered by
        cluster, key. Neither: the record partitions. A page is never empty while matching records
        remain; in a cluster's list or the scan the token is given only when one more exists (the
        page is read with one record more); in an account's list filtered by namespace or
        `live_only`, the last token may lead to an empty page. The token is base64 JSON of where the
        page ended, a row's keys: for this process, never for a caller (shared.adapters.list_cursors);
        ValueError for one that is not ours, or is another list's.

        `visible`: only the records it keeps are listed (a page is filled with them). `scan_limit`: at
        most this many rows (an account's list: index rows) are read; a page that reaches it ends
        there, however few records it holds (none, maybe), with a token, which may lead to an empty
        last page."""
        self._ensure()
        size = max(int(page_size), 1)
        limit = max(int(scan_limit), 1) if scan_limit is not None else None
        after = _decode_token(continuation)
        if account and not cluster:
            return self._account_page(account, namespace, live_only, size, after, visible, limit)
        where, params = _record_filter(cluster, namespace, account, live_only)
        mode = "c" if cluster else "s"
        position = _position(after, mode, _cluster_partition(cluster) if cluster else None)
        if position is not None and cluster:
            where += " and RowKey gt @after_rk"
            params["after_rk"] = position[1]
        elif position is not None:  # the SDK substitutes parameters between spaces: none inside the parentheses
            where += " and PartitionKey ge @after_pk and ( PartitionKey gt @after_pk or RowKey gt @after_rk )"
            params["after_pk"], params["after_rk"] = position
        per_request = min(size + 1 if limit is None else limit, PAGE)
        kept: list[tuple[Any, BindingRecord]] = []  # (row, record), one more than the page when there is one
        last, scanned = None, 0
        for last in self._rows(where, params, per_request):
            scanned += 1
            record = _from_entity(last)
            if visible is None or visible(record):
                kept.append((last, record))
                if len(kept) > size:
                    break
            if limit is not None and scanned >= limit:
                break
        telemetry.annotate(**{"keyless.list.scanned": scanned})
        page = [record for _, record in kept[:size]]
        if len(kept) > size:
            end = kept[size - 1][0]
        elif limit is not None and scanned >= limit:
            end = last
        else:
            return page, None
        return page, _encode_token(mode, end["PartitionKey"], end["RowKey"])

    def _account_page(
        self,
        account: str,
        namespace: str | None,
        live_only: bool,
        size: int,
        after: dict[str, Any] | None,
        visible: Callable[[BindingRecord], bool] | None = None,
        limit: int | None = None,
    ) -> tuple[list[BindingRecord], str | None]:
        partition = _account_partition(account)
        where, params = "PartitionKey eq @pk", {"pk": partition}
        position = _position(after, "a", partition)
        if position is not None:
            where += " and RowKey gt @after_rk"
            params["after_rk"] = position[1]
        step = size if limit is None else min(size, limit)
        index = self._rows(where, params, min(step + 1, PAGE))
        pending = list(itertools.islice(index, step + 1))
        scanned = 0
        while True:
            chunk, pending = pending[:step], pending[step:]
            if not chunk:
                return [], None
            scanned += len(chunk)
            records = [r for r in self._resolve(chunk, account, namespace, live_only) if visible is None or visible(r)]
            # none of this chunk matched: on to the next, never an empty page (unless the limit is reached)
            if records or not pending or (limit is not None and scanned >= limit):
                token = _encode_token("a", partition, chunk[-1]["RowKey"]) if pending else None
                return records, token
            pending += itertools.islice(index, step)

    # --- list cursors: the API's continuation tokens (shared.adapters.list_cursors) -------------

    def save_cursor(self, owner: str, position: str) -> str:
        """A token naming `position` (a token of `query`) that only `owner` may use, for an hour."""
        self._ensure()
        return list_cursors.save(self._table, owner, position)

    def load_cursor(self, owner: str, token: str) -> str:
        """The position a token of `save_cursor` names; ValueError unless it is `owner`'s and alive."""
        self._ensure()
        return list_cursors.load(self._table, owner, token)

    def _resolve(
        self, index_rows: list[Any], account: str, namespace: str | None, live_only: bool
    ) -> list[BindingRecord]:
        """The records the account index rows name (in their order) that match the filters: one read
        per cluster partition (a point read for one record, else the range from the first to the last
        of them, filtered by account). An index row without its record is skipped."""
        wanted: dict[str, set[str]] = {}
        for row in index_rows:
            wanted.setdefault(str(row.get("pk") or ""), set()).add(str(row.get("rk") or ""))
        found: dict[tuple[str, str], Any] = {}
        for partition, rows in wanted.items():
            if len(rows) == 1:
                (row,) = rows
                entity = self._read(partition, row)
                if entity is not None:
                    found[(partition, row)] = entity
                continue
            clauses, params = _property_filter(namespace, account, live_only)
            where = " and ".join(["PartitionKey eq @pk", "RowKey ge @lo", "RowKey le @hi", *clauses])
            params.update(pk=partition, lo=min(rows), hi=max(rows))
            for entity in self._rows(where, params, PAGE):
                if entity["RowKey"] in rows:
                    found[(partition, entity["RowKey"])] = entity
        records = []
        for row in index_rows:
            entity = found.get((str(row.get("pk") or ""), str(row.get("rk") or "")))
            if entity is None or (namespace and entity.get("namespace") != namespace):
                continue
            if live_only and entity.get("desired") != "present":
                continue
            records.append(_from_entity(entity))
        return records

    def all(self, **filters: Any) -> Iterator[BindingRecord]:
        """Every record matching the filters of `query` (cluster, namespace, account, live_only),
        read 1,000 rows a request."""
        cluster, namespace, account = (
            filters.pop("cluster", None),
            filters.pop("namespace", None),
            filters.pop("account", None),
        )
        live_only = bool(filters.pop("live_only", False))
        if filters:
            raise TypeError(f"all() got unexpected filters: {', '.join(sorted(filters))}")
        self._ensure()
        if account and not cluster:
            index = self._rows("PartitionKey eq @pk", {"pk": _account_partition(account)}, PAGE)
            while chunk := list(itertools.islice(index, PAGE)):
                yield from self._resolve(chunk, account, namespace, live_only)
            return
        where, params = _record_filter(cluster, namespace, account, live_only)
        for entity in self._rows(where, params, PAGE):
            yield _from_entity(entity)


def _record_filter(
    cluster: str | None, namespace: str | None, account: str | None, live_only: bool
) -> tuple[str, dict[str, Any]]:
    """A filter over records: a cluster's partition (a namespace: its RowKey range), or every record
    partition (a namespace: by property); then the account and `live_only`, by property."""
    params: dict[str, Any]
    if cluster:
        clauses = ["PartitionKey eq @pk"]
        params = {"pk": _cluster_partition(cluster)}
        if namespace:
            clauses += ["RowKey ge @ns_from", "RowKey lt @ns_to"]
            params.update(ns_from=_segment(namespace) + "|", ns_to=_segment(namespace) + "}")
        more, values = _property_filter(None, account, live_only)
    else:
        clauses = ["PartitionKey ge @records_from", "PartitionKey lt @records_to"]
        params = {"records_from": RECORDS_FROM, "records_to": RECORDS_TO}
        more, values = _property_filter(namespace, account, live_only)
    return " and ".join(clauses + more), params | values


def _property_filter(namespace: str | None, account: str | None, live_only: bool) -> tuple[list[str], dict[str, Any]]:
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if namespace:
        clauses.append("namespace eq @ns")
        params["ns"] = namespace
    if account:
        clauses.append("account_key eq @account")
        params["account"] = account.lower()
    if live_only:
        clauses.append("desired eq 'present'")
    return clauses, params


def _quota_partition(quota: str) -> str:
    return "quota-" + short_hash(quota.lower(), length=40)


def _encode_token(mode: str, partition: str, row: str) -> str:
    """Where a page ended: the next page starts after this row."""
    token = {"v": LAYOUT_VERSION, "m": mode, "pk": partition, "rk": row}
    return base64.urlsafe_b64encode(json.dumps(token).encode()).decode()


def _decode_token(token: str | None) -> dict[str, Any] | None:
    if not token:
        return None
    invalid = ValueError("continuation token is not valid")
    if len(token) > 4096:
        raise invalid
    try:
        value = json.loads(base64.urlsafe_b64decode(token.encode()))
    except ValueError:
        raise invalid from None
    if not isinstance(value, dict) or value.get("v") != LAYOUT_VERSION or value.get("m") not in ("c", "s", "a"):
        raise invalid
    for part in ("pk", "rk"):
        if not isinstance(value.get(part), str) or not _TOKEN_TEXT.fullmatch(value[part]):
            raise invalid
    return value


def _position(token: dict[str, Any] | None, mode: str, partition: str | None) -> tuple[str, str] | None:
    """(PartitionKey, RowKey) a page of this list ended at; ValueError for another list's token."""
    if token is None:
        return None
    if token["m"] != mode or (partition is not None and token["pk"] != partition):
        raise ValueError("continuation token is not valid")
    if mode == "s" and not _RECORD_PARTITION.fullmatch(token["pk"]):
        raise ValueError("continuation token is not valid")
    return token["pk"], token["rk"]
