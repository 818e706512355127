"""Lists of the ledger's records: a page at a time (with the position of the next) or all of them,
reading only the partitions a list needs (the layout: shared.adapters.ledger); and the API's
continuation tokens, names for those positions (shared.adapters.list_cursors).
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from shared.adapters import list_cursors, telemetry
from shared.adapters.ledger_migration import CurrentLayout
from shared.adapters.ledger_table import (
    LAYOUT_VERSION,
    PAGE,
    RECORDS_FROM,
    RECORDS_TO,
    account_partition,
    cluster_partition,
    from_entity,
    segment,
)
from shared.domain.records import BindingRecord

_TOKEN_TEXT = re.compile(r"[^\x00-\x1f\x7f/\\#?]{1,1024}")  # what a RowKey may hold
_RECORD_PARTITION = re.compile(r"c-[0-9a-f]{32}")


class LedgerQueries(CurrentLayout):
    """Pages and walks of the records, by cluster, namespace, account or all."""

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
        position = _position(after, mode, cluster_partition(cluster) if cluster else None)
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
            record = from_entity(last)
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
        partition = account_partition(account)
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
            records.append(from_entity(entity))
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
            index = self._rows("PartitionKey eq @pk", {"pk": account_partition(account)}, PAGE)
            while chunk := list(itertools.islice(index, PAGE)):
                yield from self._resolve(chunk, account, namespace, live_only)
            return
        where, params = _record_filter(cluster, namespace, account, live_only)
        for entity in self._rows(where, params, PAGE):
            yield from_entity(entity)


def _record_filter(
    cluster: str | None, namespace: str | None, account: str | None, live_only: bool
) -> tuple[str, dict[str, Any]]:
    """A filter over records: a cluster's partition (a namespace: its RowKey range), or every record
    partition (a namespace: by property); then the account and `live_only`, by property."""
    params: dict[str, Any]
    if cluster:
        clauses = ["PartitionKey eq @pk"]
        params = {"pk": cluster_partition(cluster)}
        if namespace:
            clauses += ["RowKey ge @ns_from", "RowKey lt @ns_to"]
            params.update(ns_from=segment(namespace) + "|", ns_to=segment(namespace) + "}")
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
