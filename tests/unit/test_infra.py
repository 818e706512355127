"""What Keyless grants itself is exactly what its adapters use, and nothing broad."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from shared.domain.binding import OPENAI_USER_ROLE_ID

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
    # shared/adapters/roles.py data_actions: the access proof's diagnosis reads the role at the account.
    "Microsoft.Authorization/roleDefinitions/read",
    "Microsoft.ContainerService/managedClusters/read",
    "Microsoft.ContainerService/managedClusters/listClusterUserCredential/action",
    "Microsoft.CognitiveServices/accounts/read",
    "Microsoft.CognitiveServices/accounts/deployments/read",
}
# Optional grants, each in a role of its own (file stem -> its actions, and the setting that needs it),
# so that an operator can leave out exactly what a setting turned off does not use.
OPTIONAL_ROLES = {
    "keyless-cluster-feature-enabler": (
        {"Microsoft.ContainerService/managedClusters/write"},
        "KEYLESS_ENABLE_CLUSTER_FEATURES",
    ),
    "keyless-run-command": (
        {
            "Microsoft.ContainerService/managedClusters/runCommand/action",
            "Microsoft.ContainerService/managedClusters/commandResults/read",
        },
        "KEYLESS_RUN_COMMAND_FALLBACK",
    ),
    "keyless-role-assignment-counter": (
        {"Microsoft.Authorization/roleAssignments/read"},
        "KEYLESS_ROLE_ASSIGNMENT_HEADROOM",
    ),
    # shared/adapters/clusters.py kube_access(use_admin=True): only for clusters without Entra.
    "keyless-cluster-local-admin": (
        {"Microsoft.ContainerService/managedClusters/listClusterAdminCredential/action"},
        "KEYLESS_ALLOW_LOCAL_ACCOUNTS",
    ),
    "keyless-local-auth-disabler": (
        {"Microsoft.CognitiveServices/accounts/read", "Microsoft.CognitiveServices/accounts/write"},
        "keyless-enforce",
    ),
}
OPTIONAL = {a for actions, _ in OPTIONAL_ROLES.values() for a in actions} - USED


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
    assert authorization == {
        *(f"Microsoft.Authorization/roleAssignments/{v}" for v in ("read", "write", "delete")),
        "Microsoft.Authorization/roleDefinitions/read",
    }
    # The role definition is read where the roles are granted: the Access Granter, at the accounts.
    assert "Microsoft.Authorization/roleDefinitions/read" in ROLES["keyless-access-granter"]["Actions"]


def test_each_optional_grant_is_a_role_of_its_own():
    assert "keyless-cluster-enabler" not in ROLES, "split into keyless-cluster-feature-enabler and keyless-run-command"
    for stem, (actions, setting) in OPTIONAL_ROLES.items():
        role = ROLES[stem]
        assert set(role["Actions"]) == actions and not role["DataActions"], stem
        assert role["Description"].startswith("Optional") and setting in role["Description"], stem
    # An optional action is granted by its own role and by no other (managedClusters/write never rides
    # along with run-command, nor with the required roles).
    for action in OPTIONAL:
        holders = [stem for stem, r in ROLES.items() if action in r["Actions"]]
        assert holders == [stem for stem, (actions, _) in OPTIONAL_ROLES.items() if action in actions], action


def test_data_plane_actions_are_kubernetes_objects_and_sending_outcome_events_only():
    granted = {a for r in ROLES.values() for a in r["DataActions"]}
    kubernetes = {a for a in granted if a.startswith("Microsoft.ContainerService/managedClusters/")}
    assert granted - kubernetes == {"Microsoft.EventGrid/topics/events/send/action"}
    assert not any("secrets" in a for a in kubernetes), "Keyless never reads secrets"
    assert not any(a.startswith("Microsoft.CognitiveServices/") for a in granted), "no OpenAI data access, no keys"


def _split_top(text: str, keyword: str) -> list[str]:
    """`text` cut at `keyword` (AND / OR) where it stands outside any (), {} or '' ; parts stripped."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(text):
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch in "({":
            depth += 1
        elif not quoted and ch in ")}":
            depth -= 1
        elif not quoted and depth == 0 and re.match(rf"\s{keyword}\s", text[i - 1 : i + len(keyword) + 1]):
            parts.append(text[start:i])
            start = i + len(keyword)
    return [p.strip() for p in parts + [text[start:]]]


def _unwrap(text: str) -> str:
    assert text.startswith("(") and text.endswith(")"), text
    return text[1:-1].strip()


def _condition_branches() -> dict[str, list[str]]:
    """action -> the expressions ANDed in its branch, whitespace collapsed (comment lines dropped)."""
    lines = (INFRA / "role-assignment-condition.txt").read_text().splitlines()
    condition = " ".join(line for line in lines if not line.lstrip().startswith("#"))
    branches = {}
    for branch in _split_top(" ".join(condition.split()), "AND"):
        guard, expression = _split_top(_unwrap(branch), "OR")
        action = re.fullmatch(r"!\(ActionMatches\{'([^']+)'\}\)", _unwrap(guard))
        assert action, guard
        assert len(_split_top(_unwrap(expression), "OR")) == 1, f"an OR widens {action[1]}"
        branches[action[1]] = _split_top(_unwrap(expression), "AND")
    return branches


def test_role_assignment_write_and_delete_are_each_limited_to_the_allowlisted_role_and_service_principals():
    # Per the documented attributes, write is judged on the request, delete on the existing assignment.
    sources = {"write": "Request", "delete": "Resource"}
    branches = _condition_branches()
    assert set(branches) == {f"Microsoft.Authorization/roleAssignments/{v}" for v in sources}
    for verb, source in sources.items():
        attribute = f"@{source}[Microsoft.Authorization/roleAssignments"
        assert sorted(branches[f"Microsoft.Authorization/roleAssignments/{verb}"]) == [
            f"{attribute}:PrincipalType] ForAnyOfAnyValues:StringEqualsIgnoreCase {{'ServicePrincipal'}}",
            f"{attribute}:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {{{OPENAI_USER_ROLE_ID}}}",
        ], verb


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
