"""Attacks on the trust model, each written as it was reproduced against main before the fix.

Who can trigger a path, what it grants, whose objects it touches: the cluster-tag path (anyone who
may write a cluster's tags), a queued message (anyone who may write the queue), a removed grant
(the sweep kept repairing), a rule's quota, what a report tells another team, and input that only
looks valid. Each test asserts the state of the world (ARM, the cluster, the ledger), not calls.
"""

from __future__ import annotations

import base64
import json

import pytest

from shared.app import composition
from shared.domain.binding import Binding
from shared.domain.records import BindingRecord
from tests.conftest import ACCOUNT_ID, CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT, SUB
from tests.functions.conftest import OTHER_GROUP, TEAM_GROUP, TEAM_OID, access_policy, principal_header, reconfigure
from tests.functions.test_app import REQUEST, arm_event, cluster_event, tag_cluster

OTHER_SUB = "99999999-8888-4777-8666-555555555555"
VICTIM_ACCOUNT = (
    f"/subscriptions/{OTHER_SUB}/resourceGroups/rg-victim/providers/Microsoft.CognitiveServices/accounts/oai-victim"
)
CLUSTER_RG = CLUSTER_ID.split("/providers/")[0]


@pytest.fixture(autouse=True)
def no_pacing(monkeypatch):
    monkeypatch.setenv("KEYLESS_ARM_PACING_SCALE", "0")


@pytest.fixture
def victim(arm):
    arm.add_subscription(OTHER_SUB)
    arm.add_resource_group(OTHER_SUB, "rg-victim")
    arm.add_cognitive_account(VICTIM_ACCOUNT)
    return VICTIM_ACCOUNT


def records(cluster=CLUSTER_ID):
    return list(composition.service().ledger.all(cluster=cluster))


def consent(arm, account=ACCOUNT_ID, value=CLUSTER_ID, **extra):
    arm.set_tags(account, {"keyless-allowed-clusters": value, **extra})


def account_written(host, arm, tags, account=ACCOUNT_ID):
    """The account's tags change; ARM tells Event Grid (a write event on the account)."""
    arm.set_tags(account, tags)
    host.event(arm_event("event-grid-schema", "write", account, "Microsoft.CognitiveServices/accounts/write"))
    host.drain()


def sweep(host):
    host.timer()
    host.drain()


def get(host, key, principal=None):
    kw = {} if principal is None else {"principal": principal}
    return host.http("onboardings_get", "GET", "/", route_params={"id": key}, **kw)


# --- 1. cluster tags do not bypass the policy ------------------------------------------------


def test_a_tag_writer_cannot_grant_another_teams_account(host, arm, kube, victim):
    """Tag Contributor on a cluster names another team's account, in another subscription."""
    tag_cluster(arm, account=victim, consent=False)
    host.event(cluster_event())
    host.drain()
    (record,) = records()
    assert record.status == "refused", record.as_api()
    assert "keyless-allowed-clusters" in record.reason and "consent" in record.reason
    assert arm.identities() == [] and arm.role_assignments(victim) == []
    assert kube.get_object("ServiceAccount", NAMESPACE, SERVICE_ACCOUNT) is None
    assert arm.log.writes() == []


@pytest.mark.parametrize("named", [CLUSTER_ID, CLUSTER_ID.lower(), CLUSTER_RG, f"/subscriptions/{SUB}"])
def test_the_account_side_consents_by_naming_the_cluster_its_group_or_subscription(host, arm, kube, named):
    consent(arm, value=f"/subscriptions/{SUB}/resourceGroups/elsewhere; {named}")
    tag_cluster(arm, consent=False)
    host.event(cluster_event())
    host.drain()
    (record,) = records()
    assert record.status == "ready", record.as_api()
    assert len(arm.role_assignments(ACCOUNT_ID)) == 1


def test_a_prefix_that_is_not_a_whole_segment_is_no_consent(host, arm, kube):
    consent(arm, value=CLUSTER_RG[:-1])  # /resourceGroups/rg-ak: not rg-aks
    tag_cluster(arm, consent=False)
    host.event(cluster_event())
    host.drain()
    (record,) = records()
    assert record.status == "refused" and arm.identities() == []


def test_a_policy_rule_for_cluster_tags_is_consent_too(host, arm, kube, monkeypatch):
    policy = access_policy()
    policy["rules"].append(
        {
            "name": "platform-tags",
            "principals": {"clusterTags": True},
            "clusters": [CLUSTER_RG],
            "namespaces": [NAMESPACE],
            "accounts": [ACCOUNT_ID],
        }
    )
    reconfigure(monkeypatch, KEYLESS_ACCESS_POLICY=json.dumps(policy))
    kube.add_namespace("team-z")
    tag_cluster(arm, workloads=f"{NAMESPACE}/{SERVICE_ACCOUNT} team-z/bot", consent=False)
    host.event(cluster_event())
    host.drain()
    by_ns = {r.namespace: r for r in records()}
    assert by_ns[NAMESPACE].status == "ready", by_ns[NAMESPACE].as_api()
    assert by_ns["team-z"].status == "refused", by_ns["team-z"].as_api()
    assert len(arm.identities()) == 1


def test_the_subscription_allowlist_holds_on_the_tag_path(host, arm, kube, victim, monkeypatch):
    reconfigure(monkeypatch, KEYLESS_ALLOWED_SUBSCRIPTIONS=SUB)
    consent(arm, account=victim)  # even with the account's consent
    tag_cluster(arm, account=victim, consent=False)
    host.event(cluster_event())
    host.drain()
    (record,) = records()
    assert record.status == "refused" and OTHER_SUB in record.reason
    assert arm.identities() == []


def test_custom_system_namespaces_are_never_onboarded_from_tags(host, arm, kube, monkeypatch):
    reconfigure(monkeypatch, KEYLESS_SYSTEM_NAMESPACES="platform-agents")
    kube.add_namespace("platform-agents")
    consent(arm)
    tag_cluster(arm, workloads="platform-agents/collector", consent=False)
    host.event(cluster_event())
    host.drain()
    assert [r for r in records() if r.live and r.status != "refused"] == []
    assert arm.identities() == []


def test_a_queued_message_is_no_proof_of_permission(host, arm, kube):
    """Someone who can write the work queue (or the ledger record of a request the policy refused)."""
    binding = Binding.create(CLUSTER_ID, "other-team", "intruder", ACCOUNT_ID)
    record = BindingRecord.for_binding(binding, requested_by=TEAM_OID, source="api")
    record.principal = {"objectId": TEAM_OID, "groups": [TEAM_GROUP], "roles": []}
    composition.service().ledger.create(record)
    host.queue.send_message(base64.b64encode(json.dumps({"kind": "binding", "key": record.key}).encode()).decode())
    host.drain()
    got = composition.service().ledger.get(record.key)
    assert got.status == "refused", got.as_api()
    assert arm.identities() == [] and arm.role_assignments(ACCOUNT_ID) == []


# --- 1. withdrawn consent and grants are honoured ---------------------------------------------


def test_withdrawn_account_consent_revokes_then_offboards(host, arm, kube, monkeypatch):
    consent(arm)
    tag_cluster(arm, consent=False)
    host.event(cluster_event())
    host.drain()
    (record,) = records()
    assert record.status == "ready"
    (assignment,) = arm.role_assignments(ACCOUNT_ID)

    arm.log.clear()
    account_written(host, arm, {})  # the account owner withdraws consent
    (record,) = records()
    assert record.status == "revoked", record.as_api()
    assert "keyless-allowed-clusters" in record.reason
    assert record.revoked_at and record.as_api()["offboardAt"]
    # someone deletes the role assignment: the sweep used to repair it; a revoked binding is not repaired
    composition.service().engine.roles.delete(SUB, ACCOUNT_ID, assignment["name"])
    arm.log.clear()
    sweep(host)
    assert records()[0].status == "revoked" and arm.log.writes() == []
    assert arm.role_assignments(ACCOUNT_ID) == []

    account_written(host, arm, {"keyless-allowed-clusters": CLUSTER_ID})  # consent comes back in time
    (record,) = records()
    assert record.status == "ready" and not record.revoked_at, record.as_api()
    assert len(arm.role_assignments(ACCOUNT_ID)) == 1, "repaired again"

    account_written(host, arm, {})
    reconfigure(monkeypatch, KEYLESS_REVOKE_AFTER_SECONDS="0")
    sweep(host)
    (record,) = records()
    assert record.status == "removed", record.as_api()
    assert arm.identities() == [] and arm.role_assignments(ACCOUNT_ID) == []


def test_a_removed_policy_rule_stops_the_repairs_and_the_owner_may_still_delete(host, arm, kube, monkeypatch):
    status, created, _ = host.http("onboardings_create", "POST", "/", REQUEST)
    assert status == 202
    host.drain()
    key = created["id"]
    policy = access_policy()
    policy["rules"] = [r for r in policy["rules"] if r["name"] != "team-a"]
    reconfigure(monkeypatch, KEYLESS_ACCESS_POLICY=json.dumps(policy))
    (assignment,) = arm.role_assignments(ACCOUNT_ID)
    # drift the sweep used to repair: someone deletes the assignment (a real ARM DELETE)
    composition.service().engine.roles.delete(SUB, ACCOUNT_ID, assignment["name"])
    sweep(host)
    record = composition.service().ledger.get(key)
    assert record.status == "revoked", record.as_api()
    assert "team-a" in record.reason or "no access-policy rule" in record.reason
    assert arm.role_assignments(ACCOUNT_ID) == [], "revoked: the sweep repairs nothing"

    status, body, _ = host.http("onboardings_delete", "DELETE", "/", route_params={"id": key})
    assert status == 202, body
    host.drain()
    assert composition.service().ledger.get(key).status == "removed"
    assert arm.identities() == []


def test_someone_else_cannot_delete_a_binding_because_the_policy_dropped_it(host, arm, kube, monkeypatch):
    status, created, _ = host.http("onboardings_create", "POST", "/", REQUEST)
    host.drain()
    stranger = principal_header(oid="eeeeeeee-0000-4000-8000-000000000005", groups=(OTHER_GROUP,))
    status, body, _ = host.http(
        "onboardings_delete", "DELETE", "/", route_params={"id": created["id"]}, principal=stranger
    )
    assert status == 404, body  # one they may not see: as if there were none (test_list_privacy.py)
    assert composition.service().ledger.get(created["id"]).live


# --- 6. quotas ------------------------------------------------------------------------------


def test_a_rule_quota_refuses_the_next_binding_naming_the_quota_and_count(host, arm, kube, monkeypatch):
    policy = access_policy()
    policy["rules"][0]["maxBindings"] = 2
    reconfigure(monkeypatch, KEYLESS_ACCESS_POLICY=json.dumps(policy))
    keys = []
    for sa in ("a", "b"):
        status, body, _ = host.http("onboardings_create", "POST", "/", {**REQUEST, "serviceAccount": sa})
        assert status == 202, body
        keys.append(body["id"])
    status, again, _ = host.http("onboardings_create", "POST", "/", {**REQUEST, "serviceAccount": "a"})
    assert status == 200, "asking again for a live binding is no new binding"
    status, err, _ = host.http("onboardings_create", "POST", "/", {**REQUEST, "serviceAccount": "c"})
    assert status == 403 and err["error"]["code"] == "QuotaExceeded", err
    assert err["error"]["field"] == "maxBindings"
    assert "2" in err["error"]["message"] and "team-a" in err["error"]["message"]

    host.http("onboardings_delete", "DELETE", "/", route_params={"id": keys[0]})
    host.drain()
    status, body, _ = host.http("onboardings_create", "POST", "/", {**REQUEST, "serviceAccount": "c"})
    assert status == 202, body


def test_tag_bindings_beyond_the_cluster_quota_are_refused(host, arm, kube, monkeypatch):
    reconfigure(monkeypatch, KEYLESS_MAX_TAG_BINDINGS_PER_CLUSTER="1")
    consent(arm)
    tag_cluster(arm, workloads=f"{NAMESPACE}/one {NAMESPACE}/two", consent=False)
    host.event(cluster_event())
    host.drain()
    statuses = sorted(r.status for r in records())
    assert statuses == ["ready", "refused"], [r.as_api() for r in records()]
    refused = next(r for r in records() if r.status == "refused")
    assert "KEYLESS_MAX_TAG_BINDINGS_PER_CLUSTER" in refused.reason and "1" in refused.reason
    assert len(arm.identities()) == 1


# --- 4. information and input ---------------------------------------------------------------


def test_a_verification_report_names_only_what_the_caller_may_see(host, arm, kube):
    arm.set_tags(ACCOUNT_ID, {"keyless-enforce": "true"})
    kube.add_namespace("other-team")
    other = principal_header(oid="eeeeeeee-0000-4000-8000-000000000006", groups=(OTHER_GROUP,))
    status, theirs, _ = host.http(
        "onboardings_create", "POST", "/", {**REQUEST, "namespace": "other-team", "serviceAccount": "secret-bot"},
        principal=other,
    )  # fmt: skip
    assert status == 202, theirs
    status, mine, _ = host.http("onboardings_create", "POST", "/", REQUEST)
    assert status == 202
    host.drain()
    # Theirs is not verified (no pods): it blocks the account, but team A must not learn its names.
    status, report, _ = host.http("onboardings_verification", "GET", "/", route_params={"id": mine["id"]})
    assert status == 200, report
    text = json.dumps(report["keylessAccount"])
    assert "other-team" not in text and "secret-bot" not in text
    assert report["keylessAccount"]["hiddenBlockers"] >= 1


@pytest.mark.parametrize(
    "change, field",
    [
        ({"serviceAccount": "default\n"}, "serviceAccount"),
        ({"namespace": "team-a\n"}, "namespace"),
        ({"namespace": "ns-x\n"}, "namespace"),
        ({"cluster": CLUSTER_ID.replace(SUB, "{" + SUB + "}")}, "cluster"),
        ({"cluster": CLUSTER_ID.replace(SUB, SUB.replace("-", ""))}, "cluster"),
        ({"openAIAccount": ACCOUNT_ID.replace(SUB, "urn:uuid:" + SUB)}, "openAIAccount"),
        ({"openAIAccount": ACCOUNT_ID + "\n"}, "openAIAccount"),
        ({"workloads": ["ai-service\n"]}, "workloads"),
    ],
)
def test_names_and_ids_must_match_whole(host, arm, change, field):
    status, err, _ = host.http("onboardings_create", "POST", "/", {**REQUEST, **change})
    assert status == 400, err
    assert err["error"]["field"] == field
    assert host.raw_messages() == [] and arm.identities() == []


def test_inside_azure_every_api_call_needs_app_service_authentication(host, monkeypatch):
    reconfigure(monkeypatch, WEBSITE_SITE_NAME="keyless-prod")
    monkeypatch.delenv("WEBSITE_AUTH_ENABLED", raising=False)
    calls = [
        ("onboardings_create", "POST", REQUEST, {}),
        ("onboardings_list", "GET", None, {}),
        ("onboardings_get", "GET", None, {"id": "0" * 32}),
        ("onboardings_delete", "DELETE", None, {"id": "0" * 32}),
        ("onboardings_verification", "GET", None, {"id": "0" * 32}),
    ]
    for name, method, body, route in calls:
        status, err, _ = host.http(name, method, "/", body, route_params=route)
        assert status == 503 and err["error"]["code"] == "AuthenticationNotConfigured", (name, err)
    assert host.raw_messages() == []
    reconfigure(monkeypatch, WEBSITE_AUTH_ENABLED="True")
    status, _, _ = host.http("onboardings_create", "POST", "/", REQUEST)
    assert status == 202


def test_refusal_and_revocation_are_announced(host, arm, kube, topic):
    tag_cluster(arm, consent=False)
    host.event(cluster_event())
    host.drain()
    (refused,) = topic.events
    assert refused["type"] == "Keyless.Onboarding.Refused"
    assert "keyless-allowed-clusters" in refused["data"]["reason"]

    account_written(host, arm, {"keyless-allowed-clusters": CLUSTER_ID})
    assert [e["type"] for e in topic.events][1:] == ["Keyless.Onboarding.Ready"]
    account_written(host, arm, {})
    revoked = topic.events[-1]
    assert revoked["type"] == "Keyless.Onboarding.Revoked" and revoked["data"]["offboardAt"]
    assert revoked["data"]["previousStatus"] == "ready"


def test_a_binding_taken_over_by_the_api_frees_its_place_in_the_tags_quota(host, arm, kube, monkeypatch):
    reconfigure(monkeypatch, KEYLESS_MAX_TAG_BINDINGS_PER_CLUSTER="1")
    consent(arm)
    tag_cluster(arm, consent=False)
    host.event(cluster_event())
    host.drain()
    # a team asks for the same binding through the API (with a Deployment): its rule holds it now
    status, body, _ = host.http("onboardings_create", "POST", "/", {**REQUEST, "workloads": ["ai-service"]})
    assert status == 200 or status == 202, body
    host.drain()
    tag_cluster(arm, workloads=f"{NAMESPACE}/{SERVICE_ACCOUNT} {NAMESPACE}/second", consent=False)
    host.event(cluster_event())
    host.drain()
    second = next(r for r in records() if r.service_account == "second")
    assert second.status == "ready", second.as_api()
