"""What changed in an onboarding record, as lines a person can follow (both demo modes print these).

Only changes are printed: a new run of the worker (attempts) with its status and reason, a step whose
outcome changed (a re-run finding a step `unchanged` is the convergence, not news), and the verification
checks still open, with their reasons (the proof of access shows here as `access: pending`).
"""

from __future__ import annotations

from typing import Any


class Progress:
    def __init__(self) -> None:
        self._attempts = -1
        self._status = ""
        self._steps: dict[str, str] = {}
        self._open: dict[str, tuple[str, str]] = {}
        self._verification = ""

    def lines(self, record: dict[str, Any]) -> list[str]:
        """The lines for what changed since the last record (GET /api/onboardings/{id})."""
        out: list[str] = []
        attempts, status = int(record.get("attempts") or 0), str(record.get("status") or "")
        if attempts != self._attempts or status != self._status:
            reason = f": {record['reason']}" if record.get("reason") else ""
            out.append(f"run {attempts}: {status}{reason}" if attempts else f"{status}{reason}")
            self._attempts, self._status = attempts, status
        for step in record.get("steps") or []:
            name, outcome = str(step.get("step")), str(step.get("outcome"))
            before = self._steps.get(name)
            if before != outcome and not (before and outcome == "unchanged"):
                out.append(f"  step {name}: {outcome}{_details(step.get('details'))}")
            self._steps[name] = outcome
        verification = record.get("verification") or {}
        now_open = {
            str(c.get("name")): (str(c.get("status")), str(c.get("reason") or ""))
            for c in verification.get("open") or []
        }
        for name, (check, reason) in now_open.items():
            if self._open.get(name) != (check, reason):
                out.append(f"  check {name}: {check}" + (f": {reason}" if reason else ""))
        for name in self._open.keys() - now_open.keys():
            out.append(f"  check {name}: pass")
        self._open = now_open
        overall = str(verification.get("status") or "")
        if overall and overall != self._verification:
            out.append(f"  verification: {overall}")
            self._verification = overall
        return out


def _details(details: Any) -> str:
    """A step's flat details (names, ids, what was removed); nested ones, such as the patches sent, left out."""
    if not isinstance(details, dict):
        return ""
    parts = [f"{k} {_flat(v)}" for k, v in details.items() if _flat(v) and not k.endswith(("Patch", "Apply"))]
    return f" ({'; '.join(parts)})" if parts else ""


def _flat(value: Any) -> str:
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, dict) and all(isinstance(v, str | int | float) for v in value.values()):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    if isinstance(value, list) and all(_flat(v) for v in value):
        return " | ".join(_flat(v) for v in value) if value else ""
    return ""


def proof(report: dict[str, Any]) -> str:
    """The proof of access in a verification report (GET /api/onboardings/{id}/verification), in one line."""
    access = next((c for c in report.get("checks") or [] if c.get("name") == "access"), None)
    if access is None:
        return "no proof of access in the report (KEYLESS_PROVE_ACCESS is off?)"
    passed = (access.get("evidence") or {}).get("passed") or []
    return f"proof of access: {access.get('status')} (" + ", ".join(passed) + ")"
