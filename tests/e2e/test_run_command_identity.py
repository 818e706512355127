"""Run command must act as Keyless, never as the cluster's admin.

AKS runs a run-command pod with the request's `clusterToken`, or, when none is sent and the cluster
has local accounts, with the cluster's own admin credential. Keyless used to send its token only to
Entra-only clusters, so on an Entra cluster that still had local accounts every command ran as
cluster-admin: past Keyless's Kubernetes RBAC (infra/kubernetes) and past
KEYLESS_ALLOW_LOCAL_ACCOUNTS=false, which says Keyless never uses the admin credential.
"""

from __future__ import annotations

import dataclasses

import pytest

from tests.conftest import CLUSTER_ID


@pytest.fixture
def settings(settings):
    return dataclasses.replace(settings, arm_pacing_scale=0)


def private(arm, kube, ca, **kw) -> None:
    arm.delete_managed_cluster(CLUSTER_ID)
    arm.add_managed_cluster(CLUSTER_ID, kube_server_url=kube.url, kube_ca_pem=ca.ca_pem, private=True, **kw)


def test_an_entra_cluster_with_local_accounts_gets_keylesss_token_not_the_admin_credential(
    arm, kube, ca, engine, binding
):
    private(arm, kube, ca, disable_local_accounts=False)
    result = engine.reconcile(binding)
    assert result.status == "ready", result.as_dict()
    assert arm.run_commands and all(c["cluster_token"] for c in arm.run_commands)


def test_a_cluster_without_entra_is_not_worked_as_admin_unless_allowed(arm, kube, ca, settings, make_engine, binding):
    private(arm, kube, ca, disable_local_accounts=False, aad_enabled=False)
    result = make_engine(settings).reconcile(binding)
    assert result.status == "failed", result.as_dict()
    assert "KEYLESS_ALLOW_LOCAL_ACCOUNTS" in result.reason
    assert arm.run_commands == [] and arm.identities() == []
    make_engine(settings, allow_local_accounts=True).reconcile(binding)
    assert arm.run_commands, "with local accounts allowed, the operator chose the admin credential"
    assert not any(c["cluster_token"] for c in arm.run_commands)
