"""The in-cluster proof's command and verdict (shared.domain.pod_proof): no secret goes in, none comes out."""

from __future__ import annotations

import pytest

from shared.domain import pod_proof

CLAIMS = '{"iss":"https://oidc/x/","sub":"system:serviceaccount:team-a:chat-api","aud":["api://AzureADTokenExchange"],"exp":1700000000}'  # noqa: E501


def test_the_command_quotes_each_argument_and_holds_no_secret():
    command = pod_proof.command(
        "team-a", "chat-api", "api://AzureADTokenExchange", 600,
        pod_proof.token_url("https://login.microsoftonline.com/", "t1"), "c1",
        "https://cognitiveservices.azure.com/.default", pod_proof.models_url("https://oai.openai.azure.com"),
    )  # fmt: skip
    assert command == (
        "bash keyless-access-proof.sh team-a chat-api api://AzureADTokenExchange 600s "
        "https://login.microsoftonline.com/t1/oauth2/v2.0/token c1 https://cognitiveservices.azure.com/.default "
        "'https://oai.openai.azure.com/openai/models?api-version=2024-10-21'"
    )
    assert pod_proof.models_url(None) == "" and "eyJ" not in pod_proof.SCRIPT


def test_a_passing_verdict():
    verdict = pod_proof.parse_verdict(
        f'keyless-proof claims {CLAIMS}\nkeyless-proof entra 200 {{"error":null,"error_description":null}}\n'
        'keyless-proof data-plane 200 {"code":null,"message":null}\n'
    )
    assert verdict.claims and verdict.claims.subject == "system:serviceaccount:team-a:chat-api"
    assert verdict.claims.expires_at == "2023-11-14T22:13:20Z" and verdict.refusal is None
    assert verdict.answer and verdict.answer.status == 200


def test_entras_refusal_keeps_its_code_and_first_sentence_only():
    said = (
        '{"error":"invalid_client","error_description":"AADSTS700213: No matching federated identity record found '
        "for presented assertion subject 'x'. Trace ID: 1 Correlation ID: 2\"}"
    )
    verdict = pod_proof.parse_verdict(f"keyless-proof claims {CLAIMS}\nkeyless-proof entra 401 {said}\n")
    assert verdict.refusal and verdict.refusal.code == "AADSTS700213" and verdict.refusal.status == 401
    assert "Trace ID" not in verdict.refusal.description
    no_answer = pod_proof.parse_verdict(f"keyless-proof claims {CLAIMS}\nkeyless-proof entra 000 \n")
    assert no_answer.refusal and no_answer.refusal.status is None


def test_the_data_planes_code_and_a_token_failure():
    verdict = pod_proof.parse_verdict(
        f"keyless-proof claims {CLAIMS}\nkeyless-proof entra 200 {{}}\n"
        'keyless-proof data-plane 401 {"code":"PermissionDenied","message":"lacks the data action"}\n'
    )
    assert verdict.answer and (verdict.answer.status, verdict.answer.code) == (401, "PermissionDenied")
    failed = pod_proof.parse_verdict(
        'keyless-proof token "error: failed to create token: serviceaccounts \\"chat-api\\" not found"\n'
    )
    assert failed.token_error and "not found" in failed.token_error and not failed.token_temporary
    assert pod_proof.parse_verdict("keyless-proof tools curl\n").missing_tool == "curl"


@pytest.mark.parametrize("logs", ["", "eyJhbGciOi.eyJzdWIi.sig\n", "keyless-proof claims {}\n"])
def test_logs_without_a_verdict_are_refused_without_quoting_them(logs):
    with pytest.raises(ValueError) as raised:
        pod_proof.parse_verdict(logs)
    assert "eyJ" not in str(raised.value)


def test_a_token_that_is_not_a_jwt_has_no_claims():
    verdict = pod_proof.parse_verdict("keyless-proof claims \nkeyless-proof entra 400 {}\n")
    assert verdict.claims is None
