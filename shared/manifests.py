"""The Kubernetes objects Keyless applies, as plain dicts: one definition for both ways of
reaching a cluster (the API server, or AKS run-command for private clusters). Pure."""

from __future__ import annotations

from typing import Any


def service_account(namespace: str, name: str, annotations: dict[str, str]) -> dict[str, Any]:
    """Exactly our annotations; an empty dict releases them under server-side apply."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata}


def config_map(namespace: str, name: str, data: dict[str, str], labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "data": data,
    }
