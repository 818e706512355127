"""A binding: the desired state for one workload's access to one Azure OpenAI account."""

from __future__ import annotations

import dataclasses
import re

from shared.domain import naming
from shared.domain.errors import PermanentError
from shared.domain.ids import ACCOUNT_TYPE, CLUSTER_TYPE, ResourceId, parse_resource_id
from shared.domain.workloads import validate_workloads

OPENAI_USER_ROLE_ID = "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd"
"""Cognitive Services OpenAI User: inference only, no key listing, no deployment writes."""

KNOWN_ROLE_NAMES = {
    "cognitive services openai user": OPENAI_USER_ROLE_ID,
    "cognitive services openai contributor": "a001fd3d-188f-4b5d-821b-7da978bf7442",
    "cognitive services user": "a97b65f3-24c7-4388-baec-2e87135dc908",
}

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def validate_namespace(value: object, field: str = "namespace") -> str:
    if not isinstance(value, str) or not value:
        raise PermanentError(f"{field}: required, a DNS-1123 label")
    if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        raise PermanentError(
            f"{field}: {value[:80]!r} is not a DNS-1123 label (lower-case letters, digits, '-', at most 63)"
        )
    return value


def validate_service_account(value: object, field: str = "serviceAccount") -> str:
    if not isinstance(value, str) or not value:
        raise PermanentError(f"{field}: required, a DNS-1123 subdomain")
    if len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value):
        raise PermanentError(
            f"{field}: {value[:80]!r} is not a DNS-1123 subdomain (lower-case letters, digits, '-', '.', at most 253)"
        )
    return value


def resolve_role(value: object, allowlist: tuple[str, ...], field: str = "role") -> str:
    """A role definition GUID (or a known role name) that is on the allowlist."""
    if value is None or value == "":
        value = OPENAI_USER_ROLE_ID
    if not isinstance(value, str):
        raise PermanentError(f"{field}: must be a role definition id or name")
    guid = KNOWN_ROLE_NAMES.get(value.strip().lower(), value.strip())
    if guid.lower().startswith("/"):
        parts = guid.rstrip("/").split("/")
        if len(parts) < 4 or parts[-2].lower() != "roledefinitions" or parts[-3].lower() != "microsoft.authorization":
            raise PermanentError(f"{field}: not a role definition id")
        guid = parts[-1]
    if not _GUID.fullmatch(guid):
        raise PermanentError(f"{field}: {value[:80]!r} is neither a role definition GUID nor a known role name")
    if guid.lower() not in {a.lower() for a in allowlist}:
        raise PermanentError(f"{field}: role {guid} is not on the allowlist")
    return guid.lower()


@dataclasses.dataclass(frozen=True)
class Binding:
    """`workloads` (Deployment names to enforce) is desired state of the binding but not part of its
    identity (`key`): asking again with another list updates the same binding, whose identity,
    credential and role assignment do not depend on which Deployments use them."""

    cluster: ResourceId
    namespace: str
    service_account: str
    account: ResourceId
    role_definition_id: str = OPENAI_USER_ROLE_ID
    workloads: tuple[str, ...] = ()

    @classmethod
    def create(
        cls,
        cluster: str,
        namespace: str,
        service_account: str,
        account: str,
        role: str | None = None,
        allowlist: tuple[str, ...] = (OPENAI_USER_ROLE_ID,),
        workloads: object = None,
    ) -> Binding:
        """Validate every field (PermanentError naming the first bad one) and build a binding."""
        return cls(
            cluster=parse_resource_id(cluster, CLUSTER_TYPE, "cluster"),
            namespace=validate_namespace(namespace),
            service_account=validate_service_account(service_account),
            account=parse_resource_id(account, ACCOUNT_TYPE, "openAIAccount"),
            role_definition_id=resolve_role(role, allowlist),
            workloads=validate_workloads(workloads),
        )

    @property
    def key(self) -> str:
        """Stable id of the binding: case-insensitive in the ARM ids, exact in the Kubernetes names."""
        return naming.short_hash(
            self.cluster.key,
            self.namespace,
            self.service_account,
            self.account.key,
            self.role_definition_id.lower(),
            length=32,
        )

    @property
    def workload_key(self) -> str:
        return naming.workload_key(self.cluster.key, self.namespace, self.service_account)

    @property
    def subject(self) -> str:
        return naming.service_account_subject(self.namespace, self.service_account)

    @property
    def identity_name(self) -> str:
        return naming.identity_name(self.cluster.name, self.cluster.key, self.namespace, self.service_account)

    @property
    def credential_name(self) -> str:
        return naming.credential_name(self.cluster.name, self.cluster.key, self.namespace, self.service_account)

    @property
    def configmap_name(self) -> str:
        return naming.configmap_name(self.service_account, self.account.name, self.account.key)

    def describe(self) -> dict[str, object]:
        return {
            "cluster": str(self.cluster),
            "namespace": self.namespace,
            "serviceAccount": self.service_account,
            "openAIAccount": str(self.account),
            "roleDefinitionId": self.role_definition_id,
            "workloads": list(self.workloads),
        }
