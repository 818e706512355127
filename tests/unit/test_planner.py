"""The planner's rules, with plain values."""

import pytest

from shared import planner
from shared.binding import Binding
from shared.errors import PermanentError, TemporaryError
from shared.observed import (
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

    def test_untagged_identity_is_adopted_by_update(self):
        b = Binding.create(CLUSTER, "ns", "sa", ACCOUNT)
        assert planner.identity_action(IDENTITY, planner.identity_tags(b)) == "update"

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
        assert planner.kube_data_action(KubeObjectState("cm", "ns", data={"a": "1"}), {"a": "1"}) == "unchanged"
        assert planner.kube_data_action(KubeObjectState("cm", "ns", data={"a": "1", "b": "2"}), {"a": "1"}) == "update"

    def test_ownership(self):
        assert planner.owned_only_by(KubeObjectState("sa", "ns", managers=frozenset({"keyless"})), "keyless")
        assert not planner.owned_only_by(
            KubeObjectState("sa", "ns", managers=frozenset({"keyless", "helm"})), "keyless"
        )


def test_workload_still_bound_by_other_binding_of_same_service_account():
    a = Binding.create(CLUSTER, "ns", "sa", ACCOUNT)
    b = Binding.create(CLUSTER, "ns", "sa", ACCOUNT.replace("oai1", "oai2"))
    c = Binding.create(CLUSTER, "ns", "other", ACCOUNT)
    assert planner.workload_still_bound(a, [a, b])
    assert not planner.workload_still_bound(a, [a, c])
