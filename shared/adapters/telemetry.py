"""OpenTelemetry: Keyless's traces and metrics, and the Azure SDK's spans beneath them.

Set up on first use, never at import (the host imports the app to index its functions): the first
span or measurement reads APPLICATIONINSIGHTS_CONNECTION_STRING once. Unset, telemetry stays off and
costs one flag check per call (opentelemetry is not even imported). Set, the Azure Monitor
OpenTelemetry distro is configured (its import takes about a second: on the first invocation, not at
cold start) with the Entra credential APPLICATIONINSIGHTS_AUTHENTICATION_STRING names
(`Authorization=AAD`, and `ClientId=<id>` for a user-assigned identity), Keyless's own loggers
(`keyless.*`) exported with their trace ids, and azure-core's OpenTelemetry tracing on, so every ARM,
Storage and Event Grid call is a span under the step that made it. `use()` sets the providers
instead (tests: the SDK's in-memory exporter and reader; or any other exporter).

The only module that imports opentelemetry or azure.monitor (import-linter checks the layers above it).
Attributes carry ids, names and counts only: never a token, key, connection string or error text.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping
from typing import Any

log = logging.getLogger("keyless.telemetry")

CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
AUTHENTICATION_STRING = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"
SCOPE = "keyless"
"""The instrumentation scope (tracer and meter name); also the logger exported (`keyless.*`)."""

TRACEPARENT = re.compile(r"^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")
"""A W3C traceparent, version 00, with a non-zero trace and span id."""

Attributes = Mapping[str, str | bool | int | float | None]

# name -> (instrument, unit, description). The workbook (infra/workbook.json) reads these names.
METRICS: dict[str, tuple[str, str, str]] = {
    "keyless.bindings": ("gauge", "{binding}", "Live bindings by status, as the last drift sweep counted them"),
    "keyless.runs": ("counter", "{run}", "Worker runs of a binding by outcome, and the reason a run stopped"),
    "keyless.requests": (
        "counter",
        "{request}",
        "HTTP attempts by client (arm, kube, table, queue, eventgrid, openai)",
    ),
    "keyless.requests.throttled": ("counter", "{request}", "429 answers by client"),
    "keyless.pacing.wait": ("counter", "s", "Seconds ARM requests waited for their slot under Azure's limits"),
    "keyless.queue.age": ("histogram", "s", "Age of a work-queue message when the worker took it"),
    "keyless.sweep.duration": ("histogram", "s", "Drift sweep, from its (re)start to its last shard"),
    "keyless.sweep.suspects": ("counter", "{binding}", "Bindings a drift sweep found may have drifted"),
    "keyless.access.proofs": ("counter", "{proof}", "Proofs of access (KEYLESS_PROVE_ACCESS) by status and stage"),
}

_MAX_TEXT = 256  # an attribute value's length at most (ids fit; nothing long is meant to be here)


class Span:
    """What callers may do with a span: add attributes (ids, names, counts) and mark it failed."""

    def set(self, key: str, value: str | bool | int | float | None) -> None:
        return None

    def fail(self, error_type: str) -> None:
        return None


_NO_SPAN = Span()


class _OtelSpan(Span):
    def __init__(self, span: Any) -> None:
        self._span = span

    def set(self, key: str, value: str | bool | int | float | None) -> None:
        if value is not None:
            self._span.set_attribute(key, _value(value))

    def fail(self, error_type: str) -> None:
        from opentelemetry.trace import StatusCode

        self._span.set_attribute("error.type", error_type)
        self._span.set_status(StatusCode.ERROR)


class _Telemetry:
    """The tracer, the meter and its instruments (made on first use of each)."""

    def __init__(self, tracer: Any, meter: Any) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.tracer, self.meter = tracer, meter
        self.propagator = TraceContextTextMapPropagator()
        self._instruments: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._pacing_seen: dict[int, float] = {}  # id(pacer) -> waited_seconds already counted
        self._gauges: dict[str, dict[tuple[tuple[str, Any], ...], float]] = {}  # not yet reported

    def instrument(self, name: str) -> Any:
        with self._lock:
            found = self._instruments.get(name)
            if found is None:
                kind, unit, description = METRICS[name]
                if kind == "gauge":
                    callback = functools.partial(self._observe, name)
                    found = self.meter.create_observable_gauge(
                        name, callbacks=[callback], unit=unit, description=description
                    )
                else:
                    make = self.meter.create_counter if kind == "counter" else self.meter.create_histogram
                    found = make(name, unit=unit, description=description)
                self._instruments[name] = found
            return found

    def set_gauge(self, name: str, value: float, attributes: dict[str, Any]) -> None:
        """A gauge's value, reported at the next collection and then forgotten: an instance reports what it
        measured once, never a stale value again and again (a synchronous gauge would, with the cumulative
        temporality Azure Monitor's exporter gives it)."""
        self.instrument(name)
        with self._lock:
            self._gauges.setdefault(name, {})[tuple(sorted(attributes.items()))] = value

    def _observe(self, name: str, options: Any) -> list[Any]:
        from opentelemetry.metrics import Observation

        with self._lock:
            pending = self._gauges.pop(name, {})
        return [Observation(value, dict(attributes)) for attributes, value in pending.items()]

    def pacing_delta(self, pacer: Any) -> float:
        waited = float(getattr(pacer, "waited_seconds", 0.0) or 0.0)
        with self._lock:
            before = self._pacing_seen.get(id(pacer), 0.0)
            self._pacing_seen[id(pacer)] = waited
        return max(waited - before, 0.0)


_lock = threading.Lock()
_decided = False
_on: _Telemetry | None = None


def _current() -> _Telemetry | None:
    """The telemetry in force: decided once per process, on first use."""
    if _decided:
        return _on
    with _lock:
        if not _decided:
            _decide()
    return _on


def _decide() -> None:
    global _decided, _on
    connection = (os.environ.get(CONNECTION_STRING) or "").strip()
    if connection:
        try:
            _on = _azure_monitor(connection, os.environ.get(AUTHENTICATION_STRING))
        except Exception as exc:  # noqa: BLE001 - telemetry never stops the app
            log.warning("telemetry is off: Azure Monitor could not be configured (%s)", type(exc).__name__)
            _on = None
    _decided = True


def entra_client(authentication: str | None) -> tuple[bool, str | None]:
    """(Entra auth?, user-assigned client id or None) from an APPLICATIONINSIGHTS_AUTHENTICATION_STRING
    such as `Authorization=AAD;ClientId=<id>` (keys in any case and order)."""
    parts: dict[str, str] = {}
    for item in (authentication or "").split(";"):
        key, sep, value = item.partition("=")
        if sep:
            parts[key.strip().lower()] = value.strip()
    return parts.get("authorization", "").upper() == "AAD", parts.get("clientid") or None


def credential_for(authentication: str | None) -> Any:
    """The managed identity credential the exporters authenticate with, as the Functions host reads
    the setting (None: the connection string alone, no Entra auth)."""
    aad, client_id = entra_client(authentication)
    if not aad:
        return None
    from azure.identity import ManagedIdentityCredential

    return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()


def _azure_monitor(connection: str, authentication: str | None) -> _Telemetry:
    from azure.monitor.opentelemetry import configure_azure_monitor
    from opentelemetry import metrics, trace

    configure_azure_monitor(
        connection_string=connection,
        credential=credential_for(authentication),
        logger_name=SCOPE,
        # Web frameworks the app does not use; azure_sdk, requests, urllib and urllib3 (the
        # Kubernetes client's) stay on.
        instrumentation_options={name: {"enabled": False} for name in ("django", "fastapi", "flask", "psycopg2")},
    )
    _trace_azure_sdk(True)
    log.info("telemetry on: traces and metrics to Azure Monitor")
    return _Telemetry(trace.get_tracer(SCOPE), metrics.get_meter(SCOPE))


def _trace_azure_sdk(on: bool) -> None:
    """azure-core's OpenTelemetry tracing (azure-core-tracing-opentelemetry): a span per SDK call and
    per HTTP attempt, under the current span, on the global tracer provider."""
    from azure.core.settings import settings

    if on:
        settings.tracing_implementation = "opentelemetry"
    else:
        settings.tracing_implementation.unset_value()


def use(tracer_provider: Any, meter_provider: Any) -> None:
    """Send Keyless's telemetry to these providers instead of deciding from the environment (the hook
    tests configure the SDK's in-memory exporter through). The tracer provider also becomes the global
    one if none was set, so that azure-core's spans reach it (OpenTelemetry allows that once a process)."""
    global _decided, _on
    from opentelemetry import trace

    if tracer_provider is not trace.get_tracer_provider():
        trace.set_tracer_provider(tracer_provider)  # ignored (with a warning) when one was set already
    with _lock:
        _on = _Telemetry(tracer_provider.get_tracer(SCOPE), meter_provider.get_meter(SCOPE))
        _decided = True
    _trace_azure_sdk(True)


def reset() -> None:
    """Forget the decision (tests): the next use decides again from the environment."""
    global _decided, _on
    with _lock:
        was_on, _decided, _on = _on is not None, False, None
    if was_on:
        _trace_azure_sdk(False)


def active() -> bool:
    """Whether telemetry is on (decides on first call)."""
    return _current() is not None


def _value(value: str | bool | int | float) -> str | bool | int | float:
    if isinstance(value, str):
        return value[:_MAX_TEXT]
    return value


def _clean(attributes: Attributes | None) -> dict[str, str | bool | int | float]:
    return {k: _value(v) for k, v in (attributes or {}).items() if v is not None}


_KINDS = ("internal", "server", "client", "producer", "consumer")


@contextlib.contextmanager
def span(
    name: str,
    attributes: Attributes | None = None,
    *,
    kind: str = "internal",
    traceparent: str | None = None,
    expected: tuple[type[BaseException], ...] = (),
) -> Iterator[Span]:
    """A span around the block, current inside it. `traceparent`: continue that trace (a queued
    message's) instead of the current one, which is then linked. An exception leaving the block marks
    the span failed with its type (never its text), unless it is one of `expected`."""
    t = _current()
    if t is None:
        yield _NO_SPAN
        return
    from opentelemetry import trace

    if kind not in _KINDS:
        raise ValueError(f"span kind {kind!r}")
    parent, links = None, None
    if traceparent and TRACEPARENT.fullmatch(traceparent):
        parent = t.propagator.extract({"traceparent": traceparent})
        here = trace.get_current_span().get_span_context()
        links = [trace.Link(here)] if here.is_valid else None
    with t.tracer.start_as_current_span(
        name,
        context=parent,
        kind=getattr(trace.SpanKind, kind.upper()),
        attributes=_clean(attributes),
        links=links,
        record_exception=False,  # an exception's text may name more than ids: its type only, below
        set_status_on_exception=False,
    ) as otel_span:
        handle = _OtelSpan(otel_span)
        try:
            yield handle
        except expected:
            raise
        except BaseException as exc:
            handle.fail(type(exc).__name__)
            raise


def annotate(**attributes: str | bool | int | float | None) -> None:
    """Add attributes to the current span (nothing when telemetry is off)."""
    if _current() is None:
        return
    from opentelemetry import trace

    current = trace.get_current_span()
    for key, value in attributes.items():
        if value is not None:
            current.set_attribute(key, _value(value))


def traceparent() -> str | None:
    """The current span as a W3C traceparent (to carry in a queued message); None when telemetry is off
    or no span is current."""
    t = _current()
    if t is None:
        return None
    carrier: dict[str, str] = {}
    t.propagator.inject(carrier)
    return carrier.get("traceparent")


def measure(name: str, value: float = 1, **attributes: str | bool | int | float | None) -> None:
    """One measurement of a METRICS instrument: added to a counter, recorded in a histogram, set on a gauge
    (reported once, at the next collection)."""
    t = _current()
    if t is None:
        return
    kind = METRICS[name][0]
    clean = _clean(attributes)
    if kind == "gauge":
        t.set_gauge(name, value, clean)
    elif kind == "counter":
        t.instrument(name).add(value, clean)
    else:
        t.instrument(name).record(value, clean)


def pacing_waited(pacer: Any) -> None:
    """Add to keyless.pacing.wait what `pacer` (shared.adapters.pacing) waited since the last call:
    it keeps a running total (`waited_seconds`); this reads it from outside."""
    t = _current()
    if t is None or pacer is None:
        return
    waited = t.pacing_delta(pacer)
    if waited > 0:
        measure("keyless.pacing.wait", waited)
