"""Decisions, without side effects: (desired binding, observed state) -> what to do.

Each function is pure and small, so each rule of Azure and Kubernetes that shapes a
decision is tested here with plain values; `reconcile` only carries out what these say.
"""

from __future__ import annotations

from typing import Literal

from shared import naming
from shared.binding import Binding
from shared.errors import PermanentError, TemporaryError
from shared.observed import (
    AccountState,
    ClusterState,
    CredentialState,
    IdentityState,
    KubeObjectState,
    RoleAssignmentState,
)

AUDIENCE = "api://AzureADTokenExchange"
MAX_CREDENTIALS_PER_IDENTITY = 20
MANAGED_BY = "keyless"
OPENAI_KINDS = frozenset({"openai", "aiservices"})
CLIENT_ID_ANNOTATION = "azure.workload.identity/client-id"
TENANT_ID_ANNOTATION = "azure.workload.identity/tenant-id"

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
        raise TemporaryError(f"cluster is {cluster.provisioning_state}; waiting for the operation to finish", 60)
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
        raise TemporaryError(f"account is {account.provisioning_state}", 30)
    if state == "failed":
        raise PermanentError("account is in the Failed provisioning state")


def identity_tags(binding: Binding) -> dict[str, str]:
    """Tags that mark an identity as Keyless's, and for which workload (tag values: max 256)."""
    return {
        "managed-by": MANAGED_BY,
        "keyless-workload": naming.short_hash(binding.workload_key, length=32),
        "keyless-cluster": str(binding.cluster)[:256],
        "keyless-namespace": binding.namespace,
        "keyless-service-account": binding.service_account[:256],
    }


def identity_action(observed: IdentityState | None, desired_tags: dict[str, str]) -> Action:
    if observed is None:
        return "create"
    owner = observed.tags.get("managed-by")
    if owner is not None and owner != MANAGED_BY:
        raise PermanentError(f"identity {observed.name} exists and is managed by {owner!r}; refusing to adopt it")
    if any(observed.tags.get(k) != v for k, v in desired_tags.items()):
        return "update"
    return "unchanged"


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


def kube_annotations_action(observed: KubeObjectState | None, desired: dict[str, str]) -> Action:
    if observed is None:
        return "create"
    if any(observed.annotations.get(k) != v for k, v in desired.items()):
        return "update"
    return "unchanged"


def kube_data_action(observed: KubeObjectState | None, desired: dict[str, str]) -> Action:
    if observed is None:
        return "create"
    return "unchanged" if observed.data == desired else "update"


def owned_only_by(observed: KubeObjectState, manager: str) -> bool:
    """True when our field manager is the only writer: then the object is ours to delete."""
    return observed.managers <= {manager}


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
