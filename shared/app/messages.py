"""The work queue's messages: small JSON, one work item each.

    {"kind": "binding", "key": "<binding key>"}              reconcile or offboard one binding
    {"kind": "cluster", "id": "<cluster id>", "change": "write"|"delete"}   re-read the cluster
    {"kind": "account", "id": "<account id>", "change": "write"|"delete"}   re-read the account
    {"kind": "sweep", "sweep": "<run id>", "cluster": "<cluster id>"}        one shard of a drift sweep
    {"kind": "identity"|"role-assignment", "id": "<id>", "change": "delete"}  run the bindings that used it

A binding message may carry the versions of the cluster/account state it was made from
(`clusterVersion`, `accountVersion`), so that an instance whose read cache is older reads again.
"""

from __future__ import annotations

import json


class BadMessage(ValueError):
    """A queue message we cannot act on: logged and dropped, never retried."""


def message(kind: str, **fields: str) -> str:
    return json.dumps({"kind": kind, **fields})


def parse_message(body: str) -> dict[str, str]:
    try:
        data = json.loads(body)
    except ValueError:
        raise BadMessage("message body is not JSON") from None
    kinds = ("binding", "cluster", "account", "sweep", "identity", "role-assignment")
    if not isinstance(data, dict) or data.get("kind") not in kinds:
        raise BadMessage("message kind must be binding, cluster, account, sweep, identity or role-assignment")
    if data["kind"] == "sweep":
        for field in ("sweep", "cluster"):
            if not isinstance(data.get(field), str) or not data[field]:
                raise BadMessage(f"message has no {field}")
        return {k: str(v) for k, v in data.items()}
    field = "key" if data["kind"] == "binding" else "id"
    if not isinstance(data.get(field), str) or not data[field]:
        raise BadMessage(f"message has no {field}")
    if data["kind"] != "binding" and data.get("change") not in ("write", "delete"):
        raise BadMessage("message change must be write or delete")
    return {k: str(v) for k, v in data.items()}
