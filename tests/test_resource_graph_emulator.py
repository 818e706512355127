"""Tests of the Resource Graph emulator (tests/emulators/resource_graph.py), through the real
azure-mgmt-resourcegraph client and plain HTTPS: the wire format of the 2021-03-01 spec (QueryRequest,
QueryResponse, ErrorResponse), paging with `$skipToken`, the quota headers and 429, the queries it knows
and the rows it answers from the ARM emulator's state, and its knobs (lag, miss, truncated results).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.resourcegraph import ResourceGraphClient
from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions

from shared.adapters import resource_graph as adapter
from tests.emulators.arm import ARM_SCOPE, ROLE_OPENAI_USER, ROLE_READER, ArmEmulator
from tests.emulators.common import TestCA, token_for_scope
from tests.emulators.credential import StaticCredential
from tests.emulators.resource_graph import API_VERSION, PATH, recognise

SUB_A = "aaaaaaaa-1111-4222-8333-444444444444"
SUB_B = "bbbbbbbb-1111-4222-8333-444444444444"
RG = "rg-Keyless"
MSI = "Microsoft.ManagedIdentity/userAssignedIdentities"
COG = "Microsoft.CognitiveServices/accounts"
AKS = "Microsoft.ContainerService/managedClusters"
IDENTITIES, CLUSTERS, ACCOUNTS = adapter.IDENTITIES_QUERY, adapter.CLUSTERS_QUERY, adapter.ACCOUNTS_QUERY
HHMMSS = re.compile(r"^\d{2}:\d{2}:\d{2}$")


def rid(sub: str, ns_type: str, name: str, rg: str = RG) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{ns_type}/{name}"


def ra_query(*account_ids: str) -> str:
    return adapter.ROLE_ASSIGNMENTS_QUERY.format(scopes=", ".join(f"'{a}'" for a in account_ids))


# ---------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def arm_server(ca: TestCA) -> Iterator[ArmEmulator]:
    emulator = ArmEmulator(ca).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def arm(arm_server: ArmEmulator) -> ArmEmulator:
    """The module's emulator, emptied; two subscriptions with a resource group each."""
    arm_server.reset()
    for sub in (SUB_A, SUB_B):
        arm_server.add_resource_group(sub, RG)
    return arm_server


@pytest.fixture
def graph(arm: ArmEmulator, ca: TestCA) -> Iterator[ResourceGraphClient]:
    """The real SDK client, without retries (each answer is seen as it is)."""
    client = ResourceGraphClient(
        StaticCredential(), base_url=arm.url, credential_scopes=[ARM_SCOPE], connection_verify=str(ca.ca_pem_path),
        retry_total=0,
    )  # fmt: skip
    yield client
    client.close()


@pytest.fixture
def post(arm: ArmEmulator, ca: TestCA) -> Callable[..., requests.Response]:
    """A plain HTTPS POST of a QueryRequest body, for status codes, headers and raw JSON."""

    def send(body: Any, *, api_version: str = API_VERSION) -> requests.Response:
        headers = {"Authorization": f"Bearer {token_for_scope(ARM_SCOPE)}"}
        return requests.post(
            arm.url + PATH, params={"api-version": api_version}, json=body, headers=headers,
            verify=str(ca.ca_pem_path), timeout=10,
        )  # fmt: skip

    return send


def seed_identities(arm: ArmEmulator, sub: str, count: int, prefix: str = "id", tags: dict | None = None) -> list[str]:
    """The ids as ARM answers them (the managed identity RP writes `resourcegroups` in lower case)."""
    tags = {"managed-by": "keyless"} if tags is None else tags
    return [arm.add_identity(rid(sub, MSI, f"{prefix}-{i:05d}"), tags=tags)["id"] for i in range(count)]


def query(graph: ResourceGraphClient, text: str, subs: list[str], **options: Any) -> Any:
    return graph.resources(QueryRequest(subscriptions=subs, query=text, options=QueryRequestOptions(**options)))


def all_pages(graph: ResourceGraphClient, text: str, subs: list[str], **options: Any) -> list[Any]:
    pages = [query(graph, text, subs, **options)]
    while pages[-1].skip_token:
        pages.append(query(graph, text, subs, skip_token=pages[-1].skip_token, **options))
    return pages


def error_of(response: requests.Response) -> dict:
    return response.json()["error"]


# ---------------------------------------------------------------------------- the queries it knows


def test_it_knows_exactly_the_adapters_queries() -> None:
    assert recognise(IDENTITIES) == ("identities", ())
    assert recognise(CLUSTERS) == ("clusters", ())
    assert recognise(ACCOUNTS) == ("accounts", ())
    accounts = (rid(SUB_A, COG, "One"), rid(SUB_A, COG, "two"))
    assert recognise(ra_query(*accounts)) == ("roleAssignments", tuple(a.lower() for a in accounts))
    for other in (IDENTITIES + " ", IDENTITIES.replace("==", "=~"), "Resources | project id", ra_query()):
        assert recognise(other) is None


def test_an_unknown_query_is_refused_with_args_error_shape(arm, post, graph) -> None:
    answer = post({"subscriptions": [SUB_A], "query": "Resources | project id, name"})
    assert answer.status_code == 400
    error = error_of(answer)
    assert error["code"] == "BadRequest"
    assert error["message"].startswith("Please provide below info when asking for support: timestamp = ")
    assert "correlationId = " in error["message"]
    assert error["details"][0]["code"] == "InvalidQuery"
    assert all(set(d) >= {"code", "message"} for d in error["details"])  # [spec] ErrorDetails
    with pytest.raises(HttpResponseError) as raised:
        query(graph, IDENTITIES.replace("keyless", "someone"), [SUB_A])
    assert raised.value.status_code == 400 and raised.value.error.code == "BadRequest"
    assert raised.value.error.details[0].code == "InvalidQuery"


@pytest.mark.parametrize(
    ("body", "what"),
    [
        ({"query": IDENTITIES}, "tenant-scope"),
        ({"subscriptions": [], "query": IDENTITIES}, "tenant-scope"),
        ({"managementGroups": ["mg1"], "query": IDENTITIES}, "management group"),
        ({"subscriptions": [SUB_A], "query": IDENTITIES, "options": {"resultFormat": "table"}}, "resultFormat"),
        ({"subscriptions": [SUB_A], "query": IDENTITIES, "facets": [{"expression": "location"}]}, "facets"),
    ],
)
def test_what_it_does_not_serve_is_refused(post, body, what) -> None:
    answer = post(body)
    assert answer.status_code == 400
    detail = error_of(answer)["details"][0]
    assert detail["code"] == "NotServedByEmulator" and what in detail["message"]


@pytest.mark.parametrize("body", [None, [1, 2], {"subscriptions": [SUB_A]}, {"subscriptions": SUB_A, "query": "x"}])
def test_a_malformed_request_is_refused(post, body) -> None:
    answer = post(body)
    assert answer.status_code == 400 and error_of(answer)["code"] == "BadRequest"


def test_the_route_is_arms_post_at_the_sdks_api_version(arm, post, graph, ca) -> None:
    query(graph, IDENTITIES, [SUB_A])
    assert arm.log.items[-1].method == "POST" and arm.log.items[-1].query == f"api-version={API_VERSION}"
    assert error_of(post({"subscriptions": [SUB_A], "query": IDENTITIES}, api_version="2019-04-01"))["code"] == (
        "InvalidApiVersionParameter"
    )
    got = requests.get(arm.url + PATH, params={"api-version": API_VERSION}, verify=str(ca.ca_pem_path), timeout=10,
                       headers={"Authorization": f"Bearer {token_for_scope(ARM_SCOPE)}"})  # fmt: skip
    assert got.status_code == 405
    no_token = requests.post(arm.url + PATH, params={"api-version": API_VERSION}, json={}, timeout=10,
                             verify=str(ca.ca_pem_path))  # fmt: skip
    assert no_token.status_code == 401


def test_injected_faults_apply_to_it(arm, graph) -> None:
    arm.inject_fault("POST", "/providers/Microsoft.ResourceGraph/", 503)
    with pytest.raises(HttpResponseError) as raised:
        query(graph, IDENTITIES, [SUB_A])
    assert raised.value.status_code == 503
    assert query(graph, IDENTITIES, [SUB_A]).total_records == 0


# ---------------------------------------------------------------------------- paging


def test_pages_of_at_most_1000_rows_joined_by_skiptoken(arm, graph) -> None:
    ids = seed_identities(arm, SUB_A, 2345)
    pages = all_pages(graph, IDENTITIES, [SUB_A])
    assert [p.count for p in pages] == [1000, 1000, 345]
    assert all(p.total_records == 2345 and p.result_truncated == "false" for p in pages)  # [examples]
    assert [bool(p.skip_token) for p in pages] == [True, True, False]
    rows = [row["id"] for p in pages for row in p.data]
    assert rows == sorted(ids)  # | order by id asc, each row once


def test_top_is_honoured_up_to_1000_and_skip_moves_the_start(arm, graph, post) -> None:
    ids = sorted(seed_identities(arm, SUB_A, 20))
    first = query(graph, IDENTITIES, [SUB_A], top=7)
    assert [r["id"] for r in first.data] == ids[:7] and first.skip_token
    second = query(graph, IDENTITIES, [SUB_A], top=7, skip_token=first.skip_token)
    assert [r["id"] for r in second.data] == ids[7:14]
    assert [r["id"] for r in query(graph, IDENTITIES, [SUB_A], skip=15).data] == ids[15:]
    for top in (0, 1001, "10"):
        answer = post({"subscriptions": [SUB_A], "query": IDENTITIES, "options": {"$top": top}})
        assert answer.status_code == 400, top
    assert post({"subscriptions": [SUB_A], "query": IDENTITIES, "options": {"$skip": -1}}).status_code == 400


def test_a_skiptoken_goes_with_its_query_and_subscriptions(arm, graph, post) -> None:
    seed_identities(arm, SUB_A, 5)
    token = query(graph, IDENTITIES, [SUB_A], top=2).skip_token
    assert query(graph, IDENTITIES, [SUB_A.upper()], skip_token=token).count == 2  # subscriptions compare without case
    for text, subs in ((CLUSTERS, [SUB_A]), (IDENTITIES, [SUB_A, SUB_B])):
        answer = post({"subscriptions": subs, "query": text, "options": {"$skipToken": token}})
        assert answer.status_code == 400 and error_of(answer)["details"][0]["code"] == "InvalidSkipToken"
    garbage = base64.urlsafe_b64encode(b"[1]").decode()
    for bad in ("not a token", garbage):
        answer = post({"subscriptions": [SUB_A], "query": IDENTITIES, "options": {"$skipToken": bad}})
        assert answer.status_code == 400


def test_the_answer_has_the_specs_shape(arm, post) -> None:
    seed_identities(arm, SUB_A, 3)
    answer = post({"subscriptions": [SUB_A], "query": IDENTITIES, "options": {"$top": 2}})
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("application/json")
    body = answer.json()
    assert set(body) == {"totalRecords", "count", "resultTruncated", "$skipToken", "facets", "data"}
    assert isinstance(body["totalRecords"], int) and body["totalRecords"] == 3
    assert body["count"] == len(body["data"]) == 2
    assert body["resultTruncated"] in ("true", "false")  # [spec] a string enum, not a boolean
    assert isinstance(body["$skipToken"], str) and body["facets"] == []
    last = post({"subscriptions": [SUB_A], "query": IDENTITIES, "options": {"$skipToken": body["$skipToken"]}}).json()
    assert "$skipToken" not in last and last["count"] == 1


def test_pages_are_evaluated_anew_so_rows_can_repeat(arm, graph) -> None:
    """[paging] "Pagination limitations": a resource created between pages shifts the rows."""
    ids = sorted(seed_identities(arm, SUB_A, 6, prefix="m"))
    first = query(graph, IDENTITIES, [SUB_A], top=3)
    arm.add_identity(rid(SUB_A, MSI, "a-first"), tags={"managed-by": "keyless"})
    second = query(graph, IDENTITIES, [SUB_A], top=3, skip_token=first.skip_token)
    assert [r["id"] for r in second.data] == ids[2:5]  # ids[2] again; a-first never shows
    assert second.total_records == 7


def test_truncated_results_say_so_and_carry_no_token(arm, graph) -> None:
    seed_identities(arm, SUB_A, 1200)
    arm.resource_graph.truncate_results = True
    page = query(graph, IDENTITIES, [SUB_A])
    assert (page.count, page.total_records, page.result_truncated, page.skip_token) == (1000, 1200, "true", None)


# ---------------------------------------------------------------------------- quota


def quota(answer: requests.Response) -> tuple[int, str]:
    return int(answer.headers["x-ms-user-quota-remaining"]), answer.headers["x-ms-user-quota-resets-after"]


def test_every_answer_carries_the_quota_headers(arm, post) -> None:
    body = {"subscriptions": [SUB_A], "query": IDENTITIES}
    assert quota(post(body)) == (14, "00:00:05")
    assert quota(post({"subscriptions": [SUB_A], "query": "Resources"})) == (13, "00:00:05")  # a 400 counts too
    arm.clock.advance(2.5)
    remaining, resets = quota(post(body))
    assert remaining == 12 and HHMMSS.match(resets) and resets == "00:00:03"
    arm.clock.advance(2.5)
    assert quota(post(body)) == (14, "00:00:05")  # a new window


def test_over_the_quota_it_answers_429_only_when_enforced(arm, post, graph) -> None:
    body = {"subscriptions": [SUB_A], "query": IDENTITIES}
    assert [post(body).status_code for _ in range(20)] == [200] * 20  # not enforced: counted, never refused
    assert quota(post(body))[0] == 0

    arm.resource_graph.enforce_quota()
    assert [post(body).status_code for _ in range(15)] == [200] * 15
    refused = post(body)
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 5
    assert quota(refused)[0] == 0
    error = error_of(refused)
    assert error["code"] == "RateLimiting" and error["details"][0]["code"] == "RateLimiting"
    with pytest.raises(HttpResponseError) as raised:
        query(graph, IDENTITIES, [SUB_A])
    assert raised.value.status_code == 429
    arm.clock.advance(5)
    assert quota(post(body)) == (14, "00:00:05")  # the refused queries did not count
    assert len(arm.throttled()) == 2


def test_a_scaled_quota_speaks_in_our_seconds(arm, post) -> None:
    arm.resource_graph.enforce_quota(scale=10)
    body = {"subscriptions": [SUB_A], "query": IDENTITIES}
    assert quota(post(body)) == (14, "00:00:00.500")
    for _ in range(14):
        post(body)
    refused = post(body)
    assert refused.status_code == 429 and 0 < float(refused.headers["Retry-After"]) <= 0.5
    arm.resource_graph.enforce_quota(None)
    assert post(body).status_code == 200


# ---------------------------------------------------------------------------- rows


def test_identities_tagged_managed_by_keyless_in_the_subscriptions_asked(arm, graph) -> None:
    mine = arm.add_identity(rid(SUB_A, MSI, "mine"), tags={"managed-by": "keyless", "keyless-workload": "abc"})
    arm.add_identity(rid(SUB_B, MSI, "other-sub"), tags={"managed-by": "keyless"})
    arm.add_identity(rid(SUB_A, MSI, "untagged"))
    arm.add_identity(rid(SUB_A, MSI, "capital"), tags={"managed-by": "Keyless"})  # == compares with case
    arm.add_identity(rid(SUB_A, MSI, "someone"), tags={"managed-by": "someone"})
    [row] = query(graph, IDENTITIES, [SUB_A]).data
    assert row == {
        "id": mine["id"], "name": "mine", "resourceGroup": RG, "subscriptionId": SUB_A, "location": "eastus",
        "tenantId": arm.tenant_id, "tags": {"managed-by": "keyless", "keyless-workload": "abc"},
        "clientId": mine["properties"]["clientId"], "principalId": mine["properties"]["principalId"],
    }  # fmt: skip
    assert query(graph, IDENTITIES, [SUB_A, SUB_B]).total_records == 2


def test_role_assignments_exactly_at_the_accounts_asked(arm, graph) -> None:
    one, two, three = (rid(SUB_A, COG, name) for name in ("one", "two", "three"))
    other_sub = rid(SUB_B, COG, "four")
    for account in (one, two, three, other_sub):
        arm.add_cognitive_account(account)
    p1, p2 = "11111111-0000-4000-8000-000000000001", "11111111-0000-4000-8000-000000000002"
    at_one = arm.add_role_assignment(one, "0000000a-0000-4000-8000-000000000001", p1, ROLE_OPENAI_USER)
    arm.add_role_assignment(one, "0000000a-0000-4000-8000-000000000002", p2, ROLE_READER, principal_type="User")
    arm.add_role_assignment(two, "0000000a-0000-4000-8000-000000000003", p1, ROLE_OPENAI_USER)
    arm.add_role_assignment(three, "0000000a-0000-4000-8000-000000000004", p1, ROLE_OPENAI_USER)  # not asked
    arm.add_role_assignment(f"/subscriptions/{SUB_A}/resourceGroups/{RG}", "0000000a-0000-4000-8000-000000000005",
                            p1, ROLE_OPENAI_USER)  # fmt: skip
    arm.add_role_assignment(one + "/deployments/gpt-4o", "0000000a-0000-4000-8000-000000000006", p1, ROLE_READER)
    arm.add_role_assignment(other_sub, "0000000a-0000-4000-8000-000000000007", p1, ROLE_OPENAI_USER)

    page = query(graph, ra_query(one.upper(), two, other_sub), [SUB_A])  # in~: any case; SUB_B not asked
    assert [r["name"][-1] for r in page.data] == ["1", "2", "3"]
    assert page.data[0] == {
        "id": at_one["id"], "name": at_one["name"], "scope": one,
        "roleDefinitionId": at_one["properties"]["roleDefinitionId"], "principalId": p1,
        "principalType": "ServicePrincipal",
    }  # fmt: skip
    assert page.data[1]["principalType"] == "User"
    assert query(graph, ra_query(other_sub), [SUB_A, SUB_B]).count == 1


def test_clusters_with_what_cluster_state_holds(arm, graph, ca) -> None:
    plain, private, busy = (rid(SUB_A, AKS, name) for name in ("plain", "private", "busy"))
    kube = {"kube_server_url": "https://127.0.0.1:1", "kube_ca_pem": ca.ca_pem}
    arm.add_managed_cluster(plain, tags={"keyless-workloads": "team-a/chat"}, **kube)
    arm.add_managed_cluster(private, oidc_issuer_enabled=False, workload_identity_enabled=False, private=True,
                            aad_enabled=False, disable_local_accounts=False, **kube)  # fmt: skip
    arm.add_managed_cluster(busy, provisioning_state="Updating", **kube)
    rows = {r["name"]: r for r in query(graph, CLUSTERS, [SUB_A]).data}
    issuer = arm.managed_cluster(plain)["properties"]["oidcIssuerProfile"]["issuerURL"]
    assert rows["plain"] == {
        "id": plain, "name": "plain", "resourceGroup": RG, "subscriptionId": SUB_A, "location": "eastus",
        "tags": {"keyless-workloads": "team-a/chat"}, "provisioningState": "Succeeded", "oidcIssuerEnabled": True,
        "issuerUrl": issuer, "workloadIdentityEnabled": True, "aadEnabled": True, "azureRbac": True,
        "localAccountsDisabled": True, "privateCluster": None, "runCommandDisabled": None,
    }  # fmt: skip
    p = rows["private"]
    assert (p["oidcIssuerEnabled"], p["issuerUrl"], p["workloadIdentityEnabled"]) == (False, "", False)
    assert (p["aadEnabled"], p["localAccountsDisabled"], p["privateCluster"], p["runCommandDisabled"]) == (
        False, False, True, False,
    )  # fmt: skip
    assert p["azureRbac"] is None, "no aadProfile: tobool of a missing value is null"
    assert rows["busy"]["provisioningState"] == "Updating"
    arm.clock.advance(arm.cluster_update_seconds)
    assert {r["name"]: r for r in query(graph, CLUSTERS, [SUB_A]).data}["busy"]["provisioningState"] == "Succeeded"


def test_openai_and_aiservices_accounts_only(arm, graph) -> None:
    arm.add_cognitive_account(rid(SUB_A, COG, "oai"), disable_local_auth=True, tags={"team": "a"})
    arm.add_cognitive_account(rid(SUB_A, COG, "multi"), kind="AIServices")
    arm.add_cognitive_account(rid(SUB_A, COG, "regional"), custom_subdomain=None)
    arm.add_cognitive_account(rid(SUB_A, COG, "speech"), kind="SpeechServices")
    rows = {r["name"]: r for r in query(graph, ACCOUNTS, [SUB_A]).data}
    assert sorted(rows) == ["multi", "oai", "regional"]
    assert rows["oai"] == {
        "id": rid(SUB_A, COG, "oai"), "name": "oai", "resourceGroup": RG, "subscriptionId": SUB_A,
        "location": "eastus", "kind": "OpenAI", "tags": {"team": "a"}, "provisioningState": "Succeeded",
        "endpoint": "https://oai.openai.azure.com/", "customSubDomainName": "oai", "disableLocalAuth": True,
    }  # fmt: skip
    assert rows["multi"]["kind"] == "AIServices" and rows["multi"]["disableLocalAuth"] is False
    assert rows["regional"]["customSubDomainName"] == ""  # tostring(null)


def test_answers_follow_arm_writes(arm, graph, ca) -> None:
    msi = ManagedServiceIdentityClient(StaticCredential(), SUB_A, base_url=arm.url, credential_scopes=[ARM_SCOPE],
                                       connection_verify=str(ca.ca_pem_path))  # fmt: skip
    msi.user_assigned_identities.create_or_update(RG, "new", {"location": "eastus", "tags": {"managed-by": "keyless"}})
    assert [r["name"] for r in query(graph, IDENTITIES, [SUB_A]).data] == ["new"]
    msi.user_assigned_identities.update(RG, "new", {"tags": {}})
    assert query(graph, IDENTITIES, [SUB_A]).data == []


# ---------------------------------------------------------------------------- lag and misses


def names(graph: ResourceGraphClient) -> list[str]:
    return [r["name"] for r in query(graph, IDENTITIES, [SUB_A]).data]


def test_lag_shows_arms_state_as_of_seconds_ago(arm, graph, ca) -> None:
    arm.add_identity(rid(SUB_A, MSI, "old"), tags={"managed-by": "keyless"})
    arm.resource_graph.lag_seconds = 30
    assert names(graph) == ["old"]  # what existed when the lag was set counts as indexed
    msi = ManagedServiceIdentityClient(StaticCredential(), SUB_A, base_url=arm.url, credential_scopes=[ARM_SCOPE],
                                       connection_verify=str(ca.ca_pem_path))  # fmt: skip
    msi.user_assigned_identities.create_or_update(RG, "new", {"location": "eastus", "tags": {"managed-by": "keyless"}})
    arm.clock.advance(29)
    assert names(graph) == ["old"]
    arm.clock.advance(2)
    assert names(graph) == ["new", "old"]
    msi.user_assigned_identities.delete(RG, "old")
    arm.clock.advance(20)
    assert names(graph) == ["new", "old"]  # ARG still shows the deleted identity
    arm.clock.advance(11)
    assert names(graph) == ["new"]
    arm.add_identity(rid(SUB_A, MSI, "seeded"), tags={"managed-by": "keyless"})  # seen at the next query
    assert names(graph) == ["new"]
    arm.clock.advance(31)
    assert names(graph) == ["new", "seeded"]
    arm.resource_graph.lag_seconds = 0
    arm.reset()
    assert arm.resource_graph.lag_seconds == 0


def test_a_missed_resource_is_absent_until_a_full_scan(arm, graph) -> None:
    ids = seed_identities(arm, SUB_A, 3)
    arm.resource_graph.miss(ids[1].upper())
    page = query(graph, IDENTITIES, [SUB_A])
    assert [r["id"] for r in page.data] == [ids[0], ids[2]] and page.total_records == 2
    arm.resource_graph.full_scan()
    assert query(graph, IDENTITIES, [SUB_A]).total_records == 3


def test_answered_records_each_query(arm, graph) -> None:
    seed_identities(arm, SUB_A, 3)
    all_pages(graph, IDENTITIES, [SUB_A], top=2)
    assert [(a["query"], a["offset"], a["count"], a["skipToken"]) for a in arm.resource_graph.answered] == [
        ("identities", 0, 2, True), ("identities", 2, 1, False),
    ]  # fmt: skip
    token = json.loads(base64.urlsafe_b64decode(query(graph, IDENTITIES, [SUB_A], top=1).skip_token))
    assert token["o"] == 1  # opaque to clients; here, where the next page starts
