"""Kubernetes through the AKS run-command API, decided without side effects: commands, manifests,
and reading kubectl's JSON back out of the command's logs.

Why: the API server of a private cluster has no public address, so Keyless (outside the cluster's
network) cannot reach it. AKS can run a command in the cluster for us (`managedClusters/runCommand`,
what `az aks command invoke` does): a pod with kubectl, our files in its working directory, the
output returned as logs. Every command is built from validated names, each argument quoted anyway;
manifests and patches travel as files in the command's context, never on the command line. Server-
side apply keeps the same field manager, so ownership is the same whichever way a write went.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Any

import yaml

from shared.domain import retry_policy

MANIFEST = "keyless.yaml"
PATCH = "patch.json"


def _q(value: str) -> str:
    return shlex.quote(value)


def get_command(namespace: str, refs: list[str]) -> str:
    """`kubectl get` of named objects (kind/name), missing ones left out, with their managedFields."""
    names = " ".join(_q(r) for r in refs)
    return f"kubectl get {names} -n {_q(namespace)} -o json --ignore-not-found --show-managed-fields"


def list_command(resource: str, namespace: str, selector: str = "") -> str:
    selection = f" -l {_q(selector)}" if selector else ""
    return f"kubectl get {_q(resource)} -n {_q(namespace)}{selection} -o json --show-managed-fields"


def list_all_command(resource: str, selector: str) -> str:
    """A label-selected list across all namespaces (the drift sweep's, for a private cluster)."""
    return f"kubectl get {_q(resource)} -A -l {_q(selector)} -o json --show-managed-fields"


def apply_command(field_manager: str, force: bool = True) -> str:
    """Server-side apply; `force` (--force-conflicts) only where Keyless means to take fields over."""
    conflicts = " --force-conflicts" if force else ""
    return (
        f"kubectl apply --server-side{conflicts} --field-manager={_q(field_manager)} "
        f"--show-managed-fields -o json -f {MANIFEST}"
    )


def patch_command(ref: str, namespace: str, field_manager: str) -> str:
    return (
        f"kubectl patch {_q(ref)} -n {_q(namespace)} --type json --patch-file {PATCH} "
        f"--field-manager={_q(field_manager)} --show-managed-fields -o json"
    )


def delete_command(ref: str, namespace: str) -> str:
    return f"kubectl delete {_q(ref)} -n {_q(namespace)} --ignore-not-found -o name"


def manifest(objects: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False)


def patch_file(operations: list[dict[str, Any]]) -> str:
    return json.dumps(operations)


def parse_objects(logs: str) -> list[dict[str, Any]]:
    """Every Kubernetes object in kubectl's JSON output (Lists flattened), in order.

    The logs may hold other lines (warnings); JSON documents are found where a line starts with '{'."""
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    position = 0
    while True:
        start = logs.find("{", position)
        if start < 0:
            return found
        if start > 0 and logs[start - 1] not in "\n\r":
            position = start + 1
            continue
        try:
            doc, end = decoder.raw_decode(logs, start)
        except ValueError:
            position = start + 1
            continue
        position = end
        if isinstance(doc, dict) and isinstance(doc.get("items"), list):
            found += [i for i in doc["items"] if isinstance(i, dict)]
        elif isinstance(doc, dict) and doc.get("kind"):
            found.append(doc)


# What kubectl prints for errors worth retrying: the API server's reason in "Error from server (...)",
# or no connection at all. A JSON-patch `test` that failed means the object changed under us.
_TRANSIENT = (
    "(Conflict)", "(AlreadyExists)", "(TooManyRequests)", "(ServiceUnavailable)", "(InternalError)",
    "(Timeout)", "(ServerTimeout)", "connection to the server", "testing value",
    "Apply failed with",  # kubectl's words for an apply conflict (a field someone set since we looked)
)  # fmt: skip
_DENIED = ("(Forbidden)", "(Unauthorized)", "You must be logged in")


@dataclass(frozen=True)
class CommandFailure:
    """Why a run command did not succeed, and whether trying again later can help."""

    message: str
    temporary: bool
    delay: float = 0.0


# kubectl's own error lines; anything else in the logs (JSON it printed: a pod's env may hold a
# literal key) never leaves this module.
_ERROR_LINE = re.compile(r"^(error: |Error from server|The connection to the server|/bin/sh: |[EW]\d{4} )")


# The API server's validation messages quote the offending value (`Invalid value: "..."`).
_QUOTED_VALUE = re.compile(r'(Invalid value|Unsupported value|Duplicate value): "(?:[^"\\]|\\.)*"')


def error_lines(logs: str) -> list[str]:
    """kubectl's error lines, with any value the API server quoted back replaced by `"…"`."""
    lines = [line.strip() for line in logs.splitlines() if _ERROR_LINE.match(line.strip())]
    return [_QUOTED_VALUE.sub(lambda m: f'{m.group(1)}: "…"', line) for line in lines]


def judge(state: str, exit_code: int | None, reason: str, logs: str) -> CommandFailure | None:
    """None when the command succeeded; else what went wrong, from the result's state, exit code and
    kubectl's last error lines (only those: other output may hold values that must not be stored)."""
    failed_state = state.lower() == "failed"
    if not failed_state and exit_code in (None, 0):
        return None
    logs = "\n".join(error_lines(logs))
    tail = " | ".join(logs.splitlines()[-3:])[:500]
    if failed_state and exit_code in (None, 0):  # the command's pod never ran (image pull, scheduling)
        return CommandFailure(
            f"the run command's pod did not run ({reason or 'no reason given'})",
            True,
            retry_policy.RUN_COMMAND_POD_NOT_RUN_SECONDS,
        )
    message = f"the run command failed (exit {exit_code}): {tail or reason or 'no output'}"
    if any(marker in logs for marker in _DENIED):
        hint = "; Keyless's identity needs the Kubernetes role in infra/ on the cluster (Azure RBAC for Kubernetes)"
        return CommandFailure(message + hint, False)
    if any(marker in logs for marker in _TRANSIENT):
        return CommandFailure(message, True, retry_policy.RUN_COMMAND_TRANSIENT_SECONDS)
    return CommandFailure(message, False)


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any] | None:
    for obj in objects:
        if obj.get("kind") == kind and (obj.get("metadata") or {}).get("name") == name:
            return obj
    return None
