import re
import uuid

from shared.domain import naming
from shared.domain.binding import Binding

SUB = "00000000-0000-0000-0000-000000000001"
CLUSTER = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/aks1"
ACCOUNT = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/oai1"
AZURE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def test_identity_and_credential_names_obey_azure_rules_even_for_long_inputs():
    long_sa = ".".join(["a" * 60] * 4)  # 243 chars, with dots
    b = Binding.create(CLUSTER.replace("aks1", "c" * 63), "n" * 63, long_sa, ACCOUNT)
    assert AZURE_NAME.match(b.identity_name) and 3 <= len(b.identity_name) <= 128
    assert AZURE_NAME.match(b.credential_name) and 3 <= len(b.credential_name) <= 120


def test_truncated_names_do_not_collide():
    base = "x" * 200
    a = Binding.create(CLUSTER, "ns", base + "a", ACCOUNT)
    b = Binding.create(CLUSTER, "ns", base + "b", ACCOUNT)
    assert a.identity_name != b.identity_name
    assert a.credential_name != b.credential_name
    assert a.configmap_name != b.configmap_name


def test_names_are_deterministic_and_case_insensitive_in_arm_ids():
    a = Binding.create(CLUSTER, "team-a", "app", ACCOUNT)
    b = Binding.create(
        CLUSTER.replace("resourceGroups", "resourcegroups").replace("rg", "RG"),
        "team-a",
        "app",
        ACCOUNT.upper().replace(SUB.upper(), SUB),
    )
    assert a.identity_name.lower() == b.identity_name.lower() or a.key == b.key
    assert a.key == b.key
    assert a.workload_key == b.workload_key


def test_same_workload_different_account_shares_identity_but_not_configmap():
    a = Binding.create(CLUSTER, "team-a", "app", ACCOUNT)
    b = Binding.create(CLUSTER, "team-a", "app", ACCOUNT.replace("oai1", "oai2"))
    assert a.identity_name == b.identity_name
    assert a.credential_name == b.credential_name
    assert a.configmap_name != b.configmap_name
    assert a.key != b.key


def test_role_assignment_name_is_uuid5_of_scope_role_principal():
    principal = str(uuid.uuid4())
    n1 = naming.role_assignment_name(ACCOUNT, "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd", principal)
    n2 = naming.role_assignment_name(
        ACCOUNT.lower(),
        f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/5E0BD9BD-7B93-4F28-AF87-19FC36AD61BD",
        principal.upper(),
    )
    assert n1 == n2
    assert uuid.UUID(n1).version == 5
    assert naming.role_assignment_name(ACCOUNT, "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd", str(uuid.uuid4())) != n1


def test_configmap_name_is_a_dns_subdomain():
    b = Binding.create(CLUSTER, "ns", "my.app", ACCOUNT.replace("oai1", "My_Account-1"))
    assert re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", b.configmap_name)
    assert len(b.configmap_name) <= 253


def test_subject_format():
    assert naming.service_account_subject("ns", "sa") == "system:serviceaccount:ns:sa"


def test_identity_and_credential_names_keep_128_bits_of_digest():
    """The readable part is cut, shared by same-named clusters, `.`/`_` read `-`: the digest alone
    tells workloads apart, so it must be beyond search (40 bits fell to a birthday search in seconds)."""
    b = Binding.create(CLUSTER, "team-a", "x" * 250, ACCOUNT)
    for name in (b.identity_name, b.credential_name):
        assert re.fullmatch(r"[0-9a-f]{32}", name.rsplit("-", 1)[-1]), name
    assert b.identity_name.endswith(naming.short_hash(b.workload_key, length=32))


def test_legacy_identity_name_is_the_ten_digit_name_of_before():
    b = Binding.create(CLUSTER, "team-a", "app", ACCOUNT)
    legacy = naming.legacy_identity_name(b.cluster.name, b.cluster.key, b.namespace, b.service_account)
    assert legacy == "keyless-aks1-team-a-app-" + naming.short_hash(b.workload_key)
    assert len(naming.short_hash(b.workload_key)) == 10 and legacy != b.identity_name
