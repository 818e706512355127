"""The direct mode: one binding onboarded, verified or offboarded in the caller's own process, with the
caller's own Azure sign-in (`az login`), and no deployed Keyless.

Why: the seed's page of `az` and `kubectl` steps, done by the same engine as the worker, for a person who
has not deployed the Functions app (or wants one workload now). What it leaves out, on purpose:

- storage: no ledger, no queue, no lease. A "not yet" is waited out here (the step's delay, times
  KEYLESS_RETRY_DELAY_SCALE), up to a deadline, instead of being queued.
- the one door: there is no access policy, because nothing is delegated. The caller's own Azure RBAC
  (and the cluster's) is the limit; the role allowlist still applies (Binding.create).

Offboarding without a ledger decides "what another binding still uses" from Azure: another role
assignment of the workload's identity (on another account, or another role) keeps the identity, its
credential and the service account's annotation (and the ConfigMap, for the same account).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from shared.domain import retry_policy
from shared.domain.binding import Binding
from shared.domain.errors import KeylessError, PermanentError
from shared.domain.ids import ACCOUNT_TYPE, parse_resource_id
from shared.domain.results import WRITES, ReconcileResult, StepOutcome
from shared.domain.settings import Settings
from shared.domain.verification import RECHECK_SECONDS, VerificationReport

if TYPE_CHECKING:
    from shared.engine.reconcile import Engine

Verdict = Literal["verified", "removed", "planned", "failed", "pending"]


@dataclasses.dataclass
class Direct:
    """The direct mode's collaborators: settings and an engine. No storage, no policy."""

    settings: Settings
    engine: Engine
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic


@dataclasses.dataclass
class Outcome:
    """How a direct run ended: `verdict`, why (`reason`), and the last run and verification."""

    verdict: Verdict
    reason: str = ""
    result: ReconcileResult | None = None
    verification: VerificationReport | None = None
    steps: list[StepOutcome] = dataclasses.field(default_factory=list)  # of every run, in order

    @property
    def runs(self) -> int:
        """Runs made: a run starts over at the first step after each wait."""
        first = self.steps[0].step if self.steps else None
        return sum(1 for s in self.steps if s.step == first)

    @property
    def changed(self) -> bool:
        """Did any run write (or, dry, would it)? `unchanged`, `absent`, `skipped` are reads only."""
        return any(s.outcome in WRITES for s in self.steps)


class Listener:
    """What a direct run tells as it goes (the command prints it): override what you show."""

    def step(self, step: StepOutcome) -> None: ...
    def waiting(self, reason: str, seconds: float) -> None: ...
    def verified(self, report: VerificationReport) -> None: ...


def connect(env: Mapping[str, str], prove_access: bool = True) -> Direct:
    """Settings from `env` (the caller's environment; no storage needed) and an engine signed in as the
    caller (DefaultAzureCredential: `az login`, or the AZURE_* variables). SettingsError names the bad key.
    With `prove_access`, verification also proves access (KEYLESS_PROVE_ACCESS) unless `env` turns it off."""
    from shared.adapters.credentials import default_credential
    from shared.engine.reconcile import Engine

    settings = Settings.from_env(env)
    if prove_access and "KEYLESS_PROVE_ACCESS" not in env:
        settings = dataclasses.replace(settings, prove_access=True)
    return Direct(settings, Engine.from_settings(settings, default_credential(settings)))


def binding(direct: Direct, cluster: str, namespace: str, service_account: str, account: str,
            role: str | None = None, workloads: list[str] | None = None) -> Binding:  # fmt: skip
    """The binding as the API would build it (PermanentError naming the bad field)."""
    s = direct.settings
    return Binding.create(cluster, namespace, service_account, account, role or s.default_role,
                          allowlist=s.role_allowlist, workloads=workloads or None)  # fmt: skip


def onboard(direct: Direct, b: Binding, listener: Listener, timeout: float, dry_run: bool = False) -> Outcome:
    """Converge `b` to present, then verify it, waiting out each "not yet" until `timeout` seconds have
    passed. `verified` only when every check passed; `pending` when the deadline came first (or a check
    waits for something that does not pass by itself, e.g. pods to restart); `failed` naming the fix.
    With `dry_run`: the plan (reads only), verdict `planned`."""
    deadline = direct.clock() + timeout
    steps: list[StepOutcome] = []
    hook = _hook(listener, steps)
    while True:
        result = direct.engine.reconcile(b, on_step=hook, dry_run=dry_run)
        if dry_run:
            return Outcome("planned", result.reason, result, steps=steps)
        if result.no_credential or result.status == "failed":
            return Outcome("failed", result.reason, result, steps=steps)
        if result.status == "not-ready":
            if not _wait(direct, listener, result.reason, result.retry_after_seconds, deadline):
                return Outcome("pending", result.reason, result, steps=steps)
            continue
        break
    while True:
        report = direct.engine.verify(b, after=result)
        listener.verified(report)
        if report.status == "pass":
            return Outcome("verified", "", result, report, steps)
        why = _first_open(report)
        if report.status == "fail":
            return Outcome("failed", why, result, report, steps)
        # Wait while a check may pass by itself (Entra, a rollout); what waits for a person (no pod uses the
        # service account yet) ends the run `pending`, once nothing else is left to wait for.
        passing = [c for c in report.checks if c.status == "pending" and c.retry]
        if passing:
            why = f"{passing[0].name}: {passing[0].reason}"
        if not passing or not _wait(direct, listener, why, RECHECK_SECONDS, deadline):
            return Outcome("pending", why, result, report, steps)


def verify(direct: Direct, b: Binding, listener: Listener) -> Outcome:
    """One live verification (reads only): `verified`, `failed` or `pending`, naming the first open check."""
    report = direct.engine.verify(b)
    listener.verified(report)
    verdict: Verdict = {"pass": "verified", "fail": "failed"}.get(report.status, "pending")  # type: ignore[assignment]
    return Outcome(verdict, _first_open(report) if verdict != "verified" else "", None, report)


def offboard(direct: Direct, b: Binding, listener: Listener, timeout: float) -> Outcome:
    """Converge `b` to absent: Azure's access first, then the cluster, best effort (leftovers named in
    the steps). What the identity's other role assignments show another binding uses stays. `removed`,
    `failed`, or `pending` at the deadline."""
    deadline = direct.clock() + timeout
    steps: list[StepOutcome] = []
    hook = _hook(listener, steps)
    while True:
        result = direct.engine.offboard(b, others=_others_in_azure(direct, b), on_step=hook)
        if result.no_credential or result.status == "failed":
            return Outcome("failed", result.reason, result, steps=steps)
        if result.status == "removed":
            return Outcome("removed", "", result, steps=steps)
        if not _wait(direct, listener, result.reason, result.retry_after_seconds, deadline):
            return Outcome("pending", result.reason, result, steps=steps)


def _others_in_azure(direct: Direct, b: Binding) -> list[Binding]:
    """The workload's other bindings, as the identity's role assignments in the account's subscription
    show them (no ledger here): one per assignment on another Azure OpenAI account, or another role."""
    try:
        identity = direct.engine.world.find_identity(b)
        if identity is None or not identity.principal_id:
            return []
        sub = b.account.subscription_id
        found = direct.engine.roles.list_for_principal(sub, f"/subscriptions/{sub}", identity.principal_id)
    except KeylessError:
        return []  # the offboarding's own steps meet the same condition and say so
    others: list[Binding] = []
    for ra in found:
        try:
            account = parse_resource_id(ra.scope, ACCOUNT_TYPE, "scope")
        except PermanentError:
            continue  # not an account: not Keyless's
        if account.key == b.account.key and ra.role_guid == b.role_definition_id.lower():
            continue  # this binding's own
        others.append(dataclasses.replace(b, account=account, role_definition_id=ra.role_guid, workloads=()))
    return others


def _hook(listener: Listener, steps: list[StepOutcome]) -> Callable[[Binding, StepOutcome], None]:
    def on_step(_binding: Binding, step: StepOutcome) -> None:
        steps.append(step)
        listener.step(step)

    return on_step


def _wait(direct: Direct, listener: Listener, reason: str, delay: float | None, deadline: float) -> bool:
    """Wait out a "not yet" (its delay times KEYLESS_RETRY_DELAY_SCALE, at least a tenth of a second);
    False, without waiting, when the deadline would pass first."""
    seconds = max((delay or retry_policy.NOT_YET_DEFAULT_SECONDS) * direct.settings.retry_delay_scale, 0.1)
    if direct.clock() + seconds > deadline:
        return False
    listener.waiting(reason, seconds)
    direct.sleep(seconds)
    return True


def _first_open(report: VerificationReport) -> str:
    for check in report.checks:
        if check.status != "pass":
            return f"{check.name}: {check.reason}" if check.reason else check.name
    return ""


def describe(outcome: Outcome) -> dict[str, Any]:
    """The outcome as JSON for scripts (`keyless ... --json`)."""
    out: dict[str, Any] = {"verdict": outcome.verdict, "reason": outcome.reason, "runs": outcome.runs,
                           "changed": outcome.changed}  # fmt: skip
    if outcome.result is not None:
        out["run"] = outcome.result.as_dict()
    if outcome.verification is not None:
        out["verification"] = outcome.verification.as_dict()
    return out
