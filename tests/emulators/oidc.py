"""Where the emulated Entra ID finds an OIDC issuer's signing keys: the issuer directory.

Why: Entra validates a federated client assertion by fetching the issuer's discovery document
(`{issuer}.well-known/openid-configuration`, OpenID Connect Discovery 1.0 §4) and then its
`jwks_uri` (RFC 7517). An AKS issuer is `https://<region>.oic.prod-aks.azure.com/<tenant>/<uuid>/`,
a host the tests cannot serve. So each emulated cluster (tests.emulators.kube) publishes its
issuer's documents here, keyed by the exact issuer URL, and the Entra emulator (tests.emulators.entra)
reads them from here instead of over the network. What it reads are the same two JSON documents a
real issuer serves (the Kubernetes API server also serves them at /.well-known/openid-configuration
and /openid/v1/jwks, and the kube emulator does too); exact-string issuer matching is kept: an
issuer without its trailing slash is another, unknown issuer.

A cluster deleted (or recreated, which gives a new issuer) calls `withdraw`: its tokens no longer
validate, as on AKS where the old issuer stops serving.

A document may be published as a zero-argument callable that returns it: it is called on every read
(outside the directory's lock). The kube emulator publishes its JWKS that way, so that the RSA key of
an issuer (about 0.1 s to generate) is made only when someone signs with it or asks for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

Document = dict[str, Any] | Callable[[], dict[str, Any]]
"""A JSON document, or a callable that returns it when read."""


def _resolve(document: Document) -> dict[str, Any]:
    return document() if callable(document) else document


class IssuerDirectory:
    """issuer URL (exact string) -> (discovery document, JWKS)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._issuers: dict[str, tuple[Document, Document]] = {}

    def publish(self, issuer: str, discovery: Document, jwks: Document) -> None:
        with self._lock:
            self._issuers[issuer] = (discovery, jwks)

    def withdraw(self, issuer: str) -> None:
        with self._lock:
            self._issuers.pop(issuer, None)

    def discovery(self, issuer: str) -> dict[str, Any] | None:
        """The issuer's discovery document, or None when nothing serves that exact URL."""
        with self._lock:
            found = self._issuers.get(issuer)
        return None if found is None else _resolve(found[0])

    def jwks(self, issuer: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._issuers.get(issuer)
        return None if found is None else _resolve(found[1])

    def issuers(self) -> list[str]:
        with self._lock:
            return sorted(self._issuers)


DEFAULT_DIRECTORY = IssuerDirectory()
"""The one every emulator uses unless a test gives its own (a test run is one 'internet')."""
