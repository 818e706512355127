"""A world for fault scenarios: the Functions app, Azurite, and emulated Azure and clusters.

`World` seeds clusters (one Kubernetes emulator each) and OpenAI accounts in one subscription,
points the app's settings at them (real SDKs, real HTTPS), and drives the registered functions
the way the host does: HTTP requests and Event Grid events in, queue messages through
`Driver`, a pool of worker threads like one instance's batch. `audit` then checks the end
state from the emulators' side, never from what the app says it did.

Time is scaled so that a scenario takes seconds: the emulator enforces all of Azure's limits
`limits_scale` (10) times faster than Azure (and the app paces to match), and every "not yet"
delay and lease of the app lasts `delay_scale` (0.02) of its production length
(KEYLESS_RETRY_DELAY_SCALE; storage rounds a message's delay up to whole seconds). Windows of
eventual consistency are given in real seconds: the emulator's clock runs with the wall clock.
"""

from __future__ import annotations

import base64
import collections
import concurrent.futures
import copy
import dataclasses
import json
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError
from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.queue import QueueMessage
from azure.storage.queue import LinearRetry, QueueClient

from shared.app import composition
from shared.domain import naming
from shared.domain.binding import Binding
from shared.domain.settings import WORK_QUEUE
from tests.emulators.arm import ARM_SCOPE, ArmEmulator
from tests.emulators.common import TestCA
from tests.emulators.identity_endpoint import IdentityEndpoint
from tests.emulators.kube import KubeEmulator
from tests.functions.conftest import TEAM_GROUP, app_functions, principal_header
from tests.reference_data import reference_dir

ROOT = Path(__file__).resolve().parents[2]
EVENT_SAMPLES = (
    reference_dir() / "event-grid-samples/azure-rest-api-specs/specification/eventgrid/data-plane/"
    "Microsoft.Resources/stable/2018-01-01/examples/event-grid-schema"
)
SUB = "33333333-4444-4555-8666-777777777777"
RG_AKS = "rg-aks"
RG_AI = "rg-ai"
MAX_DEQUEUE = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]["maxDequeueCount"]
HOST_RETRY_VISIBILITY = 30  # host.json visibilityTimeout: how long a failed message waits before its retry


def cluster_id(i: int) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{RG_AKS}/providers/Microsoft.ContainerService/managedClusters/aks{i}"


def account_id(j: int) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{RG_AI}/providers/Microsoft.CognitiveServices/accounts/oai-{j}"


@dataclasses.dataclass(frozen=True)
class Workload:
    """One binding to be: a service account on cluster `cluster` bound to account `account`."""

    cluster: int
    namespace: str
    service_account: str
    account: int = 0

    def binding(self) -> Binding:
        return Binding.create(cluster_id(self.cluster), self.namespace, self.service_account, account_id(self.account))

    @property
    def key(self) -> str:
        return self.binding().key


def workloads(clusters: int, per_cluster: int, accounts: int = 1) -> list[Workload]:
    return [
        Workload(c, f"team-{n % 3}", f"app-{n}", (c + n) % accounts)
        for c in range(clusters)
        for n in range(per_cluster)
    ]


def access_policy() -> dict[str, Any]:
    """One team allowed everything in the world's resource groups."""
    return {
        "rules": [
            {
                "name": "everyone",
                "principals": {"groups": [TEAM_GROUP]},
                "clusters": [f"/subscriptions/{SUB}/resourceGroups/{RG_AKS}"],
                "namespaces": ["*"],
                "accounts": [f"/subscriptions/{SUB}/resourceGroups/{RG_AI}"],
            }
        ]
    }


def arm_event(change: str, resource_id: str, operation: str | None = None) -> dict[str, Any]:
    """A real sample ARM event (Event Grid schema), pointed at `resource_id`."""
    name = "resource_write_success" if change == "write" else "resource_delete_success"
    event = json.loads((EVENT_SAMPLES / f"{name}.json").read_text())
    uri = resource_id.replace("/resourceGroups/", "/resourcegroups/")  # as Event Grid writes it
    provider, rtype = uri.split("/providers/")[1].split("/")[:2]
    event["id"] = str(uuid.uuid4())
    event["subject"] = event["data"]["resourceUri"] = event["data"]["authorization"]["scope"] = uri
    event["data"]["operationName"] = operation or f"{provider}/{rtype}/{change}"
    event["data"]["subscriptionId"] = SUB
    return event


# ------------------------------------------------------------------------------------------ driver


class Driver:
    """The queue trigger's part of the host: receive a batch, run it on `workers` threads, delete
    what succeeded, make what raised visible again after host.json's retry delay, poison it after
    maxDequeueCount. Storage being down is survived, as the host survives it: keep polling."""

    def __init__(
        self,
        connection_string: str,
        worker: Callable[[QueueMessage], None],
        workers: int,
        visibility: int,
        scale: float,
    ) -> None:
        fast = LinearRetry(backoff=1, retry_total=1, random_jitter_range=0)
        self.queue = QueueClient.from_connection_string(connection_string, WORK_QUEUE, retry_policy=fast)
        self.poison = QueueClient.from_connection_string(connection_string, WORK_QUEUE + "-poison", retry_policy=fast)
        for q in (self.queue, self.poison):
            try:
                q.create_queue()
            except AzureError:
                pass
            q.clear_messages()
        self.worker = worker
        self.visibility = visibility
        self.retry_visibility = max(1, math.ceil(HOST_RETRY_VISIBILITY * scale))
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="worker")
        self.workers = workers
        self.processed = 0
        self.failures: list[BaseException] = []
        self.poisoned: list[str] = []
        self._lock = threading.Lock()

    def _run(self, m: Any) -> None:
        msg = QueueMessage(
            id=m.id, body=base64.b64decode(m.content), dequeue_count=m.dequeue_count, pop_receipt=m.pop_receipt
        )
        try:
            self.worker(msg)
        except Exception as exc:  # noqa: BLE001 - what the host would log, then retry or poison
            with self._lock:
                self.failures.append(exc)
            try:
                if m.dequeue_count >= MAX_DEQUEUE:
                    self.poison.send_message(m.content)
                    self.queue.delete_message(m)
                    with self._lock:
                        self.poisoned.append(base64.b64decode(m.content).decode())
                else:
                    self.queue.update_message(m, visibility_timeout=self.retry_visibility)
            except AzureError:
                pass  # storage is down: the message comes back when its visibility runs out
            return
        finally:
            with self._lock:
                self.processed += 1
        try:
            self.queue.delete_message(m)
        except AzureError:
            pass  # storage is down: the message comes back, and the rerun converges

    def settle(self, deadline: float = 60.0, until: Callable[[], bool] | None = None) -> bool:
        """Work until the queue is empty (invisible messages included) and nothing runs, or
        `until()` holds; False if the deadline came first.

        Like the host (batchSize, newBatchThreshold), it fetches more messages as soon as half
        the workers are free, so that a slow message does not hold up the next ones."""
        end = time.monotonic() + deadline
        running: set[concurrent.futures.Future[None]] = set()
        try:
            while time.monotonic() < end:
                if len(running) <= self.workers // 2:
                    try:
                        wanted = min(32, self.workers - len(running))
                        batch = list(
                            self.queue.receive_messages(max_messages=wanted, visibility_timeout=self.visibility)
                        )
                    except AzureError:
                        batch = []
                    running |= {self.pool.submit(self._run, m) for m in batch}
                    if batch:
                        continue
                if running:
                    _, running = concurrent.futures.wait(running, timeout=0.05, return_when="FIRST_COMPLETED")
                    continue
                if until is not None and until():
                    return True
                try:
                    if self.queue.get_queue_properties().approximate_message_count == 0:
                        return True
                except AzureError:
                    pass
                time.sleep(0.05)  # polling, as the host polls (maxPollingInterval), within the deadline
            return False
        finally:
            concurrent.futures.wait(running)

    def close(self) -> None:
        self.pool.shutdown(wait=True)


# ------------------------------------------------------------------------------------------ audit


@dataclasses.dataclass
class Audit:
    scenario: str = ""
    bindings: int = 0
    converged: int = 0
    failed_as_expected: int = 0
    duplicates: int = 0
    leftovers: int = 0
    lost: int = 0
    mismatched: int = 0
    seconds: float = 0.0
    messages: int = 0
    arm_writes: int = 0
    throttled: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        clean = self.duplicates == self.leftovers == self.lost == self.mismatched == 0
        return clean and self.converged + self.failed_as_expected == self.bindings

    def problem(self, column: str, text: str) -> None:
        setattr(self, column, getattr(self, column) + 1)
        self.problems.append(f"{column}: {text}")


READY = ("ready", "verified")


class World:
    def __init__(
        self,
        ca: TestCA,
        identity_endpoint: IdentityEndpoint,
        storage: str,
        *,
        clusters: int = 1,
        accounts: int = 1,
        limits_scale: float | None = 10.0,
        pacing_scale: float | None = None,
        delay_scale: float = 0.02,
        workers: int = 8,
        visibility: int = 30,
        oidc: bool = True,
        private: bool = False,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.ca = ca
        self.storage = storage
        self.delay_scale = delay_scale
        self.arm = ArmEmulator(ca).start()
        self.arm.enforce_limits(limits_scale)
        self.kubes: list[KubeEmulator] = []
        self.private = private  # clusters reachable only through the run-command API
        self.arm.add_resource_group(SUB, RG_AKS)
        self.arm.add_resource_group(SUB, RG_AI)
        for i in range(clusters):
            self.add_cluster(i, oidc=oidc)
        for j in range(accounts):
            self.arm.add_cognitive_account(account_id(j), deployments=[("gpt-4o", "gpt-4o", "2024-08-06")])
        pacing = pacing_scale if pacing_scale is not None else (limits_scale or 0)
        self.env = {
            "AzureWebJobsStorage": storage,
            "KEYLESS_ARM_ENDPOINT": self.arm.url,
            "KEYLESS_ARM_SCOPE": ARM_SCOPE,
            "KEYLESS_CA_BUNDLE": str(ca.ca_pem_path),
            "KEYLESS_TABLE_NAME": "f" + uuid.uuid4().hex[:20],
            "KEYLESS_ACCESS_POLICY": json.dumps(access_policy()),
            "KEYLESS_ARM_PACING_SCALE": str(pacing),
            "KEYLESS_RETRY_DELAY_SCALE": str(delay_scale),
            **identity_endpoint.env(),
            **(extra_env or {}),
        }
        self._saved_env: dict[str, str | None] = {}
        self.workers, self.visibility = workers, visibility
        self.driver: Driver | None = None
        self.foreign_credentials: set[str] = set()  # lower-case names of credentials others made
        self.started = time.monotonic()

    # --- lifecycle ------------------------------------------------------------------------

    def add_cluster(self, i: int, oidc: bool = True) -> KubeEmulator:
        while len(self.kubes) <= i:
            self.kubes.append(KubeEmulator(self.ca).start())
        kube = self.kubes[i]
        self.arm.add_managed_cluster(
            cluster_id(i),
            kube_server_url=kube.url,
            kube_ca_pem=self.ca.ca_pem,
            oidc_issuer_enabled=oidc,
            workload_identity_enabled=oidc,
            private=self.private,
        )
        return kube

    def __enter__(self) -> World:
        for key, value in self.env.items():
            self._saved_env[key] = os.environ.get(key)
            os.environ[key] = value
        for key in ("KEYLESS_DEV_PRINCIPAL", "WEBSITE_SITE_NAME", "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "MSI_ENDPOINT"):
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ.pop(key, None)
        composition.reset()
        self.functions = app_functions()
        self.driver = Driver(
            self.storage, self.functions["reconcile_worker"], self.workers, self.visibility, self.delay_scale
        )
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.driver is not None:
            self.driver.close()
        composition.reset()
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self.arm.stop()
        for kube in self.kubes:
            kube.stop()

    @property
    def service(self) -> Any:
        return composition.service()

    # --- what callers do ------------------------------------------------------------------

    def prepare(self, items: Iterable[Workload]) -> None:
        """The namespaces exist on their clusters (Keyless does not create them by default)."""
        for w in items:
            if self.kubes[w.cluster].get_object("Namespace", None, w.namespace) is None:
                self.kubes[w.cluster].add_namespace(w.namespace)

    def onboard(self, w: Workload, deadline: float = 30.0) -> str:
        """POST /api/onboardings as a team member; retried while the app answers 5xx (storage down)."""
        body = {
            "cluster": cluster_id(w.cluster),
            "namespace": w.namespace,
            "serviceAccount": w.service_account,
            "openAIAccount": account_id(w.account),
        }
        status, answer = self._until_accepted(lambda: self.http("onboardings_create", "POST", body), deadline)
        assert status in (200, 202), answer
        return str(answer["id"])

    def offboard(self, key: str, deadline: float = 30.0) -> None:
        status, answer = self._until_accepted(
            lambda: self.http("onboardings_delete", "DELETE", None, route_params={"id": key}), deadline
        )
        assert status in (200, 202), answer

    def http(self, name: str, method: str, body: Any, route_params: dict[str, str] | None = None) -> tuple[int, Any]:
        import azure.functions as func

        data = json.dumps(body).encode() if body is not None else b""
        headers = {"X-MS-CLIENT-PRINCIPAL": principal_header()}
        if body is not None:
            headers["Content-Type"] = "application/json"
        req = func.HttpRequest(
            method=method, url="/api/onboardings", headers=headers, route_params=route_params or {}, body=data
        )
        resp = self.functions[name](req)
        text = resp.get_body().decode()
        return resp.status_code, (json.loads(text) if text else None)

    @staticmethod
    def _until_accepted(call: Callable[[], tuple[int, Any]], deadline: float) -> tuple[int, Any]:
        end = time.monotonic() + deadline
        while True:
            try:
                status, answer = call()
            except AzureError:  # the host answers 500 for what the function raised (storage down)
                if time.monotonic() > end:
                    raise
                status, answer = 500, None
            if status < 500 or time.monotonic() > end:
                return status, answer
            time.sleep(0.2)  # a client retrying a 5xx, within its deadline

    def tag(self, cluster: int, items: Iterable[Workload], account: int | None = 0) -> None:
        tags = {"keyless-workloads": ",".join(f"{w.namespace}/{w.service_account}" for w in items)}
        if account is not None:
            tags["keyless-openai-account"] = account_id(account)
            self.consent(account, cluster)
        self.arm.set_tags(cluster_id(cluster), tags)

    def consent(self, account: int, cluster: int) -> None:
        """The account's owner lets the cluster's tags ask for bindings on it (shared.domain.access)."""
        tags = dict((self.arm.cognitive_account(account_id(account)) or {}).get("tags") or {})
        # A tag value holds 256 characters, about one cluster id: one tag per cluster.
        tags[f"keyless-allowed-clusters-{cluster}"] = cluster_id(cluster)
        self.arm.set_tags(account_id(account), tags)

    def deliver(self, event: dict[str, Any], deadline: float = 30.0) -> None:
        """Event Grid delivery: the handler is called until it returns (a raise means redeliver)."""
        decoded_event = json.dumps(event)
        end = time.monotonic() + deadline
        while True:
            decoded = EventGridEventInConverter.decode(meta.Datum(decoded_event, "json"), trigger_metadata={})
            try:
                self.functions["resource_events"](decoded)
                return
            except Exception:
                if time.monotonic() > end:
                    raise
                time.sleep(0.2)  # Event Grid's redelivery, sped up

    def settle(self, deadline: float = 60.0, until: Callable[[], bool] | None = None) -> bool:
        assert self.driver is not None
        return self.driver.settle(deadline, until)

    def records(self) -> dict[str, Any]:
        return {r.key: r for r in self.service.ledger.all()}

    def all_settled(self, expect: dict[str, tuple[str, ...]]) -> bool:
        recs = self.records()
        for key, want in expect.items():
            status = recs[key].status if key in recs else None
            if want[0] == "ready" and status not in READY:
                return False
            if want[0] != "ready" and status != want[0]:
                return False
        return True

    # --- the end state, from the emulators' side ----------------------------------------------

    def arm_writes(self) -> int:
        """Writes ARM took (attempts it refused with 429 are counted apart, as `throttled`)."""
        return sum(1 for r in self.arm.log.writes() if r.status != 429)

    def issuer(self, cluster: int) -> str | None:
        mc = self.arm.managed_cluster(cluster_id(cluster))
        return ((mc or {}).get("properties", {}).get("oidcIssuerProfile") or {}).get("issuerURL")

    def audit(self, scenario: str, expect: dict[Workload, tuple[str, ...]]) -> Audit:
        """Check every binding against what it should be: ("ready",), ("failed", "<reason part>")
        or ("removed",); and that nothing else Keyless made exists."""
        audit = Audit(scenario=scenario, bindings=len(expect))
        audit.seconds = round(time.monotonic() - self.started, 1)
        audit.messages = self.driver.processed if self.driver else 0
        audit.arm_writes = self.arm_writes()
        audit.throttled = len(self.arm.throttled())
        records = self.records()
        live = {w: w.binding() for w, want in expect.items() if want[0] == "ready"}
        for w, want in expect.items():
            record = records.get(w.key)
            status = record.status if record else "(no record)"
            if want[0] == "ready" and status in READY:
                audit.converged += 1
            elif want[0] == "removed" and status == "removed":
                audit.converged += 1
            elif want[0] == "failed" and status == "failed" and want[1] in (record.reason if record else ""):
                audit.failed_as_expected += 1
            else:
                reason = record.reason if record else ""
                audit.problem("lost", f"{w}: {status} ({reason}), expected {want}")
        for body in self.driver.poisoned if self.driver else []:
            audit.problem("lost", f"poisoned message {body}")
        self._audit_azure(audit, live, records)
        self._audit_kube(audit, expect, live)
        return audit

    def _audit_azure(self, audit: Audit, live: dict[Workload, Binding], records: dict[str, Any]) -> None:
        identities = [i for i in self.arm.identities() if (i.get("tags") or {}).get("managed-by") == "keyless"]
        by_workload = collections.defaultdict(list)
        for ident in identities:
            by_workload[ident["tags"].get("keyless-workload")].append(ident)
        live_workloads = {naming.short_hash(b.workload_key, length=32): b for b in live.values()}
        principals: dict[str, dict] = {}
        for tag, found in by_workload.items():
            if tag not in live_workloads:
                for ident in found:
                    audit.problem("leftovers", f"identity {ident['name']}")
                continue
            if len(found) > 1:
                audit.problem("duplicates", f"{len(found)} identities for workload {tag}")
            principals[found[0]["properties"]["principalId"].lower()] = found[0]
        for tag, b in live_workloads.items():
            if tag not in by_workload:
                audit.problem("lost", f"no identity for {b.namespace}/{b.service_account} on {b.cluster.name}")
                continue
            ident = by_workload[tag][0]
            creds = self.arm.federated_credentials(ident["id"])
            ours = [c for c in creds if c["properties"]["subject"] == b.subject]
            issuer = self.issuer(int(b.cluster.name.removeprefix("aks")))
            if len(ours) > 1:
                audit.problem("duplicates", f"{len(ours)} credentials for {b.subject} on {ident['name']}")
            if not ours:
                audit.problem("lost", f"no credential for {b.subject} on {ident['name']}")
            elif ours[0]["properties"]["issuer"] != issuer:
                audit.problem("mismatched", f"credential of {ident['name']} trusts {ours[0]['properties']['issuer']}")
            for c in creds:
                if c["properties"]["subject"] != b.subject and c["name"].lower() not in self.foreign_credentials:
                    audit.problem("leftovers", f"credential {c['name']} on {ident['name']}")
        wanted = {
            (
                by_workload[naming.short_hash(b.workload_key, length=32)][0]["properties"]["principalId"].lower(),
                str(b.account).lower(),
            ): b
            for b in live.values()
            if naming.short_hash(b.workload_key, length=32) in by_workload
        }
        seen = collections.Counter()
        for ra in self.arm.role_assignments():
            p = ra["properties"]
            pair = (p["principalId"].lower(), p["scope"].lower())
            if pair not in wanted:
                audit.problem("leftovers", f"role assignment {ra['name']} for {pair[0]} at {p['scope']}")
            seen[pair] += 1
        for pair, b in wanted.items():
            if seen[pair] == 0:
                audit.problem("lost", f"no role assignment for {b.namespace}/{b.service_account} on {b.account.name}")
            elif seen[pair] > 1:
                audit.problem("duplicates", f"{seen[pair]} role assignments for {pair}")
        ra_ids = {ra["id"].lower() for ra in self.arm.role_assignments()}
        for w, b in live.items():
            record = records.get(w.key)
            ident = (by_workload.get(naming.short_hash(b.workload_key, length=32)) or [None])[0]
            if record is None or ident is None or record.status not in READY:
                continue
            if record.identity.get("clientId") != ident["properties"]["clientId"]:
                audit.problem("mismatched", f"ledger says client {record.identity.get('clientId')} for {w}")
            if record.role_assignment_id and record.role_assignment_id.lower() not in ra_ids:
                audit.problem("mismatched", f"ledger names a role assignment ARM does not have for {w}")

    def _audit_kube(self, audit: Audit, expect: dict[Workload, tuple[str, ...]], live: dict[Workload, Binding]) -> None:
        live_sas = {(w.cluster, w.namespace, w.service_account) for w in live}
        for w, want in expect.items():
            if w.cluster >= len(self.kubes) or self.arm.managed_cluster(cluster_id(w.cluster)) is None:
                continue  # a deleted cluster keeps nothing we could clean
            kube, b = self.kubes[w.cluster], w.binding()
            cm = kube.get_object("ConfigMap", w.namespace, b.configmap_name)
            sa = kube.get_object("ServiceAccount", w.namespace, w.service_account)
            annotations = ((sa or {}).get("metadata") or {}).get("annotations") or {}
            if want[0] == "ready":
                if cm is None or "azure.workload.identity/client-id" not in annotations:
                    audit.problem("lost", f"{w}: service account or config map missing on the cluster")
            elif want[0] == "removed":
                if cm is not None:
                    audit.problem("leftovers", f"config map {b.configmap_name} of {w}")
                if (w.cluster, w.namespace, w.service_account) not in live_sas and annotations.get(
                    "azure.workload.identity/client-id"
                ):
                    audit.problem("leftovers", f"client-id annotation on {w.namespace}/{w.service_account}")


def expect_all(items: Iterable[Workload], *want: str) -> dict[Workload, tuple[str, ...]]:
    return {w: tuple(want) for w in items}


def copy_event(event: dict[str, Any]) -> dict[str, Any]:
    """The same event again (a redelivery keeps its id)."""
    return copy.deepcopy(event)
