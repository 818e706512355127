"""scripts/grant-kubernetes-rbac (issue 21): what Keyless needs inside a Kubernetes-RBAC cluster, applied by a
cluster admin in one command through `az aks command invoke` (private clusters too), run here with a stand-in
`az` that keeps the files it was given and answers as the cluster would."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "grant-kubernetes-rbac"
RBAC = ROOT / "infra" / "kubernetes" / "keyless-rbac.yaml"
CLUSTER = (
    "/subscriptions/0000000a-aaaa-bbbb-cccc-dddddddddddd/resourceGroups/rg-aks"
    "/providers/Microsoft.ContainerService/managedClusters/aks1"
)
PRINCIPAL = "4f3c2b1a-0000-4000-8000-00000000abcd"

AZ = """#!/bin/sh
echo "az $*" >> "$STATE/calls"
prev=""
for a in "$@"; do
  [ "$prev" = "--file" ] && cp "$a" "$STATE/applied.yaml"
  prev=$a
done
cat "$STATE/answer"
"""


@pytest.fixture
def world(tmp_path):
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    (bin_dir / "az").write_text(AZ)
    (bin_dir / "az").chmod(stat.S_IRWXU)
    (state / "answer").write_text(
        "clusterrole.rbac.authorization.k8s.io/keyless-namespace-reader created\nkeyless-rbac: applied\n"
    )
    env = os.environ | {"PATH": f"{bin_dir}:/usr/bin:/bin", "STATE": str(state)}

    class World:
        state_dir = state

        def run(self, *args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["sh", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60)

        def calls(self) -> list[str]:
            path = state / "calls"
            return path.read_text().splitlines() if path.exists() else []

        def applied(self) -> list[dict]:
            return [d for d in yaml.safe_load_all((state / "applied.yaml").read_text()) if d]

    return World()


def test_applies_the_repositorys_rbac_for_the_principal_in_each_namespace_through_run_command(world):
    result = world.run(CLUSTER, PRINCIPAL, "--namespace", "team-a", "--namespace", "team-b")
    assert result.returncode == 0, result.stderr
    (call,) = world.calls()
    assert call.startswith("az aks command invoke ")
    for part in ("--subscription 0000000a-aaaa-bbbb-cccc-dddddddddddd", "--resource-group rg-aks", "--name aks1"):
        assert part in call
    assert "kubectl apply -f keyless-rbac.yaml" in call
    applied = world.applied()
    written = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    roles = {d["metadata"]["name"]: d["rules"] for d in applied if d["kind"] == "ClusterRole"}
    assert roles == {d["metadata"]["name"]: d["rules"] for d in written if d["kind"] == "ClusterRole"}
    (cluster_binding,) = [d for d in applied if d["kind"] == "ClusterRoleBinding"]
    bindings = [d for d in applied if d["kind"] == "RoleBinding"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in [cluster_binding, *bindings]:
        assert binding["subjects"] == [{"kind": "User", "name": PRINCIPAL, "apiGroup": "rbac.authorization.k8s.io"}]
    assert all(b["roleRef"]["name"] == "keyless-workload-binder" for b in bindings)
    lines = (world.state_dir / "applied.yaml").read_text().splitlines()
    assert not [line for line in lines if "<" in line and not line.lstrip().startswith("#")], "placeholders filled"
    assert "keyless-rbac: applied" in result.stdout


def test_without_namespaces_only_the_cluster_wide_part_is_applied_and_it_says_so(world):
    result = world.run(CLUSTER, PRINCIPAL)
    assert result.returncode == 0, result.stderr
    assert [d["kind"] for d in world.applied() if d["kind"].endswith("Binding")] == ["ClusterRoleBinding"]
    assert "--namespace" in result.stdout


def test_a_failed_apply_fails_with_the_clusters_words(world):
    (world.state_dir / "answer").write_text('Error from server (NotFound): namespaces "team-x" not found\n')
    result = world.run(CLUSTER, PRINCIPAL, "--namespace", "team-x")
    assert result.returncode == 1
    assert 'namespaces "team-x" not found' in result.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        ((CLUSTER,), "usage"),
        (("/subscriptions/x/resourceGroups/g", PRINCIPAL), "cluster id"),
        ((CLUSTER, "keyless"), "principal"),
        ((CLUSTER, PRINCIPAL, "--namespace", "Team_A"), "namespace"),
        ((CLUSTER, PRINCIPAL, "--namespace"), "namespace"),
    ],
    ids=["missing-principal", "bad-cluster", "bad-principal", "bad-namespace", "namespace-without-value"],
)
def test_bad_input_is_refused_naming_the_argument_before_any_call(world, args, said):
    result = world.run(*args)
    assert result.returncode == 2
    assert said in result.stderr.lower()
    assert world.calls() == []
