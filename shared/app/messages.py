"""The work queue's messages: small JSON, one work item each.

    {"kind": "binding", "key": "<binding key>"}              reconcile or offboard one binding
    {"kind": "cluster", "id": "<cluster id>", "change": "write"|"delete"}   re-read the cluster
    {"kind": "account", "id": "<account id>", "change": "write"|"delete"}   re-read the account
    {"kind": "sweep", "sweep": "<run id>", "cluster": "<cluster id>"}        one shard of a drift sweep
    {"kind": "identity"|"role-assignment", "id": "<id>", "change": "delete"}  run the bindings that used it
    {"kind": "sweep-start", "reason": "<why>"}                               a sweep now, in place of a running one

A binding message may carry the versions of the cluster/account state it was made from
(`clusterVersion`, `accountVersion`), so that an instance whose read cache is older reads again.

Any message may carry `traceparent`, the W3C trace context of the span that queued it (when telemetry
is on, shared.adapters.telemetry), so that the worker's run continues that trace: one onboarding, one
trace. A message without one (queued before, or with telemetry off) works as ever; a malformed one is
dropped from the message, never a reason to drop the message.
"""

from __future__ import annotations

import json
import re
from typing import Any

from shared.adapters import telemetry

TRACEPARENT = "traceparent"
SWEEP_ID = re.compile(r"[0-9a-f]{16}")
"""A drift sweep's id as the sweep log makes them (16 hex digits)."""


class BadMessage(ValueError):
    """A queue message we cannot act on: logged and dropped, never retried."""


def message(kind: str, **fields: str) -> str:
    """A message's body; with the current trace context when telemetry is on."""
    trace = telemetry.traceparent()
    return json.dumps({"kind": kind, **fields, **({TRACEPARENT: trace} if trace else {})})


def peek(body: str) -> dict[str, str]:
    """What a message says about itself before it is parsed (its kind, its binding or resource, its
    trace context), for the worker's span: {} for a body that is not a JSON object, never an error."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    seen = {k: data[k] for k in ("kind", "key", "id", "sweep", "cluster", TRACEPARENT) if isinstance(data.get(k), str)}
    if TRACEPARENT in seen and not telemetry.TRACEPARENT.fullmatch(seen[TRACEPARENT]):
        del seen[TRACEPARENT]
    return seen


def parse_message(body: str) -> dict[str, str]:
    try:
        data = json.loads(body)
    except ValueError:
        raise BadMessage("message body is not JSON") from None
    kinds = ("binding", "cluster", "account", "sweep", "sweep-start", "identity", "role-assignment")
    if not isinstance(data, dict) or data.get("kind") not in kinds:
        raise BadMessage(f"message kind must be one of {', '.join(kinds)}")
    if not isinstance(data.get(TRACEPARENT), str) or not telemetry.TRACEPARENT.fullmatch(data[TRACEPARENT]):
        data.pop(TRACEPARENT, None)  # kept when well-formed (re-queued work stays in its trace)
    if data["kind"] == "sweep-start":
        return {"kind": "sweep-start", "reason": str(data.get("reason") or "")[:200]}
    if data["kind"] == "sweep":
        for field in ("sweep", "cluster"):
            if not isinstance(data.get(field), str) or not data[field]:
                raise BadMessage(f"message has no {field}")
        if not SWEEP_ID.fullmatch(data["sweep"]):
            raise BadMessage("message sweep is not a sweep's id")
        return {k: str(v) for k, v in data.items()}
    if not isinstance(data.get("sweep"), str) or not SWEEP_ID.fullmatch(data["sweep"]):
        data.pop("sweep", None)  # a binding's sweep only names a table partition when it is a sweep's id
    field = "key" if data["kind"] == "binding" else "id"
    if not isinstance(data.get(field), str) or not data[field]:
        raise BadMessage(f"message has no {field}")
    if data["kind"] != "binding" and data.get("change") not in ("write", "delete"):
        raise BadMessage("message change must be write or delete")
    return {k: str(v) for k, v in data.items()}
