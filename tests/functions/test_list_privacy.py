"""The list API leaks nothing (issue 19 §4): a caller learns of other teams' bindings neither from the
pages nor from the continuation tokens, an id they may not see answers as one that does not exist, and
a request reads a bounded number of rows however few of them the caller may see.

Each attack was run against the code before the fix: the tokens were base64 JSON naming the last row
read (namespace, service account, id), visible or not, and a hidden id answered 403 where an unknown one
answered 404."""

from __future__ import annotations

import base64
import binascii
import json
import math
import urllib.parse
from typing import Any

import pytest
from azure.data.tables import TableClient

from shared.adapters.ledger import Ledger
from tests.conftest import ACCOUNT_ID, CLUSTER_ID
from tests.functions.conftest import OTHER_GROUP, principal_header

STRANGER = principal_header(
    oid="dddddddd-0000-4000-8000-000000000006", groups=("dddddddd-0000-4000-8000-000000000004",)
)
OTHER = principal_header(oid="eeeeeeee-0000-4000-8000-000000000005", groups=(OTHER_GROUP,))
THEIRS = 12  # the other team's bindings
OURS = 3  # the team's (the default principal's)


def onboard(host: Any, namespace: str, service_account: str, principal: str | None = None) -> str:
    body = {
        "cluster": CLUSTER_ID,
        "namespace": namespace,
        "serviceAccount": service_account,
        "openAIAccount": ACCOUNT_ID,
    }
    kw = {} if principal is None else {"principal": principal}
    status, answer, _ = host.http("onboardings_create", "POST", "/", body, **kw)
    assert status == 202, answer
    return answer["id"]


@pytest.fixture
def bindings(host: Any) -> dict[str, list[str]]:
    """The other team's bindings (namespace other-team, service accounts hidden-sa-N), and the team's."""
    theirs = [onboard(host, "other-team", f"hidden-sa-{n}", OTHER) for n in range(THEIRS)]
    ours = [onboard(host, f"ns-{n}", "ai-service") for n in range(OURS)]
    return {"theirs": theirs, "ours": ours}


def readings(token: str) -> list[str]:
    """The token as it is, and decoded every way a caller might: URL-unquoted, base64 (either alphabet,
    padded or not), the JSON inside."""
    out = [token, urllib.parse.unquote(token)]
    for text in list(out):
        padded = text + "=" * (-len(text) % 4)
        for decode in (base64.urlsafe_b64decode, base64.b64decode):
            try:
                raw = decode(padded.encode())
            except (binascii.Error, ValueError):
                continue
            out.append(raw.decode("latin-1"))
            try:
                out.append(json.dumps(json.loads(raw)))
            except ValueError:
                pass
    return out


def page_through(host: Any, principal: str | None, page_size: int, **filters: str) -> list[dict[str, Any]]:
    """Every page of the list, following the tokens (at most 200 pages)."""
    pages: list[dict[str, Any]] = []
    token = None
    kw = {} if principal is None else {"principal": principal}
    for _ in range(200):
        params = {"pageSize": str(page_size), **filters} | ({"continuationToken": token} if token else {})
        status, page, _ = host.http("onboardings_list", "GET", "/", params=params, **kw)
        assert status == 200, page
        pages.append(page)
        token = page.get("continuationToken")
        if not token:
            return pages
    raise AssertionError("paging does not end")


def secrets_of(keys: list[str]) -> list[str]:
    """What a caller must not learn of these bindings: namespace, service accounts, ids."""
    return ["other-team", "hidden-sa-", *keys]


def assert_reveals_nothing(pages: list[dict[str, Any]], hidden: list[str]) -> None:
    for page in pages:
        texts = [json.dumps(page["value"])]
        if page.get("continuationToken"):
            texts += readings(page["continuationToken"])
        for text in texts:
            for secret in hidden:
                assert secret not in text, f"{secret!r} leaked in {text[:300]!r}"


def test_a_stranger_paging_one_at_a_time_learns_nothing_of_other_teams(host, bindings):
    pages = page_through(host, STRANGER, 1)
    assert all(page["value"] == [] for page in pages)
    assert_reveals_nothing(pages, secrets_of(bindings["theirs"] + bindings["ours"]))


def test_a_team_paging_through_its_own_learns_nothing_of_other_teams(host, bindings):
    for size in (1, 2, 200):
        pages = page_through(host, None, size)
        listed = [r["id"] for page in pages for r in page["value"]]
        assert sorted(listed) == sorted(bindings["ours"]), size  # each once
        assert all(page["value"] for page in pages[:-1]), f"an empty page before the last ({size})"
        assert all(len(page["value"]) <= size for page in pages)
        assert_reveals_nothing(pages, secrets_of(bindings["theirs"]))
    theirs = page_through(host, OTHER, 5)
    assert sorted(r["id"] for page in theirs for r in page["value"]) == sorted(bindings["theirs"])
    assert_reveals_nothing(theirs, [f"ns-{n}" for n in range(OURS)] + bindings["ours"])


def test_a_token_is_the_callers_own(host, bindings):
    """Another caller's token, one made up, one changed: all the same 400, naming the parameter."""
    first = page_through(host, OTHER, 5)[0]
    token = first["continuationToken"]
    answers = []
    for principal, bad in [
        (STRANGER, token),
        (principal_header(), token),
        (OTHER, token[:-2] + ("AA" if token[-2:] != "AA" else "BB")),
        (OTHER, base64.urlsafe_b64encode(b'{"v": 2, "m": "s", "pk": "c-0", "rk": "x"}').decode()),
    ]:
        status, err, _ = host.http(
            "onboardings_list", "GET", "/", params={"continuationToken": bad}, principal=principal
        )
        answers.append((status, err))
    assert all(a == (400, answers[0][1]) for a in answers), answers
    assert answers[0][1]["error"]["field"] == "continuationToken"
    status, again, _ = host.http("onboardings_list", "GET", "/", params={"continuationToken": token}, principal=OTHER)
    assert status == 200 and again["value"], "the owner may use it (more than once)"


@pytest.mark.parametrize("principal", [STRANGER, None], ids=["no-rule", "another-rule"])
def test_a_hidden_id_answers_as_an_unknown_one(host, bindings, principal):
    hidden, unknown = bindings["theirs"][0], "0" * 32
    kw = {"principal": principal} if principal is not None else {}
    for name, method in [
        ("onboardings_get", "GET"),
        ("onboardings_verification", "GET"),
        ("onboardings_delete", "DELETE"),
    ]:
        answers = []
        for key in (hidden, unknown):
            status, body, resp = host.http(name, method, "/", route_params={"id": key}, **kw)
            answers.append((status, body, dict(resp.headers)))
        assert answers[0] == answers[1], name
        assert answers[0][0] == 404
    status, record, _ = host.http("onboardings_get", "GET", "/", route_params={"id": hidden}, principal=OTHER)
    assert status == 200 and record["desired"] == "present", "the DELETE took nothing away"


def test_a_request_reads_a_bounded_number_of_rows(host, bindings, monkeypatch, app_env, storage):
    """However few rows the caller may see, a list request reads at most KEYLESS_LIST_SCAN_ROWS of
    them: the stranger's walk through every row takes a request per that many; the team's own list is
    still whole."""
    from tests.functions.test_attacks import reconfigure

    reconfigure(monkeypatch, KEYLESS_LIST_SCAN_ROWS="4")
    rows = THEIRS + OURS
    pages = page_through(host, STRANGER, 200)
    assert len(pages) >= math.ceil(rows / 4), [len(p["value"]) for p in pages]
    assert all(page["value"] == [] for page in pages)
    assert_reveals_nothing(pages, secrets_of(bindings["theirs"] + bindings["ours"]))
    ours = page_through(host, None, 200)
    assert sorted(r["id"] for page in ours for r in page["value"]) == sorted(bindings["ours"])

    # The rows asked of Table storage per request, as its requests say ($top), for the ledger's list.
    seen: list[str] = []
    client = TableClient.from_connection_string(
        storage, app_env["KEYLESS_TABLE_NAME"], raw_request_hook=lambda r: seen.append(r.http_request.url)
    )
    page, token = Ledger(client).query(page_size=200, visible=lambda record: False, scan_limit=4)
    queries = [
        urllib.parse.parse_qs(urllib.parse.urlsplit(u).query) for u in seen if "$filter" in urllib.parse.unquote(u)
    ]
    asked = sum(int(q["$top"][0]) for q in queries if "$top" in q)
    assert page == [] and token and queries and asked <= 4, (asked, len(queries))


def test_a_token_runs_out_and_its_row_is_deleted(app_env, storage):
    """A token is refused an hour after it was made, and a token made later deletes its row (the
    partition holds about an hour of tokens, however many lists were read)."""
    from shared.adapters import list_cursors

    client = TableClient.from_connection_string(storage, app_env["KEYLESS_TABLE_NAME"])
    Ledger(client).ping()  # the table
    owner, now = "aaaaaaaa-0000-4000-8000-000000000001", 1_900_000_000.0
    old = [list_cursors.save(client, owner, f"position {n}", now=now) for n in range(3)]
    assert list_cursors.load(client, owner, old[1], now=now + 3599) == "position 1"
    with pytest.raises(ValueError, match="continuation token is not valid"):
        list_cursors.load(client, owner, old[1], now=now + 3601)
    with pytest.raises(ValueError, match="continuation token is not valid"):
        list_cursors.load(client, "someone else", old[1], now=now)
    fresh = list_cursors.save(client, owner, "position 3", now=now + 3601)
    rows = list(client.query_entities("PartitionKey eq 'paging'"))
    assert len(rows) == 1 and rows[0]["position"] == "position 3"
    assert list_cursors.load(client, owner, fresh, now=now + 3601) == "position 3"
    assert not any(fresh.split(".")[1] in str(dict(row)) for row in rows), "the row holds no usable token"
