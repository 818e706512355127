"""User-assigned managed identities and their federated identity credentials."""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from shared.adapters.arm import ARM_ERRORS, ArmClients, error_code, raise_translated, retry_after, status_of
from shared.domain import retry_policy
from shared.domain.errors import PermanentError, TemporaryError
from shared.domain.observed import CredentialState, IdentityState
from shared.domain.planner import AUDIENCE

CONCURRENT_WRITES = "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity"
# A credential written right after its identity can miss the identity (replication).
PARENT_NOT_FOUND = {"parentresourcenotfound", "resourcenotfound"}


def _identity_state(identity: Any) -> IdentityState:
    return IdentityState(
        id=identity.id,
        name=identity.name,
        location=identity.location,
        client_id=identity.client_id,
        principal_id=identity.principal_id,
        tenant_id=identity.tenant_id,
        tags=dict(identity.tags or {}),
    )


class IdentityAdapter:
    def __init__(self, clients: ArmClients) -> None:
        self._clients = clients

    def _ops(self, subscription_id: str) -> Any:
        return self._clients.msi(subscription_id)

    def get(self, subscription_id: str, resource_group: str, name: str) -> IdentityState | None:
        """The identity, or None if absent."""
        try:
            return _identity_state(self._ops(subscription_id).user_assigned_identities.get(resource_group, name))
        except ResourceNotFoundError:
            return None
        except ARM_ERRORS as exc:
            raise_translated(exc, "reading the managed identity")

    def list_in_group(self, subscription_id: str, resource_group: str) -> list[IdentityState]:
        """Every user-assigned identity in the resource group (paged; [] if the group is absent): the
        drift sweep's inventory where Resource Graph is refused."""
        try:
            return [
                _identity_state(i)
                for i in self._ops(subscription_id).user_assigned_identities.list_by_resource_group(resource_group)
            ]
        except ResourceNotFoundError:
            return []
        except ARM_ERRORS as exc:
            raise_translated(exc, "listing managed identities")

    def create_or_update(
        self, subscription_id: str, resource_group: str, name: str, location: str, tags: dict[str, str]
    ) -> IdentityState:
        try:
            identity = self._ops(subscription_id).user_assigned_identities.create_or_update(
                resource_group, name, {"location": location, "tags": tags}
            )
        except ARM_ERRORS as exc:
            if status_of(exc) == 404:
                raise PermanentError(
                    f"identity resource group {resource_group!r} not found ({error_code(exc)})"
                ) from exc
            raise_translated(exc, "creating the managed identity")
        return _identity_state(identity)

    def delete(self, subscription_id: str, resource_group: str, name: str) -> bool:
        """Delete; True if it existed. Azure answers 204 for an absent identity."""
        try:
            response = self._ops(subscription_id).user_assigned_identities.delete(
                resource_group, name, cls=lambda pipeline_response, *_: pipeline_response.http_response.status_code
            )
        except ResourceNotFoundError:
            return False
        except ARM_ERRORS as exc:
            raise_translated(exc, "deleting the managed identity")
        return response != 204

    def list_credentials(self, subscription_id: str, resource_group: str, identity_name: str) -> list[CredentialState]:
        """Every federated credential of the identity ([] if the identity is absent)."""
        try:
            items = self._ops(subscription_id).federated_identity_credentials.list(resource_group, identity_name)
            return [
                CredentialState(name=c.name, issuer=c.issuer, subject=c.subject, audiences=tuple(c.audiences or ()))
                for c in items
            ]
        except ResourceNotFoundError:
            return []
        except ARM_ERRORS as exc:
            raise_translated(exc, "listing federated credentials")

    def put_credential(
        self, subscription_id: str, resource_group: str, identity_name: str, name: str, issuer: str, subject: str
    ) -> CredentialState:
        """Create or update. Raises TemporaryError for Azure's serialisation and replication errors."""
        body = {"properties": {"issuer": issuer, "subject": subject, "audiences": [AUDIENCE]}}
        try:
            cred = self._ops(subscription_id).federated_identity_credentials.create_or_update(
                resource_group, identity_name, name, body
            )
        except ARM_ERRORS as exc:
            code = error_code(exc)
            if code == CONCURRENT_WRITES:
                # ref: bicep #10928 - writes under one identity must be serialised; retry soon.
                raise TemporaryError(
                    "another federated credential write on this identity is in progress",
                    retry_policy.CREDENTIAL_WRITE_BUSY_SECONDS,
                ) from exc
            if status_of(exc) == 404 or code.lower() in PARENT_NOT_FOUND:
                raise TemporaryError(
                    "identity not yet visible to the credential API (replication)",
                    retry_policy.IDENTITY_NOT_REPLICATED_SECONDS,
                ) from exc
            if status_of(exc) == 429:
                raise TemporaryError(
                    "federated credential writes throttled", retry_after(exc, retry_policy.ARM_THROTTLED_SECONDS)
                ) from exc
            raise_translated(exc, "writing the federated credential")
        return CredentialState(
            name=cred.name, issuer=cred.issuer, subject=cred.subject, audiences=tuple(cred.audiences)
        )

    def delete_credential(self, subscription_id: str, resource_group: str, identity_name: str, name: str) -> bool:
        try:
            status = self._ops(subscription_id).federated_identity_credentials.delete(
                resource_group,
                identity_name,
                name,
                cls=lambda pipeline_response, *_: pipeline_response.http_response.status_code,
            )
        except ResourceNotFoundError:
            return False
        except ARM_ERRORS as exc:
            if error_code(exc) == CONCURRENT_WRITES:
                raise TemporaryError(
                    "another federated credential write on this identity is in progress",
                    retry_policy.CREDENTIAL_WRITE_BUSY_SECONDS,
                ) from exc
            raise_translated(exc, "deleting the federated credential")
        return status != 204
