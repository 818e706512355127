"""The one door: may this binding exist? Pure. Every path that creates or repairs access asks here.

A binding hands a Kubernetes service account a role on an OpenAI account. Three kinds of
requester can ask for one, and each is checked by the same function, in the HTTP handler (for a
403 before anything is queued) and again in the worker before every run (a queued message or a
ledger record is no proof of permission, and a grant withdrawn since is honoured):

- a signed-in caller (`Caller`, the HTTP API), and later the claims recorded when they asked:
  a rule of KEYLESS_ACCESS_POLICY must grant the exact binding to them;
- a binding recorded before Keyless kept its requester's claims (`AnyPrincipal`): some rule must
  still grant it, to anyone;
- a cluster's tags (`ClusterTags`): whoever may write the cluster's tags asks, and that is no
  proof that the account's owner agrees. So the account side must consent: the account's tag
  `keyless-allowed-clusters` (or `keyless-allowed-clusters-<anything>`: a tag value holds 256
  characters) names the cluster, its resource group or its subscription (`;`-separated resource
  ids), or a policy rule for `principals.clusterTags` grants the binding.
  System namespaces (KEYLESS_SYSTEM_NAMESPACES too) and `default` are never asked for by tags.

On every path: KEYLESS_ALLOWED_SUBSCRIPTIONS holds for the cluster and the account. The grant
names what allowed it and the quotas it counts against, each of which must have room:

- a rule granting a caller: the rule's `maxBindings` (default KEYLESS_DEFAULT_MAX_BINDINGS);
- cluster tags with the account's consent: KEYLESS_MAX_TAG_BINDINGS_PER_CLUSTER for the cluster;
- cluster tags granted by a `principals.clusterTags` rule: the rule's `maxBindings` (default as
  above) AND the cluster's tags quota: the rule bounds what all clusters it covers may ask for, the
  per-cluster quota what one cluster's tag writers may.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from shared.domain.binding import Binding
from shared.domain.ids import ResourceId
from shared.domain.policy import AccessPolicy, Denied, Rule, check_subscriptions
from shared.domain.principal import Caller
from shared.domain.settings import Settings

CONSENT_TAG = "keyless-allowed-clusters"
TAGS_QUOTA_SETTING = "KEYLESS_MAX_TAG_BINDINGS_PER_CLUSTER"


@dataclasses.dataclass(frozen=True)
class ClusterTags:
    """The pseudo-principal of a binding asked for by a cluster's tags."""

    cluster: str


@dataclasses.dataclass(frozen=True)
class AnyPrincipal:
    """A binding recorded without its requester's claims (before Keyless kept them)."""


Requester = Caller | ClusterTags | AnyPrincipal


@dataclasses.dataclass(frozen=True)
class Quota:
    """Where live bindings are counted, and how many may be."""

    key: str  # e.g. "rule|team-a", "tags|<cluster id>"
    limit: int
    name: str  # how a refusal names the quota


@dataclasses.dataclass(frozen=True)
class Grant:
    """What allowed a binding, and the quotas it counts against (in every one of them)."""

    by: str  # e.g. "rule 'team-a'", "consent of account oai (keyless-allowed-clusters)"
    quotas: tuple[Quota, ...]

    @property
    def quota_key(self) -> str:
        """What a record keeps of the quotas it is counted in (BindingRecord.quota_key)."""
        return join_quota_keys(q.key for q in self.quotas)


def join_quota_keys(keys: Iterable[str]) -> str:
    """One quota's key as it is; several as a JSON list (a quota key never starts with `[`)."""
    keys = list(keys)
    return keys[0] if len(keys) == 1 else json.dumps(keys) if keys else ""


def quota_keys(stored: str) -> tuple[str, ...]:
    """The quota keys a record's `quota_key` names (join_quota_keys): none, one or several."""
    if not stored:
        return ()
    if stored.startswith("["):
        return tuple(str(k) for k in json.loads(stored))
    return (stored,)


class Refused(Denied):
    """Not allowed: `reason` starts with the field (or setting) that is missing and says how to grant it."""


class QuotaExceeded(Refused):
    """Allowed, but the grant's quota is used up; `count` live bindings use it."""

    def __init__(self, reason: str, count: int) -> None:
        super().__init__(reason)
        self.count = count


def consented_clusters(account_tags: Mapping[str, str]) -> tuple[str, ...]:
    """The entries of the account's consent tags. A tag value holds 256 characters (about one
    cluster id, or three resource-group ids), so every tag whose name starts with the consent tag's
    counts: `keyless-allowed-clusters`, `keyless-allowed-clusters-2`, ... (names case-insensitive)."""
    values = [v for k, v in account_tags.items() if k.lower().startswith(CONSENT_TAG)]
    return tuple(item for v in values for item in re.split(r"[;,\s]+", v.strip()) if item)


def consents(account_tags: Mapping[str, str], cluster: ResourceId) -> bool:
    """Does an entry name exactly this cluster, its resource group or its subscription? Whole ids
    only, compared case-insensitively: no prefix, pattern or wildcard (`/subscriptions/` is not
    every subscription, `.../rg-ak` is not `.../rg-aks`)."""
    names = {
        f"/subscriptions/{cluster.subscription_id}".lower(),
        cluster.resource_group_id.lower(),
        cluster.key,
    }
    return any(entry.lower() in names for entry in consented_clusters(account_tags))


def authorise(
    binding: Binding,
    requester: Requester,
    policy: AccessPolicy,
    allowed_subscriptions: tuple[str, ...],
    default_max_bindings: int,
    max_tag_bindings_per_cluster: int,
    account_tags: Mapping[str, str] | None = None,
    role_allowlist: tuple[str, ...] | None = None,
) -> Grant:
    """The grant for `binding` asked by `requester`; Refused naming what is missing.

    `account_tags`: the account's current tags, needed for a ClusterTags requester (None when
    the account could not be read: no consent can be seen then). `role_allowlist`: the roles
    Keyless may assign now (KEYLESS_ROLE_ALLOWLIST); a recorded binding whose role was taken off it
    is refused like any other withdrawn grant."""
    try:
        check_subscriptions(binding, allowed_subscriptions)
    except Denied as exc:
        raise Refused(exc.reason) from None
    if role_allowlist is not None and binding.role_definition_id.lower() not in {r.lower() for r in role_allowlist}:
        raise Refused(f"role: {binding.role_definition_id} is not on KEYLESS_ROLE_ALLOWLIST (any more)")
    if isinstance(requester, ClusterTags):
        return _by_cluster_tags(
            binding, requester, policy, max_tag_bindings_per_cluster, default_max_bindings, account_tags
        )
    caller = requester if isinstance(requester, Caller) else None
    try:
        rule = policy.rule_for(caller, binding)
    except Denied as exc:
        raise Refused(exc.reason) from None
    return Grant(f"rule {rule.name!r}", (rule_quota(rule, default_max_bindings),))


def rule_quota(rule: Rule, default_max_bindings: int) -> Quota:
    limit = default_max_bindings if rule.max_bindings is None else rule.max_bindings
    return Quota(f"rule|{rule.name}", limit, f"maxBindings of rule {rule.name!r}")


def _by_cluster_tags(
    binding: Binding,
    requester: ClusterTags,
    policy: AccessPolicy,
    limit: int,
    default_max_bindings: int,
    account_tags: Mapping[str, str] | None,
) -> Grant:
    if requester.cluster.lower() != binding.cluster.key:
        raise Refused(f"cluster: tags of {requester.cluster} cannot ask for a binding on another cluster")
    if binding.namespace in policy.system_namespaces or binding.service_account == "default":
        raise Refused(
            f"namespace: {binding.namespace}/{binding.service_account} is a system namespace or the default "
            "service account; cluster tags never ask for those (use the API with a rule that names them)"
        )
    quota = Quota(
        f"tags|{binding.cluster.key}", limit, f"{TAGS_QUOTA_SETTING} ({limit}) for cluster {binding.cluster.name}"
    )
    if account_tags is not None and consents(account_tags, binding.cluster):
        return Grant(f"consent of account {binding.account.name} ({CONSENT_TAG})", (quota,))
    try:
        rule = policy.rule_for_cluster_tags(binding)
    except Denied as exc:
        seen = "could not be read" if account_tags is None else f"does not name this cluster in its {CONSENT_TAG} tag"
        raise Refused(
            f"consent: account {binding.account.name} {seen}, and {exc.reason}. To consent, the account's owner "
            f"adds the cluster id (or its resource group or subscription id) to the account's {CONSENT_TAG} tag "
            f"(';'-separated: az tag update --resource-id <account id> --operation merge --tags "
            f"{CONSENT_TAG}={binding.cluster}), or the operator adds a rule for principals.clusterTags to "
            "KEYLESS_ACCESS_POLICY"
        ) from None
    return Grant(f"rule {rule.name!r} for cluster tags", (rule_quota(rule, default_max_bindings), quota))


def requester_of(source: str, cluster: str, principal: Mapping[str, object] | None) -> Requester:
    """Who asked for a recorded binding: its cluster's tags, the recorded caller, or (records made
    before callers were recorded) any principal."""
    if source == "cluster-tags":
        return ClusterTags(cluster.lower())
    if not principal or not isinstance(principal.get("objectId"), str):
        return AnyPrincipal()
    return Caller(
        object_id=str(principal["objectId"]).lower(),
        groups=frozenset(str(g).lower() for g in principal.get("groups") or () if isinstance(g, str)),  # type: ignore[attr-defined]
        roles=frozenset(str(r) for r in principal.get("roles") or () if isinstance(r, str)),  # type: ignore[attr-defined]
    )


MAX_RECORDED_CLAIMS = 250
"""Groups (and roles) kept of a caller: Entra puts at most 200 groups in a token (then an overage claim)."""


def recorded_principal(caller: Caller) -> dict[str, object]:
    """What the ledger keeps of the caller, so the worker can ask the policy again: ids only."""
    return {
        "objectId": caller.object_id,
        "groups": sorted(caller.groups)[:MAX_RECORDED_CLAIMS],
        "roles": sorted(caller.roles)[:MAX_RECORDED_CLAIMS],
    }


def settings_fingerprint(settings: Settings, policy: AccessPolicy) -> str:
    """A digest of everything the one door decides from (the policy as parsed, the allowlists, the system
    namespaces, the quotas, the default role), so that an instance that starts with other authorisation
    settings can tell and start a sweep at once: a settings change has no Azure event. Whitespace, key
    order and a policy given as a file path rather than inline make no difference; rule order does (the
    first rule that grants decides the quota)."""
    material = {
        "policy": _canonical(policy),
        "allowedSubscriptions": sorted(s.lower() for s in settings.allowed_subscriptions),
        "roleAllowlist": sorted(r.lower() for r in settings.role_allowlist),
        "defaultRole": settings.default_role.lower(),
        "systemNamespaces": sorted(settings.system_namespaces),
        "defaultMaxBindings": settings.default_max_bindings,
        "maxTagBindingsPerCluster": settings.max_tag_bindings_per_cluster,
    }
    text = json.dumps(material, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _canonical(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, frozenset | set):
        return sorted(_canonical(v) for v in value)
    if isinstance(value, tuple | list):
        return [_canonical(v) for v in value]
    return value
