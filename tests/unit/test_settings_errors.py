"""Every settings error starts with the setting's name and says what to write instead (issue 20 §4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.domain.policy import AccessPolicy, PolicyError
from shared.domain.settings import KNOWN_KEYS, Settings, SettingsError, unknown_keys

ROOT = Path(__file__).resolve().parents[2]
ARM = "https://management.azure.com"
KEY = "a2V5a2V5a2V5"  # what an account key looks like (base64)


def storage(value: str) -> Settings:
    return Settings.from_env({"AzureWebJobsStorage": value})


# --- AzureWebJobsStorage ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["garbage", "UseDevStorage", "=x", f"AccountName=acct;{KEY}"])
def test_a_malformed_connection_string_names_the_setting_and_the_shape_never_the_value(value):
    with pytest.raises(SettingsError) as err:
        storage(value)
    assert err.value.reason.startswith("AzureWebJobsStorage:"), err.value.reason
    assert "UseDevelopmentStorage=true" in err.value.reason, "the message shows a connection string that works"
    assert value not in err.value.reason and KEY not in err.value.reason


@pytest.mark.parametrize(
    "value",
    ["DefaultEndpointsProtocol=https;AccountName=acct;EndpointSuffix=core.windows.net", "AccountKey=" + KEY],
)
def test_a_connection_string_without_an_account_or_its_key_says_which_part_is_missing(value):
    with pytest.raises(SettingsError) as err:
        storage(value)
    assert err.value.reason.startswith("AzureWebJobsStorage:")
    assert ("AccountKey" in err.value.reason) or ("AccountName" in err.value.reason)
    assert KEY not in err.value.reason


@pytest.mark.parametrize(
    "value, expected",
    [
        # The Functions host and the queue SDK take a trailing `;`; the table SDK refuses
        # `UseDevelopmentStorage=true;` ("missing required connection details"): Keyless drops it.
        ("UseDevelopmentStorage=true;", "UseDevelopmentStorage=true"),
        (
            f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={KEY};",
            f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={KEY}",
        ),
        (
            f" DefaultEndpointsProtocol=https;;AccountName=acct;AccountKey={KEY};; ",
            f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={KEY}",
        ),
    ],
)
def test_empty_parts_of_a_connection_string_are_dropped(value, expected):
    assert storage(value).storage.connection_string == expected


def test_the_table_sdk_accepts_what_keyless_passes_on():
    from azure.data.tables import TableClient

    cs = storage("UseDevelopmentStorage=true;").storage.connection_string
    assert TableClient.from_connection_string(cs, "t").account_name == "devstoreaccount1"


def test_a_missing_storage_setting_is_named():
    with pytest.raises(SettingsError) as err:
        Settings.from_env({}).require_storage()
    assert err.value.reason.startswith("AzureWebJobsStorage:")


# --- unknown KEYLESS_* settings ---------------------------------------------------------------------


def test_a_misspelt_setting_names_the_closest_known_one():
    found = unknown_keys({"KEYLESS_PROVE_ACESS": "true", "KEYLESS_PROVE_ACCESS": "true", "PATH": "/bin"})
    assert found == ["KEYLESS_PROVE_ACESS: not a Keyless setting; did you mean KEYLESS_PROVE_ACCESS?"]


def test_an_unknown_setting_far_from_any_is_still_named():
    (found,) = unknown_keys({"KEYLESS_XYZZY": "1"})
    assert found.startswith("KEYLESS_XYZZY: not a Keyless setting") and "did you mean" not in found


def test_the_known_settings_are_the_sample_s():
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    assert set(KNOWN_KEYS) == {k for k in sample if k.startswith("KEYLESS_")}
    assert unknown_keys(sample) == []


# --- KEYLESS_ACCESS_POLICY --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, says",
    [
        ("[]", "got a list"),
        ('"x"', "got a string"),
        ("null", "got null"),
        ("3", "got a number"),
        ("{}", "KEYLESS_ACCESS_POLICY.rules: required"),
        ('{"rules": {}}', "KEYLESS_ACCESS_POLICY.rules: must be a list"),
        ("[1,", "not valid JSON"),
    ],
)
def test_a_policy_of_the_wrong_shape_says_it_must_be_an_object_with_rules(text, says):
    with pytest.raises(PolicyError) as err:
        AccessPolicy.parse(text, (), "r")
    assert err.value.reason.startswith("KEYLESS_ACCESS_POLICY"), err.value.reason
    assert says in err.value.reason, err.value.reason
    assert '{"rules": [...]}' in err.value.reason
    assert "readable file" not in err.value.reason


def test_a_policy_path_that_is_no_file_still_says_so(tmp_path):
    with pytest.raises(PolicyError) as err:
        AccessPolicy.parse(str(tmp_path / "nope.json"), (), "r")
    assert "readable file" in err.value.reason and "nope.json" not in err.value.reason
