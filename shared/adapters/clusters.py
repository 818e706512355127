"""AKS managed clusters: read the OIDC/workload-identity state, enable it, get API server access.

Reads go through a short cache (shared.adapters.readcache): every binding on a cluster starts
by reading it, and a batch should read it once.
"""

from __future__ import annotations

import base64
import dataclasses
import threading
from typing import Any

import yaml
from azure.core.exceptions import ResourceNotFoundError

from shared.adapters.arm import ARM_ERRORS, ArmClients, raise_translated
from shared.adapters.readcache import ReadCache, version_of
from shared.domain import retry_policy
from shared.domain.errors import NotFoundError, PermanentError, TemporaryError
from shared.domain.ids import CLUSTER_TYPE, ResourceId, parse_resource_id
from shared.domain.observed import ClusterState


@dataclasses.dataclass(frozen=True)
class KubeAccess:
    """Where the API server is and how to trust it; `token` only for local (admin) accounts."""

    server: str
    ca_data: bytes
    token: str | None = None


def _cluster_state(cluster_id: ResourceId, mc: Any) -> ClusterState:
    props = mc.get("properties") or {}
    oidc = props.get("oidcIssuerProfile") or {}
    wi = (props.get("securityProfile") or {}).get("workloadIdentity") or {}
    return ClusterState(
        id=mc.get("id") or str(cluster_id),
        name=mc.get("name") or cluster_id.name,
        location=mc.get("location") or "",
        provisioning_state=props.get("provisioningState") or "Succeeded",
        oidc_issuer_enabled=bool(oidc.get("enabled")),
        issuer_url=oidc.get("issuerURL") or None,
        workload_identity_enabled=bool(wi.get("enabled")),
        aad_enabled=bool(props.get("aadProfile")),
        azure_rbac=bool((props.get("aadProfile") or {}).get("enableAzureRBAC")),
        local_accounts_disabled=bool(props.get("disableLocalAccounts")),
        tags=dict(mc.get("tags") or {}),
        private=bool((props.get("apiServerAccessProfile") or {}).get("enablePrivateCluster")),
        run_command_disabled=bool((props.get("apiServerAccessProfile") or {}).get("disableRunCommand")),
    )


def _settled(state: ClusterState) -> bool:
    """Worth caching: a cluster in the middle of an operation is about to change."""
    return state.provisioning_state.lower() == "succeeded"


class ClusterAdapter:
    def __init__(self, clients: ArmClients) -> None:
        self._clients = clients
        self.cache: ReadCache[ClusterState] = ReadCache(clients.settings.arm_read_cache_seconds)
        self._enabling: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def _ops(self, cluster_id: ResourceId) -> Any:
        return self._clients.containerservice(cluster_id.subscription_id).managed_clusters

    def _get_model(self, cluster_id: ResourceId) -> Any:
        try:
            return self._ops(cluster_id).get(cluster_id.resource_group, cluster_id.name)
        except ResourceNotFoundError as exc:
            self.cache.forget(cluster_id.key)
            raise NotFoundError(f"cluster {cluster_id} not found") from exc
        except ARM_ERRORS as exc:
            raise_translated(exc, "reading the cluster")

    def list_in_group(self, subscription_id: str, resource_group: str) -> list[ClusterState]:
        """Clusters in a resource group (to find those whose tags would pick a new account)."""
        ops = self._clients.containerservice(subscription_id).managed_clusters
        try:
            return [
                _cluster_state(parse_resource_id(mc.get("id"), CLUSTER_TYPE, "id"), mc)
                for mc in ops.list_by_resource_group(resource_group)
            ]
        except ResourceNotFoundError:
            return []
        except ARM_ERRORS as exc:
            raise_translated(exc, "listing clusters")

    def get(self, cluster_id: ResourceId, fresh: bool = False) -> ClusterState:
        """The cluster's state (read at most `arm_read_cache_seconds` ago, or now if `fresh`);
        NotFoundError if it does not exist."""
        return self.cache.get(
            cluster_id.key, lambda: _cluster_state(cluster_id, self._get_model(cluster_id)), fresh, keep=_settled
        )

    def expect(self, cluster_id: ResourceId, version: str) -> None:
        """Work fanned out after a read of version `version`: don't use an older cached state."""
        self.cache.expect(cluster_id.key, version)

    @staticmethod
    def version(state: ClusterState) -> str:
        return version_of(state)

    def enable_workload_identity(self, cluster_id: ResourceId, wait_seconds: float) -> ClusterState | None:
        """GET then PUT with OIDC issuer + workload identity on (what `az aks update` does).

        Waits for the long-running operation at most `wait_seconds`; returns the new state if
        it finished by then, None if it is still running (the caller retries later).

        Many bindings of one cluster find it without OIDC at once: in this process they take
        turns, and each decides on a fresh read, so only the first one PUTs; the others see
        the update running (None) or done (its state).
        """
        with self._lock:
            lock = self._enabling.setdefault(cluster_id.key, threading.Lock())
        with lock:
            return self._enable(cluster_id, wait_seconds)

    def _enable(self, cluster_id: ResourceId, wait_seconds: float) -> ClusterState | None:
        model = self._get_model(cluster_id)
        self.cache.forget(cluster_id.key)  # whatever happens next, the cached state is over
        state = _cluster_state(cluster_id, model)
        if state.provisioning_state.lower() != "succeeded":
            return None  # an operation runs (ours, from another binding): AKS would answer 409
        if state.oidc_issuer_enabled and state.workload_identity_enabled and state.issuer_url:
            return state
        body = model.as_dict(exclude_readonly=True)
        props = body.setdefault("properties", {})
        props["oidcIssuerProfile"] = {**(props.get("oidcIssuerProfile") or {}), "enabled": True}
        security = props.setdefault("securityProfile", {})
        security["workloadIdentity"] = {**(security.get("workloadIdentity") or {}), "enabled": True}
        try:
            # Without a wait, don't poll at all: a background poller would outlive this run.
            poller = self._ops(cluster_id).begin_create_or_update(
                cluster_id.resource_group,
                cluster_id.name,
                body,
                polling=wait_seconds > 0,
                polling_interval=retry_policy.CLUSTER_UPDATE_POLL_SECONDS,
            )
            if wait_seconds <= 0:
                return None
            poller.wait(timeout=wait_seconds)
            if not poller.done():
                return None
            return _cluster_state(cluster_id, poller.result())
        except ARM_ERRORS as exc:
            raise_translated(exc, "enabling OIDC issuer and workload identity")

    def kube_access(self, cluster_id: ResourceId, use_admin: bool) -> KubeAccess:
        """Server URL and CA from listClusterUserCredential (Entra); admin kubeconfig only if allowed."""
        ops = self._ops(cluster_id)
        try:
            if use_admin:
                creds = ops.list_cluster_admin_credentials(cluster_id.resource_group, cluster_id.name)
            else:
                creds = ops.list_cluster_user_credentials(cluster_id.resource_group, cluster_id.name)
        except ResourceNotFoundError as exc:
            self.cache.forget(cluster_id.key)  # a later get() asks ARM, not the cache
            raise NotFoundError(f"cluster {cluster_id} not found") from exc
        except ARM_ERRORS as exc:
            raise_translated(exc, "fetching cluster credentials")
        kubeconfigs = creds.get("kubeconfigs") or []
        if not kubeconfigs:
            raise TemporaryError("cluster returned no kubeconfig", retry_policy.NO_KUBECONFIG_SECONDS)
        raw = kubeconfigs[0].get("value")
        try:
            text = raw if isinstance(raw, bytes) else base64.b64decode(raw)
            config = yaml.safe_load(text)
            cluster = config["clusters"][0]["cluster"]
            server = cluster["server"]
            ca = base64.b64decode(cluster["certificate-authority-data"])
        except (KeyError, IndexError, TypeError, ValueError, yaml.YAMLError) as exc:
            raise PermanentError("cluster credentials are not a kubeconfig Keyless can read") from exc
        token = None
        if use_admin:
            token = ((config.get("users") or [{}])[0].get("user") or {}).get("token")
            if not token:
                raise PermanentError("admin kubeconfig holds no token")
        return KubeAccess(server=server, ca_data=ca, token=token)
