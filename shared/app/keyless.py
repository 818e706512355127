"""Keyless, the application's shared part: its collaborators (settings, ledger, queue, engine, sweep log,
topic, policy) and the few primitives every use case needs (queue a binding or a re-read, publish an
outcome event, ask the one door). It imports no use case: each use case is a module of functions that
takes this object, and the handlers call those modules directly, so the import graph has no circle:

    shared.app.self_service   requests from the API           shared.app.worker      the queue worker
    shared.app.event_intake   ARM events -> re-reads           shared.app.admission   the worker's door
    shared.app.tag_bindings   cluster tags -> bindings         shared.app.sweep       the drift sweep
    shared.app.after_ready    verification, keyless accounts   shared.app.quotas      quota places
    shared.app.deletions      out-of-band deletes

Three rules keep a scaled-out worker fast and exact under Event Grid's at-least-once, unordered
delivery: one queued re-read per cluster or account (a "resync" lease, given back before the
worker reads ARM); the event's change is a hint (ARM has the last word); one run per binding at a
time (a "run" lease). "Not yet" delays and leases are multiplied by KEYLESS_RETRY_DELAY_SCALE.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from shared.app.messages import message
from shared.app.ports import Ledger, LedgerConflict, OutcomeTopic, SweepLog, WorkQueue
from shared.domain import access, outcome_events, retry_policy
from shared.domain.binding import Binding
from shared.domain.errors import KeylessError, TemporaryError
from shared.domain.ids import ResourceId
from shared.domain.policy import AccessPolicy
from shared.domain.records import BindingRecord
from shared.domain.settings import Settings

if TYPE_CHECKING:
    from shared.engine.reconcile import Engine

log = logging.getLogger("keyless.service")

MAX_QUEUE_DELAY_SECONDS = retry_policy.QUEUE_MAX_VISIBILITY_SECONDS - 60


def deleted_lease(kind: str, resource_id: str) -> str:
    """The lease that keeps one queued check per deleted identity or role assignment (shared.app.deletions)."""
    return f"deleted|{kind}|{resource_id.lower()}"


@dataclasses.dataclass
class Keyless:
    settings: Settings
    ledger: Ledger
    queue: WorkQueue
    engine: Engine
    sweeps: SweepLog
    topic: OutcomeTopic | None = None  # None: no outcome events
    policy: AccessPolicy | None = None  # None: deny every caller; cluster tags need the account's consent
    # /api/health's credential check: None when the credential gives a token, else the fix (cached a minute)
    credential_problem: Callable[[], str | None] | None = None

    # --- what the use cases share ---------------------------------------------------------

    def grant_for(self, binding: Binding, requester: access.Requester) -> access.Grant:
        """The one door for a binding about to run: for cluster tags the account's current tags (its
        consent) are read from ARM first. Refused naming what is missing."""
        account_tags = None
        if isinstance(requester, access.ClusterTags):
            try:
                account_tags = self.engine.accounts.get(binding.account).tags
            except TemporaryError:
                raise
            except KeylessError as exc:
                log.warning("binding %s: cannot read account %s for its consent: %s", binding.key,
                            binding.account.name, exc.reason)  # fmt: skip
        return self.door(binding, requester, account_tags)

    def door(
        self, binding: Binding, requester: access.Requester, account_tags: Mapping[str, str] | None
    ) -> access.Grant:
        """shared.domain.access.authorise with this deployment's policy and settings, and the account's tags
        as the caller read them (the worker from ARM, the sweep from its inventory). Pure: no I/O."""
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

    def enqueue_binding(
        self,
        key: str,
        reason: str,
        delay: float = 0,
        versions: dict[str, str] | None = None,
        real_time: bool = False,
    ) -> None:
        """Queue a run of the binding, after `delay` seconds (times KEYLESS_RETRY_DELAY_SCALE, unless
        `real_time`: a deadline someone set, such as a revocation's grace period). `versions` may carry what
        the run must not read older than (clusterVersion, accountVersion) and the drift sweep that queued it
        (sweep: its repairs are counted there)."""
        fields = {k: v for k, v in (versions or {}).items() if k in ("clusterVersion", "accountVersion", "sweep")}
        body = message("binding", key=key, reason=reason[:200], **fields)
        seconds = delay if real_time else delay * self.settings.retry_delay_scale
        self.queue.enqueue_raw(body, min(seconds, MAX_QUEUE_DELAY_SECONDS))

    def queue_resync(self, kind: str, resource: ResourceId, change: str, delay: float = 0) -> bool:
        """Queue a re-read unless one is queued, after `delay` seconds (times KEYLESS_RETRY_DELAY_SCALE);
        True if this call queued it."""
        lease = f"resync|{kind}|{resource.key}"
        delay *= self.settings.retry_delay_scale
        if not self.ledger.acquire(lease, retry_policy.RESYNC_HOLD_SECONDS * self.settings.retry_delay_scale + delay):
            log.debug("%s %s: a re-read is queued already", kind, resource)
            return False
        try:
            self.queue.enqueue_raw(message(kind, id=str(resource), change=change), delay)
        except Exception:
            self.release_quietly(lease)  # so that the sender's redelivery queues it
            raise
        return True

    def queue_check(self, kind: str, resource_id: str) -> bool:
        """Queue one check of the bindings that used a deleted identity or role assignment, unless one
        is queued already (shared.app.deletions); True if this call queued it."""
        lease = deleted_lease(kind, resource_id)
        if not self.ledger.acquire(lease, retry_policy.RESYNC_HOLD_SECONDS * self.settings.retry_delay_scale):
            return False
        try:
            self.queue.enqueue_raw(message(kind, id=resource_id, change="delete"))
        except Exception:
            self.release_quietly(lease)
            raise
        return True

    def release_quietly(self, lease: str, only_own: bool = False) -> None:
        try:
            self.ledger.release(lease, only_own=only_own)
        except Exception:  # noqa: BLE001 - storage is failing already; the lease expires by itself
            log.warning("could not release lease %s; it expires by itself", lease)

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

    def announce(self, record: BindingRecord) -> None:
        """Publish the record's new settled status (shared.domain.outcome_events), at least once: when the
        topic cannot take it, the binding is queued again in a minute and the next run retries. An
        outcome event never fails a binding."""
        event = outcome_events.outcome_event(record)
        if event is None or self.topic is None:
            return
        if not self.publish(event):
            self.enqueue_binding(record.key, "outcome event not published", retry_policy.OUTCOME_EVENT_RETRY_SECONDS)
            return
        record.announced_status = record.status
        try:
            self.ledger.save(record)
        except LedgerConflict:
            pass  # another run moved the record on; it announces its own status

    def save_settled(self, record: BindingRecord) -> None:
        """Save a status the worker settled without a run, and announce it."""
        try:
            self.ledger.save(record)
        except LedgerConflict:
            self.enqueue_binding(record.key, "record changed while checking access")
            return
        self.announce(record)
