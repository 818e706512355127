"""The app's HTTP functions on a localhost port, for tests that need a real HTTP client (the `keyless`
command, a browser): a test driver, as `func start` would serve them, never shipped.

Each request goes through the suite's driver (tests/functions/conftest.py `Host.http`), so every answer
is also checked against the OpenAPI document. Routes are the document's (conftest.ROUTES, which the
conformance tests hold to the registered functions). One request at a time, as the driver is not
thread-safe. No X-MS-CLIENT-PRINCIPAL header from the client: the dev principal (KEYLESS_DEV_PRINCIPAL)
stands in, as locally under `func start`.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from tests.functions.conftest import ROUTES, Host


def _pattern(path: str) -> re.Pattern[str]:
    """A document path (`/onboardings/{id}`) as a regex of the URL path, its parameters named."""
    parts = re.split(r"\{(\w+)\}", path)  # literal, name, literal, ...
    regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts))
    return re.compile(f"^/api{regex}$")


class FunctionsServer:
    """`with FunctionsServer(host) as server:` ... `server.url` (http://127.0.0.1:<port>)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.routes = [(_pattern(path), method.upper(), name) for name, (path, method) in ROUTES.items()]
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status) as served
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=False)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> FunctionsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        response = self._answer(request)
        self.requests.append((request.method, request.path, response.status_code))
        return response(environ, start_response)

    def _answer(self, request: Request) -> Response:
        matched = [(p.match(request.path), m, n) for p, m, n in self.routes]
        found = [(match, name) for match, method, name in matched if match and method == request.method]
        if not found:
            status = 405 if any(match for match, _, _ in matched) else 404
            body = {"error": {"code": "NotFound" if status == 404 else "MethodNotAllowed", "message": request.path}}
            return Response(json.dumps(body), status, mimetype="application/json")
        match, name = found[0]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        principal = next((headers.pop(k) for k in list(headers) if k.lower() == "x-ms-client-principal"), None)
        raw = request.get_data()
        status, _, resp = self.host.http(
            name,
            request.method,
            request.url,
            params=dict(request.args),
            route_params=match.groupdict(),
            headers=headers,
            raw=raw if raw else None,
            principal=principal,
        )
        return Response(resp.get_body(), status, headers=dict(resp.headers), mimetype=resp.mimetype)
