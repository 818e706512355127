"""The pure halves of workload enforcement and verification, with plain data."""

from __future__ import annotations

import json

import pytest

from shared.domain.errors import PermanentError
from shared.domain.observed import CredentialState, IdentityState, KubeObjectState
from shared.domain.verification import check_credential, check_pod, check_pods, check_service_account
from shared.domain.workloads import (
    BINDING_LABEL,
    IDENTITY_ANNOTATION,
    USE_LABEL,
    ApiKeyRules,
    DeploymentState,
    FieldOwner,
    apply_needed,
    config_fields,
    desired_config,
    fields_v1_paths,
    only_identity_changes,
    plan_deployment,
    plan_release,
    removals,
    target_containers,
    validate_workloads,
)

RULES = ApiKeyRules(("AZURE_OPENAI_API_KEY", "OPENAI_API_KEY"), ("*openai*key*", "*openai*secret*"))
CM = "keyless-app-oai"
DATA = {
    "AZURE_OPENAI_ENDPOINT": "https://x/",
    "AZURE_CLIENT_ID": "cid",
    "AZURE_TENANT_ID": "tid",
    "USE_AZURE_AD": "True",
}
KEY = "0123456789abcdef0123456789abcdef"
APP = 'k:{"name":"app"}'


def deploy(containers, sa="", labels=None, template_labels=None, annotations=None, owners=()) -> DeploymentState:
    spec = {"containers": containers}
    if sa:
        spec["serviceAccountName"] = sa
    template_meta = {"labels": {"app": "web", **(template_labels or {})}}
    if annotations:
        template_meta["annotations"] = annotations
    obj = {
        "metadata": {"name": "web", "namespace": "team", "labels": labels or {}, "generation": 1},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": template_meta, "spec": spec},
        },
        "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1},
    }
    return DeploymentState(obj, tuple(owners))


PLAN_ARGS = {"binding_key": KEY, "service_account": "app-sa", "configmap": CM, "configmap_data": DATA}


def config_for(d: DeploymentState, client_id="cid"):
    return desired_config(d, **PLAN_ARGS, client_id=client_id, manager="keyless", rules=RULES)


def plan_for(d: DeploymentState, client_id="cid"):
    return plan_deployment(d, **PLAN_ARGS, client_id=client_id, manager="keyless", rules=RULES)


def test_workloads_are_validated_sorted_and_deduplicated():
    assert validate_workloads(None) == ()
    assert validate_workloads(["b", "a", "b"]) == ("a", "b")
    for bad in ("Web", "a_b", "", "-a", 7):
        with pytest.raises(PermanentError, match="workloads"):
            validate_workloads([bad])
    with pytest.raises(PermanentError, match="at most 20"):
        validate_workloads([f"d{i}" for i in range(21)])
    with pytest.raises(PermanentError, match="list"):
        validate_workloads("web")


def test_api_keys_are_recognised_by_names_only():
    assert RULES.env_key({"name": "openai_api_key", "value": "x"}) == "variable openai_api_key"
    ref = {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "team-openai-secret", "key": "k"}}}
    assert RULES.env_key(ref) == "secret team-openai-secret"
    assert RULES.env_key({"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "p"}}}) is None
    assert RULES.env_from_key({"secretRef": {"name": "OpenAI-Key"}}) == "secret OpenAI-Key"
    assert RULES.env_from_key({"configMapRef": {"name": "openai-key"}}) is None


def test_the_containers_that_call_openai_are_targeted_never_guessed():
    single = deploy([{"name": "only", "image": "i"}])
    assert target_containers(single, CM, RULES) == ["only"]
    two = deploy([{"name": "side", "image": "i"}, {"name": "app", "env": [{"name": "AZURE_OPENAI_ENDPOINT"}]}])
    assert target_containers(two, CM, RULES) == ["app"]
    ambiguous = deploy([{"name": "a", "image": "i"}, {"name": "b", "image": "i"}])
    with pytest.raises(PermanentError, match="cannot tell which of its 2 containers"):
        target_containers(ambiguous, CM, RULES)


def test_fields_v1_paths_and_config_fields_speak_the_same_language():
    tree = {"f:spec": {"f:template": {"f:spec": {"f:containers": {APP: {".": {}, "f:name": {}, "f:envFrom": {}}}}}}}
    containers = ("f:spec", "f:template", "f:spec", "f:containers")
    assert fields_v1_paths(tree) == {containers + (APP,), containers + (APP, "f:name"), containers + (APP, "f:envFrom")}
    config = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "team"},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "envFrom": [{"configMapRef": {"name": CM}}]}]}}},
    }
    paths, leaves = config_fields(config)
    assert paths == fields_v1_paths(tree)
    assert (containers + (APP, "f:envFrom"), [{"configMapRef": {"name": CM}}]) in leaves


def test_the_config_takes_only_our_fields_and_the_applied_state_is_unchanged():
    d = deploy([{"name": "app", "env": [{"name": "AZURE_OPENAI_ENDPOINT", "value": "https://x/"}]}])
    config = config_for(d)
    assert config["metadata"]["labels"] == {BINDING_LABEL: KEY}
    template = config["spec"]["template"]
    assert template["metadata"] == {"labels": {USE_LABEL: "true"}, "annotations": {IDENTITY_ANNOTATION: "cid"}}
    assert template["spec"] == {
        "serviceAccountName": "app-sa",
        "containers": [{"name": "app", "envFrom": [{"configMapRef": {"name": CM}}]}],
    }
    assert apply_needed(d, config, "keyless")
    # the state after the apply: our values, our ownership
    applied = json.loads(json.dumps(d.obj))
    applied["metadata"]["labels"][BINDING_LABEL] = KEY
    applied["spec"]["template"]["metadata"]["labels"][USE_LABEL] = "true"
    applied["spec"]["template"]["metadata"]["annotations"] = {IDENTITY_ANNOTATION: "cid"}
    applied["spec"]["template"]["spec"]["serviceAccountName"] = "app-sa"
    applied["spec"]["template"]["spec"]["containers"][0]["envFrom"] = [{"configMapRef": {"name": CM}}]
    paths, _ = config_fields(config)
    after = DeploymentState(applied, (FieldOwner("keyless", "Apply", paths),))
    assert not apply_needed(after, config_for(after), "keyless")
    assert not plan_for(after).changes
    # a field we own but no longer want makes an apply necessary (server-side apply removes it)
    stale = DeploymentState(applied, (FieldOwner("keyless", "Apply", paths | {("f:metadata", "f:labels", "f:old")}),))
    assert apply_needed(stale, config_for(stale), "keyless")
    # only the client id changes: a rollout restart
    assert only_identity_changes(after, config_for(after, client_id="new"))
    assert plan_for(after, client_id="new").restart


def test_an_env_from_owned_by_another_manager_switches_to_keyed_env_entries():
    env_from = ("f:spec", "f:template", "f:spec", "f:containers", APP, "f:envFrom")
    theirs = FieldOwner("helm", "Update", frozenset({env_from}))
    d = deploy(
        [
            {
                "name": "app",
                "envFrom": [{"configMapRef": {"name": "theirs"}}],
                "env": [{"name": "AZURE_OPENAI_ENDPOINT", "value": "v"}],
            }
        ],
        owners=[theirs],
    )
    (container,) = config_for(d)["spec"]["template"]["spec"]["containers"]
    assert "envFrom" not in container
    assert [e["name"] for e in container["env"]] == ["USE_AZURE_AD"], "theirs win; the webhook's are left to it"
    # their envFrom already lists our ConfigMap: nothing to add
    d = deploy([{"name": "app", "envFrom": [{"configMapRef": {"name": CM}}]}], owners=[theirs])
    assert config_for(d)["spec"]["template"]["spec"]["containers"] == [{"name": "app"}]


def test_other_bindings_and_other_service_accounts_are_refused():
    with pytest.raises(PermanentError, match="enforced by another binding"):
        config_for(deploy([{"name": "app"}], labels={BINDING_LABEL: "other"}))
    with pytest.raises(PermanentError, match="runs as service account 'billing'"):
        config_for(deploy([{"name": "app"}], sa="billing"))
    assert (
        config_for(deploy([{"name": "app"}], sa="default"))["spec"]["template"]["spec"]["serviceAccountName"]
        == "app-sa"
    )


def test_removals_are_guarded_by_name_tests_last_index_first_and_show_no_value():
    app = {
        "name": "app",
        "env": [
            {"name": "AZURE_OPENAI_API_KEY", "value": "sk-literal"},
            {"name": "AZURE_CLIENT_ID", "value": "cid"},  # equal to the ConfigMap's: harmless, kept
            {"name": "USE_AZURE_AD", "value": "False"},  # shadows the ConfigMap's: removed
            {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "openai-secret", "key": "k"}}},
        ],
        "envFrom": [{"secretRef": {"name": "openai-keys"}}, {"configMapRef": {"name": "x"}}],
    }
    side = {"name": "side", "env": [{"name": "USE_AZURE_AD", "value": "False"}]}  # not a target: kept
    ops, removed = removals(deploy([app, side]), RULES, CM, DATA, targets=["app"])
    base = "/spec/template/spec/containers/0"
    assert ops == [
        {"op": "test", "path": f"{base}/env/3/name", "value": "KEY"},
        {"op": "remove", "path": f"{base}/env/3"},
        {"op": "test", "path": f"{base}/env/2/name", "value": "USE_AZURE_AD"},
        {"op": "remove", "path": f"{base}/env/2"},
        {"op": "test", "path": f"{base}/env/0/name", "value": "AZURE_OPENAI_API_KEY"},
        {"op": "remove", "path": f"{base}/env/0"},
        {"op": "test", "path": f"{base}/envFrom/0/secretRef/name", "value": "openai-keys"},
        {"op": "remove", "path": f"{base}/envFrom/0"},
    ]
    assert "sk-literal" not in json.dumps([ops, removed])
    assert [r["variable"] for r in removed] == ["KEY", "USE_AZURE_AD", "AZURE_OPENAI_API_KEY", "envFrom"]


def test_release_gives_back_only_when_we_own_something():
    assert plan_release(deploy([{"name": "app"}]), "keyless").apply is None
    owned = deploy([{"name": "app"}], owners=[FieldOwner("keyless", "Apply", frozenset({("f:metadata",)}))])
    assert plan_release(owned, "keyless").apply == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "team"},
    }


# --------------------------------------------------------------------------- verification

IDENTITY = IdentityState("id", "n", "eastus", "cid", "pid", "tid")
ISSUER = "https://eastus.oic.prod-aks.azure.com/tenant/uuid/"


def test_service_account_annotations_must_name_the_identity_and_its_tenant():
    def sa(annotations):
        return KubeObjectState(name="app-sa", namespace="team", annotations=annotations)

    good = {"azure.workload.identity/client-id": "cid", "azure.workload.identity/tenant-id": "tid"}
    assert check_service_account(sa(good), IDENTITY).status == "pass"
    other_tenant = check_service_account(sa({**good, "azure.workload.identity/tenant-id": "t2"}), IDENTITY)
    assert other_tenant.status == "fail" and "tenant-id annotation" in other_tenant.reason
    assert other_tenant.evidence["annotations"]["azure.workload.identity/tenant-id"] == "t2"
    assert check_service_account(None, IDENTITY).reason == "the service account does not exist"
    assert check_service_account(sa(good), None).reason == "the identity does not exist"


def test_the_issuer_is_compared_exactly_trailing_slash_included():
    subject = "system:serviceaccount:team:app-sa"
    good = CredentialState("c", ISSUER, subject)
    assert check_credential([good], IDENTITY, ISSUER, subject).status == "pass"
    slashless = CredentialState("c", ISSUER.rstrip("/"), subject)
    check = check_credential([slashless], IDENTITY, ISSUER, subject)
    assert check.status == "fail" and "another issuer" in check.reason
    other_subject = CredentialState("c", ISSUER, "system:serviceaccount:team:other")
    assert check_credential([other_subject], IDENTITY, ISSUER, subject).status == "fail"


def pod(env, labels=None, phase="Running", annotations=None, volumes=True) -> dict:
    vol = "azure-workload-identity-reserved-abc"
    spec = {
        "serviceAccountName": "app-sa",
        "containers": [
            {"name": "app", "env": env, "volumeMounts": [{"name": vol, "mountPath": "/var/run/secrets/azure/wi"}]}
        ],
        "volumes": [
            {
                "name": vol,
                "projected": {
                    "sources": [
                        {
                            "serviceAccountToken": {
                                "audience": "api://AzureADTokenExchange",
                                "path": "token/azure-identity-token",
                            }
                        }
                    ]
                },
            }
        ]
        if volumes
        else [],
    }
    meta = {"name": "web-1", "labels": {"app": "web", USE_LABEL: "true", **(labels or {})}}
    if annotations:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": spec, "status": {"phase": phase}}


INJECTED = [
    {"name": "AZURE_CLIENT_ID", "value": "cid"},
    {"name": "AZURE_TENANT_ID", "value": "tid"},
    {"name": "AZURE_FEDERATED_TOKEN_FILE", "value": "/var/run/secrets/azure/wi/token/azure-identity-token"},
    {"name": "AZURE_AUTHORITY_HOST", "value": "https://login.microsoftonline.com/"},
]


def test_pod_checks():
    rolled = deploy([{"name": "app"}])
    assert check_pod(pod(INJECTED), IDENTITY, [rolled], RULES).status == "pass"
    assert check_pod(pod(INJECTED, phase="Pending"), IDENTITY, [rolled], RULES).status == "pending"
    stale = [dict(e, value="old") if e["name"] == "AZURE_CLIENT_ID" else e for e in INJECTED]
    check = check_pod(pod(stale), IDENTITY, [rolled], RULES)
    assert check.status == "fail" and check.reason.startswith("restart needed")
    keyed = pod([*INJECTED, {"name": "OPENAI_API_KEY", "value": "sk-x"}])
    check = check_pod(keyed, IDENTITY, [rolled], RULES)
    assert check.status == "fail" and "sk-x" not in json.dumps(check.as_dict())
    rolling = deploy([{"name": "app"}])
    rolling.obj["status"]["updatedReplicas"] = 0
    assert check_pod(pod([]), IDENTITY, [rolling], RULES).status == "pending"
    skipped = pod([], annotations={"azure.workload.identity/skip-containers": "app"})
    assert check_pod(skipped, IDENTITY, [rolled], RULES).status == "pass", "skip-containers: nothing injected there"
    assert check_pod(pod(INJECTED, volumes=False), IDENTITY, [rolled], RULES).status == "fail"


def test_no_pod_is_pending_and_only_the_service_accounts_pods_count():
    other = pod(INJECTED)
    other["spec"]["serviceAccountName"] = "someone-else"
    (check,) = check_pods([other], "app-sa", IDENTITY, [], ("web",), RULES)
    assert check.name == "pods" and check.status == "pending"
