"""The worker's side of the one door (shared.domain.access): before every run of a live binding,
ask again whether it may exist. A queued message or a ledger record is no proof of permission, and a
grant or consent withdrawn since is honoured:

- never run yet: `refused` (nothing was made); the reason names what is missing and how to give it;
- run before: `revoked`, nothing repaired any more, and offboarded KEYLESS_REVOKE_AFTER_SECONDS later
  unless the grant comes back first (then the next run repairs it);
- a tag binding its cluster's tags no longer ask for: offboarded at once.

Quotas are counted here too (shared.app.quotas: ledger index, one partition per quota).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.app.keyless import Keyless

from shared.app import observability, quotas
from shared.domain import access, cluster_tags
from shared.domain.binding import Binding
from shared.domain.errors import KeylessError, TemporaryError
from shared.domain.records import BindingRecord, utcnow

log = logging.getLogger("keyless.service")


def admit(app: Keyless, record: BindingRecord, binding: Binding) -> tuple[BindingRecord, bool]:
    """The worker's side of the one door, before every run of a live binding: (record, True) to
    go on (reconcile, or offboard when a revocation's grace ran out), (record, False) when the
    binding was refused, is revoked, or must wait."""
    requester = access.requester_of(record.source, record.cluster, record.principal)
    try:
        if isinstance(requester, access.ClusterTags) and not _still_tagged(app, record, binding):
            record.desired, record.status = "absent", "offboarding"
            record.reason, record.updated_at = "removed from the cluster's tags", utcnow()
            return record, True
        grant = app.grant_for(binding, requester)
        _count(app, record, grant)
    except TemporaryError as exc:
        app.enqueue_binding(record.key, f"checking access: {exc.reason}", exc.delay_seconds)
        return record, False
    except access.Refused as exc:
        record, go_on = _refuse(app, record, exc.reason)
        if not go_on:
            observability.run_ended(record.status, "quota" if isinstance(exc, access.QuotaExceeded) else "access")
        return record, go_on
    if record.revoked_at or record.status in ("refused", "revoked"):
        log.info("binding %s: access granted (again) by %s", record.key, grant.by)
        record.revoked_at = record.offboard_at = None
    return record, True


def _still_tagged(app: Keyless, record: BindingRecord, binding: Binding) -> bool:
    """Do the cluster's tags still ask for this binding? (True when the cluster cannot be read:
    the run finds out, and its deletion is an event of its own.)"""
    try:
        cluster = app.engine.clusters.get(binding.cluster)
    except TemporaryError:
        raise
    except KeylessError:
        return True
    return cluster_tags.still_asks(cluster, binding, app.settings.system_namespaces)


def _count(app: Keyless, record: BindingRecord, grant: access.Grant) -> None:
    """Count the binding in its grant's quotas (shared.app.quotas), asking the quota index every
    time: a record's copy of where it is counted proves nothing. Only a binding that runs already
    and is counted somewhere keeps its place when the policy moves it to another quota; a new,
    revived or taken-over binding has no place yet (shared.app.quotas.renew) and is held to the limit."""
    quotas.move(app, record, grant, keeps_place=record.ever_granted and bool(record.quota_key))


def _refuse(app: Keyless, record: BindingRecord, reason: str) -> tuple[BindingRecord, bool]:
    """Nothing made yet: `refused`. Made before: `revoked` (nothing repaired), and offboarded once
    KEYLESS_REVOKE_AFTER_SECONDS have passed since, unless the grant comes back meanwhile."""
    now = dt.datetime.now(dt.UTC)
    grace = app.settings.revoke_after_seconds
    if not record.ever_granted:
        if record.status != "refused" or record.reason != reason:
            log.warning("binding %s refused: %s", record.key, reason)
            record.status, record.reason, record.last_error, record.updated_at = "refused", reason, reason, utcnow()
            quotas.give_back(app, record)  # a refused binding holds no place
            app.save_settled(record)
        return record, False
    if record.revoked_at is None:
        log.warning("binding %s revoked: %s", record.key, reason)
        record.status, record.revoked_at, record.updated_at = "revoked", utcnow(), utcnow()
        record.reason = record.last_error = f"access withdrawn: {reason}"
        record.offboard_at = _iso(now + dt.timedelta(seconds=grace))
        record.verification = {}
        app.save_settled(record)
        app.enqueue_binding(record.key, "revoked: offboard when the grace period ends", grace, real_time=True)
        return record, False
    deadline = _parse_time(record.revoked_at) + dt.timedelta(seconds=grace)
    if now < deadline:
        if record.offboard_at != _iso(deadline):  # the setting changed
            record.offboard_at = _iso(deadline)
            app.ledger.save(record)
        return record, False
    record.desired, record.status, record.updated_at = "absent", "offboarding", utcnow()
    record.reason = f"offboarded: access withdrawn at {record.revoked_at} ({reason})"
    return record, True


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
