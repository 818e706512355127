"""After `ready`: is the binding verified, and may its account go keyless? Use cases over the
ledger and the engine, called by the worker (shared.app.worker) and the verification endpoint.

- The worker verifies a binding right after a run that ended `ready` (the record then says
  `verified` only if every check passed). A verification that is pending for a reason that
  passes by itself (a rollout under way, pods starting) is re-checked soon, a few times, with a
  growing delay; after that the drift sweep re-checks.
- When a binding becomes verified, its account is looked at: if it opted in to keyless
  (tag `keyless-enforce=true`, or KEYLESS_ENFORCE_KEYLESS_ACCOUNTS) and every live binding of it
  is verified and no pod seen in their namespaces still carries a key, local authentication is
  turned off. Otherwise the blockers are what would break, named. Keys are never turned back on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from shared.domain import outcome_events, retry_policy
from shared.domain.binding import Binding
from shared.domain.errors import KeylessError
from shared.domain.ids import ACCOUNT_TYPE, parse_resource_id
from shared.domain.records import BindingRecord, utcnow
from shared.domain.results import ReconcileResult, StepOutcome
from shared.domain.verification import VerificationReport

log = logging.getLogger("keyless.assurance")


def verify_after(engine: Any, binding: Binding, result: ReconcileResult) -> VerificationReport | None:
    """The worker's verification of a run that ended `ready` (None otherwise). A verification that
    breaks unexpectedly is logged, never allowed to fail the run it follows."""
    if result.status != "ready":
        return None
    try:
        return engine.verify(binding, after=result)  # type: ignore[no-any-return]
    except Exception:  # noqa: BLE001 - the run converged; only the evidence is missing
        log.exception("binding %s: verification failed unexpectedly", binding.key)
        return None


def after_run(svc: Any, record: BindingRecord, result: ReconcileResult) -> StepOutcome | None:
    """What follows a recorded run: a re-check of a pending verification, or the account's turn."""
    report = result.verification
    if report is None or not record.live:
        return None
    if record.status == "ready" and report.retry_after_seconds is not None:
        rechecks = int(record.verification.get("rechecks", 0))
        if rechecks < retry_policy.VERIFICATION_MAX_RECHECKS:
            delay = min(report.retry_after_seconds * 2**rechecks, retry_policy.VERIFICATION_MAX_RECHECK_SECONDS)
            svc.enqueue_binding(record.key, "verification pending: " + _first_open(report), delay)
        return None
    if record.status == "verified":
        return enforce_keyless_account(svc, record.account)
    return None


def _first_open(report: VerificationReport) -> str:
    for check in report.checks:
        if check.status != "pass":
            return f"{check.name}: {check.reason}"
    return ""


def blockers(svc: Any, account: str) -> list[str]:
    """What turning the account's keys off would break, as far as Keyless can see: its live
    bindings that are not verified, and pods (in their namespaces) that still carry a key."""
    return visible_blockers(svc, account, None)[0]


def visible_blockers(svc: Any, account: str, visible: Callable[[BindingRecord], bool] | None) -> tuple[list[str], int]:
    """The blockers of bindings `visible` lets the asker see (all when None), and how many others
    there are: a team's report never names another team's namespaces, service accounts or pods."""
    out: list[str] = []
    hidden = 0
    for r in svc.ledger.all(account=account, live_only=True):
        if r.status == "refused":
            continue  # never granted: nothing of it relies on the account
        where = f"{r.namespace}/{r.service_account} on {r.cluster.rsplit('/', 1)[-1]}"
        items = [f"binding {r.key} ({where}) is {r.status}"] if r.status != "verified" else []
        for pod in (r.verification or {}).get("wouldBreak") or []:
            items.append(f"pod {pod.get('namespace')}/{pod.get('pod')} ({pod.get('container')}) uses an API key")
        if visible is not None and not visible(r):
            hidden += len(items)
            continue
        out += [item for item in items if item not in out]
    return out, hidden


def enforce_keyless_account(svc: Any, account: str) -> StepOutcome:
    """Turn local auth off on an opted-in account with nothing left that needs keys. Never raises
    for Azure conditions (the next verified run tries again)."""
    account_id = parse_resource_id(account, ACCOUNT_TYPE, "openAIAccount")
    try:
        outcome: StepOutcome = svc.engine.enforce_keyless_account(account_id, lambda: blockers(svc, account))
    except KeylessError as exc:
        outcome = StepOutcome("keyless-account", "failed", exc.reason)
    log.info("account %s keyless: %s %s", account_id.name, outcome.outcome, outcome.reason)
    if outcome.outcome == "updated":
        verified = [r.key for r in svc.ledger.all(account=account, live_only=True) if r.status == "verified"]
        svc.publish(outcome_events.keys_disabled_event(str(account_id), verified, utcnow()))
    return outcome


def verification_for(
    svc: Any, record: BindingRecord, visible: Callable[[BindingRecord], bool] | None = None
) -> VerificationReport:
    """A live verification (reads only) for the API, with the account's keyless state attached:
    the blockers `visible` lets the caller see, and a count of the others."""
    report: VerificationReport = svc.engine.verify(record.binding(svc.settings.role_allowlist))
    if report.keyless_account:
        shown, hidden = visible_blockers(svc, record.account, visible)
        report.keyless_account["blockers"] = shown
        report.keyless_account["hiddenBlockers"] = hidden
    return report
