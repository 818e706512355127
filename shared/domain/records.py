"""The ledger's record of one binding: desired state, last outcome, who asked. Plain data.

It is what the API shows and what the worker updates; the ledger adapter maps it to a
Table entity. Nothing secret goes in: ids and names only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing
from typing import Any, Literal

from shared.domain import retry_policy, revocation
from shared.domain.binding import Binding
from shared.domain.results import ReconcileResult
from shared.domain.verification import VerificationReport

RecordStatus = Literal[
    "pending", "reconciling", "ready", "verified", "not-ready", "failed", "refused", "revoked", "offboarding", "removed"
]
"""`refused`: the one door (shared.domain.access) said no before anything was made; `revoked`: it said no
after access had been granted: nothing is repaired, and the binding is offboarded at `offboard_at`
unless the grant comes back."""
RECORD_STATUSES: tuple[str, ...] = typing.get_args(RecordStatus)
Desired = Literal["present", "absent"]

SOURCE_API = "api"  # asked for through the API: the recorded caller's grant holds it
SOURCE_TAGS = "cluster-tags"  # asked for by a cluster's tags: the account side's consent holds it


def utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclasses.dataclass
class BindingRecord:
    key: str
    cluster: str
    namespace: str
    service_account: str
    account: str
    role_definition_id: str
    workloads: list[str] = dataclasses.field(default_factory=list)
    desired: Desired = "present"
    status: RecordStatus = "pending"
    reason: str = ""
    steps: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    identity: dict[str, str] = dataclasses.field(default_factory=dict)
    credential: dict[str, str] = dataclasses.field(default_factory=dict)
    role_assignment_id: str | None = None
    kube_objects: list[str] = dataclasses.field(default_factory=list)
    leftovers: list[dict[str, str]] = dataclasses.field(default_factory=list)  # what offboarding could not clean up
    attempts: int = 0
    last_error: str = ""
    requested_by: str = ""
    source: str = ""
    created_at: str = dataclasses.field(default_factory=utcnow)
    updated_at: str = dataclasses.field(default_factory=utcnow)
    next_attempt_at: str | None = None
    last_requests: dict[str, int] = dataclasses.field(default_factory=dict)
    verification: dict[str, Any] = dataclasses.field(default_factory=dict)
    announced_status: str = ""  # the last status published as an outcome event (shared.domain.outcome_events)
    principal: dict[str, Any] = dataclasses.field(default_factory=dict)  # who asked (ids): shared.domain.access
    quota_key: str = ""  # the quota this binding is counted in (shared.domain.access.Grant), "" while not granted
    revoked_at: str | None = None
    not_yet_streak: int = 0  # consecutive runs that ended not-ready: the next delay grows with it
    offboard_at: str | None = None
    etag: str | None = None

    @classmethod
    def for_binding(cls, binding: Binding, requested_by: str, source: str) -> BindingRecord:
        return cls(
            key=binding.key,
            cluster=str(binding.cluster),
            namespace=binding.namespace,
            service_account=binding.service_account,
            account=str(binding.account),
            role_definition_id=binding.role_definition_id,
            workloads=list(binding.workloads),
            requested_by=requested_by,
            source=source,
        )

    def binding(self, allowlist: tuple[str, ...]) -> Binding:
        return Binding.create(
            self.cluster,
            self.namespace,
            self.service_account,
            self.account,
            self.role_definition_id,
            allowlist=allowlist + (self.role_definition_id,),
            workloads=list(self.workloads or ()),
        )

    @property
    def live(self) -> bool:
        return self.desired == "present"

    def made(self) -> revocation.Made:
        """What Keyless made or adopted for this binding, as its own record says (offboarding goes by it)."""
        return revocation.Made.from_record(self.identity, self.role_assignment_id)

    @property
    def ever_granted(self) -> bool:
        """A run has happened: something may exist in Azure or the cluster (so a refusal revokes)."""
        return self.attempts > 0

    def requested_by_object_id(self) -> str:
        """The object id of the caller who asked (the API), or "" (cluster tags)."""
        oid = self.principal.get("objectId") if self.principal else None
        if isinstance(oid, str):
            return oid.lower()
        return "" if self.source != "api" else self.requested_by.split(" ", 1)[0].lower()

    def record_result(self, result: ReconcileResult) -> float | None:
        """Fold one reconcile's outcome (and the verification run after it was ready) into the record.
        Returns the delay before the next run of a not-ready binding (production seconds)."""
        now = dt.datetime.now(dt.UTC)
        self.attempts += 1
        self.steps = [s.as_dict() for s in result.steps]
        # a clean offboarding says nothing of its own: the record keeps why it was offboarded
        self.reason = result.reason or (self.reason if result.status == "removed" else "")
        self.last_requests = result.requests.as_dict()
        if result.identity:
            created = any(s.step == "identity" and s.outcome == "created" for s in result.steps)
            self.identity = revocation.recorded_identity(self.identity, result.identity, created)
        if result.credential:
            self.credential = dict(result.credential)
        if result.role_assignment_id:
            self.role_assignment_id = result.role_assignment_id
        if result.kube_objects:
            self.kube_objects = list(result.kube_objects)
        self.leftovers = result.leftovers
        status = result.status
        self.status = status
        if status == "ready" and result.verification is not None:
            self._record_verification(result.verification)
        elif status != "ready":
            self.verification = {}
        if status in ("failed", "not-ready"):
            self.last_error = result.reason
        self.not_yet_streak = self.not_yet_streak + 1 if status == "not-ready" else 0
        delay = self.next_delay(result)
        self.next_attempt_at = (
            (now + dt.timedelta(seconds=delay)).isoformat(timespec="seconds").replace("+00:00", "Z")
            if delay is not None
            else None
        )
        self.updated_at = utcnow()
        return delay

    def next_delay(self, result: ReconcileResult) -> float | None:
        """When a not-ready binding runs again (production seconds): its step's delay for the first
        NOT_YET_PATIENT_RUNS not-yets in a row, then doubled per further one, with jitter, capped
        (shared.domain.retry_policy.not_yet_delay)."""
        if self.status != "not-ready":
            return None
        base = result.retry_after_seconds or retry_policy.NOT_YET_DEFAULT_SECONDS
        growing = self.not_yet_streak - retry_policy.NOT_YET_PATIENT_RUNS + 1  # 1: not grown yet
        return retry_policy.not_yet_delay(base, growing)

    def _record_verification(self, report: VerificationReport) -> None:
        """`verified` only when every check passed; count re-checks of a pending verification."""
        summary = report.summary()
        if report.retry_after_seconds is not None and self.verification.get("status") == "pending":
            summary["rechecks"] = int(self.verification.get("rechecks", 0)) + 1
        self.verification = summary
        if report.status == "pass":
            self.status = "verified"

    def as_api(self) -> dict[str, Any]:
        """The API's view of the record (GET /api/onboardings/{id})."""
        return {
            "id": self.key,
            "cluster": self.cluster,
            "namespace": self.namespace,
            "serviceAccount": self.service_account,
            "openAIAccount": self.account,
            "roleDefinitionId": self.role_definition_id,
            "workloads": list(self.workloads or ()),
            "desired": self.desired,
            "status": self.status,
            "reason": self.reason,
            "nextAttemptAt": self.next_attempt_at,
            "steps": self.steps,
            "identity": self.identity,
            "federatedCredential": self.credential,
            "roleAssignmentId": self.role_assignment_id,
            "kubernetesObjects": self.kube_objects,
            "leftovers": self.leftovers,
            "attempts": self.attempts,
            "lastError": self.last_error,
            "lastRequests": self.last_requests,
            "verification": self.verification,
            "revokedAt": self.revoked_at,
            "offboardAt": self.offboard_at,
            "requestedBy": self.requested_by,
            "source": self.source,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }
