"""Plain snapshots of what the adapters observed in Azure and Kubernetes.

The planner decides from these alone, so it can be tested with literal values.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ClusterState:
    id: str
    name: str
    location: str
    provisioning_state: str
    oidc_issuer_enabled: bool
    issuer_url: str | None
    workload_identity_enabled: bool
    aad_enabled: bool = True
    azure_rbac: bool = False  # aadProfile.enableAzureRBAC: Azure role assignments authorise Kubernetes calls
    local_accounts_disabled: bool = True
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    private: bool = False  # apiServerAccessProfile.enablePrivateCluster: the API server has no public address
    run_command_disabled: bool = False  # apiServerAccessProfile.disableRunCommand


@dataclasses.dataclass(frozen=True)
class AccountState:
    id: str
    name: str
    kind: str
    endpoint: str | None
    custom_subdomain: str | None
    provisioning_state: str
    disable_local_auth: bool = False
    deployments: tuple[str, ...] = ()
    tags: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class IdentityState:
    id: str
    name: str
    location: str
    client_id: str
    principal_id: str
    tenant_id: str
    tags: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class CredentialState:
    name: str
    issuer: str
    subject: str
    audiences: tuple[str, ...] = ("api://AzureADTokenExchange",)


@dataclasses.dataclass(frozen=True)
class RoleAssignmentState:
    id: str
    name: str
    scope: str
    role_definition_id: str
    principal_id: str

    @property
    def role_guid(self) -> str:
        # ARM answers roleDefinitionId without the /subscriptions/<id> prefix: compare GUIDs.
        return self.role_definition_id.rstrip("/").rsplit("/", 1)[-1].lower()


@dataclasses.dataclass(frozen=True)
class KubeObjectState:
    """A ServiceAccount or ConfigMap as the API server returned it (None fields = absent).

    `annotation_owners` / `label_owners` / `data_owners`: key -> the field managers that own it
    (managedFields), so the planner can tell a value Keyless set from one another tool set. A key no
    manager claims is simply missing there."""

    name: str
    namespace: str
    annotations: dict[str, str] = dataclasses.field(default_factory=dict)
    data: dict[str, str] = dataclasses.field(default_factory=dict)
    managers: frozenset[str] = frozenset()
    resource_version: str = ""
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    annotation_owners: dict[str, frozenset[str]] = dataclasses.field(default_factory=dict)
    label_owners: dict[str, frozenset[str]] = dataclasses.field(default_factory=dict)
    data_owners: dict[str, frozenset[str]] = dataclasses.field(default_factory=dict)
