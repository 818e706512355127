"""OpenTelemetry: one onboarding is one trace (request → queue → worker → steps → ARM and Kubernetes calls),
its metrics are recorded, and no attribute carries a secret. The SDK's in-memory span exporter and metric
reader stand in for Azure Monitor, through the adapter's hook (shared.adapters.telemetry.use)."""

from __future__ import annotations

import base64
import collections.abc
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from shared.adapters import telemetry
from shared.adapters.pacing import Pacer, Rate
from shared.app.messages import BadMessage, message, parse_message
from tests.conftest import ACCOUNT_ID, CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT

ROOT = Path(__file__).resolve().parents[2]
REQUEST = {
    "cluster": CLUSTER_ID,
    "namespace": NAMESPACE,
    "serviceAccount": SERVICE_ACCOUNT,
    "openAIAccount": ACCOUNT_ID,
}
SECRETS = ("Bearer ", "AccountKey", "SharedAccessSignature", "eyJ")  # eyJ: any JWT's first characters


class Otel:
    """The SDK's in-memory exporter and reader; one pair per process (OpenTelemetry lets the global tracer
    provider, which azure-core's spans use, be set once)."""

    _made: Otel | None = None

    def __init__(self) -> None:
        from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
        from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        delta = {Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA}
        self.reader = InMemoryMetricReader(preferred_temporality=delta)  # each read: what happened since the last
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    @classmethod
    def get(cls) -> Otel:
        if cls._made is None:
            cls._made = cls()
        return cls._made

    def spans(self) -> list[Any]:
        return list(self.exporter.get_finished_spans())

    def points(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        """metric name -> [(attributes, point)] since the last call."""
        out: dict[str, list[tuple[dict[str, Any], Any]]] = collections.defaultdict(list)
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        out[metric.name].append((dict(point.attributes), point))
        return out


@pytest.fixture
def otel() -> collections.abc.Iterator[Otel]:
    o = Otel.get()
    telemetry.use(o.tracer_provider, o.meter_provider)
    o.exporter.clear()
    o.points()  # forget what earlier tests measured
    yield o
    telemetry.reset()
    o.exporter.clear()


def value(points: dict[str, list[tuple[dict[str, Any], Any]]], name: str, **attributes: Any) -> float:
    """The sum (counters), count (histograms) or last value (gauges) of the points with these attributes."""
    total = 0.0
    for attrs, point in points.get(name, []):
        if all(attrs.get(k) == v for k, v in attributes.items()):
            total += point.count if hasattr(point, "count") else point.value
    return total


def attribute_values(span: Any) -> list[str]:
    values = [str(v) for v in span.attributes.values()]
    values += [str(v) for event in span.events for v in (event.attributes or {}).values()]
    values += [str(v) for link in span.links for v in (link.attributes or {}).values()]
    return values + [span.name, str(span.status.description or "")]


def ancestors(span: Any, by_id: dict[int, Any]) -> list[Any]:
    out, parent = [], span.parent
    while parent is not None and parent.span_id in by_id:
        out.append(by_id[parent.span_id])
        parent = by_id[parent.span_id].parent
    return out


def http_url(span: Any) -> str:
    return str(span.attributes.get("url.full") or span.attributes.get("http.url") or "")


# --- one onboarding, one trace --------------------------------------------------------------------------


def test_an_api_onboarding_is_one_trace_from_request_to_arm_calls(host, arm, kube, otel, storage, identity_endpoint):
    status, body, _ = host.http("onboardings_create", "POST", "/api/onboardings", REQUEST)
    assert status == 202, body
    (request,) = [s for s in otel.spans() if s.name == "POST /api/onboardings"]
    trace_id = request.context.trace_id
    assert request.parent is None and request.kind.name == "SERVER"
    assert request.attributes["http.response.status_code"] == 202
    assert request.attributes["keyless.onboarding.id"] == body["id"]

    (queued,) = [json.loads(base64.b64decode(m)) for m in host.raw_messages()]
    assert queued["traceparent"][:-3] == f"00-{trace_id:032x}-{request.context.span_id:016x}", queued
    assert int(queued["traceparent"][-2:], 16) & 1, "sampled"

    host.drain()
    spans = otel.spans()
    by_id = {s.context.span_id: s for s in spans}
    ours = [s for s in spans if s.instrumentation_scope.name == telemetry.SCOPE]
    assert {s.context.trace_id for s in ours} == {trace_id}, "every Keyless span of the onboarding in one trace"

    workers = [s for s in ours if s.name == "process keyless-work"]
    assert workers and all(s.kind.name == "CONSUMER" for s in workers)
    first = min(workers, key=lambda s: s.start_time)
    assert first.parent.span_id == request.context.span_id, "the worker continues the queued message's context"
    assert first.attributes["keyless.onboarding.id"] == body["id"]
    assert first.attributes["keyless.message.kind"] == "binding"

    (run,) = [s for s in ours if s.name == "keyless.reconcile"]
    assert run.parent.span_id == first.context.span_id
    assert run.attributes["keyless.cluster.id"] == CLUSTER_ID
    assert run.attributes["keyless.run.outcome"] == "ready"
    steps = {s.attributes["keyless.step"]: s for s in ours if s.name.startswith("step ")}
    assert set(steps) >= {"cluster", "account", "namespace", "identity", "federated-credential",
                          "role-assignment", "service-account", "configmap"}  # fmt: skip
    assert all(s.parent.span_id == run.context.span_id for s in steps.values())
    assert steps["identity"].attributes["keyless.step.outcome"] == "created"
    assert steps["cluster"].attributes["keyless.step.outcome"] == "unchanged"

    # The ARM calls beneath their steps (azure-core's spans), Kubernetes beneath its.
    arm_calls = [s for s in spans if s.kind.name == "CLIENT" and http_url(s).startswith(arm.url)]
    assert arm_calls and {s.context.trace_id for s in arm_calls} == {trace_id}
    identity_puts = [
        s for s in arm_calls if "/userAssignedIdentities/" in http_url(s) and steps["identity"] in ancestors(s, by_id)
    ]
    assert identity_puts, "the identity's ARM requests are under `step identity`"
    kube_calls = [s for s in ours if s.name == "kubernetes applying the service account"]
    assert kube_calls and steps["service-account"] in ancestors(kube_calls[0], by_id)

    # Ids and names only: no token, key or connection string anywhere in any span.
    secrets = [*SECRETS, storage, identity_endpoint.header_secret, *identity_endpoint.tokens]
    for span in spans:
        for text in attribute_values(span):
            assert not any(secret in text for secret in secrets if secret), (span.name, text[:80])


def test_an_onboarding_is_measured(host, arm, kube, otel):
    status, body, _ = host.http("onboardings_create", "POST", "/api/onboardings", REQUEST)
    assert status == 202
    host.drain()
    _, got, _ = host.http("onboardings_get", "GET", "/", route_params={"id": body["id"]})
    points = otel.points()
    assert value(points, "keyless.runs", outcome=got["status"]) == 1, points.get("keyless.runs")
    assert value(points, "keyless.requests", client="arm", retry=False) >= 5
    assert value(points, "keyless.requests", client="kube") >= 2
    assert value(points, "keyless.requests", client="table") >= 1
    assert value(points, "keyless.queue.age", queue="keyless-work", kind="binding") >= 1
    assert value(points, "keyless.requests.throttled") == 0

    host.timer()  # the drift sweep counts the bindings by status and finds the one that just changed
    points = otel.points()
    assert value(points, "keyless.bindings", status=got["status"]) == 1
    assert value(points, "keyless.bindings", status="failed") == 0, "a status no binding has is measured as 0"
    assert value(points, "keyless.sweep.suspects", stage="plan") == 1
    assert value(points, "keyless.sweep.duration") == 0, "not finished until its shard is"
    host.drain()
    later = otel.points()
    assert value(later, "keyless.sweep.duration") == 1
    assert "keyless.bindings" not in later, "a count is reported once, never again as if still true"
    (shard,) = [s for s in otel.spans() if s.attributes.get("keyless.message.kind") == "sweep"]
    (tick,) = [s for s in otel.spans() if s.name == "drift_sweep"]
    assert shard.context.trace_id == tick.context.trace_id, "a sweep's shards are in the tick's trace"


def test_429s_are_measured_and_a_throttled_run_keeps_the_status(host, arm, kube, otel):
    arm.inject_fault("PUT", "/userAssignedIdentities/", 429, headers={"Retry-After": "0"})  # retried at once
    kube.inject_fault("PATCH", "/serviceaccounts/", 429)  # never retried inside the call: the run is throttled
    status, body, _ = host.http("onboardings_create", "POST", "/api/onboardings", REQUEST)
    assert status == 202
    host.drain()  # the run is throttled; its next run waits for the retry delay (invisible until then)
    points = otel.points()
    assert value(points, "keyless.requests.throttled", client="arm") == 1
    assert value(points, "keyless.requests", client="arm", retry=True) == 1
    assert value(points, "keyless.requests.throttled", client="kube") == 1
    assert value(points, "keyless.runs", outcome="throttled", reason="service-account") == 1
    (step,) = [s for s in otel.spans() if s.attributes.get("keyless.step") == "service-account"]
    assert step.attributes["keyless.step.outcome"] == "not-yet"
    (call,) = [s for s in otel.spans() if s.name == "kubernetes applying the service account"]
    assert call.status.status_code.name == "ERROR" and call.attributes["error.type"] == "Throttled"


def test_a_poisoned_onboarding_stays_in_its_trace_and_is_measured(host, arm, kube, otel, monkeypatch):
    status, body, _ = host.http("onboardings_create", "POST", "/api/onboardings", REQUEST)
    (request,) = [s for s in otel.spans() if s.name == "POST /api/onboardings"]
    (raw,) = host.raw_messages()
    host.queue.clear_messages()
    host.poison.send_message(raw)  # as the host moves a message that failed every delivery
    assert host.drain_poison() == 1
    (poison,) = [s for s in otel.spans() if s.name == "process keyless-work-poison"]
    assert poison.context.trace_id == request.context.trace_id
    assert value(otel.points(), "keyless.runs", outcome="failed", reason="gave-up") == 1


def test_pacing_waits_are_read_from_the_pacer():
    """keyless.pacing.wait adds what the pacer's running total grew by since it was last read."""
    o = Otel.get()
    telemetry.use(o.tracer_provider, o.meter_provider)
    o.points()
    try:
        now = [0.0]
        pacer = Pacer({"arm-reads": Rate(2, 1)}, headroom=1.0, clock=lambda: now[0], sleep=lambda s: None)
        for _ in range(3):
            pacer.acquire([("arm-reads", "sub")])
        assert pacer.waited_seconds > 0
        telemetry.pacing_waited(pacer)
        telemetry.pacing_waited(pacer)  # nothing more waited: nothing more added
        assert value(o.points(), "keyless.pacing.wait") == pytest.approx(pacer.waited_seconds)
    finally:
        telemetry.reset()


# --- the queue message carries the trace ---------------------------------------------------------------

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_message_keeps_its_traceparent_and_works_without_one():
    body = json.dumps({"kind": "binding", "key": "k" * 32, "reason": "r", "traceparent": TRACEPARENT})
    assert parse_message(body)["traceparent"] == TRACEPARENT
    old = json.dumps({"kind": "binding", "key": "k" * 32, "reason": "r"})
    assert "traceparent" not in parse_message(old)
    shard = {"kind": "sweep", "sweep": "0123456789abcdef", "cluster": "c"}
    bad = json.dumps({**shard, "traceparent": "00-zz-1"})
    assert parse_message(bad) == shard, "a malformed one is dropped"
    with pytest.raises(BadMessage):
        parse_message(json.dumps({"kind": "binding", "traceparent": TRACEPARENT}))


def test_a_message_carries_the_current_span_only_when_telemetry_is_on(otel):
    from opentelemetry import trace

    with trace.get_tracer("test").start_as_current_span("queueing") as span:
        sent = json.loads(message("binding", key="k", reason="r"))
    ctx = span.get_span_context()
    assert sent["traceparent"][:-3] == f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}"
    telemetry.reset()
    assert "traceparent" not in json.loads(message("binding", key="k", reason="r"))


# --- set up on first use, never at import ---------------------------------------------------------------

CONNECTION = "InstrumentationKey=00000000-0000-4000-8000-000000000000;IngestionEndpoint=https://127.0.0.1:9/"


def run_python(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("KEYLESS_", "AzureWebJobs", "APPLICATIONINS"))}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**environ, **env}, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_importing_and_indexing_the_app_does_not_configure_telemetry():
    code = (
        "import socket, sys\n"
        "def refuse(*a, **k): raise RuntimeError('network touched at import')\n"
        "socket.socket.connect = refuse\n"
        "import function_app\n"
        "function_app.app.get_functions()\n"
        "from shared.adapters import telemetry\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules if m.startswith(('opentelemetry', 'azure.monitor'))})\n"
        "print(telemetry._decided, loaded)\n"
    )
    assert run_python(code, APPLICATIONINSIGHTS_CONNECTION_STRING=CONNECTION) == "False []"


def test_first_use_configures_azure_monitor_with_the_entra_credential(identity_endpoint):
    """The distro's entry point is replaced by a recorder (it would start exporters); the rest is real: the
    credential it is given gets its token from the managed identity endpoint as the user-assigned identity."""
    client_id = "11111111-2222-3333-4444-555555555555"
    code = (
        "import azure.monitor.opentelemetry as distro\n"
        "seen = {}\n"
        "distro.configure_azure_monitor = lambda **kw: seen.update(kw)\n"
        "from azure.core.settings import settings\n"
        "from shared.adapters import telemetry\n"
        "before = settings.tracing_implementation()\n"
        "with telemetry.span('first'):\n"
        "    pass\n"
        "seen['credential'].get_token('https://monitor.azure.com/.default')\n"
        "print(telemetry.active(), seen['connection_string'] == telemetry.os.environ[telemetry.CONNECTION_STRING],\n"
        "      seen['logger_name'], before, settings.tracing_implementation().__name__)\n"
    )
    out = run_python(
        code,
        APPLICATIONINSIGHTS_CONNECTION_STRING=CONNECTION,
        APPLICATIONINSIGHTS_AUTHENTICATION_STRING=f"ClientId={client_id};Authorization=AAD",
        **identity_endpoint.env(),
    )
    assert out == "True True keyless None OpenTelemetrySpan"
    assert identity_endpoint.issued[-1] == ("https://monitor.azure.com", client_id)
    assert run_python("from shared.adapters import telemetry; print(telemetry.active())") == "False"


@pytest.mark.parametrize(
    "setting, expected",
    [
        (None, (False, None)),
        ("", (False, None)),
        ("Authorization=AAD", (True, None)),
        ("ClientId=abc;Authorization=AAD", (True, "abc")),
        (" authorization = aad ; clientid = abc ", (True, "abc")),
        ("ClientId=abc", (False, "abc")),
    ],
)
def test_the_authentication_string_is_read_as_the_host_reads_it(setting, expected):
    assert telemetry.entra_client(setting) == expected


@pytest.mark.parametrize("client", ["queue", "table"])
def test_storage_throttling_is_measured(otel, client):
    """Azure Storage throttles with 503 ServerBusy (not 429): the queue's and the tables' answers are
    counted as throttled, each attempt as a request. A storage stand-in answers the first request so,
    then as the service would."""
    from werkzeug.serving import make_server
    from werkzeug.wrappers import Request, Response

    from shared.adapters.tables import table_client
    from shared.adapters.workqueue import WorkQueue
    from tests.azurite import ACCOUNT, DEV_KEY

    answers: list[int] = []

    @Request.application
    def storage(request: Request) -> Response:
        if not answers:
            answers.append(503)
            body = '<?xml version="1.0" encoding="utf-8"?><Error><Code>ServerBusy</Code><Message>busy</Message></Error>'
            return Response(body, 503, {"x-ms-error-code": "ServerBusy", "Content-Type": "application/xml"})
        answers.append(201 if request.method in ("PUT", "POST") else 200)
        if client == "table":
            return Response('{"TableName":"t"}', answers[-1], {"Content-Type": "application/json;odata=nometadata"})
        return Response("", answers[-1], {"x-ms-approximate-messages-count": "0"})

    server = make_server("127.0.0.1", 0, storage, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}/{ACCOUNT}"
        conn = f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={DEV_KEY};"
        if client == "queue":
            WorkQueue(connection_string=conn + f"QueueEndpoint={base}").ping()
        else:
            table_client("t", connection_string=conn + f"TableEndpoint={base}").create_table()
    finally:
        server.shutdown()
        thread.join(10)
    assert answers[0] == 503 and len(answers) >= 2, answers
    points = otel.points()
    assert value(points, "keyless.requests.throttled", client=client) == 1
    assert value(points, "keyless.requests", client=client) == len(answers), "every attempt, the retry too"
