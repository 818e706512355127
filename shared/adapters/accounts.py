"""Azure OpenAI (Cognitive Services) accounts: kind, endpoint, custom subdomain, deployments.

Reads go through a short cache (shared.adapters.readcache): every binding to an account starts
by reading it and its deployments, and a batch should read them once.
"""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from shared.adapters.arm import ARM_ERRORS, ArmClients, raise_translated
from shared.adapters.readcache import ReadCache, version_of
from shared.domain.errors import NotFoundError
from shared.domain.ids import ResourceId
from shared.domain.observed import AccountState


class AccountAdapter:
    def __init__(self, clients: ArmClients) -> None:
        self._clients = clients
        self.cache: ReadCache[AccountState] = ReadCache(clients.settings.arm_read_cache_seconds)

    def _client(self, account_id: ResourceId) -> Any:
        return self._clients.cognitiveservices(account_id.subscription_id)

    def list_in_group(self, subscription_id: str, resource_group: str) -> list[AccountState]:
        """Accounts in a resource group (kind and endpoint only; deployments not read)."""
        client = self._clients.cognitiveservices(subscription_id)
        try:
            return [_account_state(a, ()) for a in client.accounts.list_by_resource_group(resource_group)]
        except ResourceNotFoundError:
            return []
        except ARM_ERRORS as exc:
            raise_translated(exc, "listing OpenAI accounts")

    def get(self, account_id: ResourceId, fresh: bool = False) -> AccountState:
        """The account and its model deployment names (read at most `arm_read_cache_seconds` ago,
        or now if `fresh`); NotFoundError if it does not exist."""
        return self.cache.get(
            account_id.key, lambda: self._read(account_id), fresh, keep=lambda a: a.provisioning_state == "Succeeded"
        )

    def expect(self, account_id: ResourceId, version: str) -> None:
        """Work fanned out after a read of version `version`: don't use an older cached state."""
        self.cache.expect(account_id.key, version)

    @staticmethod
    def version(state: AccountState) -> str:
        return version_of(state)

    def _read(self, account_id: ResourceId) -> AccountState:
        client = self._client(account_id)
        try:
            account = client.accounts.get(account_id.resource_group, account_id.name)
            deployments = tuple(
                d.name for d in client.deployments.list(account_id.resource_group, account_id.name) if d.name
            )
        except ResourceNotFoundError as exc:
            self.cache.forget(account_id.key)
            raise NotFoundError(f"OpenAI account {account_id} not found") from exc
        except ARM_ERRORS as exc:
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
