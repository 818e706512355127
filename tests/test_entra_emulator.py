"""The Entra ID emulator, through plain HTTPS, MSAL and the real azure-identity credentials a pod uses.

Assertions are built here with PyJWT and a key published in a test's own IssuerDirectory (what the kube
emulator does for a cluster); identities and federated credentials are seeded in the ARM emulator.
"""

from __future__ import annotations

import re
import time
import uuid

import jwt
import msal
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ClientAssertionCredential, DefaultAzureCredential, WorkloadIdentityCredential
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.emulators.arm import ARM_SCOPE, FIC_AUDIENCE, ArmEmulator
from tests.emulators.common import token_for_scope
from tests.emulators.entra import EntraEmulator
from tests.emulators.oidc import IssuerDirectory

SUB = "11111111-2222-3333-4444-555555555555"
IDENTITY_ID = (
    f"/subscriptions/{SUB}/resourceGroups/rg-id/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-chat"
)
CLIENT_ID = "0b5f0c8e-7c3a-4f0e-9a59-3e3c8f2d1a01"
PRINCIPAL_ID = "6e1f3a2b-95c4-4a0e-8d2f-7b9c0e1d2f03"
ISSUER = (
    "https://eastus.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/5b0c1e4a-8c7f-4f3e-b0d1-2a3b4c5d6e7f/"
)
OTHER_ISSUER = (
    "https://westus.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/0d9e8f7a-6b5c-4d3e-2f1a-0b9c8d7e6f5a/"
)
SUBJECT = "system:serviceaccount:team-a:chat-api"
COGNITIVE = "https://cognitiveservices.azure.com"
SCOPE = f"{COGNITIVE}/.default"
KID = "Zk0aA7yC1j9f3mT0sQeB2Xw4n8uVdRk6"


def _jwk(private: rsa.RSAPrivateKey, kid: str) -> dict:
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return dict(jwk, kid=kid, use="sig", alg="RS256")


@pytest.fixture(scope="module")
def issuer_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rogue_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def directory(issuer_key) -> IssuerDirectory:
    d = IssuerDirectory()
    discovery = {
        "issuer": ISSUER,
        "jwks_uri": f"{ISSUER}openid/v1/jwks",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }
    d.publish(ISSUER, discovery, {"keys": [_jwk(issuer_key, KID)]})
    return d


@pytest.fixture
def arm(ca):
    """An ARM emulator of its own (conftest's `arm` brings up a cluster and the kube emulator)."""
    emulator = ArmEmulator(ca).start()
    emulator.add_resource_group(SUB, "rg-id")
    emulator.add_identity(IDENTITY_ID, client_id=CLIENT_ID, principal_id=PRINCIPAL_ID)
    emulator.add_federated_credential(IDENTITY_ID, "aks1-team-a-chat-api", ISSUER, SUBJECT)
    yield emulator
    emulator.stop()


@pytest.fixture
def entra(ca, arm, directory):
    emulator = EntraEmulator(ca, arm, directory=directory).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def tenant(arm) -> str:
    return arm.tenant_id


def assertion(key, *, iss=ISSUER, sub=SUBJECT, aud=(FIC_AUDIENCE,), kid=KID, now=None, lifetime=3600, nbf=None):
    """A Kubernetes-style projected service account token."""
    now = time.time() if now is None else now
    claims = {
        "aud": list(aud),
        "iss": iss,
        "sub": sub,
        "iat": int(now),
        "nbf": int(now if nbf is None else nbf),
        "exp": int(now + lifetime),
        "kubernetes.io": {"namespace": "team-a", "serviceaccount": {"name": "chat-api"}},
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid} if kid else None)


def post(entra, ca, tenant, *, token=None, key=None, correlation=None, **form):
    data = {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "scope": SCOPE,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": token if token is not None else assertion(key),
    }
    data.update(form)
    data = {k: v for k, v in data.items() if v is not None}
    headers = {"client-request-id": correlation} if correlation else {}
    return requests.post(
        entra.token_endpoint(tenant), data=data, headers=headers, verify=str(entra.ca.ca_pem_path), timeout=10
    )


def decode_access_token(entra, token, audience=COGNITIVE):
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWKSet.from_dict(entra.jwks())[kid].key
    return jwt.decode(
        token,
        key,
        algorithms=["RS256"],
        audience=audience,
        issuer=entra.access_token_issuer(jwt.decode(token, options={"verify_signature": False})["tid"]),
    )


def refused(response, code, error, status):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error and body["error_codes"] == [code], body
    assert body["error_description"].startswith(f"AADSTS{code}: "), body
    return body


# ---------------------------------------------------------------------------------------------- success


def test_a_federated_assertion_buys_a_managed_identity_token(entra, ca, tenant, issuer_key):
    response = post(entra, ca, tenant, key=issuer_key)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"token_type", "expires_in", "ext_expires_in", "access_token"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == body["ext_expires_in"] == 86399
    claims = decode_access_token(entra, body["access_token"])
    assert claims["aud"] == COGNITIVE and claims["iss"] == f"https://sts.windows.net/{tenant}/" == claims["idp"]
    assert claims["tid"] == tenant and claims["oid"] == claims["sub"] == PRINCIPAL_ID
    assert claims["appid"] == CLIENT_ID and claims["idtyp"] == "app" and claims["ver"] == "1.0"
    assert claims["appidacr"] == "2" and claims["xms_mirid"].lower() == IDENTITY_ID.lower()
    now = entra.clock.now()
    assert claims["iat"] == claims["nbf"] and now - 310 < claims["nbf"] <= now - 299
    assert claims["exp"] - claims["iat"] == 86399 + 300
    assert entra.issued == [claims] and entra.refusals == []
    assert body["access_token"] not in repr(entra.issued)
    (request,) = entra.log.items
    assert (request.method, request.path, request.status) == ("POST", f"/{tenant}/oauth2/v2.0/token", 200)


def test_the_signing_keys_are_published_where_entra_publishes_them(entra, ca, tenant):
    for path in (f"/{tenant}/discovery/v2.0/keys", "/common/discovery/keys"):
        response = requests.get(entra.url + path, verify=str(ca.ca_pem_path), timeout=10)
        assert response.status_code == 200 and response.json() == entra.jwks()
    (key,) = entra.jwks()["keys"]
    assert key["kty"] == "RSA" and key["use"] == "sig" and key["kid"] == key["x5t"] and key["x5c"]
    unknown = requests.get(f"{entra.url}/{uuid.uuid4()}/discovery/v2.0/keys", verify=str(ca.ca_pem_path), timeout=10)
    refused(unknown, 90002, "invalid_tenant", 400)


def test_client_ids_match_case_insensitively_and_a_verified_domain_names_the_tenant(ca, arm, directory, issuer_key):
    domains = {"contoso.onmicrosoft.com": arm.tenant_id}
    entra = EntraEmulator(ca, arm, directory=directory, verified_domains=domains).start()
    try:
        response = post(entra, ca, "Contoso.onmicrosoft.com", key=issuer_key, client_id=CLIENT_ID.upper())
        assert response.status_code == 200, response.text
        claims = decode_access_token(entra, response.json()["access_token"])
        assert claims["tid"] == arm.tenant_id and claims["appid"] == CLIENT_ID
        refused(post(entra, ca, "fabrikam.onmicrosoft.com", key=issuer_key), 90002, "invalid_request", 400)
    finally:
        entra.stop()


def test_a_double_slash_scope_keeps_its_trailing_slash_in_the_audience(entra, ca, tenant, issuer_key):
    response = post(entra, ca, tenant, key=issuer_key, scope="https://management.azure.com//.default")
    claims = decode_access_token(entra, response.json()["access_token"], audience="https://management.azure.com/")
    assert claims["aud"] == "https://management.azure.com/"


# ---------------------------------------------------------------------------------------------- refusals


def test_a_refusal_has_entras_shape(entra, ca, tenant, issuer_key):
    correlation = str(uuid.uuid4())
    response = post(
        entra, ca, tenant, key=issuer_key, client_id="c0ffee00-0000-0000-0000-000000000000", correlation=correlation
    )
    body = refused(response, 700016, "unauthorized_client", 400)
    assert set(body) == {
        "error",
        "error_description",
        "error_codes",
        "timestamp",
        "trace_id",
        "correlation_id",
        "error_uri",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", body["timestamp"])
    assert body["correlation_id"] == correlation and uuid.UUID(body["trace_id"])
    assert body["error_description"] == (
        "AADSTS700016: Application with identifier 'c0ffee00-0000-0000-0000-000000000000' was not found in the "
        "directory 'Default Directory'. This can happen if the application has not been installed by the "
        "administrator of the tenant or consented to by any user in the tenant. You may have sent your "
        "authentication request to the wrong tenant. "
        f"Trace ID: {body['trace_id']} Correlation ID: {correlation} Timestamp: {body['timestamp']}"
    )
    assert body["error_uri"] == f"{entra.url}/error?code=700016"
    assert response.headers["x-ms-request-id"] == body["trace_id"]
    assert entra.refusals == [(700016, "c0ffee00-0000-0000-0000-000000000000")] and entra.issued == []


def _tok(key, **claims):
    return lambda keys: assertion(keys[key], **claims)


REFUSALS = {
    # name: (tenant or None for the identity's, token maker or None for a good one, form overrides, code, error, status)
    "unknown tenant": ("9a9a9a9a-0000-4000-8000-000000000000", None, {}, 90002, "invalid_request", 400),
    "common": ("common", None, {}, 50059, "invalid_request", 400),
    "organizations": ("organizations", None, {}, 50059, "invalid_request", 400),
    "unknown client": (None, None, {"client_id": str(uuid.UUID(int=7))}, 700016, "unauthorized_client", 400),
    "no grant_type": (None, None, {"grant_type": None}, 900144, "invalid_request", 400),
    "no scope": (None, None, {"scope": None}, 900144, "invalid_request", 400),
    "another grant": (None, None, {"grant_type": "password"}, 70003, "unsupported_grant_type", 400),
    "no assertion": (None, None, {"client_assertion": ""}, 7000218, "invalid_client", 401),
    "another assertion type": (None, None, {"client_assertion_type": "urn:x"}, 90011, "invalid_request", 400),
    "malformed assertion": (None, lambda keys: "not.a.jwt", {}, 50027, "invalid_request", 400),
    "unsigned garbage": (None, lambda keys: "e30.e30.", {}, 50027, "invalid_request", 400),
    "issuer without its slash": (None, _tok("issuer", iss=ISSUER.rstrip("/")), {}, 700211, "invalid_client", 401),
    "issuer no credential trusts": (None, _tok("issuer", iss=OTHER_ISSUER), {}, 700211, "invalid_client", 401),
    "other subject": (
        None,
        _tok("issuer", sub="system:serviceaccount:team-a:other"),
        {},
        700213,
        "invalid_client",
        401,
    ),
    "subject in other case": (None, _tok("issuer", sub=SUBJECT.upper()), {}, 700213, "invalid_client", 401),
    "other audience": (
        None,
        _tok("issuer", aud=["api://AzureADTokenExchangeChina"]),
        {},
        700212,
        "invalid_client",
        401,
    ),
    "unknown kid": (None, _tok("issuer", kid="another-kid"), {}, 7000272, "invalid_client", 401),
    "bad signature": (None, _tok("rogue"), {}, 700027, "invalid_client", 401),
    "expired": (None, _tok("issuer", now=time.time() - 7200), {}, 700024, "invalid_client", 401),
    "not yet valid": (None, _tok("issuer", nbf=time.time() + 3600), {}, 700024, "invalid_client", 401),
    "scope without .default": (None, None, {"scope": f"{COGNITIVE}/user_impersonation"}, 1002012, "invalid_scope", 400),
    "two resources": (
        None,
        None,
        {"scope": f"{SCOPE} https://management.azure.com/.default"},
        28000,
        "invalid_scope",
        400,
    ),
}


@pytest.mark.parametrize("case", REFUSALS.values(), ids=REFUSALS.keys())
def test_refusals(entra, ca, tenant, issuer_key, rogue_key, case):
    path_tenant, make, form, code, error, status = case
    token = make({"issuer": issuer_key, "rogue": rogue_key}) if make else None
    response = post(entra, ca, path_tenant or tenant, key=issuer_key, token=token, **form)
    refused(response, code, error, status)
    assert entra.issued == [] and entra.refusals == [(code, form.get("client_id", CLIENT_ID))]


def test_refusal_messages_name_what_did_not_match(entra, ca, tenant, issuer_key):
    body = refused(
        post(entra, ca, tenant, token=assertion(issuer_key, iss=OTHER_ISSUER)), 700211, "invalid_client", 401
    )
    assert body["error_description"].startswith(
        f"AADSTS700211: No matching federated identity record found for presented assertion issuer '{OTHER_ISSUER}'. "
        "Check your federated identity credential Subject, Audience and Issuer against the presented assertion."
    )
    body = refused(
        post(entra, ca, tenant, token=assertion(issuer_key, now=time.time() - 7200)), 700024, "invalid_client", 401
    )
    assert re.match(
        r"AADSTS700024: Client assertion is not within its valid time range\. Current time: \S+\.\d{7}Z, assertion "
        r"valid from \S+\.\d{7}Z, expiry time of assertion \S+\.\d{7}Z\.",
        body["error_description"],
    )
    body = refused(post(entra, ca, tenant, token=assertion(issuer_key, kid="k2")), 7000272, "invalid_client", 401)
    assert (
        f"identifier k2 used to sign the federated credential could not be found in the metadata of identity "
        f"provider {ISSUER}." in body["error_description"]
    )


def test_the_issuer_is_fetched_only_for_a_credential_that_names_it(entra, arm, ca, tenant, issuer_key, directory):
    arm.add_federated_credential(IDENTITY_ID, "unpublished", OTHER_ISSUER, SUBJECT)
    response = post(entra, ca, tenant, token=assertion(issuer_key, iss=OTHER_ISSUER))
    body = refused(response, 50166, "invalid_request", 400)
    assert body["error_description"].startswith("AADSTS50166: Request to External OIDC endpoint failed. Trace ID: ")
    entra.oidc_error_code = 90061  # as 2022 reports had it
    refused(post(entra, ca, tenant, token=assertion(issuer_key, iss=OTHER_ISSUER)), 90061, "invalid_request", 400)
    directory.withdraw(ISSUER)  # the cluster is gone: its issuer no longer serves
    refused(post(entra, ca, tenant, key=issuer_key), 90061, "invalid_request", 400)


def test_a_credential_without_the_trailing_slash_trusts_an_issuer_nobody_serves(entra, arm, ca, tenant, issuer_key):
    arm.add_federated_credential(IDENTITY_ID, "no-slash", ISSUER.rstrip("/"), SUBJECT)
    refused(post(entra, ca, tenant, token=assertion(issuer_key, iss=ISSUER.rstrip("/"))), 50166, "invalid_request", 400)


def test_the_client_must_live_in_the_tenant_the_path_names(ca, arm, directory, issuer_key):
    other = "3c3c3c3c-1111-4222-8333-444444444444"
    entra = EntraEmulator(ca, arm, directory=directory, tenants=[other]).start()
    try:
        refused(post(entra, ca, other, key=issuer_key), 700016, "unauthorized_client", 400)
    finally:
        entra.stop()


def test_the_token_endpoint_takes_only_a_form_post(entra, ca, tenant):
    verify = str(ca.ca_pem_path)
    response = requests.get(entra.token_endpoint(tenant), verify=verify, timeout=10)
    refused(response, 900561, "invalid_request", 400)
    response = requests.post(
        entra.token_endpoint(tenant), json={"grant_type": "client_credentials"}, verify=verify, timeout=10
    )
    assert "'grant_type'" in refused(response, 900144, "invalid_request", 400)["error_description"]
    assert requests.get(f"{entra.url}/{tenant}/oauth2/token", verify=verify, timeout=10).status_code == 404


def test_legacy_answers_and_known_resources(entra, ca, tenant, issuer_key):
    entra.legacy_no_match_error = True
    body = refused(
        post(entra, ca, tenant, token=assertion(issuer_key, sub="system:serviceaccount:x:y")),
        70021,
        "invalid_request",
        400,
    )
    assert (
        f"No matching federated identity record found for presented assertion. Assertion Issuer: '{ISSUER}'. "
        "Assertion Subject: 'system:serviceaccount:x:y'. Assertion Audience: 'api://AzureADTokenExchange'."
    ) in body["error_description"]
    entra.known_resources = {COGNITIVE}
    assert post(entra, ca, tenant, key=issuer_key).status_code == 200
    refused(
        post(entra, ca, tenant, key=issuer_key, scope="https://vault.azure.net/.default"),
        500011,
        "invalid_resource",
        400,
    )


# ---------------------------------------------------------------------------------------------- time


@pytest.mark.parametrize(
    ("offsets", "ok"),
    [
        ({"now_shift": -3600 - 295}, True),  # expired 295 s ago: within the 5 min skew
        ({"now_shift": -3600 - 305}, False),
        ({"nbf_shift": 295}, True),  # valid in 295 s: within the skew
        ({"nbf_shift": 305}, False),
    ],
)
def test_clock_skew_is_five_minutes_each_way(entra, ca, tenant, issuer_key, offsets, ok):
    now = entra.clock.now()
    token = assertion(issuer_key, now=now + offsets.get("now_shift", 0), nbf=now + offsets.get("nbf_shift", 0))
    response = post(entra, ca, tenant, token=token)
    if ok:
        assert response.status_code == 200, response.text
    else:
        refused(response, 700024, "invalid_client", 401)


def test_the_emulator_clock_ages_assertions(entra, ca, tenant, issuer_key):
    token = assertion(issuer_key, now=entra.clock.now(), lifetime=600)
    entra.clock.advance(600 + 290)
    assert post(entra, ca, tenant, token=token).status_code == 200
    entra.clock.advance(20)
    refused(post(entra, ca, tenant, token=token), 700024, "invalid_client", 401)


# ---------------------------------------------------------------------------------------------- propagation


def test_a_new_credential_is_not_matched_until_it_has_propagated(entra, arm, ca, tenant, issuer_key):
    entra.credential_propagation_seconds = 120
    assert post(entra, ca, tenant, key=issuer_key).status_code == 200  # what existed before counts as old
    arm.add_federated_credential(IDENTITY_ID, "team-a-batch", ISSUER, "system:serviceaccount:team-a:batch")
    token = assertion(issuer_key, sub="system:serviceaccount:team-a:batch")
    refused(post(entra, ca, tenant, token=token), 700213, "invalid_client", 401)  # seen now: too young
    entra.clock.advance(119)
    refused(post(entra, ca, tenant, token=token), 700213, "invalid_client", 401)
    entra.clock.advance(2)
    assert post(entra, ca, tenant, token=token).status_code == 200


def test_propagation_counts_from_the_arm_write(entra, arm, ca, tenant, issuer_key):
    entra.credential_propagation_seconds = 120
    url = f"{arm.url}{IDENTITY_ID}/federatedIdentityCredentials/other-cluster?api-version=2024-11-30"
    body = {"properties": {"issuer": OTHER_ISSUER, "subject": SUBJECT, "audiences": [FIC_AUDIENCE]}}
    headers = {"Authorization": f"Bearer {token_for_scope(ARM_SCOPE)}"}
    written = requests.put(url, json=body, headers=headers, verify=str(ca.ca_pem_path), timeout=10)
    assert written.status_code == 201, written.text
    entra.clock.advance(100)
    refused(post(entra, ca, tenant, token=assertion(issuer_key, iss=OTHER_ISSUER)), 700211, "invalid_client", 401)
    entra.clock.advance(21)  # 121 s after the write (not after the first token request)
    refused(post(entra, ca, tenant, token=assertion(issuer_key, iss=OTHER_ISSUER)), 50166, "invalid_request", 400)


def test_a_new_identity_is_unknown_until_its_principal_has_replicated(entra, arm, ca, tenant, issuer_key):
    entra.identity_propagation_seconds = 60
    new_id = IDENTITY_ID + "-2"
    identity = arm.add_identity(new_id)
    arm.add_federated_credential(new_id, "team-a-chat-api", ISSUER, SUBJECT)
    client_id = identity["properties"]["clientId"]
    refused(post(entra, ca, tenant, key=issuer_key, client_id=client_id), 700016, "unauthorized_client", 400)
    entra.clock.advance(61)
    response = post(entra, ca, tenant, key=issuer_key, client_id=client_id)
    assert response.status_code == 200, response.text
    assert entra.issued[-1]["oid"] == identity["properties"]["principalId"]
    assert entra.refusals == [(700016, client_id)]


def test_a_deleted_credential_stops_matching(entra, arm, ca, tenant, issuer_key):
    url = f"{arm.url}{IDENTITY_ID}/federatedIdentityCredentials/aks1-team-a-chat-api?api-version=2024-11-30"
    headers = {"Authorization": f"Bearer {token_for_scope(ARM_SCOPE)}"}
    assert requests.delete(url, headers=headers, verify=str(ca.ca_pem_path), timeout=10).status_code == 200
    refused(post(entra, ca, tenant, key=issuer_key), 700211, "invalid_client", 401)


# ---------------------------------------------------------------------------------------------- MSAL


def _msal_app(entra, ca, tenant, token, **kwargs):
    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE, when set, overrides session.verify
    session.verify = str(ca.ca_pem_path)
    return msal.ConfidentialClientApplication(
        CLIENT_ID,
        client_credential={"client_assertion": lambda: token},
        authority=f"{entra.url}/{tenant}",
        http_client=session,
        **kwargs,
    )


def test_msal_discovers_the_tenant_then_posts_to_its_token_endpoint(entra, ca, tenant, issuer_key):
    app = _msal_app(entra, ca, tenant, assertion(issuer_key), instance_discovery=False)
    result = app.acquire_token_for_client(scopes=[SCOPE])
    assert "access_token" in result, result
    assert decode_access_token(entra, result["access_token"])["appid"] == CLIENT_ID
    assert [(r.method, r.path, r.status) for r in entra.log.items] == [
        ("GET", f"/{tenant}/v2.0/.well-known/openid-configuration", 200),
        ("POST", f"/{tenant}/oauth2/v2.0/token", 200),
    ]


def test_msal_instance_discovery_can_be_pointed_at_the_emulator_but_only_for_the_authority(
    entra, ca, tenant, issuer_key
):
    """MSAL asks the instance discovery URL it is given while building the authority; its token cache still asks
    login.microsoftonline.com for host aliases on every acquire (`_get_instance_metadata`), so against the emulator
    only `instance_discovery=False` (azure-identity: `disable_instance_discovery=True`) keeps MSAL off the internet."""
    _msal_app(entra, ca, tenant, assertion(issuer_key), instance_discovery=f"{entra.url}/common/discovery/instance")
    assert [(r.path, r.status) for r in entra.log.items] == [
        ("/common/discovery/instance", 200),
        (f"/{tenant}/v2.0/.well-known/openid-configuration", 200),
    ]
    elsewhere = requests.get(
        f"{entra.url}/common/discovery/instance",
        verify=str(ca.ca_pem_path),
        timeout=10,
        params={"authorization_endpoint": "https://login.example.com/x/oauth2/v2.0/authorize"},
    )
    assert elsewhere.status_code == 400 and elsewhere.json()["error"] == "invalid_instance"


def test_msal_gets_entras_error_as_a_result(entra, ca, tenant, issuer_key):
    app = _msal_app(entra, ca, tenant, assertion(issuer_key, sub="system:serviceaccount:x:y"), instance_discovery=False)
    result = app.acquire_token_for_client(scopes=[SCOPE])
    assert result["error"] == "invalid_client" and result["error_codes"] == [700213]
    assert "AADSTS700213" in result["error_description"]


def test_msal_fails_fast_on_an_unknown_tenant(entra, ca, issuer_key):
    with pytest.raises(ValueError, match="Unable to get authority configuration") as failed:
        _msal_app(entra, ca, "no-such-tenant.example", assertion(issuer_key), instance_discovery=False)
    assert "AADSTS90002" in str(failed.value.__context__)


# ---------------------------------------------------------------------------------------------- azure-identity


def test_client_assertion_credential_gets_a_token_and_surfaces_refusals(entra, ca, tenant, issuer_key):
    credential = ClientAssertionCredential(
        tenant, CLIENT_ID, lambda: assertion(issuer_key), authority=entra.url, connection_verify=str(ca.ca_pem_path)
    )
    token = credential.get_token(SCOPE)
    assert decode_access_token(entra, token.token)["oid"] == PRINCIPAL_ID
    assert abs(token.expires_on - (time.time() + 86399)) < 30
    wrong = ClientAssertionCredential(
        tenant,
        CLIENT_ID,
        lambda: assertion(issuer_key, sub="system:serviceaccount:a:b"),
        authority=entra.url,
        connection_verify=str(ca.ca_pem_path),
    )
    with pytest.raises(ClientAuthenticationError) as failed:
        wrong.get_token(SCOPE)
    assert "(invalid_client) AADSTS700213: No matching federated identity record" in str(failed.value)
    assert failed.value.response.status_code == 401
    assert entra.refusals == [(700213, CLIENT_ID)]


def test_workload_identity_credential_reads_the_pods_token_file(entra, ca, tenant, issuer_key, tmp_path, monkeypatch):
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(assertion(issuer_key))
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", entra.authority + "/")  # the webhook's value ends with a slash
    monkeypatch.setenv("AZURE_TENANT_ID", tenant)
    monkeypatch.setenv("AZURE_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    credential = WorkloadIdentityCredential(connection_verify=str(ca.ca_pem_path))
    token = credential.get_token(SCOPE)
    claims = decode_access_token(entra, token.token)
    assert claims["appid"] == CLIENT_ID and claims["xms_mirid"].lower() == IDENTITY_ID.lower()
    (request,) = entra.log.items
    assert request.path == f"/{tenant}/oauth2/v2.0/token"
    chained = DefaultAzureCredential(connection_verify=str(ca.ca_pem_path))  # what a pod's code usually builds
    assert decode_access_token(entra, chained.get_token(SCOPE).token)["oid"] == PRINCIPAL_ID
    assert len(entra.issued) == 2
