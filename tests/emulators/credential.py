"""A token credential for tests: what DefaultAzureCredential is in production.

It issues `token_for_scope(scope)`, so each emulator can check that a token was asked for
the right audience (ARM vs. the AKS server application), as Entra would.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from azure.core.credentials import AccessToken

from tests.emulators.common import token_for_scope


class StaticCredential:
    def __init__(self) -> None:
        self.requested_scopes: list[str] = []
        self._lock = threading.Lock()

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        assert len(scopes) == 1, scopes
        with self._lock:
            self.requested_scopes.append(scopes[0])
        return AccessToken(token_for_scope(scopes[0]), int(time.time()) + 3600)

    def close(self) -> None:
        pass
