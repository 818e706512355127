"""The step runner: the read → plan → write → record shape of every step, written once.

A run (onboarding or offboarding one binding) is a list of named steps. Each step reads, asks the
planner, writes only the difference, and records an outcome. A step that raises TemporaryError ends
the run `not-yet` (retry after its delay), PermanentError ends it `failed`; the steps not reached are
reported `skipped`. A best-effort step (offboarding's cluster cleanup) names what it cleans up: its
PermanentError is recorded `left`, with the object, and the run goes on (ReconcileResult.leftovers);
a TemporaryError still means "again later", since the cluster may well answer then.
`on_step` sees every outcome as it is recorded (the worker renews its lease there).
Each step is a span (shared.adapters.telemetry) with its outcome.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

from shared.adapters import telemetry
from shared.domain.binding import Binding
from shared.domain.errors import NoCredential, PermanentError, TemporaryError, Throttled
from shared.domain.observed import ClusterState, CredentialState
from shared.domain.results import Outcome, ReconcileResult, StepOutcome
from shared.engine.cluster_access import ClusterConnection

log = logging.getLogger("keyless.reconcile")

ONBOARD_STEPS = (
    "cluster",
    "account",
    "namespace",
    "identity",
    "federated-credential",
    "role-assignment",
    "service-account",
    "configmap",
)
REVOKE_STEPS = ("role-assignment", "federated-credential", "identity")
"""Offboarding, Azure's side: first, whatever the cluster answers (shared.engine.offboarding)."""
CLEANUP_STEPS = ("configmap", "service-account")
"""Offboarding, the cluster's side: after the Deployments, best effort."""
OFFBOARD_STEPS = REVOKE_STEPS + CLEANUP_STEPS
DEPLOYMENT_STEP = "deployment/"

PAST: dict[str, Outcome] = {"create": "created", "update": "updated", "unchanged": "unchanged"}
"""A planner's action as the outcome it becomes once carried out."""

StepHook = Callable[[Binding, StepOutcome], None]


def onboard_steps(binding: Binding) -> tuple[str, ...]:
    return ONBOARD_STEPS + tuple(DEPLOYMENT_STEP + name for name in binding.workloads)


def offboard_steps(binding: Binding) -> tuple[str, ...]:
    return REVOKE_STEPS + tuple(DEPLOYMENT_STEP + name for name in binding.workloads) + CLEANUP_STEPS


class Stop(Exception):
    """A step ended the run (not-yet or failed); its outcome is recorded already."""


@dataclasses.dataclass
class Run:
    """One run of one binding: its result so far, and what its steps learnt on the way."""

    binding: Binding
    result: ReconcileResult
    on_step: StepHook | None
    connection: ClusterConnection
    dry_run: bool = False
    cluster_gone: bool | None = None  # learnt while offboarding: None = not asked yet
    cluster: ClusterState | None = None
    other_credentials: list[CredentialState] | None = None  # offboarding: credentials that are not ours
    role_room_checked: bool = False  # KEYLESS_ROLE_ASSIGNMENT_HEADROOM asked in this run (onboarding)

    @property
    def kube(self) -> Any:
        """The cluster as this run reaches it (the API server, or run command): shared.engine.cluster_access."""
        return self.connection.api

    def done(self, step: str) -> bool:
        return any(s.step == step for s in self.result.steps)

    def left(self, step: str) -> StepOutcome | None:
        """The step's `left` outcome, if a best-effort run of it could not finish."""
        return next((s for s in self.result.steps if s.step == step and s.outcome == "left"), None)

    def record(self, step: str, outcome: Outcome, reason: str = "", **details: Any) -> None:
        entry = StepOutcome(step, outcome, reason, details={k: v for k, v in details.items() if v is not None})
        self._append(entry)

    def _append(self, entry: StepOutcome) -> None:
        self.result.steps.append(entry)
        log.info(
            "binding %s step %s: %s%s",
            self.result.binding_key,
            entry.step,
            entry.outcome,
            f" ({entry.reason})" if entry.reason else "",
        )
        if self.on_step is not None:
            self.on_step(self.binding, entry)

    def run(self, step: str, fn: Callable[[], Any], leftover: str | None = None) -> Any:
        """Carry out one step; its TemporaryError / PermanentError becomes its outcome and stops the run.
        With `leftover` (the object the step cleans up, "configmap team-a/x") the step is best effort: its
        PermanentError is recorded `left` with that object, and None is returned instead.

        One span per step (`step <name>`, a Deployment's as `step deployment`), its outcome an attribute;
        the ARM and Kubernetes calls it makes are beneath it."""
        attributes = {"keyless.step": step, "keyless.onboarding.id": self.binding.key}
        with telemetry.span("step " + step.split("/", 1)[0], attributes, expected=(Stop,)) as span:
            recorded = len(self.result.steps)
            try:
                return self._run(step, fn, leftover)
            finally:
                outcome = next((s.outcome for s in reversed(self.result.steps[recorded:]) if s.step == step), None)
                span.set("keyless.step.outcome", outcome)
                if outcome == "failed":
                    span.fail("StepFailed")

    def _run(self, step: str, fn: Callable[[], Any], leftover: str | None) -> Any:
        try:
            return fn()
        except (TemporaryError, PermanentError) as exc:
            if leftover is not None and isinstance(exc, PermanentError):  # recorded; the run goes on
                self.record(step, "left", exc.reason, object=leftover)
                return None
            if isinstance(exc, TemporaryError):
                # Neither Azure's limits nor Keyless's missing credential is a verdict on the binding.
                details: dict[str, Any] = {"throttled": True} if isinstance(exc, (Throttled, NoCredential)) else {}
                if isinstance(exc, NoCredential):
                    details["noCredential"] = True
                self._append(StepOutcome(step, "not-yet", exc.reason, delay_seconds=exc.delay_seconds, details=details))
            else:
                self._append(StepOutcome(step, "failed", exc.reason))
            raise Stop from exc

    def skip_rest(self, steps: Sequence[str]) -> None:
        done = {s.step for s in self.result.steps}
        for step in steps:
            if step not in done:
                self.result.steps.append(StepOutcome(step, "skipped"))
