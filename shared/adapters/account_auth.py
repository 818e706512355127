"""Local (key) authentication of an Azure OpenAI account: turned off, never back on.

`disableLocalAuth=true` is what the Azure Policy "Configure Cognitive Services accounts to
disable local authentication methods" sets by force. Keyless sets it only when every binding
that uses the account is verified, and has no operation that sets it back to false.
"""

from __future__ import annotations

from azure.core.exceptions import ResourceNotFoundError

from shared.adapters.arm import ARM_ERRORS, ArmClients, raise_translated
from shared.domain.errors import NotFoundError
from shared.domain.ids import ResourceId


class AccountAuthAdapter:
    def __init__(self, clients: ArmClients) -> None:
        self._clients = clients

    def disable_local_auth(self, account_id: ResourceId) -> None:
        """PATCH properties.disableLocalAuth=true (a long-running update; keys stop working within
        minutes, so we do not wait for it: the next read shows it)."""
        ops = self._clients.cognitiveservices(account_id.subscription_id).accounts
        try:
            poller = ops.begin_update(
                account_id.resource_group,
                account_id.name,
                {"properties": {"disableLocalAuth": True}},
                polling=False,
            )
            poller.result()
        except ResourceNotFoundError as exc:
            raise NotFoundError(f"OpenAI account {account_id} not found") from exc
        except ARM_ERRORS as exc:
            raise_translated(exc, "disabling local authentication on the OpenAI account")
