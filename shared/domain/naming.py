"""Deterministic names for everything Keyless creates.

Every name is a pure function of the binding, so a retried or concurrent run finds the
resource the previous run made instead of making a second one. Readable parts are
sanitised and truncated; a hash of the exact inputs keeps truncated names from colliding.
"""

from __future__ import annotations

import hashlib
import re
import uuid

# Azure: identity 3-128 chars, federated credential 3-120 chars, both [A-Za-z0-9][A-Za-z0-9-_]*.
IDENTITY_NAME_MAX = 128
CREDENTIAL_NAME_MAX = 120
_AZURE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")

KUBE_NAME_MAX = 253
# Hex digits of SHA-256 in Azure names: 128 bits, beyond any search for a colliding workload.
NAME_DIGEST = 32
LEGACY_NAME_DIGEST = 10  # before: 40 bits, a birthday search of seconds
_ROLE_ASSIGNMENT_NAMESPACE = uuid.UUID("6f1f2ad5-4a0e-4b8a-9d76-6b3f1a8f4c11")


def short_hash(*parts: str, length: int = 10) -> str:
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()
    return digest[:length]


def _compose(prefix: str, readable: list[str], digest: str, max_len: int, sep: str = "-") -> str:
    """`prefix-readable...-digest`, readable parts cut so the whole fits in max_len."""
    body = sep.join(p for p in readable if p)
    room = max_len - len(prefix) - len(digest) - 2 * len(sep)
    body = body[: max(room, 0)].strip("-_.")
    return sep.join(p for p in (prefix, body, digest) if p)


def _azure_safe(value: str) -> str:
    return _UNSAFE.sub("-", value).strip("-_")


def workload_key(cluster_key: str, namespace: str, service_account: str) -> str:
    """Identity of a workload: one managed identity and one federated credential each."""
    return f"{cluster_key}|{namespace}|{service_account}"


def identity_name(
    cluster_name: str, cluster_key: str, namespace: str, service_account: str, digest_length: int = NAME_DIGEST
) -> str:
    """The readable part is cut to fit, and clusters of one name in two resource groups or `.`/`_`
    turned `-` read the same: the digest alone tells workloads apart, so it must be too long to search."""
    digest = short_hash(workload_key(cluster_key, namespace, service_account), length=digest_length)
    readable = [_azure_safe(cluster_name), _azure_safe(namespace), _azure_safe(service_account)]
    name = _compose("keyless", readable, digest, IDENTITY_NAME_MAX)
    assert _AZURE_NAME.match(name) and 3 <= len(name) <= IDENTITY_NAME_MAX, name
    return name


def legacy_identity_name(cluster_name: str, cluster_key: str, namespace: str, service_account: str) -> str:
    """The name identities got before (40 bits of digest): still found, if tagged for the same workload."""
    return identity_name(cluster_name, cluster_key, namespace, service_account, digest_length=LEGACY_NAME_DIGEST)


def credential_name(cluster_name: str, cluster_key: str, namespace: str, service_account: str) -> str:
    """Credentials made under the legacy name are found by issuer and subject, whatever their name."""
    digest = short_hash("fic", workload_key(cluster_key, namespace, service_account), length=NAME_DIGEST)
    readable = [_azure_safe(cluster_name), _azure_safe(namespace), _azure_safe(service_account)]
    name = _compose("keyless", readable, digest, CREDENTIAL_NAME_MAX)
    assert _AZURE_NAME.match(name) and 3 <= len(name) <= CREDENTIAL_NAME_MAX, name
    return name


def role_assignment_name(scope: str, role_definition_id: str, principal_id: str) -> str:
    """uuid5 of (scope, role, principal), all lower-cased: ARM ids are case-insensitive."""
    role_guid = role_definition_id.rstrip("/").rsplit("/", 1)[-1]
    key = f"{scope.lower()}|{role_guid.lower()}|{principal_id.lower()}"
    return str(uuid.uuid5(_ROLE_ASSIGNMENT_NAMESPACE, key))


def configmap_name(service_account: str, account_name: str, account_key: str) -> str:
    """One ConfigMap per binding, so two bindings of one service account never fight."""
    digest = short_hash(service_account, account_key, length=8)
    readable = [service_account.lower(), _UNSAFE.sub("-", account_name.lower()).strip("-")]
    name = _compose("keyless", readable, digest, KUBE_NAME_MAX)
    return re.sub(r"[^a-z0-9.-]", "-", name)


def service_account_subject(namespace: str, service_account: str) -> str:
    return f"system:serviceaccount:{namespace}:{service_account}"
