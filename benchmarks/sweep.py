"""The drift sweep at organisation scale: N bindings over C clusters and A OpenAI accounts.

The fleet is seeded straight into the emulators and the ledger (tests/faults/fleet.py: one binding
onboarded for real as the template, every other one made as a converged run leaves it), then
`--drift` of the bindings are broken in four ways in turn (federated credential deleted, its delete
event delivered as Event Grid would; role assignment deleted; client-id annotation removed; ConfigMap
deleted), and one sweep runs: the timer's plan, one shard per cluster, the reconciles of the suspects.

The emulator enforces Azure's limits `--scale` times faster and Keyless paces to the same scale;
"at published limits" is the time the measured request mix takes at Azure's own limits (x1), from the
slowest bucket: ARM reads 250 then 25/s, writes 200 then 10/s, Resource Graph 15 queries per 5 s.

    python -m benchmarks.sweep --bindings 10000 --clusters 200 --accounts 50 [--drift 0.01] [--scale 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from benchmarks.common import machine, services, table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bindings", type=int, default=10000)
    parser.add_argument("--clusters", type=int, default=200)
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--drift", type=float, default=0.0, help="fraction of bindings broken before the sweep")
    parser.add_argument("--scale", type=float, default=10.0, help="Azure's limits run this many times faster")
    parser.add_argument("--workers", type=int, default=16, help="concurrent worker threads")
    args = parser.parse_args(argv)

    from tests.faults.fleet import Fleet, measure_sweep
    from tests.faults.world import World

    with services() as (ca, endpoint, storage):
        world = World(
            ca,  # type: ignore[arg-type]
            endpoint,  # type: ignore[arg-type]
            storage,
            clusters=args.clusters,
            accounts=args.accounts,
            limits_scale=args.scale,
            pacing_scale=args.scale,
            delay_scale=1 / args.scale,
            workers=args.workers,
            visibility=120,
        )
        with world as w:
            w.arm.resource_graph.enforce_quota(args.scale)
            seeded = time.monotonic()
            fleet = Fleet(w, args.bindings, args.clusters, args.accounts)
            fleet.seed(deadline=300)
            seed_seconds = time.monotonic() - seeded
            w.arm.log.clear()
            for kube in w.kubes:
                kube.log.clear()
            drifts = fleet.inject_drift(args.drift)
            assert w.driver is not None
            w.driver.settle(300)  # the checks the credential delete events queued (Event Grid, before the sweep)
            by_events = sum(1 for d in drifts if fleet.repaired(d))
            event_writes = w.arm_writes() + sum(
                1 for k in w.kubes for r in k.log.items if r.method not in ("GET", "HEAD")
            )
            w.arm.enforce_limits(args.scale)  # full buckets for the sweep
            m = measure_sweep(w, fleet, drifts, deadline=3600, later=3600)
            door_seconds, asked = reauthorisation_seconds(w.service)

    n = m["bindings"]
    print(f"Drift sweep: {n} bindings, {m['clusters']} clusters, {args.accounts} accounts, drift {args.drift:g}; ")
    print(f"limits x{args.scale:g}, {args.workers} workers; seeded in {seed_seconds:.0f} s. {machine()}\n")
    rows = [[op, count, f"{count / n:.3f}"] for op, count in m["by_operation"].items()]
    rows.append(["all ARM requests", m["arm_requests"], f"{m['arm_per_binding']:.3f}"])
    print(table(["ARM operation", "requests", "per binding"], rows))
    print()
    print(
        table(
            ["figure", "value"],
            [
                ["inventory", m["source"]],
                ["Resource Graph queries", m["graph_queries"]],
                ["shards (clusters)", m["shards"]],
                ["suspects queued by the plan", m["suspects"]],
                ["Kubernetes requests per cluster", f"{m['kube_per_cluster']:.1f}"],
                ["Kubernetes writes", m["kube_writes"]],
                ["table operations per binding", f"{m['table_per_binding']:.3f}"],
                ["queue messages per binding", f"{m['queue_per_binding']:.3f}"],
                ["ARM writes", m["arm_writes"]],
                ["writes of the delete events' repairs (before the sweep)", event_writes],
                ["ARM 429s", m["throttled"]],
                ["worker failures", m["failures"]],
                ["drift repaired (by delete events before the sweep)", f"{m['repaired']}/{m['drifted']} ({by_events})"],
                [
                    "re-authorisation in the plan (the door, every live binding)",
                    f"{asked} asked in {door_seconds * 1000:.0f} ms CPU, no request",
                ],  # fmt: skip
                [f"wall time at limits x{args.scale:g}", f"{m['seconds']:.1f} s"],
                ["at published limits (x1)", f"{m['at_limits_seconds'] / 60:.1f} min (bound: {m['bottleneck']})"],
            ],
        )
    )
    writes = m["arm_writes"] + m["kube_writes"] + event_writes
    print(
        f"\nsweep: {n} bindings, {m['arm_per_binding']:.2f} ARM requests per binding, "
        f"{m['at_limits_seconds'] / 60:.1f} min at published limits, {writes} writes, "
        f"{m['repaired']}/{m['drifted']} drift repaired"
    )
    return 0


def reauthorisation_seconds(service: object) -> tuple[float, int]:
    """What the plan's re-authorisation costs: the one door asked for every live binding (pure: from the
    records and the inventory's tags, shared.domain.sweep_plan.grant_suspicion), timed over the ledger as
    the sweep left it. The inventory's part is in the ARM figures above (it reads nothing more)."""
    from shared.domain import sweep_plan

    app: Any = service
    records = [r for r in app.ledger.all(live_only=True) if r.account]
    snapshot = sweep_plan.AzureSnapshot.build([], [], [], [])
    allowlist, system = app.settings.role_allowlist, app.settings.system_namespaces
    started = time.process_time()
    for r in records:
        sweep_plan.grant_suspicion(r, snapshot, app.door, allowlist, system)
    return time.process_time() - started, len(records)


if __name__ == "__main__":
    sys.exit(main())
