"""The `keyless` command's direct mode, as a user runs it: `python -m cli` in its own process, against the
local demo world (tests/demo/world.py), with the demo's settings in its environment and no deployed app.

The engine and the credential chain run for real in that process (the managed-identity endpoint emulator
stands in for `az login`); nothing of Keyless is mocked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ACCOUNT_ID, CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT
from tests.demo.world import World, demo_world, environment, settings
from tests.e2e.test_workloads import AI

ROOT = Path(__file__).resolve().parents[2]
BINDING = ["--cluster", CLUSTER_ID, "--namespace", NAMESPACE, "--service-account", SERVICE_ACCOUNT,
           "--account", ACCOUNT_ID]  # fmt: skip
RUN_SECONDS = 120


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with demo_world() as w:
        yield w


def keyless(world: World, *args: str, timeout: float = RUN_SECONDS, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m cli <args>` with the demo's settings in its environment (no storage is used)."""
    values = {**settings(world), **env}
    base = {k: v for k, v in os.environ.items() if not k.startswith("KEYLESS_")}
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=environment(values, base))  # fmt: skip


def as_json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.stdout.strip().startswith("{"), done.stdout + done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_onboard_ends_verified_with_its_proof_and_a_second_run_changes_nothing(world):
    first = keyless(world, "onboard", *BINDING, "--workload", AI)
    assert first.returncode == 0, first.stdout + first.stderr
    lines = first.stdout.splitlines()
    shown = {tuple(line.split()[3:5]) for line in lines if line.startswith("[")}  # "[   2.4 s] identity created ..."
    for step in ("identity", "federated-credential", "role-assignment", "service-account", "configmap"):
        assert (step, "created") in shown, (step, first.stdout)
    assert (f"deployment/{AI}", "updated") in shown and ("cluster", "unchanged") in shown, first.stdout
    assert any("check access" in line and "pass" in line for line in lines), first.stdout
    assert lines[-1].startswith("verified  the workload gets its token"), lines[-1]
    assert "\033[" not in first.stdout, "no colour when stdout is not a terminal"

    again = as_json(keyless(world, "onboard", *BINDING, "--workload", AI, "--json"))
    assert again["verdict"] == "verified" and again["changed"] is False and again["runs"] == 1, again
    assert {s["outcome"] for s in again["run"]["steps"]} == {"unchanged"}, again["run"]["steps"]
    assert again["verification"]["status"] == "pass"
    assert again["exitCode"] == 0 and again["id"] == again["run"]["bindingKey"]


def test_dry_run_writes_nothing_and_says_what_it_would_do(world):
    other = [*BINDING[:4], "--service-account", "planned-sa", *BINDING[6:]]
    done = keyless(world, "onboard", *other, "--dry-run", "--json")
    plan = as_json(done)
    assert done.returncode == 0 and plan["verdict"] == "planned" and plan["run"]["dryRun"] is True, plan
    assert plan["run"]["steps"][3] == {**plan["run"]["steps"][3], "step": "identity", "outcome": "created"}
    assert "verification" not in plan
    assert world.kube.get_object("ServiceAccount", NAMESPACE, "planned-sa") is None
    assert not [i for i in world.services.arm.identities() if "planned-sa" in json.dumps(i)]


def test_offboard_takes_azure_access_away_and_verify_then_fails(world):
    sa = ["--service-account", "leaving-sa"]
    binding = [*BINDING[:4], *sa, *BINDING[6:]]
    onboarded = keyless(world, "onboard", *binding, "--timeout", "60")
    assert onboarded.returncode == 3, onboarded.stdout  # no pod uses it: pending, and says so
    assert "pods: no running pod uses service account leaving-sa" in onboarded.stdout.splitlines()[-1]
    done = keyless(world, "offboard", *binding, "--json")
    gone = as_json(done)
    assert done.returncode == 0 and gone["verdict"] == "removed", gone
    steps = {s["step"]: s["outcome"] for s in gone["run"]["steps"]}
    assert steps["role-assignment"] == steps["federated-credential"] == steps["identity"] == "deleted", steps
    again = as_json(keyless(world, "offboard", *binding, "--json"))
    assert again["verdict"] == "removed" and again["changed"] is False, again
    after = keyless(world, "verify", *binding)
    assert after.returncode == 1, after.stdout + after.stderr
    assert "failed" in after.stdout.splitlines()[-1]


def test_exit_codes_usage_failed_and_pending(world):
    bad = keyless(world, "onboard", *BINDING[:2], "--namespace", "Bad_NS", *BINDING[4:])
    assert bad.returncode == 2 and "namespace" in bad.stderr, bad.stderr
    missing = keyless(world, "onboard", "--cluster", CLUSTER_ID)
    assert missing.returncode == 2 and "--namespace" in missing.stderr
    no_account = ACCOUNT_ID.rsplit("/", 1)[0] + "/no-such-account"
    failed = keyless(world, "onboard", *BINDING[:6], "--account", no_account, "--json")
    report = as_json(failed)
    assert failed.returncode == 1 and report["verdict"] == "failed" and "account" in report["reason"], report
    world.services.openai.role_propagation_seconds = 3600  # the proof of access stays pending
    try:
        sa = ["--service-account", "slow-sa"]
        pending = keyless(world, "onboard", *BINDING[:4], *sa, *BINDING[6:], "--timeout", "3")
    finally:
        world.services.openai.role_propagation_seconds = 3.0
    assert pending.returncode == 3, pending.stdout + pending.stderr
    assert pending.stdout.splitlines()[-1].startswith("pending  not there yet: access: "), pending.stdout


def test_help_describes_every_option():
    for args, words in (
        (
            [],
            [
                "onboard",
                "offboard",
                "verify",
                "list",
                "show",
                "request",
                "delete",
                "sweep",
                "exit codes",
                "az login",
                "no access policy",
            ],
        ),  # fmt: skip
        (
            ["onboard"],
            [
                "--cluster",
                "--namespace",
                "--service-account",
                "--account",
                "--workload",
                "--role",
                "--dry-run",
                "--timeout",
                "--json",
                "3  still pending",
            ],
        ),  # fmt: skip
        (
            ["list"],
            [
                "--status",
                "--cluster",
                "--namespace",
                "--account",
                "--limit",
                "--api",
                "--api-client-id",
                "KEYLESS_API_URL",
            ],
        ),  # fmt: skip
    ):
        done = subprocess.run([sys.executable, "-m", "cli", *args, "--help"], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        text = " ".join(done.stdout.split())
        for word in words:
            assert " ".join(word.split()) in text, (args, word)
