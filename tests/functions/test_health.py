"""Keyless's own problems are not the binding's fault, and every error names its fix (issue 20 §4).

A new user runs the app without `az login`: before, the first onboarding ended `failed` for good with
"ARM refused the request (0 no code)", and /api/health said "healthy".
"""

from __future__ import annotations

import logging
import socket
import time

import azure.functions as func

from shared.adapters import credentials
from shared.app import composition
from tests.conftest import ACCOUNT_ID, CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT
from tests.functions.conftest import app_functions

REQUEST = {
    "cluster": CLUSTER_ID,
    "namespace": NAMESPACE,
    "serviceAccount": SERVICE_ACCOUNT,
    "openAIAccount": ACCOUNT_ID,
}


def closed_port() -> int:
    """A localhost port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def without_credential(monkeypatch) -> None:
    """The identity endpoint refuses connections and nothing else in DefaultAzureCredential's chain is set
    up (app_env removes the AZURE_* variables; no Azure CLI on the test machine)."""
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{closed_port()}/msi/token")
    monkeypatch.setenv("KEYLESS_RETRY_DELAY_SCALE", "0.001")
    monkeypatch.setenv("KEYLESS_ARM_PACING_SCALE", "0")
    composition.reset()


def health() -> tuple[int, dict]:
    import json

    resp = app_functions()["health"](func.HttpRequest(method="GET", url="/api/health", body=b""))
    return resp.status_code, json.loads(resp.get_body())


def test_without_an_azure_credential_the_binding_waits_and_its_reason_names_az_login(
    host, arm, kube, monkeypatch, caplog
):
    without_credential(monkeypatch)
    credentials._reported.clear()  # another test of this process may have said it already
    caplog.set_level(logging.WARNING)
    status, created, _ = host.http("onboardings_create", "POST", "/api/onboardings", REQUEST)
    assert status == 202, created
    host.drain(deadline_seconds=120)
    record = composition.service().ledger.get(created["id"])
    assert record.status != "failed", record.as_api()
    assert "az login" in record.reason and "AZURE_CLIENT_ID" in record.reason, record.reason
    assert "refused the request" not in record.reason
    deadline = time.monotonic() + 10  # queued with a delay (60 s times KEYLESS_RETRY_DELAY_SCALE)
    while not host.raw_messages() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert host.raw_messages(), "the binding is queued again for later"
    assert arm.log.writes() == []

    said = [r for r in caplog.records if r.name == "keyless.credentials"]
    assert len(said) == 1 and said[0].levelno >= logging.WARNING, [r.getMessage() for r in said]
    assert "ManagedIdentityCredential" in said[0].getMessage(), "what DefaultAzureCredential tried is listed"
    chain = [r for r in caplog.records if r.name.startswith("azure.identity") and r.levelno >= logging.WARNING]
    assert len(chain) <= 1, "azure-identity's own warning is not repeated per request"


def test_health_names_the_missing_credential(host, monkeypatch):
    without_credential(monkeypatch)
    status, body = health()
    assert status == 503 and body["status"] == "unhealthy", body
    failing = {c["name"]: c["message"] for c in body["checks"] if c["status"] == "fail"}
    assert set(failing) == {"azure-credential"}, body
    assert "az login" in failing["azure-credential"]
    assert "127.0.0.1" not in str(body), "no configuration value is shown"


def test_health_checks_are_all_named_when_healthy(host):
    status, body = health()
    assert status == 200 and body["status"] == "healthy", body
    assert {c["name"]: c["status"] for c in body["checks"]} == {
        "settings": "pass",
        "storage-table": "pass",
        "storage-queue": "pass",
        "azure-credential": "pass",
    }


def test_health_names_a_bad_setting_without_its_value(host, monkeypatch):
    monkeypatch.setenv("AzureWebJobsStorage", "garbage-with-AccountKey=c2VjcmV0")
    composition.reset()
    status, body = health()
    assert status == 503, body
    failing = {c["name"]: c["message"] for c in body["checks"] if c["status"] == "fail"}
    assert "settings" in failing and failing["settings"].startswith("AzureWebJobsStorage"), body
    assert "c2VjcmV0" not in str(body) and "garbage" not in str(body)


def storage_that_does_not_answer(monkeypatch) -> int:
    """AzureWebJobsStorage naming a port nothing listens on (Azurite stopped); the next call builds anew."""
    port = closed_port()
    monkeypatch.setenv(
        "AzureWebJobsStorage",
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5a2V5a2V5a2V5;"
        f"QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1;TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1",
    )
    composition.reset()
    return port


def test_health_names_storage_that_does_not_answer(host, monkeypatch):
    port = storage_that_does_not_answer(monkeypatch)
    status, body = health()
    assert status == 503, body
    failing = {c["name"]: c["message"] for c in body["checks"] if c["status"] == "fail"}
    assert {"storage-table", "storage-queue"} <= set(failing), body
    assert all(m.startswith("AzureWebJobsStorage") for m in failing.values() if m), failing
    assert "a2V5" not in str(body) and str(port) not in str(body)


def test_the_api_names_storage_that_stopped_answering_not_a_raw_sdk_error(host, monkeypatch):
    """Azurite stopped (or the account's network rules changed) while the app runs: every API call answers 503
    with the setting's name and its fix, never a host's bare 500 with a raw SDK exception behind it."""
    port = storage_that_does_not_answer(monkeypatch)
    calls = (
        ("onboardings_create", "POST", "/api/onboardings", REQUEST, {}),
        ("onboardings_list", "GET", "/api/onboardings", None, {}),
        ("onboardings_get", "GET", "/api/onboardings/x", None, {"id": "0" * 32}),
        ("sweeps_latest", "GET", "/api/sweeps/latest", None, {}),
    )
    for name, method, url, body, route in calls:
        status, answer, _ = host.http(name, method, url, body, route_params=route)
        assert status == 503, (name, answer)
        assert answer["error"]["code"] == "StorageUnavailable", (name, answer)
        message = answer["error"]["message"]
        assert message.startswith("AzureWebJobsStorage: ") and "Azurite" in message, (name, message)
        assert "a2V5" not in message and str(port) not in message, (name, message)


def test_the_triggers_log_storage_that_stopped_answering_by_its_setting_and_fix(host, monkeypatch, caplog):
    """The worker, the timer and the Event Grid trigger leave the error to the host (it retries), but log
    it first as the setting and its fix, not only as the SDK's ServiceRequestError."""
    import pytest
    from azure.functions.queue import QueueMessage
    from azure.functions.timer import TimerRequest

    port = storage_that_does_not_answer(monkeypatch)
    functions = app_functions()
    message = QueueMessage(id="m1", body=b'{"kind": "binding", "key": "' + b"0" * 32 + b'"}', dequeue_count=1)
    for name, call in (
        ("reconcile_worker", lambda: functions["reconcile_worker"](message)),
        ("drift_sweep", lambda: functions["drift_sweep"](TimerRequest(past_due=False))),
    ):
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="keyless.triggers"), pytest.raises(Exception) as raised:
            call()
        assert type(raised.value).__module__.startswith("azure"), (name, raised.value)
        logged = [r.getMessage() for r in caplog.records if r.name == "keyless.triggers"]
        assert len(logged) == 1 and "not done: AzureWebJobsStorage: " in logged[0] and "Azurite" in logged[0], logged
        assert "a2V5" not in logged[0] and str(port) not in logged[0]
