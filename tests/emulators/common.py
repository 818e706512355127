"""Pieces both emulators share: a test CA, a controllable clock, a request log, a server thread.

Why a controllable clock: Azure's eventual consistency (a new principal is not visible for a
while, a cluster update takes minutes) is modelled against this clock, so tests advance it
instead of sleeping.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import trustme
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

TEST_TOKEN_PREFIX = "keyless-test|"
"""Bearer tokens of the test credential are this prefix plus the scope they were asked for."""


def token_for_scope(scope: str) -> str:
    """The access token the static test credential issues for `scope`."""
    return TEST_TOKEN_PREFIX + scope


class TestCA:
    """One certificate authority for every emulator of a test session, plus its PEM bundle."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self.ca = trustme.CA()
        self._dir = Path(tempfile.mkdtemp(prefix="keyless-ca-"))
        self.ca_pem_path = self._dir / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_pem_path))
        self.ca_pem = self.ca.cert_pem.bytes()

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
        return ctx


class Clock:
    """Wall-clock time plus an offset that tests can advance."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: str
    status: int
    content_type: str = ""

    @classmethod
    def of(cls, request: Request, status: int) -> RecordedRequest:
        """What an emulator keeps of a request it answered with `status`."""
        query, content_type = request.query_string.decode(), request.headers.get("Content-Type", "")
        return cls(request.method, request.path, query, status, content_type)

    @property
    def is_write(self) -> bool:
        """PUT/PATCH/DELETE, and POST except ARM `list...` actions (listClusterUserCredential reads)
        and Resource Graph queries."""
        if self.method in ("GET", "HEAD", "OPTIONS"):
            return False
        if self.method == "POST":
            path = self.path.rstrip("/").lower()
            query = path.endswith("/microsoft.resourcegraph/resources")
            return not (path.rsplit("/", 1)[-1].startswith("list") or query)
        return True


class RequestLog:
    """Every request an emulator answered, in order; tests count reads and writes from it."""

    def __init__(self) -> None:
        self._items: list[RecordedRequest] = []
        self._lock = threading.Lock()

    def add(self, item: RecordedRequest) -> None:
        with self._lock:
            self._items.append(item)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    @property
    def items(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._items)

    def writes(self) -> list[RecordedRequest]:
        return [r for r in self.items if r.is_write]

    def reads(self) -> list[RecordedRequest]:
        return [r for r in self.items if not r.is_write]

    def matching(self, method: str | None = None, contains: str = "") -> list[RecordedRequest]:
        return [r for r in self.items if (method is None or r.method == method) and contains.lower() in r.path.lower()]


def json_response(body: Any, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> Response:
    resp = Response(json.dumps(body), status=status, mimetype="application/json")
    for k, v in headers:
        resp.headers[k] = v
    return resp


class HttpsServer:
    """Runs a WSGI app over HTTPS on 127.0.0.1 on a free port, in a daemon thread."""

    def __init__(self, app: Any, ca: TestCA) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=ca.server_context())
        self.port = self._server.server_port
        self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> HttpsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Shut down at once: serve_forever() notices a shutdown only between selects, and a select with
        a connection being served waits on it; a bare connect wakes it."""
        stopping = threading.Thread(target=self._server.shutdown, daemon=True)
        stopping.start()
        while stopping.is_alive():
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                pass
            stopping.join(0.01)
        self._server.server_close()
        self._thread.join(timeout=10)


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return None
    return header[len("Bearer ") :].strip() or None
