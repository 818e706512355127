"""Who may onboard what. Pure: a parsed access policy and one decision per request.

A self-service endpoint that creates identities and role assignments is a privilege-escalation
machine unless it is locked down: client ids are not secrets, and the federated credential's
subject is the only isolation between teams. So: default deny, and every request is checked
for its exact (cluster, namespace, service account, account, role) before anything is queued.

Policy JSON (setting KEYLESS_ACCESS_POLICY, inline or a file path):

    {"rules": [{
        "name": "team-a",
        "principals": {"groups": ["<group oid>"], "roles": ["Keyless.Onboard"], "objectIds": ["<oid>"]},
                                                            # or {"clusterTags": true}: see shared.domain.access
        "clusters": ["<cluster id>" | "/subscriptions/<sub>/resourceGroups/<rg>"],   # ids or RG prefixes
        "namespaces": ["team-a", "team-a-*"],                                        # fnmatch patterns
        "serviceAccounts": ["*"],                                                   # optional, default "*"
        "accounts": ["<account id>" | "/subscriptions/<sub>/resourceGroups/<rg>"],
        "roles": ["5e0bd9bd-7b93-4f28-af87-19fc36ad61bd"],                          # optional: the default role
        "workloads": ["chat-*"],                               # optional: Deployments it may patch; default none
        "maxBindings": 50                                      # optional: live bindings this rule may grant
    }]}                                                        #   (default KEYLESS_DEFAULT_MAX_BINDINGS)

System namespaces and the `default` service account match only when a rule names them
exactly (no pattern covers them).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import re
from collections.abc import Iterable
from typing import Any

from shared.domain.binding import Binding
from shared.domain.errors import PermanentError
from shared.domain.principal import Caller


class PolicyError(PermanentError):
    """The access policy setting is malformed."""


class Denied(PermanentError):
    """The caller may not do this; `reason` names the missing grant (maps to 403)."""


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise PolicyError(f"KEYLESS_ACCESS_POLICY: {where} must be a list of non-empty strings")
    return tuple(value)


@dataclasses.dataclass(frozen=True)
class Rule:
    name: str
    group_ids: frozenset[str]
    app_roles: frozenset[str]
    object_ids: frozenset[str]
    clusters: tuple[str, ...]
    namespaces: tuple[str, ...]
    service_accounts: tuple[str, ...]
    accounts: tuple[str, ...]
    roles: tuple[str, ...]
    workloads: tuple[str, ...] = ()
    cluster_tags: bool = False  # the rule speaks for cluster tags (shared.domain.access), not for a person
    max_bindings: int | None = None  # None: the policy's default

    def applies_to(self, caller: Caller) -> bool:
        return bool(
            caller.object_id in self.object_ids or caller.groups & self.group_ids or caller.roles & self.app_roles
        )

    def matched_by(self, caller: Caller) -> tuple[str, ...]:
        """What of the caller this rule names (`objectId`, `group <id>`, `app role <name>`): why it speaks for
        them, shown to them (GET /api/me) and to nobody else."""
        return (
            *(("objectId",) if caller.object_id in self.object_ids else ()),
            *(f"group {g}" for g in sorted(caller.groups & self.group_ids)),
            *(f"app role {r}" for r in sorted(caller.roles & self.app_roles)),
        )


_SCOPE = re.compile(
    r"/subscriptions/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"(/resourceGroups/[A-Za-z0-9._()-]+(/providers/[A-Za-z0-9.]+/[A-Za-z0-9]+/[A-Za-z0-9._()-]+)?)?",
    re.IGNORECASE,
)


def _scopes(value: Any, where: str) -> tuple[str, ...]:
    """Subscription, resource-group or resource ids, whole: `/subscriptions/` alone (every
    subscription) or a trailing slash is refused, never widened."""
    items = _strings(value, where)
    for item in items:
        if not _SCOPE.fullmatch(item):
            raise PolicyError(
                f"KEYLESS_ACCESS_POLICY: {where}: {item[:120]!r} is not a subscription, resource group or resource id"
            )
    return items


_RULE_KEYS = frozenset(
    {"name", "principals", "clusters", "namespaces", "serviceAccounts", "accounts", "roles", "workloads", "maxBindings"}
)
_PRINCIPAL_KEYS = frozenset({"groups", "roles", "objectIds", "clusterTags"})


def _max_bindings(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PolicyError(f"KEYLESS_ACCESS_POLICY: {where} must be a whole number >= 0")
    return value


def under(resource_id: str, grants: Iterable[str]) -> bool:
    """The id equals a granted id, or lies in a granted subscription/resource group (segment-wise)."""
    rid = resource_id.lower().rstrip("/")
    for grant in grants:
        g = grant.lower().rstrip("/")
        if rid == g or rid.startswith(g + "/"):
            return True
    return False


def _name_matches(value: str, patterns: tuple[str, ...], protected: bool) -> bool:
    if protected:  # only an exact, explicit grant covers a system namespace or `default`
        return value in patterns
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


SHAPE = '{"rules": [...]}'
"""The policy document's shape, as errors show it."""


def _document(text: str) -> object:
    """The setting's JSON: the text itself when it is JSON (of any shape: the caller names a wrong one),
    else the file it names."""
    try:
        return json.loads(text)
    except ValueError:
        if text.lstrip().startswith(("{", "[", '"')):
            raise PolicyError(f"KEYLESS_ACCESS_POLICY: not valid JSON; expected {SHAPE}") from None
    try:
        with open(os.path.expanduser(text.strip()), encoding="utf-8") as f:
            content = f.read()
    except OSError:
        raise PolicyError(f"KEYLESS_ACCESS_POLICY: neither JSON {SHAPE} nor a readable file") from None
    try:
        return json.loads(content)
    except ValueError:
        raise PolicyError(f"KEYLESS_ACCESS_POLICY: the file is not valid JSON; expected {SHAPE}") from None


def _kind(value: object) -> str:
    """A JSON value's kind, as an error names it (never the value: a policy may be long)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


@dataclasses.dataclass(frozen=True)
class AccessPolicy:
    rules: tuple[Rule, ...]
    system_namespaces: frozenset[str]
    default_role: str

    @classmethod
    def parse(cls, text: str | None, system_namespaces: Iterable[str], default_role: str) -> AccessPolicy:
        """From the setting: inline JSON, or the path of a JSON file. None/empty: deny everything."""
        if not text:
            return cls((), frozenset(system_namespaces), default_role)
        doc = _document(text)
        if not isinstance(doc, dict):
            raise PolicyError(f"KEYLESS_ACCESS_POLICY: must be a JSON object {SHAPE}, got {_kind(doc)}")
        if "rules" not in doc:
            raise PolicyError(f"KEYLESS_ACCESS_POLICY.rules: required, a list of rules: {SHAPE}")
        if not isinstance(doc["rules"], list):
            raise PolicyError(f"KEYLESS_ACCESS_POLICY.rules: must be a list, got {_kind(doc['rules'])}: {SHAPE}")
        rules = []
        for i, raw in enumerate(doc["rules"]):
            if not isinstance(raw, dict):
                raise PolicyError(f"KEYLESS_ACCESS_POLICY: rules[{i}] is not an object")
            if "name" in raw and not (isinstance(raw["name"], str) and raw["name"]):
                raise PolicyError(f"KEYLESS_ACCESS_POLICY: rules[{i}].name must be a non-empty string")
            name = str(raw["name"]) if "name" in raw else f"rules[{i}]"
            # A misspelt key must not widen a rule: `serviceAccount` for `serviceAccounts` would
            # otherwise leave the default, every service account.
            unknown = sorted(set(raw) - _RULE_KEYS)
            if unknown:
                raise PolicyError(
                    f"KEYLESS_ACCESS_POLICY: {name}: unknown key {unknown[0]!r}; keys are {sorted(_RULE_KEYS)}"
                )
            principals = raw.get("principals") or {}
            if not isinstance(principals, dict):
                raise PolicyError(f"KEYLESS_ACCESS_POLICY: {name}.principals is not an object")
            unknown = sorted(set(principals) - _PRINCIPAL_KEYS)
            if unknown:
                raise PolicyError(
                    f"KEYLESS_ACCESS_POLICY: {name}.principals: unknown key {unknown[0]!r}; "
                    f"keys are {sorted(_PRINCIPAL_KEYS)}"
                )
            rule = Rule(
                name=name,
                group_ids=frozenset(g.lower() for g in _strings(principals.get("groups"), f"{name}.principals.groups")),
                app_roles=frozenset(_strings(principals.get("roles"), f"{name}.principals.roles")),
                object_ids=frozenset(
                    o.lower() for o in _strings(principals.get("objectIds"), f"{name}.principals.objectIds")
                ),
                clusters=_scopes(raw.get("clusters"), f"{name}.clusters"),
                namespaces=_strings(raw.get("namespaces"), f"{name}.namespaces"),
                service_accounts=_strings(raw.get("serviceAccounts"), f"{name}.serviceAccounts") or ("*",),
                accounts=_scopes(raw.get("accounts"), f"{name}.accounts"),
                roles=tuple(r.lower() for r in _strings(raw.get("roles"), f"{name}.roles")) or (default_role,),
                workloads=_strings(raw.get("workloads"), f"{name}.workloads"),
                cluster_tags=principals.get("clusterTags") is True,
                max_bindings=_max_bindings(raw.get("maxBindings"), f"{name}.maxBindings"),
            )
            if principals.get("clusterTags") not in (None, True, False):
                raise PolicyError(f"KEYLESS_ACCESS_POLICY: {name}.principals.clusterTags must be true or false")
            if not (rule.group_ids or rule.app_roles or rule.object_ids or rule.cluster_tags):
                raise PolicyError(f"KEYLESS_ACCESS_POLICY: {name} names no principals")
            rules.append(rule)
        return cls(tuple(rules), frozenset(system_namespaces), default_role)

    def authorize(self, caller: Caller, binding: Binding) -> str:
        """The name of the rule that allows this exact binding; Denied naming what was missing."""
        return self.rule_for(caller, binding).name

    def rules_for(self, caller: Caller) -> tuple[Rule, ...]:
        """The rules that speak for the caller, in the order they are tried (never the cluster tags' rules):
        everything the caller may ask for."""
        return tuple(r for r in self.rules if not r.cluster_tags and r.applies_to(caller))

    def rule_for(self, caller: Caller | None, binding: Binding) -> Rule:
        """The rule that allows this exact binding to `caller`; Denied naming what was missing.

        `caller` None: any principal's rule (a binding recorded before Keyless kept its requester's
        claims: only whether some rule still grants it can be checked)."""
        mine = [r for r in self.rules if not r.cluster_tags] if caller is None else list(self.rules_for(caller))
        if not mine:
            raise Denied("no access-policy rule names you (your object id, groups or app roles)")
        return self._first_granting(mine, binding, check_workloads=True)

    def rule_for_cluster_tags(self, binding: Binding) -> Rule:
        """A rule for the cluster-tags pseudo-principal that allows this binding; Denied otherwise.
        Deployments named by tags are the cluster's own business (its tags' writers may change it),
        so they are not checked here."""
        mine = [r for r in self.rules if r.cluster_tags]
        if not mine:
            raise Denied("no access-policy rule speaks for cluster tags (principals.clusterTags)")
        return self._first_granting(mine, binding, check_workloads=False)

    def _first_granting(self, mine: list[Rule], binding: Binding, check_workloads: bool) -> Rule:
        protected_ns = binding.namespace in self.system_namespaces
        protected_sa = binding.service_account == "default"
        checks = (
            ("cluster", lambda r: under(str(binding.cluster), r.clusters)),
            ("namespace", lambda r: _name_matches(binding.namespace, r.namespaces, protected_ns)),
            ("serviceAccount", lambda r: _name_matches(binding.service_account, r.service_accounts, protected_sa)),
            ("openAIAccount", lambda r: under(str(binding.account), r.accounts)),
            ("role", lambda r: binding.role_definition_id.lower() in r.roles),
            # Patching Deployments is a grant of its own: none unless the rule names them.
            (
                "workloads",
                lambda r: not check_workloads or all(_name_matches(w, r.workloads, False) for w in binding.workloads),
            ),
        )
        best: tuple[int, str, str] | None = None
        for rule in mine:
            for passed, (field, check) in enumerate(checks):
                if not check(rule):
                    if best is None or passed > best[0]:
                        best = (passed, rule.name, field)
                    break
            else:
                return rule
        assert best is not None
        _, rule_name, field = best
        value = {
            "cluster": str(binding.cluster),
            "namespace": binding.namespace,
            "serviceAccount": binding.service_account,
            "openAIAccount": str(binding.account),
            "role": binding.role_definition_id,
            "workloads": ",".join(binding.workloads),
        }[field]
        extra = ""
        if field == "namespace" and protected_ns:
            extra = " (a system namespace: a rule must name it exactly)"
        if field == "serviceAccount" and protected_sa:
            extra = " (the default service account: a rule must name it exactly)"
        raise Denied(f"{field}: no rule grants {value!r} to you; closest rule {rule_name!r} lacks it{extra}")

    def covers(self, caller: Caller, binding: Binding) -> bool:
        try:
            self.authorize(caller, binding)
        except Denied:
            return False
        return True


def check_subscriptions(binding: Binding, allowed: tuple[str, ...]) -> None:
    """Only subscriptions the settings allow (empty setting: any)."""
    if not allowed:
        return
    for field, rid in (("cluster", binding.cluster), ("openAIAccount", binding.account)):
        if rid.subscription_id.lower() not in allowed:
            raise Denied(
                f"{field}: subscription {rid.subscription_id} is not one Keyless may act in "
                "(KEYLESS_ALLOWED_SUBSCRIPTIONS: the platform team adds it there)"
            )
