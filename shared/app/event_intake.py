"""Event intake: an ARM event about a cluster, an OpenAI account or a deployment becomes at most one
queued re-read of the resource (the event is a hint; the worker asks ARM). A thousand duplicate
events make one or two re-reads: see Keyless.queue_resync. The deletion of an identity, a federated
credential or a role assignment queues one check of the bindings that used it (shared.app.deletions)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.domain.resource_events import ResourceEvent

if TYPE_CHECKING:
    from shared.app.keyless import Keyless


def handle_event(app: Keyless, event: ResourceEvent) -> None:
    """Queue a re-read of the cluster or account the event names (never trust the event),
    unless one is queued already. A deployment event re-reads its account."""
    if event.kind in ("identity", "role-assignment"):
        app.queue_check(event.kind, event.child or str(event.resource))
        return
    kind = "cluster" if event.kind == "cluster" else "account"
    app.queue_resync(kind, event.resource, event.change if event.kind != "deployment" else "write")
