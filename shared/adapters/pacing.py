"""Client-side pacing of ARM requests: wait for our turn instead of being refused.

Why: ARM and the managed identity RP meter requests with token buckets and answer 429 once a
bucket is empty. azure-core's retry policy then sleeps `Retry-After` and tries again, three times,
then gives up. Under a burst (a cluster tagged with a hundred workloads, a scaled-out app) most of
the time would go to refusals, and refusals that outlast the retries become queue round trips.
Sending each request at its slot costs the same wall time as the limit allows, without them.

The limits (the team's AZURE-FACTS notes, beside this repository): per subscription, ARM reads
250 refilled 25/s, writes and deletes 200 refilled 10/s (published); the managed identity RP
(identities and their federated credentials) create/update 2/s, get 10/s, list 5/s, delete 2/s,
and 0.25/s of create/update for one identity (figures with no primary source found: the scale
work replaces them with the published identity-creation rate). Each is a GCRA schedule (the virtual-time form of a token
bucket): a request takes the earliest slot every bucket it counts against allows, reserves it,
and waits until then. Slots are handed out in arrival order, so waiting threads are served fairly.

This paces one process. Instances of a scaled-out app pace independently; when together they
still exceed a limit, Azure's 429 tells us: its `Retry-After` holds the bucket for every thread
of this instance, not only the one that was refused.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from azure.core.pipeline.policies import SansIOHTTPPolicy

from shared.domain import retry_policy
from shared.domain.errors import Throttled


@dataclasses.dataclass(frozen=True)
class Rate:
    """`burst` requests at once, then `per_second`."""

    burst: float
    per_second: float


# Azure's published limits; see the module docstring. The RP publishes rates only: we allow one
# second's worth at once, as the emulator does.
AZURE_RATES: dict[str, Rate] = {
    "arm-reads": Rate(250, 25),
    "arm-writes": Rate(200, 10),
    "arm-deletes": Rate(200, 10),
    "msi-writes": Rate(2, 2),
    "msi-identity-writes": Rate(1, 0.25),
    "msi-gets": Rate(10, 10),
    "msi-lists": Rate(5, 5),
    "msi-deletes": Rate(2, 2),
}

# How long a request may wait for its slot (Azure seconds) before the run is handed back to the
# queue instead: declared in shared.domain.retry_policy (PACING_MAX_WAIT_SECONDS and, shorter for
# some buckets, PACING_MAX_WAIT_BY_BUCKET).
MAX_WAIT: dict[str, float] = retry_policy.PACING_MAX_WAIT_BY_BUCKET
DEFAULT_MAX_WAIT = retry_policy.PACING_MAX_WAIT_SECONDS

_SUBSCRIPTION = re.compile(r"^/subscriptions/([^/]+)", re.I)
_IDENTITY = re.compile(r"/userassignedidentities/[^/]+$")


def buckets_for(method: str, url: str) -> list[tuple[str, ...]]:
    """The buckets a request counts against, most specific last; [] outside a subscription."""
    path = urllib.parse.urlsplit(url).path
    m = _SUBSCRIPTION.match(path)
    if not m:
        return []
    sub, low, method = m[1].lower(), path.lower().rstrip("/"), method.upper()
    kind = "reads" if method in ("GET", "HEAD") else "deletes" if method == "DELETE" else "writes"
    keys: list[tuple[str, ...]] = [(f"arm-{kind}", sub)]
    if "/providers/microsoft.managedidentity/" in low:
        if kind == "reads":
            kind = "lists" if low.endswith(("/userassignedidentities", "/federatedidentitycredentials")) else "gets"
        keys.append((f"msi-{kind}", sub))
        if kind == "writes" and _IDENTITY.search(low):
            keys.append(("msi-identity-writes", low))
    return keys


class Pacer:
    """GCRA schedules per bucket; `acquire` blocks until the request's slot (thread-safe).

    `scale` multiplies every rate (Azure's limits run `scale` times faster: benchmarks against a
    sped-up emulator). Requests reach Azure with jitter: one sent on time can arrive early, after
    one sent before it. So we pace a little under the limit (`headroom`, 0.95) and allow one
    request less at once than Azure does: that token is the margin.
    """

    def __init__(
        self,
        rates: dict[str, Rate] | None = None,
        *,
        scale: float = 1.0,
        headroom: float = 0.95,
        max_wait_seconds: float = DEFAULT_MAX_WAIT,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if scale <= 0:
            raise ValueError("scale must be > 0")
        self.rates = {k: Rate(r.burst, r.per_second * scale * headroom) for k, r in (rates or AZURE_RATES).items()}
        self.scale = scale
        self.max_wait = max_wait_seconds / scale
        self._max_wait = {k: min(v, max_wait_seconds) / scale for k, v in MAX_WAIT.items()}
        self._tat: dict[tuple[str, ...], float] = {}  # theoretical arrival time of the next request
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep
        self.waited_seconds = 0.0  # total time requests were held back (reported by benchmarks)

    def _tau(self, key: tuple[str, ...]) -> float:
        """GCRA burst tolerance: `burst - 1` requests at once (one less than Azure allows, at least 1)."""
        rate = self.rates[key[0]]
        return (max(rate.burst - 1, 1) - 1) / rate.per_second

    def acquire(self, keys: list[tuple[str, ...]]) -> None:
        """Reserve the earliest slot every bucket allows and wait for it.

        Raises Throttled instead of waiting longer than `max_wait_seconds` (Azure time; less
        for some buckets, see MAX_WAIT): that is a job for the work queue, not for a worker thread."""
        keys = [k for k in keys if k[0] in self.rates]
        if not keys:
            return
        with self._lock:
            now = self._clock()
            earliest = {k: self._tat.get(k, now) - self._tau(k) for k in keys}
            slot = max([now, *earliest.values()])
            wait = slot - now
            if wait > self.max_wait or any(
                t - now > self._max_wait.get(k[0], self.max_wait) for k, t in earliest.items()
            ):
                raise Throttled(
                    f"pacing ARM requests under Azure's limits: next slot in {wait:.0f} s", wait + 1 / self.scale
                )
            for k in keys:
                self._tat[k] = max(self._tat.get(k, now), slot) + 1 / self.rates[k[0]].per_second
            if len(self._tat) > 10_000:  # forget idle per-identity schedules
                self._tat = {k: t for k, t in self._tat.items() if t > now}
            self.waited_seconds += wait
        if wait > 0:
            self._sleep(wait)  # pacing before sending, not a retry

    def hold(self, key: tuple[str, ...], seconds: float) -> None:
        """Azure refused a request of this bucket for `seconds`: no thread of ours sends one sooner."""
        if key[0] not in self.rates:
            return
        with self._lock:
            now = self._clock()
            self._tat[key] = max(self._tat.get(key, now), now + seconds + self._tau(key))


def _retry_after_seconds(headers: Any) -> float | None:
    for name, factor in (("retry-after-ms", 0.001), ("x-ms-retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw:
            try:
                return float(raw) * factor
            except ValueError:
                return None  # an HTTP date: rare for ARM; azure-core still honours it
    return None


class PacingPolicy(SansIOHTTPPolicy):  # type: ignore[type-arg]
    """Per-attempt pipeline policy: wait for the slot before sending; learn from 429s.

    A 429 whose Retry-After is longer than the pacer's `max_wait_seconds` ends the call with a
    Throttled at once: azure-core would otherwise sleep that long in a worker thread, three
    times over; the work queue waits better."""

    def __init__(self, pacer: Pacer) -> None:
        self.pacer = pacer

    def on_request(self, request: Any) -> None:
        http = request.http_request
        self.pacer.acquire(buckets_for(http.method, http.url))

    def on_response(self, request: Any, response: Any) -> None:
        http = response.http_response
        if http.status_code != 429:
            return
        seconds = _retry_after_seconds(http.headers)
        keys = buckets_for(request.http_request.method, request.http_request.url)
        if seconds is None or not keys:
            return
        # The subscription's bucket of the RP when it has its own, else ARM's. Not one identity's:
        # a 429 rarely means that one, and holding it would turn this request's retry into a give-up.
        for key in [k for k in keys[1:] if k[0] != "msi-identity-writes"] or keys[:1]:
            self.pacer.hold(key, seconds)
        if seconds > self.pacer.max_wait:
            raise Throttled(f"throttled by ARM for {seconds:.0f} s", seconds)
