"""The demo (tests/demo, `bash scripts/start`): one world and one set of settings for both its modes, and the
check reaching `verified` with its proof of access through the app's own functions."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from shared.app import composition
from tests.demo import check, serve
from tests.demo.world import DEV_PRINCIPAL, demo_world, settings

ROOT = Path(__file__).resolve().parents[1]
LAST_LINE = re.compile(r"^demo: [0-9a-f]{32} verified in \d+\.\d s$")
CHECK_SECONDS = 150


def stub_func(tmp_path: Path) -> Path:
    """A stand-in for Core Tools' `func` (a separate program: here one that records its environment and exits 3)."""
    script = tmp_path / "fake-func"
    script.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"open({str(tmp_path / 'env.json')!r}, 'w').write(json.dumps(dict(os.environ)))\nsys.exit(3)\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.mark.slow
def test_check_and_func_start_get_one_world_and_the_same_settings(tmp_path, monkeypatch):
    """In one world: the check runs to `verified` on settings(world) and writes them; `func start` (scripts/start
    without --check) is handed exactly the same values, and none of the developer's own Azure credentials."""
    monkeypatch.setattr(os, "environ", dict(os.environ))  # the check sets the app's settings in the environment
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "a developer's own secret")
    lines: list[str] = []
    try:
        with demo_world() as world:
            check.run(world, out=lines.append, directory=tmp_path / "check")
            with pytest.raises(serve.DemoFailed, match="func exited with 3"):
                serve.run(world, str(stub_func(tmp_path)), directory=tmp_path / "func")
            expected = settings(world)
    finally:
        composition.reset()
    assert LAST_LINE.fullmatch(lines[-1]), lines[-1]
    assert any(line.startswith("demo: proof of access: pass (token, exchange, data-plane)") for line in lines), lines
    written = {d: json.loads((tmp_path / d / "local.settings.json").read_text())["Values"] for d in ("check", "func")}
    assert written["check"] == written["func"] == expected
    env = json.loads((tmp_path / "env.json").read_text())
    assert {k: env.get(k) for k in expected} == expected
    assert "AZURE_CLIENT_SECRET" not in env
    assert expected["KEYLESS_PROVE_ACCESS"] == "true"
    assert json.loads(expected["KEYLESS_DEV_PRINCIPAL"]) == DEV_PRINCIPAL
    assert Path(expected["KEYLESS_CA_BUNDLE"]).is_file()
    assert not [k for k, v in expected.items() if not v], "an empty setting would let another file's value in"


@pytest.mark.slow
def test_the_check_end_to_end():
    """`python -m tests.demo --check` (what `bash scripts/start --check` runs), within a deadline."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.demo", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=CHECK_SECONDS,
        env={k: v for k, v in os.environ.items() if not k.startswith("KEYLESS_")},
    )
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert LAST_LINE.fullmatch(lines[-1]), lines[-1]
    assert any("check access: pending" in line for line in lines), "the proof waited for propagation once at least"


@pytest.mark.slow
def test_the_check_stops_at_its_deadline_with_the_reason(monkeypatch, tmp_path):
    """A role that never takes effect: the check gives up at its deadline and says what is still open."""
    monkeypatch.setattr(os, "environ", dict(os.environ))
    lines: list[str] = []
    try:
        with demo_world() as world:
            world.services.openai.role_propagation_seconds = 3600
            with pytest.raises(check.DemoFailed, match=r"not verified within 10 s: ready access pending"):
                check.run(world, out=lines.append, deadline_seconds=10, directory=tmp_path)
    finally:
        composition.reset()
    assert not any(LAST_LINE.fullmatch(line) for line in lines), lines
