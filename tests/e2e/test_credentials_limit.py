"""Beyond one cluster per identity: the 20-credential limit, and a deleted cluster's credential first."""

from __future__ import annotations

import dataclasses

import pytest

from tests.conftest import CLUSTER_ID


@pytest.fixture
def settings(settings):
    """No client-side ARM pacing here: it would only add waits (Azure's limits are tested elsewhere)."""
    return dataclasses.replace(settings, arm_pacing_scale=0)


def test_at_twenty_credentials_a_clear_permanent_error_lists_them_and_says_how_to_free_one(arm, kube, engine, binding):
    assert engine.reconcile(binding).status == "ready"
    identity = arm.identities()[0]
    sub, rg = engine.identity_location(binding)
    engine.identities.delete_credential(sub, rg, identity["name"], binding.credential_name)
    for i in range(20):
        arm.add_federated_credential(
            identity["id"], f"other-{i:02d}", "https://issuer.example/", f"system:serviceaccount:x:{i}"
        )
    arm.log.clear()
    result = engine.reconcile(binding)
    assert result.status == "failed"
    reason = result.step("federated-credential").reason
    assert f"identity {identity['name']} already holds 20 federated credentials" in reason
    assert (
        "other-00 (issuer https://issuer.example/, subject system:serviceaccount:x:0)" in reason
        and "other-19" in reason
    )
    assert "az identity federated-credential delete" in reason and f"--resource-group {rg}" in reason
    assert arm.log.writes() == [], "counted before adding: nothing written"


def test_a_deleted_clusters_credential_goes_first(arm, kube, engine, binding):
    assert engine.reconcile(binding).status == "ready"
    arm.delete_managed_cluster(CLUSTER_ID)
    out = engine.offboard(binding)
    assert out.status == "removed", out.as_dict()
    order = [s.step for s in out.steps]
    # Azure's side first: the credential right after the role assignment, before any cluster step
    assert order[:2] == ["role-assignment", "federated-credential"], order
    assert out.step("federated-credential").outcome == "deleted"
    assert out.step("configmap").outcome == "absent" and "no longer exists" in out.step("configmap").reason
    assert arm.identities() == []
