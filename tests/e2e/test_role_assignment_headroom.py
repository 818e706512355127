"""Azure holds at most 4,000 role assignments per subscription, all scopes inside it. A new binding
is refused, before anything is written, when it would leave fewer than KEYLESS_ROLE_ASSIGNMENT_HEADROOM
places: one team's bindings must not use up what every team in the subscription shares."""

from __future__ import annotations

import uuid

from shared.domain.binding import OPENAI_USER_ROLE_ID
from tests.conftest import ACCOUNT_ID, SUB

OTHER_PRINCIPAL = "99999999-0000-4000-8000-00000000000a"


def fill(arm, count: int) -> None:
    """`count` assignments somewhere in the account's subscription (another team's, say)."""
    scope = ACCOUNT_ID.split("/providers/")[0]  # the account's resource group
    role = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{OPENAI_USER_ROLE_ID}"
    for _ in range(count):
        arm.add_role_assignment(scope, str(uuid.uuid4()), OTHER_PRINCIPAL, role)


def test_a_new_binding_is_refused_near_the_subscription_limit_before_any_write(arm, kube, settings, make_engine,
                                                                               binding):  # fmt: skip
    fill(arm, 3800)  # 4,000 - 200 headroom: no room for one more
    arm.log.clear()
    result = make_engine(settings, role_assignment_headroom=200).reconcile(binding)
    assert result.status == "failed", result.as_dict()
    step = result.step("identity")
    assert "3800 role assignments" in step.reason and "4000" in step.reason
    assert "KEYLESS_ROLE_ASSIGNMENT_HEADROOM" in step.reason and "another subscription" in step.reason
    assert arm.log.writes() == [] and arm.identities() == []


def test_with_room_left_it_goes_on_and_a_converged_binding_never_counts(arm, kube, settings, make_engine, binding):
    fill(arm, 3700)
    engine = make_engine(settings, role_assignment_headroom=200)
    assert engine.reconcile(binding).status == "ready"
    fill(arm, 300)  # the subscription fills up meanwhile: an existing binding is still repaired
    arm.log.clear()
    assert engine.reconcile(binding).status == "ready"
    assert arm.log.matching("GET", f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments") == []


def test_a_running_bindings_deleted_role_assignment_is_put_back_in_a_full_subscription(
    arm, kube, settings, make_engine, binding
):
    """A repair takes no new place: the binding's own assignment (counted when it was made) is put back
    even when the subscription has filled up since; a binding that never held one is refused."""
    fill(arm, 3700)
    engine = make_engine(settings, role_assignment_headroom=200)
    assert engine.reconcile(binding).status == "ready"
    (assignment,) = arm.role_assignments(str(binding.account))
    fill(arm, 300)
    engine.roles.delete(binding.account.subscription_id, str(binding.account), assignment["name"])
    refused = engine.reconcile(binding)
    assert refused.status == "failed" and "KEYLESS_ROLE_ASSIGNMENT_HEADROOM" in refused.reason, refused.as_dict()
    repaired = engine.reconcile(binding, counted_role=True)
    assert repaired.status == "ready", repaired.as_dict()
    assert repaired.step("role-assignment").outcome == "created"
