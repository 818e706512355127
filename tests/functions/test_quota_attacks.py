"""Attacks on the quotas (issue 19 §3), each written as it was reproduced before the fix: a binding
that comes back (revived by tags or the API) or changes hands is a new request, counted anew and held
to its new requester's limit. Each test asserts the state of the world (ARM, the ledger)."""

from __future__ import annotations

import json
import uuid

import pytest

from shared.app import composition
from shared.domain.binding import OPENAI_USER_ROLE_ID
from tests.conftest import ACCOUNT_ID, CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT, SUB
from tests.functions.conftest import OTHER_GROUP, access_policy, principal_header
from tests.functions.test_app import REQUEST, cluster_event, tag_cluster
from tests.functions.test_attacks import CLUSTER_RG, consent, reconfigure, records, sweep

OTHER_OID = "eeeeeeee-0000-4000-8000-000000000007"
SECOND_ACCOUNT = ACCOUNT_ID.replace("oai-team", "oai-second")


@pytest.fixture(autouse=True)
def no_pacing(monkeypatch):
    monkeypatch.setenv("KEYLESS_ARM_PACING_SCALE", "0")


def tags_ask_for(host, arm, *pairs: str) -> None:
    """The cluster's tags now ask for exactly these pairs (none: the tag is taken off)."""
    if pairs:
        tag_cluster(arm, workloads=" ".join(pairs), consent=False)
    else:
        arm.set_tags(CLUSTER_ID, {})
    host.event(cluster_event())
    host.drain()


def by_sa():
    return {r.service_account: r for r in records()}


# --- 1. a pair taken out of the tags and put back is counted again ------------------------------


def test_a_tag_pair_put_back_is_counted_again(host, arm, kube, monkeypatch):
    reconfigure(monkeypatch, KEYLESS_MAX_TAG_BINDINGS_PER_CLUSTER="1")
    consent(arm)
    tags_ask_for(host, arm, f"{NAMESPACE}/one")
    assert by_sa()["one"].status == "ready"
    tags_ask_for(host, arm)  # taken out: offboarded, its place given back
    assert by_sa()["one"].status == "removed"
    tags_ask_for(host, arm, f"{NAMESPACE}/two")
    assert by_sa()["two"].status == "ready"

    tags_ask_for(host, arm, f"{NAMESPACE}/one", f"{NAMESPACE}/two")  # put back: a new request
    one = by_sa()["one"]
    assert one.status == "refused", one.as_api()
    assert "KEYLESS_MAX_TAG_BINDINGS_PER_CLUSTER" in one.reason
    assert len(arm.role_assignments(ACCOUNT_ID)) == 1, "the quota of 1 holds"


# --- 2. a tag writer cannot revive a binding its API owner deleted -----------------------------


def test_a_tag_writer_cannot_revive_an_api_binding_its_owner_deleted(host, arm, kube):
    status, created, _ = host.http("onboardings_create", "POST", "/", REQUEST)
    assert status == 202, created
    host.drain()
    status, _, _ = host.http("onboardings_delete", "DELETE", "/", route_params={"id": created["id"]})
    assert status == 202
    host.drain()
    assert composition.service().ledger.get(created["id"]).status == "removed"

    # the account does not consent to the cluster's tags, and no rule speaks for them
    tags_ask_for(host, arm, f"{NAMESPACE}/{SERVICE_ACCOUNT}")
    record = composition.service().ledger.get(created["id"])
    assert record.source == "cluster-tags" and record.requested_by.startswith("tags:"), record.as_api()
    assert not record.principal, "the old caller's claims are not the tag writer's"
    assert record.status == "refused" and "keyless-allowed-clusters" in record.reason, record.as_api()
    assert arm.role_assignments(ACCOUNT_ID) == []


# --- 3. a clusterTags rule's maxBindings holds ------------------------------------------------


def test_the_max_bindings_of_a_cluster_tags_rule_holds(host, arm, kube, monkeypatch):
    policy = access_policy()
    policy["rules"].append(
        {
            "name": "platform-tags",
            "principals": {"clusterTags": True},
            "clusters": [CLUSTER_RG],
            "namespaces": [NAMESPACE],
            "accounts": [ACCOUNT_ID],
            "maxBindings": 1,
        }
    )
    reconfigure(monkeypatch, KEYLESS_ACCESS_POLICY=json.dumps(policy))
    tags_ask_for(host, arm, f"{NAMESPACE}/one", f"{NAMESPACE}/two", f"{NAMESPACE}/three")
    statuses = sorted(r.status for r in records())
    assert statuses == ["ready", "refused", "refused"], [r.as_api() for r in records()]
    refused = next(r for r in records() if r.status == "refused")
    assert "maxBindings" in refused.reason and "platform-tags" in refused.reason, refused.reason
    assert len(arm.role_assignments(ACCOUNT_ID)) == 1


# --- 4. the role-assignment headroom holds for every new role assignment -----------------------


def test_the_role_assignment_headroom_holds_for_a_workload_that_has_an_identity(host, arm, kube):
    arm.add_cognitive_account(SECOND_ACCOUNT)
    status, body, _ = host.http("onboardings_create", "POST", "/", REQUEST)
    assert status == 202, body
    host.drain()
    assert len(arm.identities()) == 1
    # the subscription fills up (another team's assignments): 4,000 - 200 headroom - ours
    role = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{OPENAI_USER_ROLE_ID}"
    for _ in range(3800 - len(arm.role_assignments())):
        arm.add_role_assignment(CLUSTER_RG, str(uuid.uuid4()), "99999999-0000-4000-8000-00000000000a", role)

    # the same workload asks for a second account: its identity exists, its role assignment would be new
    status, second, _ = host.http("onboardings_create", "POST", "/", {**REQUEST, "openAIAccount": SECOND_ACCOUNT})
    assert status == 202, second
    host.drain()
    record = composition.service().ledger.get(second["id"])
    assert record.status == "failed", record.as_api()
    assert "KEYLESS_ROLE_ASSIGNMENT_HEADROOM" in record.reason, record.reason
    assert arm.role_assignments(SECOND_ACCOUNT) == []


# --- 5. a takeover is held to the new requester's limit -----------------------------------------


@pytest.mark.parametrize("how", ["revoked", "workloads"])
def test_a_takeover_is_held_to_the_new_requesters_limit(host, arm, kube, monkeypatch, how):
    """Team A's rule allows 1 binding and it is used. Another team's binding, which team A's rule
    covers too, is revoked (their rule dropped) or simply live: team A takes it over."""
    policy = access_policy()
    policy["rules"][0]["maxBindings"] = 1
    policy["rules"][1]["namespaces"] = ["other-team", NAMESPACE]
    reconfigure(monkeypatch, KEYLESS_ACCESS_POLICY=json.dumps(policy))
    other = principal_header(oid=OTHER_OID, groups=(OTHER_GROUP,), name="bob@contoso.com")
    status, theirs, _ = host.http("onboardings_create", "POST", "/", REQUEST, principal=other)
    assert status == 202, theirs
    status, mine, _ = host.http("onboardings_create", "POST", "/", {**REQUEST, "serviceAccount": "chat-own"})
    assert status == 202, mine
    host.drain()
    if how == "revoked":
        policy["rules"][1]["namespaces"] = ["other-team"]
        reconfigure(monkeypatch, KEYLESS_ACCESS_POLICY=json.dumps(policy))
        sweep(host)
        assert composition.service().ledger.get(theirs["id"]).status == "revoked"

    status, err, _ = host.http("onboardings_create", "POST", "/", {**REQUEST, "workloads": ["ai-service"]})
    host.drain()
    record = composition.service().ledger.get(theirs["id"])
    assert status == 403 and err["error"]["code"] == "QuotaExceeded", (err, record.as_api())
    assert "team-a" in err["error"]["message"]
    assert record.requested_by_object_id() == OTHER_OID, "not taken over"


# --- what the fixes keep ----------------------------------------------------------------------


def test_a_running_binding_keeps_its_place_when_the_operator_moves_it_to_a_full_quota(host, arm, kube, monkeypatch):
    """The one exemption left: the same requester's running binding, moved by the operator (here the
    rule is renamed, with a quota already used up), is not revoked for it; its old place is given back."""
    status, created, _ = host.http("onboardings_create", "POST", "/", REQUEST)
    assert status == 202, created
    host.drain()
    policy = access_policy()
    policy["rules"][0] |= {"name": "team-a-renamed", "maxBindings": 0}
    reconfigure(monkeypatch, KEYLESS_ACCESS_POLICY=json.dumps(policy))
    sweep(host)
    record = composition.service().ledger.get(created["id"])
    assert record.status == "ready" and record.quota_key == "rule|team-a-renamed", record.as_api()
    ledger = composition.service().ledger
    assert ledger.claim_quota("rule|team-a", "probe", 1) == (True, 1), "the old place was given back"
    status, body, _ = host.http("onboardings_delete", "DELETE", "/", route_params={"id": created["id"]})
    host.drain()
    assert ledger.get(created["id"]).quota_key == "", "a removed binding holds no place, not even a copy"
