"""The direct mode: `keyless onboard | verify | offboard` with the engine in this process, as you.

Each step is printed as it is recorded (what it found or changed, and why), each wait with its reason
and length, then the verification check by check (shared.app.direct does the work).
"""

from __future__ import annotations

import argparse
import os
import time

from cli.output import Output, clip
from shared.app import direct
from shared.domain.errors import KeylessError
from shared.domain.results import StepOutcome
from shared.domain.verification import VerificationReport

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PENDING = 0, 1, 2, 3
STEP_WIDTH = 26


class Printer(direct.Listener):
    """Shows a direct run live."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self.started = time.monotonic()

    def _at(self) -> str:
        return f"[{time.monotonic() - self.started:6.1f} s]"

    def step(self, step: StepOutcome) -> None:
        what = _found(step)
        why = f"  {clip(step.reason, 100)}" if step.reason else ""
        self.out.line(f"{self._at()} {step.step.ljust(STEP_WIDTH)} {self.out.status(step.outcome, 9)}{what}{why}")

    def waiting(self, reason: str, seconds: float) -> None:
        self.out.line(f"{self._at()} {'waiting'.ljust(STEP_WIDTH)} {self.out.status('not-yet', 9)} "
                      f"{seconds:.1f} s, then again: {clip(reason, 100)}")  # fmt: skip

    def verified(self, report: VerificationReport) -> None:
        self.out.line(f"{self._at()} {'verification'.ljust(STEP_WIDTH)} {self.out.status(report.status, 9)}")
        for check in report.checks:
            why = f"  {clip(check.reason, 100)}" if check.reason else ""
            self.out.line(
                f"{'':10} {('check ' + check.name).ljust(STEP_WIDTH)} {self.out.status(check.status, 9)}{why}"
            )


def _found(step: StepOutcome) -> str:
    """The object a step names, when it names one (details: name, object)."""
    name = step.details.get("name") or step.details.get("object")
    return f"  {name}" if isinstance(name, str) and name else ""


def run(args: argparse.Namespace, out: Output) -> int:
    try:
        d = direct.connect(os.environ)
        b = direct.binding(d, args.cluster, args.namespace, args.service_account, args.account, args.role,
                           args.workload)  # fmt: skip
    except KeylessError as exc:  # a bad field, a bad setting: what to fix
        out.error(exc.reason)
        return EXIT_USAGE
    printer = Printer(out)
    out.line(f"{args.command} {b.namespace}/{b.service_account} on {b.cluster.name} -> {b.account.name} "
             f"(id {b.key}){' (dry run: reads only)' if getattr(args, 'dry_run', False) else ''}")  # fmt: skip
    try:
        if args.command == "onboard":
            outcome = direct.onboard(d, b, printer, args.timeout, dry_run=args.dry_run)
        elif args.command == "offboard":
            outcome = direct.offboard(d, b, printer, args.timeout)
        else:
            outcome = direct.verify(d, b, printer)
    except KeylessError as exc:
        out.error(exc.reason)
        return EXIT_FAILED
    return _finish(outcome, out, b.key)


def _finish(outcome: direct.Outcome, out: Output, key: str) -> int:
    code = {"verified": EXIT_OK, "removed": EXIT_OK, "planned": EXIT_OK, "pending": EXIT_PENDING}.get(
        outcome.verdict, EXIT_FAILED
    )
    if out.as_json:
        out.document({"id": key, "exitCode": code, **direct.describe(outcome)})
        return code
    summary = {
        "verified": "the workload gets its token, and access works, with no key",
        "removed": "Azure's access is gone; the cluster's side is cleaned up",
        "planned": "dry run: nothing was written; the steps above say what a run would do",
        "pending": f"not there yet: {outcome.reason} (run the same command again later, or raise --timeout)",
        "failed": outcome.reason,
    }
    changed = "" if outcome.verdict in ("planned", "failed") or outcome.changed else " (nothing changed)"
    out.line(f"{out.status(outcome.verdict)}  {summary[outcome.verdict]}{changed}")
    if outcome.result is not None and outcome.result.leftovers:
        for left in outcome.result.leftovers:
            out.line(f"  left in the cluster: {left['object']}: {left['reason']}")
    return code
