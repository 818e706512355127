"""The fault suite's fixtures. Marked `faults`: quick sizes by default (CI), KEYLESS_FAULTS=full
for full sizes, KEYLESS_FAULTS=off to skip. Scenarios run side by side in KEYLESS_FAULTS_PROCESSES
worker processes (default 3); 0 runs them in this process, one after the other (for debugging:
logs and breakpoints work there)."""

from __future__ import annotations

import os

import pytest

from tests.faults.runner import run_here, run_parallel
from tests.faults.world import Audit

MODE = os.environ.get("KEYLESS_FAULTS", "quick").strip().lower()
PROCESSES = int(os.environ.get("KEYLESS_FAULTS_PROCESSES", "3"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if MODE not in ("off", "none", "0"):
        return
    skip = pytest.mark.skip(reason="KEYLESS_FAULTS=off")
    for item in items:
        if item.get_closest_marker("faults") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def fault_audits(request: pytest.FixtureRequest) -> dict[str, Audit]:
    """Every selected scenario's audit, run together the first time a scenario test asks."""
    names = sorted(
        {
            item.callspec.params["scenario"].name
            for item in request.session.items
            if item.get_closest_marker("faults") is not None and hasattr(item, "callspec")
        }
    )
    full = MODE == "full"
    if PROCESSES <= 0:
        return {a.scenario: a for a in run_here(names, full)}
    return run_parallel(names, full, PROCESSES)
