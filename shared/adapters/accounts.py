"""Azure OpenAI (Cognitive Services) accounts: kind, endpoint, custom subdomain, deployments."""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from shared.adapters.arm import ArmClients, raise_translated
from shared.errors import PermanentError
from shared.ids import ResourceId
from shared.observed import AccountState


class AccountAdapter:
    def __init__(self, clients: ArmClients) -> None:
        self._clients = clients

    def _client(self, account_id: ResourceId) -> Any:
        return self._clients.cognitiveservices(account_id.subscription_id)

    def list_in_group(self, subscription_id: str, resource_group: str) -> list[AccountState]:
        """Accounts in a resource group (kind and endpoint only; deployments not read)."""
        client = self._clients.cognitiveservices(subscription_id)
        try:
            return [_account_state(a, ()) for a in client.accounts.list_by_resource_group(resource_group)]
        except ResourceNotFoundError:
            return []
        except HttpResponseError as exc:
            raise_translated(exc, "listing OpenAI accounts")

    def get(self, account_id: ResourceId) -> AccountState:
        """The account and its model deployment names; PermanentError if it does not exist."""
        client = self._client(account_id)
        try:
            account = client.accounts.get(account_id.resource_group, account_id.name)
            deployments = tuple(
                d.name for d in client.deployments.list(account_id.resource_group, account_id.name) if d.name
            )
        except ResourceNotFoundError as exc:
            raise PermanentError(f"OpenAI account {account_id} not found") from exc
        except HttpResponseError as exc:
            raise_translated(exc, "reading the OpenAI account")
        return _account_state(account, deployments, account_id)


def _account_state(account: Any, deployments: tuple[str, ...], account_id: ResourceId | None = None) -> AccountState:
    props = account.properties
    return AccountState(
        id=account.id or str(account_id),
        name=account.name or (account_id.name if account_id else ""),
        kind=account.kind or "",
        endpoint=getattr(props, "endpoint", None),
        custom_subdomain=getattr(props, "custom_sub_domain_name", None),
        provisioning_state=str(getattr(props, "provisioning_state", None) or "Succeeded"),
        disable_local_auth=bool(getattr(props, "disable_local_auth", False)),
        deployments=deployments,
        tags=dict(account.tags or {}),
    )
