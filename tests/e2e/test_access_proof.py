"""Proving access end to end (KEYLESS_PROVE_ACCESS): the workload's own token, exchanged at Entra, opens the
OpenAI account — through the kube emulator's TokenRequest, the Entra emulator and the OpenAI data-plane
emulator, each over HTTPS with the real clients; and each broken case named in the issue, with the stage
and the fix the report gives."""

from __future__ import annotations

import collections.abc
import json
import shutil

import pytest

from shared.domain.settings import Settings
from tests.access_services import AccessServices, access_services
from tests.conftest import ACCOUNT_ID, CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT, SUB
from tests.e2e.test_workloads import AI, ai_service, env, pods, with_workloads
from tests.emulators.arm import ARM_SCOPE, ArmEmulator
from tests.emulators.common import TestCA
from tests.emulators.kube import KubeEmulator

OPENAI_USER = "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd"


@pytest.fixture
def services(ca: TestCA, kube: KubeEmulator) -> collections.abc.Iterator[AccessServices]:
    with access_services(ca, kube) as found:
        yield found


@pytest.fixture
def arm(services: AccessServices) -> ArmEmulator:
    return services.arm


@pytest.fixture
def settings(services: AccessServices, ca: TestCA) -> Settings:
    return Settings.from_env(
        {
            "KEYLESS_ARM_ENDPOINT": services.arm.url,
            "KEYLESS_ARM_SCOPE": ARM_SCOPE,
            "KEYLESS_CA_BUNDLE": str(ca.ca_pem_path),
            "KEYLESS_AUTHORITY_HOST": services.entra.url,
            "KEYLESS_PROVE_ACCESS": "true",
            "KEYLESS_ARM_PACING_SCALE": "0",
        }
    )


def onboard(engine, kube, binding):
    ai_service(kube)
    b = with_workloads(binding, AI)
    assert engine.reconcile(b).status == "ready"
    return b


def identity_id(arm: ArmEmulator) -> str:
    (identity,) = arm.identities()
    return identity["id"]


def access(report) -> dict:
    check = report.check("access")
    return {"status": check.status, "reason": check.reason, **check.evidence}


def test_the_workloads_own_token_opens_the_account(services, kube, engine, binding):
    b = onboard(engine, kube, binding)
    report = engine.verify(b)
    assert report.status == "pass", json.dumps(report.as_dict(), indent=1)
    proof = access(report)
    assert proof["status"] == "pass" and proof["passed"] == ["token", "exchange", "data-plane"]
    cluster = services.arm.managed_cluster(CLUSTER_ID)["properties"]["oidcIssuerProfile"]["issuerURL"]
    assert proof["token"]["issuer"] == cluster
    assert proof["token"]["subject"] == f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
    assert proof["token"]["audiences"] == ["api://AzureADTokenExchange"]
    assert proof["dataPlane"]["status"] == 200
    # What each party saw: one token of the service account, one exchange for the identity, one read as it.
    (issued,) = kube.issued_tokens
    assert issued["sub"] == proof["token"]["subject"]
    (exchanged,) = services.entra.issued
    identity = services.arm.identity(identity_id(services.arm))["properties"]
    assert exchanged["appid"] == identity["clientId"] and exchanged["oid"] == identity["principalId"]
    assert [(s.principal, s.status) for s in services.openai.served] == [(identity["principalId"], 200)]
    text = json.dumps(report.as_dict())
    assert "eyJ" not in text, "no token in the report"


def test_verified_only_once_the_role_is_effective(services, kube, engine, settings, make_engine, binding):
    services.openai.role_propagation_seconds = 300
    b = onboard(engine, kube, binding)
    proof = access(engine.verify(b))
    assert proof["status"] == "pending" and proof["stage"] == "data-plane" and "not effective yet" in proof["reason"]
    assert proof["passed"] == ["token", "exchange"] and proof["dataPlane"]["status"] == 401
    services.arm.clock.advance(301)
    assert access(make_engine(settings).verify(b))["status"] == "pass"  # another instance: no proof to reuse


def test_asking_again_within_a_minute_reuses_the_proof(services, kube, engine, binding):
    """A caller polling the verification endpoint does not make Keyless mint a token and ask Entra for the
    workload's identity each time (Entra throttles per client: the workload's own sign-ins would suffer)."""
    b = onboard(engine, kube, binding)
    first = access(engine.verify(b))
    again = [access(engine.verify(b)) for _ in range(5)]
    assert first["status"] == "pass" and "reusedSeconds" not in first
    assert all(p["status"] == "pass" and p["reusedSeconds"] < 60 for p in again)
    assert len(kube.issued_tokens) == 1 and len(services.entra.issued) == 1 and len(services.openai.served) == 1


def test_a_credential_entra_has_not_seen_yet_is_pending(services, kube, engine, settings, make_engine, binding):
    services.entra.credential_propagation_seconds = 120
    b = onboard(engine, kube, binding)
    proof = access(engine.verify(b))
    assert proof["status"] == "pending" and proof["stage"] == "exchange"
    assert proof["entra"]["error"] in ("AADSTS700211", "AADSTS700213", "AADSTS70021")
    services.arm.clock.advance(121)
    assert access(make_engine(settings).verify(b))["status"] == "pass"


@pytest.mark.parametrize(
    ("issuer", "subject", "said"),
    [
        (None, "system:serviceaccount:team-a:chat-apl", "no federated credential trusts subject"),
        ("strip", None, "trusts issuer"),
    ],
    ids=["subject typo", "issuer without its trailing slash"],
)
def test_a_credential_that_differs_from_the_token_fails_at_the_exchange(
    services, kube, engine, binding, issuer, subject, said
):
    b = onboard(engine, kube, binding)
    arm = services.arm
    (fic,) = arm.federated_credentials(identity_id(arm))
    props = fic["properties"]
    bad_issuer = props["issuer"].rstrip("/") if issuer == "strip" else props["issuer"]
    arm.add_federated_credential(identity_id(arm), fic["name"], bad_issuer, subject or props["subject"])
    report = engine.verify(b)
    proof = access(report)
    assert proof["status"] == "fail" and proof["stage"] == "exchange" and said in proof["reason"]
    assert proof["entra"]["error"] in ("AADSTS700211", "AADSTS700213", "AADSTS70021")
    assert "fix" in proof and report.check("federated-credential").status == "fail"


def test_a_role_without_the_data_action_fails_and_says_so(services, kube, engine, binding):
    b = onboard(engine, kube, binding)
    arm = services.arm
    (ra,) = arm.role_assignments(ACCOUNT_ID)
    engine.roles.delete(SUB, ACCOUNT_ID, ra["name"])
    arm.add_role_definition("0b1c2d3e-0000-4000-8000-00000000beef", "Reader without data", actions=["*/read"])
    arm.add_role_assignment(ACCOUNT_ID, "9d1c2d3e-0000-4000-8000-000000000001", ra["properties"]["principalId"],
                            f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/"
                            "0b1c2d3e-0000-4000-8000-00000000beef")  # fmt: skip
    proof = access(engine.verify(b))
    assert proof["status"] == "fail" and proof["stage"] == "data-plane"
    assert "has data action Microsoft.CognitiveServices/accounts/OpenAI/models/read" in proof["reason"]
    # The role definition is read at the account, where Keyless's Access Granter (roleDefinitions/read) is
    # assigned: at the subscription Keyless may hold no role (issue 21, finding 12).
    reads = [r for r in arm.log.matching("GET", "/roleDefinitions/") if "0b1c2d3e" in r.path]
    assert reads and all(r.path.lower().startswith(ACCOUNT_ID.lower() + "/providers/") for r in reads), reads


def test_the_role_at_another_account_fails(services, kube, engine, binding):
    b = onboard(engine, kube, binding)
    arm = services.arm
    (ra,) = arm.role_assignments(ACCOUNT_ID)
    engine.roles.delete(SUB, ACCOUNT_ID, ra["name"])
    other = ACCOUNT_ID.replace("oai-team", "oai-other")
    arm.add_cognitive_account(other)
    arm.add_role_assignment(other, "9d1c2d3e-0000-4000-8000-000000000002", ra["properties"]["principalId"],
                            ra["properties"]["roleDefinitionId"])  # fmt: skip
    proof = access(engine.verify(b))
    assert proof["status"] == "fail" and proof["stage"] == "data-plane" and "at the account or above" in proof["reason"]


def test_network_rules_that_refuse_the_caller_fail(services, kube, engine, binding, ca):
    from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient
    from azure.mgmt.cognitiveservices import models as cogmodels

    from tests.emulators.credential import StaticCredential

    b = onboard(engine, kube, binding)
    cog = CognitiveServicesManagementClient(
        StaticCredential(), SUB, base_url=services.arm.url, credential_scopes=[ARM_SCOPE],
        connection_verify=str(ca.ca_pem_path), polling_interval=0,
    )  # fmt: skip
    update = cogmodels.Account(
        properties=cogmodels.AccountProperties(network_acls=cogmodels.NetworkRuleSet(default_action="Deny"))
    )
    cog.accounts.begin_update("rg-ai", "oai-team", update).result(timeout=10)
    proof = access(engine.verify(b))
    assert proof["status"] == "fail" and proof["stage"] == "data-plane" and "network rules" in proof["reason"]
    assert proof["dataPlane"]["status"] == 403


def test_a_deleted_service_account_fails_at_the_token(services, kube, engine, binding):
    b = onboard(engine, kube, binding)
    kube.delete_object("ServiceAccount", NAMESPACE, SERVICE_ACCOUNT)
    proof = access(engine.verify(b))
    assert proof["status"] == "fail" and proof["stage"] == "token" and proof["passed"] == []
    assert "create the service account" in proof["fix"]


def test_a_token_request_azure_rbac_refuses_names_the_data_action_and_the_role(services, kube, engine, binding):
    """Issue 21, finding 13: Microsoft's list of AKS data actions has none for `serviceaccounts/token`; AKS's
    authorization webhook (guard) checks a TokenRequest (`create` on the subresource) as
    `serviceaccounts/write`. A 403 there on an Azure-RBAC cluster says exactly that, and how to grant it."""
    b = onboard(engine, kube, binding)
    assert services.arm.managed_cluster(CLUSTER_ID)["properties"]["aadProfile"]["enableAzureRBAC"] is True
    denied = (
        f'serviceaccounts "{SERVICE_ACCOUNT}" is forbidden: User "keyless" cannot create resource '
        f'"serviceaccounts/token" in API group "" in the namespace "{NAMESPACE}": User does not have access to '
        "the resource in Azure. Update role assignment to allow access."
    )
    kube.inject_fault("POST", f"/serviceaccounts/{SERVICE_ACCOUNT}/token", 403, message=denied, times=5)
    proof = access(engine.verify(b))
    assert proof["status"] == "fail" and proof["stage"] == "token" and proof["passed"] == []
    assert "Microsoft.ContainerService/managedClusters/serviceaccounts/write" in proof["reason"]
    assert "Azure RBAC" in proof["reason"] and f"namespace {NAMESPACE}" in proof["reason"]
    assert proof["missing"] == {
        "dataAction": "Microsoft.ContainerService/managedClusters/serviceaccounts/write",
        "scope": f"{CLUSTER_ID}/namespaces/{NAMESPACE}",
    }
    assert "Keyless AKS Workload Binder" in proof["fix"] and f"{CLUSTER_ID}/namespaces/{NAMESPACE}" in proof["fix"]
    assert kube.issued_tokens == []


def test_a_recreated_cluster_signs_with_a_new_issuer_the_old_credential_does_not_trust(
    services, kube, settings, make_engine, binding
):
    b = onboard(make_engine(settings), kube, binding)
    new_issuer = services.arm.recreate_managed_cluster(CLUSTER_ID)
    proof = access(make_engine(settings).verify(b))
    assert proof["status"] == "fail" and proof["stage"] == "exchange"
    assert proof["token"]["issuer"] == new_issuer and "trusts issuer" in proof["reason"]


def test_off_by_default(services, kube, settings, make_engine, binding):
    engine = make_engine(settings, prove_access=False)
    b = onboard(engine, kube, binding)
    report = engine.verify(b)
    assert report.status == "pass" and "access" not in {c.name for c in report.checks}
    assert kube.issued_tokens == [] and services.entra.issued == []


def test_a_private_cluster_gives_its_token_through_run_command(services, kube, engine, binding, ca, caplog):
    """The API server cannot be reached: the whole proof runs in the cluster, through the AKS run-command API
    (the token made by kubectl, exchanged at Entra and used on the data plane by the pod's script; only the
    verdict comes back). The token is in no log line and not in the report."""
    import logging
    import re

    from tests.e2e.test_private_clusters import make_private

    make_private(services.arm, kube, ca)
    b = onboard(engine, kube, binding)
    before = len(services.arm.run_commands)
    caplog.set_level(logging.DEBUG)
    for name in ("azure", "urllib3", "keyless"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    report = engine.verify(b)
    proof = access(report)
    assert proof["status"] == "pass", proof
    jwt = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.")
    logs = [r.getMessage() for r in caplog.records]
    assert any("runCommand" in line or "commandResults" in line for line in logs), "the check would be blind"
    assert not [line for line in logs if jwt.search(line)] and not jwt.search(json.dumps(report.as_dict()))
    proofs = [c["command"] for c in services.arm.run_commands[before:] if c["command"].startswith("bash ")]
    (identity,) = [services.arm.identity(identity_id(services.arm))["properties"]]
    endpoint = services.arm.cognitive_account(ACCOUNT_ID)["properties"]["endpoint"]
    assert proofs == [
        f"bash keyless-access-proof.sh {NAMESPACE} {SERVICE_ACCOUNT} api://AzureADTokenExchange 600s "
        f"{services.entra.url}/{identity['tenantId']}/oauth2/v2.0/token {identity['clientId']} "
        f"https://cognitiveservices.azure.com/.default '{endpoint}openai/models?api-version=2024-10-21'"
    ]
    assert not [c for c in services.arm.run_commands if "create token" in c["command"]]
    assert len(services.entra.issued) == 1 and len(services.openai.served) == 1, "asked from the pod"
    assert len(kube.issued_tokens) == 1 and kube.issued_tokens[0]["exp"] - kube.issued_tokens[0]["iat"] == 600


def test_the_pod_way_workload_identity_credential_from_the_projected_token_opens_the_account(
    services, kube, engine, binding, ca, tmp_path
):
    """What the seed's sample app does in the pod: azure-identity's WorkloadIdentityCredential reads the
    projected token file (here from the same TokenRequest the kubelet makes) with the webhook's variables,
    and calls the account's endpoint with the token it gets (the authority: Entra's emulator, where the pod's
    AZURE_AUTHORITY_HOST names Entra)."""
    from azure.core import PipelineClient
    from azure.core.pipeline.policies import BearerTokenCredentialPolicy
    from azure.core.pipeline.transport import RequestsTransport
    from azure.core.rest import HttpRequest
    from azure.identity import WorkloadIdentityCredential
    from kubernetes import client

    onboard(engine, kube, binding)
    pod = pods(kube)[0]
    variables = {name: e.get("value") for name, e in env(pod).items()}
    assert variables["AZURE_AUTHORITY_HOST"] and variables["AZURE_FEDERATED_TOKEN_FILE"], "the webhook injected them"
    cfg = client.Configuration()
    cfg.host, cfg.ssl_ca_cert = kube.url, str(ca.ca_pem_path)
    cfg.api_key = {"authorization": next(iter(kube.accepted_tokens))}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    with client.ApiClient(cfg) as api:
        request = {"spec": {"audiences": ["api://AzureADTokenExchange"], "expirationSeconds": 3600}}
        token = client.CoreV1Api(api).create_namespaced_service_account_token(SERVICE_ACCOUNT, NAMESPACE, request)
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(token.status.token)

    credential = WorkloadIdentityCredential(
        tenant_id=variables["AZURE_TENANT_ID"],
        client_id=variables["AZURE_CLIENT_ID"],
        token_file_path=str(token_file),
        authority=services.entra.url,
        connection_verify=str(ca.ca_pem_path),
    )
    endpoint = services.arm.cognitive_account(ACCOUNT_ID)["properties"]["endpoint"]
    policies = [BearerTokenCredentialPolicy(credential, "https://cognitiveservices.azure.com/.default")]
    with PipelineClient(
        endpoint, policies=policies, transport=RequestsTransport(connection_verify=str(ca.ca_pem_path))
    ) as pc:
        answer = pc.send_request(HttpRequest("GET", f"{endpoint}openai/models", params={"api-version": "2024-10-21"}))
    assert answer.status_code == 200, answer.text()
    assert [m["id"] for m in answer.json()["data"]] == ["gpt-4o-2024-08-06"]
    identity = services.arm.identity(identity_id(services.arm))["properties"]
    assert services.openai.served[-1].principal == identity["principalId"]


def test_an_account_left_without_its_custom_subdomain_fails_at_the_data_plane(
    services, kube, settings, make_engine, binding
):
    """Keys only: the regional endpoint takes no Entra token, so there is nothing to read with one."""
    b = onboard(make_engine(settings), kube, binding)
    services.arm.add_cognitive_account(ACCOUNT_ID, custom_subdomain=None)
    report = make_engine(settings).verify(b)  # a fresh engine: no account read cached
    proof = access(report)
    assert proof["status"] == "fail" and proof["stage"] == "data-plane" and "custom-subdomain" in proof["reason"]
    assert proof["passed"] == ["token", "exchange"] and report.check("account").status == "fail"
    assert services.openai.served == []


JWT_SHAPED = r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"


def stored_run_commands(services: AccessServices, ca: TestCA, since: int) -> list[str]:
    """Every run command since `since` as AKS keeps it, read back the way anyone holding
    `managedClusters/commandResults/read` can: the command asked, its files, and its stored result."""
    from azure.mgmt.containerservice import ContainerServiceClient

    from tests.emulators.credential import StaticCredential

    aks = ContainerServiceClient(
        StaticCredential(), SUB, base_url=services.arm.url, credential_scopes=[ARM_SCOPE],
        connection_verify=str(ca.ca_pem_path),
    )  # fmt: skip
    texts = []
    for asked in services.arm.run_commands[since:]:
        result = aks.managed_clusters.get_command_result("rg-aks", "aks1", asked["id"])
        files = "\n".join(content.decode() for content in asked["files"].values())
        texts.append("\n".join([asked["command"], files, json.dumps(result.as_dict())]))
    return texts


def test_a_private_clusters_proof_leaves_no_token_in_the_stored_run_command_results(
    services, kube, engine, binding, ca
):
    """A run command's result is stored by AKS and readable with commandResults/read: the workload's token
    (10 minutes valid, and Entra trades it for the identity) must never be in it, nor in the command."""
    import re

    from tests.e2e.test_private_clusters import make_private

    make_private(services.arm, kube, ca)
    b = onboard(engine, kube, binding)
    before = len(services.arm.run_commands)
    proof = access(engine.verify(b))
    assert proof["status"] == "pass" and proof["passed"] == ["token", "exchange", "data-plane"], proof
    assert len(kube.issued_tokens) == 1 and len(services.entra.issued) == 1 and len(services.openai.served) == 1
    stored = stored_run_commands(services, ca, before)
    assert stored, "the proof went through run command"
    for text in stored:
        assert "eyJ" not in text and not re.search(JWT_SHAPED, text), text[:2000]


def test_a_private_clusters_failures_keep_their_stage_and_leave_no_token(
    services, kube, engine, settings, make_engine, binding, ca
):
    """In the pod as outside: a subject Entra matches no credential for fails at the exchange (AADSTS700213),
    a role without the data action at the data plane (401 PermissionDenied), a missing service account at the
    token; and no stored result holds a token in any of them."""
    import re

    from tests.e2e.test_private_clusters import make_private

    make_private(services.arm, kube, ca)
    b = onboard(engine, kube, binding)
    arm = services.arm
    before = len(arm.run_commands)

    (fic,) = arm.federated_credentials(identity_id(arm))
    props = fic["properties"]
    arm.add_federated_credential(identity_id(arm), fic["name"], props["issuer"], "system:serviceaccount:team-a:typo")
    proof = access(make_engine(settings).verify(b))  # a fresh engine: no proof to reuse
    assert proof["status"] == "fail" and proof["stage"] == "exchange", proof
    assert proof["entra"] == {"error": "AADSTS700213", "status": 401} and "no federated credential" in proof["reason"]
    assert proof["token"]["subject"] == f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
    arm.add_federated_credential(identity_id(arm), fic["name"], props["issuer"], props["subject"])

    (ra,) = arm.role_assignments(ACCOUNT_ID)
    engine.roles.delete(SUB, ACCOUNT_ID, ra["name"])
    arm.add_role_definition("0b1c2d3e-0000-4000-8000-00000000beef", "Reader without data", actions=["*/read"])
    arm.add_role_assignment(ACCOUNT_ID, "9d1c2d3e-0000-4000-8000-000000000001", ra["properties"]["principalId"],
                            f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/"
                            "0b1c2d3e-0000-4000-8000-00000000beef")  # fmt: skip
    proof = access(make_engine(settings).verify(b))  # a fresh engine: no proof to reuse
    assert proof["status"] == "fail" and proof["stage"] == "data-plane", proof
    assert proof["dataPlane"]["status"] == 401 and proof["dataPlane"]["code"] == "PermissionDenied"
    assert "has data action" in proof["reason"]

    kube.delete_object("ServiceAccount", NAMESPACE, SERVICE_ACCOUNT)
    proof = access(make_engine(settings).verify(b))  # a fresh engine: no proof to reuse
    assert proof["status"] == "fail" and proof["stage"] == "token" and proof["passed"] == [], proof
    assert "not found" in proof["reason"] and "create the service account" in proof["fix"]

    assert len(services.entra.issued) == 1, "one exchange succeeded (the data-plane case)"
    for text in stored_run_commands(services, ca, before):
        assert "eyJ" not in text and not re.search(JWT_SHAPED, text), text[:2000]


def test_a_run_command_pod_without_curl_proves_nothing_and_brings_no_token_out(services, kube, engine, binding, ca):
    """curl is not among the tools the AKS docs list for the run-command pod: without it the script stops
    before making a token, and Keyless says so rather than bringing the token out to prove access itself."""
    from tests.e2e.test_private_clusters import make_private
    from tests.emulators.runtime_shell import DOCUMENTED_TOOLS

    make_private(services.arm, kube, ca)
    b = onboard(engine, kube, binding)
    services.arm.run_command_tools = DOCUMENTED_TOOLS
    proof = access(engine.verify(b))
    assert proof["status"] == "fail" and proof["stage"] == "token" and "has no curl" in proof["reason"], proof
    assert kube.issued_tokens == [] and services.entra.issued == [] and services.openai.served == []


@pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in ("bash", "kubectl", "curl", "jq")),
    reason="needs bash, kubectl, curl, jq",
)
def test_the_proof_script_runs_in_real_bash_curl_and_jq(services, kube, engine, binding, ca, tmp_path):
    """The emulator runs the script statement by statement; here real bash, curl and jq run it, as the pod
    would, against the same emulators: the same verdict, and no token printed. (kubectl is a shim making the
    TokenRequest in JSON: a real kubectl 1.32 sends protobuf, which the Kubernetes emulator does not read.)"""
    import os
    import subprocess

    from shared.domain import pod_proof

    onboard(engine, kube, binding)
    identity = services.arm.identity(identity_id(services.arm))["properties"]
    endpoint = services.arm.cognitive_account(ACCOUNT_ID)["properties"]["endpoint"]
    shim = tmp_path / "bin" / "kubectl"
    shim.parent.mkdir()
    shim.write_text(
        "#!/bin/bash\n"
        '[ "$1 $2 $4 $6 $8" = "create token -n --audience --duration" ] || exit 1\n'
        'body=$(jq -cn --arg aud "$7" --arg d "${9%s}" \'{apiVersion: "authentication.k8s.io/v1", '
        'kind: "TokenRequest", spec: {audiences: [$aud], expirationSeconds: ($d | tonumber)}}\')\n'
        'curl -sS --fail-with-body -H "Authorization: Bearer $KUBE_TOKEN" -H "Content-Type: application/json" '
        '--data "$body" "$KUBE_URL/api/v1/namespaces/$5/serviceaccounts/$3/token" | jq -j .status.token\n'
    )
    shim.chmod(0o755)
    run = tmp_path / "pod"
    run.mkdir()
    (run / pod_proof.SCRIPT_FILE).write_text(pod_proof.SCRIPT)
    command = pod_proof.command(
        NAMESPACE, SERVICE_ACCOUNT, "api://AzureADTokenExchange", 600,
        pod_proof.token_url(services.entra.url, identity["tenantId"]), identity["clientId"],
        "https://cognitiveservices.azure.com/.default", pod_proof.models_url(endpoint),
    )  # fmt: skip
    env = {
        "PATH": f"{shim.parent}:{os.environ['PATH']}",
        "CURL_CA_BUNDLE": str(ca.ca_pem_path),
        "KUBE_URL": kube.url,
        "KUBE_TOKEN": next(iter(kube.accepted_tokens)),
    }
    ran = subprocess.run(command, shell=True, cwd=run, env=env, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0 and ran.stderr == "", ran.stderr
    assert "eyJ" not in ran.stdout
    verdict = pod_proof.parse_verdict(ran.stdout)
    assert verdict.claims and verdict.claims.subject == f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
    assert verdict.refusal is None and verdict.answer and verdict.answer.status == 200, ran.stdout
    assert sorted(p.name for p in run.iterdir()) == ["keyless-access-proof.sh", "token.err"], "no token left"
