"""Drive the Functions app the way the host would: real binding objects, Azurite, the emulators.

`Host` is a test driver, not a host: it builds func.HttpRequest / EventGridEvent (through the
worker's own decoder) / QueueMessage / TimerRequest objects, calls the registered functions,
and takes queue messages from Azurite honouring host.json's maxDequeueCount (poison queue).
"""

from __future__ import annotations

import base64
import collections.abc
import json
import time
import uuid
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueClient
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from shared.app import composition
from shared.domain.settings import WORK_QUEUE
from tests.access_services import AMBIENT, emulated_azure
from tests.azurite import Azurite, connection_string_from_env
from tests.emulators.eventgrid import EventGridTopicEmulator
from tests.emulators.identity_endpoint import IdentityEndpoint

ROOT = Path(__file__).resolve().parents[2]

TEAM_OID = "aaaaaaaa-0000-4000-8000-000000000001"
TEAM_GROUP = "bbbbbbbb-0000-4000-8000-000000000002"
OTHER_GROUP = "cccccccc-0000-4000-8000-000000000003"
_DEFAULT = object()


def principal_header(
    oid: str = TEAM_OID,
    groups: tuple[str, ...] = (TEAM_GROUP,),
    name: str = "alice@contoso.com",
    roles: tuple[str, ...] = (),
) -> str:
    """An X-MS-CLIENT-PRINCIPAL value as App Service Authentication sets it."""
    claims = [
        {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": oid},
        {"typ": "name", "val": name},
    ]
    claims += [{"typ": "groups", "val": g} for g in groups] + [{"typ": "roles", "val": r} for r in roles]
    doc = {"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": "roles"}
    return base64.b64encode(json.dumps(doc).encode()).decode()


def access_policy() -> dict[str, Any]:
    from tests.conftest import ACCOUNT_ID, CLUSTER_ID

    return {
        "rules": [
            {
                "name": "team-a",
                "principals": {"groups": [TEAM_GROUP]},
                "clusters": [CLUSTER_ID.split("/providers/")[0]],
                "namespaces": ["team-a", "team-b", "ns-*"],
                "accounts": [ACCOUNT_ID.split("/providers/")[0]],
                "workloads": ["ai-service", "chat-*"],
            },
            {
                "name": "other-team",
                "principals": {"groups": [OTHER_GROUP]},
                "clusters": [CLUSTER_ID],
                "namespaces": ["other-team"],
                "accounts": [ACCOUNT_ID],
            },
        ]
    }


@pytest.fixture(scope="session")
def storage() -> collections.abc.Iterator[str]:
    given = connection_string_from_env()
    if given:
        yield given
        return
    azurite = Azurite().start()
    yield azurite.connection_string
    azurite.stop()


@pytest.fixture(scope="session")
def identity_endpoint() -> collections.abc.Iterator[IdentityEndpoint]:
    endpoint = IdentityEndpoint().start()
    yield endpoint
    endpoint.stop()


_FUNCTIONS: dict[str, Any] = {}
_HTTP_ROUTES: dict[str, tuple[str, tuple[str, ...]]] = {}


def app_functions() -> dict[str, Any]:
    """name -> user function. FunctionApp.get_functions() may run only once per app (it validates names)."""
    if not _FUNCTIONS:
        import function_app

        for f in function_app.app.get_functions():
            _FUNCTIONS[f.get_function_name()] = f.get_user_function()
            if f.is_http_function():
                trigger = f.get_trigger()
                methods = tuple(str(getattr(m, "value", m)).upper() for m in trigger.methods or ())
                _HTTP_ROUTES[f.get_function_name()] = (trigger.route, methods)
    return _FUNCTIONS


def http_routes() -> dict[str, tuple[str, tuple[str, ...]]]:
    """HTTP function name -> (its trigger's route, without the host's `api/` prefix; its methods)."""
    app_functions()
    return _HTTP_ROUTES


# --- conformance: every HTTP answer the tests see is one the OpenAPI document allows -------------

ROUTES = {
    "onboardings_create": ("/onboardings", "post"),
    "onboardings_list": ("/onboardings", "get"),
    "onboardings_get": ("/onboardings/{id}", "get"),
    "onboardings_delete": ("/onboardings/{id}", "delete"),
    "onboardings_verification": ("/onboardings/{id}/verification", "get"),
    "sweeps_latest": ("/sweeps/latest", "get"),
    "me": ("/me", "get"),
    "openapi": ("/openapi.json", "get"),
    "health": ("/health", "get"),
}
"""HTTP function name -> (path, method) in the document (the function, not the URL a test passes, decides)."""

PAGES = {"ui_page", "ui_asset"}
"""HTTP functions that serve the team page (handlers/ui.py): for browsers, not part of the API or its document."""


def _pointer(*parts: str) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


class OpenApiConformance:
    """Checks answers (and accepted requests) against /api/openapi.json, as the `openapi` function serves it.

    The document's schemas are JSON Schema 2020-12 (OpenAPI 3.1), so jsonschema applies them as they are,
    `$ref`s and formats (date-time) included; the objects are closed, so an undocumented field fails."""

    URI = "urn:keyless:openapi"

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.seen: collections.Counter[tuple[str, int]] = collections.Counter()  # (function, status) that passed
        self.registry = Registry().with_resource(self.URI, DRAFT202012.create_resource(document))

    @classmethod
    def served_by(cls, functions: dict[str, Any]) -> OpenApiConformance:
        req = func.HttpRequest(method="GET", url="/api/openapi.json", headers={}, params={}, body=b"")
        return cls(json.loads(functions["openapi"](req).get_body()))

    def _at(self, pointer: str) -> Any:
        node: Any = self.document
        for part in pointer.lstrip("/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def _errors(self, pointer: str, instance: Any) -> list[str]:
        validator = Draft202012Validator(
            {"$ref": self.URI + "#" + pointer},
            registry=self.registry,
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
        return [f"{e.json_path}: {e.message[:300]}" for e in errors[:5]]

    def check(self, name: str, status: int, body: Any, resp: func.HttpResponse, request: bytes) -> None:
        """AssertionError unless the document lists `status` for the function's route and method, and the
        body, content type and required headers are what it says (and, for a 2xx, the request too)."""
        self._check(name, status, body, resp, request)
        self.seen[name, status] += 1

    def _check(self, name: str, status: int, body: Any, resp: func.HttpResponse, request: bytes) -> None:
        path, method = ROUTES[name]
        where = f"{name} ({method.upper()} {path}) answered {status}"
        responses = _pointer("paths", path, method, "responses")
        documented = self._at(responses)
        assert str(status) in documented, f"{where}, a status the document does not list ({sorted(documented)})"
        pointer = responses + _pointer(str(status))
        while "$ref" in (response := self._at(pointer)):
            pointer = response["$ref"].removeprefix("#")
        for header, spec in (response.get("headers") or {}).items():
            assert not spec.get("required") or header in resp.headers, f"{where} without its {header} header"
        content = response.get("content") or {}
        if not content:
            assert body is None, f"{where} with a body the document does not describe"
            return
        assert resp.mimetype in content, f"{where} as {resp.mimetype}, not {sorted(content)}"
        errors = self._errors(pointer + _pointer("content", resp.mimetype, "schema"), body)
        assert not errors, f"{where} with a body the document does not allow:\n" + "\n".join(errors)
        if 200 <= status < 300 and "requestBody" in self._at(_pointer("paths", path, method)):
            self.check_accepted_request(name, request)

    def check_accepted_request(self, name: str, request: bytes) -> None:
        """What the API took is what the document says it takes (the document may not be stricter)."""
        path, method = ROUTES[name]
        pointer = _pointer("paths", path, method, "requestBody", "content", "application/json", "schema")
        errors = self._errors(pointer, json.loads(request))
        assert not errors, f"{name} accepted a body the document refuses:\n" + "\n".join(errors)


_CONFORMANCE: list[OpenApiConformance] = []


def conformance() -> OpenApiConformance:
    if not _CONFORMANCE:
        _CONFORMANCE.append(OpenApiConformance.served_by(app_functions()))
    return _CONFORMANCE[0]


class Host:
    def __init__(self, storage: str) -> None:
        self.functions = app_functions()
        host_json = json.loads((ROOT / "host.json").read_text())
        self.max_dequeue = host_json["extensions"]["queues"]["maxDequeueCount"]
        # No decode policy: the driver sees the exact bytes the host would, and decodes base64 itself.
        self.queue = QueueClient.from_connection_string(storage, WORK_QUEUE)
        self.poison = QueueClient.from_connection_string(storage, WORK_QUEUE + "-poison")
        for q in (self.queue, self.poison):
            try:
                q.create_queue()
            except Exception:  # noqa: BLE001 - exists already
                pass
            q.clear_messages()
        self.failures: list[BaseException] = []

    # --- HTTP -----------------------------------------------------------------------------

    def http(
        self,
        name: str,
        method: str,
        url: str,
        body: Any = None,
        *,
        params: dict[str, str] | None = None,
        route_params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        principal: Any = _DEFAULT,
    ) -> tuple[int, Any, func.HttpResponse]:
        """Call the HTTP function `name` (`method` and `url` only go into the request); the answer must be
        one the OpenAPI document allows for that function's route, method and status (OpenApiConformance).
        The team page's functions (PAGES) answer HTML, script and style: their answer is the body's text."""
        hdrs = {"Content-Type": "application/json"} if body is not None or raw is not None else {}
        if principal is _DEFAULT:
            principal = principal_header()
        if principal is not None:
            hdrs["X-MS-CLIENT-PRINCIPAL"] = principal
        hdrs.update(headers or {})
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        req = func.HttpRequest(
            method=method, url=url, headers=hdrs, params=params or {}, route_params=route_params or {}, body=data
        )
        resp = self.functions[name](req)
        text = resp.get_body().decode()
        if name in PAGES:
            return resp.status_code, text, resp
        answer = json.loads(text) if text else None
        conformance().check(name, resp.status_code, answer, resp, data)
        return resp.status_code, answer, resp

    # --- Event Grid -----------------------------------------------------------------------

    def event(self, payload: dict[str, Any]) -> None:
        """One event, decoded by azure-functions' own trigger converter as the worker does."""
        decoded = EventGridEventInConverter.decode(meta.Datum(json.dumps(payload), "json"), trigger_metadata={})
        self.functions["resource_events"](decoded)

    # --- timer ----------------------------------------------------------------------------

    def timer(self) -> None:
        self.functions["drift_sweep"](TimerRequest(past_due=False))

    # --- queue ----------------------------------------------------------------------------

    def raw_messages(self) -> list[str]:
        return [m.content for m in self.queue.peek_messages(max_messages=32)]

    def drain_poison(self) -> int:
        """Run `reconcile_poison` on every message of the poison queue (as the host would); how many."""
        handled = 0
        for m in list(self.poison.receive_messages(max_messages=32, visibility_timeout=60)):
            msg = QueueMessage(id=m.id, body=base64.b64decode(m.content), dequeue_count=m.dequeue_count,
                               pop_receipt=m.pop_receipt, insertion_time=m.inserted_on)  # fmt: skip
            self.functions["reconcile_poison"](msg)
            self.poison.delete_message(m)
            handled += 1
        return handled

    def drain(self, deadline_seconds: float = 60.0, max_messages: int = 500) -> int:
        """Run the worker on visible messages until none is left; returns how many it ran."""
        handled = 0
        end = time.monotonic() + deadline_seconds
        while handled < max_messages and time.monotonic() < end:
            batch = list(self.queue.receive_messages(max_messages=16, visibility_timeout=60))
            if not batch:
                return handled
            for m in batch:
                handled += 1
                msg = QueueMessage(
                    id=m.id,
                    body=base64.b64decode(m.content),
                    dequeue_count=m.dequeue_count,
                    pop_receipt=m.pop_receipt,
                    insertion_time=m.inserted_on,
                )
                try:
                    self.functions["reconcile_worker"](msg)
                except Exception as exc:  # noqa: BLE001 - the host would retry, then poison
                    self.failures.append(exc)
                    if m.dequeue_count >= self.max_dequeue:
                        self.poison.send_message(m.content)
                        self.queue.delete_message(m)
                    else:
                        self.queue.update_message(m, visibility_timeout=0)
                    continue
                self.queue.delete_message(m)
        raise AssertionError(f"queue not drained after {handled} messages")


@pytest.fixture
def app_env(monkeypatch, storage, identity_endpoint, arm, ca) -> collections.abc.Iterator[dict[str, str]]:
    env = {
        **emulated_azure(storage, arm, ca, identity_endpoint),
        "KEYLESS_TABLE_NAME": "t" + uuid.uuid4().hex[:20],
        "KEYLESS_ACCESS_POLICY": json.dumps(access_policy()),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in AMBIENT:
        monkeypatch.delenv(key, raising=False)
    composition.reset()
    yield env
    composition.reset()


def reconfigure(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """Change the app's settings as a new deployment would: the next function call builds a new instance."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    composition.reset()


@pytest.fixture
def topic(ca, monkeypatch, app_env) -> collections.abc.Iterator[EventGridTopicEmulator]:
    """An Event Grid topic for outcome events (KEYLESS_OUTCOME_TOPIC_ENDPOINT)."""
    emulator = EventGridTopicEmulator(ca).start()
    monkeypatch.setenv("KEYLESS_OUTCOME_TOPIC_ENDPOINT", emulator.endpoint)
    composition.reset()
    yield emulator
    emulator.stop()


@pytest.fixture
def host(app_env, storage) -> Host:
    return Host(storage)
