"""The composition root: builds settings, credential, engine, ledger and queue on first use.

Nothing here runs at import time: the Functions host imports function_app.py to index the
functions, and that must not need settings, credentials or the network.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

from shared.domain.errors import KeylessError
from shared.domain.settings import Settings, unknown_keys

if TYPE_CHECKING:  # imported on first use, not when the host indexes the functions
    from shared.app.keyless import Keyless

log = logging.getLogger("keyless.settings")
_lock = threading.Lock()
_service: Keyless | None = None
_warned = False


def service() -> Keyless:
    """The process-wide `shared.app.keyless.Keyless`, built once from the environment."""
    global _service
    with _lock:
        if _service is None:
            from shared.app import sweep

            _warn_unknown_keys()
            _service = _build(Settings.from_env())
            sweep.on_instance_start(_service)  # changed authorisation settings: sweep now
        return _service


def _warn_unknown_keys() -> None:
    """A misspelt KEYLESS_* setting is otherwise silently ignored: say so, once per process (before the
    settings are read, so that it shows even when they are refused)."""
    global _warned
    if not _warned:
        _warned = True
        for problem in unknown_keys(os.environ):
            log.warning("%s", problem)


def storage_failure(exc: BaseException) -> KeylessError | None:
    """An error a storage SDK raised, as the setting (AzureWebJobsStorage) and its fix; None for any other."""
    from shared.adapters.tables import storage_failure as translated

    return translated(exc)


def reset() -> None:
    """Forget the built objects (after the environment changed, e.g. between tests)."""
    global _service
    with _lock:
        _service = None


def _build(settings: Settings) -> Keyless:
    from shared.adapters.credentials import CredentialCheck, default_credential, storage_credential
    from shared.adapters.ledger import Ledger
    from shared.adapters.sweep_log import SweepLog
    from shared.adapters.topic import OutcomeTopic
    from shared.adapters.workqueue import WorkQueue
    from shared.app.keyless import Keyless
    from shared.domain.policy import AccessPolicy
    from shared.engine.reconcile import Engine

    settings.require_storage()
    policy = AccessPolicy.parse(settings.access_policy, settings.system_namespaces, settings.default_role)
    credential = default_credential(settings)
    # AzureWebJobsStorage as the host reads it (shared.domain.storage): a connection string, or service
    # URIs with the storage credential; KEYLESS_CA_BUNDLE is trusted here too (tests' HTTPS Azurite).
    storage = {
        "connection_string": settings.storage.connection_string,
        "credential": storage_credential(settings, credential),
        "connection_verify": settings.ca_bundle,
    }
    tables = {**storage, "endpoint": settings.storage.endpoint("table")}
    return Keyless(
        settings=settings,
        ledger=Ledger.connect(settings.table_name, **tables),
        queue=WorkQueue(**storage, endpoint=settings.storage.endpoint("queue")),
        sweeps=SweepLog.connect(settings.table_name, **tables),
        engine=Engine.from_settings(settings, credential),
        topic=OutcomeTopic(settings, credential) if settings.outcome_topic_endpoint else None,
        policy=policy,
        credential_problem=CredentialCheck(credential, settings.arm_scope).problem,
    )
