"""Azure Table clients as every table adapter of ours makes them: retries and timeouts from
shared.domain.retry_policy.TABLES (a few quick tries: a worker or an HTTP caller should not hang on a
storage outage), every attempt counted; from a connection string (Azurite) or a table service URI +
Entra credential (Azure)."""

from __future__ import annotations

from typing import Any

from shared.adapters.counting import counting_hooks
from shared.adapters.credentials import is_credential_failure, no_credential
from shared.domain import retry_policy
from shared.domain.errors import KeylessError, PermanentError, TemporaryError

STORAGE = "AzureWebJobsStorage"


def client_options() -> dict[str, Any]:
    connect, read = retry_policy.TABLES.timeouts()
    return {
        **retry_policy.TABLES.retry.kwargs(),
        "connection_timeout": connect,
        "read_timeout": read,
        **counting_hooks("table"),
    }


def table_client(
    table_name: str,
    connection_string: str | None = None,
    endpoint: str | None = None,
    credential: Any = None,
    connection_verify: str | None = None,
) -> Any:
    """From a connection string (Azurite), or a table service URI + Entra credential (Azure:
    shared.domain.storage.StorageConnection.endpoint("table")). `connection_verify`: a CA bundle to trust
    (KEYLESS_CA_BUNDLE: tests' HTTPS Azurite), else the system's."""
    from azure.data.tables import TableClient

    options = client_options()
    if connection_verify:
        options["connection_verify"] = connection_verify
    if connection_string:
        return TableClient.from_connection_string(connection_string, table_name, **options)
    if not endpoint:
        raise ValueError("a table client needs a connection string or a table service URI")
    return TableClient(endpoint, table_name, credential=credential, **options)


def storage_error(exc: Exception, what: str) -> KeylessError:
    """A storage SDK failure as a KeylessError whose reason starts with the setting (AzureWebJobsStorage)
    and names the fix; never the connection string, the account key or a URL."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

    if is_credential_failure(exc):
        return no_credential(exc, f"{STORAGE}: {what}", f"{STORAGE}__clientId")
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return TemporaryError(
            f"{STORAGE}: {what}: the storage account did not answer ({type(exc).__name__}); locally, is Azurite "
            f"running (npx azurite)? In Azure, check the account's name and network rules",
            retry_policy.ARM_UNREACHABLE_SECONDS,
        )
    if isinstance(exc, HttpResponseError):
        status = exc.status_code or 0
        code = str(getattr(exc, "error_code", "") or "")
        if status in (401, 403):
            return PermanentError(
                f"{STORAGE}: {what}: the storage account refused Keyless ({status} {code}); check the account key, "
                f"or grant Keyless's identity Storage Table Data Contributor and Storage Queue Data Contributor"
            )
        return TemporaryError(f"{STORAGE}: {what}: the storage account answered {status} {code}".rstrip())
    return PermanentError(f"{STORAGE}: {what}: {type(exc).__name__}")


_STORAGE_SDKS = {"azure.data.tables": "Table storage", "azure.storage.queue": "the work queue"}


def storage_failure(exc: BaseException) -> KeylessError | None:
    """`exc` as storage_error when a storage SDK raised it, else None. The ledger, the sweep log, the leases and
    the queue pass SDK errors they do not expect on as they are; a caller at the edge (an HTTP answer) asks
    here so that an outage reads as the setting and its fix. Which SDK raised it is in the traceback: an error
    surfaces through the storage client's own frames, whatever transport raised it."""
    from azure.core.exceptions import AzureError

    if not isinstance(exc, AzureError):
        return None
    tb = exc.__traceback__
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        for sdk, what in _STORAGE_SDKS.items():
            if module == sdk or module.startswith(sdk + "."):
                return storage_error(exc, what)
        tb = tb.tb_next
    return None
