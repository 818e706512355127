"""Revocation, end to end: the party losing access cannot block it (issue 19 §2).

Offboarding used to clean the cluster first and stop at the first Kubernetes refusal, so a
namespace admin who deleted Keyless's RoleBinding (every request in the namespace answers 403), or
a private cluster's owner who set `disableRunCommand`, kept the role assignment, credential and
identity. And it judged the identity by its tags, which anyone who may tag in its resource group
can rewrite: offboarding then called the identity foreign and left the role assignment while the
record said `removed`. Each test stages one of these through the whole app (HTTP, queue, worker,
ledger) and checks the state of ARM, the cluster and the record.
"""

from __future__ import annotations

import json
import time

import pytest

from shared.app import composition
from tests.conftest import ACCOUNT_ID, NAMESPACE, SERVICE_ACCOUNT
from tests.e2e.test_private_clusters import make_private
from tests.functions.conftest import access_policy, reconfigure
from tests.functions.test_app import REQUEST

FORBIDDEN = 'configmaps is forbidden: User "keyless" cannot get resource in API group "" in the namespace "team-a"'


@pytest.fixture(autouse=True)
def no_pacing(monkeypatch):
    monkeypatch.setenv("KEYLESS_ARM_PACING_SCALE", "0")


def onboarded(host, arm) -> str:
    status, created, _ = host.http("onboardings_create", "POST", "/", REQUEST)
    assert status == 202, created
    host.drain()
    record = composition.service().ledger.get(created["id"])
    assert record.status in ("ready", "verified"), record.as_api()
    assert len(arm.role_assignments(ACCOUNT_ID)) == 1 and len(arm.identities()) == 1
    return created["id"]


def shown(host, key) -> dict:
    """The onboarding as GET shows it (checked against the OpenAPI document by the host)."""
    status, body, _ = host.http("onboardings_get", "GET", "/", route_params={"id": key})
    assert status == 200, body
    return body


def delete(host, key) -> None:
    status, body, _ = host.http("onboardings_delete", "DELETE", "/", route_params={"id": key})
    assert status == 202, body


def azure_access_gone(arm) -> None:
    assert arm.role_assignments(ACCOUNT_ID) == [], "the role assignment Keyless made is gone"
    assert arm.identities() == [], "the identity (and with it its federated credential) is gone"


def leftover_objects(body: dict) -> str:
    return " ".join(item["object"] for item in body["leftovers"])


def test_a_revoked_binding_is_offboarded_while_its_namespace_refuses_keyless(host, arm, kube, monkeypatch):
    """The namespace admin deleted Keyless's RoleBinding: every request in the namespace answers 403."""
    key = onboarded(host, arm)
    policy = access_policy()
    policy["rules"] = [r for r in policy["rules"] if r["name"] != "team-a"]
    reconfigure(monkeypatch, KEYLESS_ACCESS_POLICY=json.dumps(policy), KEYLESS_REVOKE_AFTER_SECONDS="0")
    kube.inject_fault("*", f"/namespaces/{NAMESPACE}/", 403, message=FORBIDDEN, times=10_000)

    host.timer()  # the sweep asks the door again: revoked, offboarded at once (no grace)
    host.drain()

    body = shown(host, key)
    assert body["status"] == "removed", (body["reason"], body["steps"])
    azure_access_gone(arm)
    objects = leftover_objects(body)
    assert f"configmap {NAMESPACE}/" in objects and f"serviceaccount {NAMESPACE}/{SERVICE_ACCOUNT}" in objects
    assert all("403" in item["reason"] for item in body["leftovers"]), body["leftovers"]
    assert kube.get_object("ServiceAccount", NAMESPACE, SERVICE_ACCOUNT) is not None, "left: Keyless was refused"
    steps = [s["step"] for s in body["steps"]]
    assert steps.index("identity") < steps.index("configmap"), "Azure first"


def test_a_private_cluster_with_run_command_disabled_cannot_keep_its_access(host, arm, kube, ca):
    key = onboarded(host, arm)
    make_private(arm, kube, ca, run_command_disabled=True)  # the cluster's owner: az aks update --disable-run-command
    composition.reset()  # another instance, which never saw the cluster public (the emulator's address still answers)

    delete(host, key)
    host.drain()

    body = shown(host, key)
    assert body["status"] == "removed", (body["reason"], body["steps"])
    azure_access_gone(arm)
    assert "disableRunCommand" in " ".join(item["reason"] for item in body["leftovers"]), body["leftovers"]
    assert "configmap" in leftover_objects(body) and "serviceaccount" in leftover_objects(body)


def test_rewritten_identity_tags_do_not_keep_the_role_assignment(host, arm, kube):
    """Anyone who may tag in the identity's resource group makes it look like someone else's."""
    key = onboarded(host, arm)
    (identity,) = arm.identities()
    arm.set_tags(identity["id"], {"managed-by": "platform-team", "keyless-workload": "0" * 32})

    delete(host, key)
    host.drain()

    body = shown(host, key)
    assert body["status"] == "removed", (body["reason"], body["steps"])
    azure_access_gone(arm)
    assert body["identity"]["origin"] == "created"
    assert body["leftovers"] == []


def test_a_failed_role_assignment_delete_is_never_recorded_removed(host, arm, kube, monkeypatch):
    reconfigure(monkeypatch, KEYLESS_RETRY_DELAY_SCALE="0.001")  # the retry (an hour) in 3.6 s
    key = onboarded(host, arm)
    arm.inject_fault("DELETE", "/providers/Microsoft.Authorization/roleAssignments/", 403, code="AuthorizationFailed")

    delete(host, key)
    host.drain()  # the retry is not visible yet

    body = shown(host, key)
    assert body["status"] == "failed", body
    assert body["reason"].startswith("role-assignment:"), body["reason"]
    assert len(arm.role_assignments(ACCOUNT_ID)) == 1
    assert len(arm.identities()) == 1, "kept: its principal names the role assignment still to remove"
    assert arm.federated_credentials(arm.identities()[0]["id"]) == [], "the credential goes anyway: no token"

    deadline = time.monotonic() + 30
    while shown(host, key)["status"] != "removed" and time.monotonic() < deadline:
        host.drain()  # the retry becomes visible after its (scaled) delay
    assert shown(host, key)["status"] == "removed"
    azure_access_gone(arm)
