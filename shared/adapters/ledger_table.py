"""The ledger's one table, under its parts (records, leases, quotas, lists): where a binding's rows
are (`Place`), a record as an entity and back, and the primitives every part writes and reads with
(point reads, ranges read as iteration reaches them, writes in transactions of one partition). The
layout is described in shared.adapters.ledger.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)

from shared.domain.naming import short_hash
from shared.domain.records import BindingRecord

POINTERS = "id"
LAYOUT_VERSION = 2  # the layout's version: in the marker the migration writes, and in list positions
RECORDS_FROM, RECORDS_TO = "c-", "c."  # every record partition, and nothing else, is in [c-, c.)

PAGE = 1000  # rows per request when reading everything (Table storage's most)
_BATCH_OPS = 100  # operations per transaction (Table storage's most)
_BATCH_BYTES = 2_000_000  # well inside a transaction's 4 MiB
_PARALLEL_PARTITIONS = 8  # partitions written at once by a migration or a purge
_NARROWINGS = 3  # a transaction narrowed to what is still to do at most this often, then one at a time
_KEEP = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-")  # DNS-1123 characters, kept as they are in a RowKey


# Lists and dicts are stored as JSON text (Table properties are scalars): every record field
# whose default is an empty list or dict, so that a new such field needs no change here.
_JSON_FIELDS = frozenset(
    f.name
    for f in dataclasses.fields(BindingRecord)
    if f.default_factory in (list, dict)  # type: ignore[comparison-overlap]
)


def segment(text: str) -> str:
    """`text` as one part of a record's RowKey: DNS-1123 characters as they are, any other %-encoded
    (so a part never holds `|`, `}` or a character a RowKey forbids)."""
    if all(c in _KEEP for c in text):
        return text
    return "".join(c if c in _KEEP else urllib.parse.quote(c, safe="") for c in text)


def cluster_partition(cluster: str) -> str:
    return RECORDS_FROM + short_hash(cluster.lower(), length=32)


def account_partition(account: str) -> str:
    return "a-" + short_hash(account.lower(), length=32)


def key_of(row_key: str) -> str:
    """The binding key in a record's RowKey (`<namespace>|<sa>|<key>`, or `<key>` in the old layout)."""
    return urllib.parse.unquote(row_key.rsplit("|", 1)[-1])


@dataclasses.dataclass(frozen=True)
class Place:
    """Where one binding's rows are: its record, its pointer, its account index row."""

    key: str
    partition: str  # the record's PartitionKey: its cluster's
    row: str  # the record's RowKey
    account: str  # the account index's PartitionKey; "" when the binding names no account

    @classmethod
    def of(cls, key: str, cluster: str, namespace: str, service_account: str, account: str) -> Place:
        row = f"{segment(namespace)}|{segment(service_account)}|{segment(key)}"
        return cls(key, cluster_partition(cluster), row, account_partition(account) if account else "")

    @classmethod
    def of_record(cls, record: BindingRecord) -> Place:
        return cls.of(record.key, record.cluster, record.namespace, record.service_account, record.account)

    @classmethod
    def of_entity(cls, entity: Any, key: str) -> Place:
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


def to_entity(record: BindingRecord) -> dict[str, Any]:
    place = Place.of_record(record)
    entity: dict[str, Any] = {"PartitionKey": place.partition, "RowKey": place.row}
    for field, value in record.__dict__.items():
        if field in ("key", "etag"):
            continue
        entity[field] = json.dumps(value) if field in _JSON_FIELDS else value
    entity["cluster_key"] = record.cluster.lower()
    entity["account_key"] = record.account.lower()
    return entity


def from_entity(entity: Any) -> BindingRecord:
    fields = {f for f in BindingRecord.__dataclass_fields__ if f not in ("key", "etag")}
    values: dict[str, Any] = {}
    for field in fields:
        if field not in entity:
            continue
        value = entity[field]
        values[field] = json.loads(value) if field in _JSON_FIELDS else value
    record = BindingRecord(key=key_of(entity["RowKey"]), **values)
    record.etag = entity.metadata.get("etag")
    return record


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


class LedgerTable:
    """The table client and the primitives on it: reads, and writes in transactions."""

    def __init__(self, table_client: Any) -> None:
        self._table = table_client

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

    def _index_and_point(self, place: Place) -> None:
        """The account index row, then the pointer (a pointer means its index row exists)."""
        from azure.data.tables import UpdateMode

        index = place.index()
        if index is not None:
            self._table.upsert_entity(index, mode=UpdateMode.REPLACE)
        self._table.upsert_entity(place.pointer(), mode=UpdateMode.REPLACE)
