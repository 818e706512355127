"""Ownership, end to end: Keyless never takes over a field another manager set to another value, and
never deletes an object, in Azure or in the cluster, that it did not create; it gives back its own.

Each test stages an attack or an accident the engine once let through: a team's pods switching
identity at their next restart because Keyless overwrote their ServiceAccount's client id; a
`kubectl create sa` ServiceAccount, or someone's ConfigMap that happened to carry Keyless's name,
deleted by offboarding; an identity Keyless did not make adopted (and later deleted) because it sat
under Keyless's name; and two workloads whose identity names met in 40 bits of digest.
"""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from shared.domain import naming, planner
from shared.domain.binding import Binding
from tests.conftest import ACCOUNT_ID, CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT, SUB
from tests.e2e.test_private_clusters import make_private

CLIENT_ID = "azure.workload.identity/client-id"
TENANT_ID = "azure.workload.identity/tenant-id"
ADOPT = "keyless.io/adopt"
CREATED_BY = "keyless.io/created-by"
OPENAI_USER = "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd"
RG = "rg-aks"  # the cluster's resource group: where identities go without KEYLESS_IDENTITY_RESOURCE_GROUP


@pytest.fixture
def settings(settings):
    """No client-side ARM pacing here: it would only add waits (Azure's limits are tested elsewhere)."""
    return dataclasses.replace(settings, arm_pacing_scale=0)


def seed(kube, kind: str, name: str, *, annotations=None, labels=None, data=None, manager="helm", unclaimed=False):
    """An object another tool made (an Update by `manager`); `unclaimed`: one no field manager claims."""
    meta: dict = {"name": name, "namespace": NAMESPACE}
    if annotations:
        meta["annotations"] = dict(annotations)
    if labels:
        meta["labels"] = dict(labels)
    if unclaimed:
        meta["managedFields"] = []
    obj: dict = {"apiVersion": "v1", "kind": kind, "metadata": meta}
    if data is not None:
        obj["data"] = dict(data)
    return kube.put_object(obj, field_manager=manager)


def rewrite(kube, obj: dict, manager: str) -> None:
    """Write `obj` back as `manager` would with a plain update (ownership follows what changed)."""
    meta = {k: v for k, v in obj["metadata"].items() if k != "managedFields"}
    kube.put_object({**obj, "metadata": meta}, field_manager=manager)


def managers(obj: dict) -> set[str]:
    return {e["manager"] for e in obj["metadata"].get("managedFields", [])}


def sa(kube) -> dict | None:
    return kube.get_object("ServiceAccount", NAMESPACE, SERVICE_ACCOUNT)


def identity_id(name: str, rg: str = RG) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"


# --------------------------------------------------------------------------- A1: annotations of others


def test_a_client_id_another_manager_set_is_never_overwritten(arm, kube, engine, binding):
    seed(kube, "ServiceAccount", SERVICE_ACCOUNT, annotations={CLIENT_ID: "their-client-id"}, manager="helm")
    result = engine.reconcile(binding)
    assert result.status == "failed", result.as_dict()
    step = result.step("service-account")
    assert step.outcome == "failed"
    for words in ("helm", "their-client-id", CLIENT_ID, f"{ADOPT}=true", f"{NAMESPACE}/{SERVICE_ACCOUNT}"):
        assert words in step.reason, (words, step.reason)
    after = sa(kube)
    assert after["metadata"]["annotations"] == {CLIENT_ID: "their-client-id"}, "their pods keep their identity"
    assert "keyless" not in managers(after)
    assert result.step("configmap").outcome == "skipped"


def test_an_annotation_no_manager_claims_counts_as_someone_elses(arm, kube, engine, binding):
    seed(kube, "ServiceAccount", SERVICE_ACCOUNT, annotations={TENANT_ID: "their-tenant"}, unclaimed=True)
    result = engine.reconcile(binding)
    assert result.status == "failed", result.as_dict()
    reason = result.step("service-account").reason
    assert TENANT_ID in reason and "no field manager" in reason and ADOPT in reason
    assert sa(kube)["metadata"]["annotations"] == {TENANT_ID: "their-tenant"}


def test_the_namespace_owner_hands_the_annotation_over_with_adopt(arm, kube, engine, binding):
    seed(kube, "ServiceAccount", SERVICE_ACCOUNT, annotations={CLIENT_ID: "their-client-id"}, manager="helm")
    assert engine.reconcile(binding).status == "failed"
    owned = sa(kube)
    owned["metadata"]["annotations"][ADOPT] = "true"
    rewrite(kube, owned, "kubectl-annotate")  # kubectl annotate serviceaccount chat-api keyless.io/adopt=true

    result = engine.reconcile(binding)
    assert result.status == "ready", result.as_dict()
    assert result.step("service-account").outcome == "updated"
    annotations = sa(kube)["metadata"]["annotations"]
    assert annotations[CLIENT_ID] == result.identity["clientId"] and annotations[ADOPT] == "true"
    assert CREATED_BY not in annotations, "adopted, not created"
    assert engine.reconcile(binding).requests.writes == 0

    out = engine.offboard(binding)
    assert out.status == "removed", out.as_dict()
    assert out.step("service-account").outcome == "updated"
    left = sa(kube)
    assert left is not None, "Keyless did not create it: it only gives its fields back"
    assert left["metadata"]["annotations"] == {ADOPT: "true"}
    assert "keyless" not in managers(left)


def test_an_annotation_equal_to_ours_is_no_conflict(arm, kube, engine, binding):
    first = engine.reconcile(binding)
    assert first.status == "ready"
    ours = {CLIENT_ID: first.identity["clientId"], TENANT_ID: first.identity["tenantId"]}
    kube.delete_object("ServiceAccount", NAMESPACE, SERVICE_ACCOUNT)
    seed(kube, "ServiceAccount", SERVICE_ACCOUNT, annotations=ours, manager="helm")  # the team wrote our values
    again = engine.reconcile(binding)
    assert again.status == "ready", again.as_dict()
    # Only the drift sweep's label is added (no force: helm keeps its annotations); then nothing to do.
    assert again.step("service-account").outcome == "updated"
    assert sa(kube)["metadata"]["labels"] == {"keyless.io/bound": "true"}
    assert engine.reconcile(binding).step("service-account").outcome == "unchanged"
    out = engine.offboard(binding)
    assert out.status == "removed" and sa(kube)["metadata"]["annotations"] == ours, "helm's object, helm's values"


def test_a_client_id_another_manager_set_is_never_overwritten_through_run_command(
    arm, kube, ca, settings, make_engine, binding
):
    make_private(arm, kube, ca)
    seed(kube, "ServiceAccount", SERVICE_ACCOUNT, annotations={CLIENT_ID: "their-client-id"}, manager="helm")
    result = make_engine(settings).reconcile(binding)
    assert result.status == "failed", result.as_dict()
    reason = result.step("service-account").reason
    assert "helm" in reason and "their-client-id" in reason and ADOPT in reason
    assert sa(kube)["metadata"]["annotations"] == {CLIENT_ID: "their-client-id"}
    assert not [c for c in arm.run_commands if c["command"].startswith("kubectl apply")], "nothing applied"


def test_a_client_id_set_while_keyless_worked_is_not_overwritten(arm, kube, ca, settings, make_engine, binding):
    """Through run command the run reads the ServiceAccount once, at its start; a team that sets the
    annotation after that finds Keyless's apply refused (no --force-conflicts), not its value replaced."""
    make_private(arm, kube, ca)

    def meanwhile(_binding, outcome):
        if outcome.step == "role-assignment":
            seed(kube, "ServiceAccount", SERVICE_ACCOUNT, annotations={CLIENT_ID: "their-client-id"}, manager="helm")

    engine = make_engine(settings)
    first = engine.reconcile(binding, on_step=meanwhile)
    assert first.status == "not-ready", first.as_dict()
    assert "Conflict" in first.step("service-account").reason
    assert sa(kube)["metadata"]["annotations"] == {CLIENT_ID: "their-client-id"}
    second = engine.reconcile(binding)
    assert second.status == "failed" and "helm" in second.step("service-account").reason


# --------------------------------------------------------------------------- A2: what Keyless created


def test_a_service_account_made_with_kubectl_create_survives_offboarding(arm, kube, engine, binding):
    seed(kube, "ServiceAccount", SERVICE_ACCOUNT, manager="kubectl-create")  # kubectl create sa chat-api
    assert engine.reconcile(binding).status == "ready"
    assert CREATED_BY not in sa(kube)["metadata"]["annotations"]
    out = engine.offboard(binding)
    assert out.status == "removed", out.as_dict()
    assert out.step("service-account").outcome == "updated"
    left = sa(kube)
    assert left is not None, "Keyless did not create it"
    assert not left["metadata"].get("annotations") and not managers(left)


def test_a_service_account_whose_only_other_field_keyless_took_over_survives_offboarding(arm, kube, engine, binding):
    seed(kube, "ServiceAccount", SERVICE_ACCOUNT, annotations={CLIENT_ID: "old-client-id", ADOPT: "true"})
    assert engine.reconcile(binding).status == "ready"
    handed = sa(kube)
    del handed["metadata"]["annotations"][ADOPT]  # the owner takes the hand-over annotation away again
    rewrite(kube, handed, "helm")
    assert managers(sa(kube)) == {"keyless"}, "Keyless is now the only field manager"
    out = engine.offboard(binding)
    assert out.step("service-account").outcome == "updated", out.as_dict()
    assert sa(kube) is not None and not sa(kube)["metadata"].get("annotations")


def test_what_keyless_created_carries_the_marker_through_later_applies_and_goes_on_offboarding(
    arm, kube, engine, binding
):
    first = engine.reconcile(binding)
    assert first.status == "ready"
    assert sa(kube)["metadata"]["annotations"][CREATED_BY] == "keyless"
    cm = kube.get_object("ConfigMap", NAMESPACE, binding.configmap_name)
    assert cm["metadata"]["annotations"][CREATED_BY] == "keyless"
    sub, rg = engine.identity_location(binding)
    engine.identities.delete(sub, rg, first.identity["resourceId"].rsplit("/", 1)[-1])  # a new one comes: new ids
    second = engine.reconcile(binding)
    assert second.status == "ready", second.as_dict()
    assert second.step("service-account").outcome == "updated"
    annotations = sa(kube)["metadata"]["annotations"]
    assert annotations[CLIENT_ID] == second.identity["clientId"] != first.identity["clientId"]
    assert annotations[CREATED_BY] == "keyless", "a later apply keeps the marker (SSA would drop it otherwise)"
    out = engine.offboard(binding)
    assert out.step("service-account").outcome == "deleted" and out.step("configmap").outcome == "deleted"
    assert sa(kube) is None and kube.get_object("ConfigMap", NAMESPACE, binding.configmap_name) is None


def test_a_configmap_of_keyless_name_someone_else_made_is_not_overwritten(arm, kube, engine, binding):
    seed(kube, "ConfigMap", binding.configmap_name, data={"owner": "team-a"}, manager="helm")
    result = engine.reconcile(binding)
    assert result.status == "failed", result.as_dict()
    reason = result.step("configmap").reason
    assert binding.configmap_name in reason and "helm" in reason and ADOPT in reason
    assert kube.get_object("ConfigMap", NAMESPACE, binding.configmap_name)["data"] == {"owner": "team-a"}


def test_offboarding_never_deletes_a_configmap_someone_else_made(arm, kube, engine, binding):
    seed(kube, "ConfigMap", binding.configmap_name, data={"owner": "team-a"}, manager="helm")
    out = engine.offboard(binding)
    assert out.status == "removed", out.as_dict()
    assert out.step("configmap").outcome == "unchanged" and "not created by Keyless" in out.step("configmap").reason
    assert kube.get_object("ConfigMap", NAMESPACE, binding.configmap_name)["data"] == {"owner": "team-a"}


def test_an_adopted_configmap_gets_our_keys_and_offboarding_gives_them_back(arm, kube, engine, binding):
    seed(kube, "ConfigMap", binding.configmap_name, annotations={ADOPT: "true"}, data={"owner": "team-a"})
    result = engine.reconcile(binding)
    assert result.status == "ready", result.as_dict()
    cm = kube.get_object("ConfigMap", NAMESPACE, binding.configmap_name)
    assert cm["data"]["owner"] == "team-a" and cm["data"]["AZURE_CLIENT_ID"] == result.identity["clientId"]
    assert CREATED_BY not in cm["metadata"]["annotations"] and not cm["metadata"].get("labels")
    out = engine.offboard(binding)
    assert out.step("configmap").outcome == "updated", out.as_dict()
    cm = kube.get_object("ConfigMap", NAMESPACE, binding.configmap_name)
    assert cm["data"] == {"owner": "team-a"} and cm["metadata"]["annotations"] == {ADOPT: "true"}


def test_a_configmap_keyless_made_before_the_marker_is_still_its_own(arm, kube, engine, binding):
    """Migration: ConfigMaps made before the marker carry Keyless's labels, this binding's key among them."""
    labels = {"app.kubernetes.io/managed-by": "keyless", "keyless.io/binding": binding.key[:63]}
    applied = {
        "manager": "keyless",
        "operation": "Apply",
        "apiVersion": "v1",
        "time": "2026-01-01T00:00:00Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": {
            "f:data": {"f:AZURE_OPENAI_ENDPOINT": {}},
            "f:metadata": {"f:labels": {"f:app.kubernetes.io/managed-by": {}, "f:keyless.io/binding": {}}},
        },
    }
    kube.put_object(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": binding.configmap_name,
                "namespace": NAMESPACE,
                "labels": labels,
                "managedFields": [applied],
            },
            "data": {"AZURE_OPENAI_ENDPOINT": "https://oai-team.openai.azure.com/"},
        }
    )
    result = engine.reconcile(binding)
    assert result.status == "ready", result.as_dict()
    assert kube.get_object("ConfigMap", NAMESPACE, binding.configmap_name)["metadata"]["annotations"] == {
        CREATED_BY: "keyless"
    }
    out = engine.offboard(binding)
    assert out.step("configmap").outcome == "deleted", out.as_dict()


def test_through_run_command_keyless_marks_what_it_creates_and_deletes_only_that(
    arm, kube, ca, settings, make_engine, binding
):
    make_private(arm, kube, ca)
    seed(kube, "ServiceAccount", SERVICE_ACCOUNT, manager="kubectl-create")
    engine = make_engine(settings)
    assert engine.reconcile(binding).status == "ready"
    assert arm.run_commands, "the writes went through run command"
    cm = kube.get_object("ConfigMap", NAMESPACE, binding.configmap_name)
    assert cm["metadata"]["annotations"][CREATED_BY] == "keyless"
    assert CREATED_BY not in sa(kube)["metadata"]["annotations"]
    out = engine.offboard(binding)
    assert out.status == "removed", out.as_dict()
    assert kube.get_object("ConfigMap", NAMESPACE, binding.configmap_name) is None
    left = sa(kube)
    assert left is not None and not left["metadata"].get("annotations"), "given back, not deleted"
    deletes = [c["command"] for c in arm.run_commands if c["command"].startswith("kubectl delete")]
    assert deletes == [f"kubectl delete configmap/{binding.configmap_name} -n {NAMESPACE} --ignore-not-found -o name"]


# --------------------------------------------------------------------------- B3: identities of others


def test_an_identity_keyless_did_not_make_is_not_adopted(arm, kube, engine, binding):
    theirs = arm.add_identity(identity_id(binding.identity_name), tags={"team": "platform"})
    result = engine.reconcile(binding)
    assert result.status == "failed", result.as_dict()
    reason = result.step("identity").reason
    assert binding.identity_name in reason and "not made by Keyless" in reason
    assert arm.log.writes() == [] and kube.log.writes() == []
    assert arm.identity(theirs["id"])["tags"] == {"team": "platform"}
    out = engine.offboard(binding)
    assert out.status == "removed", out.as_dict()
    assert arm.identity(theirs["id"]) is not None


def test_an_identity_of_another_workload_is_neither_adopted_nor_deleted(arm, kube, engine, binding):
    other = Binding.create(CLUSTER_ID, NAMESPACE, "someone-else", ACCOUNT_ID)
    theirs = arm.add_identity(identity_id(binding.identity_name), tags=planner.identity_tags(other))
    principal = theirs["properties"]["principalId"]
    name = naming.role_assignment_name(ACCOUNT_ID, OPENAI_USER, principal)
    arm.add_role_assignment(ACCOUNT_ID, name, principal, OPENAI_USER)
    result = engine.reconcile(binding)
    assert result.status == "failed", result.as_dict()
    assert "another workload" in result.step("identity").reason
    assert arm.identity(theirs["id"])["tags"] == planner.identity_tags(other)

    out = engine.offboard(binding)
    assert out.status == "removed", out.as_dict()
    assert out.step("identity").outcome == "unchanged" and "another workload" in out.step("identity").reason
    assert arm.identity(theirs["id"]) is not None, "never deleted: it is not this workload's"
    assert len(arm.role_assignments(ACCOUNT_ID)) == 1, "nor its role assignment"


# --------------------------------------------------------------------------- B4: names that cannot meet

# Found by a birthday search (1.5 million SHA-256 digests, 3 seconds): two service accounts of one
# namespace whose identity names met when the readable part was cut and 40 bits of digest were left.
STEM = "svc-" + "x" * 120 + "-"
COLLIDING = (STEM + "157281", STEM + "1499556")


def legacy_name(b: Binding, prefix: str = "") -> str:
    """The 10-hex-digit names Keyless gave identities (prefix "") and credentials (prefix "fic") before."""
    key = naming.workload_key(b.cluster.key, b.namespace, b.service_account)
    digest = hashlib.sha256("\n".join(p for p in (prefix, key) if p).encode()).hexdigest()[:10]
    readable = "-".join(naming._azure_safe(p) for p in (b.cluster.name, b.namespace, b.service_account))
    room = (128 if not prefix else 120) - len("keyless") - len(digest) - 2
    return "-".join(p for p in ("keyless", readable[:room].strip("-_."), digest) if p)


def test_identity_names_of_two_workloads_no_longer_meet(arm, kube, engine):
    a, b = (Binding.create(CLUSTER_ID, NAMESPACE, sa_name, ACCOUNT_ID) for sa_name in COLLIDING)
    assert legacy_name(a) == legacy_name(b), "40 bits: the search above found a pair"
    for sa_name in COLLIDING:
        seed(kube, "ServiceAccount", sa_name, manager="kubectl-create")
    first, second = engine.reconcile(a), engine.reconcile(b)
    assert first.status == "ready" and second.status == "ready", second.as_dict()
    assert second.step("identity").outcome == "created"
    assert first.identity["clientId"] != second.identity["clientId"], "each workload its own identity"
    assert len(arm.identities()) == 2
    for result, b_ in ((first, a), (second, b)):
        subjects = [c["properties"]["subject"] for c in arm.federated_credentials(result.identity["resourceId"])]
        assert subjects == [b_.subject]
    assert a.identity_name != b.identity_name and len(a.identity_name.rsplit("-", 1)[-1]) >= 32


def test_an_identity_under_its_legacy_name_keeps_working_and_offboarding_removes_it(arm, kube, engine, binding):
    legacy = arm.add_identity(identity_id(legacy_name(binding)), tags=planner.identity_tags(binding))
    issuer = arm.managed_cluster(CLUSTER_ID)["properties"]["oidcIssuerProfile"]["issuerURL"]
    arm.add_federated_credential(legacy["id"], legacy_name(binding, "fic"), issuer, binding.subject)
    assert legacy["name"] != binding.identity_name
    result = engine.reconcile(binding)
    assert result.status == "ready", result.as_dict()
    assert result.step("identity").outcome == "unchanged"
    assert result.identity["resourceId"].lower() == legacy["id"].lower()
    assert result.step("federated-credential").outcome == "unchanged", "adopted under its legacy name"
    assert [i["name"] for i in arm.identities()] == [legacy["name"]], "no second identity"
    arm.log.clear()
    assert engine.reconcile(binding).requests.writes == 0
    assert engine.verify(binding).check("identity").status == "pass"

    out = engine.offboard(binding)
    assert out.status == "removed", out.as_dict()
    assert out.step("identity").outcome == "deleted" and out.step("federated-credential").outcome == "deleted"
    assert arm.identities() == [] and arm.role_assignments(ACCOUNT_ID) == []


def test_a_legacy_named_identity_of_another_workload_is_left_alone(arm, kube, engine, binding):
    other = Binding.create(CLUSTER_ID, NAMESPACE, "someone-else", ACCOUNT_ID)
    theirs = arm.add_identity(identity_id(legacy_name(binding)), tags=planner.identity_tags(other))
    result = engine.reconcile(binding)
    assert result.status == "ready", result.as_dict()
    assert result.step("identity").outcome == "created"
    assert result.identity["resourceId"].rsplit("/", 1)[-1] == binding.identity_name
    assert arm.identity(theirs["id"])["tags"] == planner.identity_tags(other)
    assert engine.offboard(binding).status == "removed"
    assert [i["name"] for i in arm.identities()] == [theirs["name"]]
