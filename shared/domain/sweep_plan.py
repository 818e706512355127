"""The drift sweep's decisions: which bindings are *suspects*, from bulk snapshots. Pure.

The sweep looks at every live binding every half hour, so it must not read each one from ARM. It
reads what exists in bulk (Resource Graph, or ARM lists where ARG is refused; a few label-selected
lists per cluster) and compares it with what the ledger recorded. A binding that does not match is a
suspect, and a suspect is only ever *queued*: the reconcile worker reads it from ARM (the truth) and
writes only what really differs. A snapshot that lags or misses a resource therefore costs one
reconcile, never a wrong write.

Four kinds of suspicion, each a function returning the reason (or None):

- `grant_suspicion`: the one door (shared.domain.access) asked again for every live binding, drifted or
  not, from what the plan read anyway (the record's requester, the account's tags and the cluster's tags
  from the inventory): a grant can disappear without any event (a settings change), so authorisation is
  level-triggered. A refusal here only queues the binding; the worker's door (reading ARM) revokes it;
- `azure_suspicion`: the record against the Azure snapshot (identity, role assignment, cluster and
  its issuer, account), or a record changed so recently that the snapshot may not show it yet;
- `kube_suspicion`: the ServiceAccount, ConfigMap and named Deployments against the cluster's lists;
- `credential_suspicion`: the identity's federated credentials (not in Resource Graph: read for a
  rotating slice of identities per sweep, `in_rotation`, and every delete event between sweeps).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from shared.domain import access, cluster_tags, naming, planner, workloads
from shared.domain.binding import Binding
from shared.domain.errors import PermanentError
from shared.domain.ids import ACCOUNT_TYPE, CLUSTER_TYPE, ResourceId, parse_resource_id
from shared.domain.observed import AccountState, ClusterState, CredentialState, IdentityState, KubeObjectState
from shared.domain.records import BindingRecord

RECENT_SECONDS = 900.0
"""A record changed less than this ago may not show in Resource Graph yet (it lags ARM by seconds,
sometimes minutes): a suspect, whatever the snapshot says. Times KEYLESS_RETRY_DELAY_SCALE."""
OVERDUE_SECONDS = 3600.0
"""An in-flight binding whose next run is this late lost its message: queued again."""
CREDENTIAL_ROTATION = 10
"""Federated credentials are not in Resource Graph: each sweep reads those of one identity in ten
(every identity every ten sweeps, five hours at the default schedule); delete events repair sooner."""
SHARD_REQUEUE_SECONDS = 900.0
"""A shard not done this long after it was queued is queued again by the next timer tick (resume)."""
MAX_RESUMES = 3
"""After this many resumes a sweep is given up (its shards keep failing: see the logs), and the next starts."""

IN_FLIGHT = frozenset({"pending", "reconciling", "not-ready", "offboarding"})
"""Statuses whose binding has a run queued already (its own retry): not queued again unless overdue."""
SETTLED = frozenset({"ready", "verified"})

CONFIGMAP_SELECTOR = f"{planner.MANAGED_BY_LABEL}={planner.MANAGED_BY}"
SA_SELECTOR = f"{planner.SA_BOUND_LABEL}=true"
DEPLOYMENT_SELECTOR = workloads.BINDING_LABEL  # exists: Deployments some binding enforces


@dataclasses.dataclass(frozen=True)
class RoleKey:
    scope: str
    role_guid: str
    principal_id: str

    @classmethod
    def of(cls, scope: str, role_definition_id: str, principal_id: str) -> RoleKey:
        guid = role_definition_id.rstrip("/").rsplit("/", 1)[-1]
        return cls(scope.lower().rstrip("/"), guid.lower(), principal_id.lower())


@dataclasses.dataclass
class AzureSnapshot:
    """What exists in Azure, as one bulk read saw it (ids lower-cased)."""

    identities: dict[str, IdentityState]
    role_assignments: set[RoleKey]
    clusters: dict[str, ClusterState]
    accounts: dict[str, AccountState]
    source: str = "resource-graph"  # or "arm" (the fallback), or "none" (nothing needed reading)

    @classmethod
    def build(
        cls,
        identities: Iterable[IdentityState],
        role_assignments: Iterable[RoleKey],
        clusters: Iterable[ClusterState],
        accounts: Iterable[AccountState],
        source: str = "resource-graph",
    ) -> AzureSnapshot:
        return cls(
            {i.id.lower(): i for i in identities},
            set(role_assignments),
            {c.id.lower(): c for c in clusters},
            {a.id.lower(): a for a in accounts},
            source,
        )


@dataclasses.dataclass(frozen=True)
class Scope:
    """What a sweep must read for a set of records: subscriptions, accounts, clusters, identity groups."""

    subscriptions: tuple[str, ...]
    accounts: tuple[str, ...]
    clusters: tuple[str, ...]
    identity_groups: tuple[tuple[str, str], ...]  # (subscription, resource group)


@dataclasses.dataclass
class SweepRun:
    id: str
    number: int
    started_at: float
    planned: bool = False
    shards: int = 0
    finished_at: float | None = None
    resumes: int = 0
    source: str = ""  # where the Azure snapshot came from: "resource-graph", "arm" or "none" (not read)
    suspects: int = 0
    etag: str | None = None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


@dataclasses.dataclass
class Shard:
    """One cluster's part of a sweep."""

    cluster: str
    number: int = 0  # the sweep's number: which rotation slice of credentials this shard reads
    suspects: dict[str, str] = dataclasses.field(default_factory=dict)  # binding key -> why
    endpoints: dict[str, str] = dataclasses.field(default_factory=dict)  # account id (lower) -> endpoint
    issuer: str | None = None
    queued_at: float = 0.0
    done: bool = False
    result: dict[str, Any] = dataclasses.field(default_factory=dict)


def scope_of(records: Sequence[BindingRecord]) -> Scope:
    subs: set[str] = set()
    accounts: dict[str, str] = {}
    clusters: dict[str, str] = {}
    groups: set[tuple[str, str]] = set()
    for r in records:
        accounts.setdefault(r.account.lower(), r.account)
        clusters.setdefault(r.cluster.lower(), r.cluster)
        subs.add(r.account.split("/")[2].lower())
        subs.add(r.cluster.split("/")[2].lower())
        identity = identity_id(r)
        if identity:
            parts = identity.split("/")
            subs.add(parts[2].lower())
            groups.add((parts[2].lower(), parts[4].lower()))
    return Scope(
        tuple(sorted(subs)),
        tuple(accounts[k] for k in sorted(accounts)),
        tuple(clusters[k] for k in sorted(clusters)),
        tuple(sorted(groups)),
    )


def identity_id(record: BindingRecord) -> str:
    return str((record.identity or {}).get("resourceId") or "")


def _age_seconds(stamp: str | None, now: dt.datetime) -> float:
    if not stamp:
        return float("inf")
    try:
        when = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return float("inf")
    return (now - when).total_seconds()


def status_suspicion(record: BindingRecord, now: dt.datetime, overdue_seconds: float) -> str | None:
    """A binding not settled: `failed` ones run again each sweep (as before); in-flight ones only
    when their next run is overdue (its message was lost), so a sweep does not double a retry. A
    `ready` one whose proof of access did not pass (its re-checks ran out: a role that took longer to
    propagate, a network rule fixed since) is checked again once it is `overdue_seconds` old; other
    open checks (no running pod yet) are the workload's business, not a reason to run again."""
    if record.status == "ready":
        open_checks = {c.get("name"): c.get("status") for c in (record.verification or {}).get("open") or []}
        if "access" in open_checks and _age_seconds(record.updated_at, now) >= overdue_seconds:
            return f"ready but access is {open_checks['access']}: checked again"
        return None
    if record.status in SETTLED:
        return None
    if record.status in IN_FLIGHT:
        due = -_age_seconds(record.next_attempt_at, now) if record.next_attempt_at else None
        if due is not None and due > -overdue_seconds:
            return None  # scheduled, and not long overdue
        if record.next_attempt_at is None and _age_seconds(record.updated_at, now) < overdue_seconds:
            return None  # running now
        return f"{record.status} and its next run is overdue"
    return f"status is {record.status}"


Door = Callable[[Binding, access.Requester, Mapping[str, str] | None], access.Grant]
"""The one door with this deployment's policy and settings, given the account's tags (Keyless.door)."""


def grant_suspicion(
    record: BindingRecord,
    snapshot: AzureSnapshot,
    door: Door,
    role_allowlist: tuple[str, ...],
    system_namespaces: tuple[str, ...],
) -> str | None:
    """Why the one door would refuse this live binding now (None: granted). Refused and revoked records
    are queued every sweep for their status already; a record that no longer makes a binding is the
    worker's to fail. For cluster tags, a pair the tags no longer name is offboarded by the worker at once;
    consent is judged from the account's tags in the inventory. A record whose cluster or account the
    inventory was not asked for (one queued already by its status or age: shared.app.sweep reads the
    inventory only for the others) is left to the worker's door, which asks ARM before its next run."""
    if record.status in ("refused", "revoked") or not record.account:
        return None
    try:
        binding = record.binding(role_allowlist)
    except PermanentError:
        return None
    requester = access.requester_of(record.source, record.cluster, record.principal)
    if isinstance(requester, access.ClusterTags):
        cluster = snapshot.clusters.get(record.cluster.lower())
        if cluster is not None and not cluster_tags.still_asks(cluster, binding, system_namespaces):
            return "no longer asked for by the cluster's tags"
    account = snapshot.accounts.get(record.account.lower())
    if account is None and isinstance(requester, access.ClusterTags):
        return None  # no consent to judge from here
    try:
        door(binding, requester, account.tags if account is not None else None)
    except access.Refused as exc:
        return f"access withdrawn: {exc.reason}"
    return None


def recent_suspicion(record: BindingRecord, now: dt.datetime, recent_seconds: float) -> str | None:
    """A record changed within `recent_seconds` is a suspect whatever the inventory says (it may not
    show the change yet): no snapshot is needed to decide it."""
    if _age_seconds(record.updated_at, now) < recent_seconds:
        return "changed recently: the inventory may not show it yet"
    return None


def azure_suspicion(
    record: BindingRecord, snapshot: AzureSnapshot, now: dt.datetime, recent_seconds: float
) -> str | None:
    """Why the record does not match the Azure snapshot (None: it does)."""
    recent = recent_suspicion(record, now, recent_seconds)
    if recent:
        return recent
    identity = snapshot.identities.get(identity_id(record).lower())
    if identity is None:
        return "identity not in the inventory"
    recorded = record.identity
    if identity.principal_id.lower() != str(recorded.get("principalId", "")).lower():
        return "identity's principal differs from the record (recreated?)"
    if identity.client_id.lower() != str(recorded.get("clientId", "")).lower():
        return "identity's client id differs from the record"
    workload = naming.short_hash(
        naming.workload_key(record.cluster.lower(), record.namespace, record.service_account), length=32
    )
    if identity.tags.get(planner.WORKLOAD_TAG) != workload:
        return "identity's workload tag differs"
    role = RoleKey.of(record.account, record.role_definition_id, identity.principal_id)
    if role not in snapshot.role_assignments:
        return "role assignment not in the inventory"
    cluster = snapshot.clusters.get(record.cluster.lower())
    if cluster is None:
        return "cluster not in the inventory"
    if not (cluster.oidc_issuer_enabled and cluster.workload_identity_enabled and cluster.issuer_url):
        return "cluster's OIDC issuer or workload identity is off"
    if cluster.issuer_url != (record.credential or {}).get("issuer"):
        return "cluster's OIDC issuer differs from the credential's"
    account = snapshot.accounts.get(record.account.lower())
    if account is None:
        return "account not in the inventory"
    if not account.custom_subdomain:
        return "account has no custom subdomain: Entra tokens are refused there (keys only)"
    return None


@dataclasses.dataclass
class ClusterObjects:
    """A cluster's Keyless objects, from three label-selected lists, by `namespace/name`."""

    service_accounts: dict[str, KubeObjectState]
    configmaps: dict[str, KubeObjectState]
    deployments: dict[str, list[workloads.DeploymentState]]  # binding label value -> Deployments

    @classmethod
    def build(
        cls,
        service_accounts: Iterable[KubeObjectState],
        configmaps: Iterable[KubeObjectState],
        deployments: Iterable[workloads.DeploymentState],
    ) -> ClusterObjects:
        claimed: dict[str, list[workloads.DeploymentState]] = {}
        for d in deployments:
            claimed.setdefault(d.labels.get(workloads.BINDING_LABEL, ""), []).append(d)
        return cls(
            {f"{o.namespace}/{o.name}": o for o in service_accounts},
            {f"{o.namespace}/{o.name}": o for o in configmaps},
            claimed,
        )


def kube_suspicion(
    record: BindingRecord,
    objects: ClusterObjects,
    endpoint: str | None,
    manager: str,
    rules: workloads.ApiKeyRules,
) -> str | None:
    """Why the cluster's objects do not match what the record's run left (None: they do)."""
    client_id = str(record.identity.get("clientId", ""))
    tenant_id = str(record.identity.get("tenantId", ""))
    sa = objects.service_accounts.get(f"{record.namespace}/{record.service_account}")
    if sa is None:
        return "service account missing (or not labelled yet)"
    if sa.annotations.get(planner.CLIENT_ID_ANNOTATION) != client_id:
        return "service account's client-id annotation differs"
    if sa.annotations.get(planner.TENANT_ID_ANNOTATION, tenant_id) != tenant_id:
        return "service account's tenant-id annotation differs"
    account = parse_resource_id(record.account, ACCOUNT_TYPE, "account")
    configmap_name = naming.configmap_name(record.service_account, account.name, account.key)
    cm = objects.configmaps.get(f"{record.namespace}/{configmap_name}")
    if cm is None:
        return "config map missing"
    expected = {"AZURE_CLIENT_ID": client_id, "AZURE_TENANT_ID": tenant_id, "USE_AZURE_OPENAI": "True",
                "USE_AZURE_AD": "True"}  # fmt: skip
    if endpoint is not None:
        expected["AZURE_OPENAI_ENDPOINT"] = endpoint
    if any(cm.data.get(k) != v for k, v in expected.items()):
        return "config map's data differs"
    claimed = {d.name: d for d in objects.deployments.get(record.key[:63], [])}
    for name in record.workloads:
        deploy = claimed.get(name)
        if deploy is None:
            return f"deployment {name} not enforced"
        plan = workloads.plan_deployment(
            deploy,
            binding_key=record.key,
            service_account=record.service_account,
            configmap=configmap_name,
            configmap_data=dict(cm.data),
            client_id=client_id,
            manager=manager,
            rules=rules,
        )
        if plan.changes:
            return f"deployment {name} drifted"
    if set(claimed) - set(record.workloads):
        return "a deployment no longer named is still enforced"
    return None


def in_rotation(key: str, sweep_number: int, rotation: int) -> bool:
    """Whether this sweep reads the binding's federated credentials: one slice in `rotation` per sweep,
    so every identity is read once every `rotation` sweeps."""
    return rotation <= 1 or int(key[:8], 16) % rotation == sweep_number % rotation


def credential_suspicion(
    record: BindingRecord, credentials: Sequence[CredentialState], issuer: str | None
) -> str | None:
    subject = naming.service_account_subject(record.namespace, record.service_account)
    wanted = issuer or (record.credential or {}).get("issuer")
    if any(c.issuer == wanted and c.subject == subject for c in credentials):
        return None
    return "federated credential missing"


def identity_location(record: BindingRecord) -> tuple[str, str, str] | None:
    """(subscription, resource group, name) of the record's identity, or None before its first run."""
    parts = identity_id(record).split("/")
    if len(parts) < 9:
        return None
    return parts[2], parts[4], parts[8]


def cluster_id(record: BindingRecord) -> ResourceId:
    return parse_resource_id(record.cluster, CLUSTER_TYPE, "cluster")
