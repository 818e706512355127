"""Azure Table clients as every table adapter of ours makes them: retries and timeouts from
shared.domain.retry_policy.TABLES (a few quick tries: a worker or an HTTP caller should not hang on a
storage outage), every attempt counted; from a connection string (Azurite) or an account + Entra
credential (Azure)."""

from __future__ import annotations

from typing import Any

from shared.adapters.counting import attempt_hook
from shared.domain import retry_policy


def client_options() -> dict[str, Any]:
    connect, read = retry_policy.TABLES.timeouts()
    return {
        **retry_policy.TABLES.retry.kwargs(),
        "connection_timeout": connect,
        "read_timeout": read,
        "raw_request_hook": attempt_hook("table"),
    }


def table_client(
    table_name: str, connection_string: str | None = None, account_name: str | None = None, credential: Any = None
) -> Any:
    from azure.data.tables import TableClient

    if connection_string:
        return TableClient.from_connection_string(connection_string, table_name, **client_options())
    url = f"https://{account_name}.table.core.windows.net"
    return TableClient(url, table_name, credential=credential, **client_options())
