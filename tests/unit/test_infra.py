"""What Keyless grants itself is exactly what its adapters use, and nothing broad."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

INFRA = Path(__file__).resolve().parents[2] / "infra"
ROLES = {p.stem: json.loads(p.read_text()) for p in (INFRA / "roles").glob("*.json")}

# The ARM operations the adapters perform (shared/adapters/*), as RBAC actions.
USED = {
    "Microsoft.ManagedIdentity/userAssignedIdentities/read",
    "Microsoft.ManagedIdentity/userAssignedIdentities/write",
    "Microsoft.ManagedIdentity/userAssignedIdentities/delete",
    "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/read",
    "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write",
    "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/delete",
    "Microsoft.Authorization/roleAssignments/read",
    "Microsoft.Authorization/roleAssignments/write",
    "Microsoft.Authorization/roleAssignments/delete",
    "Microsoft.ContainerService/managedClusters/read",
    "Microsoft.ContainerService/managedClusters/listClusterUserCredential/action",
    "Microsoft.CognitiveServices/accounts/read",
    "Microsoft.CognitiveServices/accounts/deployments/read",
}
OPTIONAL = {
    "Microsoft.ContainerService/managedClusters/write",
    "Microsoft.ContainerService/managedClusters/runCommand/action",
    "Microsoft.ContainerService/managedClusters/commandResults/read",
    "Microsoft.CognitiveServices/accounts/write",
}


def test_roles_are_well_formed_custom_roles():
    assert len(ROLES) >= 5
    for name, role in ROLES.items():
        assert role["IsCustom"] is True, name
        assert role["Description"] and role["Name"], name
        assert role["AssignableScopes"], name
        for action in role["Actions"] + role["DataActions"]:
            assert "*" not in action, f"{name}: wildcard {action}"


def test_control_plane_actions_are_exactly_what_the_adapters_use():
    granted = {a for r in ROLES.values() for a in r["Actions"]}
    assert USED <= granted, f"missing: {USED - granted}"
    assert granted <= USED | OPTIONAL, f"more than needed: {granted - USED - OPTIONAL}"
    authorization = {a for a in granted if a.startswith("Microsoft.Authorization/")}
    assert authorization == {f"Microsoft.Authorization/roleAssignments/{v}" for v in ("read", "write", "delete")}


def test_data_plane_actions_are_kubernetes_objects_and_sending_outcome_events_only():
    granted = {a for r in ROLES.values() for a in r["DataActions"]}
    kubernetes = {a for a in granted if a.startswith("Microsoft.ContainerService/managedClusters/")}
    assert granted - kubernetes == {"Microsoft.EventGrid/topics/events/send/action"}
    assert not any("secrets" in a for a in kubernetes), "Keyless never reads secrets"
    assert not any(a.startswith("Microsoft.CognitiveServices/") for a in granted), "no OpenAI data access, no keys"


def test_role_assignment_writes_are_constrained_to_the_allowlist():
    condition = (INFRA / "role-assignment-condition.txt").read_text()
    assert "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd" in condition
    assert "roleAssignments/write" in condition and "roleAssignments/delete" in condition
    assert "ServicePrincipal" in condition
    # Contributor, Owner, User Access Administrator never appear.
    for broad in (
        "b24988ac-6180-42a0-ab88-20f7382dd24c",
        "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
        "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
    ):
        assert broad not in condition


def test_kubernetes_rbac_is_narrow():
    docs = [d for d in yaml.safe_load_all((INFRA / "kubernetes" / "keyless-rbac.yaml").read_text()) if d]
    rules = [r for d in docs if d["kind"] == "ClusterRole" for r in d["rules"]]
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert "secrets" not in rule["resources"], "Keyless never reads secrets"
    cluster_wide = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    assert [b["roleRef"]["name"] for b in cluster_wide] == ["keyless-namespace-reader"]
