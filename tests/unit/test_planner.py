"""The planner's rules, with plain values."""

import pytest

from shared.domain import planner
from shared.domain.binding import Binding
from shared.domain.errors import PermanentError, TemporaryError
from shared.domain.observed import (
    AccountState,
    ClusterState,
    CredentialState,
    IdentityState,
    KubeObjectState,
    RoleAssignmentState,
)

SUB = "00000000-0000-0000-0000-000000000001"
CLUSTER = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/aks1"
ACCOUNT = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/oai1"
ISSUER = "https://eastus.oic.prod-aks.azure.com/tenant/1111/"
ROLE = "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd"


def cluster(**kw):
    base = dict(
        id=CLUSTER,
        name="aks1",
        location="eastus",
        provisioning_state="Succeeded",
        oidc_issuer_enabled=True,
        issuer_url=ISSUER,
        workload_identity_enabled=True,
    )
    return ClusterState(**(base | kw))


def account(**kw):
    base = dict(
        id=ACCOUNT,
        name="oai1",
        kind="OpenAI",
        endpoint="https://oai1.openai.azure.com/",
        custom_subdomain="oai1",
        provisioning_state="Succeeded",
        deployments=("gpt-4o", "embed"),
    )
    return AccountState(**(base | kw))


IDENTITY = IdentityState(
    id="/x", name="keyless-x", location="eastus", client_id="cid", principal_id="pid", tenant_id="tid"
)


class TestCluster:
    def test_ready_when_oidc_and_workload_identity_are_on(self):
        assert planner.cluster_action(cluster(), enable_allowed=False) == "ready"

    @pytest.mark.parametrize(
        "kw", [{"oidc_issuer_enabled": False, "issuer_url": None}, {"workload_identity_enabled": False}]
    )
    def test_enable_when_allowed(self, kw):
        assert planner.cluster_action(cluster(**kw), enable_allowed=True) == "enable"

    def test_permanent_when_not_allowed_and_says_how_to_fix(self):
        with pytest.raises(PermanentError, match="enable-oidc-issuer"):
            planner.cluster_action(cluster(workload_identity_enabled=False), enable_allowed=False)

    @pytest.mark.parametrize("state", ["Creating", "Updating", "Upgrading", "Scaling"])
    def test_busy_cluster_is_not_yet(self, state):
        with pytest.raises(TemporaryError) as err:
            planner.cluster_action(cluster(provisioning_state=state), enable_allowed=True)
        assert err.value.delay_seconds > 0

    def test_failed_cluster_is_permanent(self):
        with pytest.raises(PermanentError):
            planner.cluster_action(cluster(provisioning_state="Failed"), enable_allowed=True)


class TestAccount:
    @pytest.mark.parametrize("kind", ["OpenAI", "AIServices", "aiservices"])
    def test_openai_kinds_pass(self, kind):
        planner.check_account(account(kind=kind))

    def test_other_kind_refused(self):
        with pytest.raises(PermanentError, match="TextAnalytics"):
            planner.check_account(account(kind="TextAnalytics"))

    def test_no_custom_subdomain_refused(self):
        with pytest.raises(PermanentError, match="custom subdomain"):
            planner.check_account(
                account(custom_subdomain=None, endpoint="https://eastus.api.cognitive.microsoft.com/")
            )


class TestIdentity:
    def test_absent_is_created_present_with_tags_unchanged(self):
        b = Binding.create(CLUSTER, "ns", "sa", ACCOUNT)
        tags = planner.identity_tags(b)
        assert planner.identity_action(None, tags) == "create"
        ours = IdentityState(**{**IDENTITY.__dict__, "tags": {**tags, "cost-center": "42"}})
        assert planner.identity_action(ours, tags) == "unchanged"
        assert planner.merged_tags(ours, tags)["cost-center"] == "42"

    def test_untagged_identity_is_refused_not_adopted(self):
        """It may hold another team's credentials; adopted, offboarding would delete it with them."""
        b = Binding.create(CLUSTER, "ns", "sa", ACCOUNT)
        with pytest.raises(PermanentError, match="keyless-x exists but was not made by Keyless") as err:
            planner.identity_action(IDENTITY, planner.identity_tags(b))
        assert f"keyless-workload={planner.identity_tags(b)['keyless-workload']}" in err.value.reason

    def test_identity_of_another_workload_is_refused(self):
        b = Binding.create(CLUSTER, "ns", "sa", ACCOUNT)
        theirs = planner.identity_tags(Binding.create(CLUSTER, "ns", "other", ACCOUNT))
        other = IdentityState(**{**IDENTITY.__dict__, "tags": theirs})
        with pytest.raises(PermanentError, match="belongs to another workload"):
            planner.identity_action(other, planner.identity_tags(b))
        managed_only = IdentityState(**{**IDENTITY.__dict__, "tags": {"managed-by": "keyless"}})
        with pytest.raises(PermanentError, match="not made by Keyless"):
            planner.identity_action(managed_only, planner.identity_tags(b))

    def test_ours_with_a_tag_missing_is_updated(self):
        b = Binding.create(CLUSTER, "ns", "sa", ACCOUNT)
        tags = planner.identity_tags(b)
        ours = IdentityState(**{**IDENTITY.__dict__, "tags": {k: v for k, v in tags.items() if k != "keyless-cluster"}})
        assert planner.identity_action(ours, tags) == "update"

    def test_a_legacy_named_identity_counts_only_when_tagged_for_this_workload(self):
        b = Binding.create(CLUSTER, "ns", "sa", ACCOUNT)
        tags = planner.identity_tags(b)
        ours = IdentityState(**{**IDENTITY.__dict__, "tags": tags})
        theirs = IdentityState(
            **{**IDENTITY.__dict__, "tags": planner.identity_tags(Binding.create(CLUSTER, "ns", "x", ACCOUNT))}
        )
        assert planner.legacy_identity(ours, tags) is ours
        assert planner.legacy_identity(theirs, tags) is None
        assert planner.legacy_identity(IDENTITY, tags) is None
        assert planner.legacy_identity(None, tags) is None

    def test_identity_owned_by_someone_else_is_refused(self):
        b = Binding.create(CLUSTER, "ns", "sa", ACCOUNT)
        other = IdentityState(**{**IDENTITY.__dict__, "tags": {"managed-by": "terraform"}})
        with pytest.raises(PermanentError, match="terraform"):
            planner.identity_action(other, planner.identity_tags(b))

    def test_tags_fit_azure_limits(self):
        b = Binding.create(CLUSTER, "n" * 63, "s" * 253, ACCOUNT)
        assert all(len(v) <= 256 for v in planner.identity_tags(b).values())


class TestCredential:
    SUBJECT = "system:serviceaccount:ns:sa"

    def test_create_when_none(self):
        assert planner.credential_action([], "fic", ISSUER, self.SUBJECT) == ("create", "fic")

    def test_unchanged_when_ours_matches(self):
        existing = [CredentialState("fic", ISSUER, self.SUBJECT)]
        assert planner.credential_action(existing, "fic", ISSUER, self.SUBJECT) == ("unchanged", "fic")

    def test_issuer_compared_exactly_trailing_slash_matters(self):
        existing = [CredentialState("fic", ISSUER.rstrip("/"), self.SUBJECT)]
        assert planner.credential_action(existing, "fic", ISSUER, self.SUBJECT) == ("update", "fic")

    def test_recreated_cluster_updates_our_credential(self):
        existing = [CredentialState("fic", "https://eastus.oic.prod-aks.azure.com/tenant/OLD/", self.SUBJECT)]
        assert planner.credential_action(existing, "fic", ISSUER, self.SUBJECT) == ("update", "fic")

    def test_same_issuer_subject_under_other_name_is_adopted(self):
        existing = [CredentialState("made-by-hand", ISSUER, self.SUBJECT)]
        assert planner.credential_action(existing, "fic", ISSUER, self.SUBJECT) == ("adopt", "made-by-hand")

    def test_at_twenty_a_new_credential_is_refused_listing_them(self):
        existing = [CredentialState(f"c{i}", ISSUER, f"system:serviceaccount:ns:sa{i}") for i in range(20)]
        with pytest.raises(PermanentError) as err:
            planner.credential_action(existing, "fic", ISSUER, self.SUBJECT)
        assert "20" in err.value.reason and "c19" in err.value.reason

    def test_at_twenty_an_update_of_ours_is_still_allowed(self):
        existing = [CredentialState(f"c{i}", ISSUER, f"system:serviceaccount:ns:sa{i}") for i in range(19)]
        existing.append(CredentialState("fic", "https://old/", self.SUBJECT))
        assert planner.credential_action(existing, "fic", ISSUER, self.SUBJECT) == ("update", "fic")


class TestRoleAssignment:
    def ra(self, scope=ACCOUNT, role=ROLE, principal="pid"):
        return RoleAssignmentState(
            id="/ra",
            name="n",
            scope=scope,
            role_definition_id=f"/providers/Microsoft.Authorization/roleDefinitions/{role}",
            principal_id=principal,
        )

    def test_exact_scope_and_role_is_unchanged_whatever_the_prefix(self):
        assert planner.role_assignment_action([self.ra(scope=ACCOUNT.lower())], ACCOUNT, ROLE, "pid")[0] == "unchanged"

    def test_inherited_or_other_role_does_not_count(self):
        rg_scope = ACCOUNT.rsplit("/providers/", 1)[0]
        existing = [self.ra(scope=rg_scope), self.ra(role="a001fd3d-188f-4b5d-821b-7da978bf7442")]
        assert planner.role_assignment_action(existing, ACCOUNT, ROLE, "pid") == ("create", None)


class TestKubernetes:
    def test_annotations_and_configmap(self):
        ann = planner.service_account_annotations(IDENTITY)
        assert ann == {"azure.workload.identity/client-id": "cid", "azure.workload.identity/tenant-id": "tid"}
        data = planner.configmap_data(account(), IDENTITY)
        assert data["AZURE_OPENAI_ENDPOINT"] == "https://oai1.openai.azure.com/"
        assert data["AZURE_OPENAI_DEPLOYMENT_NAME"] == "embed"
        assert data["AZURE_CLIENT_ID"] == "cid"
        assert data["USE_AZURE_OPENAI"] == "True" and data["USE_AZURE_AD"] == "True"
        assert not any("KEY" in k for k in data)

    def test_kube_actions(self):
        ann = {"a": "1"}
        assert planner.kube_annotations_action(None, ann) == "create"
        other_annotations = {"a": "1", "helm": "x"}
        assert (
            planner.kube_annotations_action(KubeObjectState("sa", "ns", annotations=other_annotations), ann)
            == "unchanged"
        )
        assert planner.kube_annotations_action(KubeObjectState("sa", "ns", annotations={"a": "2"}), ann) == "update"
        ours_too = KubeObjectState("sa", "ns", annotations=other_annotations, annotation_owners={"helm": MINE})
        assert planner.kube_annotations_action(ours_too, ann, "keyless") == "update", "an apply drops what we own"

    def test_ownership(self):
        assert planner.owned_only_by(KubeObjectState("sa", "ns", managers=frozenset({"keyless"})), "keyless")
        assert not planner.owned_only_by(
            KubeObjectState("sa", "ns", managers=frozenset({"keyless", "helm"})), "keyless"
        )


MINE = frozenset({"keyless"})
HELM = frozenset({"helm"})
CID, TID = planner.CLIENT_ID_ANNOTATION, planner.TENANT_ID_ANNOTATION
CREATED = {planner.CREATED_BY_ANNOTATION: "keyless"}
ADOPT = {planner.ADOPT_ANNOTATION: "true"}


def sa_state(annotations, owners=None, managers=("keyless",), labelled=False):
    labels = dict(planner.SA_BOUND_LABELS) if labelled else {}
    return KubeObjectState(
        "app",
        "team",
        annotations=annotations,
        annotation_owners=owners or {},
        managers=frozenset(managers),
        labels=labels,
        label_owners={k: frozenset({"keyless"}) for k in labels},
    )


class TestServiceAccount:
    def test_created_with_the_marker(self):
        plan = planner.service_account_plan(None, IDENTITY, "keyless")
        assert plan == planner.KubePlan("create", {CID: "cid", TID: "tid", **CREATED}, planner.SA_BOUND_LABELS)

    def test_another_managers_client_id_is_refused_naming_the_manager_and_the_hand_over(self):
        observed = sa_state({CID: "theirs"}, {CID: HELM}, managers=("helm",))
        with pytest.raises(PermanentError) as err:
            planner.service_account_plan(observed, IDENTITY, "keyless")
        for words in ("team/app", "client-id='theirs'", "'helm'", "keyless.io/adopt=true"):
            assert words in err.value.reason

    def test_an_unclaimed_value_counts_as_someone_elses(self):
        with pytest.raises(PermanentError, match="no field manager"):
            planner.service_account_plan(sa_state({TID: "other-tenant"}, managers=()), IDENTITY, "keyless")

    def test_an_equal_value_is_no_conflict(self):
        observed = sa_state({CID: "cid", TID: "tid"}, {CID: HELM, TID: HELM}, managers=("helm",), labelled=True)
        plan = planner.service_account_plan(observed, IDENTITY, "keyless")
        assert plan.action == "unchanged" and not plan.force

    def test_an_unlabelled_service_account_gets_the_sweeps_label_without_force(self):
        """The drift sweep lists a cluster's bound ServiceAccounts by label: one bound before gets it once."""
        observed = sa_state({CID: "cid", TID: "tid"}, {CID: HELM, TID: HELM}, managers=("helm",))
        plan = planner.service_account_plan(observed, IDENTITY, "keyless")
        assert plan.action == "update" and not plan.force
        assert plan.labels == {"keyless.io/bound": "true"}

    def test_our_own_value_is_updated_without_force_and_keeps_the_marker(self):
        observed = sa_state({CID: "old", TID: "tid", **CREATED}, {CID: MINE, TID: MINE, **{k: MINE for k in CREATED}})
        plan = planner.service_account_plan(observed, IDENTITY, "keyless")
        assert plan == planner.KubePlan("update", {CID: "cid", TID: "tid", **CREATED}, planner.SA_BOUND_LABELS)

    def test_handed_over_the_value_is_taken_with_force(self):
        observed = sa_state({CID: "theirs", **ADOPT}, {CID: HELM, **{k: HELM for k in ADOPT}}, managers=("helm",))
        plan = planner.service_account_plan(observed, IDENTITY, "keyless")
        assert plan == planner.KubePlan("update", {CID: "cid", TID: "tid"}, planner.SA_BOUND_LABELS, force=True), (
            "adopted, not created"
        )

    def test_a_marker_someone_else_wrote_does_not_count(self):
        forged = sa_state(dict(CREATED), {k: HELM for k in CREATED}, managers=("helm", "keyless"))
        assert not planner.created_by_keyless(forged, "keyless")
        assert planner.release_action(forged, "keyless") == "release"


class TestConfigMap:
    B = Binding.create(CLUSTER, "team", "app", ACCOUNT)
    DATA = {"AZURE_CLIENT_ID": "cid"}

    def state(self, **kw):
        return KubeObjectState(self.B.configmap_name, "team", **kw)

    def test_created_with_marker_and_labels(self):
        plan = planner.configmap_plan(None, self.DATA, self.B, "keyless")
        assert plan.action == "create" and plan.annotations == CREATED and not plan.force
        assert plan.labels == {"app.kubernetes.io/managed-by": "keyless", "keyless.io/binding": self.B.key}

    def test_someone_elses_is_refused_naming_it(self):
        with pytest.raises(PermanentError) as err:
            planner.configmap_plan(self.state(data={"x": "1"}, managers=HELM), self.DATA, self.B, "keyless")
        assert self.B.configmap_name in err.value.reason and "'helm'" in err.value.reason
        assert "keyless.io/adopt=true" in err.value.reason

    def test_handed_over_it_gets_only_our_keys(self):
        observed = self.state(annotations=dict(ADOPT), data={"x": "1"}, managers=HELM)
        plan = planner.configmap_plan(observed, self.DATA, self.B, "keyless")
        assert plan == planner.KubePlan("update", {}, {}, force=True)
        mine = self.state(annotations=dict(ADOPT), data={"x": "1", **self.DATA}, data_owners={"AZURE_CLIENT_ID": MINE})
        assert planner.configmap_plan(mine, self.DATA, self.B, "keyless").action == "unchanged", "others' keys stay"

    def test_made_before_the_marker_the_binding_label_counts_and_the_marker_is_added(self):
        labels = planner.configmap_labels(self.B)
        observed = self.state(labels=labels, label_owners={k: MINE for k in labels}, data=dict(self.DATA))
        assert planner.created_by_keyless(observed, "keyless", self.B.key)
        plan = planner.configmap_plan(observed, self.DATA, self.B, "keyless")
        assert plan.action == "update" and plan.annotations == CREATED
        other = Binding.create(CLUSTER, "team", "app", ACCOUNT.replace("oai1", "oai2"))
        assert not planner.created_by_keyless(observed, "keyless", other.key)

    def test_a_key_we_no_longer_want_is_an_update(self):
        observed = self.state(
            annotations=dict(CREATED),
            annotation_owners={k: MINE for k in CREATED},
            labels=planner.configmap_labels(self.B),
            label_owners={k: MINE for k in planner.configmap_labels(self.B)},
            data={**self.DATA, "AZURE_OPENAI_DEPLOYMENT_NAME": "gone"},
            data_owners={"AZURE_CLIENT_ID": MINE, "AZURE_OPENAI_DEPLOYMENT_NAME": MINE},
        )
        assert planner.configmap_plan(observed, self.DATA, self.B, "keyless").action == "update"


class TestRelease:
    def test_only_what_keyless_created_and_no_one_else_wrote_is_deleted(self):
        created = sa_state(dict(CREATED), {k: MINE for k in CREATED})
        assert planner.release_action(created, "keyless") == "delete"
        shared = sa_state(dict(CREATED), {k: MINE for k in CREATED}, managers=("keyless", "helm"))
        assert planner.release_action(shared, "keyless") == "release"

    def test_kubectl_create_sa_after_keyless_took_its_only_field_is_released_not_deleted(self):
        assert planner.release_action(sa_state({CID: "cid"}, {CID: MINE}), "keyless") == "release"

    def test_nothing_of_ours_is_left_alone(self):
        assert planner.release_action(None, "keyless") == "absent"
        assert planner.release_action(sa_state({}, managers=("helm",)), "keyless") == "leave"


def test_a_config_map_shared_by_another_role_binding_stays():
    a = Binding.create(CLUSTER, "ns", "sa", ACCOUNT)
    b = Binding.create(CLUSTER, "ns", "sa", ACCOUNT, role="a001fd3d-188f-4b5d-821b-7da978bf7442",
                       allowlist=(ROLE, "a001fd3d-188f-4b5d-821b-7da978bf7442"))  # fmt: skip
    assert a.configmap_name == b.configmap_name and a.key != b.key
    assert planner.configmap_still_used(a, [a, b])
    assert not planner.configmap_still_used(a, [a])


def test_workload_still_bound_by_other_binding_of_same_service_account():
    a = Binding.create(CLUSTER, "ns", "sa", ACCOUNT)
    b = Binding.create(CLUSTER, "ns", "sa", ACCOUNT.replace("oai1", "oai2"))
    c = Binding.create(CLUSTER, "ns", "other", ACCOUNT)
    assert planner.workload_still_bound(a, [a, b])
    assert not planner.workload_still_bound(a, [a, c])
