"""A strict local Event Grid custom topic (basic tier), for the real `azure-eventgrid` publisher client.

Why: Keyless announces each binding's settled outcome (ready, verified, not-ready, failed, removed)
on an Event Grid topic so that other systems can react. The topic is across a network boundary,
so tests publish with the real SDK over HTTPS to this emulator and read back what arrived.

As the service does (docs: "Publish events to Azure Event Grid custom topics", "Event Grid
security and authentication", CloudEvents 1.0 JSON format):

- `POST /api/events?api-version=2018-01-01`; any other path, method or api-version is refused.
- Entra ID only here: `Authorization: Bearer` with a token for `https://eventgrid.azure.net/.default`.
  Access keys (`aeg-sas-key`) and SAS tokens are refused: the topic is configured with
  `disableLocalAuth` (Keyless never holds keys), and the error says so.
- The topic has one input schema, `CloudEventSchemaV1_0` (default here) or `EventGridSchema`:
  events of the other schema (by Content-Type) are refused with 400.
- A batch is a JSON array; CloudEvents need `specversion` "1.0", `id`, `source`, `type`;
  Event Grid events need `id`, `subject`, `eventType`, `eventTime`, `dataVersion`, `data`.
- 1 MB at most per batch and per event (413). Success is 200 with an empty body.

Error bodies follow `{"error": {"code", "message"}}`; the codes and messages are guesses where
marked. Faults: `inject_fault(status, times)` answers the next requests with that status.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import Any

from werkzeug.wrappers import Request, Response

from tests.emulators.common import (
    HttpsServer,
    RecordedRequest,
    RequestLog,
    TestCA,
    bearer_token,
    json_response,
    token_for_scope,
)

EVENTGRID_SCOPE = "https://eventgrid.azure.net/.default"
API_VERSION = "2018-01-01"
MAX_BYTES = 1024 * 1024
CLOUD_EVENTS = "CloudEventSchemaV1_0"
EVENT_GRID = "EventGridSchema"


@dataclasses.dataclass
class _Fault:
    status: int
    remaining: int


class EventGridTopicEmulator:
    def __init__(self, ca: TestCA, *, input_schema: str = CLOUD_EVENTS) -> None:
        assert input_schema in (CLOUD_EVENTS, EVENT_GRID)
        self.input_schema = input_schema
        self.log = RequestLog()
        self._lock = threading.Lock()
        self._events: list[dict[str, Any]] = []
        self._faults: list[_Fault] = []
        self._server = HttpsServer(self._wsgi, ca)
        self.url = self._server.url
        self.endpoint = f"{self.url}/api/events"

    def start(self) -> EventGridTopicEmulator:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    @property
    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._events]

    def clear(self) -> None:
        with self._lock:
            self._events.clear()
        self.log.clear()

    def inject_fault(self, status: int, times: int = 1) -> None:
        with self._lock:
            self._faults.append(_Fault(status, times))

    # ------------------------------------------------------------------ HTTP

    def _wsgi(self, environ: dict, start_response: Any) -> Any:
        request = Request(environ)
        response = self._handle(request)
        self.log.add(RecordedRequest.of(request, response.status_code))
        return response(environ, start_response)

    @staticmethod
    def _error(status: int, code: str, message: str) -> Response:
        return json_response({"error": {"code": code, "message": message}}, status)

    def _handle(self, request: Request) -> Response:
        if request.path != "/api/events":
            return self._error(404, "NotFound", f"The requested resource '{request.path}' was not found.")  # guess
        if request.method != "POST":
            return self._error(405, "MethodNotAllowed", f"The method '{request.method}' is not allowed.")  # guess
        if request.args.get("api-version") != API_VERSION:
            message = f"The api-version '{request.args.get('api-version')}' is not supported; use {API_VERSION}."
            return self._error(400, "BadRequest", message)  # guess (message)
        if "aeg-sas-key" in request.headers or "aeg-sas-token" in request.headers:
            message = "Local authentication (access keys, SAS) is disabled for this topic; use Microsoft Entra ID."
            return self._error(401, "Unauthorized", message)  # guess (message)
        if bearer_token(request) != token_for_scope(EVENTGRID_SCOPE):
            message = "The request must be authenticated with a Microsoft Entra token for https://eventgrid.azure.net."
            return self._error(401, "Unauthorized", message)  # guess (message)
        with self._lock:
            fault = next((f for f in self._faults if f.remaining > 0), None)
            if fault is not None:
                fault.remaining -= 1
        if fault is not None:
            return self._error(fault.status, "ServiceUnavailable" if fault.status >= 500 else "Throttled", "fault")
        raw = request.get_data()
        if len(raw) > MAX_BYTES:
            return self._error(413, "PayloadTooLarge", f"The batch is {len(raw)} bytes; the limit is {MAX_BYTES}.")
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        schema = CLOUD_EVENTS if content_type == "application/cloudevents-batch+json" else EVENT_GRID
        if content_type not in ("application/cloudevents-batch+json", "application/json"):
            return self._error(400, "BadRequest", f"Unsupported Content-Type '{content_type}'.")  # guess
        if schema != self.input_schema:
            message = f"This topic expects events in the {self.input_schema} input schema, not {schema}."
            return self._error(400, "BadRequest", message)  # guess (message)
        try:
            batch = json.loads(raw)
        except ValueError as e:
            return self._error(400, "BadRequest", f"The request body is not valid JSON: {e}")
        if not isinstance(batch, list) or not batch:
            return self._error(400, "BadRequest", "The request body must be a non-empty JSON array of events.")
        problems = [p for i, e in enumerate(batch) for p in self._check(i, e, schema)]
        if problems:
            return self._error(400, "BadRequest", "; ".join(problems))
        with self._lock:
            self._events.extend(batch)
        return Response(b"", status=200)

    @staticmethod
    def _check(index: int, event: Any, schema: str) -> list[str]:
        if not isinstance(event, dict):
            return [f"event {index} is not a JSON object"]
        if len(json.dumps(event).encode()) > MAX_BYTES:
            return [f"event {index} is larger than {MAX_BYTES} bytes"]
        if schema == CLOUD_EVENTS:
            required = ("specversion", "id", "source", "type")
            problems = [f"event {index}: '{f}' is required" for f in required if not event.get(f)]
            if event.get("specversion") not in (None, "1.0"):
                problems.append(f"event {index}: specversion must be '1.0'")
            return problems
        required = ("id", "subject", "eventType", "eventTime", "dataVersion")
        problems = [f"event {index}: '{f}' is required" for f in required if not isinstance(event.get(f), str)]
        if "data" not in event:
            problems.append(f"event {index}: 'data' is required")
        return problems
