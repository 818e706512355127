"""Role assignments at the scope of one Azure OpenAI account."""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from shared.adapters.arm import ARM_ERRORS, ArmClients, error_code, raise_translated
from shared.domain import retry_policy
from shared.domain.errors import PermanentError, TemporaryError
from shared.domain.observed import RoleAssignmentState

ROLE_ASSIGNMENT_EXISTS = "RoleAssignmentExists"
PRINCIPAL_NOT_FOUND = "PrincipalNotFound"
UPDATE_NOT_PERMITTED = "RoleAssignmentUpdateNotPermitted"


def _state(ra: Any) -> RoleAssignmentState:
    return RoleAssignmentState(
        id=ra.id, name=ra.name, scope=ra.scope, role_definition_id=ra.role_definition_id, principal_id=ra.principal_id
    )


def role_definition_id(subscription_id: str, role_guid: str) -> str:
    return f"/subscriptions/{subscription_id}/providers/Microsoft.Authorization/roleDefinitions/{role_guid}"


class RoleAssignmentAdapter:
    def __init__(self, clients: ArmClients) -> None:
        self._clients = clients

    def _ops(self, subscription_id: str) -> Any:
        return self._clients.authorization(subscription_id).role_assignments

    def list_for_principal(self, subscription_id: str, scope: str, principal_id: str) -> list[RoleAssignmentState]:
        """Assignments of the principal at or above `scope` (one read, whatever their names)."""
        try:
            return [
                _state(ra)
                for ra in self._ops(subscription_id).list_for_scope(scope, filter=f"principalId eq '{principal_id}'")
            ]
        except ResourceNotFoundError:
            return []
        except ARM_ERRORS as exc:
            raise_translated(exc, "listing role assignments")

    def list_at_scope(self, subscription_id: str, scope: str) -> list[RoleAssignmentState]:
        """Every assignment exactly at or above `scope` (`atScope()`, paged): the drift sweep's inventory
        of an account where Resource Graph is refused."""
        try:
            return [_state(ra) for ra in self._ops(subscription_id).list_for_scope(scope, filter="atScope()")]
        except ResourceNotFoundError:
            return []
        except ARM_ERRORS as exc:
            raise_translated(exc, "listing role assignments at the account")

    def data_actions(self, subscription_id: str, role_guid: str, scope: str = "") -> tuple[list[str], list[str]]:
        """The role definition's (dataActions, notDataActions), all permissions merged: what Azure RBAC
        matches a data-plane request against. Read at `scope` (an account, where Keyless's Access Granter
        grants roleDefinitions/read), else at the subscription."""
        try:
            definition = self._clients.authorization(subscription_id).role_definitions.get(
                scope or f"/subscriptions/{subscription_id}", role_guid
            )
        except ARM_ERRORS as exc:
            raise_translated(exc, "reading the role definition")
        allowed: list[str] = []
        denied: list[str] = []
        for permission in definition.permissions or []:
            allowed += list(permission.data_actions or [])
            denied += list(permission.not_data_actions or [])
        return allowed, denied

    def count_in_subscription(self, subscription_id: str) -> int:
        """Role assignments in the subscription, at every scope inside it (what Azure's 4,000 counts)."""
        try:
            return sum(1 for _ in self._ops(subscription_id).list_for_subscription())
        except ARM_ERRORS as exc:
            raise_translated(exc, "counting the subscription's role assignments")

    def create(
        self, subscription_id: str, scope: str, name: str, role_guid: str, principal_id: str
    ) -> RoleAssignmentState | None:
        """Create; None if the same principal/role/scope exists under another name (RoleAssignmentExists)."""
        body = {
            "properties": {
                "roleDefinitionId": role_definition_id(subscription_id, role_guid),
                "principalId": principal_id,
                # Tells ARM to skip the directory lookup that fails for fresh principals.
                "principalType": "ServicePrincipal",
                "description": "Managed by Keyless",
            }
        }
        try:
            return _state(self._ops(subscription_id).create(scope, name, body))
        except ARM_ERRORS as exc:
            code = error_code(exc)
            if code == ROLE_ASSIGNMENT_EXISTS:
                return None
            if code == PRINCIPAL_NOT_FOUND:
                raise TemporaryError(
                    "the new identity's principal is not replicated yet", retry_policy.PRINCIPAL_NOT_REPLICATED_SECONDS
                ) from exc
            if code == UPDATE_NOT_PERMITTED:
                raise PermanentError(
                    f"role assignment {name} exists with other properties; delete it and retry"
                ) from exc
            raise_translated(exc, "creating the role assignment")

    def delete(self, subscription_id: str, scope: str, name: str) -> bool:
        """Delete by name; True if it existed (ARM answers 204 when absent)."""
        try:
            status = self._ops(subscription_id).delete(
                scope, name, cls=lambda pipeline_response, *_: pipeline_response.http_response.status_code
            )
        except ResourceNotFoundError:
            return False
        except ARM_ERRORS as exc:
            raise_translated(exc, "deleting the role assignment")
        return status != 204
