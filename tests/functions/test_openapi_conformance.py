"""/api/openapi.json and the API's behaviour cannot drift apart.

Host.http (tests/functions/conftest.py) checks every answer any test gets against the document the
`openapi` function serves. These tests show that check bites (a field, a status or a header the
document does not name fails it), call every route once, and check the document itself.
"""

from __future__ import annotations

import inspect
import json
import typing
from collections import Counter

import azure.functions as func
import pytest
from openapi_spec_validator import validate

from handlers import api
from shared.app import composition
from shared.domain.records import Desired, RecordStatus
from shared.domain.results import Outcome
from shared.domain.verification import CheckStatus
from tests.conftest import ACCOUNT_ID, CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT
from tests.e2e.test_workloads import SECRET_LITERAL, ai_service
from tests.functions.conftest import PAGES, ROUTES, app_functions, conformance

REQUEST = {
    "cluster": CLUSTER_ID,
    "namespace": NAMESPACE,
    "serviceAccount": SERVICE_ACCOUNT,
    "openAIAccount": ACCOUNT_ID,
}


@pytest.fixture(autouse=True)
def no_pacing(monkeypatch):
    monkeypatch.setenv("KEYLESS_ARM_PACING_SCALE", "0")


def schema(name: str) -> dict:
    return conformance().document["components"]["schemas"][name]


# --- the document ---------------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1():
    document = conformance().document
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_one_way_to_sign_in_an_entra_token_and_no_function_key():
    """The API is anonymous at the Functions level behind App Service Authentication: the document declares
    the Entra bearer token for every route but the document itself and the health probe, and no key."""
    document = conformance().document
    schemes = document["components"]["securitySchemes"]
    assert schemes == {"entraId": schemes["entraId"]}
    assert schemes["entraId"]["type"] == "http" and schemes["entraId"]["scheme"] == "bearer"
    assert document["security"] == [{"entraId": []}]
    open_routes = {path for path, ops in document["paths"].items() for op in ops.values() if op.get("security") == []}
    assert open_routes == {"/openapi.json", "/health"}
    assert "x-functions-key" not in json.dumps(document)


def test_enums_are_the_codes_literals():
    props = schema("Onboarding")["properties"]
    assert props["status"]["enum"] == list(typing.get_args(RecordStatus))
    assert props["desired"]["enum"] == list(typing.get_args(Desired))
    assert schema("Step")["properties"]["outcome"]["enum"] == list(typing.get_args(Outcome))
    assert schema("Check")["properties"]["status"]["enum"] == list(typing.get_args(CheckStatus))
    assert schema("Verification")["properties"]["onboardingStatus"]["enum"] == list(typing.get_args(RecordStatus))


def test_the_page_size_limit_is_the_handlers():
    (page_size,) = [
        p for p in conformance().document["paths"]["/onboardings"]["get"]["parameters"] if p["name"] == "pageSize"
    ]
    assert page_size["schema"]["maximum"] == api.MAX_PAGE_SIZE


def test_every_http_function_is_checked_and_every_operation_has_one():
    """Every HTTP function is an operation of the document, but the team page's (PAGES: HTML for browsers)."""
    document = conformance().document
    operations = {(path, method) for path, item in document["paths"].items() for method in item}
    assert set(ROUTES.values()) == operations
    http = set()
    for name, fn in app_functions().items():
        first = next(iter(inspect.signature(fn).parameters))
        if typing.get_type_hints(fn).get(first) is func.HttpRequest:
            http.add(name)
    assert http == set(ROUTES) | PAGES
    assert not PAGES & set(ROUTES)


# --- the check bites ------------------------------------------------------------------------------


def test_a_field_status_or_header_the_document_does_not_name_fails_the_check(host, arm, kube):
    status, body, resp = host.http("onboardings_create", "POST", "/api/onboardings", REQUEST)
    assert status == 202
    check = conformance()
    request = b'{"cluster": "c", "namespace": "n", "serviceAccount": "s", "openAIAccount": "a"}'
    check.check("onboardings_create", status, body, resp, request)  # as it is, it passes

    changed = {
        "a new field": ({**body, "priority": 1}, "Additional properties"),
        "a status the code does not have": ({**body, "status": "paused"}, "is not one of"),
        "a field gone": ({k: v for k, v in body.items() if k != "updatedAt"}, "'updatedAt' is a required"),
        "a new field in a step": (
            {**body, "steps": [{"step": "identity", "outcome": "created", "note": "x"}]},
            "Additional properties",
        ),
        "half an identity": ({**body, "identity": {"clientId": "x"}}, "identity"),
        "null where the key is left out": (
            {**body, "steps": [{"step": "a", "outcome": "created", "reason": None}]},
            "None is not of type 'string'",
        ),
        "not a timestamp": ({**body, "createdAt": "yesterday"}, "date-time"),
    }
    for what, (answer, message) in changed.items():
        with pytest.raises(AssertionError, match=message):
            check.check("onboardings_create", status, answer, resp, request)
            pytest.fail(f"{what} passed the check")

    with pytest.raises(AssertionError, match="a status the document does not list"):
        check.check("onboardings_create", 418, body, resp, request)
    with pytest.raises(AssertionError, match="without its Location header"):
        check.check("onboardings_create", 202, body, func.HttpResponse("{}", mimetype="application/json"), request)
    with pytest.raises(AssertionError, match="as text/plain"):
        check.check("onboardings_create", 202, body, func.HttpResponse("{}", headers=dict(resp.headers)), request)
    error = func.HttpResponse("{}", status_code=404, mimetype="application/json")
    with pytest.raises(AssertionError, match="Additional properties"):
        check.check("onboardings_get", 404, {"error": {"code": "NotFound", "message": "m", "hint": "h"}}, error, b"")
    with pytest.raises(AssertionError, match="accepted a body the document refuses"):
        check.check_accepted_request("onboardings_create", b'{"cluster": "c", "namespace": "n"}')


# --- every route, as the document says ------------------------------------------------------------


def test_every_route_answers_as_the_document_says(host, arm, kube, monkeypatch):
    """One pass over the API, with a pod that still carries a key so that the verification has something
    to say about the account. Each answer is checked by Host.http; here, only that every route was."""
    ai_service(kube, extra_env=[{"name": "AZURE_OPENAI_API_KEY", "value": SECRET_LITERAL}])
    before = Counter(conformance().seen)

    def call(name: str, expect: int, body=None, key: str | None = None, **kw) -> dict:
        route = {"id": key} if key is not None else None
        status, answer, _ = host.http(name, ROUTES[name][1].upper(), "/", body, route_params=route, **kw)
        assert status == expect, (name, status, answer)
        return answer

    plan = call("onboardings_create", 200, REQUEST, params={"dryRun": "true"})
    assert {"id", "binding", "grantedBy", "plan"} == set(plan)
    created = call("onboardings_create", 202, REQUEST)
    key = created["id"]
    call("onboardings_create", 200, REQUEST)
    call("onboardings_create", 400, {**REQUEST, "namespace": "Bad_NS"})
    call("onboardings_create", 403, {**REQUEST, "namespace": "kube-system"})
    call("onboardings_create", 401, REQUEST, principal=None)
    call("onboardings_list", 200, params={"pageSize": "1"})
    call("onboardings_list", 400, params={"pageSize": "0"})
    call("onboardings_get", 200, key=key)
    call("onboardings_get", 404, key="0" * 32)
    call("onboardings_get", 400, key="not-an-id")
    call("onboardings_list", 400, params={"status": "broken"})
    call("me", 200)
    call("me", 401, principal=None)
    call("sweeps_latest", 404)
    call("sweeps_latest", 401, principal=None)
    host.drain()
    host.timer()
    host.drain()
    sweep = call("sweeps_latest", 200)
    assert sweep["shardsDone"] == sweep["shards"] == 1 and sweep["finishedAt"], sweep
    status = call("onboardings_get", 200, key=key)["status"]
    listed = call("onboardings_list", 200, params={"status": f"failed,{status}", "account": REQUEST["openAIAccount"]})
    assert [o["id"] for o in listed["value"]] == [key], listed
    assert call("onboardings_list", 200, params={"status": "failed"})["value"] == []

    record = call("onboardings_get", 200, key=key)
    assert record["identity"] and record["verification"], record
    report = call("onboardings_verification", 200, key=key)
    assert report["keylessAccount"]["wouldBreak"], report
    call("onboardings_verification", 404, key="0" * 32)
    call("onboardings_delete", 202, key=key)
    call("onboardings_verification", 409, key=key)
    call("onboardings_delete", 404, key="0" * 32)
    call("openapi", 200)
    call("health", 200)

    def unreachable() -> None:
        raise ConnectionError("storage is down")

    monkeypatch.setattr(composition.service().ledger, "ping", unreachable)
    assert call("health", 503)["status"] == "unhealthy"

    checked = conformance().seen - before
    assert {name for name, _ in checked} == set(ROUTES)
