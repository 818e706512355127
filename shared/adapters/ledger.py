"""The binding ledger in Azure Table storage: the API's source of truth, surviving restarts.

Layout (one table; a lookup or a list reads its own partitions, never the whole table):

    PartitionKey              RowKey                         what
    "c-" + hash(cluster)      <namespace>|<sa>|<key>         a binding's record (its cluster's partition)
    "id"                      <key>                          pointer: key -> the record's PartitionKey/RowKey
    "a-" + hash(account)      "c-" + hash(cluster)|<key>     account index -> the record's PartitionKey/RowKey
    "meta"                    "layout"                       the layout version (shared.adapters.ledger_migration)
    "quota-<hash>"            <key>                          quota counts (shared.adapters.quota_index)
    "lease"                   <hash of the name>             leases (shared.adapters.leases)
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

Before this layout, every record was in one partition ("binding", RowKey = key); an instance
that finds no layout marker moves such rows on first use (shared.adapters.ledger_migration, which
also says how to deploy over them).

The code follows the concerns: `Ledger` holds the records and is made of the parts over the same
table (shared.adapters.ledger_table, made current by shared.adapters.ledger_migration): leases
(shared.adapters.leases), quota counts (shared.adapters.quota_index) and lists
(shared.adapters.ledger_queries).
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import time
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)

from shared.adapters.leases import Leases
from shared.adapters.ledger_migration import LEGACY
from shared.adapters.ledger_queries import LedgerQueries
from shared.adapters.ledger_table import (
    PAGE,
    POINTERS,
    RECORDS_FROM,
    RECORDS_TO,
    Place,
    from_entity,
    key_of,
    to_entity,
)
from shared.adapters.quota_index import QuotaIndex
from shared.adapters.tables import storage_error, table_client
from shared.domain import retry_policy
from shared.domain.errors import LedgerConflict, TemporaryError
from shared.domain.records import BindingRecord


class Ledger(LedgerQueries, Leases, QuotaIndex):
    """The bindings' records; with leases, quota counts and lists from its parts."""

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
                return from_entity(entity)
        if current:
            return None
        entity = self._read(LEGACY, key)
        return from_entity(entity) if entity is not None else None

    def create(self, record: BindingRecord) -> bool:
        """Insert; False if a record with this key exists already.

        Index row and pointer first (one read when the pointer is there already, as for every
        binding asked for again), then the record; then the pointer is read again, in case a purge
        of an older record with this key deleted it meanwhile (see `purge_removed`)."""
        self._ensure()
        place = Place.of_record(record)
        pointer = self._read(POINTERS, record.key)
        if pointer is None or not place.located(pointer):
            self._index_and_point(place)
        try:
            meta = self._table.create_entity(to_entity(record))
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
        places = [Place.of_record(r) for r in records]
        upsert: dict[str, Any] = {"mode": UpdateMode.REPLACE}
        self._apply([("upsert", index, upsert) for p in places if (index := p.index()) is not None])
        self._apply([("upsert", p.pointer(), upsert) for p in places])
        done = self._apply([("create", to_entity(r), {}) for r in records])
        return len(done)

    def save(self, record: BindingRecord) -> None:
        """Replace, only if unchanged since read (LedgerConflict otherwise, a missing record too).
        Without an ETag: create or replace (index row and pointer first, as `create`)."""
        from azure.data.tables import UpdateMode

        self._ensure()
        entity = to_entity(record)
        try:
            if record.etag:
                meta = self._table.update_entity(
                    entity,
                    mode=UpdateMode.REPLACE,
                    etag=record.etag,
                    match_condition=MatchConditions.IfNotModified,
                )
            else:
                self._index_and_point(Place.of_record(record))
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
        places = [Place.of_entity(r, key_of(r["RowKey"])) for r in rows if (r["PartitionKey"], r["RowKey"]) in deleted]
        self._apply([("delete", p.pointer(), {}) for p in places])
        self._apply([("delete", index, {}) for p in places if (index := p.index()) is not None])
        for place in self._still_there(places):
            self._index_and_point(place)
        return len(places)

    def _still_there(self, places: list[Place]) -> list[Place]:
        """Those of `places` whose record exists: one range read per cluster partition."""
        by_partition: dict[str, list[Place]] = {}
        for place in places:
            by_partition.setdefault(place.partition, []).append(place)
        found: list[Place] = []
        for partition, group in by_partition.items():
            rows = {p.row for p in group}
            where = "PartitionKey eq @pk and RowKey ge @lo and RowKey le @hi"
            params = {"pk": partition, "lo": min(rows), "hi": max(rows)}
            present = {e["RowKey"] for e in self._rows(where, params, PAGE, select=["RowKey"]) if e["RowKey"] in rows}
            found.extend(p for p in group if p.row in present)
        return found


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
