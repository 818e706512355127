import pytest

from shared.domain.cluster_tags import choose_account, read_tags
from shared.domain.errors import PermanentError
from shared.domain.ids import CLUSTER_TYPE, parse_resource_id
from shared.domain.observed import AccountState, ClusterState
from shared.domain.resource_events import MalformedEvent, parse_event

SUB = "00000000-0000-0000-0000-000000000001"
CLUSTER = f"/subscriptions/{SUB}/resourcegroups/rg/providers/Microsoft.ContainerService/managedClusters/aks1"
ACCOUNT = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/oai1"


def event(uri, event_type="Microsoft.Resources.ResourceWriteSuccess", **extra):
    return {"id": "1", "eventType": event_type, "subject": uri, "data": {"resourceUri": uri, **extra}}


class TestEvents:
    def test_cluster_write_and_delete(self):
        e = parse_event(event(CLUSTER))
        assert e.kind == "cluster" and e.change == "write" and e.resource.key == CLUSTER.lower()
        assert parse_event(event(CLUSTER, "Microsoft.Resources.ResourceDeleteSuccess")).change == "delete"

    def test_cloud_events_schema(self):
        ce = {
            "id": "1",
            "type": "Microsoft.Resources.ResourceWriteSuccess",
            "source": "/subscriptions/x",
            "subject": ACCOUNT,
            "data": {"resourceUri": ACCOUNT},
            "specversion": "1.0",
        }
        assert parse_event(ce).kind == "account"

    @pytest.mark.parametrize("resource", [CLUSTER, ACCOUNT])
    @pytest.mark.parametrize("event_type", ["ResourceWriteSuccess", "ResourceDeleteSuccess"])
    def test_the_tags_api_on_a_resource_is_a_write_of_that_resource(self, resource, event_type):
        """`az tag update|delete --resource-id`: a write or delete of `<id>/providers/Microsoft.Resources/tags/
        default`. It withdraws consent or tag bindings; it is never the resource's deletion."""
        kind = "cluster" if resource == CLUSTER else "account"
        operation = "Microsoft.Resources/tags/" + ("write" if "Write" in event_type else "delete")
        by_id = event(resource + "/providers/Microsoft.Resources/tags/default", "Microsoft.Resources." + event_type,
                      operationName=operation)  # fmt: skip
        by_operation = event(resource, "Microsoft.Resources." + event_type, operationName=operation)
        for raw in (by_id, by_operation):
            e = parse_event(raw)
            assert e is not None and e.kind == kind and e.change == "write", raw
            assert e.resource.key == resource.lower()

    def test_the_tags_api_elsewhere_is_not_ours(self):
        group = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Resources/tags/default"
        assert parse_event(event(group, operationName="Microsoft.Resources/tags/write")) is None
        vm = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"
        assert parse_event(event(vm + "/providers/Microsoft.Resources/tags/default")) is None

    def test_deployment_event_names_its_account(self):
        e = parse_event(event(ACCOUNT + "/deployments/gpt-4o"))
        assert e.kind == "deployment" and e.deployment == "gpt-4o" and e.resource.name == "oai1"

    def test_deletes_of_identities_credentials_and_role_assignments_at_accounts(self):
        identity = (
            f"/subscriptions/{SUB}/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1"
        )
        deleted = "Microsoft.Resources.ResourceDeleteSuccess"
        for uri in (identity, identity + "/federatedIdentityCredentials/fic1"):
            e = parse_event(event(uri, deleted))
            assert e.kind == "identity" and e.resource.key == identity.lower()
        ra = ACCOUNT + "/providers/Microsoft.Authorization/roleAssignments/0b5c0b7e-0000-4000-8000-000000000001"
        e = parse_event(event(ra, deleted))
        assert e.kind == "role-assignment" and e.resource.name == "oai1" and e.child.lower() == ra.lower()
        for uri in (identity, identity + "/federatedIdentityCredentials/fic1", ra):
            assert parse_event(event(uri)) is None, "their writes are ours: ignored"

    @pytest.mark.parametrize(
        "raw",
        [
            event(CLUSTER + "/agentPools/np1"),
            event(f"/subscriptions/{SUB}/resourceGroups/rg"),
            event(f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Authorization/roleAssignments/x"),
            event(CLUSTER, "Microsoft.Resources.ResourceActionSuccess"),
            event(CLUSTER, "Microsoft.Resources.ResourceWriteFailure"),
        ],
    )
    def test_ignored(self, raw):
        assert parse_event(raw) is None

    @pytest.mark.parametrize(
        "raw, field",
        [
            ([], "event"),
            ({"eventType": "Microsoft.Resources.ResourceWriteSuccess"}, "id"),
            ({"id": "1"}, "eventType"),
            ({"id": "1", "eventType": "Microsoft.Resources.ResourceWriteSuccess", "data": []}, "data"),
            (event(CLUSTER.replace("aks1", "a b")), "data.resourceUri"),
            (event(None), "data.resourceUri"),
        ],
    )
    def test_malformed_names_the_field(self, raw, field):
        with pytest.raises(MalformedEvent) as err:
            parse_event(raw)
        assert err.value.reason.startswith(field)


def cluster(tags):
    return ClusterState(
        id=CLUSTER,
        name="aks1",
        location="eastus",
        provisioning_state="Succeeded",
        oidc_issuer_enabled=True,
        issuer_url="https://x/",
        workload_identity_enabled=True,
        tags=tags,
    )


CID = parse_resource_id(CLUSTER, CLUSTER_TYPE, "cluster")


class TestRules:
    def test_workloads_and_account_name(self):
        r = read_tags(
            cluster({"keyless-workloads": "team-a/api, team-b/worker;team-a/api", "keyless-openai-account": "oai1"}),
            CID,
        )
        assert r.workloads == (("team-a", "api"), ("team-b", "worker"))
        assert r.account.key == ACCOUNT.lower()
        assert r.errors == ()

    def test_bad_entries_and_system_namespaces_are_reported_not_bound(self):
        r = read_tags(cluster({"Keyless-Workloads": "kube-system/x team-a/default nope Bad/x team-a/ok"}), CID)
        assert r.workloads == (("team-a", "ok"),)
        assert len(r.errors) == 4
        assert r.account is None

    def test_deployments_tag_names_deployments_of_tagged_workloads_only(self):
        r = read_tags(
            cluster(
                {
                    "keyless-workloads": "team-a/api team-b/worker",
                    "keyless-workloads-deployments": "team-a/api=web+jobs, team-a/api=web;team-b/worker=w "
                    "team-c/other=x team-a/api=Bad_Name team-b/worker",
                }
            ),
            CID,
        )
        assert r.deployments_of("team-a", "api") == ("jobs", "web"), "merged, sorted, de-duplicated"
        assert r.deployments_of("team-b", "worker") == ("w",)
        assert r.deployments_of("team-c", "other") == ()
        assert len(r.errors) == 3
        assert any("team-c/other is not in the keyless-workloads tag" in e for e in r.errors)
        assert any("'Bad_Name' is not a Deployment name" in e for e in r.errors)
        assert any("'team-b/worker' is not namespace/serviceaccount=deployment" in e for e in r.errors)

    def test_choose_account(self):
        def acc(name, kind="OpenAI"):
            return AccountState(
                id=ACCOUNT.replace("oai1", name),
                name=name,
                kind=kind,
                endpoint=None,
                custom_subdomain=name,
                provisioning_state="Succeeded",
            )

        assert choose_account([acc("a"), acc("t", "TextAnalytics")]).endswith("/a")
        with pytest.raises(PermanentError, match="ambiguous"):
            choose_account([acc("a"), acc("b", "AIServices")])
        with pytest.raises(PermanentError, match="no OpenAI account"):
            choose_account([])
