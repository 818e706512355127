"""The fault scenarios: Azure's well-known failure modes, each against many bindings.

Each scenario builds a `World`, makes Azure (or the cluster, or storage, or a worker) fail the
way it does in real life, drives bindings through the real handlers and worker, and returns the
`Audit` of the end state. Sizes: quick (CI, every run) or full (KEYLESS_FAULTS=full, and
`python -m benchmarks.faults`).
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from tests.emulators.common import TestCA
from tests.emulators.identity_endpoint import IdentityEndpoint
from tests.faults.storage import RestartableAzurite
from tests.faults.world import (
    ROOT,
    Audit,
    Workload,
    World,
    account_id,
    arm_event,
    cluster_id,
    copy_event,
    expect_all,
    workloads,
)

CONCURRENT_FIC = "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity"


@dataclasses.dataclass
class Context:
    """What every scenario shares: the test CA, the managed identity endpoint, Azurite."""

    ca: TestCA
    identity_endpoint: IdentityEndpoint
    storage: str
    full: bool = False
    seed: int = 1

    def n(self, quick: int, full: int) -> int:
        return full if self.full else quick

    def world(self, **kwargs: Any) -> World:
        return World(self.ca, self.identity_endpoint, kwargs.pop("storage", self.storage), **kwargs)


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    run: Callable[[Context], Audit]


SCENARIOS: list[Scenario] = []


def scenario(title: str) -> Callable[[Callable[[Context], Audit]], Callable[[Context], Audit]]:
    def register(fn: Callable[[Context], Audit]) -> Callable[[Context], Audit]:
        SCENARIOS.append(Scenario(fn.__name__, title, fn))
        return fn

    return register


def onboard_all(w: World, items: list[Workload]) -> None:
    w.prepare(items)
    for item in items:
        w.onboard(item)


def settle_until(w: World, expect: dict[Workload, tuple[str, ...]], deadline: float = 60.0) -> None:
    """Work the queue until every binding is where it should be and the queue is empty."""
    keyed = {item.key: want for item, want in expect.items()}
    w.settle(deadline, until=lambda: w.all_settled(keyed) and _queue_empty(w))


def _queue_empty(w: World) -> bool:
    assert w.driver is not None
    try:
        return w.driver.queue.get_queue_properties().approximate_message_count == 0
    except Exception:  # noqa: BLE001 - storage down: not settled
        return False


# ------------------------------------------------------------------------------------------ ARM


@scenario("ARM 429 storm with Retry-After")
def arm_throttle_storm(ctx: Context) -> Audit:
    items = workloads(ctx.n(2, 3), ctx.n(2, 16))
    with ctx.world(clusters=3) as w:
        w.arm.inject_fault("*", "/subscriptions/", 429, headers={"Retry-After": "1"}, times=ctx.n(3, 30))
        onboard_all(w, items)
        settle_until(w, expect_all(items, "ready"))
        gone = items[::2]
        w.arm.inject_fault("DELETE", "/subscriptions/", 429, headers={"Retry-After": "1"}, times=ctx.n(2, 15))
        for item in gone:
            w.offboard(item.key)
        expect = {item: ("removed",) if item in gone else ("ready",) for item in items}
        settle_until(w, expect)
        return w.audit("ARM 429 storm (Retry-After)", expect)


@scenario("ARM 500/503 and dropped connections, before and after the write")
def arm_errors(ctx: Context) -> Audit:
    items = workloads(ctx.n(2, 3), ctx.n(2, 16))
    with ctx.world(clusters=3) as w:
        times = ctx.n(2, 8)
        w.arm.inject_fault("PUT", "/userAssignedIdentities/", 503, times=times)
        w.arm.inject_fault("PUT", "/roleAssignments/", 500, times=times, after_serving=True)
        w.arm.inject_fault("PUT", "/federatedIdentityCredentials/", 0, times=times)
        w.arm.inject_fault("PUT", "/userAssignedIdentities/", 0, times=times, after_serving=True)
        w.arm.inject_fault("POST", "/listClusterUserCredential", 0, times=1)
        w.arm.inject_fault("GET", "/roleAssignments", 503, times=ctx.n(2, 20))
        onboard_all(w, items)
        settle_until(w, expect_all(items, "ready"))
        w.arm.inject_fault("DELETE", "/", 503, times=times)
        w.arm.inject_fault("DELETE", "/", 0, times=times, after_serving=True)
        for item in items:
            w.offboard(item.key)
        settle_until(w, expect_all(items, "removed"))
        return w.audit("ARM 500/503, dropped connections", expect_all(items, "removed"))


@scenario("ARM answers slowly (seconds)")
def arm_slow(ctx: Context) -> Audit:
    items = workloads(ctx.n(1, 2), ctx.n(4, 16))
    with ctx.world(clusters=2) as w:
        w.arm.inject_latency("PUT", "/federatedIdentityCredentials/", 1.5, times=ctx.n(2, 8))
        w.arm.inject_latency("GET", "/managedClusters/", 1.0, times=ctx.n(1, 4))
        w.arm.inject_latency("PUT", "/roleAssignments/", 2.0, times=ctx.n(1, 4))
        onboard_all(w, items)
        settle_until(w, expect_all(items, "ready"))
        return w.audit("slow ARM responses", expect_all(items, "ready"))


@scenario("cluster update (LRO) fails, then succeeds; or leaves the cluster Failed")
def cluster_update_fails(ctx: Context) -> Audit:
    good = workloads(1, ctx.n(2, 12))
    broken = [Workload(1, f"team-{n % 3}", f"app-{n}") for n in range(ctx.n(1, 6))]
    with ctx.world(clusters=2, oidc=False) as w:
        w.arm.cluster_update_seconds = 0.5  # real seconds: the emulator's clock is the wall clock here
        w.arm.fail_cluster_updates(1, cluster_id=cluster_id(0))
        w.arm.fail_cluster_updates(1, cluster_id=cluster_id(1), leave_failed=True)
        for c, group in ((0, good), (1, broken)):
            w.prepare(group)
            w.tag(c, group)
            w.deliver(arm_event("write", cluster_id(c)))
        expect = expect_all(good, "ready") | expect_all(broken, "failed", "Failed provisioning state")
        settle_until(w, expect)
        return w.audit("cluster LRO fails then succeeds / stays Failed", expect)


# ------------------------------------------------------------------------------------------ eventual consistency


@scenario("new principal not found for a while (PrincipalNotFound)")
def principal_not_replicated(ctx: Context) -> Audit:
    items = workloads(ctx.n(2, 4), ctx.n(2, 12))
    with ctx.world(clusters=4) as w:
        w.arm.principal_replication_seconds = ctx.n(2, 4)
        w.arm.principal_type_skips_replication = False  # the hard case: principalType does not help
        onboard_all(w, items)
        settle_until(w, expect_all(items, "ready"))
        return w.audit("PrincipalNotFound for N seconds", expect_all(items, "ready"))


@scenario("identity not yet visible to its first credential write (ParentResourceNotFound)")
def parent_not_replicated(ctx: Context) -> Audit:
    items = workloads(ctx.n(2, 4), ctx.n(2, 12))
    with ctx.world(clusters=4) as w:
        w.arm.fic_parent_replication_seconds = 1.5
        onboard_all(w, items)
        settle_until(w, expect_all(items, "ready"))
        return w.audit("ParentResourceNotFound on first FIC", expect_all(items, "ready"))


@scenario("concurrent credential writes on one identity (409)")
def concurrent_credentials(ctx: Context) -> Audit:
    # Two bindings per workload (one service account, two accounts): one identity, one credential,
    # two role assignments, written by two workers at once.
    base = workloads(ctx.n(2, 3), ctx.n(2, 8))
    items = [dataclasses.replace(item, account=a) for item in base for a in (0, 1)]
    with ctx.world(clusters=3, accounts=2) as w:
        w.arm.fic_write_latency_seconds = 0.3  # holds the identity's write marker: real overlap
        w.arm.inject_fault("PUT", "/federatedIdentityCredentials/", 409, code=CONCURRENT_FIC, times=ctx.n(2, 8))
        onboard_all(w, items)
        settle_until(w, expect_all(items, "ready"))
        gone = [item for item in items if item.account == 1]
        for item in gone:
            w.offboard(item.key)
        expect = {item: ("removed",) if item in gone else ("ready",) for item in items}
        settle_until(w, expect)
        return w.audit("concurrent FIC writes (409)", expect)


# ------------------------------------------------------------------------------------------ Kubernetes


@scenario("Kubernetes API unavailable for a while, 409 conflicts, 5xx")
def kube_faults(ctx: Context) -> Audit:
    items = workloads(3, ctx.n(1, 16))
    with ctx.world(clusters=3) as w:
        w.kubes[0].available = False
        back = threading.Timer(ctx.n(1, 3), lambda: setattr(w.kubes[0], "available", True))
        back.start()
        w.kubes[1].inject_fault("PATCH", "/serviceaccounts/", 409, reason="Conflict", times=ctx.n(2, 8))
        w.kubes[2].inject_fault("PATCH", "/configmaps/", 500, times=ctx.n(2, 6))
        w.kubes[2].inject_fault("GET", "/configmaps/", 503, times=ctx.n(2, 6))
        try:
            onboard_all(w, items)
            settle_until(w, expect_all(items, "ready"))
        finally:
            back.cancel()
        return w.audit("Kubernetes API down / 409 / 5xx", expect_all(items, "ready"))


@scenario("private clusters through run command: 429s, command pods that never run, kubectl conflicts")
def private_clusters(ctx: Context) -> Audit:
    items = workloads(2, ctx.n(2, 8))
    with ctx.world(clusters=2, private=True) as w:
        w.arm.inject_fault("POST", "/runcommand", 429, headers={"Retry-After": "1"}, times=ctx.n(2, 10))
        w.arm.inject_fault("GET", "/commandresults/", 503, times=ctx.n(2, 10))
        w.arm.fail_run_commands(ctx.n(2, 6), reason="ImagePullBackoff")
        w.kubes[0].inject_fault("PATCH", "/serviceaccounts/", 409, reason="Conflict", times=ctx.n(1, 4))
        w.kubes[1].inject_fault("PATCH", "/configmaps/", 500, times=ctx.n(1, 4))
        onboard_all(w, items)
        settle_until(w, expect_all(items, "ready"), deadline=120)
        gone = items[::2]
        w.arm.fail_run_commands(ctx.n(1, 4), reason="ImagePullBackoff")
        for item in gone:
            w.offboard(item.key)
        expect = {item: ("removed",) if item in gone else ("ready",) for item in items}
        settle_until(w, expect, deadline=120)
        return w.audit("private clusters (run command)", expect)


# ------------------------------------------------------------------------------------------ storage and workers


@scenario("Azurite stopped and restarted in the middle")
def storage_outage(ctx: Context) -> Audit:
    # Storage goes down while workers are in the middle of runs, and while requests and events
    # arrive (their senders retry on 5xx / on a raise, as API clients and Event Grid do).
    items = workloads(2, ctx.n(3, 20))
    tagged = [Workload(2, "tagged", f"app-{n}") for n in range(ctx.n(1, 6))]
    azurite = RestartableAzurite().start()
    try:
        with ctx.world(clusters=3, storage=azurite.connection_string, visibility=2) as w:
            w.prepare(items + tagged)
            w.tag(2, tagged)
            first, rest = items[: len(items) // 2], items[len(items) // 2 :]
            for item in first:
                w.onboard(item)
            down, late = threading.Event(), []

            def outage(request: Any) -> None:  # right after a worker's write, before it records it
                if request.method == "PUT" and "/userassignedidentities/" in request.path.lower():
                    if not down.is_set():
                        down.set()
                        azurite.pause()
                        threading.Timer(1.0, azurite.resume).start()

            def senders() -> None:
                down.wait(30)
                for item in rest:
                    w.onboard(item)  # 5xx while storage is down, then accepted
                w.deliver(arm_event("write", cluster_id(2)))  # redelivered until accepted

            w.arm.request_hooks.append(outage)
            sending = threading.Thread(target=senders)
            sending.start()
            settle_until(w, expect_all(first, "ready"))
            sending.join(60)
            late.append(sending.is_alive())
            w.arm.request_hooks.clear()
            settle_until(w, expect_all(items + tagged, "ready"))
            audit = w.audit("Azurite stopped and restarted", expect_all(items + tagged, "ready"))
            if not down.is_set() or any(late):
                audit.problem("lost", "the outage did not happen as planned")
            return audit
    finally:
        azurite.stop()


@scenario("a worker killed between two steps")
def worker_killed(ctx: Context) -> Audit:
    # Kill points: right after each write of a run (ARM: identity, credential, role assignment;
    # Kubernetes: service account, config map), before the worker hears the answer.
    points = [("arm", "federatedidentitycredentials/")]
    if ctx.full:
        points = [
            ("arm", "/userassignedidentities/keyless"),
            ("arm", "federatedidentitycredentials/"),
            ("arm", "/roleassignments/"),
            ("kube", "/serviceaccounts/"),
            ("kube", "/configmaps/"),
        ]
    items = [Workload(0, "team-0", f"app-{i}") for i in range(len(points))]
    with ctx.world(visibility=2) as w:
        w.prepare(items)
        for item, (side, point) in zip(items, points, strict=True):
            _kill_worker_at(w, item, side, point)
        settle_until(w, expect_all(items, "ready"))
        return w.audit("worker killed between steps", expect_all(items, "ready"))


def _kill_worker_at(w: World, item: Workload, side: str, point: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KEYLESS_TEST_VISIBILITY": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.faults.worker_process"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    killed = threading.Event()

    def kill(method: str, path: str) -> None:
        if method in ("PUT", "PATCH") and point in path.lower() and not killed.is_set():
            killed.set()
            proc.send_signal(signal.SIGKILL)  # before the worker hears the answer

    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        if side == "arm":
            w.arm.request_hooks.append(lambda r: kill(r.method, r.path))
        w.onboard(item)
        end = time.monotonic() + 30
        seen = 0
        while not killed.is_set() and time.monotonic() < end:
            if side == "kube":  # no hook on the Kubernetes emulator: watch its log
                log = w.kubes[item.cluster].log.items
                for r in log[seen:]:
                    kill(r.method, r.path)
                seen = len(log)
            killed.wait(0.01)
        assert killed.is_set(), f"the worker never reached {point}"
    finally:
        w.arm.request_hooks.clear()
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


# ------------------------------------------------------------------------------------------ events


@scenario("events: 3x and shuffled, delete before write, a storm, our own follow-ups")
def events(ctx: Context) -> Audit:
    rng = random.Random(ctx.seed)
    per = ctx.n(1, 10)
    live = [Workload(c, f"team-{n}", f"app-{n}") for c in (0, 1, 2) for n in range(per)]
    doomed = [Workload(3, f"team-{n}", f"app-{n}") for n in range(per)]
    enabled = [Workload(4, f"team-{n}", f"app-{n}") for n in range(per)]  # OIDC off: we turn it on
    with ctx.world(clusters=4) as w:
        w.add_cluster(4, oidc=False)
        w.arm.cluster_update_seconds = 0.5
        for c, group in ((0, live[:per]), (1, live[per : 2 * per]), (2, live[2 * per :]), (3, doomed), (4, enabled)):
            w.prepare(group)
            w.tag(c, group)
        # Cluster 3 is onboarded, then deleted; its events arrive late, with a stale write among them.
        w.deliver(arm_event("write", cluster_id(3)))
        settle_until(w, expect_all(doomed, "ready"))
        w.arm.delete_managed_cluster(cluster_id(3))
        writes_before = w.arm_writes()
        deliveries = []
        for c in (0, 1, 2, 4):
            deliveries += [arm_event("write", cluster_id(c))] * 3  # each delivered three times
        deliveries.append(arm_event("delete", cluster_id(0)))  # a stale delete: cluster 0 exists
        deliveries += [arm_event("delete", cluster_id(3))] * 3 + [arm_event("write", cluster_id(3))]
        rng.shuffle(deliveries)
        for event in deliveries:
            w.deliver(copy_event(event))
        expect = expect_all(live + enabled, "ready") | expect_all(doomed, "removed")
        settle_until(w, expect)
        # Our own cluster update raised a write event when it finished: it must change nothing.
        w.deliver(arm_event("write", cluster_id(4), "Microsoft.ContainerService/managedClusters/write"))
        settle_until(w, expect)
        needed = 3 * len(live + enabled) + 3 * len(doomed) + 1  # id + FIC + RA each; deletes; one cluster PUT
        extra_before_storm = w.arm_writes() - writes_before - needed
        storm = arm_event("write", cluster_id(0))
        for _ in range(ctx.n(100, 1000)):  # one event, delivered over and over
            w.deliver(copy_event(storm))
        settle_until(w, expect)
        audit = w.audit("events 3x/shuffled/delete-first/storm/own", expect)
        extra = w.arm_writes() - writes_before - needed
        if extra_before_storm or extra:
            audit.problem("duplicates", f"{extra} ARM writes beyond what convergence needs")
        return audit


# ------------------------------------------------------------------------------------------ clusters


@scenario("cluster recreated (new issuer), cluster deleted, identity at 20 credentials")
def cluster_lifecycle(ctx: Context) -> Audit:
    per = ctx.n(2, 12)
    a = [Workload(0, f"team-{n}", f"app-{n}") for n in range(per)]
    b = [Workload(1, f"team-{n}", f"app-{n}") for n in range(per)]
    with ctx.world(clusters=2) as w:
        for c, group in ((0, a), (1, b)):
            w.prepare(group)
            w.tag(c, group)
            w.deliver(arm_event("write", cluster_id(c)))
        settle_until(w, expect_all(a + b, "ready"))
        # Someone else gave one of our identities 19 more credentials: it is at Azure's limit of 20.
        full = w.arm.identity(w.records()[a[0].key].identity["resourceId"])
        assert full is not None
        for i in range(19):
            name = f"someone-else-{i:02d}"
            w.arm.add_federated_credential(
                full["id"], name, "https://token.example.com/", f"system:serviceaccount:x:{i}"
            )
            w.foreign_credentials.add(name)
        for c in (0, 1):
            w.arm.recreate_managed_cluster(cluster_id(c))
            w.deliver(arm_event("write", cluster_id(c)))
        settle_until(w, expect_all(a + b, "ready"))
        for item in a + b:  # the credentials follow the new issuers, also on the identity at 20
            cred = w.records()[item.key].credential
            assert cred.get("issuer") == w.issuer(item.cluster), (item, cred)
        w.arm.delete_managed_cluster(cluster_id(1))
        w.deliver(arm_event("delete", cluster_id(1)))
        expect = expect_all(a, "ready") | expect_all(b, "removed")
        settle_until(w, expect)
        assert len(w.arm.federated_credentials(full["id"])) == 20
        return w.audit("cluster recreated / deleted / 20 FICs", expect)


def by_name(names: list[str] | None = None) -> list[Scenario]:
    return [s for s in SCENARIOS if names is None or s.name in names]


def account(j: int) -> str:  # re-exported for benchmarks
    return account_id(j)
