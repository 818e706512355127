"""Label-selected, paged lists across all namespaces (KubeAdapter.list_labelled_*), end to end: the
real `kubernetes` client against the Kubernetes emulator, through the cluster's Entra credentials
from the ARM emulator, as the engine connects.

What a drift sweep over many bindings needs from one cluster: a handful of list requests (pages of
`limit` items, followed by `continue`) instead of reads per binding; the same plain snapshots the
`get_*` reads return (managedFields read the same way); a list that outlives its continue token
restarted once, then left to the queue.
"""

from __future__ import annotations

import pytest

from shared.adapters.counting import counting
from shared.adapters.kube import KubeAdapter
from shared.domain.errors import PermanentError, TemporaryError
from shared.domain.ids import ResourceId
from shared.domain.planner import MANAGED_BY_LABEL
from shared.domain.results import RequestCounts
from shared.domain.workloads import BINDING_LABEL
from tests.emulators.kube import CONTINUE_TOO_OLD, KubeEmulator

NAMESPACES = [f"ns-{n:02d}" for n in range(30)]
LABELLED = 1200
KEYLESS = f"{MANAGED_BY_LABEL}=keyless"
CLIENT_ID = "azure.workload.identity/client-id"


@pytest.fixture
def adapter(engine) -> KubeAdapter:
    return engine.kube


@pytest.fixture
def cluster(binding) -> ResourceId:
    return binding.cluster


def sa(namespace: str, name: str, labels: dict | None = None, annotations: dict | None = None) -> dict:
    meta: dict = {"name": name, "namespace": namespace}
    if labels:
        meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}


@pytest.fixture
def seeded(kube: KubeEmulator) -> dict[tuple[str, str], str]:
    """1,200 labelled ServiceAccounts over 30 namespaces (40 each), written as another tool would, plus
    noise: unlabelled ones, ones another tool labels managed-by=helm, and each namespace's "default".
    Returns (namespace, name) -> binding label of the labelled ones."""
    for namespace in NAMESPACES:
        kube.add_namespace(namespace)
    labelled = {}
    for i in range(LABELLED):
        namespace, name, key = NAMESPACES[i % 30], f"chat-{i:04d}", f"b-{i:04d}"
        kube.put_object(
            sa(namespace, name, {MANAGED_BY_LABEL: "keyless", BINDING_LABEL: key}, {CLIENT_ID: f"cid-{i}"}),
            field_manager="keyless",
        )
        labelled[(namespace, name)] = key
    for i in range(150):
        kube.put_object(sa(NAMESPACES[i % 30], f"noise-{i:03d}"))
        kube.put_object(sa(NAMESPACES[i % 30], f"helm-{i:03d}", {MANAGED_BY_LABEL: "helm"}), field_manager="helm")
    kube.log.clear()
    return labelled


def test_all_labelled_service_accounts_in_three_requests_of_500(adapter, cluster, kube, seeded):
    with counting(RequestCounts()) as counts:
        found = adapter.list_labelled_service_accounts(cluster, KEYLESS)
    assert (counts.kube_reads, counts.kube_writes, counts.arm_reads) == (3, 0, 1)  # + the cluster's credentials
    assert [r.query.count("limit=500") for r in kube.list_requests()] == [1, 1, 1]
    assert {(s.namespace, s.name): s.labels[BINDING_LABEL] for s in found} == seeded
    assert len(found) == LABELLED  # each once
    assert [(s.namespace, s.name) for s in found] == sorted(seeded)  # the API server's key order
    first = found[0]
    assert (first.namespace, first.name, first.annotations) == ("ns-00", "chat-0000", {CLIENT_ID: "cid-0"})
    assert first.managers == frozenset({"keyless"})
    assert first.annotation_owners == {CLIENT_ID: frozenset({"keyless"})}
    assert first.label_owners == {MANAGED_BY_LABEL: frozenset({"keyless"}), BINDING_LABEL: frozenset({"keyless"})}


@pytest.mark.parametrize(
    ("selector", "page_size", "expected", "requests"),
    [
        (KEYLESS, 500, LABELLED, 3),  # 500, 500, 200
        (KEYLESS, 100, LABELLED, 13),  # 12 full pages; keys remain after the last match: one more, empty
        (KEYLESS, 1199, LABELLED, 2),
        (KEYLESS, 1200, LABELLED, 2),  # full at the last match, keys remain: an empty last page
        (f"{BINDING_LABEL} in (b-0007,b-0042,b-9999)", 10, 2, 1),  # a page not filled reads to the end
        (f"{MANAGED_BY_LABEL}=helm", 100, 150, 2),
        (f"{MANAGED_BY_LABEL},{MANAGED_BY_LABEL}!=keyless", 100, 150, 2),
        (f"!{MANAGED_BY_LABEL}", 500, 150 + 33, 1),  # noise, and the "default" of 33 namespaces
    ],
)
def test_page_size_and_selectors(adapter, cluster, kube, seeded, selector, page_size, expected, requests):
    with counting(RequestCounts()) as counts:
        found = adapter.list_labelled_service_accounts(cluster, selector, page_size=page_size)
    assert len(found) == expected
    assert len(kube.list_requests()) == counts.kube_reads == requests  # (connecting reads ARM, not Kubernetes)


def test_without_a_selector_the_pages_still_hold_page_size_items(adapter, cluster, kube, seeded):
    found = adapter.list_labelled_service_accounts(cluster, "", page_size=500)
    assert len(found) == LABELLED + 150 + 150 + 30 + 3
    assert len(kube.list_requests()) == 4


def test_the_snapshots_are_those_the_reads_return(adapter, cluster, kube):
    """Objects written through the adapter (server-side apply) next to other managers: the list's
    snapshots equal the get's, field ownership included (managedFields are read the same way)."""
    kube.add_namespace("team-b")
    labels = {MANAGED_BY_LABEL: "keyless", BINDING_LABEL: "b-1"}
    for namespace in ("team-a", "team-b"):
        kube.put_object(sa(namespace, "chat-api", labels, {"team": "x"}), field_manager="kubectl")
        adapter.apply_service_account(cluster, namespace, "chat-api", {CLIENT_ID: "cid", "keyless.io/created-by": "k"})
        adapter.apply_configmap(cluster, namespace, "keyless-chat", {"AZURE_OPENAI_ENDPOINT": "https://x"}, labels)
        kube.put_object(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "keyless-chat", "namespace": namespace, "labels": {**labels, "extra": "y"}},
                "data": {"AZURE_OPENAI_ENDPOINT": "https://x", "THEIRS": "1"},
            },
            field_manager="helm",
        )
    accounts = adapter.list_labelled_service_accounts(cluster, f"{BINDING_LABEL}=b-1")
    maps = adapter.list_labelled_configmaps(cluster, f"{BINDING_LABEL}=b-1")
    assert [(s.namespace, s.name) for s in accounts] == [("team-a", "chat-api"), ("team-b", "chat-api")]
    assert [(m.namespace, m.name) for m in maps] == [("team-a", "keyless-chat"), ("team-b", "keyless-chat")]
    for listed in accounts:
        assert listed == adapter.get_service_account(cluster, listed.namespace, listed.name)
        assert listed.managers == frozenset({"kubectl", "keyless"})
        assert listed.annotation_owners[CLIENT_ID] == frozenset({"keyless"})
        assert listed.annotation_owners["team"] == frozenset({"kubectl"})
    for listed in maps:
        assert listed == adapter.get_configmap(cluster, listed.namespace, listed.name)
        assert listed.data_owners == {"AZURE_OPENAI_ENDPOINT": frozenset({"keyless"}), "THEIRS": frozenset({"helm"})}
        assert listed.label_owners[BINDING_LABEL] == frozenset({"keyless"})


def deployment(namespace: str, name: str, labels: dict) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "x"}]},
            },
        },
    }


def test_labelled_deployments_with_their_field_owners(adapter, cluster, kube):
    for namespace in ("team-a", "team-b", "team-c"):
        if namespace != "team-a":
            kube.add_namespace(namespace)
        kube.put_object(deployment(namespace, "web", {"app": "web"}), field_manager="helm")
        kube.put_object(deployment(namespace, "other", {"app": "other"}), field_manager="helm")
        adapter.apply_deployment(
            cluster,
            namespace,
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web", "labels": {BINDING_LABEL: "b"}},
            },
        )
    found = adapter.list_labelled_deployments(cluster, BINDING_LABEL, page_size=2)
    assert [(d.obj["metadata"]["namespace"], d.name) for d in found] == [
        ("team-a", "web"),
        ("team-b", "web"),
        ("team-c", "web"),
    ]
    assert len(kube.list_requests()) == 2  # three matching of six, two a page: 2 + 1
    for listed in found:
        read = adapter.get_deployment(cluster, listed.obj["metadata"]["namespace"], listed.name)
        assert read is not None
        assert listed.owners == read.owners
        assert {o.manager for o in listed.owners} == {"helm", "keyless"}
        assert "managedFields" not in listed.obj["metadata"]
        assert listed.obj == {k: v for k, v in read.obj.items() if k not in ("kind", "apiVersion")}
    assert next(o for o in found[0].owners if o.manager == "keyless").paths == frozenset(
        {("f:metadata", "f:labels", f"f:{BINDING_LABEL}")}
    )


def test_a_list_whose_continue_token_expired_is_restarted_once(adapter, cluster, kube, seeded):
    kube.inject_fault("GET", "/api/v1/serviceaccounts", 410, "Expired", CONTINUE_TOO_OLD, query_contains="continue=")
    with counting(RequestCounts()) as counts:
        found = adapter.list_labelled_service_accounts(cluster, KEYLESS)
    assert {(s.namespace, s.name) for s in found} == set(seeded) and len(found) == LABELLED
    assert [(r.status, "continue=" in r.query) for r in kube.list_requests()] == [
        (200, False),
        (410, True),  # the first attempt's second page
        (200, False),  # again from the beginning
        (200, True),
        (200, True),
    ]
    assert counts.kube_reads == 5


def test_a_list_that_expires_again_is_a_temporary_error(adapter, cluster, kube, seeded):
    kube.continue_ttl_seconds = -1  # every continue token is too old by the time it comes back
    with pytest.raises(TemporaryError, match="expired twice"):
        adapter.list_labelled_service_accounts(cluster, KEYLESS)
    assert [r.status for r in kube.list_requests()] == [200, 410, 200, 410]


def test_a_malformed_selector_is_the_api_servers_400(adapter, cluster, kube):
    with pytest.raises(PermanentError, match="400"):
        adapter.list_labelled_configmaps(cluster, "app=(")
    with pytest.raises(ValueError, match="page_size"):
        adapter.list_labelled_deployments(cluster, BINDING_LABEL, page_size=0)
