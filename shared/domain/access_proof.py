"""Proof of access, decided without side effects: what each stage's answer means, and what to fix.

Why: the other checks compare configuration (annotations, issuer and subject, role, endpoint), which
is what a careful person checks by hand. They miss what only shows when a pod asks for a token: a
subject with a typo Entra matches exactly, an issuer the cluster does not actually sign with, a role
without the data action, an account whose network refuses the caller, a credential or role Entra
has not seen yet. So, with KEYLESS_PROVE_ACCESS, Keyless does what the pod will do, stage by stage
(shared.engine.access): a service account token from the cluster (`token`), exchanged at Entra for
the identity (`exchange`), one harmless OpenAI data-plane read with Entra's token (`data-plane`).

Each stage's answer becomes the `access` check: `pass` when the read succeeded; `pending` (retried
with growing delays) when the answer is what propagation looks like — Entra not yet knowing a
federated credential the identity has, or a role assignment the identity holds not effective yet;
`fail` otherwise, with the stage, the evidence (the token's issuer, subject, audience and expiry —
never the token —, Entra's error code, the data plane's status and code) and what to fix.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from typing import Any

from shared.domain.observed import CredentialState
from shared.domain.planner import AUDIENCE
from shared.domain.verification import Check

CHECK = "access"
TOKEN_SECONDS = 600
"""The token's lifetime: the shortest the TokenRequest API grants (expirationSeconds >= 600)."""
OPENAI_SCOPE = "https://cognitiveservices.azure.com/.default"
_SOVEREIGN_SCOPES = {  # the account endpoint's suffix -> the cloud's Cognitive Services audience
    ".azure.us": "https://cognitiveservices.azure.us/.default",
    ".azure.cn": "https://cognitiveservices.azure.cn/.default",
}


def openai_scope(endpoint: str | None) -> str:
    """The scope of the token the data plane takes: the public cloud's, or a sovereign cloud's as the
    account's endpoint says (`*.openai.azure.us`, `*.openai.azure.cn`)."""
    host = (endpoint or "").split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0].lower()
    for suffix, scope in _SOVEREIGN_SCOPES.items():
        if host.endswith(suffix):
            return scope
    return OPENAI_SCOPE


DATA_ACTION = "Microsoft.CognitiveServices/accounts/OpenAI/models/read"
"""What the data-plane read needs (listing the account's models); Cognitive Services OpenAI User
grants it through `Microsoft.CognitiveServices/accounts/OpenAI/*/read`."""
PERMISSION_DENIED = "PermissionDenied"
"""The endpoint's code for a valid token whose principal lacks the data action (answered with 401)."""

# Entra's "no matching federated identity record" family: the assertion is fine, no credential matched.
NO_MATCHING_CREDENTIAL = {"AADSTS70021", "AADSTS700211", "AADSTS700212", "AADSTS700213"}
UNKNOWN_CLIENT = {"AADSTS700016"}
ASSERTION_TIME = {"AADSTS700024"}
# The signature, the key id unknown to the issuer's JWKS, or the issuer's documents unreachable.
ISSUER_KEYS = {"AADSTS700027", "AADSTS7000272", "AADSTS90061", "AADSTS50166"}
NETWORK_MARKERS = ("virtual network", "firewall", "public access is disabled", "private endpoint")
_TOKENISH = re.compile(r"eyJ[A-Za-z0-9_-]{5,}(\.[A-Za-z0-9_-]*){0,2}|[A-Za-z0-9+=_-]{40,}")


def scrub(text: str) -> str:
    """A service's words, with anything shaped like a token taken out (a JWT or a piece of one: its
    header always starts `eyJ`; a long opaque run): what Entra or the data plane says goes into the
    report, a token never does. Scrub first, then shorten (a cut token is still a secret)."""
    return _TOKENISH.sub("[redacted]", text)


@dataclasses.dataclass(frozen=True)
class TokenClaims:
    """What the cluster's token says (read from it, never kept)."""

    issuer: str
    subject: str
    audiences: tuple[str, ...]
    expires_at: str

    def evidence(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "subject": self.subject,
            "audiences": list(self.audiences),
            "expiresAt": self.expires_at,
        }


@dataclasses.dataclass(frozen=True)
class EntraRefusal:
    """Entra's answer to the exchange: its AADSTS code ('' when it gave none) and HTTP status."""

    code: str
    status: int | None
    description: str = ""  # the first sentence of error_description (no token in it)


@dataclasses.dataclass(frozen=True)
class DataPlaneAnswer:
    status: int
    code: str = ""
    message: str = ""


def _check(status: str, stage: str, reason: str, evidence: dict[str, Any], fix: str = "", retry: bool = False) -> Check:
    details = {"stage": stage, **evidence}
    if fix:
        details["fix"] = fix
    return Check(CHECK, status, reason, details, retry=retry)  # type: ignore[arg-type]


def token_refused(reason: str, temporary: bool, not_found: bool = False) -> Check:
    """The cluster gave no token: the service account missing, Keyless not allowed, or unreachable."""
    if temporary:
        return _check("pending", "token", f"the cluster gave no token yet: {reason}", {"passed": []}, retry=True)
    fix = (
        "create the service account (or let Keyless onboard it again)"
        if not_found
        else "allow Keyless to create tokens of the service account: `serviceaccounts/token` create in its "
        "namespace (infra/kubernetes/keyless-rbac.yaml; the AKS Workload Binder role on Azure RBAC clusters)"
    )
    return _check("fail", "token", f"the cluster refused a token of the service account: {reason}", {"passed": []}, fix)


SERVICE_ACCOUNT_WRITE = "Microsoft.ContainerService/managedClusters/serviceaccounts/write"
"""What Azure RBAC for Kubernetes checks for a TokenRequest. Microsoft's list of AKS data actions has none
for the `serviceaccounts/token` subresource: AKS's authorization webhook (guard, kubeguard/guard
authz/providers/azure/rbac/checkaccessreqhelper.go: getResourceAndAction) drops every subresource but
pods/exec and maps `create` to `write`, so the check is the resource's own write."""


def token_not_allowed(reason: str, cluster_id: str, namespace: str, azure_rbac: bool | None) -> Check:
    """The cluster answered 401/403 to the TokenRequest: what Keyless lacks there and how to grant it,
    by how the cluster authorises (`azure_rbac`: aadProfile.enableAzureRBAC; None: not known)."""
    scope = f"{cluster_id}/namespaces/{namespace}"
    asked = f"Keyless `create` on `serviceaccounts/token` in namespace {namespace}"
    azure_fix = (
        f"assign the Keyless AKS Workload Binder role (grantAksWorkloadBinder; it holds {SERVICE_ACCOUNT_WRITE}) "
        f"to Keyless's identity at {scope} or at the cluster: `az role assignment create --assignee-object-id "
        "<KEYLESS_PRINCIPAL_ID> --assignee-principal-type ServicePrincipal --role '<Keyless AKS Workload Binder "
        f"role name>' --scope {scope}`; Azure RBAC for Kubernetes sees a new assignment within about 5 minutes"
    )
    kube_fix = (
        f"bind Keyless's identity to the keyless-workload-binder ClusterRole in namespace {namespace} "
        "(infra/kubernetes/keyless-rbac.yaml: scripts/grant-kubernetes-rbac <cluster id> <KEYLESS_PRINCIPAL_ID> "
        f"--namespace {namespace})"
    )
    evidence: dict[str, Any] = {"passed": []}
    if azure_rbac:
        evidence["missing"] = {"dataAction": SERVICE_ACCOUNT_WRITE, "scope": scope}
        said = f"Azure RBAC for Kubernetes did not allow {asked}, checked as data action {SERVICE_ACCOUNT_WRITE}"
        fix = azure_fix
    elif azure_rbac is False:
        said, fix = f"Kubernetes RBAC did not allow {asked}", kube_fix
    else:
        said = f"the cluster did not allow {asked} ({reason})"
        fix = f"with Azure RBAC for Kubernetes, {azure_fix}; with Kubernetes RBAC, {kube_fix}"
    return _check("fail", "token", f"the cluster refused a token of the service account: {said}", evidence, fix)


def not_provable_in_cluster(missing_tool: str) -> Check:
    """A private cluster's run-command pod lacks a tool the in-cluster proof needs (shared.domain.pod_proof):
    the proof is not made there, and the workload's token is never brought out to make it elsewhere."""
    reason = (
        f"the AKS run-command pod has no {missing_tool}, so access cannot be proven inside the private cluster "
        "(Keyless never brings the workload's token out of it)"
    )
    fix = "give Keyless a network path to the API server (then Keyless proves access itself), or turn the proof off"
    return _check("fail", "token", reason, {"passed": []}, fix)


def in_cluster_incomplete(claims: TokenClaims, reason: str) -> Check:
    """The in-cluster proof stopped before the data plane answered, without saying why."""
    evidence = {"passed": ["token", "exchange"], "token": claims.evidence()}
    return _check("pending", "data-plane", reason, evidence, retry=True)


def token_problems(claims: TokenClaims, cluster_issuer: str | None, subject: str) -> list[str]:
    """What in the cluster's own token differs from what the credential must trust."""
    problems = []
    if cluster_issuer and claims.issuer != cluster_issuer:
        problems.append(f"the cluster signs with issuer '{claims.issuer}', ARM publishes '{cluster_issuer}'")
    if claims.subject != subject:
        problems.append(f"the token's subject is '{claims.subject}', not '{subject}'")
    if AUDIENCE not in claims.audiences:
        problems.append(f"the token's audiences {list(claims.audiences)} lack {AUDIENCE}")
    return problems


def exchange_refused(refusal: EntraRefusal, claims: TokenClaims, credentials: list[CredentialState]) -> Check:
    """Entra refused to exchange the cluster's token for the identity: propagation, or a mismatch."""
    evidence: dict[str, Any] = {
        "passed": ["token"],
        "token": claims.evidence(),
        "entra": {"error": refusal.code or None, "status": refusal.status},
    }
    if refusal.code in NO_MATCHING_CREDENTIAL:
        matching = [c for c in credentials if c.issuer == claims.issuer and c.subject == claims.subject]
        ready = [c for c in matching if AUDIENCE in c.audiences]
        if ready:
            evidence["credential"] = ready[0].name
            reason = f"Entra does not match federated credential {ready[0].name} yet (it propagates in minutes)"
            return _check("pending", "exchange", reason, evidence, retry=True)
        return _check("fail", "exchange", _mismatch(claims, credentials, matching), evidence, _MISMATCH_FIX)
    if refusal.code in UNKNOWN_CLIENT:
        reason = "Entra does not know the identity's client id yet (a new identity replicates in a minute or two)"
        return _check("pending", "exchange", reason, evidence, retry=True)
    if refusal.code in ASSERTION_TIME:
        reason = "Entra found the cluster's token outside its validity (the cluster's clock?)"
        return _check("fail", "exchange", reason, evidence, "check the cluster nodes' time synchronisation")
    if refusal.code in ISSUER_KEYS:
        reason = f"Entra could not validate the token against the keys of issuer {claims.issuer}"
        fix = (
            "the cluster's OIDC issuer must be enabled and public, and the credential must trust the "
            "cluster's current issuer"
        )
        return _check("fail", "exchange", reason, evidence, fix)
    if refusal.status is None or refusal.status == 429 or refusal.status >= 500:
        return _check("pending", "exchange", "Entra did not answer; tried again later", evidence, retry=True)
    said = scrub(refusal.description)
    reason = f"Entra refused the exchange ({refusal.code or refusal.status}): {said}".rstrip(": ")
    return _check("fail", "exchange", reason, evidence, "see Entra's error code")


_MISMATCH_FIX = (
    "the identity's federated credential must trust exactly the token's issuer (trailing slash included) "
    "and subject, with audience api://AzureADTokenExchange: correct or delete the credential and let Keyless "
    "write it again"
)


def _mismatch(claims: TokenClaims, credentials: list[CredentialState], matching: list[CredentialState]) -> str:
    if matching:
        names = ", ".join(c.name for c in matching)
        return f"federated credential {names} trusts the token's issuer and subject but not audience {AUDIENCE}"
    same_subject = [c for c in credentials if c.subject == claims.subject]
    if same_subject:
        c = same_subject[0]
        return f"federated credential {c.name} trusts issuer '{c.issuer}'; the token's issuer is '{claims.issuer}'"
    same_issuer = [c for c in credentials if c.issuer == claims.issuer]
    if same_issuer:
        subjects = ", ".join(f"'{c.subject}' ({c.name})" for c in same_issuer)
        trusted = f"the cluster's issuer is trusted for {subjects}"
        return f"no federated credential trusts subject '{claims.subject}' ({trusted})"
    return f"no federated credential of the identity trusts issuer '{claims.issuer}'"


def role_grants(data_actions: list[str], not_data_actions: list[str], action: str = DATA_ACTION) -> bool:
    """Azure RBAC's matching of one data action: a wildcard pattern in dataActions, none in notDataActions
    (case-insensitive)."""

    def matches(patterns: list[str]) -> bool:
        return any(fnmatch.fnmatchcase(action.lower(), p.lower()) for p in patterns)

    return matches(data_actions) and not matches(not_data_actions)


def no_entra_endpoint(claims: TokenClaims, endpoint: str | None) -> Check:
    """An account without a custom subdomain takes no Entra token (keys only): nothing to read."""
    evidence = {"passed": ["token", "exchange"], "token": claims.evidence(), "dataPlane": {"endpoint": endpoint}}
    reason = "the account has no custom-subdomain endpoint: its regional endpoint refuses Entra tokens"
    return _check("fail", "data-plane", reason, evidence, "give the account a custom subdomain (customSubDomainName)")


def data_plane_answered(
    answer: DataPlaneAnswer, claims: TokenClaims, endpoint: str, role_grants_action: bool | None
) -> Check:
    """The OpenAI data plane's answer to the read made with Entra's token for the identity.
    `role_grants_action`: whether a role the identity holds at the account or above has the data action
    (None: not known)."""
    evidence: dict[str, Any] = {
        "passed": ["token", "exchange"],
        "token": claims.evidence(),
        "dataPlane": {"endpoint": endpoint, "status": answer.status, "code": scrub(answer.code)[:64] or None},
    }
    if 200 <= answer.status < 300:
        return Check(
            CHECK, "pass", evidence={**evidence, "stage": "data-plane", "passed": ["token", "exchange", "data-plane"]}
        )
    message = answer.message.lower()
    if answer.status == 403 and any(m in message for m in NETWORK_MARKERS):
        reason = f"the account's network rules refuse the request ({scrub(answer.message)[:160]})"
        fix = (
            "allow the cluster's network (a private endpoint, or its egress in the account's firewall); "
            "Keyless probes from its own network"
        )
        return _check("fail", "data-plane", reason, evidence, fix)
    if answer.status in (401, 403) and answer.code == PERMISSION_DENIED:
        if role_grants_action is False:
            reason = f"no role the identity holds at the account or above has data action {DATA_ACTION}"
            fix = "assign a role with the OpenAI data actions (Cognitive Services OpenAI User)"
            return _check("fail", "data-plane", reason, evidence, fix)
        reason = "the identity's role assignment is not effective yet (it propagates in up to 10 minutes)"
        return _check("pending", "data-plane", reason, evidence, retry=True)
    if answer.status == 401:
        reason = f"the OpenAI endpoint refused Entra's token ({scrub(answer.code)[:64] or 401})"
        fix = "use the account's custom-subdomain endpoint in the identity's tenant"
        return _check("fail", "data-plane", reason, evidence, fix)
    if answer.status == 429 or answer.status >= 500:
        return _check("pending", "data-plane", f"the OpenAI endpoint answered {answer.status}", evidence, retry=True)
    said = scrub(answer.message or answer.code)[:120]
    reason = f"the OpenAI endpoint answered {answer.status}" + (f": {said}" if said else "")
    return _check("fail", "data-plane", reason, evidence, f"check the account's endpoint {endpoint}")
