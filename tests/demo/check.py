"""`bash scripts/start --check`: the demo world, and the app's own functions driven through it until verified.

The functions are called the way the suite calls them (tests/functions/conftest.py `Host`: HTTP requests
through the programming model, checked against the OpenAPI document, and the queue worker fed from Azurite
with host.json's maxDequeueCount; a delayed message waits in the queue until it is due). The onboarding is
asked for as the dev principal (no X-MS-CLIENT-PRINCIPAL header), as a developer's curl would.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.app import composition
from tests.demo.progress import Progress, proof
from tests.demo.world import AMBIENT, DEMO_DIR, REQUEST, World, settings, write_settings

DEADLINE_SECONDS = 120.0
POLL_SECONDS = 0.2


class DemoFailed(Exception):
    """The onboarding did not reach `verified`: the reason, for the last line and a non-zero exit."""


def run(
    world: World,
    out: Callable[[str], None] = print,
    deadline_seconds: float = DEADLINE_SECONDS,
    directory: Path = DEMO_DIR,
) -> str:
    """Onboard the sample workload and drive it to `verified` with its proof of access; its id.
    DemoFailed (with the reason) if the record fails or the deadline passes first."""
    from tests.functions.conftest import Host  # imports the Functions app: after the settings are in place

    started = time.monotonic()
    values = settings(world)
    out(f"demo: settings written to {write_settings(values, directory)}")
    for key in AMBIENT:
        os.environ.pop(key, None)
    os.environ.update(values)
    composition.reset()
    host = Host(world.azurite.connection_string)

    def call(name: str, method: str, url: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        status, answer, _ = host.http(name, method, url, body, principal=None, **kwargs)
        return status, answer

    status, created = call("onboardings_create", "POST", "/api/onboardings", REQUEST)
    if status not in (200, 202):
        raise DemoFailed(f"POST /api/onboardings answered {status}: {created}")
    asked, key = time.monotonic(), created["id"]
    out(f"demo: POST /api/onboardings as the dev principal -> {status}, id {key}")
    progress, failures, end = Progress(), 0, started + deadline_seconds
    while True:
        try:
            host.drain(deadline_seconds=max(1.0, end - time.monotonic()))
        except AssertionError:  # the driver's "not drained by its deadline": ours has passed; say where it stands
            pass
        for exc in host.failures[failures:]:
            out(f"  the worker raised {type(exc).__name__}: {exc} (the host retries the message)")
        failures = len(host.failures)
        status, record = call("onboardings_get", "GET", f"/api/onboardings/{key}", route_params={"id": key})
        if status != 200:
            raise DemoFailed(f"GET /api/onboardings/{key} answered {status}: {record}")
        for line in progress.lines(record):
            out(f"  [{time.monotonic() - asked:5.1f} s] {line}")
        if record["status"] == "verified":
            break
        if record["status"] == "failed":
            raise DemoFailed(f"{key} failed: {record['reason'] or record['lastError']}")
        if time.monotonic() > end:
            open_checks = ", ".join(f"{c['name']} {c['status']}" for c in record["verification"].get("open") or [])
            raise DemoFailed(f"{key} not verified within {deadline_seconds:.0f} s: {record['status']} {open_checks}")
        time.sleep(POLL_SECONDS)  # a re-check waits in the queue until its delay is over
    route = {"id": key}
    status, report = call("onboardings_verification", "GET", f"/api/onboardings/{key}/verification", route_params=route)
    line = proof(report) if status == 200 else f"GET .../verification answered {status}"
    out(f"demo: {line}")
    if status != 200 or not line.startswith("proof of access: pass"):
        raise DemoFailed(f"{key} verified, but {line}")
    events = [e.get("type") for e in world.topic.events if key in json.dumps(e)]
    out(f"demo: outcome events on the topic: {', '.join(map(str, events)) or 'none'}")
    out(f"demo: {key} verified in {time.monotonic() - asked:.1f} s")
    return key


def quiet_logs() -> None:
    """The app's own warnings on stderr; the SDKs' expected refusals (Entra's `not yet`) not."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("azure", "msal", "urllib3", "kubernetes"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
