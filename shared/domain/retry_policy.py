"""Every timeout, retry count and delay Keyless uses, for every client, declared in one place.

Keyless retries in two layers, never a third (the team's STYLE notes, practice 8):

1. Inside one call, the SDK's own retry policy: a few quick attempts for what a second try
   usually cures (a reset connection, a 503, a 429 with a short Retry-After). `CLIENTS` lists each
   client's numbers; the adapters build their clients from these entries and from no other numbers.
2. Across runs, the work queue: a step that is "not yet" (TemporaryError) ends the run, and the
   binding is queued again after a delay (the `*_SECONDS` delays below; `not_yet_delay` grows them
   while a binding stays not ready). No worker sleeps to retry.

Every attempt of layer 1 is counted (shared.adapters.counting): a call that took two tries counts
as two requests. docs/settings.md ("Retries and timeouts") shows `readme_table()`; a unit test keeps the two
equal.

Pure data and arithmetic: no SDK is imported here, each adapter turns its entry into its SDK's
keywords. Facts come from the team's AZURE-FACTS notes (beside this repository), cited as
AZURE-FACTS, and from the pinned SDKs' sources, cited as
[azure-core] `azure/core/pipeline/policies/_retry.py` (1.41), [storage-queue]
`azure/storage/queue/_shared/policies.py` (12.18), [urllib3] `urllib3/util/retry.py` (2.8) and
[kubernetes] `kubernetes/client/rest.py` (37).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import Any

# ---------------------------------------------------------------------------------- timeouts

CONNECT_TIMEOUT_MAX_SECONDS = 10.0
"""The longest an ARM or Kubernetes call waits for a connection. A black-holed address (a private
cluster's API server seen from outside its network) answers nothing: it must cost seconds, not the
read timeout."""


def call_timeouts(request_timeout_seconds: float) -> tuple[float, float]:
    """(connect, read) seconds of one ARM or Kubernetes attempt: KEYLESS_REQUEST_TIMEOUT_SECONDS to
    read, at most CONNECT_TIMEOUT_MAX_SECONDS to connect. Without them azure-core waits 300 s and
    the kubernetes client forever."""
    return min(CONNECT_TIMEOUT_MAX_SECONDS, request_timeout_seconds), request_timeout_seconds


# ---------------------------------------------------------------------------------- retries inside a call


@dataclasses.dataclass(frozen=True)
class AzureCoreRetry:
    """azure-core's RetryPolicy (ARM, Azure Tables, Event Grid). [azure-core]

    It retries connection errors (ServiceRequestError) and read errors (ServiceResponseError) of
    GET, HEAD, PUT, DELETE, OPTIONS and TRACE; answers 408, 429, 500, 502, 503, 504 (POST and
    PATCH: 500, 503, 504 only); and any answer >= 400 that carries Retry-After. It sleeps
    Retry-After when there is one, else nothing before the first retry and
    `backoff_factor * 2**(k-1)` before the k-th. `total` caps all kinds together."""

    total: int
    connect: int
    read: int
    status: int
    backoff_factor: float
    backoff_max: float

    def kwargs(self) -> dict[str, Any]:
        """The client's (or call's) keywords."""
        return {
            "retry_total": self.total,
            "retry_connect": self.connect,
            "retry_read": self.read,
            "retry_status": self.status,
            "retry_backoff_factor": self.backoff_factor,
            "retry_backoff_max": self.backoff_max,
        }

    def waits(self) -> tuple[float, ...]:
        """The sleep before each retry when the answer names no Retry-After."""
        return tuple(
            0.0 if k == 1 else min(self.backoff_max, self.backoff_factor * 2 ** (k - 1))
            for k in range(1, self.total + 1)
        )


@dataclasses.dataclass(frozen=True)
class StorageLinearRetry:
    """azure-storage-queue's LinearRetry. [storage-queue] It retries connection and read errors
    whatever the method, and answers 408 and 5xx except 501 and 505; it ignores Retry-After and
    sleeps `backoff` ± `jitter` before each retry."""

    total: int
    backoff: float
    jitter: float

    def kwargs(self) -> dict[str, Any]:
        """LinearRetry's keywords."""
        return {"retry_total": self.total, "backoff": self.backoff, "random_jitter_range": self.jitter}

    def waits(self) -> tuple[float, ...]:
        return (self.backoff,) * self.total


@dataclasses.dataclass(frozen=True)
class Urllib3Retry:
    """urllib3's Retry, under the kubernetes client (`Configuration.retries`). [urllib3]

    Counts by kind: `connect` (no connection: DNS, refused, connect timeout), `read` (sent, then a
    read timeout or a reset: only for `methods`), `status`, `redirect` and `other` (TLS and the
    rest). Left unset, the kubernetes client gets urllib3's `Retry(3)`: three retries of each
    kind, and a GET/PUT/DELETE answered 429, 413 or 503 with Retry-After retried after sleeping
    it, however long, all inside one call and invisible. [kubernetes] passes `retries` to the pool.
    """

    total: int
    connect: int
    read: int
    status: int
    redirect: int
    other: int
    methods: tuple[str, ...]
    backoff_factor: float

    def kwargs(self) -> dict[str, Any]:
        """Retry's keywords. Retry-After is not honoured: a 429 or 503 is the work queue's to wait
        out (with urllib3 honouring it and `status` at 0, a 429 would become a MaxRetryError)."""
        return {
            "total": self.total,
            "connect": self.connect,
            "read": self.read,
            "status": self.status,
            "redirect": self.redirect,
            "other": self.other,
            "allowed_methods": frozenset(self.methods),
            "backoff_factor": self.backoff_factor,
            "respect_retry_after_header": False,
        }

    def waits(self) -> tuple[float, ...]:
        """urllib3 sleeps nothing before the first retry, then backoff_factor * 2**(k-1)."""
        return tuple(0.0 if k == 1 else self.backoff_factor * 2 ** (k - 1) for k in range(1, self.total + 1))


@dataclasses.dataclass(frozen=True)
class ClientPolicy:
    """One client: its retries inside a call, its timeouts, and why."""

    client: str
    applies_to: str
    retry: AzureCoreRetry | StorageLinearRetry | Urllib3Retry
    connect_timeout: float | None  # None: call_timeouts(KEYLESS_REQUEST_TIMEOUT_SECONDS)
    read_timeout: float | None
    attempts: str  # what the README says, in words
    notes: str

    def timeouts(self, request_timeout_seconds: float | None = None) -> tuple[float, float]:
        """(connect, read) seconds: this client's own, or those of KEYLESS_REQUEST_TIMEOUT_SECONDS
        (`request_timeout_seconds`, required then)."""
        if self.connect_timeout is not None and self.read_timeout is not None:
            return self.connect_timeout, self.read_timeout
        if request_timeout_seconds is None:
            raise ValueError(f"{self.client}: its timeouts follow KEYLESS_REQUEST_TIMEOUT_SECONDS; pass it")
        return call_timeouts(request_timeout_seconds)


# ---------------------------------------------------------------------------------- waiting inside a call

PACING_MAX_WAIT_SECONDS = 20.0
"""How long an ARM request may wait for its pacing slot, or sleep a 429's Retry-After, before the run
is handed back to the queue instead (shared.adapters.pacing): a turn in a busy subscription is worth
waiting for; longer is a job for the queue, not a worker thread."""

SHARED_PACING_RETRY_SECONDS = 30.0
"""After the shared pacing table failed to answer (shared.adapters.shared_pacing), a process paces
alone, at KEYLESS_PACING_FALLBACK_SHARE of the limits, this long before it asks the table again."""

SHARED_PACING_CONFLICT_ROUNDS = 10
"""ETag conflicts (412) in a row on one bucket's entity before a 429's hold stops being shared
(best effort: the others meet the 429 themselves)."""

SHARED_PACING_CONTENTION_SECONDS = 5.0
"""How long a request keeps losing the race for its bucket's entity (412: another process reserved
in between, read again after a little jitter) before it is handed back to the queue (Throttled).
Never a slot of the local fallback schedule: that schedule's budget comes on top of the shared one
(it once let 81 identity creates into an 80-per-window)."""

RUN_COMMAND_POLL_SECONDS = 2.0
"""Between polls of a run command's result when AKS names no Retry-After (azure-core's LRO poller
prefers it): a command takes seconds to a minute; at most KEYLESS_RUN_COMMAND_WAIT_SECONDS / 2 reads."""

CLUSTER_UPDATE_POLL_SECONDS = 1.0
"""Between polls of our cluster update when AKS names no Retry-After; only while a run waits for
it (KEYLESS_CLUSTER_UPDATE_WAIT_SECONDS, 0 by default: no polling at all)."""

ARM = ClientPolicy(
    client="ARM",
    applies_to="every azure-mgmt client: clusters, accounts, identities, credentials, role assignments, run command",
    # total 3 (azure-core's default is 10, with 3 of each kind: a mix could make 10 attempts).
    # status 3: AZURE-FACTS ("gives up after 3 retries on 429/5xx"); longer throttling is the queue's.
    # read 1: a read timeout already cost KEYLESS_REQUEST_TIMEOUT_SECONDS; one more try covers a
    # reset connection, a second timeout goes to the queue instead of outliving the run's lease.
    retry=AzureCoreRetry(total=3, connect=3, read=1, status=3, backoff_factor=0.8, backoff_max=10.0),
    connect_timeout=None,
    read_timeout=None,
    attempts="4 at most (2 after a read timeout)",
    notes=f"408/429/5xx, dropped connections; a Retry-After past {PACING_MAX_WAIT_SECONDS:g} s ends the call for the "
    "queue (with pacing on)",
)

KUBERNETES = ClientPolicy(
    client="Kubernetes API",
    applies_to="the kubernetes client: namespaces, service accounts, config maps, deployments, pods",
    # connect 0: a cluster that cannot be reached is most often private, and the run should learn
    # it in one connect timeout (then go through run command), not four. read 1, GET only: a read
    # of a reused connection that the server or a load balancer closed is worth one more try; a
    # write whose answer was lost is decided again by the next run, from what it reads.
    # status 0: a 429/5xx is a TemporaryError for the queue (15 s), not a sleep in the worker.
    retry=Urllib3Retry(total=1, connect=0, read=1, status=0, redirect=0, other=0, methods=("GET",), backoff_factor=0.0),
    connect_timeout=None,
    read_timeout=None,
    attempts="2 for a GET after a read error, else 1",
    notes="urllib3's own 3 silent retries turned off; 429/5xx and unreachable go to the queue",
)

TABLES = ClientPolicy(
    client="Azure Tables",
    applies_to="the ledger: records, leases, quotas",
    # A few quick tries, then the caller: the work queue redelivers, an HTTP caller gets a 5xx.
    retry=AzureCoreRetry(total=3, connect=3, read=3, status=3, backoff_factor=0.5, backoff_max=10.0),
    connect_timeout=10.0,
    read_timeout=30.0,
    attempts="4 at most",
    notes="writes are ETag-conditional, so a retried write that had landed is a conflict, re-read",
)

QUEUE = ClientPolicy(
    client="Azure Storage queue",
    applies_to="the work queue: sending messages",
    # The SDK's default (ExponentialRetry: 18 s, 24 s, 42 s) would hold a worker or an HTTP
    # caller for a minute and a half of a storage outage; what it cannot send in a few seconds, its caller
    # hands back (the queue redelivers, the API answers 5xx).
    retry=StorageLinearRetry(total=3, backoff=1.0, jitter=0.5),
    connect_timeout=10.0,
    read_timeout=30.0,
    attempts="4 at most",
    notes="a message sent twice is harmless: runs are idempotent and a binding's run is leased",
)

OUTCOME_EVENT_RETRY_SECONDS = 60.0
"""An outcome event the topic did not take: the binding runs again and publishes then."""

EVENT_GRID = ClientPolicy(
    client="Event Grid topic",
    applies_to="outcome events",
    # A notification: a short try, then the binding is queued again in OUTCOME_EVENT_RETRY_SECONDS.
    # Publishing is a POST: azure-core retries it on 500/503/504 (or an answer with Retry-After),
    # never after a connection or read error (connect and read 0 say so).
    retry=AzureCoreRetry(total=2, connect=0, read=0, status=2, backoff_factor=0.8, backoff_max=10.0),
    connect_timeout=5.0,
    read_timeout=10.0,
    attempts="3 at most (500/503/504, Retry-After)",
    notes=f"not taken: the binding runs again in {OUTCOME_EVENT_RETRY_SECONDS:g} s and publishes then; a duplicate is "
    "allowed (at-least-once, same event id)",
)

ACCESS_PROOF = ClientPolicy(
    client="Entra, OpenAI data plane (proving access)",
    applies_to="KEYLESS_PROVE_ACCESS: the token exchange and one data-plane read per verification",
    # One try each: a verification that cannot finish is `pending` and checked again with growing delays
    # (VERIFICATION_RECHECK_SECONDS), which is the retry.
    retry=AzureCoreRetry(total=0, connect=0, read=0, status=0, backoff_factor=0.0, backoff_max=0.0),
    connect_timeout=5.0,
    read_timeout=15.0,
    attempts="1",
    notes="no answer, 429 or 5xx: the `access` check is pending and the verification runs again later",
)

PACING_TABLE = ClientPolicy(
    client="Azure Tables (pacing)",
    applies_to="the shared pacing schedules: a read and an ETag-conditional write per block of ARM slots",
    # One attempt, short timeouts: an ARM request waits on it. A failure is not retried: the process
    # paces alone, at a conservative share, for SHARED_PACING_RETRY_SECONDS, then asks again.
    retry=AzureCoreRetry(total=0, connect=0, read=0, status=0, backoff_factor=0.0, backoff_max=0.0),
    connect_timeout=2.0,
    read_timeout=5.0,
    attempts="1",
    notes=f"412 (another process reserved first): read again, for at most {SHARED_PACING_CONTENTION_SECONDS:g} s; "
    f"unreachable: local pacing at `KEYLESS_PACING_FALLBACK_SHARE` for {SHARED_PACING_RETRY_SECONDS:g} s",
)

CLIENTS = (ARM, KUBERNETES, TABLES, PACING_TABLE, QUEUE, EVENT_GRID, ACCESS_PROOF)

# ---------------------------------------------------------------------------------- "not yet": the work queue
# Production seconds; the worker multiplies them by KEYLESS_RETRY_DELAY_SCALE. When the answer
# carried Retry-After, that wins over the default named here.

RETRY_AFTER_MIN_SECONDS = 1.0
"""A Retry-After of 0 (or less) still waits this long: a throttled request is never "at once"."""

ARM_UNREACHABLE_SECONDS = 15.0
"""No answer from ARM after azure-core's retries (connection, timeout): a network blip or an incident."""

ARM_THROTTLED_SECONDS = 30.0
"""A 429 after azure-core's retries, when it names no Retry-After (AZURE-FACTS: token buckets refill
in seconds)."""

ARM_SERVER_ERROR_SECONDS = 30.0
"""A 5xx or 408 after azure-core's retries, without Retry-After."""

ARM_CONFLICT_SECONDS = 30.0
"""409: another operation on the resource is in progress (AZURE-FACTS: AKS answers 409 while one runs)."""

NO_CREDENTIAL_SECONDS = 60.0
"""DefaultAzureCredential gave no token (no `az login`, no managed identity): someone has to act, so try
again after a minute, not at the pace of a network blip."""

CREDENTIAL_WRITE_BUSY_SECONDS = 10.0
"""409 ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity: one write at a time per
identity (AZURE-FACTS); the other write takes seconds."""

IDENTITY_NOT_REPLICATED_SECONDS = 10.0
"""ParentResourceNotFound: a credential written right after its identity (AZURE-FACTS: replication)."""

PRINCIPAL_NOT_REPLICATED_SECONDS = 20.0
"""PrincipalNotFound on a role assignment for a new identity (AZURE-FACTS: RBAC troubleshooting docs)."""

NO_KUBECONFIG_SECONDS = 30.0
"""listClusterUserCredential answered without a kubeconfig (a cluster still coming up)."""

RUN_COMMAND_RUNNING_SECONDS = 30.0
"""A run command still running after KEYLESS_RUN_COMMAND_WAIT_SECONDS (it goes on in the cluster)."""

RUN_COMMAND_POD_NOT_RUN_SECONDS = 60.0
"""A run command whose pod never ran (image pull, scheduling): used by shared.domain.kubectl.judge."""

RUN_COMMAND_TRANSIENT_SECONDS = 15.0
"""kubectl in a run command met a transient error (a conflict, a connection): kubectl.judge."""

KUBE_CONFLICT_SECONDS = 5.0
"""409, or a JSON-patch test that failed: the object changed while we worked; read and decide again."""

KUBE_SERVER_ERROR_SECONDS = 15.0
"""429 or 5xx from the API server (never retried inside the call, see KUBERNETES)."""

KUBE_UNREACHABLE_SECONDS = 30.0
"""No connection to the API server (when the cluster is not private, or run command is off)."""

LEDGER_WRITE_FAILED_SECONDS = 15.0
"""Azure Tables refused a ledger write after its retries (not a conflict)."""

CLUSTER_BUSY_SECONDS = 60.0
"""The cluster is creating, updating, ... (AZURE-FACTS: AKS operations take minutes): planner."""

CLUSTER_UPDATE_RUNNING_SECONDS = 60.0
"""Our OIDC / workload identity update is running (the engine's onboarding step)."""

ISSUER_NOT_PUBLISHED_SECONDS = 30.0
"""The cluster update finished but the OIDC issuer URL is not published yet (the onboarding step)."""

ACCOUNT_BUSY_SECONDS = 30.0
"""The OpenAI account is creating, updating, ...: planner."""

NOT_YET_DEFAULT_SECONDS = 30.0
"""A not-ready run whose steps named no delay (TemporaryError's default too)."""

BUSY_BINDING_SECONDS = 15.0
"""A message for a binding another worker is reconciling (its run lease is held)."""

VERIFICATION_RECHECK_SECONDS = 30.0
"""A verification still pending (a rollout under way): checked again after this, doubling."""

VERIFICATION_MAX_RECHECKS = 6
VERIFICATION_MAX_RECHECK_SECONDS = 600.0

ACCESS_PROOF_REUSE_SECONDS = 60.0
"""A live verification (the API) reuses the same instance's proof of access younger than this: a caller
asking again and again cannot make Keyless mint a token and ask Entra for the workload's identity each
time (Entra throttles per client: the workload's own sign-ins would suffer). The worker always proves anew."""

NOT_YET_PATIENT_RUNS = 2
"""Consecutive not-yet runs that wait just the step's own delay before the delays start to grow:
what passes by itself (a principal replicating, for tens of seconds) is not slowed down, what is
stuck backs off. (With growth from the second run, a 30 s replication took 60 s to converge.)"""

NOT_YET_MAX_DELAY_SECONDS = 15 * 60.0
"""The longest `not_yet_delay` lets a binding wait (unless its step asked for longer). What "not
yet" waits for takes minutes (AZURE-FACTS: role changes 5-10 min to take effect, AKS operations,
principal replication): looking at least every 15 minutes, a binding is ready at most ~15 minutes
after the world is. And it bounds the cost of bindings that stay stuck: 1,000 of them make ~1.1 runs
a second, a few ARM reads each, well under ARM's 25 reads/s per subscription, where a fixed 30 s
would be 33 runs a second. It is half the drift sweep's 30 minutes, and far below the queue's 7 days."""

QUEUE_MAX_VISIBILITY_SECONDS = 7 * 24 * 3600.0
"""Azure Storage hides a message for at most 7 days: the longest any delay can be."""

# The Functions host's own retry of a run that raised (host.json, checked by a unit test): the
# message shows again after the visibility timeout, and is poisoned after the fifth delivery.
HOST_RETRY_VISIBILITY_SECONDS = 30.0
HOST_MAX_DEQUEUE_COUNT = 5
POISONED_OFFBOARDING_SECONDS = 3600.0
"""An offboarding whose message was poisoned runs again this much later (a live binding: at the next sweep)."""
FAILED_OFFBOARDING_SECONDS = 3600.0
"""An offboarding that failed (Azure refused to delete a role assignment Keyless made, say) runs again this
much later: the binding is never `removed` while its access may remain, and the sweep reads live ones only."""

LEASE_ACQUIRE_ROUNDS = 3
"""Rounds of insert / read / take over an expired lease before `Ledger.acquire` reports it held:
losing a round means another worker acted in between, so a fourth would most likely lose too."""

# Leases (shared.app.service): not retries, but how long work is held.
RUN_LEASE_SECONDS = 120.0
"""How long a binding's run may take before another worker may take over (plus the cluster wait)."""

RESYNC_HOLD_SECONDS = 300.0
"""How long a queued re-read stands for later events about the same resource."""


def not_yet_delay(base_seconds: float, consecutive: int, rng: Callable[[], float] = random.random) -> float:
    """How long to wait before the next run of a binding that was not ready `consecutive` runs in a
    row (1: this is the first), when this run's steps asked for `base_seconds`.

    Exponential: `base * 2**(consecutive-1)`, capped at NOT_YET_MAX_DELAY_SECONDS (or at `base`
    when the step itself asked for longer). Equal jitter, never below `base`: a value in
    [max(base, d/2), d] for that capped d, drawn with `rng()` (a float in [0, 1)), so that bindings
    stuck together spread out. The first not-yet waits exactly `base`: the step's own delay (a
    Retry-After, a replication lag) is always honoured. Production seconds (the caller applies
    KEYLESS_RETRY_DELAY_SCALE); 0 when `base` is 0 or less."""
    base = max(float(base_seconds), 0.0)
    if base == 0.0:
        return 0.0
    doublings = min(max(consecutive, 1) - 1, 40)  # 2**40 times any base is past the cap
    grown = min(base * 2.0**doublings, max(NOT_YET_MAX_DELAY_SECONDS, base))
    return max(base, grown / 2 + rng() * grown / 2)


# ---------------------------------------------------------------------------------- the docs table


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _waits(policy: ClientPolicy) -> str:
    retry = policy.retry
    waits = retry.waits()
    if not waits:
        return "none"
    text = ", ".join(_seconds(w) for w in waits)
    if isinstance(retry, StorageLinearRetry):
        return f"{text} (± {retry.jitter:g} s)"
    if isinstance(retry, AzureCoreRetry):
        return f"{text}, or Retry-After"
    return text


def _timeouts(policy: ClientPolicy) -> str:
    if policy.connect_timeout is None or policy.read_timeout is None:
        return f"≤ {CONNECT_TIMEOUT_MAX_SECONDS:g} s / `KEYLESS_REQUEST_TIMEOUT_SECONDS`"
    return f"{policy.connect_timeout:g} s / {policy.read_timeout:g} s"


def readme_table() -> str:
    """The "Retries and timeouts" table of docs/settings.md, made from the entries above."""
    rows = [
        "| client | applies to | attempts per call | waits between attempts | connect / read timeout | notes |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for p in CLIENTS:
        rows.append(f"| {p.client} | {p.applies_to} | {p.attempts} | {_waits(p)} | {_timeouts(p)} | {p.notes} |")
    rows.append(
        f"| ARM long-running operations | run command results, our cluster update | one poll each "
        f"{_seconds(RUN_COMMAND_POLL_SECONDS)} / {_seconds(CLUSTER_UPDATE_POLL_SECONDS)} | Retry-After when AKS "
        "sends one | as ARM | for at most `KEYLESS_RUN_COMMAND_WAIT_SECONDS` / `KEYLESS_CLUSTER_UPDATE_WAIT_SECONDS` |"
    )
    rows.append(
        '| work queue, "not yet" | a binding whose step is not ready yet (replication, an operation running, '
        "throttling after the SDK's retries) | one run per delay | the step's delay (e.g. "
        f"{_seconds(PRINCIPAL_NOT_REPLICATED_SECONDS)} principal replication, {_seconds(CLUSTER_BUSY_SECONDS)} cluster "
        "busy, Retry-After), then × 2 per consecutive not-yet from the third on, equal jitter, at most "
        f"{NOT_YET_MAX_DELAY_SECONDS / 60:g} min; × `KEYLESS_RETRY_DELAY_SCALE` | — | a run that raised: "
        f"visible again after {_seconds(HOST_RETRY_VISIBILITY_SECONDS)}, poisoned after {HOST_MAX_DEQUEUE_COUNT} "
        "deliveries (host.json) |"
    )
    return "\n".join(rows)


LIVE_READS_PER_CALLER = 10
LIVE_READ_WINDOW_SECONDS = 60.0
"""Requests that read Azure live for a person (a verification, a dry run) one caller may make in a window: each
reads Azure on Keyless's one read budget, which the sweep, onboardings and offboardings share
(shared.app.self_service). Real seconds, never scaled: a bound on people, not a retry."""
