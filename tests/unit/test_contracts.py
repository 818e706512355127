"""The wire models (shared.app.contracts) against the code that makes and reads the wire.

The responses: what the domain's `as_api` / `as_dict` produce validates, and nothing else does.
The request: the document is never stricter than the handler (whatever Binding.create takes, the
model takes), and its DNS-1123 patterns are the domain's. The policy document: what the parser
refuses, the model refuses too.
"""

from __future__ import annotations

import json
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from handlers._http import ApiError
from shared.app import contracts
from shared.domain.binding import Binding, validate_namespace, validate_service_account
from shared.domain.errors import PermanentError
from shared.domain.policy import AccessPolicy, PolicyError
from shared.domain.records import BindingRecord, RecordStatus
from shared.domain.results import ReconcileResult, StepOutcome
from shared.domain.verification import Check, VerificationReport
from shared.domain.workloads import validate_workloads

SUB = "00000000-0000-0000-0000-000000000001"
RG = f"/subscriptions/{SUB}/resourceGroups/rg"
CLUSTER = f"{RG}/providers/Microsoft.ContainerService/managedClusters/aks1"
ACCOUNT = f"{RG}/providers/Microsoft.CognitiveServices/accounts/oai1"
GROUP = "bbbbbbbb-0000-4000-8000-000000000002"
ROLE = "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd"
KEYED = {"namespace": "team-a", "pod": "p-1", "serviceAccount": None, "container": "app", "apiKeys": ["K (literal)"]}


def binding(**kw) -> Binding:
    return Binding.create(CLUSTER, "team-a", "chat-api", ACCOUNT, workloads=kw.get("workloads"))


def ran(dry_run: bool = False) -> ReconcileResult:
    result = ReconcileResult(binding().key, "present", dry_run=dry_run)
    result.steps = [
        StepOutcome("identity", "created", details={"name": "keyless-aks1-team-a"}),
        StepOutcome("federated-credential", "created"),
        StepOutcome("role-assignment", "not-yet", "waiting for replication", delay_seconds=5.0),
    ]
    result.identity = {"resourceId": "/x/id", "clientId": "c", "principalId": "p", "tenantId": "t"}
    result.credential = {
        "name": "cred",
        "issuer": "https://issuer/",
        "subject": "system:serviceaccount:team-a:chat-api",
    }
    result.kube_objects = ["ServiceAccount/team-a/chat-api"]
    return result


def report() -> VerificationReport:
    out = VerificationReport(binding().key, [Check("role-assignment", "pass", evidence={"id": "ra"})])
    out.checks.append(Check("pod/p-1", "fail", "API key in the environment", {"phase": "Running"}))
    out.keyless_account = {"account": ACCOUNT, "localAuthEnabled": True, "optedIn": None, "wouldBreak": [KEYED]}
    return out


# --- responses ------------------------------------------------------------------------------------


def test_a_new_record_is_an_onboarding():
    record = BindingRecord.for_binding(binding(), requested_by="alice", source="api")
    contracts.Onboarding.model_validate(record.as_api())


def test_a_record_after_runs_and_a_verification_is_an_onboarding():
    record = BindingRecord.for_binding(binding(workloads=["chat"]), requested_by="alice", source="api")
    record.record_result(ran())
    assert record.as_api()["nextAttemptAt"]
    contracts.Onboarding.model_validate(record.as_api())
    done = ran()
    done.steps = done.steps[:2]
    done.verification = report()
    record.record_result(done)
    assert record.as_api()["verification"]["wouldBreak"]
    record.revoked_at, record.offboard_at = "2030-01-01T00:00:00.000Z", "2030-01-02T00:00:00Z"
    contracts.Onboarding.model_validate(record.as_api())


@pytest.mark.parametrize("status", typing.get_args(RecordStatus))
def test_every_record_status_is_an_onboarding_status(status):
    record = BindingRecord.for_binding(binding(), requested_by="alice", source="api")
    record.status = status
    contracts.Onboarding.model_validate(record.as_api())


@pytest.mark.parametrize(
    "change",
    [
        {"status": "paused"},
        {"priority": 1},
        {"identity": {"clientId": "c"}},
        {"lastRequests": {"armReads": 1}},
        {"attempts": "1"},
        {"createdAt": None},
        {"steps": [{"step": "s", "outcome": "created", "reason": None}]},
    ],
)
def test_an_onboarding_is_closed_and_exact(change):
    body = BindingRecord.for_binding(binding(), requested_by="alice", source="api").as_api()
    with pytest.raises(ValidationError):
        contracts.Onboarding.model_validate({**body, **change})


def test_the_dry_run_answer_is_a_plan():
    contracts.Plan.model_validate(
        {"id": binding().key, "binding": binding().describe(), "grantedBy": "rule 'a'", "plan": ran(True).as_dict()}
    )


def test_the_verification_report_is_a_verification():
    body = report()
    body.keyless_account.update(blockers=["binding x is ready"], hiddenBlockers=2)
    contracts.Verification.model_validate({**body.as_dict(), "onboardingStatus": "ready"})
    without_account = VerificationReport(binding().key)
    contracts.Verification.model_validate({**without_account.as_dict(), "onboardingStatus": "not-ready"})
    with pytest.raises(ValidationError):  # the handler always says the onboarding's status
        contracts.Verification.model_validate(without_account.as_dict())


@pytest.mark.parametrize("field", [None, "namespace"])
def test_an_api_error_is_an_error(field):
    response = ApiError(400, "InvalidField", "bad", field).response()
    contracts.Error.model_validate(json.loads(response.get_body()))


# --- the request ----------------------------------------------------------------------------------

label_like = st.one_of(
    st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,70}[a-z0-9])?", fullmatch=True),
    st.text(alphabet="abz09-._A \n", max_size=80),
    st.text(max_size=10),
)


def accepts(validate, value) -> bool:
    try:
        validate(value)
    except PermanentError:
        return False
    return True


def model_accepts(**fields) -> bool:
    body = {"cluster": CLUSTER, "namespace": "team-a", "serviceAccount": "chat-api", "openAIAccount": ACCOUNT}
    try:
        contracts.OnboardingRequest.model_validate({**body, **fields})
    except ValidationError:
        return False
    return True


@settings(max_examples=300, deadline=None, derandomize=True)
@given(value=label_like)
def test_the_request_names_what_the_domain_takes(value):
    assert model_accepts(namespace=value) == accepts(validate_namespace, value)
    assert model_accepts(serviceAccount=value) == accepts(validate_service_account, value)
    assert model_accepts(workloads=[value]) == accepts(validate_workloads, [value])


def test_the_request_limits_are_the_domains():
    assert model_accepts(workloads=[f"w{i}" for i in range(20)]) and not model_accepts(workloads=["w"] * 21)
    assert not accepts(validate_workloads, ["w"] * 21)
    assert model_accepts(role=None, workloads=None)
    assert not model_accepts(owner="me")


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    role=st.one_of(st.none(), st.just(""), st.just(ROLE), st.just("Cognitive Services OpenAI User")),
    workloads=st.one_of(st.none(), st.lists(st.sampled_from(["chat", "chat", "a.b", "x-1"]), max_size=5)),
    namespace=label_like,
)
def test_what_the_handler_takes_the_document_takes(role, workloads, namespace):
    body = {"cluster": CLUSTER, "namespace": namespace, "serviceAccount": "sa", "openAIAccount": ACCOUNT}
    body.update(role=role, workloads=workloads)
    try:
        Binding.create(CLUSTER, namespace, "sa", ACCOUNT, role, workloads=workloads)
    except PermanentError:
        return
    contracts.OnboardingRequest.model_validate(body)


# --- the access policy document -------------------------------------------------------------------

FULL_RULE = {
    "name": "team-a",
    "principals": {"groups": [GROUP], "roles": ["Keyless.Onboard"], "objectIds": [GROUP]},
    "clusters": [RG],
    "namespaces": ["team-a", "team-a-*"],
    "serviceAccounts": ["*"],
    "accounts": [ACCOUNT],
    "roles": [ROLE],
    "workloads": ["chat-*"],
    "maxBindings": 50,
}


def test_a_policy_with_every_field_is_a_policy_document():
    doc = {"rules": [FULL_RULE, {"principals": {"clusterTags": True}, "clusters": [CLUSTER], "namespaces": ["x"]}]}
    contracts.AccessPolicyDocument.model_validate(doc)
    assert len(AccessPolicy.parse(json.dumps(doc), (), ROLE).rules) == 2


def test_the_test_suites_policy_is_a_policy_document():
    from tests.functions.conftest import access_policy

    contracts.AccessPolicyDocument.model_validate(access_policy())


@pytest.mark.parametrize(
    "change",
    [
        {"namespaces": [""]},
        {"namespaces": "team-a"},
        {"maxBindings": -1},
        {"maxBindings": True},
        {"principals": {"groups": [GROUP], "clusterTags": "yes"}},
        {"principals": [GROUP]},
    ],
)
def test_what_the_parser_refuses_the_document_refuses(change):
    doc = {"rules": [{**FULL_RULE, **change}]}
    with pytest.raises(PolicyError):
        AccessPolicy.parse(json.dumps(doc), (), ROLE)
    with pytest.raises(ValidationError):
        contracts.AccessPolicyDocument.model_validate(doc)


def test_a_misspelt_key_is_refused_by_the_document():
    """The parser ignores unknown keys, so `serviceAccount` (for serviceAccounts) would silently leave the
    default `*`; the document names the mistake."""
    doc = {"rules": [{**FULL_RULE, "serviceAccount": ["chat-api"]}]}
    with pytest.raises(ValidationError, match="serviceAccount"):
        contracts.AccessPolicyDocument.model_validate(doc)
