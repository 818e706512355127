"""The one cluster-access seam: how the engine reaches a cluster's API server.

Two adapters answer the same calls (`ClusterAccess`): the Kubernetes API directly
(shared.adapters.kube), or, for a private cluster Keyless cannot reach from outside its network, the
AKS run-command API (shared.adapters.runcommand: kubectl in a pod in the cluster). Which one is
decided in one place, `ClusterReach`, for runs and verification alike:

- a run starts on the API server, unless this process learnt the cluster is private and unreachable
  (remembered for KEYLESS_KUBE_CREDENTIALS_TTL_SECONDS);
- the first call that cannot connect falls back to run command when the cluster is private, the
  fallback is on and run command is not disabled on the cluster; otherwise the run fails saying how
  to give Keyless a path (a public cluster that cannot be reached is "not yet": it may come back).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from shared.adapters.clusters import ClusterAdapter
from shared.adapters.kube import KubeAdapter, KubeUnreachable
from shared.adapters.runcommand import RunCommandAdapter, RunCommandKube
from shared.domain.binding import Binding
from shared.domain.errors import PermanentError
from shared.domain.ids import ResourceId
from shared.domain.observed import ClusterState, KubeObjectState
from shared.domain.settings import Settings
from shared.domain.workloads import DeploymentState

log = logging.getLogger("keyless.reconcile")


class ClusterAccess(Protocol):
    """What the engine asks of a cluster; KubeAdapter and RunCommandKube both answer it."""

    def forget(self, cluster_id: ResourceId) -> None: ...
    def namespace_exists(self, cluster_id: ResourceId, namespace: str) -> bool: ...
    def create_namespace(self, cluster_id: ResourceId, namespace: str) -> None: ...
    def get_service_account(self, cluster_id: ResourceId, namespace: str, name: str) -> KubeObjectState | None: ...
    def apply_service_account(
        self,
        cluster_id: ResourceId,
        namespace: str,
        name: str,
        annotations: dict[str, str],
        force: bool = False,
        labels: dict[str, str] | None = None,
    ) -> KubeObjectState: ...
    def delete_service_account(self, cluster_id: ResourceId, namespace: str, name: str) -> bool: ...
    def get_configmap(self, cluster_id: ResourceId, namespace: str, name: str) -> KubeObjectState | None: ...
    def apply_configmap(
        self,
        cluster_id: ResourceId,
        namespace: str,
        name: str,
        data: dict[str, str],
        labels: dict[str, str],
        annotations: dict[str, str] | None = None,
        force: bool = False,
    ) -> KubeObjectState: ...
    def delete_configmap(self, cluster_id: ResourceId, namespace: str, name: str) -> bool: ...
    def list_deployments(
        self, cluster_id: ResourceId, namespace: str, label_selector: str = "", forbidden_is_empty: bool = False
    ) -> list[DeploymentState]: ...
    def get_deployment(self, cluster_id: ResourceId, namespace: str, name: str) -> DeploymentState | None: ...
    def apply_deployment(self, cluster_id: ResourceId, namespace: str, config: dict[str, Any]) -> DeploymentState: ...
    def json_patch_deployment(
        self, cluster_id: ResourceId, namespace: str, name: str, patch: list[dict[str, Any]]
    ) -> DeploymentState: ...
    def list_pods(self, cluster_id: ResourceId, namespace: str) -> list[dict[str, Any]]: ...
    def request_token(self, cluster_id: ResourceId, namespace: str, name: str, audience: str, seconds: int) -> str: ...


class ClusterReach:
    """Decides how each cluster is reached, and remembers private clusters that could not be."""

    def __init__(
        self, settings: Settings, clusters: ClusterAdapter, kube: KubeAdapter, run_command: RunCommandAdapter | None
    ) -> None:
        self.settings, self.clusters, self.kube, self.run_command = settings, clusters, kube, run_command
        self._unreachable: dict[str, float] = {}  # cluster id -> until when run command is used
        self._lock = threading.Lock()

    def connect(
        self, binding: Binding, cluster: ClusterState | None = None, prefetch: bool = True
    ) -> ClusterConnection:
        """How a run (or a verification) of `binding` starts reaching its cluster. `prefetch`: through
        run command, read the binding's namespace, ServiceAccount and ConfigMap with the first command
        (a run needs all three; a verification only some)."""
        connection = ClusterConnection(self, binding, cluster, self.kube, prefetch)
        if cluster is not None and self.known_unreachable(cluster):
            connection.api = self.through_run_command(binding, cluster, prefetch)
        return connection

    def connect_known(self, binding: Binding, prefetch: bool = True) -> ClusterConnection:
        """As `connect`, reading the cluster only when this process goes through run command for it."""
        remembered = self.remembered_unreachable(binding.cluster)
        return self.connect(binding, self.clusters.get(binding.cluster) if remembered else None, prefetch)

    def remembered_unreachable(self, cluster_id: ResourceId) -> bool:
        """This process went through run command for the cluster a moment ago (no read)."""
        with self._lock:
            return self._unreachable.get(cluster_id.key, 0.0) > time.monotonic()

    def known_unreachable(self, cluster: ClusterState) -> bool:
        with self._lock:
            until = self._unreachable.get(cluster.id.lower(), 0.0)
        return cluster.private and until > time.monotonic() and self.run_command is not None

    def fall_back(
        self, binding: Binding, cluster: ClusterState, exc: KubeUnreachable, prefetch: bool = True
    ) -> RunCommandKube:
        """The API server could not be reached: run command, or why not (the one decision)."""
        self.check_run_command(cluster, exc)
        return self.through_run_command(binding, cluster, prefetch)

    def lists_through_run_command(self, cluster: ClusterState, exc: KubeUnreachable) -> RunCommandKube:
        """The drift sweep's lists of a cluster whose API server could not be reached: as `fall_back`."""
        self.check_run_command(cluster, exc)
        assert self.run_command is not None
        return RunCommandKube(self.run_command, cluster, self.settings)

    def check_run_command(self, cluster: ClusterState, exc: KubeUnreachable) -> None:
        """Raise why run command may not be used for this cluster; else remember it goes through run command."""
        if not cluster.private:
            raise exc  # a public API server that does not answer: not yet
        if not self.settings.run_command_fallback:
            raise PermanentError(
                "the cluster is private and its API server is not reachable from Keyless; give the app a "
                "network path to it (VNet integration and the private DNS zone), or set "
                "KEYLESS_RUN_COMMAND_FALLBACK=true to go through the AKS run-command API"
            ) from exc
        if cluster.run_command_disabled or self.run_command is None:
            raise PermanentError(
                "the cluster is private, its API server is not reachable from Keyless, and run command is "
                "disabled on it (apiServerAccessProfile.disableRunCommand); give the app a network path to it"
            ) from exc
        with self._lock:
            self._unreachable[cluster.id.lower()] = time.monotonic() + self.settings.kube_credentials_ttl_seconds
        log.info("cluster %s is private and unreachable: going through run command", cluster.name)

    def through_run_command(self, binding: Binding, cluster: ClusterState, prefetch: bool = True) -> RunCommandKube:
        """Run command for this binding's cluster; with `prefetch`, its objects read at once (one
        command, not three)."""
        assert self.run_command is not None
        api = RunCommandKube(self.run_command, cluster, self.settings)
        b = binding
        if prefetch:
            refs = {"ServiceAccount": b.service_account, "ConfigMap": b.configmap_name}
            api.prefetch(b.cluster, b.namespace, refs)
        return api


class ClusterConnection:
    """One run's way to its cluster: `api` now, switched once to run command by `call` when needed."""

    def __init__(
        self, reach: ClusterReach, binding: Binding, cluster: ClusterState | None, api: ClusterAccess, prefetch: bool
    ) -> None:
        self._reach, self._binding, self._cluster, self._prefetch = reach, binding, cluster, prefetch
        self.api: ClusterAccess = api

    def call(self, fn: Callable[[ClusterAccess], Any], cluster: ClusterState | None = None) -> Any:
        """A Kubernetes call that may find the API server unreachable: it goes on through run command
        (or fails, saying why) as ClusterReach decides."""
        try:
            return fn(self.api)
        except KubeUnreachable as exc:
            if isinstance(self.api, RunCommandKube):
                raise
            known = cluster or self._cluster or self._reach.clusters.get(self._binding.cluster)
            self.api = self._reach.fall_back(self._binding, known, exc, self._prefetch)
            return fn(self.api)
