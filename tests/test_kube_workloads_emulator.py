"""The Kubernetes emulator's workload half: admission, the v1.6 workload-identity webhook, the
Deployment controller (a new template = new pods) and the kubelet, driven through the real client.

The webhook's behaviour is checked against tests/reference/azure-workload-identity (the docs at
tag v1.6.0) and the v1.6 notes in tests/reference/SOURCES.md: the saved quick-start still shows
the v1.5 token path, so the test reads the notes, not the quick-start, for the path and volume name.
"""

from __future__ import annotations

import hashlib
import json
import re

import kubernetes
import pytest
import urllib3
from kubernetes.client import ApiException

from tests.emulators.kube import (
    DEFAULT_TENANT_ID,
    KubeEmulator,
    WebhookDenied,
    workload_identity_webhook,
)
from tests.test_kube_emulator import TOKEN, make_api, reference_dir, reference_validator

WI_DOCS = "azure-workload-identity/docs/book/src"
CLIENT_ID = "azure.workload.identity/client-id"
TENANT_ID = "azure.workload.identity/tenant-id"
USE = "azure.workload.identity/use"
TOKEN_FILE = "/var/run/secrets/azure/wi/token/azure-identity-token"


@pytest.fixture(scope="module")
def server(ca):
    emulator = KubeEmulator(ca).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def kube(server: KubeEmulator) -> KubeEmulator:
    server.reset()
    server.add_namespace("team")
    return server


@pytest.fixture
def core(kube, ca) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(make_api(kube, ca))


@pytest.fixture
def apps(kube, ca) -> kubernetes.client.AppsV1Api:
    return kubernetes.client.AppsV1Api(make_api(kube, ca))


def sa(kube, name="app", **annotations):
    kube.put_object(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": "team", "annotations": annotations},
        }
    )


def deployment(name="web", sa_name="app", labels=None, env=None, replicas=1, annotations=None) -> dict:
    container = {"name": "app", "image": "nginx:1.27"}
    if env is not None:
        container["env"] = env
    template_meta = {"labels": {"app": name, **(labels or {})}}
    if annotations:
        template_meta["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "team"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": template_meta,
                "spec": {"serviceAccountName": sa_name, "containers": [container]},
            },
        },
    }


def pods_of(kube, name="web") -> list[dict]:
    kube.sync()
    with kube._lock:
        return sorted(
            (s.obj for k, s in kube._objects.items() if k[0] == "Pod" and k[2].startswith(name + "-")),
            key=lambda p: p["metadata"]["name"],
        )


def env_of(pod: dict, container: int = 0) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in pod["spec"]["containers"][container].get("env") or []}


# --------------------------------------------------------------------------- the webhook, against the reference


def test_the_injected_names_are_the_ones_the_reference_documents():
    docs = (reference_dir() / WI_DOCS / "installation" / "mutating-admission-webhook.md").read_text()
    documented = set(re.findall(r"\| `(AZURE_[A-Z_]+)`", docs))
    assert documented == {"AZURE_AUTHORITY_HOST", "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE"}
    labels = (reference_dir() / WI_DOCS / "topics" / "service-account-labels-and-annotations.md").read_text()
    for name in (USE, CLIENT_ID, TENANT_ID, "azure.workload.identity/service-account-token-expiration",
                 "azure.workload.identity/skip-containers"):  # fmt: skip
        assert f"`{name}`" in labels
    assert "`3600` (acceptable range: `3600 - 86400`)" in labels
    notes = (reference_dir() / "SOURCES.md").read_text()
    assert f"`{TOKEN_FILE}`" in notes and "`azure-workload-identity-reserved-`" in notes

    pod = {"metadata": {"name": "p", "labels": {USE: "true"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    account = {"metadata": {"annotations": {CLIENT_ID: "cid"}}}
    mutated = workload_identity_webhook(pod, account, "tid", "https://login.microsoftonline.com/")
    container = mutated["spec"]["containers"][0]
    assert {e["name"] for e in container["env"]} == documented
    assert env_of(mutated)["AZURE_FEDERATED_TOKEN_FILE"] == TOKEN_FILE
    (volume,) = mutated["spec"]["volumes"]
    assert volume["name"] == "azure-workload-identity-reserved-" + hashlib.sha256(b"p").hexdigest()[:30]
    assert len(volume["name"]) == 63
    token = volume["projected"]["sources"][0]["serviceAccountToken"]
    assert token == {
        "audience": "api://AzureADTokenExchange",
        "expirationSeconds": 3600,
        "path": "token/azure-identity-token",
    }
    assert container["volumeMounts"] == [
        {"name": volume["name"], "readOnly": True, "mountPath": "/var/run/secrets/azure/wi"}
    ]


def test_webhook_skips_the_client_id_silently_when_the_annotation_is_missing():
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    mutated = workload_identity_webhook(pod, {"metadata": {}}, "tid", "https://login.microsoftonline.com/")
    assert "AZURE_CLIENT_ID" not in env_of(mutated)
    assert env_of(mutated)["AZURE_TENANT_ID"] == "tid"
    assert mutated["spec"]["volumes"], "the token volume is injected all the same"


def test_webhook_keeps_existing_variables_honours_skip_containers_and_the_tenant_annotation():
    pod = {
        "metadata": {"generateName": "web-abc-", "annotations": {"azure.workload.identity/skip-containers": "side; x"}},
        "spec": {
            "initContainers": [{"name": "init", "image": "i"}],
            "containers": [
                {"name": "app", "image": "i", "env": [{"name": "AZURE_CLIENT_ID", "value": "mine"}]},
                {"name": "side", "image": "i"},
            ],
        },
    }
    account = {"metadata": {"annotations": {CLIENT_ID: "cid", TENANT_ID: "other-tenant"}}}
    mutated = workload_identity_webhook(pod, account, "tid", "https://login.microsoftonline.com/")
    assert env_of(mutated)["AZURE_CLIENT_ID"] == "mine", "existing variables are never replaced"
    assert env_of(mutated)["AZURE_TENANT_ID"] == "other-tenant"
    assert "env" not in mutated["spec"]["containers"][1] and "volumeMounts" not in mutated["spec"]["containers"][1]
    assert mutated["spec"]["initContainers"][0]["env"][0] == {"name": "AZURE_CLIENT_ID", "value": "cid"}
    # a pod whose name is not generated yet is hashed as "<generateName> (prefix)"
    expected = hashlib.sha256(b"web-abc- (prefix)").hexdigest()[:30]
    assert mutated["spec"]["volumes"][0]["name"].endswith(expected)


@pytest.mark.parametrize(
    "pod_value, sa_value, expected",
    [(None, None, 3600), (None, "86400", 86400), ("4000", "4800", 4000), ("3599", None, "not valid"),
     ("86401", None, "not valid"), ("3600s", None, "invalid syntax")],
)  # fmt: skip
def test_token_expiration_precedence_and_bounds(pod_value, sa_value, expected):
    key = "azure.workload.identity/service-account-token-expiration"
    pod = {"metadata": {"name": "p", "annotations": {key: pod_value} if pod_value else {}}, "spec": {"containers": []}}
    account = {"metadata": {"annotations": {key: sa_value} if sa_value else {}}}
    if isinstance(expected, str):
        with pytest.raises(WebhookDenied, match=expected):
            workload_identity_webhook(pod, account, "t", "a")
        return
    mutated = workload_identity_webhook(pod, account, "t", "a")
    assert (
        mutated["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"] == expected
    )


# --------------------------------------------------------------------------- admission through the API


def test_a_labelled_pod_created_through_the_api_is_mutated_at_admission(core, kube):
    sa(kube, **{CLIENT_ID: "cid"})
    body = {
        "metadata": {"name": "p1", "labels": {USE: "true"}},
        "spec": {"serviceAccountName": "app", "containers": [{"name": "c", "image": "busybox"}]},
    }
    pod = core.create_namespaced_pod("team", body)
    env = {e.name: e.value for e in pod.spec.containers[0].env}
    assert env["AZURE_CLIENT_ID"] == "cid" and env["AZURE_TENANT_ID"] == DEFAULT_TENANT_ID
    assert env["AZURE_FEDERATED_TOKEN_FILE"] == TOKEN_FILE
    assert env["AZURE_AUTHORITY_HOST"] == "https://login.microsoftonline.com/"
    names = [v.name for v in pod.spec.volumes]
    assert names[0].startswith("kube-api-access-") and names[1].startswith("azure-workload-identity-reserved-")
    assert core.read_namespaced_pod("p1", "team").status.phase == "Running"

    # annotating the service account later changes nothing in a running pod: only creation is mutated
    sa(kube, **{CLIENT_ID: "new"})
    again = core.read_namespaced_pod("p1", "team")
    assert {e.name: e.value for e in again.spec.containers[0].env}["AZURE_CLIENT_ID"] == "cid"


def test_an_unlabelled_pod_or_a_disabled_webhook_is_not_mutated(core, kube):
    sa(kube, **{CLIENT_ID: "cid"})
    plain = {
        "metadata": {"name": "p1"},
        "spec": {"serviceAccountName": "app", "containers": [{"name": "c", "image": "b"}]},
    }
    assert core.create_namespaced_pod("team", plain).spec.containers[0].env is None
    kube.webhook_enabled = False
    labelled = {**plain, "metadata": {"name": "p2", "labels": {USE: "true"}}}
    assert core.create_namespaced_pod("team", labelled).spec.containers[0].env is None


def test_a_pod_with_a_missing_service_account_is_forbidden_and_every_namespace_has_a_default_one(core, kube):
    body = {
        "metadata": {"name": "p1"},
        "spec": {"serviceAccountName": "ghost", "containers": [{"name": "c", "image": "b"}]},
    }
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("team", body)
    assert err.value.status == 403
    message = json.loads(err.value.body)["message"]
    assert (
        message
        == 'pods "p1" is forbidden: error looking up service account team/ghost: serviceaccount "ghost" not found'
    )
    assert core.read_namespaced_service_account("default", "team").metadata.name == "default"
    body["spec"].pop("serviceAccountName")
    assert core.create_namespaced_pod("team", body).spec.service_account_name == "default"


def test_an_invalid_token_expiration_is_denied_by_the_webhook(core, kube):
    sa(kube, **{"azure.workload.identity/service-account-token-expiration": "100"})
    body = {
        "metadata": {"name": "p1", "labels": {USE: "true"}},
        "spec": {"serviceAccountName": "app", "containers": [{"name": "c", "image": "b"}]},
    }
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("team", body)
    assert err.value.status == 400
    assert json.loads(err.value.body)["message"] == (
        'admission webhook "mutation.azure-workload-identity.io" denied the request: '
        "token expiration 100 not valid. Expected value to be between 3600 and 86400"
    )


# --------------------------------------------------------------------------- the deployment controller


def test_a_deployment_gets_pods_and_a_new_template_rolls_them(apps, kube):
    sa(kube, **{CLIENT_ID: "cid"})
    apps.create_namespaced_deployment("team", deployment(replicas=2))
    first = pods_of(kube)
    assert len(first) == 2 and all(p["status"]["phase"] == "Running" for p in first)
    assert first[0]["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
    assert "AZURE_CLIENT_ID" not in env_of(first[0]), "not labelled: the webhook leaves it alone"

    patch = {"spec": {"template": {"metadata": {"labels": {USE: "true"}}}}}
    apps.patch_namespaced_deployment("web", "team", patch)
    second = pods_of(kube)
    assert len(second) == 2 and not {p["metadata"]["name"] for p in second} & {p["metadata"]["name"] for p in first}
    assert env_of(second[0])["AZURE_CLIENT_ID"] == "cid"
    status = apps.read_namespaced_deployment("web", "team").status
    assert (status.replicas, status.updated_replicas, status.ready_replicas) == (2, 2, 2)

    # a change outside the template (or of the service account) rolls nothing
    apps.patch_namespaced_deployment("web", "team", {"metadata": {"labels": {"x": "y"}}})
    sa(kube, **{CLIENT_ID: "other"})
    assert [p["metadata"]["name"] for p in pods_of(kube)] == [p["metadata"]["name"] for p in second]

    apps.delete_namespaced_deployment("web", "team")
    assert pods_of(kube) == []


def test_old_pods_stay_until_the_new_ones_run(apps, kube):
    sa(kube)
    apps.create_namespaced_deployment("team", deployment())
    (old,) = pods_of(kube)
    kube.pod_start_seconds = 30
    apps.patch_namespaced_deployment("web", "team", {"spec": {"template": {"metadata": {"labels": {USE: "true"}}}}})
    pods = pods_of(kube)
    assert len(pods) == 2
    new = next(p for p in pods if p["metadata"]["name"] != old["metadata"]["name"])
    assert new["status"]["phase"] == "Pending"
    assert apps.read_namespaced_deployment("web", "team").status.updated_replicas == 1
    kube.clock.advance(31)
    assert [p["metadata"]["name"] for p in pods_of(kube)] == [new["metadata"]["name"]]
    assert pods_of(kube)[0]["status"]["phase"] == "Running"


def test_a_missing_service_account_shows_as_replica_failure(apps, kube):
    apps.create_namespaced_deployment("team", deployment(sa_name="ghost"))
    assert pods_of(kube) == []
    conditions = {c.type: c for c in apps.read_namespaced_deployment("web", "team").status.conditions}
    assert conditions["ReplicaFailure"].reason == "FailedCreate"
    assert 'serviceaccount "ghost" not found' in conditions["ReplicaFailure"].message
    sa(kube, name="ghost")
    assert len(pods_of(kube)) == 1
    conditions = {c.type for c in apps.read_namespaced_deployment("web", "team").status.conditions}
    assert "ReplicaFailure" not in conditions


def test_a_missing_configmap_keeps_the_pod_pending_with_create_container_config_error(apps, kube):
    sa(kube)
    body = deployment()
    body["spec"]["template"]["spec"]["containers"][0]["envFrom"] = [{"configMapRef": {"name": "settings"}}]
    apps.create_namespaced_deployment("team", body)
    (pod,) = pods_of(kube)
    waiting = pod["status"]["containerStatuses"][0]["state"]["waiting"]
    assert (pod["status"]["phase"], waiting["reason"]) == ("Pending", "CreateContainerConfigError")
    assert waiting["message"] == 'configmap "settings" not found'
    kube.put_object({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "team"}})
    assert pods_of(kube)[0]["status"]["phase"] == "Running"


def test_a_deleted_pod_is_replaced(core, kube, apps):
    sa(kube)
    apps.create_namespaced_deployment("team", deployment())
    (pod,) = pods_of(kube)
    core.delete_namespaced_pod(pod["metadata"]["name"], "team")
    (again,) = pods_of(kube)
    assert again["metadata"]["name"] != pod["metadata"]["name"]


def test_controller_made_pods_conform_to_the_reference_openapi(apps, kube, ca):
    validator = reference_validator()
    sa(kube, **{CLIENT_ID: "cid"})
    apps.create_namespaced_deployment("team", deployment(labels={USE: "true"}))
    kube.pod_start_seconds = 60
    apps.patch_namespaced_deployment("web", "team", {"spec": {"template": {"metadata": {"labels": {"v": "2"}}}}})
    http = urllib3.PoolManager(ca_certs=str(ca.ca_pem_path))
    for path in ("/api/v1/namespaces/team/pods", "/apis/apps/v1/namespaces/team/deployments/web"):
        response = http.request("GET", kube.url + path, headers={"Authorization": f"Bearer {TOKEN}"})
        body = json.loads(response.data)
        assert validator.errors(body, validator.response_schema("GET", path, 200)) == [], body
    assert len(pods_of(kube)) == 2, "one running, one starting"
