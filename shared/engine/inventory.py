"""What exists, read in bulk for the drift sweep: Azure (Resource Graph, else ARM lists) and each
cluster's Keyless objects (three label-selected, paged lists). Reads only.

Resource Graph answers every Keyless identity, the role assignments at every account, and every
cluster and account in a few paged queries (shared.adapters.resource_graph). Where it refuses us
(no read access on a subscription), fails, or is not configured, the same snapshot comes from ARM
lists instead: one list per identity resource group, one per account scope, one read per cluster
and per account (shared.domain.sweep_plan.Scope says which). Either way a snapshot only makes
suspects: nothing is written from it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from shared.adapters.kube import KubeUnreachable
from shared.adapters.resource_graph import ResourceGraphAdapter
from shared.domain.errors import KeylessError, NotFoundError
from shared.domain.ids import ACCOUNT_TYPE, CLUSTER_TYPE, ResourceId, parse_resource_id
from shared.domain.observed import AccountState, ClusterState, CredentialState, IdentityState
from shared.domain.sweep_plan import (
    CONFIGMAP_SELECTOR,
    DEPLOYMENT_SELECTOR,
    SA_SELECTOR,
    AzureSnapshot,
    ClusterObjects,
    RoleKey,
    Scope,
)
from shared.engine.world import World

log = logging.getLogger("keyless.sweep")


def _lists(api: Any, cluster: ResourceId) -> ClusterObjects:
    """Three label-selected lists across namespaces, through the API server or run command."""
    return ClusterObjects.build(
        api.list_labelled_service_accounts(cluster, SA_SELECTOR),
        api.list_labelled_configmaps(cluster, CONFIGMAP_SELECTOR),
        api.list_labelled_deployments(cluster, DEPLOYMENT_SELECTOR),
    )


class Inventory:
    def __init__(self, world: World, graph: ResourceGraphAdapter | None) -> None:
        self.w, self.graph = world, graph

    def azure(self, scope: Scope) -> AzureSnapshot:
        """The snapshot of everything `scope` names: Resource Graph first, ARM lists if it fails."""
        if self.graph is not None:
            try:
                return self._from_graph(scope)
            except KeylessError as exc:
                log.warning("Resource Graph unavailable for the sweep (%s); reading ARM lists instead", exc.reason)
        return self._from_arm(scope)

    def _from_graph(self, scope: Scope) -> AzureSnapshot:
        assert self.graph is not None
        identities = self.graph.keyless_identities(scope.subscriptions)
        roles = [
            RoleKey.of(ra.scope, ra.role_definition_id, ra.principal_id)
            for ra in self.graph.role_assignments_at(scope.accounts)
        ]
        clusters = self.graph.clusters(scope.subscriptions)
        accounts = self.graph.openai_accounts(scope.subscriptions)
        return AzureSnapshot.build(identities, roles, clusters, accounts, "resource-graph")

    def _from_arm(self, scope: Scope) -> AzureSnapshot:
        w = self.w
        identities: list[IdentityState] = []
        for sub, rg in scope.identity_groups:
            identities += w.identities.list_in_group(sub, rg)
        roles: list[RoleKey] = []
        for account in scope.accounts:
            sub = account.split("/")[2]
            roles += [
                RoleKey.of(ra.scope, ra.role_definition_id, ra.principal_id)
                for ra in w.roles.list_at_scope(sub, account)
            ]
        clusters: list[ClusterState] = []
        for cluster in scope.clusters:
            try:
                clusters.append(w.clusters.get(parse_resource_id(cluster, CLUSTER_TYPE, "cluster")))
            except NotFoundError:
                pass
        accounts: list[AccountState] = []
        for account in scope.accounts:
            try:
                accounts.append(w.accounts.get(parse_resource_id(account, ACCOUNT_TYPE, "account")))
            except NotFoundError:
                pass
        return AzureSnapshot.build(identities, roles, clusters, accounts, "arm")

    def cluster_objects(self, cluster_id: str) -> ClusterObjects:
        """The cluster's labelled ServiceAccounts, Keyless ConfigMaps and claimed Deployments, each one
        paged list across all namespaces. Raises KeylessError (e.g. KubeUnreachable) when they cannot be read."""
        cluster = parse_resource_id(cluster_id, CLUSTER_TYPE, "cluster")
        reach = self.w.reach
        if reach.remembered_unreachable(cluster):  # the cluster is read only for a private cluster
            unreachable = KubeUnreachable("the API server was unreachable a moment ago")
            return _lists(reach.lists_through_run_command(self.w.clusters.get(cluster), unreachable), cluster)
        try:
            return _lists(self.w.kube, cluster)
        except KubeUnreachable as exc:
            return _lists(reach.lists_through_run_command(self.w.clusters.get(cluster), exc), cluster)

    def credentials(self, subscription_id: str, resource_group: str, identity_name: str) -> Sequence[CredentialState]:
        return self.w.identities.list_credentials(subscription_id, resource_group, identity_name)
