"""Where the app's storage is and how it signs in: `AzureWebJobsStorage`, read as the Functions host reads it.

The host (and its Storage extension, which runs the queue trigger) takes, in this order:

1. `AzureWebJobsStorage` itself, a connection string (Azurite locally: `UseDevelopmentStorage=true`).
   When it is set, the `AzureWebJobsStorage__*` settings are not read at all (an exact match wins
   over a prefix, as the host does).
2. Otherwise an identity-based connection, the settings under the prefix `AzureWebJobsStorage__`:
   `__queueServiceUri`, `__tableServiceUri` (`__blobServiceUri` for the host's own blobs), each one
   winning over `__accountName`, from which a service's URI is otherwise made:
   `https://<account>.<service>.<the cloud's storage suffix>`.
   `__credential=managedidentity` signs in with the app's managed identity: the user-assigned one
   whose client id is `__clientId`, else the system-assigned one. Without `__credential`, a
   `__clientId` names the managed identity DefaultAzureCredential uses; with neither, the app's own
   credential (DefaultAzureCredential) is used.

Keys are read case-insensitively, and `AzureWebJobsStorage:<property>` as well, as the host's
configuration does. The storage DNS suffix follows the cloud of KEYLESS_ARM_ENDPOINT (the host itself
makes URIs from an account name only for the public cloud: elsewhere set the service URIs, as
`infra/` does). Keyless never takes a secret for storage: a client secret or certificate under the
prefix is refused, and a service URI with a query string (a SAS) too; errors name the key, never a
value that could carry a secret.

Pure: no SDK, no environment of its own (shared.domain.settings passes it in).
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from collections.abc import Mapping

from shared.domain.errors import PermanentError

CONNECTION = "AzureWebJobsStorage"
"""The host's storage connection: the queue trigger's `connection`, the ledger's and queue's storage."""

MANAGED_IDENTITY = "managedidentity"
SERVICES = ("blob", "queue", "table")

# The storage DNS suffix of each Azure cloud, by its Resource Manager host (Azure's own cloud
# metadata: `az cloud show`, `suffixes.storageEndpoint`).
STORAGE_SUFFIXES = {
    "management.azure.com": "core.windows.net",
    "management.chinacloudapi.cn": "core.chinacloudapi.cn",
    "management.usgovcloudapi.net": "core.usgovcloudapi.net",
}

_ACCOUNT_NAME = re.compile(r"[a-z0-9]{3,24}")
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Properties the host would turn into a secret-based credential: refused, Keyless holds no secret.
_SECRETS = ("clientsecret", "clientcertificate", "clientcertificatepassword")


class StorageSettingsError(PermanentError):
    """A storage setting is malformed; `reason` starts with the key."""


@dataclasses.dataclass(frozen=True)
class StorageConnection:
    """The storage settings as read; `endpoint(service)` is the URI a client of that service uses."""

    connection_string: str | None = dataclasses.field(default=None, repr=False)
    account_name: str | None = None
    blob_service_uri: str | None = None
    queue_service_uri: str | None = None
    table_service_uri: str | None = None
    credential: str | None = None  # MANAGED_IDENTITY or None (the app's DefaultAzureCredential)
    client_id: str | None = None  # a user-assigned identity's client id
    endpoint_suffix: str | None = "core.windows.net"  # None: the cloud's storage suffix is not known
    keys: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False, repr=False)
    """property (lower case) -> the key as it was spelled, for messages"""

    def __repr__(self) -> str:  # never the connection string
        shown = ("account_name", "queue_service_uri", "table_service_uri", "credential", "client_id")
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in shown if getattr(self, name))
        return f"StorageConnection({'connection string, ' if self.connection_string else ''}{fields})"

    @property
    def configured(self) -> bool:
        """Anything set at all (the host would try to start)."""
        return bool(self.connection_string or self.account_name or self.queue_service_uri or self.table_service_uri)

    @property
    def identity_based(self) -> bool:
        return self.configured and not self.connection_string

    @property
    def managed_identity(self) -> bool:
        return self.identity_based and self.credential == MANAGED_IDENTITY

    def endpoint(self, service: str) -> str | None:
        """The service URI for an identity-based connection: the explicit `__<service>ServiceUri`,
        else made from the account name and the cloud's suffix; None with a connection string."""
        if self.connection_string:
            return None
        explicit = getattr(self, f"{service}_service_uri")
        if explicit:
            return str(explicit)
        if self.account_name and self.endpoint_suffix:
            return f"https://{self.account_name}.{service}.{self.endpoint_suffix}"
        return None

    def problem(self, services: tuple[str, ...] = ("queue", "table")) -> str | None:
        """Why the app cannot reach `services` (a message naming the keys to set), or None."""
        if not self.configured:
            return (
                f"{CONNECTION}: set a connection string (UseDevelopmentStorage=true locally), or for an "
                f"identity-based connection {CONNECTION}__accountName or "
                f"{CONNECTION}__queueServiceUri and {CONNECTION}__tableServiceUri"
            )
        for service in services:
            if self.endpoint(service) is None and not self.connection_string:
                key = self._key(f"{service}ServiceUri")
                if self.account_name:  # only the suffix is missing
                    return (
                        f"{key}: needed, because the storage DNS suffix of the cloud at KEYLESS_ARM_ENDPOINT "
                        f"is not known to make it from {self._key('accountName')}"
                    )
                use = _USE.get(service, service)
                return f"{key}: needed (Keyless keeps its {use} there), or {self._key('accountName')}"
        return None

    def _key(self, prop: str) -> str:
        return self.keys.get(prop.lower(), f"{CONNECTION}__{prop}")


_USE = {"queue": "work queue", "table": "ledger"}


def storage_suffix(arm_endpoint: str) -> str | None:
    """The storage DNS suffix of the cloud whose Resource Manager is `arm_endpoint` (None: not known)."""
    host = (urllib.parse.urlsplit(arm_endpoint).hostname or "").lower()
    for arm_host, suffix in STORAGE_SUFFIXES.items():
        if host == arm_host or host.endswith("." + arm_host):
            return suffix
    return None


def read(env: Mapping[str, str], arm_endpoint: str) -> StorageConnection:
    """The storage connection from `env` (see the module docstring); StorageSettingsError names the key."""
    connection_string = _exact(env, CONNECTION)
    if connection_string:
        return StorageConnection(connection_string=_connection_string(connection_string))
    section = _section(env)
    keys = {prop: key for prop, (key, _) in section.items()}
    values = {prop: value for prop, (_, value) in section.items()}
    for prop in _SECRETS:
        if prop in values:
            raise StorageSettingsError(
                f"{keys[prop]}: Keyless takes no secret for storage; use {CONNECTION}__credential=managedidentity "
                f"(in Azure) or your az login (locally)"
            )
    if "managedidentityresourceid" in values:
        raise StorageSettingsError(
            f"{keys['managedidentityresourceid']}: not supported (nor by the Functions host in Azure); "
            f"name a user-assigned identity by {CONNECTION}__clientId"
        )
    account = values.get("accountname")
    if account is not None and not _ACCOUNT_NAME.fullmatch(account):
        raise StorageSettingsError(
            f"{keys['accountname']}: a storage account name is 3 to 24 lower-case letters and digits"
        )
    uris = {s: _service_uri(keys.get(f"{s}serviceuri", ""), values.get(f"{s}serviceuri")) for s in SERVICES}
    credential = values.get("credential")
    if credential is not None:
        credential = credential.lower()
        if credential != MANAGED_IDENTITY:
            raise StorageSettingsError(
                f"{keys['credential']}: must be {MANAGED_IDENTITY!r} (or unset: the app's DefaultAzureCredential), "
                f"got {credential!r}"
            )
    client_id = values.get("clientid")
    if client_id is not None and not _GUID.fullmatch(client_id):
        raise StorageSettingsError(f"{keys['clientid']}: the client id of a user-assigned managed identity (a GUID)")
    return StorageConnection(
        account_name=account,
        blob_service_uri=uris["blob"],
        queue_service_uri=uris["queue"],
        table_service_uri=uris["table"],
        credential=credential,
        client_id=client_id.lower() if client_id else None,
        endpoint_suffix=storage_suffix(arm_endpoint),
        keys=keys,
    )


_EXAMPLE = (
    "UseDevelopmentStorage=true locally, or DefaultEndpointsProtocol=https;AccountName=<account>;AccountKey=<key>"
)


def _connection_string(value: str) -> str:
    """The connection string with its empty parts dropped, once it has the shape the storage SDKs need
    (errors name the part, never a value: the string holds the account key).

    A trailing `;` is common (the portal's strings have none, hand-written ones do) and the Functions host
    takes it, as does the queue SDK; the table SDK refuses `UseDevelopmentStorage=true;` ("missing required
    connection details"), so Keyless passes the string on without its empty parts."""
    parts = [part.strip() for part in value.split(";") if part.strip()]
    pairs = [part.split("=", 1) for part in parts]
    if not pairs or any(len(pair) != 2 or not pair[0].strip() for pair in pairs):
        raise StorageSettingsError(
            f"{CONNECTION}: not a connection string (Key=Value parts separated by ';'); expected {_EXAMPLE}"
        )
    props = {key.strip().lower(): val.strip() for key, val in pairs}
    if props.get("usedevelopmentstorage", "").lower() == "true":
        return ";".join(parts)
    if not props.get("accountname") and not (props.get("queueendpoint") and props.get("tableendpoint")):
        raise StorageSettingsError(f"{CONNECTION}: the connection string names no AccountName; expected {_EXAMPLE}")
    if not props.get("accountkey") and not props.get("sharedaccesssignature"):
        raise StorageSettingsError(
            f"{CONNECTION}: the connection string has no AccountKey (or SharedAccessSignature); expected {_EXAMPLE}, "
            f"or an identity-based connection ({CONNECTION}__accountName, no connection string)"
        )
    return ";".join(parts)


def _exact(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None:
        value = next((v for k, v in env.items() if k.lower() == name.lower()), None)
    return (value or "").strip() or None


def _section(env: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """property (lower case) -> (key, value) of the non-empty settings under the prefix."""
    found: dict[str, tuple[str, str]] = {}
    prefixes = (CONNECTION.lower() + "__", CONNECTION.lower() + ":")
    for key, raw in env.items():
        low = key.lower()
        prefix = next((p for p in prefixes if low.startswith(p)), None)
        if prefix is None:
            continue
        prop, value = low[len(prefix) :], (raw or "").strip()
        if not value or "__" in prop or ":" in prop:  # empty, or a deeper section the host reads elsewhere
            continue
        if prop in found and found[prop][1] != value:
            raise StorageSettingsError(f"{key}: set twice with different values (also as {found[prop][0]})")
        found[prop] = (key, value)
    return found


def _service_uri(key: str, value: str | None) -> str | None:
    """An https service URI; never one carrying credentials (user info, or a query string: a SAS)."""
    if value is None:
        return None
    parts = urllib.parse.urlsplit(value)
    if parts.scheme.lower() != "https" or not parts.hostname:
        raise StorageSettingsError(f"{key}: must be an https:// URL (Entra tokens are sent over TLS only)")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise StorageSettingsError(
            f"{key}: must not carry credentials or a query string (no SAS: Keyless uses Entra ID)"
        )
    return value.rstrip("/")
