"""A test tool: the app's HTTP functions on a localhost port, through the suite's driver, as `func start` routes them.

Each HTTP function's trigger route (under host.json's `api` prefix) becomes a URL; a request is handed to
tests/functions/conftest.py `Host.http` (real func.HttpRequest objects; API answers checked against the
OpenAPI document), and the function's answer goes back as it is: status, headers, body. Like App Service
Authentication in front of the app, a client's own X-MS-CLIENT-PRINCIPAL is never passed on: the caller is
`principal` (a header value, as App Service Authentication would set it), or the dev principal when None.

One request at a time, under a lock the test shares (`server.lock`), so that the test can drain the queue
through the same driver between requests, as the host's queue trigger would.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from tests.functions.conftest import Host, http_routes

ROOT = Path(__file__).resolve().parents[1]
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def _rule(route: str) -> str:
    prefix = json.loads((ROOT / "host.json").read_text())["extensions"]["http"]["routePrefix"]
    return f"/{prefix}/" + re.sub(r"\{(\w+)\}", r"<\1>", route)


class FunctionServer:
    def __init__(self, host: Host, principal: str | None = None) -> None:
        self.host = host
        self.principal = principal
        self.lock = threading.Lock()
        self.errors: list[str] = []  # what the driver refused (an answer the document does not allow, say)
        self.calls: list[tuple[str, str, int]] = []  # (method, path, status)
        self.map = Map([Rule(_rule(route), endpoint=name, methods=methods) for name, (route, methods) in
                        http_routes().items()])  # fmt: skip
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> FunctionServer:
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=False)
        self._thread = threading.Thread(target=self._server.serve_forever, name="function-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FunctionServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def drain(self) -> int:
        """Run the queue worker on what is due (Host.drain), between requests."""
        with self.lock:
            return self.host.drain()

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        try:
            name, route_params = self.map.bind_to_environ(environ).match()
        except Exception as exc:  # noqa: BLE001 - werkzeug's NotFound / MethodNotAllowed are responses
            return exc(environ, start_response)  # type: ignore[operator]
        headers = {k: v for k, v in request.headers.items() if not k.lower().startswith("x-ms-client-principal")}
        body = request.get_data()
        with self.lock:
            try:
                status, _, resp = self.host.http(
                    name,
                    request.method,
                    request.url,
                    params=dict(request.args.items()),
                    route_params=route_params,
                    headers=headers,
                    raw=body if body else None,
                    principal=self.principal,
                )
            except AssertionError as exc:  # the driver's conformance check: the test fails on it
                self.errors.append(f"{request.method} {request.path}: {exc}")
                return Response(f"driver: {exc}", status=500, mimetype="text/plain")(environ, start_response)
        self.calls.append((request.method, request.path, status))
        out = Response(resp.get_body(), status=status)
        for key, value in resp.headers.items():
            if key.lower() not in HOP_BY_HOP:
                out.headers[key] = value
        if "Content-Type" not in resp.headers:
            out.headers["Content-Type"] = f"{resp.mimetype}; charset={resp.charset}"
        return out(environ, start_response)
