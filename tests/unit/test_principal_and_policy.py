import base64
import json

import pytest

from shared.domain.binding import Binding
from shared.domain.policy import AccessPolicy, Denied, PolicyError, check_subscriptions
from shared.domain.principal import PrincipalError, dev_caller, parse_principal
from shared.domain.settings import DEFAULT_SYSTEM_NAMESPACES, Settings, SettingsError

SUB = "00000000-0000-0000-0000-000000000001"
RG = f"/subscriptions/{SUB}/resourceGroups/rg"
CLUSTER = f"{RG}/providers/Microsoft.ContainerService/managedClusters/aks1"
ACCOUNT = f"{RG}/providers/Microsoft.CognitiveServices/accounts/oai1"
OID = "aaaaaaaa-0000-4000-8000-000000000001"
GROUP = "bbbbbbbb-0000-4000-8000-000000000002"
ROLE = "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd"


def header(claims) -> str:
    return base64.b64encode(json.dumps({"auth_typ": "aad", "claims": claims}).encode()).decode()


OID_CLAIM = {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": OID}


class TestPrincipal:
    def test_parses_oid_groups_roles(self):
        caller = parse_principal(
            header(
                [
                    OID_CLAIM,
                    {"typ": "groups", "val": GROUP.upper()},
                    {"typ": "roles", "val": "Keyless.Onboard"},
                    {"typ": "name", "val": "a"},
                ]
            )
        )
        assert caller.object_id == OID and caller.groups == {GROUP} and caller.roles == {"Keyless.Onboard"}
        assert caller.audit == f"{OID} (a)"

    @pytest.mark.parametrize(
        "value",
        [
            None,
            "",
            "not base64!!",
            base64.b64encode(b"not json").decode(),
            base64.b64encode(b"[]").decode(),
            header("claims"),
            header([{"typ": "oid"}]),
            header([{"typ": "oid", "val": "not-a-guid"}]),
            header([OID_CLAIM, {"typ": "oid", "val": "bbbbbbbb-0000-4000-8000-000000000009"}]),
            header([]),
            "A" * 20000,
            header([{"typ": 1, "val": OID}]),
        ],
    )
    def test_refuses_malformed_or_forged_headers(self, value):
        with pytest.raises(PrincipalError) as err:
            parse_principal(value)
        assert err.value.reason.startswith("X-MS-CLIENT-PRINCIPAL")

    def test_dev_principal_forms(self):
        assert dev_caller(OID).object_id == OID
        assert dev_caller(json.dumps({"oid": OID, "groups": [GROUP]})).groups == {GROUP}

    def test_dev_principal_refused_inside_azure(self):
        with pytest.raises(SettingsError, match="KEYLESS_DEV_PRINCIPAL"):
            Settings.from_env({"KEYLESS_DEV_PRINCIPAL": OID, "WEBSITE_SITE_NAME": "keyless-prod"})
        assert Settings.from_env({"KEYLESS_DEV_PRINCIPAL": OID}).dev_principal == OID


def policy(**rule) -> AccessPolicy:
    base = {
        "name": "team-a",
        "principals": {"groups": [GROUP]},
        "clusters": [RG],
        "namespaces": ["team-a*"],
        "accounts": [ACCOUNT],
    }
    return AccessPolicy.parse(json.dumps({"rules": [base | rule]}), DEFAULT_SYSTEM_NAMESPACES, ROLE)


CALLER = dev_caller(json.dumps({"oid": OID, "groups": [GROUP]}))


def binding(ns="team-a", sa="app", cluster=CLUSTER, account=ACCOUNT, role=None, allow=(ROLE,)):
    return Binding.create(cluster, ns, sa, account, role, allowlist=allow)


class TestPolicy:
    def test_allows_exactly_what_a_rule_grants(self):
        assert policy().authorize(CALLER, binding()) == "team-a"
        assert policy().authorize(CALLER, binding(ns="team-a-dev")) == "team-a"

    def test_default_deny(self):
        with pytest.raises(Denied, match="no access-policy rule"):
            AccessPolicy.parse(None, DEFAULT_SYSTEM_NAMESPACES, ROLE).authorize(CALLER, binding())
        stranger = dev_caller("cccccccc-0000-4000-8000-000000000003")
        with pytest.raises(Denied, match="no access-policy rule"):
            policy().authorize(stranger, binding())

    @pytest.mark.parametrize(
        "kwargs, field",
        [
            ({"ns": "team-b"}, "namespace"),
            ({"cluster": CLUSTER.replace("/rg/", "/rg2/")}, "cluster"),
            ({"cluster": CLUSTER.replace("resourceGroups/rg", "resourceGroups/rg-evil")}, "cluster"),
            ({"account": ACCOUNT.replace("oai1", "oai2")}, "openAIAccount"),
            (
                {
                    "role": "a001fd3d-188f-4b5d-821b-7da978bf7442",
                    "allow": (ROLE, "a001fd3d-188f-4b5d-821b-7da978bf7442"),
                },
                "role",
            ),
        ],
    )
    def test_denial_names_the_missing_grant(self, kwargs, field):
        with pytest.raises(Denied) as err:
            policy().authorize(CALLER, binding(**kwargs))
        assert err.value.reason.startswith(field + ":")
        assert "team-a" in err.value.reason

    def test_system_namespace_and_default_sa_need_an_exact_grant(self):
        wide = policy(namespaces=["*"], serviceAccounts=["*"])
        with pytest.raises(Denied, match="system namespace"):
            wide.authorize(CALLER, binding(ns="kube-system"))
        with pytest.raises(Denied, match="default service account"):
            wide.authorize(CALLER, binding(sa="default"))
        exact = policy(namespaces=["kube-system"], serviceAccounts=["default"])
        assert exact.authorize(CALLER, binding(ns="kube-system", sa="default")) == "team-a"

    def test_malformed_policy_is_a_setting_error(self):
        for text in (
            "{",
            '{"rules": 1}',
            '{"rules": [{"name": "x"}]}',
            '{"rules": [{"principals": {"groups": 1}}]}',
            "/nonexistent/policy.json",
        ):
            with pytest.raises(PolicyError):
                AccessPolicy.parse(text, DEFAULT_SYSTEM_NAMESPACES, ROLE)

    def test_policy_from_a_file(self, tmp_path):
        path = tmp_path / "policy.json"
        path.write_text(
            json.dumps(
                {
                    "rules": [
                        {
                            "name": "f",
                            "principals": {"objectIds": [OID]},
                            "clusters": [RG],
                            "namespaces": ["team-a"],
                            "accounts": [RG],
                        }
                    ]
                }
            )
        )
        assert AccessPolicy.parse(str(path), (), ROLE).authorize(CALLER, binding()) == "f"

    def test_patching_deployments_is_its_own_grant(self):
        with pytest.raises(Denied) as err:
            policy().authorize(
                CALLER, Binding.create(CLUSTER, "team-a", "app", ACCOUNT, workloads=["api"], allowlist=(ROLE,))
            )
        assert err.value.reason.startswith("workloads:")
        granted = policy(workloads=["api*"])
        assert (
            granted.authorize(
                CALLER, Binding.create(CLUSTER, "team-a", "app", ACCOUNT, workloads=["api-v2"], allowlist=(ROLE,))
            )
            == "team-a"
        )

    def test_subscription_allowlist(self):
        check_subscriptions(binding(), ())
        check_subscriptions(binding(), (SUB,))
        with pytest.raises(Denied, match="cluster: subscription"):
            check_subscriptions(binding(), ("99999999-0000-0000-0000-000000000000",))
