import pytest

from shared.domain.binding import OPENAI_USER_ROLE_ID, Binding, resolve_role
from shared.domain.errors import PermanentError
from shared.domain.settings import Settings, SettingsError

SUB = "00000000-0000-0000-0000-000000000001"
CLUSTER = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/aks1"
ACCOUNT = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/oai1"


@pytest.mark.parametrize(
    "field, kwargs",
    [
        ("namespace", {"namespace": "Team-A"}),
        ("namespace", {"namespace": "a" * 64}),
        ("namespace", {"namespace": "a:b"}),
        ("namespace", {"namespace": ""}),
        ("serviceAccount", {"service_account": "a/b"}),
        ("serviceAccount", {"service_account": "a:b"}),
        ("serviceAccount", {"service_account": "a" * 254}),
        ("serviceAccount", {"service_account": None}),
        ("cluster", {"cluster": ACCOUNT}),
        ("openAIAccount", {"account": CLUSTER}),
        ("role", {"role": "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"}),
        ("role", {"role": "Owner"}),
    ],
)
def test_binding_validation_names_the_field(field, kwargs):
    args = {"cluster": CLUSTER, "namespace": "team-a", "service_account": "app", "account": ACCOUNT} | kwargs
    with pytest.raises(PermanentError) as err:
        Binding.create(**args)
    assert err.value.reason.startswith(field + ":")


def test_default_role_is_openai_user_and_names_resolve():
    b = Binding.create(CLUSTER, "team-a", "app", ACCOUNT)
    assert b.role_definition_id == OPENAI_USER_ROLE_ID
    assert resolve_role("Cognitive Services OpenAI User", (OPENAI_USER_ROLE_ID,)) == OPENAI_USER_ROLE_ID
    full = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{OPENAI_USER_ROLE_ID.upper()}"
    assert resolve_role(full, (OPENAI_USER_ROLE_ID,)) == OPENAI_USER_ROLE_ID


def test_settings_defaults_are_azure_public_cloud():
    s = Settings.from_env({})
    assert s.arm_endpoint == "https://management.azure.com"
    assert s.arm_scope == "https://management.azure.com/.default"
    assert s.enable_cluster_features is True
    assert s.allow_local_accounts is False
    assert s.role_allowlist == (OPENAI_USER_ROLE_ID,)
    assert s.aks_server_scope == "6dae42f8-4368-4678-94ff-3960e28e3630/.default"


def test_settings_sovereign_cloud_scope_follows_endpoint():
    s = Settings.from_env({"KEYLESS_ARM_ENDPOINT": "https://management.usgovcloudapi.net/"})
    assert s.arm_scope == "https://management.usgovcloudapi.net/.default"


@pytest.mark.parametrize(
    "env, key",
    [
        ({"KEYLESS_ARM_ENDPOINT": "http://insecure"}, "KEYLESS_ARM_ENDPOINT"),
        ({"KEYLESS_ENABLE_CLUSTER_FEATURES": "maybe"}, "KEYLESS_ENABLE_CLUSTER_FEATURES"),
        ({"KEYLESS_CLUSTER_UPDATE_WAIT_SECONDS": "-1"}, "KEYLESS_CLUSTER_UPDATE_WAIT_SECONDS"),
        ({"KEYLESS_ROLE_ALLOWLIST": "not-a-guid"}, "KEYLESS_ROLE_ALLOWLIST"),
        ({"KEYLESS_CA_BUNDLE": "/nonexistent/ca.pem"}, "KEYLESS_CA_BUNDLE"),
    ],
)
def test_bad_settings_name_the_key(env, key):
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert err.value.reason.startswith(key)


def test_every_setting_is_documented_in_the_sample():
    import json
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    sample = json.loads((root / "local.settings.sample.json").read_text())["Values"]
    source = (root / "shared" / "domain" / "settings.py").read_text()
    keys = set(re.findall(r'"(KEYLESS_[A-Z_]+)"', source))
    assert keys, "no settings found"
    assert keys <= set(sample), f"undocumented settings: {sorted(keys - set(sample))}"
