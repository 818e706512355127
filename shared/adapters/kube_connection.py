"""Connections to the clusters' API servers, and what a call through one answers.

Connects as Azure does for Entra-enabled AKS: server and CA from listClusterUserCredential,
a bearer token for the AKS server application from the same Azure credential. One connection per
cluster, cached for `kube_credentials_ttl_seconds`.

Retries and timeouts are shared.domain.retry_policy.KUBERNETES, set on the client's Configuration
(left unset, urllib3 would retry three times inside each call, silently); every attempt is counted.
The client's errors become Keyless's (shared.domain.errors): a conflict or a 5xx is temporary, a
refusal permanent, no connection at all KubeUnreachable.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Self

from urllib3.util.retry import Retry

from shared.adapters import telemetry
from shared.adapters.clusters import ClusterAdapter
from shared.adapters.counting import answered, record
from shared.adapters.credentials import is_credential_failure, no_credential
from shared.domain import retry_policy
from shared.domain.errors import NotAllowed, PermanentError, TemporaryError, Throttled
from shared.domain.ids import ResourceId
from shared.domain.settings import Settings


class KubeUnreachable(TemporaryError):
    """No connection to the API server at all (DNS, TCP, TLS): for a private cluster, Keyless is
    outside its network; the engine may go through the run-command API instead."""


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
            return NotAllowed(
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


class KubeConnections:
    """One connection per cluster, cached for `kube_credentials_ttl_seconds`; calls through them,
    translated."""

    def __init__(self, credential: Any, settings: Settings, clusters: ClusterAdapter) -> None:
        self._credential = credential
        self._settings = settings
        self._clusters = clusters
        self._connections: dict[str, tuple[Any, float]] = {}
        self._lock = threading.Lock()
        self._building: dict[str, threading.Lock] = {}  # one connection being built per cluster

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

    def _uses_admin(self, cluster_id: ResourceId) -> bool:
        """The local admin account only where allowed and the cluster has no Entra integration: an Entra
        cluster takes Entra tokens (its admin credential may be disabled, and is not granted to Keyless)."""
        if not self._settings.allow_local_accounts:
            return False
        return not self._clusters.get(cluster_id).aad_enabled

    def _connect(self, cluster_id: ResourceId) -> Any:
        now = time.monotonic()
        access = self._clusters.kube_access(cluster_id, use_admin=self._uses_admin(cluster_id))
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

    def call(self, cluster_id: ResourceId, what: str, fn: Any) -> Any:
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

    def get_or_none(self, cluster_id: ResourceId, what: str, fn: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        def call(api: Any) -> Any:
            try:
                return fn(api)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise

        return self.call(cluster_id, what, call)
