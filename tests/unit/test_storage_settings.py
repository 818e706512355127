"""AzureWebJobsStorage read as the Functions host reads it (shared.domain.storage, through Settings).

Precedence: the connection string itself, else per service its `__<service>ServiceUri`, else one made
from `__accountName` and the cloud's storage suffix (from KEYLESS_ARM_ENDPOINT). `__credential` and
`__clientId` choose the identity. Bad input is refused naming the key, never echoing a secret.
"""

from __future__ import annotations

import pytest

from shared.domain.settings import Settings, SettingsError
from shared.domain.storage import storage_suffix

CLIENT = "6a1e2f3c-4b5d-4e6f-8a9b-0c1d2e3f4a5b"
OTHER = "0f0e0d0c-0b0a-4909-8807-060504030201"
PREFIX = "AzureWebJobsStorage__"


def settings(**env: str) -> Settings:
    return Settings.from_env(
        {k if k.startswith(("AzureWebJobsStorage", "AZURE", "KEYLESS")) else PREFIX + k: v for k, v in env.items()}
    )


def test_a_connection_string_wins_and_the_identity_settings_are_then_not_read():
    s = Settings.from_env(
        {
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",
            PREFIX + "accountName": "acct",
            PREFIX + "credential": "not-even-valid",  # the host does not read the prefix either
        }
    )
    assert s.storage_connection_string == "UseDevelopmentStorage=true"
    assert s.storage.connection_string == "UseDevelopmentStorage=true"
    assert not s.storage.identity_based and s.storage.endpoint("queue") is None
    assert s.storage_account_name is None
    s.require_storage()


def test_the_account_name_makes_each_service_uri_in_the_public_cloud():
    s = settings(accountName="keylessstore")
    assert s.storage_account_name == "keylessstore" and s.storage.identity_based
    assert s.storage.endpoint("queue") == "https://keylessstore.queue.core.windows.net"
    assert s.storage.endpoint("table") == "https://keylessstore.table.core.windows.net"
    assert s.storage.endpoint("blob") == "https://keylessstore.blob.core.windows.net"
    s.require_storage()


@pytest.mark.parametrize(
    "arm, suffix",
    [
        ("https://management.azure.com", "core.windows.net"),
        ("https://management.chinacloudapi.cn/", "core.chinacloudapi.cn"),
        ("https://management.usgovcloudapi.net", "core.usgovcloudapi.net"),
        ("https://eastus.management.azure.com", "core.windows.net"),  # a regional ARM host
    ],
)
def test_the_storage_suffix_follows_the_cloud_of_the_arm_endpoint(arm, suffix):
    assert storage_suffix(arm) == suffix
    s = settings(accountName="acct", KEYLESS_ARM_ENDPOINT=arm)
    assert s.storage.endpoint("table") == f"https://acct.table.{suffix}"


def test_in_an_unknown_cloud_the_account_name_alone_is_not_enough_and_the_message_says_what_to_set():
    s = settings(accountName="acct", KEYLESS_ARM_ENDPOINT="https://management.local.azurestack.external")
    assert s.storage.endpoint("queue") is None
    with pytest.raises(SettingsError) as err:
        s.require_storage()
    assert err.value.reason.startswith(PREFIX + "queueServiceUri: ")
    assert "KEYLESS_ARM_ENDPOINT" in err.value.reason and PREFIX + "accountName" in err.value.reason
    uris = settings(
        accountName="acct",
        queueServiceUri="https://acct.queue.local.azurestack.external",
        tableServiceUri="https://acct.table.local.azurestack.external",
        KEYLESS_ARM_ENDPOINT="https://management.local.azurestack.external",
    )
    uris.require_storage()
    assert uris.storage.endpoint("queue") == "https://acct.queue.local.azurestack.external"


def test_service_uris_win_over_the_account_name_service_by_service():
    s = settings(
        accountName="acct",
        queueServiceUri="https://other.queue.core.windows.net/",  # primaryEndpoints end with a slash
    )
    assert s.storage.endpoint("queue") == "https://other.queue.core.windows.net"
    assert s.storage.endpoint("table") == "https://acct.table.core.windows.net"


def test_service_uris_alone_need_both_the_queue_and_the_table():
    both = settings(
        queueServiceUri="https://a.queue.core.windows.net", tableServiceUri="https://a.table.core.windows.net"
    )
    both.require_storage()
    assert both.storage_account_name is None and both.storage.identity_based
    queue_only = settings(
        queueServiceUri="https://a.queue.core.windows.net", blobServiceUri="https://a.blob.core.windows.net"
    )
    with pytest.raises(SettingsError) as err:
        queue_only.require_storage()
    assert err.value.reason.startswith(PREFIX + "tableServiceUri: ") and "ledger" in err.value.reason


def test_no_storage_at_all_names_the_connection_and_its_identity_based_keys():
    with pytest.raises(SettingsError) as err:
        Settings.from_env({}).require_storage()
    assert err.value.reason.startswith("AzureWebJobsStorage: ")
    assert PREFIX + "accountName" in err.value.reason and PREFIX + "tableServiceUri" in err.value.reason


def test_keys_are_read_case_insensitively_and_in_the_colon_form_as_the_host_configuration_does():
    s = Settings.from_env(
        {
            "AZUREWEBJOBSSTORAGE__QUEUESERVICEURI": "https://a.queue.core.windows.net",
            "AzureWebJobsStorage:tableServiceUri": "https://a.table.core.windows.net",
            "azurewebjobsstorage__Credential": "ManagedIdentity",
            "AzureWebJobsStorage__CLIENTID": CLIENT.upper(),
        }
    )
    assert s.storage.endpoint("queue") == "https://a.queue.core.windows.net"
    assert s.storage.endpoint("table") == "https://a.table.core.windows.net"
    assert s.storage.managed_identity and s.storage.client_id == CLIENT
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"AZUREWEBJOBSSTORAGE__CREDENTIAL": "secret"})
    assert err.value.reason.startswith("AZUREWEBJOBSSTORAGE__CREDENTIAL: "), "the key as it was spelled"


def test_the_managed_identity_and_its_client_id():
    mi = settings(accountName="acct", credential="managedidentity", clientId=CLIENT)
    assert mi.storage.managed_identity and mi.storage.client_id == CLIENT
    system = settings(accountName="acct", credential="managedidentity")
    assert system.storage.managed_identity and system.storage.client_id is None
    default = settings(accountName="acct", clientId=CLIENT)  # no __credential: DefaultAzureCredential for it
    assert not default.storage.managed_identity and default.storage.client_id == CLIENT


def test_arm_signs_in_as_azure_client_id_else_as_the_storage_managed_identity():
    assert (
        settings(accountName="acct", credential="managedidentity", clientId=CLIENT).managed_identity_client_id == CLIENT
    )
    both = settings(accountName="acct", credential="managedidentity", clientId=CLIENT, AZURE_CLIENT_ID=OTHER)
    assert both.managed_identity_client_id == OTHER and both.storage.client_id == CLIENT
    assert settings(accountName="acct", clientId=CLIENT).managed_identity_client_id is None
    assert settings(AZURE_CLIENT_ID=OTHER).managed_identity_client_id == OTHER
    assert Settings.from_env({}).managed_identity_client_id is None


@pytest.mark.parametrize(
    "prop, value, says",
    [
        ("accountName", "Not_An_Account", "3 to 24 lower-case letters and digits"),
        ("queueServiceUri", "http://acct.queue.core.windows.net", "https://"),
        ("tableServiceUri", "acct.table.core.windows.net", "https://"),
        ("blobServiceUri", "https://user:pw@acct.blob.core.windows.net", "credentials"),
        ("tableServiceUri", "https://acct.table.core.windows.net/?sv=2024&sig=SECRETSIG", "no SAS"),
        ("credential", "workloadidentity", "managedidentity"),
        ("clientId", "my-identity", "GUID"),
        ("clientSecret", "SECRETVALUE", "no secret"),
        ("clientCertificate", "SECRETTHUMB", "no secret"),
        (
            "managedIdentityResourceId",
            "/subscriptions/x/resourceGroups/y/providers/m/userAssignedIdentities/z",
            "__clientId",
        ),
    ],
)
def test_bad_storage_settings_name_the_key_and_never_echo_a_secret(prop, value, says):
    with pytest.raises(SettingsError) as err:
        settings(**{prop: value})
    assert err.value.reason.startswith(f"{PREFIX}{prop}: ")
    assert says in err.value.reason
    assert "SECRET" not in err.value.reason and "pw@" not in err.value.reason


def test_the_same_property_twice_with_different_values_is_refused():
    with pytest.raises(SettingsError) as err:
        Settings.from_env({PREFIX + "accountName": "one", "AZUREWEBJOBSSTORAGE__ACCOUNTNAME": "two"})
    assert "accountname" in err.value.reason.lower() and "twice" in err.value.reason


def test_empty_values_are_unset_as_the_sample_leaves_them():
    s = settings(accountName="acct", credential="", clientId="", queueServiceUri=" ")
    assert s.storage.credential is None and s.storage.client_id is None
    assert s.storage.endpoint("queue") == "https://acct.queue.core.windows.net"


def test_no_connection_string_in_any_repr():
    conn = "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=c2VjcmV0;EndpointSuffix=core.windows.net"
    s = Settings.from_env({"AzureWebJobsStorage": conn})
    assert "c2VjcmV0" not in repr(s) and "c2VjcmV0" not in repr(s.storage)
    assert "c2VjcmV0" not in str(s.storage)


def test_the_storage_credential_follows_the_settings():
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    from shared.adapters.credentials import storage_credential

    app = object()
    assert storage_credential(Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true"}), app) is None
    assert storage_credential(settings(accountName="acct"), app) is app
    assert isinstance(
        storage_credential(settings(accountName="acct", credential="managedidentity"), app), ManagedIdentityCredential
    )
    assert isinstance(
        storage_credential(settings(accountName="acct", credential="managedidentity", clientId=CLIENT), app),
        ManagedIdentityCredential,
    )
    assert isinstance(storage_credential(settings(accountName="acct", clientId=CLIENT), app), DefaultAzureCredential)
