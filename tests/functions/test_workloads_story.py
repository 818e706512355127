"""The seed's story through the Functions app: an `ai-service` Deployment that reads an OpenAI key
from a Secret → onboard with `workloads: [ai-service]` → new pods carry the label and the injected
variables and no key → verification passes → the account (opted in) is switched to keyless.
"""

from __future__ import annotations

import json

import pytest

from shared.app import composition
from tests.conftest import ACCOUNT_ID, CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT
from tests.e2e.test_workloads import AI, SECRET_LITERAL, ai_service, env, pods


@pytest.fixture(autouse=True)
def no_pacing(monkeypatch):
    """No client-side ARM pacing here: it would only add waits (Azure's limits are tested elsewhere)."""
    monkeypatch.setenv("KEYLESS_ARM_PACING_SCALE", "0")


REQUEST = {
    "cluster": CLUSTER_ID,
    "namespace": NAMESPACE,
    "serviceAccount": SERVICE_ACCOUNT,
    "openAIAccount": ACCOUNT_ID,
    "workloads": [AI],
}


def get(host, key: str, suffix: str = "") -> tuple[int, dict]:
    name = "onboardings_verification" if suffix else "onboardings_get"
    status, body, _ = host.http(name, "GET", f"/api/onboardings/{key}{suffix}", route_params={"id": key})
    return status, body


def test_the_seed_story_ends_keyless(host, arm, kube):
    arm.set_tags(ACCOUNT_ID, {"keyless-enforce": "true"})
    ai_service(kube, extra_env=[{"name": "AZURE_OPENAI_API_KEY", "value": SECRET_LITERAL}])
    assert all("OPENAI_API_KEY" in env(p) for p in pods(kube))

    status, plan, _ = host.http("onboardings_create", "POST", "/api/onboardings", REQUEST, params={"dryRun": "true"})
    assert status == 200, plan
    step = next(s for s in plan["plan"]["steps"] if s["step"] == f"deployment/{AI}")
    assert step["details"]["serverSideApply"]["spec"]["template"]["metadata"]["labels"]
    assert {op["op"] for op in step["details"]["jsonPatch"]} == {"test", "remove"}
    assert plan["binding"]["workloads"] == [AI]
    assert kube.log.writes() == [] and arm.log.writes() == []

    status, created, _ = host.http("onboardings_create", "POST", "/api/onboardings", REQUEST)
    assert status == 202 and created["workloads"] == [AI]
    host.drain()
    assert host.failures == []

    status, record = get(host, created["id"])
    assert status == 200 and record["status"] == "verified", json.dumps(record, indent=1)
    assert record["verification"]["status"] == "pass"
    assert any(s["step"] == f"deployment/{AI}" and s["outcome"] == "updated" for s in record["steps"])

    client_id = arm.identities()[0]["properties"]["clientId"]
    for pod in pods(kube):
        variables = env(pod)
        assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
        assert variables["AZURE_CLIENT_ID"]["value"] == client_id
        assert {"AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST"} <= set(variables)
        assert "OPENAI_API_KEY" not in variables and "AZURE_OPENAI_API_KEY" not in variables

    status, report = get(host, created["id"], "/verification")
    assert status == 200 and report["status"] == "pass", json.dumps(report, indent=1)
    assert report["onboardingStatus"] == "verified"
    assert report["keylessAccount"]["optedIn"] is True and report["keylessAccount"]["blockers"] == []
    assert arm.cognitive_account(ACCOUNT_ID)["properties"]["disableLocalAuth"] is True
    assert report["keylessAccount"]["localAuthEnabled"] in (True, False)  # read may predate the switch

    everything = json.dumps([record, report, plan, [r.__dict__ for r in composition.service().ledger.all()]])
    assert SECRET_LITERAL not in everything

    # A second pass (the drift sweep) writes nothing: not to the cluster, not to the account.
    kube.log.clear()
    arm.log.clear()
    host.timer()
    host.drain()
    assert kube.log.writes() == [] and arm.log.writes() == []
    assert get(host, created["id"])[1]["status"] == "verified"


def test_keys_stay_on_while_another_binding_of_the_account_is_not_verified(host, arm, kube):
    arm.set_tags(ACCOUNT_ID, {"keyless-enforce": "true"})
    ai_service(kube)
    # a second team on the same account, whose pods still use the key and are not named
    kube.add_namespace("team-b")
    kube.put_object(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "legacy", "namespace": "team-b"}}
    )
    legacy = ai_service(kube, name="legacy")
    legacy["metadata"]["namespace"] = "team-b"
    legacy["spec"]["template"]["spec"]["serviceAccountName"] = "legacy"
    del legacy["metadata"]["managedFields"]
    kube.put_object(legacy, field_manager="helm")
    other = {**REQUEST, "namespace": "team-b", "serviceAccount": "legacy", "workloads": []}
    assert host.http("onboardings_create", "POST", "/api/onboardings", other)[0] == 202
    status, created, _ = host.http("onboardings_create", "POST", "/api/onboardings", REQUEST)
    host.drain()
    assert get(host, created["id"])[1]["status"] == "verified"
    status, report = get(host, created["id"], "/verification")
    blockers = report["keylessAccount"]["blockers"]
    assert any("team-b/legacy" in b and "is ready" in b for b in blockers)
    assert any("pod team-b/legacy-" in b and "uses an API key" in b for b in blockers)
    assert arm.cognitive_account(ACCOUNT_ID)["properties"]["disableLocalAuth"] is False, "never while keys are in use"


def test_changing_the_workloads_updates_the_same_onboarding(host, arm, kube):
    ai_service(kube)
    first = {**REQUEST, "workloads": []}
    status, created, _ = host.http("onboardings_create", "POST", "/api/onboardings", first)
    host.drain()
    status, again, _ = host.http("onboardings_create", "POST", "/api/onboardings", first)
    assert status == 200, "the same request again changes nothing"
    status, updated, _ = host.http("onboardings_create", "POST", "/api/onboardings", REQUEST)
    assert status == 202 and updated["id"] == created["id"] and updated["workloads"] == [AI]
    host.drain()
    assert get(host, created["id"])[1]["status"] == "verified"
    bad = {**REQUEST, "workloads": ["Not_A_Name"]}
    status, error, _ = host.http("onboardings_create", "POST", "/api/onboardings", bad)
    assert status == 400 and error["error"]["field"] == "workloads"


def test_verification_endpoint_errors(host, arm, kube):
    status, body = get(host, "0" * 32, "/verification")
    assert status == 404
    status, body, _ = host.http("onboardings_verification", "GET", "/x", route_params={"id": "nope"})
    assert status == 400 and body["error"]["field"] == "id"
    status, created, _ = host.http("onboardings_create", "POST", "/api/onboardings", REQUEST)
    status, body, _ = host.http(
        "onboardings_verification", "GET", "/x", route_params={"id": created["id"]}, principal=None
    )
    assert status == 401


def test_the_cluster_tags_can_name_the_deployments_too(host, arm, kube):
    """`keyless-workloads-deployments` opts a tagged binding into workload enforcement; taking the
    Deployment out of the tag releases it (the binding stays)."""
    from tests.functions.test_app import cluster_event, consent_to_cluster, records

    ai_service(kube)
    consent_to_cluster(arm)
    tags = {
        "keyless-workloads": f"{NAMESPACE}/{SERVICE_ACCOUNT}",
        "keyless-openai-account": ACCOUNT_ID,
        "keyless-workloads-deployments": f"{NAMESPACE}/{SERVICE_ACCOUNT}={AI}",
    }
    arm.set_tags(CLUSTER_ID, tags)
    host.event(cluster_event())
    host.drain()
    (record,) = records()
    assert record.workloads == [AI] and record.status == "verified", record.as_api()
    assert all("OPENAI_API_KEY" not in env(p) and "AZURE_CLIENT_ID" in env(p) for p in pods(kube))

    arm.set_tags(CLUSTER_ID, {k: v for k, v in tags.items() if k != "keyless-workloads-deployments"})
    host.event(cluster_event())
    host.drain()
    (record,) = records()
    assert record.workloads == [] and record.status in ("ready", "verified"), record.as_api()
    released = kube.get_object("Deployment", NAMESPACE, AI)
    assert "keyless.io/binding" not in released["metadata"].get("labels", {})
    assert "keyless" not in {e["manager"] for e in released["metadata"]["managedFields"]}, "every field given back"
    assert "azure.workload.identity/use" not in released["spec"]["template"]["metadata"].get("labels", {})
    assert any(s["step"] == f"deployment/{AI}" and s["outcome"] != "unchanged" for s in record.as_api()["steps"])
