"""shared.domain.revocation with plain values: the record decides what offboarding removes, not tags."""

from __future__ import annotations

from shared.domain import naming, planner, revocation
from shared.domain.binding import Binding
from shared.domain.observed import IdentityState
from shared.domain.revocation import Made
from tests.conftest import ACCOUNT_ID, CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT

ROLE = "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd"
BINDING = Binding.create(CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT, ACCOUNT_ID)
TAGS = planner.identity_tags(BINDING)
ID = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1"


def identity(principal: str = "p-1", tags: dict | None = None) -> IdentityState:
    return IdentityState(ID, "id1", "eastus", "c-1", principal, "t", dict(TAGS if tags is None else tags))


def made(origin: str = "created", principal: str = "p-1", role_assignment_id: str = "") -> Made:
    return Made(ID, principal, origin, role_assignment_id)


def test_a_created_identity_is_keyless_whatever_its_tags_say():
    verdict = revocation.judge_identity(identity(tags={"managed-by": "mallory"}), made(), TAGS)
    assert verdict == revocation.IdentityVerdict("p-1", True, None)


def test_a_record_from_before_the_marker_goes_by_the_principal():
    assert revocation.judge_identity(identity(tags={}), made(origin=""), TAGS).keep_reason is None
    replaced = revocation.judge_identity(identity(principal="p-2"), made(origin=""), TAGS)
    assert replaced.principal_id == "p-1" and not replaced.credentials and "replaced" in replaced.keep_reason


def test_a_handed_over_identity_is_deleted_only_while_its_tags_still_hand_it_over():
    assert revocation.judge_identity(identity(), made(origin="adopted"), TAGS).keep_reason is None
    retagged = revocation.judge_identity(identity(tags={}), made(origin="adopted"), TAGS)
    assert retagged.principal_id == "p-1" and retagged.credentials, "its role and credential still go"
    assert "handed over" in retagged.keep_reason


def test_without_a_record_the_tags_decide_as_before():
    foreign = revocation.judge_identity(identity(tags={"managed-by": "platform"}), Made(), TAGS)
    assert foreign.principal_id is None and not foreign.credentials and "platform" in foreign.keep_reason
    assert revocation.judge_identity(identity(), Made(), TAGS) == revocation.IdentityVerdict("p-1", True, None)
    assert revocation.judge_identity(None, Made(), TAGS).principal_id is None


def test_the_role_assignments_to_remove_are_the_named_one_and_the_recorded_one():
    ours = naming.role_assignment_name(ACCOUNT_ID, ROLE, "p-1")
    adopted = f"{ACCOUNT_ID}/providers/Microsoft.Authorization/roleAssignments/other-name"
    assert revocation.role_assignments_to_remove(made(role_assignment_id=adopted), ACCOUNT_ID, ROLE, "p-1") == [
        ours,
        "other-name",
    ]
    elsewhere = "/subscriptions/x/providers/Microsoft.Authorization/roleAssignments/n"
    assert revocation.role_assignments_to_remove(made(role_assignment_id=elsewhere), ACCOUNT_ID, ROLE, None) == []


def test_the_origin_is_kept_for_the_same_principal_and_set_for_a_new_one():
    first = {"resourceId": ID, "principalId": "p-1", "clientId": "c-1", "tenantId": "t"}
    created = revocation.recorded_identity({}, first, created=True)
    assert created["origin"] == "created"
    assert revocation.recorded_identity(created, first, created=False)["origin"] == "created", "a later run"
    assert "origin" not in revocation.recorded_identity(first, first, created=False), "from before the marker"
    other = {**first, "principalId": "p-2"}
    assert revocation.recorded_identity(created, other, created=False)["origin"] == "adopted"


def test_a_planned_principal_is_no_record():
    assert Made.from_record({"resourceId": ID, "principalId": planner.PLANNED}, None) == Made()
