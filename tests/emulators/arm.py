"""A strict local stand-in for Azure Resource Manager, for tests that drive the real azure-mgmt SDKs.

Why: Keyless creates managed identities, federated identity credentials (FIC) and role
assignments, turns on OIDC / workload identity on AKS clusters and reads Azure OpenAI accounts.
Its hard parts are Azure's *behaviour*, not its happy path: eventual consistency (a new principal
is invisible to RBAC for a while, a FIC written right after its identity can fail), the 20-FIC
limit, the 409 on concurrent FIC writes, `RoleAssignmentExists` vs
`RoleAssignmentUpdateNotPermitted`, long-running AKS updates that refuse a second PUT, and
case-insensitive resource ids. This emulator reproduces those behaviours on a controllable
`Clock` (tests advance it instead of sleeping), speaks HTTPS with a test CA (azure-core refuses
bearer tokens over http), and answers with the paths, api-versions, status codes and error
bodies (`{"error": {"code", "message"}}`) that the pinned SDKs use. What it does not serve is
refused (404/405), never silently accepted.

Throttling follows Azure's published limits, and only those (`Limits`, measured on the `Clock`):

- ARM, per principal and subscription, token buckets: reads 250 refilled 25/s, writes 200
  refilled 10/s, deletes 200 refilled 10/s. **On by default**: no functional test comes near them,
  and every response carries `x-ms-ratelimit-remaining-subscription-{reads,writes,deletes}` as
  ARM's do.
- Managed identity RP: identity create operations, 80 per 20 s per subscription and region (the
  PUT body's `location`), enforced as a sliding window (never more than 80 in any 20 s: the
  strictest reading of the published figure); every identity PUT counts, updates too. **Off by
  default** (a test that onboards three workloads would not notice it, a big one would wait);
  `enforce_limits(scale=...)` turns every limit on, with refill rates multiplied and windows
  divided by `scale` so that a benchmark can run Azure's limits ten times faster (`Retry-After` is
  then given in scaled seconds, with decimals).
- Federated credential writes: no published rate; one write at a time per identity, a concurrent
  one answered 409 `ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity`. Always
  on (it is how the RP behaves, not a quota); `fic_write_latency_seconds` makes writes overlap.

Over a limit the answer is 429 with `Retry-After`; a throttled request does not use a token.

Error codes and messages come from public reports and docs where we found them; the rest are
marked "guess" where they are raised. ERROR_SOURCES at the bottom lists where each came from.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import datetime
import io
import json
import math
import re
import socket
import threading
import time
import urllib.parse
import uuid
import zipfile
from collections.abc import Callable
from typing import Any

import yaml
from werkzeug.wrappers import Request, Response

from tests.emulators.common import (
    Clock,
    HttpsServer,
    RecordedRequest,
    RequestLog,
    TestCA,
    bearer_token,
    json_response,
    token_for_scope,
)
from tests.emulators.kubectl import KubectlPod
from tests.emulators.resource_graph import ResourceGraphEmulator
from tests.emulators.runtime_shell import DEFAULT_TOOLS

ARM_SCOPE = "https://management.azure.com/.default"

API_VERSIONS: dict[str, set[str]] = {  # provider namespace (lower case) -> the pinned SDKs' default api-version
    "microsoft.managedidentity": {"2024-11-30"},  # azure-mgmt-msi 7.1.0
    "microsoft.authorization": {"2022-04-01"},  # azure-mgmt-authorization 4.0.0
    "microsoft.containerservice": {"2026-08-01"},  # azure-mgmt-containerservice 41.8.0
    "microsoft.cognitiveservices": {"2025-09-01"},  # azure-mgmt-cognitiveservices 14.1.0
    "microsoft.resourcegraph": {"2021-03-01"},  # azure-mgmt-resourcegraph 8.0.1 (tests/emulators/resource_graph.py)
}

MSI_TYPE = "Microsoft.ManagedIdentity/userAssignedIdentities"
AKS_TYPE = "Microsoft.ContainerService/managedClusters"
COG_TYPE = "Microsoft.CognitiveServices/accounts"
FIC_AUDIENCE = "api://AzureADTokenExchange"
FIC_LIMIT = 20
AKS_AAD_SERVER_APP_ID = "6dae42f8-4368-4678-94ff-3960e28e3630"
KUBELOGIN_CLIENT_ID = "80faf920-1908-4b52-b5ef-a8e7bedfc67a"  # the Azure CLI public client kubelogin uses
CALLER_OBJECT_ID = "0c9c1a11-5e1f-4d2b-8a6e-6b1f0f0c0a11"  # the (fake) caller that writes role assignments

ROLE_OPENAI_USER = "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd"
ROLE_OPENAI_CONTRIBUTOR = "a001fd3d-188f-4b5d-821b-7da978bf7442"
ROLE_COGNITIVE_SERVICES_USER = "a97b65f3-24c7-4388-baec-2e87135dc908"
ROLE_CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
ROLE_OWNER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
ROLE_READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"

_COG_READ = "Microsoft.CognitiveServices/*/read"
_OPENAI = "Microsoft.CognitiveServices/accounts/OpenAI"
BUILT_IN_ROLES: dict[str, tuple[str, str, list[str], list[str], list[str]]] = {
    # guid: (roleName, description, actions, notActions, dataActions); permissions abridged
    ROLE_OPENAI_USER: (
        "Cognitive Services OpenAI User",
        "Read access to view files, models, deployments. The ability to create completion and embedding calls.",
        [_COG_READ, "Microsoft.Authorization/roleAssignments/read", "Microsoft.Authorization/roleDefinitions/read"],
        [],
        [
            f"{_OPENAI}/*/read",
            f"{_OPENAI}/deployments/chat/completions/action",
            f"{_OPENAI}/deployments/embeddings/action",
        ],
    ),
    ROLE_OPENAI_CONTRIBUTOR: (
        "Cognitive Services OpenAI Contributor",
        "Full access including the ability to fine-tune, deploy and generate text",
        [_COG_READ, "Microsoft.CognitiveServices/accounts/deployments/write"],
        [],
        [f"{_OPENAI}/*"],
    ),
    ROLE_COGNITIVE_SERVICES_USER: (
        "Cognitive Services User",
        "Lets you read and list keys of Cognitive Services.",
        [_COG_READ, "Microsoft.CognitiveServices/accounts/listkeys/action"],
        [],
        ["Microsoft.CognitiveServices/*"],
    ),
    ROLE_CONTRIBUTOR: (
        "Contributor",
        "Grants full access to manage all resources, but does not allow you to assign roles in Azure RBAC.",
        ["*"],
        ["Microsoft.Authorization/*/Delete", "Microsoft.Authorization/*/Write"],
        [],
    ),
    ROLE_OWNER: ("Owner", "Grants full access to manage all resources, including assigning roles.", ["*"], [], []),
    ROLE_READER: ("Reader", "View all resources, but does not allow you to make any changes.", ["*/read"], [], []),
}

_SEG = r"[^/]+"
_RG = rf"/subscriptions/(?P<sub>{_SEG})/resourceGroups/(?P<rg>{_SEG})"
_MSI = _RG + r"/providers/Microsoft\.ManagedIdentity/userAssignedIdentities"
_AKS = _RG + rf"/providers/Microsoft\.ContainerService/managedClusters/(?P<name>{_SEG})"
_COG = _RG + r"/providers/Microsoft\.CognitiveServices/accounts"
_GUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
_IDENTITY_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{2,127}$")
_FIC_NAME_RE = re.compile(r"^[a-zA-Z0-9]{1}[a-zA-Z0-9-_]{2,119}$")
_RESOURCE_ID_RE = re.compile(_RG + rf"/providers/(?P<ns>{_SEG})/(?P<type>{_SEG})/(?P<name>{_SEG})$", re.I)
_DERIVE: Any = object()  # sentinel: "derive the custom subdomain from the account name"
_LRO_STATES = ("Creating", "Updating", "Upgrading", "Scaling", "Starting", "Stopping")


class ArmError(Exception):
    """Raised by handlers; becomes `{"error": {"code", "message"}}` with the given status."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class _DropConnection(Exception):
    """Fault injection with status 0: close the socket without answering."""


def _bad_request(message: str, code: str = "BadRequest") -> ArmError:
    return ArmError(400, code, message)


def _not_found(ns_type: str, name: str, rg: str) -> ArmError:
    return ArmError(
        404,
        "ResourceNotFound",
        f"The Resource '{ns_type}/{name}' under resource group '{rg}' was not found. "
        "For more details please go to https://aka.ms/ARMResourceNotFoundFix",
    )


def _location_conflict(name: str, existing: str, rg: str, requested: str) -> ArmError:
    return _bad_request(
        f"The resource '{name}' already exists in location '{existing}' in resource group '{rg}'. A resource "
        f"with the same name cannot be created in location '{requested}'. Please select a new resource name.",
        "InvalidResourceLocation",
    )


def _key(resource_id: str) -> str:
    """Case-insensitive key for a resource id (ARM ids are case-insensitive)."""
    return "/" + "/".join(p for p in resource_id.lower().split("/") if p)


def _rid(sub: str, rg: str, ns_type: str = "", name: str = "") -> str:
    rg_id = f"/subscriptions/{sub}/resourceGroups/{rg}"
    return f"{rg_id}/providers/{ns_type}/{name}" if ns_type else rg_id


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _norm_location(location: str) -> str:
    return location.replace(" ", "").lower()


def _parse_resource_id(resource_id: str) -> re.Match[str]:
    m = _RESOURCE_ID_RE.match("/" + resource_id.strip("/"))
    if not m:
        raise ValueError(f"not a resource-group-level resource id: {resource_id!r}")
    return m


def _deep_merge(base: dict, patch: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in patch.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


@dataclasses.dataclass
class _Identity:
    json: dict
    created_at: float  # emulator clock; -inf for seeded (already replicated) identities
    fics: dict[str, dict] = dataclasses.field(default_factory=dict)  # lower-case name -> ARM JSON
    fic_writes_in_flight: int = 0

    @property
    def fic_write_in_progress(self) -> bool:
        return self.fic_writes_in_flight > 0


@dataclasses.dataclass
class _Operation:
    id: str
    status: str  # InProgress | Succeeded | Failed | Canceled
    started: float
    resource_key: str = ""
    polls: int = 0
    ended: float | None = None
    fail: bool = False  # ends Failed (see fail_cluster_updates)
    leave_failed: bool = False  # ...and leaves the cluster in the Failed provisioning state
    rollback: dict | None = None  # the cluster's properties before the update


@dataclasses.dataclass
class _Cluster:
    json: dict
    kube_server_url: str  # where the API server is, as seen from inside the cluster's network
    kube_ca_pem: bytes
    admin_token: str
    issuer_uuid: str
    op: _Operation | None = None
    unreachable: socket.socket | None = None  # private cluster: a bound, never listening port (refuses at once)

    @property
    def client_server_url(self) -> str:
        """The server in the kubeconfigs ARM hands out: for a private cluster, one Keyless cannot reach."""
        if self.unreachable is None:
            return self.kube_server_url
        return f"https://127.0.0.1:{self.unreachable.getsockname()[1]}"


@dataclasses.dataclass
class _Command:
    """One run command (managedClusters/runCommand): the pod ran it when it was submitted; its
    result is shown once `run_command_seconds` and `run_command_polls` are used up."""

    id: str
    cluster_key: str
    started: float
    exit_code: int | None = None
    logs: str = ""
    failed_reason: str = ""  # the command's pod never ran (e.g. ImagePullBackoff)
    finished: float | None = None
    polls: int = 0


@dataclasses.dataclass
class _Account:
    json: dict
    deployments: dict[str, dict] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Fault:
    method: str
    path_contains: str
    status: int  # 0: drop the connection; -1: only a delay (inject_latency)
    code: str
    message: str
    headers: dict[str, str]
    remaining: int
    after_serving: bool = False  # serve the request (its effect happens), then answer with the fault
    delay_seconds: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        return self.remaining > 0 and self.method in (method, "*") and self.path_contains in path.lower()


@dataclasses.dataclass(frozen=True)
class Bucket:
    """A token bucket: at most `size` requests at once, refilled at `per_second` tokens a second."""

    size: float
    per_second: float


@dataclasses.dataclass(frozen=True)
class Window:
    """At most `count` requests in any `seconds` (a sliding window)."""

    count: int
    seconds: float


@dataclasses.dataclass(frozen=True)
class Limits:
    """Azure's published request limits, and nothing else (AZURE-FACTS).

    ARM's, per principal and subscription, are token buckets (learn.microsoft.com, Azure Resource
    Manager "request limits and throttling"). The managed identity RP publishes "80 create
    operations per 20 seconds per subscription per region" for user-assigned identities (Azure docs
    `managed-identity-limits.md`): a sliding window here, the strictest reading. Federated
    credential writes have no published rate: one at a time per identity
    (`credential_writes_per_identity`, answered 409 beyond it)."""

    arm_reads: Bucket = Bucket(250, 25)
    arm_writes: Bucket = Bucket(200, 10)
    arm_deletes: Bucket = Bucket(200, 10)
    identity_creates: Window = Window(80, 20.0)  # per subscription and region
    credential_writes_per_identity: int = 1  # in flight at once; always enforced

    def scaled(self, factor: float) -> Limits:
        """The same limits with Azure's time sped up `factor` times: buckets refill faster (sizes
        unchanged), windows are shorter (counts unchanged)."""
        return dataclasses.replace(
            self,
            arm_reads=Bucket(self.arm_reads.size, self.arm_reads.per_second * factor),
            arm_writes=Bucket(self.arm_writes.size, self.arm_writes.per_second * factor),
            arm_deletes=Bucket(self.arm_deletes.size, self.arm_deletes.per_second * factor),
            identity_creates=Window(self.identity_creates.count, self.identity_creates.seconds / factor),
        )


@dataclasses.dataclass
class _Tokens:
    tokens: float
    stamp: float

    def wait(self, bucket: Bucket, now: float) -> float:
        """Refill to `now`; seconds until one token is there (0: one is there now)."""
        self.tokens = min(bucket.size, self.tokens + max(now - self.stamp, 0.0) * bucket.per_second)
        self.stamp = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / bucket.per_second

    def take(self, now: float) -> None:
        self.tokens -= 1


@dataclasses.dataclass
class _Log:
    """A sliding window's state: the times of the requests it let through, within the window."""

    times: list[float] = dataclasses.field(default_factory=list)

    @property
    def tokens(self) -> float:  # (no remaining-header for windows)
        return 0.0

    def wait(self, window: Window, now: float) -> float:
        """Seconds until one more request fits in the window ending at `now` (0: it fits now)."""
        self.times = [t for t in self.times if t > now - window.seconds]
        if len(self.times) < window.count:
            return 0.0
        return self.times[-window.count] + window.seconds - now

    def take(self, now: float) -> None:
        self.times.append(now)


@dataclasses.dataclass
class _Ctx:
    """One request as a handler sees it: the route's named groups, the base URL, the api-version."""

    request: Request
    groups: dict[str, str]
    base_url: str
    api_version: str

    def body(self) -> dict:
        raw = self.request.get_data(as_text=True)
        invalid = "The request content was invalid and could not be deserialized: "
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError as e:
            raise _bad_request(f"{invalid}'{e}'.", "InvalidRequestContent") from None
        if not isinstance(body, dict):
            raise _bad_request(f"{invalid}'expected a JSON object'.", "InvalidRequestContent")
        return body

    def arg(self, name: str) -> str | None:
        """Query parameter, matched case-insensitively ($skipToken vs $skiptoken)."""
        return next((v for k, v in self.request.args.items() if k.lower() == name.lower()), None)

    def key(self, ns_type: str, name_group: str = "name") -> str:
        return _key(_rid(self.groups["sub"], self.groups["rg"], ns_type, self.groups[name_group]))


@dataclasses.dataclass
class _Route:
    pattern: re.Pattern[str]
    handlers: dict[str, Callable[[_Ctx], Response]]
    namespace: str | None  # api-version checked against api_versions[namespace]; None = any well-formed one
    self_locking: frozenset[str] = frozenset()  # methods whose handler takes the state lock itself


class ArmEmulator:
    """HTTPS ARM stand-in; see the module docstring. Seed with add_*, inspect with the readers."""

    def __init__(
        self,
        ca: TestCA,
        *,
        tenant_id: str = "72f988bf-86f1-41af-91ab-2d7cd011db47",
        clock: Clock | None = None,
        token_scope: str = ARM_SCOPE,
        openai_endpoint_base: str | None = None,
    ) -> None:
        self.ca = ca
        self.tenant_id = tenant_id
        self.clock = clock or Clock()
        self.token_scope = token_scope
        # Where OpenAI / AIServices accounts with a custom subdomain say their OpenAI endpoint is: None = the real
        # `https://{subdomain}.openai.azure.com/`; e.g. `https://127.0.0.1:PORT/` = `{base}{subdomain}/`, served by
        # tests/emulators/openai.py. Read when an account is seeded (plain attribute; set it before add_*).
        self.openai_endpoint_base = openai_endpoint_base
        self.log = RequestLog()
        self.url = ""
        self._lock = threading.RLock()
        self._server: HttpsServer | None = None
        self._reset_state()
        self.resource_graph = ResourceGraphEmulator(self)  # answers from the state below, on the same clock
        self._routes = self._build_routes()

    def _reset_state(self) -> None:
        # behaviour knobs (plain attributes; tests set them)
        self.principal_replication_seconds = 0.0
        self.principal_type_skips_replication = False  # True: a principalType in the PUT avoids PrincipalNotFound
        self.fic_parent_replication_seconds = 0.0
        self.fic_write_latency_seconds = 0.0
        self.cluster_update_seconds = 30.0
        self.cluster_update_polls = 1
        self.run_command_seconds = 0.0  # a run command's result shows after this much clock time...
        self.run_command_polls = 1  # ...and after this many polls answered 202
        self.lro_retry_after_ms: int | None = 10  # sent as Retry-After-Ms on LRO responses; None = no header
        self.page_size = 100
        self.api_versions = copy.deepcopy(API_VERSIONS)
        self.limits = Limits()
        self.arm_limits_enforced = True  # ARM's subscription buckets: on (see the module docstring)
        self.msi_limits_enforced = False  # the managed identity RP's: off until enforce_limits()
        self.limits_scale = 1.0
        self.request_hooks: list[Callable[[RecordedRequest], None]] = []  # run after each answer is decided
        self._buckets: dict[tuple[str, ...], _Tokens | _Log] = {}
        self._cluster_update_failures: list[tuple[str | None, bool]] = []  # (cluster key or None, leave_failed)
        self._run_command_failures: list[str] = []  # reasons the next run commands' pods fail with
        self.run_commands: list[dict] = []  # what each run command was asked: command, files, whether a token came
        self.run_command_tools = DEFAULT_TOOLS  # the programs the run-command pod's image has (`command -v`)
        # state, guarded by _lock; dict keys are _key(resource id)
        self._subscriptions: set[str] = set()
        self._resource_groups: dict[str, dict] = {}  # {subscription, name, location}
        self._identities: dict[str, _Identity] = {}
        self._deleted_principals: set[str] = set()
        self._role_assignments: dict[str, dict] = {}
        self._role_definitions: dict[str, dict] = {}  # guid (lower case) -> properties
        self._clusters: dict[str, _Cluster] = {}
        self._accounts: dict[str, _Account] = {}
        self._generic: dict[str, dict] = {}  # any other resource type: scopes for role assignments, refusals
        self._operations: dict[str, _Operation] = {}
        self._commands: dict[str, _Command] = {}
        self._faults: list[_Fault] = []
        for guid, (name, description, actions, not_actions, data_actions) in BUILT_IN_ROLES.items():
            permissions = {"actions": actions, "not_actions": not_actions, "data_actions": data_actions}
            self.add_role_definition(guid, name, description=description, role_type="BuiltInRole", **permissions)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> ArmEmulator:
        self._server = HttpsServer(self._wsgi, self.ca).start()
        self.url = self._server.url
        return self

    def stop(self) -> None:
        if not self._server:
            return
        server, self._server = self._server, None
        with self._lock:
            for c in self._clusters.values():
                if c.unreachable is not None:
                    c.unreachable.close()
        server.stop()

    def reset(self) -> None:
        """Forget all resources, faults and knob settings; the server keeps running, the log is cleared."""
        with self._lock:
            for cluster_id in list(self._clusters):
                self.delete_managed_cluster(cluster_id)
            self._reset_state()
        self.resource_graph.reset()
        self.log.clear()

    # ------------------------------------------------------------------ seeding

    def add_subscription(self, subscription_id: str) -> None:
        with self._lock:
            self._subscriptions.add(subscription_id.lower())

    def add_resource_group(self, subscription_id: str, name: str, location: str = "eastus") -> None:
        with self._lock:
            self._subscriptions.add(subscription_id.lower())
            rg = {"subscription": subscription_id, "name": name, "location": location}
            self._resource_groups.setdefault(_key(_rid(subscription_id, name)), rg)

    def _ensure_rg(self, m: re.Match[str], location: str) -> dict:
        self.add_resource_group(m["sub"], m["rg"], location)
        return self._resource_groups[_key(_rid(m["sub"], m["rg"]))]

    def add_identity(
        self,
        identity_id: str,
        *,
        location: str = "eastus",
        tags: dict | None = None,
        principal_id: str | None = None,
        client_id: str | None = None,
    ) -> dict:
        """Seed an existing, already replicated user-assigned identity (no replication window applies)."""
        m = _parse_resource_id(identity_id)
        with self._lock:
            rg = self._ensure_rg(m, location)
            principal_id, client_id = principal_id or str(uuid.uuid4()), client_id or str(uuid.uuid4())
            body = self._identity_json(m["sub"], rg["name"], m["name"], location, tags, principal_id, client_id)
            self._identities[_key(identity_id)] = _Identity(body, created_at=float("-inf"))
            return copy.deepcopy(body)

    def add_federated_credential(self, identity_id: str, name: str, issuer: str, subject: str) -> dict:
        with self._lock:
            ident = self._identities[_key(identity_id)]
            ident.fics[name.lower()] = self._fic_json(ident, name, issuer, subject, [FIC_AUDIENCE])
            return copy.deepcopy(ident.fics[name.lower()])

    def add_role_definition(
        self,
        role_definition_id: str,
        role_name: str,
        *,
        description: str = "",
        actions: list[str] | None = None,
        not_actions: list[str] | None = None,
        data_actions: list[str] | None = None,
        not_data_actions: list[str] | None = None,
        role_type: str = "CustomRole",
    ) -> None:
        """Make a role definition (GUID or full id) known; the built-in roles Keyless uses are seeded already."""
        permissions = {
            "actions": list(actions or []),
            "notActions": list(not_actions or []),
            "dataActions": list(data_actions or []),
            "notDataActions": list(not_data_actions or []),
        }
        with self._lock:
            self._role_definitions[role_definition_id.rstrip("/").split("/")[-1].lower()] = {
                "roleName": role_name,
                "type": role_type,
                "description": description,
                "assignableScopes": ["/"],
                "permissions": [permissions],
            }

    def add_role_assignment(
        self,
        scope: str,
        name: str,
        principal_id: str,
        role_definition_id: str,
        principal_type: str = "ServicePrincipal",
    ) -> dict:
        """Seed an existing role assignment, bypassing every check."""
        with self._lock:
            ra = self._role_assignment_json(scope, name, principal_id, role_definition_id, principal_type, None)
            self._role_assignments[_key(ra["id"])] = ra
            return copy.deepcopy(ra)

    def add_managed_cluster(
        self,
        cluster_id: str,
        *,
        kube_server_url: str,
        kube_ca_pem: bytes,
        location: str = "eastus",
        oidc_issuer_enabled: bool = True,
        workload_identity_enabled: bool = True,
        provisioning_state: str = "Succeeded",
        tags: dict | None = None,
        disable_local_accounts: bool = True,
        admin_token: str = "admin-token",
        aad_enabled: bool = True,
        kubernetes_version: str = "1.31.5",
        private: bool = False,
        run_command_disabled: bool = False,
    ) -> dict:
        """Seed a managed cluster (and its resource group if missing); returns its ARM JSON.

        `kube_server_url` is where its API server answers. A `private` cluster's kubeconfigs point at
        an address that refuses connections (Keyless is outside the cluster's network); only the
        run-command API reaches the API server then, unless `run_command_disabled`."""
        m = _parse_resource_id(cluster_id)
        with self._lock:
            rg = self._ensure_rg(m, location)
            c = _Cluster({}, kube_server_url, kube_ca_pem, admin_token, str(uuid.uuid4()))
            c.json = self._cluster_json(m["sub"], rg["name"], m["name"], location, kube_server_url, kubernetes_version)
            c.json["tags"] = dict(tags or {})
            props = c.json["properties"]
            if private:  # shaped like ManagedClustersCreate_PrivateClusterFQDNSubdomain.json
                c.unreachable = socket.socket()
                c.unreachable.bind(("127.0.0.1", 0))
                props.pop("fqdn", None)
                props["privateFQDN"] = f"{m['name']}-dns-{uuid.uuid4().hex[:8]}.{uuid.uuid4()}.privatelink." \
                    f"{_norm_location(location)}.azmk8s.io"  # fmt: skip
                props["azurePortalFQDN"] = props["privateFQDN"]
            if private or run_command_disabled:
                props["apiServerAccessProfile"] = {
                    "enablePrivateCluster": private,
                    "enablePrivateClusterPublicFQDN": False,
                    "disableRunCommand": run_command_disabled,
                }
                if private:
                    props["apiServerAccessProfile"]["privateDNSZone"] = "system"
            if aad_enabled:
                aad = {"managed": True, "enableAzureRBAC": True, "adminGroupObjectIDs": [], "tenantID": self.tenant_id}
                props["aadProfile"] = aad
            props["disableLocalAccounts"] = disable_local_accounts
            props["oidcIssuerProfile"] = {"enabled": oidc_issuer_enabled}
            if oidc_issuer_enabled:
                props["oidcIssuerProfile"]["issuerURL"] = self._issuer_url(location, c.issuer_uuid)
            props["securityProfile"] = {"workloadIdentity": {"enabled": workload_identity_enabled}}
            props["provisioningState"] = provisioning_state
            if provisioning_state in _LRO_STATES:
                c.op = self._new_operation(_key(cluster_id))
            self._clusters[_key(cluster_id)] = c
            self._sync_kube_issuer(c)
            return copy.deepcopy(c.json)

    @staticmethod
    def _sync_kube_issuer(c: _Cluster, *, deleted: bool = False) -> None:
        """Tell the Kubernetes emulator serving this cluster (the one started at `c.kube_server_url`, if any)
        the cluster's OIDC issuer URL, so that the service account tokens it issues carry that issuer and
        are signed with that issuer's key (published for the Entra emulator; tests.emulators.kube
        set_issuer). Called wherever issuerURL is assigned, changed or removed. One kube emulator may back
        several clusters in a test: the last issuer set wins; a deleted cluster withdraws its issuer only
        while it is still the kube emulator's current one."""
        from tests.emulators.kube import KubeEmulator  # here, not at the top: no import cycle to think about

        kube = KubeEmulator.at(c.kube_server_url)
        if kube is None:
            return
        issuer = (c.json.get("properties", {}).get("oidcIssuerProfile") or {}).get("issuerURL") or None
        if not deleted:
            kube.set_issuer(issuer)
        elif issuer is not None and kube.issuer == issuer:
            kube.set_issuer(None)

    def recreate_managed_cluster(self, cluster_id: str) -> str:
        """Same id, new cluster: a new OIDC issuer URL (returned; empty string if OIDC is off)."""
        with self._lock:
            c = self._clusters[_key(cluster_id)]
            c.issuer_uuid, c.op = str(uuid.uuid4()), None
            c.json["eTag"] = uuid.uuid4().hex[:8]
            props = c.json["properties"]
            props["provisioningState"] = "Succeeded"
            oidc = props.setdefault("oidcIssuerProfile", {"enabled": False})
            if not oidc.get("enabled"):
                self._sync_kube_issuer(c)
                return ""
            oidc["issuerURL"] = self._issuer_url(c.json["location"], c.issuer_uuid)
            self._sync_kube_issuer(c)
            return oidc["issuerURL"]

    def delete_managed_cluster(self, cluster_id: str) -> None:
        with self._lock:
            c = self._clusters.pop(_key(cluster_id), None)
            if c is not None:
                self._sync_kube_issuer(c, deleted=True)
            if c is not None and c.unreachable is not None:
                c.unreachable.close()

    def set_run_command_disabled(self, cluster_id: str, disabled: bool = True) -> None:
        """apiServerAccessProfile.disableRunCommand, as `az aks update --disable-run-command` sets it."""
        with self._lock:
            props = self._clusters[_key(cluster_id)].json["properties"]
            props.setdefault("apiServerAccessProfile", {})["disableRunCommand"] = disabled

    def fail_run_commands(self, times: int = 1, reason: str = "ImagePullBackoff") -> None:
        """The pods of the next `times` run commands never run: the result says `failed` with `reason`."""
        with self._lock:
            self._run_command_failures.extend([reason] * times)

    def add_cognitive_account(
        self,
        account_id: str,
        *,
        kind: str = "OpenAI",
        custom_subdomain: str | None = _DERIVE,
        location: str = "eastus",
        deployments: list[tuple[str, str, str]] | None = None,
        tags: dict | None = None,
        disable_local_auth: bool = False,
        sku: str = "S0",
    ) -> dict:
        """Seed an account. custom_subdomain defaults to the lower-cased name; None = regional endpoint only.
        deployments: (name, model, version) tuples; default one gpt-4o deployment; [] for none."""
        m = _parse_resource_id(account_id)
        subdomain = m["name"].lower() if custom_subdomain is _DERIVE else custom_subdomain
        with self._lock:
            rg = self._ensure_rg(m, location)
            acct = _Account(self._account_json(m["sub"], rg["name"], m["name"], kind, subdomain, location, sku))
            acct.json["tags"] = dict(tags or {})
            acct.json["properties"]["disableLocalAuth"] = disable_local_auth
            self._accounts[_key(account_id)] = acct
            for name, model, version in [("gpt-4o", "gpt-4o", "2024-08-06")] if deployments is None else deployments:
                self.add_deployment(account_id, name, model, version)
            return copy.deepcopy(acct.json)

    def delete_cognitive_account(self, account_id: str) -> None:
        with self._lock:
            self._accounts.pop(_key(account_id), None)

    def add_deployment(self, account_id: str, name: str, model: str = "gpt-4o", version: str = "2024-08-06") -> None:
        with self._lock:
            acct = self._accounts[_key(account_id)]
            acct.deployments[name.lower()] = {
                "id": f"{acct.json['id']}/deployments/{name}",
                "name": name,
                "type": f"{COG_TYPE}/deployments",
                "sku": {"name": "Standard", "capacity": 10},
                "properties": {
                    "model": {"format": "OpenAI", "name": model, "version": version},
                    "versionUpgradeOption": "OnceNewDefaultVersionAvailable",
                    "capabilities": {"chatCompletion": "true"},
                    "raiPolicyName": "Microsoft.DefaultV2",
                    "currentCapacity": 10,
                    "provisioningState": "Succeeded",
                },
            }

    def remove_deployment(self, account_id: str, name: str) -> None:
        with self._lock:
            self._accounts[_key(account_id)].deployments.pop(name.lower(), None)

    def add_resource(
        self,
        resource_id: str,
        *,
        location: str = "eastus",
        kind: str | None = None,
        properties: dict | None = None,
        tags: dict | None = None,
    ) -> dict:
        """Seed any other resource (a storage account, a key vault ...): it exists as a scope and is GET-able."""
        m = _parse_resource_id(resource_id)
        with self._lock:
            rg = self._ensure_rg(m, location)
            ns_type = f"{m['ns']}/{m['type']}"
            body = {"id": _rid(m["sub"], rg["name"], ns_type, m["name"]), "name": m["name"], "type": ns_type}
            body.update(location=location, tags=dict(tags or {}), properties=properties or {})
            body["properties"].setdefault("provisioningState", "Succeeded")
            if kind:
                body["kind"] = kind
            self._generic[_key(resource_id)] = body
            return copy.deepcopy(body)

    def add_storage_account(self, account_id: str, *, location: str = "eastus") -> dict:
        return self.add_resource(account_id, location=location, kind="StorageV2", properties={"isHnsEnabled": False})

    def add_key_vault(self, vault_id: str, *, location: str = "eastus") -> dict:
        name = vault_id.rstrip("/").split("/")[-1]
        props = {"vaultUri": f"https://{name}.vault.azure.net/", "tenantId": self.tenant_id}
        return self.add_resource(vault_id, location=location, properties=props)

    def set_tags(self, resource_id: str, tags: dict[str, str]) -> None:
        """Replace the tags of any seeded resource (as an out-of-band `az resource tag` would)."""
        key = _key(resource_id)
        with self._lock:
            holder = self._identities.get(key) or self._clusters.get(key) or self._accounts.get(key)
            body = holder.json if holder else self._generic.get(key)
            if body is None:
                raise KeyError(f"no such resource: {resource_id}")
            body["tags"] = dict(tags)

    def inject_fault(
        self,
        method: str,
        path_contains: str,
        status: int,
        code: str = "",
        message: str = "",
        headers: dict | None = None,
        times: int = 1,
        *,
        after_serving: bool = False,
    ) -> None:
        """The next `times` requests with `method` ("*" = any) whose path contains `path_contains`
        (case-insensitive) get this error instead of being served. Status 0 drops the connection.

        With `after_serving` the request is served first (a write happens) and the client still gets
        the error or the dropped connection: it cannot know whether its write took effect."""
        default_codes = {
            400: "BadRequest", 403: "AuthorizationFailed", 404: "NotFound", 409: "Conflict", 429: "TooManyRequests",
            500: "InternalServerError", 502: "BadGateway", 503: "ServiceUnavailable", 504: "GatewayTimeout",
        }  # fmt: skip
        fault = _Fault(
            method.upper(), path_contains.lower(), status, code or default_codes.get(status, "Error"),
            message or f"Injected fault ({status}).", dict(headers or {}), times,
        )  # fmt: skip
        fault.after_serving = after_serving
        with self._lock:
            self._faults.append(fault)

    def inject_latency(self, method: str, path_contains: str, seconds: float, times: int = 1) -> None:
        """The next `times` matching requests are answered `seconds` late (real seconds: the client's
        read timeout and the retry policy see a slow server, not a clock jump)."""
        fault = _Fault(method.upper(), path_contains.lower(), -1, "", "", {}, times, delay_seconds=seconds)
        with self._lock:
            self._faults.append(fault)

    def fail_cluster_updates(
        self, times: int = 1, *, leave_failed: bool = False, cluster_id: str | None = None
    ) -> None:
        """The next `times` cluster create/update operations (of `cluster_id`, or of any cluster)
        end `Failed` when they finish.

        By default the cluster rolls back to its previous properties and `Succeeded` (the update
        can simply be tried again); with `leave_failed` it stays in the `Failed` provisioning state,
        as AKS leaves a cluster whose update broke half-way."""
        with self._lock:
            self._cluster_update_failures.extend([(_key(cluster_id) if cluster_id else None, leave_failed)] * times)

    def enforce_limits(self, scale: float | None = 1.0, *, limits: Limits | None = None) -> None:
        """Turn on every limit (ARM's and the managed identity RP's), refilled `scale` times faster
        than Azure; `scale=None` turns all throttling off. Buckets start full."""
        with self._lock:
            self._buckets.clear()
            if scale is None:
                self.arm_limits_enforced = self.msi_limits_enforced = False
                return
            if scale <= 0:
                raise ValueError("scale must be > 0 (None turns the limits off)")
            self.limits = (limits or Limits()).scaled(scale)
            self.limits_scale = scale
            self.arm_limits_enforced = self.msi_limits_enforced = True

    def throttled(self) -> list[RecordedRequest]:
        """Requests answered 429 (by the limits or by an injected fault)."""
        return [r for r in self.log.items if r.status == 429]

    # ------------------------------------------------------------------ inspection (ARM JSON, deep copies)

    def identities(self) -> list[dict]:
        with self._lock:
            return [copy.deepcopy(i.json) for i in self._identities.values()]

    def identity(self, identity_id: str) -> dict | None:
        with self._lock:
            i = self._identities.get(_key(identity_id))
            return copy.deepcopy(i.json) if i else None

    def federated_credentials(self, identity_id: str) -> list[dict]:
        with self._lock:
            i = self._identities.get(_key(identity_id))
            return [copy.deepcopy(f) for f in i.fics.values()] if i else []

    def fic_write_in_progress(self, identity_id: str) -> bool:
        """Whether a FIC PUT/DELETE currently holds this identity's write marker."""
        with self._lock:
            i = self._identities.get(_key(identity_id))
            return bool(i and i.fic_write_in_progress)

    def role_assignments(self, scope: str | None = None) -> list[dict]:
        """Role assignments exactly at `scope` (case-insensitive); None = all."""
        with self._lock:
            return [
                copy.deepcopy(ra)
                for ra in self._role_assignments.values()
                if scope is None or _key(ra["properties"]["scope"]) == _key(scope)
            ]

    def deployments(self, account_id: str) -> list[dict]:
        """The account's model deployments as ARM answers them (copies); [] for an unknown account."""
        with self._lock:
            account = self._accounts.get(_key(account_id))
            return copy.deepcopy(list(account.deployments.values())) if account else []

    def role_definition(self, guid_or_id: str) -> dict | None:
        """A role definition (built-in or added) by GUID or full id, case-insensitive, as a tenant-level GET shows
        it (`/providers/Microsoft.Authorization/roleDefinitions/{guid}`, properties with `permissions`); None if
        unknown."""
        guid = guid_or_id.rstrip("/").split("/")[-1].lower()
        with self._lock:
            return self._role_definition_json("/", guid) if guid in self._role_definitions else None

    def managed_cluster(self, cluster_id: str) -> dict | None:
        with self._lock:
            c = self._clusters.get(_key(cluster_id))
            if c:
                self._refresh_cluster(c)
            return copy.deepcopy(c.json) if c else None

    def cognitive_account(self, account_id: str) -> dict | None:
        with self._lock:
            a = self._accounts.get(_key(account_id))
            return copy.deepcopy(a.json) if a else None

    def indexed_resources(self) -> list[tuple[str, dict]]:
        """What Resource Graph indexes (tests/emulators/resource_graph.py): (kind, ARM JSON) of every identity,
        role assignment, managed cluster and Cognitive Services account, as a GET would show it now."""
        with self._lock:
            for c in self._clusters.values():
                self._refresh_cluster(c)
            kinds = (
                ("identity", [i.json for i in self._identities.values()]),
                ("roleAssignment", list(self._role_assignments.values())),
                ("cluster", [c.json for c in self._clusters.values()]),
                ("account", [a.json for a in self._accounts.values()]),
            )
            return [(kind, copy.deepcopy(body)) for kind, bodies in kinds for body in bodies]

    # ------------------------------------------------------------------ HTTP plumbing

    def _build_routes(self) -> list[_Route]:
        def r(pattern: str, namespace: str | None, self_locking: tuple[str, ...] = (), **handlers: Callable) -> _Route:
            return _Route(
                re.compile(f"^{pattern}$", re.I),
                {method.upper(): h for method, h in handlers.items()},
                namespace,
                frozenset(self_locking),
            )

        msi, authz = "microsoft.managedidentity", "microsoft.authorization"
        aks, cog = "microsoft.containerservice", "microsoft.cognitiveservices"
        sub = rf"/subscriptions/(?P<sub>{_SEG})/providers"
        scope = r"(?P<scope>.*?)/providers/Microsoft\.Authorization"
        fic = _MSI + rf"/(?P<name>{_SEG})/federatedIdentityCredentials"
        return [  # first match wins: keep the generic patterns last
            r(fic + rf"/(?P<fic>{_SEG})", msi, ("PUT", "DELETE"), put=self._fic_put, get=self._fic_get,
              delete=self._fic_delete),
            r(fic, msi, get=self._fic_list),
            r(_MSI + rf"/(?P<name>{_SEG})", msi, put=self._identity_put, patch=self._identity_patch,
              get=self._identity_get, delete=self._identity_delete),
            r(_MSI, msi, get=self._identity_list),
            r(sub + r"/Microsoft\.ManagedIdentity/userAssignedIdentities", msi, get=self._identity_list),
            r(scope + rf"/roleAssignments/(?P<name>{_SEG})", authz, put=self._ra_put, get=self._ra_get,
              delete=self._ra_delete),
            r(scope + "/roleAssignments", authz, get=self._ra_list),
            r(scope + rf"/roleDefinitions/(?P<name>{_SEG})", authz, get=self._rd_get),
            r(scope + "/roleDefinitions", authz, get=self._rd_list),
            r(_AKS, aks, get=self._cluster_get, put=self._cluster_put),
            r(_RG + r"/providers/Microsoft\.ContainerService/managedClusters", aks, get=self._cluster_list),
            r(sub + r"/Microsoft\.ContainerService/managedClusters", aks, get=self._cluster_list),
            r(_AKS + "/listClusterUserCredential", aks, post=self._cluster_user_credential),
            r(_AKS + "/listClusterAdminCredential", aks, post=self._cluster_admin_credential),
            r(_AKS + "/runCommand", aks, ("POST",), post=self._run_command),
            r(_AKS + rf"/commandResults/(?P<command>{_SEG})", aks, get=self._command_result),
            r(sub + rf"/Microsoft\.ContainerService/locations/{_SEG}/operations/(?P<op>{_SEG})", aks,
              get=self._operation_get),
            r(_COG + rf"/(?P<name>{_SEG})/deployments/(?P<dep>{_SEG})", cog, get=self._deployment_get),
            r(_COG + rf"/(?P<name>{_SEG})/deployments", cog, get=self._deployment_list),
            r(_COG + rf"/(?P<name>{_SEG})", cog, get=self._account_get, patch=self._account_patch),
            r(_COG, cog, get=self._account_list),
            r(sub + r"/Microsoft\.CognitiveServices/accounts", cog, get=self._account_list),
            r(sub + rf"/Microsoft\.CognitiveServices/locations/{_SEG}/operationStatuses/(?P<op>{_SEG})", cog,
              get=self._operation_get),
            r(r"/providers/Microsoft\.ResourceGraph/resources", "microsoft.resourcegraph", ("POST",),
              post=self.resource_graph.query),
            r(_RG, None, get=self._resource_group_get),
            r(_RG + rf"/providers/(?P<ns>{_SEG})/(?P<type>{_SEG})/(?P<name>{_SEG})", None, get=self._generic_get),
        ]  # fmt: skip

    def _wsgi(self, environ: dict, start_response: Callable) -> Any:
        request = Request(environ)
        path = "/" + "/".join(p for p in request.path.split("/") if p)
        try:
            response = self._handle(request, path)
            if 200 <= response.status_code < 300:
                self._apply_fault(request.method, path, after_serving=True)
        except _DropConnection:
            self._record(request, 0)
            sock = environ.get("werkzeug.socket")
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
            raise ConnectionResetError("fault injection: connection dropped") from None  # werkzeug drops it quietly
        except ArmError as e:  # an after-serving fault: the write happened, the client hears otherwise
            response = json_response({"error": {"code": e.code, "message": e.message}}, e.status, e.headers.items())
        response.headers["x-ms-request-id"] = str(uuid.uuid4())
        response.headers["x-ms-correlation-request-id"] = str(uuid.uuid4())
        self._record(request, response.status_code)
        return response(environ, start_response)

    def _record(self, request: Request, status: int) -> None:
        recorded = RecordedRequest.of(request, status)
        self.log.add(recorded)
        for hook in list(self.request_hooks):
            hook(recorded)

    def _handle(self, request: Request, path: str) -> Response:
        try:
            self._authenticate(request)
            remaining = self._throttle(request, path)
            self._apply_fault(request.method, path)
            for route in self._routes:
                m = route.pattern.match(path)
                if not m:
                    continue
                handler = route.handlers.get(request.method)
                if handler is None:
                    raise ArmError(
                        405, "MethodNotAllowed", f"The emulator does not serve {request.method} on '{path}'."
                    )
                api_version = self._check_api_version(request, route.namespace)
                ctx = _Ctx(request, m.groupdict(), request.host_url.rstrip("/"), api_version)
                if request.method in route.self_locking:
                    response = handler(ctx)
                else:
                    with self._lock:
                        response = handler(ctx)
                response.headers.extend(remaining)
                return response
            raise self._unknown_path(path)
        except ArmError as e:
            headers = list(e.headers.items())
            if e.status == 401:
                authority = f"https://login.microsoftonline.com/{self.tenant_id}"
                challenge = (
                    f'Bearer authorization_uri="{authority}", error="invalid_token", error_description="{e.message}"'
                )
                headers.append(("WWW-Authenticate", challenge))
            return json_response({"error": {"code": e.code, "message": e.message}}, e.status, headers)
        except _DropConnection:
            raise
        except Exception as e:  # noqa: BLE001 - an emulator bug: answer like ARM would, but say what broke
            return json_response({"error": {"code": "InternalServerError", "message": f"emulator bug: {e!r}"}}, 500)

    def _authenticate(self, request: Request) -> None:
        if "Authorization" not in request.headers:
            raise ArmError(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.")
        token = bearer_token(request)
        if token is None:
            message = "Authentication failed. The 'Authorization' header is provided in an invalid format."
            raise ArmError(401, "AuthenticationFailed", message)
        if token != token_for_scope(self.token_scope):
            raise ArmError(401, "InvalidAuthenticationToken", "The access token is invalid.")

    def _apply_fault(self, method: str, path: str, after_serving: bool = False) -> None:
        delay = 0.0
        with self._lock:
            for f in self._faults:
                if f.after_serving != after_serving or not f.matches(method, path):
                    continue
                f.remaining -= 1
                if f.status == -1:  # a latency: keep looking for an error to answer with
                    delay += f.delay_seconds
                    continue
                if f.status == 0:
                    raise _DropConnection()
                raise ArmError(f.status, f.code, f.message, f.headers)
        if delay:
            time.sleep(delay)  # a slow server, outside the lock: other requests go on meanwhile

    # ------------------------------------------------------------------ throttling

    def _bucket_keys(self, request: Request, path: str) -> list[tuple[tuple[str, ...], Bucket | Window, str]]:
        """(state key, limit, remaining-header name) of every limit this request counts against."""
        m = re.match(r"^/subscriptions/([^/]+)", path, re.I)
        if not m:
            return []
        sub, method, low = m[1].lower(), request.method.upper(), path.lower()
        kind = "reads" if method in ("GET", "HEAD") else "deletes" if method == "DELETE" else "writes"
        keys: list[tuple[tuple[str, ...], Bucket | Window, str]] = []
        if self.arm_limits_enforced:
            principal = bearer_token(request) or ""
            bucket = getattr(self.limits, f"arm_{kind}")
            keys.append((("arm", principal, sub, kind), bucket, f"x-ms-ratelimit-remaining-subscription-{kind}"))
        identity_put = method == "PUT" and re.search(
            r"/providers/microsoft\.managedidentity/userassignedidentities/[^/]+$", low
        )
        if self.msi_limits_enforced and identity_put:
            try:
                location = json.loads(request.get_data(as_text=True) or "{}").get("location")
            except (ValueError, AttributeError):
                location = None
            region = _norm_location(location) if isinstance(location, str) else ""
            keys.append((("msi-identity-creates", sub, region), self.limits.identity_creates, ""))
        return keys

    def _throttle(self, request: Request, path: str) -> list[tuple[str, str]]:
        """Take a token from every bucket the request counts against, or answer 429 (taking none).
        Returns the x-ms-ratelimit-remaining-* headers for the response."""
        keys = self._bucket_keys(request, path)
        if not keys:
            return []
        with self._lock:
            now = self.clock.now()
            states = [
                self._buckets.setdefault(k, _Log() if isinstance(b, Window) else _Tokens(b.size, now))
                for k, b, _ in keys
            ]
            waits = [state.wait(b, now) for state, (_, b, _) in zip(states, keys, strict=True)]
            if max(waits) > 0:
                wait = max(waits)
                (limit_key, _, _) = keys[waits.index(wait)]
                if limit_key[0] == "arm":
                    raise ArmError(
                        429,
                        "SubscriptionRequestsThrottled",
                        f"Number of '{limit_key[-1]}' requests for subscription exceeded the limit. Please try again "
                        f"after {wait:.2f} seconds. Refer to https://aka.ms/arm-throttling",
                        {"Retry-After": self._retry_after_value(wait)},
                    )
                raise ArmError(  # code and message: guesses (ERROR_SOURCES)
                    429,
                    "TooManyRequests",
                    f"Too many user-assigned identity create operations for subscription '{limit_key[1]}' in region "
                    f"'{limit_key[2]}'. Please try again after {wait:.2f} seconds.",
                    {"Retry-After": self._retry_after_value(wait)},
                )
            headers = []
            for state, (_, _, header) in zip(states, keys, strict=True):
                state.take(now)
                if header:
                    headers.append((header, str(int(state.tokens))))
            return headers

    def _retry_after_value(self, wait: float) -> str:
        """Whole seconds of Azure's time (ARM sends integers); in our time when the limits are scaled."""
        azure_seconds = max(1, math.ceil(wait * self.limits_scale - 1e-9))
        if self.limits_scale == 1:
            return str(azure_seconds)
        return f"{azure_seconds / self.limits_scale:.3f}"

    def _check_api_version(self, request: Request, namespace: str | None) -> str:
        version = request.args.get("api-version")
        if not version:
            message = "The api-version query parameter (?api-version=) is required for all requests."
            raise _bad_request(message, "MissingApiVersionParameter")
        supported = self.api_versions.get(namespace or "", set())
        if not re.match(r"^\d{4}-\d{2}-\d{2}(-preview)?$", version) or (namespace and version not in supported):
            listed = ",".join(sorted(supported, reverse=True))
            message = f"The api-version '{version}' is invalid. The supported versions are '{listed}'."
            raise _bad_request(message, "InvalidApiVersionParameter")
        return version

    def _unknown_path(self, path: str) -> ArmError:
        m = _RESOURCE_ID_RE.match(path) or re.match(_RG + rf"/providers/(?P<ns>{_SEG})/(?P<type>{_SEG})", path, re.I)
        if m and m["ns"].lower() in self.api_versions:
            message = f"The resource type '{m['type']}' could not be found in the namespace '{m['ns']}'."
            return ArmError(404, "InvalidResourceType", message)  # 404: guess
        if m:
            self._require_rg(m["sub"], m["rg"])
            return _not_found(f"{m['ns']}/{m['type']}", m.groupdict().get("name") or "", m["rg"])
        return ArmError(404, "NotFound", f"The emulator does not serve '{path}'.")

    # ------------------------------------------------------------------ shared helpers

    def _require_subscription(self, sub: str) -> None:
        if sub.lower() not in self._subscriptions:
            raise ArmError(404, "SubscriptionNotFound", f"The subscription '{sub}' could not be found.")

    def _require_rg(self, sub: str, rg: str) -> dict:
        self._require_subscription(sub)
        found = self._resource_groups.get(_key(_rid(sub, rg)))
        if not found:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")
        return found

    def _page(self, ctx: _Ctx, items: list[dict], token_param: str = "$skipToken") -> Response:
        """One page of `items`, with an absolute nextLink (the SDKs follow it verbatim, adding api-version)."""
        try:
            start, top = int(ctx.arg(token_param) or 0), int(ctx.arg("$top") or 0)
        except ValueError:
            raise _bad_request("The provided skip token or $top value is not valid.", "InvalidSkipToken") from None
        size = min(top, self.page_size) if top > 0 else self.page_size
        page: dict[str, Any] = {"value": [copy.deepcopy(i) for i in items[start : start + size]]}
        if start + size < len(items):
            params = {k: v for k, v in ctx.request.args.items() if k.lower() != token_param.lower()}
            params[token_param] = str(start + size)
            query = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
            page["nextLink"] = f"{ctx.base_url}{ctx.request.path}?{query}"
        return json_response(page)

    def _in_scope(self, items: dict[str, Any], ctx: _Ctx) -> list[Any]:
        """The values of `items` (keyed by resource id) under the subscription / resource group of the route."""
        if ctx.groups.get("rg"):
            self._require_rg(ctx.groups["sub"], ctx.groups["rg"])
            prefix = _key(_rid(ctx.groups["sub"], ctx.groups["rg"])) + "/"
        else:
            self._require_subscription(ctx.groups["sub"])
            prefix = _key(f"/subscriptions/{ctx.groups['sub']}") + "/"
        return [v for k, v in items.items() if k.startswith(prefix)]

    def _lro_headers(self, ctx: _Ctx, provider: str, kind: str, location: str, op: _Operation) -> dict[str, str]:
        url = (
            f"{ctx.base_url}/subscriptions/{ctx.groups['sub']}/providers/{provider}/locations/"
            f"{_norm_location(location)}/{kind}/{op.id}?api-version={ctx.api_version}"
        )
        return {"Azure-AsyncOperation": url, **self._retry_after()}

    def _retry_after(self) -> dict[str, str]:
        # azure-core treats "Retry-After: 0" as absent and then waits its polling_interval (30 s):
        # a small Retry-After-Ms is what makes SDK pollers quick.
        return {"Retry-After-Ms": str(self.lro_retry_after_ms)} if self.lro_retry_after_ms is not None else {}

    def _new_operation(self, resource_key: str, done: bool = False) -> _Operation:
        now = self.clock.now()
        op = _Operation(str(uuid.uuid4()), "Succeeded" if done else "InProgress", now, resource_key)
        op.ended = now if done else None
        self._operations[op.id] = op
        return op

    def _operation_get(self, ctx: _Ctx) -> Response:
        op = self._operations.get(ctx.groups["op"].lower())
        if op is None:
            raise ArmError(404, "NotFound", f"Operation '{ctx.groups['op']}' was not found.")  # guess
        cluster = self._clusters.get(op.resource_key)
        body: dict[str, Any] = {"name": op.id}
        if cluster is not None and cluster.op is op:
            self._refresh_cluster(cluster)
            op.polls += op.status == "InProgress"
        elif op.status == "InProgress":  # the cluster was deleted or recreated under the operation
            op.status, op.ended = "Canceled", self.clock.now()
            body["error"] = {"code": "Canceled", "message": "The cluster was deleted or recreated."}  # guess
        if op.status == "Failed":
            message = "The operation failed with an internal error; retry it."  # guess
            body["error"] = {"code": "InternalOperationError", "message": message}
        body.update(status=op.status, startTime=_iso(op.started))
        if op.ended is not None:
            body["endTime"] = _iso(op.ended)
        return json_response(body, 200, self._retry_after().items())

    def _resource_exists(self, key: str) -> bool:
        if key in self._identities or key in self._clusters or key in self._accounts or key in self._generic:
            return True
        parent, child_type, child = key.rsplit("/", 2)
        if child_type == "federatedidentitycredentials" and parent in self._identities:
            return child in self._identities[parent].fics
        if child_type == "deployments" and parent in self._accounts:
            return child in self._accounts[parent].deployments
        return False

    def _require_scope(self, scope: str) -> None:
        parts = [p for p in scope.split("/") if p]
        if not parts or parts[0].lower() != "subscriptions":
            return  # tenant root or a management group: not modelled, accepted
        self._require_subscription(parts[1])
        if len(parts) >= 4:
            self._require_rg(parts[1], parts[3])
        if len(parts) > 4:
            if len(parts) % 2 or parts[4].lower() != "providers":
                raise _bad_request(f"The scope '{scope}' is not valid.", "InvalidRoleAssignmentScope")  # guess
            if not self._resource_exists(_key(scope)):
                raise _not_found(f"{parts[5]}/{parts[6]}", parts[7], parts[3])

    # ------------------------------------------------------------------ Microsoft.ManagedIdentity

    def _identity_json(
        self,
        sub: str,
        rg: str,
        name: str,
        location: str,
        tags: dict | None,
        principal_id: str,
        client_id: str,
        isolation: str = "None",
    ) -> dict:
        return {
            # Real MSI answers with "resourcegroups" in lower case (its spec examples do too).
            "id": f"/subscriptions/{sub}/resourcegroups/{rg}/providers/{MSI_TYPE}/{name}",
            "name": name,
            "type": MSI_TYPE,
            "location": location,
            "tags": dict(tags or {}),
            "properties": {
                "tenantId": self.tenant_id,
                "principalId": principal_id,
                "clientId": client_id,
                "isolationScope": isolation,
            },
        }

    def _find_identity(self, ctx: _Ctx) -> _Identity:
        self._require_rg(ctx.groups["sub"], ctx.groups["rg"])
        ident = self._identities.get(ctx.key(MSI_TYPE))
        if ident is None:
            raise _not_found(MSI_TYPE, ctx.groups["name"], ctx.groups["rg"])
        return ident

    def _identity_put(self, ctx: _Ctx) -> Response:
        g = ctx.groups
        rg = self._require_rg(g["sub"], g["rg"])
        if not _IDENTITY_NAME_RE.match(g["name"]):
            raise _bad_request(  # code: guess; the rule is the documented one
                f"Resource name '{g['name']}' is invalid. The name can contain only letters, numbers, underscores "
                "and hyphens. The name must start with a letter or number and be 3-128 characters long.",
                "InvalidResourceName",
            )
        body = ctx.body()
        location = body.get("location")
        if not location:
            raise _bad_request("The location property is required for this definition.", "LocationRequired")
        isolation = (body.get("properties") or {}).get("isolationScope")
        existing = self._identities.get(ctx.key(MSI_TYPE))
        if existing is None:
            principal_id, client_id = str(uuid.uuid4()), str(uuid.uuid4())
            identity_json = self._identity_json(
                g["sub"],
                rg["name"],
                g["name"],
                location,
                body.get("tags"),
                principal_id,
                client_id,
                isolation or "None",
            )
            self._identities[ctx.key(MSI_TYPE)] = _Identity(identity_json, created_at=self.clock.now())
            return json_response(identity_json, 201)
        if _norm_location(existing.json["location"]) != _norm_location(location):
            raise _location_conflict(g["name"], existing.json["location"], rg["name"], location)
        existing.json["tags"] = dict(body.get("tags") or {})
        if isolation:
            existing.json["properties"]["isolationScope"] = isolation
        return json_response(existing.json, 200)

    def _identity_patch(self, ctx: _Ctx) -> Response:
        ident = self._find_identity(ctx)
        body = ctx.body()
        if "tags" in body:
            ident.json["tags"] = dict(body["tags"] or {})
        isolation = (body.get("properties") or {}).get("isolationScope")
        if isolation:
            ident.json["properties"]["isolationScope"] = isolation
        return json_response(ident.json, 200)

    def _identity_get(self, ctx: _Ctx) -> Response:
        return json_response(self._find_identity(ctx).json)

    def _identity_delete(self, ctx: _Ctx) -> Response:
        self._require_rg(ctx.groups["sub"], ctx.groups["rg"])
        ident = self._identities.pop(ctx.key(MSI_TYPE), None)
        if ident is None:
            return Response(status=204)
        self._deleted_principals.add(ident.json["properties"]["principalId"].lower())  # its FICs go with it
        return Response(status=200)

    def _identity_list(self, ctx: _Ctx) -> Response:
        return self._page(ctx, [i.json for i in self._in_scope(self._identities, ctx)], "$skiptoken")

    # --- federated identity credentials

    @staticmethod
    def _fic_json(ident: _Identity, name: str, issuer: str, subject: str, audiences: list[str]) -> dict:
        return {
            "id": f"{ident.json['id']}/federatedIdentityCredentials/{name}",
            "name": name,
            "type": f"{MSI_TYPE}/federatedIdentityCredentials",
            "properties": {"issuer": issuer, "subject": subject, "audiences": list(audiences)},
        }

    def _fic_parent(self, ctx: _Ctx) -> _Identity:
        self._require_rg(ctx.groups["sub"], ctx.groups["rg"])
        ident = self._identities.get(ctx.key(MSI_TYPE))
        if ident is None or self.clock.now() - ident.created_at < self.fic_parent_replication_seconds:
            message = f"Can not perform requested operation on nested resource. Parent resource '{ctx.groups['name']}'"
            raise ArmError(404, "ParentResourceNotFound", message + " not found.")
        return ident

    def _fic_write(self, ctx: _Ctx, write: Callable[[_Identity], Response]) -> Response:
        """Run one FIC write while holding the identity's "write in progress" marker, as MSI does."""
        with self._lock:
            ident = self._fic_parent(ctx)
            if ident.fic_writes_in_flight >= self.limits.credential_writes_per_identity:
                raise ArmError(
                    409,
                    "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity",
                    "Too many Federated Identity Credentials are written concurrently for the managed identity "
                    f"'{ident.json['id'].lower()}'. Concurrent Federated Identity Credentials writes under the same "
                    "managed identity are not supported.",
                )
            ident.fic_writes_in_flight += 1
        try:
            if self.fic_write_latency_seconds > 0:
                time.sleep(self.fic_write_latency_seconds)  # real seconds: the marker is held meanwhile
            with self._lock:
                return write(ident)
        finally:
            with self._lock:
                ident.fic_writes_in_flight -= 1

    def _fic_put(self, ctx: _Ctx) -> Response:
        name = ctx.groups["fic"]
        if not _FIC_NAME_RE.match(name):
            raise _bad_request(f"Federated Identity Credential name '{name}' is invalid.")
        issuer, subject, audiences = self._validate_fic_properties(ctx.body().get("properties") or {})

        def write(ident: _Identity) -> Response:
            existing = ident.fics.get(name.lower())
            for other_name, other in ident.fics.items():
                same = other["properties"]["issuer"] == issuer and other["properties"]["subject"] == subject
                if same and other_name != name.lower():  # code from a user report; status and message: docs
                    message = "Issuer and subject combination already exists for this Managed Identity."
                    raise _bad_request(message, "Conflict")
            if existing is None and len(ident.fics) >= FIC_LIMIT:  # the limit is documented; code/message: guess
                raise _bad_request(
                    f"The maximum number of federated identity credentials ({FIC_LIMIT}) for this managed identity "
                    "has been reached."
                )
            fic = self._fic_json(ident, existing["name"] if existing else name, issuer, subject, audiences)
            ident.fics[name.lower()] = fic
            return json_response(fic, 200 if existing else 201)

        return self._fic_write(ctx, write)

    @staticmethod
    def _validate_fic_properties(props: dict) -> tuple[str, str, list[str]]:
        issuer, subject, audiences = props.get("issuer"), props.get("subject"), props.get("audiences")
        if not issuer or not subject or not audiences:
            raise _bad_request("Federated Identity Credential from HTTP body has empty properties")
        if not isinstance(audiences, list) or len(audiences) != 1:
            raise _bad_request("Federated identity credentials must have exactly 1 audience.")
        if audiences[0] != FIC_AUDIENCE:  # guess (message)
            raise _bad_request(f"Federated identity credential audience '{audiences[0]}' is not supported.")
        issuer, subject = str(issuer), str(subject)
        url = urllib.parse.urlparse(issuer)
        if url.scheme != "https" or not url.netloc or len(issuer) > 600 or "*" in issuer:  # guess (message)
            message = f"Federated identity credential issuer '{issuer[:100]}' is invalid: it must be an https URL"
            raise _bad_request(message + " of at most 600 characters, without wildcards.")
        if len(subject) > 600 or "*" in subject:  # guess (message)
            raise _bad_request(
                "Federated identity credential subject is invalid: at most 600 characters, no wildcards."
            )
        return issuer, subject, audiences

    def _fic_get(self, ctx: _Ctx) -> Response:
        fic = self._fic_parent(ctx).fics.get(ctx.groups["fic"].lower())
        if fic is None:
            name = f"{ctx.groups['name']}/{ctx.groups['fic']}"
            raise _not_found(f"{MSI_TYPE}/federatedIdentityCredentials", name, ctx.groups["rg"])
        return json_response(fic)

    def _fic_delete(self, ctx: _Ctx) -> Response:
        with self._lock:
            self._require_rg(ctx.groups["sub"], ctx.groups["rg"])
            if ctx.key(MSI_TYPE) not in self._identities:
                return Response(status=204)
        return self._fic_write(
            ctx, lambda ident: Response(status=200 if ident.fics.pop(ctx.groups["fic"].lower(), None) else 204)
        )

    def _fic_list(self, ctx: _Ctx) -> Response:
        return self._page(ctx, list(self._fic_parent(ctx).fics.values()), "$skiptoken")

    # ------------------------------------------------------------------ Microsoft.Authorization

    def _role_assignment_json(
        self,
        scope: str,
        name: str,
        principal_id: str,
        role_definition_id: str,
        principal_type: str,
        description: str | None,
    ) -> dict:
        scope = "/" + scope.strip("/")
        now = _iso(self.clock.now())
        guid = role_definition_id.rstrip("/").split("/")[-1]
        properties = {
            # As the official examples do: no /subscriptions/<id> prefix, whatever the request sent.
            "roleDefinitionId": f"/providers/Microsoft.Authorization/roleDefinitions/{guid}",
            "principalId": principal_id,
            "principalType": principal_type,
            "scope": scope,
            "condition": None,
            "conditionVersion": None,
            "createdOn": now,
            "updatedOn": now,
            "createdBy": None,
            "updatedBy": CALLER_OBJECT_ID,
            "delegatedManagedIdentityResourceId": None,
            "description": description,
        }
        assignment_id = f"{scope.rstrip('/')}/providers/Microsoft.Authorization/roleAssignments/{name}"
        ra_type = "Microsoft.Authorization/roleAssignments"
        return {"properties": properties, "id": assignment_id, "type": ra_type, "name": name}

    def _principal_created_at(self, principal_id: str) -> float | None:
        """When the emulator minted this principal (-inf: seeded or foreign); None if it was deleted."""
        if principal_id.lower() in self._deleted_principals:
            return None
        for ident in self._identities.values():
            if ident.json["properties"]["principalId"].lower() == principal_id.lower():
                return ident.created_at
        return float("-inf")

    def _ra_put(self, ctx: _Ctx) -> Response:
        scope, name = ctx.groups["scope"], ctx.groups["name"]
        if not _GUID_RE.match(name):
            message = f"The role assignment ID '{name}' is not valid. The role assignment ID must be a GUID."
            raise _bad_request(message, "InvalidRoleAssignmentId")
        props = ctx.body().get("properties") or {}
        principal_id, role_id = props.get("principalId"), props.get("roleDefinitionId")
        if not principal_id or not role_id:
            message = "The request to create a role assignment needs properties.principalId and roleDefinitionId."
            raise _bad_request(message, "InvalidRequestFormat")  # guess
        if not _GUID_RE.match(principal_id):
            message = f"The Principal ID '{principal_id}' is not valid. Principal ID must be a GUID."
            raise _bad_request(message, "InvalidPrincipalId")
        if props.get("scope") and _key(props["scope"]) != _key(scope):
            raise _bad_request(  # code: guess; message from a public report
                f"The request to create role assignment '{name}' is not valid. Role assignment scope "
                f"'{props['scope']}' must match the scope specified on the URI '{scope}'.",
                "InvalidCreateRoleAssignmentRequest",
            )
        self._require_scope(scope)
        guid = role_id.rstrip("/").split("/")[-1].lower()
        if guid not in self._role_definitions:
            message = f"The specified role definition with ID '{guid}' does not exist."
            raise _bad_request(message, "RoleDefinitionDoesNotExist")
        created_at = self._principal_created_at(principal_id)
        skip_lookup = self.principal_type_skips_replication and props.get("principalType")
        if created_at is None or (
            not skip_lookup and self.clock.now() - created_at < self.principal_replication_seconds
        ):
            raise _bad_request(
                f"Principal {principal_id.replace('-', '')} does not exist in the directory {self.tenant_id}. Check "
                "that you have the correct principal ID. If you are creating this principal and then immediately "
                "assigning a role, this error might be related to a replication delay. In this case, set the role "
                "assignment principalType property to a value, such as ServicePrincipal, User, or Group.  See "
                "https://aka.ms/docs-principaltype",
                "PrincipalNotFound",
            )
        key = _key(f"{scope}/providers/Microsoft.Authorization/roleAssignments/{name}")
        same_name = next((ra for ra in self._role_assignments.values() if ra["name"].lower() == name.lower()), None)
        if same_name:  # names are unique across all scopes
            p = same_name["properties"]
            if (
                _key(same_name["id"]) != key
                or p["principalId"].lower() != principal_id.lower()
                or p["roleDefinitionId"].split("/")[-1].lower() != guid
            ):
                message = "Tenant ID, application ID, principal ID, and scope are not allowed to be updated."
                raise _bad_request(message, "RoleAssignmentUpdateNotPermitted")
            if "description" in props and props["description"] != p["description"]:
                p["description"], p["updatedOn"] = props["description"], _iso(self.clock.now())
                return json_response(same_name, 200)
            return json_response(same_name, 201)  # an identical re-PUT
        for ra in self._role_assignments.values():
            p = ra["properties"]
            if (_key(p["scope"]), p["principalId"].lower(), p["roleDefinitionId"].split("/")[-1].lower()) == (
                _key(scope),
                principal_id.lower(),
                guid,
            ):
                raise ArmError(409, "RoleAssignmentExists", "The role assignment already exists.")
        is_identity = created_at != float("-inf") or any(
            i.json["properties"]["principalId"].lower() == principal_id.lower() for i in self._identities.values()
        )
        principal_type = props.get("principalType") or ("ServicePrincipal" if is_identity else "User")
        ra = self._role_assignment_json(scope, name, principal_id, guid, principal_type, props.get("description"))
        self._role_assignments[key] = ra
        return json_response(ra, 201)

    def _ra_key(self, ctx: _Ctx) -> str:
        return _key(f"{ctx.groups['scope']}/providers/Microsoft.Authorization/roleAssignments/{ctx.groups['name']}")

    def _ra_get(self, ctx: _Ctx) -> Response:
        ra = self._role_assignments.get(self._ra_key(ctx))
        if ra is None:
            raise ArmError(404, "RoleAssignmentNotFound", f"The role assignment '{ctx.groups['name']}' is not found.")
        return json_response(ra)

    def _ra_delete(self, ctx: _Ctx) -> Response:
        ra = self._role_assignments.pop(self._ra_key(ctx), None)
        return json_response(ra, 200) if ra else Response(status=204)

    def _ra_list(self, ctx: _Ctx) -> Response:
        """At, above (inherited) and below the scope; `atScope()` drops "below"; principalId / assignedTo filter."""
        self._require_scope(ctx.groups["scope"])
        scope = _key(ctx.groups["scope"] or "/")
        at_scope, principal = False, None
        for clause in re.split(r"\s+and\s+", (ctx.arg("$filter") or "").strip(), flags=re.I):
            m = re.match(r"^(?:principalId\s+eq\s+'?([0-9a-f-]+)'?|assignedTo\('([0-9a-f-]+)'\))$", clause, re.I)
            if clause.lower() == "atscope()":
                at_scope = True
            elif m:
                principal = (m[1] or m[2]).lower()
            elif clause:
                raise _bad_request(f"The filter '{clause}' is not supported.", "UnsupportedQuery")  # guess

        def applies(ra: dict) -> bool:
            s = _key(ra["properties"]["scope"])
            above = s in (scope, "/") or scope.startswith(s + "/")
            below = s.startswith(scope.rstrip("/") + "/")
            matches = principal is None or ra["properties"]["principalId"].lower() == principal
            return (above or (below and not at_scope)) and matches

        return self._page(ctx, [ra for ra in self._role_assignments.values() if applies(ra)])

    def _role_definition_json(self, scope: str, guid: str) -> dict:
        parts = [p for p in scope.split("/") if p]
        prefix = f"/subscriptions/{parts[1]}" if len(parts) >= 2 and parts[0].lower() == "subscriptions" else ""
        return {
            "properties": copy.deepcopy(self._role_definitions[guid]),
            "id": f"{prefix}/providers/Microsoft.Authorization/roleDefinitions/{guid}",
            "type": "Microsoft.Authorization/roleDefinitions",
            "name": guid,
        }

    def _rd_get(self, ctx: _Ctx) -> Response:
        guid = ctx.groups["name"].lower()
        if guid not in self._role_definitions:
            message = f"The specified role definition with ID '{guid}' does not exist."
            raise ArmError(404, "RoleDefinitionDoesNotExist", message)
        return json_response(self._role_definition_json(ctx.groups["scope"], guid))

    def _rd_list(self, ctx: _Ctx) -> Response:
        flt = (ctx.arg("$filter") or "").strip()
        m = re.match(r"^roleName\s+eq\s+'(.*)'$", flt, re.I)
        if flt and not m:
            raise _bad_request(f"The filter '{flt}' is not supported.", "UnsupportedQuery")  # guess
        guids = [g for g, rd in self._role_definitions.items() if not m or rd["roleName"].lower() == m[1].lower()]
        return self._page(ctx, [self._role_definition_json(ctx.groups["scope"], g) for g in guids])

    # ------------------------------------------------------------------ Microsoft.ContainerService

    def _issuer_url(self, location: str, issuer_uuid: str) -> str:
        return f"https://{_norm_location(location)}.oic.prod-aks.azure.com/{self.tenant_id}/{issuer_uuid}/"

    @staticmethod
    def _default_pool(name: str, version: str) -> dict:
        return {
            "name": name, "count": 3, "vmSize": "Standard_D4ds_v5", "osDiskSizeGB": 128, "osDiskType": "Ephemeral",
            "maxPods": 250, "type": "VirtualMachineScaleSets", "availabilityZones": ["1", "2", "3"],
            "enableAutoScaling": False, "provisioningState": "Succeeded", "powerState": {"code": "Running"},
            "orchestratorVersion": version, "currentOrchestratorVersion": version, "enableNodePublicIP": False,
            "mode": "System", "osType": "Linux", "osSKU": "Ubuntu", "eTag": uuid.uuid4().hex[:8],
            "nodeImageVersion": "AKSUbuntu-2204gen2containerd-202506.02.0", "upgradeSettings": {"maxSurge": "10%"},
        }  # fmt: skip

    def _cluster_json(self, sub: str, rg: str, name: str, location: str, server_url: str, version: str) -> dict:
        """A cluster shaped like ManagedClustersGet.json (2026-08-01), without AAD / OIDC / workload identity."""
        host = urllib.parse.urlparse(server_url).hostname or ""
        node_rg = f"MC_{rg}_{name}_{_norm_location(location)}"
        outbound_ip = _rid(sub, node_rg, "Microsoft.Network/publicIPAddresses", str(uuid.uuid4()))
        kubelet_identity = _rid(sub, node_rg, MSI_TYPE, f"{name}-agentpool")
        properties = {
            "provisioningState": "Succeeded", "powerState": {"code": "Running"}, "maxAgentPools": 100,
            "kubernetesVersion": version, "currentKubernetesVersion": version, "dnsPrefix": f"{name}-dns",
            "fqdn": host, "azurePortalFQDN": host, "agentPoolProfiles": [self._default_pool("nodepool1", version)],
            "linuxProfile": {"adminUsername": "azureuser", "ssh": {"publicKeys": [{"keyData": "ssh-rsa AAAA k"}]}},
            "windowsProfile": {"adminUsername": "azureuser", "enableCSIProxy": True},
            "servicePrincipalProfile": {"clientId": "msi"}, "nodeResourceGroup": node_rg, "enableRBAC": True,
            "supportPlan": "KubernetesOfficial", "disableLocalAccounts": False,
            "networkProfile": {
                "networkPlugin": "azure", "networkPluginMode": "overlay", "networkDataplane": "azure",
                "loadBalancerSku": "standard", "outboundType": "loadBalancer",
                "loadBalancerProfile": {
                    "managedOutboundIPs": {"count": 1}, "effectiveOutboundIPs": [{"id": outbound_ip}],
                    "allocatedOutboundPorts": 0, "idleTimeoutInMinutes": 30, "backendPoolType": "nodeIPConfiguration",
                },
                "podCidr": "10.244.0.0/16", "serviceCidr": "10.0.0.0/16", "dnsServiceIP": "10.0.0.10",
                "podCidrs": ["10.244.0.0/16"], "serviceCidrs": ["10.0.0.0/16"], "ipFamilies": ["IPv4"],
            },
            "autoUpgradeProfile": {"upgradeChannel": "patch", "nodeOSUpgradeChannel": "NodeImage"},
            "identityProfile": {"kubeletidentity": {
                "resourceId": kubelet_identity, "clientId": str(uuid.uuid4()), "objectId": str(uuid.uuid4()),
            }},
        }  # fmt: skip
        return {
            "id": _rid(sub, rg, AKS_TYPE, name), "name": name, "type": "Microsoft.ContainerService/ManagedClusters",
            "location": location, "tags": {}, "eTag": uuid.uuid4().hex[:8], "sku": {"name": "Base", "tier": "Free"},
            "identity": {"type": "SystemAssigned", "principalId": str(uuid.uuid4()), "tenantId": self.tenant_id},
            "properties": properties,
        }  # fmt: skip

    def _refresh_cluster(self, c: _Cluster) -> None:
        """Finish the running operation once its clock time or its poll budget is used up."""
        op = c.op
        if op is None or op.status != "InProgress":
            return
        if self.clock.now() - op.started < self.cluster_update_seconds and op.polls < self.cluster_update_polls:
            return
        op.status, op.ended = "Failed" if op.fail else "Succeeded", self.clock.now()
        if op.fail:
            if op.rollback is not None:
                c.json["properties"] = copy.deepcopy(op.rollback)
            state = "Failed" if op.leave_failed or op.rollback is None else "Succeeded"
            c.json["properties"]["provisioningState"] = state
            for pool in c.json["properties"].get("agentPoolProfiles", []):
                pool["provisioningState"] = state
            return
        props = c.json["properties"]
        props["provisioningState"] = "Succeeded"
        for pool in props.get("agentPoolProfiles", []):
            pool["provisioningState"] = "Succeeded"
        oidc = props.get("oidcIssuerProfile") or {}
        if oidc.get("enabled") and not oidc.get("issuerURL"):
            oidc["issuerURL"] = self._issuer_url(c.json["location"], c.issuer_uuid)  # assigned when the update ends
            self._sync_kube_issuer(c)

    def _find_cluster(self, ctx: _Ctx) -> _Cluster:
        self._require_rg(ctx.groups["sub"], ctx.groups["rg"])
        c = self._clusters.get(ctx.key(AKS_TYPE))
        if c is None:
            raise _not_found(AKS_TYPE, ctx.groups["name"], ctx.groups["rg"])
        self._refresh_cluster(c)
        return c

    def _cluster_get(self, ctx: _Ctx) -> Response:
        return json_response(self._find_cluster(ctx).json)

    def _cluster_list(self, ctx: _Ctx) -> Response:
        clusters = self._in_scope(self._clusters, ctx)
        for c in clusters:
            self._refresh_cluster(c)
        return self._page(ctx, [c.json for c in clusters])

    _CLUSTER_READ_ONLY = (
        "provisioningState", "powerState", "maxAgentPools", "currentKubernetesVersion", "fqdn", "azurePortalFQDN",
        "privateFQDN", "identityProfile", "resourceUID",
    )  # fmt: skip
    _POOL_READ_ONLY = ("provisioningState", "currentOrchestratorVersion", "nodeImageVersion", "eTag", "powerState")

    def _cluster_put(self, ctx: _Ctx) -> Response:
        """A long-running create/update: "Creating"/"Updating" until _refresh_cluster finishes it."""
        g = ctx.groups
        rg = self._require_rg(g["sub"], g["rg"])
        body = ctx.body()
        location = body.get("location")
        if not location:
            raise _bad_request("The location property is required for this definition.", "LocationRequired")
        c = self._clusters.get(ctx.key(AKS_TYPE))
        created = c is None
        if c is None:
            server_url = f"https://{g['name']}-dns.hcp.{_norm_location(location)}.azmk8s.io:443"
            c = _Cluster({}, server_url, b"", "admin-token", str(uuid.uuid4()))
            c.json = self._cluster_json(g["sub"], rg["name"], g["name"], location, server_url, "1.31.5")
        else:
            self._refresh_cluster(c)
            if c.op is not None and c.op.status == "InProgress":
                raise ArmError(
                    409,
                    "OperationNotAllowed",
                    "Operation is not allowed: Another operation (Updating) is in progress, please wait for it to "
                    "finish before starting a new operation. See https://aka.ms/aks-pending-operation for more details",
                )
            if_match = ctx.request.headers.get("If-Match")
            if if_match and if_match not in ("*", c.json["eTag"]):
                message = f"The eTag '{if_match}' does not match the current one '{c.json['eTag']}'."
                raise ArmError(412, "PreconditionFailed", message)  # guess (message)
            if _norm_location(location) != _norm_location(c.json["location"]):
                raise _location_conflict(g["name"], c.json["location"], rg["name"], location)
        new_props = {k: v for k, v in (body.get("properties") or {}).items() if k not in self._CLUSTER_READ_ONLY}
        (new_props.get("oidcIssuerProfile") or {}).pop("issuerURL", None)
        if not new_props.get("kubernetesVersion"):  # "" or absent: keep the current (or default) version
            new_props.pop("kubernetesVersion", None)
        if "agentPoolProfiles" in new_props:  # AKS fills pool defaults, and keeps what it knows of existing pools
            version = new_props.get("kubernetesVersion") or c.json["properties"]["kubernetesVersion"]
            known = {p["name"].lower(): p for p in c.json["properties"].get("agentPoolProfiles", [])}
            new_props["agentPoolProfiles"] = [
                _deep_merge(
                    known.get(str(p.get("name")).lower()) or self._default_pool(p.get("name", "nodepool1"), version),
                    {k: v for k, v in p.items() if k not in self._POOL_READ_ONLY},
                )
                for p in new_props["agentPoolProfiles"]
            ]
        was_oidc = bool((c.json["properties"].get("oidcIssuerProfile") or {}).get("enabled"))
        merged = _deep_merge(c.json["properties"], new_props)
        if was_oidc and not (merged.get("oidcIssuerProfile") or {}).get("enabled"):
            raise _bad_request("OIDC issuer feature cannot be disabled.")
        rollback = None if created else copy.deepcopy(c.json["properties"])
        merged["provisioningState"] = "Creating" if created else "Updating"
        for pool in merged.get("agentPoolProfiles", []):
            pool["provisioningState"] = merged["provisioningState"]
        c.json["properties"] = merged
        c.json.update({field: copy.deepcopy(body[field]) for field in ("tags", "sku") if field in body})
        c.json["eTag"] = uuid.uuid4().hex[:8]
        c.op = self._new_operation(ctx.key(AKS_TYPE))
        failure = next((f for f in self._cluster_update_failures if f[0] in (None, ctx.key(AKS_TYPE))), None)
        if failure is not None:
            self._cluster_update_failures.remove(failure)
            c.op.fail, c.op.leave_failed, c.op.rollback = True, failure[1], rollback
        self._clusters[ctx.key(AKS_TYPE)] = c
        headers = self._lro_headers(ctx, "Microsoft.ContainerService", "operations", location, c.op)
        return json_response(c.json, 201 if created else 200, headers.items())

    @staticmethod
    def _credential_results(c: _Cluster, credential_name: str, user_name: str, user: dict) -> Response:
        name = c.json["name"]
        ca_data = base64.b64encode(c.kube_ca_pem).decode()
        cluster = {"certificate-authority-data": ca_data, "server": c.client_server_url}
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "current-context": name,
            "clusters": [{"name": name, "cluster": cluster}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": user_name}}],
            "users": [{"name": user_name, "user": user}],
        }
        value = base64.b64encode(yaml.safe_dump(kubeconfig, sort_keys=False).encode()).decode()
        return json_response({"kubeconfigs": [{"name": credential_name, "value": value}]})

    def _cluster_user_credential(self, ctx: _Ctx) -> Response:
        c = self._find_cluster(ctx)
        user_name = f"clusterUser_{ctx.groups['rg']}_{c.json['name']}"
        if not c.json["properties"].get("aadProfile"):
            return self._credential_results(c, "clusterUser", user_name, {"token": c.admin_token})
        args = [
            "get-token", "--environment", "AzurePublicCloud", "--server-id", AKS_AAD_SERVER_APP_ID,
            "--client-id", KUBELOGIN_CLIENT_ID, "--tenant-id", self.tenant_id, "--login", "devicecode",
        ]  # fmt: skip
        exec_plugin = {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "kubelogin",
            "args": args,
            "env": None,
            "installHint": "kubelogin is not installed which is required to connect to AAD enabled cluster.",
            "interactiveMode": "IfAvailable",
            "provideClusterInfo": False,
        }
        return self._credential_results(c, "clusterUser", user_name, {"exec": exec_plugin})

    def _cluster_admin_credential(self, ctx: _Ctx) -> Response:
        c = self._find_cluster(ctx)
        if c.json["properties"].get("disableLocalAccounts"):
            message = "Getting static credential is not allowed because this cluster is set to disable local accounts."
            raise _bad_request(message)
        user_name = f"clusterAdmin_{ctx.groups['rg']}_{c.json['name']}"
        return self._credential_results(c, "clusterAdmin", user_name, {"token": c.admin_token})

    @staticmethod
    def _command_files(context: str) -> dict[str, bytes]:
        """The files of a run command's `context`: a base64-encoded zip."""
        try:
            archive = zipfile.ZipFile(io.BytesIO(base64.b64decode(context, validate=True)))
            return {info.filename: archive.read(info) for info in archive.infolist() if not info.is_dir()}
        except (ValueError, zipfile.BadZipFile) as e:
            message = f"The context of the command is not a base64-encoded zip file: {e}"
            raise _bad_request(message, "InvalidParameter") from None  # guess

    def _run_command(self, ctx: _Ctx) -> Response:
        """POST .../runCommand: 202 with a Location to poll (commandResults/{id}), as AKS answers.

        The command runs at once in the emulated pod (outside the state lock, against the cluster's
        API server with the request's clusterToken, or the admin credential when local accounts are
        on); its result shows when the poll budget is used up. A disabled run command, a bad body or
        an unknown cluster is refused before anything runs."""
        body = ctx.body()
        command, context, token = body.get("command"), body.get("context") or "", body.get("clusterToken") or None
        if not isinstance(command, str) or not command.strip():
            raise _bad_request("Required parameter 'command' is missing or empty.", "InvalidParameter")  # guess
        if not isinstance(context, str) or (token is not None and not isinstance(token, str)):
            raise _bad_request("'context' and 'clusterToken' must be strings.", "InvalidParameter")  # guess
        files = self._command_files(context) if context else {}
        with self._lock:
            c = self._find_cluster(ctx)
            props = c.json["properties"]
            if (props.get("apiServerAccessProfile") or {}).get("disableRunCommand"):
                message = "Run command is disabled for this cluster (apiServerAccessProfile.disableRunCommand)."
                raise _bad_request(message, "RunCommandDisabled")  # guess (code and message)
            if (props.get("powerState") or {}).get("code") == "Stopped":
                raise _bad_request("The cluster is stopped; start it to run commands.", "OperationNotAllowed")  # guess
            if token is None and not (props.get("aadProfile") and props.get("disableLocalAccounts")):
                token = c.admin_token  # AKS runs the pod with the cluster's own credential
            command_id = uuid.uuid4().hex
            run = _Command(command_id, ctx.key(AKS_TYPE), self.clock.now())
            self._commands[command_id] = run
            failure = self._run_command_failures.pop(0) if self._run_command_failures else ""
            self.run_commands.append(
                {"id": command_id, "command": command, "files": files, "cluster_token": bool(body.get("clusterToken"))}
            )
            server, ca_pem, tools = c.kube_server_url, c.kube_ca_pem, self.run_command_tools
        if failure:
            run.failed_reason = failure
        else:
            result = KubectlPod(server, ca_pem, token, tools).run(command, files)
            run.exit_code, run.logs = result.exit_code, result.logs
        with self._lock:
            run.finished = self.clock.now()
        return Response(
            status=202, headers={"Location": self._command_location(ctx, command_id), **self._retry_after()}
        )

    def _command_location(self, ctx: _Ctx, command_id: str) -> str:
        g = ctx.groups
        cluster = _rid(g["sub"], g["rg"], AKS_TYPE, g["name"])
        return f"{ctx.base_url}{cluster}/commandResults/{command_id}?api-version={ctx.api_version}"

    def _command_result(self, ctx: _Ctx) -> Response:
        """202 (no body) while the command runs; then 200 with its RunCommandResult (RunCommandRequest.json)."""
        self._find_cluster(ctx)
        run = self._commands.get(ctx.groups["command"].lower())
        if run is None or run.cluster_key != ctx.key(AKS_TYPE):
            raise ArmError(404, "NotFound", f"Command '{ctx.groups['command']}' was not found.")  # guess
        elapsed = self.clock.now() - run.started
        if run.finished is None or run.polls < self.run_command_polls or elapsed < self.run_command_seconds:
            run.polls += 1
            location = self._command_location(ctx, run.id)
            return Response(status=202, headers={"Location": location, **self._retry_after()})
        properties: dict[str, Any] = {"provisioningState": "failed" if run.failed_reason else "succeeded",
                                      "startedAt": _iso(run.started), "finishedAt": _iso(run.finished)}  # fmt: skip
        if run.failed_reason:
            properties["reason"] = run.failed_reason
        else:
            properties.update(exitCode=run.exit_code, logs=run.logs)
        return json_response({"id": run.id, "properties": properties})

    # ------------------------------------------------------------------ Microsoft.CognitiveServices

    def _account_json(
        self, sub: str, rg: str, name: str, kind: str, subdomain: str | None, location: str, sku: str
    ) -> dict:
        """Shaped like GetAccount.json; the endpoint follows the kind and the custom subdomain (and, for the OpenAI
        endpoint, `openai_endpoint_base`)."""
        base = self.openai_endpoint_base
        openai = f"{base.rstrip('/')}/{subdomain}/" if base else f"https://{subdomain}.openai.azure.com/"
        if subdomain is None:
            endpoint = f"https://{_norm_location(location)}.api.cognitive.microsoft.com/"
            endpoints = {"Token Service API": endpoint}
        elif kind == "OpenAI":
            endpoint = openai
            endpoints = {api: endpoint for api in ("OpenAI Language Model Instance API", "OpenAI Dall-E API",
                                                   "OpenAI Whisper API", "OpenAI Model Scaleset API")}  # fmt: skip
            endpoints["Token Service API"] = f"https://{subdomain}.cognitiveservices.azure.com/"
        else:
            endpoint = f"https://{subdomain}.cognitiveservices.azure.com/"
            endpoints = {"Token Service API": endpoint}
            if kind == "AIServices":
                endpoints["OpenAI Language Model Instance API"] = openai
                endpoints["Azure AI Model Inference API"] = f"https://{subdomain}.services.ai.azure.com/"
        props: dict[str, Any] = {
            "endpoint": endpoint, "internalId": uuid.uuid4().hex, "dateCreated": _iso(self.clock.now()),
            "networkAcls": {"defaultAction": "Allow", "virtualNetworkRules": [], "ipRules": []},
            "publicNetworkAccess": "Enabled", "disableLocalAuth": False, "isMigrated": False,
            "capabilities": [{"name": "VirtualNetworks"}, {"name": "CustomerManagedKey"}],
            "endpoints": endpoints, "provisioningState": "Succeeded",
        }  # fmt: skip
        if subdomain is not None:
            props["customSubDomainName"] = subdomain
        return {
            "id": _rid(sub, rg, COG_TYPE, name), "name": name, "type": COG_TYPE, "location": location,
            "sku": {"name": sku}, "kind": kind, "tags": {}, "etag": f'"{uuid.uuid4()}"', "properties": props,
        }  # fmt: skip

    def _find_account(self, ctx: _Ctx) -> _Account:
        self._require_rg(ctx.groups["sub"], ctx.groups["rg"])
        acct = self._accounts.get(ctx.key(COG_TYPE))
        if acct is None:
            raise _not_found(COG_TYPE, ctx.groups["name"], ctx.groups["rg"])
        return acct

    def _account_get(self, ctx: _Ctx) -> Response:
        return json_response(self._find_account(ctx).json)

    _ACCOUNT_READ_ONLY = (
        "endpoint", "endpoints", "provisioningState", "internalId", "dateCreated", "capabilities", "isMigrated",
        "customSubDomainName",
    )  # fmt: skip

    def _account_patch(self, ctx: _Ctx) -> Response:
        """begin_update is an LRO: answer 200 (Succeeded) plus an Azure-AsyncOperation that says Succeeded."""
        acct = self._find_account(ctx)
        body = ctx.body()
        props = {k: v for k, v in (body.get("properties") or {}).items() if k not in self._ACCOUNT_READ_ONLY}
        acct.json["properties"] = _deep_merge(acct.json["properties"], props)
        acct.json.update({field: copy.deepcopy(body[field]) for field in ("tags", "sku") if field in body})
        acct.json["etag"] = f'"{uuid.uuid4()}"'
        op = self._new_operation(ctx.key(COG_TYPE), done=True)
        headers = self._lro_headers(ctx, "Microsoft.CognitiveServices", "operationStatuses", acct.json["location"], op)
        return json_response(acct.json, 200, headers.items())

    def _account_list(self, ctx: _Ctx) -> Response:
        return self._page(ctx, [a.json for a in self._in_scope(self._accounts, ctx)])

    def _deployment_list(self, ctx: _Ctx) -> Response:
        return self._page(ctx, list(self._find_account(ctx).deployments.values()))

    def _deployment_get(self, ctx: _Ctx) -> Response:
        dep = self._find_account(ctx).deployments.get(ctx.groups["dep"].lower())
        if dep is None:
            raise ArmError(404, "DeploymentNotFound", f"Deployment '{ctx.groups['dep']}' not found.")  # guess
        return json_response(dep)

    # ------------------------------------------------------------------ resource groups and other resources

    def _resource_group_get(self, ctx: _Ctx) -> Response:
        rg = self._require_rg(ctx.groups["sub"], ctx.groups["rg"])
        body = {"id": _rid(rg["subscription"], rg["name"]), "name": rg["name"], "location": rg["location"]}
        body.update(type="Microsoft.Resources/resourceGroups", properties={"provisioningState": "Succeeded"})
        return json_response(body)

    def _generic_get(self, ctx: _Ctx) -> Response:
        if ctx.groups["ns"].lower() in self.api_versions:  # a type of a modelled provider that is not served
            raise self._unknown_path(ctx.request.path)
        self._require_rg(ctx.groups["sub"], ctx.groups["rg"])
        found = self._generic.get(_key(ctx.request.path))
        if found is None:
            raise _not_found(f"{ctx.groups['ns']}/{ctx.groups['type']}", ctx.groups["name"], ctx.groups["rg"])
        return json_response(found)


ERROR_SOURCES = {  # code -> where it came from ("guess" = not found in public material)
    "AuthenticationFailed, InvalidAuthenticationToken (401)": "ARM front door; messages from memory",
    "MissingApiVersionParameter, InvalidApiVersionParameter": "ARM; format from azure-cli #31331, upjet-azure #630",
    "ResourceGroupNotFound, ResourceNotFound, SubscriptionNotFound": "ARM front door (aka.ms/ARMResourceNotFoundFix)",
    "InvalidResourceType": "ARM front door; the 404 status is a guess",
    "LocationRequired, InvalidResourceLocation, InvalidRequestContent": "ARM front door (from memory)",
    "InvalidResourceName (identity name)": "guess; the rule is from the MSI naming docs",
    "ParentResourceNotFound (FIC, 404)": "ARM nested-resource code; AZURE-FACTS replication note",
    "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity (409)":
        "bicep-registry-modules #1447, cluster-api-provider-azure #5397",
    "FIC validation (400)": "Entra docs, 'workload-identity-federation-create-trust-user-assigned-managed-identity'",
    "Conflict (issuer+subject exists, 400)": "status+message: that docs table; code: a user's azd output",
    "FIC limit (20, 400 BadRequest)": "limit documented; code and message are guesses",
    "InvalidRoleAssignmentId": "azure-service-operator #2586, Azure-Landing-Zones #3419",
    "InvalidPrincipalId": "azure-powershell #16627",
    "RoleDefinitionDoesNotExist": "well-known Authorization code; message from memory",
    "RoleAssignmentExists (409)": "terraform-provider-azurerm #28557",
    "RoleAssignmentUpdateNotPermitted (400)": "Azure-Landing-Zones #2040 (BadRequest wrapper), OfficeDev #569",
    "PrincipalNotFound (400)": "azure-quickstart-templates #4945, avdaccelerator #76",
    "RoleAssignmentNotFound": "terraform-provider-azurerm #9379",
    "OperationNotAllowed (AKS, 409)": "terraform-azurerm-avm-ptn-aks-production #25, azure-workload-identity #417",
    "BadRequest: static credential not allowed (400)": "terraform-provider-azurerm #15489, caf-landingzones #416",
    "BadRequest: OIDC issuer feature cannot be disabled": "message: Azure/AKS-Construction #531; code: guess",
    "SubscriptionRequestsThrottled (429)": "ARM throttling docs (aka.ms/arm-throttling); message abridged",
    "TooManyRequests (429, managed identity RP)": "guess; the limit is managed-identity-limits.md (80 / 20 s)",
    "InternalOperationError (AKS operation Failed)": "guess",
    "runCommand 202 + Location, commandResults 202/200": "RunCommandRequest.json, RunCommandResultFailed.json "
        "(2025-10-01 examples): lower-case provisioningState, reason instead of exitCode/logs when the pod failed",
    "RunCommandDisabled, InvalidParameter (runCommand, 400)": "guess; disableRunCommand is in the AKS API",
    "NotFound (unknown command id, 404)": "guess",
}  # fmt: skip
