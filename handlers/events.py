"""Event Grid trigger: ARM resource events for clusters, OpenAI accounts and their deployments.

Fast: it only parses and enqueues. A malformed event is logged and dropped (a retry would
not fix it); a storage failure raises, so Event Grid redelivers.
"""

from __future__ import annotations

import logging
from typing import Any

import azure.functions as func

from shared.app import composition, event_intake, observability
from shared.domain.resource_events import MalformedEvent, parse_event

bp = func.Blueprint()
log = logging.getLogger("keyless.events")


def event_as_dict(event: Any) -> dict[str, Any]:
    """The event as a dict: the worker hands us an EventGridEvent, or a CloudEvent for CloudEvents 1.0."""
    try:
        data = event.get_json()
    except (ValueError, TypeError):
        data = None
    if isinstance(event, func.CloudEvent):
        return {"id": event.id, "type": event.type, "subject": event.subject, "source": event.source, "data": data}
    return {"id": event.id, "eventType": event.event_type, "subject": event.subject, "topic": event.topic, "data": data}


def handle(raw: dict[str, Any]) -> str:
    """Parse and enqueue one event; returns what was done (for logs and tests)."""
    try:
        parsed = parse_event(raw)
    except MalformedEvent as exc:
        log.warning(
            "dropped malformed event id=%r type=%r: %s",
            str(raw.get("id"))[:100],
            str(raw.get("eventType", raw.get("type")))[:200],
            exc.reason,
        )
        return "dropped"
    if parsed is None:
        log.debug("ignored event id=%r type=%r", raw.get("id"), raw.get("eventType", raw.get("type")))
        return "ignored"
    event_intake.handle_event(composition.service(), parsed)
    log.info("event %s: %s %s %s queued", parsed.id, parsed.kind, parsed.change, parsed.resource)
    return "queued"


@bp.function_name("resource_events")
@bp.event_grid_trigger(arg_name="event")
def resource_events(event: func.EventGridEvent) -> None:
    raw = event_as_dict(event)
    kind = str(raw.get("eventType", raw.get("type")))
    with observability.event("resource_events", str(raw.get("id")), kind, str(raw.get("subject"))) as span:
        span.set("keyless.event.action", handle(raw))
