"""Retries inside a call (shared.domain.retry_policy), against the emulators: what is retried, what
goes to the queue instead, and that every attempt is counted, in the run's request counts (ARM,
Kubernetes) and in the process's tally of attempts (every client).

Faults come from the emulators' own knobs, or from a server placed in front of the Kubernetes
emulator (it drops a connection without answering) or of Azurite (it answers 503): the network or
the service failing, never our code.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ServiceRequestError
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from shared.adapters import counting
from shared.adapters.ledger import Ledger
from shared.adapters.topic import OutcomeTopic
from shared.adapters.workqueue import WorkQueue
from shared.domain import retry_policy
from shared.domain.outcome_events import OutcomeEvent
from tests.azurite import ACCOUNT, DEV_KEY, Azurite
from tests.conftest import CLUSTER_ID, NAMESPACE
from tests.emulators.common import HttpsServer
from tests.emulators.credential import StaticCredential
from tests.emulators.eventgrid import EventGridTopicEmulator


@pytest.fixture
def settings(settings):
    """No client-side ARM pacing: it only adds waits here."""
    return dataclasses.replace(settings, arm_pacing_scale=0)


def tally(client: str) -> tuple[int, int]:
    """(attempts, retries) of `client` in this process so far."""
    seen = counting.attempts().get(client, {})
    return seen.get("attempts", 0), seen.get("retries", 0)


class Since:
    """Attempts and retries of one client from now on."""

    def __init__(self, client: str) -> None:
        self.client = client
        self.start = tally(client)

    @property
    def attempts(self) -> int:
        return tally(self.client)[0] - self.start[0]

    @property
    def retries(self) -> int:
        return tally(self.client)[1] - self.start[1]


class DroppingFront:
    """An HTTPS server in front of the Kubernetes emulator: passes requests through, except that the
    next `drop` requests matching (method, path fragment) lose their connection before any answer."""

    def __init__(self, ca: Any, app: Callable[..., Any]) -> None:
        self.app = app
        self.seen: list[tuple[str, str]] = []
        self.drops: list[tuple[str, str]] = []
        self._server = HttpsServer(self._wsgi, ca)
        self.url = self._server.url

    def drop(self, method: str, path_contains: str, times: int = 1) -> None:
        self.drops += [(method, path_contains)] * times

    def _wsgi(self, environ: dict, start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        self.seen.append((request.method, request.path))
        for i, (method, fragment) in enumerate(self.drops):
            if method == request.method and fragment in request.path:
                del self.drops[i]
                environ["werkzeug.socket"].shutdown(socket.SHUT_RDWR)
                raise ConnectionResetError("dropped before answering")  # werkzeug closes it quietly
        return self.app(environ, start_response)


@pytest.fixture
def front(arm, kube, ca) -> Iterator[DroppingFront]:
    server = DroppingFront(ca, kube._wsgi)
    server._server.start()
    arm.delete_managed_cluster(CLUSTER_ID)
    arm.add_managed_cluster(CLUSTER_ID, kube_server_url=server.url, kube_ca_pem=ca.ca_pem)
    yield server
    server._server.stop()


# ------------------------------------------------------------------------------------------ ARM


def test_an_arm_503_is_retried_once_and_both_attempts_are_counted(arm, kube, engine, binding):
    arm.inject_fault("GET", "/managedClusters/aks1", 503)
    since = Since("arm")
    result = engine.reconcile(binding)
    assert result.status == "ready", result.as_dict()
    cluster_reads = arm.log.matching("GET", "/managedClusters/aks1")
    assert [r.status for r in cluster_reads][:2] == [503, 200], "azure-core tried again at once"
    assert result.requests.arm_reads == len(arm.log.reads()), "the 503 attempt is counted too"
    assert result.requests.arm_writes == len(arm.log.writes())
    assert since.attempts == len(arm.log.items) and since.retries == 1


def test_arm_gives_up_after_the_declared_retries_and_hands_over_to_the_queue(arm, kube, engine, binding):
    policy = retry_policy.ARM.retry
    arm.inject_fault("GET", "/managedClusters/aks1", 503, times=policy.status + 1)
    result = engine.reconcile(binding)
    assert result.status == "not-ready" and "503" in result.step("cluster").reason, result.as_dict()
    assert result.step("cluster").delay_seconds == retry_policy.ARM_SERVER_ERROR_SECONDS
    assert [r.status for r in arm.log.matching("GET", "/managedClusters/aks1")] == [503] * (policy.status + 1)
    assert result.requests.arm_reads == len(arm.log.reads()) == policy.status + 1


# ------------------------------------------------------------------------------------------ Kubernetes


def test_a_kubernetes_read_that_loses_its_connection_is_tried_again_and_counted_twice(
    arm, kube, front, engine, binding
):
    front.drop("GET", f"/namespaces/{NAMESPACE}/serviceaccounts/")
    since = Since("kube")
    result = engine.reconcile(binding)
    assert result.status == "ready", result.as_dict()
    sa_reads = [p for m, p in front.seen if m == "GET" and "/serviceaccounts/" in p]
    assert len(sa_reads) == 2, front.seen
    assert result.requests.kube_reads == len([m for m, _ in front.seen if m == "GET"])
    assert result.requests.kube_reads == len(kube.log.reads()) + 1, "the dropped attempt counts"
    assert result.requests.kube_writes == len(kube.log.writes())
    assert since.attempts == len(front.seen) and since.retries == 1


def test_a_kubernetes_write_that_loses_its_connection_is_not_sent_again(arm, kube, front, engine, binding):
    """The server may have acted: the next run reads and decides (urllib3 would not retry a PATCH either)."""
    front.drop("PATCH", "/serviceaccounts/")
    result = engine.reconcile(binding)
    assert result.status == "not-ready", result.as_dict()
    assert [m for m, p in front.seen if "/serviceaccounts/" in p].count("PATCH") == 1
    assert result.requests.kube_writes == 1 and kube.log.writes() == []
    assert engine.reconcile(binding).status == "ready"


def test_a_kubernetes_429_goes_to_the_queue_instead_of_a_silent_sleep(arm, kube, engine, binding):
    """Left to its defaults, urllib3 would sleep the Retry-After and send the GET again, uncounted."""
    kube.inject_fault("GET", f"/api/v1/namespaces/{NAMESPACE}", 429, retry_after=1)
    since = Since("kube")
    result = engine.reconcile(binding)
    step = result.step("namespace")
    assert result.status == "not-ready" and "429" in step.reason, result.as_dict()
    assert step.delay_seconds == retry_policy.KUBE_SERVER_ERROR_SECONDS
    assert [r.status for r in kube.log.items] == [429]
    assert result.requests.kube_reads == 1 and since.attempts == 1 and since.retries == 0


def test_an_api_server_that_refuses_connections_costs_one_attempt(arm, kube, ca, settings, make_engine, binding):
    """Not retried: an unreachable API server is most often a private one; the run learns it at once."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        arm.delete_managed_cluster(CLUSTER_ID)
        url = f"https://127.0.0.1:{closed.getsockname()[1]}"
        arm.add_managed_cluster(CLUSTER_ID, kube_server_url=url, kube_ca_pem=ca.ca_pem)
        since = Since("kube")
        result = make_engine(settings).reconcile(binding)
    assert result.status == "not-ready" and "unreachable" in result.step("namespace").reason, result.as_dict()
    assert result.step("namespace").delay_seconds == retry_policy.KUBE_UNREACHABLE_SECONDS
    assert result.requests.kube_reads == 1 and since.attempts == 1 and since.retries == 0


# ------------------------------------------------------------------------------------------ Event Grid


@pytest.fixture
def topic(ca) -> Iterator[EventGridTopicEmulator]:
    emulator = EventGridTopicEmulator(ca).start()
    yield emulator
    emulator.stop()


def event() -> OutcomeEvent:
    return OutcomeEvent("e1", "Keyless.Onboarding.Ready", "/keyless", "bindings/b1", "2025-01-01T00:00:00Z", {"a": 1})


def test_an_event_grid_503_is_retried_and_every_attempt_counted(topic, settings):
    publisher = OutcomeTopic(dataclasses.replace(settings, outcome_topic_endpoint=topic.endpoint), StaticCredential())
    topic.inject_fault(503, times=retry_policy.EVENT_GRID.retry.status)
    since = Since("eventgrid")
    publisher.publish(event())
    assert [r.status for r in topic.log.items] == [503, 503, 200] and len(topic.events) == 1
    assert since.attempts == 3 and since.retries == 2

    topic.log.clear()
    topic.inject_fault(503, times=retry_policy.EVENT_GRID.retry.status + 1)
    with pytest.raises(HttpResponseError):
        publisher.publish(event())
    assert len(topic.log.items) == retry_policy.EVENT_GRID.retry.status + 1 == since.attempts - 3


def test_an_event_grid_attempt_without_an_answer_is_counted(settings):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        endpoint = f"https://127.0.0.1:{closed.getsockname()[1]}/api/events"
        publisher = OutcomeTopic(dataclasses.replace(settings, outcome_topic_endpoint=endpoint), StaticCredential())
        since = Since("eventgrid")
        with pytest.raises(ServiceRequestError):
            publisher.publish(event())
    assert since.attempts == 1 and since.retries == 0


# ------------------------------------------------------------------------------------------ storage


class StorageFront:
    """A plain-HTTP server in front of Azurite (storage speaks HTTP locally): passes requests
    through, except that the next `fail` requests matching (method, path fragment) are answered 503."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.seen: list[tuple[str, str, int]] = []
        self.failures: list[tuple[str, str]] = []
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def fail(self, method: str, path_contains: str, times: int = 1) -> None:
        self.failures += [(method, path_contains)] * times

    def _wsgi(self, environ: dict, start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        for i, (method, fragment) in enumerate(self.failures):
            if method == request.method and fragment in request.path:
                del self.failures[i]
                self.seen.append((request.method, request.path, 503))
                return Response("injected", status=503)(environ, start_response)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        answer = requests.request(
            request.method, self.target + request.full_path.rstrip("?"), headers=headers,
            data=request.get_data(), timeout=30,
        )  # fmt: skip
        self.seen.append((request.method, request.path, answer.status_code))
        drop = ("content-length", "transfer-encoding", "connection", "content-encoding")
        kept = [(k, v) for k, v in answer.headers.items() if k.lower() not in drop]
        return Response(answer.content, status=answer.status_code, headers=kept)(environ, start_response)

    def __enter__(self) -> StorageFront:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def azurite() -> Iterator[Azurite]:
    emulator = Azurite().start()
    yield emulator
    emulator.stop()


def through(front: StorageFront, service: str) -> str:
    """A connection string naming the front as the `service` endpoint (table or queue)."""
    endpoint = f"{service.capitalize()}Endpoint={front.url}/{ACCOUNT}"
    return f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={DEV_KEY};{endpoint}"


def test_a_ledger_read_answered_503_is_retried_and_counted(azurite):
    with StorageFront(azurite.endpoints["table"]) as front:
        ledger = Ledger.connect("retries" + uuid.uuid4().hex[:8], connection_string=through(front, "table"))
        ledger.ping()
        front.seen.clear()
        front.fail("GET", "(PartitionKey=")
        since = Since("table")
        assert ledger.get("absent") is None
    assert [status for _, _, status in front.seen] == [503, 404]
    assert since.attempts == 2 and since.retries == 1


def test_a_queue_send_answered_503_is_retried_and_counted(azurite):
    with StorageFront(azurite.endpoints["queue"]) as front:
        queue = WorkQueue("retries" + uuid.uuid4().hex[:8], connection_string=through(front, "queue"))
        queue.ping()
        front.seen.clear()
        front.fail("POST", "/messages")
        since = Since("queue")
        queue.enqueue_raw("hello")
        assert queue.client.receive_message().content == "hello"
    assert [(method, status) for method, _, status in front.seen] == [("POST", 503), ("POST", 201), ("GET", 200)]
    assert since.attempts == 3 and since.retries == 1
