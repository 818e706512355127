"""Replication delay: a new identity's principal is invisible to role assignments for T seconds.

How long until the binding is `ready`? Keyless does not sleep on it: the role assignment step
ends "not yet" and the work queue brings the binding back after the step's delay (20 s), as
often as needed. Target: time to ready <= 1.2 x T + one backoff step.

Real time (the emulator's clock is the wall clock; no scaling), one binding per T, in a fresh
world each. The role assignment is sent with principalType (which on Azure skips most of the
wait); here the emulator ignores it, the hard case.

    python -m benchmarks.replication [--windows 10 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from benchmarks.common import machine, services, table

BACKOFF = 20.0  # the role assignment step's "not yet" delay (shared/adapters/roles.py)


def run(ctx: tuple[Any, Any, str], window: float) -> tuple[float, int]:
    from tests.faults.scenarios import settle_until
    from tests.faults.world import Workload, World, expect_all

    ca, endpoint, storage = ctx
    with World(ca, endpoint, storage, limits_scale=None, delay_scale=1.0, visibility=60) as w:  # type: ignore[arg-type]
        w.arm.principal_replication_seconds = window
        w.arm.principal_type_skips_replication = False
        one = Workload(0, "team-a", "chat-api")
        w.prepare([one])
        started = time.monotonic()
        w.onboard(one)
        settle_until(w, expect_all([one], "ready"), deadline=window * 3 + 120)
        took = time.monotonic() - started
        attempts = len(w.arm.log.matching("PUT", "/roleAssignments/"))
        return took, attempts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=float, nargs="+", default=[10.0, 30.0])
    args = parser.parse_args(argv)
    rows = []
    with services() as ctx:
        for window in args.windows:
            took, attempts = run(ctx, window)
            limit = 1.2 * window + BACKOFF
            rows.append([f"{window:g}", f"{took:.1f}", f"{limit:.1f}", attempts, "met" if took <= limit else "NOT met"])
    print(f"Replication delay: time until ready when the principal is invisible for T s. {machine()}\n")
    print(table(["T s", "time to ready s", "target 1.2T + 20 s", "role assignment PUTs", "target"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
