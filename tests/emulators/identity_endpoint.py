"""The App Service / Functions managed identity endpoint (IDENTITY_ENDPOINT + IDENTITY_HEADER).

In Azure the Functions host serves it on localhost over plain HTTP; DefaultAzureCredential's
ManagedIdentityCredential asks it for tokens. Serving it here lets tests run the app's real
credential code: tokens are `token_for_scope(<resource>/.default)`, as the emulators expect.

Storage is the exception: for `https://storage.azure.com` (or an account's own service audience) the
token is a JWT shaped as Entra ID issues it to a managed identity (audience, `https://sts.windows.net/`
issuer, lifetime, the identity's `appid`/`oid`), which Azurite's `--oauth basic` accepts (it checks
those claims, not the signature: this one is signed with a key only the emulator knows).

`client_id` selects a user-assigned identity, as on App Service; with `user_assigned` given, an unknown
client id (or no client id when `system_assigned` is off) is refused with a 400, as App Service does
for an identity the app does not have. `issued` lists (resource, client id or None) of every token,
`tokens` the tokens themselves.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from tests.emulators.common import RecordedRequest, RequestLog, json_response, token_for_scope

TENANT_ID = "aaaabbbb-0000-cccc-1111-dddd2222eeee"  # a placeholder tenant
STORAGE_RESOURCE = "https://storage.azure.com"
_STORAGE_AUDIENCE = re.compile(r"https://(storage\.azure\.com|[a-z0-9]+\.(blob|queue|table)\.core\.[a-z.]+)/?")


class IdentityEndpoint:
    def __init__(self, user_assigned: Iterable[str] | None = None, system_assigned: bool = True) -> None:
        """`user_assigned`: the client ids of the app's user-assigned identities (None: any is accepted)."""
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.header_secret = secrets.token_hex(16)
        self.log = RequestLog()
        self.user_assigned = None if user_assigned is None else {c.lower() for c in user_assigned}
        self.system_assigned = system_assigned
        self.issued: list[tuple[str, str | None]] = []
        self.tokens: list[str] = []  # every access token handed out (tests check none is logged or stored)
        self._signing_key = secrets.token_bytes(32)
        self._lock = threading.Lock()
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
        client_id = (request.args.get("client_id") or "").lower() or None
        if self.user_assigned is not None and (
            (client_id is not None and client_id not in self.user_assigned)
            or (client_id is None and not self.system_assigned)
        ):
            return json_response(
                {
                    "statusCode": 400,
                    "message": "Unable to load the proper Managed Identity.",
                    "correlationId": str(uuid.uuid4()),
                },
                400,
            )
        with self._lock:
            self.issued.append((resource, client_id))
        expires_on = int(time.time()) + 3600
        storage = _STORAGE_AUDIENCE.fullmatch(resource) is not None
        token = self.jwt(resource, client_id, expires_on) if storage else token_for_scope(resource + "/.default")
        with self._lock:
            self.tokens.append(token)
        body = {
            "access_token": token,
            "expires_on": str(expires_on),
            "resource": resource,
            "token_type": "Bearer",
        }
        if client_id:
            body["client_id"] = client_id
        return json_response(body)

    def jwt(self, audience: str, client_id: str | None, expires_on: int) -> str:
        """An Entra-shaped access token of the identity (system-assigned: a fixed id), HS256-signed."""
        identity = client_id or "00000000-0000-0000-0000-00000000000a"
        now = int(time.time())
        claims = {
            "aud": audience.rstrip("/"),
            "iss": f"https://sts.windows.net/{TENANT_ID}/",
            "iat": now,
            "nbf": now - 300,
            "exp": expires_on,
            "appid": identity,
            "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, "principal/" + identity)),
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, "principal/" + identity)),
            "tid": TENANT_ID,
            "idtyp": "app",
            "ver": "1.0",
        }
        header, payload = _b64({"alg": "HS256", "typ": "JWT"}), _b64(claims)
        signature = hmac.new(self._signing_key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def _b64(part: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part, separators=(",", ":")).encode()).rstrip(b"=").decode()


def decode_claims(token: str) -> dict[str, Any]:
    """The claims of a token `IdentityEndpoint` minted for storage (no signature check, as Azurite)."""
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))
