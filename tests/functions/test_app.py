"""The Functions app end to end: HTTP API, Event Grid events, the queue worker, the drift sweep."""

from __future__ import annotations

import base64
import copy
import json
import uuid

import pytest

from shared.app import composition
from tests.conftest import ACCOUNT_ID, CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT, SUB
from tests.reference_data import reference_dir

SAMPLES = reference_dir() / "event-grid-samples"
EG_DIR = (
    SAMPLES / "azure-rest-api-specs/specification/eventgrid/data-plane/Microsoft.Resources/stable/2018-01-01/examples"
)
REQUEST = {
    "cluster": CLUSTER_ID,
    "namespace": NAMESPACE,
    "serviceAccount": SERVICE_ACCOUNT,
    "openAIAccount": ACCOUNT_ID,
}


def sample(schema: str, name: str) -> dict:
    path = EG_DIR / schema / f"{name}.json"
    assert path.exists(), f"reference sample missing: {path} (see tests/reference/SOURCES.md)"
    return json.loads(path.read_text())


def arm_event(schema: str, change: str, resource_id: str, operation: str) -> dict:
    """A real sample event, pointed at our resource (only ids and operation changed)."""
    event = copy.deepcopy(sample(schema, f"resource_{change}_success"))
    event["id"] = str(uuid.uuid4())
    # Event Grid writes `resourcegroups` in lower case: keep that quirk.
    uri = resource_id.replace("/resourceGroups/", "/resourcegroups/")
    event["subject"] = uri
    event["data"]["resourceUri"] = uri
    event["data"]["operationName"] = operation
    event["data"]["authorization"]["scope"] = uri
    event["data"]["subscriptionId"] = SUB
    return event


def cluster_event(schema="event-grid-schema", change="write"):
    return arm_event(schema, change, CLUSTER_ID, f"Microsoft.ContainerService/managedClusters/{change}")


def consent_to_cluster(arm, account=ACCOUNT_ID, cluster=CLUSTER_ID):
    """The account's owner lets the cluster's tags ask for bindings on it (tags merged)."""
    tags = dict((arm.cognitive_account(account) or {}).get("tags") or {})
    tags["keyless-allowed-clusters"] = cluster
    arm.set_tags(account, tags)


def tag_cluster(arm, workloads=f"{NAMESPACE}/{SERVICE_ACCOUNT}", account=ACCOUNT_ID, consent=True):
    """Tag the cluster (and, with `consent`, have the named account consent to it)."""
    tags = {"keyless-workloads": workloads}
    if account:
        tags["keyless-openai-account"] = account
        if consent:
            consent_to_cluster(arm, account)
    arm.set_tags(CLUSTER_ID, tags)


def records(cluster=CLUSTER_ID):
    return list(composition.service().ledger.all(cluster=cluster))


# --- HTTP API -------------------------------------------------------------------------------


def test_api_round_trip_post_worker_get_delete(host, arm, kube):
    status, body, resp = host.http("onboardings_create", "POST", "/api/onboardings", REQUEST)
    assert status == 202, body
    assert resp.headers["Location"] == f"/api/onboardings/{body['id']}"
    assert body["status"] == "pending"
    raw = host.raw_messages()
    assert len(raw) == 1
    assert json.loads(base64.b64decode(raw[0])) == {
        "kind": "binding",
        "key": body["id"],
        "reason": "onboarding requested",
    }

    again_status, again, _ = host.http("onboardings_create", "POST", "/api/onboardings", REQUEST)
    assert again_status == 200 and again["id"] == body["id"]
    assert len(host.raw_messages()) == 1, "an idempotent repeat queues nothing"

    host.drain()
    status, got, _ = host.http(
        "onboardings_get", "GET", f"/api/onboardings/{body['id']}", route_params={"id": body["id"]}
    )
    assert status == 200
    assert got["status"] == "ready", got
    identity = arm.identities()[0]
    assert got["identity"]["clientId"] == identity["properties"]["clientId"]
    assert got["federatedCredential"]["subject"] == f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
    assert got["roleAssignmentId"]
    assert got["attempts"] == 1 and got["requestedBy"]
    assert {s["step"] for s in got["steps"]} >= {"identity", "federated-credential", "role-assignment"}

    status, listed, _ = host.http(
        "onboardings_list", "GET", "/api/onboardings", params={"cluster": CLUSTER_ID.lower(), "namespace": NAMESPACE}
    )
    assert status == 200 and [r["id"] for r in listed["value"]] == [body["id"]]

    status, deleted, _ = host.http(
        "onboardings_delete", "DELETE", f"/api/onboardings/{body['id']}", route_params={"id": body["id"]}
    )
    assert status == 202 and deleted["status"] == "offboarding"
    host.drain()
    _, gone, _ = host.http("onboardings_get", "GET", "/", route_params={"id": body["id"]})
    assert gone["status"] == "removed", gone
    assert arm.identities() == [] and arm.role_assignments(ACCOUNT_ID) == []
    assert kube.get_object("ServiceAccount", NAMESPACE, SERVICE_ACCOUNT) is None


def test_dry_run_plans_with_reads_only(host, arm, kube):
    status, body, _ = host.http("onboardings_create", "POST", "/api/onboardings", REQUEST, params={"dryRun": "true"})
    assert status == 200, body
    steps = {s["step"]: s["outcome"] for s in body["plan"]["steps"]}
    assert steps["identity"] == "created" and steps["role-assignment"] == "created"
    assert steps["service-account"] == "created" and steps["configmap"] == "created"
    assert arm.log.writes() == [] and kube.log.writes() == []
    assert host.raw_messages() == []
    assert records() == []


@pytest.mark.parametrize(
    "change, field",
    [
        ({"namespace": "Bad_NS"}, "namespace"),
        ({"namespace": "x" * 64}, "namespace"),
        ({"serviceAccount": "a:b"}, "serviceAccount"),
        ({"serviceAccount": "a/b"}, "serviceAccount"),
        ({"cluster": ACCOUNT_ID}, "cluster"),
        ({"cluster": CLUSTER_ID + "/agentPools/x"}, "cluster"),
        ({"openAIAccount": CLUSTER_ID}, "openAIAccount"),
        ({"openAIAccount": None}, "openAIAccount"),
        ({"role": "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"}, "role"),
        ({"extra": 1}, "extra"),
    ],
)
def test_each_validation_rule_is_a_400_naming_the_field(host, change, field):
    body = {**REQUEST, **change}
    body = {k: v for k, v in body.items() if v is not None}
    status, err, _ = host.http("onboardings_create", "POST", "/api/onboardings", body)
    assert status == 400, err
    assert err["error"]["field"] == field
    assert host.raw_messages() == []


def test_transport_rules(host):
    status, err, _ = host.http("onboardings_create", "POST", "/", raw=b"x" * (64 * 1024 + 1))
    assert status == 413 and err["error"]["field"] == "body"
    status, err, _ = host.http("onboardings_create", "POST", "/", raw=b"{not json")
    assert status == 400 and err["error"]["code"] == "InvalidJson"
    status, err, _ = host.http("onboardings_create", "POST", "/", raw=b"[]")
    assert status == 400
    status, err, _ = host.http(
        "onboardings_create", "POST", "/", raw=json.dumps(REQUEST).encode(), headers={"Content-Type": "text/plain"}
    )
    assert status == 415
    nested: dict = {}
    cur = nested
    for _ in range(50):
        cur["a"] = {}
        cur = cur["a"]
    status, err, _ = host.http("onboardings_create", "POST", "/", {**REQUEST, "x": nested})
    assert status == 400
    status, err, _ = host.http("onboardings_get", "GET", "/", route_params={"id": "../../etc"})
    assert status == 400 and err["error"]["field"] == "id"
    status, err, _ = host.http("onboardings_get", "GET", "/", route_params={"id": "0" * 32})
    assert status == 404
    status, err, _ = host.http("onboardings_list", "GET", "/", params={"pageSize": "0"})
    assert status == 400 and err["error"]["field"] == "pageSize"
    status, err, _ = host.http("onboardings_create", "POST", "/", REQUEST, params={"dryRun": "maybe"})
    assert status == 400 and err["error"]["field"] == "dryRun"


def test_list_is_paged(host, arm, kube):
    for i in range(3):
        kube.add_namespace(f"ns-{i}")
        status, _, _ = host.http("onboardings_create", "POST", "/", {**REQUEST, "namespace": f"ns-{i}"})
        assert status == 202
    seen = []
    token = None
    for _ in range(3):
        params = {"pageSize": "2"} | ({"continuationToken": token} if token else {})
        _, page, _ = host.http("onboardings_list", "GET", "/", params=params)
        seen += [r["namespace"] for r in page["value"]]
        token = page.get("continuationToken")
        if not token:
            break
    assert sorted(seen) == ["ns-0", "ns-1", "ns-2"]


def test_openapi_and_health(host):
    status, doc, _ = host.http("openapi", "GET", "/api/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    assert {"/onboardings", "/onboardings/{id}", "/health", "/openapi.json"} <= set(doc["paths"])
    status, health, _ = host.http("health", "GET", "/api/health")
    assert status == 200 and health["status"] == "healthy"


def test_health_reports_unreachable_storage(monkeypatch, app_env):
    from tests.functions.conftest import app_functions

    monkeypatch.setenv(
        "AzureWebJobsStorage",
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        "AccountKey=" + base64.b64encode(b"k" * 32).decode() + ";"
        "QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;TableEndpoint=http://127.0.0.1:9/devstoreaccount1",
    )
    composition.reset()
    health = app_functions()["health"]
    import azure.functions as func

    resp = health(func.HttpRequest(method="GET", url="/api/health", body=b""))
    assert resp.status_code == 503
    assert "AccountKey" not in resp.get_body().decode()


# --- Event Grid -----------------------------------------------------------------------------


@pytest.mark.parametrize("schema", ["event-grid-schema", "cloud-events-schema"])
def test_cluster_event_drives_tagged_workloads_to_ready(host, arm, kube, schema):
    tag_cluster(arm)
    host.event(cluster_event(schema))
    assert len(host.raw_messages()) == 1
    host.drain()
    (record,) = records()
    assert record.status == "ready", record.as_api()
    assert record.source == "cluster-tags"
    assert len(arm.identities()) == 1

    arm.log.clear()
    host.event(cluster_event(schema))  # a duplicate delivery
    host.event(cluster_event(schema))  # our own follow-up write (same event type, new id)
    host.drain()
    assert arm.log.writes() == [], "duplicates and our own follow-up events write nothing"


def test_cluster_enabled_by_us_raises_an_event_that_converges_without_writes(host, arm, kube, ca):
    arm.delete_managed_cluster(CLUSTER_ID)
    arm.add_managed_cluster(
        CLUSTER_ID,
        kube_server_url=kube.url,
        kube_ca_pem=ca.ca_pem,
        oidc_issuer_enabled=False,
        workload_identity_enabled=False,
        tags={"keyless-workloads": f"{NAMESPACE}/{SERVICE_ACCOUNT}", "keyless-openai-account": ACCOUNT_ID},
    )
    consent_to_cluster(arm)
    host.event(cluster_event())
    host.drain()
    (record,) = records()
    assert record.status == "not-ready" and "cluster" in record.reason
    arm.clock.advance(arm.cluster_update_seconds + 1)
    host.event(cluster_event())  # the write event of our own cluster update
    host.drain(deadline_seconds=30)
    (record,) = records()
    assert record.status == "ready", record.as_api()
    assert len(arm.log.matching("PUT", "managedClusters")) == 1


def test_delete_event_offboards(host, arm, kube):
    tag_cluster(arm)
    host.event(cluster_event())
    host.drain()
    assert len(arm.identities()) == 1
    arm.delete_managed_cluster(CLUSTER_ID)
    host.event(cluster_event(change="delete"))
    host.drain()
    (record,) = records()
    assert record.status == "removed", record.as_api()
    assert arm.identities() == [] and arm.role_assignments(ACCOUNT_ID) == []


def test_workload_removed_from_tags_is_offboarded(host, arm, kube):
    kube.add_namespace("team-b")
    tag_cluster(arm, workloads=f"{NAMESPACE}/{SERVICE_ACCOUNT},team-b/worker")
    host.event(cluster_event())
    host.drain()
    assert sorted(r.status for r in records()) == ["ready", "ready"]
    tag_cluster(arm, workloads="team-b/worker")
    host.event(cluster_event())
    host.drain()
    by_ns = {r.namespace: r.status for r in records()}
    assert by_ns == {NAMESPACE: "removed", "team-b": "ready"}
    assert len(arm.identities()) == 1


def test_ambiguous_account_is_recorded_failed_never_guessed(host, arm, kube):
    rg = CLUSTER_ID.split("/providers/")[0]
    arm.add_cognitive_account(f"{rg}/providers/Microsoft.CognitiveServices/accounts/oai-one")
    arm.add_cognitive_account(f"{rg}/providers/Microsoft.CognitiveServices/accounts/oai-two")
    tag_cluster(arm, account=None)
    host.event(cluster_event())
    host.drain()
    (record,) = records()
    assert record.status == "failed" and "ambiguous" in record.reason
    assert arm.identities() == []


def test_only_account_in_the_group_is_chosen(host, arm, kube):
    rg = CLUSTER_ID.split("/providers/")[0]
    only = f"{rg}/providers/Microsoft.CognitiveServices/accounts/oai-only"
    arm.add_cognitive_account(only)
    consent_to_cluster(arm, only)
    tag_cluster(arm, account=None)
    host.event(cluster_event())
    host.drain()
    (record,) = records()
    assert record.status == "ready" and record.account.lower() == only.lower()


def test_new_deployment_updates_the_workload_configmap(host, arm, kube):
    tag_cluster(arm)
    host.event(cluster_event())
    host.drain()
    (record,) = records()
    binding = record.binding(("5e0bd9bd-7b93-4f28-af87-19fc36ad61bd",))
    arm.add_deployment(ACCOUNT_ID, "aaa-first", "gpt-4o-mini", "2024-07-18")
    host.event(
        arm_event(
            "event-grid-schema",
            "write",
            f"{ACCOUNT_ID}/deployments/aaa-first",
            "Microsoft.CognitiveServices/accounts/deployments/write",
        )
    )
    host.drain()
    cm = kube.get_object("ConfigMap", NAMESPACE, binding.configmap_name)
    assert "aaa-first" in cm["data"]["AZURE_OPENAI_DEPLOYMENTS"]


def test_account_delete_offboards_its_bindings(host, arm, kube):
    host.http("onboardings_create", "POST", "/", REQUEST)
    host.drain()
    arm.delete_cognitive_account(ACCOUNT_ID)  # the worker asks ARM; the event alone is not believed
    host.event(arm_event("event-grid-schema", "delete", ACCOUNT_ID, "Microsoft.CognitiveServices/accounts/delete"))
    host.drain()
    (record,) = records()
    assert record.status == "removed"
    assert arm.identities() == []


@pytest.mark.parametrize(
    "mutate",
    [
        lambda e: e.pop("id"),
        lambda e: e.update(data="not an object"),
        lambda e: e["data"].update(resourceUri=12),
        lambda e: e["data"].update(
            resourceUri="/subscriptions/x/resourcegroups/rg/providers/Microsoft.ContainerService/managedClusters/a b"
        ),
        lambda e: e.update(eventType=None),
    ],
)
def test_malformed_events_are_dropped_without_exception(host, mutate, caplog):
    event = cluster_event()
    mutate(event)
    host.event(event)
    assert host.raw_messages() == []
    assert "dropped malformed event" in caplog.text


def test_other_resource_types_are_ignored(host):
    host.event(
        arm_event(
            "event-grid-schema",
            "write",
            CLUSTER_ID + "/agentPools/np1",
            "Microsoft.ContainerService/managedClusters/agentPools/write",
        )
    )
    host.event(
        arm_event(
            "event-grid-schema",
            "write",
            f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x",
            "Microsoft.ManagedIdentity/userAssignedIdentities/write",
        )
    )
    host.event(sample("event-grid-schema", "resource_action_success"))
    assert host.raw_messages() == []


def test_sample_with_camelcase_specversion_is_dropped_not_crashed(host):
    event = sample("cloud-events-schema", "resource_delete_success")
    assert "specVersion" in event
    host.event(event)
    assert host.raw_messages() == []


# --- queue and timer ------------------------------------------------------------------------


def test_drift_sweep_repairs_a_deleted_role_assignment(host, arm, kube):
    host.http("onboardings_create", "POST", "/", REQUEST)
    host.drain()
    ra = arm.role_assignments(ACCOUNT_ID)[0]
    composition.service().engine.roles.delete(SUB, ACCOUNT_ID, ra["name"])
    host.timer()
    host.drain()
    assert len(arm.role_assignments(ACCOUNT_ID)) == 1
    (record,) = records()
    assert record.status == "ready"
    assert {s["step"]: s["outcome"] for s in record.steps}["role-assignment"] == "created"


def test_bad_queue_messages_are_dropped(host):
    host.queue.send_message(base64.b64encode(b'{"kind": "nope"}').decode())
    host.queue.send_message(base64.b64encode(b"not json").decode())
    assert host.drain() == 2
    assert host.failures == []


def test_a_record_that_no_longer_validates_is_recorded_failed(host, arm, kube):
    host.http("onboardings_create", "POST", "/", REQUEST)
    svc = composition.service()
    (record,) = records()
    record.role_definition_id = "not-a-guid"
    svc.ledger.save(record)
    host.drain()
    (record,) = records()
    assert record.status == "failed" and "role" in record.reason
    assert arm.log.writes() == []
