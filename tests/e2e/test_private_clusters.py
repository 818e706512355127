"""Private clusters: an API server Keyless cannot reach from outside the cluster's network.

The ARM emulator seeds the cluster private: its kubeconfigs point at an address that refuses
connections, and only `managedClusters/runCommand` reaches the API server, by running kubectl in
an emulated pod against the Kubernetes emulator with the request's clusterToken. So every write
below went: engine -> real azure-mgmt-containerservice SDK -> ARM emulator (202, Location, polls)
-> kubectl -> Kubernetes emulator, and lands with our field manager as a direct write would.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import time

import pytest

from tests.conftest import CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT
from tests.e2e.test_workloads import AI, STEP, ai_service, env, pods, with_workloads
from tests.emulators.common import token_for_scope
from tests.emulators.kube import AKS_SERVER_SCOPE

CLIENT_ID = "azure.workload.identity/client-id"


@pytest.fixture
def settings(settings):
    """No client-side ARM pacing here: it would only add waits (Azure's limits are tested elsewhere)."""
    return dataclasses.replace(settings, arm_pacing_scale=0)


def make_private(arm, kube, ca, *, run_command_disabled=False) -> None:
    arm.delete_managed_cluster(CLUSTER_ID)
    arm.add_managed_cluster(
        CLUSTER_ID,
        kube_server_url=kube.url,
        kube_ca_pem=ca.ca_pem,
        private=True,
        run_command_disabled=run_command_disabled,
    )


@pytest.fixture
def private_cluster(arm, kube, ca):
    make_private(arm, kube, ca)
    return CLUSTER_ID


def commands(arm) -> list[str]:
    return [c["command"] for c in arm.run_commands]


def managers(obj: dict) -> dict[str, str]:
    return {e["manager"]: e["operation"] for e in obj["metadata"].get("managedFields", [])}


def test_without_the_fallback_a_private_cluster_fails_with_the_reason(
    arm, kube, settings, make_engine, binding, private_cluster
):
    result = make_engine(settings, run_command_fallback=False).reconcile(binding)
    assert result.status == "failed"
    reason = result.step("namespace").reason
    assert "private" in reason and "KEYLESS_RUN_COMMAND_FALLBACK=true" in reason
    assert arm.log.writes() == [], "nothing written before the namespace is known"
    assert arm.run_commands == []


def test_a_private_cluster_is_onboarded_through_run_command(
    arm, kube, settings, make_engine, binding, private_cluster, caplog
):
    caplog.set_level(logging.DEBUG)
    engine = make_engine(settings)
    result = engine.reconcile(binding)
    assert result.status == "ready", result.as_dict()

    identity = arm.identities()[0]["properties"]
    sa = kube.get_object("ServiceAccount", NAMESPACE, SERVICE_ACCOUNT)
    assert sa["metadata"]["annotations"][CLIENT_ID] == identity["clientId"]
    assert managers(sa) == {"keyless": "Apply"}, "server-side apply under our field manager, through kubectl"
    cm = kube.get_object("ConfigMap", NAMESPACE, binding.configmap_name)
    assert cm["data"]["AZURE_CLIENT_ID"] == identity["clientId"] and managers(cm) == {"keyless": "Apply"}

    sent = commands(arm)
    assert sent[0].startswith("kubectl get namespace/team-a serviceaccount/chat-api configmap/")
    applies = [c for c in arm.run_commands if c["command"].startswith("kubectl apply --server-side")]
    assert len(applies) == 2 and all(set(c["files"]) == {"keyless.yaml"} for c in applies)
    assert all(c["cluster_token"] for c in arm.run_commands), "an Entra-only cluster needs the caller's token"
    assert len(arm.log.matching("POST", "/runCommand")) == len(sent)
    assert all(r.status == 202 for r in arm.log.matching("POST", "/runCommand"))
    assert token_for_scope(AKS_SERVER_SCOPE) not in caplog.text, "the cluster token is never logged"

    arm.run_commands.clear()
    kube.log.clear()
    again = engine.reconcile(binding)
    assert again.status == "ready" and kube.log.writes() == []
    # A converged run: one command reads the namespace, service account and config map; one lists the
    # Deployments the binding claimed (to release any no longer named). Nothing is written.
    assert len(commands(arm)) == 2 and commands(arm)[0] == sent[0]
    assert commands(arm)[1].startswith("kubectl get deployments -n team-a -l keyless.io/binding=")


def test_workloads_are_enforced_and_verified_through_run_command(
    arm, kube, settings, make_engine, binding, private_cluster
):
    ai_service(kube)
    engine = make_engine(settings)
    b = with_workloads(binding, AI)
    result = engine.reconcile(b)
    assert result.status == "ready", result.as_dict()
    assert result.step(STEP).outcome == "updated"
    assert result.step(STEP).details["removed"][0]["variable"] == "OPENAI_API_KEY"
    assert any(c.startswith("kubectl patch deployment/ai-service") for c in commands(arm)), "key removed by patch"

    running = pods(kube)
    assert running and all("OPENAI_API_KEY" not in env(p) and "AZURE_CLIENT_ID" in env(p) for p in running)
    arm.run_commands.clear()
    report = engine.verify(b)
    assert report.status == "pass", report.as_dict()
    assert commands(arm)[-1].startswith("kubectl get deployments,pods -n team-a"), "one command reads both"


def test_offboarding_a_private_cluster_deletes_through_run_command(
    arm, kube, settings, make_engine, binding, private_cluster
):
    engine = make_engine(settings)
    assert engine.reconcile(binding).status == "ready"
    arm.run_commands.clear()
    result = engine.offboard(binding)
    assert result.status == "removed", result.as_dict()
    assert kube.get_object("ServiceAccount", NAMESPACE, SERVICE_ACCOUNT) is None
    assert kube.get_object("ConfigMap", NAMESPACE, binding.configmap_name) is None
    assert [c for c in commands(arm) if c.startswith("kubectl delete")] == [
        f"kubectl delete configmap/{binding.configmap_name} -n {NAMESPACE} --ignore-not-found -o name",
        f"kubectl delete serviceaccount/{SERVICE_ACCOUNT} -n {NAMESPACE} --ignore-not-found -o name",
    ]
    assert arm.identities() == []


def test_run_command_disabled_fails_with_the_reason(arm, kube, ca, settings, make_engine, binding):
    make_private(arm, kube, ca, run_command_disabled=True)
    result = make_engine(settings).reconcile(binding)
    assert result.status == "failed"
    assert "disableRunCommand" in result.step("namespace").reason
    assert arm.log.matching("POST", "/runCommand") == [] and arm.log.writes() == []


def test_a_command_pod_that_never_ran_is_not_yet_then_converges(
    arm, kube, settings, make_engine, binding, private_cluster
):
    arm.fail_run_commands(1, reason="ImagePullBackoff")
    engine = make_engine(settings)
    first = engine.reconcile(binding)
    assert first.status == "not-ready", first.as_dict()
    assert "ImagePullBackoff" in first.step("namespace").reason
    assert engine.reconcile(binding).status == "ready"


def test_kubectl_refused_by_the_api_server_is_a_clear_failure(
    arm, kube, settings, make_engine, binding, private_cluster
):
    kube.inject_fault("PATCH", "/serviceaccounts/", 403, message="keyless cannot patch serviceaccounts here")
    result = make_engine(settings).reconcile(binding)
    assert result.status == "failed", result.as_dict()
    reason = result.step("service-account").reason
    assert "exit 1" in reason and "Forbidden" in reason and "infra/" in reason
    assert "keyless cannot patch serviceaccounts here" in reason, "kubectl's own words reach the outcome"


def test_a_conflict_in_the_cluster_is_only_not_yet(arm, kube, settings, make_engine, binding, private_cluster):
    kube.inject_fault("PATCH", "/configmaps/", 409, message="the object has been modified")
    engine = make_engine(settings)
    first = engine.reconcile(binding)
    assert first.status == "not-ready" and "Conflict" in first.step("configmap").reason
    assert engine.reconcile(binding).status == "ready"


def test_a_command_still_running_hands_back_to_the_queue(arm, kube, settings, make_engine, binding, private_cluster):
    arm.run_command_seconds = 3600.0
    result = make_engine(settings, run_command_wait_seconds=1.0).reconcile(binding)
    assert result.status == "not-ready"
    assert "still running" in result.step("namespace").reason


def test_a_public_cluster_that_is_unreachable_is_only_not_yet(arm, kube, ca, settings, make_engine, binding):
    arm.delete_managed_cluster(CLUSTER_ID)
    with socket.socket() as refusing:  # bound, never listening: connections are refused at once
        refusing.bind(("127.0.0.1", 0))
        url = f"https://127.0.0.1:{refusing.getsockname()[1]}"
        arm.add_managed_cluster(CLUSTER_ID, kube_server_url=url, kube_ca_pem=ca.ca_pem)
        result = make_engine(settings).reconcile(binding)
    assert result.status == "not-ready" and "unreachable" in result.step("namespace").reason
    assert arm.log.matching("POST", "runCommand") == []


def test_an_api_server_that_never_answers_does_not_hold_the_worker(arm, kube, ca, settings, make_engine, binding):
    """A listening socket that never completes TLS: without timeouts the kubernetes client waits forever."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # connections complete in the kernel's backlog; nobody ever reads them
        arm.delete_managed_cluster(CLUSTER_ID)
        url = f"https://127.0.0.1:{silent.getsockname()[1]}"
        arm.add_managed_cluster(CLUSTER_ID, kube_server_url=url, kube_ca_pem=ca.ca_pem)
        started = time.monotonic()
        result = make_engine(settings, request_timeout_seconds=0.5).reconcile(binding)
        elapsed = time.monotonic() - started
    assert result.status == "not-ready" and "unreachable" in result.step("namespace").reason, result.as_dict()
    assert elapsed < 20, f"held the worker {elapsed:.0f} s"


def test_a_silent_arm_does_not_hold_the_worker(arm, kube, settings, make_engine, binding):
    arm.inject_latency("GET", "/managedclusters/", seconds=3, times=10)
    started = time.monotonic()
    result = make_engine(settings, request_timeout_seconds=0.5).reconcile(binding)
    assert result.status == "not-ready" and "could not reach ARM" in result.step("cluster").reason, result.as_dict()
    assert time.monotonic() - started < 20


def test_a_fresh_instance_verifies_a_private_cluster_through_run_command(
    arm, kube, settings, make_engine, binding, private_cluster
):
    """The API's verification may run on an instance that never met the cluster: it finds out the
    API server is unreachable and goes through run command, as a run does."""
    assert make_engine(settings).reconcile(binding).status == "ready"
    arm.run_commands.clear()
    report = make_engine(settings).verify(binding)  # another process: no memory of the cluster
    checks = {c.name: c.status for c in report.checks}
    assert checks["service-account"] == "pass", report.as_dict()
    pending = [c for c in report.checks if c.status == "pending"]
    assert all("no running pod" in c.reason for c in pending), "the pods were read, not unreachable"
    assert [c.split(" -o ")[0] for c in commands(arm)] == [
        f"kubectl get serviceaccount/{SERVICE_ACCOUNT} -n {NAMESPACE}",
        "kubectl get deployments,pods -n team-a",
    ]


def test_the_sweeps_lists_of_a_private_cluster_go_through_run_command(
    arm, kube, settings, make_engine, binding, private_cluster
):
    """Three run commands (one label-selected list each, across namespaces), not a reconcile per binding."""
    engine = make_engine(settings)
    assert engine.reconcile(binding).status == "ready"
    arm.run_commands.clear()
    fresh = make_engine(settings)  # a new instance: it learns the API server is unreachable from the lists
    objects = fresh.inventory.cluster_objects(CLUSTER_ID)
    sent = commands(arm)
    assert len(sent) == 3 and all(" -A -l " in c and c.startswith("kubectl get ") for c in sent), sent
    sa = objects.service_accounts[f"{NAMESPACE}/{SERVICE_ACCOUNT}"]
    assert sa.annotations[CLIENT_ID] == arm.identities()[0]["properties"]["clientId"]
    assert f"{NAMESPACE}/{binding.configmap_name}" in objects.configmaps
