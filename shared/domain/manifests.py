"""The Kubernetes objects Keyless applies, as plain dicts: one definition for both ways of
reaching a cluster (the API server, or AKS run-command for private clusters). Pure.

Under server-side apply a config lists exactly the fields Keyless owns: an empty map is left out,
not sent as `{}` (which would own the map itself), so an empty config gives every field back."""

from __future__ import annotations

from typing import Any


def _metadata(namespace: str, name: str, annotations: dict[str, str] | None, labels: dict[str, str] | None) -> Any:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        metadata["labels"] = labels
    if annotations:
        metadata["annotations"] = annotations
    return metadata


def service_account(
    namespace: str, name: str, annotations: dict[str, str], labels: dict[str, str] | None = None
) -> dict[str, Any]:
    """Exactly our annotations and labels; empty ones release them under server-side apply."""
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _metadata(namespace, name, annotations, labels)}


def config_map(
    namespace: str,
    name: str,
    data: dict[str, str],
    labels: dict[str, str],
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Exactly our keys, labels and annotations; all empty releases them."""
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(namespace, name, annotations, labels),
    }
    if data:
        obj["data"] = data
    return obj
