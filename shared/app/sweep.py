"""The drift sweep's use case: find the few bindings that drifted among all of them, cheaply, and
queue only those; the reconcile worker (which reads ARM, the truth) repairs them.

    timer tick  `start`: one sweep at a time (the run row, ETag-conditional). Read every live record
                (1,000 a page), the Azure inventory in bulk for those not suspects already by status
                or age (shared.engine.inventory: Resource Graph, else ARM lists), and mark Azure-side
                suspects (shared.domain.sweep_plan). Write one shard per cluster and queue one
                message per shard.
    shard       `run_shard`: read the cluster's records (its ledger partition) and, when one is left to
                check, its Keyless objects (three label-selected, paged lists); mark Kubernetes-side
                suspects; read the federated credentials of this sweep's rotation slice; queue every
                suspect; mark the shard done.

Nothing here writes to Azure, Kubernetes or a binding's record: an unchanged binding costs no write
and no queue message. A sweep cut off halfway resumes at the next tick (shards not done are queued
again); a sweep still running when the timer fires again is left to finish (no overlap).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from shared.app import observability
from shared.app.messages import message
from shared.app.ports import LedgerConflict
from shared.domain import access, sweep_plan
from shared.domain.errors import KeylessError, Throttled
from shared.domain.policy import AccessPolicy
from shared.domain.records import BindingRecord
from shared.domain.sweep_plan import Shard, SweepRun

if TYPE_CHECKING:
    from shared.app.keyless import Keyless

log = logging.getLogger("keyless.sweep")


@dataclasses.dataclass
class SweepStart:
    """What a timer tick did: `started` a new sweep, `resumed` one cut off, or `busy` (one is running)."""

    action: str
    run_id: str = ""
    shards: int = 0
    suspects: int = 0
    source: str = ""
    purged: int = 0


def start(app: Keyless, now: float | None = None, supersede: bool = False) -> SweepStart:
    """The timer's part. Never overlaps a running sweep; resumes one that was cut off. With `supersede`
    (the authorisation settings changed), a new sweep replaces a running one: that one was planned
    with the old settings (its shards left are forgotten, their messages find nothing to do)."""
    now = time.time() if now is None else now
    scale = app.settings.retry_delay_scale
    current = app.sweeps.current()
    if current is not None and not current.finished and not supersede:
        if current.planned and app.sweeps.pending(current.id) == 0:
            current.finished_at = now
            if _save_quietly(app, current):
                observability.sweep_finished(current)
        elif now - current.started_at < sweep_plan.SHARD_REQUEUE_SECONDS * scale:
            return SweepStart("busy", current.id, current.shards)
        elif current.resumes < sweep_plan.MAX_RESUMES:
            return _resume(app, current, now)
        else:
            log.error("drift sweep %s gave up after %d resumes; starting the next", current.id, current.resumes)
    run = app.sweeps.begin(current, now)
    if run is None:
        return SweepStart("busy")  # another instance started one a moment ago
    report = _plan(app, run, now)
    if current is not None:
        app.sweeps.forget(current.id)
    report.purged = _purge_removed(app, now)
    return report


def on_instance_start(app: Keyless) -> bool:
    """An instance starts: if the authorisation settings differ from those the last instance started with,
    queue a sweep at once (a withdrawn grant has no Azure event; the timer may be half an hour away). True
    when this instance queued it. Storage trouble is logged, never a reason not to start: the timer's sweep
    re-authorises every binding anyway."""
    policy = app.policy or AccessPolicy.parse(None, app.settings.system_namespaces, app.settings.default_role)
    fingerprint = access.settings_fingerprint(app.settings, policy)
    try:
        if not app.sweeps.settings_changed(fingerprint):
            return False
        app.queue.enqueue_raw(message("sweep-start", reason="authorisation settings changed"))
    except Exception as exc:  # noqa: BLE001 - an instance must start; the next timer tick sweeps
        log.warning("could not compare the authorisation settings with the last instance's: %s", type(exc).__name__)
        return False
    log.warning("the authorisation settings changed: a sweep re-authorises every binding now")
    return True


def _resume(app: Keyless, run: SweepRun, now: float) -> SweepStart:
    """Queue again the shards that are not done: planned ones whose message was lost or keeps
    failing; if the plan itself was cut off, plan again under the same run."""
    run.resumes += 1
    run.started_at = now
    try:
        app.sweeps.save(run)
    except LedgerConflict:
        return SweepStart("busy", run.id)  # another instance resumed it
    if not run.planned:
        report = _plan(app, run, now)
        report.action = "resumed"
        return report
    pending = [s for s in app.sweeps.shards(run.id) if not s.done]
    for shard in pending:
        _queue_shard(app, run, shard, now)
    log.warning("drift sweep %s resumed: %d shards queued again", run.id, len(pending))
    return SweepStart("resumed", run.id, len(pending), run.suspects, run.source)


def _plan(app: Keyless, run: SweepRun, now: float) -> SweepStart:
    live = list(app.ledger.all(live_only=True))
    observability.bindings_counted(live)
    records = [r for r in live if r.account]
    when = dt.datetime.fromtimestamp(now, dt.UTC)
    recent = sweep_plan.RECENT_SECONDS * app.settings.retry_delay_scale
    overdue = sweep_plan.OVERDUE_SECONDS * app.settings.retry_delay_scale
    # The inventory is read only for the records it can clear: one already a suspect by its status or
    # its age is run again whatever the snapshot says (a sweep right after a burst of onboardings reads
    # nothing in bulk).
    unsuspected = [
        r
        for r in records
        if r.status in sweep_plan.SETTLED
        and not sweep_plan.status_suspicion(r, when, overdue)
        and not sweep_plan.recent_suspicion(r, when, recent)
    ]
    snapshot = (
        app.engine.inventory.azure(sweep_plan.scope_of(unsuspected))
        if unsuspected
        else sweep_plan.AzureSnapshot.build([], [], [], [], "none")
    )
    by_cluster: dict[str, list[BindingRecord]] = defaultdict(list)
    for r in records:
        by_cluster[r.cluster.lower()].append(r)
    allowlist, system = app.settings.role_allowlist, app.settings.system_namespaces
    shards: list[Shard] = []
    withdrawn = 0
    for key in sorted(by_cluster):
        group = by_cluster[key]
        suspects = {}
        for r in group:
            reason = sweep_plan.grant_suspicion(r, snapshot, app.door, allowlist, system)
            withdrawn += reason is not None
            reason = (
                reason
                or sweep_plan.status_suspicion(r, when, overdue)
                or (sweep_plan.azure_suspicion(r, snapshot, when, recent) if r.status in sweep_plan.SETTLED else None)
            )
            if reason:
                suspects[r.key] = reason
        accounts = {r.account.lower() for r in group}
        endpoints = {a: snapshot.accounts[a].endpoint or "" for a in accounts if a in snapshot.accounts}
        cluster = snapshot.clusters.get(key)
        shards.append(
            Shard(
                cluster=group[0].cluster,
                number=run.number,
                suspects=suspects,
                endpoints=endpoints,
                issuer=cluster.issuer_url if cluster else None,
                queued_at=now,
            )
        )
    app.sweeps.add_shards(run.id, shards)
    run.planned, run.shards, run.source = True, len(shards), snapshot.source
    run.suspects = sum(len(s.suspects) for s in shards)
    if not shards:
        run.finished_at = now
    app.sweeps.save(run)
    observability.suspects_found(run.suspects, "plan")
    observability.sweep_finished(run)
    for shard in shards:
        _queue_shard(app, run, shard, now)
    log.info("drift sweep %s: %d bindings, %d clusters, %d suspects (%d no longer granted) from the %s inventory",
             run.id, len(records), len(shards), run.suspects, withdrawn, snapshot.source)  # fmt: skip
    return SweepStart("started", run.id, len(shards), run.suspects, snapshot.source)


def _queue_shard(app: Keyless, run: SweepRun, shard: Shard, now: float) -> None:
    app.queue.enqueue_raw(message("sweep", sweep=run.id, cluster=shard.cluster))


def _save_quietly(app: Keyless, run: SweepRun) -> bool:
    """Save the run; False when another instance wrote it first (and finished it too)."""
    try:
        app.sweeps.save(run)
    except LedgerConflict:
        return False
    return True


def _purge_removed(app: Keyless, now: float) -> int:
    purge = getattr(app.ledger, "purge_removed", None)
    if purge is None:
        return 0
    days = float(getattr(app.settings, "removed_retention_days", 30))
    try:
        return int(purge(days * 86400, now=now))
    except KeylessError as exc:
        log.warning("could not delete removed records past retention: %s", exc.reason)
        return 0


def run_shard(app: Keyless, run_id: str, cluster: str) -> dict[str, Any]:
    """One cluster's part of a sweep: every check that is not Azure's, then its suspects queued.
    Redelivered after a crash it runs again (reads only, until the queueing at the end)."""
    shard = app.sweeps.shard(run_id, cluster)
    if shard is None or shard.done:
        return {}
    records = [r for r in app.ledger.all(cluster=cluster, live_only=True) if r.account]
    suspects = dict(shard.suspects)
    stats = {"bindings": len(records), "planned": len(suspects), "kube": 0, "credentials": 0, "credentialReads": 0}
    settled = [r for r in records if r.status in sweep_plan.SETTLED and r.key not in suspects]
    unlisted = ""
    objects = None
    try:
        if settled:  # when every binding is a suspect already, no one reads the lists
            objects = app.engine.inventory.cluster_objects(cluster)
    except KeylessError as exc:
        unlisted = f"the cluster's objects could not be listed ({exc.reason[:120]})"
    rules, manager = app.engine.world.key_rules, app.settings.field_manager
    rotation = sweep_plan.CREDENTIAL_ROTATION
    credentials_ok = True
    for r in settled:
        endpoint = shard.endpoints.get(r.account.lower())
        reason = sweep_plan.kube_suspicion(r, objects, endpoint, manager, rules) if objects is not None else unlisted
        if reason:
            stats["kube"] += 1
        elif credentials_ok and sweep_plan.in_rotation(r.key, shard.number, rotation):
            where = sweep_plan.identity_location(r)
            try:
                found = app.engine.inventory.credentials(*where) if where else []
                stats["credentialReads"] += 1
            except Throttled as exc:
                credentials_ok = False  # the rest of this slice waits for the next rotation
                log.info("drift sweep %s: credential reads throttled on %s (%s)", run_id, cluster, exc.reason)
                continue
            reason = sweep_plan.credential_suspicion(r, found, shard.issuer)
            if reason:
                stats["credentials"] += 1
        if reason:
            suspects[r.key] = reason
    live = {r.key for r in records}
    for key, reason in sorted(suspects.items()):
        if key in live:
            app.enqueue_binding(key, f"drift sweep: {reason}", versions={"sweep": run_id})
    stats["queued"] = len([k for k in suspects if k in live])
    observability.suspects_found(len(suspects) - stats["planned"], "cluster")
    observability.annotate(**{"keyless.sweep.suspects": len(suspects)})
    shard.done, shard.result = True, stats
    app.sweeps.save_shard(run_id, shard)
    _finish_if_last(app, run_id)
    return stats


def _finish_if_last(app: Keyless, run_id: str) -> None:
    if app.sweeps.pending(run_id):
        return  # (one query of the shards' flags: cheaper than reading the run first)
    run = app.sweeps.current()
    if run is None or run.id != run_id or run.finished:
        return
    run.finished_at = time.time()
    if _save_quietly(app, run):
        observability.sweep_finished(run)
    log.info("drift sweep %s finished", run_id)


@dataclasses.dataclass
class SweepProgress:
    """The latest sweep as people see it (GET /api/sweeps/latest): counts only, never a binding's name.
    `suspects`: found by the plan (Azure's side) and by the shards done (the clusters' side); `queued`:
    reconciles the shards done queued for them; `repaired`: those of them that changed something (what each
    changed is in its onboarding's steps)."""

    id: str
    number: int
    started_at: float
    finished_at: float | None
    planned: bool
    shards: int
    shards_done: int
    suspects: int
    queued: int
    repaired: int
    source: str
    resumes: int

    @property
    def duration_seconds(self) -> float | None:
        return None if self.finished_at is None else max(self.finished_at - self.started_at, 0.0)


def latest(app: Keyless) -> SweepProgress | None:
    """The current (or last) sweep's progress from the sweep log; None before the first sweep. Reads the
    run row, its shard rows and its repair rows (two partitions), nothing else."""
    run = app.sweeps.current()
    if run is None:
        return None
    done = [s for s in app.sweeps.shards(run.id) if s.done] if run.planned else []
    found = sum(int(s.result.get("kube") or 0) + int(s.result.get("credentials") or 0) for s in done)
    return SweepProgress(
        id=run.id,
        number=run.number,
        started_at=run.started_at,
        finished_at=run.finished_at,
        planned=run.planned,
        shards=run.shards,
        shards_done=len(done),
        suspects=run.suspects + found,
        queued=sum(int(s.result.get("queued") or 0) for s in done),
        repaired=app.sweeps.repaired(run.id) if run.planned else 0,
        source=run.source,
        resumes=run.resumes,
    )
