"""Client-side pacing of ARM requests: wait for our turn instead of being refused.

Why: ARM and the managed identity RP meter requests and answer 429 once a limit is reached.
azure-core's retry policy then sleeps `Retry-After` and tries again, three times, then gives up.
Under a burst (a cluster tagged with a hundred workloads, a scaled-out app) most of the time would
go to refusals, and refusals that outlast the retries become queue round trips. Sending each
request at its slot costs the same wall time as the limit allows, without them.

Only Azure's *published* limits are paced (AZURE_RATES, each with its source):

- ARM, per principal and subscription, token buckets: reads 250 refilled 25/s, writes 200
  refilled 10/s, deletes 200 refilled 10/s.
- Managed identity RP: identity create operations, 80 per 20 s per subscription and region.
  Published as a count per period, so it is paced as the strictest reading of it, a sliding
  window (never more than 80 in any 20 s; paced: 79 in any 21 s), which also keeps within a
  fixed window or a bucket of 80 refilled 4/s. The region is the PUT body's `location` (read here
  from the request: the only request whose body we look at). Every identity PUT counts, an update
  as well as a create: the request does not say which, so we count both (stricter).
- Federated credential writes have no published rate; their constraint is one write at a time
  per identity (409 ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity). That
  is not a rate: `Pacer.one_at_a_time` lets one such write per identity be in flight in this
  process, the others wait for it (in another process they may still meet the 409: a
  TemporaryError for the queue).

Other throttles exist without a published figure (a per-resource one of the RP: "Request is
temporarily throttled because resource ... has issued too many requests", 429 with Retry-After).
They are met reactively: a 429's `Retry-After` holds the bucket for every thread, not only the one
that was refused.

A token bucket is paced as a GCRA schedule (the virtual-time form of a token bucket); a window as a
log of the last slots. A request takes the earliest slot every bucket it counts against allows,
reserves it, and waits until then; slots are handed out in arrival order. The arithmetic is in
`Schedule` (pure, on a tuple of floats), so that shared.adapters.shared_pacing can keep the same
schedules in a table shared by every process of the app; `Pacer` keeps them in memory and paces
one process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

from azure.core.pipeline.policies import HTTPPolicy

from shared.domain import retry_policy
from shared.domain.errors import Throttled


@dataclasses.dataclass(frozen=True)
class Rate:
    """A token bucket: `burst` requests at once, refilled at `per_second`."""

    burst: float
    per_second: float


@dataclasses.dataclass(frozen=True)
class Window:
    """At most `count` requests in any `seconds` (a sliding window: the strictest reading of "N per S")."""

    count: int
    seconds: float


Limit = Rate | Window

# Azure's published limits, and nothing else. Keys: the bucket's name; buckets_for() says which
# requests count against which bucket, and what else keys it (subscription, region).
AZURE_RATES: dict[str, Limit] = {
    # ARM, per principal and subscription (token bucket: size, refill per second). Source:
    # learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling
    # ("Regional throttling and token bucket algorithm"); AZURE-FACTS "ARM".
    "arm-reads": Rate(250, 25),
    "arm-writes": Rate(200, 10),
    "arm-deletes": Rate(200, 10),
    # Managed identity RP, user-assigned identity create operations: 80 per 20 seconds per
    # subscription per region. Source: Azure docs `includes/managed-identity-limits.md` (2021-07
    # revision; an older one said 40); AZURE-FACTS "User-assigned identities".
    "msi-identity-creates": Window(80, 20.0),
}
# Not a rate: one federated credential write at a time per identity (see one_at_a_time_key).
ONE_AT_A_TIME = "msi-credential-writes"

# How long a request may wait for its slot (Azure seconds) before the run is handed back to the
# queue instead: shared.domain.retry_policy.PACING_MAX_WAIT_SECONDS.
DEFAULT_MAX_WAIT = retry_policy.PACING_MAX_WAIT_SECONDS

_SUBSCRIPTION = re.compile(r"^/subscriptions/([^/]+)", re.I)
_IDENTITY = re.compile(r"/providers/microsoft\.managedidentity/userassignedidentities/[^/]+$")
_CREDENTIAL = re.compile(
    r"^(/subscriptions/.+/providers/microsoft\.managedidentity/userassignedidentities/[^/]+)"
    r"/federatedidentitycredentials/[^/]+$"
)
_MAX_BODY = 64 * 1024


def region_of(body: Any) -> str:
    """The `location` of a JSON request body, normalised ("East US" -> "eastus"); "*" when none."""
    if isinstance(body, (bytes, bytearray)):
        body = bytes(body[:_MAX_BODY]).decode("utf-8", "replace")
    if not isinstance(body, str) or len(body) >= _MAX_BODY:
        return "*"
    try:
        location = json.loads(body).get("location")
    except (ValueError, AttributeError):
        return "*"
    return re.sub(r"\s+", "", location).lower() if isinstance(location, str) and location.strip() else "*"


def buckets_for(method: str, url: str, body: Any = None) -> list[tuple[str, ...]]:
    """The buckets a request counts against, most specific last; [] outside a subscription.

    `body` (the request's JSON) is read only for an identity PUT: its region keys the RP's bucket
    ("*" when it names none: that request is paced per subscription)."""
    path = urllib.parse.urlsplit(url).path
    m = _SUBSCRIPTION.match(path)
    if not m:
        return []
    sub, low, method = m[1].lower(), path.lower().rstrip("/"), method.upper()
    kind = "reads" if method in ("GET", "HEAD") else "deletes" if method == "DELETE" else "writes"
    keys: list[tuple[str, ...]] = [(f"arm-{kind}", sub)]
    if method == "PUT" and _IDENTITY.search(low):
        keys.append(("msi-identity-creates", sub, region_of(body)))
    return keys


def one_at_a_time_key(method: str, url: str) -> tuple[str, ...] | None:
    """The identity whose federated credentials a write touches (one such write in flight per
    identity), or None for any other request."""
    if method.upper() not in ("PUT", "PATCH", "DELETE"):
        return None
    m = _CREDENTIAL.match(urllib.parse.urlsplit(url).path.lower().rstrip("/"))
    return (ONE_AT_A_TIME, m[1]) if m else None


# ------------------------------------------------------------------------------------ schedules

WINDOW_MARGIN_SECONDS = 1.0
"""How much longer than Azure's a window is paced (with one request fewer in it): the margin for
requests that reach Azure a little out of order or late. Azure seconds; never less than
WINDOW_MARGIN_FLOOR_SECONDS of real time (a request's way to Azure does not speed up with `scale`)."""
WINDOW_MARGIN_FLOOR_SECONDS = 0.3

State = tuple[float, ...]
"""A bucket's schedule: () when fresh. GCRA: (theoretical arrival time of the next request,).
Window: (not before, the last slots taken, oldest first)."""


class Schedule:
    """One bucket's pacing arithmetic on a plain State. Pure: no clock, no lock, no I/O.

    Requests reach Azure with jitter (one sent on time can arrive early, after one sent before it,
    or late, behind a busy CPU), so a schedule paces a little under the limit: `headroom` (0.95)
    of the rate, and one request fewer at once than Azure allows; that request is the margin.
    `lateness`: how late a slot may still be used (the shared pacer hands out slots reserved a
    moment before); the schedule gives that much more margin."""

    per_second: float  # the paced rate (after scale and headroom)
    grace: float  # how late a slot may be used without exceeding the limit (the margin, in seconds)

    def earliest(self, state: State, now: float) -> float:
        """The earliest slot a new request may take (may be before `now`: there is room)."""
        raise NotImplementedError

    def take(self, state: State, slot: float) -> State:
        """The state after a request took `slot` (at or after earliest())."""
        raise NotImplementedError

    def hold(self, state: State, until: float) -> State:
        """The state after Azure said "not before `until`"."""
        raise NotImplementedError

    def idle(self, state: State, now: float) -> bool:
        """Whether the state is as good as fresh at `now` (it can be forgotten)."""
        raise NotImplementedError

    def slots(self, state: State, now: float, n: int, horizon: float) -> tuple[list[float], State]:
        """Up to `n` consecutive slots no later than `horizon`, and the state after taking them."""
        out: list[float] = []
        for _ in range(n):
            slot = max(now, self.earliest(state, now))
            if slot > horizon:
                break
            state = self.take(state, slot)
            out.append(slot)
        return out, state


class Gcra(Schedule):
    """A token bucket as a GCRA schedule: a request may go at `tat - tau`; each one moves `tat` on
    by one interval."""

    def __init__(self, rate: Rate, scale: float = 1.0, headroom: float = 0.95, lateness: float = 0.0) -> None:
        self.per_second = rate.per_second * scale * headroom
        self.interval = 1 / self.per_second
        # `burst - 1` at once (at least 1), less what a slot used `lateness` late could cost.
        self.tau = max((max(rate.burst - 1, 1) - 1) * self.interval - max(lateness - self.interval, 0.0), 0.0)
        self.grace = max(self.interval, lateness)

    def earliest(self, state: State, now: float) -> float:
        return state[0] - self.tau if state else -math.inf

    def take(self, state: State, slot: float) -> State:
        return (max(state[0] if state else slot, slot) + self.interval,)

    def hold(self, state: State, until: float) -> State:
        return (max(state[0] if state else until, until + self.tau),)

    def idle(self, state: State, now: float) -> bool:
        return not state or state[0] <= now


class SlidingWindow(Schedule):
    """At most `count - 1` slots in any `seconds` + WINDOW_MARGIN_SECONDS (or + `lateness`, if
    more), handed out in order. (The rates' headroom, 5 % of 20 s, would cost a second per window.)"""

    def __init__(self, window: Window, scale: float = 1.0, headroom: float = 0.95, lateness: float = 0.0) -> None:
        self.count = max(window.count - 1, 1)
        margin = max(WINDOW_MARGIN_SECONDS / scale, WINDOW_MARGIN_FLOOR_SECONDS, lateness)
        self.seconds = window.seconds / scale + margin
        self.per_second = self.count / self.seconds
        self.grace = max(self.seconds - window.seconds / scale, lateness)

    def earliest(self, state: State, now: float) -> float:
        if not state:
            return -math.inf
        not_before, times = state[0], state[1:]
        earliest = max(not_before, times[-1]) if times else not_before
        if len(times) >= self.count:
            earliest = max(earliest, times[-self.count] + self.seconds)
        return earliest

    def take(self, state: State, slot: float) -> State:
        not_before, times = (state[0], state[1:]) if state else (-math.inf, ())
        return (not_before, *(*times, slot)[-self.count :])

    def hold(self, state: State, until: float) -> State:
        return (max(state[0], until), *state[1:]) if state else (until,)

    def idle(self, state: State, now: float) -> bool:
        return not state or (state[0] <= now and (len(state) == 1 or state[-1] <= now - self.seconds))


def schedule_for(limit: Limit, scale: float = 1.0, headroom: float = 0.95, lateness: float = 0.0) -> Schedule:
    if isinstance(limit, Window):
        return SlidingWindow(limit, scale, headroom, lateness)
    return Gcra(limit, scale, headroom, lateness)


def share_of(limits: dict[str, Limit], share: float) -> dict[str, Limit]:
    """The same limits, `share` of each (a process's part when it cannot learn what the others use)."""
    out: dict[str, Limit] = {}
    for name, limit in limits.items():
        if isinstance(limit, Window):
            out[name] = Window(max(int(limit.count * share), 2), limit.seconds)
        else:
            out[name] = Rate(max(limit.burst * share, 2), limit.per_second * share)
    return out


# ------------------------------------------------------------------------------------ the pacer


class Pacer:
    """Schedules per bucket kept in memory; `acquire` blocks until the request's slot (thread-safe).

    `scale` multiplies every rate (Azure's limits run `scale` times faster: benchmarks against a
    sped-up emulator); `headroom` and the one-fewer burst: see Schedule."""

    def __init__(
        self,
        rates: dict[str, Limit] | None = None,
        *,
        scale: float = 1.0,
        headroom: float = 0.95,
        max_wait_seconds: float = DEFAULT_MAX_WAIT,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if scale <= 0:
            raise ValueError("scale must be > 0")
        self.limits = dict(rates or AZURE_RATES)
        self.schedules = {k: schedule_for(v, scale, headroom) for k, v in self.limits.items()}
        self.scale = scale
        self.headroom = headroom
        self.max_wait = max_wait_seconds / scale
        self._state: dict[tuple[str, ...], State] = {}
        self._lock = threading.Lock()
        self._in_flight: dict[tuple[str, ...], list[Any]] = {}  # key -> [lock, users]
        self._clock = clock
        self._sleep = sleep
        self.waited_seconds = 0.0  # total time requests were held back (reported by benchmarks)

    def reserve(self, keys: list[tuple[str, ...]]) -> float:
        """Reserve the earliest slot every bucket allows; the seconds to wait for it."""
        with self._lock:
            now = self._clock()
            slot = max([now, *(self.schedules[k[0]].earliest(self._state.get(k, ()), now) for k in keys)])
            wait = slot - now
            if wait > self.max_wait:
                raise Throttled(
                    f"pacing ARM requests under Azure's limits: next slot in {wait:.0f} s", wait + 1 / self.scale
                )
            for k in keys:
                self._state[k] = self.schedules[k[0]].take(self._state.get(k, ()), slot)
            if len(self._state) > 10_000:  # forget idle schedules (subscriptions, regions)
                self._state = {k: s for k, s in self._state.items() if not self.schedules[k[0]].idle(s, now)}
            self.waited_seconds += wait
        return wait

    def acquire(self, keys: list[tuple[str, ...]]) -> None:
        """Reserve the earliest slot every bucket allows and wait for it.

        Raises Throttled instead of waiting longer than `max_wait_seconds` (Azure time): that is a
        job for the work queue, not for a worker thread."""
        keys = [k for k in keys if k[0] in self.schedules]
        if not keys:
            return
        wait = self.reserve(keys)
        if wait > 0:
            self._sleep(wait)  # pacing before sending, not a retry

    def hold(self, key: tuple[str, ...], seconds: float) -> None:
        """Azure refused a request of this bucket for `seconds`: no thread of ours sends one sooner."""
        if key[0] not in self.schedules:
            return
        with self._lock:
            now = self._clock()
            self._state[key] = self.schedules[key[0]].hold(self._state.get(key, ()), now + seconds)

    @contextlib.contextmanager
    def one_at_a_time(self, key: tuple[str, ...] | None) -> Iterator[None]:
        """At most one request per `key` in flight in this process (None: no constraint). Waits for
        the one in flight, at most `max_wait_seconds`, else Throttled (the queue waits better)."""
        if key is None:
            yield
            return
        with self._lock:
            entry = self._in_flight.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            started = time.monotonic()
            if not entry[0].acquire(timeout=self.max_wait):
                raise Throttled(
                    "another federated credential write on this identity is still in flight",
                    retry_policy.CREDENTIAL_WRITE_BUSY_SECONDS,
                )
            self.waited_seconds += time.monotonic() - started
            try:
                yield
            finally:
                entry[0].release()
        finally:
            with self._lock:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._in_flight[key]


def _retry_after_seconds(headers: Any) -> float | None:
    for name, factor in (("retry-after-ms", 0.001), ("x-ms-retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw:
            try:
                return float(raw) * factor
            except ValueError:
                return None  # an HTTP date: rare for ARM; azure-core still honours it
    return None


def _error_code(response: Any) -> str:
    try:
        error = json.loads(response.text()).get("error") or {}
        return str(error.get("code") or "")
    except Exception:  # noqa: BLE001 - a 429 without a JSON body simply has no code
        return ""


class PacingPolicy(HTTPPolicy):  # type: ignore[type-arg]
    """Per-attempt pipeline policy: one federated credential write per identity in flight, wait for
    the slot before sending; learn from 429s.

    A 429 whose Retry-After is longer than the pacer's `max_wait_seconds` ends the call with a
    Throttled at once: azure-core would otherwise sleep that long in a worker thread, three
    times over; the work queue waits better."""

    def __init__(self, pacer: Pacer) -> None:
        super().__init__()
        self.pacer = pacer

    def send(self, request: Any) -> Any:
        http = request.http_request
        method, url = http.method, http.url
        keys = buckets_for(method, url, getattr(http, "body", None) if method.upper() == "PUT" else None)
        with self.pacer.one_at_a_time(one_at_a_time_key(method, url)):
            self.pacer.acquire(keys)
            response = self.next.send(request)
        self._learn(response.http_response, keys)
        return response

    def _learn(self, http: Any, keys: list[tuple[str, ...]]) -> None:
        if http.status_code != 429:
            return
        seconds = _retry_after_seconds(http.headers)
        if seconds is None or not keys:
            return
        # ARM's bucket when ARM says so, else the RP's own when the request counts against one.
        held = keys[:1] if _error_code(http) == "SubscriptionRequestsThrottled" else keys[-1:]
        for key in held:
            self.pacer.hold(key, seconds)
        if seconds > self.pacer.max_wait:
            raise Throttled(f"throttled by ARM for {seconds:.0f} s", seconds)
