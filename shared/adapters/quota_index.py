"""Quota counts in the ledger's table.

Quotas (shared.domain.access.Grant) are counted in an index of their own: one partition per quota
(PartitionKey "quota-<hash>", RowKey = binding key), so counting a quota reads at most its limit
of rows, never the whole ledger.
"""

from __future__ import annotations

from azure.core.exceptions import ResourceNotFoundError

from shared.adapters.ledger_migration import CurrentLayout
from shared.domain.naming import short_hash


def _quota_partition(quota: str) -> str:
    return "quota-" + short_hash(quota.lower(), length=40)


class QuotaIndex(CurrentLayout):
    """The bindings counted in each quota."""

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

    def quota_used(self, quota: str, at_most: int) -> int:
        """Bindings counted in `quota`, reading no more than `at_most` rows (so a count of `at_most` means
        at least that many): one query of one partition."""
        self._ensure()
        return self._count(_quota_partition(quota), max(at_most, 1))

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
