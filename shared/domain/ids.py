"""ARM resource ids: parsing, validation and case-insensitive identity.

ARM ids are case-insensitive, and different APIs spell them differently (Event Grid writes
`resourcegroups`, ARM returns `resourceGroups`). We keep the id as given for display and
compare/key by `ResourceId.key` (lower-cased canonical form).
"""

from __future__ import annotations

import dataclasses
import re

from shared.domain.errors import PermanentError

SUBSCRIPTION_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._()-]{0,259}$")

CLUSTER_TYPE = "Microsoft.ContainerService/managedClusters"
ACCOUNT_TYPE = "Microsoft.CognitiveServices/accounts"
IDENTITY_TYPE = "Microsoft.ManagedIdentity/userAssignedIdentities"


@dataclasses.dataclass(frozen=True)
class ResourceId:
    """A top-level resource in a resource group: /subscriptions/s/resourceGroups/g/providers/P/T/n."""

    subscription_id: str
    resource_group: str
    provider: str
    resource_type: str
    name: str

    @property
    def full_type(self) -> str:
        return f"{self.provider}/{self.resource_type}"

    @property
    def resource_group_id(self) -> str:
        return f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"

    def __str__(self) -> str:
        return f"{self.resource_group_id}/providers/{self.provider}/{self.resource_type}/{self.name}"

    @property
    def key(self) -> str:
        """Canonical lower-case form, for comparison and as a dictionary key."""
        return str(self).lower()


def parse_resource_id(value: object, expected_type: str, field: str) -> ResourceId:
    """Parse a top-level resource id of `expected_type`; PermanentError naming `field` otherwise.

    Refuses anything with extra or missing segments, `..`, encoded characters, or another
    provider/type: the id decides a role assignment's scope, so it must be exactly one resource.
    """
    if not isinstance(value, str) or not value:
        raise PermanentError(f"{field}: must be a resource id string of type {expected_type}")
    if "%" in value or "\\" in value or "?" in value or "#" in value or "//" in value:
        raise PermanentError(f"{field}: resource id contains characters that are not allowed")
    parts = value.strip("/").split("/")
    want_provider, want_type = expected_type.split("/")
    if (
        len(parts) != 8
        or not value.startswith("/")
        or value.endswith("/")
        or parts[0].lower() != "subscriptions"
        or parts[2].lower() != "resourcegroups"
        or parts[4].lower() != "providers"
    ):
        raise PermanentError(
            f"{field}: expected /subscriptions/<id>/resourceGroups/<group>/providers/{expected_type}/<name>"
        )
    sub, rg, provider, rtype, name = parts[1], parts[3], parts[5], parts[6], parts[7]
    if provider.lower() != want_provider.lower() or rtype.lower() != want_type.lower():
        raise PermanentError(f"{field}: expected a {expected_type} resource, got {provider}/{rtype}")
    if not SUBSCRIPTION_ID.fullmatch(sub):
        # Only the canonical dashed form: uuid.UUID also takes {…}, undashed and urn:uuid: forms,
        # which would make one subscription (and so one resource) two different bindings.
        raise PermanentError(f"{field}: subscription id {sub[:80]!r} is not a GUID in its dashed form")
    for label, segment in (("resource group", rg), ("name", name)):
        if segment in (".", "..") or not _NAME.fullmatch(segment):
            raise PermanentError(f"{field}: invalid {label} {segment!r}")
    return ResourceId(sub, rg, want_provider, want_type, name)


def same_resource(a: str, b: str) -> bool:
    return a.rstrip("/").lower() == b.rstrip("/").lower()
