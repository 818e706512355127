"""A live verification (or a dry run) reads Azure (a verification: three ARM reads, three Kubernetes reads
and the proof's requests) with Keyless's own identity, on its one read budget. A signed-in team member
looping on it could spend that budget, which the drift sweep, every team's onboardings and the revocations'
offboardings share: the one losing access could slow the loss. Each caller gets a handful of live reads a
minute; the worker's own verification after every run (in GET /api/onboardings/{id}) costs them nothing."""

from __future__ import annotations

from shared.adapters import counting
from shared.domain import retry_policy
from tests.conftest import ACCOUNT_ID, CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT
from tests.functions.conftest import TEAM_GROUP, principal_header

REQUEST = {
    "cluster": CLUSTER_ID,
    "namespace": NAMESPACE,
    "serviceAccount": SERVICE_ACCOUNT,
    "openAIAccount": ACCOUNT_ID,
}
TEAMMATE = principal_header(oid="ffffffff-0000-4000-8000-000000000007", groups=(TEAM_GROUP,), name="bob")


def verify(host, key, principal=None):
    kw = {} if principal is None else {"principal": principal}
    return host.http("onboardings_verification", "GET", "/", route_params={"id": key}, **kw)


def test_a_caller_looping_on_live_verification_is_held_to_their_share_and_azure_is_not_read(host):
    status, created, _ = host.http("onboardings_create", "POST", "/api/onboardings", REQUEST)
    assert status == 202
    host.drain()
    key = created["id"]
    for _ in range(retry_policy.LIVE_READS_PER_CALLER):
        status, report, _ = verify(host, key)
        assert status == 200, report

    before = counting.attempts()
    status, err, resp = verify(host, key)
    after = counting.attempts()
    assert status == 429 and err["error"]["code"] == "TooManyRequests", err
    wait = int(resp.headers["Retry-After"])
    assert 1 <= wait <= retry_policy.LIVE_READ_WINDOW_SECONDS, resp.headers
    assert "GET /api/onboardings/" in err["error"]["message"], "it says where the last verification is"
    for client in ("arm", "kube", "openai"):
        assert after.get(client, {}).get("attempts", 0) == before.get(client, {}).get("attempts", 0), client

    status, report, _ = verify(host, key, TEAMMATE)
    assert status == 200, "a teammate has a share of their own"
    status, shown, _ = host.http("onboardings_get", "GET", "/", route_params={"id": key})
    assert status == 200 and shown["verification"]["status"], "the worker's last verification is still there"


def test_dry_runs_draw_on_the_same_share(host):
    """A dry run reads Azure as a verification does (every step's read, nothing written)."""
    for _ in range(retry_policy.LIVE_READS_PER_CALLER):
        status, plan, _ = host.http("onboardings_create", "POST", "/", REQUEST, params={"dryRun": "true"})
        assert status == 200, plan
    before = counting.attempts()
    status, err, resp = host.http("onboardings_create", "POST", "/", REQUEST, params={"dryRun": "true"})
    assert status == 429 and err["error"]["code"] == "TooManyRequests" and "dry runs" in err["error"]["message"]
    assert int(resp.headers["Retry-After"]) >= 1
    assert counting.attempts().get("arm", {}) == before.get("arm", {}), "nothing read"
    status, created, _ = host.http("onboardings_create", "POST", "/", REQUEST)
    assert status == 202, "asking for it (the worker's run) needs no share"
