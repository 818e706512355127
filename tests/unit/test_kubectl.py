"""Commands, manifests and output parsing for Kubernetes through the AKS run-command API."""

from __future__ import annotations

import base64
import io
import json
import zipfile

import yaml

from shared.adapters.runcommand import command_context
from shared.domain import kubectl


def test_commands_quote_every_argument_and_keep_manifests_in_files():
    assert kubectl.get_command("team-a", ["namespace/team-a", "serviceaccount/chat-api"]) == (
        "kubectl get namespace/team-a serviceaccount/chat-api -n team-a"
        " -o json --ignore-not-found --show-managed-fields"
    )
    assert kubectl.list_command("deployments", "team-a", "keyless.io/binding=abc") == (
        "kubectl get deployments -n team-a -l keyless.io/binding=abc -o json --show-managed-fields"
    )
    assert "--field-manager='keyless team'" in kubectl.apply_command("keyless team")
    assert kubectl.apply_command("keyless").endswith("-f keyless.yaml")
    assert "--patch-file patch.json" in kubectl.patch_command("deployment/web", "team-a", "keyless")
    assert (
        kubectl.delete_command("configmap/x", "team-a")
        == "kubectl delete configmap/x -n team-a --ignore-not-found -o name"
    )


def test_manifest_and_patch_files():
    objs = [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "a"}}, {"kind": "ConfigMap"}]
    assert list(yaml.safe_load_all(kubectl.manifest(objs))) == objs
    assert json.loads(kubectl.patch_file([{"op": "remove", "path": "/x"}])) == [{"op": "remove", "path": "/x"}]


def test_objects_are_read_back_out_of_the_logs():
    listing = {"apiVersion": "v1", "kind": "List", "items": [{"kind": "Namespace", "metadata": {"name": "ns"}}]}
    single = {"kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"k": "{not json}"}}
    logs = "Warning: something {odd}\n" + json.dumps(listing, indent=2) + "\n" + json.dumps(single) + "\ntrailing"
    objects = kubectl.parse_objects(logs)
    assert [o["kind"] for o in objects] == ["Namespace", "ConfigMap"]
    assert kubectl.find(objects, "ConfigMap", "cm") == single
    assert kubectl.find(objects, "ConfigMap", "other") is None
    assert kubectl.parse_objects("") == [] and kubectl.parse_objects("No resources found") == []


def test_the_context_is_a_base64_zip_of_the_files():
    context = command_context({"keyless.yaml": "a: 1\n", "patch.json": "[]"})
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(context))) as archive:
        assert sorted(archive.namelist()) == ["keyless.yaml", "patch.json"]
        assert archive.read("keyless.yaml") == b"a: 1\n"


def test_judge_tells_success_retryable_and_permanent_failures_apart():
    assert kubectl.judge("Succeeded", 0, "", "configmap/x serverside-applied") is None
    assert kubectl.judge("succeeded", None, "", "") is None
    pod = kubectl.judge("failed", None, "ImagePullBackoff", "")
    assert pod.temporary and "did not run (ImagePullBackoff)" in pod.message
    conflict = kubectl.judge("succeeded", 1, "", 'Error from server (Conflict): configmaps "x": the object changed')
    assert conflict.temporary and "exit 1" in conflict.message
    refused = kubectl.judge("succeeded", 1, "", "error: dial tcp: The connection to the server x was refused")
    assert refused.temporary
    denied = kubectl.judge("succeeded", 1, "", 'Error from server (Forbidden): serviceaccounts "a" is forbidden')
    assert not denied.temporary and "infra/" in denied.message
    invalid = kubectl.judge("succeeded", 1, "", 'Error from server (Invalid): Deployment.apps "x" is invalid')
    assert not invalid.temporary
    long_logs = "\n".join(f"error: line {i}" for i in range(100))
    assert kubectl.judge("succeeded", 2, "", long_logs).message.endswith("line 97 | error: line 98 | error: line 99")


def test_judge_keeps_only_kubectl_error_lines_never_printed_values():
    printed = json.dumps({"items": [{"env": [{"name": "OPENAI_API_KEY", "value": "sk-literal"}]}]}, indent=2)
    failure = kubectl.judge("succeeded", 1, "", printed + "\nError from server (InternalError): etcd timeout\n")
    assert "sk-literal" not in failure.message and "OPENAI_API_KEY" not in failure.message
    assert failure.message.endswith("Error from server (InternalError): etcd timeout") and failure.temporary
    assert "no output" in kubectl.judge("succeeded", 3, "", printed).message


def test_values_the_api_server_quotes_back_are_masked():
    logs = (
        'Error from server (Invalid): Deployment.apps "web" is invalid: spec.template.spec.containers[0].env[1].value: '
        'Invalid value: "sk-a \\"quoted\\" key": must be no more than 10 characters'
    )
    failure = kubectl.judge("succeeded", 1, "", logs)
    assert "sk-a" not in failure.message and 'Invalid value: "…"' in failure.message
    assert 'Deployment.apps "web" is invalid' in failure.message, "names stay: they say what failed"
