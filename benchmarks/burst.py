"""Burst throughput: many bindings at once, against Azure's published limits, paced and not.

100 bindings over 5 clusters in one subscription and region: every cluster is tagged with its
workloads and its write event arrives at once. The emulator enforces Azure's published limits
`--scale` times faster (1: real time); Keyless paces to the same scale. The work runs in
`--processes` worker processes of `--workers` threads each, the budget shared through the pacing
table (0 processes: `--workers` threads in this process, one instance's batch).

The throttle-implied bound is the longest any one limit makes this burst last, whatever the client
does (each term divided by the scale):

- identity creates, one per binding, at most 80 in any 20 s per subscription and region: the N-th
  goes 20 x floor((N - 1) / 80) s after the first at the earliest;
- ARM writes W (identity, credential, role assignment: 3 per binding), 200 at once then 10/s:
  (W - 200) / 10;
- ARM reads R, 250 at once then 25/s: (R - 250) / 25;

W and R are what the emulator served in the run (429s excluded). The CPU floor is the same burst
with the limits off and no pacing: what this machine's CPU allows (the emulators, Azurite and the
workers share its cores). Goal, paced: wall <= 1.5 x max(bound, CPU floor), < 2 % 429s, 0 failures.

Rows: paced (processes: one budget shared through the table, and each process pacing alone),
unpaced (limits on, azure-core honouring Retry-After), limits off (the CPU floor).

    python -m benchmarks.burst [--bindings 100] [--clusters 5] [--scale 1] [--processes 4] [--workers 6]
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from typing import Any

from benchmarks.common import machine, services, table

LIMITS = {"creates": (80, 20.0), "writes": (200, 10.0), "reads": (250, 25.0)}


def bound_seconds(creates: int, writes: int, reads: int, scale: float) -> dict[str, float]:
    """Each published limit's least duration for this many requests of its kind (seconds, scaled)."""
    count, window = LIMITS["creates"]
    return {
        "identity creates": window * math.floor(max(creates - 1, 0) / count) / scale,
        "ARM writes": max(0, writes - LIMITS["writes"][0]) / LIMITS["writes"][1] / scale,
        "ARM reads": max(0, reads - LIMITS["reads"][0]) / LIMITS["reads"][1] / scale,
    }


def _served(w: Any) -> tuple[int, int, int]:
    """(identity creates, writes, reads) the emulator took (429s excluded)."""
    identity = re.compile(r"/userassignedidentities/[^/]+$", re.I)
    ok = [r for r in w.arm.log.items if r.status != 429 and r.path.lower().startswith("/subscriptions/")]
    creates = sum(1 for r in ok if r.method == "PUT" and identity.search(r.path))
    reads = sum(1 for r in ok if r.method in ("GET", "HEAD"))
    writes = sum(1 for r in ok if r.method not in ("GET", "HEAD", "DELETE"))
    return creates, writes, reads


def _table_delta(before: list[dict], after: list[dict]) -> tuple[int, int, float, dict[str, dict[str, int]]]:
    """(ARM attempts, pacing table operations, paced wait seconds, the shared pacer's figures per
    bucket) the processes made in between."""
    arm = ops = 0
    waited = 0.0
    buckets: dict[str, dict[str, int]] = {}
    for b, a in zip(before, after, strict=True):
        arm += a["attempts"].get("arm", {}).get("attempts", 0) - b["attempts"].get("arm", {}).get("attempts", 0)
        ops += (a["shared"] or {}).get("table_ops", 0) - (b["shared"] or {}).get("table_ops", 0)
        waited += a["waited"] - b["waited"]
        for name, figures in ((a["shared"] or {}).get("by_bucket") or {}).items():
            old = ((b["shared"] or {}).get("by_bucket") or {}).get(name, {})
            into = buckets.setdefault(name, {})
            for k, v in figures.items():
                into[k] = into.get(k, 0) + v - old.get(k, 0)
    return arm, ops, waited, buckets


def _reset_pacing_table(storage: str, table_name: str) -> None:
    """Forget the warm-up's schedules (the emulator's buckets start full again too)."""
    from azure.data.tables import TableClient

    from shared.adapters.shared_pacing import pacing_table_name

    client = TableClient.from_connection_string(storage, pacing_table_name(table_name))
    try:
        for entity in list(client.list_entities()):
            client.delete_entity(entity["PartitionKey"], entity["RowKey"])
    except Exception:  # noqa: BLE001 - no table yet: nothing to forget
        pass


def run(
    ctx: tuple[Any, Any, str], bindings: int, clusters: int, scale: float, processes: int, workers: int, mode: str
) -> dict:
    """One burst. `mode`: shared (paced, one budget), alone (paced, each process its own), unpaced,
    off (limits off, no pacing: the CPU floor)."""
    from tests.faults.scenarios import settle_until
    from tests.faults.worker_process import WorkerProcesses
    from tests.faults.world import Workload, World, arm_event, cluster_id, expect_all

    ca, endpoint, storage = ctx
    per = bindings // clusters
    items = [Workload(c, f"team-{n % 4}", f"svc-{n}") for c in range(clusters) for n in range(per)]
    paced = mode in ("shared", "alone")
    world = World(
        ca,  # type: ignore[arg-type]
        endpoint,  # type: ignore[arg-type]
        storage,
        clusters=clusters,
        limits_scale=None if mode == "off" else scale,
        pacing_scale=scale if paced else 0,
        delay_scale=1 / scale,
        workers=workers,
        visibility=max(5, int(60 / scale)),
        extra_env={"KEYLESS_SHARED_PACING": "true" if mode == "shared" else "false"},
    )
    with world as w:
        for c in range(clusters):
            group = [i for i in items if i.cluster == c]
            w.prepare(group)
            w.tag(c, group)
        # Warm up: the first run in a process loads the Kubernetes client's models (seconds of CPU).
        warm = [Workload(clusters, "warm-up", f"warm-{k}") for k in range(max(processes, 1) * 2)]
        w.add_cluster(clusters)
        w.prepare(warm)
        keyed = {i.key: ("ready",) for i in items}
        with WorkerProcesses(processes, workers, max(5, int(60 / scale))) if processes else _nothing() as pool:
            for item in warm:
                w.onboard(item)
            if pool is None:
                settle_until(w, expect_all(warm, "ready"), deadline=120)
            else:
                _wait(w, {i.key: ("ready",) for i in warm}, 120)
            w.arm.log.clear()
            w.arm.enforce_limits(None if mode == "off" else scale)  # full buckets again
            _reset_pacing_table(storage, w.env["KEYLESS_TABLE_NAME"])
            pacer = w.service.engine.clusters._clients.pacer
            before = pool.snapshot() if pool is not None else [_here(pacer)]
            started = time.monotonic()
            for c in range(clusters):
                w.deliver(arm_event("write", cluster_id(c)))
            if pool is None:
                settle_until(w, expect_all(items, "ready"), deadline=900)
            else:
                _wait(w, keyed, 900)
            seconds = time.monotonic() - started
            after = pool.snapshot() if pool is not None else [_here(pacer)]
            if pool is not None:
                pool.stop()
        audit = w.audit("burst", expect_all(items, "ready") | expect_all(warm, "ready"))
        creates, writes, reads = _served(w)
        arm, ops, waited, buckets = _table_delta(before, after)
        requests = len(w.arm.log.items)
        return {
            "mode": mode,
            "seconds": seconds,
            "bounds": bound_seconds(creates, writes, reads, scale),
            "requests": requests,
            "throttled": len(w.arm.throttled()),
            "failures": audit.bindings - audit.converged + audit.duplicates + audit.lost + audit.mismatched,
            "table_per_arm": ops / arm if arm and mode == "shared" else None,
            "waited": waited,
            "buckets": buckets,
        }


def _here(pacer: Any) -> dict[str, Any]:
    """This process's figures, as a worker process reports its own (tests.faults.worker_process)."""
    from shared.adapters.counting import attempts

    stats = getattr(pacer, "stats", None)
    return {
        "attempts": attempts(),
        "shared": stats.as_dict() if stats is not None else None,
        "waited": pacer.waited_seconds if pacer is not None else 0.0,
    }


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _wait(w: Any, keyed: dict[str, tuple[str, ...]], deadline: float) -> None:
    """Until every binding is where it should be and the queue is empty (worker processes work it)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if w.all_settled(keyed) and w.driver.queue.get_queue_properties().approximate_message_count == 0:
            return
        time.sleep(0.2)  # polling, within the deadline
    raise TimeoutError(f"not settled after {deadline:.0f} s")


MODES = {
    "shared": "paced, shared budget",
    "alone": "paced, each process alone",
    "unpaced": "unpaced",
    "off": "limits off",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bindings", type=int, default=100)
    parser.add_argument("--clusters", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0, help="Azure's limits run this many times faster")
    parser.add_argument("--processes", type=int, default=4, help="worker processes (0: threads in this process)")
    parser.add_argument("--workers", type=int, default=6, help="threads per worker process (or in this process)")
    parser.add_argument("--no-compare", action="store_true", help="only the paced run and the CPU floor")
    args = parser.parse_args(argv)
    modes = ["shared", "off"] if args.no_compare else ["shared", "alone", "unpaced", "off"]
    if not args.processes and "alone" in modes:
        modes.remove("alone")  # one process: shared or alone is the same budget
    results: dict[str, dict] = {}
    with services() as ctx:
        for mode in modes:
            results[mode] = run(ctx, args.bindings, args.clusters, args.scale, args.processes, args.workers, mode)
    floor = results["off"]["seconds"]
    bounds = results["shared"]["bounds"]
    bound = max(bounds.values())
    which = max(bounds, key=lambda k: bounds[k])
    limit = max(bound, floor)
    rows = []
    for mode, r in results.items():
        ratio = r["seconds"] / limit
        by = f"{which} ({bound:.1f} s)" if bound >= floor else f"CPU ({floor:.1f} s)"
        rows.append(
            [
                MODES[mode],
                args.bindings,
                f"{r['seconds']:.1f}",
                f"{max(r['bounds'].values()):.1f}" if mode != "off" else "—",
                f"{floor:.1f}",
                f"{ratio:.2f}x",
                by if mode != "off" else "—",
                r["requests"],
                r["throttled"],
                f"{100 * r['throttled'] / max(r['requests'], 1):.1f}%",
                r["failures"],
                f"{r['table_per_arm']:.2f}" if r["table_per_arm"] is not None else "—",
                f"{r['waited']:.0f}",
            ]
        )
    executors = f"{args.processes} processes x {args.workers} threads" if args.processes else f"{args.workers} threads"
    print(f"Burst throughput: {args.bindings} bindings over {args.clusters} clusters, one subscription and region, ")
    print(f"Azure's published limits x{args.scale:g}, {executors}. {machine()}\n")
    headers = ["run", "bindings", "wall s", "bound s", "CPU floor s", "wall / max(bound, floor)", "bounded by"]
    headers += ["ARM requests", "429s", "429 %", "failures", "table ops per ARM request", "paced wait s (sum)"]
    print(table(headers, rows))
    terms = ", ".join(f"{k} {v:.1f} s" for k, v in bounds.items())
    print(f"\nbound terms (paced run's requests): {terms}")
    shared = results["shared"]
    pct = 100 * shared["throttled"] / max(shared["requests"], 1)
    ok = shared["seconds"] <= 1.5 * limit and pct < 2 and shared["failures"] == 0
    print(f"target (paced): wall <= 1.5 x max(bound, CPU floor), < 2 % 429s, 0 failures: {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
