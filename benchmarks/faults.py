"""The fault suite as a table: every scenario at its full size (or --quick), side by side in
worker processes. Exits non-zero if any binding was duplicated, left over, lost, or disagrees
with the ledger.

    python -m benchmarks.faults [--quick] [--processes 3] [scenario ...]
"""

from __future__ import annotations

import argparse
import sys
import time

from benchmarks.common import machine, table


def main(argv: list[str] | None = None) -> int:
    from tests.faults.runner import run_parallel
    from tests.faults.scenarios import SCENARIOS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the CI sizes instead of the full ones")
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("scenarios", nargs="*", help="names (default: all)")
    args = parser.parse_args(argv)
    names = args.scenarios or [s.name for s in SCENARIOS]
    started = time.monotonic()
    audits = run_parallel(names, full=not args.quick, processes=args.processes)
    titles = {s.name: s.title for s in SCENARIOS}
    rows = []
    for name in names:
        a = audits[name]
        rows.append(
            [
                titles.get(name, name),
                a.bindings,
                a.converged,
                a.failed_as_expected,
                a.duplicates,
                a.leftovers,
                a.lost,
                a.mismatched,
                a.arm_writes,
                a.throttled,
                f"{a.seconds:.0f}",
            ]
        )
    size = "quick" if args.quick else "full"
    print(f"Fault suite ({size} sizes, {args.processes} processes, {time.monotonic() - started:.0f} s). {machine()}\n")
    headers = ["scenario", "bindings", "converged", "failed as expected", "duplicates", "leftovers", "lost"]
    headers += ["ledger mismatch", "ARM writes", "429s", "s"]
    print(table(headers, rows))
    bad = [a for a in audits.values() if a.duplicates or a.leftovers or a.lost or a.mismatched or not a.ok]
    for a in bad:
        print(f"\n{a.scenario}:")
        for problem in a.problems[:20]:
            print(f"  {problem}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
