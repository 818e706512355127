"""The HTTP API's wire contracts as pydantic models: what /api/openapi.json publishes.

One model per JSON shape the API reads or answers, named as the OpenAPI components are. Every
object is closed (`extra="forbid"`, so `additionalProperties: false`): a field the code starts to
send without a model here fails the conformance check in tests/functions, instead of going out
undocumented. Enums are the domain's own Literals, never copies. The models describe the
wire; the handlers still build their answers from the domain (`BindingRecord.as_api()` and
friends), and the tests hold the two together.

Conventions, so that the schema says what the code does:
- `X | None` with no default: the key is always there and may be null.
- `Omittable[X] = None`: the key may be left out, and is never null.
- `... | Empty`: `{}` until there is something to show (before the first run, say).

Heavy to import (pydantic): only the OpenAPI handler (on first call) and tests import it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, SkipJsonSchema, WithJsonSchema
from pydantic_core import core_schema

from shared.domain.records import Desired, RecordStatus
from shared.domain.results import Outcome
from shared.domain.results import Status as RunStatus
from shared.domain.revocation import Origin
from shared.domain.verification import CheckStatus
from shared.domain.workloads import MAX_WORKLOADS

T = TypeVar("T")


def _refuse_null(value: Any) -> Any:
    if value is None:
        raise ValueError("leave the key out rather than send null")
    return value


Omittable = Annotated[T | SkipJsonSchema[None], AfterValidator(_refuse_null)]
"""A key that is left out rather than sent as null: the schema shows only T, and an explicit null is refused."""

Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
ONBOARDING_ID_PATTERN = "^[0-9a-f]{32}$"
OnboardingId = Annotated[str, Field(pattern=ONBOARDING_ID_PATTERN, description="the binding's key")]
# DNS-1123, as shared.domain.binding and shared.domain.workloads check them (tests/unit/test_contracts.py).
DNS_LABEL = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
NonEmptyText = Annotated[str, Field(min_length=1)]
FreeForm = dict[str, Any]
"""Evidence and step details: names and ids that differ from step to step, documented as open objects."""


class Wire(BaseModel):
    """camelCase on the wire, snake_case in Python; closed, so undocumented fields are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, alias_generator=to_camel)


class Empty(Wire):
    """`{}`: nothing to show yet."""


class WireSchema(GenerateJsonSchema):
    """The JSON Schema pydantic makes, less noise: no generated field titles (the key says it), and
    no `default: null` on a key that is left out rather than sent as null."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        json_schema = super().default_schema(schema)
        if json_schema.get("default", ...) is None:
            del json_schema["default"]
        return json_schema


# --- requests -------------------------------------------------------------------------------------


# The handler validates each field with shared.domain.binding, then the role allowlist and the access policy.
class OnboardingRequest(Wire):
    """POST /api/onboardings: the binding to make. Any other field is refused."""

    cluster: str = Field(
        description="AKS managed cluster resource id",
        examples=[
            "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/"
            "providers/Microsoft.ContainerService/managedClusters/aks1"
        ],
    )
    namespace: str = Field(max_length=63, pattern=DNS_LABEL)
    service_account: str = Field(max_length=253, pattern=DNS_SUBDOMAIN)
    open_ai_account: str = Field(alias="openAIAccount", description="Microsoft.CognitiveServices/accounts id")
    role: str | None = Field(
        None,
        description="role definition GUID (or id), or a known role name, on the allowlist; "
        "default Cognitive Services OpenAI User",
    )
    workloads: list[Annotated[str, Field(max_length=253, pattern=DNS_SUBDOMAIN)]] | None = Field(
        None,
        max_length=MAX_WORKLOADS,
        description="Deployments in the namespace to enforce: pod template patched to use the service account, "
        "the workload identity label and the ConfigMap; API-key variables removed. Not part of the onboarding's "
        "id: asking again with another list updates it.",
    )


# --- the onboarding (BindingRecord.as_api) -----------------------------------------------------


# shared.domain.results.StepOutcome.as_dict
class Step(Wire):
    """One step of a run and what it did (or, in a dry run, would do)."""

    step: str
    outcome: Outcome
    reason: Omittable[str] = None
    delay_seconds: Omittable[float] = None
    details: Omittable[FreeForm] = None


class Identity(Wire):
    """The user-assigned managed identity the workload signs in as."""

    resource_id: str
    client_id: str
    principal_id: str
    tenant_id: str
    origin: Omittable[Origin] = Field(
        None,
        description="`created` by Keyless (offboarding deletes it) or `adopted` (handed over by its tags); "
        "absent on records older than the marker",
    )


class FederatedCredential(Wire):
    """The identity's trust in the cluster's OIDC issuer for this service account."""

    name: str
    issuer: str
    subject: str


class Leftover(Wire):
    """Something in the cluster offboarding could not clean up (Azure's side went first, regardless)."""

    object: str = Field(description="kind, namespace and name: `configmap team-a/x`")
    reason: str


class RequestCounts(Wire):
    """ARM and Kubernetes requests the last run made."""

    arm_reads: int
    arm_writes: int
    kube_reads: int
    kube_writes: int


class OpenCheck(Wire):
    """A verification check that did not pass, without its evidence."""

    name: str
    status: CheckStatus
    reason: Omittable[str] = None


class KeyedWorkload(Wire):
    """A pod container that still carries an API key: what turning the account's keys off would break."""

    namespace: str
    pod: str
    service_account: str | None = Field(description="null when the pod names none")
    container: str
    api_keys: list[str] = Field(description="the keys' variable or secret names, never their values")


# shared.domain.verification.VerificationReport.summary
class VerificationSummary(Wire):
    """The last verification the worker ran: the verdict, and the checks that did not pass."""

    status: CheckStatus
    checked_at: Timestamp
    open: list[OpenCheck]
    would_break: Omittable[list[KeyedWorkload]] = None
    rechecks: Omittable[int] = Field(None, description="re-checks of a verification that stayed pending")


# shared.domain.records.BindingRecord.as_api
class Onboarding(Wire):
    """An onboarding: one binding's desired state and the outcome of its last run."""

    id: OnboardingId
    cluster: str
    namespace: str
    service_account: str
    open_ai_account: str = Field(alias="openAIAccount")
    role_definition_id: str
    workloads: list[str]
    desired: Desired
    status: RecordStatus
    reason: str
    next_attempt_at: Timestamp | None = Field(description="when a `not-ready` binding is tried again")
    steps: list[Step]
    identity: Identity | Empty
    federated_credential: FederatedCredential | Empty
    role_assignment_id: str | None
    kubernetes_objects: list[str]
    leftovers: list[Leftover] = Field(
        description="what the last offboarding could not clean up in the cluster, and why; a `removed` "
        "onboarding's Azure access (role assignment, credential, identity) is gone all the same"
    )
    attempts: int
    last_error: str
    last_requests: RequestCounts | Empty
    verification: VerificationSummary | Empty = Field(
        description="the last verification the worker ran: status, checkedAt, open checks"
    )
    revoked_at: Timestamp | None = Field(
        description="when the one door first refused this binding after access had been granted"
    )
    offboard_at: Timestamp | None = Field(
        description="a revoked binding is offboarded then, unless the grant comes back"
    )
    requested_by: str
    source: str = Field(description="who asked: `api`, or `cluster-tags`")
    created_at: Timestamp
    updated_at: Timestamp


class OnboardingPage(Wire):
    """GET /api/onboardings: a page of the onboardings the caller may see."""

    value: list[Onboarding]
    continuation_token: Omittable[str] = Field(
        None,
        description="more may follow: pass it back for the next page (opaque, only for this caller, for an hour); "
        "absent on the last",
    )


# --- dry run --------------------------------------------------------------------------------------


# shared.domain.binding.Binding.describe
class BindingFields(Wire):
    """The binding the request names, validated and normalised."""

    cluster: str
    namespace: str
    service_account: str
    open_ai_account: str = Field(alias="openAIAccount")
    role_definition_id: str
    workloads: list[str]


# shared.domain.results.ReconcileResult.as_dict
class PlannedRun(Wire):
    """A run computed with reads only: every step and what it would do."""

    binding_key: str
    dry_run: bool
    desired: Desired
    status: RunStatus
    reason: str
    retry_after_seconds: float | None
    steps: list[Step]
    identity: Identity | Empty
    credential: FederatedCredential | Empty
    role_assignment_id: str | None
    kubernetes_objects: list[str]
    requests: RequestCounts


class Plan(Wire):
    """POST /api/onboardings?dryRun=true: what an onboarding would do, and what allows it."""

    id: OnboardingId
    binding: BindingFields
    granted_by: str = Field(description="what allows it: the policy rule")
    plan: PlannedRun


# --- verification ---------------------------------------------------------------------------------


class Check(Wire):
    """One verification check, with its evidence (names and ids only)."""

    name: str = Field(
        description="identity, service-account, federated-credential, role-assignment, account, pod/<name>, pods; "
        "access with KEYLESS_PROVE_ACCESS (evidence: stage, passed stages, the token's issuer/subject/audiences/"
        "expiry, Entra's error code, the data plane's status and code, fix)"
    )
    status: CheckStatus
    reason: Omittable[str] = None
    evidence: Omittable[FreeForm] = None


# shared.engine.reconcile (Engine.verify) and shared.app.after_ready.verification_for
class KeylessAccount(Wire):
    """The account's keyless state: informational, not a gate of the verification."""

    account: str
    local_auth_enabled: bool | None = Field(description="whether keys still work; null when the account was unread")
    opted_in: bool | None = Field(description="whether it opted in to having its keys turned off")
    would_break: list[KeyedWorkload]
    blockers: list[str] = Field(description="what would break, among the onboardings your policy covers")
    hidden_blockers: int = Field(description="how many more blockers belong to onboardings you may not see")


# shared.domain.verification.VerificationReport.as_dict, plus onboardingStatus (handlers.verification)
class Verification(Wire):
    """Is the binding really keyless, check by check: each check pass, fail or pending, with evidence."""

    id: OnboardingId
    status: CheckStatus
    onboarding_status: RecordStatus
    checked_at: Timestamp
    checks: list[Check]
    keyless_account: Omittable[KeylessAccount] = None


# --- errors and health ----------------------------------------------------------------------------


class ErrorDetail(Wire):
    """What was refused, and which input is at fault."""

    code: str
    message: str
    field: Omittable[str] = Field(None, description="the request field, parameter or header at fault")


# handlers._http.ApiError.response
class Error(Wire):
    """Every refusal and failure of the API has this body."""

    error: ErrorDetail


class HealthCheck(Wire):
    """One thing Keyless needs, and whether it has it."""

    name: Literal["settings", "storage-table", "storage-queue", "azure-credential"]
    status: Literal["pass", "fail", "skipped"] = Field(description="`skipped`: not checked, settings failed")
    message: Omittable[str] = Field(
        None, description="what is wrong and how to fix it, naming the setting (never its value)"
    )


class Health(Wire):
    """GET /api/health: whether the settings are valid, storage (the ledger's table and the work queue)
    answers and Keyless's Azure credential gives a token (checked at most once a minute)."""

    status: Literal["healthy", "unhealthy"]
    storage: str = Field(description="`reachable`, or `unreachable`")
    checks: list[HealthCheck]


# --- the drift sweep ------------------------------------------------------------------------------


# shared.app.sweep.SweepProgress, as handlers.api answers it
class SweepProgress(Wire):
    """GET /api/sweeps/latest: the current (or last) drift sweep, in counts; no binding is named."""

    id: str = Field(description="the sweep's random id")
    number: int = Field(description="sweeps so far")
    started_at: Timestamp
    finished_at: Timestamp | None = Field(description="null while shards are left")
    duration_seconds: float | None = Field(description="from its (re)start to its last shard; null while running")
    planned: bool = Field(description="the bulk read and the plan are done (false: the plan is still being made)")
    shards: int = Field(description="clusters to check")
    shards_done: int = Field(description="clusters checked")
    suspects: int = Field(description="bindings that may have drifted: the plan's, and those of the clusters checked")
    queued: int = Field(description="reconciles queued for the suspects of the clusters checked")
    repaired: int = Field(description="of those reconciles, the bindings whose run changed something (so far)")
    source: str = Field(description="where Azure's state was read: `resource-graph`, `arm`, or `none`")
    resumes: int = Field(description="times a cut-off sweep was resumed")


# --- who the caller is (shared.app.whoami) ---------------------------------------------------------


class MyRule(Wire):
    """An access-policy rule that names the caller: what it lets them ask for."""

    name: str
    matched_by: list[str] = Field(description="what of the caller the rule names: `objectId`, `group <id>`, "
                                  "`app role <name>`")  # fmt: skip
    clusters: list[str] = Field(description="cluster ids, or subscription / resource group ids they lie in")
    namespaces: list[str] = Field(description="fnmatch patterns (a system namespace only when named exactly)")
    service_accounts: list[str] = Field(description="fnmatch patterns (`default` only when named exactly)")
    accounts: list[str] = Field(description="Azure OpenAI account ids, or subscription / resource group ids")
    roles: list[str] = Field(description="role definition GUIDs it grants that Keyless may assign now")
    workloads: list[str] = Field(description="Deployments it may patch (fnmatch patterns)")
    max_bindings: int = Field(description="live bindings the rule may grant, for everyone it names")
    live_bindings: int = Field(description="live bindings counted in the rule now (read up to maxBindings + 1)")


class Me(Wire):
    """GET /api/me: the signed-in caller, and the rules that name them (never another team's)."""

    object_id: str
    name: str = Field(description="the display name the sign-in gave, or empty")
    signed_in_with: Literal["entra", "dev-principal"]
    rules: list[MyRule] = Field(description="in the order the policy tries them; empty: nothing may be asked for")
    allowed_subscriptions: list[str] = Field(description="subscriptions clusters and accounts must lie in; empty: any")
    default_role: str = Field(description="the role a request that names none gets")
    hint: str = Field(description="what to do when nothing may be asked for; empty otherwise")


# --- the access policy document (KEYLESS_ACCESS_POLICY) ---------------------------------------------

Strings = list[NonEmptyText] | None
"""A list of non-empty strings; null counts as none (shared.domain.policy._strings)."""


class PolicyPrincipals(Wire):
    """Who a rule speaks for: at least one of these (a rule that names nobody is refused)."""

    groups: Strings = Field(None, description="Entra group object ids")
    roles: Strings = Field(None, description="app roles")
    object_ids: Strings = Field(None, description="Entra object ids")
    cluster_tags: bool | None = Field(None, description="the rule speaks for cluster tags, not for a person")


class PolicyRule(Wire):
    """One grant. System namespaces and the `default` service account match only when named exactly."""

    name: Omittable[str] = Field(None, description="shown as what allowed a binding; default rules[i]")
    principals: PolicyPrincipals
    clusters: Strings = Field(None, description="cluster ids, or subscription / resource group ids they lie in")
    namespaces: Strings = Field(None, description="fnmatch patterns")
    service_accounts: Strings = Field(None, description='fnmatch patterns; default ["*"]')
    accounts: Strings = Field(None, description="account ids, or subscription / resource group ids they lie in")
    roles: Strings = Field(None, description="role definition GUIDs; default the default role")
    workloads: Strings = Field(None, description="Deployments it may patch (fnmatch patterns); default none")
    max_bindings: Annotated[int, Field(ge=0)] | None = Field(
        None, description="live bindings this rule may grant; default KEYLESS_DEFAULT_MAX_BINDINGS"
    )


# shared.domain.policy.AccessPolicy.parse reads it (and ignores unknown keys; this shape does not).
class AccessPolicyDocument(Wire):
    """The access policy (setting KEYLESS_ACCESS_POLICY): who may onboard what. Default deny."""

    rules: list[PolicyRule]


RESPONSES: tuple[type[Wire], ...] = (Onboarding, OnboardingPage, Plan, Verification, SweepProgress, Me, Error, Health)
DOCUMENTS: tuple[type[Wire], ...] = (OnboardingRequest, AccessPolicyDocument)
