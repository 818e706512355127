"""Azure Table clients as every table adapter of ours makes them: retries and timeouts from
shared.domain.retry_policy.TABLES (a few quick tries: a worker or an HTTP caller should not hang on a
storage outage), every attempt counted; from a connection string (Azurite) or a table service URI +
Entra credential (Azure)."""

from __future__ import annotations

from typing import Any

from shared.adapters.counting import counting_hooks
from shared.domain import retry_policy


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
