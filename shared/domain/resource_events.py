"""ARM system events (Event Grid or CloudEvents schema) -> what changed, or why we ignore it.

Events carry no resource properties, arrive at least once, unordered and duplicated, so
they only say *which* cluster or account to look at again; the worker re-reads ARM.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from shared.domain.errors import PermanentError
from shared.domain.ids import ACCOUNT_TYPE, CLUSTER_TYPE, IDENTITY_TYPE, ResourceId, parse_resource_id

WRITE = "Microsoft.Resources.ResourceWriteSuccess"
DELETE = "Microsoft.Resources.ResourceDeleteSuccess"
Change = Literal["write", "delete"]
HANDLED_TYPES: dict[str, Change] = {WRITE: "write", DELETE: "delete"}
Kind = Literal["cluster", "account", "deployment", "identity", "role-assignment"]
"""`identity`: a user-assigned identity or one of its federated credentials was deleted (`resource` is
the identity); `role-assignment`: a role assignment at an account was deleted (`resource` is the
account, `child` the assignment's id). Only deletes of these two: their writes are mostly ours."""


class MalformedEvent(ValueError):
    """The event is not an ARM resource event we can read; `reason` names the field."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class ResourceEvent:
    id: str
    change: Change
    kind: Kind
    resource: ResourceId  # the cluster, the account (also for deployment events), or the identity
    deployment: str | None = None
    child: str | None = None  # a deleted role assignment's full id


def _str(value: Any, field: str, limit: int = 2048) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise MalformedEvent(f"{field}: missing or not a string")
    return value


TAGS_OPERATIONS = ("Microsoft.Resources/tags/write", "Microsoft.Resources/tags/delete")
"""The Tags API's operations. Event Grid's documentation says a resource event's subject is "the resource ID
of the resource that is the target of the operation" and gives no tags example; the Tags API's target is
`{scope}/providers/Microsoft.Resources/tags/default` (Tags - Create Or Update At Scope, Delete At Scope).
Both shapes are read: that id, or the resource's own id with a tags operation name. Where an event is
missed, the sweep re-authorises every binding anyway (shared.domain.sweep_plan.grant_suspicion).
ref: https://learn.microsoft.com/azure/event-grid/event-schema-subscriptions"""


def _tags_of(parts: list[str], operation: str | None) -> bool:
    """Is this the Tags API's operation on a resource (by the id, or by the operation's name)?"""
    if len(parts) >= 4 and [p.lower() for p in parts[-4:-1]] == ["providers", "microsoft.resources", "tags"]:
        return True
    return operation is not None and operation.lower() in {o.lower() for o in TAGS_OPERATIONS}


def parse_event(event: Any) -> ResourceEvent | None:
    """A ResourceEvent for cluster/account/deployment writes and deletes, None for anything else.

    Accepts the Event Grid schema (eventType, subject) and CloudEvents 1.0 (type, subject);
    the resource comes from data.resourceUri (falling back to subject). Raises MalformedEvent.
    """
    if not isinstance(event, dict):
        raise MalformedEvent("event: not a JSON object")
    event_id = _str(event.get("id"), "id", 256)
    event_type = event.get("eventType", event.get("type"))
    event_type = _str(event_type, "eventType")
    change = HANDLED_TYPES.get(event_type)
    if change is None:
        return None
    data = event.get("data")
    if not isinstance(data, dict):
        raise MalformedEvent("data: missing or not an object")
    uri = data.get("resourceUri") if data.get("resourceUri") is not None else event.get("subject")
    uri = _str(uri, "data.resourceUri")
    operation = data.get("operationName")
    if operation is not None and not isinstance(operation, str):
        raise MalformedEvent("data.operationName: not a string")
    parts = uri.strip("/").split("/")
    if _tags_of(parts, operation):
        # The Tags API (`az tag update|delete --resource-id`): the operation's target is the resource's
        # tags, `<resource>/providers/Microsoft.Resources/tags/default`. Either change means the same:
        # the resource's tags changed (a consent or a tag binding may be withdrawn), never its deletion.
        parts, change = parts[:-4] if _tags_of(parts, None) else parts, "write"
    if len(parts) < 8 or parts[0].lower() != "subscriptions" or parts[4].lower() != "providers":
        return None  # subscription/resource-group level events are not ours
    full_type = f"{parts[5]}/{parts[6]}".lower()
    top = "/" + "/".join(parts[:8])
    child = parts[8:]
    try:
        if full_type == CLUSTER_TYPE.lower() and not child:
            return ResourceEvent(event_id, change, "cluster", parse_resource_id(top, CLUSTER_TYPE, "data.resourceUri"))
        if full_type == ACCOUNT_TYPE.lower():
            account = parse_resource_id(top, ACCOUNT_TYPE, "data.resourceUri")
            if not child:
                return ResourceEvent(event_id, change, "account", account)
            if len(child) == 2 and child[0].lower() == "deployments":
                return ResourceEvent(event_id, change, "deployment", account, deployment=child[1])
            if (
                change == "delete"
                and len(child) == 4
                and [c.lower() for c in child[:3]] == ["providers", "microsoft.authorization", "roleassignments"]
            ):
                ra = f"{account}/providers/Microsoft.Authorization/roleAssignments/{child[3]}"
                return ResourceEvent(event_id, change, "role-assignment", account, child=ra)
        if full_type == IDENTITY_TYPE.lower() and change == "delete":
            if not child or (len(child) == 2 and child[0].lower() == "federatedidentitycredentials"):
                identity = parse_resource_id(top, IDENTITY_TYPE, "data.resourceUri")
                return ResourceEvent(event_id, change, "identity", identity)
    except PermanentError as exc:
        raise MalformedEvent(exc.reason) from None
    return None  # agent pools, identity and role-assignment writes (ours), other types: not ours
