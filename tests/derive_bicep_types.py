"""Re-derive the Azure resource type definitions that tests/unit/test_bicep_types.py checks infra/ against.

Source: Azure/bicep-types-az, the generated `types.json` of each provider and API version (the same files the
Bicep compiler's Azure type provider is built from). Only the resource types infra/ declares are kept, with
every type entry reachable from them (renumbered; nothing else changed), so that the test data stays small.

    python tests/derive_bicep_types.py <git dir of Azure/bicep-types-az> [commit]

writes tests/reference/bicep-types/<provider folder>/<namespace>/<apiVersion>/types.json and their section of
tests/reference/SOURCES.md (source commit, original blob, sha256 of the derived file; test_reference_data.py
checks those).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
REFERENCE = ROOT / "tests" / "reference"
HERE = REFERENCE / "bicep-types"
HEADING = "## Azure resource type definitions (`bicep-types/`)"


def used_types() -> set[str]:
    """Every `type@apiVersion` a resource declaration in infra/ names (nested declarations included)."""
    parser = BicepParser()
    found = set()
    for path in sorted(INFRA.rglob("*.bicep")):
        for resource in parser.parse(file_path=path).get("resources", {}).values():
            found.add(f"{resource['type']}@{resource['api_version']}")
    return found


def git(git_dir: str, *args: str) -> str:
    return subprocess.run(["git", "-C", git_dir, *args], check=True, capture_output=True, text=True).stdout


def refs(node: Any) -> list[int]:
    """The indexes of the entries a type entry refers to (`{"$ref": "#/<n>"}`)."""
    if isinstance(node, dict):
        if set(node) == {"$ref"}:
            return [int(node["$ref"].split("/")[-1])]
        return [i for value in node.values() for i in refs(value)]
    if isinstance(node, list):
        return [i for item in node for i in refs(item)]
    return []


def renumber(node: Any, new: dict[int, int]) -> Any:
    if isinstance(node, dict):
        if set(node) == {"$ref"}:
            return {"$ref": f"#/{new[int(node['$ref'].split('/')[-1])]}"}
        return {key: renumber(value, new) for key, value in node.items()}
    if isinstance(node, list):
        return [renumber(item, new) for item in node]
    return node


def trim(entries: list[dict[str, Any]], names: set[str]) -> list[dict[str, Any]]:
    """The resource type entries named, and everything they reach, in their original order."""
    roots = [i for i, e in enumerate(entries) if e["$type"] == "ResourceType" and e["name"] in names]
    keep, todo = set(roots), list(roots)
    while todo:
        for i in refs(entries[todo.pop()]):
            if i not in keep:
                keep.add(i)
                todo.append(i)
    order = sorted(keep)
    new = {old: index for index, old in enumerate(order)}
    return [renumber(entries[i], new) for i in order]


def main(git_dir: str, commit: str = "HEAD") -> None:
    commit = git(git_dir, "rev-parse", commit).strip()
    listing = git(git_dir, "ls-tree", "-r", "--name-only", commit, "generated/").split()
    files = [p for p in listing if p.endswith("/types.json")]
    wanted = used_types()
    rows = []
    for name in sorted(wanted):
        resource_type, version = name.split("@")
        namespace = resource_type.split("/")[0].lower()
        candidates = [p for p in files if p.split("/")[-2] == version and namespace in p.split("/")]
        for path in candidates:
            entries = json.loads(git(git_dir, "show", f"{commit}:{path}"))
            if any(e["$type"] == "ResourceType" and e["name"] == name for e in entries):
                rows.append((name, path))
                break
        else:
            sys.exit(f"{name}: no types.json of Azure/bicep-types-az at {commit} defines it")
    by_file: dict[str, set[str]] = {}
    for name, path in rows:
        by_file.setdefault(path, set()).add(name)
    for old in HERE.rglob("types.json"):
        old.unlink()
    lines = [
        HEADING,
        "",
        "For tests/unit/test_bicep_types.py: the generated `types.json` of each provider and API version that",
        "infra/ uses, from Azure/bicep-types-az (what the Bicep compiler's Azure provider is built from), **derived**,",
        "not copied: `python tests/derive_bicep_types.py <git dir of Azure/bicep-types-az> [commit]` keeps the",
        "resource types infra/ declares and every type entry they reach, renumbered, nothing else changed.",
        "",
        "| Local file | Source repo | Source path | Commit | Size (bytes) | sha256 | Licence | Notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for path, names in sorted(by_file.items()):
        entries = json.loads(git(git_dir, "show", f"{commit}:{path}"))
        local = path.removeprefix("generated/")
        out = HERE / local
        out.parent.mkdir(parents=True, exist_ok=True)
        data = (json.dumps(trim(entries, names), separators=(",", ":")) + "\n").encode()
        out.write_bytes(data)
        blob = git(git_dir, "rev-parse", f"{commit}:{path}").strip()
        sha = hashlib.sha256(data).hexdigest()
        kept = ", ".join(sorted(names))
        lines.append(
            f"| `{local}` | Azure/bicep-types-az | {path} | `{commit}` | {len(data)} | `{sha}` | MIT | "
            f"derived from blob {blob}: {kept} |"
        )
    sources = (REFERENCE / "SOURCES.md").read_text()
    section = "\n".join(lines) + "\n\n"
    pattern = re.compile(re.escape(HEADING) + r".*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if pattern.search(sources):
        sources = pattern.sub(lambda _: section, sources)
    else:
        sources = sources.replace("## Quirks worth knowing", section + "## Quirks worth knowing", 1)
    (REFERENCE / "SOURCES.md").write_text(sources)


if __name__ == "__main__":
    main(*sys.argv[1:])
