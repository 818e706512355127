"""The declared runtime policy (shared.domain.retry_policy): the "not yet" backoff, and that the README
and host.json say what the module says."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from shared.domain import retry_policy
from shared.domain.retry_policy import NOT_YET_MAX_DELAY_SECONDS as CAP
from shared.domain.retry_policy import not_yet_delay
from shared.domain.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def low() -> float:
    return 0.0


def high() -> float:
    return 1.0 - 1e-12


# ------------------------------------------------------------------------------------------ not_yet_delay


def test_the_first_not_yet_waits_exactly_what_the_step_asked():
    for base in (1.0, 15.0, 30.0, 60.0):
        assert not_yet_delay(base, 1, low) == not_yet_delay(base, 1, high) == base


def test_consecutive_not_yets_double_with_equal_jitter():
    # d = 30 * 2**(n-1); the delay is in [d/2, d], never below the step's 30 s
    assert not_yet_delay(30, 2, low) == 30 and not_yet_delay(30, 2, high) == pytest.approx(60)
    assert not_yet_delay(30, 3, low) == 60 and not_yet_delay(30, 3, high) == pytest.approx(120)
    assert not_yet_delay(30, 4, lambda: 0.5) == pytest.approx(180)  # 240 * (1/2 + 0.5/2)
    assert not_yet_delay(30, 5, low) == 240 and not_yet_delay(30, 5, high) == pytest.approx(480)


def test_the_delay_stops_growing_at_the_cap():
    assert not_yet_delay(30, 6, high) == pytest.approx(CAP)  # 960 capped to 900
    for n in (6, 7, 20, 1_000, 10**9):
        assert CAP / 2 <= not_yet_delay(30, n, low) <= not_yet_delay(30, n, high) <= CAP


def test_a_step_that_asks_for_longer_than_the_cap_gets_what_it_asked():
    assert not_yet_delay(3600, 1, high) == 3600
    assert not_yet_delay(3600, 9, low) == not_yet_delay(3600, 9, high) == 3600


def test_nothing_to_wait_and_nonsense_counts():
    assert not_yet_delay(0, 5) == 0.0 and not_yet_delay(-3, 2) == 0.0
    assert not_yet_delay(20, 0, high) == not_yet_delay(20, -4, high) == 20  # treated as the first


def test_a_seeded_rng_repeats_and_every_draw_stays_in_its_window():
    draws = [not_yet_delay(15, n, random.Random(7).random) for n in range(1, 12)]
    assert draws == [not_yet_delay(15, n, random.Random(7).random) for n in range(1, 12)]
    rng = random.Random(42)
    for n in range(1, 12):
        d = min(15 * 2 ** (n - 1), CAP)
        for _ in range(200):
            assert max(15, d / 2) <= not_yet_delay(15, n, rng.random) <= d
    assert len({round(not_yet_delay(15, 5, rng.random), 6) for _ in range(50)}) > 40, "bindings spread out"


# ------------------------------------------------------------------------------------------ the declared table


def test_the_readme_shows_the_modules_table():
    readme = (ROOT / "docs" / "settings.md").read_text()
    assert retry_policy.readme_table() in readme, "docs/settings.md 'Retries and timeouts': paste readme_table()"


def test_host_json_retries_a_failed_run_as_declared():
    queues = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]
    h, m, s = (int(x) for x in queues["visibilityTimeout"].split(":"))
    assert h * 3600 + m * 60 + s == retry_policy.HOST_RETRY_VISIBILITY_SECONDS
    assert queues["maxDequeueCount"] == retry_policy.HOST_MAX_DEQUEUE_COUNT


@pytest.mark.parametrize("policy", retry_policy.CLIENTS, ids=lambda p: p.client)
def test_each_client_states_its_attempts_and_timeouts(policy):
    assert policy.attempts.split()[0] == str(policy.retry.total + 1)
    assert len(policy.retry.waits()) == policy.retry.total
    connect, read = policy.timeouts(30.0)
    assert 0 < connect <= read


def test_waits_between_attempts():
    assert retry_policy.ARM.retry.waits() == (0.0, 1.6, 3.2)  # azure-core: none, then 0.8 * 2**(k-1)
    assert retry_policy.TABLES.retry.waits() == (0.0, 1.0, 2.0)
    assert retry_policy.QUEUE.retry.waits() == (1.0, 1.0, 1.0)
    assert retry_policy.KUBERNETES.retry.waits() == (0.0,)


def test_arm_and_kubernetes_timeouts_follow_the_setting():
    assert retry_policy.call_timeouts(30) == (10, 30) and retry_policy.call_timeouts(0.5) == (0.5, 0.5)
    settings = Settings.from_env({"KEYLESS_REQUEST_TIMEOUT_SECONDS": "45"})
    assert settings.timeouts == retry_policy.ARM.timeouts(45) == retry_policy.KUBERNETES.timeouts(45) == (10, 45)
    with pytest.raises(ValueError):
        retry_policy.ARM.timeouts()
    assert retry_policy.TABLES.timeouts() == (10, 30)


def test_kubernetes_reads_are_retried_once_and_nothing_else_is():
    kwargs = retry_policy.KUBERNETES.retry.kwargs()
    assert kwargs["total"] == 1 and kwargs["read"] == 1 and kwargs["allowed_methods"] == frozenset({"GET"})
    assert kwargs["connect"] == kwargs["status"] == kwargs["other"] == kwargs["redirect"] == 0
    assert kwargs["respect_retry_after_header"] is False


def test_a_binding_that_stays_not_ready_waits_longer_each_run_and_starts_over_when_ready():
    from shared.domain.records import BindingRecord
    from shared.domain.results import ReconcileResult, StepOutcome

    record = BindingRecord("k" * 32, "c", "ns", "sa", "a", "r")

    def run(outcome: str) -> float | None:
        step = StepOutcome("role-assignment", outcome, "principal not replicated", delay_seconds=20)  # type: ignore[arg-type]
        return record.record_result(ReconcileResult("k" * 32, "present", steps=[step]))

    delays = [run("not-yet") for _ in range(5)]
    assert delays[:2] == [20, 20], "the first not-yets honour the step's own delay (replication passes)"
    assert all(d is not None for d in delays)
    assert [d for d in delays if d is not None] == sorted(d for d in delays if d is not None)
    assert delays[-1] is not None and delays[-1] >= 20 * 2**3 / 2, "then doubled per further not-yet (equal jitter)"
    assert record.not_yet_streak == 5 and record.next_attempt_at
    assert run("unchanged") is None and record.not_yet_streak == 0 and record.next_attempt_at is None
