"""The drift sweep's progress in Azure Table storage: one run at a time, its shards, what each found.

Why: a sweep over 10,000 bindings is a plan (the timer) and one shard per cluster (queue messages,
each inside one function execution). Recording the run and its shards lets a sweep that was cut off
resume (the next timer tick re-queues the shards not done) and keeps two sweeps from overlapping
(the run row is written ETag-conditionally: of two instances starting a sweep, one wins).

    PartitionKey "sweep",        RowKey "current"           the run now (or the last one)
    PartitionKey "sweep",        RowKey "settings"          the authorisation settings' fingerprint
    PartitionKey "sweep-<run>",  RowKey <hash of cluster>    one shard: its suspects, its result
    PartitionKey "repaired-<run>", RowKey <binding key>     a binding the run's reconcile changed

Shard rows hold JSON text; a long one is split over several properties (a Table property holds at
most 64 KiB; the entity 1 MiB).
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.adapters.tables import table_client
from shared.domain.errors import LedgerConflict
from shared.domain.naming import short_hash
from shared.domain.sweep_plan import Shard, SweepRun

RUNS = "sweep"
REPAIRED = "repaired"
CURRENT = "current"
SETTINGS = "settings"  # the authorisation settings' fingerprint the last instance started with
_CHUNK = 30_000  # characters per property (UTF-16: 60 KB of the 64 KiB a property may hold)
_BATCH = 100  # entities per transaction (Table storage's limit)


def _put_json(entity: dict[str, Any], name: str, value: Any) -> None:
    text = json.dumps(value, separators=(",", ":"))
    parts = [text[i : i + _CHUNK] for i in range(0, len(text), _CHUNK)] or [""]
    entity[f"{name}_parts"] = len(parts)
    for n, part in enumerate(parts):
        entity[f"{name}_{n}"] = part


def _get_json(entity: Any, name: str, default: Any) -> Any:
    count = int(entity.get(f"{name}_parts") or 0)
    if not count:
        return default
    return json.loads("".join(str(entity.get(f"{name}_{n}") or "") for n in range(count)))


def _shard_row(cluster: str) -> str:
    return short_hash(cluster.lower(), length=32)


class SweepLog:
    def __init__(self, table_client: Any) -> None:
        self._table = table_client
        self._ready = False

    @classmethod
    def connect(
        cls,
        table_name: str,
        connection_string: str | None = None,
        endpoint: str | None = None,
        credential: Any = None,
        connection_verify: str | None = None,
    ) -> SweepLog:
        return cls(table_client(table_name, connection_string, endpoint, credential, connection_verify))

    def _ensure(self) -> None:
        if not self._ready:
            try:
                self._table.create_table()
            except ResourceExistsError:
                pass
            self._ready = True

    # --- the run ----------------------------------------------------------------------------

    def current(self) -> SweepRun | None:
        self._ensure()
        try:
            e = self._table.get_entity(RUNS, CURRENT)
        except ResourceNotFoundError:
            return None
        return SweepRun(
            id=e["id"],
            number=int(e.get("number") or 0),
            started_at=float(e.get("started_at") or 0),
            planned=bool(e.get("planned")),
            shards=int(e.get("shards") or 0),
            finished_at=float(e["finished_at"]) if e.get("finished_at") is not None else None,
            resumes=int(e.get("resumes") or 0),
            source=str(e.get("source") or ""),
            suspects=int(e.get("suspects") or 0),
            etag=e.metadata.get("etag"),
        )

    def begin(self, previous: SweepRun | None, now: float | None = None) -> SweepRun | None:
        """Start the next run in place of `previous` (as read); None if another instance wrote first."""
        run = SweepRun(id=uuid.uuid4().hex[:16], number=(previous.number + 1) if previous else 1,
                       started_at=now if now is not None else time.time())  # fmt: skip
        try:
            self._write(run, previous.etag if previous else None, create=previous is None)
        except LedgerConflict:
            return None
        return run

    def save(self, run: SweepRun) -> None:
        """Replace the run row, only if unchanged since read (LedgerConflict otherwise)."""
        self._write(run, run.etag, create=False)

    def _write(self, run: SweepRun, etag: str | None, create: bool) -> None:
        from azure.data.tables import UpdateMode

        self._ensure()
        entity = {
            "PartitionKey": RUNS,
            "RowKey": CURRENT,
            **{k: v for k, v in dataclasses.asdict(run).items() if k != "etag"},
        }
        try:
            if create:
                meta = self._table.create_entity(entity)
            else:
                meta = self._table.update_entity(
                    entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
                )
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError) as exc:
            raise LedgerConflict("sweep") from exc
        except HttpResponseError as exc:
            if exc.status_code == 412:
                raise LedgerConflict("sweep") from exc
            raise
        run.etag = meta.get("etag")

    def settings_changed(self, fingerprint: str) -> bool:
        """Record the authorisation settings' fingerprint an instance starts with. True when it differs from
        the one recorded and this call replaced it (of two instances starting with the same new settings,
        one gets True). The first fingerprint ever recorded is no change: there is nothing to compare with."""
        from azure.data.tables import UpdateMode

        self._ensure()
        try:
            recorded = self._table.get_entity(RUNS, SETTINGS)
        except ResourceNotFoundError:
            recorded = None
        if recorded is not None and recorded.get("fingerprint") == fingerprint:
            return False
        entity = {"PartitionKey": RUNS, "RowKey": SETTINGS, "fingerprint": fingerprint}
        try:
            if recorded is None:
                self._table.create_entity(entity)
                return False
            self._table.update_entity(
                entity,
                mode=UpdateMode.REPLACE,
                etag=recorded.metadata.get("etag"),
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceExistsError, ResourceModifiedError):
            return False  # another instance recorded it first
        except HttpResponseError as exc:
            if exc.status_code == 412:
                return False
            raise
        return True

    # --- shards -----------------------------------------------------------------------------

    def add_shards(self, run_id: str, shards: list[Shard]) -> None:
        """Write the run's shards, a hundred per transaction (one partition)."""
        self._ensure()
        entities = [self._shard_entity(run_id, s) for s in shards]
        for i in range(0, len(entities), _BATCH):
            self._table.submit_transaction([("upsert", e) for e in entities[i : i + _BATCH]])

    def _shard_entity(self, run_id: str, s: Shard) -> dict[str, Any]:
        entity: dict[str, Any] = {
            "PartitionKey": f"{RUNS}-{run_id}",
            "RowKey": _shard_row(s.cluster),
            "cluster": s.cluster,
            "number": s.number,
            "issuer": s.issuer or "",
            "queued_at": s.queued_at,
            "done": s.done,
        }
        _put_json(entity, "suspects", s.suspects)
        _put_json(entity, "endpoints", s.endpoints)
        _put_json(entity, "result", s.result)
        return entity

    @staticmethod
    def _shard(e: Any) -> Shard:
        return Shard(
            cluster=e["cluster"],
            number=int(e.get("number") or 0),
            suspects=_get_json(e, "suspects", {}),
            endpoints=_get_json(e, "endpoints", {}),
            issuer=e.get("issuer") or None,
            queued_at=float(e.get("queued_at") or 0),
            done=bool(e.get("done")),
            result=_get_json(e, "result", {}),
        )

    def shard(self, run_id: str, cluster: str) -> Shard | None:
        self._ensure()
        try:
            return self._shard(self._table.get_entity(f"{RUNS}-{run_id}", _shard_row(cluster)))
        except ResourceNotFoundError:
            return None

    def shards(self, run_id: str) -> list[Shard]:
        """Every shard of the run (one partition, 1,000 a page)."""
        self._ensure()
        rows = self._table.query_entities("PartitionKey eq @pk", parameters={"pk": f"{RUNS}-{run_id}"},
                                          results_per_page=1000)  # fmt: skip
        return [self._shard(e) for e in rows]

    def pending(self, run_id: str) -> int:
        """How many of the run's shards are not done (reads only their `done` flags)."""
        self._ensure()
        rows = self._table.query_entities(
            "PartitionKey eq @pk and done eq false",
            parameters={"pk": f"{RUNS}-{run_id}"},
            select=["RowKey"],
            results_per_page=1000,
        )
        return sum(1 for _ in rows)

    def save_shard(self, run_id: str, shard: Shard) -> None:
        self._ensure()
        from azure.data.tables import UpdateMode

        self._table.upsert_entity(self._shard_entity(run_id, shard), mode=UpdateMode.REPLACE)

    def note_repaired(self, run_id: str, key: str) -> None:
        """The run's reconcile of binding `key` changed something: one row of its own (an insert-or-replace, so a
        redelivered message counts once, and no two workers ever contend for one row)."""
        self._ensure()
        self._table.upsert_entity({"PartitionKey": f"{REPAIRED}-{run_id}", "RowKey": key})

    def repaired(self, run_id: str) -> int:
        """How many bindings the run's reconciles changed (one query of one partition, keys only)."""
        self._ensure()
        rows = self._table.query_entities("PartitionKey eq @pk", parameters={"pk": f"{REPAIRED}-{run_id}"},
                                          select=["RowKey"], results_per_page=1000)  # fmt: skip
        return sum(1 for _ in rows)

    def forget(self, run_id: str) -> int:
        """Delete a past run's shard and repair rows (transactions of a hundred); returns how many."""
        self._ensure()
        total = 0
        for partition in (f"{RUNS}-{run_id}", f"{REPAIRED}-{run_id}"):
            keys = ["PartitionKey", "RowKey"]
            query = self._table.query_entities(
                "PartitionKey eq @pk", parameters={"pk": partition}, select=keys, results_per_page=1000
            )
            rows = list(query)
            for i in range(0, len(rows), _BATCH):
                try:
                    self._table.submit_transaction([("delete", e) for e in rows[i : i + _BATCH]])
                except HttpResponseError:
                    pass  # someone deleted some meanwhile: the next sweep tries again
            total += len(rows)
        return total
