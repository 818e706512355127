"""Workload enforcement, decided without side effects: how a binding's Deployments are patched.

The webhook mutates only pods labelled `azure.workload.identity/use: "true"`, only at creation,
and silently skips AZURE_CLIENT_ID when the service account lacks the annotation. So a binding
that names Deployments (`workloads`) gets each one's pod template patched:

- by server-side apply under our field manager (we own only what we apply): the label, the
  binding's service account, the ConfigMap as `envFrom` of the containers that call Azure OpenAI,
  an annotation naming the identity's client id (a new identity = a new template = new pods, the
  level-triggered form of `kubectl rollout restart`), and a label on the Deployment itself that
  says which binding enforces it (one binding per Deployment: one ConfigMap supplies the endpoint);
- by a JSON patch (an Update, the only way to remove another manager's fields) that removes the
  API-key variables (names in settings, `secretKeyRef`/`secretRef` to secrets matching the
  settings' patterns) and the variables that would shadow the ConfigMap's identity settings.
  Each removal is guarded by a `test` of the item's name, so a concurrent edit fails the patch
  (422, retried) instead of removing the wrong item. Literal values are never copied into an
  outcome: the exact patch is shown, and a removed item is named, never shown.

`envFrom` is an atomic list: when another manager already owns a container's `envFrom` and it
lacks our ConfigMap, applying ours would take their list over, so we fall back to one `env` entry
per ConfigMap key (`valueFrom.configMapKeyRef`; env is keyed by name, so nobody's entries move).

Paths follow the API server's FieldsV1 spelling (`f:spec`, `k:{"name":"app"}`), so what we own
(from managedFields) and what we would apply compare directly: a run applies only when a value we
want is missing or different, or when we still own a field we no longer want.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import re
from collections.abc import Iterable
from typing import Any

from shared.domain.errors import PermanentError

USE_LABEL = "azure.workload.identity/use"
BINDING_LABEL = "keyless.io/binding"
IDENTITY_ANNOTATION = "keyless.io/client-id"
MAX_WORKLOADS = 20
WEBHOOK_VARIABLES = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST")
# ConfigMap keys a stale literal must not shadow (env wins over envFrom): the identity, the auth mode.
SHADOW_GUARDED = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "USE_AZURE_AD")
_OPENAI_PREFIXES = ("AZURE_OPENAI_", "OPENAI_")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

Path = tuple[str, ...]
_LIST_KEYS = {"containers": "name", "initContainers": "name", "env": "name"}


def validate_workloads(value: object, field: str = "workloads") -> tuple[str, ...]:
    """Deployment names (DNS-1123 subdomains), at most MAX_WORKLOADS; sorted and de-duplicated,
    so that the same set always means the same desired state."""
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise PermanentError(f"{field}: must be a list of Deployment names")
    if len(value) > MAX_WORKLOADS:
        raise PermanentError(f"{field}: at most {MAX_WORKLOADS} Deployments per binding")
    names = set()
    for item in value:
        if not isinstance(item, str) or len(item) > 253 or not _DNS_SUBDOMAIN.fullmatch(item):
            raise PermanentError(f"{field}: {str(item)[:80]!r} is not a Deployment name (DNS-1123 subdomain)")
        names.add(item)
    return tuple(sorted(names))


# --------------------------------------------------------------------------- API keys


@dataclasses.dataclass(frozen=True)
class ApiKeyRules:
    """What counts as an Azure OpenAI key in a pod: by variable name, or by the secret's name.
    Secret values are never read: a key is recognised by names alone."""

    variables: tuple[str, ...]
    secret_patterns: tuple[str, ...]

    @classmethod
    def from_settings(cls, settings: Any) -> ApiKeyRules:
        return cls(tuple(settings.api_key_variables), tuple(settings.api_key_secret_patterns))

    def _secret(self, name: object) -> bool:
        return isinstance(name, str) and any(fnmatch.fnmatchcase(name.lower(), p.lower()) for p in self.secret_patterns)

    def env_key(self, env: dict[str, Any]) -> str | None:
        """Why this env entry is an API key ('variable NAME', 'secret NAME'), or None."""
        name = env.get("name") or ""
        secret = ((env.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name")
        if self._secret(secret):
            return f"secret {secret}"
        if name.upper() in {v.upper() for v in self.variables}:
            return f"variable {name}"
        return None

    def env_from_key(self, source: dict[str, Any]) -> str | None:
        secret = (source.get("secretRef") or {}).get("name")
        return f"secret {secret}" if self._secret(secret) else None

    def container_keys(self, container: dict[str, Any]) -> list[str]:
        """Every API key the container's environment carries, described by names only."""
        found = [f"{e.get('name')} ({why})" for e in container.get("env") or [] if (why := self.env_key(e))]
        found += [f"envFrom {why}" for s in container.get("envFrom") or [] if (why := self.env_from_key(s))]
        return found


# --------------------------------------------------------------------------- FieldsV1 paths


def fields_v1_paths(tree: dict[str, Any], prefix: Path = ()) -> frozenset[Path]:
    """Paths of a managedFields FieldsV1 trie ("." marks a member that has children of its own)."""
    paths: set[Path] = set()
    for key, sub in (tree or {}).items():
        if key == ".":
            paths.add(prefix)
        elif not sub:
            paths.add(prefix + (key,))
        else:
            paths |= fields_v1_paths(sub, prefix + (key,))
    return frozenset(paths)


def _item_key(field: str, item: dict[str, Any]) -> str:
    return "k:" + json.dumps({_LIST_KEYS[field]: item.get(_LIST_KEYS[field])}, separators=(",", ":"))


def _keyed(field: str, value: Any) -> bool:
    return field in _LIST_KEYS and isinstance(value, list) and all(isinstance(i, dict) for i in value)


def config_fields(config: dict[str, Any]) -> tuple[frozenset[Path], list[tuple[Path, Any]]]:
    """(every path the config sets, as managedFields would list it; its leaves with their values).
    Type and identity fields (apiVersion, kind, metadata.name/namespace) are never owned."""
    body = {k: v for k, v in config.items() if k not in ("apiVersion", "kind")}
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k not in ("name", "namespace")}
    body.pop("metadata", None)
    if meta:
        body["metadata"] = meta
    paths: set[Path] = set()
    leaves: list[tuple[Path, Any]] = []

    def walk(value: dict[str, Any], prefix: Path) -> None:
        for key, child in value.items():
            path = prefix + ("f:" + key,)
            if isinstance(child, dict) and child:
                walk(child, path)
            elif _keyed(key, child) and child:
                for item in child:
                    item_path = path + (_item_key(key, item),)
                    paths.add(item_path)
                    walk(item, item_path)
            else:
                paths.add(path)
                leaves.append((path, child))

    walk(body, ())
    return frozenset(paths), leaves


def value_at(obj: Any, path: Path) -> Any:
    """The value at a FieldsV1 path in a plain object; `_MISSING` when absent."""
    for element in path:
        if element.startswith("f:"):
            if not isinstance(obj, dict) or element[2:] not in obj:
                return _MISSING
            obj = obj[element[2:]]
        else:
            wanted = json.loads(element[2:])
            if not isinstance(obj, list):
                return _MISSING
            match = [i for i in obj if isinstance(i, dict) and all(i.get(k) == v for k, v in wanted.items())]
            if not match:
                return _MISSING
            obj = match[0]
    return obj


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


# --------------------------------------------------------------------------- observed deployment


@dataclasses.dataclass(frozen=True)
class FieldOwner:
    manager: str
    operation: str
    paths: frozenset[Path]


@dataclasses.dataclass(frozen=True)
class DeploymentState:
    """A Deployment as the API server returned it (`obj` without managedFields), plus who owns what."""

    obj: dict[str, Any]
    owners: tuple[FieldOwner, ...] = ()

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.obj["metadata"].get("labels") or {})

    @property
    def template(self) -> dict[str, Any]:
        return dict((self.obj.get("spec") or {}).get("template") or {})

    @property
    def pod_spec(self) -> dict[str, Any]:
        return dict(self.template.get("spec") or {})

    @property
    def containers(self) -> list[dict[str, Any]]:
        return list(self.pod_spec.get("containers") or [])

    @property
    def selector(self) -> dict[str, str]:
        return dict(((self.obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {})

    def owned_by(self, manager: str, operation: str = "Apply") -> frozenset[Path]:
        return frozenset().union(*(o.paths for o in self.owners if (o.manager, o.operation) == (manager, operation)))

    def owned_by_others(self, manager: str) -> frozenset[Path]:
        return frozenset().union(*(o.paths for o in self.owners if (o.manager, o.operation) != (manager, "Apply")))

    @property
    def failure(self) -> str | None:
        """Why the controller cannot create pods (the ReplicaFailure condition), if it cannot."""
        for condition in (self.obj.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
                return str(condition.get("message") or condition.get("reason") or "ReplicaFailure")
        return None

    @property
    def rolled_out(self) -> bool:
        """The controller saw the current template and every replica is updated and available."""
        status = self.obj.get("status") or {}
        spec = self.obj.get("spec") or {}
        want = spec.get("replicas", 1)
        return (
            status.get("observedGeneration") == self.obj["metadata"].get("generation")
            and status.get("updatedReplicas", 0) == want
            and status.get("availableReplicas", 0) == want
            and status.get("replicas", 0) == want
        )


# --------------------------------------------------------------------------- the plan


@dataclasses.dataclass
class WorkloadPlan:
    """What to do to one Deployment; `apply` None = nothing to apply, `json_patch` [] = nothing to remove."""

    name: str
    apply: dict[str, Any] | None = None
    json_patch: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    removed: list[dict[str, str]] = dataclasses.field(default_factory=list)
    restart: bool = False
    reasons: list[str] = dataclasses.field(default_factory=list)

    @property
    def changes(self) -> bool:
        return self.apply is not None or bool(self.json_patch)

    def details(self) -> dict[str, Any]:
        """For the outcome and the dry run: the exact patches (no literal values), the removals by name."""
        out: dict[str, Any] = {"deployment": self.name}
        if self.apply is not None:
            out["serverSideApply"] = self.apply
        if self.json_patch:
            out["jsonPatch"] = self.json_patch
        if self.removed:
            out["removed"] = self.removed
        if self.restart:
            out["rolloutRestart"] = True
        return out


def _ref_matches(source: dict[str, Any], configmap: str) -> bool:
    return (source.get("configMapRef") or {}).get("name") == configmap


def _uses_configmap(container: dict[str, Any], configmap: str) -> bool:
    if any(_ref_matches(s, configmap) for s in container.get("envFrom") or []):
        return True
    return any(
        ((e.get("valueFrom") or {}).get("configMapKeyRef") or {}).get("name") == configmap
        for e in container.get("env") or []
    )


def target_containers(deploy: DeploymentState, configmap: str, rules: ApiKeyRules) -> list[str]:
    """The containers that call Azure OpenAI: those with our ConfigMap, an API key or an OpenAI
    variable; the only container otherwise. Never a guess among several."""
    containers = deploy.containers
    chosen = [
        c["name"]
        for c in containers
        if _uses_configmap(c, configmap)
        or rules.container_keys(c)
        or any(str(e.get("name", "")).upper().startswith(_OPENAI_PREFIXES) for e in c.get("env") or [])
    ]
    if chosen:
        return chosen
    if len(containers) == 1:
        return [containers[0]["name"]]
    raise PermanentError(
        f"deployment {deploy.name}: cannot tell which of its {len(containers)} containers calls Azure OpenAI "
        "(none has an OpenAI variable or key); give that container an AZURE_OPENAI_ENDPOINT variable"
    )


def _container_path(name: str) -> Path:
    return ("f:spec", "f:template", "f:spec", "f:containers", _item_key("containers", {"name": name}))


def desired_config(
    deploy: DeploymentState,
    *,
    binding_key: str,
    service_account: str,
    configmap: str,
    configmap_data: dict[str, str],
    client_id: str,
    manager: str,
    rules: ApiKeyRules,
) -> dict[str, Any]:
    """The server-side-apply configuration Keyless owns on this Deployment.

    PermanentError when the Deployment is another binding's, or runs as another service account
    (switching it could drop permissions that account has; bind that account instead)."""
    claim = deploy.labels.get(BINDING_LABEL)
    if claim and claim != binding_key[:63]:
        raise PermanentError(
            f"deployment {deploy.name} is enforced by another binding ({claim}); one binding per Deployment "
            "(its ConfigMap supplies the endpoint): remove it from that binding's workloads first"
        )
    current_sa = deploy.pod_spec.get("serviceAccountName") or deploy.pod_spec.get("serviceAccount") or ""
    if current_sa not in ("", "default", service_account):
        raise PermanentError(
            f"deployment {deploy.name} runs as service account {current_sa!r}, not {service_account!r}; "
            f"onboard {current_sa!r} instead, or change the Deployment's serviceAccountName"
        )
    others = deploy.owned_by_others(manager)
    mine = deploy.owned_by(manager)
    live = {c["name"]: c for c in deploy.containers}
    containers = []
    for name in target_containers(deploy, configmap, rules):
        container = live[name]
        env_from_path = _container_path(name) + ("f:envFrom",)
        live_env_from = container.get("envFrom") or []
        ours = {"configMapRef": {"name": configmap}}
        entry: dict[str, Any] = {"name": name}
        if env_from_path in mine or not live_env_from or env_from_path not in others:
            entry["envFrom"] = [ours]
        elif not any(_ref_matches(s, configmap) for s in live_env_from):
            # Another manager owns an envFrom without our ConfigMap: add the keys one by one instead.
            # The team's own variables win (as env wins over envFrom); ours stay ours.
            present = {e.get("name") for e in container.get("env") or []}
            env_path = _container_path(name) + ("f:env",)
            owned = {p[len(env_path)] for p in mine if p[: len(env_path)] == env_path and len(p) == len(env_path) + 1}
            entry["env"] = [
                {"name": key, "valueFrom": {"configMapKeyRef": {"name": configmap, "key": key}}}
                for key in sorted(configmap_data)
                if key not in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID")  # the webhook injects these
                and (key not in present or _item_key("env", {"name": key}) in owned)
            ]
        containers.append(entry)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deploy.name,
            "namespace": deploy.obj["metadata"].get("namespace"),
            "labels": {BINDING_LABEL: binding_key[:63]},
        },
        "spec": {
            "template": {
                "metadata": {"labels": {USE_LABEL: "true"}, "annotations": {IDENTITY_ANNOTATION: client_id}},
                "spec": {"serviceAccountName": service_account, "containers": containers},
            }
        },
    }


def apply_needed(deploy: DeploymentState, config: dict[str, Any], manager: str) -> bool:
    """True when a value the config sets differs from the live one, or when we own a field the
    config no longer sets (server-side apply removes it)."""
    paths, leaves = config_fields(config)
    if any(value_at(deploy.obj, path) != value for path, value in leaves):
        return True
    return bool(deploy.owned_by(manager) - paths)


def only_identity_changes(deploy: DeploymentState, config: dict[str, Any]) -> bool:
    """The template differs from the config only in the identity annotation (set before, to another
    client id): applying it is a rollout restart, for the new identity to reach the pods."""
    _, leaves = config_fields(config)
    annotation = ("f:spec", "f:template", "f:metadata", "f:annotations", "f:" + IDENTITY_ANNOTATION)
    differing = [path for path, value in leaves if value_at(deploy.obj, path) != value]
    return differing == [annotation] and value_at(deploy.obj, annotation) is not _MISSING


def removals(
    deploy: DeploymentState,
    rules: ApiKeyRules,
    configmap: str,
    configmap_data: dict[str, str],
    targets: Iterable[str] = (),
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The JSON patch that removes API keys (any container) and, in the `targets`, the variables
    that shadow the ConfigMap's identity settings; and what it removes, by name.

    Indexes go from last to first, so each remove leaves the earlier indexes valid; each is preceded
    by a `test` of the item's name (or secret name), never of a value."""
    targets = set(targets)
    ops: list[dict[str, Any]] = []
    removed: list[dict[str, str]] = []
    spec = deploy.pod_spec
    for field in ("initContainers", "containers"):
        for ci, container in enumerate(spec.get(field) or []):
            base = f"/spec/template/spec/{field}/{ci}"
            env = container.get("env") or []
            for ei in range(len(env) - 1, -1, -1):
                item = env[ei]
                name = str(item.get("name", ""))
                why = rules.env_key(item)
                if (
                    why is None
                    and name in SHADOW_GUARDED
                    and name in configmap_data
                    and container.get("name") in targets
                ):
                    ref = ((item.get("valueFrom") or {}).get("configMapKeyRef") or {}).get("name")
                    if ref != configmap and ("valueFrom" in item or item.get("value") != configmap_data[name]):
                        why = "shadows the ConfigMap's value (env wins over envFrom)"
                if why is None:
                    continue
                ops += [
                    {"op": "test", "path": f"{base}/env/{ei}/name", "value": name},
                    {"op": "remove", "path": f"{base}/env/{ei}"},
                ]
                removed.append({"container": container.get("name", ""), "variable": name, "why": why})
            sources = container.get("envFrom") or []
            for si in range(len(sources) - 1, -1, -1):
                why = rules.env_from_key(sources[si])
                if why is None:
                    continue
                secret = sources[si]["secretRef"]["name"]
                ops += [
                    {"op": "test", "path": f"{base}/envFrom/{si}/secretRef/name", "value": secret},
                    {"op": "remove", "path": f"{base}/envFrom/{si}"},
                ]
                removed.append({"container": container.get("name", ""), "variable": "envFrom", "why": why})
    return ops, removed


def plan_deployment(
    deploy: DeploymentState,
    *,
    binding_key: str,
    service_account: str,
    configmap: str,
    configmap_data: dict[str, str],
    client_id: str,
    manager: str,
    rules: ApiKeyRules,
) -> WorkloadPlan:
    """Everything to do to one named Deployment. The removals are computed against `deploy`; after
    an apply, compute them again against what the apply returned (`removals`)."""
    config = desired_config(
        deploy,
        binding_key=binding_key,
        service_account=service_account,
        configmap=configmap,
        configmap_data=configmap_data,
        client_id=client_id,
        manager=manager,
        rules=rules,
    )
    plan = WorkloadPlan(deploy.name)
    if apply_needed(deploy, config, manager):
        plan.apply = config
        plan.restart = only_identity_changes(deploy, config)
        plan.reasons.append(
            "rollout restart: the service account's identity changed, and pods get it only at creation"
            if plan.restart
            else "pod template: workload identity label, service account, ConfigMap"
        )
    targets = [c["name"] for c in config["spec"]["template"]["spec"]["containers"]]
    plan.json_patch, plan.removed = removals(deploy, rules, configmap, configmap_data, targets)
    if plan.removed:
        plan.reasons.append("removed " + ", ".join(f"{r['variable']} from {r['container']}" for r in plan.removed))
    return plan


def plan_release(deploy: DeploymentState, manager: str) -> WorkloadPlan:
    """Offboarding, or the Deployment left the binding's workloads: give back every field we own
    (server-side apply of nothing removes what only we set). Removed keys stay removed."""
    plan = WorkloadPlan(deploy.name)
    if deploy.owned_by(manager):
        plan.apply = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": deploy.name, "namespace": deploy.obj["metadata"].get("namespace")},
        }
        plan.reasons.append("released the fields Keyless set (label, service account, ConfigMap)")
    return plan


def claimed_by(deployments: Iterable[DeploymentState], binding_key: str) -> list[DeploymentState]:
    return [d for d in deployments if d.labels.get(BINDING_LABEL) == binding_key[:63]]
