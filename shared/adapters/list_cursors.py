"""Continuation tokens that tell the caller nothing: where a page of GET /api/onboardings ended is kept
in the ledger's table, and the caller gets a random name for it.

Why not a position in the token: a list reads every row of a cluster (or of the ledger) and shows the
caller only those their grant lets them see, and the next page must start after the last row *read*,
visible or not (else a caller who sees one binding in a million would have each request read the
million). A position names that row: its RowKey is `<namespace>|<service account>|<id>`, so a token
naming it, encoded or merely hashed, tells another team's bindings to anyone who pages with
pageSize=1 (issue 19 §4). Encrypting the position needs a key, and Keyless has none to keep; a
position moved to the caller's last visible row would need the next request to read again every
hidden row after it. So the position stays here, and the token is only a name for it:

    PartitionKey "paging", RowKey "<until, 12 digits>|<sha256 of the secret>"
    owner     the caller's object id: another caller's token is not valid for them
    position  the ledger's own position (shared.adapters.ledger_queries), never sent out

and the token is `<until>.<secret>` (`until`: when it runs out, epoch seconds; `secret`: 192 random
bits). The token carries no name, hash or count of any row; a token not found, run out, or another
caller's is refused with the same ValueError. A token may be used again (a client retrying a page)
until it runs out, an hour after it was made. The row holds a hash of the secret, so whoever reads
the table cannot use the tokens in it; its RowKey starts with when it runs out, so each new token
deletes up to 100 that ran out with one range read and one transaction: the partition holds about
an hour of tokens.

What a caller can still tell: that a request read as many rows as it may (an empty page with a
token), so how many requests a walk through the whole list takes tells the ledger's size to within
KEYLESS_LIST_SCAN_ROWS rows. Not which rows, whose, or where.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
import secrets
import time
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

PARTITION = "paging"
LIFETIME_SECONDS = 3600
_PURGE = 100  # tokens that ran out deleted at a time (one transaction)
_TOKEN = re.compile(r"([0-9]{10,12})\.([A-Za-z0-9_-]{32})")


def _row(until: int, secret: str) -> str:
    return f"{until:012d}|{hashlib.sha256(secret.encode()).hexdigest()}"


def _invalid() -> ValueError:
    return ValueError("continuation token is not valid")


def save(table: Any, owner: str, position: str, now: float | None = None) -> str:
    """A new token for `position`, usable by `owner` for an hour."""
    now = time.time() if now is None else now
    secret = secrets.token_urlsafe(24)
    until = int(now) + LIFETIME_SECONDS
    table.create_entity(
        {"PartitionKey": PARTITION, "RowKey": _row(until, secret), "owner": owner, "position": position}
    )
    _purge(table, now)
    return f"{until}.{secret}"


def load(table: Any, owner: str, token: str, now: float | None = None) -> str:
    """The position `token` names; ValueError unless it is one of `owner`'s that has not run out."""
    now = time.time() if now is None else now
    match = _TOKEN.fullmatch(token)
    if match is None or int(match[1]) < now:
        raise _invalid()
    try:
        entity = table.get_entity(PARTITION, _row(int(match[1]), match[2]))
    except ResourceNotFoundError:
        raise _invalid() from None
    position = entity.get("position")
    if not hmac.compare_digest(str(entity.get("owner") or ""), owner) or not isinstance(position, str):
        raise _invalid()
    return position


def _purge(table: Any, now: float) -> None:
    """Delete up to 100 tokens that ran out; best effort (a failure, such as another instance deleting
    some of them first, leaves them for the next token)."""
    rows = table.query_entities(
        "PartitionKey eq @pk and RowKey lt @now",
        parameters={"pk": PARTITION, "now": f"{int(now):012d}"},
        select=["RowKey"],
        results_per_page=_PURGE,
    )
    gone = [("delete", {"PartitionKey": PARTITION, "RowKey": e["RowKey"]}) for e in itertools.islice(rows, _PURGE)]
    if not gone:
        return
    try:
        table.submit_transaction(gone)
    except HttpResponseError:  # TableTransactionError included
        pass
