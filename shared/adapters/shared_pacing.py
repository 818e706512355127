"""Pacing shared by every process of the app: one budget for Azure's limits, kept in Azure Tables.

Why: `shared.adapters.pacing.Pacer` paces one process. Azure's limits are per principal and
subscription (and region), not per process: four worker processes of one app (or four instances)
that each pace alone together send four times what the limits allow, and meet 429s.

How: each bucket's schedule (shared.adapters.pacing.Schedule: a GCRA theoretical arrival time for
a token bucket, the last slots for a window) is one entity of a table of its own (PartitionKey
"pacing", RowKey a hash of the bucket's key, the state as JSON). A process reserves a *block* of
consecutive slots at once: it computes them from the state, and writes the new state with If-Match
on the ETag it read; a 412 means another process reserved first: read again and compute again.
The slots are then handed out to this process's threads in order, each waiting for its own. No
process ever takes a slot another one reserved, so together they keep to the one schedule.
(This module decides the slots; shared.adapters.bucket_table keeps the entities.)

A request that counts against two buckets (an identity PUT: ARM writes and the RP's window of
identity creates) takes one slot in both at once: one query reads both entities, one entity group
transaction writes both, conditional on both ETags. (Taken one after the other, the first slot
would go stale while the request waits for the second: a token bucket's slot is cheap to take
again, a window's costs a whole window.)

Cost: a block costs a read and a conditional write; or the write alone while this process seems
to be the only one writing the entity (the ETag did not change between our last two looks: our own
last write is reused, and a 412 says when that stopped being true). A block holds the requests
waiting in this process for the bucket plus its recent pace times `validity` (AHEAD_SECONDS when
the bucket is backlogged), at most BLOCK_SECONDS' worth of the limit; a window's block only the
requests waiting (a slot not used is lost for the whole window). Two processes that read the same
state race for the write: the loser reads again after a few milliseconds of jitter (for at most
SHARED_PACING_CONTENTION_SECONDS; then the request goes back to the queue, Throttled: never by
the local fallback schedule, whose budget would come on top of the shared one). Measured
(the `stats`; benchmarks/burst.py reports them): about 0.1-0.2 table operations per request for a
saturated bucket, 2 per identity PUT, 0.5-0.9 per ARM request overall in a burst of onboardings
by four processes, whose per-process pace is modest.

Lateness: a reserved slot may be used a little late (a thread slow to wake), at most `validity`
late; older slots are dropped (charged in the table, never sent: a small waste, never an excess),
and the schedules keep that much more margin (Schedule `lateness`).

Clock: the wall clock (time.time): processes on other machines share the table; NTP keeps clocks
within milliseconds, which the margins cover.

When the table cannot be reached (one attempt, short timeouts: shared.domain.retry_policy.PACING_TABLE),
the process paces alone at KEYLESS_PACING_FALLBACK_SHARE of each limit for
SHARED_PACING_RETRY_SECONDS, then asks the table again. Nothing waits on storage for longer than
those timeouts, and no request waits for its slot longer than the pacer's `max_wait_seconds`.
A 429 still comes through (another app, a throttle with no published figure): its Retry-After holds
the bucket in this process and, through the table, in every other.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from shared.adapters.bucket_table import BucketEntity, BucketTable, StorageDown
from shared.adapters.counting import counting_hooks
from shared.adapters.pacing import (
    DEFAULT_MAX_WAIT,
    Limit,
    Pacer,
    Rate,
    Schedule,
    SlidingWindow,
    schedule_for,
    share_of,
)
from shared.domain import retry_policy
from shared.domain.errors import Throttled
from shared.domain.naming import short_hash
from shared.domain.settings import Settings

VALIDITY_SECONDS = 2.0
"""How late (Azure seconds) a reserved slot of a token bucket may still be used. It costs that much
of the bucket's burst as margin (ARM reads: about 47 of 250; writes: about 18 of 200). A window keeps its own
margin (pacing.WINDOW_MARGIN_SECONDS: 79 in 21 s against 80 in 20 s)."""
AHEAD_SECONDS = 2.0
"""When a bucket is backlogged (its next free slot in the future), a block holds, beyond the
requests waiting, this process's use of the bucket over the last Azure second times this: the next
AHEAD_SECONDS' worth if the pace holds. With room in the bucket, `validity`'s worth: its slots are
all at once, and go stale after `validity`."""
BLOCK_SECONDS = 2.0
"""At most this much of a limit (Azure seconds' worth) in one reservation."""


@dataclasses.dataclass
class SharedPacingStats:
    """What the shared pacer did in this process (benchmarks and tests read it)."""

    table_reads: int = 0
    table_writes: int = 0
    conflicts: int = 0  # writes refused because another process wrote first (412)
    reservations: int = 0
    slots_reserved: int = 0
    slots_handed: int = 0  # slots given to requests (one per request and bucket)
    slots_dropped: int = 0  # reserved, never used (too late, or under a 429's hold)
    joint_writes: int = 0  # entities written by transactions (one slot in two buckets: identity PUTs)
    fallback_requests: int = 0  # requests paced by the local fallback schedule (storage down only)
    contended: int = 0  # requests handed back after losing every race for the table for a while
    storage_failures: int = 0
    by_bucket: dict[str, collections.Counter[str]] = dataclasses.field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )  # the same figures per bucket name

    @property
    def table_ops(self) -> int:
        return self.table_reads + self.table_writes

    def as_dict(self) -> dict[str, Any]:
        figures = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "by_bucket"}
        return {**figures, "table_ops": self.table_ops, "by_bucket": {k: dict(v) for k, v in self.by_bucket.items()}}


@dataclasses.dataclass
class _Bucket:
    """A bucket as this process paces it: its entity of the table, and the slots reserved from it."""

    entity: BucketEntity
    cond: threading.Condition = dataclasses.field(default_factory=threading.Condition)
    slots: collections.deque[float] = dataclasses.field(default_factory=collections.deque)
    handed: collections.deque[float] = dataclasses.field(default_factory=lambda: collections.deque(maxlen=1024))
    waiting: int = 0  # threads of this process wanting a slot of this bucket
    busy: bool = False  # a thread is talking to the table about this bucket
    first_free: float = -math.inf  # the earliest free slot at our last look (it only moves forward)
    not_before: float = -math.inf  # a 429's hold, in this process

    @property
    def key(self) -> tuple[str, ...]:
        return self.entity.key

    @property
    def row(self) -> str:
        return self.entity.row


class SharedPacer(Pacer):
    """A Pacer whose schedules live in an Azure Table shared by every process (see the module
    docstring); `one_at_a_time` stays per process. `table`: an azure.data.tables TableClient (or
    anything with its create_table, get_entity, query_entities, create_entity, update_entity and
    submit_transaction), whose rows shared.adapters.bucket_table keeps."""

    def __init__(
        self,
        table: Any,
        rates: dict[str, Limit] | None = None,
        *,
        scale: float = 1.0,
        headroom: float = 0.95,
        max_wait_seconds: float = DEFAULT_MAX_WAIT,
        fallback_share: float = 0.25,
        validity_seconds: float = VALIDITY_SECONDS,
        retry_seconds: float = retry_policy.SHARED_PACING_RETRY_SECONDS,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(
            rates, scale=scale, headroom=headroom, max_wait_seconds=max_wait_seconds, clock=clock, sleep=sleep
        )
        self.validity = validity_seconds / scale
        self.shared: dict[str, Schedule] = {
            k: schedule_for(v, scale, headroom, lateness=self.validity if isinstance(v, Rate) else 0.0)
            for k, v in self.limits.items()
        }
        self.fallback = Pacer(
            share_of(self.limits, fallback_share),
            scale=scale,
            headroom=headroom,
            max_wait_seconds=max_wait_seconds,
            clock=clock,
            sleep=sleep,
        )
        self.stats = SharedPacingStats()
        self._table = BucketTable(table, self._count, retry_seconds, clock)
        self._buckets: dict[tuple[str, ...], _Bucket] = {}

    # --- the Pacer interface -----------------------------------------------------------------

    def acquire(self, keys: list[tuple[str, ...]]) -> None:
        keys = [k for k in keys if k[0] in self.shared]
        if not keys:
            return
        if not self._table.down():
            try:
                self._acquire_shared(keys)
                return
            except StorageDown:
                pass
        self._count("fallback_requests")
        wait = self.fallback.reserve(keys)
        self._waited(wait)
        if wait > 0:
            self._sleep(wait)

    def hold(self, key: tuple[str, ...], seconds: float) -> None:
        """Azure refused a request of this bucket for `seconds`: no thread of any process sends one
        sooner (this one at once; the others through the table, best effort)."""
        if key[0] not in self.shared:
            return
        self.fallback.hold(key, seconds)
        until = self._clock() + seconds
        b = self._bucket(key)
        with b.cond:
            b.not_before = max(b.not_before, until)
        if self._table.down():
            return
        sched = self.shared[key[0]]
        try:
            with self._talking(b):
                for _ in range(retry_policy.SHARED_PACING_CONFLICT_ROUNDS):
                    if not (b.entity.known and b.entity.solo):
                        self._table.read(b.entity)
                    if self._table.write(b.entity, sched.hold(b.entity.state, until)):
                        return
        except StorageDown:
            return  # held here; the others meet the 429 themselves

    # --- slots --------------------------------------------------------------------------------

    def _acquire_shared(self, keys: list[tuple[str, ...]]) -> None:
        """The request's slot, waited for. One bucket: from this process's block of that bucket.
        Several (an identity PUT: ARM writes and the RP's window): one slot for all, reserved in
        every bucket at once (one entity group transaction): a slot taken in one and then left
        to go stale while waiting for the other would be wasted, and a window's costs a window."""
        if len(keys) == 1:
            slot = self._next_slot(self._bucket(keys[0]))
        else:
            slot = self._reserve_together(sorted({self._bucket(k).row: self._bucket(k) for k in keys}.items()))
        self._sleep_until(slot)

    def _sleep_until(self, when: float) -> None:
        wait = when - self._clock()
        if wait > 0:
            self._waited(wait)
            self._sleep(wait)  # pacing before sending, not a retry

    def _next_slot(self, b: _Bucket) -> float:
        with b.cond:
            b.waiting += 1
            try:
                while True:
                    now = self._clock()
                    slot = self._pop(b, now)
                    if slot is not None:
                        return slot
                    if b.first_free > now + self.max_wait:
                        raise self._throttled(b.first_free - now)
                    if b.busy:
                        b.cond.wait(1.0)  # another thread is reserving for us all
                        continue
                    b.busy = True
                    n = self._block(b, now)
                    b.cond.release()
                    try:
                        slots = self._reserve_block(b, n)
                    finally:
                        b.cond.acquire()
                        b.busy = False
                        b.cond.notify_all()
                    b.slots.extend(slots)
            finally:
                b.waiting -= 1

    def _pop(self, b: _Bucket, now: float) -> float | None:
        grace = self.shared[b.key[0]].grace
        while b.slots:
            slot = b.slots.popleft()
            if slot < now - grace or slot < b.not_before:
                self._count("slots_dropped", bucket=b)
                continue
            b.handed.append(now)
            self._count("slots_handed", bucket=b)
            return slot
        return None

    def _block(self, b: _Bucket, now: float) -> int:
        """Slots to reserve: the threads waiting, plus this process's use of the bucket over the
        last Azure second times AHEAD_SECONDS; at most BLOCK_SECONDS' worth of the limit."""
        sched = self.shared[b.key[0]]
        second = 1 / self.scale
        if isinstance(sched, SlidingWindow):  # a slot not used is gone for the whole window: none ahead
            return max(1, min(b.waiting, sched.count))
        recent = sum(1 for t in b.handed if t > now - second)
        ahead = AHEAD_SECONDS * second if b.first_free > now else self.validity
        wanted = b.waiting + math.ceil(recent * ahead / second)
        return max(1, min(wanted, math.floor(sched.per_second * BLOCK_SECONDS * second)))

    def _reserve_block(self, b: _Bucket, n: int) -> list[float]:
        sched = self.shared[b.key[0]]
        for raced in self._rounds():
            if not (b.entity.known and b.entity.solo):  # else our own last write is most likely still the entity
                if raced:  # another process wrote between our read and our write: step aside a moment
                    self._step_aside(raced)
                self._table.read(b.entity)
            now = self._clock()
            state = sched.hold(b.entity.state, b.not_before) if b.not_before > now else b.entity.state
            first = max(now, sched.earliest(state, now))
            b.first_free = first
            if first > now + self.max_wait:
                raise self._throttled(first - now)
            slots, state = sched.slots(state, now, n, now + self.max_wait)
            if self._table.write(b.entity, state):
                self._count("reservations", bucket=b)
                self._count("slots_reserved", len(slots), bucket=b)
                return slots
        raise self._contended()

    def _reserve_together(self, rows: list[tuple[str, _Bucket]]) -> float:
        """One slot in every bucket at once: the earliest all allow, written in one transaction."""
        buckets = [b for _, b in rows]
        with contextlib.ExitStack() as stack:
            for b in buckets:  # in row order: two threads never wait for each other's
                stack.enter_context(self._talking(b))
            for attempt in self._rounds():
                stale = [b.entity for b in buckets if not (b.entity.known and b.entity.solo)]
                if attempt > 1:  # lost a race with another process's write: step aside a moment
                    self._step_aside(attempt)
                if len(stale) == 1:
                    self._table.read(stale[0])
                elif stale:
                    self._table.read_together(stale)
                now = self._clock()
                scheds = [self.shared[b.key[0]] for b in buckets]
                states = [
                    sched.hold(b.entity.state, b.not_before) if b.not_before > now else b.entity.state
                    for sched, b in zip(scheds, buckets, strict=True)
                ]
                slot = max([now, *(sched.earliest(st, now) for sched, st in zip(scheds, states, strict=True))])
                if slot > now + self.max_wait:
                    raise self._throttled(slot - now)
                taken = [(b.entity, sched.take(st, slot)) for b, sched, st in zip(buckets, scheds, states, strict=True)]
                if self._table.write_together(taken):
                    for b in buckets:
                        self._count("reservations", bucket=b)
                        self._count("slots_reserved", bucket=b)
                        self._count("slots_handed", bucket=b)
                    return slot
        raise self._contended()

    def _rounds(self) -> Iterator[int]:
        """Rounds of read-compute-write, until one wins or SHARED_PACING_CONTENTION_SECONDS pass.
        Lost rounds never fall back to the local schedule: its budget would come on top of the
        shared one (a window of 80 identity creates once let 81 through that way)."""
        deadline = self._clock() + retry_policy.SHARED_PACING_CONTENTION_SECONDS
        n = 0
        while n == 0 or self._clock() < deadline:
            yield n
            n += 1

    def _step_aside(self, raced: int) -> None:
        self._sleep(random.uniform(0, min(0.005 * 2**raced, 0.1)))  # noqa: S311 - jitter, not security

    def _contended(self) -> Throttled:
        self._count("contended")
        return Throttled(
            f"pacing table contended for {retry_policy.SHARED_PACING_CONTENTION_SECONDS:g} s: handed back to the queue",
            1 / self.scale,
        )

    def _throttled(self, wait: float) -> Throttled:
        return Throttled(f"pacing ARM requests under Azure's limits: next slot in {wait:.0f} s", wait + 1 / self.scale)

    # --- buckets --------------------------------------------------------------------------------

    def _bucket(self, key: tuple[str, ...]) -> _Bucket:
        with self._lock:
            b = self._buckets.get(key)
            if b is None:
                b = self._buckets[key] = _Bucket(BucketEntity(key, short_hash("|".join(key), length=40)))
            return b

    @contextmanager
    def _talking(self, b: _Bucket) -> Iterator[None]:
        """This thread alone talks to the table about `b` (the others wait, then use what it learnt)."""
        with b.cond:
            while b.busy:
                b.cond.wait(1.0)
            b.busy = True
        try:
            yield
        finally:
            with b.cond:
                b.busy = False
                b.cond.notify_all()

    # --- bookkeeping ----------------------------------------------------------------------------

    def _count(self, name: str, n: int = 1, bucket: _Bucket | BucketEntity | None = None) -> None:
        with self._lock:
            setattr(self.stats, name, getattr(self.stats, name) + n)
            if bucket is not None:
                self.stats.by_bucket[bucket.key[0]][name] += n

    def _waited(self, seconds: float) -> None:
        with self._lock:
            self.waited_seconds += seconds


def pacing_table_name(ledger_table: str) -> str:
    """The pacing table: the ledger's name plus "pacing" (a table of its own: the ledger's readers
    never meet its entities); at most 63 characters."""
    return ledger_table[:57] + "pacing"


def pacing_table(settings: Settings, credential: Any) -> Any:
    """A TableClient for the pacing table, on AzureWebJobsStorage as the host reads it (a connection
    string, or the table service URI with the storage credential: shared.domain.storage), one
    attempt, short timeouts (retry_policy.PACING_TABLE). `credential`: the app's (the storage
    credential falls back to it)."""
    from azure.data.tables import TableClient

    from shared.adapters.credentials import storage_credential

    connect, read = retry_policy.PACING_TABLE.timeouts()
    options: dict[str, Any] = {
        **retry_policy.PACING_TABLE.retry.kwargs(),
        "connection_timeout": connect,
        "read_timeout": read,
        **counting_hooks("table"),
    }
    if settings.ca_bundle:
        options["connection_verify"] = settings.ca_bundle
    name = pacing_table_name(settings.table_name)
    if settings.storage.connection_string:
        return TableClient.from_connection_string(settings.storage.connection_string, name, **options)
    endpoint = settings.storage.endpoint("table")
    if not endpoint:
        raise ValueError("shared pacing needs AzureWebJobsStorage (a connection string or a table service URI)")
    return TableClient(endpoint, name, credential=storage_credential(settings, credential), **options)


def pacer_from_settings(settings: Settings, credential: Any) -> Pacer | None:
    """Azure's limits × KEYLESS_ARM_PACING_SCALE (None when 0), shared through the pacing table
    when KEYLESS_SHARED_PACING is on, else this process alone."""
    scale = settings.arm_pacing_scale
    if scale <= 0:
        return None
    if not settings.shared_pacing:
        return Pacer(scale=scale)
    return SharedPacer(pacing_table(settings, credential), scale=scale, fallback_share=settings.pacing_fallback_share)
