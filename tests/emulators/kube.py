"""A strict local stand-in for the AKS kube-apiserver, for tests that drive the real `kubernetes` client.

Why our own and not kmock (PyPI "kmock" 0.8, evaluated first): kmock is an asyncio/aiohttp server
(it must be entered with `async with` inside an event loop), serves plain HTTP only (no TLS
context), treats every PATCH as a naive recursive dict merge whatever the content type (no
server-side apply, no managedFields, no field ownership or apply conflicts, no null-deletes), keeps
no resourceVersion (lists say "..."), never answers 409 Conflict on stale writes, and its Status
bodies use made-up reasons ("Object Not Found") plus a traceback in `details`. Bending it to all of
that would be a rewrite, so this module is a small werkzeug app instead.

What is emulated (core/v1 Namespaces, ServiceAccounts, ConfigMaps, Pods; apps/v1 Deployments):
- HTTPS with the test CA, bearer-token auth (401 Status), minimal discovery (/version, /api, /apis).
- get, create, replace, patch, delete; deleting a namespace removes its objects at once.
- list, namespaced and across all namespaces (`GET /api/v1/serviceaccounts`, `/api/v1/configmaps`,
  `/api/v1/pods`, `/apis/apps/v1/deployments`), as the API server serves it:
  - `labelSelector` parsed as k8s.io/apimachinery pkg/labels/selector.go parses it: `k=v`, `k==v`,
    `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, `k>n`, `k<n`, comma-separated and ANDed; keys
    and values validated (IsQualifiedName, IsValidLabelValue); a malformed one is 400 BadRequest with
    the parser's message ("unable to parse requirement: ...").
  - `fieldSelector` (`=`, `==`, `!=`; a backslash escapes ',', '=' or itself in a value) on what the
    kind's field-label conversion accepts: metadata.name and metadata.namespace for ServiceAccounts,
    ConfigMaps and Deployments (runtime.DefaultMetaV1FieldSelectorConversion), Pods' own list
    (spec.nodeName, spec.serviceAccountName, status.phase, ...; kubernetes
    pkg/apis/core/v1/conversion.go), metadata.name and status.phase for Namespaces; anything else is
    400 with the real message.
  - paging: `limit` and `continue`, per "Retrieving large results sets in chunks" in the Kubernetes
    API concepts (kubernetes/website content/en/docs/reference/using-api/api-concepts.md) and the
    `limit`/`continue` parameters and ListMeta of the reference OpenAPI
    (tests/reference/kubernetes-openapi/.../api__v1_openapi.json). Items in etcd key order
    (`/registry/<plural>/<namespace>/<name>`); a page holds at most `limit` matching items and
    `metadata.continue` is set when keys remain after its last one (so a filtered page may be short,
    even empty, before the end); `metadata.remainingItemCount` only without selectors; the token is
    the real one's shape (base64url JSON `{"v","rv","start"}`, k8s.io/apiserver pkg/storage) and
    opaque to clients. Every page of one list reads the snapshot of the first page's
    resourceVersion and answers with that resourceVersion (a consistent snapshot: writes in between
    are not seen). A token whose snapshot is gone (older than `continue_ttl_seconds`, default 300 s
    as the docs' "5 minutes", against the Clock; or after `compact()` or `reset()`) is 410 Gone,
    reason Expired, with the real message and a token in the Status's metadata to continue
    inconsistently from the latest state (storage/etcd3 handleCompactedErrorForPaging); a malformed
    token is 400 "invalid continue token: continue key is not valid..." (wording after that
    approximate); continue with a resourceVersion is 400; resourceVersionMatch is validated as
    ValidateListOptions does (422 on ListOptions).
  - `resourceVersion` on a list: unset, "0" or NotOlderThan read the latest state; Exact (or the
    legacy resourceVersion with a limit) reads that version only while the emulator still holds a
    snapshot of it (the real server keeps 5 minutes of history), else 410 Expired; a version
    beyond the current one is 504 "Too large resource version".
  - every page is one request in `log` (`list_requests()` picks them out).
- metadata: uid, one global resourceVersion counter, creationTimestamp, generation (Deployments),
  managedFields (Apply and Update entries, FieldsV1). A write that changes nothing keeps the
  resourceVersion.
- PATCH: server-side apply (field ownership per manager, removal of fields a manager stops
  applying, conflicts, force), JSON merge patch, strategic merge patch (lists of containers, env,
  volumes, ... merged by key; `$patch: delete` on such items), JSON patch (add/remove/replace/test).
  `dryRun=All` computes the answer without storing it.
- Errors as real `Status` objects with the real reasons and messages (NotFound, AlreadyExists,
  Conflict, Invalid with causes, BadRequest, Unauthorized, ...); injected faults; an "unavailable"
  switch.
- Deployments get the main API defaults; a Deployment controller makes their pods, one generation
  per pod template (pod-template-hash, ReplicaSet owner references, generateName): a new template
  means new pods, the old ones go once the new ones run (`pod_start_seconds` against the Clock);
  status follows the pods, a failed pod creation shows as the ReplicaFailure condition; deleting a
  Deployment deletes its pods. A service-account controller keeps a "default" one per namespace.
- Pod admission (API-created and controller-made pods alike): the ServiceAccount plugin (defaults the
  name, refuses a missing account with 403, mounts kube-api-access-*), then the Azure Workload
  Identity mutating webhook exactly as v1.6 does it (`workload_identity_webhook`: pods labelled
  `azure.workload.identity/use: "true"` only, at creation only; `webhook_enabled` switches it off).
- A kubelet: a pod runs once its ConfigMap references resolve (else Pending with
  CreateContainerConfigError) and the clock passed its start time.
- Service account tokens, as kube-apiserver v1.33 issues them (`TokenRequest`, the `token`
  subresource of ServiceAccounts, `POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token`,
  operation createCoreV1NamespacedServiceAccountToken of the reference OpenAPI). Copied from kubernetes
  pkg/registry/core/serviceaccount/storage/token.go (TokenREST.Create: order of checks, defaulting of
  audiences to the server's API audiences, boundObjectRef to a Pod (its service account must match;
  node info added, feature ServiceAccountTokenPodNodeInfo), a Node or a Secret, anything else a 400
  "cannot bind token to object of type ...", a UID mismatch a 409, `--service-account-max-token-expiration`
  shortening with a Warning, the one-year extension of 3607 s pod-bound kube-audience tokens (kubelet's
  default) with a `warnafter` claim, status.expirationTimestamp = now + expirationSeconds),
  pkg/apis/authentication/v1/defaults.go (expirationSeconds defaults to 3600),
  pkg/apis/authentication/validation/validation.go (ValidateTokenRequest: less than 600 s or more than
  2^32 s is 422 on `spec.expirationSeconds`, the TokenRequest named ""), pkg/serviceaccount/claims.go
  (Claims: sub `system:serviceaccount:<ns>:<name>`, aud, iat = nbf = now, exp, jti (ServiceAccountTokenJTI),
  the private `kubernetes.io` claim {namespace, serviceaccount {name, uid}, pod/secret/node {name, uid},
  warnafter}) and pkg/serviceaccount/jwt.go (JWTTokenGenerator: RS256, header {alg, kid} without typ,
  iss = the issuer; claims serialised as one JSON object with sorted keys, as go-jose's builder does;
  kid = keyIDFromPublicKey: base64url of the SHA-256 of the key's PKIX DER, not the RFC 7638 JWK
  thumbprint). `issued_tokens` records each token's claims (never the token).
- The service account issuer (feature ServiceAccountIssuerDiscovery, kubernetes
  pkg/serviceaccount/openidmetadata.go and pkg/routes/openidmetadata.go): `GET
  /.well-known/openid-configuration` ({issuer, jwks_uri, response_types_supported ["id_token"],
  subject_types_supported ["public"], id_token_signing_alg_values_supported ["RS256"]}, application/json)
  and `GET /openid/v1/jwks` ({"keys": [{use, kty, kid, alg, n, e}]}, application/jwk-set+json), both
  `Cache-Control: public, max-age=3600`, bearer auth like every route. The issuer is the cluster's: the
  ARM emulator calls `set_issuer(issuerURL)` for the cluster whose kube_server_url this server is (found
  with `KubeEmulator.at(url)`), which makes a new RSA 2048 key (generated on first use), publishes the
  two documents under that exact URL in the IssuerDirectory (tests.emulators.oidc) for the Entra emulator
  and withdraws the previous issuer; jwks_uri is `<issuer>openid/v1/jwks`, as AKS's issuer serves it.
  Without an OIDC issuer tokens carry kube-apiserver's default `https://kubernetes.default.svc.cluster.local`
  (published nowhere). One server may back several clusters in a test: the last issuer set wins.

Not emulated: watch (a list with `watch=true` is refused with a 400), subresources other than token
(status, scale, log, exec; `dryRun` on a TokenRequest is refused), TokenRequest attestations and
webhook-configuration binding (1.34+), the legacy Secret-based tokens, TokenReview (the emulator's own
bearer tokens stay `accepted_tokens`, service account tokens are not accepted by it), other kinds (no
ReplicaSets, Secrets, Nodes, Events), RBAC, other admission plugins and webhooks, rolling-update
surge/unavailability arithmetic (a new generation replaces the old one at once), finalizers, the list
options sendInitialEvents, shardSelector and timeoutSeconds (ignored), protobuf/CBOR, fieldValidation,
apply of list items by anything but the field name (list-map keys are looked up by field name only),
other `$patch` directives, and most field-level validation beyond names, labels, annotations and the
Deployment selector/containers.
Stopping a server takes 0.5 s (werkzeug's poll interval): share one per module and call reset().
"""

from __future__ import annotations

import base64
import binascii
import bisect
import copy
import dataclasses
import datetime
import functools
import hashlib
import itertools
import json
import posixpath
import re
import threading
import traceback
import uuid
from collections.abc import Callable, Iterable
from typing import Any, ClassVar
from urllib.parse import urlsplit

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt import api_jws
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
from tests.emulators.oidc import DEFAULT_DIRECTORY, IssuerDirectory

AKS_SERVER_SCOPE = "6dae42f8-4368-4678-94ff-3960e28e3630/.default"
"""The Entra ID scope of the AKS AAD server application (the audience of AKS user tokens)."""

DEFAULT_TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
"""The tenant the webhook injects when a service account has no tenant-id annotation (= the ARM emulator's)."""

KUBERNETES_VERSION = {"major": "1", "minor": "33", "gitVersion": "v1.33.2"}


# --------------------------------------------------------------------------- resource types


@dataclasses.dataclass(frozen=True)
class ResourceType:
    kind: str
    plural: str
    group: str  # "" for the core group
    namespaced: bool
    name_rule: str  # "subdomain" (DNS-1123 subdomain) or "label" (DNS-1123 label)
    delete_returns_object: bool  # as the real registry does (and the Python client expects)
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/v1" if self.group else "v1"

    @property
    def qualified(self) -> str:
        """How the resource is named in messages: `serviceaccounts`, `deployments.apps`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def prefix(self) -> str:
        return f"/apis/{self.group}/v1" if self.group else "/api/v1"


RESOURCES: dict[str, ResourceType] = {
    rt.kind: rt
    for rt in (
        ResourceType("Namespace", "namespaces", "", False, "label", True, ("ns",)),
        ResourceType("ServiceAccount", "serviceaccounts", "", True, "subdomain", True, ("sa",)),
        ResourceType("ConfigMap", "configmaps", "", True, "subdomain", False, ("cm",)),
        ResourceType("Pod", "pods", "", True, "subdomain", True, ("po",)),
        ResourceType("Deployment", "deployments", "apps", True, "subdomain", False, ("deploy",)),
    )
}


# --------------------------------------------------------------------------- errors as Status


class ApiError(Exception):
    """An error the server answers with a `Status` body."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: dict | None = None,
        headers: Iterable[tuple[str, str]] = (),
        list_meta: dict | None = None,
    ) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code, self.reason, self.message = code, reason, message
        self.details, self.headers = details, list(headers)
        self.list_meta = list_meta  # the Status's ListMeta (a 410 on a paged list carries a continue token)

    def status(self) -> dict:
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": dict(self.list_meta or {}),
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body

    def response(self) -> Response:
        return json_response(self.status(), self.code, self.headers)


DEFAULT_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def _ref(rt: ResourceType, name: str) -> dict:
    details = {"name": name, "kind": rt.plural}
    if rt.group:
        details["group"] = rt.group
    return details


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.qualified} "{name}" not found', _ref(rt, name))


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{rt.qualified} "{name}" already exists', _ref(rt, name))


def modified_conflict(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object '
        "has been modified; please apply your changes to the latest version and try again",
        _ref(rt, name),
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


@dataclasses.dataclass(frozen=True)
class Cause:
    field: str
    kind: str  # "Invalid", "Required", "Duplicate", "Forbidden", "NotSupported"
    detail: str = ""
    value: Any = None

    def message(self) -> str:
        if self.kind == "Invalid":
            return f"Invalid value: {json.dumps(self.value)}: {self.detail}"
        if self.kind == "Duplicate":
            return f"Duplicate value: {json.dumps(self.value)}"
        if self.kind == "NotSupported":
            return f"Unsupported value: {json.dumps(self.value)}: {self.detail}"
        head = "Required value" if self.kind == "Required" else self.kind
        return f"{head}: {self.detail}" if self.detail else head


def invalid(kind: str, group: str, name: str, causes: list[Cause]) -> ApiError:
    parts = [f"{c.field}: {c.message()}" for c in causes]
    summary = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    qualified = f"{kind}.{group}" if group else kind
    details = {
        "name": name,
        "kind": kind,
        "causes": [{"reason": f"FieldValue{c.kind}", "message": c.message(), "field": c.field} for c in causes],
    }
    if not name:  # StatusDetails.name is omitempty
        del details["name"]
    if group:
        details["group"] = group
    return ApiError(422, "Invalid", f'{qualified} "{name}" is invalid: {summary}', details)


# --------------------------------------------------------------------------- field paths

Path = tuple[str, ...]
"""A field path in FieldsV1 spelling: ("f:metadata", "f:labels", "f:app") or, for an item of a
keyed list, ("f:spec", ..., "f:containers", 'k:{"name":"app"}', "f:image")."""

MISSING: Any = object()

LIST_MAP_KEYS: dict[str, tuple[str, ...]] = {
    # Lists merged item by item (x-kubernetes-list-type: map / patch strategy merge), keyed by field name.
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "ports": ("containerPort", "protocol"),
    "imagePullSecrets": ("name",),
    "secrets": ("name",),
    "ownerReferences": ("uid",),
}
SERVER_SET_METADATA = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
SERVER_METADATA = ("name", "namespace", *SERVER_SET_METADATA)  # never owned by a field manager


def ownable(obj: dict) -> dict:
    """The part of an object that field managers can own: no type/identity/server fields, no status."""
    out = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "status") and v is not None}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in SERVER_METADATA}
    out.pop("metadata", None)
    if meta:
        out["metadata"] = meta
    return out


def item_key(field: str, item: dict) -> str:
    keys = {k: item[k] for k in LIST_MAP_KEYS[field] if k in item}
    return "k:" + json.dumps(keys, separators=(",", ":"), sort_keys=True)


def _is_list_map(field: str, value: Any) -> bool:
    return field in LIST_MAP_KEYS and isinstance(value, list) and all(isinstance(i, dict) for i in value)


def field_paths(value: dict, prefix: Path = ()) -> set[Path]:
    """Every field set in `value`: leaves (scalars, atomic lists, empty maps) and keyed list items."""
    paths: set[Path] = set()
    for key, child in value.items():
        path = prefix + ("f:" + key,)
        if isinstance(child, dict) and child:
            paths |= field_paths(child, path)
        elif _is_list_map(key, child) and child:
            for item in child:
                paths.add(path + (item_key(key, item),))
                paths |= field_paths(item, path + (item_key(key, item),))
        else:
            paths.add(path)
    return paths


def _item_index(items: Any, element: str) -> int | None:
    if not isinstance(items, list):
        return None
    wanted = json.loads(element[2:])
    for i, item in enumerate(items):
        if isinstance(item, dict) and all(item.get(k) == v for k, v in wanted.items()):
            return i
    return None


def value_at(obj: Any, path: Path) -> Any:
    for element in path:
        if element.startswith("f:"):
            if not isinstance(obj, dict) or element[2:] not in obj:
                return MISSING
            obj = obj[element[2:]]
        else:
            index = _item_index(obj, element)
            if index is None:
                return MISSING
            obj = obj[index]
    return obj


def path_string(path: Path) -> str:
    """As structured-merge-diff prints it: `.spec.template.spec.containers[name="app"].image`."""
    out = ""
    for element in path:
        if element.startswith("f:"):
            out += "." + element[2:]
        else:
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in json.loads(element[2:]).items()) + "]"
    return out


def fields_to_v1(paths: Iterable[Path]) -> dict:
    """The FieldsV1 trie: a member with children of its own is marked by a "." child."""
    tree: dict = {}
    for path in sorted(paths):
        node = tree
        for element in path:
            node = node.setdefault(element, {})
        node["."] = {}
    return _drop_lone_dots(tree)


def _drop_lone_dots(node: dict) -> dict:
    return {} if list(node) == ["."] else {k: v if k == "." else _drop_lone_dots(v) for k, v in node.items()}


def fields_from_v1(tree: dict, prefix: Path = ()) -> set[Path]:
    paths: set[Path] = set()
    for key, sub in tree.items():
        if key == ".":
            paths.add(prefix)
        elif not sub:
            paths.add(prefix + (key,))
        else:
            paths |= fields_from_v1(sub, prefix + (key,))
    return paths


# --------------------------------------------------------------------------- merging and patches


def merge(target: Any, patch: Any, *, keyed_lists: bool, null_deletes: bool) -> Any:
    """Merge `patch` into a copy of `target`: maps by key, keyed lists by item key (if asked),
    everything else replaced. JSON merge patch = (keyed_lists=False, null_deletes=True)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            if null_deletes:
                result.pop(key, None)
        elif isinstance(value, dict):
            result[key] = merge(result.get(key), value, keyed_lists=keyed_lists, null_deletes=null_deletes)
        elif keyed_lists and _is_list_map(key, value) and isinstance(result.get(key), list):
            result[key] = _merge_keyed_list(key, result[key], value, null_deletes=null_deletes)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _merge_keyed_list(field: str, live: list, patch: list, *, null_deletes: bool) -> list:
    result = copy.deepcopy(live)
    for item in patch:
        index = _item_index(result, item_key(field, item))
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(merge({}, item, keyed_lists=True, null_deletes=null_deletes))
        else:
            result[index] = merge(result[index], item, keyed_lists=True, null_deletes=null_deletes)
    return result


def json_patch(target: dict, operations: Any) -> dict:
    """RFC 6902: add, remove, replace and test (no copy/move)."""
    if not isinstance(operations, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(target)
    for op in operations:
        try:
            *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
            node = doc
            for part in parents:
                node = node[int(part)] if isinstance(node, list) else node[part]
            key: Any = (len(node) if last == "-" else int(last)) if isinstance(node, list) else last
            if op["op"] == "test" and node[key] != op["value"]:
                raise ApiError(
                    422,
                    "Invalid",
                    f"the server rejected our request due to an error in our "
                    f"request: testing value {op['path']} failed",
                )
            if op["op"] in ("remove", "replace"):
                del node[key]
            if op["op"] in ("add", "replace"):
                if isinstance(node, list):
                    node.insert(key, copy.deepcopy(op["value"]))
                else:
                    node[key] = copy.deepcopy(op["value"])
            elif op["op"] not in ("remove", "test"):
                raise bad_request(f"Unexpected kind: {op['op']}")
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ApiError(
                422,
                "Invalid",
                f"the server rejected our request due to an error in our request: "
                f"doc is missing path: {op.get('path') if isinstance(op, dict) else op}: {exc}",
            ) from None
    return doc


# --------------------------------------------------------------------------- field ownership (SSA)


@dataclasses.dataclass(frozen=True)
class ManagedEntry:
    manager: str
    operation: str  # "Apply" or "Update"
    api_version: str
    time: str
    fields: frozenset[Path]

    @property
    def key(self) -> tuple[str, str]:
        return (self.manager, self.operation)

    def describe(self) -> str:
        """How apply conflicts name a manager."""
        return f'"{self.manager}"' if self.operation == "Apply" else f'"{self.manager}" using {self.api_version}'

    def to_json(self) -> dict:
        return {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": fields_to_v1(self.fields),
        }

    @classmethod
    def from_json(cls, entry: dict) -> ManagedEntry:
        return cls(
            entry["manager"],
            entry["operation"],
            entry.get("apiVersion", "v1"),
            entry.get("time", ""),
            frozenset(fields_from_v1(entry.get("fieldsV1") or {})),
        )


def find_apply_conflicts(
    entries: list[ManagedEntry], applier: tuple[str, str], applied: set[Path], live: dict, config: dict
) -> list[tuple[ManagedEntry, Path]]:
    """Fields the config sets to a different value than the live one while another manager owns them."""
    conflicts = []
    for entry in entries:
        if entry.key == applier:
            continue
        for path in sorted(entry.fields & applied):
            if path[-1].startswith("f:") and value_at(live, path) != value_at(config, path):
                conflicts.append((entry, path))
    return conflicts


def apply_conflict_error(conflicts: list[tuple[ManagedEntry, Path]]) -> ApiError:
    causes = [
        {"reason": "FieldManagerConflict", "message": f"conflict with {entry.describe()}", "field": path_string(path)}
        for entry, path in conflicts
    ]
    if len(conflicts) == 1:
        entry, path = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {entry.describe()}: {path_string(path)}"
    else:
        lines = []
        for describe, group in itertools.groupby(
            sorted(conflicts, key=lambda c: c[0].describe()), key=lambda c: c[0].describe()
        ):
            lines.append(f"conflicts with {describe}:")
            lines += [f"- {path_string(path)}" for _, path in group]
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return ApiError(409, "Conflict", message, {"causes": causes})


def remove_fields(obj: dict, paths: Iterable[Path]) -> dict:
    """A copy of `obj` without `paths`; maps and lists left empty by a removal go too."""
    result = copy.deepcopy(obj)
    paths = set(paths)
    outermost = [p for p in paths if not any(p[:i] in paths for i in range(1, len(p)))]
    for path in outermost:  # (an item's own fields go with it; they may be its key)
        chain: list[tuple[Any, Any]] = []
        node: Any = result
        for element in path:
            if element.startswith("f:"):
                if not isinstance(node, dict) or element[2:] not in node:
                    break
                chain.append((node, element[2:]))
            else:
                index = _item_index(node, element)
                if index is None:
                    break
                chain.append((node, index))
            node = chain[-1][0][chain[-1][1]]
        else:
            container, key = chain.pop()
            del container[key]
            while len(chain) > 1 and chain[-1][0][chain[-1][1]] in ({}, []):
                container, key = chain.pop()
                del container[key]
    return result


def drop_nulls(value: Any) -> Any:
    """An apply config's explicit nulls set nothing (they neither own nor remove a field here)."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def server_side_apply(
    live: dict, entries: list[ManagedEntry], manager: str, config: dict, force: bool, api_version: str, now: str
) -> tuple[dict, list[ManagedEntry]]:
    """Apply `config` as `manager`: returns the merged object and the new ownership entries.

    - conflicts (another manager owns a field the config sets differently) -> 409 unless `force`,
      which moves those fields to the applier;
    - fields the applier owned before but no longer applies are removed from the object unless
      another manager still owns them;
    - the applier ends up owning exactly the fields of its config.
    """
    config = ownable(drop_nulls(config))
    applied = field_paths(config)
    applier = (manager, "Apply")
    conflicts = find_apply_conflicts(entries, applier, applied, live, config)
    if conflicts and not force:
        raise apply_conflict_error(conflicts)
    taken = {path for _, path in conflicts}
    previous = next((e for e in entries if e.key == applier), None)
    others = [dataclasses.replace(e, fields=e.fields - taken) for e in entries if e.key != applier]
    owned_by_others = set().union(*(e.fields for e in others))
    dropped = (previous.fields if previous else frozenset()) - applied - owned_by_others
    merged = merge(remove_fields(live, dropped), config, keyed_lists=True, null_deletes=False)
    mine = ManagedEntry(manager, "Apply", api_version, now, frozenset(applied))
    if previous is not None and previous.fields == mine.fields:
        mine = previous
    return merged, _replace_entry(others, entries, mine)


def changed_paths(old: dict, new: dict) -> set[Path]:
    """Fields of `new` that `old` lacks or holds with another value (keyed list items: only if new)."""

    def changed(path: Path) -> bool:
        if path[-1].startswith("k:"):
            return value_at(old, path) is MISSING
        return value_at(old, path) != value_at(new, path)

    return {path for path in field_paths(ownable(new)) if changed(path)}


def record_update(
    entries: list[ManagedEntry], manager: str, api_version: str, now: str, old: dict, new: dict
) -> list[ManagedEntry]:
    """An Update (create, PUT, non-apply PATCH) owns the fields it changed; others lose them."""
    changed = changed_paths(old, new)
    if not changed:
        return entries
    key = (manager, "Update")
    previous = next((e for e in entries if e.key == key), None)
    others = [dataclasses.replace(e, fields=e.fields - changed) for e in entries if e.key != key]
    mine = ManagedEntry(
        manager, "Update", api_version, now, frozenset(changed | (previous.fields if previous else set()))
    )
    return _replace_entry(others, entries, mine)


def _replace_entry(others: list[ManagedEntry], original: list[ManagedEntry], mine: ManagedEntry) -> list[ManagedEntry]:
    keys = [e.key for e in original]
    if mine.key not in keys:
        return others + [mine]
    result = list(others)
    result.insert(keys.index(mine.key), mine)
    return result


def prune_entries(entries: list[ManagedEntry], obj: dict) -> list[ManagedEntry]:
    """Forget ownership of fields the object no longer has; drop managers that own nothing."""
    present = field_paths(ownable(obj))
    pruned = [dataclasses.replace(e, fields=e.fields & present) if e.fields - present else e for e in entries]
    return [e for e in pruned if e.fields]


# --------------------------------------------------------------------------- validation

SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
    "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)


def name_problem(name: str, rule: str) -> str | None:
    if rule == "label":
        if len(name) > 63:
            return "must be no more than 63 characters"
        return None if LABEL.fullmatch(name) else LABEL_MSG
    if len(name) > 253:
        return "must be no more than 253 characters"
    return None if SUBDOMAIN.fullmatch(name) else SUBDOMAIN_MSG


def _qualified_name_ok(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    return (
        (not prefix or (len(prefix) <= 253 and SUBDOMAIN.fullmatch(prefix) is not None))
        and len(name) <= 63
        and QUALIFIED_NAME.fullmatch(name) is not None
    )


def validate_object(rt: ResourceType, obj: dict, old: dict | None) -> None:
    meta = obj["metadata"]
    causes: list[Cause] = []
    problem = name_problem(meta["name"], rt.name_rule)
    if problem:
        causes.append(Cause("metadata.name", "Invalid", problem, meta["name"]))
    for key, value in (meta.get("labels") or {}).items():
        if not _qualified_name_ok(key):
            causes.append(
                Cause(
                    "metadata.labels",
                    "Invalid",
                    "name part must consist of alphanumeric characters, '-', '_' or '.'",
                    key,
                )
            )
        elif value and (len(value) > 63 or not QUALIFIED_NAME.fullmatch(value)):
            causes.append(
                Cause(
                    "metadata.labels",
                    "Invalid",
                    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.'",
                    value,
                )
            )
    for key in meta.get("annotations") or {}:
        if not _qualified_name_ok(key):
            causes.append(
                Cause(
                    "metadata.annotations",
                    "Invalid",
                    "name part must consist of alphanumeric characters, '-', '_' or '.'",
                    key,
                )
            )
    if rt.kind == "Deployment":
        causes += _deployment_causes(obj, old)
    if causes:
        raise invalid(rt.kind, rt.group, meta["name"], causes)


def _deployment_causes(obj: dict, old: dict | None) -> list[Cause]:
    spec = obj.get("spec") or {}
    selector = spec.get("selector")
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    causes = []
    if not selector:
        causes.append(Cause("spec.selector", "Required"))
    elif any(template_labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        causes.append(
            Cause(
                "spec.template.metadata.labels",
                "Invalid",
                "`selector` does not match template `labels`",
                template_labels,
            )
        )
    elif old is not None and old["spec"].get("selector") != selector:
        causes.append(Cause("spec.selector", "Invalid", "field is immutable", selector))
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    if not containers:
        causes.append(Cause("spec.template.spec.containers", "Required"))
    seen = set()
    for i, container in enumerate(containers):
        name = container.get("name", "")
        if not name:
            causes.append(Cause(f"spec.template.spec.containers[{i}].name", "Required"))
        elif name in seen:
            causes.append(Cause(f"spec.template.spec.containers[{i}].name", "Duplicate", value=name))
        seen.add(name)
        if not container.get("image"):
            causes.append(Cause(f"spec.template.spec.containers[{i}].image", "Required"))
    return causes


def _go_type(value: Any) -> str:
    names = {bool: "bool", str: "string", int: "number", float: "number", dict: "object", list: "array"}
    return names.get(type(value), "null")


def check_string_maps(obj: dict) -> None:
    """What the real decoder rejects before anything else: non-string label/annotation/data values."""
    maps = {
        "metadata.labels": (obj.get("metadata") or {}).get("labels"),
        "metadata.annotations": (obj.get("metadata") or {}).get("annotations"),
        "data": obj.get("data"),
    }
    for field, values in maps.items():
        if values is not None and not isinstance(values, dict):
            raise bad_request(
                f"json: cannot unmarshal {_go_type(values)} into Go struct field {field} of type map[string]string"
            )
        for key, value in (values or {}).items():
            if not isinstance(value, str):
                raise bad_request(
                    f"json: cannot unmarshal {_go_type(value)} into Go struct field {field}.{key} of type string"
                )


# --------------------------------------------------------------------------- selectors
#
# Label selectors as k8s.io/apimachinery pkg/labels/selector.go parses them (its lexer, its
# recursive-descent grammar, its messages), keys checked by IsQualifiedName and values by
# IsValidLabelValue (pkg/util/validation). Field selectors as pkg/fields/selector.go splits them,
# then the kind's field-label conversion: the default one (runtime.DefaultMetaV1FieldSelectorConversion:
# metadata.name and metadata.namespace only) for ServiceAccounts, ConfigMaps and Deployments, the
# registered ones (kubernetes pkg/apis/core/v1/conversion.go) for Pods and Namespaces.

QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QUALIFIED_NAME_ERR = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
)
_DNS1123_SUBDOMAIN_FMT = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_DNS1123_SUBDOMAIN_ERR = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character"
)
_LABEL_VALUE_ERR = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)


def _regex_error(message: str, fmt: str, *examples: str) -> str:
    """apimachinery validation.RegexError, spacing included ("'MyName',  or 'my.name', ...")."""
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{message} (e.g. {shown}regex used for validation is '{fmt}')"


def qualified_name_errors(value: str) -> list[str]:
    """validation.IsQualifiedName: an optional DNS-subdomain prefix and '/', then a name of at most 63."""
    name_error = _regex_error(_QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
    parts = value.split("/")
    errors: list[str] = []
    if len(parts) > 2:
        example = "(e.g. 'example.com/MyName')"
        return [f"a qualified name {name_error} with an optional DNS subdomain prefix and '/' {example}"]
    name = parts[-1]
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            errors.append("prefix part must be non-empty")
        else:
            if len(prefix) > 253:
                errors.append("prefix part must be no more than 253 characters")
            if not re.fullmatch(_DNS1123_SUBDOMAIN_FMT, prefix):
                subdomain_error = _regex_error(_DNS1123_SUBDOMAIN_ERR, _DNS1123_SUBDOMAIN_FMT, "example.com")
                errors.append("prefix part " + subdomain_error)
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > 63:
        errors.append("name part must be no more than 63 characters")
    if not re.fullmatch(QUALIFIED_NAME_FMT, name):
        errors.append("name part " + name_error)
    return errors


def label_value_errors(value: str) -> list[str]:
    """validation.IsValidLabelValue."""
    errors = ["must be no more than 63 characters"] if len(value) > 63 else []
    if not re.fullmatch(f"({QUALIFIED_NAME_FMT})?", value):
        errors.append(_regex_error(_LABEL_VALUE_ERR, f"({QUALIFIED_NAME_FMT})?", "MyValue", "my_value", "12345"))
    return errors


def _go_quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


class _SelectorSyntaxError(Exception):
    pass


# Lexer tokens (pkg/labels: string2token); IDENT and END have no literal of their own.
_LABEL_TOKENS = {
    ")": "CLOSE",
    ",": "COMMA",
    "!": "NOT",
    "==": "DOUBLE_EQ",
    "=": "EQ",
    ">": "GT",
    "in": "IN",
    "<": "LT",
    "!=": "NOT_EQ",
    "notin": "NOT_IN",
    "(": "OPEN",
}
_LABEL_OPERATORS = {"IN": "in", "NOT_IN": "notin", "EQ": "=", "DOUBLE_EQ": "==", "NOT_EQ": "!=", "GT": "gt", "LT": "lt"}
_SPECIAL = set("=!(),><")
_WHITESPACE = " \t\r\n"


def _lex_labels(text: str) -> list[tuple[str, str]]:
    """The selector's tokens; an identifier is any run of characters that are neither special nor blank."""
    items: list[tuple[str, str]] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos] in _WHITESPACE:
            pos += 1
        if pos >= len(text):
            items.append(("END", ""))
            return items
        if text[pos] in _SPECIAL:  # the longest operator that is a token ("!=" over "!")
            symbol = text[pos : pos + 2] if text[pos : pos + 2] in _LABEL_TOKENS else text[pos]
            items.append((_LABEL_TOKENS[symbol], symbol))
            pos += len(symbol)
            continue
        end = pos
        while end < len(text) and text[end] not in _SPECIAL and text[end] not in _WHITESPACE:
            end += 1
        word = text[pos:end]
        items.append((_LABEL_TOKENS.get(word, "IDENT"), word))
        pos = end


@dataclasses.dataclass(frozen=True)
class Requirement:
    """One requirement of a label selector; `operator` as selection.Operator spells it."""

    key: str
    operator: str  # "in", "notin", "=", "==", "!=", "exists", "!", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict) -> bool:
        has = self.key in labels
        if self.operator in ("in", "=", "=="):
            return has and labels[self.key] in self.values
        if self.operator in ("notin", "!="):
            return not has or labels[self.key] not in self.values
        if self.operator == "exists":
            return has
        if self.operator == "!":
            return not has
        if not has or not re.fullmatch(r"[+-]?\d+", labels[self.key]):  # gt / lt compare integers
            return False
        mine, theirs = int(self.values[0]), int(labels[self.key])
        return theirs > mine if self.operator == "gt" else theirs < mine


def _new_requirement(key: str, operator: str, values: list[str]) -> Requirement:
    """labels.NewRequirement: the values checked (the key was, when it was read)."""
    problems = []
    if operator in ("gt", "lt"):
        for i, value in enumerate(values):
            if not re.fullmatch(r"[+-]?\d+", value) or not -(2**63) <= int(value) < 2**63:
                problems.append(
                    f"values[{i}]: Invalid value: {_go_quote(value)}: "
                    "for 'Gt', 'Lt' operators, the value must be an integer"
                )
    for i, value in enumerate(values):
        errors = label_value_errors(value)
        if errors:
            problems.append(f"values[{i}][{key}]: Invalid value: {_go_quote(value)}: {'; '.join(errors)}")
    if problems:  # an aggregate: one error alone, else "[a, b]"
        unique = list(dict.fromkeys(problems))
        raise _SelectorSyntaxError(unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]")
    return Requirement(key, operator, tuple(values))


class _LabelParser:
    def __init__(self, text: str) -> None:
        self.items = _lex_labels(text)
        self.pos = 0

    def lookahead(self, values: bool) -> tuple[str, str]:
        token, literal = self.items[self.pos]
        return ("IDENT" if values and token in ("IN", "NOT_IN") else token), literal

    def consume(self, values: bool) -> tuple[str, str]:
        found = self.lookahead(values)
        self.pos += 1
        return found

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while True:
            token, literal = self.lookahead(values=True)
            if token == "END":
                return requirements
            if token not in ("IDENT", "NOT"):
                raise _SelectorSyntaxError(f"found '{literal}', expected: !, identifier, or 'end of string'")
            try:
                requirements.append(self.requirement())
            except _SelectorSyntaxError as error:
                raise _SelectorSyntaxError(f"unable to parse requirement: {error}") from None
            token, literal = self.consume(values=True)
            if token == "END":
                return requirements
            if token != "COMMA":
                raise _SelectorSyntaxError(f"found '{literal}', expected: ',' or 'end of string'")
            token, literal = self.lookahead(values=True)
            if token not in ("IDENT", "NOT"):
                raise _SelectorSyntaxError(f"found '{literal}', expected: identifier after ','")

    def requirement(self) -> Requirement:
        operator = ""
        token, literal = self.consume(values=True)
        if token == "NOT":
            operator = "!"
            token, literal = self.consume(values=True)
        if token != "IDENT":
            raise _SelectorSyntaxError(f"found '{literal}', expected: identifier")
        errors = qualified_name_errors(literal)
        if errors:
            raise _SelectorSyntaxError(f"<nil>: Invalid value: {_go_quote(literal)}: {'; '.join(errors)}")
        key = literal
        if self.lookahead(values=True)[0] in ("END", "COMMA") and not operator:
            operator = "exists"
        if operator:  # "!key" is complete whatever follows; the caller then finds what follows
            return Requirement(key, operator)
        token, literal = self.consume(values=False)
        if token not in _LABEL_OPERATORS:
            raise _SelectorSyntaxError(f"found '{literal}', expected: in, notin, =, ==, !=, gt, lt")
        operator = _LABEL_OPERATORS[token]
        values = self.value_set() if operator in ("in", "notin") else self.exact_value()
        return _new_requirement(key, operator, sorted(values))

    def value_set(self) -> set[str]:
        token, literal = self.consume(values=True)
        if token != "OPEN":
            raise _SelectorSyntaxError(f"found '{literal}' expected: '('")
        token, literal = self.lookahead(values=True)
        if token == "CLOSE":  # "()" is the set of the empty string
            self.consume(values=True)
            return {""}
        if token not in ("IDENT", "COMMA"):
            raise _SelectorSyntaxError(f"found '{literal}', expected: ',', ')' or identifier")
        values = self.identifiers()
        if self.consume(values=True)[0] != "CLOSE":
            raise _SelectorSyntaxError(f"found '{literal}', expected: ')'")
        return values

    def identifiers(self) -> set[str]:
        """A comma-separated list of possibly empty values, up to (not including) the ')'."""
        values: set[str] = set()
        while True:
            token, literal = self.consume(values=True)
            if token == "IDENT":
                values.add(literal)
                following, shown = self.lookahead(values=True)
                if following == "CLOSE":
                    return values
                if following != "COMMA":
                    raise _SelectorSyntaxError(f"found '{shown}', expected: ',' or ')'")
            elif token == "COMMA":
                if not values:
                    values.add("")  # "(,"
                following, _ = self.lookahead(values=True)
                if following == "CLOSE":
                    values.add("")  # ",)"
                    return values
                if following == "COMMA":
                    self.consume(values=True)
                    values.add("")  # ",,"
            else:
                raise _SelectorSyntaxError(f"found '{literal}', expected: ',', or identifier")

    def exact_value(self) -> set[str]:
        token, _ = self.lookahead(values=True)
        if token in ("END", "COMMA"):  # "key=" selects the empty value
            return {""}
        token, literal = self.consume(values=True)
        if token != "IDENT":
            raise _SelectorSyntaxError(f"found '{literal}', expected: identifier")
        return {literal}


def parse_label_selector(text: str) -> list[Requirement]:
    """`labels.Parse`: the requirements, or a 400 BadRequest with the message the API server gives
    (e.g. "unable to parse requirement: found '(', expected: identifier")."""
    try:
        return _LabelParser(text).parse()
    except _SelectorSyntaxError as error:
        raise bad_request(str(error)) from None


def label_selector(text: str) -> Callable[[dict], bool]:
    requirements = parse_label_selector(text)
    return lambda obj: all(r.matches(obj["metadata"].get("labels") or {}) for r in requirements)


@dataclasses.dataclass(frozen=True)
class FieldTerm:
    field: str
    value: str
    negate: bool  # "!=" (else "=" or "==")


def _pod_fields(obj: dict) -> dict[str, str]:
    """registry/core/pod PodToSelectableFields, from the v1 JSON (spec.host is spec.nodeName's alias)."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    ips = [ip.get("ip", "") for ip in status.get("podIPs") or []] or ([status["podIP"]] if status.get("podIP") else [])
    return {
        "spec.nodeName": spec.get("nodeName") or "",
        "spec.restartPolicy": spec.get("restartPolicy") or "",
        "spec.schedulerName": spec.get("schedulerName") or "",
        "spec.serviceAccountName": spec.get("serviceAccountName") or "",
        "spec.hostNetwork": "true" if spec.get("hostNetwork") else "false",
        "status.phase": status.get("phase") or "",
        "status.podIP": ips[0] if ips else "",
        "status.nominatedNodeName": status.get("nominatedNodeName") or "",
    }


POD_FIELD_LABELS = (
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.podIPs",
    "status.nominatedNodeName",
)


def _convert_field_label(rt: ResourceType, label: str) -> str:
    """The kind's field-label conversion: the label it selects on, or a 400 with the real message."""
    if rt.kind == "Pod":
        if label == "spec.host":
            return "spec.nodeName"
        if label in POD_FIELD_LABELS:
            return label
        raise bad_request(f"field label not supported: {label}")
    if rt.kind == "Namespace":
        if label in ("metadata.name", "status.phase"):
            return label
        raise bad_request(f"field label not supported: {label}")
    if label in ("metadata.name", "metadata.namespace"):
        return label
    raise bad_request(f'{_go_quote(label)} is not a known field selector: only "metadata.name", "metadata.namespace"')


def _split_field_terms(text: str) -> list[str]:
    terms, start, escaped = [], 0, False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            terms.append(text[start:i])
            start = i + 1
    return [*terms, text[start:]] if text else []


def _unescape_field_value(value: str) -> str:
    """fields.UnescapeValue: only \\\\, \\, and \\= are escapes; a bare ',' or '=' is refused."""
    out, escaped = [], False
    for ch in value:
        if escaped:
            if ch not in "\\,=":
                raise bad_request(f"invalid field selector: invalid escape sequence: \\{ch}")
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in ",=":
            raise bad_request(f"invalid field selector: unescaped character in value: {ord(ch)}")
        else:
            out.append(ch)
    if escaped:
        raise bad_request("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def parse_field_selector(text: str, rt: ResourceType) -> list[FieldTerm]:
    """fields.ParseSelector (terms sorted, no blanks trimmed), then the kind's label conversion."""
    terms = []
    for part in sorted(_split_field_terms(text)):
        if not part:
            continue
        found = next(
            ((i, op) for i in range(len(part)) for op in ("!=", "==", "=") if part.startswith(op, i)),
            None,
        )
        if found is None:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        i, op = found
        terms.append(FieldTerm(part[:i], _unescape_field_value(part[i + len(op) :]), op == "!="))
    return [dataclasses.replace(t, field=_convert_field_label(rt, t.field)) for t in terms]


def selectable_fields(rt: ResourceType, obj: dict) -> dict[str, str]:
    meta = obj.get("metadata") or {}
    fields = {"metadata.name": meta.get("name") or ""}
    if rt.namespaced:
        fields["metadata.namespace"] = meta.get("namespace") or ""
    if rt.kind == "Pod":
        fields.update(_pod_fields(obj))
    if rt.kind == "Namespace":
        fields["status.phase"] = (obj.get("status") or {}).get("phase") or ""
    return fields


def _field_term_matches(rt: ResourceType, term: FieldTerm, obj: dict) -> bool:
    if term.field == "status.podIPs":  # any of the pod's IPs
        ips = [ip.get("ip", "") for ip in (obj.get("status") or {}).get("podIPs") or []]
        return (term.value in ips) != term.negate
    return (selectable_fields(rt, obj).get(term.field, "") == term.value) != term.negate


def field_selector(text: str, rt: ResourceType) -> Callable[[dict], bool]:
    terms = parse_field_selector(text, rt)
    return lambda obj: all(_field_term_matches(rt, t, obj) for t in terms)


# --------------------------------------------------------------------------- lists: paging, resource versions
#
# As k8s.io/apiserver serves them (pkg/storage: continue tokens and ValidateListOptions; storage/etcd3:
# GetList and its compaction errors); the behaviour documented under "Retrieving large results sets in
# chunks" (kubernetes/website content/en/docs/reference/using-api/api-concepts.md) and in the `limit` and
# `continue` parameters and ListMeta of the reference OpenAPI (tests/reference/kubernetes-openapi).

CONTINUE_TOKEN_VERSION = "meta.k8s.io/v1"
CONTINUE_TTL_SECONDS = 300.0
"""How long a list snapshot (what a continue token pages through) is kept: the docs' "by default 5 minutes"."""
MAX_LIST_SNAPSHOTS = 64
"""Snapshots kept at most; the oldest go first (as etcd compaction drops the oldest revisions)."""
LIST_TOO_OLD = "The resourceVersion for the provided list is too old."
CONTINUE_TOO_OLD = (
    "The provided continue parameter is too old to display a consistent list result. You can start a new "
    "list without the continue parameter, or use the continue token in this response to retrieve the "
    "remainder of the results. Continuing with the provided token results in an inconsistent list - objects "
    "that were created, modified, or deleted between the time the first chunk was returned and now may show "
    "up in the list."
)


def storage_prefix(rt: ResourceType, namespace: str | None) -> str:
    """The etcd key prefix a list reads: `/registry/serviceaccounts/` (every namespace) or
    `/registry/serviceaccounts/team-a/`. Items come in the order of their keys under it."""
    return f"/registry/{rt.plural}/" + (f"{namespace}/" if rt.namespaced and namespace is not None else "")


def storage_key(rt: ResourceType, namespace: str | None, name: str) -> str:
    return f"/registry/{rt.plural}/" + (f"{namespace}/{name}" if rt.namespaced else name)


def encode_continue(key: str, prefix: str, resource_version: int) -> str:
    """storage.EncodeContinue: base64url (no padding) of {"v", "rv", "start"}, start relative to the prefix."""
    token = {"v": CONTINUE_TOKEN_VERSION, "rv": resource_version, "start": key[len(prefix) :]}
    return base64.urlsafe_b64encode(json.dumps(token, separators=(",", ":")).encode()).rstrip(b"=").decode()


def _go_path_clean(path: str) -> str:
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def decode_continue(value: str, prefix: str) -> tuple[str, int]:
    """storage.DecodeContinue: (the key to start at, the resource version); a bad token is a 400
    "invalid continue token: continue key is not valid..." (the detail after that is approximate)."""

    def refuse(detail: str) -> ApiError:
        return bad_request(f"invalid continue token: continue key is not valid{detail}")

    bad = next((i for i, ch in enumerate(value) if not (ch.isascii() and (ch.isalnum() or ch in "-_"))), None)
    if bad is not None or len(value) % 4 == 1:
        at = bad if bad is not None else len(value) - 1
        raise refuse(f": illegal base64 data at input byte {at}")
    try:
        token = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (ValueError, binascii.Error) as exc:
        raise refuse(f": {exc}") from None
    if not isinstance(token, dict):
        raise refuse(": json: cannot unmarshal into Go value of type storage.continueToken")
    version, rv, start = token.get("v", ""), token.get("rv", 0), token.get("start", "")
    if not isinstance(rv, int) or isinstance(rv, bool) or not isinstance(start, str) or not isinstance(version, str):
        raise refuse(": json: cannot unmarshal into Go struct field of type storage.continueToken")
    if version != CONTINUE_TOKEN_VERSION:
        raise refuse(f": server does not recognize this encoded version {version}")
    if rv == 0:
        raise refuse(": incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
    if not start:
        raise refuse(": encoded start key empty (version meta.k8s.io/v1)")
    key = start if start.startswith("/") else "/" + start
    if _go_path_clean(key) != key:  # no climbing out of the prefix
        raise refuse(f": {start}")
    return prefix + key[1:], rv


def too_large_resource_version(wanted: int, current: int) -> ApiError:
    """storage.NewTooLargeResourceVersionError: the server waited (3 s) for a version it never reached."""
    details = {
        "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
        "retryAfterSeconds": 1,
    }
    return ApiError(504, "Timeout", f"Timeout: Too large resource version: {wanted}, current: {current}", details)


def validate_list_options(resource_version: str, match: str, token: str) -> None:
    """metainternalversion validation.ValidateListOptions (a list, not a watch): 422 on ListOptions."""
    causes = []
    field = "resourceVersionMatch"
    if match:
        if not resource_version:
            causes.append(Cause(field, "Forbidden", f"{field} is forbidden unless resourceVersion is provided"))
        if token:
            causes.append(Cause(field, "Forbidden", f"{field} is forbidden when continue is provided"))
        if match not in ("Exact", "NotOlderThan"):
            causes.append(Cause(field, "NotSupported", 'supported values: "Exact", "NotOlderThan", ""', match))
        elif match == "Exact" and resource_version == "0":
            causes.append(Cause(field, "Forbidden", f'{field} "exact" is forbidden for resourceVersion "0"'))
    if causes:
        raise invalid("ListOptions", "meta.k8s.io", "", causes)


def _int64_param(value: str | None) -> int:
    if value is None or value == "":
        return 0
    if not re.fullmatch(r"[+-]?\d+", value):
        raise bad_request(f"strconv.ParseInt: parsing {_go_quote(value)}: invalid syntax")
    if not -(2**63) <= int(value) < 2**63:
        raise bad_request(f"strconv.ParseInt: parsing {_go_quote(value)}: value out of range")
    return int(value)


@dataclasses.dataclass
class _ListSnapshot:
    """A collection as of one resourceVersion, in key order: what a consistent paged list reads."""

    taken: float  # clock time it was taken, or last found current
    keys: list[str]
    items: list[dict]  # as list items are sent: rendered, without kind and apiVersion


# --------------------------------------------------------------------------- kind-specific behaviour


def _rfc3339(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def apply_defaults(rt: ResourceType, obj: dict) -> None:
    """The defaults the real API server fills in (the ones a client is likely to look at)."""
    if rt.kind == "Namespace":
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
    if rt.kind != "Deployment":
        return
    spec = obj.setdefault("spec", {})
    for key, value in (
        ("replicas", 1),
        ("revisionHistoryLimit", 10),
        ("progressDeadlineSeconds", 600),
        ("strategy", {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
    ):
        spec.setdefault(key, value)
    pod = spec.setdefault("template", {}).setdefault("spec", {})
    for key, value in (
        ("restartPolicy", "Always"),
        ("terminationGracePeriodSeconds", 30),
        ("dnsPolicy", "ClusterFirst"),
        ("securityContext", {}),
        ("schedulerName", "default-scheduler"),
    ):
        pod.setdefault(key, value)
    for container in pod.get("containers") or []:
        image = container.get("image") or ""
        latest = ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
        container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("resources", {})


def rolled_out_status(obj: dict, now: str) -> dict:
    """A Deployment whose controller has observed its generation and has all replicas available."""
    replicas = obj["spec"].get("replicas", 1)
    name = obj["metadata"]["name"]
    return {
        "observedGeneration": obj["metadata"]["generation"],
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [
            {
                "type": "Available",
                "status": "True",
                "lastUpdateTime": now,
                "lastTransitionTime": now,
                "reason": "MinimumReplicasAvailable",
                "message": "Deployment has minimum availability.",
            },
            {
                "type": "Progressing",
                "status": "True",
                "lastUpdateTime": now,
                "lastTransitionTime": now,
                "reason": "NewReplicaSetAvailable",
                "message": f'ReplicaSet "{name}-{obj["metadata"]["generation"]:x}" has successfully progressed.',
            },
        ],
    }


# --------------------------------------------------------------------------- pods: admission, the webhook, the kubelet

# The Azure Workload Identity mutating webhook, as v1.6 injects it (pkg/webhook/consts.go, webhook.go;
# tests/reference/azure-workload-identity and the v1.6 notes in tests/reference/SOURCES.md).
# The v1.6.0 quick-start.md still shows v1.5 (`/var/run/secrets/azure/tokens`, volume `azure-identity-token`).
WI_USE_LABEL = "azure.workload.identity/use"
WI_CLIENT_ID_ANNOTATION = "azure.workload.identity/client-id"
WI_TENANT_ID_ANNOTATION = "azure.workload.identity/tenant-id"
WI_TOKEN_EXPIRATION_ANNOTATION = "azure.workload.identity/service-account-token-expiration"
WI_SKIP_CONTAINERS_ANNOTATION = "azure.workload.identity/skip-containers"
WI_VOLUME_PREFIX = "azure-workload-identity-reserved-"
WI_MOUNT_PATH = "/var/run/secrets/azure/wi"
WI_TOKEN_PATH = "token/azure-identity-token"
WI_TOKEN_FILE = f"{WI_MOUNT_PATH}/{WI_TOKEN_PATH}"
WI_AUDIENCE = "api://AzureADTokenExchange"
WI_WEBHOOK_NAME = "mutation.azure-workload-identity.io"
WI_MIN_EXPIRATION, WI_MAX_EXPIRATION, WI_DEFAULT_EXPIRATION = 3600, 86400, 3600
PUBLIC_CLOUD_AUTHORITY = "https://login.microsoftonline.com/"  # go-autorest PublicCloud.ActiveDirectoryEndpoint
SA_TOKEN_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
POD_TEMPLATE_HASH = "pod-template-hash"
NODE_NAME = "aks-nodepool1-12345678-vmss000000"
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # k8s rand.SafeEncodeString: no vowels, no look-alikes


def random_suffix(length: int = 5) -> str:
    return "".join(_SAFE_ALPHABET[b % len(_SAFE_ALPHABET)] for b in uuid.uuid4().bytes[:length])


def template_hash(template: dict) -> str:
    """A stable pod-template-hash (the real one is an FNV hash, safe-encoded: same alphabet, other digits)."""
    digest = int(hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest(), 16)
    out = ""
    for _ in range(10):
        digest, index = divmod(digest, len(_SAFE_ALPHABET))
        out += _SAFE_ALPHABET[index]
    return out


def wi_volume_name(pod_name: str) -> str:
    """`azure-workload-identity-reserved-` + sha256(pod name) in hex, cut to a 63-character volume name."""
    return WI_VOLUME_PREFIX + hashlib.sha256(pod_name.encode()).hexdigest()[: 63 - len(WI_VOLUME_PREFIX)]


class WebhookDenied(Exception):
    """The webhook answered `admission.Errored(400, err)`: the API server refuses the pod."""


def workload_identity_webhook(pod: dict, service_account: dict, default_tenant_id: str, authority_host: str) -> dict:
    """What the v1.6 webhook does to a pod at creation (the caller checks the objectSelector label).

    Faithful to pkg/webhook/webhook.go: token expiration from the pod annotation, else the service
    account's, else 3600, refused outside 3600-86400; client id from the SA annotation (an empty value
    is *not* injected: a missing annotation silently yields no AZURE_CLIENT_ID); tenant from the SA
    annotation when the key is present, else the webhook's configured tenant; env vars appended only
    when the container has none of that name; init containers and containers alike except those in
    `skip-containers`; one projected volume named from the pod name (generateName + " (prefix)" when
    the name is not generated yet, as for every controller-made pod) mounted read-only at
    /var/run/secrets/azure/wi. Not emulated: the proxy sidecar, custom token endpoints.
    """
    pod = copy.deepcopy(pod)
    meta, spec = pod.setdefault("metadata", {}), pod.setdefault("spec", {})
    pod_annotations = meta.get("annotations") or {}
    sa_annotations = (service_account.get("metadata") or {}).get("annotations") or {}
    pod_name = meta.get("name") or f"{meta.get('generateName', '')} (prefix)"
    raw = pod_annotations.get(WI_TOKEN_EXPIRATION_ANNOTATION) or sa_annotations.get(WI_TOKEN_EXPIRATION_ANNOTATION)
    expiration = WI_DEFAULT_EXPIRATION
    if raw:
        if not re.fullmatch(r"[+-]?\d+", raw):
            raise WebhookDenied(f'strconv.ParseInt: parsing "{raw}": invalid syntax')
        expiration = int(raw)
    if not WI_MIN_EXPIRATION <= expiration <= WI_MAX_EXPIRATION:
        raise WebhookDenied(f"token expiration {expiration} not valid. Expected value to be between 3600 and 86400")
    client_id = sa_annotations.get(WI_CLIENT_ID_ANNOTATION, "")
    tenant_id = sa_annotations.get(WI_TENANT_ID_ANNOTATION, default_tenant_id)  # present-but-empty wins
    skip = {s.strip() for s in (pod_annotations.get(WI_SKIP_CONTAINERS_ANNOTATION) or "").split(";")} - {""}
    volume = wi_volume_name(pod_name)
    wanted = [
        ("AZURE_CLIENT_ID", client_id),
        ("AZURE_TENANT_ID", tenant_id),
        ("AZURE_FEDERATED_TOKEN_FILE", f"{WI_MOUNT_PATH}/{WI_TOKEN_PATH}"),
        ("AZURE_AUTHORITY_HOST", authority_host),
    ]
    for field in ("initContainers", "containers"):
        for container in spec.get(field) or []:
            if container.get("name") in skip:
                continue
            env = container.setdefault("env", [])
            present = {e.get("name") for e in env}
            env += [{"name": n, "value": v} for n, v in wanted if n not in present and v]
            if not env:
                del container["env"]
            mounts = container.setdefault("volumeMounts", [])
            mount = {"name": volume, "readOnly": True, "mountPath": WI_MOUNT_PATH}
            index = next((i for i, m in enumerate(mounts) if m.get("name") == volume), None)
            if index is None:
                mounts.append(mount)
            else:
                mounts[index] = mount
    projected = {
        "name": volume,
        "projected": {
            "sources": [
                {
                    "serviceAccountToken": {
                        "audience": WI_AUDIENCE,
                        "expirationSeconds": expiration,
                        "path": WI_TOKEN_PATH,
                    }
                }
            ],
            "defaultMode": 420,  # API server defaulting of the patched pod
        },
    }
    volumes = spec.setdefault("volumes", [])
    index = next((i for i, v in enumerate(volumes) if v.get("name") == volume), None)
    if index is None:
        volumes.append(projected)
    else:
        volumes[index] = projected
    return pod


def service_account_admission(pod: dict, service_account: dict | None, namespace: str) -> dict:
    """The built-in ServiceAccount admission plugin: default the name, require the account, mount its token."""
    pod = copy.deepcopy(pod)
    meta, spec = pod.setdefault("metadata", {}), pod.setdefault("spec", {})
    sa_name = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    spec["serviceAccountName"] = spec["serviceAccount"] = sa_name
    if service_account is None:
        shown = meta.get("name") or meta.get("generateName", "")
        raise ApiError(
            403,
            "Forbidden",
            f'pods "{shown}" is forbidden: error looking up service account {namespace}/{sa_name}: '
            f'serviceaccount "{sa_name}" not found',
            {"name": shown, "kind": "pods"},
        )
    automount = spec.get("automountServiceAccountToken", service_account.get("automountServiceAccountToken", True))
    if automount is False:
        return pod
    volume = f"kube-api-access-{random_suffix()}"
    spec.setdefault("volumes", []).append(
        {
            "name": volume,
            "projected": {
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {
                        "downwardAPI": {
                            "items": [
                                {
                                    "path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                                }
                            ]
                        }
                    },
                ],
                "defaultMode": 420,
            },
        }
    )
    for field in ("initContainers", "containers"):
        for container in spec.get(field) or []:
            if not any(m.get("mountPath") == SA_TOKEN_MOUNT for m in container.get("volumeMounts") or []):
                container.setdefault("volumeMounts", []).append(
                    {"name": volume, "readOnly": True, "mountPath": SA_TOKEN_MOUNT}
                )
    return pod


def missing_config_references(pod: dict, configmaps: dict[str, dict]) -> str | None:
    """Why the kubelet cannot start the pod's containers (CreateContainerConfigError), or None.

    Only ConfigMaps are checked (Secrets are not emulated, and Keyless never reads them)."""
    spec = pod.get("spec") or {}
    for field in ("initContainers", "containers"):
        for container in spec.get(field) or []:
            for source in container.get("envFrom") or []:
                ref = source.get("configMapRef")
                if ref and not ref.get("optional") and ref.get("name") not in configmaps:
                    return f'configmap "{ref.get("name")}" not found'
            for env in container.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("configMapKeyRef")
                if not ref or ref.get("optional"):
                    continue
                cm = configmaps.get(ref.get("name"))
                if cm is None:
                    return f'configmap "{ref.get("name")}" not found'
                if ref.get("key") not in (cm.get("data") or {}):
                    namespace = (pod.get("metadata") or {}).get("namespace")
                    return f"couldn't find key {ref.get('key')} in ConfigMap {namespace}/{ref.get('name')}"
    return None


def running_pod_status(pod: dict, now: str) -> dict:
    spec = pod["spec"]
    statuses = [
        {
            "name": c["name"],
            "image": c.get("image", ""),
            "imageID": "",
            "containerID": f"containerd://{uuid.uuid4().hex}",
            "ready": True,
            "started": True,
            "restartCount": 0,
            "state": {"running": {"startedAt": now}},
        }
        for c in spec.get("containers") or []
    ]
    conditions = [
        {"type": t, "status": "True", "lastTransitionTime": now}
        for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")
    ]
    return {
        "phase": "Running",
        "conditions": conditions,
        "hostIP": "10.224.0.4",
        "podIP": f"10.244.0.{uuid.uuid4().int % 250 + 2}",
        "startTime": now,
        "containerStatuses": statuses,
        "qosClass": "BestEffort",
    }


def waiting_pod_status(pod: dict, now: str, reason: str, message: str) -> dict:
    statuses = [
        {
            "name": c["name"],
            "image": c.get("image", ""),
            "imageID": "",
            "ready": False,
            "started": False,
            "restartCount": 0,
            "state": {"waiting": {"reason": reason, **({"message": message} if message else {})}},
        }
        for c in pod["spec"].get("containers") or []
    ]
    return {
        "phase": "Pending",
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": "False", "lastTransitionTime": now, "reason": "ContainersNotReady"},
        ],
        "hostIP": "10.224.0.4",
        "startTime": now,
        "containerStatuses": statuses,
        "qosClass": "BestEffort",
    }


def _without_times(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items() if k not in ("lastUpdateTime", "lastTransitionTime")}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


def deployment_status(
    dep: dict, desired: int, total: int, updated: int, ready: int, failure: str | None, now: str
) -> dict:
    """Status as the deployment controller writes it; fully rolled out = the synthesized `rolled_out_status`."""
    if failure is None and total == updated == ready == desired:
        return rolled_out_status(dep, now)
    name, generation = dep["metadata"]["name"], dep["metadata"]["generation"]
    rs = f"{name}-{template_hash(dep['spec']['template'])}"
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "replicas": total,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": ready,
    }
    if total - ready > 0:
        status["unavailableReplicas"] = total - ready
    status = {k: v for k, v in status.items() if v or k == "observedGeneration"}
    conditions = [
        {
            "type": "Available",
            "status": "True" if ready >= desired else "False",
            "lastUpdateTime": now,
            "lastTransitionTime": now,
            "reason": "MinimumReplicasAvailable" if ready >= desired else "MinimumReplicasUnavailable",
            "message": "Deployment has minimum availability."
            if ready >= desired
            else "Deployment does not have minimum availability.",
        },
        {
            "type": "Progressing",
            "status": "True",
            "lastUpdateTime": now,
            "lastTransitionTime": now,
            "reason": "ReplicaSetUpdated",
            "message": f'ReplicaSet "{rs}" is progressing.',
        },
    ]
    if failure is not None:
        conditions.append(
            {
                "type": "ReplicaFailure",
                "status": "True",
                "lastUpdateTime": now,
                "lastTransitionTime": now,
                "reason": "FailedCreate",
                "message": failure,
            }
        )
    status["conditions"] = conditions
    return status


# --------------------------------------------------------------------------- service account tokens

TOKEN_REQUEST_KIND = "TokenRequest"
TOKEN_REQUEST_GROUP = "authentication.k8s.io"
TOKEN_REQUEST_API_VERSION = f"{TOKEN_REQUEST_GROUP}/v1"
DEFAULT_SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
"""kube-apiserver's usual --service-account-issuer (and so its API audience) when the cluster has no OIDC issuer."""
DEFAULT_TOKEN_EXPIRATION_SECONDS = 60 * 60  # pkg/apis/authentication/v1/defaults.go
MIN_TOKEN_EXPIRATION_SECONDS = 10 * 60  # pkg/apis/authentication/validation: MinTokenAgeSec
MAX_TOKEN_EXPIRATION_SECONDS = 1 << 32  # ... "may not specify a duration larger than 2^32 seconds"
WARN_ONLY_BOUND_TOKEN_EXPIRATION_SECONDS = 60 * 60 + 7  # pkg/serviceaccount/claims.go: kubelet's default request
EXPIRATION_EXTENSION_SECONDS = 24 * 365 * 60 * 60  # ... ExpirationExtensionSeconds
OPENID_CONFIG_PATH = "/.well-known/openid-configuration"  # pkg/serviceaccount/openidmetadata.go
JWKS_PATH = "/openid/v1/jwks"
ISSUER_CACHE_CONTROL = "public, max-age=3600"  # pkg/routes/openidmetadata.go
JWKS_CONTENT_TYPE = "application/jwk-set+json"  # RFC 7517 section 8.5.1, as pkg/routes/openidmetadata.go serves it


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_uint(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))


def key_id(public_key: rsa.RSAPublicKey) -> str:
    """The `kid` kube-apiserver gives a signing key (pkg/serviceaccount/jwt.go keyIDFromPublicKey):
    base64url (unpadded) of the SHA-256 of the public key's PKIX (SubjectPublicKeyInfo) DER."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _b64url(hashlib.sha256(der).digest())


def jwks_uri_for(issuer: str) -> str:
    """`<issuer>openid/v1/jwks`: where AKS's OIDC issuer (and the API server, --service-account-jwks-uri) says
    its keys are."""
    return issuer.rstrip("/") + JWKS_PATH


class IssuerKey:
    """One service account issuer and its RSA 2048 signing key. The key is generated on first use
    (signing, or someone reading the JWKS): generating one takes about 0.1 s, and most tests that seed a
    cluster never ask for a token."""

    def __init__(self, issuer: str, jwks_uri: str) -> None:
        self.issuer, self.jwks_uri = issuer, jwks_uri
        self._lock = threading.Lock()
        self._private: rsa.RSAPrivateKey | None = None
        self._kid = ""

    @property
    def private_key(self) -> rsa.RSAPrivateKey:
        with self._lock:
            if self._private is None:
                self._private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                self._kid = key_id(self._private.public_key())
            return self._private

    @property
    def kid(self) -> str:
        self.private_key  # noqa: B018 (makes the key)
        return self._kid

    def discovery(self) -> dict:
        """The OIDC discovery document as openidmetadata.go renders it (field order kept)."""
        return {
            "issuer": self.issuer,
            "jwks_uri": self.jwks_uri,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def jwks(self) -> dict:
        """The JWKS (go-jose's JSONWebKey field order: use, kty, kid, alg, n, e)."""
        numbers = self.private_key.public_key().public_numbers()
        key = {"use": "sig", "kty": "RSA", "kid": self.kid, "alg": "RS256"}
        return {"keys": [{**key, "n": _b64url_uint(numbers.n), "e": _b64url_uint(numbers.e)}]}

    def sign(self, claims: dict) -> str:
        """A compact JWS as JWTTokenGenerator makes it: header {"alg":"RS256","kid":...} (no typ), the claims
        as one JSON object with sorted keys (go-jose merges them into a map)."""
        payload = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
        return api_jws.encode(payload, self.private_key, algorithm="RS256", headers={"kid": self.kid, "typ": None})


def _parse_group_version(api_version: str) -> tuple[str, str] | None:
    """k8s.io/apimachinery schema.ParseGroupVersion: "" -> ("", ""), "v1" -> ("", "v1"), "g/v" -> ("g", "v")."""
    if api_version in ("", "/"):
        return "", ""
    parts = api_version.split("/")
    if len(parts) == 1:
        return "", parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    return None


def _gvk_string(group: str, version: str, kind: str) -> str:
    """schema.GroupVersionKind.String(): `/v1, Kind=ConfigMap`, `apps/v1, Kind=Deployment`."""
    return f"{group}/{version}, Kind={kind}"


def _undecodable(detail: str) -> ApiError:
    return bad_request(f'{TOKEN_REQUEST_KIND} in version "v1" cannot be handled as a {TOKEN_REQUEST_KIND}: {detail}')


def parse_token_request(body: dict) -> tuple[dict, list[str], int | None, dict | None]:
    """(metadata, spec.audiences, spec.expirationSeconds, spec.boundObjectRef) of a TokenRequest body, with
    the type checks the JSON decoder makes (wrong types are 400, in the decoder's words, roughly)."""
    kind, api_version = body.get("kind"), body.get("apiVersion")
    if kind and kind != TOKEN_REQUEST_KIND:
        raise bad_request(f"the kind in the data ({kind}) does not match the expected kind ({TOKEN_REQUEST_KIND})")
    if api_version and api_version != TOKEN_REQUEST_API_VERSION:
        raise bad_request(
            f"the API version in the data ({api_version}) does not match the expected API version "
            f"({TOKEN_REQUEST_API_VERSION})"
        )
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    for field, value in (("metadata", meta), ("spec", spec)):
        if not isinstance(value, dict):
            raise _undecodable(f"json: cannot unmarshal {_go_type(value)} into Go struct field {field}")
    audiences = spec.get("audiences") or []
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise _undecodable(f"json: cannot unmarshal {_go_type(audiences)} into Go struct field "
                           "TokenRequestSpec.spec.audiences of type []string")  # fmt: skip
    expiration = spec.get("expirationSeconds")
    if expiration is not None and (isinstance(expiration, bool) or not isinstance(expiration, int)):
        raise _undecodable(f"json: cannot unmarshal {_go_type(expiration)} into Go struct field "
                           "TokenRequestSpec.spec.expirationSeconds of type int64")  # fmt: skip
    ref = spec.get("boundObjectRef")
    if ref is not None:
        if not isinstance(ref, dict) or not all(isinstance(v, str) for v in ref.values()):
            raise _undecodable(f"json: cannot unmarshal {_go_type(ref)} into Go struct field "
                               "TokenRequestSpec.spec.boundObjectRef")  # fmt: skip
        ref = {k: ref[k] for k in ("kind", "apiVersion", "name", "uid") if ref.get(k)}  # all omitempty
    return meta, list(audiences), expiration, ref


def service_account_claims(
    service_account: dict,
    issuer: str,
    now: int,
    expiration_seconds: int,
    audiences: list[str],
    *,
    pod: dict | None = None,
    secret: dict | None = None,
    node: dict | None = None,
    warn_after: int = 0,
) -> dict:
    """The claims of a service account token (pkg/serviceaccount/claims.go Claims, plus iss from jwt.go).
    `node` is {"name"[, "uid"]} (a pod's node, or the bound Node); name/uid are omitempty."""
    meta = service_account["metadata"]
    private: dict[str, Any] = {
        "namespace": meta["namespace"],
        "serviceaccount": {"name": meta["name"], "uid": meta["uid"]},
    }
    if pod is not None:
        private["pod"] = {"name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]}
    if secret is not None:
        private["secret"] = {"name": secret["metadata"]["name"], "uid": secret["metadata"]["uid"]}
    if node is not None:
        private["node"] = {k: v for k, v in node.items() if v}
    if warn_after:
        private["warnafter"] = now + warn_after
    return {
        "aud": list(audiences),
        "exp": now + expiration_seconds,
        "iat": now,
        "iss": issuer,
        "jti": str(uuid.uuid4()),
        "kubernetes.io": private,
        "nbf": now,
        "sub": f"system:serviceaccount:{meta['namespace']}:{meta['name']}",
    }


# --------------------------------------------------------------------------- the emulator


@dataclasses.dataclass
class _Stored:
    obj: dict  # without metadata.managedFields
    managed: list[ManagedEntry]


@dataclasses.dataclass
class _Fault:
    method: str
    path_contains: str
    error: ApiError
    remaining: int
    query_contains: str = ""


PATCH_TYPES = (
    "application/apply-patch+yaml",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/json-patch+json",
)


class KubeEmulator:
    """The kube-apiserver emulator. Thread-safe: every request runs under one lock.

    `issuers` is where the cluster's OIDC issuer documents are published (see `set_issuer`). While started,
    the server is found by its URL with `KubeEmulator.at(url)` (how the ARM emulator finds the API server
    of a cluster it seeds)."""

    _running: ClassVar[dict[str, KubeEmulator]] = {}  # url -> started emulator
    _running_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        ca: TestCA,
        *,
        accepted_tokens: set[str] | None = None,
        clock: Clock | None = None,
        issuers: IssuerDirectory = DEFAULT_DIRECTORY,
    ) -> None:
        self.ca = ca
        self._initial_tokens = (
            set(accepted_tokens) if accepted_tokens is not None else {token_for_scope(AKS_SERVER_SCOPE)}
        )
        self.clock = clock or Clock()
        self.log = RequestLog()
        self.issuers = issuers
        self._lock = threading.RLock()
        self._resource_version = 1000
        self._routes = self._route_table()
        self._server = HttpsServer(self._wsgi, ca)
        self.url = self._server.url
        self._node_uid = str(uuid.uuid4())  # the kubelet's node (NODE_NAME), for node claims of pod-bound tokens
        # the key that signs service account tokens while the cluster has no OIDC issuer (never published)
        self._default_key = IssuerKey(DEFAULT_SERVICE_ACCOUNT_ISSUER, self.url + JWKS_PATH)
        self._key = self._default_key
        self._oidc_issuer: str | None = None
        self.reset()

    def reset(self) -> None:
        """Back to a fresh cluster (only "default" and "kube-system"), no faults, empty log, available,
        the constructor's tokens. Lets one running server serve many tests (stopping one takes 0.5 s)."""
        with self._lock:
            self.accepted_tokens = set(self._initial_tokens)
            self.available = True
            # workload knobs (plain attributes; tests set them)
            self.webhook_enabled = True  # AKS installs the webhook with --enable-workload-identity
            self.webhook_tenant_id = DEFAULT_TENANT_ID  # the webhook config's AZURE_TENANT_ID (the cluster's)
            self.authority_host = PUBLIC_CLOUD_AUTHORITY
            self.pod_start_seconds = 0.0  # a created pod runs once the clock passed this (0: at once)
            self.controllers_enabled = True  # deployment, service-account and kubelet loops
            self._syncing = False
            self._failures: dict[tuple[str, str | None, str], str | None] = {}
            self._objects: dict[tuple[str, str | None, str], _Stored] = {}
            self._faults: list[_Fault] = []
            self._snapshots: dict[tuple[str, str, int], _ListSnapshot] = {}  # (kind, key prefix, resourceVersion)
            self.continue_ttl_seconds = CONTINUE_TTL_SECONDS  # a continue token older than this is 410 Gone
            # service account tokens (the issuer and its key are the cluster's: they survive reset())
            self.issued_tokens: list[dict] = []  # the claims of every token issued, in order (never the token)
            self.api_audiences = [DEFAULT_SERVICE_ACCOUNT_ISSUER]  # --api-audiences: what an empty request gets
            self.max_token_expiration_seconds: int | None = None  # --service-account-max-token-expiration
            self.extend_token_expiration = True  # --service-account-extend-token-expiration (default true)
            for name in ("default", "kube-system"):
                self.put_object({"kind": "Namespace", "metadata": {"name": name}}, field_manager="kube-apiserver")
            self.log.clear()

    # ---------------------------------------------------------------- public helpers for tests

    def start(self) -> KubeEmulator:
        self._server.start()
        with KubeEmulator._running_lock:
            KubeEmulator._running[self.url] = self
        return self

    def stop(self) -> None:
        """Stop serving; forget the URL and withdraw the published issuer (nothing serves it any more)."""
        with KubeEmulator._running_lock:
            if KubeEmulator._running.get(self.url) is self:
                del KubeEmulator._running[self.url]
        self.set_issuer(None)
        self._server.stop()

    @classmethod
    def at(cls, url: str) -> KubeEmulator | None:
        """The started emulator serving `url` (a trailing slash is ignored), or None."""
        with cls._running_lock:
            return cls._running.get(url.rstrip("/"))

    # ---------------------------------------------------------------- the service account issuer

    def set_issuer(self, issuer: str | None) -> None:
        """The cluster's OIDC issuer URL (`oidcIssuerProfile.issuerURL`), or None when it has none.

        A new issuer comes with a new RSA 2048 signing key (a recreated cluster has a new issuer and new
        keys; the key is generated on first use); its discovery document and JWKS are published in
        `self.issuers` under that exact URL, and the previous issuer is withdrawn (its tokens no longer
        validate at Entra). None withdraws: tokens are then signed with the server's own key for
        kube-apiserver's default issuer `https://kubernetes.default.svc.cluster.local`, published nowhere.
        Setting the current issuer again changes nothing. One server may back several clusters in a test:
        the last issuer set wins (the ARM emulator withdraws a deleted cluster's issuer only while it is
        still the current one). Like kube-apiserver (pkg/serviceaccount/openidmetadata.go), the issuer must be
        an https URL without query or fragment."""
        if issuer is not None:
            parts = urlsplit(issuer)
            if parts.scheme != "https" or parts.query or parts.fragment or not parts.netloc:
                raise ValueError(f"issuer URL must be https, without query or fragment, got: {issuer}")
        with self._lock:
            if issuer == self._oidc_issuer:
                return
            if self._oidc_issuer is not None:
                self.issuers.withdraw(self._oidc_issuer)
            self._oidc_issuer = issuer
            if issuer is None:
                self._key = self._default_key
                return
            self._key = IssuerKey(issuer, jwks_uri_for(issuer))
            self.issuers.publish(issuer, self._key.discovery(), self._key.jwks)

    @property
    def issuer(self) -> str | None:
        """The OIDC issuer set with `set_issuer` (None: none)."""
        with self._lock:
            return self._oidc_issuer

    @property
    def token_issuer(self) -> str:
        """The `iss` of the tokens issued now: the OIDC issuer, else kube-apiserver's default."""
        with self._lock:
            return self._key.issuer

    def add_namespace(self, name: str, labels: dict | None = None) -> None:
        self.put_object({"kind": "Namespace", "metadata": {"name": name, "labels": dict(labels or {})}})

    def get_object(self, kind: str, namespace: str | None, name: str) -> dict | None:
        rt = RESOURCES[kind]
        with self._lock:
            self.sync()
            stored = self._objects.get((kind, namespace if rt.namespaced else None, name))
            return self._render(stored) if stored else None

    def put_object(self, obj: dict, field_manager: str = "kubectl") -> dict:
        """Seed (create or overwrite) an object as another tool would: an Update by `field_manager`.
        A `status` in `obj` is kept as given; `metadata.managedFields` in `obj`, if any, are used as is.
        Seeding writes storage directly: a seeded Pod skips admission (no webhook, no account check);
        the controllers then run as after any write (a seeded Deployment gets its pods)."""
        rt = RESOURCES[obj["kind"]]
        body = copy.deepcopy(obj)
        meta = body.setdefault("metadata", {})
        namespace = meta.setdefault("namespace", "default") if rt.namespaced else None
        given_entries = meta.pop("managedFields", None)
        with self._lock:
            if namespace is not None and ("Namespace", None, namespace) not in self._objects:
                raise ValueError(f'namespace "{namespace}" does not exist; call add_namespace() first')
            old = self._objects.get((rt.kind, namespace, meta["name"]))
            new = self._finalize(rt, old, body, namespace, keep_status="status" in body)
            validate_object(rt, new, None)
            if given_entries is not None:
                entries = [ManagedEntry.from_json(e) for e in given_entries]
            else:
                entries = record_update(
                    old.managed if old else [], field_manager, rt.api_version, self._now(), old.obj if old else {}, new
                )
            return self._save(rt, old, new, entries, dry_run=False)

    def delete_object(self, kind: str, namespace: str | None, name: str) -> None:
        """Remove an object (and, for a namespace, everything in it). KeyError if it does not exist."""
        rt = RESOURCES[kind]
        with self._lock:
            key = (kind, namespace if rt.namespaced else None, name)
            if key not in self._objects:
                raise KeyError(f"no {kind} {namespace}/{name}")
            self._remove(key)

    def compact(self) -> None:
        """What etcd compaction does to lists in progress: every continue token issued so far (and every
        exact resourceVersion but the current one) becomes too old; its next use is answered 410 Expired."""
        with self._lock:
            self._snapshots.clear()

    def list_requests(self) -> list[RecordedRequest]:
        """The logged requests that were lists (GET on a collection): one per page."""
        lists = [p for p, methods in self._routes if getattr(methods.get("GET"), "func", None) == self._list]
        return [r for r in self.log.items if r.method == "GET" and any(p.fullmatch(r.path.rstrip("/")) for p in lists)]

    def inject_fault(
        self,
        method: str,
        path_contains: str,
        status: int,
        reason: str = "",
        message: str = "",
        times: int = 1,
        retry_after: int | None = None,
        query_contains: str = "",
    ) -> None:
        """The next `times` requests with this method ("*" for any) whose path contains `path_contains`
        (and whose query string contains `query_contains`, e.g. "continue=" for the pages after a list's
        first) are answered with this Status. 429 carries `Retry-After: 1` unless `retry_after` says
        otherwise (beware: urllib3 itself retries GET/PUT/DELETE that carry Retry-After, sleeping that long)."""
        reason = reason or DEFAULT_REASONS.get(status, "Unknown")
        if retry_after is None and status == 429:
            retry_after = 1
        details = {"retryAfterSeconds": retry_after} if retry_after is not None else None
        headers = [("Retry-After", str(retry_after))] if retry_after is not None else []
        error = ApiError(status, reason, message or f"injected fault: {reason}", details, headers)
        with self._lock:
            self._faults.append(_Fault(method.upper(), path_contains, error, times, query_contains))

    # ---------------------------------------------------------------- HTTP layer

    def _route_table(self) -> list[tuple[re.Pattern, dict[str, Callable[..., Response]]]]:
        discovery = {
            "/version": self._version,
            "/api": self._core_versions,
            "/apis": self._group_list,
            "/api/v1": functools.partial(self._resource_list, ""),
            "/apis/apps": self._apps_group,
            "/apis/apps/v1": functools.partial(self._resource_list, "apps"),
        }
        routes = [(re.compile(re.escape(path)), {"GET": handler}) for path, handler in discovery.items()]
        routes.append((re.compile(re.escape(OPENID_CONFIG_PATH)), {"GET": self._openid_configuration}))
        routes.append((re.compile(re.escape(JWKS_PATH)), {"GET": self._openid_jwks}))
        token = "/api/v1/namespaces/(?P<namespace>[^/]+)/serviceaccounts/(?P<name>[^/]+)/token"
        routes.append((re.compile(token), {"POST": self._create_token}))
        for rt in RESOURCES.values():
            collection, item = (
                {"GET": self._list, "POST": self._create},
                {"GET": self._get, "PUT": self._replace, "PATCH": self._patch, "DELETE": self._delete},
            )
            base = (
                f"{rt.prefix}/namespaces/(?P<namespace>[^/]+)/{rt.plural}"
                if rt.namespaced
                else f"{rt.prefix}/{rt.plural}"
            )
            routes.append((re.compile(base), {m: functools.partial(h, rt) for m, h in collection.items()}))
            routes.append(
                (re.compile(base + "/(?P<name>[^/]+)"), {m: functools.partial(h, rt) for m, h in item.items()})
            )
            if rt.namespaced:  # list across all namespaces
                routes.append((re.compile(f"{rt.prefix}/{rt.plural}"), {"GET": functools.partial(self._list, rt)}))
        return routes

    def _wsgi(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self._handle(request)
        except ApiError as error:
            response = error.response()
        except Exception:  # a bug in the emulator: answer like the real server would, loudly
            response = ApiError(500, "InternalError", "Internal error occurred: " + traceback.format_exc()).response()
        self.log.add(RecordedRequest.of(request, response.status_code))
        return response(environ, start_response)

    def _handle(self, request: Request) -> Response:
        if not self.available:
            raise ApiError(503, "ServiceUnavailable", "the server is currently unable to handle the request")
        with self._lock:
            self._raise_injected_fault(request)
        if bearer_token(request) not in self.accepted_tokens:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        for pattern, methods in self._routes:
            match = pattern.fullmatch(request.path.rstrip("/") or "/")
            if match:
                if request.method not in methods:
                    raise ApiError(
                        405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                    )
                with self._lock:
                    self.sync()  # controllers catch up with the clock before anything is read
                    return methods[request.method](request, **match.groupdict())
        raise ApiError(
            404,
            "NotFound",
            "the server could not find the requested resource",
            {"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]},
        )

    def _raise_injected_fault(self, request: Request) -> None:
        for fault in self._faults:
            if (
                fault.remaining > 0
                and fault.method in ("*", request.method)
                and fault.path_contains in request.path
                and fault.query_contains in request.query_string.decode()
            ):
                fault.remaining -= 1
                raise fault.error

    # ---------------------------------------------------------------- discovery

    def _version(self, request: Request) -> Response:
        return json_response(
            {
                **KUBERNETES_VERSION,
                "gitCommit": "0" * 40,
                "gitTreeState": "clean",
                "buildDate": "2025-06-17T18:00:00Z",
                "goVersion": "go1.24.4",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        )

    def _core_versions(self, request: Request) -> Response:
        host = urlsplit(self.url).netloc
        return json_response(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
            }
        )

    @staticmethod
    def _apps_group_body() -> dict:
        version = {"groupVersion": "apps/v1", "version": "v1"}
        return {"name": "apps", "versions": [version], "preferredVersion": version}

    def _group_list(self, request: Request) -> Response:
        return json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": [self._apps_group_body()]})

    def _apps_group(self, request: Request) -> Response:
        return json_response({"kind": "APIGroup", "apiVersion": "v1", **self._apps_group_body()})

    def _resource_list(self, group: str, request: Request) -> Response:
        resources = [
            {
                "name": rt.plural,
                "singularName": rt.kind.lower(),
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "shortNames": list(rt.short_names),
                "verbs": ["create", "delete", "get", "list", "patch", "update"],
            }
            for rt in RESOURCES.values()
            if rt.group == group
        ]
        return json_response(
            {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": f"{group}/v1" if group else "v1",
                "resources": resources,
            }
        )

    # ---------------------------------------------------------------- service account issuer and tokens

    def _openid_configuration(self, request: Request) -> Response:
        return json_response(self._key.discovery(), headers=[("Cache-Control", ISSUER_CACHE_CONTROL)])

    def _openid_jwks(self, request: Request) -> Response:
        response = Response(json.dumps(self._key.jwks()), status=200, mimetype=JWKS_CONTENT_TYPE)
        response.headers["Cache-Control"] = ISSUER_CACHE_CONTROL
        return response

    def _create_token(self, request: Request, namespace: str, name: str) -> Response:
        """TokenREST.Create (kubernetes pkg/registry/core/serviceaccount/storage/token.go, v1.33), in its order."""
        if request.args.getlist("dryRun"):
            raise bad_request("the emulator does not serve dryRun on a TokenRequest")
        meta, audiences, expiration, ref = parse_token_request(self._json_body(request))
        if ("Namespace", None, namespace) not in self._objects:  # NamespaceLifecycle admission, before Create
            raise not_found(RESOURCES["Namespace"], namespace)
        if meta.get("name") and meta["name"] != name:
            cause = Cause("metadata.name", "Invalid", "must match the service account name if specified", meta["name"])
            raise invalid(TOKEN_REQUEST_KIND, TOKEN_REQUEST_GROUP, name, [cause])
        if meta.get("namespace") and meta["namespace"] != namespace:
            detail = "must match the service account namespace if specified"
            cause = Cause("metadata.namespace", "Invalid", detail, meta["namespace"])
            raise invalid(TOKEN_REQUEST_KIND, TOKEN_REQUEST_GROUP, name, [cause])
        sa = self._existing(RESOURCES["ServiceAccount"], namespace, name).obj
        audiences = audiences or list(self.api_audiences)
        expiration = DEFAULT_TOKEN_EXPIRATION_SECONDS if expiration is None else expiration
        now = int(self.clock.now())
        if expiration < MIN_TOKEN_EXPIRATION_SECONDS:
            cause = Cause(
                "spec.expirationSeconds", "Invalid", "may not specify a duration less than 10 minutes", expiration
            )
            raise invalid(TOKEN_REQUEST_KIND, TOKEN_REQUEST_GROUP, "", [cause])
        if expiration > MAX_TOKEN_EXPIRATION_SECONDS:
            cause = Cause(
                "spec.expirationSeconds", "Invalid", "may not specify a duration larger than 2^32 seconds", expiration
            )
            raise invalid(TOKEN_REQUEST_KIND, TOKEN_REQUEST_GROUP, "", [cause])
        pod, node = self._bound_object(ref, namespace, name)
        headers = []
        limit = self.max_token_expiration_seconds
        if limit and expiration > limit:
            warning = f"requested expiration of {expiration} seconds shortened to {limit} seconds"
            headers.append(("Warning", f'299 - "{warning}"'))
            expiration = limit
        lifetime, warn_after = expiration, 0
        if (
            self.extend_token_expiration
            and pod is not None
            and expiration == WARN_ONLY_BOUND_TOKEN_EXPIRATION_SECONDS
            and set(audiences) <= set(self.api_audiences)
        ):
            lifetime, warn_after = EXPIRATION_EXTENSION_SECONDS, expiration
        claims = service_account_claims(
            sa, self._key.issuer, now, lifetime, audiences, pod=pod, node=node, warn_after=warn_after
        )
        token = self._key.sign(claims)
        self.issued_tokens.append(copy.deepcopy(claims))
        out_meta = {**meta, "name": name, "namespace": namespace, "creationTimestamp": _rfc3339(now)}
        body = {
            "kind": TOKEN_REQUEST_KIND,
            "apiVersion": TOKEN_REQUEST_API_VERSION,
            "metadata": out_meta,
            "spec": {"audiences": audiences, "expirationSeconds": expiration, "boundObjectRef": ref},
            "status": {"token": token, "expirationTimestamp": _rfc3339(now + expiration)},
        }
        return json_response(body, 201, headers)

    def _bound_object(self, ref: dict | None, namespace: str, sa_name: str) -> tuple[dict | None, dict | None]:
        """(pod, node) a token is bound to, after the checks TokenREST.Create makes of spec.boundObjectRef.
        Emulated: Pods (their node info added when scheduled), the kubelet's Node; Secrets do not exist here."""
        if ref is None:
            return None, None
        kind, ref_name = ref.get("kind", ""), ref.get("name", "")
        group, version = _parse_group_version(ref.get("apiVersion", "")) or ("", "")
        if group != "" or kind not in ("Pod", "Node", "Secret"):
            raise bad_request(f"cannot bind token to object of type {_gvk_string(group, version, kind)}")
        if not ref_name:  # the registry's Get of an empty name
            raise bad_request("Name parameter required.")
        pod = node = None
        if kind == "Pod":
            pod = self._existing(RESOURCES["Pod"], namespace, ref_name).obj
            if (pod.get("spec") or {}).get("serviceAccountName") != sa_name:
                raise bad_request(
                    f'cannot bind token for serviceaccount "{sa_name}" to pod running with different '
                    "serviceaccount name."
                )
            uid = pod["metadata"]["uid"]
            node_name = (pod.get("spec") or {}).get("nodeName")
            if node_name:  # ServiceAccountTokenPodNodeInfo; a node that does not exist gives its name only
                node = {"name": node_name, "uid": self._node_uid if node_name == NODE_NAME else ""}
        elif kind == "Node":
            if ref_name != NODE_NAME:
                raise ApiError(404, "NotFound", f'nodes "{ref_name}" not found', {"name": ref_name, "kind": "nodes"})
            node, uid = {"name": ref_name, "uid": self._node_uid}, self._node_uid
        else:
            raise ApiError(404, "NotFound", f'secrets "{ref_name}" not found', {"name": ref_name, "kind": "secrets"})
        if ref.get("uid") and ref["uid"] != uid:
            message = (
                f'Operation cannot be fulfilled on {kind} "{ref_name}": the UID in the bound object reference '
                f"({ref['uid']}) does not match the UID in record. The object might have been deleted and then "
                "recreated"
            )
            raise ApiError(409, "Conflict", message, {"name": ref_name, "kind": kind})
        return pod, node

    # ---------------------------------------------------------------- resource handlers

    def _list(self, rt: ResourceType, request: Request, namespace: str | None = None) -> Response:
        """A list: selectors, then the resourceVersion or continue token, then one page in key order.

        - `limit` > 0 pages: at most `limit` matching items; `metadata.continue` when keys remain after
          the last one returned (the next page may then be empty: filtered out), and
          `metadata.remainingItemCount` only when the list has no label or field selector.
        - a continue token reads the snapshot of its resourceVersion: every page shows the collection
          as of the first one, and carries that resourceVersion. A token whose snapshot is gone
          (`continue_ttl_seconds`, `compact()`, `reset()`) is 410 Expired, with a token to go on from
          the latest state (rv -1) in the Status's metadata, as the API server answers.
        - a selector on metadata.name in one namespace reads that one key: never paged.
        """
        args = request.args
        if args.get("watch") in ("1", "true"):
            raise bad_request("the emulator does not serve watch")
        requirements = parse_label_selector(args.get("labelSelector", ""))
        terms = parse_field_selector(args.get("fieldSelector", ""), rt)
        limit = _int64_param(args.get("limit"))
        token, resource_version = args.get("continue", ""), args.get("resourceVersion", "")
        validate_list_options(resource_version, args.get("resourceVersionMatch", ""), token)
        prefix = storage_prefix(rt, namespace)
        if token:
            start, token_rv = decode_continue(token, prefix)
            if resource_version not in ("", "0"):
                raise bad_request("specifying resource version is not allowed when using continue")
            view = self._view(rt, prefix, token_rv if token_rv > 0 else None)
            if view is None:  # compacted: the Status carries a token to go on from the latest state
                go_on = encode_continue(start, prefix, -1)
                raise ApiError(410, "Expired", CONTINUE_TOO_OLD, list_meta={"continue": go_on})
            list_rv = token_rv if token_rv > 0 else self._resource_version
        else:
            start = prefix
            view, list_rv = self._view_for(rt, prefix, resource_version, args.get("resourceVersionMatch", ""), limit)

        def matches(item: dict) -> bool:
            labels = item["metadata"].get("labels") or {}
            return all(r.matches(labels) for r in requirements) and all(_field_term_matches(rt, t, item) for t in terms)

        meta: dict[str, Any] = {"resourceVersion": str(list_rv)}
        single = next((t.value for t in terms if t.field == "metadata.name" and not t.negate), None)
        if single is not None and not token and (namespace is not None or not rt.namespaced):
            key = prefix + single  # the registry's MatchesSingle: a read of one key
            items = [item for k, item in zip(view.keys, view.items, strict=True) if k == key and matches(item)]
            return self._list_response(rt, meta, items)
        first = bisect.bisect_left(view.keys, start)
        items, last, more = [], "", False
        for index in range(first, len(view.keys)):
            if 0 < limit <= len(items):
                more = True
                break
            last = view.keys[index]
            if matches(view.items[index]):
                items.append(view.items[index])
        if more:
            meta["continue"] = encode_continue(last + "\x00", prefix, list_rv)
            if not requirements and not terms:
                meta["remainingItemCount"] = len(view.keys) - first - limit
        return self._list_response(rt, meta, items)

    @staticmethod
    def _list_response(rt: ResourceType, meta: dict, items: list[dict]) -> Response:
        return json_response({"kind": rt.kind + "List", "apiVersion": rt.api_version, "metadata": meta, "items": items})

    def _view_for(
        self, rt: ResourceType, prefix: str, resource_version: str, match: str, limit: int
    ) -> tuple[_ListSnapshot, int]:
        """The snapshot a list without continue token reads, and the resourceVersion it answers with.
        Unset: the latest (a consistent read). NotOlderThan or "0": the latest too (never older). Exact,
        or the legacy resourceVersion with a limit: that version, if a snapshot of it is still held;
        else 410 (the real server keeps every version for 5 minutes, the emulator only those it
        listed)."""
        current = self._resource_version
        if not resource_version:
            return self._latest_view(rt, prefix), current
        if not re.fullmatch(r"\d+", resource_version):
            raise bad_request(
                f"invalid resource version: resourceVersion: Invalid value: {_go_quote(resource_version)}: "
                f"strconv.ParseUint: parsing {_go_quote(resource_version)}: invalid syntax"
            )
        wanted = int(resource_version)
        exact = wanted > 0 and (match == "Exact" or (not match and limit > 0))
        if wanted > current:
            raise too_large_resource_version(wanted, current)
        if not exact or wanted == current:
            return self._latest_view(rt, prefix), current
        view = self._view(rt, prefix, wanted)
        if view is None:
            raise ApiError(410, "Expired", LIST_TOO_OLD)
        return view, wanted

    def _latest_view(self, rt: ResourceType, prefix: str) -> _ListSnapshot:
        view = self._view(rt, prefix, None)
        assert view is not None
        return view

    def _view(self, rt: ResourceType, prefix: str, resource_version: int | None) -> _ListSnapshot | None:
        """The collection under `prefix`: now (`resource_version` None), kept as a snapshot for the pages
        that follow; or as of `resource_version` only while a snapshot of it is held (else None), even
        if nothing was written since: continue tokens expire with time, as the docs say."""
        now = self.clock.now()
        for key in [k for k, s in self._snapshots.items() if now - s.taken > self.continue_ttl_seconds]:
            del self._snapshots[key]
        if resource_version is not None:
            return self._snapshots.get((rt.kind, prefix, resource_version))
        current = self._resource_version
        held = self._snapshots.get((rt.kind, prefix, current))
        if held is not None:  # a new list of an unchanged collection: the same snapshot, taken anew
            held.taken = now
            return held
        entries = sorted(
            (
                (storage_key(rt, ns, name), stored)
                for (kind, ns, name), stored in self._objects.items()
                if kind == rt.kind and storage_key(rt, ns, name).startswith(prefix)
            ),
            key=lambda entry: entry[0],
        )
        items = []
        for _, stored in entries:
            item = self._render(stored)
            del item["kind"], item["apiVersion"]  # as the real server sends list items
            items.append(item)
        view = _ListSnapshot(now, [key for key, _ in entries], items)
        self._snapshots[(rt.kind, prefix, current)] = view
        while len(self._snapshots) > MAX_LIST_SNAPSHOTS:
            del self._snapshots[min(self._snapshots, key=lambda k: self._snapshots[k].taken)]
        return view

    def _get(self, rt: ResourceType, request: Request, name: str, namespace: str | None = None) -> Response:
        return json_response(self._render(self._existing(rt, namespace, name)))

    def _create(self, rt: ResourceType, request: Request, namespace: str | None = None) -> Response:
        body = self._json_body(request)
        self._check_type_meta(rt, body, required=False)
        check_string_maps(body)
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and not meta.get("generateName"):
            raise invalid(
                rt.kind, rt.group, "", [Cause("metadata.name", "Required", "name or generateName is required")]
            )
        self._check_namespace(rt, body, namespace)
        if rt.kind == "Pod":  # admission runs before the name is generated
            body = self._admit_pod(body, namespace or "")
            meta = body["metadata"]
        name = meta.get("name") or meta["generateName"] + random_suffix()
        meta["name"] = name
        if (rt.kind, namespace, name) in self._objects:
            raise already_exists(rt, name)
        return json_response(self._update(rt, request, None, body, namespace), 201)

    def _replace(self, rt: ResourceType, request: Request, name: str, namespace: str | None = None) -> Response:
        body = self._json_body(request)
        self._check_type_meta(rt, body, required=False)
        check_string_maps(body)
        self._check_name(body, name)
        self._check_namespace(rt, body, namespace)
        old = self._existing(rt, namespace, name)
        self._check_resource_version(rt, old, body)
        return json_response(self._update(rt, request, old, body, namespace))

    def _patch(self, rt: ResourceType, request: Request, name: str, namespace: str | None = None) -> Response:
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type not in PATCH_TYPES:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - "
                f"accepted media types include: {', '.join(PATCH_TYPES)}",
            )
        force = request.args.get("force")
        if content_type == "application/apply-patch+yaml":
            return self._apply(rt, request, name, namespace, force == "true")
        if force is not None:
            raise invalid(
                "PatchOptions",
                "meta.k8s.io",
                "",
                [Cause("force", "Forbidden", "may not be specified for non-apply patch")],
            )
        old = self._existing(rt, namespace, name)
        body = self._json_body(request, allow_list=content_type == "application/json-patch+json")
        if content_type == "application/json-patch+json":
            patched = json_patch(old.obj, body)
        else:
            patched = merge(
                old.obj, body, keyed_lists=content_type != "application/merge-patch+json", null_deletes=True
            )
        check_string_maps(patched)
        self._check_name(patched, name)
        self._check_resource_version(rt, old, patched)
        return json_response(self._update(rt, request, old, patched, namespace))

    def _update(
        self, rt: ResourceType, request: Request, old: _Stored | None, body: dict, namespace: str | None
    ) -> dict:
        """An Update operation (create, replace, non-apply patch): the manager owns what it changed."""
        new = self._finalize(rt, old, body, namespace)
        validate_object(rt, new, old.obj if old else None)
        entries = record_update(
            old.managed if old else [], self._manager(request), rt.api_version, self._now(), old.obj if old else {}, new
        )
        return self._save(rt, old, new, entries, dry_run=self._dry_run(request))

    def _apply(self, rt: ResourceType, request: Request, name: str, namespace: str | None, force: bool) -> Response:
        manager = request.args.get("fieldManager")
        if not manager:
            raise invalid(
                "PatchOptions", "meta.k8s.io", "", [Cause("fieldManager", "Required", "is required for apply patch")]
            )
        try:
            config = yaml.safe_load(request.get_data(as_text=True))
        except yaml.YAMLError as exc:
            raise bad_request(f"error decoding YAML: {exc}") from None
        if not isinstance(config, dict):
            raise bad_request("error decoding YAML: the body is not an object")
        self._check_type_meta(rt, config, required=True)
        check_string_maps(config)
        self._check_name(config, name)
        self._check_namespace(rt, config, namespace)
        old = self._objects.get((rt.kind, namespace, name))
        if old is not None:
            self._check_resource_version(rt, old, config)
        merged, entries = server_side_apply(
            old.obj if old else {}, old.managed if old else [], manager, config, force, rt.api_version, self._now()
        )
        merged.setdefault("metadata", {})["name"] = name
        new = self._finalize(rt, old, merged, namespace)
        validate_object(rt, new, old.obj if old else None)
        return json_response(self._save(rt, old, new, entries, dry_run=self._dry_run(request)), 200 if old else 201)

    def _delete(self, rt: ResourceType, request: Request, name: str, namespace: str | None = None) -> Response:
        stored = self._existing(rt, namespace, name)
        options = self._json_body(request) if request.get_data() else {}
        wanted = (options.get("preconditions") or {}).get("resourceVersion")
        if wanted and wanted != stored.obj["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rt.qualified} "{name}": '
                f"the ResourceVersion in the precondition ({wanted}) does not match the "
                f"ResourceVersion in record ({stored.obj['metadata']['resourceVersion']}). "
                "The object might have been modified",
                _ref(rt, name),
            )
        obj = self._render(stored)
        if not self._dry_run(request):
            self._remove((rt.kind, namespace, name))
        if rt.kind == "Namespace":  # the real server answers with the namespace, now terminating
            obj["metadata"]["deletionTimestamp"] = self._now()
            obj["status"] = {"phase": "Terminating"}
        if rt.delete_returns_object:
            return json_response(obj)
        return json_response(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {**_ref(rt, name), "uid": obj["metadata"]["uid"]},
            }
        )

    # ---------------------------------------------------------------- request checks

    @staticmethod
    def _json_body(request: Request, allow_list: bool = False) -> Any:
        try:
            body = json.loads(request.get_data(as_text=True) or "null")
        except ValueError as exc:
            raise bad_request(f"the body of the request could not be decoded as JSON: {exc}") from None
        if not isinstance(body, dict) and not (allow_list and isinstance(body, list)):
            raise bad_request("the body of the request must be a JSON object")
        return body

    @staticmethod
    def _check_type_meta(rt: ResourceType, body: dict, *, required: bool) -> None:
        kind, api_version = body.get("kind"), body.get("apiVersion")
        if required and not kind:
            raise bad_request("Object 'Kind' is missing in the applied configuration")
        if required and not api_version:
            raise bad_request("Object 'apiVersion' is missing in the applied configuration")
        if kind and kind != rt.kind:
            raise bad_request(f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})")
        if api_version and api_version != rt.api_version:
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected "
                f"API version ({rt.api_version})"
            )

    @staticmethod
    def _check_name(body: dict, name: str) -> None:
        given = (body.get("metadata") or {}).get("name")
        if given and given != name:
            raise bad_request(f"the name of the object ({given}) does not match the name on the URL ({name})")

    def _check_namespace(self, rt: ResourceType, body: dict, namespace: str | None) -> None:
        if not rt.namespaced:
            return
        given = (body.get("metadata") or {}).get("namespace")
        if given and given != namespace:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        if ("Namespace", None, namespace) not in self._objects:
            raise not_found(RESOURCES["Namespace"], namespace or "")

    @staticmethod
    def _check_resource_version(rt: ResourceType, old: _Stored, body: dict) -> None:
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != old.obj["metadata"]["resourceVersion"]:
            raise modified_conflict(rt, old.obj["metadata"]["name"])

    @staticmethod
    def _manager(request: Request) -> str:
        """fieldManager, else the user agent up to its first "/" (as the real server does), else "unknown"."""
        return request.args.get("fieldManager") or request.headers.get("User-Agent", "").split("/")[0] or "unknown"

    @staticmethod
    def _dry_run(request: Request) -> bool:
        values = request.args.getlist("dryRun")
        if any(v != "All" for v in values):
            raise bad_request(f"Invalid dry run value: {values}")
        return bool(values)

    # ---------------------------------------------------------------- storage

    def _now(self) -> str:
        return _rfc3339(self.clock.now())

    def _existing(self, rt: ResourceType, namespace: str | None, name: str) -> _Stored:
        stored = self._objects.get((rt.kind, namespace, name))
        if stored is None:
            raise not_found(rt, name)
        return stored

    def _finalize(
        self, rt: ResourceType, old: _Stored | None, body: dict, namespace: str | None, keep_status: bool = False
    ) -> dict:
        """The object as the server would store it: server metadata, defaults, generation, status."""
        obj = copy.deepcopy(body)
        obj["kind"], obj["apiVersion"] = rt.kind, rt.api_version
        meta = obj.setdefault("metadata", {})
        for key in SERVER_SET_METADATA:
            meta.pop(key, None)
        if rt.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        old_meta = old.obj["metadata"] if old else {}
        meta["uid"] = old_meta.get("uid") or str(uuid.uuid4())
        meta["creationTimestamp"] = old_meta.get("creationTimestamp") or self._now()
        if old:
            meta["resourceVersion"] = old_meta["resourceVersion"]
        apply_defaults(rt, obj)
        if rt.kind == "Deployment":
            spec_changed = old is None or old.obj.get("spec") != obj.get("spec")
            meta["generation"] = old_meta.get("generation", 0) + 1 if spec_changed else old_meta["generation"]
        if keep_status:
            return obj
        if old and "status" in old.obj:
            obj["status"] = copy.deepcopy(old.obj["status"])
        else:
            obj.pop("status", None)
            obj.update(
                {"Namespace": {"status": {"phase": "Active"}}, "Pod": {"status": {"phase": "Pending"}}}.get(rt.kind, {})
            )
        if rt.kind == "Deployment" and (obj.get("status") or {}).get("observedGeneration") != meta["generation"]:
            obj["status"] = rolled_out_status(obj, self._now())
        return obj

    def _save(
        self, rt: ResourceType, old: _Stored | None, new: dict, entries: list[ManagedEntry], *, dry_run: bool
    ) -> dict:
        """Store `new` under a fresh resourceVersion, unless nothing changed at all (then keep the old)."""
        entries = prune_entries(entries, new)
        if old is not None and old.obj == new and _signature(old.managed) == _signature(entries):
            return self._render(old)
        stored = _Stored(copy.deepcopy(new), entries)
        if not dry_run:
            self._resource_version += 1
            stored.obj["metadata"]["resourceVersion"] = str(self._resource_version)
            meta = stored.obj["metadata"]
            key = (rt.kind, meta.get("namespace"), meta["name"])
            self._objects[key] = stored
            self.sync()
            stored = self._objects.get(key, stored)
        return self._render(stored)

    def _remove(self, key: tuple[str, str | None, str]) -> None:
        removed = self._objects.pop(key)
        self._resource_version += 1
        if key[0] == "Namespace":
            for other in [k for k in self._objects if k[1] == key[2]]:
                del self._objects[other]
        if key[0] == "Deployment":  # garbage collection of its ReplicaSets' pods (background cascading)
            for pod_key in self._deployment_pods(removed.obj):
                self._objects.pop(pod_key, None)

    # ---------------------------------------------------------------- controllers

    def sync(self) -> None:
        """Run the controllers until nothing changes: the service-account controller ("default" in every
        namespace), the deployment controller (one ReplicaSet generation per template: new pods for a new
        template, old pods removed once the new ones run) and the kubelet (Pending -> Running once the
        clock passed `pod_start_seconds` and the referenced ConfigMaps exist). Level-triggered and
        idempotent like the real ones; runs under the lock after every write and before every request."""
        with self._lock:
            if self._syncing or not self.controllers_enabled:
                return
            self._syncing = True
            try:
                for _ in range(5):
                    before = self._resource_version
                    self._sync_service_accounts()
                    for key in [k for k in self._objects if k[0] == "Deployment"]:
                        if key in self._objects:
                            self._sync_deployment(key, create=True)
                    self._sync_kubelet()
                    for key in [k for k in self._objects if k[0] == "Deployment"]:
                        if key in self._objects:
                            self._sync_deployment(key, create=False)
                    if self._resource_version == before:
                        return
            finally:
                self._syncing = False

    def _sync_service_accounts(self) -> None:
        for kind, _, name in list(self._objects):
            if kind == "Namespace" and ("ServiceAccount", name, "default") not in self._objects:
                sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}
                new = self._finalize(RESOURCES["ServiceAccount"], None, sa, name)
                entries = record_update([], "kube-controller-manager", "v1", self._now(), {}, new)
                self._save(RESOURCES["ServiceAccount"], None, new, entries, dry_run=False)

    @staticmethod
    def _rs_uid(deployment: dict, pod_hash: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{deployment['metadata']['uid']}/{pod_hash}"))

    def _deployment_pods(self, deployment: dict) -> list[tuple[str, str | None, str]]:
        """Pods whose controlling ReplicaSet belongs to this deployment (any template generation)."""
        name, namespace = deployment["metadata"]["name"], deployment["metadata"]["namespace"]
        found = []
        for key, stored in self._objects.items():
            if key[0] != "Pod" or key[1] != namespace:
                continue
            for ref in stored.obj["metadata"].get("ownerReferences") or []:
                rs = ref.get("name", "")
                if ref.get("kind") == "ReplicaSet" and rs.startswith(name + "-"):
                    if ref.get("uid") == self._rs_uid(deployment, rs[len(name) + 1 :]):
                        found.append(key)
        return found

    def _sync_deployment(self, key: tuple[str, str | None, str], create: bool) -> None:
        stored = self._objects[key]
        dep = stored.obj
        namespace = key[1] or ""
        current_hash = template_hash(dep["spec"]["template"])
        desired = int(dep["spec"].get("replicas", 1))
        pods = [self._objects[k].obj for k in self._deployment_pods(dep)]
        current = [p for p in pods if p["metadata"]["labels"].get(POD_TEMPLATE_HASH) == current_hash]
        if create:
            failure = None
            while len(current) < desired and not dep["spec"].get("paused"):
                try:
                    current.append(self._create_replica(dep, current_hash))
                except ApiError as error:
                    failure = error.message
                    break
            for extra in current[desired:]:
                self._remove(("Pod", namespace, extra["metadata"]["name"]))
            self._failures[key] = failure  # for the status, written in the second pass
            return
        failure = self._failures.get(key)
        running = [p for p in current if (p.get("status") or {}).get("phase") == "Running"]
        old = [p for p in pods if p not in current]
        if len(running) == desired:
            for pod in old:
                self._remove(("Pod", namespace, pod["metadata"]["name"]))
            old = []
        old_running = [p for p in old if (p.get("status") or {}).get("phase") == "Running"]
        status = deployment_status(
            dep, desired, len(current) + len(old), len(current), len(running) + len(old_running), failure, self._now()
        )
        if _without_times(status) != _without_times(dep.get("status") or {}):
            dep["status"] = status
            self._resource_version += 1
            dep["metadata"]["resourceVersion"] = str(self._resource_version)

    def _create_replica(self, dep: dict, pod_hash: str) -> dict:
        """A pod as the ReplicaSet controller creates it: through admission, with generateName."""
        namespace, name = dep["metadata"]["namespace"], dep["metadata"]["name"]
        template = copy.deepcopy(dep["spec"]["template"])
        tmeta = template.get("metadata") or {}
        rs = f"{name}-{pod_hash}"
        meta: dict[str, Any] = {
            "generateName": rs + "-",
            "namespace": namespace,
            "labels": {**(tmeta.get("labels") or {}), POD_TEMPLATE_HASH: pod_hash},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": rs,
                    "uid": self._rs_uid(dep, pod_hash),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        }
        if tmeta.get("annotations"):
            meta["annotations"] = tmeta["annotations"]
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]}
        pod = self._admit_pod(pod, namespace)
        pod["metadata"]["name"] = pod["metadata"]["generateName"] + random_suffix()
        rt = RESOURCES["Pod"]
        new = self._finalize(rt, None, pod, namespace)
        validate_object(rt, new, None)
        entries = record_update([], "kube-controller-manager", "v1", self._now(), {}, new)
        self._save(rt, None, new, entries, dry_run=False)
        return self._objects[("Pod", namespace, new["metadata"]["name"])].obj

    def _admit_pod(self, pod: dict, namespace: str) -> dict:
        """Mutating admission of a new pod: the ServiceAccount plugin, then the workload-identity webhook
        (objectSelector `azure.workload.identity/use: "true"`, failurePolicy Fail)."""
        sa_name = (pod.get("spec") or {}).get("serviceAccountName") or (pod.get("spec") or {}).get("serviceAccount")
        sa = self._objects.get(("ServiceAccount", namespace, sa_name or "default"))
        pod = service_account_admission(pod, sa.obj if sa else None, namespace)
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if self.webhook_enabled and labels.get(WI_USE_LABEL) == "true":
            assert sa is not None
            try:
                pod = workload_identity_webhook(pod, sa.obj, self.webhook_tenant_id, self.authority_host)
            except WebhookDenied as denied:
                message = f'admission webhook "{WI_WEBHOOK_NAME}" denied the request: {denied}'
                raise ApiError(400, "BadRequest", message) from None
        return pod

    def _sync_kubelet(self) -> None:
        now = self.clock.now()
        for key in [k for k in self._objects if k[0] == "Pod"]:
            pod = self._objects[key].obj
            status = pod.get("status") or {}
            if status.get("phase") != "Pending":
                continue
            configmaps = {k[2]: s.obj for k, s in self._objects.items() if k[0] == "ConfigMap" and k[1] == key[1]}
            problem = missing_config_references(pod, configmaps)
            created = datetime.datetime.strptime(pod["metadata"]["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ")
            started = created.replace(tzinfo=datetime.UTC).timestamp() + self.pod_start_seconds <= now
            if problem is not None:
                new_status = waiting_pod_status(pod, self._now(), "CreateContainerConfigError", problem)
            elif started:
                new_status = running_pod_status(pod, self._now())
            else:
                new_status = waiting_pod_status(pod, self._now(), "ContainerCreating", "")
            if _without_times(new_status) == _without_times(status):
                continue
            pod["status"] = new_status
            pod["spec"].setdefault("nodeName", NODE_NAME)
            self._resource_version += 1
            pod["metadata"]["resourceVersion"] = str(self._resource_version)

    @staticmethod
    def _render(stored: _Stored) -> dict:
        obj = copy.deepcopy(stored.obj)
        if stored.managed:
            obj["metadata"]["managedFields"] = [e.to_json() for e in stored.managed]
        return obj


def _signature(entries: list[ManagedEntry]) -> list[tuple]:
    return [(e.manager, e.operation, e.api_version, e.fields) for e in entries]
