"""Errors by what the caller should do about them, not by where they came from.

    KeylessError
    ├── TemporaryError   "not yet": retry after `delay_seconds` (queue redelivery, never a sleep)
    │   ├── Throttled    Azure's limits, not the binding: no verdict, the status stays
    │   └── NoCredential Keyless has no Azure token (no `az login`, no managed identity): its own
    │                    problem, not the binding's: no verdict, the status stays, the reason names the fix
    └── PermanentError   "failed": a person must fix something; `reason` says what
        ├── NotFoundError   the resource does not exist (ARM 404): a deletion, not a refusal
        └── NotAllowed      the Kubernetes API refused Keyless (401/403): a missing grant

Adapters translate SDK exceptions into these by HTTP status and error *code*, and chain the
original as `__cause__`. ARM errors are never classified by message text (ARM has changed its
messages without a version bump). Two places must read text, because nothing else tells: a failed
JSON-patch `test` op, which the Kubernetes API reports as `Invalid` with "testing value" in its
message (shared.adapters.kube_connection), and kubectl's own error lines that come back from a run command as
logs, with no status at all (shared.domain.kubectl.judge).

    LedgerConflict (not a KeylessError): the ledger record changed since it was read; re-read it.
"""

from __future__ import annotations


class KeylessError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TemporaryError(KeylessError):
    """The world is not ready yet (replication, an operation in progress, throttling)."""

    def __init__(self, reason: str, delay_seconds: float = 30.0) -> None:
        super().__init__(reason)
        self.delay_seconds = delay_seconds


class Throttled(TemporaryError):
    """Azure said "slow down" (a 429, or a pacing wait too long for a worker): no verdict on the
    binding. A run that ends on it keeps the binding's status and verification (shared.app.worker)."""


class NoCredential(TemporaryError):
    """DefaultAzureCredential found no credential that gives a token (locally: no `az login`; in Azure: no
    managed identity, or AZURE_CLIENT_ID names another). Nothing is wrong with the binding: a run that ends
    on it keeps the binding's status (shared.app.worker), and `reason` says what to do."""


class PermanentError(KeylessError):
    """Retrying will not help until someone changes an input or a resource."""


class NotFoundError(PermanentError):
    """The resource does not exist. Callers that react to deletions tell it from a refusal (403)."""


class NotAllowed(PermanentError):
    """The Kubernetes API refused Keyless (401, 403): a role or binding is missing. Callers that explain a
    refusal (the proof of access) tell it from other failures."""


class LedgerConflict(Exception):
    """Someone else wrote the ledger record since we read it: re-read and decide again."""
