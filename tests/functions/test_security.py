"""Escalation attempts against the self-service API, each refused before anything is queued."""

from __future__ import annotations

import base64
import json

import pytest

from shared.app import composition
from tests.conftest import ACCOUNT_ID, CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT, SUB
from tests.functions.conftest import OTHER_GROUP, TEAM_OID, principal_header

REQUEST = {
    "cluster": CLUSTER_ID,
    "namespace": NAMESPACE,
    "serviceAccount": SERVICE_ACCOUNT,
    "openAIAccount": ACCOUNT_ID,
}
RG = f"/subscriptions/{SUB}/resourceGroups/rg-ai"


def post(host, body, **kw):
    return host.http("onboardings_create", "POST", "/api/onboardings", body, **kw)


@pytest.mark.parametrize(
    "change, status, field",
    [
        ({"namespace": "other-team"}, 403, "namespace"),
        ({"namespace": "kube-system"}, 403, "namespace"),
        ({"serviceAccount": "default"}, 403, "serviceAccount"),
        ({"role": "b24988ac-6180-42a0-ab88-20f7382dd24c"}, 400, "role"),  # Contributor: not on the allowlist
        ({"role": "Owner"}, 400, "role"),
        ({"openAIAccount": f"/subscriptions/{SUB}"}, 400, "openAIAccount"),
        ({"openAIAccount": RG}, 400, "openAIAccount"),
        ({"openAIAccount": f"{RG}/providers/Microsoft.Storage/storageAccounts/st1"}, 400, "openAIAccount"),
        ({"openAIAccount": f"{RG}/providers/Microsoft.KeyVault/vaults/kv1"}, 400, "openAIAccount"),
        ({"openAIAccount": ACCOUNT_ID + "/../../../providers/Microsoft.KeyVault/vaults/kv1"}, 400, "openAIAccount"),
        ({"openAIAccount": ACCOUNT_ID.replace("/accounts/", "%2Faccounts%2F")}, 400, "openAIAccount"),
        ({"openAIAccount": ACCOUNT_ID + "/deployments/gpt-4o"}, 400, "openAIAccount"),
        ({"openAIAccount": ACCOUNT_ID.replace("rg-ai", "rg-other")}, 403, "openAIAccount"),
        ({"cluster": CLUSTER_ID.replace("rg-aks", "rg-aks-evil")}, 403, "cluster"),
        ({"namespace": "team-a:evil"}, 400, "namespace"),
        ({"serviceAccount": "x:system:serviceaccount:kube-system:default"}, 400, "serviceAccount"),
        ({"serviceAccount": "a/b"}, 400, "serviceAccount"),
        ({"namespace": "team-a/x"}, 400, "namespace"),
    ],
)
def test_escalation_attempts_are_refused(host, change, status, field):
    code, err, _ = post(host, {**REQUEST, **change})
    assert code == status, err
    assert err["error"]["field"] == field
    assert host.raw_messages() == []
    assert list(composition.service().ledger.all()) == []


@pytest.mark.parametrize(
    "principal",
    [
        None,
        "",
        "%%%",
        base64.b64encode(b'{"claims": [{"typ": "oid", "val": "not-a-guid"}]}').decode(),
        base64.b64encode(b'{"claims": "x"}').decode(),
        base64.b64encode(json.dumps({"claims": [{"typ": "groups", "val": "x"}]}).encode()).decode(),
    ],
)
def test_missing_or_malformed_principal_is_401(host, principal):
    code, err, _ = post(host, REQUEST, principal=principal)
    assert code == 401 and err["error"]["field"] == "X-MS-CLIENT-PRINCIPAL"
    assert host.raw_messages() == []


def test_a_forged_group_claim_gets_nothing_the_policy_does_not_name(host):
    forged = principal_header(groups=("dddddddd-0000-4000-8000-000000000004",))
    code, err, _ = post(host, REQUEST, principal=forged)
    assert code == 403 and "no access-policy rule" in err["error"]["message"]


def test_another_teams_binding_cannot_be_read_deleted_or_listed(host):
    other = principal_header(oid="eeeeeeee-0000-4000-8000-000000000005", groups=(OTHER_GROUP,))
    code, created, _ = post(host, {**REQUEST, "namespace": "other-team"}, principal=other)
    assert code == 202, created
    key = created["id"]
    code, err, _ = host.http("onboardings_get", "GET", "/", route_params={"id": key})
    assert code == 404  # as an id that does not exist (tests/functions/test_list_privacy.py)
    code, err, _ = host.http("onboardings_delete", "DELETE", "/", route_params={"id": key})
    assert code == 404
    (record,) = composition.service().ledger.all()
    assert record.live
    _, listed, _ = host.http("onboardings_list", "GET", "/")
    assert listed["value"] == []
    _, theirs, _ = host.http("onboardings_list", "GET", "/", principal=other)
    assert [r["id"] for r in theirs["value"]] == [key]
    assert record.requested_by.startswith("eeeeeeee-0000-4000-8000-000000000005")


def test_dev_principal_only_when_set(host, monkeypatch):
    code, _, _ = post(host, REQUEST, principal=None)
    assert code == 401
    monkeypatch.setenv(
        "KEYLESS_DEV_PRINCIPAL", json.dumps({"oid": TEAM_OID, "groups": ["bbbbbbbb-0000-4000-8000-000000000002"]})
    )
    composition.reset()
    code, body, _ = post(host, REQUEST, principal=None)
    assert code == 202, body


def test_dev_principal_cannot_be_enabled_inside_azure(host, monkeypatch):
    monkeypatch.setenv("KEYLESS_DEV_PRINCIPAL", TEAM_OID)
    monkeypatch.setenv("WEBSITE_SITE_NAME", "keyless-prod")
    composition.reset()
    code, err, _ = post(host, REQUEST, principal=None)
    assert code == 503 and "KEYLESS_DEV_PRINCIPAL" in err["error"]["message"]
    assert host.raw_messages() == []


def test_subscription_allowlist(host, monkeypatch):
    monkeypatch.setenv("KEYLESS_ALLOWED_SUBSCRIPTIONS", "99999999-0000-0000-0000-000000000000")
    composition.reset()
    code, err, _ = post(host, REQUEST)
    assert code == 403 and err["error"]["field"] == "cluster"


def test_denials_are_logged_with_the_callers_object_id(host, caplog):
    post(host, {**REQUEST, "namespace": "other-team"})
    assert any(TEAM_OID in r.getMessage() and "denied" in r.getMessage() for r in caplog.records)
