"""Verification end to end: the report after a good onboarding, and each failure provoked once.

Everything is read back through the real SDKs from the emulators; the pods are the ones the
emulated controller created and the emulated v1.6 webhook mutated (or did not).
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from shared.domain.binding import Binding
from tests.conftest import ACCOUNT_ID, CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT
from tests.e2e.test_workloads import AI, SECRET_LITERAL, ai_service, pods, with_workloads


@pytest.fixture
def settings(settings):
    """No client-side ARM pacing here: it would only add waits (Azure's limits are tested elsewhere)."""
    return dataclasses.replace(settings, arm_pacing_scale=0)


CLIENT_ID = "azure.workload.identity/client-id"


def statuses(report) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def pod_checks(report) -> list:
    return [c for c in report.checks if c.name.startswith("pod/")]


def onboarded(engine, kube, binding, *names):
    ai_service(kube)
    b = with_workloads(binding, *names) if names else binding
    assert engine.reconcile(b).status == "ready"
    return b


def test_a_keyless_workload_passes_every_check_with_evidence(arm, kube, engine, binding):
    b = onboarded(engine, kube, binding, AI)
    arm.log.clear()
    kube.log.clear()
    report = engine.verify(b)
    assert report.status == "pass", json.dumps(report.as_dict(), indent=1)
    names = statuses(report)
    assert {"identity", "service-account", "federated-credential", "role-assignment", "account"} <= set(names)
    assert len(pod_checks(report)) == 2
    identity = arm.identities()[0]["properties"]
    pod = pod_checks(report)[0].evidence
    assert pod["deployment"] == AI and pod["containers"]["app"]["clientId"] == identity["clientId"]
    assert pod["containers"]["app"]["tokenFile"] == "/var/run/secrets/azure/wi/token/azure-identity-token"
    assert pod["containers"]["app"]["tokenVolume"].startswith("azure-workload-identity-reserved-")
    cred = report.check("federated-credential").evidence
    assert cred["clusterIssuer"].endswith("/") and cred["matched"] == b.credential_name
    assert report.check("account").evidence["localAuthEnabled"] is True
    assert report.keyless_account["wouldBreak"] == []
    assert arm.log.writes() == [] and kube.log.writes() == [], "verification only reads"


def test_annotation_pointing_at_another_identity_fails_the_service_account_check(arm, kube, engine, binding):
    b = onboarded(engine, kube, binding)
    kube.put_object(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE, "annotations": {CLIENT_ID: "someone-else"}},
        },
        field_manager="kubectl",
    )
    check = engine.verify(b).check("service-account")
    assert check.status == "fail" and "client-id" in check.reason
    assert check.evidence["annotations"][CLIENT_ID] == "someone-else"


def test_a_recreated_cluster_with_a_new_issuer_fails_the_credential_check(arm, kube, settings, make_engine, binding):
    engine = make_engine(settings)
    b = onboarded(engine, kube, binding)
    new_issuer = arm.recreate_managed_cluster(CLUSTER_ID)
    check = make_engine(settings).verify(b).check("federated-credential")  # a fresh engine: no cached cluster
    assert check.status == "fail" and "another issuer" in check.reason
    assert check.evidence["clusterIssuer"] == new_issuer


def test_a_removed_role_assignment_fails_its_check(arm, kube, engine, binding):
    b = onboarded(engine, kube, binding)
    name = arm.role_assignments(ACCOUNT_ID)[0]["name"]
    engine.roles.delete(ACCOUNT_ID.split("/")[2], ACCOUNT_ID, name)
    check = engine.verify(b).check("role-assignment")
    assert check.status == "fail" and check.evidence["principalId"]


def test_pods_without_the_label_fail_and_name_the_problem(arm, kube, engine, binding):
    kube.put_object(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE}}
    )
    ai_service(kube, sa=SERVICE_ACCOUNT)
    assert engine.reconcile(binding).status == "ready"  # no workloads: the Deployment is left alone
    report = engine.verify(binding)
    assert report.status == "fail"
    checks = pod_checks(report)
    assert len(checks) == 2 and all(c.status == "fail" for c in checks)
    problems = checks[0].evidence["problems"]
    assert any("not labelled azure.workload.identity/use=true" in p for p in problems)
    assert any("API key in the environment: OPENAI_API_KEY (secret openai-api-secret)" in p for p in problems)
    assert report.keyless_account["wouldBreak"][0]["apiKeys"] == ["OPENAI_API_KEY (secret openai-api-secret)"]


def test_pods_created_before_the_annotation_need_a_restart(arm, kube, engine, binding):
    kube.put_object(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE}}
    )
    dep = ai_service(kube, sa=SERVICE_ACCOUNT)
    dep["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"] = "true"
    for container in dep["spec"]["template"]["spec"]["containers"]:
        container["env"] = [e for e in container["env"] if e["name"] != "OPENAI_API_KEY"]
    del dep["metadata"]["managedFields"]
    kube.put_object(dep, field_manager="helm")  # labelled before Keyless annotated the service account
    assert all("AZURE_CLIENT_ID" not in {e["name"] for e in p["spec"]["containers"][0]["env"]} for p in pods(kube))
    assert engine.reconcile(binding).status == "ready"
    report = engine.verify(binding)
    checks = pod_checks(report)
    assert checks and all(c.status == "fail" and c.reason.startswith("restart needed") for c in checks)
    assert all("not injected: AZURE_CLIENT_ID" in " ".join(c.evidence["problems"]) for c in checks)
    # naming the Deployment makes Keyless roll it: then everything passes
    assert engine.reconcile(with_workloads(binding, AI)).status == "ready"
    assert engine.verify(with_workloads(binding, AI)).status == "pass"


def test_a_rollout_under_way_is_pending_and_will_be_checked_again(arm, kube, engine, binding):
    ai_service(kube)
    kube.pod_start_seconds = 60
    b = with_workloads(binding, AI)
    assert engine.reconcile(b).status == "ready"
    report = engine.verify(b)
    assert report.status == "pending", json.dumps(report.as_dict(), indent=1)
    assert report.retry_after_seconds == 30
    assert {c.status for c in pod_checks(report)} == {"pending"}
    kube.clock.advance(61)
    assert engine.verify(b).status == "pass"


def test_no_pod_yet_is_pending(arm, kube, engine, binding):
    assert engine.reconcile(binding).status == "ready"
    report = engine.verify(binding)
    assert report.check("pods").status == "pending" and report.retry_after_seconds is None


def test_without_the_webhook_the_injection_is_missing(arm, kube, engine, binding):
    kube.webhook_enabled = False
    b = onboarded(engine, kube, binding, AI)
    checks = pod_checks(engine.verify(b))
    assert checks and all(c.status == "fail" for c in checks)
    assert "not injected: AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE" in checks[0].reason
    assert "no workload identity token volume" in checks[0].reason


def test_an_account_without_custom_subdomain_fails_its_check(arm, kube, settings, make_engine, binding):
    b = onboarded(make_engine(settings), kube, binding)
    arm.add_cognitive_account(ACCOUNT_ID, custom_subdomain=None)  # replaced in place
    check = make_engine(settings).verify(b).check("account")
    assert check.status == "fail" and "custom subdomain" in check.reason


def test_a_literal_key_never_appears_in_the_report(arm, kube, engine, binding):
    kube.put_object(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE}}
    )
    ai_service(kube, sa=SERVICE_ACCOUNT, extra_env=[{"name": "AZURE_OPENAI_API_KEY", "value": SECRET_LITERAL}])
    engine.reconcile(binding)
    report = engine.verify(binding)
    assert report.status == "fail"
    assert SECRET_LITERAL not in json.dumps(report.as_dict())


def test_a_missing_identity_fails_without_crashing(arm, kube, engine, binding):
    report = engine.verify(Binding.create(CLUSTER_ID, NAMESPACE, "nobody", ACCOUNT_ID))
    assert report.status == "fail"
    assert statuses(report)["identity"] == "fail" and statuses(report)["service-account"] == "fail"


# --------------------------------------------------------------------------- keyless accounts


def test_an_opted_in_account_goes_keyless_only_without_blockers_and_never_back(arm, kube, engine, binding):
    arm.set_tags(ACCOUNT_ID, {"keyless-enforce": "true"})
    account = binding.account
    waiting = engine.enforce_keyless_account(account, lambda: ["binding x is ready"])
    assert waiting.outcome == "not-yet" and waiting.details["wouldBreak"] == ["binding x is ready"]
    assert arm.log.writes() == []
    done = engine.enforce_keyless_account(account, list)
    assert done.outcome == "updated"
    assert arm.cognitive_account(ACCOUNT_ID)["properties"]["disableLocalAuth"] is True
    assert len(arm.log.matching("PATCH", "accounts/oai-team")) == 1


def test_an_account_that_did_not_opt_in_keeps_its_keys(arm, kube, engine, binding):
    assert engine.enforce_keyless_account(binding.account, list).outcome == "skipped"
    assert arm.log.writes() == []


def test_after_a_ready_run_the_worker_reads_only_the_pods(arm, kube, engine, binding):
    ai_service(kube)
    b = with_workloads(binding, AI)
    result = engine.reconcile(b)
    arm.log.clear()
    kube.log.clear()
    report = engine.verify(b, after=result)
    assert report.status == "pass", json.dumps(report.as_dict(), indent=1)
    assert report.check("federated-credential").evidence["issuer"].endswith("/")
    assert arm.log.items == [], "the run's own observations stand for the Azure side (the account is cached)"
    assert [r.path.rsplit("/", 1)[-1] for r in kube.log.items] == ["pods", "deployments"]
