"""The deployment templates (infra/*.bicep), checked without a Bicep compiler.

No Bicep compiler can be installed on our machines, so the templates are read with pycep (a Bicep parser
in Python, pinned in requirements-dev.txt) and checked for what a parser can see: every file parses, every
parameter is used, module calls pass what the modules declare, every app setting of
local.settings.sample.json is set from a parameter defaulting to the sample's value, every role of
infra/roles is created (placeholders filled) and assigned, the role-assignment condition is attached, the
Event Grid filters let through every event shared.domain.resource_events acts on and drop the others (but
role assignments removed below an account's child resources, which Event Grid's operators cannot tell
apart), and no key or connection string appears anywhere. A small evaluator runs the few expressions whose
results matter (the condition, the scope lists); Event Grid's advanced-filter operators are evaluated as
its docs define them.

Resource types, API versions and property names against Azure's own definitions: test_bicep_types.py.
What neither can check (docs/deploy.md): what ARM would do (what-if), and anything only a deployment shows. pycep parses
`a == b ? c : d` as `a == (b ? c : d)`, so the templates parenthesise comparisons.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pycep import BicepParser

from shared.domain.binding import OPENAI_USER_ROLE_ID
from shared.domain.ids import ACCOUNT_TYPE, CLUSTER_TYPE, IDENTITY_TYPE
from shared.domain.resource_events import DELETE, HANDLED_TYPES, WRITE, parse_event

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
MODULES = INFRA / "modules"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
ROLE_FILES = sorted((INFRA / "roles").glob("*.json"))
SAMPLE = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]

# Sample settings that the Functions platform handles itself: the worker runtime comes from
# functionAppConfig.runtime on Flex Consumption, storage from the identity-based AzureWebJobsStorage__*.
PLATFORM_HANDLED = {"FUNCTIONS_WORKER_RUNTIME", "AzureWebJobsStorage", "AzureWebJobsFeatureFlags"}
# What function-app.bicep sets besides the KEYLESS_* settings, and nothing else.
PLATFORM_SETTINGS = {
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__tableServiceUri",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "AZURE_CLIENT_ID",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "PYTHON_ENABLE_OPENTELEMETRY",
    # With App Service Authentication: the client id of the app's managed identity, whose assertion App
    # Service Authentication signs in with instead of a client secret (not a secret itself).
    "OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID",
}

# Role file -> (the module in keyless-access.bicep that assigns it, the scope list it loops over, the
# deploy condition), as docs/security.md "What Keyless itself may do" says. The outcome sender is assigned at the
# outcome topic (outcome-topic.bicep).
ASSIGNMENTS = {
    "keyless-identity-operator": ("identityOperator", "identityGroups", None),
    "keyless-access-granter": ("accessGranter", "openAIList", None),
    "keyless-cluster-reader": ("clusterReader", "clusterList", None),
    "keyless-cluster-feature-enabler": ("featureEnabler", "clusterList", "withFeatures"),
    "keyless-run-command": ("runCommand", "privateClusterList", "withRunCommand"),
    "keyless-role-assignment-counter": ("counter", "openAISubscriptions", "withCounter"),
    "keyless-local-auth-disabler": ("localAuthDisabler", "localAuthScopes", None),
    "keyless-cluster-local-admin": ("localAdmin", "clusterList", "withLocalAccounts"),
    "keyless-aks-rbac": ("workloadBinder", "clusterList", "grantAksWorkloadBinder"),
}

# Ids in the casings users and ARM write them.
S1, S2, S3 = (f"0000000{n}-AAAA-BBBB-CCCC-DDDDDDDDDDDD" for n in (1, 2, 3))
DEPLOYMENT_SUBSCRIPTION = "0000000d-aaaa-bbbb-cccc-dddddddddddd"
CLUSTER_1 = f"/subscriptions/{S1}/resourceGroups/RG-AKS/providers/Microsoft.ContainerService/managedClusters/aks1"
CLUSTER_2 = (
    f"/subscriptions/{S2.lower()}/resourcegroups/rg-aks2/providers/microsoft.containerservice/managedclusters/aks2"
)
ACCOUNT_1 = f"/subscriptions/{S3}/resourceGroups/rg-ai/providers/Microsoft.CognitiveServices/accounts/oai"


@functools.cache
def _parser() -> BicepParser:
    return BicepParser()


@functools.cache
def template(path: Path) -> dict[str, Any]:
    return _parser().parse(file_path=path)


def strings(node: Any) -> list[str]:
    """Every string value in a parsed tree (identifiers and literals alike: pycep does not tell them apart)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict) and node.get("operator", {}).get("type") == "property_accessor":
        operands = node["operator"]["operands"]
        return strings(operands["operand_1"]) + _path_strings(operands["operand_2"])
    if isinstance(node, dict):
        # Object keys are names, not references, unless interpolated ('${identityId}': {}).
        return [s for key, value in node.items() for s in [*([key] if "${" in str(key) else []), *strings(value)]]
    if isinstance(node, list):
        return [s for item in node for s in strings(item)]
    return []


def _path_strings(path: Any) -> list[str]:
    """The strings of an access path (`.b[i].c` of a.b[i].c) but its property names."""
    if isinstance(path, str):
        return []
    operands = path["operator"]["operands"]
    if path["operator"]["type"] == "index_accessor":
        return _path_strings(operands["operand_1"]) + strings(operands["operand_2"])
    return _path_strings(operands["operand_1"]) + _path_strings(operands["operand_2"])


def references(node: Any, name: str) -> bool:
    pattern = re.compile(rf"(?<![\w.']){re.escape(name)}(?!\w)")
    return any(pattern.search(s) for s in strings(node))


def call(node: Any, kind: str) -> dict[str, Any] | None:
    """The parameters of a function call node of this pycep type, or None."""
    if isinstance(node, dict) and isinstance(node.get("function"), dict) and node["function"]["type"] == kind:
        return node["function"]["parameters"]
    return None


def calls(node: Any, kind: str) -> list[dict[str, Any]]:
    """The parameters of every call of this pycep function type in a tree."""
    found = [params] if (params := call(node, kind)) is not None else []
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    return found + [p for child in children for p in calls(child, kind)]


def dotted(node: Any) -> str:
    """An access chain (a.b[0].c) as text."""
    if not isinstance(node, dict):
        return str(node)
    kind, operands = node["operator"]["type"], node["operator"]["operands"]
    if kind == "index_accessor":
        return f"{dotted(operands['operand_1'])}[{operands['operand_2']}]"
    assert kind == "property_accessor", kind
    return f"{dotted(operands['operand_1'])}.{dotted(operands['operand_2'])}"


def body(resource_or_module: dict[str, Any]) -> dict[str, Any]:
    """The object of a resource/module, under its loop and condition if any."""
    config = resource_or_module["config"]
    while "config" in config and ("loop_type" in config or "condition" in config):
        config = config["config"]
    return config


def resources_of(path: Path, resource_type: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template(path).get("resources", {}).items() if v["type"] == resource_type}


def modules_of(path: Path, module_path: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template(path).get("modules", {}).items() if v["detail"]["path"] == module_path}


def camel(setting: str) -> str:
    first, *rest = setting.lower().split("_")
    return first + "".join(part.capitalize() for part in rest)


def unquote(key: str) -> str:
    return key[1:-1] if key.startswith("'") and key.endswith("'") else key


# ----------------------------------------------------------------------------------------- an evaluator


class Unevaluable(Exception):
    pass


_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", "'": "'", "$": "$"}


def _literal(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], m[0]), text)


class Evaluator:
    """The Bicep expressions our templates use, over pycep's tree: enough to run a variable for given
    parameters. pycep leaves identifiers and string literals alike; a string naming a known parameter,
    variable or lambda argument is taken as that name."""

    def __init__(self, path: Path, params: dict[str, Any]) -> None:
        self.path = path
        self.tree = template(path)
        declared = self.tree.get("parameters", {})
        self.values = {name: p.get("default") for name, p in declared.items()} | params
        self.variables = self.tree.get("variables", {})

    def var(self, name: str) -> Any:
        return self.eval(name, {})

    def eval(self, node: Any, scope: dict[str, Any]) -> Any:
        if node is None or isinstance(node, bool | int | float):
            return node
        if isinstance(node, str):
            return self._name_or_string(node, scope)
        if isinstance(node, list):
            return [self.eval(item, scope) for item in node]
        if set(node) == {"function"}:
            return self._call(node["function"]["type"], list(node["function"]["parameters"].values()), scope)
        if set(node) == {"operator"}:
            return self._operator(node["operator"]["type"], node["operator"]["operands"], scope)
        if "loop_type" in node:
            return self._loop(node, scope)
        if node.get("type") == "lambda_expression":
            return node["detail"], scope
        return {unquote(key): self.eval(value, scope) for key, value in node.items()}

    def _name_or_string(self, text: str, scope: dict[str, Any]) -> Any:
        if text in scope:
            return scope[text]
        if text in self.values:
            return self.values[text]
        if text in self.variables:
            return self.eval(self.variables[text]["value"], {})
        if text.endswith("()") or re.fullmatch(r"\w+\(\)\.\w+", text):
            raise Unevaluable(text)

        def part(match: re.Match[str]) -> str:
            name, index = match[1], match[2]
            value = self._name_or_string(name, scope)
            return str(value[int(index)] if index is not None else value)

        pieces = re.split(r"(\$\{[^}]*\})", text)
        out = []
        for piece in pieces:
            inner = re.fullmatch(r"\$\{(\w+)(?:\[(\d+)\])?\}", piece)
            if inner:
                out.append(part(inner))
            elif piece.startswith("${"):
                raise Unevaluable(piece)
            else:
                out.append(_literal(piece))
        return "".join(out)

    def _apply(self, fn: Any, *args: Any) -> Any:
        detail, scope = fn
        return self.eval(detail["expression"], scope | {detail["var_1"]: args[0]})

    def _call(self, kind: str, raw: list[Any], scope: dict[str, Any]) -> Any:
        while raw and raw[-1] is None:
            raw = raw[:-1]
        a = [self.eval(arg, scope) for arg in raw]
        if kind == "union":
            if all(isinstance(x, dict) for x in a):
                return functools.reduce(lambda x, y: x | y, a, {})
            return list(dict.fromkeys(itertools.chain.from_iterable(a)))
        simple = {
            "split": lambda s, d: s.split(d),
            "join": lambda xs, d: d.join(xs),
            "replace": lambda s, old, new: s.replace(old, new),
            "trim": str.strip,
            "to_lower": str.lower,
            "empty": lambda x: not x,
            "starts_with": lambda s, p: s.lower().startswith(p.lower()),
            "contains": lambda c, x: x in c,
            "take": lambda x, n: x[: max(n, 0)],
            "length": len,
            "last": lambda x: x[-1],
            "int": int,
            "load_text_content": lambda p: (self.path.parent / p).read_text(),
            "filter": lambda xs, fn: [x for x in xs if self._apply(fn, x)],
            "map": lambda xs, fn: [self._apply(fn, x) for x in xs],
            # The deployment's own subscription, for the scope lists that start from it.
            "subscription": lambda: {
                "subscriptionId": DEPLOYMENT_SUBSCRIPTION,
                "id": f"/subscriptions/{DEPLOYMENT_SUBSCRIPTION}",
            },
        }
        if kind not in simple:
            raise Unevaluable(kind)
        return simple[kind](*a)

    def _loop(self, node: dict[str, Any], scope: dict[str, Any]) -> list[Any]:
        detail = node["loop_type"]["detail"]
        out = []
        for index, item in enumerate(self.eval(detail["array_name"], scope)):
            inner = (
                scope | {detail["item_name"]: item} | ({detail["index_name"]: index} if "index_name" in detail else {})
            )
            if node.get("condition") is None or self.eval(node["condition"], inner):
                out.append(self.eval(node["config"], inner))
        return out

    def _path(self, value: Any, path: Any, scope: dict[str, Any]) -> Any:
        """`value.<path>`: pycep nests the rest of an access chain in its second operand."""
        if isinstance(path, str):
            return value[path]
        kind, operands = path["operator"]["type"], path["operator"]["operands"]
        inner = self._path(value, operands["operand_1"], scope)
        if kind == "index_accessor":
            return inner[self.eval(operands["operand_2"], scope)]
        return self._path(inner, operands["operand_2"], scope)

    def _operator(self, kind: str, operands: dict[str, Any], scope: dict[str, Any]) -> Any:
        if kind == "property_accessor":
            return self._path(self.eval(operands["operand_1"], scope), operands["operand_2"], scope)
        if kind == "conditional":
            branch = "true_value" if self.eval(operands["condition"], scope) else "false_value"
            return self.eval(operands[branch], scope)
        a = [self.eval(v, scope) for v in operands.values()]
        table = {
            "not": lambda x: not x,
            "equals": lambda x, y: x == y,
            "not_equals": lambda x, y: x != y,
            "and": lambda x, y: x and y,
            "or": lambda x, y: x or y,
            "greater_than": lambda x, y: x > y,
            "index_accessor": lambda x, i: x[i],
        }
        if kind not in table:
            raise Unevaluable(kind)
        return table[kind](*a)


# ----------------------------------------------------------------------------------------- the files


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_every_template_parses(path):
    tree = template(path)
    assert tree.get("resources") or tree.get("modules"), path


def test_main_deploys_at_subscription_scope_and_every_module_exists():
    assert template(MAIN)["globals"]["scope"]["value"] == "subscription"
    for path in BICEP_FILES:
        for name, module in template(path).get("modules", {}).items():
            assert module["type"] == "local", f"{path.name}: {name} comes from a registry"
            assert (path.parent / module["detail"]["path"]).is_file(), f"{path.name}: {name}"
    used = {
        (path.parent / m["detail"]["path"]).resolve()
        for path in BICEP_FILES
        for m in template(path).get("modules", {}).values()
    }
    assert used == {p.resolve() for p in MODULES.glob("*.bicep")}, "a module no template deploys"


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_every_parameter_is_used(path):
    tree = template(path)
    params = tree.get("parameters", {})
    rest = {key: value for key, value in tree.items() if key != "parameters"}
    defaults = {name: p.get("default") for name, p in params.items()}
    for name in params:
        others = {k: v for k, v in defaults.items() if k != name}
        assert references(rest, name) or references(others, name), f"{path.name}: parameter {name} is not used"


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_module_calls_pass_what_the_modules_declare(path):
    for name, module in template(path).get("modules", {}).items():
        declared = template(path.parent / module["detail"]["path"]).get("parameters", {})
        passed = set(body(module).get("params", {}))
        required = {p for p, spec in declared.items() if "default" not in spec}
        assert passed <= set(declared), f"{path.name}: {name} passes unknown {passed - set(declared)}"
        assert required <= passed, f"{path.name}: {name} misses {required - passed}"


def test_the_azd_parameters_file_names_parameters_of_main():
    mapped = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert set(mapped) <= set(template(MAIN)["parameters"])
    # The postdeploy hook turns the resource_events subscription on through this variable.
    assert mapped["subscribeResourceEvents"]["value"] == "${KEYLESS_SUBSCRIBE_EVENTS=false}"
    azure = yaml.safe_load((ROOT / "azure.yaml").read_text())
    assert azure["services"]["api"] == {"project": ".", "language": "python", "host": "function"}
    hooks = azure["hooks"]["postdeploy"]
    for shell, suffix in (("posix", "sh"), ("windows", "ps1")):
        script = (ROOT / hooks[shell]["run"]).read_text()
        assert hooks[shell]["run"].endswith(suffix)
        assert "azd env set KEYLESS_SUBSCRIBE_EVENTS true" in script  # tests/unit/test_azd_hooks.py runs it
        assert "azd provision --no-prompt" in script


# ----------------------------------------------------------------------------------------- the app


def _function_app_settings() -> tuple[list[Any], Evaluator]:
    (settings,) = [
        body(r)
        for r in resources_of(MODULES / "function-app.bicep", "Microsoft.Web/sites/config").values()
        if body(r)["name"] == "appsettings"
    ]
    parts = call(settings["properties"], "union")
    assert parts is not None, "app settings are a union of the KEYLESS_* settings and the platform's"
    return list(parts.values()), Evaluator(MODULES / "function-app.bicep", {})


def test_every_sample_setting_comes_from_a_parameter_with_the_samples_default():
    parts, _ = _function_app_settings()
    assert parts[0] == "appSettings"
    (app,) = modules_of(MAIN, "modules/function-app.bicep").values()
    assert body(app)["params"]["appSettings"] == "keylessSettings"
    settings = {unquote(k): v for k, v in template(MAIN)["variables"]["keylessSettings"]["value"].items()}
    expected = set(SAMPLE) - PLATFORM_HANDLED
    assert set(settings) == expected, f"missing: {expected - set(settings)}, unknown: {set(settings) - expected}"
    params = template(MAIN)["parameters"]
    for key, value in settings.items():
        param = camel(key)
        assert references(value, param), f"{key} is not set from parameter {param}"
        assert params[param]["type"] == "string", key
        assert params[param].get("default") == SAMPLE[key], f"{param}: default is not the sample's {SAMPLE[key]!r}"


def test_the_platform_settings_are_identity_based_and_nothing_else_is_set():
    parts, evaluator = _function_app_settings()
    platform: dict[str, Any] = {}
    for part in parts[1:]:
        value = template(MODULES / "function-app.bicep")["variables"][part]["value"]
        operands = value.get("operator", {}).get("operands", {})
        branches = [operands[k] for k in ("true_value", "false_value") if k in operands] or [value]
        for branch in branches:
            if isinstance(branch, dict) and "operator" not in branch:
                platform |= {unquote(k): v for k, v in branch.items()}
    assert set(platform) == PLATFORM_SETTINGS
    assert not set(platform) & set(SAMPLE), "a platform setting would override a sample setting"
    assert platform["AzureWebJobsStorage__credential"] == "managedidentity"
    assert platform["AzureWebJobsStorage__clientId"] == platform["AZURE_CLIENT_ID"] == "identityClientId"
    assert platform["PYTHON_ENABLE_OPENTELEMETRY"] == "true", "host.json's OpenTelemetry mode needs the worker's too"
    assert evaluator.eval(platform["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"], {"identityClientId": "c1"}) == (
        "ClientId=c1;Authorization=AAD"
    )


def test_the_function_app_runs_python_311_on_flex_consumption_with_its_identity():
    path = MODULES / "function-app.bicep"
    (plan,) = (body(r) for r in resources_of(path, "Microsoft.Web/serverfarms").values())
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"} and plan["properties"]["reserved"] is True
    (site,) = (body(r) for r in resources_of(path, "Microsoft.Web/sites").values())
    assert site["kind"] == "functionapp,linux" and site["identity"]["type"] == "UserAssigned"
    config = site["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {"type": "UserAssignedIdentity", "userAssignedIdentityResourceId": "identityId"}
    assert site["properties"]["virtualNetworkSubnetId"], "virtual network integration is a parameter"
    (auth,) = (
        r for r in resources_of(path, "Microsoft.Web/sites/config").values() if body(r)["name"] == "authsettingsV2"
    )
    assert Evaluator(path, {"apiClientId": ""}).eval(auth["config"]["condition"], {}) is False
    assert Evaluator(path, {"apiClientId": "c1"}).eval(auth["config"]["condition"], {}) is True
    entra = body(auth)["properties"]["identityProviders"]["azureActiveDirectory"]
    assert entra["registration"]["clientId"] == "apiClientId"
    validation = body(auth)["properties"]["globalValidation"]
    assert validation["requireAuthentication"] is True and validation["unauthenticatedClientAction"] == "Return401"
    assert body(auth)["properties"]["login"]["tokenStore"] == {"enabled": False}


MI_ASSERTION = "OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID"


def test_the_page_signs_in_with_the_apps_managed_identity_and_no_client_secret():
    """The team page's sign-in (authorization code flow) needs a client credential: App Service Authentication
    reads it from the setting clientSecretSettingName names, and the reserved name
    OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID makes it present the app's managed identity's token as a federated
    credential assertion instead (learn.microsoft.com/azure/app-service/configure-authentication-provider-aad,
    "Use a managed identity instead of a secret"). That setting holds the identity's client id, only when
    there is App Service Authentication, and no other secret setting is named."""
    path = MODULES / "function-app.bicep"
    (auth,) = (
        r for r in resources_of(path, "Microsoft.Web/sites/config").values() if body(r)["name"] == "authsettingsV2"
    )
    registration = body(auth)["properties"]["identityProviders"]["azureActiveDirectory"]["registration"]
    assert registration["clientSecretSettingName"] == MI_ASSERTION
    assert not {k for k in registration if k.startswith("clientSecretCertificate")}
    parts, _ = _function_app_settings()
    for client_id, expected in (("", {}), ("c1", {MI_ASSERTION: "id-client"})):
        evaluator = Evaluator(path, {"apiClientId": client_id, "identityClientId": "id-client"})
        settings: dict[str, Any] = {}
        for part in parts[1:]:
            settings |= evaluator.var(part)
        assert {k: v for k, v in settings.items() if k == MI_ASSERTION} == expected, client_id


def test_storage_takes_no_shared_key_and_the_identity_has_its_data_roles():
    path = MODULES / "storage.bicep"
    (storage,) = (body(r) for r in resources_of(path, "Microsoft.Storage/storageAccounts").values())
    assert storage["properties"]["allowSharedKeyAccess"] is False
    assert storage["properties"]["defaultToOAuthAuthentication"] is True
    roles = set(Evaluator(path, {}).var("dataRoles").values())
    # Storage Blob Data Owner, Storage Queue Data Contributor, Storage Table Data Contributor
    assert roles == {
        "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
        "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
        "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    }


def test_telemetry_and_outcome_topic_take_entra_id_only():
    monitoring = MODULES / "monitoring.bicep"
    (component,) = (body(r) for r in resources_of(monitoring, "Microsoft.Insights/components").values())
    assert component["properties"]["DisableLocalAuth"] == "localAuthDisabled"
    assert template(MAIN)["parameters"]["appInsightsEntraAuth"]["default"] is True
    (topic,) = (body(r) for r in resources_of(MODULES / "outcome-topic.bicep", "Microsoft.EventGrid/topics").values())
    assert topic["properties"]["disableLocalAuth"] is True
    (outcome,) = modules_of(MAIN, "modules/outcome-topic.bicep").values()
    assert outcome["config"]["condition"] == "deployOutcomeTopic"
    endpoint = template(MAIN)["variables"]["keylessSettings"]["value"]["KEYLESS_OUTCOME_TOPIC_ENDPOINT"]
    assert references(endpoint, "outcomeTopic") and references(endpoint, "keylessOutcomeTopicEndpoint")


def test_the_workbook_is_deployed_and_reads_the_apps_telemetry():
    workbook = json.loads((INFRA / "workbook.json").read_text())
    assert workbook["version"] == "Notebook/1.0"
    queries = "\n".join(item["content"].get("query", "") for item in workbook["items"])
    for name in ("keyless.bindings", "keyless.runs", "keyless.sweep.duration", "keyless.sweep.suspects"):
        assert f'"{name}"' in queries, name
    assert '"drift sweep"' in queries
    from shared.adapters.telemetry import METRICS

    for item in workbook["items"]:  # a counter is exported as deltas: a chart sums them, never takes the max
        query = item["content"].get("query", "")
        for name, (kind, _, _) in METRICS.items():
            if kind == "counter" and f'"{name}"' in query:
                assert "sum(" in query and "max(value)" not in query, f"{name} is a counter: {query}"
    (resource,) = (body(r) for r in resources_of(MODULES / "workbook.bicep", "Microsoft.Insights/workbooks").values())
    assert call(resource["properties"]["serializedData"], "load_text_content")["file_path"] == "../workbook.json"
    assert modules_of(MAIN, "modules/workbook.bicep")


# ----------------------------------------------------------------------------------------- the roles

ACCESS = MODULES / "keyless-access.bicep"


def _role_modules() -> dict[str, str]:
    """role file stem -> the keyless-access.bicep module creating it."""
    created = {}
    for name, module in modules_of(ACCESS, "custom-role.bicep").items():
        loaded = call(body(module)["params"]["role"], "load_json_content")
        assert loaded, f"{name}: the role comes from infra/roles"
        created[Path(loaded["file_path"]).stem] = name
        assert (ACCESS.parent / loaded["file_path"]).resolve().parent == (INFRA / "roles").resolve()
    return created


def test_every_role_of_infra_roles_is_created_with_its_placeholders_filled():
    assert set(_role_modules()) == {p.stem for p in ROLE_FILES}
    custom = MODULES / "custom-role.bicep"
    scopes = [s for p in ROLE_FILES for s in json.loads(p.read_text())["AssignableScopes"]]
    placeholders = {m for s in scopes for m in re.findall(r"<[^>]+>", s)}
    filled = {c["old_string"] for c in calls(template(custom)["variables"], "replace")}
    assert placeholders == {"<subscription-id>", "<identity-resource-group>"} == filled
    definition = body(template(custom)["resources"]["definition"])["properties"]
    groups = [f"/subscriptions/{S1.lower()}/resourcegroups/ids", f"/subscriptions/{S2.lower()}/resourcegroups/ids"]
    for path in ROLE_FILES:
        role = json.loads(path.read_text())
        evaluator = Evaluator(custom, {"role": role, "subscriptionIds": [S1, S2], "resourceGroupIds": groups})
        written = {k: role[k[0].upper() + k[1:]] for k in ("actions", "notActions", "dataActions", "notDataActions")}
        assert evaluator.eval(definition["permissions"], {}) == [written], path.stem
        scopes = evaluator.eval(definition["assignableScopes"], {})
        if "<identity-resource-group>" in role["AssignableScopes"][0]:
            assert scopes == [
                f"/subscriptions/{S1.lower()}/resourceGroups/ids",
                f"/subscriptions/{S2.lower()}/resourceGroups/ids",
            ]
        else:
            assert scopes == [f"/subscriptions/{S1}", f"/subscriptions/{S2}"], path.stem
        assert not any("<" in scope for scope in scopes), path.stem


def test_every_role_is_assigned_to_the_app_identity_at_its_scopes():
    created = _role_modules()
    modules = template(ACCESS)["modules"]
    for stem, (assignment, collection, condition) in ASSIGNMENTS.items():
        module = modules[assignment]
        loop = module["config"]["loop_type"]["detail"]
        assert loop["array_name"] == collection, stem
        assert module["config"]["condition"] == condition, stem
        params = body(module)["params"]
        assert references(params["roleDefinitionGuid"], created[stem]), f"{stem} is assigned by {assignment}"
        assert params["principalId"] == "principalId"
        expected = "accessGranterCondition" if stem == "keyless-access-granter" else ""
        assert params.get("condition", "") == expected, f"{stem}: condition"
    # The outcome sender: at the outcome topic.
    assert references(template(ACCESS)["outputs"]["outcomeSenderRoleGuid"], created["keyless-outcome-sender"])
    (outcome,) = modules_of(MAIN, "modules/outcome-topic.bicep").values()
    assert dotted(body(outcome)["params"]["senderRoleGuid"]) == "access.outputs.outcomeSenderRoleGuid"
    (sender,) = resources_of(MODULES / "outcome-topic.bicep", "Microsoft.Authorization/roleAssignments").values()
    assert body(sender)["scope"] == "topic" and references(body(sender)["properties"], "senderRoleGuid")
    (access,) = modules_of(MAIN, "modules/keyless-access.bicep").values()
    assert references(body(access)["params"]["principalId"], "identity")


def test_the_access_granters_condition_is_the_files_with_the_allowlist():
    condition_file = (INFRA / "role-assignment-condition.txt").read_text()
    without_comments = "\n".join(line for line in condition_file.split("\n") if not line.startswith("#"))
    (access,) = modules_of(MAIN, "modules/keyless-access.bicep").values()
    assert body(access)["params"]["roleAllowlist"] == "keylessRoleAllowlist"
    default = template(MAIN)["parameters"]["keylessRoleAllowlist"]["default"]
    assert default == OPENAI_USER_ROLE_ID
    assert Evaluator(ACCESS, {"roleAllowlist": default}).var("accessGranterCondition") == without_comments
    two = Evaluator(ACCESS, {"roleAllowlist": f" {OPENAI_USER_ROLE_ID}; 11111111-2222-3333-4444-555555555555"})
    widened = two.var("accessGranterCondition")
    assert widened.count(f"{{{OPENAI_USER_ROLE_ID}, 11111111-2222-3333-4444-555555555555}}") == 2
    assert widened.replace(", 11111111-2222-3333-4444-555555555555", "") == without_comments


def _access(**params: str) -> Evaluator:
    defaults = dict.fromkeys(
        ("openAIScopes", "clusterScopes", "privateClusterScopes", "localAuthDisablerScopes"), ""
    ) | {"identitySubscriptionId": "", "identityResourceGroup": "", "enforceKeylessAccounts": "false"}
    return Evaluator(ACCESS, defaults | params)


def test_the_custom_roles_are_assignable_in_every_subscription_they_are_assigned_in():
    """Issue 21, finding 1: a role assigned in a subscription outside its assignable scopes fails to deploy."""
    private = f"/subscriptions/{S1}/resourceGroups/rg-p/providers/Microsoft.ContainerService/managedClusters/p"
    keys_off = f"/subscriptions/{S2}/resourceGroups/rg-k/providers/Microsoft.CognitiveServices/accounts/k"
    access = _access(privateClusterScopes=private, localAuthDisablerScopes=keys_off, openAIScopes=ACCOUNT_1)
    subscriptions = access.var("subscriptionIds")
    for scope in (private, keys_off, ACCOUNT_1):
        assert scope.split("/")[2].lower() in [s.lower() for s in subscriptions], scope


def test_the_local_admin_credential_is_granted_only_with_local_accounts_allowed():
    """Issue 21, finding 5: KEYLESS_ALLOW_LOCAL_ACCOUNTS=true needs listClusterAdminCredential at the clusters."""
    (access,) = modules_of(MAIN, "modules/keyless-access.bicep").values()
    assert body(access)["params"]["allowLocalAccounts"] == "keylessAllowLocalAccounts"
    assert _access(allowLocalAccounts="TRUE").var("withLocalAccounts") is True
    assert _access(allowLocalAccounts="false").var("withLocalAccounts") is False


def test_the_function_app_sets_nothing_flex_consumption_does_not_use():
    """Issue 21, finding 8: FTP(S) is not part of Flex Consumption."""
    path = MODULES / "function-app.bicep"
    (site,) = (body(r) for r in resources_of(path, "Microsoft.Web/sites").values())
    assert "ftpsState" not in site["properties"]["siteConfig"]
    policies = resources_of(path, "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert [body(r)["name"] for r in policies.values()] == ["scm"]


CONTAINER_NAME = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


@pytest.mark.parametrize(
    "app_name",
    ["func-keyless-abc", "Func-Keyless-PROD", "a" * 31 + "-b", "x--y", "my-app-" + "z" * 60, "ab"],
)
def test_the_deployment_container_name_is_a_valid_blob_container_name(app_name):
    """Issue 21, finding 9: lower case, 3-63 characters, no double or trailing hyphen, whatever the app name."""
    name = Evaluator(MAIN, {"appName": app_name, "token": "k3yl3ssabcdef"}).var("deploymentContainerName")
    assert CONTAINER_NAME.match(name), name


def test_custom_role_names_are_per_environment_by_default():
    """Issue 21, finding 10: role names are unique per tenant; a role made by hand from infra/roles (no suffix)
    or another environment must not collide with, or be taken over by, this one."""
    (access,) = modules_of(MAIN, "modules/keyless-access.bicep").values()
    assert body(access)["params"]["roleNameSuffix"] == "roleNameSuffix"
    assert Evaluator(MAIN, {"environmentName": "dev", "customRoleNameSuffix": ""}).var("roleNameSuffix") == " (dev)"
    assert Evaluator(MAIN, {"environmentName": "dev", "customRoleNameSuffix": " X"}).var("roleNameSuffix") == " X"


def test_scopes_are_parsed_deduplicated_and_identities_go_where_the_app_makes_them():
    clusters = f" {CLUSTER_1} ,{CLUSTER_1.upper().replace('/SUBSCRIPTIONS/', '/subscriptions/')},{CLUSTER_2}, "
    access = _access(clusterScopes=clusters, openAIScopes=ACCOUNT_1)
    assert access.var("clusterList") == [CLUSTER_1.lower(), CLUSTER_2]
    assert access.var("clusterGroups") == [
        f"/subscriptions/{S1.lower()}/resourcegroups/rg-aks",
        f"/subscriptions/{S2.lower()}/resourcegroups/rg-aks2",
    ]
    assert access.var("identityGroups") == access.var("clusterGroups"), "no identity group: the clusters' groups"
    assert access.var("openAISubscriptions") == [S3.lower()]
    named = _access(clusterScopes=clusters, identityResourceGroup="Workload-IDs")
    assert named.var("identityGroups") == [
        f"/subscriptions/{S1.lower()}/resourcegroups/workload-ids",
        f"/subscriptions/{S2.lower()}/resourcegroups/workload-ids",
    ], "an identity group without subscription: in each cluster's subscription"
    pinned = _access(clusterScopes=clusters, identityResourceGroup="ids", identitySubscriptionId="S9")
    assert pinned.var("identityGroups") == ["/subscriptions/s9/resourcegroups/ids"]
    app_group = "/subscriptions/S0/resourceGroups/RG-Keyless"
    alone = _access(appResourceGroupId=app_group)
    assert alone.var("identityGroups") == [], "no cluster, no identity group: nothing assigned"
    assert alone.var("identityRoleGroups") == [app_group.lower()], "the role still needs an assignable scope"
    assert _access(openAIScopes=ACCOUNT_1, enforceKeylessAccounts="TRUE").var("localAuthScopes") == [ACCOUNT_1.lower()]
    assert _access(openAIScopes=ACCOUNT_1).var("localAuthScopes") == []


@pytest.mark.parametrize(
    ("scope", "deployed"),
    [
        ("/subscriptions/s1/resourcegroups/rg", "atGroup"),
        (CLUSTER_1.lower(), "atCluster"),
        (ACCOUNT_1.lower(), "atAccount"),
        ("/subscriptions/s1", None),
        ("/subscriptions/s1/resourcegroups/rg/providers/microsoft.storage/storageaccounts/st", None),
    ],
)
def test_a_role_assignment_lands_on_the_group_account_or_cluster_it_names(scope, deployed):
    path = MODULES / "role-assignment.bicep"
    evaluator = Evaluator(path, {"scopeId": scope})
    assignments = resources_of(path, "Microsoft.Authorization/roleAssignments")
    made = {name for name, r in assignments.items() if evaluator.eval(r["config"]["condition"], {})}
    assert made == ({deployed} if deployed else set())
    assert all(body(r)["properties"] == "assignment" for r in assignments.values())
    for name, target in (("atAccount", "account"), ("atCluster", "cluster")):
        assert body(assignments[name])["scope"] == target
        existing = template(path)["resources"][target]
        assert existing["existing"] is True
        assert evaluator.eval(existing["config"]["condition"], {}) == (deployed == name)


def test_a_condition_is_attached_with_version_2():
    path = MODULES / "role-assignment.bicep"
    base = template(path)["variables"]["assignment"]["value"]["function"]["parameters"]["arg_1"]
    assert base["principalType"] == "ServicePrincipal" and base["principalId"] == "principalId"
    extra = template(path)["variables"]["assignment"]["value"]["function"]["parameters"]["arg_2"]
    assert Evaluator(path, {"condition": ""}).eval(extra, {}) == {}
    assert Evaluator(path, {"condition": "(x)"}).eval(extra, {}) == {"condition": "(x)", "conditionVersion": "2.0"}


# ----------------------------------------------------------------------------------------- Event Grid

EVENTS = MODULES / "resource-events.bicep"


def _subscriptions() -> dict[str, dict[str, Any]]:
    evaluator = Evaluator(EVENTS, {})
    out = {}
    for name, resource in resources_of(EVENTS, "Microsoft.EventGrid/systemTopics/eventSubscriptions").items():
        properties = body(resource)["properties"]
        out[name] = {
            "filter": evaluator.eval(properties["filter"], {}),
            "destination": properties["destination"],
            "condition": resource["config"]["condition"],
        }
    return out


def _field(event: dict[str, Any], key: str) -> Any:
    value: Any = event
    for part in key.split("."):
        match = [k for k in value if k.lower() == part.lower()] if isinstance(value, dict) else []
        if not match:
            return None
        value = value[match[0]]
    return value


# Event Grid's string operators (docs, "Event filtering"): values of one filter are ORed, string comparisons
# ignore case, a missing key does not match.
OPERATORS = {
    "StringIn": lambda value, wanted: value == wanted,
    "StringContains": lambda value, wanted: wanted in value,
    "StringBeginsWith": lambda value, wanted: value.startswith(wanted),
    "StringEndsWith": lambda value, wanted: value.endswith(wanted),
}


def delivered(subscription_filter: dict[str, Any], event: dict[str, Any]) -> bool:
    types = subscription_filter.get("includedEventTypes")
    if types is not None and event["eventType"].lower() not in {t.lower() for t in types}:
        return False
    subject = event["subject"].lower()
    if not subject.startswith(subscription_filter.get("subjectBeginsWith", "").lower()):
        return False
    if not subject.endswith(subscription_filter.get("subjectEndsWith", "").lower()):
        return False
    for advanced in subscription_filter.get("advancedFilters", []):
        value = _field(event, advanced["key"])
        test = OPERATORS[advanced["operatorType"]]
        if not isinstance(value, str) or not any(test(value.lower(), w.lower()) for w in advanced["values"]):
            return False
    return True


def arm_event(event_type: str, uri: str, operation: str) -> dict[str, Any]:
    data = {"resourceUri": uri, "operationName": operation, "status": "Succeeded"}
    return {"id": "e1", "eventType": event_type, "subject": uri, "data": data, "dataVersion": "2"}


def _arm_events() -> list[tuple[dict[str, Any], str]]:
    """ARM write and delete events of resources and their children (in the casings ARM uses), labelled."""
    group = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg"
    tops = [  # (resource id, its type, child paths)
        (group, "Microsoft.Resources/subscriptions/resourceGroups", []),
        (f"{group}/providers/{CLUSTER_TYPE}/aks1", CLUSTER_TYPE, ["agentPools/np1", "maintenanceConfigurations/m"]),
        (f"{group}/providers/{ACCOUNT_TYPE}/oai1", ACCOUNT_TYPE, ["deployments/gpt-4o", "projects/p1"]),
        (f"{group}/providers/{IDENTITY_TYPE}/id1", IDENTITY_TYPE, ["federatedIdentityCredentials/fic1"]),
        (f"{group}/providers/Microsoft.Storage/storageAccounts/st1", "Microsoft.Storage/storageAccounts", ["x/y"]),
    ]
    assignment = "providers/Microsoft.Authorization/roleAssignments/0b8e1ce4-8c3f-4d9c-9d1d-2a7a7c0f0e55"
    events = []
    for verb, event_type in (("write", WRITE), ("delete", DELETE)):
        for uri, resource_type, children in tops:
            targets = [(uri, f"{resource_type}/{verb}")]
            targets += [(f"{uri}/{c}", f"{resource_type}/{c.split('/')[0]}/{verb}") for c in children]
            targets += [
                (f"{scope}/{assignment}", f"Microsoft.Authorization/roleAssignments/{verb}")
                for scope in [uri, *(f"{uri}/{c}" for c in children)]
            ]
            targets += [  # the Tags API on the resource and its children (az tag update|delete --resource-id)
                (f"{scope}/providers/Microsoft.Resources/tags/default", f"Microsoft.Resources/tags/{verb}")
                for scope in [uri, *(f"{uri}/{c}" for c in children)]
            ]
            for target, operation in targets:
                for variant in (target, target.lower(), target.replace("resourceGroups", "resourcegroups")):
                    events.append((arm_event(event_type, variant, operation), f"{operation} {variant}"))
        failure = event_type.replace("Success", "Failure")
        events.append((arm_event(failure, tops[1][0], f"{CLUSTER_TYPE}/{verb}"), f"{failure} {tops[1][0]}"))
    return events


def test_event_subscriptions_deliver_to_resource_events_in_event_grid_schema():
    assert '@bp.function_name("resource_events")' in (ROOT / "handlers" / "events.py").read_text()
    assert Evaluator(EVENTS, {}).var("functionName") == "resource_events"
    delivery = Evaluator(EVENTS, {"functionAppId": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Web/sites/f"})
    for name, subscription in _subscriptions().items():
        destination = delivery.eval(subscription["destination"], {})
        assert destination["endpointType"] == "AzureFunction", name
        assert destination["properties"]["resourceId"].endswith(
            "/providers/Microsoft.Web/sites/f/functions/resource_events"
        )
        assert destination["properties"]["maxEventsPerBatch"] == 1
        assert subscription["condition"] == "subscribe", "made only once the function exists"
        values = sum(len(f["values"]) for f in subscription["filter"]["advancedFilters"])
        assert values <= 25 and len(subscription["filter"]["advancedFilters"]) <= 25, "Event Grid's limits"
    types = {t for s in _subscriptions().values() for t in s["filter"]["includedEventTypes"]}
    assert types == set(HANDLED_TYPES)
    (topic,) = (body(r) for r in resources_of(EVENTS, "Microsoft.EventGrid/systemTopics").values() if not r["existing"])
    assert topic["properties"]["topicType"] == "Microsoft.Resources.Subscriptions"


def test_the_filters_let_through_exactly_what_the_app_acts_on():
    subscriptions = [s["filter"] for s in _subscriptions().values()]
    kinds, over = set(), []
    for event, label in _arm_events():
        parsed = parse_event(event)
        passes = any(delivered(f, event) for f in subscriptions)
        if parsed is not None:
            kinds.add(parsed.kind)
            assert passes, f"filtered out, but the app acts on it: {label}"
        elif passes:
            over.append(label)
    assert kinds == {"cluster", "account", "deployment", "identity", "role-assignment"}
    # Event Grid has no "ends right after the account" operator: a role assignment removed at an account's
    # child resource gets through and is dropped by the app at once. Nothing else does.
    nested = re.compile(r"roleAssignments/delete /.*/accounts/oai1/(deployments|projects)/[^/]+/providers/", re.I)
    # Likewise the tags of a cluster's or an account's child resource (an agent pool, a project).
    child_tags = re.compile(
        r"tags/(write|delete) /.*/(managedClusters/aks1|accounts/oai1)/[^/]+/[^/]+/providers/", re.I
    )  # noqa: E501
    assert over and all(nested.search(label) or child_tags.search(label) for label in over), over
    assert any(child_tags.search(label) for label in over)


@pytest.mark.parametrize(
    ("uri", "operation"),
    [
        (f"{CLUSTER_1}/agentPools/np1", "Microsoft.ContainerService/managedClusters/agentPools/write"),
        (
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/i",
            "Microsoft.ManagedIdentity/userAssignedIdentities/write",
        ),
        (
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/i"
            "/federatedIdentityCredentials/f",
            "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write",
        ),
        (
            f"{ACCOUNT_1}/providers/Microsoft.Authorization/roleAssignments/r",
            "Microsoft.Authorization/roleAssignments/write",
        ),
        (
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.Authorization/roleAssignments/r",
            "Microsoft.Authorization/roleAssignments/delete",
        ),
        (
            f"{CLUSTER_1}/providers/Microsoft.Authorization/roleAssignments/r",
            "Microsoft.Authorization/roleAssignments/delete",
        ),
    ],
)
def test_what_the_app_drops_is_filtered_out(uri, operation):
    event_type = WRITE if operation.endswith("/write") else DELETE
    event = arm_event(event_type, uri, operation)
    assert parse_event(event) is None
    assert not any(delivered(s["filter"], event) for s in _subscriptions().values())


# ----------------------------------------------------------------------------------------- no secrets

FORBIDDEN = re.compile(
    r"list\w*keys|accountkey|sharedaccesskey|sharedaccesssignature|primarykey|secondarykey|listsas|"
    r"clientsecret|instrumentationkey\s*:|connection_?strings?",
    re.IGNORECASE,
)
# The only connection string: Application Insights', which carries no secret (an identifier of the
# component; with local auth disabled it cannot ingest anything by itself).
ALLOWED = {
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "appInsightsConnectionString",
    "appInsights.properties.ConnectionString",
    "monitoring.outputs.appInsightsConnectionString",
    # Names the setting with the managed identity's client id, never a secret (pinned by
    # test_the_page_signs_in_with_the_apps_managed_identity_and_no_client_secret).
    "clientSecretSettingName",
}


def _code(text: str) -> str:
    """The text without // comments, # comment lines and JSON description strings."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL)
    text = re.sub(r"(^|\s)//.*$", r"\1", text, flags=re.MULTILINE)
    return re.sub(r"^\s*#.*$", "", text, flags=re.MULTILINE)


def _deployment_files() -> list[Path]:
    files = [p for p in INFRA.rglob("*") if p.is_file() and p.suffix in {".bicep", ".json", ".txt", ".yaml"}]
    return [*files, ROOT / "azure.yaml"]


@pytest.mark.parametrize("path", _deployment_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_key_or_connection_string_anywhere(path):
    for match in re.finditer(rf"[\w.]*(?:{FORBIDDEN.pattern})[\w.]*", _code(path.read_text()), re.IGNORECASE):
        assert match[0] in ALLOWED, f"{path.relative_to(ROOT)}: {match[0]}"
    assert "AccountKey=" not in path.read_text() and "listKeys" not in path.read_text()


def test_the_app_insights_connection_string_goes_only_to_its_setting():
    monitoring = template(MODULES / "monitoring.bicep")
    output = monitoring["outputs"]["appInsightsConnectionString"]["value"]
    assert dotted(output) == "appInsights.properties.ConnectionString"
    (app_module,) = modules_of(MAIN, "modules/function-app.bicep").values()
    passed = body(app_module)["params"]["appInsightsConnectionString"]
    assert dotted(passed) == "monitoring.outputs.appInsightsConnectionString"
    assert [k for k, v in template(MAIN)["variables"].items() if references(v, "monitoring")] == []
    app = template(MODULES / "function-app.bicep")
    uses = [
        k
        for k, v in app["variables"]["platformSettings"]["value"].items()
        if references(v, "appInsightsConnectionString")
    ]
    assert uses == ["APPLICATIONINSIGHTS_CONNECTION_STRING"]
    assert not references(app["outputs"], "appInsightsConnectionString")


def test_who_is_signed_in_can_be_narrowed_to_given_applications_and_groups():
    """Issue 21, attacker note: by default anyone in the tenant with a token is signed in; optional parameters
    narrow App Service Authentication to given client applications and groups."""
    path = MODULES / "function-app.bicep"
    (auth,) = (
        r for r in resources_of(path, "Microsoft.Web/sites/config").values() if body(r)["name"] == "authsettingsV2"
    )
    validation = body(auth)["properties"]["identityProviders"]["azureActiveDirectory"]["validation"]
    open_to_tenant = Evaluator(path, {"apiClientId": "c1", "apiAllowedApplications": [], "apiAllowedGroups": []})
    assert "defaultAuthorizationPolicy" not in open_to_tenant.eval(validation, {})
    narrowed = Evaluator(path, {"apiClientId": "c1", "apiAllowedApplications": ["a1"], "apiAllowedGroups": ["g1"]})
    assert narrowed.eval(validation, {})["defaultAuthorizationPolicy"] == {
        "allowedApplications": ["a1"],
        "allowedPrincipals": {"groups": ["g1"]},
    }
    (app,) = modules_of(MAIN, "modules/function-app.bicep").values()
    split = Evaluator(MAIN, {"apiAllowedGroups": " g1, ,g2 "})
    assert split.eval(body(app)["params"]["apiAllowedGroups"], {}) == ["g1", "g2"]


VNET = f"/subscriptions/{DEPLOYMENT_SUBSCRIPTION}/resourceGroups/rg-net/providers/Microsoft.Network/virtualNetworks/v1"
APP_SUBNET, ENDPOINT_SUBNET = f"{VNET}/subnets/apps", f"{VNET}/subnets/endpoints"


def test_storage_can_be_reached_only_through_private_endpoints_in_the_apps_virtual_network():
    """Issue 21, attacker note: storage is reachable from every network. With storagePrivateEndpointSubnetId
    (and virtual network integration) storage denies public network access, and blob, queue and table each get
    a private endpoint in that subnet with its privatelink DNS zone linked to the app's network."""
    storage_path = MODULES / "storage.bicep"
    (account,) = (body(r) for r in resources_of(storage_path, "Microsoft.Storage/storageAccounts").values())
    network = {False: ("Enabled", "Allow", "AzureServices"), True: ("Disabled", "Deny", "None")}
    for private, expected in network.items():
        ev = Evaluator(storage_path, {"privateOnly": private})
        props, acls = account["properties"], account["properties"]["networkAcls"]
        got = (
            ev.eval(props["publicNetworkAccess"], {}),
            ev.eval(acls["defaultAction"], {}),
            ev.eval(acls["bypass"], {}),
        )
        assert got == expected
    # main: only together with virtual network integration (the preprovision hook stops otherwise)
    both = {"storagePrivateEndpointSubnetId": ENDPOINT_SUBNET, "virtualNetworkSubnetId": APP_SUBNET}
    assert Evaluator(MAIN, both).var("privateStorage") is True
    assert Evaluator(MAIN, both | {"virtualNetworkSubnetId": ""}).var("privateStorage") is False
    assert Evaluator(MAIN, {}).var("privateStorage") is False
    (storage,) = modules_of(MAIN, "modules/storage.bicep").values()
    assert body(storage)["params"]["privateOnly"] == "privateStorage"
    (endpoints_module,) = modules_of(MAIN, "modules/storage-network.bicep").values()
    assert endpoints_module["config"]["condition"] == "privateStorage"
    assert body(endpoints_module)["params"]["subnetId"] == "storagePrivateEndpointSubnetId"
    (app,) = modules_of(MAIN, "modules/function-app.bicep").values()
    assert "storageNetwork" in body(app)["dependsOn"], "the host starts only once storage is reachable"
    # the endpoints, zones and links
    path = MODULES / "storage-network.bicep"
    ev = Evaluator(path, {"subnetId": ENDPOINT_SUBNET})
    assert ev.var("virtualNetworkId") == VNET and ev.var("services") == ["blob", "queue", "table"]
    (endpoint,) = resources_of(path, "Microsoft.Network/privateEndpoints").values()
    (zone,) = resources_of(path, "Microsoft.Network/privateDnsZones").values()
    (link,) = resources_of(path, "Microsoft.Network/privateDnsZones/virtualNetworkLinks").values()
    (group,) = resources_of(path, "Microsoft.Network/privateEndpoints/privateDnsZoneGroups").values()
    for looped in (endpoint, zone, link, group):
        assert looped["config"]["loop_type"]["detail"]["array_name"] == "services"
    assert body(endpoint)["properties"]["subnet"]["id"] == "subnetId"
    (connection,) = body(endpoint)["properties"]["privateLinkServiceConnections"]
    assert connection["properties"]["groupIds"] == ["service"]
    assert dotted(connection["properties"]["privateLinkServiceId"]) == "storage.id"
    assert body(zone)["name"] == "privatelink.${service}.${environment().suffixes.storage}"
    assert body(link)["properties"] == {"registrationEnabled": False, "virtualNetwork": {"id": "virtualNetworkId"}}
    assert dotted(body(link)["parent"]) == "zones[i]" and dotted(body(group)["parent"]) == "endpoints[i]"
    (config,) = body(group)["properties"]["privateDnsZoneConfigs"]
    assert dotted(config["properties"]["privateDnsZoneId"]) == "zones[i].id"


def test_other_subscriptions_are_watched_each_with_its_topic_and_the_three_filtered_subscriptions():
    """Issue 21, many subscriptions: each watched subscription gets its system topic (made in a resource group of
    its own, or the one it has) and the same three filtered event subscriptions to the one function app; the
    custom roles are assignable there."""
    watched_topic = (
        f"/subscriptions/{S2}/resourceGroups/rg-hub/providers/Microsoft.EventGrid/systemTopics/evgt-existing"
    )
    given = f" {S1}, ,{watched_topic},{DEPLOYMENT_SUBSCRIPTION.upper()},{S1.lower()}"
    main = Evaluator(MAIN, {"watchedSubscriptionIds": given, "environmentName": "dev"})
    assert main.var("watched") == [
        {"subscriptionId": S1.lower(), "existingTopicId": ""},
        {"subscriptionId": S2.lower(), "existingTopicId": watched_topic.lower()},
    ], "the deployment's own subscription is watched by resourceEvents, and each other once"
    assert Evaluator(MAIN, {}).var("watched") == []
    (module,) = modules_of(MAIN, "modules/watched-subscription.bicep").values()
    assert module["config"]["loop_type"]["detail"] == {"item_name": "w", "array_name": "watched"}
    params = body(module)["params"]
    assert dotted(call(body(module)["scope"], "subscription")["subscription_id"]) == "w.subscriptionId"
    assert dotted(params["existingTopicId"]) == "w.existingTopicId"
    assert params["subscribe"] == "subscribeResourceEvents" and dotted(params["functionAppId"]) == "app.outputs.id"
    assert params["resourceGroupName"] == "rg-${environmentName}-events"
    # the watched subscription deploys resource-events.bicep: the same three filtered subscriptions
    path = MODULES / "watched-subscription.bicep"
    (events,) = modules_of(path, "resource-events.bicep").values()
    assert set(body(events)["params"]) == {"topicName", "createTopic", "subscribe", "functionAppId", "tags"}
    assert set(_subscriptions()) == {"resourceChanges", "roleAssignments", "tagChanges"}
    made = Evaluator(path, {"existingTopicId": "", "resourceGroupName": "rg-dev-events", "topicName": "evgt-k"})
    assert made.var("createTopic") is True
    assert made.eval(body(events)["params"]["topicName"], {}) == "evgt-k"
    given_topic = Evaluator(
        path, {"existingTopicId": watched_topic.lower(), "resourceGroupName": "x", "topicName": "y"}
    )
    assert given_topic.var("createTopic") is False
    assert given_topic.eval(body(events)["params"]["topicName"], {}) == "evgt-existing"
    (group,) = resources_of(path, "Microsoft.Resources/resourceGroups").values()
    assert group["config"]["condition"] == "createTopic"
    # the roles: assignable in every watched subscription
    (access,) = modules_of(MAIN, "modules/keyless-access.bicep").values()
    passed = main.eval(body(access)["params"]["watchedSubscriptionIds"], {})
    assert passed == [S1.lower(), S2.lower()]
    assignable = _access(watchedSubscriptionIds=passed).var("subscriptionIds")
    assert {S1.lower(), S2.lower()} <= set(assignable)
