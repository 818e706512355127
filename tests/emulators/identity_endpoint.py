"""The App Service / Functions managed identity endpoint (IDENTITY_ENDPOINT + IDENTITY_HEADER).

In Azure the Functions host serves it on localhost over plain HTTP; DefaultAzureCredential's
ManagedIdentityCredential asks it for tokens. Serving it here lets tests run the app's real
credential code: tokens are `token_for_scope(<resource>/.default)`, as the emulators expect.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Any

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from tests.emulators.common import RecordedRequest, RequestLog, json_response, token_for_scope


class IdentityEndpoint:
    def __init__(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.header_secret = secrets.token_hex(16)
        self.log = RequestLog()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}/msi/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def env(self) -> dict[str, str]:
        return {"IDENTITY_ENDPOINT": self.url, "IDENTITY_HEADER": self.header_secret}

    def start(self) -> IdentityEndpoint:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        response = self._handle(request)
        self.log.add(RecordedRequest(request.method, request.path, request.query_string.decode(), response.status_code))
        return response(environ, start_response)

    def _handle(self, request: Request) -> Response:
        if request.path != "/msi/token" or request.method != "GET":
            return json_response({"error": "not_found"}, 404)
        if request.headers.get("X-IDENTITY-HEADER") != self.header_secret:
            return json_response({"error": "unauthorized", "error_description": "bad X-IDENTITY-HEADER"}, 401)
        if request.args.get("api-version") != "2019-08-01":
            return json_response({"error": "invalid_request", "error_description": "api-version"}, 400)
        resource = request.args.get("resource") or ""
        if not resource:
            return json_response({"error": "invalid_request", "error_description": "resource is required"}, 400)
        resource = resource.removesuffix("/.default")
        return json_response(
            {
                "access_token": token_for_scope(resource + "/.default"),
                "expires_on": str(int(time.time()) + 3600),
                "resource": resource,
                "token_type": "Bearer",
            }
        )
