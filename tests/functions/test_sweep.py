"""The drift sweep through the Functions app: the timer plans (Resource Graph, suspects), the queue worker
runs one shard per cluster and the reconciles of the suspects. Healthy bindings cost no write and no
message; each kind of drift is found and repaired; the sweep resumes when cut off and never overlaps."""

from __future__ import annotations

import json
import time

import pytest

from shared.app import composition
from shared.app import sweep as sweep_use_case
from shared.domain import sweep_plan
from tests.conftest import ACCOUNT_ID, NAMESPACE
from tests.functions.test_app import REQUEST, arm_event, records

SERVICE_ACCOUNTS = ("chat-api", "worker", "batch")
LATER = 3600.0  # sweeps "an hour later": no record changed recently (shared.domain.sweep_plan.RECENT_SECONDS)


def onboard(host) -> list:
    for sa in SERVICE_ACCOUNTS:
        status, _, _ = host.http("onboardings_create", "POST", "/", {**REQUEST, "serviceAccount": sa})
        assert status in (200, 201, 202)
    host.drain()
    found = records()
    assert sorted(r.status for r in found) == ["ready"] * 3 or all(r.status in ("ready", "verified") for r in found)
    return found


def sweep(host, later: float = LATER) -> sweep_plan.SweepRun:
    """One sweep, planned `later` seconds from now, and every message it leads to."""
    svc = composition.service()
    report = sweep_use_case.start(svc, now=time.time() + later)
    assert report.action == "started", report
    host.drain()
    run = svc.sweeps.current()
    assert run is not None and run.id == report.run_id
    return run


def shard_results(run) -> dict:
    (shard,) = composition.service().sweeps.shards(run.id)
    assert shard.done
    return shard.result


def saved_records_unchanged(before, after) -> bool:
    return {r.key: r.etag for r in before} == {r.key: r.etag for r in after}


def test_a_sweep_over_healthy_bindings_writes_nothing_and_queues_no_binding(host, arm, kube):
    before = onboard(host)
    arm.log.clear()
    kube_before = len(kube.list_requests())
    run = sweep(host)
    assert run.source == "resource-graph" and run.suspects == 0 and run.finished
    assert arm.log.writes() == [], "no ARM write"
    kube_requests = kube.list_requests()[kube_before:]
    assert [r for r in kube_requests if r.method not in ("GET",)] == [], "no Kubernetes write"
    assert len(kube_requests) <= 3, "three label-selected lists for the cluster, not reads per binding"
    assert saved_records_unchanged(before, records()), "no record saved"
    result = shard_results(run)
    assert result["bindings"] == 3 and result["queued"] == 0


def test_a_sweep_right_after_onboardings_reads_nothing_in_bulk_it_would_not_use(host, arm, kube):
    """Every binding changed moments ago is a suspect whatever the inventory says: the sweep queues
    them all without a Resource Graph query or a cluster-wide list, whose answers no one would read."""
    onboard(host)
    arm.log.clear()
    kube_before = len(kube.log.items)
    run = sweep(host, later=0)
    assert run.source == "none" and run.suspects == 3, run
    assert arm.log.matching("POST", "/providers/Microsoft.ResourceGraph/resources") == []
    cluster_wide = [r for r in kube.log.items[kube_before:] if "/namespaces/" not in r.path]
    assert cluster_wide == [], "no label-selected list across namespaces"
    assert shard_results(run)["queued"] == 3
    assert all(r.status in ("ready", "verified") for r in records())


@pytest.mark.parametrize("drift", ["role-assignment", "annotation", "configmap", "credential"])
def test_each_kind_of_drift_is_found_and_repaired_by_one_sweep(host, arm, kube, monkeypatch, drift):
    monkeypatch.setattr(sweep_plan, "CREDENTIAL_ROTATION", 1)  # credentials are read for every identity
    found = onboard(host)
    victim = next(r for r in found if r.service_account == "worker")
    svc = composition.service()
    sub, rg, name = sweep_plan.identity_location(victim)
    if drift == "role-assignment":
        ra = next(
            a
            for a in arm.role_assignments(ACCOUNT_ID)
            if a["properties"]["principalId"] == victim.identity["principalId"]
        )
        svc.engine.roles.delete(sub, ACCOUNT_ID, ra["name"])
    elif drift == "annotation":
        sa = kube.get_object("ServiceAccount", NAMESPACE, "worker")
        del sa["metadata"]["annotations"]["azure.workload.identity/client-id"]  # someone removed it
        del sa["metadata"]["managedFields"]
        kube.put_object(sa, field_manager="kubectl")
    elif drift == "configmap":
        (cm_name,) = [o for o in victim.kube_objects if "/configmaps/" in o]
        kube.delete_object("ConfigMap", NAMESPACE, cm_name.rsplit("/", 1)[1])
    else:
        svc.engine.identities.delete_credential(sub, rg, name, victim.credential["name"])
    run = sweep(host)
    result = shard_results(run)
    assert result["queued"] == 1, result
    after = {r.key: r for r in records()}
    assert after[victim.key].status in ("ready", "verified")
    steps = {s["step"]: s["outcome"] for s in after[victim.key].steps}
    expected = {"role-assignment": "role-assignment", "annotation": "service-account", "configmap": "configmap",
                "credential": "federated-credential"}[drift]  # fmt: skip
    assert steps[expected] in ("created", "updated"), steps
    others = [k for k in after if k != victim.key]
    assert all(after[k].etag == next(r.etag for r in found if r.key == k) for k in others), "nothing else touched"
    progress = sweep_use_case.latest(svc)
    assert (progress.suspects, progress.queued, progress.repaired) == (1, 1, 1), progress
    # And the next sweep finds nothing, and repairs nothing.
    assert sweep(host, later=2 * LATER).suspects == 0
    assert sweep_use_case.latest(svc).repaired == 0


def test_a_reconcile_the_sweep_queued_that_changed_nothing_is_not_counted_as_repaired(host, arm, kube):
    """Right after onboarding every binding is a suspect (recently changed): all are queued, none is repaired."""
    onboard(host)
    run = sweep(host, later=0)
    progress = sweep_use_case.latest(composition.service())
    assert progress.id == run.id and progress.queued == 3 and progress.repaired == 0, progress


def test_resource_graph_lagging_or_missing_a_resource_costs_a_reconcile_not_a_write(host, arm, kube):
    found = onboard(host)
    victim = found[0]
    arm.resource_graph.miss(victim.identity["resourceId"])  # ARG has not seen it (until its next full scan)
    arm.log.clear()
    run = sweep(host)
    assert run.suspects == 1
    assert arm.log.writes() == [], "the suspect confirmed with ARM: nothing to write"
    assert {r.key: r.status for r in records()}[victim.key] in ("ready", "verified")


def test_resource_graph_refused_falls_back_to_arm_lists(host, arm, kube):
    onboard(host)
    arm.inject_fault("POST", "/providers/Microsoft.ResourceGraph/resources", 403, times=100)
    arm.log.clear()
    run = sweep(host)
    assert run.source == "arm" and run.suspects == 0
    assert arm.log.writes() == []


def test_a_sweep_still_running_is_not_overlapped(host, arm, kube):
    onboard(host)
    svc = composition.service()
    first = sweep_use_case.start(svc, now=time.time() + LATER)
    assert first.action == "started" and first.shards == 1
    again = sweep_use_case.start(svc, now=time.time() + LATER + 60)
    assert again.action == "busy" and again.run_id == first.run_id
    shard_messages = [json.loads(_decoded(m)) for m in host.raw_messages()]
    assert [m["kind"] for m in shard_messages] == ["sweep"], "one shard message, not two"


def test_a_sweep_cut_off_resumes_at_the_next_tick(host, arm, kube):
    onboard(host)
    svc = composition.service()
    t0 = time.time() + LATER
    first = sweep_use_case.start(svc, now=t0)
    host.queue.clear_messages()  # the shard's message is lost (a crash, a poison message)
    assert svc.sweeps.pending(first.run_id) == 1
    too_soon = sweep_use_case.start(svc, now=t0 + 60)
    assert too_soon.action == "busy"
    resumed = sweep_use_case.start(svc, now=t0 + sweep_plan.SHARD_REQUEUE_SECONDS * svc.settings.retry_delay_scale + 1)
    assert resumed.action == "resumed" and resumed.run_id == first.run_id and resumed.shards == 1
    host.drain()
    run = svc.sweeps.current()
    assert run.id == first.run_id and run.finished and run.resumes == 1
    # The next tick starts the next sweep and forgets the shards of the one before.
    nxt = sweep_use_case.start(svc, now=t0 + 2 * LATER)
    assert nxt.action == "started" and nxt.run_id != first.run_id
    assert svc.sweeps.shards(first.run_id) == []


def _decoded(content: str) -> str:
    import base64

    return base64.b64decode(content).decode()


@pytest.mark.parametrize("deleted", ["credential", "identity", "role-assignment"])
def test_a_delete_event_repairs_the_bindings_that_used_it_without_a_sweep(host, arm, kube, deleted):
    found = onboard(host)
    victim = next(r for r in found if r.service_account == "batch")
    svc = composition.service()
    sub, rg, name = sweep_plan.identity_location(victim)
    identity = victim.identity["resourceId"]
    if deleted == "credential":
        svc.engine.identities.delete_credential(sub, rg, name, victim.credential["name"])
        uri = f"{identity}/federatedIdentityCredentials/{victim.credential['name']}"
        operation = "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/delete"
    elif deleted == "identity":
        svc.engine.identities.delete(sub, rg, name)
        uri, operation = identity, "Microsoft.ManagedIdentity/userAssignedIdentities/delete"
    else:
        svc.engine.roles.delete(sub, ACCOUNT_ID, victim.role_assignment_id.rsplit("/", 1)[1])
        uri, operation = victim.role_assignment_id, "Microsoft.Authorization/roleAssignments/delete"
    for _ in range(3):  # at least once: duplicates make one check
        host.event(arm_event("event-grid-schema", "delete", uri, operation))
    kinds = [json.loads(_decoded(m))["kind"] for m in host.raw_messages()]
    assert kinds == ["role-assignment" if deleted == "role-assignment" else "identity"], kinds
    deadline = time.monotonic() + 30  # a run paced (throttled) comes back a few seconds later
    while True:
        host.drain()
        after = {r.key: r for r in records()}
        if after[victim.key].attempts > victim.attempts and after[victim.key].status in ("ready", "verified"):
            break
        assert time.monotonic() < deadline, after[victim.key]
        time.sleep(0.2)
    assert after[victim.key].status in ("ready", "verified")
    assert all(after[r.key].etag == r.etag for r in found if r.key != victim.key), "only the binding that used it"
    if deleted == "identity":
        assert after[victim.key].identity["clientId"] != victim.identity["clientId"], "a new identity"
        sa = kube.get_object("ServiceAccount", NAMESPACE, "batch")
        assert (
            sa["metadata"]["annotations"]["azure.workload.identity/client-id"] == after[victim.key].identity["clientId"]
        )
    elif deleted == "credential":
        assert any(c["properties"]["subject"].endswith(":batch") for c in arm.federated_credentials(identity))
    else:
        assert any(
            a["id"].lower() == after[victim.key].role_assignment_id.lower() for a in arm.role_assignments(ACCOUNT_ID)
        )


def test_a_delete_event_about_something_keyless_did_not_make_runs_nothing(host, arm, kube):
    found = onboard(host)
    sub = found[0].identity["resourceId"].split("/")[2]
    stranger = f"/subscriptions/{sub}/resourceGroups/other/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x"
    host.event(
        arm_event("event-grid-schema", "delete", stranger, "Microsoft.ManagedIdentity/userAssignedIdentities/delete")
    )
    host.drain()
    assert {r.key: r.etag for r in records()} == {r.key: r.etag for r in found}
