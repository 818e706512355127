"""What offboarding may remove, judged from Keyless's own record, not from what others can edit.

Revocation must not depend on anything the party losing access controls: tags on the identity
(anyone who may tag in its resource group can rewrite them) or objects in the cluster (a namespace
admin can refuse every request there). The ledger record keeps what Keyless made or adopted for the
binding: the identity (resource id, principal id, and since this module whether Keyless created it
or was handed it), and the role assignment's id. Those decide here; tags only where nothing was
recorded yet (a run that never got that far), as before.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from shared.domain import naming, planner
from shared.domain.errors import PermanentError
from shared.domain.ids import IDENTITY_TYPE, ResourceId, parse_resource_id
from shared.domain.observed import IdentityState

Origin = Literal["created", "adopted"]
CREATED: Origin = "created"  # the identity step created it: Keyless's to delete
ADOPTED: Origin = "adopted"  # it was there, tagged for this workload (handed over, or a run's whose record was lost)
ROLE_ASSIGNMENTS = "/providers/Microsoft.Authorization/roleAssignments/"


@dataclasses.dataclass(frozen=True)
class Made:
    """What a binding's record says Keyless made or adopted for it ("" where nothing is recorded)."""

    identity_id: str = ""
    principal_id: str = ""
    origin: str = ""  # CREATED, ADOPTED, or "" for a record written before the marker existed
    role_assignment_id: str = ""

    @classmethod
    def from_record(cls, identity: dict[str, Any], role_assignment_id: str | None) -> Made:
        principal = str(identity.get("principalId") or "")
        if principal == planner.PLANNED:
            principal = ""
        return cls(
            identity_id=str(identity.get("resourceId") or "") if principal else "",
            principal_id=principal,
            origin=str(identity.get("origin") or ""),
            role_assignment_id=role_assignment_id or "",
        )

    def identity_resource(self) -> ResourceId | None:
        """Where the recorded identity lives; None when none is recorded (or the record is not an id)."""
        if not self.identity_id:
            return None
        try:
            return parse_resource_id(self.identity_id, IDENTITY_TYPE, "identity.resourceId")
        except PermanentError:
            return None


def recorded_identity(previous: dict[str, Any], current: dict[str, Any], created: bool) -> dict[str, Any]:
    """The identity a run reports, as the record keeps it: with its origin, which the run that first
    used it knows (its identity step `created` it, or found it in place) and later runs keep. An
    identity of the same principal recorded before the marker stays without one."""
    kept = {k: v for k, v in current.items() if k != "origin"}
    same = str(previous.get("principalId") or "").lower() == str(current.get("principalId") or "").lower()
    if not same:
        kept["origin"] = CREATED if created else ADOPTED
    elif previous.get("origin"):
        kept["origin"] = previous["origin"]
    return kept


@dataclasses.dataclass(frozen=True)
class IdentityVerdict:
    """What offboarding may do about the binding's identity and what hangs on it."""

    principal_id: str | None  # whose role assignment of the binding is Keyless's to remove
    credentials: bool  # Keyless's own credentials on the identity are its to remove
    keep_reason: str | None  # why the identity itself stays; None: Keyless's to delete


def judge_identity(observed: IdentityState | None, made: Made, desired_tags: dict[str, str]) -> IdentityVerdict:
    """The recorded principal decides; tags only when nothing is recorded.

    - recorded, and the identity found has that principal: Keyless's. It removes its credentials and
      deletes the identity if it created it (or the record predates the marker: Keyless used only
      identities it made or was handed, and a handed-over one was promised deletion); one handed
      over stays unless its tags still hand it over.
    - recorded, but the identity found has another principal (replaced under the same name): not
      Keyless's; the role assignment of the recorded principal still goes.
    - nothing recorded: the tags, as before (planner.identity_not_ours)."""
    if made.principal_id:
        if observed is None:
            return IdentityVerdict(made.principal_id, False, None)
        if observed.principal_id.lower() != made.principal_id.lower():
            reason = (
                f"left in place: identity {observed.name} is not the one Keyless recorded for this binding "
                f"(principal {made.principal_id}); it was replaced"
            )
            return IdentityVerdict(made.principal_id, False, reason)
        if made.origin == ADOPTED:
            not_handed = planner.identity_not_ours(observed, desired_tags)
            keep = (
                None
                if not_handed is None
                else f"left in place: handed over to Keyless, not created by it ({not_handed})"
            )
            return IdentityVerdict(made.principal_id, True, keep)
        return IdentityVerdict(made.principal_id, True, None)
    if observed is None:
        return IdentityVerdict(None, False, None)
    foreign = planner.identity_not_ours(observed, desired_tags)
    if foreign is not None:
        return IdentityVerdict(None, False, f"left in place: {foreign}")
    return IdentityVerdict(observed.principal_id, True, None)


def role_assignments_to_remove(made: Made, scope: str, role_guid: str, principal_id: str | None) -> list[str]:
    """Names of the binding's role assignments at the account scope that Keyless made: the one its
    name scheme gives the principal, and the one its record holds (an equal assignment found and
    adopted under another name)."""
    names: list[str] = []
    if principal_id:
        names.append(naming.role_assignment_name(scope, role_guid, principal_id))
    prefix = scope.rstrip("/").lower() + ROLE_ASSIGNMENTS.lower()
    recorded = made.role_assignment_id
    if recorded.lower().startswith(prefix) and "/" not in recorded[len(prefix) :]:
        name = recorded[len(prefix) :]
        if name and name.lower() not in {n.lower() for n in names}:
            names.append(name)
    return names
