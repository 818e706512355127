"""Burst throughput: many bindings at once, against Azure's limits (sped up), paced and not.

200 bindings over 20 clusters in one subscription: every cluster is tagged with its workloads and
its write event arrives at once. The emulator enforces Azure's published limits `--scale` times
faster (refill rates x scale); Keyless paces to the same scale. The lower bound is what the
limits imply: the managed identity RP allows 2 create/update a second per subscription, and
each binding needs two (identity, federated credential), so bound = 2 x bindings / (2 x scale).
The run is repeated with client-side pacing off, for comparison.

The default scale is 2: the emulators run in this process, and on 2 cores they, not Azure's
limits, would set the pace above x2-3 (the CPU needed is ~0.3 s per binding, both sides of
every HTTPS call). On a bigger machine, try --scale 10.

    python -m benchmarks.burst [--bindings 200] [--clusters 20] [--scale 2] [--workers 16]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from benchmarks.common import machine, services, table


def bound_seconds(bindings: int, scale: float) -> float:
    """The slowest of Azure's buckets for this burst (each term: what must wait for refills)."""
    msi_writes = 2 * bindings / (2 * scale)  # identity + credential, 2/s per subscription
    arm_writes = max(0, 3 * bindings - 200) / (10 * scale)  # + role assignment; 200 at once, then 10/s
    msi_lists = max(0, bindings - 5) / (5 * scale)  # one credential list each, 5/s
    return max(msi_writes, arm_writes, msi_lists)


def run(ctx: tuple[Any, Any, str], bindings: int, clusters: int, scale: float, workers: int, pacing: bool) -> dict:
    from tests.faults.scenarios import settle_until
    from tests.faults.world import Workload, World, arm_event, cluster_id, expect_all

    ca, endpoint, storage = ctx
    per = bindings // clusters
    items = [Workload(c, f"team-{n % 4}", f"svc-{n}") for c in range(clusters) for n in range(per)]
    world = World(
        ca,  # type: ignore[arg-type]
        endpoint,  # type: ignore[arg-type]
        storage,
        clusters=clusters,
        limits_scale=scale,
        pacing_scale=scale if pacing else 0,
        delay_scale=1 / scale,
        workers=workers,
        visibility=max(5, int(60 / scale)),
    )
    with world as w:
        for c in range(clusters):
            group = [i for i in items if i.cluster == c]
            w.prepare(group)
            w.tag(c, group)
        # Warm up: the first run in a process loads the Kubernetes client's models (seconds of CPU).
        warm = Workload(clusters, "warm-up", "warm-up")
        w.add_cluster(clusters)
        w.prepare([warm])
        w.onboard(warm)
        settle_until(w, expect_all([warm], "ready"), deadline=60)
        w.arm.log.clear()
        w.arm.enforce_limits(scale)  # full buckets again
        pacer = w.service.engine.clusters._clients.pacer
        if pacer is not None:
            pacer.waited_seconds = 0.0
        started = time.monotonic()
        for c in range(clusters):
            w.deliver(arm_event("write", cluster_id(c)))
        settle_until(w, expect_all(items, "ready"), deadline=600)
        seconds = time.monotonic() - started
        audit = w.audit("burst", expect_all(items, "ready") | expect_all([warm], "ready"))
        requests = len(w.arm.log.items)
        return {
            "pacing": "on" if pacing else "off",
            "seconds": seconds,
            "bound": bound_seconds(len(items), scale),
            "requests": requests,
            "throttled": len(w.arm.throttled()),
            "failures": audit.bindings - audit.converged + audit.duplicates + audit.lost + audit.mismatched,
            "messages": audit.messages,
            "waited": pacer.waited_seconds if pacer else 0.0,
            "writes": w.arm_writes(),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bindings", type=int, default=200)
    parser.add_argument("--clusters", type=int, default=20)
    parser.add_argument("--scale", type=float, default=2.0, help="Azure's limits run this many times faster")
    parser.add_argument("--workers", type=int, default=16, help="concurrent worker threads (batchSize x instances)")
    parser.add_argument("--no-compare", action="store_true", help="skip the run with pacing off")
    args = parser.parse_args(argv)
    rows = []
    with services() as ctx:
        for pacing in (True,) if args.no_compare else (True, False):
            r = run(ctx, args.bindings, args.clusters, args.scale, args.workers, pacing)
            rows.append(
                [
                    r["pacing"],
                    args.bindings,
                    f"{r['seconds']:.1f}",
                    f"{r['bound']:.1f}",
                    f"{r['seconds'] / r['bound']:.2f}x",
                    r["requests"],
                    r["throttled"],
                    f"{100 * r['throttled'] / max(r['requests'], 1):.1f}%",
                    r["writes"],
                    r["failures"],
                    f"{r['waited']:.0f}",
                ]
            )
    print(f"Burst throughput: {args.bindings} bindings over {args.clusters} clusters, one subscription, ")
    print(f"limits x{args.scale:g}, {args.workers} workers. {machine()}\n")
    headers = ["pacing", "bindings", "wall s", "bound s", "wall/bound", "ARM requests", "429s", "429 %"]
    headers += ["ARM writes", "failures", "paced wait s (sum)"]
    print(table(headers, rows))
    paced = rows[0]
    ok = float(paced[4][:-1]) <= 1.15 and float(paced[7][:-1]) < 2 and paced[9] == 0
    print(f"\ntarget (paced): wall <= 1.15 x bound, < 2 % 429s, 0 failures: {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
