import pytest

from shared.domain.errors import PermanentError
from shared.domain.ids import ACCOUNT_TYPE, CLUSTER_TYPE, parse_resource_id, same_resource

SUB = "00000000-0000-0000-0000-000000000001"
CLUSTER = f"/subscriptions/{SUB}/resourceGroups/rg-aks/providers/Microsoft.ContainerService/managedClusters/aks1"


def test_parses_cluster_id_and_keys_case_insensitively():
    a = parse_resource_id(CLUSTER, CLUSTER_TYPE, "cluster")
    b = parse_resource_id(
        CLUSTER.replace("resourceGroups", "resourcegroups").upper().replace(SUB.upper(), SUB), CLUSTER_TYPE, "cluster"
    )
    assert a.name == "aks1" and a.resource_group == "rg-aks" and a.subscription_id == SUB
    assert a.key == b.key
    assert str(a) == CLUSTER


@pytest.mark.parametrize(
    "value, fragment",
    [
        (None, "cluster: must be"),
        ("", "cluster: must be"),
        (CLUSTER + "/agentPools/np1", "expected /subscriptions"),
        (CLUSTER.replace("managedClusters", "fleets"), "expected a Microsoft.ContainerService/managedClusters"),
        (f"/subscriptions/{SUB}/resourceGroups/rg-aks", "expected /subscriptions"),
        (f"/subscriptions/{SUB}", "expected /subscriptions"),
        (CLUSTER.replace("aks1", ".."), "invalid name"),
        (CLUSTER.replace("aks1", "a%2Fb"), "not allowed"),
        (CLUSTER.replace(SUB, "not-a-guid"), "not a GUID"),
        (CLUSTER + "/", "expected /subscriptions"),
        ("subscriptions/" + CLUSTER[len("/subscriptions/") :], "expected /subscriptions"),
    ],
)
def test_refuses_anything_but_one_cluster(value, fragment):
    with pytest.raises(PermanentError) as err:
        parse_resource_id(value, CLUSTER_TYPE, "cluster")
    assert fragment in err.value.reason
    assert err.value.reason.startswith("cluster")


def test_account_of_other_provider_is_refused_naming_the_field():
    kv = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1"
    with pytest.raises(PermanentError, match="openAIAccount: expected a Microsoft.CognitiveServices/accounts"):
        parse_resource_id(kv, ACCOUNT_TYPE, "openAIAccount")


def test_same_resource_ignores_case_and_trailing_slash():
    assert same_resource(CLUSTER, CLUSTER.lower() + "/")
    assert not same_resource(CLUSTER, CLUSTER + "x")
