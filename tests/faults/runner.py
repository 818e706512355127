"""Run fault scenarios in parallel processes, each with its own Azurite.

Why processes: a scenario spends most of its time waiting, as Keyless does in production:
for a Retry-After, a re-queue delay, a replication window, storage coming back. Several
scenarios side by side keep the suite short. They cannot share a process (the app's runtime is
one per process, configured from the environment) nor an Azurite (the work queue's name is
fixed), so each worker process starts its own.

    python -m tests.faults.runner [--full] [scenario ...]     prints one RESULT line per scenario
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

from tests.faults.world import Audit

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "RESULT "
# Rough quick-size seconds, to spread the scenarios evenly over the processes.
WEIGHT = {"storage_outage": 9, "events": 8, "arm_throttle_storm": 7, "kube_faults": 6, "arm_errors": 6}


def run_here(names: list[str], full: bool) -> list[Audit]:
    """Run the scenarios one after the other in this process (own Azurite, CA, identity endpoint)."""
    from tests.azurite import Azurite
    from tests.emulators.common import TestCA
    from tests.emulators.identity_endpoint import IdentityEndpoint
    from tests.faults.scenarios import Context, by_name

    azurite = Azurite().start()
    endpoint = IdentityEndpoint().start()
    audits = []
    try:
        ctx = Context(TestCA(), endpoint, azurite.connection_string, full=full)
        for scenario in by_name(names):
            try:
                audit = scenario.run(ctx)
            except Exception as exc:  # noqa: BLE001 - a scenario that blew up is a failed row, with why
                audit = Audit(scenario=scenario.title)
                audit.problem("lost", f"scenario raised {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
            audit.scenario = scenario.name
            audits.append(audit)
    finally:
        endpoint.stop()
        azurite.stop()
    return audits


def run_parallel(names: list[str], full: bool, processes: int) -> dict[str, Audit]:
    """Spread the scenarios over `processes` child processes; {name: Audit}."""
    groups: list[list[str]] = [[] for _ in range(max(1, min(processes, len(names))))]
    loads = [0] * len(groups)
    for name in sorted(names, key=lambda n: -WEIGHT.get(n, 4)):
        i = loads.index(min(loads))
        groups[i].append(name)
        loads[i] += WEIGHT.get(name, 4)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.faults.runner", *(["--full"] if full else []), *group],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for group in groups
        if group
    ]
    results: dict[str, Audit] = {}
    for child, group in zip(children, groups, strict=False):
        out, _ = child.communicate(timeout=1800)
        for line in out.splitlines():
            if line.startswith(PREFIX):
                data = json.loads(line[len(PREFIX) :])
                results[data["scenario"]] = Audit(**data)
        for name in group:
            if name not in results:
                lost = Audit(scenario=name)
                lost.problem("lost", f"the worker process ended (exit {child.returncode}) without a result")
                results[name] = lost
    return results


def main(argv: list[str]) -> int:
    full = "--full" in argv
    names = [a for a in argv if not a.startswith("--")]
    for audit in run_here(names, full):
        print(PREFIX + json.dumps(dataclasses.asdict(audit)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
