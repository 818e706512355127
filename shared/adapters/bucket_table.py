"""The shared pacing table: one entity per bucket, read and written conditionally.

Why apart from the pacer (shared.adapters.shared_pacing): the pacer decides slots and blocks from a
bucket's state; this module only keeps that state in Azure Tables, so that every process sees one.
Each write is conditional on the ETag last seen (If-Match), a lost race (409, 412) is an answer
(`False`: read again), and several rows are written all or none by one entity group transaction.

A table that does not answer (any AzureError or OSError) raises StorageDown, once per
`retry_seconds`: the pacer paces alone meanwhile (`down()`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)

from shared.adapters.pacing import State

log = logging.getLogger("keyless.pacing")

PARTITION = "pacing"


class StorageDown(Exception):
    """The pacing table did not answer: pace alone for a while."""


@dataclasses.dataclass
class BucketEntity:
    """A bucket's entity (RowKey `row`) as this process last saw it."""

    key: tuple[str, ...]
    row: str
    known: bool = False  # state and etag are the entity as of our last read or write
    solo: bool = False  # at our last read, no other process had written since our write before it
    state: State = ()
    etag: str | None = None  # None with `known`: the entity does not exist


Count = Callable[[str, int, "BucketEntity | None"], None]
"""Adds to one of the pacer's stats (name, how many, the bucket's entity or None)."""


class BucketTable:
    """The buckets' entities in one partition of an azure.data.tables TableClient (or anything with its
    create_table, get_entity, query_entities, create_entity, update_entity and submit_transaction)."""

    def __init__(self, table: Any, count: Count, retry_seconds: float, clock: Callable[[], float]) -> None:
        self.retry_seconds = retry_seconds
        self._table = table
        self._count = count
        self._clock = clock
        self._table_ready = False
        self._down_until = -math.inf

    def down(self) -> bool:
        """The table failed less than `retry_seconds` ago."""
        return self._clock() < self._down_until

    @contextmanager
    def _storage(self) -> Iterator[None]:
        """Any failure of the table: pace alone for `retry_seconds`."""
        try:
            if not self._table_ready:
                try:
                    self._table.create_table()
                except ResourceExistsError:
                    pass
                self._table_ready = True
            yield
        except (AzureError, OSError) as exc:
            self._down_until = self._clock() + self.retry_seconds
            self._count("storage_failures", 1, None)
            log.warning(
                "shared pacing table unreachable (%s): pacing alone at a share of the limits for %g s",
                type(exc).__name__,
                self.retry_seconds,
            )
            raise StorageDown() from exc

    def read(self, b: BucketEntity) -> None:
        self._count("table_reads", 1, b)
        with self._storage():
            try:
                entity = self._table.get_entity(PARTITION, b.row)
            except ResourceNotFoundError:
                entity = None
        self._learn(b, entity)

    def read_together(self, entities: list[BucketEntity]) -> None:
        """Several entities of the partition in one query."""
        self._count("table_reads", 1, None)
        names = {f"r{i}": b.row for i, b in enumerate(entities)}
        keys = " or ".join(f"RowKey eq @{n}" for n in names)
        query = f"PartitionKey eq '{PARTITION}' and ( {keys} )"  # (the SDK finds parameters between spaces)
        with self._storage():
            found = {e["RowKey"]: e for e in self._table.query_entities(query, parameters=names)}
        for b in entities:
            self._learn(b, found.get(b.row))

    @staticmethod
    def _learn(b: BucketEntity, entity: Any) -> None:
        if entity is None:
            b.state, b.etag, b.known, b.solo = (), None, True, False
            return
        etag = entity.metadata.get("etag")
        b.solo = etag is not None and etag == b.etag  # nobody wrote since we last did (or read)
        b.state, b.etag, b.known = tuple(float(x) for x in json.loads(entity["state"])), etag, True

    @staticmethod
    def _entity(b: BucketEntity, state: State) -> dict[str, Any]:
        return {
            "PartitionKey": PARTITION,
            "RowKey": b.row,
            "bucket": "|".join(b.key)[:512],
            "state": json.dumps(state),
        }

    def write(self, b: BucketEntity, state: State) -> bool:
        """Write `state` if the entity is still what we last saw; False when it is not (re-read)."""
        from azure.data.tables import UpdateMode

        entity = self._entity(b, state)
        self._count("table_writes", 1, b)
        try:
            with self._storage():
                try:
                    if b.etag is None:
                        meta = self._table.create_entity(entity)
                    else:
                        meta = self._table.update_entity(
                            entity, mode=UpdateMode.REPLACE, etag=b.etag, match_condition=MatchConditions.IfNotModified
                        )
                except (ResourceExistsError, ResourceModifiedError):
                    meta = None
                except ResourceNotFoundError:  # the entity (or the whole table) was deleted meanwhile
                    self._table_ready = False
                    meta = None
                except HttpResponseError as exc:
                    if exc.status_code not in (409, 412):
                        raise
                    meta = None
        except StorageDown:
            b.known = False
            raise
        if meta is None:
            b.known = b.solo = False
            self._count("conflicts", 1, b)
            return False
        b.state, b.etag, b.known = state, meta.get("etag"), True
        return True

    def write_together(self, items: list[tuple[BucketEntity, State]]) -> bool:
        """`write` for several entities of the partition, all or none (an entity group transaction)."""
        from azure.data.tables import UpdateMode

        operations: list[Any] = []
        for b, state in items:
            if b.etag is None:
                operations.append(("create", self._entity(b, state)))
            else:
                condition = {
                    "mode": UpdateMode.REPLACE,
                    "etag": b.etag,
                    "match_condition": MatchConditions.IfNotModified,
                }
                operations.append(("update", self._entity(b, state), condition))
        self._count("table_writes", 1, None)
        for b, _ in items:
            self._count("joint_writes", 1, b)
        results: list[Any] | None = None
        try:
            with self._storage():
                try:
                    results = list(self._table.submit_transaction(operations))
                except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
                    results = None
                except HttpResponseError as exc:  # TableTransactionError: one operation's status
                    if exc.status_code not in (404, 409, 412):
                        raise
                    results = None
        except StorageDown:
            for b, _ in items:
                b.known = False
            raise
        if results is None:
            for b, _ in items:
                b.known = b.solo = False
            self._count("conflicts", 1, None)
            return False
        for (b, state), meta in zip(items, results, strict=True):
            b.state, b.etag, b.known = state, (meta or {}).get("etag"), True
        return True
