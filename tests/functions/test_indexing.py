"""The app as the Functions host sees it at start-up: indexed by the Python worker's own loader.

`azure_functions_runtime.loader` (azure-functions-runtime 1.3.0, installed for tests with
--ignore-requires-python) is the code the worker runs: `index_function_app` imports
function_app.py and collects the functions; `process_indexed_function` turns each into the
metadata and raw binding JSON sent to the host. An unregistered Blueprint would be missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


class _Proto:
    """Stands in for the gRPC message classes the worker passes in (kwargs kept as attributes)."""

    def __init__(self, **kwargs: object) -> None:
        self.__dict__.update(kwargs)


def _protos() -> types.SimpleNamespace:
    binding_info = type("BindingInfo", (_Proto,), {})
    # Values of the worker protocol's BindingInfo.Direction and DataType enums.
    for name, value in {"in": 0, "out": 1, "inout": 2, "undefined": 0, "string": 1, "binary": 2, "stream": 3}.items():
        setattr(binding_info, name, value)
    return types.SimpleNamespace(
        BindingInfo=binding_info,
        RpcFunctionMetadata=type("RpcFunctionMetadata", (_Proto,), {}),
        RpcRetryOptions=type("RpcRetryOptions", (_Proto,), {}),
    )


@pytest.fixture(scope="module")
def indexed() -> dict[str, list[dict]]:
    from azure_functions_runtime import loader
    from azure_functions_runtime.bindings import meta
    from azure_functions_runtime.functions import Registry

    meta.load_binding_registry()  # the worker does this at start-up, before indexing
    # A fresh import, as in the worker's process (another test may have imported the app already).
    previous = sys.modules.pop("function_app", None)
    try:
        functions = loader.index_function_app(str(ROOT / "function_app.py"))
        metadata, _logs = loader.process_indexed_function(_protos(), Registry(), functions, str(ROOT))
    finally:
        if previous is not None:
            sys.modules["function_app"] = previous
    return {m.name: [json.loads(b) for b in m.raw_bindings] for m in metadata}


def test_every_function_is_registered(indexed):
    assert set(indexed) == {
        "onboardings_create",
        "onboardings_list",
        "onboardings_get",
        "onboardings_delete",
        "onboardings_verification",
        "sweeps_latest",
        "me",
        "openapi",
        "health",
        "ui_page",
        "ui_asset",
        "resource_events",
        "reconcile_worker",
        "reconcile_poison",
        "drift_sweep",
    }


@pytest.mark.parametrize(
    "name, route, methods, auth",
    [
        ("onboardings_create", "onboardings", ["POST"], "ANONYMOUS"),
        ("onboardings_list", "onboardings", ["GET"], "ANONYMOUS"),
        ("onboardings_get", "onboardings/{id}", ["GET"], "ANONYMOUS"),
        ("onboardings_delete", "onboardings/{id}", ["DELETE"], "ANONYMOUS"),
        ("onboardings_verification", "onboardings/{id}/verification", ["GET"], "ANONYMOUS"),
        ("sweeps_latest", "sweeps/latest", ["GET"], "ANONYMOUS"),
        ("me", "me", ["GET"], "ANONYMOUS"),
        ("openapi", "openapi.json", ["GET"], "ANONYMOUS"),
        ("health", "health", ["GET"], "ANONYMOUS"),
        ("ui_page", "ui", ["GET"], "ANONYMOUS"),
        ("ui_asset", "ui/{asset}", ["GET"], "ANONYMOUS"),
    ],
)
def test_http_functions(indexed, name, route, methods, auth):
    trigger = next(b for b in indexed[name] if b["type"] == "httpTrigger")
    assert trigger["route"] == route
    assert [m.upper() for m in trigger["methods"]] == methods
    assert trigger["authLevel"].upper() == auth
    assert trigger["direction"].upper() == "IN"
    assert any(b["type"] == "http" and b["direction"].upper() == "OUT" for b in indexed[name])


def test_event_grid_trigger(indexed):
    (binding,) = indexed["resource_events"]
    assert binding["type"] == "eventGridTrigger" and binding["name"] == "event"


def test_queue_trigger(indexed):
    (binding,) = indexed["reconcile_worker"]
    assert binding["type"] == "queueTrigger"
    assert binding["queueName"] == "keyless-work"
    assert binding["connection"] == "AzureWebJobsStorage"


def test_poison_queue_trigger(indexed):
    (binding,) = indexed["reconcile_poison"]
    assert binding["type"] == "queueTrigger" and binding["queueName"] == "keyless-work-poison"
    assert binding["connection"] == "AzureWebJobsStorage"


def test_timer_trigger_schedule_is_a_valid_ncrontab(indexed):
    (binding,) = indexed["drift_sweep"]
    assert binding["type"] == "timerTrigger"
    expected = "%KEYLESS_SWEEP_SCHEDULE%" if os.environ.get("KEYLESS_SWEEP_SCHEDULE") else "0 */30 * * * *"
    assert binding["schedule"] == expected
    assert binding["runOnStartup"] is False
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    assert_ncrontab(sample["KEYLESS_SWEEP_SCHEDULE"])


def assert_ncrontab(expr: str) -> None:
    """Six fields (second minute hour day month day-of-week), each *, */n, a, a-b or a list."""
    import re

    ranges = [(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6)]
    fields = expr.split()
    assert len(fields) == 6, f"NCRONTAB needs 6 fields, got {len(fields)}: {expr!r}"
    for field, (lo, hi) in zip(fields, ranges, strict=True):
        for part in field.split(","):
            m = re.fullmatch(r"(\*|\d+(?:-\d+)?)(?:/(\d+))?", part)
            assert m, f"bad NCRONTAB field {field!r}"
            base, step = m.group(1), m.group(2)
            if step is not None:
                assert int(step) >= 1
            if base != "*":
                nums = [int(n) for n in base.split("-")]
                assert all(lo <= n <= hi for n in nums), f"{field!r} outside {lo}-{hi}"


def test_host_json_is_what_the_host_needs():
    host = json.loads((ROOT / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensionBundle"] == {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"}
    queues = host["extensions"]["queues"]
    assert queues["messageEncoding"] == "base64"
    assert 1 <= queues["maxDequeueCount"] <= 10
    assert host["extensions"]["http"]["routePrefix"] == "api"


def test_importing_the_app_needs_no_settings_credentials_or_network():
    """Indexing imports function_app.py in a bare environment: it must not read settings or connect."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYLESS_", "AzureWebJobs", "IDENTITY_"))}
    env["KEYLESS_ARM_ENDPOINT"] = "http://not-https-so-reading-settings-would-fail"
    code = (
        "import socket, sys\n"
        "def refuse(*a, **k): raise RuntimeError('network touched at import')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "import function_app\n"
        "heavy = ('azure.mgmt.containerservice', 'kubernetes', 'azure.identity', 'pydantic')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "print(len(function_app.app.get_functions()), heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "15 []"


@pytest.mark.parametrize("setting, schedule", [(None, "0 */30 * * * *"), ("0 0 * * * *", "%KEYLESS_SWEEP_SCHEDULE%")])
def test_the_sweep_runs_every_30_minutes_without_its_setting(setting, schedule):
    """A deployment that leaves KEYLESS_SWEEP_SCHEDULE out still sweeps; the setting, when there, decides."""
    env = {k: v for k, v in os.environ.items() if k != "KEYLESS_SWEEP_SCHEDULE"}
    if setting:
        env["KEYLESS_SWEEP_SCHEDULE"] = setting
    code = (
        "import function_app\n"
        "(f,) = [f for f in function_app.app.get_functions() if f.get_function_name() == 'drift_sweep']\n"
        "print(f.get_bindings()[0].schedule)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == schedule
