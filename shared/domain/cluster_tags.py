"""Onboarding rules: which bindings a cluster's tags ask for. Pure.

- tag `keyless-workloads`: `namespace/serviceaccount` pairs, separated by commas, semicolons
  or spaces (Azure tag values hold 256 characters);
- tag `keyless-openai-account`: the account's name in the cluster's resource group, or a
  full resource id; without it, the only OpenAI/AIServices account in the cluster's
  resource group. More than one is ambiguous: never guess.
- tag `keyless-workloads-deployments` (opt-in workload enforcement): `namespace/serviceaccount=
  deployment[+deployment...]` entries, same separators; each pair must also be in
  `keyless-workloads` (a tag names Deployments of a binding it asks for, nothing else).
"""

from __future__ import annotations

import dataclasses
import re

from shared.domain.binding import Binding, validate_namespace, validate_service_account
from shared.domain.errors import PermanentError
from shared.domain.ids import ACCOUNT_TYPE, ResourceId, parse_resource_id
from shared.domain.observed import AccountState, ClusterState
from shared.domain.settings import DEFAULT_SYSTEM_NAMESPACES
from shared.domain.workloads import validate_workloads

WORKLOADS_TAG = "keyless-workloads"
ACCOUNT_TAG = "keyless-openai-account"
DEPLOYMENTS_TAG = "keyless-workloads-deployments"


@dataclasses.dataclass(frozen=True)
class TagRules:
    workloads: tuple[tuple[str, str], ...]
    account: ResourceId | None  # None: choose among the resource group's accounts
    errors: tuple[str, ...] = ()
    deployments: tuple[tuple[tuple[str, str], tuple[str, ...]], ...] = ()  # (ns, sa) -> Deployments to enforce

    def deployments_of(self, namespace: str, service_account: str) -> tuple[str, ...]:
        return next((names for pair, names in self.deployments if pair == (namespace, service_account)), ())


def _tag(tags: dict[str, str], name: str) -> str | None:
    for key, value in tags.items():
        if key.lower() == name:
            return value
    return None


def read_tags(
    cluster: ClusterState, cluster_id: ResourceId, system_namespaces: tuple[str, ...] = DEFAULT_SYSTEM_NAMESPACES
) -> TagRules:
    """The workloads and the account the cluster's tags name; bad entries listed in `errors`.

    System namespaces and the `default` service account are never onboarded from tags: a tag
    is no access policy, and those identities are shared by everything in the namespace.
    """
    raw = _tag(cluster.tags, WORKLOADS_TAG) or ""
    workloads: list[tuple[str, str]] = []
    errors: list[str] = []
    for item in re.split(r"[,;\s]+", raw.strip()):
        if not item:
            continue
        ns, sep, sa = item.partition("/")
        try:
            if not sep:
                raise PermanentError(f"{WORKLOADS_TAG}: {item!r} is not namespace/serviceaccount")
            pair = (validate_namespace(ns, WORKLOADS_TAG), validate_service_account(sa, WORKLOADS_TAG))
            if ns in system_namespaces or sa == "default":
                raise PermanentError(f"{WORKLOADS_TAG}: {item!r} is a system namespace or the default service account")
        except PermanentError as exc:
            errors.append(exc.reason)
            continue
        if pair not in workloads:
            workloads.append(pair)
    account_ref = (_tag(cluster.tags, ACCOUNT_TAG) or "").strip()
    account: ResourceId | None = None
    if account_ref:
        ref = (
            account_ref
            if account_ref.startswith("/")
            else (f"{cluster_id.resource_group_id}/providers/{ACCOUNT_TYPE}/{account_ref}")
        )
        try:
            account = parse_resource_id(ref, ACCOUNT_TYPE, ACCOUNT_TAG)
        except PermanentError as exc:
            errors.append(exc.reason)
    deployments = _read_deployments(_tag(cluster.tags, DEPLOYMENTS_TAG) or "", workloads, errors)
    return TagRules(tuple(workloads), account, tuple(errors), deployments)


def _read_deployments(
    raw: str, workloads: list[tuple[str, str]], errors: list[str]
) -> tuple[tuple[tuple[str, str], tuple[str, ...]], ...]:
    found: dict[tuple[str, str], tuple[str, ...]] = {}
    for item in re.split(r"[,;\s]+", raw.strip()):
        if not item:
            continue
        pair_text, sep, names = item.partition("=")
        ns, slash, sa = pair_text.partition("/")
        try:
            if not sep or not slash:
                raise PermanentError(f"{DEPLOYMENTS_TAG}: {item!r} is not namespace/serviceaccount=deployment[+...]")
            if (ns, sa) not in workloads:
                raise PermanentError(f"{DEPLOYMENTS_TAG}: {ns}/{sa} is not in the {WORKLOADS_TAG} tag")
            merged = found.get((ns, sa), ()) + tuple(n for n in names.split("+") if n)
            found[(ns, sa)] = validate_workloads(list(merged), DEPLOYMENTS_TAG)
        except PermanentError as exc:
            errors.append(exc.reason)
    return tuple(sorted(found.items()))


def choose_account(candidates: list[AccountState]) -> str:
    """The id of the only OpenAI/AIServices account; PermanentError when none or several."""
    usable = [a for a in candidates if a.kind.lower() in ("openai", "aiservices")]
    if len(usable) == 1:
        return usable[0].id
    if not usable:
        raise PermanentError(f"no OpenAI account in the cluster's resource group: set the {ACCOUNT_TAG} tag")
    names = ", ".join(sorted(a.name for a in usable))
    raise PermanentError(f"ambiguous: {len(usable)} OpenAI accounts ({names}); set the {ACCOUNT_TAG} tag")


def still_asks(cluster: ClusterState, binding: Binding, system_namespaces: tuple[str, ...]) -> bool:
    """Do the cluster's tags still ask for this binding? Its pair must be named, and the account the
    tags name (when they name one: otherwise the group's only account was chosen) must be its account."""
    tag_rules = read_tags(cluster, binding.cluster, system_namespaces)
    if (binding.namespace, binding.service_account) not in tag_rules.workloads:
        return False
    return tag_rules.account is None or tag_rules.account.key == binding.account.key
