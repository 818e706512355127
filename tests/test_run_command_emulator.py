"""The AKS run-command emulation, through the real azure-mgmt-containerservice SDK: the ARM side
(`POST .../runCommand` -> 202 + Location, `GET .../commandResults/{id}` -> 202 then 200) and the
kubectl pod that runs the command against the Kubernetes emulator.

Shapes checked against the 2025-10-01 examples of the AKS REST specs (not in tests/reference;
copied here as the fields they show): RunCommandRequest.json answers 202 with a `location` to
`.../commandResults/{id}` and ends 200 with `{"id", "properties": {"provisioningState": "succeeded",
"exitCode", "startedAt", "finishedAt", "logs"}}`; RunCommandResultFailed.json ends with
`{"provisioningState": "failed", "reason": "ImagePullBackoff"}`.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.containerservice import ContainerServiceClient

from shared.domain.ids import parse_resource_id
from tests.conftest import CLUSTER_ID, NAMESPACE, SUB
from tests.emulators.arm import ARM_SCOPE
from tests.emulators.common import token_for_scope
from tests.emulators.credential import StaticCredential
from tests.emulators.kube import AKS_SERVER_SCOPE

CLUSTER = parse_resource_id(CLUSTER_ID, "Microsoft.ContainerService/managedClusters", "cluster")
SUCCEEDED_FIELDS = {"provisioningState", "exitCode", "startedAt", "finishedAt", "logs"}  # RunCommandRequest.json
FAILED_FIELDS = {"provisioningState", "reason"}  # RunCommandResultFailed.json (we add startedAt/finishedAt)
CLUSTER_TOKEN = token_for_scope(AKS_SERVER_SCOPE)


@pytest.fixture
def aks(arm, ca) -> ContainerServiceClient:
    return ContainerServiceClient(
        StaticCredential(), SUB, base_url=arm.url, credential_scopes=[ARM_SCOPE], connection_verify=str(ca.ca_pem_path)
    )


def zipped(files: dict[str, str]) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return base64.b64encode(buffer.getvalue()).decode()


def run(aks, command: str, files: dict[str, str] | None = None, token: str | None = CLUSTER_TOKEN):
    payload = {"command": command}
    if files:
        payload["context"] = zipped(files)
    if token:
        payload["clusterToken"] = token
    poller = aks.managed_clusters.begin_run_command(CLUSTER.resource_group, CLUSTER.name, payload, polling_interval=0)
    return poller.result()


def raw_post(arm, ca, body) -> requests.Response:
    url = f"{arm.url}{CLUSTER_ID}/runCommand"
    headers = {"Authorization": f"Bearer {token_for_scope(ARM_SCOPE)}"}
    return requests.post(url, params={"api-version": "2026-08-01"}, json=body, headers=headers,
                         verify=str(ca.ca_pem_path), timeout=10)  # fmt: skip


# ---------------------------------------------------------------------------- the ARM side


def test_a_command_is_accepted_202_polled_and_answers_like_the_example(arm, ca, aks, kube):
    response = raw_post(arm, ca, {"command": "kubectl get namespace/team-a -o json", "clusterToken": CLUSTER_TOKEN})
    assert response.status_code == 202 and response.content == b""
    location = response.headers["Location"]
    assert f"{CLUSTER_ID}/commandResults/".lower() in location.lower() and "api-version=2026-08-01" in location
    headers = {"Authorization": f"Bearer {token_for_scope(ARM_SCOPE)}"}
    first = requests.get(location, headers=headers, verify=str(ca.ca_pem_path), timeout=10)
    assert first.status_code == 202 and first.headers["Location"] == location, "still running on the first poll"
    done = requests.get(location, headers=headers, verify=str(ca.ca_pem_path), timeout=10)
    assert done.status_code == 200
    body = done.json()
    assert set(body) == {"id", "properties"} and set(body["properties"]) == SUCCEEDED_FIELDS
    assert body["properties"]["provisioningState"] == "succeeded" and body["properties"]["exitCode"] == 0
    assert json.loads(body["properties"]["logs"])["metadata"]["name"] == "team-a"


def test_the_sdk_poller_returns_the_result(aks, kube):
    result = run(aks, "kubectl get namespace/team-a -o json")
    assert result.provisioning_state == "succeeded" and result.exit_code == 0
    assert json.loads(result.logs)["kind"] == "Namespace"


def test_a_pod_that_never_ran_is_failed_with_a_reason(arm, aks, kube):
    arm.fail_run_commands(1, reason="ImagePullBackoff")
    result = run(aks, "kubectl get namespace/team-a -o json")
    assert result.provisioning_state == "failed" and result.reason == "ImagePullBackoff"
    assert result.exit_code is None and result.logs is None
    assert FAILED_FIELDS <= set(result.properties.keys())
    assert kube.log.matching("GET", "/namespaces/team-a") == [], "the command never ran"


def test_disabled_run_command_is_refused_before_anything_runs(arm, aks, kube):
    arm.set_run_command_disabled(CLUSTER_ID)
    with pytest.raises(HttpResponseError) as raised:
        run(aks, "kubectl get namespace/team-a -o json")
    assert raised.value.status_code == 400 and raised.value.error.code == "RunCommandDisabled"
    assert kube.log.items == []


def test_bad_requests_are_refused_naming_the_field(arm, ca):
    for body, word in (({}, "command"), ({"command": "  "}, "command"), ({"command": "x", "context": "%%"}, "context")):
        response = raw_post(arm, ca, body)
        assert response.status_code == 400 and word in response.json()["error"]["message"], body


def test_unknown_cluster_and_unknown_command_are_404(arm, aks):
    with pytest.raises(ResourceNotFoundError):
        aks.managed_clusters.begin_run_command(CLUSTER.resource_group, "nope", {"command": "kubectl get ns"})
    with pytest.raises(ResourceNotFoundError):
        aks.managed_clusters.get_command_result(CLUSTER.resource_group, CLUSTER.name, "0" * 32)


def test_a_private_cluster_hands_out_an_address_that_refuses_connections(arm, ca, kube, aks):
    arm.delete_managed_cluster(CLUSTER_ID)
    arm.add_managed_cluster(CLUSTER_ID, kube_server_url=kube.url, kube_ca_pem=ca.ca_pem, private=True)
    cluster = aks.managed_clusters.get(CLUSTER.resource_group, CLUSTER.name)
    access = cluster.api_server_access_profile
    assert access.enable_private_cluster is True and access.disable_run_command is False
    assert cluster.private_fqdn.endswith(".privatelink.eastus.azmk8s.io") and cluster.fqdn is None
    creds = aks.managed_clusters.list_cluster_user_credentials(CLUSTER.resource_group, CLUSTER.name)
    server = creds.kubeconfigs[0].value.decode()
    assert kube.url not in server
    with pytest.raises(requests.ConnectionError):
        url = server.split("server: ")[1].split()[0]
        requests.get(url, verify=str(ca.ca_pem_path), timeout=5)
    assert run(aks, "kubectl get namespace/team-a -o json").exit_code == 0, "run command still reaches it"


# ---------------------------------------------------------------------------- the kubectl pod


def test_an_entra_only_cluster_needs_the_cluster_token(aks, kube):
    result = run(aks, "kubectl get namespace/team-a -o json", token=None)
    assert result.exit_code == 1 and "You must be logged in to the server (Unauthorized)" in result.logs


def test_a_local_accounts_cluster_runs_with_its_admin_credential(arm, ca, aks, kube):
    arm.delete_managed_cluster(CLUSTER_ID)
    arm.add_managed_cluster(CLUSTER_ID, kube_server_url=kube.url, kube_ca_pem=ca.ca_pem, aad_enabled=False,
                            disable_local_accounts=False, admin_token="cluster-admin-token")  # fmt: skip
    kube.accepted_tokens.add("cluster-admin-token")
    assert run(aks, "kubectl get namespace/team-a -o json", token=None).exit_code == 0


def test_server_side_apply_get_patch_delete_as_kubectl_prints_them(aks, kube):
    manifest = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: one, namespace: team-a}\ndata: {a: '1'}\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: two, namespace: team-a}\ndata: {b: '2'}\n"
    )
    applied = run(aks, "kubectl apply --server-side --field-manager=keyless -o json -f m.yaml", {"m.yaml": manifest})
    assert applied.exit_code == 0
    listing = json.loads(applied.logs)
    assert listing["kind"] == "List" and [i["metadata"]["name"] for i in listing["items"]] == ["one", "two"]
    assert all("managedFields" not in i["metadata"] for i in listing["items"]), "stripped unless asked for"
    stored = kube.get_object("ConfigMap", NAMESPACE, "one")
    assert [(e["manager"], e["operation"]) for e in stored["metadata"]["managedFields"]] == [("keyless", "Apply")]

    got = run(
        aks, "kubectl get configmap/one configmap/gone -n team-a -o json --ignore-not-found --show-managed-fields"
    )
    obj = json.loads(got.logs)
    assert obj["kind"] == "List" and len(obj["items"]) == 1 and obj["items"][0]["metadata"]["managedFields"]

    patch = json.dumps([{"op": "add", "path": "/data/c", "value": "3"}])
    patched = run(
        aks, "kubectl patch configmap/one -n team-a --type json --patch-file p.json -o json", {"p.json": patch}
    )
    assert patched.exit_code == 0 and json.loads(patched.logs)["data"] == {"a": "1", "c": "3"}

    deleted = run(aks, "kubectl delete configmap/one configmap/gone -n team-a --ignore-not-found -o name")
    assert deleted.exit_code == 0 and deleted.logs == "configmap/one\n"
    assert kube.get_object("ConfigMap", NAMESPACE, "one") is None


def test_several_resource_types_are_listed_as_one_list(aks, kube):
    kube.put_object({"kind": "ConfigMap", "metadata": {"name": "c", "namespace": NAMESPACE}, "data": {}})
    kube.put_object({"kind": "ServiceAccount", "metadata": {"name": "s", "namespace": NAMESPACE}})
    listing = json.loads(run(aks, "kubectl get configmaps,serviceaccounts -n team-a -o json").logs)
    assert listing["kind"] == "List"
    assert [(i["kind"], i["metadata"]["name"]) for i in listing["items"]] == [
        ("ConfigMap", "c"),
        ("ServiceAccount", "default"),
        ("ServiceAccount", "s"),
    ]


@pytest.mark.parametrize(
    ("command", "code", "words"),
    [
        (
            "kubectl get configmap/gone -n team-a -o json",
            1,
            'Error from server (NotFound): configmaps "gone" not found',
        ),
        ("helm list", 127, "helm: not found"),
        ("kubectl get ns | grep team", 1, "not a shell pipeline"),
        ("kubectl get ns --watch", 1, "unknown flag: --watch"),
        ("kubectl apply -f m.yaml", 1, "only server-side apply"),
        ("kubectl apply --server-side -f missing.yaml", 1, 'the path "missing.yaml" does not exist'),
        ("kubectl exec pod/x -- sh", 1, 'unknown command "exec"'),
        ("kubectl get widgets", 1, 'doesn\'t have a resource type "widgets"'),
        ("kubectl get ns -o yaml", 1, "printer suitable for the output format"),
    ],
)
def test_what_the_pod_cannot_do_fails_like_kubectl(aks, kube, command, code, words):
    result = run(aks, command)
    assert result.provisioning_state == "succeeded", "the pod ran; the command failed"
    assert result.exit_code == code and words in result.logs, result.logs


def test_a_conflicting_apply_without_force_is_refused_by_the_api_server(aks, kube):
    kube.put_object({"kind": "ConfigMap", "metadata": {"name": "shared", "namespace": NAMESPACE}, "data": {"a": "x"}},
                    field_manager="helm")  # fmt: skip
    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: shared, namespace: team-a}\ndata: {a: 'y'}\n"
    result = run(aks, "kubectl apply --server-side --field-manager=keyless -f m.yaml", {"m.yaml": manifest})
    assert result.exit_code == 1 and "Error from server (Conflict)" in result.logs
    forced = run(aks, "kubectl apply --server-side --force-conflicts --field-manager=keyless -f m.yaml",
                 {"m.yaml": manifest})  # fmt: skip
    assert forced.exit_code == 0 and forced.logs == "configmap/shared serverside-applied\n"
