"""The workload's cluster: namespace check, ServiceAccount annotations, the workload ConfigMap,
the Deployments Keyless enforces and the pods verification looks at.

Connects as Azure does for Entra-enabled AKS: server and CA from listClusterUserCredential,
a bearer token for the AKS server application from the same Azure credential. Writes are
server-side applies under our own field manager, so fields other tools own stay theirs.

Retries and timeouts are shared.domain.retry_policy.KUBERNETES, set on the client's Configuration
(left unset, urllib3 would retry three times inside each call, silently); every attempt is counted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Self, TypeVar

from urllib3.util.retry import Retry

from shared.adapters import telemetry
from shared.adapters.clusters import ClusterAdapter
from shared.adapters.counting import answered, record
from shared.adapters.credentials import is_credential_failure, no_credential
from shared.domain import manifests, retry_policy
from shared.domain.errors import NotFoundError, PermanentError, TemporaryError, Throttled
from shared.domain.ids import ResourceId
from shared.domain.observed import KubeObjectState
from shared.domain.settings import Settings
from shared.domain.workloads import DeploymentState, FieldOwner, fields_v1_paths

APPLY = "application/apply-patch+yaml"
LIST_PAGE_SIZE = 500
"""Items a list request asks for (`limit`): kubectl's default chunk size, the docs' example."""

_Snapshot = TypeVar("_Snapshot", KubeObjectState, DeploymentState)


class KubeUnreachable(TemporaryError):
    """No connection to the API server at all (DNS, TCP, TLS): for a private cluster, Keyless is
    outside its network; the engine may go through the run-command API instead."""


JSON_PATCH = "application/json-patch+json"


class _CountedRetry(Retry):
    """urllib3's Retry, counting each retry it grants as one more request of the current run
    (the call's first attempt is counted when the call starts). urllib3 derives each next Retry
    with `type(self)(...)`, so the counting carries through."""

    def increment(self, method: str | None = None, url: str | None = None, *args: Any, **kwargs: Any) -> Self:
        granted = super().increment(method, url, *args, **kwargs)  # raises when the retries are spent
        record("kube", method or "", url or "", retry=True)
        return granted


def kube_retries() -> Retry:
    """The Kubernetes client's `Configuration.retries`: retry_policy.KUBERNETES, counted."""
    return _CountedRetry(**retry_policy.KUBERNETES.retry.kwargs())


def _translate(exc: Exception, what: str) -> Exception:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    if isinstance(exc, ApiException):
        status = exc.status or 0
        if status == 409:
            return TemporaryError(f"{what}: conflict on the Kubernetes API", retry_policy.KUBE_CONFLICT_SECONDS)
        if status == 422 and _is_failed_test(exc):
            return TemporaryError(f"{what}: the object changed while we patched it", retry_policy.KUBE_CONFLICT_SECONDS)
        if status == 429:
            return Throttled(f"{what}: Kubernetes API answered 429", retry_policy.KUBE_SERVER_ERROR_SECONDS)
        if status >= 500:
            return TemporaryError(f"{what}: Kubernetes API answered {status}", retry_policy.KUBE_SERVER_ERROR_SECONDS)
        if status in (401, 403):
            return PermanentError(
                f"{what}: Keyless is not allowed on the cluster ({status}); grant it the Kubernetes role in infra/"
            )
        return PermanentError(f"{what}: Kubernetes API refused the request ({status} {exc.reason or ''})".strip())
    if is_credential_failure(exc):  # the AKS token from the app's credential (refresh_api_key_hook)
        return no_credential(exc, what)
    if isinstance(exc, HTTPError):
        return KubeUnreachable(
            f"{what}: Kubernetes API unreachable ({type(exc).__name__})", retry_policy.KUBE_UNREACHABLE_SECONDS
        )
    return exc


def _is_failed_test(exc: Any) -> bool:
    """A JSON patch `test` op that failed (the object changed under us), told by the Status body."""
    import json

    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        return False
    return body.get("reason") == "Invalid" and "testing value" in str(body.get("message", ""))


def _plain(api_client: Any, obj: Any) -> dict[str, Any]:
    """A model as the API server's JSON (camelCase), so the planners read plain dicts."""
    return api_client.sanitize_for_serialization(obj)  # type: ignore[no-any-return]


def _deployment_state(raw: dict[str, Any]) -> DeploymentState:
    meta = dict(raw.get("metadata") or {})
    entries = meta.pop("managedFields", None) or []
    owners = tuple(
        FieldOwner(e.get("manager", ""), e.get("operation", ""), fields_v1_paths(e.get("fieldsV1") or {}))
        for e in entries
        if not e.get("subresource")
    )
    return DeploymentState({**raw, "metadata": meta}, owners)


def _key_owners(entries: list[dict[str, Any]], *under: str) -> dict[str, frozenset[str]]:
    """Key of the map at `under` (e.g. metadata.annotations) -> the managers whose fieldsV1 hold it."""
    prefix = tuple(f"f:{part}" for part in under)
    owners: dict[str, set[str]] = {}
    for entry in entries:
        if entry.get("subresource") or not entry.get("manager"):
            continue
        for path in fields_v1_paths(entry.get("fieldsV1") or {}):
            if len(path) > len(prefix) and path[: len(prefix)] == prefix and path[len(prefix)].startswith("f:"):
                owners.setdefault(path[len(prefix)][2:], set()).add(entry["manager"])
    return {key: frozenset(names) for key, names in owners.items()}


def _state_from_dict(obj: dict[str, Any]) -> KubeObjectState:
    """A ServiceAccount or ConfigMap from the API server's JSON (the client's models made plain, or
    kubectl output through the run-command API): one reading of managedFields for both ways."""
    meta = obj.get("metadata") or {}
    entries = [e for e in meta.get("managedFields") or [] if isinstance(e, dict)]
    return KubeObjectState(
        name=meta.get("name", ""),
        namespace=meta.get("namespace") or "",
        annotations=dict(meta.get("annotations") or {}),
        data=dict(obj.get("data") or {}),
        managers=frozenset(e["manager"] for e in entries if e.get("manager")),
        resource_version=meta.get("resourceVersion") or "",
        labels=dict(meta.get("labels") or {}),
        annotation_owners=_key_owners(entries, "metadata", "annotations"),
        label_owners=_key_owners(entries, "metadata", "labels"),
        data_owners=_key_owners(entries, "data"),
    )


def _state(api: Any, obj: Any) -> KubeObjectState:
    return _state_from_dict(_plain(api.api_client, obj))


def _force(force: bool) -> dict[str, Any]:
    """`force` only when Keyless means to take fields over; without it, a field another manager set
    since we looked makes the apply a 409 (TemporaryError), and the next run decides again."""
    return {"force": True} if force else {}


class KubeAdapter:
    """One connection per cluster, cached for `kube_credentials_ttl_seconds`."""

    def __init__(self, credential: Any, settings: Settings, clusters: ClusterAdapter) -> None:
        self._credential = credential
        self._settings = settings
        self._clusters = clusters
        self._connections: dict[str, tuple[Any, float]] = {}
        self._lock = threading.Lock()
        self._building: dict[str, threading.Lock] = {}  # one connection being built per cluster

    # --- connection -------------------------------------------------------------------------

    def _api(self, cluster_id: ResourceId) -> Any:
        """The cluster's connection; concurrent misses build it once (one credentials POST), the
        others wait for it."""
        cached = self._cached(cluster_id)
        if cached is not None:
            return cached
        with self._lock:
            building = self._building.setdefault(cluster_id.key, threading.Lock())
        with building:
            return self._cached(cluster_id) or self._connect(cluster_id)

    def _cached(self, cluster_id: ResourceId) -> Any:
        with self._lock:
            cached = self._connections.get(cluster_id.key)
        return cached[0] if cached and cached[1] > time.monotonic() else None

    def _connect(self, cluster_id: ResourceId) -> Any:
        now = time.monotonic()
        access = self._clusters.kube_access(cluster_id, use_admin=self._settings.allow_local_accounts)
        from kubernetes import client

        cfg: Any = client.Configuration()
        cfg.host = access.server
        cfg.ca_cert_data = access.ca_data.decode() if isinstance(access.ca_data, bytes) else access.ca_data
        cfg.api_key_prefix["authorization"] = "Bearer"
        if access.token:
            cfg.api_key["authorization"] = access.token
        else:
            scope = self._settings.aks_server_scope
            credential = self._credential

            def refresh(c: Any) -> None:
                c.api_key["authorization"] = credential.get_token(scope).token

            cfg.api_key["authorization"] = ""
            cfg.refresh_api_key_hook = refresh  # type: ignore[assignment]

        cfg.retries = kube_retries()
        timeouts = retry_policy.KUBERNETES.timeouts(self._settings.request_timeout_seconds)

        class _CountingApiClient(client.ApiClient):  # type: ignore[misc]
            def call_api(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
                record("kube", method, url)
                if kwargs.get("_request_timeout") is None:  # the client's default is to wait forever
                    kwargs["_request_timeout"] = timeouts
                return super().call_api(method, url, *args, **kwargs)

        api = client.CoreV1Api(_CountingApiClient(cfg))
        api.apps = client.AppsV1Api(api.api_client)  # type: ignore[attr-defined]  # one connection, both groups
        with self._lock:
            self._connections[cluster_id.key] = (api, now + self._settings.kube_credentials_ttl_seconds)
        return api

    def forget(self, cluster_id: ResourceId) -> None:
        """Drop the cached connection (e.g. after the cluster was recreated)."""
        with self._lock:
            self._connections.pop(cluster_id.key, None)

    def _call(self, cluster_id: ResourceId, what: str, fn: Any) -> Any:
        """One Kubernetes operation (a span around it: its requests are beneath), translated."""
        with telemetry.span(f"kubernetes {what}", {"keyless.cluster.id": str(cluster_id)}, kind="client"):
            return self._call_translated(cluster_id, what, fn)

    def _call_translated(self, cluster_id: ResourceId, what: str, fn: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(self._api(cluster_id))
        except ApiException as exc:
            answered("kube", exc.status)  # a 429 is never retried inside the call (retry_policy.KUBERNETES)
            if exc.status == 401:
                self.forget(cluster_id)
            raise _translate(exc, what) from exc
        except Exception as exc:  # noqa: BLE001 - only urllib3 errors are translated, the rest re-raised
            translated = _translate(exc, what)
            if translated is exc:
                raise
            raise translated from exc

    def _get_or_none(self, cluster_id: ResourceId, what: str, fn: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        def call(api: Any) -> Any:
            try:
                return fn(api)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise

        return self._call(cluster_id, what, call)

    # --- namespace --------------------------------------------------------------------------

    def namespace_exists(self, cluster_id: ResourceId, namespace: str) -> bool:
        return (
            self._get_or_none(cluster_id, "reading the namespace", lambda api: api.read_namespace(namespace))
            is not None
        )

    def create_namespace(self, cluster_id: ResourceId, namespace: str) -> None:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        self._call(
            cluster_id,
            "creating the namespace",
            lambda api: api.patch_namespace(
                namespace, body, field_manager=self._settings.field_manager, force=True, _content_type=APPLY
            ),
        )

    # --- service account --------------------------------------------------------------------

    def get_service_account(self, cluster_id: ResourceId, namespace: str, name: str) -> KubeObjectState | None:
        return self._get_or_none(  # type: ignore[no-any-return]
            cluster_id,
            "reading the service account",
            lambda api: _state(api, api.read_namespaced_service_account(name, namespace)),
        )

    def apply_service_account(
        self,
        cluster_id: ResourceId,
        namespace: str,
        name: str,
        annotations: dict[str, str],
        force: bool = False,
        labels: dict[str, str] | None = None,
    ) -> KubeObjectState:
        """Server-side apply of exactly our annotations (an empty dict releases them)."""
        body = manifests.service_account(namespace, name, annotations, labels)
        return self._call(  # type: ignore[no-any-return]
            cluster_id,
            "applying the service account",
            lambda api: _state(
                api,
                api.patch_namespaced_service_account(
                    name,
                    namespace,
                    body,
                    field_manager=self._settings.field_manager,
                    _content_type=APPLY,
                    **_force(force),
                ),
            ),
        )

    def delete_service_account(self, cluster_id: ResourceId, namespace: str, name: str) -> bool:
        gone = self._get_or_none(
            cluster_id,
            "deleting the service account",
            lambda api: api.delete_namespaced_service_account(name, namespace),
        )
        return gone is not None

    # --- config map -------------------------------------------------------------------------

    def get_configmap(self, cluster_id: ResourceId, namespace: str, name: str) -> KubeObjectState | None:
        return self._get_or_none(  # type: ignore[no-any-return]
            cluster_id,
            "reading the config map",
            lambda api: _state(api, api.read_namespaced_config_map(name, namespace)),
        )

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
        """Server-side apply of exactly our keys, labels and annotations (all empty: releases them)."""
        body = manifests.config_map(namespace, name, data, labels, annotations)
        return self._call(  # type: ignore[no-any-return]
            cluster_id,
            "applying the config map",
            lambda api: _state(
                api,
                api.patch_namespaced_config_map(
                    name,
                    namespace,
                    body,
                    field_manager=self._settings.field_manager,
                    _content_type=APPLY,
                    **_force(force),
                ),
            ),
        )

    def delete_configmap(self, cluster_id: ResourceId, namespace: str, name: str) -> bool:
        gone = self._get_or_none(
            cluster_id, "deleting the config map", lambda api: api.delete_namespaced_config_map(name, namespace)
        )
        return gone is not None

    # --- deployments ------------------------------------------------------------------------

    def list_deployments(
        self, cluster_id: ResourceId, namespace: str, label_selector: str = "", forbidden_is_empty: bool = False
    ) -> list[DeploymentState]:
        """Deployments matching the selector. `forbidden_is_empty`: a 403 means none (Keyless cannot have
        patched Deployments it may not even list), for bindings that name no workloads."""
        from kubernetes.client.exceptions import ApiException

        def call(api: Any) -> list[DeploymentState]:
            try:
                found = api.apps.list_namespaced_deployment(namespace, label_selector=label_selector or None)
            except ApiException as exc:
                if exc.status == 403 and forbidden_is_empty:
                    return []
                raise
            return [_deployment_state(_plain(api.api_client, d)) for d in found.items]

        return self._call(cluster_id, "listing deployments", call)  # type: ignore[no-any-return]

    def get_deployment(self, cluster_id: ResourceId, namespace: str, name: str) -> DeploymentState | None:
        def call(api: Any) -> DeploymentState:
            return _deployment_state(_plain(api.api_client, api.apps.read_namespaced_deployment(name, namespace)))

        return self._get_or_none(cluster_id, "reading the deployment", call)  # type: ignore[no-any-return]

    def apply_deployment(self, cluster_id: ResourceId, namespace: str, config: dict[str, Any]) -> DeploymentState:
        """Server-side apply of exactly our fields on an existing Deployment (force: they are ours)."""
        name = config["metadata"]["name"]

        def call(api: Any) -> DeploymentState:
            obj = api.apps.patch_namespaced_deployment(
                name, namespace, config, field_manager=self._settings.field_manager, force=True, _content_type=APPLY
            )
            return _deployment_state(_plain(api.api_client, obj))

        return self._call(cluster_id, "applying the deployment", call)  # type: ignore[no-any-return]

    def json_patch_deployment(
        self, cluster_id: ResourceId, namespace: str, name: str, operations: list[dict[str, Any]]
    ) -> DeploymentState:
        """RFC 6902 patch (removals guarded by `test` ops); a failed test is a TemporaryError."""

        def call(api: Any) -> DeploymentState:
            obj = api.apps.patch_namespaced_deployment(
                name, namespace, operations, field_manager=self._settings.field_manager, _content_type=JSON_PATCH
            )
            return _deployment_state(_plain(api.api_client, obj))

        return self._call(cluster_id, "patching the deployment", call)  # type: ignore[no-any-return]

    # --- label-selected lists across all namespaces (paged) -----------------------------------

    def list_labelled_service_accounts(
        self, cluster_id: ResourceId, label_selector: str, page_size: int = LIST_PAGE_SIZE
    ) -> list[KubeObjectState]:
        """Every ServiceAccount of the cluster matching `label_selector`, as `get_service_account` returns one."""
        return self._list_all(
            cluster_id,
            "listing service accounts",
            lambda api, **page: api.list_service_account_for_all_namespaces(**page),
            _state_from_dict,
            label_selector,
            page_size,
        )

    def list_labelled_configmaps(
        self, cluster_id: ResourceId, label_selector: str, page_size: int = LIST_PAGE_SIZE
    ) -> list[KubeObjectState]:
        """Every ConfigMap of the cluster matching `label_selector`, as `get_configmap` returns one."""
        return self._list_all(
            cluster_id,
            "listing config maps",
            lambda api, **page: api.list_config_map_for_all_namespaces(**page),
            _state_from_dict,
            label_selector,
            page_size,
        )

    def list_labelled_deployments(
        self, cluster_id: ResourceId, label_selector: str, page_size: int = LIST_PAGE_SIZE
    ) -> list[DeploymentState]:
        """Every Deployment of the cluster matching `label_selector`, as `list_deployments` returns them."""
        return self._list_all(
            cluster_id,
            "listing deployments",
            lambda api, **page: api.apps.list_deployment_for_all_namespaces(**page),
            _deployment_state,
            label_selector,
            page_size,
        )

    def _list_all(
        self,
        cluster_id: ResourceId,
        what: str,
        list_page: Callable[..., Any],
        snapshot: Callable[[dict[str, Any]], _Snapshot],
        label_selector: str,
        page_size: int,
    ) -> list[_Snapshot]:
        """One list across all namespaces, `page_size` items a request (`limit`, then `continue` until the
        server sends none), each page counted as one request. The pages are one consistent snapshot (the
        first page's resourceVersion), in the API server's key order (`<namespace>/<name>`). A continue token
        that expired (410 Gone: the list took longer than the server keeps snapshots, ~5 minutes) restarts
        the list once from the beginning; a second 410 is a TemporaryError. A malformed selector is the
        API server's 400, a PermanentError."""
        from kubernetes.client.exceptions import ApiException

        if page_size < 1:
            raise ValueError("page_size must be at least 1")

        def call(api: Any) -> list[_Snapshot]:
            for attempt in range(2):
                found: list[_Snapshot] = []
                token: str | None = None
                try:
                    while True:
                        page = list_page(api, label_selector=label_selector or None, limit=page_size, _continue=token)
                        found += [snapshot(_plain(api.api_client, item)) for item in page.items or []]
                        token = page.metadata.var_continue if page.metadata else None
                        if not token:
                            return found
                except ApiException as exc:
                    if exc.status != 410:
                        raise
                    if attempt:
                        raise TemporaryError(
                            f"{what}: the list expired twice while paging (410 Gone)",
                            retry_policy.KUBE_CONFLICT_SECONDS,
                        ) from exc
            raise AssertionError("unreachable")

        return self._call(cluster_id, what, call)  # type: ignore[no-any-return]

    # --- service account tokens -----------------------------------------------------------

    def request_token(self, cluster_id: ResourceId, namespace: str, name: str, audience: str, seconds: int) -> str:
        """A short-lived token of the service account (the TokenRequest API), as the kubelet would
        project it into a pod. Returned to the caller only; never logged or kept."""
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": [audience], "expirationSeconds": seconds},
        }

        from kubernetes.client.exceptions import ApiException

        def call(api: Any) -> str:
            try:
                return str(api.create_namespaced_service_account_token(name, namespace, body).status.token)
            except ApiException as exc:
                if exc.status == 404:
                    raise NotFoundError(f"service account {namespace}/{name} not found") from None
                raise

        return self._call(cluster_id, "requesting a service account token", call)  # type: ignore[no-any-return]

    # --- pods -------------------------------------------------------------------------------

    def list_pods(self, cluster_id: ResourceId, namespace: str) -> list[dict[str, Any]]:
        """The namespace's pods as the API server returns them (what the webhook injected is in there)."""

        def call(api: Any) -> list[dict[str, Any]]:
            return [_plain(api.api_client, p) for p in api.list_namespaced_pod(namespace).items]

        return self._call(cluster_id, "listing pods", call)  # type: ignore[no-any-return]
