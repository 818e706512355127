"""Proving access through the app (KEYLESS_PROVE_ACCESS): an onboarding is `verified` only once the workload's
own token opened the account; while the role propagates it stays `ready` with the `access` check pending,
and the worker checks again with growing delays. Nothing secret (the cluster's token, Entra's token) is
logged, stored, queued or returned."""

from __future__ import annotations

import base64
import collections.abc
import json
import logging
import re
import time

import pytest
from azure.data.tables import TableClient

from shared.app import composition
from tests.access_services import AccessServices, access_services
from tests.conftest import ACCOUNT_ID, CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT
from tests.e2e.test_workloads import AI, ai_service
from tests.emulators.arm import ArmEmulator

REQUEST = {
    "cluster": CLUSTER_ID,
    "namespace": NAMESPACE,
    "serviceAccount": SERVICE_ACCOUNT,
    "openAIAccount": ACCOUNT_ID,
    "workloads": [AI],
}
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.")  # any JWT, whoever signed it


@pytest.fixture
def services(ca, kube) -> collections.abc.Iterator[AccessServices]:
    with access_services(ca, kube) as found:
        yield found


@pytest.fixture
def arm(services: AccessServices) -> ArmEmulator:
    return services.arm


@pytest.fixture
def proving(app_env, services, monkeypatch) -> dict[str, str]:
    env = {
        "KEYLESS_PROVE_ACCESS": "true",
        "KEYLESS_AUTHORITY_HOST": services.entra.url,
        "KEYLESS_RETRY_DELAY_SCALE": "0.02",  # re-checks in about a second, not 30 s doubling
        "KEYLESS_ARM_PACING_SCALE": "0",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    composition.reset()
    return {**app_env, **env}


def record(host, key: str) -> dict:
    status, body, _ = host.http("onboardings_get", "GET", "/", route_params={"id": key})
    assert status == 200, body
    return body


def test_verified_only_once_the_workloads_token_opens_the_account(host, services, kube, proving):
    services.openai.role_propagation_seconds = 300  # the role assignment takes effect 5 minutes after it is made
    ai_service(kube)
    status, created, _ = host.http("onboardings_create", "POST", "/", REQUEST)
    assert status == 202, created
    host.drain()
    got = record(host, created["id"])
    assert got["status"] == "ready", got
    (open_check,) = [c for c in got["verification"]["open"] if c["name"] == "access"]
    assert open_check["status"] == "pending" and "not effective yet" in open_check["reason"]

    services.arm.clock.advance(301)
    deadline = time.monotonic() + 60
    while record(host, created["id"])["status"] != "verified" and time.monotonic() < deadline:
        host.drain()  # the worker's re-check, queued with a (scaled) delay
        time.sleep(0.2)  # polling for the delayed message, within the deadline
    got = record(host, created["id"])
    assert got["status"] == "verified", got
    assert got["verification"]["status"] == "pass" and got["verification"]["open"] == []

    status, report, _ = host.http("onboardings_verification", "GET", "/", route_params={"id": created["id"]})
    assert status == 200
    (proof,) = [c for c in report["checks"] if c["name"] == "access"]
    assert proof["status"] == "pass" and proof["evidence"]["passed"] == ["token", "exchange", "data-plane"]


def test_no_token_is_logged_stored_queued_or_returned(host, services, kube, proving, storage, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("azure", "urllib3", "kubernetes", "keyless", "msal"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    services.entra.credential_propagation_seconds = 60  # one pending exchange first, then the proof
    seen: list[str] = []
    ai_service(kube)
    _, created, _ = host.http("onboardings_create", "POST", "/", REQUEST)
    seen.extend(base64.b64decode(m).decode() for m in host.raw_messages())
    host.drain()
    services.arm.clock.advance(61)
    for _ in range(3):
        status, report, resp = host.http("onboardings_verification", "GET", "/", route_params={"id": created["id"]})
        seen += [json.dumps(report), json.dumps(dict(resp.headers))]
    (proof,) = [c for c in report["checks"] if c["name"] == "access"]
    assert proof["status"] == "pass", proof
    seen.append(json.dumps(record(host, created["id"])))
    seen.extend(base64.b64decode(m).decode() for m in host.raw_messages())
    table = TableClient.from_connection_string(storage, proving["KEYLESS_TABLE_NAME"])
    seen.extend(json.dumps(dict(e), default=str) for e in table.list_entities())
    logs = [r.getMessage() for r in caplog.records if not r.name.startswith("werkzeug")]
    assert len(kube.issued_tokens) >= 2 and len(services.entra.issued) >= 1, "tokens were made: the check can see"
    assert any("/token" in line for line in logs), "the token requests were logged: the check would be blind"
    for where, items in (("logs", logs), ("responses, records, messages", seen)):
        leaks = [i for i in items if JWT.search(i)]
        assert not leaks, f"a JWT in {where}: {leaks[0][:200]}"


def test_a_verified_binding_whose_account_goes_keys_only_is_found_by_the_sweep(
    host, services, kube, proving, monkeypatch
):
    """Verified, then the account loses its custom subdomain (Entra tokens refused there): the next drift
    sweep finds the binding (a suspect: just changed, and the account keys-only in the inventory) and runs it:
    the run stops at the account step, so the binding is `failed` with the reason, no longer `verified`."""
    monkeypatch.setenv("KEYLESS_ARM_READ_CACHE_SECONDS", "0")  # the account as ARM has it now, not 20 s ago
    composition.reset()
    ai_service(kube)
    _, created, _ = host.http("onboardings_create", "POST", "/", REQUEST)
    host.drain()
    assert record(host, created["id"])["status"] == "verified"
    services.arm.add_cognitive_account(ACCOUNT_ID, custom_subdomain=None)
    served = len(services.openai.served)
    host.timer()
    host.drain()
    got = record(host, created["id"])
    assert got["status"] == "failed" and "no custom subdomain" in got["reason"], got["reason"]
    assert len(services.openai.served) == served, "no read was attempted with a token against a keys-only account"


def test_proofs_are_measured_by_status_and_stage(host, services, kube, proving):
    """keyless.access.proofs: one per proof made (the worker's, the API's first), none for a reused one."""
    from shared.adapters import telemetry
    from tests.functions.test_telemetry import Otel, value

    otel = Otel.get()
    telemetry.use(otel.tracer_provider, otel.meter_provider)
    otel.points()  # forget what earlier tests measured
    otel.exporter.clear()
    try:
        services.openai.role_propagation_seconds = 300
        ai_service(kube)
        _, created, _ = host.http("onboardings_create", "POST", "/", REQUEST)
        host.drain()
        points = otel.points()
        assert value(points, "keyless.access.proofs", status="pending", stage="data-plane") >= 1
        services.arm.clock.advance(301)
        for _ in range(3):  # the first proves, the next two reuse it
            host.http("onboardings_verification", "GET", "/", route_params={"id": created["id"]})
        points = otel.points()
        assert value(points, "keyless.access.proofs", status="pass", stage="data-plane") == 1
        assert value(points, "keyless.requests", client="openai") == 1
        proofs = [s for s in otel.spans() if s.name == "keyless.access"]
        assert [s.attributes["keyless.access.status"] for s in proofs][-1] == "pass"
        beneath = [s for s in otel.spans() if s.parent and s.parent.span_id == proofs[-1].context.span_id]
        (read,) = [s for s in beneath if "openai/models" in str(s.attributes.get("url.full", ""))]
        assert read.attributes["http.response.status_code"] == 200
    finally:
        telemetry.reset()
