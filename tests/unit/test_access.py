"""The one door (shared.domain.access), with plain values: who may ask for what, and with whose consent."""

from __future__ import annotations

import json

import pytest

from shared.domain import access
from shared.domain.binding import Binding
from shared.domain.policy import AccessPolicy, PolicyError
from shared.domain.principal import Caller
from shared.domain.settings import DEFAULT_SYSTEM_NAMESPACES

SUB = "11111111-2222-3333-4444-555555555555"
OTHER = "99999999-8888-4777-8666-555555555555"
RG = f"/subscriptions/{SUB}/resourceGroups/rg-aks"
CLUSTER = f"{RG}/providers/Microsoft.ContainerService/managedClusters/aks1"
ACCOUNT = f"/subscriptions/{SUB}/resourceGroups/rg-ai/providers/Microsoft.CognitiveServices/accounts/oai"
ROLE = "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd"
GROUP = "bbbbbbbb-0000-4000-8000-000000000002"
CALLER = Caller("aaaaaaaa-0000-4000-8000-000000000001", groups=frozenset({GROUP}))
TAGS = access.ClusterTags(CLUSTER.lower())


def policy(*rules: dict) -> AccessPolicy:
    return AccessPolicy.parse(json.dumps({"rules": list(rules)}), DEFAULT_SYSTEM_NAMESPACES + ("platform",), ROLE)


TEAM = {"name": "team-a", "principals": {"groups": [GROUP]}, "clusters": [RG], "namespaces": ["team-a"],
        "accounts": [ACCOUNT]}  # fmt: skip


def binding(ns: str = "team-a", sa: str = "chat", cluster: str = CLUSTER, account: str = ACCOUNT) -> Binding:
    return Binding.create(cluster, ns, sa, account)


def authorise(b: Binding, requester: access.Requester, pol: AccessPolicy | None = None, **kw) -> access.Grant:
    args = {"allowed_subscriptions": (), "default_max_bindings": 250, "max_tag_bindings_per_cluster": 25} | kw
    return access.authorise(b, requester, pol or policy(TEAM), **args)


class TestCallers:
    def test_a_rule_grants_and_names_its_quota(self):
        grant = authorise(binding(), CALLER)
        assert grant.by == "rule 'team-a'" and grant.quota_key == "rule|team-a"
        assert grant.quotas == (access.Quota("rule|team-a", 250, "maxBindings of rule 'team-a'"),)

    def test_a_rule_quota_overrides_the_default(self):
        grant = authorise(binding(), CALLER, policy(TEAM | {"maxBindings": 3}))
        assert [q.limit for q in grant.quotas] == [3]

    def test_the_subscription_allowlist_holds_for_callers(self):
        with pytest.raises(access.Refused) as err:
            authorise(binding(), CALLER, allowed_subscriptions=(OTHER,))
        assert err.value.reason.startswith("cluster:")

    def test_a_role_taken_off_the_allowlist_is_refused(self):
        assert authorise(binding(), CALLER, role_allowlist=(ROLE.upper(),))
        with pytest.raises(access.Refused) as err:
            authorise(binding(), CALLER, role_allowlist=("a001fd3d-188f-4b5d-821b-7da978bf7442",))
        assert err.value.reason.startswith("role:")

    def test_a_record_without_claims_needs_some_rule_to_still_grant_it(self):
        assert authorise(binding(), access.AnyPrincipal()).by == "rule 'team-a'"
        with pytest.raises(access.Refused):
            authorise(binding(ns="team-b"), access.AnyPrincipal())

    def test_a_cluster_tags_rule_grants_no_person(self):
        tags_only = policy({**TEAM, "principals": {"clusterTags": True}})
        with pytest.raises(access.Refused):
            authorise(binding(), CALLER, tags_only)

    def test_recorded_claims_round_trip(self):
        recorded = access.recorded_principal(CALLER)
        assert access.requester_of("api", CLUSTER, recorded) == Caller(CALLER.object_id, groups=CALLER.groups)
        assert access.requester_of("api", CLUSTER, {}) == access.AnyPrincipal()
        assert access.requester_of("cluster-tags", CLUSTER, recorded) == TAGS


class TestClusterTags:
    @pytest.mark.parametrize("named", [CLUSTER, CLUSTER.upper(), RG, RG.replace("resourceGroups", "resourcegroups"),
                                       f"/subscriptions/{SUB}"])  # fmt: skip
    def test_the_account_consents_by_naming_cluster_group_or_subscription(self, named):
        grant = authorise(binding(), TAGS, account_tags={"Keyless-Allowed-Clusters": f"x; {named}"})
        assert "consent of account oai" in grant.by and grant.quota_key == f"tags|{CLUSTER.lower()}"

    def test_consent_may_spread_over_several_tags(self):
        tags = {"keyless-allowed-clusters": f"/subscriptions/{OTHER}", "keyless-allowed-clusters-2": RG}
        assert authorise(binding(), TAGS, account_tags=tags)

    @pytest.mark.parametrize(
        "near_miss",
        ["/subscriptions/", "/subscriptions", "/", "*", RG[:-1], RG + "/", CLUSTER + "x", CLUSTER[:-1],
         f"{RG}/providers", f"/subscriptions/{SUB}/resourceGroups", f"/subscriptions/{OTHER}", CLUSTER + "/..", ""],
    )  # fmt: skip
    def test_anything_but_a_whole_id_is_no_consent(self, near_miss):
        with pytest.raises(access.Refused) as err:
            authorise(binding(), TAGS, account_tags={"keyless-allowed-clusters": near_miss})
        assert err.value.reason.startswith("consent:") and "keyless-allowed-clusters" in err.value.reason

    def test_an_unreadable_account_is_no_consent(self):
        with pytest.raises(access.Refused) as err:
            authorise(binding(), TAGS, account_tags=None)
        assert "could not be read" in err.value.reason

    def test_a_policy_rule_may_consent_for_cluster_tags(self):
        rule = {**TEAM, "name": "tags", "principals": {"clusterTags": True}}
        assert authorise(binding(), TAGS, policy(rule), account_tags={}).by == "rule 'tags' for cluster tags"
        with pytest.raises(access.Refused):
            authorise(binding(ns="team-z"), TAGS, policy(rule), account_tags={})

    def test_a_cluster_tags_rule_counts_in_its_own_quota_and_the_clusters(self):
        rule = {**TEAM, "name": "tags", "principals": {"clusterTags": True}, "maxBindings": 1}
        grant = authorise(binding(), TAGS, policy(rule), account_tags={}, max_tag_bindings_per_cluster=7)
        assert [(q.key, q.limit) for q in grant.quotas] == [("rule|tags", 1), (f"tags|{CLUSTER.lower()}", 7)]
        assert access.quota_keys(grant.quota_key) == ("rule|tags", f"tags|{CLUSTER.lower()}")
        without = authorise(binding(), TAGS, policy({**rule, "maxBindings": None}), account_tags={})
        assert [q.limit for q in without.quotas] == [250, 25], "a rule without maxBindings: the default"

    def test_consent_counts_in_the_clusters_quota_only(self):
        grant = authorise(binding(), TAGS, account_tags={"keyless-allowed-clusters": CLUSTER})
        assert access.quota_keys(grant.quota_key) == (f"tags|{CLUSTER.lower()}",)
        assert access.quota_keys("") == ()

    @pytest.mark.parametrize("ns, sa", [("kube-system", "x"), ("platform", "agent"), ("team-a", "default")])
    def test_system_namespaces_and_default_never_come_from_tags(self, ns, sa):
        consent = {"keyless-allowed-clusters": CLUSTER}
        with pytest.raises(access.Refused) as err:
            authorise(binding(ns=ns, sa=sa), TAGS, account_tags=consent)
        assert err.value.reason.startswith("namespace:")

    def test_tags_ask_only_for_their_own_cluster(self):
        with pytest.raises(access.Refused):
            authorise(binding(), access.ClusterTags(CLUSTER.lower() + "2"), account_tags={"k": "v"})

    def test_the_subscription_allowlist_holds_for_tags_even_with_consent(self):
        other_account = ACCOUNT.replace(SUB, OTHER)
        with pytest.raises(access.Refused) as err:
            authorise(binding(account=other_account), TAGS, allowed_subscriptions=(SUB,),
                      account_tags={"keyless-allowed-clusters": CLUSTER})  # fmt: skip
        assert err.value.reason.startswith("openAIAccount:") and OTHER in err.value.reason


@pytest.mark.parametrize(
    "rule, message",
    [
        ({"clusters": ["/subscriptions/"]}, "clusters"),
        ({"accounts": [ACCOUNT + "/"]}, "accounts"),
        ({"clusters": [f"/subscriptions/{{{SUB}}}"]}, "clusters"),
        ({"maxBindings": -1}, "maxBindings"),
        ({"maxBindings": "5"}, "maxBindings"),
        ({"principals": {"clusterTags": "yes"}}, "clusterTags"),
        ({"serviceAccount": ["chat"]}, "serviceAccount"),  # misspelt: it would leave the default, every SA
        ({"principals": {"group": [GROUP]}}, "group"),
        ({"name": 7}, "name"),
    ],
)
def test_policy_scopes_and_quotas_are_whole_or_refused(rule, message):
    with pytest.raises(PolicyError) as err:
        policy(TEAM | rule)
    assert message in err.value.reason
