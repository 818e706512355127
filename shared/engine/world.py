"""What the engine acts on: the adapters, built once per process, and the lookups every job shares."""

from __future__ import annotations

import dataclasses

from shared.adapters.access_probe import AccessProbe
from shared.adapters.account_auth import AccountAuthAdapter
from shared.adapters.accounts import AccountAdapter
from shared.adapters.clusters import ClusterAdapter
from shared.adapters.identities import IdentityAdapter
from shared.adapters.kube import KubeAdapter
from shared.adapters.roles import RoleAssignmentAdapter
from shared.adapters.runcommand import RunCommandAdapter
from shared.domain import naming, planner
from shared.domain.binding import Binding
from shared.domain.observed import IdentityState
from shared.domain.settings import Settings
from shared.domain.workloads import ApiKeyRules
from shared.engine.cluster_access import ClusterReach


@dataclasses.dataclass
class World:
    settings: Settings
    clusters: ClusterAdapter
    accounts: AccountAdapter
    identities: IdentityAdapter
    roles: RoleAssignmentAdapter
    kube: KubeAdapter
    account_auth: AccountAuthAdapter | None
    run_command: RunCommandAdapter | None
    reach: ClusterReach = dataclasses.field(init=False)
    key_rules: ApiKeyRules = dataclasses.field(init=False)
    probe: AccessProbe = dataclasses.field(init=False)  # Entra exchange and the OpenAI read (KEYLESS_PROVE_ACCESS)

    def __post_init__(self) -> None:
        self.reach = ClusterReach(self.settings, self.clusters, self.kube, self.run_command)
        self.key_rules = ApiKeyRules.from_settings(self.settings)
        self.probe = AccessProbe(self.settings)

    def identity_location(self, binding: Binding) -> tuple[str, str]:
        """(subscription, resource group) of the binding's identity: settings, else the cluster's."""
        return (
            self.settings.identity_subscription_id or binding.cluster.subscription_id,
            self.settings.identity_resource_group or binding.cluster.resource_group,
        )

    def find_identity(self, b: Binding) -> IdentityState | None:
        """The identity under the binding's name, whoever made it (the planner judges); when there is
        none, one under its legacy name (10 hex digits) if tagged for this workload. The extra read is
        paid only while the name of now is absent."""
        sub, rg = self.identity_location(b)
        found = self.identities.get(sub, rg, b.identity_name)
        if found is not None:
            return found
        legacy = naming.legacy_identity_name(b.cluster.name, b.cluster.key, b.namespace, b.service_account)
        return planner.legacy_identity(self.identities.get(sub, rg, legacy), planner.identity_tags(b))
