"""Requests per onboarding are tests, not only benchmark figures: the scenario of
`python -m benchmarks.requests_per_onboarding` (the same code) runs against the emulators and every
count it makes must stay at or under its ceiling in `TARGETS`, so that a read added anywhere on the
onboarding path fails here, not months later in a benchmark nobody ran. A new check that truly needs
a read raises its ceiling there, with the reason in the commit."""

from __future__ import annotations

import collections.abc
from typing import Any

import pytest

from benchmarks import requests_per_onboarding as bench


@pytest.fixture(scope="module")
def results(ca, identity_endpoint, storage) -> collections.abc.Iterator[dict[str, dict[str, Any]]]:
    yield bench.measure((ca, identity_endpoint, storage), batch=10)


@pytest.mark.parametrize("case", sorted(bench.TARGETS))
def test_counts_stay_under_their_ceilings(results: dict[str, dict[str, Any]], case: str) -> None:
    measured = {name: bench.per_binding(results[case], name) for name in bench.TARGETS[case]}
    over = {name: value for name, value in measured.items() if round(value, 1) > bench.TARGETS[case][name]}
    assert not over, f"{case}: {over} over {bench.TARGETS[case]} (all counts: {results[case]})"


def test_the_headline_targets() -> None:
    """The targets the README and RESULTS.md state are the ceilings, not looser ones."""
    warm, private = bench.TARGETS[bench.WARM], bench.TARGETS[bench.PRIVATE_CONVERGED]
    assert (warm["arm_reads"], warm["kube_reads"], warm["arm_writes"]) == (5, 6, 0)
    assert private["run_commands"] <= 3
    assert bench.TARGETS[bench.FRESH]["arm_writes"] <= 3
