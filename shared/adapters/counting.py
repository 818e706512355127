"""Counting requests per reconcile without threading a counter through every call.

The engine sets the current `RequestCounts` in a context variable; the ARM pipeline policy
and the Kubernetes client seam add to whatever counter is current in that thread.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Literal

from shared.domain.results import RequestCounts

_current: contextvars.ContextVar[RequestCounts | None] = contextvars.ContextVar("keyless_counts", default=None)


@contextlib.contextmanager
def counting(counts: RequestCounts) -> Iterator[RequestCounts]:
    token = _current.set(counts)
    try:
        yield counts
    finally:
        _current.reset(token)


def is_write(method: str, path: str) -> bool:
    """PUT/PATCH/DELETE, and POST except ARM's `list...` actions, which only read."""
    method = method.upper()
    if method in ("GET", "HEAD", "OPTIONS"):
        return False
    if method == "POST":
        last = path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1].lower()
        return not last.startswith("list")
    return True


def record(target: Literal["arm", "kube"], method: str, path: str) -> None:
    counts = _current.get()
    if counts is not None:
        counts.count(target, is_write(method, path))
