"""Level-triggered authorisation: a withdrawn grant is acted on by the next sweep, whether or not the
binding drifted, and at once when an instance starts with changed authorisation settings.

Written as attacks against main before the fix: a settled, healthy binding (its record older than the
sweep's "changed recently" window) kept its role after its policy rule, subscription or role was taken
off the settings, because the sweep queued only drift suspects and no Azure event exists for a
settings change. Consent withdrawn through the Tags API (not the account's own PUT) was not seen either.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from shared.app import composition, sweep
from shared.domain.records import BindingRecord
from tests.conftest import ACCOUNT_ID, CLUSTER_ID
from tests.functions.conftest import access_policy, reconfigure
from tests.functions.test_app import REQUEST, arm_event, cluster_event, tag_cluster


@pytest.fixture(autouse=True)
def no_pacing(monkeypatch):
    monkeypatch.setenv("KEYLESS_ARM_PACING_SCALE", "0")


def age(key: str, hours: float = 2.0) -> BindingRecord:
    """Make the record look settled long ago: the sweep's "changed recently" window no longer covers it."""
    ledger = composition.service().ledger
    record = ledger.get(key)
    assert record is not None
    stamp = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)).isoformat(timespec="seconds").replace("+00:00", "Z")
    record.updated_at = stamp
    ledger.save(record)
    return record


def onboarded(host) -> str:
    status, created, _ = host.http("onboardings_create", "POST", "/", REQUEST)
    assert status == 202, created
    host.drain()
    key = created["id"]
    assert composition.service().ledger.get(key).status in ("ready", "verified")
    age(key)
    return key


def record(key: str) -> BindingRecord:
    found = composition.service().ledger.get(key)
    assert found is not None
    return found


def drain_until(host, key: str, status: str, seconds: float = 30.0) -> BindingRecord:
    """Run the worker until the binding reaches `status` (a revocation's grace is real time)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        host.drain()
        now = record(key)
        if now.status == status:
            return now
    raise AssertionError(f"binding {key} is {record(key).status}, not {status}, after {seconds} s")


def without_team_a() -> str:
    policy = access_policy()
    policy["rules"] = [r for r in policy["rules"] if r["name"] != "team-a"]
    return json.dumps(policy)


WITHDRAWALS = {
    "policy rule removed": {"KEYLESS_ACCESS_POLICY": without_team_a()},
    "subscription taken off the allowlist": {"KEYLESS_ALLOWED_SUBSCRIPTIONS": "99999999-8888-4777-8666-555555555555"},
    "role taken off the allowlist": {
        "KEYLESS_ROLE_ALLOWLIST": "a97b65f3-24c7-4388-baec-2e87135dc908",  # Cognitive Services User
        "KEYLESS_DEFAULT_ROLE": "a97b65f3-24c7-4388-baec-2e87135dc908",
    },
}


@pytest.mark.parametrize("withdrawal", sorted(WITHDRAWALS))
def test_the_sweep_revokes_a_healthy_binding_whose_grant_was_withdrawn(host, arm, kube, monkeypatch, withdrawal):
    key = onboarded(host)
    (assignment,) = arm.role_assignments(ACCOUNT_ID)
    reconfigure(monkeypatch, KEYLESS_REVOKE_AFTER_SECONDS="1", **WITHDRAWALS[withdrawal])
    composition.service()  # the new instance: it queues a sweep of its own for the new settings ...
    host.queue.clear_messages()  # ... dropped: here the timer's sweep alone must find the withdrawn grant
    arm.log.clear()

    host.timer()
    host.drain()
    revoked = record(key)
    assert revoked.status == "revoked", revoked.as_api()
    assert revoked.revoked_at and revoked.offboard_at
    assert arm.log.writes() == [], "revoking is a record change: nothing is written to Azure before the grace"

    removed = drain_until(host, key, "removed")
    assert arm.role_assignments(ACCOUNT_ID) == [], f"{assignment['name']} still grants access"
    assert arm.identities() == []
    assert "access withdrawn" in removed.reason


def test_an_instance_started_with_new_authorisation_settings_sweeps_at_once(host, arm, kube, monkeypatch):
    key = onboarded(host)
    host.queue.clear_messages()
    reconfigure(monkeypatch, KEYLESS_ACCESS_POLICY=without_team_a(), KEYLESS_REVOKE_AFTER_SECONDS="1")

    # No timer tick and no event: the new instance's first function call notices the new settings.
    status, _, _ = host.http("health", "GET", "/")
    assert status == 200
    host.drain()
    assert record(key).status == "revoked", record(key).as_api()
    drain_until(host, key, "removed")
    assert arm.role_assignments(ACCOUNT_ID) == []


def test_unchanged_settings_start_no_sweep(host, arm, kube, monkeypatch):
    onboarded(host)
    host.queue.clear_messages()
    composition.reset()  # another instance, same settings
    host.http("health", "GET", "/")
    assert host.raw_messages() == [], "the same settings must not start a sweep"


def test_the_same_settings_written_in_another_order_start_no_sweep(host, arm, kube, monkeypatch):
    onboarded(host)
    host.queue.clear_messages()
    reconfigure(monkeypatch, KEYLESS_ACCESS_POLICY=json.dumps(access_policy(), indent=4, sort_keys=True))
    host.http("health", "GET", "/")
    assert host.raw_messages() == [], "whitespace and key order are not a settings change"


def test_a_sweep_planned_with_a_grant_withdrawn_queues_only_that_binding(host, arm, kube, monkeypatch):
    """The plan asks the door for every live binding from what it read already: no ARM read per binding."""
    key = onboarded(host)
    kube.add_namespace("team-b")
    status, created, _ = host.http("onboardings_create", "POST", "/", dict(REQUEST, namespace="team-b"))
    assert status == 202, created
    host.drain()
    other = created["id"]
    age(other)
    host.queue.clear_messages()
    arm.log.clear()
    unchanged = sweep.start(composition.service())
    assert unchanged.suspects == 0, [s.suspects for s in composition.service().sweeps.shards(unchanged.run_id)]
    planned_reads = len(arm.log.reads())
    host.drain()  # its shards: the sweep finishes

    policy = access_policy()
    policy["rules"][0]["namespaces"] = ["team-b"]  # team-a's namespace is taken off the rule; team-b stays
    reconfigure(monkeypatch, KEYLESS_ACCESS_POLICY=json.dumps(policy))
    composition.service()
    host.queue.clear_messages()  # (the settings-change sweep: this test runs the plan itself)
    arm.log.clear()
    report = sweep.start(composition.service())
    assert report.action == "started" and report.suspects == 1, report
    assert len(arm.log.reads()) == planned_reads, "re-authorising reads nothing more from ARM"
    host.drain()
    assert record(key).status == "revoked"
    assert record(other).status in ("ready", "verified"), record(other).as_api()


# --- consent withdrawn through the Tags API ---------------------------------------------------------


def tags_event(resource_id: str, change: str) -> dict:
    """What ARM tells Event Grid for `az tag update|delete --resource-id <id>`: an operation on the
    resource's tags (the Tags API, `<id>/providers/Microsoft.Resources/tags/default`), not on the resource."""
    operation = "Microsoft.Resources/tags/write" if change == "write" else "Microsoft.Resources/tags/delete"
    return arm_event("event-grid-schema", change, resource_id + "/providers/Microsoft.Resources/tags/default",
                     operation)  # fmt: skip


@pytest.mark.parametrize("change", ["write", "delete"])
def test_consent_withdrawn_through_the_tags_api_revokes_without_a_sweep(host, arm, kube, monkeypatch, change):
    tag_cluster(arm)
    host.event(cluster_event())
    host.drain()
    (bound,) = list(composition.service().ledger.all(cluster=CLUSTER_ID))
    assert bound.status in ("ready", "verified"), bound.as_api()

    arm.set_tags(ACCOUNT_ID, {})  # az tag update --operation delete (or az tag delete) on the account
    host.event(tags_event(ACCOUNT_ID, change))
    host.drain()
    (now,) = list(composition.service().ledger.all(cluster=CLUSTER_ID))
    assert now.status == "revoked", now.as_api()
    assert arm.cognitive_account(ACCOUNT_ID) is not None, "a tags delete is not the account's deletion"


def test_a_tags_delete_on_a_cluster_is_not_the_clusters_deletion(host, arm, kube):
    tag_cluster(arm)
    host.event(cluster_event())
    host.drain()
    arm.set_tags(CLUSTER_ID, {})  # the cluster's tags removed through the Tags API
    host.event(tags_event(CLUSTER_ID, "delete"))
    host.drain()
    (now,) = list(composition.service().ledger.all(cluster=CLUSTER_ID))
    assert now.status == "removed" and "tags" in now.reason, now.as_api()


def test_a_teammate_sees_why_a_binding_was_revoked_but_cannot_act_on_it(host, arm, kube, monkeypatch):
    """The list showed a teammate's revoked binding and GET answered 403: the team could not read why its access
    went. Reading needs what the list needs (the policy covers the binding for the caller); taking it away
    needs the grant (or to have asked for it)."""
    from tests.functions.conftest import TEAM_GROUP, principal_header

    key = onboarded(host)
    teammate = principal_header(oid="ffffffff-0000-4000-8000-000000000007", groups=(TEAM_GROUP,), name="bob")
    reconfigure(monkeypatch, KEYLESS_ALLOWED_SUBSCRIPTIONS="99999999-8888-4777-8666-555555555555")
    host.timer()
    host.drain()
    assert record(key).status == "revoked"

    status, page, _ = host.http("onboardings_list", "GET", "/", principal=teammate)
    assert status == 200 and [o["id"] for o in page["value"]] == [key], page
    status, shown, _ = host.http("onboardings_get", "GET", "/", route_params={"id": key}, principal=teammate)
    assert status == 200 and shown["status"] == "revoked" and "KEYLESS_ALLOWED_SUBSCRIPTIONS" in shown["reason"], shown
    status, err, _ = host.http("onboardings_delete", "DELETE", "/", route_params={"id": key}, principal=teammate)
    assert status == 403 and "KEYLESS_ALLOWED_SUBSCRIPTIONS" in err["error"]["message"], err
    assert record(key).desired == "present", "the teammate's refused delete changed nothing"
