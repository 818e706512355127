"""Service account tokens from the kube-apiserver emulator, driven through the real `kubernetes` client
(v37: CoreV1Api.create_namespaced_service_account_token, body and result an
AuthenticationV1TokenRequest with a V1TokenRequestSpec), the kubectl pod of AKS run command, and the
ARM emulator that tells the Kubernetes emulator its cluster's OIDC issuer.

What a token must be for Entra to take it (and what these tests check): an RS256 JWT whose `kid` is in
the JWKS that the issuer's discovery document points at, whose `iss` is the cluster's issuer URL to
the character, whose `sub` is `system:serviceaccount:<namespace>:<name>` and `aud` the requested
audiences. Behaviour checked against kubernetes pkg/registry/core/serviceaccount/storage/token.go,
pkg/serviceaccount/{claims,jwt,openidmetadata}.go, pkg/apis/authentication/validation/validation.go and
staging/src/k8s.io/kubectl/pkg/cmd/create/create_token.go (see the emulators' docstrings).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import uuid
from collections.abc import Iterator

import jwt
import kubernetes
import pytest
import requests
from azure.mgmt.containerservice import ContainerServiceClient
from cryptography.hazmat.primitives import serialization
from kubernetes.client import ApiException

from shared.domain.ids import parse_resource_id
from tests.conftest import CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT, SUB
from tests.emulators.arm import ARM_SCOPE, ArmEmulator
from tests.emulators.common import Clock, TestCA, token_for_scope
from tests.emulators.credential import StaticCredential
from tests.emulators.kube import AKS_SERVER_SCOPE, NODE_NAME, KubeEmulator
from tests.emulators.kubectl import KubectlPod
from tests.emulators.oidc import IssuerDirectory

TOKEN = token_for_scope(AKS_SERVER_SCOPE)
EXCHANGE = "api://AzureADTokenExchange"  # the audience Entra expects of a federated assertion
ISSUER = (
    "https://eastus.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/0b1c7d8e-1111-4222-8333-444455556666/"
)
OTHER_ISSUER = (
    "https://eastus.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/9e8d7c6b-aaaa-4bbb-8ccc-ddddeeeeffff/"
)
KUBE_DEFAULT_ISSUER = "https://kubernetes.default.svc.cluster.local"
CLUSTER = parse_resource_id(CLUSTER_ID, "Microsoft.ContainerService/managedClusters", "cluster")


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def directory() -> IssuerDirectory:
    return IssuerDirectory()


@pytest.fixture(scope="module")
def server(ca: TestCA, directory: IssuerDirectory) -> Iterator[KubeEmulator]:
    emulator = KubeEmulator(ca, clock=Clock(), issuers=directory).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def kube(server: KubeEmulator) -> KubeEmulator:
    """The module's server as a fresh cluster with the namespace and service account of the conftest world."""
    server.reset()
    server.set_issuer(None)
    server.add_namespace(NAMESPACE)
    server.put_object({"kind": "ServiceAccount", "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE}})
    return server


@pytest.fixture(scope="module")
def arm_server(ca: TestCA) -> Iterator[ArmEmulator]:
    emulator = ArmEmulator(ca).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def arm(arm_server: ArmEmulator, kube: KubeEmulator, ca: TestCA) -> ArmEmulator:
    """The cluster of the conftest world, its API server the module's Kubernetes emulator."""
    arm_server.reset()
    arm_server.add_resource_group(SUB, "rg-aks")
    arm_server.add_managed_cluster(CLUSTER_ID, kube_server_url=kube.url, kube_ca_pem=ca.ca_pem)
    return arm_server


def make_core(kube: KubeEmulator, ca: TestCA) -> kubernetes.client.CoreV1Api:
    cfg = kubernetes.client.Configuration()
    cfg.host = kube.url
    cfg.ssl_ca_cert = str(ca.ca_pem_path)
    cfg.api_key = {"authorization": "Bearer " + TOKEN}
    return kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(cfg))


@pytest.fixture
def core(kube: KubeEmulator, ca: TestCA) -> kubernetes.client.CoreV1Api:
    return make_core(kube, ca)


def request_token(
    core, name: str = SERVICE_ACCOUNT, namespace: str = NAMESPACE, **spec
) -> kubernetes.client.AuthenticationV1TokenRequest:
    spec.setdefault("audiences", [EXCHANGE])
    body = kubernetes.client.AuthenticationV1TokenRequest(spec=kubernetes.client.V1TokenRequestSpec(**spec))
    return core.create_namespaced_service_account_token(name, namespace, body)


def get(kube: KubeEmulator, ca: TestCA, path: str, token: str | None = TOKEN) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(kube.url + path, headers=headers, verify=str(ca.ca_pem_path), timeout=10)


def post_token(kube: KubeEmulator, ca: TestCA, body: dict, name: str = SERVICE_ACCOUNT) -> requests.Response:
    url = f"{kube.url}/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{name}/token"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    return requests.post(url, json=body, headers=headers, verify=str(ca.ca_pem_path), timeout=10)


def status_of(exc: ApiException) -> dict:
    body = json.loads(exc.body)
    assert body["kind"] == "Status" and body["status"] == "Failure" and body["code"] == exc.status
    return body


def discovered_keys(kube: KubeEmulator, ca: TestCA) -> tuple[dict, jwt.PyJWKSet]:
    """The discovery document and JWKS as a relying party reads them from the API server."""
    config = get(kube, ca, "/.well-known/openid-configuration")
    assert config.status_code == 200 and config.headers["Content-Type"] == "application/json"
    keys = get(kube, ca, "/openid/v1/jwks")
    assert keys.status_code == 200 and keys.headers["Content-Type"] == "application/jwk-set+json"
    assert config.headers["Cache-Control"] == keys.headers["Cache-Control"] == "public, max-age=3600"
    return config.json(), jwt.PyJWKSet.from_dict(keys.json())


def verify(token: str, keys: jwt.PyJWKSet, issuer: str, audience: str = EXCHANGE) -> dict:
    """What Entra does with a federated assertion: the kid's key, RS256, exact iss, aud, and the times."""
    kid = jwt.get_unverified_header(token)["kid"]
    key = next((k for k in keys.keys if k.key_id == kid), None)
    if key is None:
        raise jwt.InvalidKeyError(f"no key {kid} in the JWKS")
    return jwt.decode(token, key, algorithms=["RS256"], audience=audience, issuer=issuer, options={"strict_aud": False})


def header_and_claims(token: str) -> tuple[dict, dict]:
    def part(segment: str) -> dict:
        return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))

    head, payload, _ = token.split(".")
    return part(head), part(payload)


def rfc3339(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- TokenRequest


def test_a_token_is_an_rs256_jwt_that_verifies_with_the_discovered_jwks_and_has_the_exact_claims(kube, ca, core):
    kube.set_issuer(ISSUER)
    sa_uid = kube.get_object("ServiceAccount", NAMESPACE, SERVICE_ACCOUNT)["metadata"]["uid"]
    before = int(kube.clock.now())
    response = request_token(core, expiration_seconds=3600)
    after = int(kube.clock.now())
    token = response.status.token

    config, keys = discovered_keys(kube, ca)
    assert config == {
        "issuer": ISSUER,
        "jwks_uri": ISSUER + "openid/v1/jwks",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }
    (jwk,) = keys.keys
    assert jwk.key_type == "RSA" and jwk.algorithm_name == "RS256" and jwk.public_key_use == "sig"
    # kube-apiserver's key id: base64url(SHA-256(PKIX DER of the public key)), computed here independently
    der = jwk.key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert jwk.key_id == base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    assert (
        kube.issuers.discovery(ISSUER) == config
        and kube.issuers.jwks(ISSUER) == get(kube, ca, "/openid/v1/jwks").json()
    )

    header, _ = header_and_claims(token)
    assert header == {"alg": "RS256", "kid": jwk.key_id}  # no typ, as go-jose signs it
    claims = verify(token, keys, ISSUER)
    iat = claims["iat"]
    assert before <= iat <= after
    assert claims == {
        "aud": [EXCHANGE],
        "exp": iat + 3600,
        "iat": iat,
        "iss": ISSUER,
        "jti": claims["jti"],
        "kubernetes.io": {"namespace": NAMESPACE, "serviceaccount": {"name": SERVICE_ACCOUNT, "uid": sa_uid}},
        "nbf": iat,
        "sub": f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}",
    }
    assert str(uuid.UUID(claims["jti"])) == claims["jti"]
    assert response.status.expiration_timestamp == datetime.datetime.fromtimestamp(iat + 3600, datetime.UTC)
    assert kube.issued_tokens == [claims] and token not in json.dumps(kube.issued_tokens)


def test_the_response_is_201_and_shaped_like_the_real_one(kube, ca):
    kube.set_issuer(ISSUER)
    response = post_token(kube, ca, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                     "spec": {"audiences": [EXCHANGE], "expirationSeconds": 7200}})  # fmt: skip
    assert response.status_code == 201
    body = response.json()
    iat = kube.issued_tokens[-1]["iat"]
    assert body == {
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE, "creationTimestamp": rfc3339(iat)},
        "spec": {"audiences": [EXCHANGE], "expirationSeconds": 7200, "boundObjectRef": None},
        "status": {"token": body["status"]["token"], "expirationTimestamp": rfc3339(iat + 7200)},
    }


def test_an_unknown_service_account_is_404_not_found(core):
    with pytest.raises(ApiException) as e:
        request_token(core, name="ghost")
    status = status_of(e.value)
    assert e.value.status == 404 and status["reason"] == "NotFound"
    assert status["message"] == 'serviceaccounts "ghost" not found'
    assert status["details"] == {"name": "ghost", "kind": "serviceaccounts"}


def test_an_unknown_namespace_is_404_for_the_namespace(core):
    with pytest.raises(ApiException) as e:
        request_token(core, namespace="nowhere")
    assert e.value.status == 404 and status_of(e.value)["message"] == 'namespaces "nowhere" not found'


@pytest.mark.parametrize(
    ("seconds", "detail"),
    [
        (599, "may not specify a duration less than 10 minutes"),
        (60, "may not specify a duration less than 10 minutes"),
        ((1 << 32) + 1, "may not specify a duration larger than 2^32 seconds"),
    ],
)
def test_an_expiration_out_of_bounds_is_422_on_spec_expiration_seconds(core, kube, seconds, detail):
    with pytest.raises(ApiException) as e:
        request_token(core, expiration_seconds=seconds)
    status = status_of(e.value)
    assert e.value.status == 422 and status["reason"] == "Invalid"
    # the real message names the TokenRequest "" (validation runs on the request, not the account)
    assert status["message"] == (
        f'TokenRequest.authentication.k8s.io "" is invalid: spec.expirationSeconds: Invalid value: {seconds}: {detail}'
    )
    assert status["details"] == {
        "kind": "TokenRequest",
        "group": "authentication.k8s.io",
        "causes": [
            {
                "reason": "FieldValueInvalid",
                "message": f"Invalid value: {seconds}: {detail}",
                "field": "spec.expirationSeconds",
            }
        ],
    }
    assert kube.issued_tokens == []


def test_ten_minutes_is_the_shortest_token(core, kube):
    token = request_token(core, expiration_seconds=600).status.token
    _, claims = header_and_claims(token)
    assert claims["exp"] - claims["iat"] == 600


def test_defaults_one_hour_and_the_api_servers_own_audience(core, kube, ca):
    kube.set_issuer(ISSUER)
    response = request_token(core, audiences=[])
    assert response.spec.expiration_seconds == 3600 and response.spec.audiences == [KUBE_DEFAULT_ISSUER]
    _, keys = discovered_keys(kube, ca)
    claims = verify(response.status.token, keys, ISSUER, audience=KUBE_DEFAULT_ISSUER)
    assert claims["exp"] - claims["iat"] == 3600 and claims["aud"] == [KUBE_DEFAULT_ISSUER]


def test_times_come_from_the_emulators_clock(core, kube):
    kube.clock.advance(7 * 24 * 3600)
    try:
        now = int(kube.clock.now())
        response = request_token(core)
    finally:
        kube.clock.advance(-7 * 24 * 3600)  # the module's server: other tests verify against the real time
    _, claims = header_and_claims(response.status.token)
    assert now <= claims["iat"] == claims["nbf"] <= now + 2 and claims["exp"] == claims["iat"] + 3600
    assert response.status.expiration_timestamp == datetime.datetime.fromtimestamp(claims["exp"], datetime.UTC)


def test_a_max_token_expiration_shortens_with_a_warning(kube, ca):
    kube.max_token_expiration_seconds = 3600  # --service-account-max-token-expiration=1h
    response = post_token(kube, ca, {"spec": {"audiences": [EXCHANGE], "expirationSeconds": 86400}})
    assert response.status_code == 201 and response.json()["spec"]["expirationSeconds"] == 3600
    assert response.headers["Warning"] == '299 - "requested expiration of 86400 seconds shortened to 3600 seconds"'
    claims = kube.issued_tokens[-1]
    assert claims["exp"] - claims["iat"] == 3600


def test_a_body_naming_another_account_or_namespace_is_422(kube, ca):
    response = post_token(kube, ca, {"metadata": {"name": "other"}, "spec": {"audiences": [EXCHANGE]}})
    assert response.status_code == 422 and response.json()["message"] == (
        f'TokenRequest.authentication.k8s.io "{SERVICE_ACCOUNT}" is invalid: metadata.name: Invalid value: "other": '
        "must match the service account name if specified"
    )
    response = post_token(kube, ca, {"metadata": {"namespace": "other"}, "spec": {"audiences": [EXCHANGE]}})
    assert response.status_code == 422 and "must match the service account namespace if specified" in response.text


def test_a_wrongly_typed_body_is_400(kube, ca):
    response = post_token(kube, ca, {"spec": {"audiences": [EXCHANGE], "expirationSeconds": "3600"}})
    assert response.status_code == 400 and "cannot be handled as a TokenRequest" in response.json()["message"]


def test_the_issuer_endpoints_and_the_token_subresource_need_a_bearer_token(kube, ca):
    assert get(kube, ca, "/.well-known/openid-configuration", token=None).status_code == 401
    assert get(kube, ca, "/openid/v1/jwks", token="nope").status_code == 401
    assert get(kube, ca, f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{SERVICE_ACCOUNT}/token").status_code == 405


# --------------------------------------------------------------------------- bound tokens


def running_pod(core, kube: KubeEmulator, name: str = "chat-0", sa: str = SERVICE_ACCOUNT) -> dict:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": "chat:1"}]}}  # fmt: skip
    core.create_namespaced_pod(NAMESPACE, pod)
    return kube.get_object("Pod", NAMESPACE, name)


def test_a_token_bound_to_a_pod_carries_the_pod_and_its_node(core, kube):
    pod = running_pod(core, kube)
    assert pod["spec"]["nodeName"] == NODE_NAME
    ref = kubernetes.client.V1BoundObjectReference(api_version="v1", kind="Pod", name="chat-0")
    response = request_token(core, bound_object_ref=ref)
    _, claims = header_and_claims(response.status.token)
    private = claims["kubernetes.io"]
    assert private["pod"] == {"name": "chat-0", "uid": pod["metadata"]["uid"]}
    assert private["node"]["name"] == NODE_NAME and uuid.UUID(private["node"]["uid"])
    assert response.spec.bound_object_ref.name == "chat-0"


def test_kubelets_default_pod_bound_request_gets_a_year_and_warnafter(core, kube):
    running_pod(core, kube)
    ref = kubernetes.client.V1BoundObjectReference(api_version="v1", kind="Pod", name="chat-0")
    response = request_token(core, audiences=[], expiration_seconds=3607, bound_object_ref=ref)
    _, claims = header_and_claims(response.status.token)
    assert claims["exp"] - claims["iat"] == 24 * 365 * 3600
    assert claims["kubernetes.io"]["warnafter"] == claims["iat"] + 3607
    assert response.status.expiration_timestamp == datetime.datetime.fromtimestamp(claims["iat"] + 3607, datetime.UTC)


@pytest.mark.parametrize(
    ("ref", "code", "message"),
    [
        ({"apiVersion": "v1", "kind": "Pod", "name": "gone"}, 404, 'pods "gone" not found'),
        ({"apiVersion": "v1", "kind": "Secret", "name": "s"}, 404, 'secrets "s" not found'),
        (
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "c"},
            400,
            "cannot bind token to object of type /v1, Kind=ConfigMap",
        ),
        (
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
            400,
            "cannot bind token to object of type apps/v1, Kind=Deployment",
        ),
        (
            {"apiVersion": "v1", "kind": "Pod", "name": "other-0"},
            400,
            f'cannot bind token for serviceaccount "{SERVICE_ACCOUNT}" to pod running with different '
            "serviceaccount name.",
        ),
        (
            {"apiVersion": "v1", "kind": "Pod", "name": "chat-0", "uid": "0d4691ed-659b-4935-a832-355f77ee47cc"},
            409,
            'Operation cannot be fulfilled on Pod "chat-0": the UID in the bound object reference '
            "(0d4691ed-659b-4935-a832-355f77ee47cc) does not match the UID in record. The object might have been "
            "deleted and then recreated",
        ),
    ],
)
def test_a_bad_bound_object_is_refused_as_the_api_server_refuses_it(core, kube, ca, ref, code, message):
    running_pod(core, kube)
    kube.put_object({"kind": "ServiceAccount", "metadata": {"name": "other", "namespace": NAMESPACE}})
    running_pod(core, kube, "other-0", sa="other")
    response = post_token(kube, ca, {"spec": {"audiences": [EXCHANGE], "boundObjectRef": ref}})
    assert (response.status_code, response.json()["message"]) == (code, message)


# --------------------------------------------------------------------------- the issuer


def test_a_new_issuer_has_a_new_key_and_the_old_one_is_withdrawn(core, kube, ca):
    kube.set_issuer(ISSUER)
    old_token = request_token(core).status.token
    _, old_keys = discovered_keys(kube, ca)
    assert ISSUER in kube.issuers.issuers()

    kube.set_issuer(OTHER_ISSUER)  # the cluster was recreated
    assert ISSUER not in kube.issuers.issuers() and kube.issuers.jwks(ISSUER) is None
    assert kube.issuers.discovery(OTHER_ISSUER)["issuer"] == OTHER_ISSUER
    config, new_keys = discovered_keys(kube, ca)
    assert config["issuer"] == OTHER_ISSUER and config["jwks_uri"] == OTHER_ISSUER + "openid/v1/jwks"
    assert {k.key_id for k in old_keys.keys}.isdisjoint(k.key_id for k in new_keys.keys)

    with pytest.raises(jwt.InvalidKeyError):  # its kid is not published any more
        verify(old_token, new_keys, ISSUER)
    with pytest.raises(jwt.InvalidSignatureError):  # nor does the new key verify it
        jwt.decode(old_token, new_keys.keys[0], algorithms=["RS256"], audience=EXCHANGE)
    new_token = request_token(core).status.token
    assert verify(new_token, new_keys, OTHER_ISSUER)["iss"] == OTHER_ISSUER
    with pytest.raises(jwt.InvalidIssuerError):
        verify(new_token, new_keys, ISSUER)


def test_setting_the_same_issuer_again_keeps_the_key(kube, ca):
    kube.set_issuer(ISSUER)
    first = kube.issuers.jwks(ISSUER)
    kube.set_issuer(ISSUER)
    assert kube.issuers.jwks(ISSUER) == first


def test_without_an_oidc_issuer_tokens_carry_kube_apiservers_default_issuer_published_nowhere(core, kube, ca):
    kube.set_issuer(ISSUER)
    kube.set_issuer(None)
    assert kube.issuer is None and kube.token_issuer == KUBE_DEFAULT_ISSUER
    assert ISSUER not in kube.issuers.issuers() and KUBE_DEFAULT_ISSUER not in kube.issuers.issuers()
    config, keys = discovered_keys(kube, ca)
    assert config["issuer"] == KUBE_DEFAULT_ISSUER and config["jwks_uri"] == kube.url + "/openid/v1/jwks"
    assert verify(request_token(core).status.token, keys, KUBE_DEFAULT_ISSUER)["iss"] == KUBE_DEFAULT_ISSUER


def test_an_issuer_must_be_an_https_url():
    kube = KubeEmulator(TestCA(), issuers=IssuerDirectory())
    with pytest.raises(ValueError, match="https"):
        kube.set_issuer("http://insecure.example/")


def test_a_started_emulator_is_found_by_its_url_until_it_stops(ca):
    directory = IssuerDirectory()
    kube = KubeEmulator(ca, issuers=directory)
    assert KubeEmulator.at(kube.url) is None
    kube.start()
    try:
        assert KubeEmulator.at(kube.url) is kube and KubeEmulator.at(kube.url + "/") is kube
        kube.set_issuer(ISSUER)
    finally:
        kube.stop()
    assert KubeEmulator.at(kube.url) is None and directory.issuers() == []


# --------------------------------------------------------------------------- kubectl create token


def kubectl(kube: KubeEmulator, ca: TestCA, command: str):
    return KubectlPod(kube.url, ca.ca_pem, TOKEN).run(command, {})


def test_kubectl_create_token_prints_a_token_that_verifies(kube, ca):
    kube.set_issuer(ISSUER)
    result = kubectl(
        kube, ca, f"kubectl create token {SERVICE_ACCOUNT} -n {NAMESPACE} --audience {EXCHANGE} --duration 10m"
    )
    assert result.exit_code == 0 and "\n" not in result.logs  # the token alone: stdout is not a terminal
    _, keys = discovered_keys(kube, ca)
    claims = verify(result.logs, keys, ISSUER)
    assert claims["sub"] == f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
    assert claims["exp"] - claims["iat"] == 600 and claims["aud"] == [EXCHANGE]


def test_kubectl_create_token_repeats_audience_binds_a_pod_and_prints_json(core, kube, ca):
    pod = running_pod(core, kube)
    command = (f"kubectl create token {SERVICE_ACCOUNT} --namespace={NAMESPACE} --audience a --audience=b "
               "--duration=1h30m --bound-object-kind Pod --bound-object-name chat-0 -o json")  # fmt: skip
    result = kubectl(kube, ca, command)
    assert result.exit_code == 0, result.logs
    body = json.loads(result.logs)
    assert body["kind"] == "TokenRequest" and body["spec"]["audiences"] == ["a", "b"]
    assert body["spec"]["expirationSeconds"] == 5400
    assert body["spec"]["boundObjectRef"] == {"kind": "Pod", "apiVersion": "v1", "name": "chat-0"}
    assert kube.issued_tokens[-1]["kubernetes.io"]["pod"]["uid"] == pod["metadata"]["uid"]


@pytest.mark.parametrize(
    ("args", "logs"),
    [
        ("ghost", 'error: failed to create token: serviceaccounts "ghost" not found\n'),
        (
            f"{SERVICE_ACCOUNT} --duration 5m",
            'error: failed to create token: TokenRequest.authentication.k8s.io "" is invalid: '
            "spec.expirationSeconds: Invalid value: 300: may not specify a duration less than 10 minutes\n",
        ),
        (
            f"{SERVICE_ACCOUNT} --duration 10",
            'error: invalid argument "10" for "--duration" flag: time: missing unit in duration "10"\n'
            "See 'kubectl create token --help' for usage.\n",
        ),
        (
            f"{SERVICE_ACCOUNT} --duration=1d",
            'error: invalid argument "1d" for "--duration" flag: time: unknown unit "d" in duration "1d"\n'
            "See 'kubectl create token --help' for usage.\n",
        ),
        (f"{SERVICE_ACCOUNT} --duration 1.5s", "error: --duration cannot be expressed in units less than seconds\n"),
        (f"{SERVICE_ACCOUNT} --duration -10m", "error: --duration must be greater than or equal to 0\n"),
        ("", "error: exactly one NAME is required, got 0\nSee 'kubectl create token -h' for help and examples\n"),
        (f"{SERVICE_ACCOUNT} --audience=", "error: --audience must not be an empty string\n"),
        (
            f"{SERVICE_ACCOUNT} --bound-object-name p",
            "error: --bound-object-name can only be set if --bound-object-kind is provided\n",
        ),
        (
            f"{SERVICE_ACCOUNT} --bound-object-kind Node --bound-object-name n",
            "error: supported --bound-object-kind values are Pod, Secret\n",
        ),
        (
            f"{SERVICE_ACCOUNT} --bound-object-kind Pod",
            "error: --bound-object-name is required if --bound-object-kind is provided\n",
        ),
        (
            f"{SERVICE_ACCOUNT} --field-manager x",
            "error: unknown flag: --field-manager\nSee 'kubectl create token --help' for usage.\n",
        ),
        (
            f"{SERVICE_ACCOUNT} -l a=b",
            "error: unknown shorthand flag: 'l' in -l\nSee 'kubectl create token --help' for usage.\n",
        ),
    ],
)
def test_kubectl_create_token_fails_as_kubectl_does(kube, ca, args, logs):
    result = kubectl(kube, ca, f"kubectl create token -n {NAMESPACE} {args}")
    assert (result.exit_code, result.logs) == (1, logs)
    assert kube.issued_tokens == []


def test_kubectl_create_other_than_token_is_refused(kube, ca):
    result = kubectl(kube, ca, "kubectl create configmap x --from-literal=a=b")
    assert result.exit_code == 1 and "only" in result.logs and "create token" in result.logs


# --------------------------------------------------------------------------- the ARM emulator tells the cluster


def test_a_seeded_cluster_issues_tokens_with_its_issuer_url_and_recreate_changes_it(arm, kube, ca, core):
    issuer = arm.managed_cluster(CLUSTER_ID)["properties"]["oidcIssuerProfile"]["issuerURL"]
    assert kube.issuer == kube.token_issuer == issuer and issuer in kube.issuers.issuers()
    token = request_token(core).status.token
    assert verify(token, jwt.PyJWKSet.from_dict(kube.issuers.jwks(issuer)), issuer)["iss"] == issuer

    new_issuer = arm.recreate_managed_cluster(CLUSTER_ID)
    assert new_issuer != issuer and kube.issuer == new_issuer
    assert issuer not in kube.issuers.issuers() and new_issuer in kube.issuers.issuers()
    new_keys = jwt.PyJWKSet.from_dict(kube.issuers.jwks(new_issuer))
    with pytest.raises(jwt.InvalidKeyError):
        verify(token, new_keys, issuer)
    assert verify(request_token(core).status.token, new_keys, new_issuer)["iss"] == new_issuer

    arm.delete_managed_cluster(CLUSTER_ID)
    assert kube.issuer is None and new_issuer not in kube.issuers.issuers()


def test_enabling_oidc_by_an_update_gives_the_cluster_its_issuer_when_the_update_ends(arm, kube, ca):
    arm.delete_managed_cluster(CLUSTER_ID)
    arm.add_managed_cluster(CLUSTER_ID, kube_server_url=kube.url, kube_ca_pem=ca.ca_pem, oidc_issuer_enabled=False)
    assert kube.issuer is None
    aks = ContainerServiceClient(StaticCredential(), SUB, base_url=arm.url, credential_scopes=[ARM_SCOPE],
                                 connection_verify=str(ca.ca_pem_path))  # fmt: skip
    mc = aks.managed_clusters.get(CLUSTER.resource_group, CLUSTER.name)
    mc.properties.oidc_issuer_profile.enabled = True
    done = aks.managed_clusters.begin_create_or_update(CLUSTER.resource_group, CLUSTER.name, mc).result(timeout=10)
    assert kube.issuer == done.properties.oidc_issuer_profile.issuer_url is not None


def test_one_kube_behind_two_clusters_the_last_issuer_wins(arm, kube, ca):
    first = kube.issuer
    second_id = CLUSTER_ID.replace("/aks1", "/aks2")
    arm.add_managed_cluster(second_id, kube_server_url=kube.url, kube_ca_pem=ca.ca_pem)
    second = arm.managed_cluster(second_id)["properties"]["oidcIssuerProfile"]["issuerURL"]
    assert kube.issuer == second != first and first not in kube.issuers.issuers()
    arm.delete_managed_cluster(CLUSTER_ID)  # not the current issuer: nothing changes
    assert kube.issuer == second
    arm.delete_managed_cluster(second_id)
    assert kube.issuer is None


def test_run_command_kubectl_create_token_gives_a_token_for_the_clusters_issuer(arm, kube, ca):
    issuer = kube.issuer
    aks = ContainerServiceClient(StaticCredential(), SUB, base_url=arm.url, credential_scopes=[ARM_SCOPE],
                                 connection_verify=str(ca.ca_pem_path))  # fmt: skip
    payload = {"command": f"kubectl create token {SERVICE_ACCOUNT} -n {NAMESPACE} --audience {EXCHANGE}",
               "clusterToken": TOKEN}  # fmt: skip
    poller = aks.managed_clusters.begin_run_command(CLUSTER.resource_group, CLUSTER.name, payload, polling_interval=0)
    result = poller.result()
    assert result.exit_code == 0, result.logs
    claims = verify(result.logs, jwt.PyJWKSet.from_dict(kube.issuers.jwks(issuer)), issuer)
    assert claims["iss"] == issuer and claims["sub"] == f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
