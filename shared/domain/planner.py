"""Decisions, without side effects: (desired binding, observed state) -> what to do.

Each function is pure and small, so each rule of Azure and Kubernetes that shapes a
decision is tested here with plain values; `reconcile` only carries out what these say.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from shared.domain import naming, retry_policy
from shared.domain.binding import Binding
from shared.domain.errors import PermanentError, TemporaryError
from shared.domain.observed import (
    AccountState,
    ClusterState,
    CredentialState,
    IdentityState,
    KubeObjectState,
    RoleAssignmentState,
)
from shared.domain.workloads import BINDING_LABEL

AUDIENCE = "api://AzureADTokenExchange"
MAX_CREDENTIALS_PER_IDENTITY = 20
MANAGED_BY = "keyless"
WORKLOAD_TAG = "keyless-workload"
OPENAI_KINDS = frozenset({"openai", "aiservices"})
CLIENT_ID_ANNOTATION = "azure.workload.identity/client-id"
TENANT_ID_ANNOTATION = "azure.workload.identity/tenant-id"
# Written by the apply that creates a ServiceAccount or ConfigMap, kept by every later one: only what
# carries it (under our field manager) is Keyless's to delete.
CREATED_BY_ANNOTATION = "keyless.io/created-by"
# Set by the namespace's owner to hand an object (and fields others set) over to Keyless.
ADOPT_ANNOTATION = "keyless.io/adopt"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
# On every ServiceAccount that carries Keyless's annotations (applied with them, given back with them):
# the drift sweep finds a cluster's in one label-selected list (shared.domain.sweep_plan).
SA_BOUND_LABEL = "keyless.io/bound"
SA_BOUND_LABELS = {SA_BOUND_LABEL: "true"}

# AKS provisioning states in which an operation is still running: wait, don't write.
_CLUSTER_BUSY = frozenset(
    {"creating", "updating", "upgrading", "scaling", "deleting", "migrating", "starting", "stopping", "canceling"}
)

Action = Literal["create", "update", "unchanged"]
ClusterAction = Literal["ready", "enable"]


def cluster_action(cluster: ClusterState, enable_allowed: bool) -> ClusterAction:
    """`ready` when OIDC + workload identity are on and the issuer is known; `enable` to turn them on."""
    state = cluster.provisioning_state.lower()
    if state in _CLUSTER_BUSY:
        raise TemporaryError(
            f"cluster is {cluster.provisioning_state}; waiting for the operation to finish",
            retry_policy.CLUSTER_BUSY_SECONDS,
        )
    if state == "failed":
        raise PermanentError("cluster is in the Failed provisioning state; repair it (az aks update) first")
    if cluster.oidc_issuer_enabled and cluster.workload_identity_enabled and cluster.issuer_url:
        return "ready"
    if not enable_allowed:
        missing = [
            label
            for label, on in (
                ("OIDC issuer", cluster.oidc_issuer_enabled and cluster.issuer_url),
                ("workload identity", cluster.workload_identity_enabled),
            )
            if not on
        ]
        raise PermanentError(
            f"cluster has no {' and no '.join(missing)}; run az aks update --enable-oidc-issuer "
            "--enable-workload-identity, or set KEYLESS_ENABLE_CLUSTER_FEATURES=true"
        )
    return "enable"


def check_account(account: AccountState) -> None:
    """Refuse accounts Entra workload identity cannot use (PermanentError) or not ready yet."""
    if account.kind.lower() not in OPENAI_KINDS:
        raise PermanentError(f"account kind is {account.kind!r}; only OpenAI and AIServices accounts are supported")
    if not account.custom_subdomain:
        raise PermanentError(
            "account has no custom subdomain endpoint; Entra ID authentication needs one "
            "(set customSubDomainName on the account)"
        )
    state = account.provisioning_state.lower()
    if state in ("creating", "updating", "accepted", "resolvingdns", "moving", "deleting"):
        raise TemporaryError(f"account is {account.provisioning_state}", retry_policy.ACCOUNT_BUSY_SECONDS)
    if state == "failed":
        raise PermanentError("account is in the Failed provisioning state")


def identity_tags(binding: Binding) -> dict[str, str]:
    """Tags that mark an identity as Keyless's, and for which workload (tag values: max 256)."""
    return {
        "managed-by": MANAGED_BY,
        WORKLOAD_TAG: naming.short_hash(binding.workload_key, length=32),
        "keyless-cluster": str(binding.cluster)[:256],
        "keyless-namespace": binding.namespace,
        "keyless-service-account": binding.service_account[:256],
    }


def identity_not_ours(observed: IdentityState, desired_tags: dict[str, str]) -> str | None:
    """Why an identity under the workload's name is not this workload's; None when it is.

    Only the 128-bit `keyless-workload` tag says so: a name can be taken by anyone with write access
    to the resource group, and an identity Keyless adopted would carry another's credentials and be
    deleted with them at offboarding."""
    owner = observed.tags.get("managed-by")
    if owner is not None and owner != MANAGED_BY:
        return f"identity {observed.name} exists and is managed by {owner!r}; refusing to adopt it"
    workload = observed.tags.get(WORKLOAD_TAG)
    handover = (
        "Keyless uses an identity only when its tags name this workload: remove or rename it, or hand it "
        f"over by tagging it managed-by={MANAGED_BY} and {WORKLOAD_TAG}={desired_tags[WORKLOAD_TAG]} "
        "(Keyless then also deletes it when the binding is offboarded)"
    )
    if owner is None or workload is None:
        return f"identity {observed.name} exists but was not made by Keyless (no {WORKLOAD_TAG} tag). {handover}"
    if workload != desired_tags[WORKLOAD_TAG]:
        return f"identity {observed.name} belongs to another workload ({WORKLOAD_TAG}={workload}). {handover}"
    return None


ROLE_ASSIGNMENTS_PER_SUBSCRIPTION = 4000
"""Azure's limit: role assignments per subscription, all scopes inside it (AZURE-FACTS; Azure RBAC
limits, learn.microsoft.com/azure/role-based-access-control/troubleshoot-limits)."""


def check_role_assignment_room(count: int, subscription_id: str, headroom: int) -> None:
    """A new binding needs one more role assignment in the account's subscription: refused
    (PermanentError) when fewer than `headroom` places of Azure's 4,000 would be left, so that one
    team's bindings never use up what every team in the subscription shares."""
    if count + 1 > ROLE_ASSIGNMENTS_PER_SUBSCRIPTION - headroom:
        raise PermanentError(
            f"the OpenAI account's subscription {subscription_id} holds {count} role assignments of Azure's "
            f"{ROLE_ASSIGNMENTS_PER_SUBSCRIPTION} per subscription, and Keyless keeps {headroom} free "
            "(KEYLESS_ROLE_ASSIGNMENT_HEADROOM): put new OpenAI accounts in another subscription, or remove "
            "role assignments no one uses"
        )


def identity_action(observed: IdentityState | None, desired_tags: dict[str, str]) -> Action:
    """`create` when absent; an identity that is not this workload's is refused (PermanentError)."""
    if observed is None:
        return "create"
    refusal = identity_not_ours(observed, desired_tags)
    if refusal is not None:
        raise PermanentError(refusal)
    if any(observed.tags.get(k) != v for k, v in desired_tags.items()):
        return "update"
    return "unchanged"


def legacy_identity(observed: IdentityState | None, desired_tags: dict[str, str]) -> IdentityState | None:
    """An identity under the name of before (40 bits of digest) counts only when its tags name this
    workload: the tag holds 128 bits, which no one can search a collision for."""
    if observed is None or identity_not_ours(observed, desired_tags) is not None:
        return None
    return observed


def merged_tags(observed: IdentityState | None, desired_tags: dict[str, str]) -> dict[str, str]:
    """Keep tags others set on the identity; ours win."""
    return {**(observed.tags if observed else {}), **desired_tags}


def credential_action(
    existing: list[CredentialState],
    name: str,
    issuer: str,
    subject: str,
    identity: str = "<identity>",
    resource_group: str = "<resource group>",
) -> tuple[Action | Literal["adopt"], str]:
    """What to do about the federated credential, and under which name.

    The issuer is compared exactly (the trailing slash matters to token exchange).
    A credential with the same issuer+subject under another name is adopted: Azure refuses
    a second one. Our own name with a stale issuer (cluster recreated) is updated in place.
    """
    for cred in existing:
        if cred.issuer == issuer and cred.subject == subject:
            if cred.name.lower() != name.lower():
                return "adopt", cred.name
            if tuple(cred.audiences) != (AUDIENCE,):
                return "update", cred.name
            return "unchanged", cred.name
    for cred in existing:
        if cred.name.lower() == name.lower():
            return "update", cred.name
    if len(existing) >= MAX_CREDENTIALS_PER_IDENTITY:
        listing = "; ".join(f"{c.name} (issuer {c.issuer}, subject {c.subject})" for c in existing)
        raise PermanentError(
            f"identity {identity} already holds {len(existing)} federated credentials, Azure's limit of "
            f"{MAX_CREDENTIALS_PER_IDENTITY} per identity: {listing}. To free one, offboard a binding that no longer "
            "needs it (DELETE /api/onboardings/<id>; a deleted cluster's credentials go first), or delete a "
            "credential made outside Keyless: az identity federated-credential delete "
            f"--identity-name {identity} --resource-group {resource_group} --name <name>"
        )
    return "create", name


def split_credentials(
    existing: list[CredentialState], name: str, subject: str, issuer: str | None
) -> tuple[list[CredentialState], list[CredentialState]]:
    """(ours, others) on the binding's identity when offboarding. Ours: our name, or the binding's
    subject under the cluster's issuer (an adopted credential; any issuer when the cluster is gone,
    since the identity is named for this cluster/namespace/service account). Others were added by
    someone else: the identity stays while they exist, or they would vanish with it."""
    ours: list[CredentialState] = []
    others: list[CredentialState] = []
    for cred in existing:
        adopted = cred.subject == subject and (issuer is None or cred.issuer == issuer)
        (ours if cred.name.lower() == name.lower() or adopted else others).append(cred)
    return ours, others


def role_assignment_action(
    existing: list[RoleAssignmentState], scope: str, role_guid: str, principal_id: str
) -> tuple[Action, RoleAssignmentState | None]:
    """`unchanged` if this principal already holds the role at exactly this scope (any name)."""
    for ra in existing:
        if (
            ra.scope.rstrip("/").lower() == scope.rstrip("/").lower()
            and ra.role_guid == role_guid.lower()
            and ra.principal_id.lower() == principal_id.lower()
        ):
            return "unchanged", ra
    return "create", None


def service_account_annotations(identity: IdentityState) -> dict[str, str]:
    return {CLIENT_ID_ANNOTATION: identity.client_id, TENANT_ID_ANNOTATION: identity.tenant_id}


def configmap_data(account: AccountState, identity: IdentityState) -> dict[str, str]:
    """What the workload reads: endpoint, deployment, client id, and the seed app's flags. No key."""
    data = {
        "AZURE_OPENAI_ENDPOINT": account.endpoint or "",
        "AZURE_CLIENT_ID": identity.client_id,
        "AZURE_TENANT_ID": identity.tenant_id,
        "USE_AZURE_OPENAI": "True",
        "USE_AZURE_AD": "True",
    }
    deployments = sorted(account.deployments)
    if deployments:
        data["AZURE_OPENAI_DEPLOYMENT_NAME"] = deployments[0]
        data["AZURE_OPENAI_DEPLOYMENTS"] = ",".join(deployments)
    return data


@dataclasses.dataclass(frozen=True)
class KubePlan:
    """What to server-side apply on a ServiceAccount or ConfigMap: exactly the fields Keyless owns.
    `force` only where Keyless takes over fields another manager holds (handed over, or its own)."""

    action: Action
    annotations: dict[str, str]
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    force: bool = False


def _stale(current: dict[str, str], owners: dict[str, frozenset[str]], desired: dict[str, str], manager: str) -> bool:
    """A desired value is missing or different, or our manager still owns a key no longer desired
    (an apply removes it)."""
    return any(current.get(k) != v for k, v in desired.items()) or any(
        manager in who and key not in desired for key, who in owners.items()
    )


def kube_annotations_action(observed: KubeObjectState | None, desired: dict[str, str], manager: str = "") -> Action:
    if observed is None:
        return "create"
    return "update" if _stale(observed.annotations, observed.annotation_owners, desired, manager) else "unchanged"


def adopted(observed: KubeObjectState) -> bool:
    """The namespace's owner handed the object over: `keyless.io/adopt: "true"`."""
    return observed.annotations.get(ADOPT_ANNOTATION, "").strip().lower() == "true"


def created_by_keyless(observed: KubeObjectState, manager: str, binding_key: str | None = None) -> bool:
    """The marker, under our field manager (every apply of ours writes it while it is there).
    With `binding_key` (ConfigMaps): one made before the marker carries this binding's label, ours."""
    owners = observed.annotation_owners.get(CREATED_BY_ANNOTATION, frozenset())
    if observed.annotations.get(CREATED_BY_ANNOTATION) == MANAGED_BY and manager in owners:
        return True
    return (
        binding_key is not None
        and observed.labels.get(BINDING_LABEL) == binding_key[:63]
        and manager in observed.label_owners.get(BINDING_LABEL, frozenset())
    )


def owned_only_by(observed: KubeObjectState, manager: str) -> bool:
    """True when our field manager is the only writer."""
    return observed.managers <= {manager}


def _holders(observed: KubeObjectState, key: str, manager: str) -> str:
    others = sorted(observed.annotation_owners.get(key, frozenset()) - {manager})
    return "field manager " + ", ".join(repr(m) for m in others) if others else "no field manager (unclaimed)"


def service_account_plan(observed: KubeObjectState | None, identity: IdentityState, manager: str) -> KubePlan:
    """Our annotations on the workload's ServiceAccount, never over another manager's value.

    A client-id (or tenant-id) another manager set to another value, or that no manager claims, is
    theirs: overwriting it would switch their pods to our identity at the next restart. The step fails
    (PermanentError) saying who holds it and how to hand it over, unless the owner already did."""
    ours = service_account_annotations(identity)
    marker = {CREATED_BY_ANNOTATION: MANAGED_BY}
    if observed is None:
        return KubePlan("create", {**ours, **marker}, dict(SA_BOUND_LABELS))
    desired = {**ours, **marker} if created_by_keyless(observed, manager) else ours
    differing = [k for k in ours if observed.annotations.get(k) not in (None, ours[k])]
    theirs = [k for k in differing if manager not in observed.annotation_owners.get(k, frozenset())]
    if theirs and not adopted(observed):
        where = f"{observed.namespace}/{observed.name}"
        held = "; ".join(f"{k}={observed.annotations[k]!r} is held by {_holders(observed, k, manager)}" for k in theirs)
        raise PermanentError(
            f"service account {where} already names another identity: {held}. Keyless does not overwrite it "
            "(the pods would switch identity at their next restart). To hand it over, the namespace's owner sets "
            f"annotation {ADOPT_ANNOTATION}=true on the service account (kubectl annotate serviceaccount "
            f"{observed.name} -n {observed.namespace} {ADOPT_ANNOTATION}=true); Keyless then takes the annotation over"
        )
    force = any(observed.annotation_owners.get(k, frozenset()) - {manager} for k in differing)
    action = kube_annotations_action(observed, desired, manager)
    if action == "unchanged" and _stale(observed.labels, observed.label_owners, SA_BOUND_LABELS, manager):
        action = "update"
    return KubePlan(action, desired, dict(SA_BOUND_LABELS), force=force)


def configmap_labels(binding: Binding) -> dict[str, str]:
    return {MANAGED_BY_LABEL: MANAGED_BY, BINDING_LABEL: binding.key[:63]}


def configmap_plan(observed: KubeObjectState | None, data: dict[str, str], binding: Binding, manager: str) -> KubePlan:
    """The binding's ConfigMap: created with the marker; kept ours (drift repaired, force); one of that
    name Keyless did not create is refused unless handed over, and then gets only our keys."""
    if observed is None:
        return KubePlan("create", {CREATED_BY_ANNOTATION: MANAGED_BY}, configmap_labels(binding))
    if created_by_keyless(observed, manager, binding.key):
        annotations, labels = {CREATED_BY_ANNOTATION: MANAGED_BY}, configmap_labels(binding)
    elif adopted(observed):
        annotations, labels = {}, {}
    else:
        holders = ", ".join(repr(m) for m in sorted(observed.managers)) or "none"
        raise PermanentError(
            f"config map {observed.namespace}/{observed.name} exists and was not created by Keyless (field managers: "
            f"{holders}); Keyless does not overwrite it. Rename or remove it, or hand it over: the namespace's owner "
            f"sets annotation {ADOPT_ANNOTATION}=true on it (kubectl annotate configmap {observed.name} "
            f"-n {observed.namespace} {ADOPT_ANNOTATION}=true); Keyless then writes its keys there"
        )
    stale = (
        _stale(observed.data, observed.data_owners, data, manager)
        or _stale(observed.annotations, observed.annotation_owners, annotations, manager)
        or _stale(observed.labels, observed.label_owners, labels, manager)
    )
    return KubePlan("update" if stale else "unchanged", annotations, labels, force=True)


ReleaseAction = Literal["absent", "delete", "release", "leave"]


def release_action(observed: KubeObjectState | None, manager: str, binding_key: str | None = None) -> ReleaseAction:
    """Offboarding a ServiceAccount or ConfigMap: `delete` only what Keyless created and no one else
    has written to since; `release` (apply nothing: our fields go back) where Keyless holds fields of
    an object it did not create, or one others now write to too; `leave` what holds none of ours."""
    if observed is None:
        return "absent"
    if manager not in observed.managers:
        return "leave"
    if created_by_keyless(observed, manager, binding_key) and owned_only_by(observed, manager):
        return "delete"
    return "release"


def configmap_still_used(binding: Binding, others: list[Binding]) -> bool:
    """Another live binding of the same ServiceAccount and account (another role) shares the ConfigMap name."""
    return any(o.configmap_name == binding.configmap_name and o.key != binding.key for o in others)


def workload_still_bound(binding: Binding, others: list[Binding]) -> bool:
    """Another live binding for the same cluster/namespace/service account keeps the identity."""
    return any(o.workload_key == binding.workload_key and o.key != binding.key for o in others)


PLANNED = "(assigned when created)"


def planned_identity(
    observed: IdentityState | None, subscription_id: str, resource_group: str, name: str, location: str
) -> IdentityState:
    """What a dry run stands in for an identity it would create (ids unknown until then)."""
    if observed is not None:
        return observed
    rid = (
        f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}/providers/"
        f"Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
    )
    return IdentityState(
        id=rid, name=name, location=location, client_id=PLANNED, principal_id=PLANNED, tenant_id=PLANNED
    )


def is_planned(identity: IdentityState) -> bool:
    return identity.principal_id == PLANNED
