"""Outcome events: each change of a binding's settled status is published, once, to an Event Grid
topic (the emulator, reached by the real azure-eventgrid client with the app's Entra token).
"""

from __future__ import annotations

import base64
import json
import logging
import time

import pytest

from shared.app import composition, sweep
from tests.conftest import ACCOUNT_ID, CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT
from tests.emulators.eventgrid import EVENT_GRID, EventGridTopicEmulator

REQUEST = {
    "cluster": CLUSTER_ID,
    "namespace": NAMESPACE,
    "serviceAccount": SERVICE_ACCOUNT,
    "openAIAccount": ACCOUNT_ID,
}


@pytest.fixture(autouse=True)
def no_pacing(monkeypatch):
    monkeypatch.setenv("KEYLESS_ARM_PACING_SCALE", "0")


def onboard(host) -> str:
    status, created, _ = host.http("onboardings_create", "POST", "/api/onboardings", REQUEST)
    assert status == 202, created
    host.drain()
    return created["id"]


def delete(host, key: str) -> None:
    status, _, _ = host.http("onboardings_delete", "DELETE", f"/api/onboardings/{key}", route_params={"id": key})
    assert status == 202
    host.drain()


def test_each_settled_status_is_announced_once_with_ids_only(host, arm, kube, topic):
    key = onboard(host)
    (ready,) = topic.events
    assert ready["specversion"] == "1.0" and ready["type"] == "Keyless.Onboarding.Ready"
    assert ready["source"] == "/keyless/onboardings"
    assert ready["subject"] == f"{CLUSTER_ID}/namespaces/{NAMESPACE}/serviceAccounts/{SERVICE_ACCOUNT}"
    data = ready["data"]
    identity = arm.identities()[0]
    assert data["id"] == key and data["status"] == "ready" and data["previousStatus"] is None
    assert data["identity"]["clientId"] == identity["properties"]["clientId"]
    assert data["links"]["onboarding"] == f"/api/onboardings/{key}"
    assert topic.log.items[0].content_type.startswith("application/cloudevents-batch+json")

    host.timer()  # the drift sweep over a healthy binding: nothing new to say
    host.drain()
    assert len(topic.events) == 1

    delete(host, key)
    removed = topic.events[-1]
    assert removed["type"] == "Keyless.Onboarding.Removed" and removed["data"]["previousStatus"] == "ready"
    assert len({e["id"] for e in topic.events}) == 2

    text = json.dumps(topic.events)
    assert "Bearer" not in text and "keyless-test|" not in text, "no token in an event"


def test_a_binding_that_breaks_is_announced_not_ready_then_ready_again(host, arm, kube, topic):
    key = onboard(host)
    kube.inject_fault("PATCH", "/serviceaccounts/", 500, times=10)
    sa = kube.get_object("ServiceAccount", NAMESPACE, SERVICE_ACCOUNT)
    sa["metadata"]["annotations"] = {}
    del sa["metadata"]["managedFields"]
    kube.put_object(sa, field_manager="kubectl")  # someone removed the annotations
    host.timer()
    host.drain(deadline_seconds=5)
    types = [e["type"] for e in topic.events]
    assert types[:2] == ["Keyless.Onboarding.Ready", "Keyless.Onboarding.NotReady"]
    assert topic.events[1]["data"]["reason"]
    with kube._lock:
        kube._faults.clear()
    # Not ready: its own retry is queued (the sweep does not double it); it runs after its delay.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and topic.events[-1]["type"] != "Keyless.Onboarding.Ready":
        host.timer()
        host.drain()
        time.sleep(0.1)
    assert [e["type"] for e in topic.events][-1] == "Keyless.Onboarding.Ready"
    assert topic.events[-1]["data"]["previousStatus"] == "not-ready"
    assert composition.service().ledger.get(key).announced_status == "ready"


def test_a_topic_that_is_down_delays_the_event_never_the_binding(host, arm, kube, topic, caplog, monkeypatch):
    monkeypatch.setenv("KEYLESS_RETRY_DELAY_SCALE", "0.02")  # "in a minute" becomes 1.2 s
    composition.reset()
    caplog.set_level(logging.WARNING)
    topic.inject_fault(503, times=3)  # the SDK tries 3 times: this publish fails
    key = onboard(host)
    record = composition.service().ledger.get(key)
    assert record.status in ("ready", "verified") and record.announced_status == ""
    assert topic.events == []
    assert "not published: ServiceUnavailableError" in caplog.text or "not published: HttpResponseError" in caplog.text
    # The binding was queued again (in a minute, here 1.2 s): its next run publishes.
    deadline = time.monotonic() + 20
    while not topic.events and time.monotonic() < deadline:
        host.drain()
        time.sleep(0.1)
    assert [e["data"]["status"] for e in topic.events] == [record.status]
    assert composition.service().ledger.get(key).announced_status == record.status


def test_an_event_grid_schema_topic_gets_event_grid_events(host, arm, kube, ca, monkeypatch, app_env):
    emulator = EventGridTopicEmulator(ca, input_schema=EVENT_GRID).start()
    try:
        monkeypatch.setenv("KEYLESS_OUTCOME_TOPIC_ENDPOINT", emulator.endpoint)
        monkeypatch.setenv("KEYLESS_OUTCOME_EVENT_SCHEMA", "eventgrid")
        composition.reset()
        onboard(host)
        (event,) = emulator.events
        assert event["eventType"] == "Keyless.Onboarding.Ready" and event["dataVersion"] == "1.0"
        assert event["subject"].endswith(f"/serviceAccounts/{SERVICE_ACCOUNT}")
    finally:
        emulator.stop()


def test_without_a_topic_nothing_is_published(host, arm, kube):
    onboard(host)
    assert composition.service().topic is None


def test_switching_an_account_keyless_is_announced(host, arm, kube, topic):
    from tests.e2e.test_workloads import AI, ai_service

    arm.set_tags(ACCOUNT_ID, {"keyless-enforce": "true"})
    ai_service(kube)
    status, created, _ = host.http("onboardings_create", "POST", "/api/onboardings", {**REQUEST, "workloads": [AI]})
    assert status == 202
    host.drain()
    assert arm.cognitive_account(ACCOUNT_ID)["properties"]["disableLocalAuth"] is True
    by_type = {e["type"]: e for e in topic.events}
    assert by_type["Keyless.Onboarding.Verified"]["data"]["id"] == created["id"]
    keys_off = by_type["Keyless.Account.LocalAuthDisabled"]
    assert keys_off["subject"] == ACCOUNT_ID and keys_off["source"] == "/keyless/accounts"
    assert keys_off["data"] == {
        "openAIAccount": ACCOUNT_ID,
        "disableLocalAuth": True,
        "verifiedOnboardings": [created["id"]],
    }


def test_a_binding_the_host_gave_up_on_is_recorded_failed_and_announced_never_lost(host, arm, kube, topic):
    key = onboard(host)
    record = composition.service().ledger.get(key)
    record.last_error = "internal error: RuntimeError"
    composition.service().ledger.save(record)
    body = json.dumps({"kind": "binding", "key": key, "reason": "drift sweep"})
    host.poison.send_message(base64.b64encode(body.encode()).decode())  # as the host does after 5 failures
    host.poison.send_message(base64.b64encode(b'{"kind": "cluster", "id": "nope"}').decode())  # dropped, logged
    assert host.drain_poison() == 2
    failed = composition.service().ledger.get(key)
    assert failed.status == "failed" and failed.reason == "gave up after 5 attempts: internal error: RuntimeError"
    assert topic.events[-1]["type"] == "Keyless.Onboarding.Failed"
    assert "gave up after 5 attempts" in topic.events[-1]["data"]["reason"]
    assert sweep.start(composition.service()).suspects == 1, "the next sweep tries it again"
