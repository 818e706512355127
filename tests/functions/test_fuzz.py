"""Hostile input, generated: thousands of bodies, headers, principals and events.

Every HTTP answer is a 2xx/4xx JSON document (never a 5xx, never a stack trace); the Event
Grid handler never raises for a malformed event; nothing reaches the queue that validation
and policy did not allow. KEYLESS_FUZZ_EXAMPLES sets how many cases per test (CI: a few hundred).
"""

from __future__ import annotations

import base64
import json
import os
from collections import Counter

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from shared.app import composition
from tests.conftest import ACCOUNT_ID, CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT
from tests.functions.conftest import principal_header

EXAMPLES = int(os.environ.get("KEYLESS_FUZZ_EXAMPLES", "250"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
STATS: Counter[str] = Counter()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
nasty_text = st.one_of(
    st.text(max_size=300),
    st.sampled_from(
        [
            "",
            " ",
            "..",
            "../..",
            "a:b",
            "a/b",
            "%2F",
            "kube-system",
            "default",
            "system:serviceaccount:x:y",
            CLUSTER_ID,
            ACCOUNT_ID,
            CLUSTER_ID + "/..",
            ACCOUNT_ID.upper(),
            "\x00",
            "é" * 70,
            "a" * 5000,
            "/subscriptions/00000000-0000-0000-0000-000000000000",
            "Cognitive Services OpenAI User",
            "Owner",
        ]
    ),
)
field_values = st.one_of(nasty_text, json_values)
bodies = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "cluster": field_values,
            "namespace": field_values,
            "serviceAccount": field_values,
            "openAIAccount": field_values,
            "role": field_values,
            "extra": field_values,
        },
    ),
    st.builds(
        lambda d, k, v: {**d, k: v},
        st.just(
            {
                "cluster": CLUSTER_ID,
                "namespace": NAMESPACE,
                "serviceAccount": SERVICE_ACCOUNT,
                "openAIAccount": ACCOUNT_ID,
            }
        ),
        st.sampled_from(["cluster", "namespace", "serviceAccount", "openAIAccount", "role"]),
        field_values,
    ),
    json_values,
)
principals = st.one_of(
    st.just(principal_header()),
    st.none(),
    st.text(max_size=100),
    st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()),
    json_values.map(lambda v: base64.b64encode(json.dumps(v).encode()).decode()),
    st.lists(
        st.fixed_dictionaries({"typ": st.sampled_from(["oid", "groups", "roles", "name"]), "val": nasty_text}),
        max_size=5,
    ).map(lambda c: base64.b64encode(json.dumps({"claims": c}).encode()).decode()),
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "",
        "application/xml",
        "multipart/form-data",
        "APPLICATION/JSON",
    ]
)


def assert_json_answer(status: int, body: object) -> None:
    assert 200 <= status < 500, (status, body)
    assert isinstance(body, dict)
    text = json.dumps(body)
    assert "Traceback" not in text and 'File "' not in text


def assert_queue_allowed(host) -> None:
    """Any queued work names a binding the test policy grants the team (namespace team-a/b or ns-*)."""
    for raw in host.raw_messages():
        msg = json.loads(base64.b64decode(raw))
        record = composition.service().ledger.get(msg["key"])
        assert record is not None
        assert record.namespace in ("team-a", "team-b") or record.namespace.startswith("ns-")


@FUZZ
@given(body=bodies, principal=principals, content_type=content_types, dry_run=st.sampled_from(["", "true", "x"]))
def test_create_with_generated_bodies_headers_and_principals(host, body, principal, content_type, dry_run):
    headers = {"Content-Type": content_type}
    params = {"dryRun": dry_run} if dry_run else {}
    status, answer, resp = host.http(
        "onboardings_create",
        "POST",
        "/api/onboardings",
        raw=json.dumps(body).encode(),
        headers=headers,
        principal=principal,
        params=params,
    )
    STATS["http cases"] += 1
    STATS[f"http {status // 100}xx"] += 1
    assert_json_answer(status, answer)
    assert resp.mimetype == "application/json"
    assert_queue_allowed(host)


@FUZZ
@given(raw=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)), principal=principals)
def test_create_with_raw_bytes(host, raw, principal):
    status, answer, _ = host.http("onboardings_create", "POST", "/", raw=raw, principal=principal)
    STATS["http cases"] += 1
    STATS[f"http {status // 100}xx"] += 1
    assert_json_answer(status, answer)
    assert host.raw_messages() == []


@FUZZ
@given(
    key=nasty_text,
    principal=principals,
    method=st.sampled_from(["onboardings_get", "onboardings_delete"]),
    params=st.dictionaries(st.sampled_from(["cluster", "namespace", "pageSize", "continuationToken"]), nasty_text),
)
def test_get_delete_list_with_generated_ids_and_params(host, key, principal, method, params):
    status, answer, _ = host.http(method, "GET", "/", route_params={"id": key}, principal=principal)
    assert_json_answer(status, answer)
    status2, answer2, _ = host.http("onboardings_list", "GET", "/", params=params, principal=principal)
    assert_json_answer(status2, answer2)
    STATS["http cases"] += 2
    STATS[f"http {status // 100}xx"] += 1
    STATS[f"http {status2 // 100}xx"] += 1
    assert host.raw_messages() == []


events = st.fixed_dictionaries(
    {},
    optional={
        "id": field_values,
        "eventType": st.one_of(
            st.sampled_from(["Microsoft.Resources.ResourceWriteSuccess", "Microsoft.Resources.ResourceDeleteSuccess"]),
            field_values,
        ),
        "type": field_values,
        "subject": field_values,
        "specversion": st.sampled_from(["1.0", 1]),
        "data": st.one_of(
            json_values,
            st.fixed_dictionaries(
                {},
                optional={
                    "resourceUri": st.one_of(
                        nasty_text,
                        st.sampled_from(
                            [CLUSTER_ID, ACCOUNT_ID, CLUSTER_ID + "/agentPools/x", ACCOUNT_ID + "/deployments/d"]
                        ),
                    ),
                    "operationName": field_values,
                },
            ),
        ),
    },
)


@FUZZ
@given(event=events)
def test_event_grid_handler_never_raises(host, event):
    host.event(event)
    STATS["events"] += 1
    for raw in host.raw_messages():
        msg = json.loads(base64.b64decode(raw))
        assert msg["kind"] in ("cluster", "account")
        assert msg["id"].lower() in (CLUSTER_ID.lower(), ACCOUNT_ID.lower())
    host.queue.clear_messages()


# --- the cluster-tag path: generated tags on the cluster and on the account ------------------

VICTIM_SUB = "99999999-8888-4777-8666-555555555555"
VICTIM = f"/subscriptions/{VICTIM_SUB}/resourceGroups/rg-v/providers/Microsoft.CognitiveServices/accounts/oai-v"
CLUSTER_RG = CLUSTER_ID.split("/providers/")[0]
CLUSTER_SUB = "/".join(CLUSTER_ID.split("/")[:3])
TAG_FUZZ = settings(FUZZ, max_examples=max(EXAMPLES // 5, 25))

pairs = st.one_of(
    st.sampled_from(
        [
            f"{NAMESPACE}/{SERVICE_ACCOUNT}",
            f"{NAMESPACE}/x",
            "kube-system/a",
            f"{NAMESPACE}/default",
            "team-b/worker",
            "a:b/c",
            "/",
            "team-a/",
            "x/y/z",
        ]
    ),  # fmt: skip
    nasty_text,
)
near_misses = st.sampled_from(
    [
        "/subscriptions/", "/subscriptions", "/", "*", "", CLUSTER_RG[:-1], CLUSTER_RG + "/", CLUSTER_ID + "x",
        CLUSTER_ID[:-1], CLUSTER_RG + "/providers", CLUSTER_SUB + "/resourceGroups", CLUSTER_ID + "/..",
        CLUSTER_ID.replace("rg-aks", "rg-aks2"), f"/subscriptions/{VICTIM_SUB}", CLUSTER_SUB + "0",
        CLUSTER_ID.replace("/", "%2F"), CLUSTER_ID + "/agentPools/np1", CLUSTER_SUB.replace("-", ""),
    ]
)  # fmt: skip
consent_values = st.lists(st.one_of(near_misses, nasty_text), max_size=4).map(lambda items: ";".join(items)) | st.lists(
    near_misses, max_size=3
).map(" ".join)
account_tags = st.dictionaries(
    st.sampled_from(
        [
            "keyless-allowed-clusters",
            "Keyless-Allowed-Clusters",
            "keyless-allowed-clusters-2",
            "keyless-allowed",
            "allowed-clusters",
            "keyless-enforce",
        ]
    ),  # fmt: skip
    consent_values,
    max_size=3,
)


def consents(tags: dict[str, str]) -> bool:
    """The oracle: some entry of a consent tag is exactly the cluster, its group or its subscription."""
    names = {CLUSTER_ID.lower(), CLUSTER_RG.lower(), CLUSTER_SUB.lower()}
    for key, value in tags.items():
        if key.lower().startswith("keyless-allowed-clusters"):
            entries = value.replace(",", ";").replace(" ", ";").split(";")
            if any(e.strip().lower() in names for e in entries):
                return True
    return False


@TAG_FUZZ
@given(
    workloads=st.lists(pairs, max_size=5).map(" ".join),
    account=st.one_of(st.sampled_from([VICTIM, ACCOUNT_ID, "oai-team", VICTIM.upper()]), nasty_text),
    victim_tags=account_tags,
    own_tags=account_tags,
)
def test_cluster_tags_never_grant_without_the_accounts_consent(host, arm, kube, workloads, account, victim_tags,
                                                               own_tags):  # fmt: skip
    from tests.functions.test_app import cluster_event

    assume(not consents(victim_tags) and not consents(own_tags))
    if arm.cognitive_account(VICTIM) is None:
        arm.add_subscription(VICTIM_SUB)
        arm.add_resource_group(VICTIM_SUB, "rg-v")
        arm.add_cognitive_account(VICTIM)
    arm.set_tags(VICTIM, victim_tags)
    arm.set_tags(ACCOUNT_ID, own_tags)
    arm.set_tags(CLUSTER_ID, {"keyless-workloads": workloads[:256], "keyless-openai-account": account[:256]})
    host.event(cluster_event())
    host.drain()
    STATS["tag cases"] += 1
    assert host.failures == []
    assert arm.identities() == [] and arm.role_assignments() == [], "a binding was granted without consent"
    for record in composition.service().ledger.all():
        assert record.status in ("pending", "refused", "failed", "removed"), record.as_api()
        STATS[f"tag records {record.status}"] += 1


def test_zz_report_counts():
    """Prints what the generated suite tried (run with -s to see it)."""
    print("\nfuzz:", dict(STATS), "examples per test:", EXAMPLES)
    if STATS:
        assert STATS["http 5xx"] == 0
