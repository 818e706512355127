"""Throttling is never a verdict: a healthy binding whose run Azure's limits stop stays as it was.

Before, a drift sweep under throttling recorded a healthy binding `not-ready`, cleared its
verification and published Keyless.Onboarding.NotReady: the 429 said nothing about the binding.
"""

from __future__ import annotations

from shared.app import composition
from tests.conftest import ACCOUNT_ID, CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT

REQUEST = {
    "cluster": CLUSTER_ID,
    "namespace": NAMESPACE,
    "serviceAccount": SERVICE_ACCOUNT,
    "openAIAccount": ACCOUNT_ID,
}


def test_a_throttled_sweep_keeps_the_status_the_verification_and_says_nothing(host, arm, kube, topic, monkeypatch):
    monkeypatch.setenv("KEYLESS_ARM_PACING_SCALE", "0")
    monkeypatch.setenv("KEYLESS_RETRY_DELAY_SCALE", "0.001")
    composition.reset()
    status, created, _ = host.http("onboardings_create", "POST", "/api/onboardings", REQUEST)
    assert status == 202
    host.drain()
    before = composition.service().ledger.get(created["id"])
    assert before.status == "ready" and before.verification, before.as_api()
    events = len(topic.events)

    # ARM answers 429 to every identity read for a while (more than azure-core's retries)
    arm.inject_fault("GET", "userAssignedIdentities", 429, headers={"Retry-After": "1"}, times=8)
    arm.log.clear()
    host.timer()
    host.drain()
    assert sum(r.status == 429 for r in arm.log.reads()) >= 4, "the run was throttled past azure-core's retries"
    assert arm.log.writes() == []
    after = composition.service().ledger.get(created["id"])
    assert after.status == "ready", after.as_api()
    assert after.verification == before.verification and after.reason == before.reason
    assert len(topic.events) == events, "nothing is announced for a throttled run"
