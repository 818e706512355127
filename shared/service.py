"""Keyless's use cases over the ledger, the work queue and the engine.

Triggers call these and return: HTTP and Event Grid handlers only validate and enqueue;
the queue worker does the slow, retryable part (`process`). Messages are small JSON:

    {"kind": "binding", "key": "<binding key>"}              reconcile or offboard one binding
    {"kind": "cluster", "id": "<cluster id>", "change": "write"|"delete"}
    {"kind": "account", "id": "<account id>", "change": "write"|"delete"}

Every outcome lands in the ledger before the message is settled.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

from shared import naming, rules
from shared.binding import Binding
from shared.errors import KeylessError, PermanentError, TemporaryError
from shared.events import ResourceEvent
from shared.ids import ACCOUNT_TYPE, CLUSTER_TYPE, ResourceId, parse_resource_id
from shared.outcomes import ReconcileResult
from shared.records import BindingRecord, utcnow
from shared.settings import Settings

log = logging.getLogger("keyless.service")

SOURCE_API = "api"
SOURCE_TAGS = "cluster-tags"


class BadMessage(ValueError):
    """A queue message we cannot act on: logged and dropped, never retried."""


def message(kind: str, **fields: str) -> str:
    return json.dumps({"kind": kind, **fields})


def parse_message(body: str) -> dict[str, str]:
    try:
        data = json.loads(body)
    except ValueError:
        raise BadMessage("message body is not JSON") from None
    if not isinstance(data, dict) or data.get("kind") not in ("binding", "cluster", "account"):
        raise BadMessage("message kind must be binding, cluster or account")
    field = "key" if data["kind"] == "binding" else "id"
    if not isinstance(data.get(field), str) or not data[field]:
        raise BadMessage(f"message has no {field}")
    if data["kind"] != "binding" and data.get("change") not in ("write", "delete"):
        raise BadMessage("message change must be write or delete")
    return {k: str(v) for k, v in data.items()}


@dataclasses.dataclass
class Keyless:
    settings: Settings
    ledger: Any  # shared.adapters.ledger.Ledger
    queue: Any  # shared.adapters.workqueue.WorkQueue
    engine: Any  # shared.reconcile.Engine

    # --- self-service -----------------------------------------------------------------------

    def request_onboarding(self, binding: Binding, requested_by: str) -> tuple[BindingRecord, bool]:
        """Record the binding and queue it. (record, True) if new or revived, (record, False) if live."""
        record = BindingRecord.for_binding(binding, requested_by=requested_by, source=SOURCE_API)
        if self.ledger.create(record):
            self._enqueue_binding(record.key, "onboarding requested")
            return record, True
        existing = self.ledger.get(record.key)
        if existing is None:  # deleted between the two calls: try once more
            return self.request_onboarding(binding, requested_by)
        if existing.live:
            return existing, False
        existing.desired = "present"
        existing.status = "pending"
        existing.requested_by = requested_by
        existing.updated_at = utcnow()
        self.ledger.save(existing)
        self._enqueue_binding(existing.key, "onboarding requested again")
        return existing, True

    def request_offboarding(self, key: str) -> BindingRecord | None:
        record = self.ledger.get(key)
        if record is None:
            return None
        if record.desired == "absent" and record.status == "removed":
            return record
        record.desired = "absent"
        record.status = "offboarding"
        record.updated_at = utcnow()
        self.ledger.save(record)
        self._enqueue_binding(record.key, "offboarding requested")
        return record

    def plan(self, binding: Binding) -> ReconcileResult:
        """Dry run: every step and what it would do, with reads only."""
        return self.engine.reconcile(binding, dry_run=True)

    # --- events ---------------------------------------------------------------------------

    def handle_event(self, event: ResourceEvent) -> None:
        """Queue a re-read of the cluster or account the event names (never trust the event)."""
        if event.kind == "cluster":
            self.queue.enqueue_raw(message("cluster", id=str(event.resource), change=event.change))
        elif event.kind == "account":
            self.queue.enqueue_raw(message("account", id=str(event.resource), change=event.change))
        else:  # a deployment changed: the account's bindings refresh their ConfigMap
            self.queue.enqueue_raw(message("account", id=str(event.resource), change="write"))

    # --- the worker -----------------------------------------------------------------------

    def process(self, body: str) -> None:
        """Handle one queue message. Raises only for conditions the queue should retry."""
        msg = parse_message(body)
        if msg["kind"] == "binding":
            self.process_binding(msg["key"])
        elif msg["kind"] == "cluster":
            self.sync_cluster(parse_resource_id(msg["id"], CLUSTER_TYPE, "id"), msg["change"] == "delete")
        else:
            self.sync_account(parse_resource_id(msg["id"], ACCOUNT_TYPE, "id"), msg["change"] == "delete")

    def process_binding(self, key: str) -> BindingRecord | None:
        record = self.ledger.get(key)
        if record is None:
            log.warning("binding %s: no ledger record; message dropped", key)
            return None
        if record.status == "removed" and not record.live:
            return record
        if record.live and not record.account:
            return record  # recorded failure (e.g. ambiguous account): nothing to reconcile
        try:
            binding = record.binding(self.settings.role_allowlist)
        except PermanentError as exc:
            record.status, record.reason, record.last_error = "failed", exc.reason, exc.reason
            self.ledger.save(record)
            return record
        record.status = "reconciling" if record.live else "offboarding"
        record.updated_at = utcnow()
        self.ledger.save(record)
        try:
            if record.live:
                result = self.engine.reconcile(binding)
            else:
                others = [r.binding(self.settings.role_allowlist) for r in self._same_workload(record)]
                result = self.engine.offboard(binding, others=others)
        except Exception as exc:
            # Unexpected: record it (never leave "reconciling" unrecorded) and let the queue retry.
            record.status = "not-ready"
            record.last_error = record.reason = f"internal error: {type(exc).__name__}"
            self.ledger.save(record)
            raise
        return self._record(record, result)

    def _record(self, record: BindingRecord, result: ReconcileResult) -> BindingRecord:
        from shared.adapters.ledger import LedgerConflict

        for _ in range(3):
            desired = record.desired
            record.record_result(result)
            try:
                self.ledger.save(record)
                break
            except LedgerConflict:
                fresh = self.ledger.get(record.key)
                if fresh is None:
                    return record
                if fresh.desired != desired:
                    # Someone flipped the desired state while we worked: run again for theirs.
                    self._enqueue_binding(record.key, "desired state changed during reconcile")
                    return fresh
                record = fresh
        if record.status == "not-ready":
            self._enqueue_binding(record.key, result.reason, result.retry_after_seconds or 30)
        return record

    def _same_workload(self, record: BindingRecord) -> list[BindingRecord]:
        return [
            r
            for r in self.ledger.all(cluster=record.cluster, namespace=record.namespace, live_only=True)
            if r.service_account == record.service_account and r.key != record.key and r.account
        ]

    # --- clusters and accounts --------------------------------------------------------------

    def sync_cluster(self, cluster_id: ResourceId, deleted: bool) -> list[str]:
        """Bring the ledger in line with the cluster's tags (or its deletion); queue the changes."""
        existing = list(self.ledger.all(cluster=str(cluster_id)))
        if not deleted:
            try:
                cluster = self.engine.clusters.get(cluster_id)
            except PermanentError:
                deleted = True  # read after delete: same as a delete event
        if deleted:
            return [self._offboard_record(r, "cluster deleted") for r in existing if r.live]
        tag_rules = rules.read_tags(cluster, cluster_id)
        for error in tag_rules.errors:
            log.warning("cluster %s: %s", cluster_id, error)
        wanted = self._bindings_from_tags(cluster_id, tag_rules)
        touched: list[str] = []
        wanted_keys = set()
        for item in wanted:
            if isinstance(item, BindingRecord):  # an unresolvable account, recorded as failed
                wanted_keys.add(item.key)
                if not self.ledger.create(item):
                    current = self.ledger.get(item.key)
                    if current is not None and (current.reason != item.reason or current.status != "failed"):
                        item.etag = current.etag
                        self.ledger.save(item)
                continue
            wanted_keys.add(item.key)
            record = BindingRecord.for_binding(item, requested_by=f"tags:{cluster_id.name}", source=SOURCE_TAGS)
            if not self.ledger.create(record):
                current = self.ledger.get(record.key)
                if current is not None and not current.live:
                    current.desired, current.status = "present", "pending"
                    self.ledger.save(current)
            self._enqueue_binding(record.key, "cluster written")
            touched.append(record.key)
        for record in existing:
            if record.key in wanted_keys or not record.live:
                continue
            if record.source == SOURCE_TAGS:
                touched.append(self._offboard_record(record, "removed from the cluster's tags"))
            elif record.source == SOURCE_API:
                self._enqueue_binding(record.key, "cluster written")
                touched.append(record.key)
        return touched

    def _bindings_from_tags(self, cluster_id: ResourceId, tag_rules: rules.TagRules) -> list[Any]:
        if not tag_rules.workloads:
            return []
        account_id: str | None = str(tag_rules.account) if tag_rules.account else None
        problem = ""
        if account_id is None:
            try:
                candidates = self.engine.accounts.list_in_group(cluster_id.subscription_id, cluster_id.resource_group)
                account_id = rules.choose_account(candidates)
            except KeylessError as exc:
                if isinstance(exc, TemporaryError):
                    raise
                problem = exc.reason
        out: list[Any] = []
        for ns, sa in tag_rules.workloads:
            if account_id is not None:
                out.append(
                    Binding.create(
                        str(cluster_id),
                        ns,
                        sa,
                        account_id,
                        self.settings.default_role,
                        allowlist=self.settings.role_allowlist,
                    )
                )
                continue
            key = naming.short_hash(cluster_id.key, ns, sa, "unresolved-account", length=32)
            out.append(
                BindingRecord(
                    key=key,
                    cluster=str(cluster_id),
                    namespace=ns,
                    service_account=sa,
                    account="",
                    role_definition_id=self.settings.default_role,
                    status="failed",
                    reason=problem,
                    last_error=problem,
                    requested_by=f"tags:{cluster_id.name}",
                    source=SOURCE_TAGS,
                )
            )
        return out

    def sync_account(self, account_id: ResourceId, deleted: bool) -> list[str]:
        """Re-reconcile (or, when deleted, offboard) every binding that uses the account,
        and re-read tagged clusters in its resource group that would pick it."""
        touched: list[str] = []
        for record in self.ledger.all(account=str(account_id), live_only=True):
            if deleted:
                touched.append(self._offboard_record(record, "account deleted"))
            else:
                self._enqueue_binding(record.key, "account written")
                touched.append(record.key)
        if not deleted:
            for cluster in self.engine.clusters.list_in_group(account_id.subscription_id, account_id.resource_group):
                tag_rules = rules.read_tags(cluster, parse_resource_id(cluster.id, CLUSTER_TYPE, "id"))
                if tag_rules.workloads and tag_rules.account is None:
                    self.queue.enqueue_raw(message("cluster", id=cluster.id, change="write"))
        return touched

    def _offboard_record(self, record: BindingRecord, reason: str) -> str:
        record.desired = "absent"
        record.status = "offboarding"
        record.reason = reason
        record.updated_at = utcnow()
        if record.account:
            self.ledger.save(record)
            self._enqueue_binding(record.key, reason)
        else:
            record.status = "removed"
            self.ledger.save(record)
        return record.key

    # --- drift ----------------------------------------------------------------------------

    def sweep(self) -> int:
        """Queue every live binding; the engine repairs whatever drifted. Returns how many."""
        count = 0
        for record in self.ledger.all(live_only=True):
            if record.account:
                self._enqueue_binding(record.key, "drift sweep")
                count += 1
        return count

    def _enqueue_binding(self, key: str, reason: str, delay: float = 0) -> None:
        self.queue.enqueue_raw(message("binding", key=key, reason=reason[:200]), delay)
