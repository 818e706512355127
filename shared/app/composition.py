"""The composition root: builds settings, credential, engine, ledger and queue on first use.

Nothing here runs at import time: the Functions host imports function_app.py to index the
functions, and that must not need settings, credentials or the network.
"""

from __future__ import annotations

import threading
from typing import Any

from shared.domain.settings import Settings

_lock = threading.Lock()
_service: Any = None


def service() -> Any:
    """The process-wide `shared.app.keyless.Keyless`, built once from the environment."""
    global _service
    with _lock:
        if _service is None:
            _service = _build(Settings.from_env())
        return _service


def policy() -> Any:
    """The process-wide `shared.domain.policy.AccessPolicy`, parsed once from the settings (with the service:
    the worker asks the same policy as the API)."""
    return service().policy


def reset() -> None:
    """Forget the built objects (after the environment changed, e.g. between tests)."""
    global _service
    with _lock:
        _service = None


def _build(settings: Settings) -> Any:
    from shared.adapters.credentials import default_credential
    from shared.adapters.ledger import Ledger
    from shared.adapters.topic import OutcomeTopic
    from shared.adapters.workqueue import WorkQueue
    from shared.app.keyless import Keyless
    from shared.domain.policy import AccessPolicy
    from shared.engine.reconcile import Engine

    settings.require_storage()
    policy = AccessPolicy.parse(settings.access_policy, settings.system_namespaces, settings.default_role)
    credential = default_credential(settings)
    storage = {
        "connection_string": settings.storage_connection_string,
        "account_name": settings.storage_account_name,
        "credential": credential,
    }
    return Keyless(
        settings=settings,
        ledger=Ledger.connect(settings.table_name, **storage),
        queue=WorkQueue(**storage),
        engine=Engine.from_settings(settings, credential),
        topic=OutcomeTopic(settings, credential) if settings.outcome_topic_endpoint else None,
        policy=policy,
    )
