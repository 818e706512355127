"""Tests of the Azure OpenAI data-plane emulator (tests/emulators/openai.py) over real HTTPS: routing through the ARM
emulator's `openai_endpoint_base`, the reads, Entra token validation, RBAC data actions, keys and network rules,
with the error bodies the service answers (sources in the emulator's docstring).

Tokens are signed here with a throwaway RSA key (PyJWT + cryptography) whose JWKS is handed to the emulator, as the
Entra emulator's `jwks()` will be. Account changes go through the real azure-mgmt-cognitiveservices client, to show
that the data plane sees ARM's state live.

Conformance: the data-plane specs are not in tests/reference (it holds only resource-manager specs), so the
response schemas below are copied, trimmed of descriptions, from Azure/azure-rest-api-specs
specification/cognitiveservices/data-plane/AzureOpenAI/authoring/stable/2024-10-21/azureopenai.json (commit 3ecc2097,
definitions Model, ModelList, Capabilities, Deprecation, LifeCycleStatus, FineTuningState, TypeDiscriminator, Error,
ErrorResponse, InnerError) and .../stable/2022-12-01/azureopenai.json (commit 04c2cb7b, Deployment, DeploymentList,
ScaleSettings + ManualScaleSettings.capacity, ScaleType, State, TypeDiscriminator, Capabilities), made stricter than
swagger (no undeclared properties); the field sets are compared with the examples get_models.json (2024-10-21,
commit 2131830c) and get_deployments.json (2022-12-01, commit b2f74197).
"""

from __future__ import annotations

import collections.abc
import time
import uuid

import jsonschema
import jwt
import pytest
import requests
from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient
from azure.mgmt.cognitiveservices import models as cogmodels
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import ACCOUNT_ID, SUB
from tests.emulators import openai as oai_module
from tests.emulators.arm import ARM_SCOPE, ROLE_COGNITIVE_SERVICES_USER, ROLE_CONTRIBUTOR, ROLE_OPENAI_USER, ArmEmulator
from tests.emulators.common import TestCA, token_for_scope
from tests.emulators.credential import StaticCredential
from tests.emulators.openai import (
    DEPLOYMENTS_API_VERSIONS,
    MODELS_API_VERSIONS,
    OpenAIEmulator,
    Served,
    error_body,
    token_error_body,
)

RG_ID = f"/subscriptions/{SUB}/resourceGroups/rg-ai"
OTHER_ACCOUNT_ID = f"{RG_ID}/providers/Microsoft.CognitiveServices/accounts/oai-other"
IDENTITY_ID = (
    f"/subscriptions/{SUB}/resourceGroups/rg-aks/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id"
)
OID = "8a7b6c5d-1111-4222-8333-944445555666"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"  # the ARM emulator's default tenant
OTHER_TENANT = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"
DEPLOYMENTS = [("gpt-4o", "gpt-4o", "2024-08-06"), ("text-embedding-3-large", "text-embedding-3-large", "1")]
KEY = "0123456789abcdef0123456789abcdef"
GA = oai_module.LATEST_GA_API_VERSION


class Signer:
    """Issues Entra-shaped access tokens (RS256, `kid`), v1 by default, for the Cognitive Services audience."""

    def __init__(self, kid: str = "test-signing-key") -> None:
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> dict:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def token(self, now: float, *, headers: dict | None = None, **claims: object) -> str:
        body: dict[str, object] = {
            "aud": "https://cognitiveservices.azure.com", "iss": f"https://sts.windows.net/{TENANT}/", "tid": TENANT,
            "oid": OID, "sub": OID, "appid": str(uuid.uuid4()), "idtyp": "app", "ver": "1.0",
            "iat": int(now), "nbf": int(now), "exp": int(now) + 3600,
        }  # fmt: skip
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, self.key, algorithm="RS256", headers={"kid": self.kid, **(headers or {})})


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer()


@pytest.fixture(scope="module")
def servers(ca: TestCA, signer: Signer) -> collections.abc.Iterator[tuple[ArmEmulator, OpenAIEmulator]]:
    arm = ArmEmulator(ca).start()
    oai = OpenAIEmulator(ca, arm, token_keys=signer.jwks).start()
    arm.openai_endpoint_base = oai.endpoint_base
    yield arm, oai
    oai.stop()
    arm.stop()


@pytest.fixture
def arm(servers: tuple[ArmEmulator, OpenAIEmulator]) -> ArmEmulator:
    """The module's ARM emulator, emptied and seeded like tests/conftest.py: the team's account with two deployments,
    a workload identity, no role assignment yet."""
    arm = servers[0]
    arm.reset()
    arm.add_resource_group(SUB, "rg-aks")
    arm.add_resource_group(SUB, "rg-ai")
    arm.add_cognitive_account(ACCOUNT_ID, deployments=DEPLOYMENTS)
    arm.add_cognitive_account(OTHER_ACCOUNT_ID, deployments=[])
    arm.add_identity(IDENTITY_ID, principal_id=OID)
    return arm


@pytest.fixture
def oai(servers: tuple[ArmEmulator, OpenAIEmulator], arm: ArmEmulator) -> OpenAIEmulator:
    servers[1].reset()
    return servers[1]


@pytest.fixture
def cog(arm: ArmEmulator, ca: TestCA) -> CognitiveServicesManagementClient:
    verify = str(ca.ca_pem_path)
    return CognitiveServicesManagementClient(
        StaticCredential(), SUB, base_url=arm.url, credential_scopes=[ARM_SCOPE], connection_verify=verify
    )


def grant(arm: ArmEmulator, scope: str = ACCOUNT_ID, role: str = ROLE_OPENAI_USER, principal: str = OID) -> dict:
    return arm.add_role_assignment(scope, str(uuid.uuid4()), principal, role)


def endpoint(arm: ArmEmulator, account_id: str = ACCOUNT_ID) -> str:
    return arm.cognitive_account(account_id)["properties"]["endpoint"]


def get(
    arm: ArmEmulator, ca: TestCA, path: str = "models", *, api_version: str | None = GA, token: str | None = None,
    key: str | None = None, base: str | None = None, method: str = "GET",
) -> requests.Response:  # fmt: skip
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if key is not None:
        headers["api-key"] = key
    params = {"api-version": api_version} if api_version else {}
    url = f"{base or endpoint(arm)}openai/{path}"
    return requests.request(method, url, params=params, headers=headers, verify=str(ca.ca_pem_path), timeout=10)


def patch_account(cog: CognitiveServicesManagementClient, **properties: object) -> None:
    update = cogmodels.Account(properties=cogmodels.AccountProperties(**properties))
    cog.accounts.begin_update("rg-ai", "oai-team", update).result(timeout=10)


# ---------------------------------------------------------------------------- routing (the ARM knob)


def test_account_endpoints_point_at_the_emulator(arm, oai, ca):
    arm.add_cognitive_account(f"{RG_ID}/providers/Microsoft.CognitiveServices/accounts/Multi", kind="AIServices")
    arm.add_cognitive_account(f"{RG_ID}/providers/Microsoft.CognitiveServices/accounts/lang", kind="TextAnalytics")
    arm.add_cognitive_account(f"{RG_ID}/providers/Microsoft.CognitiveServices/accounts/regional", custom_subdomain=None)
    props = arm.cognitive_account(ACCOUNT_ID)["properties"]
    assert props["endpoint"] == f"{oai.url}/oai-team/"
    assert props["endpoints"]["OpenAI Language Model Instance API"] == f"{oai.url}/oai-team/"
    assert props["endpoints"]["Token Service API"] == "https://oai-team.cognitiveservices.azure.com/"
    multi = arm.cognitive_account(f"{RG_ID}/providers/Microsoft.CognitiveServices/accounts/Multi")["properties"]
    assert multi["endpoint"] == "https://multi.cognitiveservices.azure.com/"
    assert multi["endpoints"]["OpenAI Language Model Instance API"] == f"{oai.url}/multi/"
    assert multi["endpoints"]["Azure AI Model Inference API"] == "https://multi.services.ai.azure.com/"
    lang = arm.cognitive_account(f"{RG_ID}/providers/Microsoft.CognitiveServices/accounts/lang")["properties"]
    assert lang["endpoint"] == "https://lang.cognitiveservices.azure.com/"
    regional = arm.cognitive_account(f"{RG_ID}/providers/Microsoft.CognitiveServices/accounts/regional")
    assert regional["properties"]["endpoint"] == "https://eastus.api.cognitive.microsoft.com/"
    # The knob is read when an account is seeded; without it the real host.
    base, arm.openai_endpoint_base = arm.openai_endpoint_base, None
    try:
        arm.add_cognitive_account(f"{RG_ID}/providers/Microsoft.CognitiveServices/accounts/real")
        real = arm.cognitive_account(f"{RG_ID}/providers/Microsoft.CognitiveServices/accounts/real")
        assert real["properties"]["endpoint"] == "https://real.openai.azure.com/"
    finally:
        arm.openai_endpoint_base = base


def test_unknown_subdomain_other_kinds_and_deleted_accounts_are_404(arm, oai, ca, signer):
    arm.add_cognitive_account(f"{RG_ID}/providers/Microsoft.CognitiveServices/accounts/lang", kind="TextAnalytics")
    grant(arm, RG_ID)
    token = signer.token(arm.clock.now())
    for subdomain in ("nobody", "lang"):
        r = get(arm, ca, token=token, base=f"{oai.url}/{subdomain}/")
        assert (r.status_code, r.json()) == (404, error_body("404", "Subdomain does not map to a resource."))
    assert get(arm, ca, token=token).status_code == 200
    base = endpoint(arm)
    arm.delete_cognitive_account(ACCOUNT_ID)
    assert get(arm, ca, token=token, base=base).status_code == 404


def test_paths_and_api_versions(arm, oai, ca, signer):
    grant(arm)
    token = signer.token(arm.clock.now())
    not_found = (404, error_body("404", "Resource not found"))
    r = get(arm, ca, token=token, api_version=None)
    assert (r.status_code, r.json()) == not_found
    r = get(arm, ca, token=token, api_version="2099-01-01")
    assert (r.status_code, r.json()) == (400, error_body("BadRequest", "API version not supported"))
    r = get(arm, ca, token=token, api_version="2023-03-15-preview")  # retired preview: not modelled
    assert r.status_code == 400
    for path, api_version in (("deployments", "2024-10-21"), ("deployments/gpt-4o", "2023-05-15"), ("nope", GA)):
        r = get(arm, ca, path, token=token, api_version=api_version)
        assert (r.status_code, r.json()) == not_found, path
    r = get(arm, ca, token=token, method="POST")
    assert (r.status_code, r.json()) == not_found
    r = requests.get(f"{oai.url}/not-openai", verify=str(ca.ca_pem_path), timeout=10)
    assert r.status_code == 404 and r.headers["apim-request-id"]


# ---------------------------------------------------------------------------- the reads


def test_authorized_reads_show_the_account_as_arm_holds_it(arm, oai, ca, signer):
    grant(arm)
    token = signer.token(arm.clock.now())
    r = get(arm, ca, token=token)
    assert r.status_code == 200 and r.headers["apim-request-id"]
    models = r.json()
    assert models["object"] == "list"
    kinds = [(m["id"], m["capabilities"]["chat_completion"], m["capabilities"]["embeddings"]) for m in models["data"]]
    assert kinds == [("gpt-4o-2024-08-06", True, False), ("text-embedding-3-large", False, True)]
    r = get(arm, ca, "models/gpt-4o-2024-08-06", token=token)
    assert r.status_code == 200 and r.json()["id"] == "gpt-4o-2024-08-06"
    r = get(arm, ca, "models/gpt-5", token=token)
    assert (r.status_code, r.json()) == (404, error_body("404", "Resource not found"))

    deployments = get(arm, ca, "deployments", token=token, api_version="2022-12-01").json()
    assert [(d["id"], d["model"], d["status"]) for d in deployments["data"]] == [
        ("gpt-4o", "gpt-4o-2024-08-06", "succeeded"), ("text-embedding-3-large", "text-embedding-3-large", "succeeded"),
    ]  # fmt: skip
    one = get(arm, ca, "deployments/gpt-4o", token=token, api_version="2022-12-01")
    assert one.status_code == 200 and one.json() == deployments["data"][0]
    r = get(arm, ca, "deployments/gone", token=token, api_version="2022-12-01")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "DeploymentNotFound")

    # Live: what ARM changes, the data plane shows on the next request.
    arm.add_deployment(ACCOUNT_ID, "mini", "gpt-4o-mini", "2024-07-18")
    arm.remove_deployment(ACCOUNT_ID, "text-embedding-3-large")
    listed = get(arm, ca, "deployments", token=token, api_version="2022-12-01").json()["data"]
    assert [d["id"] for d in listed] == ["gpt-4o", "mini"]
    assert oai.served[:2] == [("Models_List", OID, 200), Served("Models_Get", OID, 200)]
    assert oai.served[-1] == ("Deployments_List", OID, 200)


# ---------------------------------------------------------------------------- authentication: tokens


@pytest.mark.parametrize(
    ("case", "claims", "headers"),
    [
        ("wrong audience", {"aud": "https://management.azure.com"}, None),
        ("expired beyond the skew", {"exp": -301}, None),
        ("not yet valid beyond the skew", {"nbf": 301}, None),
        ("no expiry", {"exp": None}, None),
        ("another tenant", {"tid": OTHER_TENANT, "iss": f"https://sts.windows.net/{OTHER_TENANT}/"}, None),
        ("issuer of another tenant", {"iss": f"https://sts.windows.net/{OTHER_TENANT}/"}, None),
        ("issuer not Entra", {"iss": "https://example.com/"}, None),
        ("no object id", {"oid": None}, None),
        ("unknown signing key", {}, {"kid": "someone-else"}),
    ],
)
def test_token_refusals(arm, oai, ca, signer, case, claims, headers):
    grant(arm)
    now = arm.clock.now()
    relative = {k: int(now) + v for k, v in claims.items() if k in ("exp", "nbf") and v is not None}
    token = signer.token(now, headers=headers, **{**claims, **relative})
    r = get(arm, ca, token=token)
    assert (r.status_code, r.json()) == (401, token_error_body()), case
    assert oai.served == [("Models_List", "", 401)]


def test_bad_signatures_and_non_tokens(arm, oai, ca, signer):
    grant(arm)
    now = arm.clock.now()
    impostor = Signer(kid=signer.kid)  # same kid, another key
    forged = impostor.token(now)
    unsigned = jwt.encode({"aud": "https://cognitiveservices.azure.com", "tid": TENANT, "oid": OID}, None, "none")
    hs256 = jwt.encode({"oid": OID, "exp": int(now) + 60}, "a-shared-secret-of-32-bytes-length!", "HS256")
    for token in (forged, unsigned, hs256, "not-a-jwt", signer.token(now)[:-4] + "AAAA"):
        r = get(arm, ca, token=token)
        assert (r.status_code, r.json()) == (401, token_error_body())
    r = requests.get(f"{endpoint(arm)}openai/models", params={"api-version": GA}, verify=str(ca.ca_pem_path),
                     headers={"Authorization": "Basic dXNlcjpwYXNz"}, timeout=10)  # fmt: skip
    assert (r.status_code, r.json()) == (401, token_error_body())
    r = get(arm, ca)  # no credential at all
    assert (r.status_code, r.json()) == (401, token_error_body())


def test_token_forms_the_service_accepts(arm, oai, ca, signer):
    grant(arm)
    now = arm.clock.now()
    accepted = [
        signer.token(now),
        signer.token(now, aud="https://cognitiveservices.azure.com/"),
        signer.token(now, iss=f"https://login.microsoftonline.com/{TENANT}/v2.0", ver="2.0"),
        signer.token(now, exp=int(now) - 240),  # expired 4 minutes ago: within the 5 minutes' skew
        signer.token(now, nbf=int(now) + 240),
    ]
    assert [get(arm, ca, token=t).status_code for t in accepted] == [200] * len(accepted)
    arm.clock.advance(3600 + 301)  # the emulator's clock, not the wall clock, ages tokens
    r = get(arm, ca, token=accepted[0])
    assert (r.status_code, r.json()) == (401, token_error_body())


# ---------------------------------------------------------------------------- authorization: RBAC data actions


def test_principal_without_the_data_action_is_refused(arm, oai, ca, signer):
    token = signer.token(arm.clock.now())
    refused = (401, error_body("PermissionDenied", "Principal does not have access to API/Operation."))
    r = get(arm, ca, token=token)
    assert (r.status_code, r.json()) == refused  # no role at all
    assert oai.served == [("Models_List", OID, 401)]

    grant(arm, OTHER_ACCOUNT_ID)  # the right role at another account
    grant(arm, ACCOUNT_ID, principal=str(uuid.uuid4()))  # ... and for someone else here
    grant(arm, ACCOUNT_ID, ROLE_CONTRIBUTOR)  # control plane only: no dataActions
    chat = "Microsoft.CognitiveServices/accounts/OpenAI/deployments/chat/completions/action"
    arm.add_role_definition("11111111-0000-4000-8000-000000000001", "Chat only", data_actions=[chat])
    grant(arm, ACCOUNT_ID, "11111111-0000-4000-8000-000000000001")
    assert (get(arm, ca, token=token).status_code, get(arm, ca, token=token).json()) == refused
    r = get(arm, ca, "deployments", token=token, api_version="2022-12-01")
    assert (r.status_code, r.json()) == refused


def test_not_data_actions_subtract(arm, oai, ca, signer):
    arm.add_role_definition(
        "11111111-0000-4000-8000-000000000002", "OpenAI but no models",
        data_actions=["Microsoft.CognitiveServices/accounts/OpenAI/*"],
        not_data_actions=["microsoft.cognitiveservices/accounts/openai/models/*"],
    )  # fmt: skip
    grant(arm, ACCOUNT_ID, "11111111-0000-4000-8000-000000000002")
    token = signer.token(arm.clock.now())
    assert get(arm, ca, token=token).status_code == 401
    assert get(arm, ca, "deployments", token=token, api_version="2022-12-01").status_code == 200


@pytest.mark.parametrize(
    ("scope", "role"),
    [
        (ACCOUNT_ID, ROLE_OPENAI_USER),
        (ACCOUNT_ID.upper(), ROLE_OPENAI_USER),  # scopes compare case-insensitively
        (RG_ID, ROLE_OPENAI_USER),
        (f"/subscriptions/{SUB}", ROLE_OPENAI_USER),
        (ACCOUNT_ID, "a001fd3d-188f-4b5d-821b-7da978bf7442"),  # Cognitive Services OpenAI Contributor: OpenAI/*
        (ACCOUNT_ID, ROLE_COGNITIVE_SERVICES_USER),  # Microsoft.CognitiveServices/*
    ],
)
def test_roles_at_the_account_or_above_pass(arm, oai, ca, signer, scope, role):
    grant(arm, scope, role)
    token = signer.token(arm.clock.now())
    assert get(arm, ca, token=token).status_code == 200
    assert get(arm, ca, "deployments", token=token, api_version="2022-12-01").status_code == 200


def test_role_propagation_delay(arm, oai, ca, signer):
    oai.role_propagation_seconds = 300
    grant(arm)
    r = get(arm, ca, token=signer.token(arm.clock.now()))
    assert (r.status_code, r.json()["error"]["code"]) == (401, "PermissionDenied")
    arm.clock.advance(301)
    assert get(arm, ca, token=signer.token(arm.clock.now())).status_code == 200


def test_role_assignment_deleted_through_arm_counts_at_once(arm, oai, ca, signer):
    ra = grant(arm)
    token = signer.token(arm.clock.now())
    assert get(arm, ca, token=token).status_code == 200
    requests.delete(
        f"{arm.url}{ra['id']}", params={"api-version": "2022-04-01"}, verify=str(ca.ca_pem_path), timeout=10,
        headers={"Authorization": f"Bearer {token_for_scope(ARM_SCOPE)}"},
    ).raise_for_status()  # fmt: skip
    assert get(arm, ca, token=token).status_code == 401


# ---------------------------------------------------------------------------- keys, disableLocalAuth


def test_key_accepted_then_refused_after_disable_local_auth(arm, oai, ca, signer, cog):
    oai.set_api_keys(ACCOUNT_ID, KEY, "fedcba9876543210fedcba9876543210")
    assert get(arm, ca, key=KEY).status_code == 200
    assert get(arm, ca, "deployments", key=KEY, api_version="2022-12-01").status_code == 200  # keys skip RBAC
    r = get(arm, ca, key="wrong")
    assert (r.status_code, r.json()) == (401, error_body("401", oai_module.KEY_MESSAGE))
    r = get(arm, ca, key=KEY, base=endpoint(arm, OTHER_ACCOUNT_ID))  # the key of another account
    assert r.status_code == 401

    patch_account(cog, disable_local_auth=True)
    disabled = (403, error_body("AuthenticationTypeDisabled", oai_module.KEY_DISABLED_MESSAGE))
    assert oai_module.KEY_DISABLED_MESSAGE == "Key based authentication is disabled for this resource."
    for key in (KEY, "wrong"):
        r = get(arm, ca, key=key)
        assert (r.status_code, r.json()) == disabled
    grant(arm)
    assert get(arm, ca, token=signer.token(arm.clock.now()), key=KEY).status_code == 200  # Entra still works
    assert [s for s in oai.served if s.principal == "key"] == [
        ("Models_List", "key", 200), ("Deployments_List", "key", 200),
    ]  # fmt: skip


# ---------------------------------------------------------------------------- network rules


def test_network_rules(arm, oai, ca, signer, cog):
    grant(arm)
    oai.set_api_keys(ACCOUNT_ID, KEY)
    token = signer.token(arm.clock.now())
    firewall = (403, error_body("403", "Access denied due to Virtual Network/Firewall rules."))

    patch_account(cog, network_acls=cogmodels.NetworkRuleSet(default_action="Deny", ip_rules=[]))
    for kwargs in ({"token": token}, {"key": KEY}, {"key": "wrong"}, {}):
        r = get(arm, ca, **kwargs)
        assert (r.status_code, r.json()) == firewall, kwargs
    assert r.headers["policy-id"] == "ThrowExceptionDueToTrafficDenied"
    for rules, status in ((["10.0.0.0/8", "203.0.113.7"], 403), (["127.0.0.1"], 200), (["127.0.0.0/8"], 200)):
        acls = cogmodels.NetworkRuleSet(default_action="Deny", ip_rules=[cogmodels.IpRule(value=v) for v in rules])
        patch_account(cog, network_acls=acls)
        assert get(arm, ca, token=token).status_code == status, rules

    patch_account(cog, public_network_access="Disabled")
    for kwargs in ({"token": token}, {"key": KEY}):
        r = get(arm, ca, **kwargs)
        assert (r.status_code, r.json()) == (403, error_body("403", oai_module.PUBLIC_ACCESS_MESSAGE))
    patch_account(cog, public_network_access="Enabled", network_acls=cogmodels.NetworkRuleSet(default_action="Allow"))
    assert get(arm, ca, token=token).status_code == 200


# ---------------------------------------------------------------------------- nothing secret is kept


def test_log_and_served_keep_no_token_or_key(arm, oai, ca, signer):
    grant(arm)
    oai.set_api_keys(ACCOUNT_ID, KEY)
    token = signer.token(arm.clock.now())
    get(arm, ca, token=token)
    get(arm, ca, key=KEY)
    requests.get(f"{endpoint(arm)}openai/models", params={"api-version": GA, "api-key": KEY, "subscription-key": KEY},
                 verify=str(ca.ca_pem_path), timeout=10)  # fmt: skip
    kept = repr(oai.log.items) + repr(oai.served)
    assert token not in kept and KEY not in kept and token.split(".")[2] not in kept
    assert "api-key=REDACTED" in oai.log.items[-1].query and len(oai.log.items) == 3


# ---------------------------------------------------------------------------- conformance with the published specs

_TYPE_2024 = {"type": "string", "enum": [
    "list", "fine_tuning.job", "file", "fine_tuning.job.event", "fine_tuning.job.checkpoint", "model", "batch",
    "upload", "upload.part",
]}  # fmt: skip
_TYPE_2022 = {"type": "string", "enum": ["list", "fine-tune", "file", "fine-tune-event", "model", "deployment"]}
_ERROR_RESPONSE = {  # 2024-10-21 ErrorResponse / Error / InnerError; ErrorCode is modelAsString (open), so any string
    "type": "object", "required": ["error"], "additionalProperties": False,
    "properties": {"error": {"$ref": "#/definitions/Error"}},
    "definitions": {
        "Error": {"type": "object", "required": ["code", "message"], "additionalProperties": False, "properties": {
            "code": {"type": "string"}, "message": {"type": "string", "minLength": 1}, "target": {"type": "string"},
            "details": {"type": "array", "items": {"$ref": "#/definitions/Error"}},
            "innererror": {"$ref": "#/definitions/InnerError"}}},
        "InnerError": {"type": "object", "properties": {"code": {"type": "string"},
                                                        "innererror": {"$ref": "#/definitions/InnerError"}}},
    },
}  # fmt: skip


def _model_schema(api_version: str) -> dict:
    if api_version == "2022-12-01":
        capabilities = {"type": "object", "additionalProperties": False,
                        "required": ["completion", "embeddings", "fine_tune", "inference", "scale_types"],
                        "properties": {k: {"type": "boolean"} for k in ("fine_tune", "inference", "completion",
                                                                        "embeddings")}}  # fmt: skip
        capabilities["properties"]["scale_types"] = {"type": "array", "items": {"enum": ["manual", "standard"]}}
        status = {"enum": ["notRunning", "running", "succeeded", "canceled", "failed", "deleted"]}
        type_, extra = _TYPE_2022, {"updated_at": {"type": "integer"}}
    else:
        capabilities = {"type": "object", "additionalProperties": False,
                        "required": ["chat_completion", "completion", "embeddings", "fine_tune", "inference"],
                        "properties": {k: {"type": "boolean"} for k in ("fine_tune", "inference", "completion",
                                                                        "chat_completion", "embeddings")}}  # fmt: skip
        status = {"enum": ["created", "pending", "running", "succeeded", "cancelled", "failed"]}
        type_, extra = _TYPE_2024, {}
    model = {
        "type": "object", "additionalProperties": False,
        "required": ["capabilities", "deprecation", "lifecycle_status"],
        "properties": {
            "object": type_, "created_at": {"type": "integer"}, "id": {"type": "string"}, "status": status,
            "model": {"type": "string"}, "fine_tune": {"type": "string"}, "capabilities": capabilities,
            "lifecycle_status": {"enum": ["preview", "generally-available"]},
            "deprecation": {"type": "object", "required": ["inference"], "additionalProperties": False,
                            "properties": {"fine_tune": {"type": "integer"}, "inference": {"type": "integer"}}},
            **extra,
        },
    }  # fmt: skip
    listed = {"object": type_, "data": {"type": "array", "items": model}}
    return {"type": "object", "additionalProperties": False, "properties": listed, "definitions": {"Model": model}}


_DEPLOYMENT_2022 = {
    "type": "object", "required": ["model", "scale_settings"], "additionalProperties": False,
    "properties": {
        "object": _TYPE_2022,
        "status": {"enum": ["notRunning", "running", "succeeded", "canceled", "failed", "deleted"]},
        "created_at": {"type": "integer"}, "updated_at": {"type": "integer"}, "id": {"type": "string"},
        "model": {"type": "string", "minLength": 1}, "owner": {"type": "string"},
        "scale_settings": {"type": "object", "required": ["scale_type"], "additionalProperties": False,
                           "properties": {"scale_type": {"enum": ["manual", "standard"]},
                                          "capacity": {"type": "integer"}}},  # ManualScaleSettings adds capacity
        "error": {"type": "object"},
    },
}  # fmt: skip
_DEPLOYMENT_LIST_2022 = {
    "type": "object", "additionalProperties": False,
    "properties": {"object": _TYPE_2022, "data": {"type": "array", "items": _DEPLOYMENT_2022}},
}  # fmt: skip

# The fields of the spec examples' items (2024-10-21 get_models.json base model; 2022-12-01 get_deployments.json).
EXAMPLE_MODEL_FIELDS = {"status", "capabilities", "lifecycle_status", "deprecation", "id", "created_at", "object"}
EXAMPLE_DEPLOYMENT_FIELDS = {"scale_settings", "model", "owner", "id", "status", "created_at", "updated_at", "object"}


def test_responses_conform_to_the_published_schemas(arm, oai, ca, signer):
    grant(arm)
    token = signer.token(arm.clock.now())
    for api_version in MODELS_API_VERSIONS:
        schema = _model_schema(api_version)
        listed = get(arm, ca, token=token, api_version=api_version).json()
        jsonschema.Draft4Validator(schema).validate(listed)
        one = get(arm, ca, f"models/{listed['data'][0]['id']}", token=token, api_version=api_version).json()
        jsonschema.Draft4Validator({**schema["definitions"]["Model"], "definitions": {}}).validate(one)
        assert listed["object"] == "list" and {m["object"] for m in listed["data"]} == {"model"}
    latest = get(arm, ca, token=token).json()["data"]
    assert all(set(m) == EXAMPLE_MODEL_FIELDS for m in latest)
    for api_version in DEPLOYMENTS_API_VERSIONS:
        listed = get(arm, ca, "deployments", token=token, api_version=api_version).json()
        jsonschema.Draft4Validator(_DEPLOYMENT_LIST_2022).validate(listed)
        jsonschema.Draft4Validator(_DEPLOYMENT_2022).validate(
            get(arm, ca, "deployments/gpt-4o", token=token, api_version=api_version).json()
        )
        assert all(set(d) == EXAMPLE_DEPLOYMENT_FIELDS and d["object"] == "deployment" for d in listed["data"])

    # Error bodies in the {"error": ...} shape follow ErrorResponse; the token 401 is the service's own other shape.
    bodies = [
        get(arm, ca, token=token, api_version=None).json(),
        get(arm, ca, token=token, api_version="2099-01-01").json(),
        get(arm, ca, "deployments/nope", token=token, api_version="2022-12-01").json(),
        get(arm, ca, key="wrong").json(),
        get(arm, ca, token=signer.token(arm.clock.now(), oid=str(uuid.uuid4()))).json(),
    ]
    for body in bodies:
        jsonschema.Draft4Validator(_ERROR_RESPONSE).validate(body)
    assert get(arm, ca, token="x").json() == {"statusCode": 401, "message": oai_module.TOKEN_MESSAGE}


def test_wall_clock_is_not_used(arm, oai, ca, signer):
    """A token minted on the emulator's clock a day ahead is valid there, though not yet valid by the wall clock."""
    grant(arm)
    arm.clock.advance(86400)
    token = signer.token(arm.clock.now())
    assert jwt.decode(token, options={"verify_signature": False})["exp"] > time.time() + 3600
    assert get(arm, ca, token=token).status_code == 200
