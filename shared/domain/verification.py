"""Verification, decided without side effects: is the binding really keyless, check by check?

`ready` says Keyless wrote what it should; `verified` says the world shows it works: the
service account names the identity, the credential trusts the cluster's *current* issuer, the
role is assigned, and every running pod that uses the service account was mutated by the webhook
(label, injected variables, projected token) and carries no API key. Each check is `pass`,
`fail` or `pending`, with evidence (names and ids only, never a value that could be a secret).

A pod created before the service account's annotation has no AZURE_CLIENT_ID, or another one:
the webhook mutates only at creation, so it is flagged "restart needed". A pod of a Deployment
whose rollout is still under way is `pending`, not `fail`: the controller is replacing it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Literal

from shared.domain import retry_policy
from shared.domain.observed import AccountState, CredentialState, IdentityState, KubeObjectState, RoleAssignmentState
from shared.domain.planner import AUDIENCE, CLIENT_ID_ANNOTATION, TENANT_ID_ANNOTATION
from shared.domain.workloads import USE_LABEL, WEBHOOK_VARIABLES, ApiKeyRules, DeploymentState

CheckStatus = Literal["pass", "fail", "pending"]
TOKEN_VOLUME_PREFIX = "azure-workload-identity-reserved-"  # noqa: S105 - a volume name, not a secret
SKIP_CONTAINERS_ANNOTATION = "azure.workload.identity/skip-containers"
RECHECK_SECONDS = retry_policy.VERIFICATION_RECHECK_SECONDS


@dataclasses.dataclass
class Check:
    name: str
    status: CheckStatus
    reason: str = ""
    evidence: dict[str, Any] = dataclasses.field(default_factory=dict)
    retry: bool = False  # pending for a reason that passes by itself (a rollout, a starting pod)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "status": self.status}
        if self.reason:
            out["reason"] = self.reason
        if self.evidence:
            out["evidence"] = self.evidence
        return out


@dataclasses.dataclass
class VerificationReport:
    binding_key: str
    checks: list[Check] = dataclasses.field(default_factory=list)
    checked_at: str = dataclasses.field(
        default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )
    keyless_account: dict[str, Any] = dataclasses.field(default_factory=dict)  # informational, not a gate

    @property
    def status(self) -> CheckStatus:
        states = {c.status for c in self.checks}
        if "fail" in states:
            return "fail"
        if "pending" in states or not self.checks:
            return "pending"
        return "pass"

    @property
    def retry_after_seconds(self) -> float | None:
        """Worth checking again soon: only when every non-passing check is pending and will pass by itself."""
        open_checks = [c for c in self.checks if c.status != "pass"]
        if open_checks and all(c.status == "pending" and c.retry for c in open_checks):
            return RECHECK_SECONDS
        return None

    def check(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def summary(self) -> dict[str, Any]:
        """What the ledger keeps: the verdict and which checks did not pass, with their reasons."""
        out: dict[str, Any] = {
            "status": self.status,
            "checkedAt": self.checked_at,
            "open": [
                {k: v for k, v in c.as_dict().items() if k != "evidence"} for c in self.checks if c.status != "pass"
            ],
        }
        if self.keyless_account.get("wouldBreak"):
            out["wouldBreak"] = self.keyless_account["wouldBreak"]
        return out

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.binding_key,
            "status": self.status,
            "checkedAt": self.checked_at,
            "checks": [c.as_dict() for c in self.checks],
        }
        if self.keyless_account:
            out["keylessAccount"] = self.keyless_account
        return out


def check_service_account(observed: KubeObjectState | None, identity: IdentityState | None) -> Check:
    name = "service-account"
    if observed is None:
        return Check(name, "fail", "the service account does not exist")
    seen = {k: observed.annotations.get(k) for k in (CLIENT_ID_ANNOTATION, TENANT_ID_ANNOTATION)}
    evidence = {"annotations": seen}
    if identity is None:
        return Check(name, "fail", "the identity does not exist", evidence)
    if seen[CLIENT_ID_ANNOTATION] != identity.client_id:
        return Check(name, "fail", f"client-id annotation is not the identity's ({identity.client_id})", evidence)
    if seen[TENANT_ID_ANNOTATION] != identity.tenant_id:
        reason = f"tenant-id annotation is not the identity's tenant ({identity.tenant_id})"
        return Check(name, "fail", reason, evidence)
    return Check(name, "pass", evidence=evidence)


def check_credential(
    credentials: list[CredentialState], identity: IdentityState | None, issuer: str | None, subject: str
) -> Check:
    """Exact comparison: a trailing slash missing from the issuer fails token exchange."""
    name = "federated-credential"
    evidence: dict[str, Any] = {
        "clusterIssuer": issuer,
        "subject": subject,
        "credentials": [{"name": c.name, "issuer": c.issuer, "subject": c.subject} for c in credentials],
    }
    if identity is None:
        return Check(name, "fail", "the identity does not exist", evidence)
    if not issuer:
        return Check(name, "fail", "the cluster publishes no OIDC issuer", evidence)
    for cred in credentials:
        if cred.issuer == issuer and cred.subject == subject:
            if tuple(cred.audiences) != (AUDIENCE,):
                return Check(name, "fail", f"credential {cred.name} has audiences {list(cred.audiences)}", evidence)
            return Check(name, "pass", evidence={**evidence, "matched": cred.name})
    stale = [c.name for c in credentials if c.subject == subject]
    reason = (
        f"credential {', '.join(stale)} trusts another issuer than the cluster's current one"
        if stale
        else "no credential trusts the cluster's issuer for this service account"
    )
    return Check(name, "fail", reason, evidence)


def check_role_assignment(
    assignments: list[RoleAssignmentState], identity: IdentityState | None, scope: str, role_guid: str
) -> Check:
    name = "role-assignment"
    if identity is None:
        return Check(name, "fail", "the identity does not exist")
    for ra in assignments:
        if (
            ra.scope.rstrip("/").lower() == scope.rstrip("/").lower()
            and ra.role_guid == role_guid.lower()
            and ra.principal_id.lower() == identity.principal_id.lower()
        ):
            return Check(name, "pass", evidence={"id": ra.id, "principalId": ra.principal_id, "role": role_guid})
    return Check(
        name,
        "fail",
        "the identity holds no such role assignment on the account",
        {"principalId": identity.principal_id, "role": role_guid, "scope": scope},
    )


def check_account(account: AccountState) -> Check:
    """Entra authentication needs the custom-subdomain endpoint; whether keys still work is evidence."""
    evidence = {
        "endpoint": account.endpoint,
        "customSubdomain": account.custom_subdomain,
        "localAuthEnabled": not account.disable_local_auth,
    }
    if not account.custom_subdomain:
        return Check("account", "fail", "no custom subdomain endpoint: Entra ID tokens are refused", evidence)
    return Check("account", "pass", evidence=evidence)


def _owner(pod: dict[str, Any], deployments: list[DeploymentState]) -> DeploymentState | None:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    for deploy in deployments:
        selector = deploy.selector
        if selector and all(labels.get(k) == v for k, v in selector.items()):
            return deploy
    return None


def _container_problems(
    container: dict[str, Any], identity: IdentityState, volumes: dict[str, dict[str, Any]], rules: ApiKeyRules
) -> tuple[list[str], dict[str, Any]]:
    env = {e.get("name"): e for e in container.get("env") or []}
    problems: list[str] = []
    evidence: dict[str, Any] = {}
    missing = [v for v in WEBHOOK_VARIABLES if v not in env]
    if missing:
        problems.append(f"not injected: {', '.join(missing)}")
    client = env.get("AZURE_CLIENT_ID")
    if client is not None:
        evidence["clientId"] = client.get("value") if "value" in client else "(from a reference)"
        if client.get("value") != identity.client_id:
            problems.append(f"AZURE_CLIENT_ID is not the identity's ({identity.client_id})")
    tenant = env.get("AZURE_TENANT_ID")
    if tenant is not None and tenant.get("value") != identity.tenant_id:
        problems.append(f"AZURE_TENANT_ID is not the identity's tenant ({identity.tenant_id})")
    token_file = (env.get("AZURE_FEDERATED_TOKEN_FILE") or {}).get("value")
    if token_file:
        evidence["tokenFile"] = token_file
        mounts = [
            m
            for m in container.get("volumeMounts") or []
            if m.get("name") in volumes and token_file.startswith(str(m.get("mountPath", "")).rstrip("/") + "/")
        ]
        if not mounts:
            problems.append("no projected service account token mounted where AZURE_FEDERATED_TOKEN_FILE points")
        else:
            evidence["tokenVolume"] = mounts[0]["name"]
    keys = rules.container_keys(container)
    if keys:
        evidence["apiKeys"] = keys
        problems.append(f"API key in the environment: {', '.join(keys)}")
    return problems, evidence


def _token_volumes(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Projected volumes with a service account token for Entra's token exchange audience."""
    out = {}
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        sources = (volume.get("projected") or {}).get("sources") or []
        if any((s.get("serviceAccountToken") or {}).get("audience") == AUDIENCE for s in sources):
            out[volume.get("name", "")] = volume
    return out


def check_pod(
    pod: dict[str, Any], identity: IdentityState, deployments: list[DeploymentState], rules: ApiKeyRules
) -> Check:
    """One running (or starting) pod that uses the binding's service account, from its spec as the
    API server returns it (what the webhook injected is there, nowhere else)."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    phase = (pod.get("status") or {}).get("phase", "")
    owner = _owner(pod, deployments)
    evidence: dict[str, Any] = {"phase": phase, "createdAt": meta.get("creationTimestamp")}
    if owner is not None:
        evidence["deployment"] = owner.name
    problems: list[str] = []
    labels = meta.get("labels") or {}
    if labels.get(USE_LABEL) != "true":
        problems.append(f"not labelled {USE_LABEL}=true: the webhook never saw it")
    volumes = _token_volumes(pod)
    evidence["tokenVolumes"] = sorted(volumes)
    if labels.get(USE_LABEL) == "true" and not any(n.startswith(TOKEN_VOLUME_PREFIX) for n in volumes):
        problems.append("no workload identity token volume")
    skip = {s.strip() for s in ((meta.get("annotations") or {}).get(SKIP_CONTAINERS_ANNOTATION) or "").split(";")}
    containers = {}
    for container in spec.get("containers") or []:
        if container.get("name") in skip:
            keys = rules.container_keys(container)
            if keys:
                problems.append(f"{container.get('name')}: API key in the environment: {', '.join(keys)}")
            continue
        found, seen = _container_problems(container, identity, volumes, rules)
        containers[container.get("name", "")] = seen
        problems += [f"{container.get('name')}: {p}" for p in found]
    evidence["containers"] = containers
    stale_identity = any("AZURE_CLIENT_ID" in p for p in problems) and labels.get(USE_LABEL) == "true"
    name = f"pod/{meta.get('name', '')}"
    if problems:
        evidence["problems"] = problems
        if owner is not None and owner.failure:
            evidence["deploymentFailure"] = owner.failure
        elif owner is not None and not owner.rolled_out:
            return Check(name, "pending", "rollout in progress: this pod will be replaced", evidence, retry=True)
        reason = "; ".join(problems)
        if stale_identity:
            reason = "restart needed: created before the service account named this identity; " + reason
        return Check(name, "fail", reason, evidence)
    if phase != "Running":
        return Check(name, "pending", f"pod is {phase or 'not running'} yet", evidence, retry=True)
    return Check(name, "pass", evidence=evidence)


def check_pods(
    pods: list[dict[str, Any]],
    service_account: str,
    identity: IdentityState | None,
    deployments: list[DeploymentState],
    workloads: tuple[str, ...],
    rules: ApiKeyRules,
) -> list[Check]:
    """A check per live pod that runs as the service account; `pending` when there is none yet."""
    mine = [
        p
        for p in pods
        if ((p.get("spec") or {}).get("serviceAccountName") or "default") == service_account
        and not (p.get("metadata") or {}).get("deletionTimestamp")
        and (p.get("status") or {}).get("phase") in ("Running", "Pending")
    ]
    if identity is None:
        return [Check("pods", "fail", "the identity does not exist")]
    if not mine:
        expected = [d.name for d in deployments if d.name in workloads and (d.obj.get("spec") or {}).get("replicas", 1)]
        return [
            Check(
                "pods",
                "pending",
                f"no running pod uses service account {service_account} yet",
                {"workloads": list(workloads)},
                retry=bool(expected),
            )
        ]
    return [check_pod(p, identity, deployments, rules) for p in sorted(mine, key=lambda p: p["metadata"]["name"])]


def keyed_workloads(pods: list[dict[str, Any]], rules: ApiKeyRules) -> list[dict[str, Any]]:
    """Pods (any service account) that still carry an API key: what turning keys off would break."""
    out = []
    for pod in pods:
        if (pod.get("status") or {}).get("phase") not in ("Running", "Pending"):
            continue
        for container in (pod.get("spec") or {}).get("containers") or []:
            keys = rules.container_keys(container)
            if keys:
                out.append(
                    {
                        "namespace": pod["metadata"].get("namespace"),
                        "pod": pod["metadata"].get("name"),
                        "serviceAccount": (pod.get("spec") or {}).get("serviceAccountName"),
                        "container": container.get("name"),
                        "apiKeys": keys,
                    }
                )
    return out
