"""What the triggers and use cases tell about themselves: spans and metrics, in the app's words.

A small port over shared.adapters.telemetry (OpenTelemetry, set up on first use; every call here is a
no-op while telemetry is off). One onboarding is one trace:

    POST /api/onboardings/... (server)  or  process resource_events (consumer)  or  drift_sweep
      └ process keyless-work (consumer: continues the queued message's `traceparent`)
          └ keyless.reconcile / keyless.offboard
              └ step <name> (its outcome: keyless.step.outcome)
                  └ the ARM calls (azure-core) and kubernetes <operation> spans

Attributes are ids, names, kinds and counts; never a reason text, a token or a key.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import typing
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from shared.adapters import telemetry
from shared.app import messages
from shared.domain.records import BindingRecord, RecordStatus

if TYPE_CHECKING:  # not loaded when the host imports the app to index it
    from shared.domain.results import ReconcileResult
    from shared.domain.sweep_plan import SweepRun

Span = telemetry.Span
log = logging.getLogger("keyless.triggers")

LIVE_STATUSES = tuple(s for s in typing.get_args(RecordStatus) if s not in ("offboarding", "removed"))
"""The statuses a live binding can have: each is measured by every sweep, 0 when none has it."""


@contextlib.contextmanager
def http_request(method: str, route: str) -> Iterator[Span]:
    """The span of one HTTP function call (`route`: its template, e.g. /api/onboardings/{id})."""
    name = f"{method.upper()} {route}"
    with telemetry.span(name, {"http.request.method": method.upper(), "http.route": route}, kind="server") as span:
        yield span


@contextlib.contextmanager
def event(function: str, event_id: str, event_type: str, subject: str) -> Iterator[Span]:
    """The span of one Event Grid event (its subject is a resource id)."""
    attributes = {
        "messaging.system": "eventgrid",
        "messaging.operation.type": "process",
        "messaging.destination.name": function,
        "messaging.message.id": event_id[:100],
        "keyless.event.type": event_type[:200],
        "keyless.event.subject": subject,
    }
    with (
        _storage_named(f"event {event_id[:100]}"),
        telemetry.span(f"process {function}", attributes, kind="consumer") as span,
    ):
        yield span


@contextlib.contextmanager
def timer(function: str) -> Iterator[Span]:
    """The span of one timer tick."""
    with _storage_named(function), telemetry.span(function, {"keyless.function": function}) as span:
        yield span


@contextlib.contextmanager
def queued_message(
    queue: str, body: str, message_id: str | None, inserted_at: dt.datetime | None, dequeue_count: int | None
) -> Iterator[Span]:
    """The span of one work-queue message, continuing the trace that queued it (its `traceparent`),
    and its age (keyless.queue.age: since it was inserted, a deliberate delay included)."""
    seen = messages.peek(body)
    kind = seen.get("kind", "unknown")
    if inserted_at is not None:
        when = inserted_at if inserted_at.tzinfo else inserted_at.replace(tzinfo=dt.UTC)
        age = (dt.datetime.now(dt.UTC) - when).total_seconds()
        telemetry.measure("keyless.queue.age", max(age, 0.0), queue=queue, kind=kind)
    attributes = {
        "messaging.operation.type": "process",
        "messaging.destination.name": queue,
        "messaging.message.id": message_id,
        "keyless.message.kind": kind,
        "keyless.message.dequeue_count": dequeue_count,
        "keyless.onboarding.id": seen.get("key"),
        "keyless.resource.id": seen.get("id"),
        "keyless.sweep.id": seen.get("sweep"),
        "keyless.cluster.id": seen.get("cluster"),
    }
    with (
        _storage_named(f"{queue} message {message_id}"),
        telemetry.span(
            f"process {queue}", attributes, kind="consumer", traceparent=seen.get(messages.TRACEPARENT)
        ) as span,
    ):
        yield span


@contextlib.contextmanager
def _storage_named(what: str) -> Iterator[None]:
    """An error a storage SDK raised leaves a trigger as it came (the host retries the message, the event or
    the tick), logged first as the setting and its fix: the host's own log shows only the SDK's exception."""
    try:
        yield
    except Exception as exc:
        from shared.adapters.tables import storage_failure

        storage = storage_failure(exc)
        if storage is not None:
            log.error("%s not done: %s", what, storage.reason)
        raise


def annotate(**attributes: str | bool | int | float | None) -> None:
    """Ids, names or counts on the current span."""
    telemetry.annotate(**attributes)


def run_ended(outcome: str, reason: str = "") -> None:
    """One worker run of a binding (keyless.runs): `outcome` its settled status, or throttled, error;
    `reason` where it stopped (a step, the door's refusal, an error type), low in cardinality."""
    telemetry.measure("keyless.runs", outcome=outcome, reason=reason or "none")
    telemetry.annotate(**{"keyless.run.outcome": outcome})


def stopped_at(result: ReconcileResult) -> str:
    """The step that stopped a run ('' when none did), a Deployment's step as `deployment`."""
    stopped = next((s.step for s in result.steps if s.outcome in ("failed", "not-yet")), "")
    return stopped.split("/", 1)[0]


def run_recorded(record: BindingRecord, result: ReconcileResult) -> None:
    """A run's recorded status, and the step that stopped it."""
    run_ended(record.status, stopped_at(result))


def bindings_counted(records: Iterable[BindingRecord]) -> None:
    """keyless.bindings: how many live bindings have each status (the sweep reads every one anyway)."""
    counts = dict.fromkeys(LIVE_STATUSES, 0)
    for record in records:
        counts[record.status] = counts.get(record.status, 0) + 1
    for status, count in counts.items():
        telemetry.measure("keyless.bindings", count, status=status)


def suspects_found(count: int, stage: str) -> None:
    """keyless.sweep.suspects: `stage` is `plan` (Azure's inventory, the records' own state) or `cluster`
    (a shard: the cluster's objects and the federated credentials it read)."""
    if count:
        telemetry.measure("keyless.sweep.suspects", count, stage=stage)


def sweep_finished(run: SweepRun) -> None:
    """keyless.sweep.duration of a finished sweep: from its (last re)start to its last shard."""
    if run.finished_at is None:
        return
    telemetry.measure("keyless.sweep.duration", max(run.finished_at - run.started_at, 0.0), resumed=run.resumes > 0)


def pacing_waited(engine: Any) -> None:
    """keyless.pacing.wait: what the engine's ARM pacer waited since the last call."""
    telemetry.pacing_waited(getattr(engine, "pacer", None))
