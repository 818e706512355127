"""Workload enforcement end to end: the engine patches Deployments through the real `kubernetes`
client, the emulated controller rolls the pods, the emulated v1.6 webhook mutates them.

The workload is shaped like the seed's `ai-service` (aks-store-demo): an OpenAI key from a Secret
in the environment, endpoint and flags as literals, and a sidecar another tool owns.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from shared.domain.binding import Binding
from shared.domain.workloads import BINDING_LABEL, IDENTITY_ANNOTATION, USE_LABEL
from tests.conftest import ACCOUNT_ID, CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT


@pytest.fixture
def settings(settings):
    """No client-side ARM pacing here: it would only add waits (Azure's limits are tested elsewhere)."""
    return dataclasses.replace(settings, arm_pacing_scale=0)


AI = "ai-service"
STEP = f"deployment/{AI}"
SECRET_LITERAL = "sk-this-literal-must-never-leave-the-cluster"


def ai_service(kube, *, name=AI, sa="", replicas=2, env_from=None, extra_env=None, manager="helm") -> dict:
    env = [
        {"name": "USE_AZURE_OPENAI", "value": "True"},
        {"name": "AZURE_OPENAI_DEPLOYMENT_NAME", "value": "gpt-4o"},
        {"name": "AZURE_OPENAI_ENDPOINT", "value": "https://oai-team.openai.azure.com/"},
        {
            "name": "OPENAI_API_KEY",
            "valueFrom": {"secretKeyRef": {"name": "openai-api-secret", "key": "OPENAI_API_KEY"}},
        },
        *(extra_env or []),
    ]
    app = {"name": "app", "image": "ghcr.io/azure-samples/aks-store-demo/ai-service:2.1.0", "env": env}
    if env_from is not None:
        app["envFrom"] = env_from
    spec = {
        "containers": [
            app,
            {"name": "log-shipper", "image": "fluent/fluent-bit:3.1", "env": [{"name": "LOG_LEVEL", "value": "info"}]},
        ]
    }
    if sa:
        spec["serviceAccountName"] = sa
    return kube.put_object(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": name}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
            },
        },
        field_manager=manager,
    )


def with_workloads(binding: Binding, *names: str) -> Binding:
    return Binding.create(
        str(binding.cluster), binding.namespace, binding.service_account, str(binding.account), workloads=list(names)
    )


def pods(kube, name=AI) -> list[dict]:
    kube.sync()
    with kube._lock:
        return [s.obj for k, s in kube._objects.items() if k[0] == "Pod" and k[2].startswith(name + "-")]


def env(pod: dict, container: str = "app") -> dict[str, dict]:
    c = next(c for c in pod["spec"]["containers"] if c["name"] == container)
    return {e["name"]: e for e in c.get("env") or []}


def deployment(kube, name=AI) -> dict:
    return kube.get_object("Deployment", NAMESPACE, name)


# --------------------------------------------------------------------------- the story


def test_onboarding_with_workloads_rolls_keyless_pods_and_a_second_run_writes_nothing(arm, kube, engine, binding):
    ai_service(kube)
    before = {p["metadata"]["name"] for p in pods(kube)}
    assert len(before) == 2 and all("OPENAI_API_KEY" in env(p) for p in pods(kube))
    b = with_workloads(binding, AI)

    first = engine.reconcile(b)
    assert first.status == "ready", first.as_dict()
    step = first.step(STEP)
    assert step.outcome == "updated"
    assert step.details["removed"] == [
        {"container": "app", "variable": "OPENAI_API_KEY", "why": "secret openai-api-secret"}
    ]
    identity = arm.identities()[0]["properties"]

    dep = deployment(kube)
    template = dep["spec"]["template"]
    assert template["metadata"]["labels"][USE_LABEL] == "true"
    assert template["metadata"]["annotations"][IDENTITY_ANNOTATION] == identity["clientId"]
    assert template["spec"]["serviceAccountName"] == SERVICE_ACCOUNT
    assert dep["metadata"]["labels"][BINDING_LABEL] == b.key
    app, shipper = template["spec"]["containers"]
    assert app["envFrom"] == [{"configMapRef": {"name": b.configmap_name}}]
    assert "OPENAI_API_KEY" not in {e["name"] for e in app["env"]}
    assert shipper == {
        "name": "log-shipper",
        "image": "fluent/fluent-bit:3.1",
        "env": [{"name": "LOG_LEVEL", "value": "info"}],
        "imagePullPolicy": "IfNotPresent",
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "resources": {},
    }, "the sidecar is untouched"
    owners = {(m["manager"], m["operation"]) for m in dep["metadata"]["managedFields"]}
    assert ("keyless", "Apply") in owners and ("helm", "Update") in owners

    now = pods(kube)
    assert len(now) == 2 and not {p["metadata"]["name"] for p in now} & before, "new pods"
    for pod in now:
        assert pod["status"]["phase"] == "Running"
        assert pod["metadata"]["labels"][USE_LABEL] == "true"
        variables = env(pod)
        assert variables["AZURE_CLIENT_ID"]["value"] == identity["clientId"]
        assert variables["AZURE_TENANT_ID"]["value"] == identity["tenantId"]
        assert (
            variables["AZURE_FEDERATED_TOKEN_FILE"]["value"] == "/var/run/secrets/azure/wi/token/azure-identity-token"
        )
        assert "AZURE_AUTHORITY_HOST" in variables and "OPENAI_API_KEY" not in variables
        assert any(v["name"].startswith("azure-workload-identity-reserved-") for v in pod["spec"]["volumes"])

    kube.log.clear()
    arm.log.clear()
    second = engine.reconcile(b)
    assert second.status == "ready"
    assert second.step(STEP).outcome == "unchanged"
    assert second.requests.writes == 0 and kube.log.writes() == [] and arm.log.writes() == []


def test_dry_run_shows_the_exact_patches_writes_nothing_and_never_a_literal_value(arm, kube, engine, binding):
    ai_service(kube, extra_env=[{"name": "AZURE_OPENAI_API_KEY", "value": SECRET_LITERAL}])
    result = engine.reconcile(with_workloads(binding, AI), dry_run=True)
    assert kube.log.writes() == [] and arm.log.writes() == []
    step = result.step(STEP)
    assert step.outcome == "updated" and step.reason.startswith("would ")
    apply = step.details["serverSideApply"]
    assert apply["spec"]["template"]["metadata"]["labels"] == {USE_LABEL: "true"}
    assert apply["spec"]["template"]["spec"]["containers"] == [
        {"name": "app", "envFrom": [{"configMapRef": {"name": binding.configmap_name}}]}
    ], "only the container that calls OpenAI"
    assert step.details["jsonPatch"] == [
        {"op": "test", "path": "/spec/template/spec/containers/0/env/4/name", "value": "AZURE_OPENAI_API_KEY"},
        {"op": "remove", "path": "/spec/template/spec/containers/0/env/4"},
        {"op": "test", "path": "/spec/template/spec/containers/0/env/3/name", "value": "OPENAI_API_KEY"},
        {"op": "remove", "path": "/spec/template/spec/containers/0/env/3"},
    ]
    assert SECRET_LITERAL not in json.dumps(result.as_dict())
    # the real run applies exactly that, and the literal key is gone from the template
    done = engine.reconcile(with_workloads(binding, AI))
    assert done.status == "ready" and SECRET_LITERAL not in json.dumps(done.as_dict())
    assert SECRET_LITERAL not in json.dumps(deployment(kube))


def test_a_new_identity_restarts_the_rollout_and_says_so(arm, kube, engine, binding):
    ai_service(kube)
    b = with_workloads(binding, AI)
    assert engine.reconcile(b).status == "ready"
    old_pods = {p["metadata"]["name"] for p in pods(kube)}
    sub, rg = engine.identity_location(b)
    engine.identities.delete(sub, rg, b.identity_name)  # someone deleted it: Keyless makes a new one

    result = engine.reconcile(b)
    assert result.status == "ready", result.as_dict()
    assert result.step("identity").outcome == "created"
    assert result.step("service-account").outcome == "updated"
    step = result.step(STEP)
    assert step.outcome == "updated" and step.details["rolloutRestart"] is True
    assert "restart" in step.reason and "jsonPatch" not in step.details
    client_id = arm.identities()[0]["properties"]["clientId"]
    fresh = pods(kube)
    assert not {p["metadata"]["name"] for p in fresh} & old_pods
    assert all(env(p)["AZURE_CLIENT_ID"]["value"] == client_id for p in fresh)


def test_a_deployment_not_deployed_yet_is_not_yet_then_converges(arm, kube, engine, binding):
    b = with_workloads(binding, AI)
    first = engine.reconcile(b)
    assert first.status == "not-ready"
    assert first.step(STEP).outcome == "not-yet" and first.step(STEP).delay_seconds == 300
    assert first.step("configmap").outcome == "created", "everything before the workload is in place"
    ai_service(kube)
    assert engine.reconcile(b).step(STEP).outcome == "updated"


def test_a_deployment_running_as_another_service_account_is_refused(arm, kube, engine, binding):
    ai_service(kube, sa="billing")
    kube.put_object(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "billing", "namespace": NAMESPACE}}
    )
    result = engine.reconcile(with_workloads(binding, AI))
    assert result.status == "failed"
    assert "runs as service account 'billing'" in result.step(STEP).reason
    assert deployment(kube)["spec"]["template"]["spec"]["serviceAccountName"] == "billing"


def test_an_env_from_owned_by_another_tool_is_kept_and_keys_come_one_by_one(arm, kube, engine, binding):
    kube.put_object(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-settings", "namespace": NAMESPACE}}
    )
    ai_service(kube, env_from=[{"configMapRef": {"name": "app-settings"}}])
    b = with_workloads(binding, AI)
    result = engine.reconcile(b)
    assert result.status == "ready", result.as_dict()
    app = deployment(kube)["spec"]["template"]["spec"]["containers"][0]
    assert app["envFrom"] == [{"configMapRef": {"name": "app-settings"}}], "their atomic list is theirs"
    by_name = {e["name"]: e for e in app["env"]}
    assert by_name["USE_AZURE_AD"]["valueFrom"]["configMapKeyRef"] == {"name": b.configmap_name, "key": "USE_AZURE_AD"}
    assert by_name["AZURE_OPENAI_ENDPOINT"] == {
        "name": "AZURE_OPENAI_ENDPOINT",
        "value": "https://oai-team.openai.azure.com/",
    }, "the team's own value wins, as it would over envFrom"
    assert "AZURE_CLIENT_ID" not in by_name, "left to the webhook"
    kube.log.clear()
    assert engine.reconcile(b).step(STEP).outcome == "unchanged"
    assert kube.log.writes() == []


def test_variables_that_shadow_the_identity_settings_are_removed(arm, kube, engine, binding):
    ai_service(
        kube, extra_env=[{"name": "USE_AZURE_AD", "value": "False"}, {"name": "AZURE_CLIENT_ID", "value": "old"}]
    )
    result = engine.reconcile(with_workloads(binding, AI))
    removed = {r["variable"] for r in result.step(STEP).details["removed"]}
    assert removed == {"OPENAI_API_KEY", "USE_AZURE_AD", "AZURE_CLIENT_ID"}
    client_id = arm.identities()[0]["properties"]["clientId"]
    assert all(env(p)["AZURE_CLIENT_ID"]["value"] == client_id for p in pods(kube))


def test_offboarding_releases_the_deployment_before_the_configmap_goes(arm, kube, engine, binding):
    ai_service(kube)
    b = with_workloads(binding, AI)
    assert engine.reconcile(b).status == "ready"
    out = engine.offboard(b)
    assert out.status == "removed", out.as_dict()
    assert [s.step for s in out.steps] == [
        *("role-assignment", "federated-credential", "identity"),  # Azure's access first
        *(STEP, "configmap", "service-account"),  # the Deployment lets go of the ConfigMap before it goes
    ]
    assert out.step(STEP).outcome == "updated"
    dep = deployment(kube)
    template = dep["spec"]["template"]
    assert USE_LABEL not in template["metadata"]["labels"]
    assert "serviceAccountName" not in template["spec"] and "envFrom" not in template["spec"]["containers"][0]
    assert BINDING_LABEL not in dep["metadata"]["labels"]
    assert "keyless" not in {m["manager"] for m in dep["metadata"]["managedFields"] if m["operation"] == "Apply"}
    assert all(p["status"]["phase"] == "Running" for p in pods(kube)), "pods roll back without a missing ConfigMap"
    kube.log.clear()
    again = engine.offboard(b)
    assert again.status == "removed" and kube.log.writes() == []


def test_a_deployment_dropped_from_the_workloads_is_released(arm, kube, engine, binding):
    ai_service(kube)
    ai_service(kube, name="ai-batch")
    assert engine.reconcile(with_workloads(binding, AI, "ai-batch")).status == "ready"
    result = engine.reconcile(with_workloads(binding, AI))
    assert result.step("deployment/ai-batch").outcome == "updated"
    assert "no longer named" in result.step("deployment/ai-batch").reason
    assert BINDING_LABEL not in deployment(kube, "ai-batch")["metadata"]["labels"]
    assert deployment(kube, AI)["metadata"]["labels"][BINDING_LABEL] == binding.key
    result = engine.reconcile(binding)  # no workloads at all: the last one is released too
    assert result.step(STEP).outcome == "updated"
    kube.log.clear()
    assert engine.reconcile(binding).requests.kube_writes == 0


def test_one_binding_per_deployment(arm, kube, engine, binding):
    ai_service(kube)
    assert engine.reconcile(with_workloads(binding, AI)).status == "ready"
    other_account = ACCOUNT_ID.replace("oai-team", "oai-two")
    arm.add_cognitive_account(other_account)
    other = Binding.create(CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT, other_account, workloads=[AI])
    result = engine.reconcile(other)
    assert result.status == "failed" and "enforced by another binding" in result.step(STEP).reason


@pytest.mark.parametrize("crash_after", ["configmap", STEP])
def test_crash_then_rerun_converges(arm, kube, engine, binding, crash_after):
    class Crash(BaseException):
        pass

    def crash(_binding, outcome):
        if outcome.step == crash_after:
            raise Crash

    ai_service(kube)
    b = with_workloads(binding, AI)
    with pytest.raises(Crash):
        engine.reconcile(b, on_step=crash)
    assert engine.reconcile(b).status == "ready"
    kube.log.clear()
    assert engine.reconcile(b).requests.writes == 0
