"""Counting requests without threading a counter through every call: every HTTP attempt, retries
included, of every client.

Two tallies:

- per run: the engine sets the current `RequestCounts` in a context variable; ARM and Kubernetes
  attempts add to whatever counter is current in that thread (what a binding's record shows);
- per process: `attempts()`, every client's attempts and how many of them were retries (Azure
  Tables, the storage queue and Event Grid included, which no run counts).

Each client is counted once per attempt, after its SDK's retry policy decided to send it: ARM by a
per-retry pipeline policy (shared.adapters.arm), Azure Tables, the storage queue and Event Grid by
the `raw_request_hook` their pipelines call before each attempt (`attempt_hook`), Kubernetes when the
call starts and again each time urllib3's Retry grants a retry (shared.adapters.kube_connection). A retry is
also logged (method and path, never a query string or a header). Each attempt is also the metric
`keyless.requests` (by client, and whether it was a retry), and each 429 answer `keyless.requests.throttled`
(`answered`), through shared.adapters.telemetry: Kubernetes when its call raises; an azure-core client's
every answer by `pipeline_response`: ARM's and Resource Graph's from the counting policy's
`on_response`, Tables' and the storage queue's from the constructor's `raw_response_hook`
(`counting_hooks`: both hooks at once), Event Grid's from the publisher's own per-call hook.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import functools
import logging
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any, Literal, cast

from shared.adapters import telemetry
from shared.domain.results import RequestCounts

Target = Literal["arm", "kube"]
Client = Literal["arm", "kube", "table", "queue", "eventgrid", "openai"]

log = logging.getLogger("keyless.requests")

_current: contextvars.ContextVar[RequestCounts | None] = contextvars.ContextVar("keyless_counts", default=None)

_ATTEMPT = "keyless_attempt"
"""Pipeline context key: the number of the attempt being sent (the context lives across retries)."""

"""Pipeline context key azure-core's CustomHookPolicy takes a call's response hook from, every attempt."""


@contextlib.contextmanager
def counting(counts: RequestCounts) -> Iterator[RequestCounts]:
    token = _current.set(counts)
    try:
        yield counts
    finally:
        _current.reset(token)


RESOURCE_GRAPH_QUERY = "/providers/microsoft.resourcegraph/resources"


def is_write(method: str, path: str) -> bool:
    """PUT/PATCH/DELETE, and POST except ARM's `list...` actions and Resource Graph queries, which only read."""
    method = method.upper()
    if method in ("GET", "HEAD", "OPTIONS"):
        return False
    if method == "POST":
        bare = path.split("?", 1)[0].rstrip("/").lower()
        return not (bare.rsplit("/", 1)[-1].startswith("list") or bare.endswith(RESOURCE_GRAPH_QUERY))
    return True


class _Tally:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._attempts: collections.Counter[str] = collections.Counter()
        self._retries: collections.Counter[str] = collections.Counter()

    def add(self, client: str, retry: bool) -> None:
        with self._lock:
            self._attempts[client] += 1
            if retry:
                self._retries[client] += 1

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {c: {"attempts": n, "retries": self._retries[c]} for c, n in sorted(self._attempts.items())}


_tally = _Tally()


def attempts() -> dict[str, dict[str, int]]:
    """Every client's HTTP attempts in this process so far, and how many of them were retries:
    `{"arm": {"attempts": 12, "retries": 1}, ...}` (clients with none are absent)."""
    return _tally.snapshot()


def record(client: Client, method: str, path: str, retry: bool = False) -> None:
    """One attempt of `client` (`retry`: not the call's first)."""
    _tally.add(client, retry)
    telemetry.measure("keyless.requests", client=client, retry=retry)
    if retry:
        log.info("retrying %s %s %s", client, method.upper(), urllib.parse.urlsplit(path).path)
    counts = _current.get()
    if counts is not None and client in ("arm", "kube"):
        counts.count(cast(Target, client), is_write(method, path))


def pipeline_attempt(client: Client, request: Any) -> None:
    """Count one attempt of an azure-core pipeline call, from a policy (or hook) placed after the
    retry policy, which runs once per attempt. `request` is the PipelineRequest, or the attempt's
    PipelineResponse (both carry the call's context and its HTTP request)."""
    number = int(request.context.get(_ATTEMPT, 0)) + 1
    request.context[_ATTEMPT] = number
    http = request.http_request
    record(client, http.method, http.url, retry=number > 1)


STORAGE_BUSY = "ServerBusy"
"""Azure Storage throttles with 503 and this x-ms-error-code, not 429 (its scalability targets:
"503 (Server Busy)"), counted as throttled too."""


def answered(client: Client, status: int | None, error_code: str | None = None) -> None:
    """The answer to one attempt of `client`: a 429, or Storage's 503 ServerBusy, is counted as throttled."""
    if status == 429 or (status == 503 and error_code == STORAGE_BUSY):
        telemetry.measure("keyless.requests.throttled", client=client)


def pipeline_response(client: Client, response: Any) -> None:
    """The answer to one attempt of an azure-core pipeline call (a PipelineResponse), from the
    `on_response` of the policy that counted the attempt (or a `raw_response_hook`)."""
    http = response.http_response
    answered(client, getattr(http, "status_code", None), http.headers.get("x-ms-error-code"))


def counting_hooks(client: Client) -> dict[str, Callable[[Any], None]]:
    """`raw_request_hook` and `raw_response_hook` for an azure-core client's constructor (Tables:
    its CustomHookPolicy; the storage queue: StorageRequestHook and StorageResponseHook, which run
    them on every attempt and its answer). Given to the constructor, not to a call: a call's hook
    runs on the first attempt only."""
    return {
        "raw_request_hook": functools.partial(pipeline_attempt, client),
        "raw_response_hook": functools.partial(pipeline_response, client),
    }
