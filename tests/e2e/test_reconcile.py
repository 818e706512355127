"""One binding, end to end: the real SDKs against the ARM and Kubernetes emulators.

State is checked from the emulators' side (what Azure and the cluster hold), and request
counts from both sides (what the engine says it did, what the servers saw).
"""

from __future__ import annotations

import threading
import uuid

import pytest

from shared.domain.binding import Binding
from shared.engine.steps import ONBOARD_STEPS
from tests.conftest import ACCOUNT_ID, CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT, SUB

CLIENT_ID = "azure.workload.identity/client-id"
TENANT_ID = "azure.workload.identity/tenant-id"
OPENAI_USER = "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd"


def assert_converged(arm, kube, binding: Binding) -> dict:
    """Exactly one identity, credential and role assignment, and the Kubernetes objects right."""
    identities = [i for i in arm.identities() if i["name"].lower() == binding.identity_name.lower()]
    assert len(identities) == 1, identities
    identity = identities[0]
    props = identity["properties"]
    assert identity["tags"]["managed-by"] == "keyless"
    assert identity["tags"]["keyless-namespace"] == NAMESPACE
    creds = arm.federated_credentials(identity["id"])
    assert len(creds) == 1, creds
    issuer = arm.managed_cluster(CLUSTER_ID)["properties"]["oidcIssuerProfile"]["issuerURL"]
    assert issuer.endswith("/")
    assert creds[0]["properties"]["issuer"] == issuer
    assert creds[0]["properties"]["subject"] == f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
    assert creds[0]["properties"]["audiences"] == ["api://AzureADTokenExchange"]
    assignments = [ra for ra in arm.role_assignments() if ra["properties"]["principalId"] == props["principalId"]]
    assert len(assignments) == 1, assignments
    assert assignments[0]["properties"]["scope"].lower() == ACCOUNT_ID.lower()
    assert assignments[0]["properties"]["roleDefinitionId"].lower().endswith(OPENAI_USER)
    assert assignments[0]["properties"]["principalType"] == "ServicePrincipal"
    sa = kube.get_object("ServiceAccount", NAMESPACE, SERVICE_ACCOUNT)
    assert sa["metadata"]["annotations"][CLIENT_ID] == props["clientId"]
    assert sa["metadata"]["annotations"][TENANT_ID] == props["tenantId"]
    cm = kube.get_object("ConfigMap", NAMESPACE, binding.configmap_name)
    assert cm["data"]["AZURE_OPENAI_ENDPOINT"] == "https://oai-team.openai.azure.com/"
    assert cm["data"]["AZURE_OPENAI_DEPLOYMENT_NAME"] == "gpt-4o"
    assert cm["data"]["AZURE_CLIENT_ID"] == props["clientId"]
    assert cm["data"]["USE_AZURE_OPENAI"] == "True" and cm["data"]["USE_AZURE_AD"] == "True"
    assert not any("KEY" in k for k in cm["data"])
    return identity


def assert_nothing_left(arm, kube, binding: Binding) -> None:
    assert [i for i in arm.identities() if i["name"].lower() == binding.identity_name.lower()] == []
    assert [ra for ra in arm.role_assignments(ACCOUNT_ID)] == []
    assert kube.get_object("ConfigMap", NAMESPACE, binding.configmap_name) is None
    assert kube.get_object("ServiceAccount", NAMESPACE, SERVICE_ACCOUNT) is None


def test_fresh_binding_becomes_keyless_and_second_run_writes_nothing(arm, kube, engine, binding):
    first = engine.reconcile(binding)
    assert first.status == "ready", first.as_dict()
    assert {s.step: s.outcome for s in first.steps} == {
        "cluster": "unchanged",
        "account": "unchanged",
        "namespace": "unchanged",
        "identity": "created",
        "federated-credential": "created",
        "role-assignment": "created",
        "service-account": "created",
        "configmap": "created",
    }
    identity = assert_converged(arm, kube, binding)
    assert first.identity["clientId"] == identity["properties"]["clientId"]
    assert first.identity["principalId"] == identity["properties"]["principalId"]
    assert first.requests.arm_writes == 3  # identity, credential, role assignment
    assert first.requests.kube_writes == 2  # service account, config map
    assert first.requests.arm_writes == len(arm.log.writes())
    assert first.requests.kube_writes == len(kube.log.writes())
    assert first.requests.arm_reads == len(arm.log.reads())
    assert first.requests.kube_reads == len(kube.log.reads())

    arm.log.clear()
    kube.log.clear()
    second = engine.reconcile(binding)
    assert second.status == "ready"
    assert {s.outcome for s in second.steps} == {"unchanged"}
    assert second.requests.writes == 0
    assert arm.log.writes() == [] and kube.log.writes() == []
    assert second.identity == first.identity
    assert second.role_assignment_id == first.role_assignment_id


def test_offboard_removes_everything_and_second_offboard_has_nothing_to_do(arm, kube, engine, binding):
    assert engine.reconcile(binding).status == "ready"
    gone = engine.offboard(binding)
    assert gone.status == "removed", gone.as_dict()
    assert {s.step: s.outcome for s in gone.steps} == {
        "configmap": "deleted",
        "service-account": "deleted",
        "role-assignment": "deleted",
        "federated-credential": "deleted",
        "identity": "deleted",
    }
    assert_nothing_left(arm, kube, binding)
    arm.log.clear()
    kube.log.clear()
    again = engine.offboard(binding)
    assert again.status == "removed"
    assert {s.outcome for s in again.steps} <= {"absent"}
    assert again.requests.writes == 0 and arm.log.writes() == [] and kube.log.writes() == []


def test_service_account_owned_by_helm_keeps_its_fields(arm, kube, engine, binding):
    kube.put_object(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                "name": SERVICE_ACCOUNT,
                "namespace": NAMESPACE,
                "labels": {"app.kubernetes.io/managed-by": "Helm"},
                "annotations": {"meta.helm.sh/release-name": "chat"},
            },
        },
        field_manager="helm",
    )
    assert engine.reconcile(binding).status == "ready"
    sa = kube.get_object("ServiceAccount", NAMESPACE, SERVICE_ACCOUNT)
    assert sa["metadata"]["annotations"]["meta.helm.sh/release-name"] == "chat"
    assert sa["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "Helm", "keyless.io/bound": "true"}
    assert CLIENT_ID in sa["metadata"]["annotations"]
    managers = {m["manager"] for m in sa["metadata"]["managedFields"]}
    assert {"helm", "keyless"} <= managers

    out = engine.offboard(binding)
    assert out.step("service-account").outcome == "updated"
    sa = kube.get_object("ServiceAccount", NAMESPACE, SERVICE_ACCOUNT)
    assert sa is not None, "a Helm-owned service account must survive offboarding"
    assert sa["metadata"]["annotations"] == {"meta.helm.sh/release-name": "chat"}
    assert sa["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "Helm"}, "our label given back too"


@pytest.mark.parametrize("crash_after", ONBOARD_STEPS)
def test_crash_after_any_step_then_rerun_converges_without_duplicates(arm, kube, engine, binding, crash_after):
    class Crash(BaseException):
        """Stands for the worker process dying: not an error the engine may catch."""

    def crash(_binding, outcome):
        if outcome.step == crash_after:
            raise Crash

    with pytest.raises(Crash):
        engine.reconcile(binding, on_step=crash)
    result = engine.reconcile(binding)
    assert result.status == "ready", result.as_dict()
    assert_converged(arm, kube, binding)
    kube.log.clear()
    arm.log.clear()
    assert engine.reconcile(binding).requests.writes == 0


def test_recreated_cluster_new_issuer_credential_follows(arm, kube, engine, binding):
    assert engine.reconcile(binding).status == "ready"
    new_issuer = arm.recreate_managed_cluster(CLUSTER_ID)
    engine.kube.forget(binding.cluster)
    engine.clusters.get(binding.cluster, fresh=True)  # what the cluster's write event makes the worker do
    result = engine.reconcile(binding)
    assert result.status == "ready", result.as_dict()
    assert result.step("federated-credential").outcome == "updated"
    identity = assert_converged(arm, kube, binding)
    assert arm.federated_credentials(identity["id"])[0]["properties"]["issuer"] == new_issuer


def test_cluster_without_oidc_is_enabled_through_the_lro(ca, arm, kube, settings, make_engine, binding):
    arm.delete_managed_cluster(CLUSTER_ID)
    arm.add_managed_cluster(
        CLUSTER_ID,
        kube_server_url=kube.url,
        kube_ca_pem=ca.ca_pem,
        oidc_issuer_enabled=False,
        workload_identity_enabled=False,
    )
    engine = make_engine(settings, cluster_update_wait_seconds=20.0)
    arm.cluster_update_polls = 2
    result = engine.reconcile(binding)
    assert result.step("cluster").outcome == "updated", result.as_dict()
    assert result.status == "ready"
    props = arm.managed_cluster(CLUSTER_ID)["properties"]
    assert props["oidcIssuerProfile"]["enabled"] is True
    assert props["securityProfile"]["workloadIdentity"]["enabled"] is True
    assert len(arm.log.matching("PUT", "managedClusters/aks1")) == 1
    assert_converged(arm, kube, binding)
    arm.log.clear()
    assert engine.reconcile(binding).requests.writes == 0, "our own cluster update must not loop"


def test_cluster_update_without_waiting_is_not_yet_then_converges(ca, arm, kube, engine, binding):
    arm.delete_managed_cluster(CLUSTER_ID)
    arm.add_managed_cluster(
        CLUSTER_ID,
        kube_server_url=kube.url,
        kube_ca_pem=ca.ca_pem,
        oidc_issuer_enabled=False,
        workload_identity_enabled=False,
    )
    first = engine.reconcile(binding)
    assert first.status == "not-ready"
    assert first.step("cluster").outcome == "not-yet" and first.step("cluster").delay_seconds
    assert first.step("identity").outcome == "skipped"
    assert arm.identities() == [], "nothing is created before the cluster is ready"
    busy = engine.reconcile(binding)
    assert busy.step("cluster").outcome == "not-yet"
    assert len(arm.log.matching("PUT", "managedClusters/aks1")) == 1, "no second update while one runs"
    arm.clock.advance(arm.cluster_update_seconds + 1)
    assert engine.reconcile(binding).status == "ready"


def test_cluster_features_off_and_enabling_forbidden_is_a_clear_failure(ca, arm, kube, settings, make_engine, binding):
    arm.delete_managed_cluster(CLUSTER_ID)
    arm.add_managed_cluster(
        CLUSTER_ID, kube_server_url=kube.url, kube_ca_pem=ca.ca_pem, workload_identity_enabled=False
    )
    result = make_engine(settings, enable_cluster_features=False).reconcile(binding)
    assert result.status == "failed"
    assert "workload identity" in result.step("cluster").reason
    assert arm.log.writes() == []


def test_provisioning_cluster_is_not_yet(ca, arm, kube, engine, binding):
    arm.delete_managed_cluster(CLUSTER_ID)
    arm.add_managed_cluster(CLUSTER_ID, kube_server_url=kube.url, kube_ca_pem=ca.ca_pem, provisioning_state="Creating")
    result = engine.reconcile(binding)
    assert result.status == "not-ready" and result.step("cluster").outcome == "not-yet"
    assert arm.log.writes() == []


def test_principal_not_replicated_is_not_yet_then_converges(arm, kube, engine, binding):
    arm.principal_replication_seconds = 120
    first = engine.reconcile(binding)
    assert first.status == "not-ready", first.as_dict()
    step = first.step("role-assignment")
    assert step.outcome == "not-yet" and step.delay_seconds and "replicated" in step.reason
    assert first.step("service-account").outcome == "skipped"
    arm.clock.advance(121)
    second = engine.reconcile(binding)
    assert second.status == "ready", second.as_dict()
    assert second.step("identity").outcome == "unchanged"
    assert second.step("role-assignment").outcome == "created"
    assert_converged(arm, kube, binding)


def onboard_with_a_hand_made_credential(arm, kube, engine, binding) -> None:
    """Onboarded, then our credential replaced by an equal one (same issuer and subject) named by hand."""
    assert engine.reconcile(binding).status == "ready"
    identity = assert_converged(arm, kube, binding)
    sub, rg = engine.identity_location(binding)
    issuer = arm.managed_cluster(CLUSTER_ID)["properties"]["oidcIssuerProfile"]["issuerURL"]
    engine.identities.delete_credential(sub, rg, identity["name"], binding.credential_name)
    engine.identities.put_credential(sub, rg, identity["name"], "made-by-hand", issuer, binding.subject)


def test_credential_with_same_issuer_and_subject_under_other_name_is_adopted(arm, kube, engine, binding):
    onboard_with_a_hand_made_credential(arm, kube, engine, binding)
    arm.log.clear()
    result = engine.reconcile(binding)
    assert result.status == "ready"
    assert result.step("federated-credential").outcome == "unchanged"
    assert "adopted" in result.step("federated-credential").reason
    assert result.credential["name"] == "made-by-hand"
    assert arm.log.writes() == []


def test_offboarding_deletes_an_adopted_credential_with_the_identity(arm, kube, engine, binding):
    onboard_with_a_hand_made_credential(arm, kube, engine, binding)
    gone = engine.offboard(binding)
    assert gone.status == "removed", gone.as_dict()
    assert gone.step("federated-credential").details["name"] == "made-by-hand"
    assert gone.step("identity").outcome == "deleted"
    assert_nothing_left(arm, kube, binding)


def test_offboarding_keeps_an_identity_that_holds_someone_elses_credential(arm, kube, engine, binding):
    """Deleting the identity would take a credential Keyless did not make with it: the identity
    stays (its role assignment is gone, so it can no longer reach the account), and the outcome says why."""
    assert engine.reconcile(binding).status == "ready"
    identity = assert_converged(arm, kube, binding)
    sub, rg = engine.identity_location(binding)
    other_issuer = "https://westeurope.oic.prod-aks.azure.com/tenant/other-cluster/"
    engine.identities.put_credential(sub, rg, identity["name"], "ci-runner", other_issuer, "repo:org/app:ref:main")
    gone = engine.offboard(binding)
    assert gone.status == "removed", gone.as_dict()
    step = gone.step("identity")
    assert step.outcome == "unchanged" and "ci-runner (subject repo:org/app:ref:main)" in step.reason
    assert arm.identity(identity["id"]) is not None
    assert [c["name"] for c in arm.federated_credentials(identity["id"])] == ["ci-runner"]
    assert arm.role_assignments(ACCOUNT_ID) == []


def test_equal_role_assignment_under_another_name_counts_as_present(arm, kube, engine, binding):
    engine.reconcile(binding)
    identity = assert_converged(arm, kube, binding)
    principal = identity["properties"]["principalId"]
    name = [ra for ra in arm.role_assignments(ACCOUNT_ID)][0]["name"]
    engine.roles.delete(SUB, ACCOUNT_ID, name)
    other = str(uuid.uuid4())
    engine.roles.create(SUB, ACCOUNT_ID, other, OPENAI_USER, principal)
    arm.log.clear()
    result = engine.reconcile(binding)
    assert result.step("role-assignment").outcome == "unchanged"
    assert arm.log.writes() == []
    assert [ra["name"] for ra in arm.role_assignments(ACCOUNT_ID)] == [other]


def test_missing_namespace_fails_before_any_write_unless_creation_allowed(arm, kube, settings, make_engine):
    b = Binding.create(CLUSTER_ID, "no-such-ns", SERVICE_ACCOUNT, ACCOUNT_ID)
    result = make_engine(settings).reconcile(b)
    assert result.status == "failed"
    assert "no-such-ns" in result.step("namespace").reason
    assert arm.log.writes() == [] and kube.log.writes() == []
    result = make_engine(settings, create_namespaces=True).reconcile(b)
    assert result.status == "ready", result.as_dict()
    assert result.step("namespace").outcome == "created"
    assert kube.get_object("Namespace", None, "no-such-ns") is not None


@pytest.mark.parametrize(
    "kwargs, fragment",
    [({"kind": "TextAnalytics"}, "TextAnalytics"), ({"custom_subdomain": None}, "custom subdomain")],
)
def test_unusable_account_is_refused_before_any_write(arm, kube, engine, kwargs, fragment):
    other = ACCOUNT_ID.replace("oai-team", "not-openai")
    arm.add_cognitive_account(other, **kwargs)
    result = engine.reconcile(Binding.create(CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT, other))
    assert result.status == "failed"
    assert fragment in result.step("account").reason
    assert arm.log.writes() == [] and kube.log.writes() == []


def test_missing_cluster_or_account_is_a_permanent_failure(arm, kube, engine):
    gone = Binding.create(CLUSTER_ID.replace("aks1", "nope"), NAMESPACE, SERVICE_ACCOUNT, ACCOUNT_ID)
    result = engine.reconcile(gone)
    assert result.status == "failed" and "not found" in result.step("cluster").reason


def test_two_bindings_share_one_identity_and_offboarding_one_keeps_it(arm, kube, engine, binding):
    second_account = ACCOUNT_ID.replace("oai-team", "oai-two")
    arm.add_cognitive_account(second_account)
    other = Binding.create(CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT, second_account)
    assert engine.reconcile(binding).status == "ready"
    second = engine.reconcile(other)
    assert second.status == "ready"
    assert second.step("identity").outcome == "unchanged"
    assert second.step("federated-credential").outcome == "unchanged"
    assert len(arm.identities()) == 1
    out = engine.offboard(binding, others=[binding, other])
    assert out.status == "removed"
    assert out.step("identity").outcome == "unchanged"
    assert arm.role_assignments(ACCOUNT_ID) == []
    assert len(arm.role_assignments(second_account)) == 1
    assert kube.get_object("ConfigMap", NAMESPACE, other.configmap_name) is not None
    assert CLIENT_ID in kube.get_object("ServiceAccount", NAMESPACE, SERVICE_ACCOUNT)["metadata"]["annotations"]


def test_concurrent_runs_of_one_binding_converge_to_one_of_each(arm, kube, engine, binding):
    arm.fic_write_latency_seconds = 0.3
    results = []
    threads = [threading.Thread(target=lambda: results.append(engine.reconcile(binding))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 3
    assert all(r.status in ("ready", "not-ready") for r in results), [r.as_dict() for r in results]
    final = engine.reconcile(binding)
    assert final.status == "ready", final.as_dict()
    assert_converged(arm, kube, binding)


def test_kubernetes_is_reached_with_an_entra_token_for_the_aks_server_app(arm, kube, engine, binding, credential):
    assert engine.reconcile(binding).status == "ready"
    assert "6dae42f8-4368-4678-94ff-3960e28e3630/.default" in credential.requested_scopes
    assert len(arm.log.matching("POST", "listClusterUserCredential")) == 1
    assert arm.log.matching("POST", "listClusterAdminCredential") == []


def test_local_admin_account_only_when_allowed_and_only_for_clusters_without_entra(
    ca, arm, kube, settings, make_engine, binding, credential
):
    # An Entra cluster: its Entra credentials even with local accounts allowed (issue 21, finding 5: the
    # admin credential is refused there, or not granted, and every call would fail).
    entra = make_engine(settings, allow_local_accounts=True).reconcile(binding)
    assert entra.status == "ready", entra.as_dict()
    assert arm.log.matching("POST", "listClusterAdminCredential") == []

    arm.delete_managed_cluster(CLUSTER_ID)
    arm.add_managed_cluster(
        CLUSTER_ID,
        kube_server_url=kube.url,
        kube_ca_pem=ca.ca_pem,
        disable_local_accounts=False,
        aad_enabled=False,
        admin_token="local-admin-token",
    )
    kube.accepted_tokens = {"local-admin-token"}
    result = make_engine(settings, allow_local_accounts=True).reconcile(binding)
    assert result.status == "ready", result.as_dict()
    assert len(arm.log.matching("POST", "listClusterAdminCredential")) == 1
