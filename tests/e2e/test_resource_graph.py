"""shared.adapters.resource_graph against the ARM emulator's Resource Graph: bulk reads that page through
`$skipToken`, agree with what ARM itself says, stay under ARG's quota, count their requests, and turn ARG's
errors into TemporaryError / PermanentError. And what they cannot promise: a lagging or missed resource is
the reason the drift sweep must confirm with ARM before any write.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.resourcegraph import ResourceGraphClient
from azure.mgmt.resourcegraph.models import QueryRequest

from shared.adapters import counting
from shared.adapters.accounts import AccountAdapter
from shared.adapters.arm import ArmClients
from shared.adapters.clusters import ClusterAdapter
from shared.adapters.identities import IdentityAdapter
from shared.adapters.resource_graph import (
    ACCOUNTS_PER_QUERY,
    GraphRoleAssignment,
    QuotaWindow,
    ResourceGraphAdapter,
    resets_after_seconds,
    translate_graph_error,
)
from shared.domain.errors import PermanentError, TemporaryError
from shared.domain.ids import ACCOUNT_TYPE, CLUSTER_TYPE, parse_resource_id
from shared.domain.results import RequestCounts
from shared.domain.settings import Settings
from tests.conftest import ACCOUNT_ID, CLUSTER_ID, SUB
from tests.emulators.arm import ARM_SCOPE, ROLE_OPENAI_USER, ROLE_READER, ArmEmulator
from tests.emulators.common import TestCA
from tests.emulators.credential import StaticCredential

SUB2 = "22222222-3333-4444-8555-666666666666"
MSI = "Microsoft.ManagedIdentity/userAssignedIdentities"
RG = "rg-ids"


def rid(sub: str, ns_type: str, name: str, rg: str = RG) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{ns_type}/{name}"


@pytest.fixture
def graph(credential: StaticCredential, settings: Settings) -> Iterator[ResourceGraphAdapter]:
    adapter = ResourceGraphAdapter(credential, settings)
    yield adapter
    adapter.close()


@pytest.fixture
def clients(credential: StaticCredential, settings: Settings) -> Iterator[ArmClients]:
    arm_clients = ArmClients(credential, dataclasses.replace(settings, arm_pacing_scale=0))
    yield arm_clients
    arm_clients.close()


def seed_keyless(arm: ArmEmulator, sub: str, count: int, prefix: str = "wl") -> list[str]:
    tags = {"managed-by": "keyless"}
    return [arm.add_identity(rid(sub, MSI, f"{prefix}-{i:05d}"), tags=tags)["id"] for i in range(count)]


def queries(arm: ArmEmulator) -> list[tuple[str, int, int]]:
    """(query, offset, rows) of each query ARG answered."""
    return [(a["query"], a["offset"], a["count"]) for a in arm.resource_graph.answered]


# ---------------------------------------------------------------------------- reads


def test_keyless_identities_over_2500_rows_and_two_subscriptions(arm, graph, clients) -> None:
    ids = seed_keyless(arm, SUB, 1300) + seed_keyless(arm, SUB2, 1200)
    arm.add_identity(rid(SUB, MSI, "not-ours"), tags={"managed-by": "terraform"})
    arm.add_identity(rid(SUB, MSI, "untagged"))
    before = counting.attempts().get("arm", {}).get("attempts", 0)
    with counting.counting(RequestCounts()) as counts:
        found = graph.keyless_identities([SUB2, SUB.upper(), SUB])
    assert [i.id for i in found] == sorted(ids, key=str.lower)
    assert queries(arm) == [("identities", 0, 1000), ("identities", 1000, 1000), ("identities", 2000, 500)]
    assert counting.attempts()["arm"]["attempts"] - before == 3
    assert counts.arm_reads + counts.arm_writes == 3  # counting.is_write takes these POSTs for writes
    # Each snapshot is what ARM itself answers for the identity.
    arm_view = IdentityAdapter(clients)
    for state in (found[0], found[1299], found[-1]):
        identity = parse_resource_id(state.id, MSI, "identity")
        assert arm_view.get(identity.subscription_id, identity.resource_group, identity.name) == state


def test_role_assignments_at_accounts_in_groups_of_accounts(arm, graph) -> None:
    accounts = [rid(SUB, ACCOUNT_TYPE, f"oai-{i:03d}", "rg-ai") for i in range(ACCOUNTS_PER_QUERY * 2 + 20)]
    expected = {}
    for i, account in enumerate(accounts):
        arm.add_cognitive_account(account, deployments=[])
        principal = f"00000000-0000-4000-8000-{i:012d}"
        ra = arm.add_role_assignment(account, f"10000000-0000-4000-8000-{i:012d}", principal, ROLE_OPENAI_USER)
        expected[ra["id"].lower()] = ra
    arm.add_role_assignment(accounts[0], "20000000-0000-4000-8000-000000000000",
                            "30000000-0000-4000-8000-000000000000", ROLE_READER, principal_type="User")  # fmt: skip
    arm.add_role_assignment(ACCOUNT_ID, "20000000-0000-4000-8000-000000000001",
                            "30000000-0000-4000-8000-000000000000", ROLE_OPENAI_USER)  # not asked  # fmt: skip

    found = graph.role_assignments_at([a.upper() for a in accounts] + accounts[:3])  # ids compare without case
    assert [q for q, _, _ in queries(arm)] == ["roleAssignments"] * 3  # 120 accounts, 50 a query
    assert len(found) == len(accounts) + 1 and all(isinstance(r, GraphRoleAssignment) for r in found)
    reader = next(r for r in found if r.principal_type == "User")
    assert reader.role_guid == ROLE_READER and reader.scope == accounts[0]
    for state in found:
        if state is reader:
            continue
        ra = expected[state.id.lower()]
        assert (state.name, state.scope, state.principal_id, state.principal_type) == (
            ra["name"], ra["properties"]["scope"], ra["properties"]["principalId"], "ServicePrincipal",
        )  # fmt: skip
        assert state.role_guid == ROLE_OPENAI_USER


def test_clusters_are_what_arm_says(arm, graph, clients, kube, ca) -> None:
    private = rid(SUB, CLUSTER_TYPE, "aks-private", "rg-aks")
    busy = rid(SUB2, CLUSTER_TYPE, "aks-busy", "rg-aks")
    arm.add_managed_cluster(private, kube_server_url=kube.url, kube_ca_pem=ca.ca_pem, private=True,
                            oidc_issuer_enabled=False, workload_identity_enabled=False, tags={"team": "b"})  # fmt: skip
    arm.add_managed_cluster(busy, kube_server_url=kube.url, kube_ca_pem=ca.ca_pem, provisioning_state="Updating")
    found = graph.clusters([SUB, SUB2])
    arm_view = ClusterAdapter(clients)
    assert found == [arm_view.get(parse_resource_id(c, CLUSTER_TYPE, "cluster"), fresh=True)
                     for c in sorted([CLUSTER_ID, private, busy], key=str.lower)]  # fmt: skip
    assert [c.provisioning_state for c in found] == ["Succeeded", "Succeeded", "Updating"]


def test_openai_accounts_are_what_arm_says_but_deployments(arm, graph, clients) -> None:
    multi = rid(SUB, ACCOUNT_TYPE, "multi", "rg-ai")
    arm.add_cognitive_account(multi, kind="AIServices", disable_local_auth=True, tags={"team": "c"})
    arm.add_cognitive_account(rid(SUB, ACCOUNT_TYPE, "speech", "rg-ai"), kind="SpeechServices")
    found = graph.openai_accounts([SUB])
    arm_view = AccountAdapter(clients)
    expected = [arm_view.get(parse_resource_id(a, ACCOUNT_TYPE, "account"), fresh=True) for a in (multi, ACCOUNT_ID)]
    assert expected[1].deployments  # ARM lists them; ARG's row has none
    assert found == [dataclasses.replace(e, deployments=()) for e in sorted(expected, key=lambda s: s.id.lower())]


def test_nothing_to_ask_sends_nothing(arm, graph) -> None:
    assert graph.keyless_identities([]) == [] and graph.role_assignments_at([]) == []
    with pytest.raises(PermanentError):
        graph.role_assignments_at([CLUSTER_ID])  # not an account: never put into a query
    with pytest.raises(PermanentError):
        graph.clusters(["not-a-subscription"])
    assert arm.resource_graph.answered == []


# ---------------------------------------------------------------------------- what ARG cannot promise


def test_a_row_seen_on_two_pages_counts_once(arm, graph) -> None:
    """ARG evaluates every page anew: a resource created meanwhile shifts the rows (paging docs)."""
    ids = seed_keyless(arm, SUB, 2000, prefix="m")
    early = rid(SUB, MSI, "a-early")

    def create_after_first_page(recorded) -> None:
        if recorded.path.endswith("/Microsoft.ResourceGraph/resources") and len(arm.resource_graph.answered) == 1:
            arm.add_identity(early, tags={"managed-by": "keyless"})

    arm.request_hooks.append(create_after_first_page)
    found = graph.keyless_identities([SUB])
    assert queries(arm) == [("identities", 0, 1000), ("identities", 1000, 1000), ("identities", 2000, 1)]
    assert [i.id for i in found] == sorted(ids)  # the repeated row once; the new one missed until next time


def test_lagging_and_missed_resources_are_for_arm_to_confirm(arm, graph, clients) -> None:
    [seen, missed] = seed_keyless(arm, SUB, 2)
    arm.resource_graph.lag_seconds = 60
    arm.resource_graph.miss(missed)
    arm_view = IdentityAdapter(clients)
    created = arm_view.create_or_update(SUB, RG, "created", "eastus", {"managed-by": "keyless"})
    assert [i.id for i in graph.keyless_identities([SUB])] == [seen]
    assert arm_view.get(SUB, RG, "created") == created  # ARM knows at once
    arm.clock.advance(61)
    arm.resource_graph.full_scan()
    assert [i.name for i in graph.keyless_identities([SUB])] == ["created", "wl-00000", "wl-00001"]


def test_an_incomplete_answer_is_refused(arm, graph) -> None:
    seed_keyless(arm, SUB, 1001)
    arm.resource_graph.truncate_results = True
    with pytest.raises(PermanentError, match="resultTruncated"):
        graph.keyless_identities([SUB])


# ---------------------------------------------------------------------------- quota


def test_queries_wait_for_the_quota_instead_of_being_refused(arm, graph) -> None:
    arm.resource_graph.enforce_quota(scale=4)
    arm.resource_graph.quota_queries = 3  # 3 queries per 1.25 s: a handful of queries meets the limit
    for _ in range(5):
        graph.clusters([SUB])
    assert len(arm.resource_graph.answered) == 5 and arm.throttled() == []
    assert graph.quota is not None and graph.quota.waited_seconds > 0


def test_without_pacing_a_429_with_retry_after_is_retried_by_azure_core(arm, credential, settings) -> None:
    arm.resource_graph.enforce_quota(scale=4)
    arm.resource_graph.quota_queries = 3
    adapter = ResourceGraphAdapter(credential, dataclasses.replace(settings, arm_pacing_scale=0))
    before = counting.attempts().get("arm", {}).get("retries", 0)
    for _ in range(5):
        adapter.clusters([SUB])
    adapter.close()
    assert len(arm.resource_graph.answered) == 5 and len(arm.throttled()) >= 1
    assert counting.attempts()["arm"]["retries"] - before == len(arm.throttled())


def test_quota_window_waits_for_the_reset_or_hands_back_to_the_queue() -> None:
    now, slept = [100.0], []
    quota = QuotaWindow(max_wait_seconds=20, clock=lambda: now[0], sleep=slept.append)
    quota.before_send()  # nothing known yet
    quota.after_answer({"x-ms-user-quota-remaining": "1", "x-ms-user-quota-resets-after": "00:00:04"})
    quota.before_send()  # the last one left
    quota.before_send()
    assert slept == [4.0]
    quota.after_answer({"x-ms-user-quota-remaining": "0", "x-ms-user-quota-resets-after": "00:01:00"})
    with pytest.raises(TemporaryError) as raised:
        quota.before_send()
    assert raised.value.delay_seconds == 60
    now[0] += 60
    quota.before_send()
    assert slept == [4.0]
    assert [resets_after_seconds(v) for v in ("00:00:05", "01:02:03", "1.00:00:00", "00:00:00.250", "", "5")] == [
        5, 3723, 86400, 0.25, None, None,
    ]  # fmt: skip


# ---------------------------------------------------------------------------- errors


def test_throttled_is_temporary_until_the_quota_resets(arm, graph) -> None:
    # No Retry-After: azure-core does not retry a POST answered 429, the queue waits for the reset.
    quota = {"x-ms-user-quota-remaining": "0", "x-ms-user-quota-resets-after": "00:00:04"}
    arm.inject_fault("POST", "/providers/Microsoft.ResourceGraph/", 429, code="RateLimiting", headers=quota)
    with pytest.raises(TemporaryError) as raised:
        graph.clusters([SUB])
    assert raised.value.delay_seconds == 4.0 and "RateLimiting" in raised.value.reason


def test_forbidden_is_permanent(arm, graph) -> None:
    arm.inject_fault("POST", "/providers/Microsoft.ResourceGraph/", 403, code="AuthorizationFailed")
    with pytest.raises(PermanentError, match="403 AuthorizationFailed"):
        graph.openai_accounts([SUB])


def test_server_errors_and_no_answer_are_temporary(arm, graph) -> None:
    arm.inject_fault("POST", "/providers/Microsoft.ResourceGraph/", 503, headers={"Retry-After": "0.01"}, times=4)
    with pytest.raises(TemporaryError, match="503"):
        graph.clusters([SUB])
    assert len(arm.log.matching("POST", "/Microsoft.ResourceGraph/")) == 4  # azure-core's 3 retries, then the queue
    arm.inject_fault("POST", "/providers/Microsoft.ResourceGraph/", 0)  # dropped: a POST is not retried
    with pytest.raises(TemporaryError, match="could not reach"):
        graph.clusters([SUB])


def test_a_refused_query_is_permanent_and_names_args_codes(arm, ca: TestCA) -> None:
    client = ResourceGraphClient(StaticCredential(), base_url=arm.url, credential_scopes=[ARM_SCOPE],
                                 connection_verify=str(ca.ca_pem_path), retry_total=0)  # fmt: skip
    with pytest.raises(HttpResponseError) as raised:
        client.resources(QueryRequest(subscriptions=[SUB], query="Resources | project id"))
    client.close()
    error = translate_graph_error(raised.value, "sweeping")
    assert isinstance(error, PermanentError) and "400 BadRequest, InvalidQuery" in error.reason


def test_arm_reset_resets_resource_graph(arm: ArmEmulator) -> None:
    arm.resource_graph.enforce_quota()
    arm.resource_graph.truncate_results = True
    arm.reset()
    assert not arm.resource_graph.quota_enforced and not arm.resource_graph.truncate_results
