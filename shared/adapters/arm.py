"""ARM clients (one per subscription and service, cached) and ARM error translation.

The endpoint, token scope and CA bundle come from settings: sovereign clouds in production,
the local emulator in tests. Retries on 429/5xx and dropped connections belong to azure-core's
retry policy, configured by shared.domain.retry_policy.ARM (it honours Retry-After); once it gives
up, the error becomes a TemporaryError for the queue. Every attempt, retries included, is counted
(shared.adapters.counting). Before each attempt, `shared.adapters.pacing` waits for the request's
slot under Azure's published limits (KEYLESS_ARM_PACING_SCALE; 0 turns it off), a budget shared by
every process of the app through a table when KEYLESS_SHARED_PACING is on (shared.adapters.shared_pacing).
"""

from __future__ import annotations

import threading
from typing import Any, NoReturn

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.core.pipeline.policies import SansIOHTTPPolicy

from shared.adapters.counting import pipeline_attempt, pipeline_response
from shared.adapters.credentials import is_credential_failure, no_credential
from shared.adapters.pacing import Pacer, PacingPolicy
from shared.adapters.shared_pacing import pacer_from_settings
from shared.domain import retry_policy
from shared.domain.errors import KeylessError, PermanentError, TemporaryError, Throttled
from shared.domain.settings import Settings


class _CountingPolicy(SansIOHTTPPolicy):  # type: ignore[type-arg]
    """Counts every HTTP attempt (retries included) against the current reconcile: a per-retry
    policy, so azure-core runs it once per attempt."""

    def on_request(self, request: Any) -> None:
        pipeline_attempt("arm", request)

    def on_response(self, request: Any, response: Any) -> None:
        pipeline_response("arm", response)  # a 429 is measured (keyless.requests.throttled)


def error_code(exc: Exception) -> str:
    """The ARM error code (`error.code`), or '' when the body had none."""
    err = getattr(exc, "error", None)
    code = getattr(err, "code", None)
    if code:
        return str(code)
    response: Any = getattr(exc, "response", None)
    try:
        body = response.json() if response is not None else None
    except Exception:  # noqa: BLE001 - a non-JSON error body simply has no code
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("code") or "")
    return ""


def status_of(exc: Exception) -> int | None:
    """The HTTP status ARM answered with; None when there was no answer (network, timeout)."""
    return getattr(exc, "status_code", None)


def retry_after(exc: Exception, default: float) -> float:
    """The answer's Retry-After in seconds (at least RETRY_AFTER_MIN_SECONDS), or `default` when it
    named none."""
    response: Any = getattr(exc, "response", None)
    headers = response.headers if response is not None else {}
    try:
        return max(float(headers.get("Retry-After", default)), retry_policy.RETRY_AFTER_MIN_SECONDS)
    except (TypeError, ValueError):
        return default


def translate(exc: Exception, what: str) -> KeylessError:
    """Map an SDK exception to Temporary/Permanent by status and error code, never message text. The
    credential giving no token (no answer from ARM at all) is NoCredential, whose reason names the fix."""
    if is_credential_failure(exc):
        return no_credential(exc, what)
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return TemporaryError(
            f"{what}: could not reach ARM ({type(exc).__name__})", retry_policy.ARM_UNREACHABLE_SECONDS
        )
    if not isinstance(exc, HttpResponseError):
        return PermanentError(f"{what}: unexpected {type(exc).__name__}")
    status = exc.status_code or 0
    code = error_code(exc)
    if status == 429:
        delay = retry_after(exc, retry_policy.ARM_THROTTLED_SECONDS)
        return Throttled(f"{what}: throttled by ARM ({code or 'TooManyRequests'})", delay)
    if status >= 500 or status == 408:
        return TemporaryError(
            f"{what}: ARM answered {status} {code}".rstrip(), retry_after(exc, retry_policy.ARM_SERVER_ERROR_SECONDS)
        )
    if status in (401, 403):
        return PermanentError(
            f"{what}: Keyless's identity is not allowed ({status} {code}); grant it the role in infra/"
        )
    if status == 409:
        reason = f"{what}: conflict ({code or 'Conflict'}); another operation is in progress"
        return TemporaryError(reason, retry_policy.ARM_CONFLICT_SECONDS)
    return PermanentError(f"{what}: ARM refused the request ({status} {code or 'no code'})")


ARM_ERRORS = (HttpResponseError, ServiceRequestError, ServiceResponseError)
"""What an ARM call raises once azure-core's own retries are spent: an answer, or none (network, timeout)."""


def raise_translated(exc: Exception, what: str) -> NoReturn:
    raise translate(exc, what) from exc


class ArmClients:
    """Builds the azure-mgmt clients once per subscription, all sharing one configuration."""

    def __init__(self, credential: Any, settings: Settings, pacer: Pacer | None = None) -> None:
        """`pacer` defaults to Azure's limits times `settings.arm_pacing_scale` (none when 0), shared
        across processes with `settings.shared_pacing`."""
        self._credential = credential
        self._settings = settings
        self.pacer = pacer if pacer is not None else pacer_from_settings(settings, credential)
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    @property
    def settings(self) -> Settings:
        return self._settings

    def _kwargs(self) -> dict[str, Any]:
        policies: list[Any] = [_CountingPolicy()]
        if self.pacer is not None:
            policies.append(PacingPolicy(self.pacer))
        connect, read = retry_policy.ARM.timeouts(self._settings.request_timeout_seconds)
        kwargs: dict[str, Any] = {
            "base_url": self._settings.arm_endpoint,
            "credential_scopes": [self._settings.arm_scope],
            "per_retry_policies": policies,
            "connection_timeout": connect,
            "read_timeout": read,
            **retry_policy.ARM.retry.kwargs(),
        }
        if self._settings.ca_bundle:
            kwargs["connection_verify"] = self._settings.ca_bundle
        return kwargs

    def _get(self, kind: str, subscription_id: str) -> Any:
        key = (kind, subscription_id.lower())
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._build(kind, subscription_id)
                self._clients[key] = client
            return client

    def _build(self, kind: str, subscription_id: str) -> Any:
        if kind == "msi":
            from azure.mgmt.msi import ManagedServiceIdentityClient

            return ManagedServiceIdentityClient(self._credential, subscription_id, **self._kwargs())
        if kind == "authorization":
            from azure.mgmt.authorization import AuthorizationManagementClient

            return AuthorizationManagementClient(self._credential, subscription_id, **self._kwargs())
        if kind == "containerservice":
            from azure.mgmt.containerservice import ContainerServiceClient

            return ContainerServiceClient(self._credential, subscription_id, **self._kwargs())
        if kind == "cognitiveservices":
            from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient

            return CognitiveServicesManagementClient(self._credential, subscription_id, **self._kwargs())
        raise ValueError(kind)

    def msi(self, subscription_id: str) -> Any:
        return self._get("msi", subscription_id)

    def authorization(self, subscription_id: str) -> Any:
        return self._get("authorization", subscription_id)

    def containerservice(self, subscription_id: str) -> Any:
        return self._get("containerservice", subscription_id)

    def cognitiveservices(self, subscription_id: str) -> Any:
        return self._get("cognitiveservices", subscription_id)

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
