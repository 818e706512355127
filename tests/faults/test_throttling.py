"""Azure's limits in the ARM emulator, and what Keyless does about them: client-side pacing, a
short read cache, storage leases. Quick tests (not marked `faults`)."""

from __future__ import annotations

import collections.abc
import threading
import time

import pytest
import requests

from shared.adapters.arm import ArmClients
from shared.adapters.ledger import Ledger
from shared.adapters.pacing import Pacer, Rate, buckets_for
from shared.adapters.readcache import ReadCache, version_of
from shared.domain.errors import TemporaryError
from shared.domain.settings import Settings
from tests.azurite import Azurite, connection_string_from_env
from tests.conftest import SUB
from tests.emulators.arm import ARM_SCOPE, ArmEmulator, Bucket, Limits, Window
from tests.emulators.common import token_for_scope
from tests.emulators.credential import StaticCredential

RG = "rg-limits"
MSI = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities"


@pytest.fixture
def limited(ca) -> collections.abc.Iterator[ArmEmulator]:
    emulator = ArmEmulator(ca).start()
    emulator.add_resource_group(SUB, RG)
    yield emulator
    emulator.stop()


def call(arm: ArmEmulator, ca, method: str, path: str, body: dict | None = None) -> requests.Response:
    """One raw request: no SDK, so no retries hide what the server answered."""
    return requests.request(
        method,
        f"{arm.url}{path}?api-version=2024-11-30",
        json=body,
        headers={"Authorization": f"Bearer {token_for_scope(ARM_SCOPE)}"},
        verify=str(ca.ca_pem_path),
        timeout=10,
    )


def put_identity(arm: ArmEmulator, ca, name: str, location: str = "eastus") -> requests.Response:
    return call(arm, ca, "PUT", f"{MSI}/{name}", {"location": location})


# --- the emulator ----------------------------------------------------------------------------


def test_arm_buckets_are_on_by_default_and_say_what_remains(limited, ca):
    first = put_identity(limited, ca, "id-one")
    assert first.status_code == 201
    assert first.headers["x-ms-ratelimit-remaining-subscription-writes"] == "199"
    got = call(limited, ca, "GET", f"{MSI}/id-one")
    assert got.headers["x-ms-ratelimit-remaining-subscription-reads"] == "249"


def test_over_a_bucket_is_429_with_retry_after_and_takes_no_token(limited, ca):
    limited.enforce_limits(limits=Limits(arm_reads=Bucket(2, 1)))
    assert put_identity(limited, ca, "id-one").status_code == 201
    assert [call(limited, ca, "GET", f"{MSI}/id-one").status_code for _ in range(2)] == [200, 200]
    refused = call(limited, ca, "GET", f"{MSI}/id-one")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "SubscriptionRequestsThrottled"
    assert refused.headers["Retry-After"] == "1"
    limited.clock.advance(1)  # one token back, on the emulator's clock
    assert call(limited, ca, "GET", f"{MSI}/id-one").status_code == 200
    assert call(limited, ca, "GET", f"{MSI}/id-one").status_code == 429


def test_identity_creates_are_80_in_any_20_seconds_per_region_once_enforced(limited, ca):
    assert [put_identity(limited, ca, f"id-{i}").status_code for i in range(3)] == [201] * 3, "off by default"
    limited.enforce_limits(scale=1)
    statuses = [put_identity(limited, ca, f"id-{i}").status_code for i in range(80)]
    assert statuses == [200] * 3 + [201] * 77, "80 identity PUTs at once (updates count too)"
    refused = put_identity(limited, ca, "id-80")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "TooManyRequests"
    assert 10 < int(refused.headers["Retry-After"]) <= 20
    assert put_identity(limited, ca, "id-80", location="West Europe").status_code == 201, "a region of its own"
    assert call(limited, ca, "GET", f"{MSI}/id-1").status_code == 200, "reads are ARM's alone"
    limited.clock.advance(10)
    assert put_identity(limited, ca, "id-81").status_code == 429, "a window: no refill at 4/s meanwhile"
    limited.clock.advance(11)
    assert put_identity(limited, ca, "id-81").status_code == 201, "20 s after the first, the window moved on"
    limited.enforce_limits(None)
    assert [put_identity(limited, ca, f"id-x{i}").status_code for i in range(85)] == [201] * 85


def test_scaled_limits_refill_faster_and_say_so_in_retry_after(limited, ca):
    limited.enforce_limits(scale=10, limits=Limits(identity_creates=Window(1, 20)))
    assert put_identity(limited, ca, "id-a").status_code == 201
    again = put_identity(limited, ca, "id-a")
    assert again.status_code == 429
    retry_after = float(again.headers["Retry-After"])
    assert 1.5 < retry_after <= 2.0 and again.headers["Retry-After"].endswith("00")  # 20 s of Azure's time / 10


def test_one_credential_write_at_a_time_per_identity(limited, ca):
    assert put_identity(limited, ca, "id-a").status_code == 201
    assert put_identity(limited, ca, "id-b").status_code == 201
    limited.fic_write_latency_seconds = 0.5  # a write holds the identity's marker this long
    fic = {"properties": {"issuer": "https://issuer.example/x/", "audiences": ["api://AzureADTokenExchange"]}}

    def put(identity: str, name: str, out: list) -> None:
        body = {"properties": {**fic["properties"], "subject": f"system:serviceaccount:ns:{name}"}}
        path = f"{MSI}/{identity}/federatedIdentityCredentials/{name}"
        out.append(call(limited, ca, "PUT", path, body))

    answers: list[requests.Response] = []
    first = threading.Thread(target=put, args=("id-a", "fic-one", answers))
    first.start()
    deadline = time.monotonic() + 5
    while not limited.fic_write_in_progress(f"{MSI}/id-a") and time.monotonic() < deadline:
        time.sleep(0.01)  # polling for the first write to hold the marker, within a deadline
    put("id-a", "fic-two", answers)  # the same identity, while the first is in flight
    put("id-b", "fic-three", answers)  # another identity: in parallel is fine
    first.join(10)
    by_name = {a.request.url.split("/")[-1].split("?")[0]: a for a in answers}
    assert by_name["fic-two"].status_code == 409
    code = "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity"
    assert by_name["fic-two"].json()["error"]["code"] == code
    assert by_name["fic-one"].status_code in (200, 201) and by_name["fic-three"].status_code in (200, 201)


def test_injected_latency_and_faults_after_serving(limited, ca):
    limited.inject_latency("PUT", "/id-slow", 0.3)
    started = time.monotonic()
    assert put_identity(limited, ca, "id-slow").status_code == 201
    assert time.monotonic() - started >= 0.3
    limited.inject_fault("PUT", "/id-late", 500, after_serving=True)
    assert put_identity(limited, ca, "id-late").status_code == 500
    assert limited.identity(f"{MSI}/id-late") is not None, "the write happened all the same"


# --- pacing ------------------------------------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 3))
        self.now += seconds


def test_buckets_for_requests():
    base = f"https://management.azure.com/subscriptions/{SUB.upper()}/resourceGroups/rg/providers"
    identity = f"{base}/Microsoft.ManagedIdentity/userAssignedIdentities/id-a"
    assert buckets_for("GET", identity) == [("arm-reads", SUB)]
    assert buckets_for("GET", f"{identity}/federatedIdentityCredentials") == [("arm-reads", SUB)]
    assert buckets_for("PUT", identity, b'{"location": "East US", "tags": {}}') == [
        ("arm-writes", SUB),
        ("msi-identity-creates", SUB, "eastus"),
    ]
    assert buckets_for("PUT", identity, None)[1] == ("msi-identity-creates", SUB, "*"), "no region: per subscription"
    assert buckets_for("PATCH", identity) == [("arm-writes", SUB)]
    assert buckets_for("PUT", f"{identity}/federatedIdentityCredentials/f") == [("arm-writes", SUB)]
    assert buckets_for("DELETE", f"{base}/Microsoft.Authorization/roleAssignments/x") == [("arm-deletes", SUB)]
    assert buckets_for("GET", "https://management.azure.com/providers/Microsoft.Authorization/operations") == []


def test_pacer_spaces_writes_and_serves_in_order():
    t = FakeTime()
    pacer = Pacer({"arm-writes": Rate(2, 2)}, scale=1, headroom=1.0, clock=t.clock, sleep=t.sleep)
    writes = [("arm-writes", "s")]
    for _ in range(4):
        pacer.acquire(writes)
    # 2 at once then 2/s; we allow one less at once, as a margin for jitter.
    assert t.slept == [0.5, 0.5, 0.5]
    pacer.acquire([("arm-reads", "s")])  # another bucket (not paced by this pacer): no wait
    assert len(t.slept) == 3


def test_pacer_hands_a_long_wait_to_the_queue_and_holds_after_a_429():
    t = FakeTime()
    pacer = Pacer(scale=1, clock=t.clock, sleep=t.sleep)
    creates = [("arm-writes", "s"), ("msi-identity-creates", "s", "eastus")]
    for _ in range(79):
        pacer.acquire(creates)  # 79 of Azure's 80 in any 20 s at once
    assert t.slept == []
    with pytest.raises(TemporaryError) as exc:
        pacer.acquire(creates)  # the next one in 21 s (20 s and a margin): not worth a thread
    assert exc.value.delay_seconds > 20
    pacer.acquire([("arm-writes", "s"), ("msi-identity-creates", "s", "westeurope")])  # another region
    pacer.hold(("arm-reads", "s"), 3)
    pacer.acquire([("arm-reads", "s")])
    assert t.slept == [3]


def test_paced_clients_stay_under_the_enforced_limits(limited, ca):
    limited.enforce_limits(scale=10)  # 80 identity creates in any 2 s
    settings = Settings.from_env(
        {
            "KEYLESS_ARM_ENDPOINT": limited.url,
            "KEYLESS_ARM_SCOPE": ARM_SCOPE,
            "KEYLESS_CA_BUNDLE": str(ca.ca_pem_path),
            "KEYLESS_ARM_PACING_SCALE": "10",
        }
    )
    # The 80th create waits 2.1 s for the window, longer than the default wait (20 s / 10) a worker
    # would give it before handing the run to the queue: this test waits instead.
    clients = ArmClients(StaticCredential(), settings, pacer=Pacer(scale=10, max_wait_seconds=60))
    msi = clients.msi(SUB)
    errors: list[Exception] = []

    def create(i: int) -> None:
        try:
            msi.user_assigned_identities.create_or_update(RG, f"id-{i:02d}", {"location": "eastus"})
        except Exception as exc:  # reported below
            errors.append(exc)

    started = time.monotonic()
    threads = [threading.Thread(target=lambda n=n: [create(i) for i in range(n, 100, 16)]) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert len(limited.identities()) == 100
    assert limited.throttled() == [], "paced: no request refused"
    assert time.monotonic() - started >= 2.0, "no faster than the limit allows: the 81st waits for the window"
    clients.close()


# --- the read cache ------------------------------------------------------------------------------


def test_read_cache_reads_once_per_key_even_when_asked_at_once():
    cache: ReadCache[str] = ReadCache(60)
    reads = []
    gate = threading.Event()

    def read() -> str:
        reads.append(1)
        gate.wait(2)
        return "state"

    threads = [threading.Thread(target=lambda: cache.get("k", read)) for _ in range(5)]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join(5)
    assert len(reads) == 1 and cache.reads == 1


def test_read_cache_fresh_ttl_expect_and_keep():
    now = [0.0]
    cache: ReadCache[dict] = ReadCache(20, clock=lambda: now[0])
    values = iter([{"v": 1}, {"v": 2}, {"v": 3}, {"v": 4}, {"v": 5}])
    assert cache.get("k", lambda: next(values)) == {"v": 1}
    assert cache.get("k", lambda: next(values)) == {"v": 1}
    now[0] = 1.0
    assert cache.get("k", lambda: next(values), fresh=True) == {"v": 2}
    cache.expect("k", version_of({"v": 2}))
    assert cache.get("k", lambda: next(values)) == {"v": 2}, "the expected version is kept"
    cache.expect("k", version_of({"v": 99}))
    assert cache.get("k", lambda: next(values)) == {"v": 3}, "another version is dropped"
    now[0] = 30.0
    assert cache.get("k", lambda: next(values), keep=lambda v: False) == {"v": 4}
    assert cache.get("k", lambda: next(values)) == {"v": 5}, "a refused value is not kept"


# --- leases in the ledger's table ---------------------------------------------------------------


@pytest.fixture(scope="module")
def table() -> collections.abc.Iterator[Ledger]:
    given = connection_string_from_env()
    azurite = None if given else Azurite().start()
    conn = given or (azurite.connection_string if azurite else "")
    yield Ledger.connect("leases" + str(int(time.time())), connection_string=conn)
    if azurite:
        azurite.stop()


def test_a_lease_has_one_holder_until_released_or_expired(table):
    assert table.acquire("run|a", 30)
    assert not table.acquire("run|a", 30)
    assert 29 < table.seconds_left("run|a") <= 30
    table.release("run|a")
    assert table.seconds_left("run|a") == 0
    assert table.acquire("run|a", 0.2)
    deadline = time.monotonic() + 5
    while table.seconds_left("run|a") > 0 and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for the lease to run out: the point of this test
    assert table.acquire("run|a", 30), "an expired lease is taken over"
    table.release("run|a")


def test_a_held_lease_is_renewed_and_a_lost_one_is_not_touched(table):
    assert table.acquire("run|b", 5)
    assert table.renew("run|b", 60) and 59 < table.seconds_left("run|b") <= 60
    other = Ledger(table._table)  # another worker process: its own owner tokens
    assert not other.renew("run|b", 600), "only the holder renews"
    other.release("run|b", only_own=True)
    assert table.seconds_left("run|b") > 59, "a release of a lease one does not hold frees nothing"
    table.release("run|b", only_own=True)
    assert table.seconds_left("run|b") == 0
    assert not table.renew("run|b", 60), "a released lease is not renewed back into existence"
    # Ours ran out and another worker took it over: neither renewing nor releasing touches theirs.
    assert table.acquire("run|c", 0.2)
    deadline = time.monotonic() + 5
    while table.seconds_left("run|c") > 0 and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for the lease to run out: the point of this test
    assert other.acquire("run|c", 60)
    assert not table.renew("run|c", 60)
    table.release("run|c", only_own=True)
    assert other.seconds_left("run|c") > 59
    other.release("run|c")


def test_only_one_of_many_racing_workers_gets_a_lease(table):
    won = []
    threads = [threading.Thread(target=lambda: won.append(table.acquire("race", 30))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert won.count(True) == 1
