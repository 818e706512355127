"""Event Grid's at-least-once, unordered delivery, and a scaled-out worker, through the app:
duplicates queue one re-read, ARM (not the event) says whether a resource is gone, and one
binding is reconciled by one worker at a time. (The fault suite does the same at scale.)"""

from __future__ import annotations

import base64
import json
import time

import pytest

from shared.app import composition, sweep
from tests.conftest import ACCOUNT_ID, CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT
from tests.functions.test_app import cluster_event, records, tag_cluster


@pytest.fixture
def fast_retries(monkeypatch, app_env):
    monkeypatch.setenv("KEYLESS_RETRY_DELAY_SCALE", "0.02")
    composition.reset()


REQUEST = {
    "cluster": CLUSTER_ID,
    "namespace": NAMESPACE,
    "serviceAccount": SERVICE_ACCOUNT,
    "openAIAccount": ACCOUNT_ID,
}


def bodies(host) -> list[dict]:
    return [json.loads(base64.b64decode(m)) for m in host.raw_messages()]


def test_duplicate_events_queue_one_re_read_until_it_runs(host, arm, kube):
    tag_cluster(arm)
    event = cluster_event()
    for _ in range(20):
        host.event(event)  # the same event, delivered again and again
    host.event(cluster_event(change="delete"))  # another event about the same cluster
    assert [b["kind"] for b in bodies(host)] == ["cluster"]
    host.drain()
    (record,) = records()
    assert record.status == "ready"
    host.event(cluster_event())  # after the re-read ran, an event queues a new one
    assert [b["kind"] for b in bodies(host)] == ["cluster"]


def test_a_delete_event_for_a_cluster_arm_still_has_changes_nothing(host, arm, kube):
    tag_cluster(arm)
    host.event(cluster_event())
    host.drain()
    arm.log.clear()
    host.event(cluster_event(change="delete"))  # stale, or the cluster was re-created since
    host.drain()
    (record,) = records()
    assert record.status == "ready" and record.desired == "present"
    assert arm.log.writes() == []


def test_a_binding_another_worker_is_reconciling_waits_its_turn(host, arm, kube, fast_retries):
    tag_cluster(arm)
    host.event(cluster_event())
    host.drain()  # the re-read queues the binding
    svc = composition.service()
    if not records():
        host.drain()
    (record,) = records()
    arm.log.clear()
    assert svc.ledger.acquire(f"run|{record.key}", 30)  # as the other worker would
    assert sweep.start(svc).suspects == 1  # it changed a moment ago: a suspect
    host.drain()
    assert arm.log.writes() == [], "not run while the other worker holds it"
    assert records()[0].attempts == record.attempts
    (waiting,) = bodies(host) or [None]
    assert waiting is None or waiting["key"] == record.key  # put back, invisible for a moment
    svc.ledger.release(f"run|{record.key}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and records()[0].attempts == record.attempts:
        host.drain()  # the put-back message becomes visible after its short delay
        time.sleep(0.1)
    assert records()[0].attempts == record.attempts + 1 and records()[0].status == "ready"


def test_cluster_read_once_for_all_its_bindings(host, arm, kube):
    for ns in ("team-b", "team-c"):
        kube.add_namespace(ns)
    tag_cluster(arm, workloads="team-a/chat-api,team-b/worker,team-c/batch")
    host.event(cluster_event())
    host.drain()
    assert sorted(r.status for r in records()) == ["ready"] * 3
    cluster_gets = arm.log.matching("GET", CLUSTER_ID.split("/subscriptions/")[1])
    assert len([r for r in cluster_gets if r.path.lower().endswith("/aks1")]) == 1, "one read per batch"


def test_a_run_longer_than_its_lease_keeps_it(host, arm, kube, monkeypatch, app_env):
    """Run lease 2.4 s (scaled), a run of ~6 s (a slow ARM): the lease is renewed after steps, so
    at no request of the run could another worker have taken the binding over."""
    monkeypatch.setenv("KEYLESS_RETRY_DELAY_SCALE", "0.02")
    monkeypatch.setenv("KEYLESS_RUN_COMMAND_FALLBACK", "false")
    composition.reset()
    status, created, _ = host.http("onboardings_create", "POST", "/api/onboardings", REQUEST)
    assert status == 202
    svc = composition.service()
    lease = f"run|{created['id']}"
    held: list[float] = []
    arm.request_hooks.append(lambda _request: held.append(svc.ledger.seconds_left(lease)))
    arm.inject_latency("GET", "/", seconds=0.6, times=20)  # slow reads: the run takes several seconds
    started = time.monotonic()
    host.drain()
    assert time.monotonic() - started > 2.4 + 0.5, "the run outlasted its first lease"
    assert held and min(held) > 0, f"the lease lapsed during the run: {held}"
    assert records()[0].status in ("ready", "verified")
    assert svc.ledger.seconds_left(lease) == 0, "released when the run ended"
