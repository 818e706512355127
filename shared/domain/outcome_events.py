"""Outcome events: what Keyless tells other systems when a binding settles. Pure.

Why: a team that asked for an onboarding (or whose cluster tags did) wants to know when it is
ready, verified, stuck or gone, without polling the API; a platform team wants one feed for all.
Keyless publishes one event per *change* of a binding's settled status to an Event Grid topic
(KEYLESS_OUTCOME_TOPIC_ENDPOINT), in the CloudEvents 1.0 schema by default. A run that leaves the
status as it was (the drift sweep over a healthy binding) publishes nothing.

The event id is derived from the binding, the status and the record's update time, so a
re-publish after a crash carries the same id (subscribers de-duplicate on it). The data holds
ids and names only, as the ledger does: never a key, token or secret value.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from shared.domain.records import BindingRecord

ANNOUNCED = ("ready", "verified", "not-ready", "failed", "refused", "revoked", "removed")
EVENT_TYPES = {
    "refused": "Keyless.Onboarding.Refused",  # the one door said no before anything was made
    "revoked": "Keyless.Onboarding.Revoked",  # a grant or consent was withdrawn: offboarded at offboardAt
    "ready": "Keyless.Onboarding.Ready",
    "verified": "Keyless.Onboarding.Verified",
    "not-ready": "Keyless.Onboarding.NotReady",
    "failed": "Keyless.Onboarding.Failed",
    "removed": "Keyless.Onboarding.Removed",
}
SOURCE = "/keyless/onboardings"
ACCOUNT_SOURCE = "/keyless/accounts"
KEYS_DISABLED = "Keyless.Account.LocalAuthDisabled"
DATA_VERSION = "1.0"


@dataclasses.dataclass(frozen=True)
class OutcomeEvent:
    id: str
    type: str
    source: str
    subject: str
    time: str
    data: dict[str, Any]


def outcome_event(record: BindingRecord) -> OutcomeEvent | None:
    """The event to publish for the record's status, or None when there is nothing new to say."""
    status = record.status
    if status not in ANNOUNCED or status == record.announced_status:
        return None
    identity = {k: record.identity[k] for k in ("clientId", "principalId", "resourceId") if record.identity.get(k)}
    data: dict[str, Any] = {
        "id": record.key,
        "status": status,
        "previousStatus": record.announced_status or None,
        "reason": record.reason,
        "cluster": record.cluster,
        "namespace": record.namespace,
        "serviceAccount": record.service_account,
        "openAIAccount": record.account,
        "roleDefinitionId": record.role_definition_id,
        "workloads": list(record.workloads or ()),
        "identity": identity,
        "verification": (record.verification or {}).get("status"),
        "source": record.source,
        "updatedAt": record.updated_at,
        "links": {
            "onboarding": f"/api/onboardings/{record.key}",
            "verification": f"/api/onboardings/{record.key}/verification",
        },
    }
    if status == "revoked":
        data["offboardAt"] = record.offboard_at
    return OutcomeEvent(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"keyless:{record.key}:{status}:{record.updated_at}")),
        type=EVENT_TYPES[status],
        source=SOURCE,
        subject=f"{record.cluster}/namespaces/{record.namespace}/serviceAccounts/{record.service_account}",
        time=record.updated_at,
        data=data,
    )


def keys_disabled_event(account_id: str, bindings: list[str], time: str) -> OutcomeEvent:
    """The account's keys were switched off (disableLocalAuth=true): anything still using a key
    stops working, so this is announced. It happens once per account (Keyless never turns keys
    back on), hence an id from the account alone."""
    return OutcomeEvent(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"keyless:{account_id.lower()}:local-auth-disabled")),
        type=KEYS_DISABLED,
        source=ACCOUNT_SOURCE,
        subject=account_id,
        time=time,
        data={"openAIAccount": account_id, "disableLocalAuth": True, "verifiedOnboardings": sorted(bindings)},
    )
