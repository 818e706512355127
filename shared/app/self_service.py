"""Self-service: a team asks for (or takes away) a binding it was granted, plans one, or looks at
what it may see (its own bindings, and those its policy covers).

The grant comes from the one door (shared.domain.access) in the HTTP handler; here the request is
recorded (with the caller's claims, so the worker can ask the policy again), counted in its quota,
and queued.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from typing import TYPE_CHECKING

from shared.app import after_ready, observability, quotas
from shared.domain import access, retry_policy
from shared.domain.binding import Binding
from shared.domain.errors import KeylessError, PermanentError, Throttled
from shared.domain.principal import Caller
from shared.domain.records import SOURCE_API, BindingRecord, utcnow
from shared.domain.results import ReconcileResult
from shared.domain.verification import VerificationReport

if TYPE_CHECKING:
    from shared.app.keyless import Keyless


def request_onboarding(
    app: Keyless, binding: Binding, caller: Caller, grant: access.Grant
) -> tuple[BindingRecord, bool]:
    """Record the binding the caller was granted (shared.domain.access) and queue it. (record, True) if new,
    revived or changed, (record, False) if it is live as asked. QuotaExceeded when a quota of the grant
    is used up by other live bindings: a binding asked for again after it was taken away, or taken
    over from another requester, is a new request of the caller's and needs room too
    (shared.app.quotas)."""
    observability.annotate(**{"keyless.onboarding.id": binding.key})
    record = BindingRecord.for_binding(binding, requested_by=caller.audit, source=SOURCE_API)
    record.principal = access.recorded_principal(caller)
    record.quota_key = grant.quota_key
    fresh: list[str] = []
    existing = app.ledger.get(record.key)
    if existing is None:
        fresh = quotas.count(app, binding.key, grant)  # counted first: two racing requests never both pass
        if app.ledger.create(record):
            app.enqueue_binding(record.key, "onboarding requested")
            return record, True
        existing = app.ledger.get(record.key)
        if existing is None:
            return request_onboarding(app, binding, caller, grant)  # deleted between the two calls
    settled = existing.status not in ("refused", "revoked")
    if existing.live and settled and list(existing.workloads or ()) == list(binding.workloads):
        held = access.quota_keys(existing.quota_key)
        quotas.release(app, [k for k in fresh if k not in held], binding.key)  # it stays counted where it is
        return existing, False
    why = "workloads changed" if existing.live and settled else "onboarding requested again"
    if not existing.live:  # taken away before: a new request, counted anew
        quotas.renew(app, existing, caller.audit, SOURCE_API, record.principal)
    mine = bool(caller.object_id) and existing.requested_by_object_id() == caller.object_id
    # Only the caller's own running binding keeps its place when moved to the grant's quota; a takeover
    # (another team's binding, a tag binding) is held to the caller's limit.
    quotas.move(app, existing, grant, keeps_place=existing.ever_granted and bool(existing.quota_key) and mine)
    existing.desired = "present"
    existing.workloads = list(binding.workloads)
    existing.status = "pending"
    existing.requested_by = caller.audit
    existing.principal = record.principal
    existing.source = SOURCE_API  # the caller's grant holds it now, not a cluster's tags
    existing.updated_at = utcnow()
    app.ledger.save(existing)
    app.enqueue_binding(existing.key, why)
    return existing, True


def onboarding(app: Keyless, key: str) -> BindingRecord | None:
    """The recorded binding `key`, or None (whether the caller may see it is `check_may_act`'s call)."""
    return app.ledger.get(key)


def request_offboarding(app: Keyless, key: str) -> BindingRecord | None:
    record = app.ledger.get(key)
    if record is None:
        return None
    if record.desired == "absent" and record.status == "removed":
        return record
    record.desired = "absent"
    record.status = "offboarding"
    record.updated_at = utcnow()
    app.ledger.save(record)
    app.enqueue_binding(record.key, "offboarding requested")
    return record


def plan(app: Keyless, binding: Binding, caller: Caller) -> ReconcileResult:
    """Dry run: every step and what it would do, with reads only (of Azure: from the caller's share,
    _take_live_read_slot)."""
    _take_live_read_slot(app, caller)
    return app.engine.reconcile(binding, dry_run=True)


# --- what the API shows, and to whom ----------------------------------------------------------


def may_see(app: Keyless, caller: Caller, record: BindingRecord) -> bool:
    """The caller asked for it, or their policy covers its binding."""
    if caller.object_id and record.requested_by_object_id() == caller.object_id:
        return True
    binding = _binding_of(app, record)
    return binding is not None and app.policy is not None and app.policy.covers(caller, binding)


def check_may_act(app: Keyless, caller: Caller, record: BindingRecord) -> None:
    """May the caller read or take away this binding? Whoever asked for it always may, even after the
    policy stopped granting it; anyone else needs a grant for it. access.Refused otherwise."""
    if caller.object_id and record.requested_by_object_id() == caller.object_id:
        return
    binding = _binding_of(app, record)
    if binding is None:
        raise access.Refused("id: this onboarding has no binding your policy could cover")
    app.grant_for(binding, caller)


def onboardings(
    app: Keyless,
    caller: Caller,
    cluster: str | None,
    namespace: str | None,
    page_size: int,
    continuation: str | None,
    account: str | None = None,
    statuses: Collection[str] = (),
) -> tuple[list[BindingRecord], str | None]:
    """One page of the onboardings the caller may see, and a token for the next (None: no more).
    `account` narrows the read (the ledger's account index); `statuses`, when given, is a filter on
    what is read (a record's status is not indexed), so a page of them may be short: the scan cap holds.

    The page is filled with what the caller may see, reading at most KEYLESS_LIST_SCAN_ROWS rows (a
    page that reaches them may be short, or empty, and carries a token). The token names where the
    page ended but says nothing of it: the position stays in the ledger, the caller gets a random
    name for it that only they may use (shared.adapters.list_cursors). ValueError for a token that is
    not one of the caller's live ones, or is another list's."""
    owner = caller.object_id
    position = app.ledger.load_cursor(owner, continuation) if continuation else None
    records, after = app.ledger.query(
        cluster=cluster,
        namespace=namespace,
        account=account,
        page_size=page_size,
        continuation=position,
        visible=lambda record: (not statuses or record.status in statuses) and may_see(app, caller, record),
        scan_limit=app.settings.list_scan_rows,
    )
    return records, app.ledger.save_cursor(owner, after) if after else None


def verification(app: Keyless, caller: Caller, record: BindingRecord) -> VerificationReport:
    """A live verification of the binding, with the account's blockers the caller may see. Throttled when the
    caller has used their share (retry_policy.LIVE_READS_PER_CALLER a window): nothing is read then."""
    _take_live_read_slot(app, caller)
    return after_ready.verification_for(app, record, visible=lambda other: may_see(app, caller, other))


def _take_live_read_slot(app: Keyless, caller: Caller) -> None:
    """One of the caller's slots (a lease each, held for the window), from a random one on, for a request that
    reads Azure live (a verification, a dry run): a caller looping on them cannot spend the Azure read budget
    every binding shares. The worker's own runs and verifications need no slot. Throttled when none is free:
    nothing is read then."""
    slots, window = retry_policy.LIVE_READS_PER_CALLER, retry_policy.LIVE_READ_WINDOW_SECONDS
    who = caller.object_id or caller.name or "anonymous"
    first = random.randrange(slots)
    names = [f"live-read|{who}|{(first + i) % slots}" for i in range(slots)]
    if any(app.ledger.acquire(name, window) for name in names):
        return
    wait = max(app.ledger.seconds_left(names[0]), retry_policy.RETRY_AFTER_MIN_SECONDS)
    raise Throttled(
        f"id: at most {slots} live reads of Azure (verifications, dry runs) every {window:.0f} s per caller; again "
        f"in {wait:.0f} s. The worker verifies every binding after each run: GET /api/onboardings/{{id}} shows "
        "its last verification",
        wait,
    )


def health(app: Keyless) -> list[tuple[str, str | None]]:
    """(check, None when it passes, else what is wrong and its fix) for the ledger's table, the work
    queue and the Azure credential. The adapters' reasons name the setting, never its value: /api/health
    answers anyone."""
    checks: list[tuple[str, str | None]] = []
    for name, ping in (("storage-table", app.ledger.ping), ("storage-queue", app.queue.ping)):
        try:
            ping()
            checks.append((name, None))
        except KeylessError as exc:
            checks.append((name, exc.reason))
        except Exception as exc:  # noqa: BLE001 - health reports any failure, never raises
            checks.append((name, f"AzureWebJobsStorage: the storage account failed ({type(exc).__name__})"))
    checks.append(("azure-credential", app.credential_problem() if app.credential_problem else None))
    return checks


def _binding_of(app: Keyless, record: BindingRecord) -> Binding | None:
    try:
        return record.binding(app.settings.role_allowlist) if record.account else None
    except PermanentError:
        return None
