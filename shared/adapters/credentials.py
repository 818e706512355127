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
"""

from __future__ import annotations

from typing import Any

from shared.domain.settings import Settings


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
