"""Azure Resource Graph: what Keyless manages, read in bulk across subscriptions.

Why: the drift sweep looks at every binding (10,000 of them) on a timer. ARM answers one resource, or one
resource group's list, per request, at 25 reads/s per subscription (AZURE-FACTS); Resource Graph (ARG)
answers one query over many subscriptions, 1,000 rows a page: every Keyless identity, every role assignment
at the OpenAI accounts, every cluster and account, in a few dozen requests. But ARG is an index of ARM, not
ARM: it shows a write some time after it happened, and can miss a change until its next full scan. What it
returns are *suspects*: confirm each with ARM (the other adapters) before writing anything.

Contract of every query method:

- one plain snapshot per resource (shared.domain.observed), sorted by id; an empty input asks nothing and
  returns [];
- it reads every page (`$skipToken`) of every group of subscriptions (at most SUBSCRIPTIONS_PER_QUERY
  each). ARG evaluates each page anew (ref: learn.microsoft.com/azure/governance/resource-graph/concepts/
  paging-results, "Pagination limitations"): when resources change between pages a row can come twice
  (kept once here, the later one wins) or not at all (the next sweep sees it);
- raises TemporaryError when ARG is throttling us (the delay is when our quota resets), answers 5xx/408, or
  does not answer; PermanentError when it refuses (403: Keyless may not read a subscription; 400: the
  query), or when an answer says it is incomplete (`resultTruncated`, which our queries never cause).

The queries are the named constants below; tests/emulators/resource_graph.py answers exactly these, and
refuses any other, as ARG refuses an invalid query. Change one here and the emulator must learn it too.

Quota: ARG allows each caller a number of queries per time window ("for example 15 queries within every
5-second window") and says on every answer how many are left (`x-ms-user-quota-remaining`) and when the
window resets (`x-ms-user-quota-resets-after`, hh:mm:ss) (ref: .../concepts/guidance-for-throttled-
requests). A sweep sends more than 15 queries; so, with client-side pacing on (KEYLESS_ARM_PACING_SCALE >
0), the next query waits for the reset when the last answer said none are left, as pacing does for ARM
(shared.adapters.pacing): waiting before sending, never a retry. A 429 that still comes is a TemporaryError
once azure-core's retries (shared.domain.retry_policy.ARM) are spent; azure-core retries a POST on 429 only
when the answer has Retry-After.

Every HTTP attempt counts as an ARM request (shared.adapters.counting), from a per-retry policy as for the
ARM clients. `counting.is_write` takes a POST that is not a `list...` action for a write: it counts these
queries, which only read, as writes.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.mgmt.resourcegraph import ResourceGraphClient
from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions

from shared.adapters.arm import ARM_ERRORS, error_code, retry_after, status_of, translate
from shared.adapters.counting import pipeline_attempt, pipeline_response
from shared.domain import retry_policy
from shared.domain.errors import KeylessError, PermanentError, TemporaryError
from shared.domain.ids import ACCOUNT_TYPE, SUBSCRIPTION_ID, parse_resource_id
from shared.domain.observed import AccountState, ClusterState, IdentityState, RoleAssignmentState
from shared.domain.settings import Settings

# ---------------------------------------------------------------------------------- the queries

IDENTITIES_QUERY = (
    "Resources\n"
    "| where type =~ 'microsoft.managedidentity/userassignedidentities'\n"
    "| where tags['managed-by'] == 'keyless'\n"
    "| project id, name, resourceGroup, subscriptionId, location, tenantId, tags,"
    " clientId = tostring(properties.clientId), principalId = tostring(properties.principalId)\n"
    "| order by id asc"
)
"""User-assigned identities tagged managed-by=keyless (exactly: the planner compares the tag with `==` too)."""

ROLE_ASSIGNMENTS_QUERY = (
    "authorizationresources\n"
    "| where type =~ 'microsoft.authorization/roleassignments'\n"
    "| extend scope = tostring(properties.scope)\n"
    "| where scope in~ ({scopes})\n"
    "| project id, name, scope, roleDefinitionId = tostring(properties.roleDefinitionId),"
    " principalId = tostring(properties.principalId), principalType = tostring(properties.principalType)\n"
    "| order by id asc"
)
"""Role assignments (any role, any principal) whose scope is one of the accounts: `{scopes}` is a list of
single-quoted account ids, `'id1', 'id2'`. Exactly at the account, as Keyless assigns; not below it."""

CLUSTERS_QUERY = (
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
)
"""Every AKS managed cluster, with what ClusterState holds."""

ACCOUNTS_QUERY = (
    "Resources\n"
    "| where type =~ 'microsoft.cognitiveservices/accounts'\n"
    "| where kind in~ ('OpenAI', 'AIServices')\n"
    "| project id, name, resourceGroup, subscriptionId, location, kind, tags,"
    " provisioningState = tostring(properties.provisioningState),"
    " endpoint = tostring(properties.endpoint),"
    " customSubDomainName = tostring(properties.customSubDomainName),"
    " disableLocalAuth = tobool(properties.disableLocalAuth)\n"
    "| order by id asc"
)
"""Cognitive Services accounts of the kinds Keyless serves (shared.domain.planner.OPENAI_KINDS)."""

PAGE_SIZE = 1000
"""Rows per page: ARG's maximum `$top` (ref: the 2021-03-01 spec, QueryRequestOptions.$top, 1..1000)."""

SUBSCRIPTIONS_PER_QUERY = 250
"""ARG's docs recommend groups of under 300 subscriptions per query (guidance-for-throttled-requests,
"Grouping queries")."""

ACCOUNTS_PER_QUERY = 50
"""Account ids in one role-assignment query (about 130 characters each). ARG publishes no query-length
limit that we found; 50 keeps a query under 8,000 characters."""

QUOTA_REMAINING = "x-ms-user-quota-remaining"
QUOTA_RESETS_AFTER = "x-ms-user-quota-resets-after"
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2}(?:\.\d+)?)$")


def resets_after_seconds(value: object) -> float | None:
    """`x-ms-user-quota-resets-after` (hh:mm:ss, optionally d.hh:mm:ss.fff) in seconds; None if absent or
    unreadable."""
    m = _TIMESPAN.match(str(value or "").strip())
    if not m:
        return None
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in m.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


@dataclasses.dataclass(frozen=True)
class GraphRoleAssignment(RoleAssignmentState):
    """A role assignment as Resource Graph shows it: RoleAssignmentState plus its principalType."""

    principal_type: str = ""


# ---------------------------------------------------------------------------------- pipeline policies


class _CountingPolicy(SansIOHTTPPolicy):  # type: ignore[type-arg]
    """Counts every attempt (retries included), as shared.adapters.arm does for the ARM clients."""

    def on_request(self, request: Any) -> None:
        pipeline_attempt("arm", request)

    def on_response(self, request: Any, response: Any) -> None:
        pipeline_response("arm", response)  # a 429 is measured (keyless.requests.throttled)


class QuotaWindow:
    """What ARG last told us of our quota. `before_send` waits for the window's reset when none is left
    (TemporaryError instead when that is more than `max_wait_seconds` away); `after_answer` reads the
    headers of each answer. Thread-safe; threads that waited for the same reset go together, and the
    answers tell again."""

    def __init__(
        self,
        max_wait_seconds: float = retry_policy.PACING_MAX_WAIT_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.max_wait_seconds = max_wait_seconds
        self._clock, self._sleep = clock, sleep
        self._remaining: int | None = None  # None: unknown (no answer yet, or the window has reset)
        self._resets_at = 0.0
        self._lock = threading.Lock()
        self.waited_seconds = 0.0

    def before_send(self) -> None:
        with self._lock:
            now = self._clock()
            if self._remaining is None or now >= self._resets_at:
                self._remaining = None
                return
            if self._remaining > 0:
                self._remaining -= 1
                return
            wait = self._resets_at - now
            if wait > self.max_wait_seconds:
                raise TemporaryError(f"Resource Graph quota used up; it resets in {wait:.0f} s", wait)
            self.waited_seconds += wait
        self._sleep(wait)

    def after_answer(self, headers: Any) -> None:
        resets = resets_after_seconds(headers.get(QUOTA_RESETS_AFTER))
        try:
            remaining = int(headers.get(QUOTA_REMAINING))
        except (TypeError, ValueError):
            return
        if resets is None:
            return
        with self._lock:
            self._remaining, self._resets_at = remaining, self._clock() + resets


class _QuotaPolicy(SansIOHTTPPolicy):  # type: ignore[type-arg]
    def __init__(self, quota: QuotaWindow) -> None:
        self.quota = quota

    def on_request(self, request: Any) -> None:
        self.quota.before_send()

    def on_response(self, request: Any, response: Any) -> None:
        self.quota.after_answer(response.http_response.headers)


# ---------------------------------------------------------------------------------- errors


def _detail_codes(exc: Exception) -> list[str]:
    """The codes of ARG's `error.details` (ARG puts the reason there: InvalidQuery, RateLimiting...)."""
    response: Any = getattr(exc, "response", None)
    try:
        body = response.json() if response is not None else None
    except Exception:  # noqa: BLE001 - a non-JSON body has no details
        return []
    error = body.get("error") if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    if not isinstance(details, list):
        return []
    return [str(d["code"]) for d in details if isinstance(d, dict) and d.get("code")]


def translate_graph_error(exc: Exception, what: str) -> KeylessError:
    """ARG's errors by status and code: 429 waits for the quota's reset (else Retry-After); 400 names ARG's
    detail codes; the rest as ARM's (shared.adapters.arm.translate)."""
    status = status_of(exc)
    if status == 429:
        response: Any = getattr(exc, "response", None)
        resets = resets_after_seconds(response.headers.get(QUOTA_RESETS_AFTER)) if response is not None else None
        if resets is not None:
            delay = max(resets, retry_policy.RETRY_AFTER_MIN_SECONDS)
        else:
            delay = retry_after(exc, retry_policy.ARM_THROTTLED_SECONDS)
        code = error_code(exc) or "RateLimiting"
        return TemporaryError(f"{what}: Resource Graph quota used up ({code}); it resets in {delay:g} s", delay)
    if status == 400:
        codes = ", ".join([error_code(exc) or "BadRequest", *_detail_codes(exc)])
        return PermanentError(f"{what}: Resource Graph refused the query (400 {codes})")
    return translate(exc, what)


# ---------------------------------------------------------------------------------- the adapter


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _subscriptions(subscriptions: Iterable[str]) -> list[str]:
    out = sorted({s.strip().lower() for s in subscriptions})
    bad = [s for s in out if not SUBSCRIPTION_ID.fullmatch(s)]
    if bad:
        raise PermanentError(f"not subscription ids (a GUID in its dashed form): {bad[:3]}")
    return out


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _tags(row: dict[str, Any]) -> dict[str, str]:
    tags = row.get("tags")
    return {str(k): str(v) for k, v in tags.items()} if isinstance(tags, dict) else {}


class ResourceGraphAdapter:
    """Queries ARG through the ARM endpoint of the settings (the emulator's in tests), with the same
    credential scope, CA bundle, timeouts and retries as the ARM clients (retry_policy.ARM)."""

    def __init__(self, credential: Any, settings: Settings) -> None:
        """Client-side quota pacing follows `settings.arm_pacing_scale` (0: off)."""
        self.quota = QuotaWindow() if settings.arm_pacing_scale > 0 else None
        policies: list[Any] = [_CountingPolicy()]
        if self.quota is not None:
            policies.append(_QuotaPolicy(self.quota))
        connect, read = retry_policy.ARM.timeouts(settings.request_timeout_seconds)
        kwargs: dict[str, Any] = {
            "credential_scopes": [settings.arm_scope],
            "per_retry_policies": policies,
            "connection_timeout": connect,
            "read_timeout": read,
            **retry_policy.ARM.retry.kwargs(),
        }
        if settings.ca_bundle:
            kwargs["connection_verify"] = settings.ca_bundle
        self._client = ResourceGraphClient(credential, base_url=settings.arm_endpoint, **kwargs)

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ queries

    def keyless_identities(self, subscriptions: Iterable[str]) -> list[IdentityState]:
        """User-assigned identities tagged managed-by=keyless in `subscriptions`."""
        return [
            IdentityState(
                id=row["id"],
                name=_text(row.get("name")),
                location=_text(row.get("location")),
                client_id=_text(row.get("clientId")),
                principal_id=_text(row.get("principalId")),
                tenant_id=_text(row.get("tenantId")),
                tags=_tags(row),
            )
            for row in self._rows(IDENTITIES_QUERY, _subscriptions(subscriptions), "listing Keyless identities")
        ]

    def role_assignments_at(self, account_ids: Iterable[str]) -> list[GraphRoleAssignment]:
        """Every role assignment exactly at one of the accounts (any role, any principal). Raises
        PermanentError for an id that is not a Cognitive Services account's (nothing else goes into a query)."""
        parsed = (parse_resource_id(a, ACCOUNT_TYPE, "account id") for a in account_ids)
        accounts = {account.key: account for account in parsed}  # once each, whatever the case
        rows: dict[str, dict[str, Any]] = {}
        for chunk in _chunks([str(accounts[k]) for k in sorted(accounts)], ACCOUNTS_PER_QUERY):
            query = ROLE_ASSIGNMENTS_QUERY.format(scopes=", ".join(f"'{a}'" for a in chunk))
            subscriptions = sorted({a.split("/")[2].lower() for a in chunk})
            for row in self._rows(query, subscriptions, "listing role assignments at the accounts"):
                rows[row["id"].lower()] = row
        return [
            GraphRoleAssignment(
                id=row["id"],
                name=_text(row.get("name")),
                scope=_text(row.get("scope")),
                role_definition_id=_text(row.get("roleDefinitionId")),
                principal_id=_text(row.get("principalId")),
                principal_type=_text(row.get("principalType")),
            )
            for _, row in sorted(rows.items())
        ]

    def clusters(self, subscriptions: Iterable[str]) -> list[ClusterState]:
        """Every AKS managed cluster in `subscriptions` (shaped as shared.adapters.clusters reads them)."""
        return [
            ClusterState(
                id=row["id"],
                name=_text(row.get("name")),
                location=_text(row.get("location")),
                provisioning_state=_text(row.get("provisioningState")) or "Succeeded",
                oidc_issuer_enabled=row.get("oidcIssuerEnabled") is True,
                issuer_url=_text(row.get("issuerUrl")) or None,
                workload_identity_enabled=row.get("workloadIdentityEnabled") is True,
                aad_enabled=row.get("aadEnabled") is True,
                azure_rbac=row.get("azureRbac") is True,
                local_accounts_disabled=row.get("localAccountsDisabled") is True,
                tags=_tags(row),
                private=row.get("privateCluster") is True,
                run_command_disabled=row.get("runCommandDisabled") is True,
            )
            for row in self._rows(CLUSTERS_QUERY, _subscriptions(subscriptions), "listing clusters")
        ]

    def openai_accounts(self, subscriptions: Iterable[str]) -> list[AccountState]:
        """OpenAI and AIServices accounts in `subscriptions`. `deployments` is always (): ARG's row of an
        account does not list them; read them from ARM (shared.adapters.accounts) when they matter."""
        return [
            AccountState(
                id=row["id"],
                name=_text(row.get("name")),
                kind=_text(row.get("kind")),
                endpoint=_text(row.get("endpoint")) or None,
                custom_subdomain=_text(row.get("customSubDomainName")) or None,
                provisioning_state=_text(row.get("provisioningState")) or "Succeeded",
                disable_local_auth=row.get("disableLocalAuth") is True,
                tags=_tags(row),
            )
            for row in self._rows(ACCOUNTS_QUERY, _subscriptions(subscriptions), "listing OpenAI accounts")
        ]

    # ------------------------------------------------------------------ paging

    def _rows(self, query: str, subscriptions: list[str], what: str) -> list[dict[str, Any]]:
        """Every row of `query` over `subscriptions` (in groups), one per id (the last seen), sorted by id."""
        rows: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(subscriptions, SUBSCRIPTIONS_PER_QUERY):
            for row in self._pages(query, chunk, what):
                rows[row["id"].lower()] = row
        return [row for _, row in sorted(rows.items())]

    def _pages(self, query: str, subscriptions: list[str], what: str) -> Iterator[dict[str, Any]]:
        token: str | None = None
        seen_tokens: set[str] = set()
        while True:
            options = QueryRequestOptions(top=PAGE_SIZE, skip_token=token, result_format="objectArray")
            request = QueryRequest(subscriptions=subscriptions, query=query, options=options)
            try:
                answer = self._client.resources(request)
            except ARM_ERRORS as exc:
                raise translate_graph_error(exc, what) from exc
            if str(answer.result_truncated).lower() == "true":
                # Only when paging is impossible (a limit/take, or only dynamic columns): a bug in our query.
                raise PermanentError(f"{what}: Resource Graph answered an incomplete result (resultTruncated)")
            data: Any = answer.data  # objectArray: a list of JSON objects
            rows = data if isinstance(data, list) else None
            if rows is None or not all(isinstance(r, dict) and isinstance(r.get("id"), str) for r in rows):
                raise PermanentError(f"{what}: Resource Graph answered rows without ids")
            yield from rows
            token = answer.skip_token or None
            if token is None:
                return
            if token in seen_tokens:
                raise PermanentError(f"{what}: Resource Graph answered the same $skipToken twice")
            seen_tokens.add(token)
