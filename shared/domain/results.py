"""What a reconcile reports: one outcome per step, the identity it ended with, request counts.

These outcomes are what the logs, the ledger and the API show.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from shared.domain.verification import VerificationReport

WRITES = ("created", "updated", "deleted")
"""The outcomes of a step that wrote (to Azure or the cluster)."""

Outcome = Literal["created", "updated", "unchanged", "deleted", "absent", "not-yet", "failed", "skipped", "left"]
"""`left`: a best-effort cleanup step (offboarding's cluster side) was refused; what it should have
removed stays, named in its details' `object`, and the run went on (ReconcileResult.leftovers)."""
Status = Literal["ready", "not-ready", "failed", "removed"]


@dataclasses.dataclass
class StepOutcome:
    step: str
    outcome: Outcome
    reason: str = ""
    delay_seconds: float | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"step": self.step, "outcome": self.outcome}
        if self.reason:
            out["reason"] = self.reason
        if self.delay_seconds is not None:
            out["delaySeconds"] = self.delay_seconds
        if self.details:
            out["details"] = self.details
        return out


class RequestCounts:
    """ARM and Kubernetes requests made, reads and writes apart. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.arm_reads = 0
        self.arm_writes = 0
        self.kube_reads = 0
        self.kube_writes = 0

    def count(self, target: Literal["arm", "kube"], write: bool) -> None:
        with self._lock:
            attr = f"{target}_{'writes' if write else 'reads'}"
            setattr(self, attr, getattr(self, attr) + 1)

    @property
    def writes(self) -> int:
        return self.arm_writes + self.kube_writes

    def as_dict(self) -> dict[str, int]:
        return {
            "armReads": self.arm_reads,
            "armWrites": self.arm_writes,
            "kubeReads": self.kube_reads,
            "kubeWrites": self.kube_writes,
        }


@dataclasses.dataclass
class ReconcileResult:
    binding_key: str
    desired: Literal["present", "absent"]
    steps: list[StepOutcome] = dataclasses.field(default_factory=list)
    identity: dict[str, str] = dataclasses.field(default_factory=dict)
    credential: dict[str, str] = dataclasses.field(default_factory=dict)
    role_assignment_id: str | None = None
    kube_objects: list[str] = dataclasses.field(default_factory=list)
    requests: RequestCounts = dataclasses.field(default_factory=RequestCounts)
    dry_run: bool = False
    verification: VerificationReport | None = None  # run by the worker after a `ready` result

    def step(self, name: str) -> StepOutcome:
        for s in self.steps:
            if s.step == name:
                return s
        raise KeyError(name)

    @property
    def status(self) -> Status:
        outcomes = {s.outcome for s in self.steps}
        if "failed" in outcomes:
            return "failed"
        if "not-yet" in outcomes:
            return "not-ready"
        return "removed" if self.desired == "absent" else "ready"

    @property
    def leftovers(self) -> list[dict[str, str]]:
        """What offboarding could not clean up in the cluster, and why: the `left` steps' objects."""
        return [
            {"object": str(s.details.get("object") or s.step), "reason": s.reason}
            for s in self.steps
            if s.outcome == "left"
        ]

    @property
    def changed(self) -> bool:
        """Did the run write anything (or, dry, would it)? `unchanged`, `absent`, `skipped` are reads only."""
        return any(s.outcome in WRITES for s in self.steps)

    @property
    def throttled(self) -> bool:
        """The run stopped only because Azure asked it to slow down: no verdict on the binding."""
        stopped = [s for s in self.steps if s.outcome in ("failed", "not-yet")]
        return bool(stopped) and all(s.outcome == "not-yet" and s.details.get("throttled") for s in stopped)

    @property
    def no_credential(self) -> bool:
        """The run stopped because Keyless's own Azure credential gave no token (shared.domain.errors.NoCredential)."""
        return any(s.outcome == "not-yet" and s.details.get("noCredential") for s in self.steps)

    @property
    def retry_after_seconds(self) -> float | None:
        delays = [s.delay_seconds for s in self.steps if s.outcome == "not-yet" and s.delay_seconds is not None]
        return max(delays) if delays else None

    @property
    def reason(self) -> str:
        for s in self.steps:
            if s.outcome in ("failed", "not-yet"):
                return f"{s.step}: {s.reason}"
        return ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "bindingKey": self.binding_key,
            "dryRun": self.dry_run,
            "desired": self.desired,
            "status": self.status,
            "reason": self.reason,
            "retryAfterSeconds": self.retry_after_seconds,
            "steps": [s.as_dict() for s in self.steps],
            "identity": self.identity,
            "credential": self.credential,
            "roleAssignmentId": self.role_assignment_id,
            "kubernetesObjects": self.kube_objects,
            "requests": self.requests.as_dict(),
        }
