"""Pacing arithmetic and the shared pacer's logic, on a fake clock and an in-memory table.

The pacer is judged from Azure's side: every request's send time goes through an exact model of
the published limit (a token bucket, a sliding window), which counts what Azure would refuse."""

from __future__ import annotations

import collections
import itertools
import json
import random
import re
import threading
from typing import Any

import pytest
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError, ServiceRequestError

from shared.adapters.pacing import AZURE_RATES, Gcra, Pacer, Rate, SlidingWindow, Window, region_of, share_of
from shared.adapters.shared_pacing import SharedPacer, pacer_from_settings, pacing_table, pacing_table_name
from shared.domain import retry_policy
from shared.domain.errors import Throttled
from shared.domain.settings import Settings, SettingsError

READS, WRITES = ("arm-reads", "sub"), ("arm-writes", "sub")
CREATE = [WRITES, ("msi-identity-creates", "sub", "eastus")]


class FakeTime:
    """One clock for every 'process' of a test; sleeping moves it on."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 3))
        self.now += seconds


class Entity(dict):
    metadata: dict[str, Any]


class FakeTable:
    """What the shared pacer needs of an Azure Table: entities with ETags, If-Match (412 when the
    entity changed), insert conflicts (409), and an outage switch."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], tuple[dict, str]] = {}
        self.ops: collections.Counter[str] = collections.Counter()
        self.down = False
        self.always_conflict = False
        self._etags = itertools.count(1)
        self._lock = threading.Lock()

    def _op(self, name: str) -> None:
        self.ops[name] += 1
        if self.down:
            raise ServiceRequestError("storage unreachable")

    def create_table(self) -> None:
        self._op("create_table")

    def get_entity(self, pk: str, rk: str) -> Entity:
        with self._lock:
            self._op("get")
            if (pk, rk) not in self.rows:
                raise ResourceNotFoundError("not found")
            data, etag = self.rows[(pk, rk)]
            entity = Entity(data)
            entity.metadata = {"etag": etag}
            return entity

    def create_entity(self, entity: dict) -> dict:
        with self._lock:
            self._op("create")
            key = (entity["PartitionKey"], entity["RowKey"])
            if key in self.rows or self.always_conflict:
                raise ResourceExistsError("exists")
            etag = f"W/{next(self._etags)}"
            self.rows[key] = (dict(entity), etag)
            return {"etag": etag}

    def update_entity(self, entity: dict, mode: Any, etag: str, match_condition: Any) -> dict:
        with self._lock:
            self._op("update")
            key = (entity["PartitionKey"], entity["RowKey"])
            if key not in self.rows:
                raise ResourceNotFoundError("gone")
            if self.rows[key][1] != etag or self.always_conflict:
                raise ResourceModifiedError("412")
            new = f"W/{next(self._etags)}"
            self.rows[key] = (dict(entity), new)
            return {"etag": new}

    def query_entities(self, query: str, parameters: dict[str, str]) -> list[Entity]:
        """Only the query the pacer sends: one partition, some row keys."""
        with self._lock:
            self._op("query")
            (pk,) = re.findall(r"PartitionKey eq '([^']+)'", query)
            out = []
            for name in re.findall(r"RowKey eq @(\w+)", query):
                if (pk, parameters[name]) in self.rows:
                    data, etag = self.rows[(pk, parameters[name])]
                    entity = Entity(data)
                    entity.metadata = {"etag": etag}
                    out.append(entity)
            return out

    def submit_transaction(self, operations: list) -> list[dict]:
        """All or none: every operation checked before any is applied."""
        with self._lock:
            self._op("transaction")
            for op in operations:
                key = (op[1]["PartitionKey"], op[1]["RowKey"])
                if op[0] == "create" and (key in self.rows or self.always_conflict):
                    raise ResourceExistsError("exists")
                if op[0] == "update" and (key not in self.rows or self.rows[key][1] != op[2]["etag"]):
                    raise ResourceModifiedError("412")
            out = []
            for op in operations:
                etag = f"W/{next(self._etags)}"
                self.rows[(op[1]["PartitionKey"], op[1]["RowKey"])] = (dict(op[1]), etag)
                out.append({"etag": etag})
            return out

    @property
    def total(self) -> int:
        return sum(v for k, v in self.ops.items() if k != "create_table")


def refused_by_bucket(times: list[float], rate: Rate) -> int:
    """How many of these requests a token bucket (size, refill per second) would refuse."""
    tokens, stamp, refused = rate.burst, None, 0
    for t in sorted(times):
        if stamp is not None:
            tokens = min(rate.burst, tokens + (t - stamp) * rate.per_second)
        stamp = t
        if tokens < 1 - 1e-9:
            refused += 1
        else:
            tokens -= 1
    return refused


def refused_by_window(times: list[float], window: Window) -> int:
    """How many a sliding window (never more than `count` in any `seconds`) would refuse."""
    taken: list[float] = []
    refused = 0
    for t in sorted(times):
        if len([x for x in taken if x > t - window.seconds]) >= window.count:
            refused += 1
        else:
            taken.append(t)
    return refused


def refused(sent: dict[tuple[str, ...], list[float]]) -> int:
    total = 0
    for key, times in sent.items():
        limit = AZURE_RATES[key[0]]
        total += refused_by_window(times, limit) if isinstance(limit, Window) else refused_by_bucket(times, limit)
    return total


# ------------------------------------------------------------------------------------------ schedules


def test_a_bucket_paces_one_fewer_at_once_then_at_the_rate():
    g = Gcra(Rate(200, 10), headroom=1.0)
    slots, state = g.slots((), 0.0, 250, horizon=100)
    assert slots[:199] == pytest.approx([0.0] * 199, abs=1e-9)
    assert slots[199] == pytest.approx(0.1) and slots[-1] == pytest.approx(5.1)
    assert refused_by_bucket(slots, Rate(200, 10)) == 0
    held = g.hold(state, 30.0)
    assert g.earliest(held, 0.0) == pytest.approx(30.0), "a 429's hold: nothing before it"


def test_a_window_paces_79_at_once_then_after_a_slightly_longer_window():
    w = SlidingWindow(Window(80, 20.0))  # 79 in any 21 s
    slots, _ = w.slots((), 0.0, 200, horizon=1_000)
    assert slots[:79] == pytest.approx([0.0] * 79, abs=1e-9)
    assert slots[79] == pytest.approx(21.0)
    assert refused_by_window(slots, Window(80, 20.0)) == 0
    late = [s + 0.95 for s in slots[:79]] + slots[79:]  # the first 79 sent late, within the margin
    assert refused_by_window(late, Window(80, 20.0)) == 0
    assert refused_by_window([0.0] * 80 + [5.0], Window(80, 20.0)) == 1, "the model refuses what it should"


def test_scale_speeds_up_rates_and_shortens_windows():
    assert Gcra(Rate(250, 25), scale=10, headroom=1.0).interval == pytest.approx(0.004)
    assert SlidingWindow(Window(80, 20.0), scale=10, headroom=1.0).seconds == pytest.approx(2.3)


def test_the_region_comes_from_the_body():
    assert region_of(b'{"location": "West Europe"}') == "westeurope"
    assert region_of('{"location": "eastus", "tags": {}}') == "eastus"
    assert region_of(None) == region_of(b"not json") == region_of('{"tags": {}}') == "*"


def test_a_share_of_the_limits():
    quarter = share_of(AZURE_RATES, 0.25)
    assert quarter["arm-reads"] == Rate(62.5, 6.25)
    assert quarter["msi-identity-creates"] == Window(20, 20.0)


# ------------------------------------------------------------------------------------------ the shared pacer


def pacers(n: int, t: FakeTime, table: FakeTable, **kwargs: Any) -> list[SharedPacer]:
    return [SharedPacer(table, clock=t.clock, sleep=t.sleep, **kwargs) for _ in range(n)]


def traffic(pacer_of: Any, t: FakeTime, requests: int, threads: int = 3, seed: int = 7) -> tuple[dict, int, int]:
    """`requests` requests from 4 processes of `threads` threads each, every thread sending one after
    the other (a pause of up to 20 ms between), together far faster than the limits allow. Simulated:
    the calls run one at a time in the order of the times they start at, each at its own time on
    the shared fake clock (so a thread's wait does not hold up the others).
    (send times per bucket, sent, handed to the queue)."""
    rng = random.Random(seed)
    sent: dict[tuple[str, ...], list[float]] = collections.defaultdict(list)
    ready = {(p, n): t.now + rng.uniform(0, 0.02) for p in range(4) for n in range(threads)}
    ok = queued = 0
    for _ in range(requests):
        actor = min(ready, key=lambda a: ready[a])
        t.now = ready[actor]
        keys = rng.choice([[READS]] * 6 + [[WRITES]] * 2 + [CREATE])
        try:
            pacer_of(actor[0]).acquire(keys)
        except Throttled:
            queued += 1
        else:
            ok += 1
            for k in keys:
                sent[k].append(t.now)
        ready[actor] = t.now + rng.uniform(0, 0.02)
    return sent, ok, queued


def elapsed(sent: dict[tuple[str, ...], list[float]]) -> float:
    times = [x for v in sent.values() for x in v]
    return max(times) - min(times)


def test_four_processes_keep_to_one_budget_for_a_fraction_of_a_table_operation_each():
    t, table = FakeTime(), FakeTable()
    shared = pacers(4, t, table)
    sent, ok, queued = traffic(lambda i: shared[i], t, 4000)
    assert ok > 3000, (ok, queued)
    assert refused(sent) == 0, "Azure would refuse none of them"
    one = FakeTime()
    single = Pacer(clock=one.clock, sleep=one.sleep)  # one schedule in memory for all: the pace to match
    ideal, _, _ = traffic(lambda i: single, one, 4000)
    # Blocks reserved ahead are lost when a process's threads turn to other work (an identity create
    # waiting for the window): a little slower than one schedule for all, never over the limits.
    assert elapsed(sent) < 1.25 * elapsed(ideal), "close to that pace"
    assert sum(p.stats.fallback_requests for p in shared) == 0
    assert sum(p.stats.conflicts for p in shared) > 0, "412s happened, and were read again"
    # Twelve threads always waiting, one request in nine an identity create (two buckets, one
    # query and one transaction each): about 0.6 table operations per request here.
    assert table.total / ok < 0.75, f"{table.total} table operations for {ok} requests"


def test_four_processes_pacing_alone_exceed_the_limits():
    t = FakeTime()
    alone = [Pacer(clock=t.clock, sleep=t.sleep) for _ in range(4)]
    sent, ok, _ = traffic(lambda i: alone[i], t, 3000)
    assert refused(sent) > 0.05 * ok, "what the shared table prevents"


def test_a_429_held_in_one_process_holds_the_others():
    t, table = FakeTime(), FakeTable()
    a, b = pacers(2, t, table)
    a.acquire([READS])
    a.hold(READS, 5.0)
    b.acquire([READS])
    assert t.slept == [5.0]


def test_a_backlog_past_the_longest_wait_is_handed_to_the_queue_without_asking_the_table_again():
    t, table = FakeTime(), FakeTable()
    (p,) = pacers(1, t, table)
    for _ in range(79):
        p.acquire(CREATE)
    with pytest.raises(Throttled) as first:
        p.acquire(CREATE)
    assert first.value.delay_seconds > 20
    ops = table.total
    with pytest.raises(Throttled):
        p.acquire(CREATE)
    assert table.total == ops, "the free slot is known to be too far: no table operation"


def test_storage_down_paces_alone_at_a_share_then_asks_the_table_again():
    t, table = FakeTime(), FakeTable()
    (p,) = pacers(1, t, table, fallback_share=0.25, retry_seconds=30)
    p.acquire([WRITES])
    table.down = True
    for _ in range(60):
        p.acquire([WRITES])  # never blocks on storage, never raises for it
    assert p.stats.storage_failures == 1, "asked once, then alone until the retry"
    assert p.stats.fallback_requests == 60
    # A quarter of 200 refilled 10/s: 49 at once, then 2.5/s (x 0.95).
    assert len(t.slept) == 11 and t.slept[-1] == pytest.approx(1 / (2.5 * 0.95), abs=0.001)
    table.down = False
    t.now += 31
    writes = table.ops["update"]
    p.acquire([WRITES])
    assert table.ops["update"] == writes + 1, "back on the shared budget"


@pytest.mark.parametrize("keys", [[READS], CREATE], ids=["one bucket", "two buckets"])
def test_lost_every_race_for_a_while_a_request_is_handed_back_never_sent_on_a_budget_of_its_own(keys):
    """The local fallback schedule is for storage that does not answer; a table that answers 412 to
    every write means other processes are taking the budget: a slot of the fallback would come on top
    of theirs (it once let 81 identity creates into a window of 80)."""
    t, table = FakeTime(), FakeTable()
    (p,) = pacers(1, t, table)
    table.always_conflict = True
    started = t.now
    with pytest.raises(Throttled, match="contended"):
        p.acquire(keys)
    assert p.stats.fallback_requests == 0 and p.stats.slots_handed == 0 and p.stats.contended == 1
    assert p.stats.conflicts > 10, "it kept trying, with jitter, for a while"
    limit = retry_policy.SHARED_PACING_CONTENTION_SECONDS
    assert limit <= t.now - started < limit + 1
    table.always_conflict = False
    p.acquire(keys)
    assert p.stats.slots_handed == len(keys), "and the next request is paced from the table again"


def test_a_request_counting_against_two_buckets_takes_a_slot_of_each():
    t, table = FakeTime(), FakeTable()
    a, b = pacers(2, t, table)
    for _ in range(200):
        b.acquire([WRITES])  # the writes bucket is spent: one per 0.105 s from here
    slept = len(t.slept)
    ops = table.total
    a.acquire(CREATE)
    assert len(t.slept) == slept + 1 and 0 < t.slept[-1] < 1, "it waited for the writes bucket"
    assert table.ops["transaction"] == 1 and table.total == ops + 2, "one query, one transaction"
    assert a.stats.slots_handed == 2 and a.stats.slots_dropped == 0
    state = json.loads(table.rows[("pacing", a._bucket(CREATE[1]).row)][0]["state"])
    assert state[-1] == pytest.approx(t.now), "the window holds the slot at the time it was sent"
    assert {e["bucket"] for e, _ in table.rows.values()} == {"arm-writes|sub", "msi-identity-creates|sub|eastus"}


# ------------------------------------------------------------------------------------------ one at a time


def test_one_credential_write_per_identity_in_flight():
    pacer = Pacer(max_wait_seconds=0.2)
    key = ("msi-credential-writes", "/subscriptions/s/identity-a")
    inside, release = threading.Event(), threading.Event()
    order: list[str] = []

    def first() -> None:
        with pacer.one_at_a_time(key):
            order.append("first in")
            inside.set()
            release.wait(10)
            order.append("first out")

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(10)
    with pytest.raises(Throttled):
        with pacer.one_at_a_time(key):  # the first one is still in flight, longer than max wait
            order.append("never")
    with pacer.one_at_a_time(("msi-credential-writes", "/subscriptions/s/identity-b")):
        order.append("another identity")

    def second() -> None:
        with pacer.one_at_a_time(key):
            order.append("second in")

    waiter = threading.Thread(target=second)
    pacer.max_wait = 10
    waiter.start()
    release.set()
    thread.join(10)
    waiter.join(10)
    assert order == ["first in", "another identity", "first out", "second in"]


# ------------------------------------------------------------------------------------------ settings


def test_shared_pacing_is_on_by_default_where_there_is_storage():
    assert Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true"}).shared_pacing
    assert Settings.from_env({"AzureWebJobsStorage__accountName": "acct"}).shared_pacing
    assert not Settings.from_env({}).shared_pacing
    off = Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true", "KEYLESS_SHARED_PACING": "false"})
    assert not off.shared_pacing
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"KEYLESS_SHARED_PACING": "true"})
    assert err.value.reason.startswith("KEYLESS_SHARED_PACING")
    for bad in ("0", "1.5", "-1"):
        with pytest.raises(SettingsError):
            Settings.from_env({"KEYLESS_PACING_FALLBACK_SHARE": bad})


def test_the_pacer_follows_the_settings():
    storage = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "KEYLESS_TABLE_NAME": "keylessbindings"}
    shared = pacer_from_settings(Settings.from_env({**storage, "KEYLESS_PACING_FALLBACK_SHARE": "0.5"}), None)
    assert isinstance(shared, SharedPacer) and shared.fallback.limits["arm-writes"] == Rate(100, 5)
    alone = pacer_from_settings(Settings.from_env({**storage, "KEYLESS_SHARED_PACING": "false"}), None)
    assert type(alone) is Pacer
    assert pacer_from_settings(Settings.from_env({**storage, "KEYLESS_ARM_PACING_SCALE": "0"}), None) is None
    assert pacing_table_name("keylessbindings") == "keylessbindingspacing"
    assert len(pacing_table_name("k" * 63)) == 63


@pytest.mark.parametrize(
    ("storage", "url"),
    [
        ({"__tableServiceUri": "https://tables.example.net/"}, "https://tables.example.net"),
        ({"__accountName": "keylessstore"}, "https://keylessstore.table.core.windows.net"),
    ],
    ids=["service URI only", "account name"],
)
def test_the_pacing_table_is_on_the_storage_the_host_uses(storage, url):
    """Identity-based AzureWebJobsStorage as the host reads it: the table service URI given (no
    account name to build one from), or built from the account name and the cloud's suffix."""
    env = {f"AzureWebJobsStorage{k}": v for k, v in storage.items()}
    env |= {"AzureWebJobsStorage__credential": "managedidentity", "KEYLESS_TABLE_NAME": "keylessbindings"}
    table = pacing_table(Settings.from_env(env), None)
    assert table.url.rstrip("/") == url and table.table_name == "keylessbindingspacing"
    assert type(table.credential).__name__ == "ManagedIdentityCredential"
