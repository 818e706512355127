"""A few seconds of memory for the ARM reads many bindings share: their cluster, their account.

Why: a cluster event fans out to every binding on the cluster, and each reconcile starts by
reading the cluster and the account. Without a cache a batch of N bindings makes N identical
reads, against a read budget of 25/s per subscription. With it, a batch reads each once
(concurrent misses of one key wait for a single read).

Staleness is bounded three ways: entries live `ttl_seconds` (KEYLESS_ARM_READ_CACHE_SECONDS);
the paths that react to a change (an event about the cluster or account) read `fresh`; and
work they fan out carries the version they saw, so that another instance whose entry differs
drops it (`expect`). Only successful reads are kept: "not found" is always asked again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def version_of(value: Any) -> str:
    """A short digest of an observed state (a dataclass): equal states, equal versions."""
    data = dataclasses.asdict(value) if dataclasses.is_dataclass(value) and not isinstance(value, type) else value
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclasses.dataclass
class _Entry(Generic[T]):
    value: T
    read_at: float  # when the read that produced it started


class ReadCache(Generic[T]):
    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl_seconds
        self._clock = clock
        self._entries: dict[str, _Entry[T]] = {}
        self._key_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.reads = 0  # reads made (misses), for benchmarks

    def get(self, key: str, read: Callable[[], T], fresh: bool = False, keep: Callable[[T], bool] | None = None) -> T:
        """The cached value, or `read()`'s. With `fresh`, only a read that started after this call.
        A value `keep` refuses is returned but not kept (a resource in the middle of an operation)."""
        asked_at = self._clock()
        if self.ttl <= 0:
            self.reads += 1
            return read()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and self._usable(entry, asked_at, fresh):
                return entry.value
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # one read per key at a time; the others take its result
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None and self._usable(entry, asked_at, fresh):
                    return entry.value
            started = self._clock()
            value = read()
            with self._lock:
                self.reads += 1
                if keep is not None and not keep(value):
                    self._entries.pop(key, None)
                    return value
                self._entries[key] = _Entry(value, started)
                if len(self._entries) > 5000:  # a few thousand clusters and accounts at most
                    now = self._clock()
                    self._entries = {k: e for k, e in self._entries.items() if now - e.read_at < self.ttl}
            return value

    def _usable(self, entry: _Entry[T], asked_at: float, fresh: bool) -> bool:
        if fresh:
            return entry.read_at >= asked_at
        return asked_at - entry.read_at < self.ttl

    def forget(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def expect(self, key: str, version: str) -> None:
        """Drop the entry unless it is this version (another instance saw a newer state)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and version_of(entry.value) != version:
                del self._entries[key]
