"""The Azure credentials: the app's (managed identity in Azure, `az login` or env locally) and storage's.

One app identity, two settings that name it, as the Functions platform has them:

- ARM, Kubernetes (AKS server app), Resource Graph, Event Grid: DefaultAzureCredential. In Azure it
  signs in as the managed identity whose client id is `AZURE_CLIENT_ID` (the azure-identity
  convention); when that is unset and storage uses `AzureWebJobsStorage__credential=managedidentity`
  with a `__clientId`, as that identity (Settings.managed_identity_client_id), so that an app with
  only a user-assigned identity needs it named once.
- Storage (work queue, ledger, sweep log): as the Functions host signs in to AzureWebJobsStorage
  (shared.domain.storage): `__credential=managedidentity` -> ManagedIdentityCredential(`__clientId`,
  or the system-assigned identity without one); a `__clientId` alone -> DefaultAzureCredential for that
  managed identity; neither -> the app's credential above.

`infra/` sets `AZURE_CLIENT_ID` and `AzureWebJobsStorage__clientId` to the same user-assigned identity.

When the app's credential gives no token, azure-core raises azure-identity's ClientAuthenticationError
from inside the pipeline, before any request to ARM, the AKS API server or Resource Graph is sent (no HTTP
answer, so no status). `no_credential` turns it into NoCredential, whose reason names the fix; the list
of what DefaultAzureCredential tried is logged once per process (each failing call would otherwise log it).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from shared.domain import retry_policy
from shared.domain.errors import NoCredential
from shared.domain.settings import Settings

log = logging.getLogger("keyless.credentials")


def fix(identity_setting: str = "AZURE_CLIENT_ID") -> str:
    """What to do, with no value from the environment in it: it goes into records and /api/health."""
    return (
        "Keyless has no Azure credential: run `az login` where Keyless runs locally; in Azure, give the app "
        f"a managed identity and set {identity_setting} to its client id"
    )


_reported = threading.Event()


def is_credential_failure(exc: BaseException) -> bool:
    """The credential gave no token: a ClientAuthenticationError with no HTTP answer behind it (an answer
    of 401 from ARM or the API server is a ClientAuthenticationError too, but carries its response)."""
    from azure.core.exceptions import ClientAuthenticationError

    return isinstance(exc, ClientAuthenticationError) and getattr(exc, "response", None) is None


def attempts(exc: BaseException) -> list[str]:
    """What the credential tried, one line each: DefaultAzureCredential lists them ("Credential: why")
    under "Attempted credentials:"; a single credential says why in its first line. Messages name
    settings and errors, never tokens; each line is cut short all the same."""
    text = str(getattr(exc, "message", None) or exc)
    if "Attempted credentials:" not in text:
        return [f"{type(exc).__name__}: {text.strip().splitlines()[0][:200]}"] if text.strip() else []
    lines = text.split("Attempted credentials:", 1)[-1].splitlines()
    return [line.strip()[:200] for line in lines if line.startswith("\t") and line.strip()]


def no_credential(exc: BaseException, what: str, identity_setting: str = "AZURE_CLIENT_ID") -> NoCredential:
    """NoCredential for `what`; logs the fix and the attempts at ERROR, once per process."""
    reason = fix(identity_setting)
    if not _reported.is_set():
        _reported.set()
        tried = "; ".join(attempts(exc)) or type(exc).__name__
        log.error("%s. The credential tried: %s", reason, tried)
    return NoCredential(f"{what}: {reason}", retry_policy.NO_CREDENTIAL_SECONDS)


class _Once(logging.Filter):
    """azure-identity logs the chain's whole failure at WARNING on every failing call: keep its first."""

    def __init__(self) -> None:
        super().__init__()
        self._seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or "failed to retrieve a token" not in record.getMessage():
            return True
        seen, self._seen = self._seen, True
        return not seen


_chain_logger = logging.getLogger("azure.identity._credentials.chained")
if not any(isinstance(f, _Once) for f in _chain_logger.filters):
    _chain_logger.addFilter(_Once())


class CredentialCheck:
    """Whether the app's credential gives an ARM token, asked at most once per `ttl` seconds (health
    probes come every few seconds; each answer here costs a token request to Entra when the credential's
    own cache is cold). `problem()` is None when it does, else the fix (no value from the environment)."""

    def __init__(self, credential: Any, scope: str, ttl: float = 60.0) -> None:
        self._credential = credential
        self._scope = scope
        self._ttl = ttl
        self._lock = threading.Lock()
        self._checked: tuple[float, str | None] | None = None

    def problem(self) -> str | None:
        with self._lock:
            if self._checked is not None and time.monotonic() - self._checked[0] < self._ttl:
                return self._checked[1]
            try:
                self._credential.get_token(self._scope)
                found = None
            except Exception as exc:  # noqa: BLE001 - any failure to get a token is the finding
                found = (
                    no_credential(exc, "Azure credential").reason
                    if is_credential_failure(exc)
                    else (f"Azure credential: no token ({type(exc).__name__})")
                )
            self._checked = (time.monotonic(), found)
            return found


def default_credential(settings: Settings) -> Any:
    from azure.identity import DefaultAzureCredential

    kwargs: dict[str, Any] = {}
    if settings.managed_identity_client_id:
        kwargs["managed_identity_client_id"] = settings.managed_identity_client_id
    # Interactive browser sign-in is excluded: a Functions worker has no one to click.
    return DefaultAzureCredential(
        authority=settings.authority_host, exclude_interactive_browser_credential=True, **kwargs
    )


def storage_credential(settings: Settings, app_credential: Any) -> Any:
    """The credential for the identity-based AzureWebJobsStorage connection (None with a connection string)."""
    store = settings.storage
    if not store.identity_based:
        return None
    if store.managed_identity:
        from azure.identity import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=store.client_id) if store.client_id else ManagedIdentityCredential()
    if store.client_id:
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential(
            authority=settings.authority_host,
            exclude_interactive_browser_credential=True,
            managed_identity_client_id=store.client_id,
        )
    return app_credential


def user_token(scope: str, prompt: Any, device_code: bool = True) -> str:
    """An access token for `scope` as the person at the keyboard (the `keyless` command against a deployed
    Keyless): the Azure CLI's sign-in (`az login`), else a device code sign-in, whose instructions go to
    `prompt(message)`. NoCredential naming the fix when neither gives one. The token is returned to be sent,
    never logged."""
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import AzureCliCredential, CredentialUnavailableError, DeviceCodeCredential

    try:
        return str(AzureCliCredential().get_token(scope).token)
    except (CredentialUnavailableError, ClientAuthenticationError) as exc:
        cli_problem = attempts(exc)
        if not device_code:
            raise NoCredential(_sign_in_fix(scope, cli_problem), retry_policy.NO_CREDENTIAL_SECONDS) from None
    try:
        credential = DeviceCodeCredential(prompt_callback=lambda _uri, _code, message: prompt(message))
        return str(credential.get_token(scope).token)
    except ClientAuthenticationError as exc:
        raise NoCredential(_sign_in_fix(scope, attempts(exc)), retry_policy.NO_CREDENTIAL_SECONDS) from None


def _sign_in_fix(scope: str, tried: list[str]) -> str:
    why = f" ({'; '.join(tried)[:300]})" if tried else ""
    return f"no sign-in for {scope}{why}: run `az login` (or allow the device code sign-in)"
