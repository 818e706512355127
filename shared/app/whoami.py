"""Who the caller is to Keyless, and what they may ask for (GET /api/me, the team page's header,
`keyless whoami`): the access-policy rules that speak for them, what of them each rule names, and how much
of each rule's quota is used.

A caller sees only the rules that name them (their object id, a group of theirs, an app role of theirs),
never another team's; a refusal's reason already names the closest rule, so this tells them nothing new,
only sooner. The reads: one quota count per rule shown, nothing else.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from shared.domain import access
from shared.domain.policy import Rule
from shared.domain.principal import Caller

if TYPE_CHECKING:
    from shared.app.keyless import Keyless

NO_RULE = (
    "no access-policy rule names you (your object id, groups or app roles): ask the platform team that runs "
    "Keyless to add one to KEYLESS_ACCESS_POLICY, naming your object id or a group of yours"
)


@dataclasses.dataclass(frozen=True)
class MyRule:
    """One rule that speaks for the caller, as they may use it."""

    rule: Rule
    matched_by: tuple[str, ...]  # what of the caller it names
    roles: tuple[str, ...]  # its roles Keyless may assign now (on KEYLESS_ROLE_ALLOWLIST)
    max_bindings: int
    live_bindings: int  # counted in its quota, read up to max_bindings + 1


@dataclasses.dataclass(frozen=True)
class Me:
    caller: Caller
    signed_in_with: str  # "entra" (App Service Authentication), or "dev-principal" (local only)
    rules: tuple[MyRule, ...]
    allowed_subscriptions: tuple[str, ...]  # empty: any
    default_role: str

    @property
    def hint(self) -> str:
        """What to do when nothing may be asked for; "" otherwise."""
        if not self.rules:
            return NO_RULE
        if not any(r.roles for r in self.rules):
            return "your rules name only roles that are not on KEYLESS_ROLE_ALLOWLIST: ask the platform team"
        return ""


def whoami(app: Keyless, caller: Caller, signed_in_with: str) -> Me:
    """The caller and the rules that speak for them, each with its quota's use."""
    settings = app.settings
    allowed = {r.lower() for r in settings.role_allowlist}
    rules = app.policy.rules_for(caller) if app.policy is not None else ()
    mine = []
    for rule in rules:
        quota = access.rule_quota(rule, settings.default_max_bindings)
        mine.append(
            MyRule(
                rule=rule,
                matched_by=rule.matched_by(caller),
                roles=tuple(r for r in rule.roles if r.lower() in allowed),
                max_bindings=quota.limit,
                live_bindings=app.ledger.quota_used(quota.key, quota.limit + 1),
            )
        )
    return Me(caller, signed_in_with, tuple(mine), settings.allowed_subscriptions, settings.default_role)
