"""The drift sweep at CI size: 1,000 bindings over 20 clusters and 5 accounts, seeded as a converged
fleet (tests/faults/fleet.py). One sweep finds and repairs every injected drift and touches nothing
else; with no drift it writes nothing and queues no binding. The figures (requests per binding, time
at Azure's limits) are the benchmark's (benchmarks/sweep.py); here only what must hold. One fleet for the
module (seeding takes seconds): each test leaves it healthy for the next."""

from __future__ import annotations

import collections.abc

import pytest

from tests.faults.fleet import Fleet, measure_sweep
from tests.faults.world import World

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
