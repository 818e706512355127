"""Tests of the ARM emulator: its behaviour through the real azure-mgmt SDK clients, and its
conformance with the published API descriptions (swagger schemas and the saved examples).

The reference files live in tests/reference (or $KEYLESS_REFERENCE_DIR). When they are
missing the conformance tests fail, with a message saying so, rather than skip.
"""

from __future__ import annotations

import base64
import functools
import json
import threading
import time
import typing
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from azure.core import MatchConditions
from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient
from azure.mgmt.cognitiveservices import models as cogmodels
from azure.mgmt.containerservice import ContainerServiceClient
from azure.mgmt.msi import ManagedServiceIdentityClient

from tests import reference_data
from tests.emulators.arm import API_VERSIONS, ARM_SCOPE, ROLE_CONTRIBUTOR, ROLE_OPENAI_USER, ArmEmulator
from tests.emulators.common import TestCA, token_for_scope

SUB = "3f2a1b0c-1111-4222-8333-944445555666"
RG = "rg-Keyless"
LOC = "eastus"
RG_ID = f"/subscriptions/{SUB}/resourceGroups/{RG}"
ISSUER = (
    "https://eastus.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/0b2f6a55-7d45-4b07-9a4f-1d3a5a8c9e01/"
)
AUDIENCE = ["api://AzureADTokenExchange"]
REPO_ROOT = Path(__file__).resolve().parents[1]


class StaticCredential:
    """An azure.core TokenCredential handing out the emulators' test token for the scope asked for."""

    def __init__(self, scope_override: str | None = None) -> None:
        self.scope_override = scope_override

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(token_for_scope(self.scope_override or scopes[0]), int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        return AccessTokenInfo(token_for_scope(self.scope_override or scopes[0]), int(time.time()) + 3600)


# ---------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="session")
def ca() -> TestCA:
    return TestCA()


@pytest.fixture(scope="session")
def arm_server(ca: TestCA):
    emulator = ArmEmulator(ca).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def arm(arm_server: ArmEmulator) -> ArmEmulator:
    """The session's emulator, emptied (stopping a werkzeug server costs ~0.5 s, so there is one)."""
    arm_server.reset()
    arm_server.add_resource_group(SUB, RG, LOC)
    return arm_server


def client_kwargs(arm: ArmEmulator, ca: TestCA, **extra: Any) -> dict:
    return {"base_url": arm.url, "credential_scopes": [ARM_SCOPE], "connection_verify": str(ca.ca_pem_path), **extra}


@pytest.fixture
def msi(arm, ca) -> ManagedServiceIdentityClient:
    return ManagedServiceIdentityClient(StaticCredential(), SUB, **client_kwargs(arm, ca))


@pytest.fixture
def authz(arm, ca) -> AuthorizationManagementClient:
    return AuthorizationManagementClient(StaticCredential(), SUB, **client_kwargs(arm, ca))


@pytest.fixture
def aks(arm, ca) -> ContainerServiceClient:
    return ContainerServiceClient(StaticCredential(), SUB, **client_kwargs(arm, ca))


@pytest.fixture
def cog(arm, ca) -> CognitiveServicesManagementClient:
    return CognitiveServicesManagementClient(StaticCredential(), SUB, **client_kwargs(arm, ca))


def _raw(
    arm: ArmEmulator, ca: TestCA, method: str, path: str, body: Any = None, *, api_version: str | None = "",
    token: str | None = token_for_scope(ARM_SCOPE), params: dict | None = None,
) -> requests.Response:  # fmt: skip
    """A plain HTTPS request, for what the SDKs hide (status codes, raw JSON) or refuse to send.
    api_version "" picks the provider's pinned version from the path; None sends none."""
    query = dict(params or {})
    if api_version == "":
        namespace = path.lower().rsplit("/providers/", 1)[-1].split("/")[0] if "/providers/" in path else ""
        api_version = min(API_VERSIONS.get(namespace, {"2024-11-01"}))
    if api_version is not None:
        query["api-version"] = api_version
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url, verify = arm.url + path, str(ca.ca_pem_path)
    return requests.request(method, url, params=query, json=body, headers=headers, verify=verify, timeout=10)


@pytest.fixture
def raw(arm, ca) -> Callable[..., requests.Response]:
    return functools.partial(_raw, arm, ca)


def status_of(response, deserialized, headers):
    """`cls=` hook: the HTTP status with the model."""
    return response.http_response.status_code, deserialized


def only_status(response, deserialized, headers):
    return response.http_response.status_code


def identity_id(name: str) -> str:
    return f"{RG_ID}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"


def cluster_id(name: str = "aks1") -> str:
    return f"{RG_ID}/providers/Microsoft.ContainerService/managedClusters/{name}"


def account_id(name: str = "oai1") -> str:
    return f"{RG_ID}/providers/Microsoft.CognitiveServices/accounts/{name}"


def fic_params(subject: str, issuer: str = ISSUER) -> dict:
    return {"issuer": issuer, "subject": subject, "audiences": AUDIENCE}


def role_params(principal_id: str, role: str = ROLE_OPENAI_USER, principal_type: str | None = "ServicePrincipal"):
    role_id = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{role}"
    return {"role_definition_id": role_id, "principal_id": principal_id, "principal_type": principal_type}


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


# ---------------------------------------------------------------------------- Microsoft.ManagedIdentity


def test_identity_create_get_update_list_delete(arm, msi):
    identities = msi.user_assigned_identities
    status, created = identities.create_or_update(RG, "id-app", {"location": LOC, "tags": {"team": "a"}}, cls=status_of)
    assert status == 201
    assert created.tenant_id == arm.tenant_id and uuid.UUID(created.principal_id) and uuid.UUID(created.client_id)
    assert created.isolation_scope == "None"
    # MSI answers with a lower-case "resourcegroups", like the real service and its spec examples
    assert created.id.startswith(f"/subscriptions/{SUB}/resourcegroups/{RG}/providers/Microsoft.ManagedIdentity/")

    status, updated = identities.create_or_update(RG, "ID-APP", {"location": LOC, "tags": {"team": "b"}}, cls=status_of)
    assert status == 200
    assert (updated.principal_id, updated.client_id, updated.name) == (
        created.principal_id,
        created.client_id,
        "id-app",
    )
    assert identities.get(RG, "id-app").tags == {"team": "b"}
    assert identities.update(RG, "id-app", {"tags": {"team": "c"}}).tags == {"team": "c"}

    arm.page_size = 2
    for i in range(4):
        identities.create_or_update(RG, f"id-extra-{i}", {"location": LOC})
    arm.log.clear()
    assert sorted(i.name for i in identities.list_by_resource_group(RG)) == ["id-app"] + [
        f"id-extra-{i}" for i in range(4)
    ]
    assert len(arm.log.matching("GET", "userAssignedIdentities")) == 3  # three pages, followed through nextLink
    assert len(list(identities.list_by_subscription())) == 5

    assert identities.delete(RG, "id-app", cls=only_status) == 200
    assert identities.delete(RG, "id-app", cls=only_status) == 204
    with pytest.raises(ResourceNotFoundError) as e:
        identities.get(RG, "id-app")
    assert e.value.error.code == "ResourceNotFound"
    assert arm.identity(identity_id("id-app")) is None and len(arm.identities()) == 4


def test_identity_refusals(msi):
    identities = msi.user_assigned_identities
    cases = [
        ((RG, "ab", {"location": LOC}), 400, "InvalidResourceName"),
        ((RG, "-starts-with-dash", {"location": LOC}), 400, "InvalidResourceName"),
        (("rg-missing", "id-x", {"location": LOC}), 404, "ResourceGroupNotFound"),
        ((RG, "id-x", {"tags": {}}), 400, "LocationRequired"),
    ]
    for args, status, code in cases:
        with pytest.raises(HttpResponseError) as e:
            identities.create_or_update(*args)
        assert (e.value.status_code, e.value.error.code) == (status, code), args
    identities.create_or_update(RG, "id-x", {"location": LOC})
    with pytest.raises(HttpResponseError) as e:
        identities.create_or_update(RG, "id-x", {"location": "westeurope"})
    assert e.value.error.code == "InvalidResourceLocation"


def test_fic_create_update_list_delete(arm, msi):
    msi.user_assigned_identities.create_or_update(RG, "id-app", {"location": LOC})
    fics = msi.federated_identity_credentials
    status, fic = fics.create_or_update(
        RG, "id-app", "aks1-ns-sa", fic_params("system:serviceaccount:ns:sa"), cls=status_of
    )
    assert status == 201 and fic.issuer == ISSUER and fic.audiences == AUDIENCE
    params = fic_params("system:serviceaccount:ns:other")
    status, fic = fics.create_or_update(RG, "id-app", "AKS1-NS-SA", params, cls=status_of)  # names are case-insensitive
    assert status == 200 and fic.name == "aks1-ns-sa" and fic.subject == "system:serviceaccount:ns:other"
    assert fics.get(RG, "id-app", "Aks1-Ns-Sa").subject == "system:serviceaccount:ns:other"
    fics.create_or_update(RG, "id-app", "second", fic_params("system:serviceaccount:ns:two"))
    arm.page_size = 1
    assert sorted(f.name for f in fics.list(RG, "id-app")) == ["aks1-ns-sa", "second"]
    assert len(arm.federated_credentials(identity_id("id-app"))) == 2
    assert fics.delete(RG, "id-app", "second", cls=only_status) == 200
    assert fics.delete(RG, "id-app", "second", cls=only_status) == 204
    msi.user_assigned_identities.delete(RG, "id-app")
    with pytest.raises(ResourceNotFoundError) as e:
        fics.get(RG, "id-app", "aks1-ns-sa")
    assert e.value.error.code == "ParentResourceNotFound"


def test_fic_duplicate_issuer_subject_and_limit_of_20(msi):
    msi.user_assigned_identities.create_or_update(RG, "id-app", {"location": LOC})
    fics = msi.federated_identity_credentials
    fics.create_or_update(RG, "id-app", "first", fic_params("system:serviceaccount:ns:sa"))
    with pytest.raises(HttpResponseError) as e:
        fics.create_or_update(RG, "id-app", "again", fic_params("system:serviceaccount:ns:sa"))
    assert e.value.status_code == 400 and e.value.error.code == "Conflict"
    assert e.value.error.message == "Issuer and subject combination already exists for this Managed Identity."
    for i in range(1, 20):
        fics.create_or_update(RG, "id-app", f"fic-{i:02}", fic_params(f"system:serviceaccount:ns:sa{i}"))
    with pytest.raises(HttpResponseError) as e:
        fics.create_or_update(RG, "id-app", "fic-21", fic_params("system:serviceaccount:ns:sa21"))
    assert e.value.status_code == 400 and "(20)" in e.value.error.message
    fics.create_or_update(RG, "id-app", "fic-01", fic_params("system:serviceaccount:ns:changed"))  # updates still go


@pytest.mark.parametrize(
    "props, fragment",
    [
        ({"issuer": ISSUER, "subject": "s", "audiences": ["api://other"]}, "audience"),
        ({"issuer": ISSUER, "subject": "s", "audiences": AUDIENCE * 2}, "exactly 1 audience"),
        ({"issuer": ISSUER, "subject": "s"}, "empty properties"),
        ({"issuer": "http://insecure.example/", "subject": "s", "audiences": AUDIENCE}, "issuer"),
        ({"issuer": ISSUER + "x" * 600, "subject": "s", "audiences": AUDIENCE}, "issuer"),
        ({"issuer": ISSUER, "subject": "system:serviceaccount:*", "audiences": AUDIENCE}, "subject"),
    ],
)
def test_fic_validation(raw, msi, props, fragment):
    msi.user_assigned_identities.create_or_update(RG, "id-app", {"location": LOC})
    resp = raw("PUT", identity_id("id-app") + "/federatedIdentityCredentials/fic1", {"properties": props})
    assert resp.status_code == 400 and fragment in resp.json()["error"]["message"]
    resp = raw("PUT", identity_id("id-app") + "/federatedIdentityCredentials/-bad", {"properties": fic_params("s")})
    assert resp.status_code == 400 and "is invalid" in resp.json()["error"]["message"]


def test_fic_concurrent_writes_on_one_identity_conflict(arm, msi):
    for name in ("id-a", "id-b"):
        msi.user_assigned_identities.create_or_update(RG, name, {"location": LOC})
    arm.fic_write_latency_seconds = 0.3
    outcomes: dict[str, Any] = {}

    def write(identity: str, fic: str) -> None:
        try:
            msi.federated_identity_credentials.create_or_update(RG, identity, fic, fic_params(f"system:sa:{fic}"))
            outcomes[fic] = "ok"
        except HttpResponseError as e:
            outcomes[fic] = e

    first = threading.Thread(target=write, args=("id-a", "one"))
    first.start()
    wait_until(lambda: arm.fic_write_in_progress(identity_id("id-a")))  # the first write holds it for 0.3 s
    others = [threading.Thread(target=write, args=args) for args in (("id-a", "two"), ("id-b", "three"))]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join(5)
    assert outcomes["one"] == "ok" and outcomes["three"] == "ok"  # writes under different identities run in parallel
    err = outcomes["two"]
    assert isinstance(err, HttpResponseError) and err.status_code == 409
    assert err.error.code == "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity"
    assert identity_id("id-a").lower() in err.error.message


def test_fic_parent_not_yet_replicated(arm, msi):
    arm.fic_parent_replication_seconds = 20
    msi.user_assigned_identities.create_or_update(RG, "id-new", {"location": LOC})
    fics = msi.federated_identity_credentials
    with pytest.raises(ResourceNotFoundError) as e:
        fics.create_or_update(RG, "id-new", "fic1", fic_params("system:serviceaccount:ns:sa"))
    assert e.value.status_code == 404 and e.value.error.code == "ParentResourceNotFound"
    arm.clock.advance(21)
    fics.create_or_update(RG, "id-new", "fic1", fic_params("system:serviceaccount:ns:sa"))


# ---------------------------------------------------------------------------- Microsoft.Authorization


@pytest.fixture
def openai_account(arm) -> str:
    arm.add_cognitive_account(account_id("oai1"))
    return account_id("oai1")


def test_role_assignment_create_recreate_conflicts_delete(arm, msi, authz, openai_account):
    principal = msi.user_assigned_identities.create_or_update(RG, "id-app", {"location": LOC}).principal_id
    name = str(uuid.uuid4())
    ras = authz.role_assignments
    status, ra = ras.create(openai_account, name, role_params(principal, principal_type=None), cls=status_of)
    assert status == 201
    assert ra.role_definition_id == f"/providers/Microsoft.Authorization/roleDefinitions/{ROLE_OPENAI_USER}"
    assert ra.scope == openai_account and ra.principal_type == "ServicePrincipal" and ra.created_on is not None
    assert ra.id == f"{openai_account}/providers/Microsoft.Authorization/roleAssignments/{name}"

    status, again = ras.create(openai_account, name, role_params(principal), cls=status_of)
    assert status == 201 and again.as_dict() == ra.as_dict()

    with pytest.raises(ResourceExistsError) as e:
        ras.create(openai_account, str(uuid.uuid4()), role_params(principal))
    assert e.value.status_code == 409 and e.value.error.code == "RoleAssignmentExists"
    with pytest.raises(HttpResponseError) as e:
        ras.create(openai_account, name, role_params(principal, ROLE_CONTRIBUTOR))
    assert e.value.status_code == 400 and e.value.error.code == "RoleAssignmentUpdateNotPermitted"
    with pytest.raises(HttpResponseError) as e:  # names are unique across scopes
        ras.create(RG_ID, name, role_params(principal))
    assert e.value.error.code == "RoleAssignmentUpdateNotPermitted"

    assert ras.get(openai_account, name).principal_id == principal
    assert ras.get_by_id(ra.id).principal_id == principal
    assert len(arm.role_assignments(openai_account.upper())) == 1 == len(arm.role_assignments())
    status, deleted = ras.delete(openai_account, name, cls=status_of)
    assert status == 200 and deleted.principal_id == principal
    assert ras.delete(openai_account, name, cls=only_status) == 204
    with pytest.raises(ResourceNotFoundError) as e:
        ras.get(openai_account, name)
    assert e.value.error.code == "RoleAssignmentNotFound"


def test_role_assignment_principal_replication_window(arm, msi, authz, openai_account):
    arm.principal_replication_seconds = 60
    principal = msi.user_assigned_identities.create_or_update(RG, "id-app", {"location": LOC}).principal_id
    name = str(uuid.uuid4())
    with pytest.raises(HttpResponseError) as e:
        authz.role_assignments.create(openai_account, name, role_params(principal))
    assert e.value.status_code == 400 and e.value.error.code == "PrincipalNotFound"
    arm.principal_type_skips_replication = True  # the knob for "principalType avoids the directory lookup"
    authz.role_assignments.create(RG_ID, str(uuid.uuid4()), role_params(principal))
    arm.principal_type_skips_replication = False
    arm.clock.advance(61)
    assert authz.role_assignments.create(openai_account, name, role_params(principal)).principal_id == principal
    msi.user_assigned_identities.delete(RG, "id-app")  # the principal of a deleted identity never comes back
    with pytest.raises(HttpResponseError) as e:
        authz.role_assignments.create(f"/subscriptions/{SUB}", str(uuid.uuid4()), role_params(principal))
    assert e.value.error.code == "PrincipalNotFound"


def test_role_assignment_refusals(authz, openai_account):
    principal = str(uuid.uuid4())
    cases = [
        (openai_account, "not-a-guid", role_params(principal), 400, "InvalidRoleAssignmentId"),
        (openai_account, None, role_params(principal, str(uuid.uuid4())), 400, "RoleDefinitionDoesNotExist"),
        (openai_account, None, role_params("not-a-guid"), 400, "InvalidPrincipalId"),
        (account_id("missing"), None, role_params(principal), 404, "ResourceNotFound"),
        (f"/subscriptions/{SUB}/resourceGroups/rg-missing", None, role_params(principal), 404, "ResourceGroupNotFound"),
        (f"/subscriptions/{uuid.uuid4()}", None, role_params(principal), 404, "SubscriptionNotFound"),
    ]
    for scope, name, params, status, code in cases:
        with pytest.raises(HttpResponseError) as e:
            authz.role_assignments.create(scope, name or str(uuid.uuid4()), params)
        assert (e.value.status_code, e.value.error.code) == (status, code), (scope, name)


def test_role_assignment_list_filters(arm, authz, openai_account):
    mine, other = str(uuid.uuid4()), str(uuid.uuid4())
    arm.add_role_assignment(f"/subscriptions/{SUB}", str(uuid.uuid4()), mine, ROLE_CONTRIBUTOR)
    arm.add_role_assignment(openai_account, str(uuid.uuid4()), mine, ROLE_OPENAI_USER)
    arm.add_role_assignment(openai_account, str(uuid.uuid4()), other, ROLE_OPENAI_USER)
    arm.add_role_assignment(RG_ID, str(uuid.uuid4()), other, ROLE_CONTRIBUTOR)
    arm.page_size = 1
    ras = authz.role_assignments
    assert len(list(ras.list_for_scope(openai_account, filter=f"principalId eq '{mine}'"))) == 2  # own + inherited
    assert len(list(ras.list_for_scope(openai_account, filter="atScope()"))) == 4
    assert len(list(ras.list_for_scope(RG_ID, filter="atScope()"))) == 2
    assert len(list(ras.list_for_scope(RG_ID))) == 4  # below the scope too
    assert len(list(ras.list_for_subscription(filter=f"principalId eq '{other}'"))) == 2
    assert len(list(ras.list_for_resource_group(RG))) == 4


def test_role_definitions(authz):
    rd = authz.role_definitions.get(f"/subscriptions/{SUB}", ROLE_OPENAI_USER)
    assert rd.role_name == "Cognitive Services OpenAI User" and rd.role_type == "BuiltInRole"
    assert rd.id == f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{ROLE_OPENAI_USER}"
    by_id = authz.role_definitions.get_by_id(f"/providers/Microsoft.Authorization/roleDefinitions/{ROLE_OPENAI_USER}")
    assert by_id.name == ROLE_OPENAI_USER
    found = authz.role_definitions.list(f"/subscriptions/{SUB}", filter="roleName eq 'Cognitive Services OpenAI User'")
    assert [r.name for r in found] == [ROLE_OPENAI_USER]
    with pytest.raises(ResourceNotFoundError) as e:
        authz.role_definitions.get(f"/subscriptions/{SUB}", str(uuid.uuid4()))
    assert e.value.error.code == "RoleDefinitionDoesNotExist"


# ---------------------------------------------------------------------------- Microsoft.ContainerService


def seed_cluster(arm: ArmEmulator, ca: TestCA, **kwargs: Any) -> dict:
    return arm.add_managed_cluster(
        cluster_id(), kube_server_url="https://127.0.0.1:6443", kube_ca_pem=ca.ca_pem, **kwargs
    )


def test_cluster_get_recreate_delete(arm, ca, aks):
    seed_cluster(arm, ca, tags={"env": "test"})
    mc = aks.managed_clusters.get(RG, "aks1")
    issuer = mc.properties.oidc_issuer_profile.issuer_url
    assert issuer.startswith(f"https://eastus.oic.prod-aks.azure.com/{arm.tenant_id}/") and issuer.endswith("/")
    assert mc.properties.security_profile.workload_identity.enabled is True
    assert mc.properties.aad_profile.managed is True and mc.properties.disable_local_accounts is True
    assert mc.properties.provisioning_state == "Succeeded" and mc.tags == {"env": "test"}
    arm.set_tags(cluster_id().upper(), {"keyless-workloads": "ns/sa"})
    assert aks.managed_clusters.get(RG, "aks1").tags == {"keyless-workloads": "ns/sa"}
    assert [c.name for c in aks.managed_clusters.list_by_resource_group(RG)] == ["aks1"]
    assert [c.name for c in aks.managed_clusters.list()] == ["aks1"]
    new_issuer = arm.recreate_managed_cluster(cluster_id().upper())
    assert (
        new_issuer != issuer
        and aks.managed_clusters.get(RG, "aks1").properties.oidc_issuer_profile.issuer_url == new_issuer
    )
    arm.delete_managed_cluster(cluster_id())
    with pytest.raises(ResourceNotFoundError) as e:
        aks.managed_clusters.get(RG, "aks1")
    assert e.value.error.code == "ResourceNotFound"


def test_cluster_enable_oidc_with_the_sdk_poller(arm, ca, aks):
    seed_cluster(arm, ca, oidc_issuer_enabled=False, workload_identity_enabled=False)
    mc = aks.managed_clusters.get(RG, "aks1")
    assert mc.properties.oidc_issuer_profile.issuer_url is None
    mc.properties.oidc_issuer_profile.enabled = True
    mc.properties.security_profile.workload_identity.enabled = True
    with pytest.raises(ResourceModifiedError):  # If-Match with a stale eTag
        aks.managed_clusters.begin_create_or_update(
            RG, "aks1", mc, etag="stale", match_condition=MatchConditions.IfNotModified
        )
    started = time.monotonic()
    result = aks.managed_clusters.begin_create_or_update(RG, "aks1", mc).result(timeout=10)
    assert time.monotonic() - started < 5  # Retry-After-Ms keeps the SDK poller quick
    assert result.properties.provisioning_state == "Succeeded"
    assert result.properties.oidc_issuer_profile.issuer_url.endswith("/")
    assert result.properties.security_profile.workload_identity.enabled is True
    assert [r.status for r in arm.log.matching("GET", "/operations/")] == [200, 200]  # InProgress, Succeeded


def test_cluster_put_refused_while_updating_then_finishes_on_the_clock(arm, ca, aks):
    seed_cluster(arm, ca, oidc_issuer_enabled=False, workload_identity_enabled=False)
    arm.cluster_update_polls = 1000
    mc = aks.managed_clusters.get(RG, "aks1")
    mc.properties.oidc_issuer_profile.enabled = True
    aks.managed_clusters.begin_create_or_update(RG, "aks1", mc, polling=False)
    updating = aks.managed_clusters.get(RG, "aks1")
    assert updating.properties.provisioning_state == "Updating"
    assert updating.properties.oidc_issuer_profile.issuer_url is None  # assigned when the update finishes
    with pytest.raises(ResourceExistsError) as e:
        aks.managed_clusters.begin_create_or_update(RG, "aks1", mc, polling=False)
    assert e.value.status_code == 409 and e.value.error.code == "OperationNotAllowed"
    arm.clock.advance(arm.cluster_update_seconds)
    done = aks.managed_clusters.get(RG, "aks1")
    assert done.properties.provisioning_state == "Succeeded" and done.properties.oidc_issuer_profile.issuer_url
    done.properties.oidc_issuer_profile.enabled = False
    with pytest.raises(HttpResponseError) as e:
        aks.managed_clusters.begin_create_or_update(RG, "aks1", done, polling=False)
    assert e.value.status_code == 400 and "cannot be disabled" in e.value.error.message


def test_cluster_operation_canceled_when_the_cluster_is_recreated(arm, ca, raw):
    body = seed_cluster(arm, ca)
    put = raw("PUT", cluster_id(), {"location": LOC, "properties": body["properties"]})
    assert put.status_code == 200 and put.json()["properties"]["provisioningState"] == "Updating"
    status_url = put.headers["Azure-AsyncOperation"]
    assert status_url.startswith(
        f"{arm.url}/subscriptions/{SUB}/providers/Microsoft.ContainerService/locations/eastus/"
    )
    assert put.headers["Retry-After-Ms"] == "10"
    arm.recreate_managed_cluster(cluster_id())
    token = {"Authorization": f"Bearer {token_for_scope(ARM_SCOPE)}"}
    status = requests.get(status_url, headers=token, verify=str(ca.ca_pem_path), timeout=10).json()
    assert status["status"] == "Canceled" and status["startTime"] and status["endTime"]


def test_cluster_user_and_admin_credentials(arm, ca, aks):
    seed_cluster(arm, ca)
    creds = aks.managed_clusters.list_cluster_user_credentials(RG, "aks1")
    kubeconfig = yaml.safe_load(creds.kubeconfigs[0].value)
    cluster = kubeconfig["clusters"][0]["cluster"]
    assert cluster["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(cluster["certificate-authority-data"]) == ca.ca_pem
    exec_plugin = kubeconfig["users"][0]["user"]["exec"]
    assert exec_plugin["command"] == "kubelogin" and "6dae42f8-4368-4678-94ff-3960e28e3630" in exec_plugin["args"]
    with pytest.raises(HttpResponseError) as e:
        aks.managed_clusters.list_cluster_admin_credentials(RG, "aks1")
    assert e.value.status_code == 400 and e.value.error.code == "BadRequest"
    assert "disable local accounts" in e.value.error.message

    arm.add_managed_cluster(
        cluster_id("local"), kube_server_url="https://127.0.0.1:6444", kube_ca_pem=ca.ca_pem,
        disable_local_accounts=False, aad_enabled=False, admin_token="t0ken",
    )  # fmt: skip
    admin = yaml.safe_load(aks.managed_clusters.list_cluster_admin_credentials(RG, "local").kubeconfigs[0].value)
    assert admin["users"][0]["user"]["token"] == "t0ken" and admin["clusters"][0]["cluster"]["server"].endswith(":6444")


# ---------------------------------------------------------------------------- Microsoft.CognitiveServices


def test_cognitive_account_get_and_patch(arm, cog):
    arm.add_cognitive_account(account_id("oai1"), tags={"a": "1"})
    arm.add_cognitive_account(account_id("Regional"), custom_subdomain=None)
    arm.add_cognitive_account(account_id("multi"), kind="AIServices")
    arm.add_cognitive_account(account_id("lang"), kind="TextAnalytics", deployments=[])
    acct = cog.accounts.get(RG, "oai1")
    assert (acct.kind, acct.properties.endpoint, acct.properties.custom_sub_domain_name) == (
        "OpenAI", "https://oai1.openai.azure.com/", "oai1",
    )  # fmt: skip
    assert acct.properties.disable_local_auth is False
    assert cog.accounts.get(RG, "regional").properties.endpoint == "https://eastus.api.cognitive.microsoft.com/"
    assert cog.accounts.get(RG, "multi").properties.endpoint == "https://multi.cognitiveservices.azure.com/"
    assert cog.accounts.get(RG, "lang").kind == "TextAnalytics"

    patch = cogmodels.Account(tags={"a": "2"}, properties=cogmodels.AccountProperties(disable_local_auth=True))
    updated = cog.accounts.begin_update(RG, "oai1", patch).result(timeout=10)
    assert updated.tags == {"a": "2"} and updated.properties.disable_local_auth is True
    assert updated.properties.endpoint == "https://oai1.openai.azure.com/"  # read-only fields survive a PATCH
    assert arm.cognitive_account(account_id("oai1"))["properties"]["disableLocalAuth"] is True
    with pytest.raises(ResourceNotFoundError) as e:
        cog.accounts.get(RG, "nope")
    assert e.value.error.code == "ResourceNotFound"


def test_deployments_list_paged_and_get(arm, cog):
    deployments = [("gpt-4o", "gpt-4o", "2024-08-06"), ("mini", "gpt-4o-mini", "2024-07-18"), ("emb", "te-3", "1")]
    arm.add_cognitive_account(account_id(), deployments=deployments)
    arm.page_size = 2
    arm.log.clear()
    listed = [(d.name, d.properties.model.name, d.properties.model.version) for d in cog.deployments.list(RG, "oai1")]
    assert listed == deployments
    assert len(arm.log.matching("GET", "/deployments")) == 2
    arm.remove_deployment(account_id(), "mini")
    arm.add_deployment(account_id(), "late", "gpt-4.1", "2025-04-14")
    assert cog.deployments.get(RG, "oai1", "late").properties.model.version == "2025-04-14"
    with pytest.raises(ResourceNotFoundError):
        cog.deployments.get(RG, "oai1", "mini")


# ---------------------------------------------------------------------------- ARM-wide behaviour


def test_authentication_required(arm, ca, raw):
    resp = raw("GET", identity_id("x"), token=None)
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "AuthenticationFailed"
    assert "Bearer" in resp.headers["WWW-Authenticate"]
    resp = raw("GET", identity_id("x"), token="forged")
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "InvalidAuthenticationToken"
    vault_token = StaticCredential("https://vault.azure.net/.default")
    wrong = ManagedServiceIdentityClient(vault_token, SUB, **client_kwargs(arm, ca))
    with pytest.raises(ClientAuthenticationError) as e:
        wrong.user_assigned_identities.get(RG, "x")
    assert e.value.error.code == "InvalidAuthenticationToken"


def test_api_version_required_and_checked(raw):
    resp = raw("GET", identity_id("x"), api_version="2099-01-01")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "InvalidApiVersionParameter"
    assert "2024-11-30" in resp.json()["error"]["message"]
    resp = raw("GET", identity_id("x"), api_version=None)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "MissingApiVersionParameter"


def test_unknown_paths_and_case_insensitive_ids(arm, raw, msi):
    msi.user_assigned_identities.create_or_update(RG, "Id-Mixed", {"location": LOC})
    shouted = (
        f"/SUBSCRIPTIONS/{SUB}/resourcegroups/{RG.upper()}/providers/microsoft.managedidentity/USERASSIGNEDIDENTITIES"
    )
    shouted += "/id-mixed"
    resp = raw("GET", shouted, api_version="2024-11-30")
    assert resp.status_code == 200 and resp.json()["name"] == "Id-Mixed"
    assert raw("GET", f"{RG_ID}/providers/Microsoft.ManagedIdentity/somethingElse/x").status_code == 404
    assert raw("GET", f"{RG_ID}/providers/Microsoft.ManagedIdentity/somethingElse/x").json()["error"]["code"] == (
        "InvalidResourceType"
    )
    assert raw("GET", f"{RG_ID}/providers/Microsoft.Storage/storageAccounts/no").json()["error"]["code"] == (
        "ResourceNotFound"
    )
    assert raw("GET", "/nothing/here").status_code == 404
    assert raw("DELETE", cluster_id()).status_code == 405
    arm.add_storage_account(f"{RG_ID}/providers/Microsoft.Storage/storageAccounts/st1")
    assert raw("GET", f"{RG_ID}/providers/Microsoft.Storage/storageAccounts/ST1").json()["kind"] == "StorageV2"
    assert raw("GET", RG_ID.lower()).json()["name"] == RG


def test_start_stop_is_quick_and_stop_really_stops(ca):
    started = time.monotonic()
    emulator = ArmEmulator(ca).start()
    url = emulator.url
    emulator.stop()
    assert time.monotonic() - started < 0.4
    with pytest.raises(requests.ConnectionError):
        requests.get(url, verify=str(ca.ca_pem_path), timeout=2)


def test_injected_429_honours_retry_after(arm, msi):
    msi.user_assigned_identities.create_or_update(RG, "id-app", {"location": LOC})
    arm.inject_fault("GET", "/userAssignedIdentities/id-app", 429, headers={"Retry-After": "1"})
    arm.log.clear()
    started = time.monotonic()
    assert msi.user_assigned_identities.get(RG, "id-app").name == "id-app"
    assert time.monotonic() - started >= 0.9
    assert [r.status for r in arm.log.items] == [429, 200]


def test_sdk_gives_up_after_three_retries_and_retries_dropped_connections(arm, ca):
    client = ManagedServiceIdentityClient(StaticCredential(), SUB, **client_kwargs(arm, ca, retry_backoff_factor=0.01))
    client.user_assigned_identities.create_or_update(RG, "id-app", {"location": LOC})
    arm.inject_fault("GET", "id-app", 503, times=4)
    with pytest.raises(HttpResponseError) as e:
        client.user_assigned_identities.get(RG, "id-app")
    assert e.value.status_code == 503 and e.value.error.code == "ServiceUnavailable"
    arm.inject_fault("*", "id-app", 0)
    arm.log.clear()
    assert client.user_assigned_identities.get(RG, "id-app").name == "id-app"
    assert [r.status for r in arm.log.items] == [0, 200]


# ---------------------------------------------------------------------------- conformance: reference data


def reference_dir() -> Path:
    """The reference data; a test that needs it fails (not skips) when it is missing."""
    found = reference_data.reference_dir()
    if not (found / "azure-rest-api-specs" / "specification").is_dir():
        pytest.fail(
            f"reference specs not found at {found}: tests/reference is part of the repository; if "
            "KEYLESS_REFERENCE_DIR is set, it must name a copy holding azure-rest-api-specs/ "
            "(conformance tests cannot run without it)"
        )
    return found


SPECS = "azure-rest-api-specs/specification"
SWAGGER = {
    "msi": "msi/resource-manager/Microsoft.ManagedIdentity/ManagedIdentity/stable/2024-11-30/ManagedIdentity.json",
    "ra": "authorization/resource-manager/Microsoft.Authorization/stable/2022-04-01/"
    "authorization-RoleAssignmentsCalls.json",
    "rd": "authorization/resource-manager/Microsoft.Authorization/stable/2022-04-01/"
    "authorization-RoleDefinitionsCalls.json",
    "cog": "cognitiveservices/resource-manager/Microsoft.CognitiveServices/stable/2025-09-01/cognitiveservices.json",
    "types": "common-types/resource-management/v2/types.json",
}


class SwaggerValidator:
    """Validates JSON against swagger 2.0 definitions, following $refs across files.

    Strict where it helps: a property the definition does not declare is an error (unless the
    schema allows additionalProperties). Lenient where ARM is: null is accepted for optional
    properties (ARM answers `"condition": null`, which swagger 2.0 cannot express), an x-ms-enum
    with modelAsString is extensible, and x-ms-* / readOnly are annotations only.
    """

    def __init__(self, root: Path) -> None:
        self.root = root / SPECS
        self._files: dict[Path, dict] = {}

    def _load(self, path: Path) -> dict:
        if path not in self._files:
            self._files[path] = json.loads(path.read_text())
        return self._files[path]

    def _deref(self, file: Path, schema: dict) -> tuple[Path, dict]:
        while "$ref" in schema:
            target, _, pointer = schema["$ref"].partition("#")
            file = (file.parent / target).resolve() if target else file
            node: Any = self._load(file)
            for part in pointer.strip("/").split("/"):
                node = node[part]
            schema = node
        return file, schema

    def _declared(self, file: Path, schema: dict) -> tuple[dict[str, tuple[Path, dict]], set[str], Any]:
        """Properties (with the file they are defined in), required names and additionalProperties, via allOf."""
        file, schema = self._deref(file, schema)
        props = {k: (file, v) for k, v in schema.get("properties", {}).items()}
        required, additional = set(schema.get("required", [])), schema.get("additionalProperties")
        for part in schema.get("allOf", []):
            more, more_required, more_additional = self._declared(file, part)
            props.update(more)
            required |= more_required
            additional = more_additional if additional is None else additional
        return props, required, additional

    def errors(self, value: Any, file: Path, schema: dict, where: str = "$") -> list[str]:
        file, schema = self._deref(file, schema)
        kind = schema.get("type") or ("object" if "properties" in schema or "allOf" in schema else None)
        types = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int, "number": (int, float)}
        wrong_number = kind in ("integer", "number") and isinstance(value, bool)
        if kind in types and (not isinstance(value, types[kind]) or wrong_number):
            return [f"{where}: expected {kind}, got {value!r:.60}"]
        problems = []
        enum = schema.get("enum")
        if enum and not schema.get("x-ms-enum", {}).get("modelAsString") and value not in enum:
            problems.append(f"{where}: {value!r} not in {enum}")
        if schema.get("format") == "uuid":
            try:
                uuid.UUID(value)
            except ValueError:
                problems.append(f"{where}: not a uuid: {value!r}")
        if kind == "array":
            for i, item in enumerate(value):
                problems += self.errors(item, file, schema.get("items", {}), f"{where}[{i}]")
        if kind == "object":
            props, required, additional = self._declared(file, schema)
            problems += [f"{where}: missing required {name!r}" for name in sorted(required - value.keys())]
            for key, item in value.items():
                if key in props and not (item is None and key not in required):
                    problems += self.errors(item, *props[key], f"{where}.{key}")
                elif key not in props and isinstance(additional, dict):
                    problems += self.errors(item, file, additional, f"{where}.{key}")
                elif key not in props and additional is not True:
                    problems.append(f"{where}: property {key!r} is not in the spec")
        return problems

    def check(self, value: Any, spec: str, definition: str) -> None:
        file = (self.root / SWAGGER[spec]).resolve()
        problems = self.errors(value, file, {"$ref": f"#/definitions/{definition}"})
        assert not problems, f"{definition} does not conform:\n" + "\n".join(problems)


def test_reference_dir_is_present():
    for spec in SWAGGER.values():
        assert (reference_dir() / SPECS / spec).is_file(), spec


def test_validator_catches_what_it_should():
    validator = SwaggerValidator(reference_dir())
    identity = {"id": "x", "location": "eastus", "properties": {"principalId": "nope", "extra": 1}, "kind": "z"}
    problems = validator.errors(
        identity, (validator.root / SWAGGER["msi"]).resolve(), {"$ref": "#/definitions/Identity"}
    )
    assert any("not a uuid" in p for p in problems) and any("'extra'" in p for p in problems)
    assert any("'kind'" in p for p in problems)


def test_responses_conform_to_swagger_schemas(arm, raw, msi, authz):
    validator = SwaggerValidator(reference_dir())
    arm.add_cognitive_account(
        account_id(), tags={"k": "v"}, deployments=[("a", "gpt-4o", "2024-08-06"), ("b", "o3", "1")]
    )
    principal = msi.user_assigned_identities.create_or_update(
        RG, "id-app", {"location": LOC, "tags": {"t": "1"}}
    ).principal_id
    msi.federated_identity_credentials.create_or_update(RG, "id-app", "fic1", fic_params("system:serviceaccount:ns:sa"))
    ra_name = str(uuid.uuid4())
    authz.role_assignments.create(account_id(), ra_name, role_params(principal))
    arm.page_size = 1  # so that the lists carry a nextLink
    checks = [
        (identity_id("id-app"), "msi", "Identity"),
        (identity_id("").rstrip("/"), "msi", "UserAssignedIdentitiesListResult"),
        (identity_id("id-app") + "/federatedIdentityCredentials/fic1", "msi", "FederatedIdentityCredential"),
        (identity_id("id-app") + "/federatedIdentityCredentials", "msi", "FederatedIdentityCredentialsListResult"),
        (f"{account_id()}/providers/Microsoft.Authorization/roleAssignments/{ra_name}", "ra", "RoleAssignment"),
        (f"{account_id()}/providers/Microsoft.Authorization/roleAssignments", "ra", "RoleAssignmentListResult"),
        (f"/providers/Microsoft.Authorization/roleDefinitions/{ROLE_OPENAI_USER}", "rd", "RoleDefinition"),
        (account_id(), "cog", "Account"),
        (f"{RG_ID}/providers/Microsoft.CognitiveServices/accounts", "cog", "AccountListResult"),
        (account_id() + "/deployments", "cog", "DeploymentListResult"),
        (account_id() + "/deployments/a", "cog", "Deployment"),
        (identity_id("missing"), "types", "ErrorResponse"),
    ]  # fmt: skip
    for path, spec, definition in checks:
        resp = raw("GET", path)
        assert resp.status_code == (404 if "missing" in path else 200), (path, resp.text)
        validator.check(resp.json(), spec, definition)
    assert "nextLink" in raw("GET", account_id() + "/deployments").json()


def test_cluster_json_uses_only_fields_the_sdk_models_know(arm, ca):
    """The 2026-08-01 managedClusters swagger was not saved: check against the SDK's generated models."""
    import azure.mgmt.containerservice.models._models as generated
    from azure.mgmt.containerservice import models as cm
    from azure.mgmt.containerservice._utils.model_base import Model, _RestField

    namespace = {**vars(generated), "_models": cm}

    def unknown_fields(value: dict, model: type, where: str) -> list[str]:
        fields: dict[str, Any] = {}
        for klass in reversed(model.__mro__):
            hints = typing.get_type_hints(klass, globalns=namespace) if klass.__module__ == generated.__name__ else {}
            rest_fields = [(a, rf) for a, rf in vars(klass).items() if isinstance(rf, _RestField)]
            fields.update({rf._rest_name_input or a: hints.get(a) for a, rf in rest_fields})
        problems = [f"{where}.{key}" for key in value if key not in fields]
        for key, item in value.items():
            target = fields.get(key)
            if typing.get_origin(target) is typing.Union:  # Optional[X] -> X
                target = next(a for a in typing.get_args(target) if a is not type(None))
            if typing.get_origin(target) is list:
                target, items = typing.get_args(target)[0], item
            else:
                items = [item]
            if isinstance(target, type) and issubclass(target, Model):
                for i, element in enumerate(items):
                    problems += unknown_fields(element, target, f"{where}.{key}[{i}]")
        return problems

    seed_cluster(arm, ca)
    assert unknown_fields(arm.managed_cluster(cluster_id()), cm.ManagedCluster, "$") == []


# --- replay of the saved examples ------------------------------------------------------------

SUB_RA = "a925f2f7-5c63-4b7b-8799-25a5f97bc3b2"
EXAMPLE_ROLE = "0b5fe924-9a61-425c-96af-cfe6e287ca2d"
EXAMPLE_PRINCIPAL = "ce2ce14e-85d7-4629-bdbc-454d0519d987"
RG_PATH = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers"
MSI_PATH = RG_PATH + "/Microsoft.ManagedIdentity/userAssignedIdentities"
FIC_PATH = MSI_PATH + "/{resourceName}/federatedIdentityCredentials"
AKS_PATH = RG_PATH + "/Microsoft.ContainerService/managedClusters/{resourceName}"
COG_PATH = RG_PATH + "/Microsoft.CognitiveServices/accounts"
RA_PATH = "/{scope}/providers/Microsoft.Authorization/roleAssignments"
RA_NAME_PATH = RA_PATH + "/{roleAssignmentName}"


def seed_rg(arm: ArmEmulator, p: dict) -> None:
    arm.add_resource_group(p["subscriptionId"], p["resourceGroupName"])


def seed_identities(arm: ArmEmulator, p: dict, names: tuple[str, ...] = ()) -> None:
    for name in names or (p["resourceName"],):
        identity = MSI_PATH.format(**{"resourceGroupName": "rg", **p}) + "/" + name
        arm.add_identity(identity, tags={"key1": "value1"})


def seed_fics(arm: ArmEmulator, p: dict, names: tuple[str, ...]) -> None:
    seed_identities(arm, p)
    identity = MSI_PATH.format(**p) + "/" + p["resourceName"]
    for name in names:
        arm.add_federated_credential(
            identity, name, "https://oidc.prod-aks.azure.com/t/i", f"system:serviceaccount:{name}"
        )


def seed_role(arm: ArmEmulator, p: dict) -> None:
    arm.add_resource_group(SUB_RA, "testrg")
    arm.add_role_definition(EXAMPLE_ROLE, "Example role", actions=["*/read"])


def seed_assignments(arm: ArmEmulator, p: dict) -> None:
    seed_role(arm, p)
    name = "b0f43c54-e787-4862-89b1-a653fa9cf747"
    arm.add_role_assignment(f"/subscriptions/{SUB_RA}", name, EXAMPLE_PRINCIPAL, EXAMPLE_ROLE, "User")
    arm.add_role_assignment(
        f"/subscriptions/{SUB_RA}/resourceGroups/testrg", str(uuid.uuid4()), EXAMPLE_PRINCIPAL, EXAMPLE_ROLE
    )


def seed_accounts(arm: ArmEmulator, p: dict, names: tuple[str, ...] = (), deployment: str | None = None) -> None:
    for name in names or (p["accountName"],):
        account = COG_PATH.format(**{"resourceGroupName": "bvttest", **p}) + "/" + name
        arm.add_cognitive_account(
            account, tags={"Owner": "me"}, deployments=[(deployment, "ada", "1")] if deployment else []
        )


def seed_cluster_example(arm: ArmEmulator, p: dict, **kwargs: Any) -> None:
    arm.add_managed_cluster(AKS_PATH.format(**p), kube_server_url="https://127.0.0.1:6443", kube_ca_pem=b"ca", **kwargs)


# example basename -> (method, path template, request-body parameter, seed(arm, parameters), optional response keys).
# Optional keys are features the emulator does not model: listed here, not silently skipped.
REPLAY: dict[str, tuple[str, str, str | None, Callable[[ArmEmulator, dict], Any], set[str]]] = {
    "IdentityCreate.json": ("PUT", MSI_PATH + "/{resourceName}", "parameters", seed_rg, set()),
    "IdentityUpdate.json": ("PATCH", MSI_PATH + "/{resourceName}", "parameters", seed_identities, set()),
    "IdentityGet.json": ("GET", MSI_PATH + "/{resourceName}", None, seed_identities, set()),
    "IdentityDelete.json": ("DELETE", MSI_PATH + "/{resourceName}", None, seed_identities, set()),
    "IdentityListByResourceGroup.json": ("GET", MSI_PATH, None, lambda a, p: seed_identities(a, p, ("i", "j")), set()),
    "IdentityListBySubscription.json": (
        "GET", "/subscriptions/{subscriptionId}/providers/Microsoft.ManagedIdentity/userAssignedIdentities", None,
        lambda a, p: seed_identities(a, p, ("i1", "i2")), set(),
    ),
    "FederatedIdentityCredentialCreate.json": (
        "PUT", FIC_PATH + "/{federatedIdentityCredentialResourceName}", "parameters", seed_identities, set(),
    ),
    "FederatedIdentityCredentialGet.json": (
        "GET", FIC_PATH + "/{federatedIdentityCredentialResourceName}", None,
        lambda a, p: seed_fics(a, p, ("ficResourceName",)), set(),
    ),
    "FederatedIdentityCredentialDelete.json": (
        "DELETE", FIC_PATH + "/{federatedIdentityCredentialResourceName}", None,
        lambda a, p: seed_fics(a, p, ("ficResourceName",)), set(),
    ),
    "FederatedIdentityCredentialList.json": ("GET", FIC_PATH, None, lambda a, p: seed_fics(a, p, ("f1", "f2")), set()),
    "RoleAssignments_CreateForSubscription.json": ("PUT", RA_NAME_PATH, "parameters", seed_role, set()),
    "RoleAssignments_CreateForResourceGroup.json": ("PUT", RA_NAME_PATH, "parameters", seed_role, set()),
    "RoleAssignments_CreateForResource.json": (
        "PUT", RA_NAME_PATH, "parameters",
        lambda a, p: (seed_role(a, p), a.add_resource("/" + p["scope"])), set(),
    ),
    "RoleAssignments_CreateById.json": ("PUT", "/{roleAssignmentId}", "parameters", seed_role, set()),
    "RoleAssignments_Get.json": ("GET", RA_NAME_PATH, None, seed_assignments, set()),
    "RoleAssignments_GetById.json": ("GET", "/{roleAssignmentId}", None, seed_assignments, set()),
    "RoleAssignments_Delete.json": ("DELETE", RA_NAME_PATH, None, seed_assignments, set()),
    "RoleAssignments_DeleteById.json": ("DELETE", "/{roleAssignmentId}", None, seed_assignments, set()),
    "RoleAssignments_ListForScope.json": ("GET", RA_PATH, None, seed_assignments, set()),
    "RoleAssignments_ListForResourceGroup.json": (
        "GET", RG_PATH + "/Microsoft.Authorization/roleAssignments", None, seed_assignments, set(),
    ),
    "GetRoleDefinitionById.json": ("GET", "/{roleId}", None, seed_role, set()),
    "GetRoleDefinitionByName.json": (
        "GET", "/{scope}/providers/Microsoft.Authorization/roleDefinitions/{roleDefinitionId}", None, seed_role, set(),
    ),
    "ManagedClustersGet.json": (
        "GET", AKS_PATH, None, seed_cluster_example,
        {"properties.diskEncryptionSetID", "properties.upgradeSettings",
         "properties.networkProfile.loadBalancerProfile.outboundIPs"},
    ),
    "ManagedClustersListClusterAdminCredentials.json": (
        "POST", AKS_PATH + "/listClusterAdminCredential", None,
        lambda a, p: seed_cluster_example(a, p, disable_local_accounts=False), set(),
    ),
    "ManagedClustersCreate_SecurityProfile.json": (
        "PUT", AKS_PATH, "parameters", seed_rg, {"properties.diskEncryptionSetID"},
    ),
    "GetAccount.json": ("GET", COG_PATH + "/{accountName}", None, seed_accounts, set()),
    "UpdateAccount.json": ("PATCH", COG_PATH + "/{accountName}", "account", seed_accounts, set()),
    "ListAccountsByResourceGroup.json": ("GET", COG_PATH, None, lambda a, p: seed_accounts(a, p, ("a1", "a2")), set()),
    "ListAccountsBySubscription.json": (
        "GET", "/subscriptions/{subscriptionId}/providers/Microsoft.CognitiveServices/accounts", None,
        lambda a, p: seed_accounts(a, p, ("a1", "a2")), set(),
    ),
    "GetDeployment.json": (
        "GET", COG_PATH + "/{accountName}/deployments/{deploymentName}", None,
        lambda a, p: seed_accounts(a, p, deployment="deploymentName"), set(),
    ),
    "ListDeployments.json": (
        "GET", COG_PATH + "/{accountName}/deployments", None,
        lambda a, p: seed_accounts(a, p, deployment="deploymentName"), set(),
    ),
}  # fmt: skip

# Placeholders in the examples that are not usable ids, replaced by ones the seeds create.
SUBSTITUTE = {
    "GetRoleDefinitionById.json": {"roleId": f"providers/Microsoft.Authorization/roleDefinitions/{EXAMPLE_ROLE}"},
    "GetRoleDefinitionByName.json": {"scope": f"subscriptions/{SUB_RA}", "roleDefinitionId": EXAMPLE_ROLE},
}  # fmt: skip


def example_files() -> dict[str, Path]:
    return {p.name: p for p in sorted((reference_dir() / SPECS).glob("**/examples/*.json"))}


def test_every_saved_example_is_replayed():
    found = set(example_files())
    assert found, "no examples found under the reference directory"
    assert found == set(REPLAY), (
        f"no replay for {sorted(found - set(REPLAY))}; no example for {sorted(set(REPLAY) - found)}"
    )


def missing_keys(expected: Any, actual: Any, optional: set[str], where: str = "") -> list[str]:
    """Keys of the example's body (recursively) that ours lacks; values may differ, tags are user data."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where or '$'}: expected an object"]
        problems = []
        for key, value in expected.items():
            path = f"{where}.{key}" if where else key
            if path in optional or where.endswith("tags"):
                continue
            problems += missing_keys(value, actual[key], optional, path) if key in actual else [path]
        return problems
    if isinstance(expected, list) and expected and isinstance(expected[0], dict | list):
        if not isinstance(actual, list) or not actual:
            return [f"{where}: expected a non-empty list"]
        return [
            p for i, e in enumerate(expected) for p in missing_keys(e, actual[min(i, len(actual) - 1)], optional, where)
        ]
    return []


@pytest.mark.parametrize("example", sorted(REPLAY))
def test_replay_saved_example(arm, raw, example):
    files = example_files()
    assert example in files, f"example {example} not found in the reference directory"
    doc = json.loads(files[example].read_text())
    params = {**doc["parameters"], **SUBSTITUTE.get(example, {})}
    method, template, body_param, seed, optional = REPLAY[example]
    seed(arm, params)
    arm.page_size = 1  # two seeded items: the list examples' nextLink appears too
    path = "/" + template.format(**{k: str(v).strip("/") for k, v in params.items()}).lstrip("/")
    resp = raw(
        method,
        path,
        params[body_param] if body_param else None,
        params={"$top": params["top"]} if "top" in params else {},
    )
    assert str(resp.status_code) in doc["responses"], f"{example}: {resp.status_code} {resp.text}"
    expected = doc["responses"][str(resp.status_code)].get("body")
    if expected:
        assert not (problems := missing_keys(expected, resp.json(), optional)), f"{example}: we lack {problems}"
