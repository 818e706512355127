"""`bash scripts/start` without Azure: the demo world, and the real Functions host (`func start`) against it.

The host gets the world's settings in its environment (Core Tools lets the environment win over a
local.settings.json, so a developer's own file for Azure changes nothing here; the demo sets every key
the sample has). Its output goes to .demo/func.log, so that the onboarding's steps stay readable. Once the
host answers, the sample workload is onboarded over HTTP as the dev principal and followed until
verified; then the API's curl examples, with the demo's ids, and the host serves until Ctrl-C.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.demo.progress import Progress, proof
from tests.demo.world import DEMO_DIR, REQUEST, ROOT, World, environment, settings, write_settings

PORT = 7071
BASE = f"http://localhost:{PORT}"
START_SECONDS = 180.0  # the first start downloads the extension bundle
VERIFY_SECONDS = 120.0


class DemoFailed(Exception):
    """The host did not start, or the onboarding did not reach `verified`: the reason."""


def request(method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(BASE + path, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, text = resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
    return status, json.loads(text) if text else None


def run(world: World, func: str, directory: Path = DEMO_DIR) -> int:
    """Run `func start` on the world's settings until Ctrl-C (its exit code); DemoFailed if it does not
    start or the sample onboarding is not verified."""
    values = settings(world)
    print(f"demo: settings written to {write_settings(values, directory)}")
    log_path = directory / "func.log"
    print(f"demo: running {func} start (its output: {log_path})")
    with log_path.open("w") as log:
        host = subprocess.Popen(
            [func, "start", "--port", str(PORT)], cwd=ROOT, env=environment(values), stdout=log, stderr=log
        )
    try:
        _wait_for_host(host, log_path)
        key = _onboard(host, log_path)
        _examples(key)
        print(f"demo: the team page, signed in as the dev principal: {BASE}/api/ui")
        print(f"demo: the host serves on {BASE} until Ctrl-C")
        return host.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        _stop(host)


def _wait_for_host(host: subprocess.Popen[bytes], log: Path) -> None:
    end = time.monotonic() + START_SECONDS
    while time.monotonic() < end:
        if host.poll() is not None:
            raise DemoFailed(f"func exited with {host.returncode}; the end of {log}:\n" + _tail(log))
        try:
            if request("GET", "/api/health")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(1)  # polling for the host to listen, within the deadline
    raise DemoFailed(f"func did not answer on {BASE} within {START_SECONDS:.0f} s; the end of {log}:\n" + _tail(log))


def _onboard(host: subprocess.Popen[bytes], log: Path) -> str:
    started = time.monotonic()
    status, created = request("POST", "/api/onboardings", REQUEST)
    if status not in (200, 202):
        raise DemoFailed(f"POST /api/onboardings answered {status}: {created}")
    key = created["id"]
    print(f"demo: POST {BASE}/api/onboardings as the dev principal -> {status}, id {key}")
    progress = Progress()
    while True:
        status, record = request("GET", f"/api/onboardings/{key}")
        if status != 200:
            raise DemoFailed(f"GET /api/onboardings/{key} answered {status}: {record}")
        for line in progress.lines(record):
            print(f"  [{time.monotonic() - started:5.1f} s] {line}")
        if record["status"] == "verified":
            break
        if record["status"] == "failed":
            raise DemoFailed(f"{key} failed: {record['reason'] or record['lastError']}")
        if host.poll() is not None or time.monotonic() - started > VERIFY_SECONDS:
            raise DemoFailed(f"{key} not verified within {VERIFY_SECONDS:.0f} s ({record['status']}); see {log}")
        time.sleep(0.5)  # the host's queue trigger runs the worker; we only watch the record
    status, report = request("GET", f"/api/onboardings/{key}/verification")
    print(f"demo: {proof(report) if status == 200 else f'GET .../verification answered {status}'}")
    print(f"demo: {key} verified in {time.monotonic() - started:.1f} s")
    return key


def examples(key: str) -> list[str]:
    """The README's curl examples with the demo's ids (tests/unit/test_docs.py holds the README to them)."""
    body = shlex.quote(json.dumps(REQUEST))
    cluster = urllib.parse.quote(REQUEST["cluster"], safe="")  # type: ignore[arg-type]
    return [
        f"curl -s -X POST {BASE}/api/onboardings -H 'Content-Type: application/json' -d {body}",
        f"curl -s {BASE}/api/onboardings/{key}",
        f"curl -s {BASE}/api/onboardings/{key}/verification",
        f"curl -s -X POST '{BASE}/api/onboardings?dryRun=true' -H 'Content-Type: application/json' -d {body}",
        f"curl -s '{BASE}/api/onboardings?cluster={cluster}&namespace={REQUEST['namespace']}&pageSize=50'",
        f"curl -s {BASE}/api/me",
        f"curl -s -X DELETE {BASE}/api/onboardings/{key}",
        f"curl -s {BASE}/api/openapi.json",
        f"curl -s {BASE}/api/health",
    ]


def _examples(key: str) -> None:
    print("demo: try the API (README), with the demo's ids:")
    for line in examples(key):
        print(f"  {line}")


def _stop(host: subprocess.Popen[bytes]) -> None:
    """Ctrl-C reached func too (same process group); give it time to stop, then make sure."""
    try:
        host.wait(timeout=15)
    except subprocess.TimeoutExpired:
        host.terminate()
        try:
            host.wait(timeout=10)
        except subprocess.TimeoutExpired:
            host.kill()
            host.wait()


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
