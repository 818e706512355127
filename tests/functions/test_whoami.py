"""GET /api/me: who the caller is to Keyless, and what they may ask for.

A team member who is refused learns the closest rule only after a request; here they see, before asking,
the rules that name them and how much of each quota is used. Tried as an attacker would: another team's
rules, scopes and quota use are never shown, whoever asks."""

from __future__ import annotations

import json

from shared.domain.binding import OPENAI_USER_ROLE_ID
from tests.conftest import ACCOUNT_ID, CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT
from tests.functions.conftest import OTHER_GROUP, TEAM_GROUP, TEAM_OID, access_policy, principal_header, reconfigure

REQUEST = {
    "cluster": CLUSTER_ID,
    "namespace": NAMESPACE,
    "serviceAccount": SERVICE_ACCOUNT,
    "openAIAccount": ACCOUNT_ID,
}
OTHER_ROLE = "a97b65f3-24c7-4388-baec-2e87135dc908"  # Cognitive Services User: not on the default allowlist


def me(host, **principal) -> dict:
    status, answer, _ = host.http("me", "GET", "/api/me", principal=principal_header(**principal))
    assert status == 200, answer
    return answer  # type: ignore[no-any-return]


def test_a_team_member_sees_their_rule_what_names_them_and_its_quota_in_use(host):
    before = me(host)
    assert before["objectId"] == TEAM_OID and before["name"] == "alice@contoso.com"
    assert before["signedInWith"] == "entra" and before["hint"] == ""
    [rule] = before["rules"]
    assert rule["name"] == "team-a" and rule["matchedBy"] == [f"group {TEAM_GROUP}"]
    assert rule["clusters"] == [CLUSTER_ID.split("/providers/")[0]]
    assert rule["namespaces"] == ["team-a", "team-b", "ns-*"] and rule["serviceAccounts"] == ["*"]
    assert rule["roles"] == [OPENAI_USER_ROLE_ID] and rule["workloads"] == ["ai-service", "chat-*"]
    assert rule["maxBindings"] == 250 and rule["liveBindings"] == 0
    assert before["defaultRole"] == OPENAI_USER_ROLE_ID and before["allowedSubscriptions"] == []

    status, _, _ = host.http("onboardings_create", "POST", "/api/onboardings", REQUEST)
    assert status == 202
    assert me(host)["rules"][0]["liveBindings"] == 1, "the request is counted in the rule's quota at once"


def test_another_teams_rules_scopes_and_quota_are_never_shown(host):
    status, _, _ = host.http("onboardings_create", "POST", "/api/onboardings", REQUEST)
    assert status == 202
    mine = me(host)
    shown = json.dumps(mine)
    assert "other-team" not in shown and OTHER_GROUP not in shown, "only the rules that name the caller"

    theirs = me(host, oid="dddddddd-0000-4000-8000-000000000004", groups=(OTHER_GROUP,), name="bob")
    assert [r["name"] for r in theirs["rules"]] == ["other-team"]
    assert theirs["rules"][0]["liveBindings"] == 0, "team-a's binding is not counted in theirs"
    assert "team-a" not in json.dumps(theirs) and TEAM_GROUP not in json.dumps(theirs)


def test_a_caller_no_rule_names_is_told_what_to_ask_for(host):
    answer = me(host, oid="eeeeeeee-0000-4000-8000-000000000005", groups=(), name="carol")
    assert answer["rules"] == []
    assert "KEYLESS_ACCESS_POLICY" in answer["hint"] and "object id" in answer["hint"], answer["hint"]


def test_every_way_a_rule_names_the_caller_is_said_and_unassignable_roles_are_left_out(host, monkeypatch):
    policy = access_policy()
    policy["rules"][0]["principals"] = {"groups": [TEAM_GROUP], "objectIds": [TEAM_OID], "roles": ["Keyless.Onboard"]}
    policy["rules"][0]["roles"] = [OPENAI_USER_ROLE_ID, OTHER_ROLE]
    policy["rules"][0]["maxBindings"] = 3
    reconfigure(monkeypatch, KEYLESS_ACCESS_POLICY=json.dumps(policy))
    [rule] = me(host, roles=("Keyless.Onboard",))["rules"]
    assert rule["matchedBy"] == ["objectId", f"group {TEAM_GROUP}", "app role Keyless.Onboard"]
    assert rule["roles"] == [OPENAI_USER_ROLE_ID], "a role Keyless may not assign is not offered"
    assert rule["maxBindings"] == 3


def test_signed_in_with_the_dev_principal_says_so(host, monkeypatch):
    reconfigure(monkeypatch, KEYLESS_DEV_PRINCIPAL=json.dumps({"oid": TEAM_OID, "groups": [TEAM_GROUP]}))
    status, answer, _ = host.http("me", "GET", "/api/me", principal=None)
    assert status == 200 and answer["signedInWith"] == "dev-principal", answer
    assert [r["name"] for r in answer["rules"]] == ["team-a"]


def test_without_a_sign_in_nothing_is_shown(host):
    status, answer, _ = host.http("me", "GET", "/api/me", principal=None)
    assert status == 401 and answer["error"]["field"] == "X-MS-CLIENT-PRINCIPAL", answer


def test_it_reads_one_quota_count_per_rule_shown_and_nothing_of_azure(host, monkeypatch):
    """The reads are a test, not a hope: a caller named by two rules costs two Table queries, no ARM request."""
    from shared.adapters import counting

    policy = access_policy()
    policy["rules"][1]["principals"]["groups"].append(TEAM_GROUP)
    reconfigure(monkeypatch, KEYLESS_ACCESS_POLICY=json.dumps(policy))
    me(host)  # the instance is built (and its table made) by the first call
    before = counting.attempts()
    assert [r["name"] for r in me(host)["rules"]] == ["team-a", "other-team"]
    after = counting.attempts()

    def used(client: str) -> int:
        return after.get(client, {}).get("attempts", 0) - before.get(client, {}).get("attempts", 0)

    assert (used("table"), used("arm"), used("kube")) == (2, 0, 0)
