"""Counting bindings in their grants' quotas (shared.domain.access.Grant), and what a binding that
comes back or changes hands counts as.

The ledger's quota index (one row per quota and binding) is what counts; a record's `quota_key`
says which rows are its own, so that they can be given back when it is removed or refused, and is
"" once they are.

Only one binding keeps its place whatever the limit: one that runs already, counted somewhere
already, when the operator moves it to another quota (a rule renamed or split, consent given where
a rule granted it) for the same requester. Anything else is a new request, held to the limit of
whoever asks: a new binding; one put back (in a cluster's tags, or asked for again through the API)
after it was taken away; one another requester takes over (the API taking a tag binding or another
team's binding, tags reviving an API binding). Without that, a pair taken out of the tags and put
back, or a takeover by a team whose quota is full, would never be counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from shared.domain import access
from shared.domain.records import BindingRecord, utcnow

if TYPE_CHECKING:
    from shared.app.keyless import Keyless


def count(app: Keyless, key: str, grant: access.Grant, keeps_place: bool = False) -> list[str]:
    """Count binding `key` in every quota of the grant; the quota keys it was newly counted in.
    QuotaExceeded naming the first quota without room (the places taken here given back).
    `keeps_place`: count it whatever the limits (a running binding moved by the operator)."""
    fresh: list[str] = []
    for quota in grant.quotas:
        counted, used = app.ledger.claim_quota(quota.key, key, None if keeps_place else quota.limit)
        if not counted:
            release(app, fresh, key)
            raise quota_exceeded(quota, used)
        if used >= 0:  # -1: counted there already
            fresh.append(quota.key)
    return fresh


def move(app: Keyless, record: BindingRecord, grant: access.Grant, keeps_place: bool) -> None:
    """Count the record in the grant's quotas (QuotaExceeded otherwise, the record unchanged), then
    give back the places it held elsewhere."""
    count(app, record.key, grant, keeps_place)
    new = set(access.quota_keys(grant.quota_key))
    release(app, [k for k in access.quota_keys(record.quota_key) if k not in new], record.key)
    record.quota_key = grant.quota_key


def give_back(app: Keyless, record: BindingRecord) -> None:
    """The record holds no place any more (removed, refused, or about to be counted anew)."""
    release(app, access.quota_keys(record.quota_key), record.key)
    record.quota_key = ""


def release(app: Keyless, quota_keys: Iterable[str], key: str) -> None:
    for quota_key in quota_keys:
        app.ledger.release_quota(quota_key, key)


def renew(app: Keyless, record: BindingRecord, requested_by: str, source: str, principal: dict[str, Any]) -> None:
    """A binding taken away (desired absent) is asked for again: a new request from whoever asks now.
    Its places are given back, so the door counts it anew; its requester (source, name, claims)
    is the new one, so the door asks *their* grant; and once it was removed, nothing of it exists
    any more, so a refusal is `refused`, not a revocation of what the old requester had."""
    give_back(app, record)
    if record.status == "removed":
        record.attempts = 0
    record.desired, record.status = "present", "pending"
    record.requested_by, record.source, record.principal = requested_by, source, dict(principal)
    record.revoked_at = record.offboard_at = None
    record.updated_at = utcnow()


def quota_exceeded(quota: access.Quota, used: int) -> access.QuotaExceeded:
    return access.QuotaExceeded(
        f"maxBindings: the quota {quota.name} allows {quota.limit} live bindings and {max(used, 0)} "
        "use it; offboard one (DELETE /api/onboardings/<id>) or ask the operator to raise it",
        used,
    )
