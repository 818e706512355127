"""What each stage's answer means when proving access (shared.domain.access_proof), without I/O."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain import access_proof
from shared.domain.access_proof import DataPlaneAnswer, EntraRefusal, TokenClaims
from shared.domain.observed import CredentialState

ISSUER = "https://eastus.oic.prod-aks.azure.com/tenant/0000/"
SUBJECT = "system:serviceaccount:team-a:chat-api"
CLAIMS = TokenClaims(ISSUER, SUBJECT, ("api://AzureADTokenExchange",), "2026-12-03T12:10:00Z")
MATCHING = CredentialState("keyless-aks1", ISSUER, SUBJECT)


def test_no_matching_credential_while_the_identity_has_one_is_propagation():
    check = access_proof.exchange_refused(EntraRefusal("AADSTS700213", 400), CLAIMS, [MATCHING])
    assert check.status == "pending" and check.retry
    assert check.evidence["stage"] == "exchange" and check.evidence["passed"] == ["token"]
    assert check.evidence["entra"]["error"] == "AADSTS700213" and check.evidence["credential"] == "keyless-aks1"


@pytest.mark.parametrize(
    ("credential", "said"),
    [
        (
            CredentialState("adopted", ISSUER, "system:serviceaccount:team-a:chat-apí"),
            "no federated credential trusts subject",
        ),
        (
            CredentialState("adopted", ISSUER.rstrip("/"), SUBJECT),
            "trusts issuer 'https://eastus.oic.prod-aks.azure.com/tenant/0000'",
        ),
        (CredentialState("adopted", ISSUER, SUBJECT, ("api://other",)), "but not audience api://AzureADTokenExchange"),
        (CredentialState("adopted", "https://other/", "system:serviceaccount:x:y"), "trusts issuer 'https://eastus"),
    ],
    ids=["subject typo", "issuer without its trailing slash", "audience", "nothing alike"],
)
def test_a_credential_that_does_not_match_the_token_fails_naming_the_difference(credential, said):
    check = access_proof.exchange_refused(EntraRefusal("AADSTS70021", 400), CLAIMS, [credential])
    assert check.status == "fail" and not check.retry
    assert said in check.reason
    assert "fix" in check.evidence and check.evidence["token"]["subject"] == SUBJECT


@pytest.mark.parametrize(
    ("code", "status", "verdict"),
    [
        ("AADSTS700016", 400, "pending"),  # a new identity not replicated yet
        ("AADSTS700024", 400, "fail"),  # the token's time
        ("AADSTS700027", 401, "fail"),  # signature: not the issuer's keys
        ("AADSTS90061", 400, "fail"),  # the issuer's keys could not be fetched
        ("", None, "pending"),  # Entra did not answer
        ("", 503, "pending"),
        ("AADSTS90002", 400, "fail"),  # anything else: fail with its code
    ],
)
def test_entra_codes(code, status, verdict):
    check = access_proof.exchange_refused(EntraRefusal(code, status, "x"), CLAIMS, [MATCHING])
    assert check.status == verdict and check.retry == (verdict == "pending")


def test_the_data_plane_read_passes_every_stage():
    check = access_proof.data_plane_answered(DataPlaneAnswer(200), CLAIMS, "https://oai.openai.azure.com/", None)
    assert check.status == "pass" and check.evidence["passed"] == ["token", "exchange", "data-plane"]
    assert check.evidence["dataPlane"]["status"] == 200


@pytest.mark.parametrize(
    ("answer", "grants", "verdict", "said"),
    [
        (
            DataPlaneAnswer(401, "PermissionDenied", "Principal does not have access to API/Operation."),
            True,
            "pending",
            "not effective yet",
        ),
        (
            DataPlaneAnswer(401, "PermissionDenied", "Principal does not have access to API/Operation."),
            None,
            "pending",
            "not effective yet",
        ),
        (
            DataPlaneAnswer(401, "PermissionDenied", "Principal does not have access to API/Operation."),
            False,
            "fail",
            "has data action",
        ),
        (
            DataPlaneAnswer(403, "403", "Access denied due to Virtual Network/Firewall rules."),
            True,
            "fail",
            "network rules",
        ),
        (
            DataPlaneAnswer(403, "AccessDenied", "Public access is disabled. Please configure private endpoint."),
            True,
            "fail",
            "network",
        ),
        (
            DataPlaneAnswer(401, "401", "Unauthorized. Access token is missing, invalid"),
            True,
            "fail",
            "refused Entra's token",
        ),
        (DataPlaneAnswer(404, "404", "Resource not found"), True, "fail", "answered 404"),
        (DataPlaneAnswer(429, "429", "busy"), True, "pending", "answered 429"),
    ],
)
def test_data_plane_answers(answer, grants, verdict, said):
    check = access_proof.data_plane_answered(answer, CLAIMS, "https://oai.openai.azure.com/", grants)
    assert check.status == verdict and said in check.reason
    assert check.evidence["stage"] == "data-plane" and check.evidence["passed"] == ["token", "exchange"]


def test_role_data_actions_match_as_azure_rbac_does():
    assert access_proof.role_grants(["Microsoft.CognitiveServices/accounts/OpenAI/*/read"], [])
    assert access_proof.role_grants(["Microsoft.CognitiveServices/*"], [])
    assert not access_proof.role_grants(["Microsoft.CognitiveServices/accounts/OpenAI/*/action"], [])
    assert not access_proof.role_grants(
        ["Microsoft.CognitiveServices/*"], ["Microsoft.CognitiveServices/accounts/OpenAI/*"]
    )
    assert not access_proof.role_grants([], [])


def test_a_token_the_cluster_would_not_give_says_what_to_grant():
    missing = access_proof.token_refused("service account team-a/chat-api not found", temporary=False, not_found=True)
    assert missing.status == "fail" and "create the service account" in missing.evidence["fix"]
    forbidden = access_proof.token_refused("not allowed (403)", temporary=False)
    assert "serviceaccounts/token" in forbidden.evidence["fix"]
    assert access_proof.token_refused("unreachable", temporary=True).status == "pending"


JWT_SHAPED = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YTpiIn0.c2lnbmF0dXJlLWJ5dGVz"


@settings(max_examples=300, deadline=None)
@given(
    code=st.sampled_from(["", "AADSTS70021", "AADSTS700016", "AADSTS700024", "AADSTS700027", "AADSTS90002"]),
    status=st.one_of(st.none(), st.integers(100, 599)),
    words=st.text(max_size=300),
    data_status=st.integers(100, 599),
    data_code=st.text(max_size=80),
    grants=st.sampled_from([True, False, None]),
)
def test_whatever_the_services_say_the_check_is_a_verdict_and_never_carries_a_token(
    code, status, words, data_status, data_code, grants
):
    """Fuzz: any Entra refusal and any data-plane answer, their texts salted with a token, give pass, pending
    or fail with a stage, and the token is nowhere in the check."""
    said = f"{words} {JWT_SHAPED} {words}"
    checks = [
        access_proof.exchange_refused(EntraRefusal(code, status, said), CLAIMS, [MATCHING]),
        access_proof.data_plane_answered(
            DataPlaneAnswer(data_status, data_code + JWT_SHAPED, said), CLAIMS, "https://oai.openai.azure.com/", grants
        ),
    ]
    for check in checks:
        assert check.status in ("pass", "pending", "fail") and check.evidence["stage"] in ("exchange", "data-plane")
        text = json.dumps(check.as_dict())
        assert JWT_SHAPED not in text and "eyJhbGciOiJSUzI1NiJ9.eyJ" not in text


@pytest.mark.parametrize(
    ("endpoint", "scope"),
    [
        ("https://oai-team.openai.azure.com/", "https://cognitiveservices.azure.com/.default"),
        ("https://oai-team.openai.azure.us/", "https://cognitiveservices.azure.us/.default"),
        ("https://oai-team.openai.azure.cn/", "https://cognitiveservices.azure.cn/.default"),
        ("https://127.0.0.1:8443/oai-team/", "https://cognitiveservices.azure.com/.default"),
        (None, "https://cognitiveservices.azure.com/.default"),
    ],
)
def test_the_token_is_asked_for_the_accounts_cloud(endpoint, scope):
    assert access_proof.openai_scope(endpoint) == scope


def test_a_token_refused_by_kubernetes_rbac_names_the_role_binding_and_unknown_names_both():
    cluster = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/c"
    kube = access_proof.token_not_allowed("403", cluster, "team-a", azure_rbac=False)
    assert kube.status == "fail" and kube.evidence["stage"] == "token" and "missing" not in kube.evidence
    assert "Kubernetes RBAC" in kube.reason and "keyless-workload-binder" in kube.evidence["fix"]
    assert "Workload Binder role" not in kube.evidence["fix"]
    unknown = access_proof.token_not_allowed("403", cluster, "team-a", azure_rbac=None)
    assert (
        "keyless-workload-binder" in unknown.evidence["fix"]
        and access_proof.SERVICE_ACCOUNT_WRITE in unknown.evidence["fix"]
    )
