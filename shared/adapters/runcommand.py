"""The AKS run-command API (`managedClusters/runCommand`), and Kubernetes access through it.

For private clusters whose API server Keyless cannot reach (see shared.domain.kubectl for why and how).
`RunCommandKube` answers the same calls as `KubeAdapter`, each by one command run in the cluster,
so the engine's steps and their decisions do not change; only slower (a command takes seconds
to a minute). The ServiceAccount and ConfigMap of a binding are read once per run (one command),
then kept up to date from what each write returns.

The request carries a token for the AKS server application when the cluster is Entra-only
(local accounts disabled), as `az aks command invoke` does; it is never logged.
"""

from __future__ import annotations

import base64
import io
import zipfile
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from shared.adapters.arm import ARM_ERRORS, ArmClients, raise_translated
from shared.adapters.kube import _deployment_state, _state_from_dict
from shared.domain import kubectl, manifests, pod_proof, retry_policy
from shared.domain.errors import NotFoundError, PermanentError, TemporaryError
from shared.domain.ids import ResourceId
from shared.domain.observed import ClusterState, KubeObjectState
from shared.domain.settings import Settings
from shared.domain.workloads import DeploymentState


def command_context(files: dict[str, str]) -> str:
    """The `context` of a run command: the files, zipped, base64-encoded."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in sorted(files.items()):
            archive.writestr(name, text)
    return base64.b64encode(buffer.getvalue()).decode()


class RunCommandAdapter:
    def __init__(self, clients: ArmClients, credential: Any, settings: Settings) -> None:
        self._clients = clients
        self._credential = credential
        self._settings = settings

    def run(
        self, cluster: ClusterState, cluster_id: ResourceId, command: str, files: dict[str, str] | None = None
    ) -> str:
        """Run `command` in the cluster with `files` beside it; its logs. Waits at most
        KEYLESS_RUN_COMMAND_WAIT_SECONDS; a command still running then is a TemporaryError (it goes on
        in the cluster; every command we send is idempotent), a failed one raises what
        `kubectl.judge` makes of it (TemporaryError / PermanentError with the last lines of its logs)."""
        payload: dict[str, Any] = {"command": command}
        if files:
            payload["context"] = command_context(files)
        if cluster.aad_enabled and (cluster.local_accounts_disabled or not self._settings.allow_local_accounts):
            # Always Keyless's own Entra token where Entra can be used: without one, AKS runs the command
            # pod with the cluster's admin credential, past Keyless's Kubernetes RBAC.
            try:
                payload["clusterToken"] = self._credential.get_token(self._settings.aks_server_scope).token
            except ARM_ERRORS as exc:  # the credential gave no token (ClientAuthenticationError)
                raise_translated(exc, "getting the cluster token for a run command")
        elif not self._settings.allow_local_accounts:
            raise PermanentError(
                "the cluster has no Entra ID integration, so a run command would act as the cluster's admin; "
                "Keyless does not use local accounts unless KEYLESS_ALLOW_LOCAL_ACCOUNTS=true"
            )
        ops = self._clients.containerservice(cluster_id.subscription_id).managed_clusters
        wait = self._settings.run_command_wait_seconds
        try:
            poller = ops.begin_run_command(
                cluster_id.resource_group,
                cluster_id.name,
                payload,
                polling_interval=retry_policy.RUN_COMMAND_POLL_SECONDS,
            )
            poller.wait(timeout=wait)
            if not poller.done():
                raise TemporaryError(
                    "the run command is still running in the cluster", retry_policy.RUN_COMMAND_RUNNING_SECONDS
                )
            result = poller.result()
        except ResourceNotFoundError as exc:
            raise NotFoundError(f"cluster {cluster_id} not found") from exc
        except ARM_ERRORS as exc:
            raise_translated(exc, "running a command in the cluster (run command)")
        logs = str(getattr(result, "logs", "") or "")
        failure = kubectl.judge(
            str(getattr(result, "provisioning_state", "") or ""),
            getattr(result, "exit_code", None),
            str(getattr(result, "reason", "") or ""),
            logs,
        )
        if failure is None:
            return logs
        if failure.temporary:
            raise TemporaryError(failure.message, failure.delay)
        raise PermanentError(failure.message)


class RunCommandKube:
    """KubeAdapter's calls, for one cluster, through run commands."""

    def __init__(self, adapter: RunCommandAdapter, cluster: ClusterState, settings: Settings) -> None:
        self._adapter = adapter
        self._cluster = cluster
        self._settings = settings
        self._snapshot: dict[tuple[str, str], dict[str, Any] | None] = {}
        self._deployments: dict[str, list[dict[str, Any]]] = {}  # namespace -> listed with its pods
        self.commands = 0

    def _run(self, cluster_id: ResourceId, command: str, files: dict[str, str] | None = None) -> list[dict[str, Any]]:
        self.commands += 1
        return kubectl.parse_objects(self._adapter.run(self._cluster, cluster_id, command, files))

    def prefetch(self, cluster_id: ResourceId, namespace: str, refs: dict[str, str]) -> None:
        """Read the namespace and the named objects (kind -> name) with one command."""
        wanted = [f"namespace/{namespace}"] + [f"{kind.lower()}/{name}" for kind, name in refs.items()]
        objects = self._run(cluster_id, kubectl.get_command(namespace, wanted))
        self._snapshot[("Namespace", namespace)] = kubectl.find(objects, "Namespace", namespace)
        for kind, name in refs.items():
            self._snapshot[(kind, name)] = kubectl.find(objects, kind, name)

    def _get(self, cluster_id: ResourceId, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
        if (kind, name) not in self._snapshot:
            ref = f"namespace/{name}" if kind == "Namespace" else f"{kind.lower()}/{name}"
            self._snapshot[(kind, name)] = kubectl.find(
                self._run(cluster_id, kubectl.get_command(namespace, [ref])), kind, name
            )
        return self._snapshot[(kind, name)]

    def _apply(self, cluster_id: ResourceId, objects: list[dict[str, Any]], force: bool = True) -> list[dict[str, Any]]:
        applied = self._run(
            cluster_id,
            kubectl.apply_command(self._settings.field_manager, force),
            {kubectl.MANIFEST: kubectl.manifest(objects)},
        )
        for obj in applied:
            self._snapshot[(obj.get("kind", ""), obj["metadata"]["name"])] = obj
        return applied

    def forget(self, cluster_id: ResourceId) -> None:
        self._snapshot.clear()

    # --- namespace, service account, config map: as KubeAdapter -------------------------------

    def namespace_exists(self, cluster_id: ResourceId, namespace: str) -> bool:
        return self._get(cluster_id, namespace, "Namespace", namespace) is not None

    def create_namespace(self, cluster_id: ResourceId, namespace: str) -> None:
        self._apply(cluster_id, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}])

    def get_service_account(self, cluster_id: ResourceId, namespace: str, name: str) -> KubeObjectState | None:
        obj = self._get(cluster_id, namespace, "ServiceAccount", name)
        return None if obj is None else _state_from_dict(obj)

    def apply_service_account(
        self,
        cluster_id: ResourceId,
        namespace: str,
        name: str,
        annotations: dict[str, str],
        force: bool = False,
        labels: dict[str, str] | None = None,
    ) -> KubeObjectState:
        (obj,) = self._apply(cluster_id, [manifests.service_account(namespace, name, annotations, labels)], force)
        return _state_from_dict(obj)

    def delete_service_account(self, cluster_id: ResourceId, namespace: str, name: str) -> bool:
        return self._delete(cluster_id, namespace, "ServiceAccount", name)

    def get_configmap(self, cluster_id: ResourceId, namespace: str, name: str) -> KubeObjectState | None:
        obj = self._get(cluster_id, namespace, "ConfigMap", name)
        return None if obj is None else _state_from_dict(obj)

    def apply_configmap(
        self,
        cluster_id: ResourceId,
        namespace: str,
        name: str,
        data: dict[str, str],
        labels: dict[str, str],
        annotations: dict[str, str] | None = None,
        force: bool = False,
    ) -> KubeObjectState:
        (obj,) = self._apply(cluster_id, [manifests.config_map(namespace, name, data, labels, annotations)], force)
        return _state_from_dict(obj)

    def delete_configmap(self, cluster_id: ResourceId, namespace: str, name: str) -> bool:
        return self._delete(cluster_id, namespace, "ConfigMap", name)

    def _delete(self, cluster_id: ResourceId, namespace: str, kind: str, name: str) -> bool:
        self.commands += 1
        logs = self._adapter.run(self._cluster, cluster_id, kubectl.delete_command(f"{kind.lower()}/{name}", namespace))
        self._snapshot[(kind, name)] = None
        return bool(logs.strip())  # `-o name` prints what was deleted, nothing when it was absent

    # --- label-selected lists across namespaces (the drift sweep's) ----------------------------

    def list_labelled_service_accounts(self, cluster_id: ResourceId, label_selector: str) -> list[KubeObjectState]:
        objects = self._run(cluster_id, kubectl.list_all_command("serviceaccounts", label_selector))
        return [_state_from_dict(o) for o in objects if o.get("kind", "ServiceAccount") == "ServiceAccount"]

    def list_labelled_configmaps(self, cluster_id: ResourceId, label_selector: str) -> list[KubeObjectState]:
        objects = self._run(cluster_id, kubectl.list_all_command("configmaps", label_selector))
        return [_state_from_dict(o) for o in objects if o.get("kind", "ConfigMap") == "ConfigMap"]

    def list_labelled_deployments(self, cluster_id: ResourceId, label_selector: str) -> list[DeploymentState]:
        objects = self._run(cluster_id, kubectl.list_all_command("deployments", label_selector))
        return [_deployment_state(o) for o in objects if o.get("kind", "Deployment") == "Deployment"]

    # --- deployments and pods -----------------------------------------------------------------

    def list_deployments(
        self, cluster_id: ResourceId, namespace: str, label_selector: str = "", forbidden_is_empty: bool = False
    ) -> list[DeploymentState]:
        if not label_selector and namespace in self._deployments:  # listed by list_pods a moment ago
            objects = self._deployments.pop(namespace)
        else:
            objects = self._run(cluster_id, kubectl.list_command("deployments", namespace, label_selector))
        return [_deployment_state(o) for o in objects if o.get("kind", "Deployment") == "Deployment"]

    def get_deployment(self, cluster_id: ResourceId, namespace: str, name: str) -> DeploymentState | None:
        obj = self._get(cluster_id, namespace, "Deployment", name)
        return None if obj is None else _deployment_state(obj)

    def apply_deployment(self, cluster_id: ResourceId, namespace: str, config: dict[str, Any]) -> DeploymentState:
        (obj,) = self._apply(cluster_id, [config])
        return _deployment_state(obj)

    def json_patch_deployment(
        self, cluster_id: ResourceId, namespace: str, name: str, operations: list[dict[str, Any]]
    ) -> DeploymentState:
        command = kubectl.patch_command(f"deployment/{name}", namespace, self._settings.field_manager)
        (obj,) = self._run(cluster_id, command, {kubectl.PATCH: kubectl.patch_file(operations)})
        self._snapshot[("Deployment", name)] = obj
        return _deployment_state(obj)

    def request_token(self, cluster_id: ResourceId, namespace: str, name: str, audience: str, seconds: int) -> str:
        """Refused: `kubectl create token` would print the workload's token into the command's result,
        which AKS stores (readable with commandResults/read). The proof runs in the pod instead
        (`prove_in_cluster`)."""
        raise PermanentError("a service account token is never brought out of a private cluster through run command")

    def prove_in_cluster(
        self,
        cluster_id: ResourceId,
        namespace: str,
        name: str,
        audience: str,
        seconds: int,
        entra_token_url: str,
        client_id: str,
        scope: str,
        read_url: str,
    ) -> pod_proof.PodVerdict:
        """The whole proof of access in the run command's pod (shared.domain.pod_proof): the token is made,
        exchanged and used there; only the verdict comes back. Raises ValueError when the logs hold none."""
        self.commands += 1
        command = pod_proof.command(namespace, name, audience, seconds, entra_token_url, client_id, scope, read_url)
        logs = self._adapter.run(self._cluster, cluster_id, command, {pod_proof.SCRIPT_FILE: pod_proof.SCRIPT})
        return pod_proof.parse_verdict(logs)

    def list_pods(self, cluster_id: ResourceId, namespace: str) -> list[dict[str, Any]]:
        """The namespace's pods, and its Deployments with them (one command; verification wants both)."""
        objects = self._run(cluster_id, kubectl.list_command("deployments,pods", namespace))
        self._deployments[namespace] = [o for o in objects if o.get("kind") == "Deployment"]
        return [o for o in objects if o.get("kind") == "Pod"]
