"""The drift sweep at CI size: 1,000 bindings over 20 clusters and 5 accounts, seeded as a converged
fleet (tests/faults/fleet.py). One sweep finds and repairs every injected drift and touches nothing
else; with no drift it writes nothing and queues no binding. The figures (requests per binding, time
at Azure's limits) are the benchmark's (benchmarks/sweep.py); here only what must hold. One fleet for the
module (seeding takes seconds): each test leaves it healthy for the next."""

from __future__ import annotations

import collections.abc
import time

import pytest

from shared.app import sweep
from tests.faults.fleet import Fleet, measure_sweep
from tests.faults.world import World, cluster_id

BINDINGS, CLUSTERS, ACCOUNTS = 1000, 20, 5


@pytest.fixture(scope="module")
def fleet_world(ca, identity_endpoint, storage) -> collections.abc.Iterator[tuple[World, Fleet]]:
    with World(ca, identity_endpoint, storage, clusters=CLUSTERS, accounts=ACCOUNTS, limits_scale=None,
               pacing_scale=0, workers=8, visibility=60) as w:  # fmt: skip
        fleet = Fleet(w, BINDINGS, CLUSTERS, ACCOUNTS)
        fleet.seed()
        yield w, fleet


def test_a_sweep_over_a_healthy_fleet_writes_nothing(fleet_world):
    w, fleet = fleet_world
    etags = {r.key: r.etag for r in w.service.ledger.all(live_only=True)}
    m = measure_sweep(w, fleet, [])
    assert m["finished"] and m["failures"] == 0 and m["source"] == "resource-graph"
    assert m["arm_writes"] == 0 and m["kube_writes"] == 0, m
    assert m["suspects"] == 0
    assert {r.key: r.etag for r in w.service.ledger.all(live_only=True)} == etags, "no record saved"
    assert m["arm_per_binding"] <= 0.5, m
    assert m["kube_per_cluster"] <= 6, m  # three label-selected lists (a page each at this size)


def test_resource_graph_lagging_behind_costs_reconciles_not_writes(fleet_world):
    """ARG has not seen the last 2 % of identities (missed notifications): those bindings are suspects,
    each confirmed with ARM, and nothing is written."""
    w, fleet = fleet_world
    missed = fleet.items[-20:]
    for item in missed:
        w.arm.resource_graph.miss(fleet.records[item.key].identity["resourceId"])
    m = measure_sweep(w, fleet, [])
    assert m["suspects"] == len(missed), m
    assert m["arm_writes"] == 0 and m["kube_writes"] == 0, m
    w.arm.resource_graph.full_scan()
    assert measure_sweep(w, fleet, [], later=3600)["suspects"] == 0


def test_resource_graph_throttling_slows_the_plan_never_turns_it_into_writes(fleet_world):
    w, fleet = fleet_world
    graph = w.arm.resource_graph
    graph.quota_queries = 1  # one query per (scaled) window: the plan's queries meet 429s
    graph.enforce_quota(5.0)  # windows of 1 s
    try:
        m = measure_sweep(w, fleet, [], later=3600)
    finally:
        graph.enforce_quota(None)
        graph.quota_queries = 15
    throttled = [r for r in w.arm.throttled() if "resourcegraph" in r.path.lower()]
    assert throttled, "the quota was met"
    assert m["finished"] and m["suspects"] == 0 and m["arm_writes"] == 0 and m["kube_writes"] == 0, m


def test_drift_a_lagging_resource_graph_hides_is_repaired_by_the_next_sweep(fleet_world):
    """ARG an hour behind still shows a role assignment deleted a moment ago (and no event came): this
    sweep cannot see it; the next one, once ARG caught up, repairs it. Nothing healthy is written."""
    w, fleet = fleet_world
    w.arm.resource_graph.lag_seconds = 3600
    try:
        (drift,) = fleet.inject_drift(0.001, events_for=(), kinds=("role-assignment",))
        blind = measure_sweep(w, fleet, [drift], later=3600)
        assert blind["arm_writes"] == 0 and blind["kube_writes"] == 0 and blind["repaired"] == 0, blind
    finally:
        w.arm.resource_graph.lag_seconds = 0
    caught_up = measure_sweep(w, fleet, [drift], later=7200)
    assert caught_up["repaired"] == 1 and caught_up["arm_writes"] == 1, caught_up


def test_a_sweep_cut_off_halfway_resumes_and_repairs_everything(fleet_world):
    w, fleet = fleet_world
    svc = w.service
    drifts = fleet.inject_drift(0.006, events_for=(), kinds=("role-assignment", "annotation", "configmap"))
    now = time.time() + 3 * 3600
    started = sweep.start(svc, now=now)
    assert started.action == "started" and started.shards == CLUSTERS
    w.driver.queue.clear_messages()  # the instance died: every shard message is lost...
    for cluster in sorted({i.cluster for i in fleet.items})[: CLUSTERS // 2]:
        sweep.run_shard(svc, started.run_id, cluster_id(cluster))  # ...after half the shards ran
    assert svc.sweeps.pending(started.run_id) == CLUSTERS // 2
    assert sweep.start(svc, now=now + 1).action == "busy", "no second sweep over the first"
    resumed = sweep.start(svc, now=now + 3600)
    assert resumed.action == "resumed" and resumed.shards == CLUSTERS // 2
    w.driver.settle(120)
    run = svc.sweeps.current()
    assert run.id == started.run_id and run.finished and run.resumes == 1
    assert all(fleet.repaired(d) for d in drifts), [d.kind for d in drifts if not fleet.repaired(d)]


def test_one_sweep_repairs_every_injected_drift_and_touches_nothing_else(fleet_world):
    w, fleet = fleet_world
    drifts = fleet.inject_drift(0.01)
    assert len(drifts) == 10 and {d.kind for d in drifts} == {
        "credential",
        "role-assignment",
        "annotation",
        "configmap",
    }
    w.driver.settle(60)  # the credential delete events' checks (Event Grid delivered them)
    drifted = {d.workload.key for d in drifts}
    etags = {r.key: r.etag for r in w.service.ledger.all(live_only=True) if r.key not in drifted}
    m = measure_sweep(w, fleet, drifts, later=3600)  # an hour on: what the tests before ran is not "recent"
    assert m["repaired"] == m["drifted"] == 10, m
    assert m["failures"] == 0 and m["finished"]
    untouched = {r.key: r.etag for r in w.service.ledger.all(live_only=True) if r.key not in drifted}
    assert untouched == etags, "no other binding was run"
    # And the next sweep finds nothing left to do.
    again = measure_sweep(w, fleet, [], later=7200)
    assert again["arm_writes"] == 0 and again["kube_writes"] == 0 and again["suspects"] == 0, again
