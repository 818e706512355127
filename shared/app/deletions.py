"""Deleted out of band: a Keyless identity, one of its federated credentials, or a role assignment at
an account. Event Grid tells us within seconds; the bindings that used it are queued, so the reconcile
worker (which reads ARM) puts them back long before the next drift sweep would notice.

The event is a hint, as every ARM event: it only says which bindings to run. A role assignment is
found through the ledger's account lookup (O(bindings on the account)); an identity through the live
records (a page of 1,000 per table request): deletions are rare, and a burst of duplicates is one
queued check per resource (the lease of `Keyless.queue_check`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from shared.app.keyless import deleted_lease
from shared.domain.ids import ACCOUNT_TYPE, parse_resource_id
from shared.domain.sweep_plan import identity_id

if TYPE_CHECKING:
    from shared.app.keyless import Keyless

log = logging.getLogger("keyless.service")

KINDS = ("identity", "role-assignment")


def repair_after_delete(app: Keyless, kind: str, resource_id: str) -> list[str]:
    """Queue a run of every live binding that used the deleted resource; returns their keys."""
    app.release_quietly(deleted_lease(kind, resource_id))  # an event from now on queues a new check
    wanted = resource_id.lower()
    if kind == "role-assignment":
        account = resource_id.lower().split("/providers/microsoft.authorization/", 1)[0]
        account_id = parse_resource_id(account, ACCOUNT_TYPE, "id")
        records = [r for r in app.ledger.all(account=str(account_id), live_only=True)
                   if (r.role_assignment_id or "").lower() == wanted]  # fmt: skip
    else:
        records = [r for r in app.ledger.all(live_only=True) if identity_id(r).lower() == wanted]
    for r in records:
        app.enqueue_binding(r.key, f"its {kind.replace('-', ' ')} was deleted")
    if records:
        log.info("%s %s deleted: %d bindings queued", kind, resource_id, len(records))
    return [r.key for r in records]
