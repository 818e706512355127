"""The ledger's table layout (shared.adapters.ledger) against Azurite: records in their cluster's
partition, a pointer per key, an account index; what each list costs in table requests; the purge
of removed records; and the migration from the old one-partition layout, interrupted, crashed and
run by several instances at once.

Requests are counted by the storage client's own `raw_request_hook` (every attempt, before it is
sent), the same seam production counts with (shared.adapters.counting). A crash is that hook raising
before a request leaves; a slow storage is that hook holding a request; an empty page with a
continuation token (Azure Tables answers so on filtered scans) comes from a server in front of
Azurite. Nothing of ours is faked.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import datetime as dt
import json
import math
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from azure.data.tables import TableClient
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from shared.adapters import counting
from shared.adapters.ledger import Ledger
from shared.domain.binding import Binding
from shared.domain.errors import LedgerConflict
from shared.domain.naming import short_hash
from shared.domain.records import BindingRecord
from shared.domain.settings import Settings, SettingsError
from tests.azurite import ACCOUNT, DEV_KEY, Azurite, connection_string_from_env

SUB = "11111111-2222-3333-4444-555555555555"
DAY = 86400.0
JSON_FIELDS = {f.name for f in dataclasses.fields(BindingRecord) if f.default_factory in (list, dict)}  # type: ignore[comparison-overlap]


def cluster_id(n: int | str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/rg-aks/providers/Microsoft.ContainerService/managedClusters/aks{n}"


def account_id(n: int | str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/rg-ai/providers/Microsoft.CognitiveServices/accounts/oai{n}"


def cluster_partition(cluster: str) -> str:
    return "c-" + short_hash(cluster.lower(), length=32)


def account_partition(account: str) -> str:
    return "a-" + short_hash(account.lower(), length=32)


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record(cluster: int | str = 0, namespace: str = "team-a", sa: str = "chat-api", oai: int | str = 0, **fields: Any):
    r = BindingRecord.for_binding(
        Binding.create(cluster_id(cluster), namespace, sa, account_id(oai)), requested_by="tester", source="api"
    )
    for name, value in fields.items():
        setattr(r, name, value)
    return r


def rich(n: int, cluster: int, namespace: str, account: int, **fields: Any) -> BindingRecord:
    """A record with every kind of field filled: lists, dicts, None, numbers."""
    values: dict[str, Any] = {
        "workloads": [f"deploy-{n}", "worker"],
        "status": "verified",
        "reason": f"all checks pass ({n})",
        "steps": [{"name": "identity", "outcome": "created"}, {"name": "role", "outcome": "unchanged", "n": n}],
        "identity": {"clientId": str(uuid.UUID(int=n)), "principalId": str(uuid.UUID(int=n + 1))},
        "credential": {"name": f"cred-{n}"},
        "role_assignment_id": None if n % 3 else f"/subscriptions/{SUB}/providers/roleAssignments/{n}",
        "kube_objects": [f"serviceaccount/{namespace}/sa{n}", f"configmap/{namespace}/oai"],
        "attempts": n,
        "last_requests": {"arm": n, "kube": 2 * n},
        "verification": {"status": "pass", "checks": [{"name": "pods", "status": "pass"}]},
        "principal": {"objectId": str(uuid.UUID(int=7 * n)), "groups": ["g1"]},
        "quota_key": f"rule-{n % 2}",
        "not_yet_streak": n % 4,
    }
    values.update(fields)
    return record(cluster, namespace, f"sa{n}", account, **values)


def same(record: BindingRecord) -> dict[str, Any]:
    fields = dataclasses.asdict(record)
    fields.pop("etag")
    return fields


def legacy_entity(r: BindingRecord) -> dict[str, Any]:
    """A record as the old layout wrote it (shared.adapters.ledger's `_to_entity` before this layout)."""
    entity: dict[str, Any] = {"PartitionKey": "binding", "RowKey": r.key}
    for field, value in r.__dict__.items():
        if field in ("key", "etag"):
            continue
        entity[field] = json.dumps(value) if field in JSON_FIELDS else value
    entity["cluster_key"] = r.cluster.lower()
    entity["account_key"] = r.account.lower()
    return entity


def write_legacy(raw: TableClient, records: list[BindingRecord], extra: list[dict[str, Any]] = ()) -> None:
    """An old-layout table: its records in one partition, and the quota and lease rows it also held."""
    raw.create_table()
    entities = [legacy_entity(r) for r in records]
    for i in range(0, len(entities), 100):
        raw.submit_transaction([("upsert", e) for e in entities[i : i + 100]])
    for e in extra:
        raw.upsert_entity(e)


# ------------------------------------------------------------------------------------------ fixtures


class Crash(Exception):
    """The process died before this request left (raised by the request hook, so never retried)."""


class Tap:
    """A storage client's `raw_request_hook`: records every attempt (method, unquoted URL); can crash
    the caller at its n-th request, or hold one request until told to go on."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.crash_after: int | None = None
        self.held = threading.Event()
        self._go = threading.Event()
        self._hold: Callable[[str, str], bool] | None = None
        self._lock = threading.Lock()

    def __call__(self, request: Any) -> None:
        http = request.http_request
        method, url = http.method, urllib.parse.unquote(http.url)
        with self._lock:
            if self.crash_after is not None and len(self.requests) >= self.crash_after:
                raise Crash(f"crashed before request {len(self.requests) + 1}: {method} {url}")
            self.requests.append((method, url))
            hold = self._hold is not None and self._hold(method, url)
            if hold:
                self._hold = None
        if hold:
            self.held.set()
            assert self._go.wait(60), "the held request was never let go"

    def hold(self, when: Callable[[str, str], bool]) -> None:
        """Hold the first request for which `when(method, url)` is true (in whichever thread sends it)."""
        self.held.clear()
        self._go.clear()
        self._hold = when

    def go(self) -> None:
        self._go.set()

    def count(self) -> int:
        return len(self.requests)


@pytest.fixture(scope="module")
def storage() -> Iterator[Azurite | str]:
    given = connection_string_from_env()
    if given:
        yield given
        return
    azurite = Azurite().start()
    yield azurite
    azurite.stop()


def connection(storage: Azurite | str) -> str:
    return storage if isinstance(storage, str) else storage.connection_string


class Table:
    """One fresh table: ledgers over it (each its own client and tap), and a raw client to look."""

    def __init__(self, storage: Azurite | str) -> None:
        self.conn = connection(storage)
        self.name = "layout" + uuid.uuid4().hex[:16]
        self.raw = TableClient.from_connection_string(self.conn, self.name)

    def ledger(self, tap: Tap | None = None) -> tuple[Ledger, Tap]:
        tap = tap or Tap()
        return Ledger(TableClient.from_connection_string(self.conn, self.name, raw_request_hook=tap)), tap

    def rows(self) -> dict[str, dict[str, Any]]:
        """Every row, by partition and row key."""
        out: dict[str, dict[str, Any]] = collections.defaultdict(dict)
        for e in self.raw.list_entities():
            out[e["PartitionKey"]][e["RowKey"]] = e
        return out

    def assert_layout(self, records: list[BindingRecord], others: int = 0) -> None:
        """The table holds exactly these records in the new layout, each with its pointer and account
        index row, the marker, and `others` rows of other partitions (quotas, leases)."""
        rows = self.rows()
        assert "binding" not in rows, f"old rows left: {sorted(rows['binding'])}"
        assert rows["meta"]["layout"]["version"] == 2
        expected_records = {
            (cluster_partition(r.cluster), f"{r.namespace}|{r.service_account}|{r.key}"): r for r in records
        }
        found = {(pk, rk) for pk, group in rows.items() if pk.startswith("c-") for rk in group}
        assert found == set(expected_records)
        pointers = {key: (e["pk"], e["rk"]) for key, e in rows.get("id", {}).items()}
        assert pointers == {r.key: where for where, r in expected_records.items()}
        index = {
            (pk, rk): (e["pk"], e["rk"]) for pk, group in rows.items() if pk.startswith("a-") for rk, e in group.items()
        }
        assert index == {
            (account_partition(r.account), f"{where[0]}|{r.key}"): where
            for where, r in expected_records.items()
            if r.account
        }
        kinds = ("c-", "a-", "id", "meta")
        assert sum(len(g) for pk, g in rows.items() if not pk.startswith(kinds)) == others


@pytest.fixture
def table(storage: Azurite | str) -> Iterator[Table]:
    made = Table(storage)
    yield made
    made.raw.delete_table()


def pages(ledger: Ledger, page_size: int, **filters: Any) -> list[tuple[list[BindingRecord], str | None]]:
    out = []
    token = None
    while True:
        page, token = ledger.query(page_size=page_size, continuation=token, **filters)
        out.append((page, token))
        if not token:
            return out
        assert isinstance(token, str)
        assert len(out) < 1000, "paging does not end"


def keys(records: list[BindingRecord]) -> list[str]:
    return [r.key for r in records]


# ------------------------------------------------------------------------------- records in the layout


def test_create_get_save_in_the_new_layout(table):
    ledger, tap = table.ledger()
    r = rich(1, cluster=0, namespace="team-a", account=0)
    assert ledger.create(r) and r.etag
    partition, row = cluster_partition(r.cluster), f"team-a|sa1|{r.key}"
    stored = table.raw.get_entity(partition, row)
    assert stored["namespace"] == "team-a" and stored["account_key"] == r.account.lower()
    assert (table.raw.get_entity("id", r.key)["pk"], table.raw.get_entity("id", r.key)["rk"]) == (partition, row)
    index = table.raw.get_entity(account_partition(r.account), f"{partition}|{r.key}")
    assert (index["pk"], index["rk"]) == (partition, row)
    assert "binding" not in table.rows()

    before = tap.count()
    got = ledger.get(r.key)
    (pointer_read, record_read) = tap.requests[before:]  # two point reads: the pointer, the record
    assert pointer_read[0] == record_read[0] == "GET"
    assert f"(PartitionKey='id',RowKey='{r.key}')" in pointer_read[1]
    assert f"(PartitionKey='{partition}',RowKey='{row}')" in record_read[1]
    assert got is not None and same(got) == same(r) and got.etag == r.etag

    again = rich(1, cluster=0, namespace="team-a", account=0, status="pending")
    before = tap.count()
    assert not ledger.create(again)
    assert tap.count() - before == 2  # the pointer is there: read it, try the record
    assert same(ledger.get(r.key)) == same(r)

    got.status, got.reason = "not-ready", "principal not replicated yet"
    ledger.save(got)
    assert got.etag != r.etag
    with pytest.raises(LedgerConflict):
        ledger.save(r)  # read before the save above
    assert ledger.get(r.key).status == "not-ready"

    never = record(0, "team-a", "never-created", 0)
    never.etag = got.etag
    with pytest.raises(LedgerConflict):
        ledger.save(never)
    assert ledger.get(never.key) is None

    upserted = record(1, "team-b", "upserted", 1)  # no ETag: create or replace, findable at once
    ledger.save(upserted)
    assert same(ledger.get(upserted.key)) == same(upserted)
    assert [r.key for r in ledger.all(account=account_id(1))] == [upserted.key]

    before = tap.count()
    assert ledger.get("0" * 32) is None
    assert tap.count() - before == 1


def test_create_many_writes_the_layout_in_transactions_and_leaves_existing_records(table):
    ledger, tap = table.ledger()
    first = rich(0, cluster=0, namespace="team-a", account=0, status="ready")
    assert ledger.create(first)
    records = [first] + [rich(n, cluster=n % 3, namespace=f"team-{n % 2}", account=n % 2) for n in range(1, 250)]
    assert ledger.create_many([dataclasses.replace(r, etag=None) for r in records]) == 249, "the existing one stays"
    table.assert_layout(records)
    assert same(ledger.get(first.key)) == same(first)
    assert sorted(keys(list(ledger.all(cluster=cluster_id(1))))) == sorted(
        r.key for r in records if r.cluster == cluster_id(1)
    )


def test_a_create_cut_off_anywhere_leaves_no_record_get_cannot_find(table):
    ledger, _ = table.ledger()
    ledger.ping()
    for at in range(6):  # read the pointer, index row, pointer, record, read the pointer again
        r = record(0, "team", f"sa{at}", 0)
        dying, tap = table.ledger()
        tap.crash_after = at
        try:
            assert dying.create(r)
        except Crash:
            pass
        rows = table.rows()
        for _, group in ((pk, g) for pk, g in rows.items() if pk.startswith("c-")):
            for row in group:  # every record there is found, through its pointer
                assert ledger.get(row.rsplit("|", 1)[1]) is not None
        stored = ledger.get(r.key)
        assert stored is None or same(stored) == same(r)
        if stored is None:  # a pointer without its record: "no record"; asking again makes it
            assert ledger.create(r) and same(ledger.get(r.key)) == same(r)
        on_account, on_cluster = list(ledger.all(account=account_id(0))), list(ledger.all(cluster=cluster_id(0)))
        assert sorted(keys(on_account)) == sorted(keys(on_cluster))  # no record missing from its account's list
    assert len(list(ledger.all())) == 6


def test_lists_by_cluster_namespace_account_and_live(table):
    ledger, _ = table.ledger()
    records = [
        record(0, "team", "a", 0),
        record(0, "team", "b", 1),
        record(0, "team-a", "a", 0),
        record(0, "teamz", "a", 0, desired="absent", status="removed"),
        record(0, "tea", "a", 1),
        record(1, "team", "a", 0),
        record(1, "team", "c", 0, desired="absent", status="offboarding"),
        record(1, "team-a", "b", 1),
    ]
    for r in records:
        assert ledger.create(r)

    def expect(pick: Callable[[BindingRecord], bool]) -> set[str]:
        return {r.key for r in records if pick(r)}

    c0, c1, a0, a1 = cluster_id(0), cluster_id(1), account_id(0), account_id(1)
    cases: list[tuple[dict[str, Any], set[str]]] = [
        ({"cluster": c0}, expect(lambda r: r.cluster == c0)),
        ({"cluster": c0.upper()}, expect(lambda r: r.cluster == c0)),
        ({"cluster": c0, "namespace": "team"}, expect(lambda r: r.cluster == c0 and r.namespace == "team")),
        ({"cluster": c0, "namespace": "tea"}, expect(lambda r: r.cluster == c0 and r.namespace == "tea")),
        ({"cluster": c0, "namespace": "team-a"}, expect(lambda r: r.cluster == c0 and r.namespace == "team-a")),
        ({"cluster": c0, "namespace": "team|a"}, set()),  # not a namespace: never another's range
        ({"cluster": c0, "namespace": "te"}, set()),
        ({"cluster": c1, "live_only": True}, expect(lambda r: r.cluster == c1 and r.live)),
        ({"cluster": c0, "account": a1}, expect(lambda r: r.cluster == c0 and r.account == a1)),
        ({"namespace": "team"}, expect(lambda r: r.namespace == "team")),
        ({"account": a0}, expect(lambda r: r.account == a0)),
        ({"account": a0.upper(), "live_only": True}, expect(lambda r: r.account == a0 and r.live)),
        ({"account": a0, "namespace": "team"}, expect(lambda r: r.account == a0 and r.namespace == "team")),
        ({"account": account_id(9)}, set()),
        ({"cluster": cluster_id(9)}, set()),
        ({"live_only": True}, expect(lambda r: r.live)),
        ({}, expect(lambda r: True)),
    ]
    for filters, expected in cases:
        for size in (1, 2, 50):
            listed = [r for page, _ in pages(ledger, size, **filters) for r in page]
            assert sorted(keys(listed)) == sorted(expected), (filters, size)
        assert sorted(keys(list(ledger.all(**filters)))) == sorted(expected), filters
    # a cluster's list is in RowKey order: namespace|service account|key ("team-a|", "teamz|" sort before "team|")
    in_order = [r.key for r in ledger.all(cluster=c0)]
    assert in_order == [r.key for r in sorted(records, key=lambda r: f"{r.namespace}|{r.service_account}|{r.key}")
                        if r.cluster == c0]  # fmt: skip
    assert [r.namespace for r in ledger.all(cluster=c0)] == ["team-a", "teamz", "team", "team", "tea"]
    for r in ledger.all():
        assert same(r) == same(next(x for x in records if x.key == r.key))
    with pytest.raises(TypeError):
        list(ledger.all(colour="blue"))


def test_pages_are_never_empty_while_more_remain_and_tokens_round_trip(table):
    ledger, _ = table.ledger()
    records = [
        record(0, ["team", "team-a", "ops"][n % 3], f"sa{n}", n % 2, desired="absent" if n % 4 == 0 else "present")
        for n in range(23)
    ] + [record(1, "team", f"sa{n}", 2, desired="absent" if n else "present") for n in range(9)]
    for r in records:
        assert ledger.create(r)
    for filters in (
        {"cluster": cluster_id(0)},
        {"cluster": cluster_id(0), "live_only": True},
        {"cluster": cluster_id(0), "namespace": "team"},
        {"live_only": True},
        {},
        {"account": account_id(0)},
    ):
        for size in (1, 4, 7, 200):
            got = pages(ledger, size, **filters)
            listed = [r for page, _ in got for r in page]
            assert len(listed) == len({r.key for r in listed}), (filters, size)
            assert sorted(keys(listed)) == sorted(keys(list(ledger.all(**filters))))
            assert all(0 < len(page) <= size for page, _ in got), (filters, size, [len(p) for p, _ in got])
            assert got[-1][1] is None
    # an account's list with a filter most of its bindings fail: no empty page before the last
    got = pages(ledger, 2, account=account_id(2), live_only=True)
    assert [r.key for page, _ in got for r in page] == [records[23].key]
    assert all(page for page, _ in got[:-1]) and (got[-1][0] or got[-1][1] is None)

    first, token = ledger.query(cluster=cluster_id(0), page_size=5)
    assert len(first) == 5 and token
    same_again, token_again = ledger.query(cluster=cluster_id(0), page_size=5)
    assert keys(same_again) == keys(first) and token_again == token
    rest, _ = ledger.query(cluster=cluster_id(0), page_size=50, continuation=token)
    assert keys(first + rest) == keys(list(ledger.all(cluster=cluster_id(0))))

    scan_token = ledger.query(page_size=3)[1]
    account_token = ledger.query(account=account_id(0), page_size=3)[1]
    forged = base64.urlsafe_b64encode(json.dumps({"v": 2, "m": "s", "pk": "binding", "rk": "x"}).encode()).decode()
    old_style = base64.urlsafe_b64encode(json.dumps({"PartitionKey": "binding", "RowKey": "x"}).encode()).decode()
    for bad, filters in [
        ("not a token!", {}),
        (base64.urlsafe_b64encode(b"[1, 2]").decode(), {}),
        (old_style, {}),
        (forged, {}),
        ("A" * 5000, {}),
        (token, {"cluster": cluster_id(1)}),  # another cluster's list
        (token, {}),
        (scan_token, {"cluster": cluster_id(0)}),
        (account_token, {}),
        (scan_token, {"account": account_id(0)}),
    ]:
        with pytest.raises(ValueError, match="continuation token is not valid"):
            ledger.query(continuation=bad, **filters)


class EmptyFirstPages:
    """A plain-HTTP server in front of Azurite's table endpoint: answers the next `empty` filtered
    queries with no rows and a continuation token, as Azure Tables does on filtered scans; the
    query that follows that token is passed on as it was first asked."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.empty = 0
        self.served_empty = 0
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def _wsgi(self, environ: dict, start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        query = environ.get("QUERY_STRING", "")
        if request.method == "GET" and "$filter" in request.args:
            if request.args.get("NextPartitionKey") == "front":
                kept_args = [p for p in query.split("&") if not p.startswith(("NextPartitionKey=", "NextRowKey="))]
                query = "&".join(kept_args)
            elif self.empty > 0 and "NextPartitionKey" not in request.args:
                self.empty -= 1
                self.served_empty += 1
                headers = {
                    "Content-Type": "application/json;odata=minimalmetadata;streaming=true;charset=utf-8",
                    "x-ms-continuation-NextPartitionKey": "front",
                    "x-ms-continuation-NextRowKey": "front",
                }
                return Response(json.dumps({"value": []}), status=200, headers=headers)(environ, start_response)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        answer = requests.request(
            request.method, self.target + request.path + (f"?{query}" if query else ""), headers=headers,
            data=request.get_data(), timeout=30,
        )  # fmt: skip
        drop = ("content-length", "transfer-encoding", "connection", "content-encoding")
        kept = [(k, v) for k, v in answer.headers.items() if k.lower() not in drop]
        return Response(answer.content, status=answer.status_code, headers=kept)(environ, start_response)

    def __enter__(self) -> EmptyFirstPages:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def test_an_empty_page_with_a_token_from_the_service_is_read_past(storage):
    if isinstance(storage, str):
        pytest.skip("needs the test run's own Azurite (its table endpoint)")
    with EmptyFirstPages(storage.endpoints["table"]) as front:
        endpoint = f"TableEndpoint={front.url}/{ACCOUNT}"
        conn = f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={DEV_KEY};{endpoint}"
        tap = Tap()
        ledger = Ledger(TableClient.from_connection_string(conn, "front" + uuid.uuid4().hex[:12], raw_request_hook=tap))
        records = [record(0, "team", f"sa{n}", n % 2) for n in range(12)]
        for r in records:
            assert ledger.create(r)
        for filters in ({"cluster": cluster_id(0), "live_only": True}, {"live_only": True}, {"account": account_id(1)}):
            front.empty = 1
            before = tap.count()
            page, token = ledger.query(page_size=5, **filters)
            assert front.served_empty and len(page) == 5 and token, filters
            assert tap.count() - before >= 2  # the empty page, then the rows
            front.empty, served = 1, front.served_empty
            everything = list(ledger.all(**filters))
            assert front.served_empty == served + 1 and len(everything) == len({r.key for r in everything})
            assert sorted(keys(everything)) == sorted(
                r.key for r in records if filters.get("account") in (None, r.account)
            )


def test_table_requests_of_gets_and_lists(table):
    """A cluster's list costs requests in its own bindings, whatever the table holds; reading every
    record costs one request per 1,000."""
    big = [record("big", f"ns{n % 5}", f"sa{n}", n % 3) for n in range(50)]
    rest = [
        record(n % 47, f"ns{n % 7}", f"sa{n}", n % 10, desired="absent" if n % 5 == 0 else "present")
        for n in range(1000)
    ]
    write_legacy(table.raw, big + rest)
    migrator, tap = table.ledger()
    migrator.ping()
    migration = tap.count()
    assert migration < len(big + rest) / 5, f"migration of 1,050 records took {migration} requests"

    ledger = Ledger.connect(table.name, connection_string=table.conn)  # production options, counted in the tally
    ledger.ping()

    def cost(run: Callable[[], Any]) -> tuple[Any, int]:
        start = counting.attempts()["table"]["attempts"]
        result = run()
        return result, counting.attempts()["table"]["attempts"] - start

    got, n = cost(lambda: ledger.get(big[7].key))
    assert same(got) == same(big[7]) and n == 2
    (page, token), n = cost(lambda: ledger.query(cluster=cluster_id("big"), page_size=50))
    assert sorted(keys(page)) == sorted(keys(big)) and token is None and n == 1
    listed, n = cost(lambda: pages(ledger, 10, cluster=cluster_id("big")))
    assert sum(len(p) for p, _ in listed) == 50 and n == 5
    listed, n = cost(lambda: pages(ledger, 50, cluster=cluster_id("big"), namespace="ns3"))
    assert {r.namespace for p, _ in listed for r in p} == {"ns3"} and n == 1
    listed, n = cost(lambda: list(ledger.all(cluster=cluster_id("big"), live_only=True)))
    assert len(listed) == 50 and n == 1
    everything, n = cost(lambda: list(ledger.all()))
    assert len(everything) == 1050 and n == 2
    live, n = cost(lambda: list(ledger.all(live_only=True)))
    assert len(live) == 50 + sum(r.live for r in rest) and n <= 2
    on_account, n = cost(lambda: list(ledger.all(account=account_id(4))))
    holders = {r.cluster for r in big + rest if r.account == account_id(4)}
    assert sorted(keys(on_account)) == sorted(r.key for r in big + rest if r.account == account_id(4))
    assert n <= 1 + len(holders), (n, len(holders))  # the index, then one read per cluster partition

    # only the cluster's partition is read for its list
    tapped, tap = table.ledger()
    tapped.ping()
    before = tap.count()
    pages(tapped, 7, cluster=cluster_id("big"), live_only=True)
    for method, url in tap.requests[before:]:
        assert method == "GET" and f"PartitionKey eq '{cluster_partition(cluster_id('big'))}'" in url


# ------------------------------------------------------------------------------------------ retention


def test_purge_removed_deletes_only_old_removed_records_and_their_rows(table):
    now = 1_900_000_000.0
    old, recent = iso(now - 40 * DAY), iso(now - 5 * DAY)
    removed = {"desired": "absent", "status": "removed"}
    doomed = [
        record(0, "team", "a", 0, updated_at=old, **removed),
        record(0, "team", "b", 1, updated_at=old, **removed),
        record(1, "ops", "a", 0, updated_at=iso(now - 30 * DAY - 1), **removed),
        record(2, "ops", "a", 0, updated_at=old, account="", **removed),  # an unresolvable account
    ]
    kept = [
        record(0, "team", "c", 0, updated_at=recent, **removed),
        record(0, "team", "d", 0, updated_at=old, desired="present", status="ready"),
        record(1, "team", "e", 1, updated_at=old, desired="absent", status="offboarding"),
        record(1, "team", "f", 1, updated_at=old, desired="present", status="removed"),
        record(1, "team", "g", 1, updated_at="not a date", **removed),
        record(2, "ops", "b", 1, updated_at=iso(now - 30 * DAY + 60), **removed),
    ]
    ledger, _ = table.ledger()
    for r in doomed + kept:
        assert ledger.create(r)
    assert ledger.claim_quota("rule-1", kept[0].key, 10) == (True, 1)

    assert ledger.purge_removed(30 * DAY, now=now) == len(doomed)
    table.assert_layout(kept, others=1)  # the quota row stays
    for r in doomed:
        assert ledger.get(r.key) is None
    for r in kept:
        assert same(ledger.get(r.key)) == same(r)
    assert sorted(keys(list(ledger.all(account=account_id(0))))) == sorted(keys(kept[:2]))
    assert ledger.purge_removed(30 * DAY, now=now) == 0
    assert ledger.purge_removed(30 * DAY) == 0  # `now` is the present: every record here is dated years later
    assert ledger.purge_removed(math.inf, now=now) == 0
    assert ledger.purge_removed(1 * DAY, now=now) == 2  # the recent ones; the undated one never
    assert ledger.get(kept[4].key) is not None


def test_purge_keeps_a_record_asked_for_again_meanwhile(table):
    now = 1_900_000_000.0
    r = record(0, "team", "a", 0, updated_at=iso(now - 40 * DAY), desired="absent", status="removed")
    purger, tap = table.ledger()
    assert purger.create(r)
    other, _ = table.ledger()
    other.ping()
    tap.hold(lambda method, url: method == "DELETE")  # the record's delete, after the purge read it
    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(purger.purge_removed(30 * DAY, now=now)))
    worker.start()
    assert tap.held.wait(30)
    revived = other.get(r.key)
    revived.desired, revived.status = "present", "pending"
    other.save(revived)
    tap.go()
    worker.join(30)
    assert result == [0]
    assert same(other.get(r.key)) == same(revived)
    table.assert_layout([revived])


def test_a_purge_racing_a_create_of_the_same_key_leaves_the_new_record_findable(table):
    now = 1_900_000_000.0
    r = record(0, "team", "a", 0, updated_at=iso(now - 40 * DAY), desired="absent", status="removed")
    purger, tap = table.ledger()
    assert purger.create(r)
    other, _ = table.ledger()
    other.ping()
    # hold the purge after it deleted the record, before it deletes the pointer
    tap.hold(lambda method, url: method == "DELETE" and "PartitionKey='id'" in url)
    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(purger.purge_removed(30 * DAY, now=now)))
    worker.start()
    assert tap.held.wait(30)
    fresh = record(0, "team", "a", 0)  # asked for again: the same key
    assert fresh.key == r.key and other.create(fresh)
    tap.go()
    worker.join(30)
    assert result == [1]
    assert same(other.get(r.key)) == same(fresh)
    assert keys(list(other.all(account=account_id(0), live_only=True))) == [r.key]
    table.assert_layout([fresh])


def test_removed_retention_days_setting():
    assert Settings.from_env({}).removed_retention_days == 30
    assert Settings.from_env({"KEYLESS_REMOVED_RETENTION_DAYS": "0.5"}).removed_retention_days == 0.5
    for bad in ("0", "-1", "thirty", "nan", "inf"):
        with pytest.raises(SettingsError) as err:
            Settings.from_env({"KEYLESS_REMOVED_RETENTION_DAYS": bad})
        assert err.value.reason.startswith("KEYLESS_REMOVED_RETENTION_DAYS"), bad
    from tests.azurite import ROOT

    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    assert sample["KEYLESS_REMOVED_RETENTION_DAYS"] == "30"


# ------------------------------------------------------------------------------------------ migration


def old_world() -> tuple[list[BindingRecord], list[dict[str, Any]]]:
    """Records of an old-layout ledger (every kind of field; removed ones; one with no account; one
    row carrying a property this code does not know), and the quota and lease rows beside them."""
    records = [rich(n, cluster=n % 3, namespace=["team", "team-a", "ops"][n % 3], account=n % 2) for n in range(1, 13)]
    records[3].desired, records[3].status = "absent", "removed"
    records.append(record(1, "team", "unresolved", 0, account="", status="failed", reason="no such account"))
    extra = [
        {"PartitionKey": "quota-" + short_hash("rule-1", length=40), "RowKey": records[0].key, "quota": "rule-1"},
        {"PartitionKey": "lease", "RowKey": short_hash("binding:x", length=40), "name": "binding:x", "until": 1.0},
    ]
    return records, extra


def assert_readable(ledger: Ledger, records: list[BindingRecord]) -> None:
    for r in records:
        got = ledger.get(r.key)
        assert got is not None and same(got) == same(r), r.key
    assert sorted(keys(list(ledger.all()))) == sorted(keys(records))
    for n in range(3):
        expected = sorted(r.key for r in records if r.cluster == cluster_id(n))
        assert sorted(keys(list(ledger.all(cluster=cluster_id(n))))) == expected
    for n in range(2):
        expected = sorted(r.key for r in records if r.account == account_id(n))
        assert sorted(keys([r for p, _ in pages(ledger, 3, account=account_id(n)) for r in p])) == expected


def test_migration_moves_every_old_row_keeping_every_field(table):
    records, extra = old_world()
    write_legacy(table.raw, records, extra)
    unknown = legacy_entity(records[5]) | {"legacy_note": "kept"}
    table.raw.upsert_entity(unknown)

    ledger, tap = table.ledger()
    assert_readable(ledger, records)
    table.assert_layout(records, others=len(extra))
    for e in extra:
        assert dict(table.raw.get_entity(e["PartitionKey"], e["RowKey"])) == e
    r5 = records[5]
    moved = table.raw.get_entity(cluster_partition(r5.cluster), f"{r5.namespace}|{r5.service_account}|{r5.key}")
    assert moved["legacy_note"] == "kept" and moved["steps"] == legacy_entity(records[5])["steps"]

    got = ledger.get(records[0].key)  # a moved record is written as any other
    got.status = "not-ready"
    ledger.save(got)
    assert ledger.get(records[0].key).status == "not-ready"

    later, tap = table.ledger()
    later.ping()
    assert [m for m, _ in tap.requests] == ["GET", "GET"]  # the marker; ping's read


def test_get_finds_old_rows_while_the_migration_runs_and_an_interrupted_one_is_finished(table):
    """The state a migration cut off leaves, built by hand: some rows moved, some half moved (index and
    pointer only; or the record too, changed since, the old row still there), some not touched. While
    an instance migrates, its other threads still find every record; then the job is finished, and
    the record changed since its move keeps the change."""
    records, extra = old_world()
    write_legacy(table.raw, records, extra)
    moved, pointed, changed = records[:4], records[4:7], records[7]

    def new_rows(r: BindingRecord) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
        pk, rk = cluster_partition(r.cluster), f"{r.namespace}|{r.service_account}|{r.key}"
        entity = legacy_entity(r) | {"PartitionKey": pk, "RowKey": rk}
        index = {"PartitionKey": account_partition(r.account), "RowKey": f"{pk}|{r.key}", "pk": pk, "rk": rk}
        return entity, {"PartitionKey": "id", "RowKey": r.key, "pk": pk, "rk": rk}, index if r.account else None

    for r in moved + pointed + [changed]:
        entity, pointer, index = new_rows(r)
        if index:
            table.raw.upsert_entity(index)
        table.raw.upsert_entity(pointer)
        if r in moved:
            table.raw.create_entity(entity)
            table.raw.delete_entity("binding", r.key)
    changed.status, changed.reason = "not-ready", "changed after its move"
    table.raw.create_entity(new_rows(changed)[0] | {"status": "not-ready", "reason": "changed after its move"})

    ledger, tap = table.ledger()
    tap.hold(lambda method, url: "PartitionKey='meta'" in url)  # the migrating thread, at its first request
    starting = threading.Thread(target=ledger.ping)
    starting.start()
    assert tap.held.wait(30)
    for r in records:  # other threads of the instance: not held up, and every record is found
        got = ledger.get(r.key)
        assert got is not None and same(got) == same(r), r.key
    assert "binding" in table.rows()  # nothing moved meanwhile
    tap.go()
    starting.join(60)
    assert not starting.is_alive()
    table.assert_layout(records, others=len(extra))
    assert_readable(ledger, records)


def test_a_crash_at_any_request_of_a_migration_is_finished_by_the_next_start(storage):
    """Crash before the 1st request, the 2nd, ... until a run gets through (a random start key moves
    where a run splits its work, so runs differ a little in length); each time the next start
    finishes the job."""
    records, extra = old_world()
    at = 0
    while True:
        world = Table(storage)
        write_legacy(world.raw, records, extra)
        dying, tap = world.ledger()
        tap.crash_after = at
        try:
            dying.ping()
            crashed = False
        except Crash:
            crashed = True
        restarted, _ = world.ledger()
        assert_readable(restarted, records)
        world.assert_layout(records, others=len(extra))
        world.raw.delete_table()
        if not crashed:
            break
        at += 1
        assert at < 200, "the migration never ends"
    assert at >= 8  # marker, table, reads, index, pointers, records, old rows, marker


def test_instances_migrating_at_once_end_in_one_consistent_layout(table):
    records = [rich(n, cluster=n % 7, namespace=["team", "team-a", "ops"][n % 3], account=n % 5) for n in range(200)]
    for r in records[::9]:
        r.desired, r.status = "absent", "removed"
    write_legacy(table.raw, records)
    tapped = [table.ledger() for _ in range(3)]
    instances = [ledger for ledger, _ in tapped]
    start = threading.Barrier(len(instances))
    errors: list[BaseException] = []

    def run(ledger: Ledger) -> None:
        try:
            start.wait(30)
            ledger.ping()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(ledger,)) for ledger in instances]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and not any(t.is_alive() for t in threads)
    for _, tap in tapped:  # work another instance did meanwhile is left out, not redone row by row
        assert tap.count() < len(records) / 2, tap.count()
    table.assert_layout(records)
    by_key = {r.key: r for r in records}
    for ledger in instances:
        listed = list(ledger.all())
        assert len(listed) == len(records)
        assert all(same(r) == same(by_key[r.key]) for r in listed)
    sample = records[::37]
    for ledger in instances:
        for r in sample:
            assert same(ledger.get(r.key)) == same(r)
