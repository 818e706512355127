"""The reconcile worker's use case: one queue message, converged and recorded.

Every outcome lands in the ledger before the message is settled. One run per binding at a time: a
run holds the binding's "run" lease (renewed after its steps); a second message for it meanwhile is
put back with a short delay, never dropped, so no two workers write the same identity at once. A
worker that dies leaves the lease to expire, and the redelivered message runs then. Fan-out
messages carry the version of the cluster/account state they were made from, so that an instance
whose read cache holds an older state reads again (shared.adapters.readcache).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

from shared.app import after_ready, deletions, observability, quotas, sweep, tag_bindings
from shared.app.admission import admit
from shared.app.messages import parse_message
from shared.app.ports import LedgerConflict
from shared.domain import retry_policy
from shared.domain.binding import Binding
from shared.domain.errors import PermanentError, TemporaryError
from shared.domain.ids import ACCOUNT_TYPE, CLUSTER_TYPE, parse_resource_id
from shared.domain.records import BindingRecord, utcnow
from shared.domain.results import ReconcileResult

if TYPE_CHECKING:
    from shared.app.keyless import Keyless

log = logging.getLogger("keyless.service")


def process(app: Keyless, body: str) -> None:
    """Handle one queue message. Raises only for conditions the queue should retry."""
    try:
        _process(app, body)
    finally:
        observability.pacing_waited(app.engine)


def _process(app: Keyless, body: str) -> None:
    msg = parse_message(body)
    if msg["kind"] == "binding":
        process_binding(app, msg["key"], msg)
        return
    if msg["kind"] == "sweep":
        sweep.run_shard(app, msg["sweep"], msg["cluster"])
        return
    if msg["kind"] == "sweep-start":
        report = sweep.start(app, supersede=True)
        log.info("drift sweep %s %s (%s): %d suspects", report.run_id, report.action, msg["reason"], report.suspects)
        return
    if msg["kind"] in deletions.KINDS:
        deletions.repair_after_delete(app, msg["kind"], msg["id"])
        return
    kind = msg["kind"]
    resource = parse_resource_id(msg["id"], CLUSTER_TYPE if kind == "cluster" else ACCOUNT_TYPE, "id")
    # Give the lease back before reading: an event from now on queues a new re-read.
    app.ledger.release(f"resync|{kind}|{resource.key}")
    try:
        if kind == "cluster":
            tag_bindings.sync_cluster(app, resource, msg["change"] == "delete")
        else:
            tag_bindings.sync_account(app, resource, msg["change"] == "delete")
    except TemporaryError as exc:
        log.info("%s %s: not yet (%s); re-read queued", kind, resource, exc.reason)
        app.queue_resync(kind, resource, msg["change"], exc.delay_seconds)


def give_up(app: Keyless, body: str) -> None:
    """A message the host moved to the poison queue: its work failed every delivery. A binding is
    recorded `failed` with the last reason and announced (the next drift sweep tries it again; an
    offboarding is queued again in an hour); any other work is logged (events and the sweep redo it)."""
    msg = parse_message(body)
    if msg["kind"] != "binding":
        log.error("gave up on %s %s after %d attempts", msg["kind"], msg.get("id") or msg.get("cluster"),
                  retry_policy.HOST_MAX_DEQUEUE_COUNT)  # fmt: skip
        return
    for _ in range(3):
        record = app.ledger.get(msg["key"])
        if record is None or record.status == "removed":
            return
        why = record.last_error or record.reason or "an unexpected error"
        record.status = "failed"
        record.reason = record.last_error = f"gave up after {retry_policy.HOST_MAX_DEQUEUE_COUNT} attempts: {why}"[
            :1000
        ]
        record.next_attempt_at, record.updated_at = None, utcnow()
        try:
            app.ledger.save(record)
        except LedgerConflict:
            continue
        log.error("binding %s: %s", record.key, record.reason)
        observability.run_ended("failed", "gave-up")
        if not record.live:
            app.enqueue_binding(
                record.key, "offboarding gave up; trying again", retry_policy.POISONED_OFFBOARDING_SECONDS
            )
        app.announce(record)
        return


def process_binding(app: Keyless, key: str, msg: dict[str, str] | None = None) -> BindingRecord | None:
    record = app.ledger.get(key)
    if record is None:
        log.warning("binding %s: no ledger record; message dropped", key)
        return None
    if record.status == "removed" and not record.live:
        app.announce(record)  # a "removed" event that could not be published before
        return record
    if record.live and not record.account:
        return record  # recorded failure (e.g. ambiguous account): nothing to reconcile
    try:
        binding = record.binding(app.settings.role_allowlist)
    except PermanentError as exc:
        record.status, record.reason, record.last_error = "failed", exc.reason, exc.reason
        app.ledger.save(record)
        observability.run_ended("failed", "binding")
        return record
    lease = f"run|{key}"
    scale = app.settings.retry_delay_scale
    if not app.ledger.acquire(lease, _run_lease_seconds(app)):
        # Another worker is on it: come back when its lease ends (at most retry_policy.BUSY_BINDING_SECONDS from
        # now), never drop the message: that run may have read the world before our cause.
        left = app.ledger.seconds_left(lease) / scale  # in production seconds, as enqueue_binding takes
        delay = min(max(left, 1.0), retry_policy.BUSY_BINDING_SECONDS)
        app.enqueue_binding(key, "another worker is reconciling this binding", delay, msg)
        return record
    try:
        _expect_versions(app, binding, msg or {})
        if record.live:
            record, admitted = admit(app, record, binding)
            if not admitted:
                return record
        keeper = _LeaseKeeper(app.ledger, lease, _run_lease_seconds(app), scale)
        return _run(app, record, binding, keeper, sweep_of(msg))
    finally:
        app.release_quietly(lease, only_own=True)


def _run_lease_seconds(app: Keyless) -> float:
    """A run's lease: renewed after its steps (_LeaseKeeper), so it bounds one step, not the run;
    short, so that a worker that died frees its binding soon."""
    return retry_policy.RUN_LEASE_SECONDS * app.settings.retry_delay_scale + app.settings.cluster_update_wait_seconds


def _expect_versions(app: Keyless, binding: Binding, msg: dict[str, str]) -> None:
    """Don't reconcile from a cached cluster/account older than what the sender saw."""
    if "clusterVersion" in msg:
        app.engine.clusters.expect(binding.cluster, msg["clusterVersion"])
    if "accountVersion" in msg:
        app.engine.accounts.expect(binding.account, msg["accountVersion"])


def sweep_of(msg: dict[str, str] | None) -> dict[str, str]:
    """The drift sweep a binding's message came from, carried on to the runs it queues ({} for none)."""
    return {"sweep": msg["sweep"]} if msg and msg.get("sweep") else {}


def _run(
    app: Keyless, record: BindingRecord, binding: Binding, keeper: Any = None, carried: dict[str, str] | None = None
) -> BindingRecord:
    """One run of the binding, recorded. `carried`: what the runs it queues carry on (the sweep that asked)."""
    before = dataclasses.replace(record)  # what the binding was, should the run end without a verdict
    record.status = "reconciling" if record.live else "offboarding"
    record.updated_at = utcnow()
    try:
        app.ledger.save(record)
    except LedgerConflict:
        fresh = app.ledger.get(record.key)  # e.g. the desired state changed since we read it
        if fresh is None:
            return record
        record = fresh
        before = dataclasses.replace(record)
        binding = record.binding(app.settings.role_allowlist)
        record.status = "reconciling" if record.live else "offboarding"
        app.ledger.save(record)
    try:
        if record.live:
            # A running binding's own role assignment put back is a repair, not a new place in the subscription.
            counted_role = record.ever_granted and bool(record.role_assignment_id)
            result = app.engine.reconcile(binding, on_step=keeper, counted_role=counted_role)
            result.verification = after_ready.verify_after(app.engine, binding, result)  # `verified`?
        else:
            others = [r.binding(app.settings.role_allowlist) for r in _same_workload(app, record)]
            result = app.engine.offboard(binding, others=others, on_step=keeper, made=record.made())
    except Exception as exc:
        # Unexpected: record it (never leave "reconciling" unrecorded) and let the queue retry.
        record.status = "not-ready"
        record.last_error = record.reason = f"internal error: {type(exc).__name__}"
        app.ledger.save(record)
        observability.run_ended("error", type(exc).__name__)
        raise
    carried = carried or {}
    if record.live and result.throttled:
        return _no_verdict(app, before, record, result, carried)
    record = _record(app, record, result, carried)
    if carried and result.changed:
        _count_repair(app, carried["sweep"], record.key)
    observability.run_recorded(record, result)
    after_ready.after_run(app, record, result)  # re-check a rollout; the account may go keyless
    return record


def _count_repair(app: Keyless, run_id: str, key: str) -> None:
    """A run the drift sweep asked for changed something: count it in that sweep (`keyless sweep`'s repaired).
    Only a progress figure: a failure to count is logged, never the run's."""
    try:
        app.sweeps.note_repaired(run_id, key)
    except Exception as exc:  # noqa: BLE001 - a lost count must not undo a repair
        log.warning("binding %s: repair not counted in drift sweep %s (%s)", key, run_id, type(exc).__name__)


def _no_verdict(
    app: Keyless, before: BindingRecord, record: BindingRecord, result: ReconcileResult, carried: dict[str, str]
) -> BindingRecord:
    """Throttling is never a verdict: a run that Azure's limits stopped leaves the binding as it was
    (status, reason, last verification; nothing announced) and runs again after the wait. Nor is Keyless
    lacking an Azure credential: the status stays, the reason says what to fix (`az login`, AZURE_CLIENT_ID)."""
    kept = dataclasses.replace(before, etag=record.etag, last_requests=result.requests.as_dict())
    if result.no_credential:
        kept.reason = kept.last_error = result.reason
    try:
        app.ledger.save(kept)
    except LedgerConflict:
        pass  # someone wrote since: theirs stands, and the message below runs it again anyway
    log.info("binding %s: throttled (%s); status kept, again in %s s", record.key, result.reason,
             result.retry_after_seconds)  # fmt: skip
    observability.run_ended("throttled", observability.stopped_at(result))
    delay = result.retry_after_seconds or retry_policy.NOT_YET_DEFAULT_SECONDS
    app.enqueue_binding(record.key, f"throttled: {result.reason}", delay, carried)
    return kept


def _record(app: Keyless, record: BindingRecord, result: ReconcileResult, carried: dict[str, str]) -> BindingRecord:
    delay: float | None = None
    for _ in range(3):
        desired = record.desired
        delay = record.record_result(result)
        try:
            app.ledger.save(record)
            break
        except LedgerConflict:
            fresh = app.ledger.get(record.key)
            if fresh is None:
                return record
            if fresh.desired != desired:
                # Someone flipped the desired state while we worked: run again for theirs.
                app.enqueue_binding(record.key, "desired state changed during reconcile")
                return fresh
            record = fresh
    if record.status == "not-ready":  # again after the step's delay, growing while it stays not ready
        app.enqueue_binding(record.key, result.reason, delay or retry_policy.NOT_YET_DEFAULT_SECONDS, carried)
    if record.status == "failed" and not record.live:  # e.g. a role assignment that could not be deleted
        app.enqueue_binding(record.key, f"offboarding failed: {result.reason}", retry_policy.FAILED_OFFBOARDING_SECONDS)
    if record.status == "removed" and record.quota_key:
        # Its places first, then the record's copy: a crash between leaves a copy that a revival
        # gives back anyway (shared.app.quotas.renew), never a place held by nothing.
        quotas.give_back(app, record)
        try:
            app.ledger.save(record)
        except LedgerConflict:
            pass  # written since (a revival): that write has given the places back too
    app.announce(record)
    return record


def _same_workload(app: Keyless, record: BindingRecord) -> list[BindingRecord]:
    return [
        r
        for r in app.ledger.all(cluster=record.cluster, namespace=record.namespace, live_only=True)
        if r.service_account == record.service_account and r.key != record.key and r.account
    ]


class _LeaseKeeper:
    """A run's step hook that keeps its lease: renewed after a step once a quarter of
    retry_policy.RUN_LEASE_SECONDS has passed since the last renewal, so a long run (run commands on a private
    cluster take seconds each) is not taken over by another worker while it still writes, as long
    as each step takes less than three quarters of it (90 s; a step makes at most two run commands)."""

    def __init__(self, ledger: Any, lease: str, seconds: float, scale: float) -> None:
        self._ledger, self._lease, self._seconds = ledger, lease, seconds
        self._every = retry_policy.RUN_LEASE_SECONDS * scale / 4
        self._last = time.monotonic()
        self.renewals = 0

    def __call__(self, binding: Binding, step: Any) -> None:
        if time.monotonic() - self._last < self._every:
            return
        self._last = time.monotonic()
        try:
            kept = self._ledger.renew(self._lease, self._seconds)
        except Exception:  # noqa: BLE001 - storage trouble: the lease may still last; the run goes on
            log.warning("binding %s: could not renew its run lease", binding.key)
            return
        if kept:
            self.renewals += 1
        else:
            log.warning("binding %s: its run lease ran out and was taken over; this run goes on", binding.key)
