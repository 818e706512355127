"""Every resource declaration in infra/ checked against Azure's own resource type definitions.

The definitions are the generated `types.json` of Azure/bicep-types-az (what the Bicep compiler's Azure
provider is built from), kept in tests/reference/bicep-types/ for the type@apiVersion pairs infra/ uses
(tests/reference/SOURCES.md: commit, files, sha256; re-derived by tests/derive_bicep_types.py). For each
declaration: the type@apiVersion exists, every property path set exists (exact spelling), no read-only
property is set, required properties are present, literal values fit their type (string literal unions =
enums, integer bounds, string patterns and lengths).
Values computed from parameters, functions or other resources are not known here and are not checked;
variables are followed to their literal values. Discriminated types (sites/config by name, Event Grid
destinations by endpointType) are checked against the element the discriminator picks.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
TYPES = ROOT / "tests" / "reference" / "bicep-types"

REQUIRED, READ_ONLY = 1, 2
# Bicep's own keywords in a resource body, not properties of the resource type.
BICEP_KEYS = {"parent", "scope", "depends_on", "dependsOn"}
BUILT_INS = {"resourceGroup", "subscription", "tenant", "environment", "deployment", "managementGroup"}


@functools.cache
def definitions() -> dict[str, tuple[list[dict[str, Any]], dict[str, Any]]]:
    """type@apiVersion -> (the entries of its file, its ResourceType entry)."""
    out = {}
    for path in sorted(TYPES.rglob("types.json")):
        entries = json.loads(path.read_text())
        for entry in entries:
            if entry["$type"] == "ResourceType":
                out[entry["name"]] = (entries, entry)
    return out


def parse(path: Path) -> dict[str, Any]:
    return BicepParser().parse(file_path=path)


def unquote(key: str) -> str:
    return key[1:-1] if key.startswith("'") and key.endswith("'") else key


@dataclass
class Checker:
    """Checks one file's declarations; collects problems as `<file> <resource>: <path>: <what>`."""

    path: Path
    tree: dict[str, Any]
    entries: list[dict[str, Any]] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    checked: set[str] = field(default_factory=set)
    where: str = ""

    def __post_init__(self) -> None:
        self.variables = self.tree.get("variables", {})
        self.names = (
            set(self.tree.get("parameters", {}))
            | set(self.variables)
            | set(self.tree.get("resources", {}))
            | set(self.tree.get("modules", {}))
            | BUILT_INS
        )

    def type_of(self, ref: dict[str, str]) -> dict[str, Any]:
        return self.entries[int(ref["$ref"].split("/")[-1])]

    def fail(self, at: str, what: str) -> None:
        self.problems.append(f"{self.path.name} {self.where}: {at or '<body>'}: {what}")

    # --------------------------------------------------------------------------------------- declarations

    def check_all(self) -> None:
        for name, resource in self.tree.get("resources", {}).items():
            self.where = name
            full = f"{resource['type']}@{resource['api_version']}"
            if full not in definitions():
                self.fail("", f"{full}: no such resource type in Azure's definitions (tests/reference/bicep-types)")
                continue
            self.entries, declared = definitions()[full]
            config, loop_names = resource["config"], set()
            while "config" in config and ("loop_type" in config or "condition" in config):
                detail = (config.get("loop_type") or {}).get("detail", {})
                loop_names |= {detail.get("item_name"), detail.get("index_name")} - {None}
                config = config["config"]
            self.names |= loop_names
            self.check(
                {k: v for k, v in config.items() if k not in BICEP_KEYS},
                self.type_of(declared["body"]),
                "",
                required=not resource["existing"],
            )

    # --------------------------------------------------------------------------------------- values

    def check(self, node: Any, kind: dict[str, Any], at: str, required: bool = True) -> None:
        if at:
            self.checked.add(f"{self.path.name}:{self.where}:{at}")
        t = kind["$type"]
        if t == "AnyType" or node is None:
            return
        # Before a union: each branch of `? :` may be another of its members.
        if isinstance(node, dict) and "operator" in node and set(node) == {"operator"}:
            operator = node["operator"]
            if operator["type"] == "conditional":
                self.check(operator["operands"]["true_value"], kind, at, required)
                self.check(operator["operands"]["false_value"], kind, at, required)
            return  # any other expression: not known here
        if t == "UnionType":
            options = [self.type_of(e) for e in kind["elements"]]
            allowed = [o["value"] for o in options if o["$type"] == "StringLiteralType"]
            if allowed and isinstance(self._literal(node), str):
                # Stricter than the compiler, which lets any string through an "extensible" enum (a union with
                # string): a literal in a template is meant to be one of the values Azure documents.
                if node not in allowed:
                    self.fail(at, f"{node!r} is not one of {allowed}")
                return
            trials = []
            for option in options:
                trial = Checker(self.path, self.tree, self.entries, self.names, [], set(), self.where)
                trial.check(node, option, at, required)
                if not trial.problems:
                    self.checked |= trial.checked
                    return
                trials.append(trial.problems)
            self.problems += min(trials, key=len)
            return
        if isinstance(node, dict) and set(node) == {"function"}:
            if node["function"]["type"] == "union" and t in ("ObjectType", "DiscriminatedObjectType"):
                for arg in node["function"]["parameters"].values():
                    if arg is not None:
                        self.check(arg, kind, at, required=False)
            return
        if isinstance(node, dict) and "loop_type" in node:
            if t == "ArrayType":
                self.check(node["config"], self.type_of(kind["itemType"]), f"{at}[]")
            return
        if isinstance(node, str) and node in self.variables:
            self.check(self.variables[node]["value"], kind, at, required)
            return
        if isinstance(node, str) and self._literal(node) is None:
            return  # a parameter, resource, loop variable or interpolation: not known here
        getattr(self, f"_{t}")(node, kind, at, required)

    def _literal(self, node: Any) -> str | None:
        if not isinstance(node, str) or node in self.names or "${" in node:
            return None
        return node

    def _StringType(self, node: Any, kind: dict[str, Any], at: str, required: bool) -> None:  # noqa: N802
        if not isinstance(node, str):
            self.fail(at, f"{node!r} is not a string")
            return
        if "pattern" in kind and not re.search(kind["pattern"], node):
            self.fail(at, f"{node!r} does not match {kind['pattern']}")
        if not kind.get("minLength", 0) <= len(node) <= kind.get("maxLength", len(node)):
            self.fail(at, f"{node!r}: length outside {kind.get('minLength')}..{kind.get('maxLength')}")

    def _StringLiteralType(self, node: Any, kind: dict[str, Any], at: str, required: bool) -> None:  # noqa: N802
        if node != kind["value"]:
            self.fail(at, f"{node!r} is not {kind['value']!r}")

    def _IntegerType(self, node: Any, kind: dict[str, Any], at: str, required: bool) -> None:  # noqa: N802
        if not isinstance(node, int) or isinstance(node, bool):
            self.fail(at, f"{node!r} is not an integer")
        elif not kind.get("minValue", node) <= node <= kind.get("maxValue", node):
            self.fail(at, f"{node} outside {kind.get('minValue')}..{kind.get('maxValue')}")

    def _BooleanType(self, node: Any, kind: dict[str, Any], at: str, required: bool) -> None:  # noqa: N802
        if not isinstance(node, bool):
            self.fail(at, f"{node!r} is not a boolean")

    def _ArrayType(self, node: Any, kind: dict[str, Any], at: str, required: bool) -> None:  # noqa: N802
        if not isinstance(node, list):
            self.fail(at, f"{node!r} is not an array")
            return
        if not kind.get("minLength", 0) <= len(node) <= kind.get("maxLength", len(node)):
            self.fail(at, f"{len(node)} items, outside {kind.get('minLength')}..{kind.get('maxLength')}")
        for item in node:
            self.check(item, self.type_of(kind["itemType"]), f"{at}[]")

    def _ObjectType(self, node: Any, kind: dict[str, Any], at: str, required: bool) -> None:  # noqa: N802
        self._object(node, kind.get("properties", {}), kind.get("additionalProperties"), at, required)

    def _DiscriminatedObjectType(self, node: Any, kind: dict[str, Any], at: str, required: bool) -> None:  # noqa: N802
        if not isinstance(node, dict):
            self.fail(at, f"{node!r} is not an object")
            return
        value = self._literal(node.get(kind["discriminator"]))
        elements = kind["elements"]
        if value is None:  # computed: only the base properties are known
            names = {p for e in elements.values() for p in self.type_of(e).get("properties", {})}
            unknown = set(map(unquote, node)) - names - set(kind["baseProperties"])
            for key in sorted(unknown):
                self.fail(f"{at}.{key}".lstrip("."), "no such property in any variant")
            return
        if value not in elements:
            self.fail(f"{at}.{kind['discriminator']}".lstrip("."), f"{value!r} is not one of {sorted(elements)}")
            return
        element = self.type_of(elements[value])
        properties = kind["baseProperties"] | element.get("properties", {})
        self._object(node, properties, element.get("additionalProperties"), at, required)

    def _object(
        self,
        node: Any,
        properties: dict[str, Any],
        additional: dict[str, str] | None,
        at: str,
        required: bool,
    ) -> None:
        if not isinstance(node, dict):
            self.fail(at, f"{node!r} is not an object")
            return
        for raw, value in node.items():
            key = unquote(raw)
            inner = f"{at}.{key}".lstrip(".")
            if key in properties:
                prop = properties[key]
                if prop["flags"] & READ_ONLY:
                    self.fail(inner, "read-only: ARM sets it")
                self.check(value, self.type_of(prop["type"]), inner)
            elif additional is not None:
                self.check(value, self.type_of(additional), inner)
            elif "${" not in key:
                near = [p for p in properties if p.lower() == key.lower()]
                self.fail(inner, f"no such property{f' (spelt {near[0]!r} there)' if near else ''}")
        if required:
            for name, prop in properties.items():
                if prop["flags"] & REQUIRED and not prop["flags"] & READ_ONLY and name not in map(unquote, node):
                    self.fail(f"{at}.{name}".lstrip("."), "required, not set")


def check_infra(infra: Path) -> Checker:
    """All declarations of all templates under infra/; problems and checked paths of them all."""
    total = Checker(infra, {})
    for path in sorted(infra.rglob("*.bicep")):
        checker = Checker(path, parse(path))
        checker.check_all()
        total.problems += checker.problems
        total.checked |= checker.checked
    return total


# ----------------------------------------------------------------------------------------- the tests


def test_every_declaration_fits_azures_type_definitions():
    result = check_infra(INFRA)
    assert result.problems == []
    # Every declared property path was walked (a regression here means the walk stopped looking).
    assert len(result.checked) >= 200, len(result.checked)


def test_the_reference_holds_exactly_the_types_infra_uses():
    used = {
        f"{r['type']}@{r['api_version']}"
        for path in INFRA.rglob("*.bicep")
        for r in parse(path).get("resources", {}).values()
    }
    assert used <= set(definitions()), "run tests/derive_bicep_types.py for the new types"
    assert set(definitions()) == used, "types kept that infra/ no longer uses: re-derive"
    sources = (TYPES.parent / "SOURCES.md").read_text().split("(`bicep-types/`)")[1].split("\n## ")[0]
    for name in used:
        row = rf"\| Azure/bicep-types-az \| generated/\S+ \| `[0-9a-f]{{40}}` \|.*{re.escape(name)}"
        assert re.search(row, sources), f"no source row for {name}"


# A template change -> the problem the check must report for it.
MUTATIONS = [
    pytest.param(
        "modules/storage.bicep",
        "allowSharedKeyAccess: false",
        "allowSharedKeyAcess: false",
        "properties.allowSharedKeyAcess: no such property",
        id="misspelt-property",
    ),
    pytest.param(
        "modules/storage.bicep",
        "minimumTlsVersion: 'TLS1_2'",
        "minimumTlsVersion: 'TLS1_4'",
        "properties.minimumTlsVersion: 'TLS1_4' is not one of",
        id="bad-enum",
    ),
    pytest.param(
        "modules/function-app.bicep",
        "minTlsVersion: '1.2'",
        "MinTlsVersion: '1.2'",
        "siteConfig.MinTlsVersion: no such property (spelt 'minTlsVersion' there)",
        id="wrong-case",
    ),
    pytest.param(
        "modules/storage.bicep",
        "dnsEndpointType: 'Standard'",
        "dnsEndpointType: 'Standard'\n    provisioningState: 'Succeeded'",
        "properties.provisioningState: read-only",
        id="read-only",
    ),
    pytest.param(
        "modules/custom-role.bicep",
        "        actions: role.Actions\n",
        "",
        None,
        id="optional-removed-is-fine",
    ),
    pytest.param(
        "modules/storage.bicep",
        "  sku: {\n    name: 'Standard_LRS'\n  }\n",
        "",
        "storage: sku: required, not set",
        id="required-missing",
    ),
    pytest.param(
        "modules/resource-events.bicep",
        "endpointType: 'AzureFunction'",
        "endpointType: 'AzureFunctions'",
        "'AzureFunctions' is not one of",
        id="bad-discriminator",
    ),
    pytest.param(
        "modules/resource-events.bicep",
        "maxEventsPerBatch: 1",
        "maxEventsPerBatch: 1\n    maxEventsPerBatchh: 1",
        "destination.properties.maxEventsPerBatchh: no such property",
        id="misspelt-in-a-variable",
    ),
    pytest.param(
        "modules/resource-events.bicep",
        "'Microsoft.EventGrid/systemTopics@2025-02-15' = if",
        "'Microsoft.EventGrid/systemTopic@2025-02-15' = if",
        "Microsoft.EventGrid/systemTopic@2025-02-15: no such resource type",
        id="unknown-type",
    ),
]


@pytest.mark.parametrize(("file", "old", "new", "expected"), MUTATIONS)
def test_a_mutated_template_fails_the_check(tmp_path, file, old, new, expected):
    copy = tmp_path / "infra"
    shutil.copytree(INFRA, copy)
    target = copy / file
    text = target.read_text()
    assert old in text, f"{file} no longer has {old!r}: update the mutation"
    target.write_text(text.replace(old, new, 1))
    problems = check_infra(copy).problems
    if expected is None:
        assert problems == []
    else:
        assert any(expected in p for p in problems), problems
