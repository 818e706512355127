"""Keyless's use cases over the ledger, the work queue and the engine.

Triggers call these and return: HTTP and Event Grid handlers only validate and enqueue;
the queue worker does the slow, retryable part (`process`). Messages are small JSON:

    {"kind": "binding", "key": "<binding key>"}              reconcile or offboard one binding
    {"kind": "cluster", "id": "<cluster id>", "change": "write"|"delete"}   re-read the cluster
    {"kind": "account", "id": "<account id>", "change": "write"|"delete"}   re-read the account

Every outcome lands in the ledger before the message is settled.

Three rules keep a scaled-out worker fast and exact under Event Grid's at-least-once,
unordered delivery (see ledger leases):

- One queued re-read per cluster or account. An event takes the resource's "resync" lease and
  queues a message only if it got it; the worker gives the lease back *before* reading ARM, so
  an event that arrives later queues a new re-read, and one that arrives earlier is covered by
  the read to come. A thousand duplicate events make one or two re-reads.
- The event's change is a hint: the worker asks ARM whether the resource exists (a delete
  delivered before a write, or after a re-creation, ends the same as the truth).
- One run per binding at a time. A run holds the binding's "run" lease; a second message for
  it meanwhile is put back with a short delay, never dropped, so no two workers write the same
  identity at once. A worker that dies leaves the lease to expire, and the redelivered message
  runs then.

Fan-out messages carry the version of the cluster/account state they were made from, so that
an instance whose read cache holds an older state reads again (shared.adapters.readcache).
"not yet" delays and leases are multiplied by KEYLESS_RETRY_DELAY_SCALE (tests run them faster).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import time
from typing import Any

from shared.app import after_ready
from shared.domain import access, cluster_tags, naming, outcome_events
from shared.domain.binding import Binding
from shared.domain.errors import KeylessError, NotFoundError, PermanentError, TemporaryError
from shared.domain.ids import ACCOUNT_TYPE, CLUSTER_TYPE, ResourceId, parse_resource_id
from shared.domain.principal import Caller
from shared.domain.records import BindingRecord, utcnow
from shared.domain.resource_events import ResourceEvent
from shared.domain.results import ReconcileResult
from shared.domain.settings import Settings

log = logging.getLogger("keyless.service")

SOURCE_API = "api"
SOURCE_TAGS = "cluster-tags"

RESYNC_HOLD_SECONDS = 300.0
"""How long a queued re-read stands for later events. Also how long a lost one (the enqueue failed
after the lease was taken) delays the next: Event Grid redelivers for 24 h, and so gets through."""
RUN_LEASE_SECONDS = 120.0
"""How long a binding's run may take before another worker may take over (plus the cluster wait)."""
BUSY_RETRY_SECONDS = 15.0
"""Delay for a message whose binding is being reconciled by another worker."""
MAX_QUEUE_DELAY_SECONDS = 7 * 24 * 3600.0 - 60
"""Azure queues hide a message for at most 7 days."""


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
    engine: Any  # shared.engine.reconcile.Engine
    topic: Any = None  # shared.adapters.topic.OutcomeTopic, or None: no outcome events
    policy: Any = None  # shared.domain.policy.AccessPolicy (None: deny every caller; cluster tags need consent)

    # --- the one door (shared.domain.access) -------------------------------------------------------

    def grant_for(self, binding: Binding, requester: access.Requester) -> access.Grant:
        """shared.domain.access.authorise with this deployment's policy and settings; for cluster tags the
        account's current tags (its consent) are read. Refused naming what is missing."""
        from shared.domain.policy import AccessPolicy

        account_tags = None
        if isinstance(requester, access.ClusterTags):
            try:
                account_tags = self.engine.accounts.get(binding.account).tags
            except TemporaryError:
                raise
            except KeylessError as exc:
                log.warning("binding %s: cannot read account %s for its consent: %s", binding.key,
                            binding.account.name, exc.reason)  # fmt: skip
        s = self.settings
        policy = self.policy or AccessPolicy.parse(None, s.system_namespaces, s.default_role)
        return access.authorise(
            binding,
            requester,
            policy,
            s.allowed_subscriptions,
            s.default_max_bindings,
            s.max_tag_bindings_per_cluster,
            account_tags,
            s.role_allowlist,
        )

    # --- self-service -----------------------------------------------------------------------

    def request_onboarding(
        self, binding: Binding, caller: Caller, grant: access.Grant
    ) -> tuple[BindingRecord, bool]:
        """Record the binding the caller was granted (shared.domain.access) and queue it. (record, True) if new,
        revived or changed, (record, False) if it is live as asked. QuotaExceeded when the grant's
        quota is used up by other live bindings."""
        counted, count = self.ledger.claim_quota(grant.quota_key, binding.key, grant.quota_limit)
        record = BindingRecord.for_binding(binding, requested_by=caller.audit, source=SOURCE_API)
        record.principal = access.recorded_principal(caller)
        record.quota_key = grant.quota_key if counted else ""
        if counted and self.ledger.create(record):
            self._enqueue_binding(record.key, "onboarding requested")
            return record, True
        existing = self.ledger.get(record.key)
        if existing is None:
            if not counted:
                raise _quota_exceeded(grant, count)
            return self.request_onboarding(binding, caller, grant)  # deleted between the two calls
        if not existing.live and not counted:
            raise _quota_exceeded(grant, count)
        settled = existing.status not in ("refused", "revoked")
        if existing.live and settled and list(existing.workloads or ()) == list(binding.workloads):
            return existing, False
        why = "workloads changed" if existing.live and settled else "onboarding requested again"
        existing.desired = "present"
        existing.workloads = list(binding.workloads)
        existing.status = "pending"
        existing.requested_by = caller.audit
        existing.principal = record.principal
        existing.source = SOURCE_API  # the caller's grant holds it now, not a cluster's tags
        existing.quota_key = record.quota_key or existing.quota_key
        existing.updated_at = utcnow()
        self.ledger.save(existing)
        self._enqueue_binding(existing.key, why)
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
        """Queue a re-read of the cluster or account the event names (never trust the event),
        unless one is queued already. A deployment event re-reads its account."""
        kind = "cluster" if event.kind == "cluster" else "account"
        self._queue_resync(kind, event.resource, event.change if event.kind != "deployment" else "write")

    def _queue_resync(self, kind: str, resource: ResourceId, change: str, delay: float = 0) -> bool:
        """Queue a re-read unless one is queued, after `delay` seconds (times KEYLESS_RETRY_DELAY_SCALE);
        True if this call queued it."""
        lease = f"resync|{kind}|{resource.key}"
        delay *= self.settings.retry_delay_scale
        if not self.ledger.acquire(lease, RESYNC_HOLD_SECONDS * self.settings.retry_delay_scale + delay):
            log.debug("%s %s: a re-read is queued already", kind, resource)
            return False
        try:
            self.queue.enqueue_raw(message(kind, id=str(resource), change=change), delay)
        except Exception:
            self._release_quietly(lease)  # so that the sender's redelivery queues it
            raise
        return True

    def _release_quietly(self, lease: str, only_own: bool = False) -> None:
        try:
            self.ledger.release(lease, only_own=only_own)
        except Exception:  # noqa: BLE001 - storage is failing already; the lease expires by itself
            log.warning("could not release lease %s; it expires by itself", lease)

    # --- the worker -----------------------------------------------------------------------

    def process(self, body: str) -> None:
        """Handle one queue message. Raises only for conditions the queue should retry."""
        msg = parse_message(body)
        if msg["kind"] == "binding":
            self.process_binding(msg["key"], msg)
            return
        kind = msg["kind"]
        resource = parse_resource_id(msg["id"], CLUSTER_TYPE if kind == "cluster" else ACCOUNT_TYPE, "id")
        # Give the lease back before reading: an event from now on queues a new re-read.
        self.ledger.release(f"resync|{kind}|{resource.key}")
        try:
            if kind == "cluster":
                self.sync_cluster(resource, msg["change"] == "delete")
            else:
                self.sync_account(resource, msg["change"] == "delete")
        except TemporaryError as exc:
            log.info("%s %s: not yet (%s); re-read queued", kind, resource, exc.reason)
            self._queue_resync(kind, resource, msg["change"], exc.delay_seconds)

    def process_binding(self, key: str, msg: dict[str, str] | None = None) -> BindingRecord | None:
        record = self.ledger.get(key)
        if record is None:
            log.warning("binding %s: no ledger record; message dropped", key)
            return None
        if record.status == "removed" and not record.live:
            self._announce(record)  # a "removed" event that could not be published before
            return record
        if record.live and not record.account:
            return record  # recorded failure (e.g. ambiguous account): nothing to reconcile
        try:
            binding = record.binding(self.settings.role_allowlist)
        except PermanentError as exc:
            record.status, record.reason, record.last_error = "failed", exc.reason, exc.reason
            self.ledger.save(record)
            return record
        lease = f"run|{key}"
        scale = self.settings.retry_delay_scale
        if not self.ledger.acquire(lease, self._run_lease_seconds()):
            # Another worker is on it: come back when its lease ends (at most BUSY_RETRY_SECONDS from
            # now), never drop the message: that run may have read the world before our cause.
            left = self.ledger.holds(lease) / scale  # in production seconds, as _enqueue_binding takes
            delay = min(max(left, 1.0), BUSY_RETRY_SECONDS)
            self._enqueue_binding(key, "another worker is reconciling this binding", delay, msg)
            return record
        try:
            self._expect_versions(binding, msg or {})
            if record.live:
                record, admitted = self._admit(record, binding)
                if not admitted:
                    return record
            return self._run(record, binding, _LeaseKeeper(self.ledger, lease, self._run_lease_seconds(), scale))
        finally:
            self._release_quietly(lease, only_own=True)

    def _admit(self, record: BindingRecord, binding: Binding) -> tuple[BindingRecord, bool]:
        """The worker's side of the one door, before every run of a live binding: (record, True) to
        go on (reconcile, or offboard when a revocation's grace ran out), (record, False) when the
        binding was refused, is revoked, or must wait."""
        requester = access.requester_of(record.source, record.cluster, record.principal)
        try:
            if isinstance(requester, access.ClusterTags) and not self._still_tagged(record, binding):
                record.desired, record.status = "absent", "offboarding"
                record.reason, record.updated_at = "removed from the cluster's tags", utcnow()
                return record, True
            grant = self.grant_for(binding, requester)
            self._count(record, grant)
        except TemporaryError as exc:
            self._enqueue_binding(record.key, f"checking access: {exc.reason}", exc.delay_seconds)
            return record, False
        except access.Refused as exc:
            return self._refuse(record, exc.reason)
        if record.revoked_at or record.status in ("refused", "revoked"):
            log.info("binding %s: access granted (again) by %s", record.key, grant.by)
            record.revoked_at = record.offboard_at = None
        return record, True

    def _still_tagged(self, record: BindingRecord, binding: Binding) -> bool:
        """Do the cluster's tags still ask for this binding? (True when the cluster cannot be read:
        the run finds out, and its deletion is an event of its own.)"""
        try:
            cluster = self.engine.clusters.get(binding.cluster)
        except TemporaryError:
            raise
        except KeylessError:
            return True
        tag_rules = cluster_tags.read_tags(cluster, binding.cluster, self.settings.system_namespaces)
        if (binding.namespace, binding.service_account) not in tag_rules.workloads:
            return False
        return tag_rules.account is None or tag_rules.account.key == binding.account.key

    def _count(self, record: BindingRecord, grant: access.Grant) -> None:
        """Count the binding in its grant's quota. Only a binding never run is held to the limit: one
        that runs already keeps its place when the policy moves it to another quota."""
        if record.quota_key == grant.quota_key:
            return
        limit = None if record.ever_granted else grant.quota_limit
        counted, count = self.ledger.claim_quota(grant.quota_key, record.key, limit)
        if not counted:
            raise _quota_exceeded(grant, count)
        self.ledger.release_quota(record.quota_key, record.key)
        record.quota_key = grant.quota_key

    def _refuse(self, record: BindingRecord, reason: str) -> tuple[BindingRecord, bool]:
        """Nothing made yet: `refused`. Made before: `revoked` (nothing repaired), and offboarded once
        KEYLESS_REVOKE_AFTER_SECONDS have passed since, unless the grant comes back meanwhile."""
        now = dt.datetime.now(dt.UTC)
        grace = self.settings.revoke_after_seconds
        if not record.ever_granted:
            if record.status != "refused" or record.reason != reason:
                log.warning("binding %s refused: %s", record.key, reason)
                record.status, record.reason, record.last_error, record.updated_at = "refused", reason, reason, utcnow()
                self.ledger.release_quota(record.quota_key, record.key)  # a refused binding holds no place
                record.quota_key = ""
                self._save_settled(record)
            return record, False
        if record.revoked_at is None:
            log.warning("binding %s revoked: %s", record.key, reason)
            record.status, record.revoked_at, record.updated_at = "revoked", utcnow(), utcnow()
            record.reason = record.last_error = f"access withdrawn: {reason}"
            record.offboard_at = _iso(now + dt.timedelta(seconds=grace))
            record.verification = {}
            self._save_settled(record)
            self._enqueue_binding(record.key, "revoked: offboard when the grace period ends", grace, real_time=True)
            return record, False
        deadline = _parse_time(record.revoked_at) + dt.timedelta(seconds=grace)
        if now < deadline:
            if record.offboard_at != _iso(deadline):  # the setting changed
                record.offboard_at = _iso(deadline)
                self.ledger.save(record)
            return record, False
        record.desired, record.status, record.updated_at = "absent", "offboarding", utcnow()
        record.reason = f"offboarded: access withdrawn at {record.revoked_at} ({reason})"
        return record, True

    def _save_settled(self, record: BindingRecord) -> None:
        """Save a status the worker settled without a run, and announce it."""
        from shared.adapters.ledger import LedgerConflict

        try:
            self.ledger.save(record)
        except LedgerConflict:
            self._enqueue_binding(record.key, "record changed while checking access")
            return
        self._announce(record)

    def _run_lease_seconds(self) -> float:
        """A run's lease: renewed after its steps (_LeaseKeeper), so it bounds one step, not the run;
        short, so that a worker that died frees its binding soon."""
        return RUN_LEASE_SECONDS * self.settings.retry_delay_scale + self.settings.cluster_update_wait_seconds

    def _expect_versions(self, binding: Binding, msg: dict[str, str]) -> None:
        """Don't reconcile from a cached cluster/account older than what the sender saw."""
        if "clusterVersion" in msg:
            self.engine.clusters.expect(binding.cluster, msg["clusterVersion"])
        if "accountVersion" in msg:
            self.engine.accounts.expect(binding.account, msg["accountVersion"])

    def _run(self, record: BindingRecord, binding: Binding, keeper: Any = None) -> BindingRecord:
        from shared.adapters.ledger import LedgerConflict

        record.status = "reconciling" if record.live else "offboarding"
        record.updated_at = utcnow()
        try:
            self.ledger.save(record)
        except LedgerConflict:
            fresh = self.ledger.get(record.key)  # e.g. the desired state changed since we read it
            if fresh is None:
                return record
            record = fresh
            binding = record.binding(self.settings.role_allowlist)
            record.status = "reconciling" if record.live else "offboarding"
            self.ledger.save(record)
        try:
            if record.live:
                result = self.engine.reconcile(binding, on_step=keeper)
                result.verification = after_ready.verify_after(self.engine, binding, result)  # `verified`?
            else:
                others = [r.binding(self.settings.role_allowlist) for r in self._same_workload(record)]
                result = self.engine.offboard(binding, others=others, on_step=keeper)
        except Exception as exc:
            # Unexpected: record it (never leave "reconciling" unrecorded) and let the queue retry.
            record.status = "not-ready"
            record.last_error = record.reason = f"internal error: {type(exc).__name__}"
            self.ledger.save(record)
            raise
        record = self._record(record, result)
        after_ready.after_run(self, record, result)  # re-check a rollout; the account may go keyless
        return record

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
        if record.status == "removed":
            self.ledger.release_quota(record.quota_key, record.key)
        self._announce(record)
        return record

    def publish(self, event: outcome_events.OutcomeEvent) -> bool:
        """Send one outcome event to the topic, if there is one; False (logged) when it could not."""
        if self.topic is None:
            return False
        try:
            self.topic.publish(event)
        except Exception as exc:  # noqa: BLE001 - a notification: log it and go on
            log.warning("outcome event %s (%s, %s) not published: %s", event.id, event.type, event.subject,
                        type(exc).__name__)  # fmt: skip
            return False
        log.info("published %s (%s) for %s", event.type, event.id, event.subject)
        return True

    def _announce(self, record: BindingRecord) -> None:
        """Publish the record's new settled status (shared.domain.outcome_events), at least once: when the
        topic cannot take it, the binding is queued again in a minute and the next run retries. An
        outcome event never fails a binding."""
        from shared.adapters.ledger import LedgerConflict

        event = outcome_events.outcome_event(record)
        if event is None or self.topic is None:
            return
        if not self.publish(event):
            self._enqueue_binding(record.key, "outcome event not published", 60)
            return
        record.announced_status = record.status
        try:
            self.ledger.save(record)
        except LedgerConflict:
            pass  # another run moved the record on; it announces its own status

    def _same_workload(self, record: BindingRecord) -> list[BindingRecord]:
        return [
            r
            for r in self.ledger.all(cluster=record.cluster, namespace=record.namespace, live_only=True)
            if r.service_account == record.service_account and r.key != record.key and r.account
        ]

    # --- clusters and accounts --------------------------------------------------------------

    def sync_cluster(self, cluster_id: ResourceId, deleted: bool = False) -> list[str]:
        """Bring the ledger in line with the cluster's tags, or its deletion; queue the changes.

        `deleted` is what the event said; ARM is asked either way and has the last word."""
        existing = list(self.ledger.all(cluster=str(cluster_id)))
        try:
            cluster = self.engine.clusters.get(cluster_id, fresh=True)
        except NotFoundError:
            return [self._offboard_record(r, "cluster deleted", "") for r in existing if r.live]
        except PermanentError as exc:  # e.g. 403: not a deletion; nothing to do until someone fixes it
            log.error("cluster %s: cannot read it: %s", cluster_id, exc.reason)
            return []
        if deleted:
            log.info("cluster %s: a delete event, but ARM has the cluster (re-created?): syncing it", cluster_id)
        version = {"clusterVersion": self.engine.clusters.version(cluster)}
        tag_rules = cluster_tags.read_tags(cluster, cluster_id, self.settings.system_namespaces)
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
                revive = current is not None and not current.live
                # the tag's Deployments are the tag binding's desired state; an API binding keeps its own
                retarget = (
                    current is not None and current.source == SOURCE_TAGS and current.workloads != record.workloads
                )
                if current is not None and (revive or retarget):
                    if revive:
                        current.desired, current.status = "present", "pending"
                    current.workloads = list(record.workloads)
                    self.ledger.save(current)
            self._enqueue_binding(record.key, "cluster written", 0, version)
            touched.append(record.key)
        for record in existing:
            if record.key in wanted_keys or not record.live:
                continue
            if record.source == SOURCE_TAGS:
                touched.append(self._offboard_record(record, "removed from the cluster's tags"))
            elif record.source == SOURCE_API:
                self._enqueue_binding(record.key, "cluster written", 0, version)
                touched.append(record.key)
        return touched

    def _bindings_from_tags(self, cluster_id: ResourceId, tag_rules: cluster_tags.TagRules) -> list[Any]:
        if not tag_rules.workloads:
            return []
        account_id: str | None = str(tag_rules.account) if tag_rules.account else None
        problem = ""
        if account_id is None:
            try:
                candidates = self.engine.accounts.list_in_group(cluster_id.subscription_id, cluster_id.resource_group)
                account_id = cluster_tags.choose_account(candidates)
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
                        workloads=list(tag_rules.deployments_of(ns, sa)),
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

    def sync_account(self, account_id: ResourceId, deleted: bool = False) -> list[str]:
        """Re-reconcile (or, when ARM no longer has it, offboard) every binding that uses the
        account, and re-read tagged clusters in its resource group that would pick it.

        `deleted` is what the event said; ARM is asked either way and has the last word."""
        try:
            account = self.engine.accounts.get(account_id, fresh=True)
            version = {"accountVersion": self.engine.accounts.version(account)}
            deleted = False
        except NotFoundError:
            deleted, version = True, {"accountVersion": ""}
        except PermanentError as exc:
            log.error("account %s: cannot read it: %s", account_id, exc.reason)
            return []
        touched: list[str] = []
        for record in self.ledger.all(account=str(account_id), live_only=True):
            if deleted:
                touched.append(self._offboard_record(record, "account deleted", ""))
            else:
                self._enqueue_binding(record.key, "account written", 0, version)
                touched.append(record.key)
        if not deleted:
            for cluster in self.engine.clusters.list_in_group(account_id.subscription_id, account_id.resource_group):
                cluster_id = parse_resource_id(cluster.id, CLUSTER_TYPE, "id")
                tag_rules = cluster_tags.read_tags(cluster, cluster_id, self.settings.system_namespaces)
                if tag_rules.workloads and tag_rules.account is None:
                    self._queue_resync("cluster", cluster_id, "write")
        return touched

    def _offboard_record(self, record: BindingRecord, reason: str, cluster_version: str | None = None) -> str:
        """Desired = absent, and queue the offboarding. `cluster_version` "" when the cluster is gone."""
        record.desired = "absent"
        record.status = "offboarding"
        record.reason = reason
        record.updated_at = utcnow()
        if record.account and record.ever_granted:
            self.ledger.save(record)
            versions = {"clusterVersion": cluster_version} if cluster_version is not None else None
            self._enqueue_binding(record.key, reason, 0, versions)
        else:  # nothing was made for it (no account, or refused before any run)
            record.status = "removed"
            self.ledger.save(record)
            self.ledger.release_quota(record.quota_key, record.key)
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

    def _enqueue_binding(
        self,
        key: str,
        reason: str,
        delay: float = 0,
        versions: dict[str, str] | None = None,
        real_time: bool = False,
    ) -> None:
        """Queue a run of the binding, after `delay` seconds (times KEYLESS_RETRY_DELAY_SCALE, unless
        `real_time`: a deadline someone set, such as a revocation's grace period)."""
        fields = {k: v for k, v in (versions or {}).items() if k in ("clusterVersion", "accountVersion")}
        body = message("binding", key=key, reason=reason[:200], **fields)
        seconds = delay if real_time else delay * self.settings.retry_delay_scale
        self.queue.enqueue_raw(body, min(seconds, MAX_QUEUE_DELAY_SECONDS))


def _quota_exceeded(grant: access.Grant, count: int) -> access.QuotaExceeded:
    return access.QuotaExceeded(
        f"maxBindings: the quota {grant.quota_name} allows {grant.quota_limit} live bindings and {max(count, 0)} "
        "use it; offboard one (DELETE /api/onboardings/<id>) or ask the operator to raise it",
        count,
    )


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


class _LeaseKeeper:
    """A run's step hook that keeps its lease: renewed after a step once a quarter of
    RUN_LEASE_SECONDS has passed since the last renewal, so a long run (run commands on a private
    cluster take seconds each) is not taken over by another worker while it still writes, as long
    as each step takes less than three quarters of it (90 s; a step makes at most two run commands)."""

    def __init__(self, ledger: Any, lease: str, seconds: float, scale: float) -> None:
        self._ledger, self._lease, self._seconds = ledger, lease, seconds
        self._every = RUN_LEASE_SECONDS * scale / 4
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
