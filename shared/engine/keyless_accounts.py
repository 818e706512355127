"""Keyless accounts: turn an opted-in OpenAI account's keys off once nothing that uses it needs them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from shared.domain.ids import ResourceId
from shared.domain.observed import AccountState
from shared.domain.results import StepOutcome
from shared.engine.world import World

KEYLESS_ENFORCE_TAG = "keyless-enforce"


class KeylessAccounts:
    def __init__(self, world: World) -> None:
        self.w = world

    def opted_in(self, account: AccountState) -> bool:
        """Tag `keyless-enforce=true` on the account, or KEYLESS_ENFORCE_KEYLESS_ACCOUNTS for all."""
        tag = next((v for k, v in account.tags.items() if k.lower() == KEYLESS_ENFORCE_TAG), None)
        if tag is not None:
            return tag.strip().lower() == "true"
        return self.w.settings.enforce_keyless_accounts

    def enforce(self, account_id: ResourceId, blockers: Callable[[], Sequence[str]]) -> StepOutcome:
        """`blockers()` names what would break (bindings not verified, pods with a key); it is asked
        only for an opted-in account whose keys are on. While any remains, the outcome is `not-yet`
        with that list. Never turns keys back on."""
        step = "keyless-account"
        account = self.w.accounts.get(account_id)
        if not self.opted_in(account):
            return StepOutcome(step, "skipped", "not opted in (tag keyless-enforce=true)")
        if not account.disable_local_auth:
            account = self.w.accounts.get(account_id, fresh=True)  # the cached read may predate our PATCH
        if account.disable_local_auth:
            return StepOutcome(step, "unchanged", "local authentication is already disabled")
        would_break = list(blockers())
        if would_break:
            return StepOutcome(step, "not-yet", "keys stay on: these would break", details={"wouldBreak": would_break})
        if self.w.account_auth is None:
            return StepOutcome(step, "failed", "no account adapter configured")
        self.w.account_auth.disable_local_auth(account_id)
        return StepOutcome(step, "updated", "disabled local (key) authentication on the account")
