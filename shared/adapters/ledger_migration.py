"""The ledger's table made current on first use: created when there is none, moved from the legacy
layout when it holds that (the layout: shared.adapters.ledger).

Before this layout, every record was in one partition ("binding", RowKey = key). On first use an
instance that does not find the layout marker moves every such row (record created if absent, with
all its properties; pointer; account index; then the old row deleted) and then writes the marker.
Each step is idempotent, so several instances may migrate at once and a crash anywhere is finished
by the next start. While an instance migrates, `get` from its other threads falls back to the old row.
An instance of the old version still running after the marker was written would write old rows that
nothing moves: deploy so that the old version stops before the new one starts (as a restart does).
"""

from __future__ import annotations

import itertools
import threading
import uuid
from typing import Any

from azure.core.exceptions import ResourceExistsError

from shared.adapters.ledger_table import LAYOUT_VERSION, PAGE, LedgerTable, Operation, Place

LEGACY = "binding"  # the one partition of the layout before this one (rows moved on first use)
META, LAYOUT_ROW = "meta", "layout"
_MIGRATION_ROUND = 5000  # old rows moved at a time (a few MB in memory)


class CurrentLayout(LedgerTable):
    """The table in the current layout: every part calls `_ensure` before it reads or writes."""

    def __init__(self, table_client: Any) -> None:
        super().__init__(table_client)
        self._current = False  # the table exists and holds the current layout (migrated if it was old)
        self._opening = threading.Lock()

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

        places = [Place.of_entity(row, row["RowKey"]) for row in rows]
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
