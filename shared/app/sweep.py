"""The drift sweep: queue every live binding; the worker repairs whatever drifted."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.app.keyless import Keyless


def sweep(app: Keyless) -> int:
    """Queue every live binding; the engine repairs whatever drifted. Returns how many."""
    count = 0
    for record in app.ledger.all(live_only=True):
        if record.account:
            app.enqueue_binding(record.key, "drift sweep")
            count += 1
    return count
