"""The drift sweep's decisions, with plain data: which records are suspects, and why."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from shared.domain import naming, planner, sweep_plan
from shared.domain.binding import OPENAI_USER_ROLE_ID, Binding
from shared.domain.observed import AccountState, ClusterState, CredentialState, IdentityState, KubeObjectState
from shared.domain.records import BindingRecord
from shared.domain.workloads import ApiKeyRules

SUB = "00000000-0000-0000-0000-000000000001"
CLUSTER = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/aks1"
ACCOUNT = f"/subscriptions/{SUB}/resourceGroups/ai/providers/Microsoft.CognitiveServices/accounts/oai1"
IDENTITY = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1"
ISSUER = "https://eastus.oic.prod-aks.azure.com/tenant/uuid/"
NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
RULES = ApiKeyRules(("AZURE_OPENAI_API_KEY",), ())
ENDPOINT = "https://oai1.openai.azure.com/"


def record(**changes) -> BindingRecord:
    b = Binding.create(CLUSTER, "team-a", "chat-api", ACCOUNT)
    r = BindingRecord.for_binding(b, "someone", "api")
    r.status = "ready"
    r.updated_at = "2026-12-03T10:00:00.000Z"
    r.identity = {"resourceId": IDENTITY, "clientId": "cid", "principalId": "pid", "tenantId": "tid"}
    r.credential = {"name": "fic", "issuer": ISSUER, "subject": b.subject}
    return dataclasses.replace(r, **changes)


def snapshot(**changes) -> sweep_plan.AzureSnapshot:
    b = Binding.create(CLUSTER, "team-a", "chat-api", ACCOUNT)
    parts = {
        "identities": [IdentityState(IDENTITY, "id1", "eastus", "cid", "pid", "tid", planner.identity_tags(b))],
        "role_assignments": [
            sweep_plan.RoleKey.of(ACCOUNT.upper(), f"/providers/x/roleDefinitions/{OPENAI_USER_ROLE_ID}", "PID")
        ],
        "clusters": [ClusterState(CLUSTER, "aks1", "eastus", "Succeeded", True, ISSUER, True)],
        "accounts": [AccountState(ACCOUNT, "oai1", "OpenAI", ENDPOINT, "oai1", "Succeeded")],
    }
    parts.update(changes)
    return sweep_plan.AzureSnapshot.build(**parts)


class TestAzureSuspicion:
    def test_a_matching_record_is_no_suspect_whatever_the_case_of_the_ids(self):
        assert sweep_plan.azure_suspicion(record(), snapshot(), NOW, 900) is None

    @pytest.mark.parametrize(
        "changes, reason",
        [
            ({"identities": []}, "identity not in the inventory"),
            ({"role_assignments": []}, "role assignment not in the inventory"),
            ({"clusters": []}, "cluster not in the inventory"),
            ({"accounts": []}, "account not in the inventory"),
            ({"accounts": [AccountState(ACCOUNT, "oai1", "OpenAI", "https://eastus.api.cognitive.microsoft.com/", None,
                                        "Succeeded")]}, "no custom subdomain"),
            ({"clusters": [ClusterState(CLUSTER, "aks1", "eastus", "Succeeded", True, ISSUER + "x/", True)]},
             "issuer differs"),
            ({"identities": [IdentityState(IDENTITY, "id1", "eastus", "cid", "other", "tid", {})]},
             "principal differs"),
        ],
    )  # fmt: skip
    def test_each_mismatch_makes_a_suspect_with_its_reason(self, changes, reason):
        assert reason in (sweep_plan.azure_suspicion(record(), snapshot(**changes), NOW, 900) or "")

    def test_a_record_changed_recently_is_a_suspect_whatever_the_snapshot(self):
        recent = record(updated_at="2026-12-03T11:55:00.000Z")
        assert "recently" in sweep_plan.azure_suspicion(recent, snapshot(), NOW, 900)
        assert sweep_plan.azure_suspicion(recent, snapshot(), NOW, 60) is None


class TestStatus:
    def test_settled_and_scheduled_records_are_left_alone(self):
        assert sweep_plan.status_suspicion(record(), NOW, 3600) is None
        waiting = record(status="not-ready", next_attempt_at="2026-12-03T12:05:00Z")
        assert sweep_plan.status_suspicion(waiting, NOW, 3600) is None

    def test_a_ready_record_whose_access_was_not_proven_is_checked_again_once_old(self):
        unproven = record(verification={"status": "pending", "open": [{"name": "access", "status": "pending"}]})
        assert "access is pending" in sweep_plan.status_suspicion(unproven, NOW, 3600)
        failed = record(verification={"status": "fail", "open": [{"name": "access", "status": "fail"}]})
        assert "access is fail" in sweep_plan.status_suspicion(failed, NOW, 3600)
        recent = dataclasses.replace(unproven, updated_at="2026-12-03T11:30:00.000Z")
        assert sweep_plan.status_suspicion(recent, NOW, 3600) is None, "its own re-checks may still be running"
        assert sweep_plan.status_suspicion(record(verification={"status": "pass", "open": []}), NOW, 3600) is None
        no_pods = record(verification={"status": "pending", "open": [{"name": "pods", "status": "pending"}]})
        assert sweep_plan.status_suspicion(no_pods, NOW, 3600) is None, "no running pod: not a reason to run"

    def test_failed_and_long_overdue_records_are_suspects(self):
        assert sweep_plan.status_suspicion(record(status="failed"), NOW, 3600) == "status is failed"
        lost = record(status="not-ready", next_attempt_at="2026-12-03T10:30:00Z")
        assert "overdue" in sweep_plan.status_suspicion(lost, NOW, 3600)


def objects(annotations=None, data=None, configmap=True) -> sweep_plan.ClusterObjects:
    r = record()
    cm_name = naming.configmap_name("chat-api", "oai1", ACCOUNT.lower())
    sa = KubeObjectState("chat-api", "team-a", annotations=annotations or {planner.CLIENT_ID_ANNOTATION: "cid",
                         planner.TENANT_ID_ANNOTATION: "tid"})  # fmt: skip
    base = {"AZURE_CLIENT_ID": "cid", "AZURE_TENANT_ID": "tid", "USE_AZURE_OPENAI": "True", "USE_AZURE_AD": "True",
            "AZURE_OPENAI_ENDPOINT": ENDPOINT}  # fmt: skip
    cms = [KubeObjectState(cm_name, "team-a", data={**base, **(data or {})})] if configmap else []
    assert r.namespace == "team-a"
    return sweep_plan.ClusterObjects.build([sa], cms, [])


class TestKubeSuspicion:
    def test_matching_objects_are_no_suspect(self):
        assert sweep_plan.kube_suspicion(record(), objects(), ENDPOINT, "keyless", RULES) is None

    @pytest.mark.parametrize(
        "found, reason",
        [
            (objects(annotations={"other": "x"}), "client-id annotation differs"),
            (objects(configmap=False), "config map missing"),
            (objects(data={"AZURE_CLIENT_ID": "old"}), "config map's data differs"),
            (objects(data={"AZURE_OPENAI_ENDPOINT": "https://elsewhere/"}), "config map's data differs"),
            (sweep_plan.ClusterObjects.build([], [], []), "service account missing"),
        ],
    )
    def test_each_difference_makes_a_suspect(self, found, reason):
        assert reason in (sweep_plan.kube_suspicion(record(), found, ENDPOINT, "keyless", RULES) or "")

    def test_a_named_deployment_not_enforced_is_a_suspect(self):
        assert "not enforced" in sweep_plan.kube_suspicion(
            record(workloads=["web"]), objects(), ENDPOINT, "keyless", RULES
        )


class TestCredentials:
    def test_the_rotation_reads_every_identity_once_per_cycle(self):
        keys = [naming.short_hash(str(i), length=32) for i in range(2000)]
        slices = [sum(sweep_plan.in_rotation(k, n, 10) for n in range(1, 11)) for k in keys]
        assert set(slices) == {1}
        per_sweep = [sum(sweep_plan.in_rotation(k, n, 10) for k in keys) for n in range(1, 11)]
        assert all(150 <= c <= 250 for c in per_sweep), per_sweep

    def test_a_missing_credential_is_a_suspect_and_another_subjects_does_not_count(self):
        r = record()
        mine = CredentialState("fic", ISSUER, r.credential["subject"])
        theirs = CredentialState("x", ISSUER, "system:serviceaccount:team-a:other")
        assert sweep_plan.credential_suspicion(r, [mine], ISSUER) is None
        assert sweep_plan.credential_suspicion(r, [theirs], ISSUER) == "federated credential missing"
        assert sweep_plan.credential_suspicion(r, [mine], ISSUER + "new/") == "federated credential missing"


def test_scope_names_every_subscription_group_account_and_cluster_once():
    scope = sweep_plan.scope_of([record(), record(key="other")])
    assert scope.accounts == (ACCOUNT,) and scope.clusters == (CLUSTER,)
    assert scope.identity_groups == ((SUB, "rg"),) and scope.subscriptions == (SUB,)
