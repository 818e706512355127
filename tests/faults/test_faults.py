"""The fault suite: every scenario must end with each binding where it should be, and nothing
duplicated, left over, lost or contradicting the ledger (see scenarios.py and world.Audit)."""

from __future__ import annotations

import pytest

from tests.faults.scenarios import SCENARIOS
from tests.faults.world import Audit


@pytest.mark.faults
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario_converges_with_nothing_duplicated_left_over_or_lost(scenario, fault_audits: dict[str, Audit]):
    audit = fault_audits[scenario.name]
    assert audit.ok, "\n".join([f"{scenario.title}: {audit}", *audit.problems])
