"""A strict local stand-in for Azure Resource Graph's query API, answering from the ARM emulator's state.

Why: the drift sweep finds suspects in bulk with Resource Graph (ARG) and confirms them with ARM before
any write. What makes that hard is ARG's *behaviour*: 1,000 rows a page and a `$skipToken` to carry on,
pages evaluated anew each time (rows repeat or go missing when resources change between pages), a small
per-caller quota, results that lag behind ARM and can miss a change until a full scan. This emulator
serves `POST /providers/Microsoft.ResourceGraph/resources` inside the ARM emulator (one route there:
same host, same bearer token, same request log, same fault injection, same clock), for the real
azure-mgmt-resourcegraph client.

It is not a KQL engine. It answers exactly the queries Keyless sends (shared.adapters.resource_graph, written
out again below on purpose: changing a query there fails the tests until this file learns its meaning),
and refuses any other query as ARG refuses an invalid one (400 BadRequest, detail InvalidQuery). What it
does not serve (tenant or management-group scope, `resultFormat: table`, facets) is refused too, never
silently accepted.

Sources (cited where used below):

- [spec] Azure/azure-rest-api-specs, specification/resourcegraph/resource-manager/Microsoft.ResourceGraph/
  ResourceGraph/stable/2021-03-01/resourcegraph.json (stored version at commit 30fff85a): operation
  `Resources`, `POST /providers/Microsoft.ResourceGraph/resources`. QueryRequest: `subscriptions`,
  `managementGroups`, `query` (required), `options`, `facets`. QueryRequestOptions: `$skipToken`, `$top`
  (1..1000), `$skip` (>= 0), `resultFormat` ("table" | "objectArray", default "objectArray"),
  `allowPartialScopes`. QueryResponse: `totalRecords`, `count`, `resultTruncated` (the *strings* "true" |
  "false"), `data` (all four required), `$skipToken`, `facets`. Errors: ErrorResponse
  `{"error": {"code", "message", "details": [{"code", "message", ...}]}}`.
- [examples] the same folder, examples/ResourcesFirstPageQuery.json and ResourcesNextPageQuery.json (commit
  b2f74197): a page with more to come has `count` < `totalRecords`, `resultTruncated` "false" and a
  `$skipToken`; the next request repeats the query and subscriptions with `options.$skipToken` only.
  ResourcesFacetQuery.json: ids keep the resource group's casing in `id` and `resourceGroup`.
- [paging] learn.microsoft.com/azure/governance/resource-graph/concepts/paging-results: at most 1,000
  records per answer; `resultTruncated` is true (and there is no `$skipToken`) only when paging is not
  possible (a limit/take, or only dynamic columns); "Pagination limitations": records can repeat or go
  missing across pages. [data] .../concepts/work-with-data: 1,000 records by default, `$top` at most 1000.
- [throttling] .../concepts/guidance-for-throttled-requests: a quota per user and time window, "for example
  15 queries within every 5-second window"; every answer carries `x-ms-user-quota-remaining` (int) and
  `x-ms-user-quota-resets-after` (hh:mm:ss); when the window ends they go back to 15 and 00:00:05. Groups
  of under 300 subscriptions are recommended.
- [sdk] azure-mgmt-resourcegraph 8.0.1 (read in the venv): api-version 2021-03-01; body QueryRequest, options
  sent as `{"$top", "$skipToken", "resultFormat": "objectArray", "allowPartialScopes": false}`; client-side
  validation off (a `$top` of 5000 is sent as is); any status but 200 raises HttpResponseError.
- [errors] an invalid query: 400, code BadRequest, message "Please provide below info when asking for
  support: timestamp = ..., correlationId = ...", details InvalidQuery ("Query is invalid. Please refer to
  the documentation ...") then ParserFailure (scautomation/AzureResourceGraph-Examples #2, microsoft/ARI
  #237, Azure/azure-sdk-for-js #12780). Throttled: code RateLimiting with a RateLimiting detail
  ("Client application has been throttled ...") (Azure/azure-cli-extensions #3325).

Knobs (plain attributes and methods; `reset()` restores them; the ARM emulator's `reset()` calls it):

- `lag_seconds`: answers reflect ARM's state as of that many seconds ago on the emulator's clock. Setting
  it takes what exists then as already indexed; afterwards every change is stamped with the clock time it
  was seen at: after each ARM request (a hook it adds to `ArmEmulator.request_hooks`: clearing those
  while lagging loses the stamps of writes) and at each query. A change made by seeding (add_*, set_tags)
  between two requests is stamped when the next one comes.
- `miss(resource_id)`: ARG misses that resource (it is absent from every answer) until `full_scan()`.
- quota: counted on every query per caller (the bearer token: the ARM emulator's principal) in fixed windows
  of 5 s, headers on every answer of this route; refusing with 429 and `Retry-After` only once
  `enforce_quota()` turned it on (off by default, like the managed identity RP's limits in the ARM emulator;
  `ArmEmulator.enforce_limits` does not turn it on). A refused query does not count.
- `truncate_results`: answer as ARG does when paging is not possible: the first page only,
  `resultTruncated` "true" when rows were left out, no `$skipToken`.
- `answered`: what each served query was (name, subscriptions, offset, count, total, whether a token came).

Guesses (not found in public material) are marked "guess" where they are raised; ERROR_SOURCES at the
bottom lists where each error came from.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import hashlib
import json
import math
import re
import threading
import uuid
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Response

from tests.emulators.common import RecordedRequest, bearer_token, json_response

if TYPE_CHECKING:
    from tests.emulators.arm import ArmEmulator

API_VERSION = "2021-03-01"  # [sdk] azure-mgmt-resourcegraph 8.0.1's default
NAMESPACE = "microsoft.resourcegraph"
PATH = "/providers/Microsoft.ResourceGraph/resources"
PAGE_MAX = 1000  # [spec] $top maximum; [data] the default page
QUOTA_QUERIES = 15  # [throttling]
QUOTA_WINDOW_SECONDS = 5.0  # [throttling]

# ---------------------------------------------------------------------------------- the queries it knows
# Copies of shared.adapters.resource_graph's constants, kept apart on purpose (see the module docstring).

IDENTITIES = "identities"
ROLE_ASSIGNMENTS = "roleAssignments"
CLUSTERS = "clusters"
ACCOUNTS = "accounts"

_FIXED_QUERIES = {
    IDENTITIES: (
        "Resources\n"
        "| where type =~ 'microsoft.managedidentity/userassignedidentities'\n"
        "| where tags['managed-by'] == 'keyless'\n"
        "| project id, name, resourceGroup, subscriptionId, location, tenantId, tags,"
        " clientId = tostring(properties.clientId), principalId = tostring(properties.principalId)\n"
        "| order by id asc"
    ),
    CLUSTERS: (
        "Resources\n"
        "| where type =~ 'microsoft.containerservice/managedclusters'\n"
        "| project id, name, resourceGroup, subscriptionId, location, tags,"
        " provisioningState = tostring(properties.provisioningState),"
        " oidcIssuerEnabled = tobool(properties.oidcIssuerProfile.enabled),"
        " issuerUrl = tostring(properties.oidcIssuerProfile.issuerURL),"
        " workloadIdentityEnabled = tobool(properties.securityProfile.workloadIdentity.enabled),"
        " aadEnabled = isnotnull(properties.aadProfile),"
        " azureRbac = tobool(properties.aadProfile.enableAzureRBAC),"
        " localAccountsDisabled = tobool(properties.disableLocalAccounts),"
        " privateCluster = tobool(properties.apiServerAccessProfile.enablePrivateCluster),"
        " runCommandDisabled = tobool(properties.apiServerAccessProfile.disableRunCommand)\n"
        "| order by id asc"
    ),
    ACCOUNTS: (
        "Resources\n"
        "| where type =~ 'microsoft.cognitiveservices/accounts'\n"
        "| where kind in~ ('OpenAI', 'AIServices')\n"
        "| project id, name, resourceGroup, subscriptionId, location, kind, tags,"
        " provisioningState = tostring(properties.provisioningState),"
        " endpoint = tostring(properties.endpoint),"
        " customSubDomainName = tostring(properties.customSubDomainName),"
        " disableLocalAuth = tobool(properties.disableLocalAuth)\n"
        "| order by id asc"
    ),
}
_ROLE_ASSIGNMENTS_TEMPLATE = (
    "authorizationresources\n"
    "| where type =~ 'microsoft.authorization/roleassignments'\n"
    "| extend scope = tostring(properties.scope)\n"
    "| where scope in~ ({scopes})\n"
    "| project id, name, scope, roleDefinitionId = tostring(properties.roleDefinitionId),"
    " principalId = tostring(properties.principalId), principalType = tostring(properties.principalType)\n"
    "| order by id asc"
)
_prefix, _suffix = _ROLE_ASSIGNMENTS_TEMPLATE.split("{scopes}")
_ROLE_ASSIGNMENTS_RE = re.compile(
    re.escape(_prefix) + r"(?P<scopes>'[^'\\\n]+'(?:, '[^'\\\n]+')*)" + re.escape(_suffix), re.S
)
_OPENAI_KINDS = ("openai", "aiservices")


def recognise(query: str) -> tuple[str, tuple[str, ...]] | None:
    """(query name, parameters) of a query Keyless sends, or None. Role assignments: the account ids
    (lower case; `in~` compares without case)."""
    for name, text in _FIXED_QUERIES.items():
        if query == text:
            return name, ()
    m = _ROLE_ASSIGNMENTS_RE.fullmatch(query)
    if m:
        return ROLE_ASSIGNMENTS, tuple(s.lower() for s in re.findall(r"'([^']*)'", m["scopes"]))
    return None


# ---------------------------------------------------------------------------------- helpers


class _GraphError(Exception):
    """Becomes ARG's error body: `{"error": {"code", "message", "details": [...]}}`."""

    def __init__(self, status: int, code: str, details: list[tuple[str, str]]):
        super().__init__(f"{status} {code}: {details}")
        self.status, self.code, self.details = status, code, details


def _bad_request(detail_code: str, message: str) -> _GraphError:
    return _GraphError(400, "BadRequest", [(detail_code, message)])


def _not_served(what: str) -> _GraphError:
    return _bad_request("NotServedByEmulator", f"The emulator does not serve {what}.")


_INVALID_QUERY = (
    "InvalidQuery",
    "Query is invalid. Please refer to the documentation for the Azure Resource Graph service and fix the error "
    "before retrying.",
)


def _key(resource_id: str) -> str:
    """Case-insensitive key of a resource id (as the ARM emulator keys its state)."""
    return "/" + "/".join(p for p in resource_id.lower().split("/") if p)


def _subscription_of(resource_id: str) -> str:
    parts = [p for p in resource_id.split("/") if p]
    return parts[1].lower() if len(parts) > 1 and parts[0].lower() == "subscriptions" else ""


def _resource_group_of(resource_id: str) -> str:
    parts = [p for p in resource_id.split("/") if p]
    return parts[3] if len(parts) > 3 and parts[2].lower() == "resourcegroups" else ""


def _get(obj: Any, *path: str) -> Any:
    for name in path:
        obj = obj.get(name) if isinstance(obj, dict) else None
    return obj


def _tostring(value: Any) -> str:
    """KQL tostring(): null is ''; booleans 'true'/'false'."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)


def _tobool(value: Any) -> bool | None:
    """KQL tobool(): true/false (also as strings, any case), else null."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _timespan(seconds: float, fractional: bool) -> str:
    """hh:mm:ss [throttling]; with decimals when the quota runs faster than Azure's (`enforce_quota(scale)`)."""
    seconds = max(seconds, 0.0)
    if not fractional:
        seconds = float(math.ceil(seconds - 1e-9))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{int(hours):02d}:{int(minutes):02d}:" + (f"{secs:06.3f}" if fractional else f"{int(secs):02d}")


@dataclasses.dataclass
class _Window:
    start: float
    used: int = 0


class ResourceGraphEmulator:
    """Mounted by ArmEmulator (its `resource_graph` attribute); see the module docstring."""

    def __init__(self, arm: ArmEmulator) -> None:
        self._arm = arm
        self._lock = threading.RLock()  # taken before the ARM emulator's lock, never after it
        self.reset()

    def reset(self) -> None:
        """Forget knobs, quota windows, misses and history (the ARM emulator's reset() calls this)."""
        with self._lock:
            self._lag = 0.0
            self._versions: dict[str, list[tuple[float, str, dict | None]]] = {}
            self._missed: set[str] = set()
            self._windows: dict[str, _Window] = {}
            self.quota_enforced = False
            self.quota_scale = 1.0
            self.quota_queries = QUOTA_QUERIES
            self.truncate_results = False
            self.answered: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ knobs

    @property
    def lag_seconds(self) -> float:
        """How far behind ARM the answers are; setting it takes what exists now as indexed long ago."""
        return self._lag

    @lag_seconds.setter
    def lag_seconds(self, seconds: float) -> None:
        with self._lock:
            self._lag = max(float(seconds), 0.0)
            self._versions = {}
            if self._lag > 0:
                for kind, body in self._arm.indexed_resources():
                    self._versions[_key(body["id"])] = [(-math.inf, kind, body)]
                if self._after_arm_request not in self._arm.request_hooks:
                    self._arm.request_hooks.append(self._after_arm_request)

    def miss(self, resource_id: str) -> None:
        """ARG misses this resource (a lost change notification) until full_scan()."""
        with self._lock:
            self._missed.add(_key(resource_id))

    def full_scan(self) -> None:
        """ARG's periodic full scan: whatever it missed shows again."""
        with self._lock:
            self._missed.clear()

    def enforce_quota(self, scale: float | None = 1.0) -> None:
        """Refuse queries over the quota with 429, windows `scale` times shorter than Azure's (Retry-After and
        the resets-after header then in our seconds, with decimals); `scale=None` turns refusing off."""
        with self._lock:
            self._windows.clear()
            if scale is None:
                self.quota_enforced, self.quota_scale = False, 1.0
                return
            if scale <= 0:
                raise ValueError("scale must be > 0 (None turns the quota off)")
            self.quota_enforced, self.quota_scale = True, float(scale)

    # ------------------------------------------------------------------ what ARG has indexed

    def _after_arm_request(self, recorded: RecordedRequest) -> None:
        """Stamp the changes a request made (only while lagging: otherwise answers read ARM's state)."""
        if self._lag <= 0 or recorded.path.lower().startswith(PATH.lower()):
            return
        with self._lock:
            if self._lag > 0:
                self._observe(self._arm.clock.now())

    def _observe(self, now: float) -> None:
        """Append a version, stamped `now`, for every resource that changed since it was last seen."""
        seen: set[str] = set()
        for kind, body in self._arm.indexed_resources():
            key = _key(body["id"])
            seen.add(key)
            versions = self._versions.setdefault(key, [])
            if not versions or versions[-1][2] != body:
                versions.append((now, kind, body))
        for key, versions in self._versions.items():
            if key not in seen and versions[-1][2] is not None:
                versions.append((now, versions[-1][1], None))
        horizon = now - self._lag  # keep the newest version at or before the horizon, and all after it
        for key in list(self._versions):
            versions = self._versions[key]
            older = [i for i, (stamp, _, _) in enumerate(versions) if stamp <= horizon]
            if older and older[-1] > 0:
                del versions[: older[-1]]
            if len(versions) == 1 and versions[0][2] is None and versions[0][0] <= horizon:
                del self._versions[key]

    def _indexed(self, now: float) -> list[tuple[str, dict]]:
        """(kind, ARM JSON) of what ARG shows at `now`: ARM's state, or as of `now - lag_seconds`."""
        if self._lag <= 0:
            return self._arm.indexed_resources()
        self._observe(now)
        as_of, out = now - self._lag, []
        for versions in self._versions.values():
            for stamp, kind, body in reversed(versions):
                if stamp <= as_of:
                    if body is not None:
                        out.append((kind, body))
                    break
        return out

    # ------------------------------------------------------------------ rows

    def _base(self, body: dict) -> dict[str, Any]:
        return {
            "id": body["id"],
            "name": body.get("name", ""),
            "resourceGroup": _resource_group_of(body["id"]),  # as in the id [examples]
            "subscriptionId": _subscription_of(body["id"]),
            "location": body.get("location", ""),
            "tags": dict(body.get("tags") or {}),
        }

    def _rows(self, name: str, params: tuple[str, ...], subscriptions: set[str], now: float) -> list[dict]:
        rows: list[dict] = []
        scopes = {_key(p) for p in params}
        for kind, body in self._indexed(now):
            if _subscription_of(body["id"]) not in subscriptions or _key(body["id"]) in self._missed:
                continue
            props = body.get("properties") or {}
            if name == IDENTITIES and kind == "identity" and (body.get("tags") or {}).get("managed-by") == "keyless":
                row = self._base(body)
                row.update(tenantId=self._arm.tenant_id, clientId=_tostring(props.get("clientId")),
                           principalId=_tostring(props.get("principalId")))  # fmt: skip
            elif name == ROLE_ASSIGNMENTS and kind == "roleAssignment" and _key(props.get("scope") or "") in scopes:
                row = {"id": body["id"], "name": body.get("name", ""), "scope": _tostring(props.get("scope"))}
                row.update(roleDefinitionId=_tostring(props.get("roleDefinitionId")),
                           principalId=_tostring(props.get("principalId")),
                           principalType=_tostring(props.get("principalType")))  # fmt: skip
            elif name == CLUSTERS and kind == "cluster":
                api = props.get("apiServerAccessProfile")
                row = self._base(body)
                row.update(
                    provisioningState=_tostring(props.get("provisioningState")),
                    oidcIssuerEnabled=_tobool(_get(props, "oidcIssuerProfile", "enabled")),
                    issuerUrl=_tostring(_get(props, "oidcIssuerProfile", "issuerURL")),
                    workloadIdentityEnabled=_tobool(_get(props, "securityProfile", "workloadIdentity", "enabled")),
                    aadEnabled=props.get("aadProfile") is not None,
                    azureRbac=_tobool(_get(props, "aadProfile", "enableAzureRBAC")),
                    localAccountsDisabled=_tobool(props.get("disableLocalAccounts")),
                    privateCluster=_tobool(_get(api, "enablePrivateCluster")),
                    runCommandDisabled=_tobool(_get(api, "disableRunCommand")),
                )
            elif name == ACCOUNTS and kind == "account" and str(body.get("kind", "")).lower() in _OPENAI_KINDS:
                row = self._base(body)
                row["kind"] = body.get("kind", "")
                row.update(
                    provisioningState=_tostring(props.get("provisioningState")),
                    endpoint=_tostring(props.get("endpoint")),
                    customSubDomainName=_tostring(props.get("customSubDomainName")),
                    disableLocalAuth=_tobool(props.get("disableLocalAuth")),
                )
            else:
                continue
            rows.append(row)
        rows.sort(key=lambda r: r["id"])  # | order by id asc
        return rows

    # ------------------------------------------------------------------ HTTP

    def query(self, ctx: Any) -> Response:
        """POST /providers/Microsoft.ResourceGraph/resources (the ARM emulator has checked the token and the
        api-version, and applied its injected faults)."""
        request = ctx.request
        with self._lock:
            now = self._arm.clock.now()
            headers, throttled_for = self._take_quota(bearer_token(request) or "", now)
            try:
                if throttled_for is not None:
                    message = (
                        "Client application has been throttled and should not attempt to repeat the request until "
                        "an amount of time has elapsed. Please see https://aka.ms/resourcegraph-throttling for help."
                    )
                    headers.append(("Retry-After", self._retry_after(throttled_for)))
                    raise _GraphError(429, "RateLimiting", [("RateLimiting", message)])
                body = self._answer(request.get_data(as_text=True), now)
            except _GraphError as e:
                return self._error_response(e, now, headers)
        return json_response(body, 200, headers)

    def _error_response(self, e: _GraphError, now: float, headers: list[tuple[str, str]]) -> Response:
        stamp = datetime.datetime.fromtimestamp(now, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        message = f"Please provide below info when asking for support: timestamp = {stamp}, correlationId = " \
            f"{uuid.uuid4()}."  # fmt: skip
        details = [{"code": code, "message": text} for code, text in e.details]
        return json_response({"error": {"code": e.code, "message": message, "details": details}}, e.status, headers)

    def _take_quota(self, caller: str, now: float) -> tuple[list[tuple[str, str]], float | None]:
        """Count one query of `caller` in its window; the quota headers, and the seconds until the window
        resets when the query is refused (enforced and none left: it is not counted then)."""
        length = QUOTA_WINDOW_SECONDS / self.quota_scale
        window = self._windows.get(caller)
        if window is None or now >= window.start + length:
            window = self._windows[caller] = _Window(now)
        resets_in = window.start + length - now
        refused = self.quota_enforced and window.used >= self.quota_queries
        if not refused:
            window.used += 1
        headers = [
            ("x-ms-user-quota-remaining", str(max(self.quota_queries - window.used, 0))),
            ("x-ms-user-quota-resets-after", _timespan(resets_in, fractional=self.quota_scale != 1)),
        ]
        return headers, resets_in if refused else None

    def _retry_after(self, seconds: float) -> str:
        """Whole seconds (at least 1) in Azure's time; in our time, with decimals, when the quota is scaled."""
        if self.quota_scale == 1:
            return str(max(1, math.ceil(seconds - 1e-9)))
        return f"{max(seconds, 0.001):.3f}"

    def _answer(self, raw: str, now: float) -> dict[str, Any]:
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise _bad_request("InvalidRequestContent", "The request content is not a JSON object.")  # guess
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            raise _bad_request("InvalidRequestContent", "The request has no query.")  # guess ([spec]: required)
        if body.get("managementGroups"):
            raise _not_served("management group scopes")
        subscriptions = body.get("subscriptions")
        if not subscriptions:
            raise _not_served("tenant-scope queries (a request without subscriptions)")
        if not isinstance(subscriptions, list) or not all(isinstance(s, str) for s in subscriptions):
            raise _bad_request("InvalidRequestContent", "subscriptions must be a list of strings.")  # guess
        if body.get("facets"):
            raise _not_served("facets")
        options = body.get("options") or {}
        if not isinstance(options, dict):
            raise _bad_request("InvalidRequestContent", "options must be an object.")  # guess
        if options.get("resultFormat", "objectArray") != "objectArray":
            raise _not_served(f"resultFormat {options.get('resultFormat')!r} (only objectArray)")
        known = recognise(query)
        if known is None:
            raise _GraphError(400, "BadRequest", [_INVALID_QUERY, (
                "NotServedByEmulator",
                "The emulator answers only the queries of shared.adapters.resource_graph; this is none of them.",
            )])  # fmt: skip
        subs = sorted({s.lower() for s in subscriptions})
        fingerprint = hashlib.sha256("\n".join([query, *subs]).encode()).hexdigest()[:16]
        offset, size = self._position(options, fingerprint)
        rows = self._rows(known[0], known[1], set(subs), now)
        page = rows[offset : offset + size]
        more = offset + len(page) < len(rows)
        answer: dict[str, Any] = {"totalRecords": len(rows), "count": len(page)}
        if self.truncate_results:  # [paging]: paging impossible, the rest is left out
            answer["resultTruncated"] = "true" if more else "false"
        else:
            answer["resultTruncated"] = "false"  # [examples]: "false" on a page with a $skipToken
            if more:
                token = {"q": fingerprint, "o": offset + len(page), "n": size}
                answer["$skipToken"] = base64.urlsafe_b64encode(json.dumps(token).encode()).decode()
        answer.update(facets=[], data=page)
        self.answered.append({
            "query": known[0], "subscriptions": subs, "offset": offset, "count": len(page), "total": len(rows),
            "skipToken": "$skipToken" in answer,
        })  # fmt: skip
        return answer

    @staticmethod
    def _position(options: dict, fingerprint: str) -> tuple[int, int]:
        """(offset, page size) from `$skipToken`, `$skip` and `$top` ([spec]: $top and $skip override
        what the token says)."""
        offset, size = 0, PAGE_MAX
        token = options.get("$skipToken")
        if token is not None:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(str(token).encode()))
                if not isinstance(decoded, dict):
                    raise ValueError(token)
                claimed, offset, size = decoded["q"], int(decoded["o"]), int(decoded["n"])
            except (ValueError, KeyError, TypeError, binascii.Error):
                raise _bad_request("InvalidSkipToken", "The $skipToken is not valid.") from None  # guess
            if claimed != fingerprint:  # [examples]: a token goes with the same query and scopes
                message = "The $skipToken was issued for another query or other subscriptions."  # guess
                raise _bad_request("InvalidSkipToken", message)
        top, skip = options.get("$top"), options.get("$skip")
        if top is not None:
            if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= PAGE_MAX:
                raise _bad_request("InvalidParameter", f"$top must be between 1 and {PAGE_MAX}.")  # guess ([spec])
            size = top
        if skip is not None:
            if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
                raise _bad_request("InvalidParameter", "$skip must be 0 or more.")  # guess ([spec]: minimum 0)
            offset = skip
        return offset, size


ERROR_SOURCES = {  # code -> where it came from ("guess" = not found in public material)
    "BadRequest + InvalidQuery (400)": "scautomation/AzureResourceGraph-Examples #2, microsoft/ARI #237 and #250, "
        "Azure/azure-sdk-for-js #12780; the shape: ErrorResponse in the 2021-03-01 spec",
    "NotServedByEmulator (400, a detail)": "the emulator's own: a query or option it does not model",
    "InvalidRequestContent, InvalidParameter, InvalidSkipToken (400, details)": "guess; the bounds are the spec's",
    "RateLimiting (429)": "Azure/azure-cli-extensions #3325 (body); headers: the throttling guidance docs; "
        "Retry-After on the 429: guess",
}  # fmt: skip
