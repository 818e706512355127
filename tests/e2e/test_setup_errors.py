"""What a new user sees when the set-up is incomplete: errors that start with the setting and name the fix,
never a raw SDK exception (issue 20 §4). Real SDK clients against closed ports and a real credential chain."""

from __future__ import annotations

import socket

import pytest
from azure.identity import DefaultAzureCredential

from shared.adapters.credentials import CredentialCheck
from shared.adapters.ledger import Ledger
from shared.adapters.workqueue import WorkQueue
from shared.domain.errors import KeylessError, NoCredential, TemporaryError
from shared.domain.ids import CLUSTER_TYPE, parse_resource_id
from shared.engine.reconcile import Engine
from tests.azurite import ACCOUNT, DEV_KEY
from tests.conftest import CLUSTER_ID


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def not_running() -> str:
    """A connection string to an Azurite that is not running (nothing listens on its port)."""
    url = f"http://127.0.0.1:{closed_port()}/{ACCOUNT}"
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={DEV_KEY};"
        f"QueueEndpoint={url};TableEndpoint={url}"
    )


@pytest.mark.parametrize("adapter", ["ledger", "queue"])
def test_azurite_not_running_names_the_setting_and_azurite(adapter):
    cs = not_running()
    target = (
        Ledger.connect("tnotrunning", connection_string=cs) if adapter == "ledger" else WorkQueue(connection_string=cs)
    )
    with pytest.raises(KeylessError) as err:
        target.ping()
    reason = err.value.reason
    assert isinstance(err.value, TemporaryError)
    assert reason.startswith("AzureWebJobsStorage:") and "Azurite" in reason, reason
    assert DEV_KEY not in reason and "127.0.0.1" not in reason


@pytest.fixture
def no_credential(monkeypatch) -> DefaultAzureCredential:
    """DefaultAzureCredential with nothing to sign in with: the identity endpoint refuses, no env creds."""
    for key in (
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_FEDERATED_TOKEN_FILE",
        "MSI_ENDPOINT",
    ):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{closed_port()}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "x")
    return DefaultAzureCredential(exclude_interactive_browser_credential=True)


def test_an_arm_call_without_a_credential_is_no_credential_naming_az_login(arm, settings, no_credential):
    engine = Engine.from_settings(settings, no_credential)
    with pytest.raises(NoCredential) as err:
        engine.clusters.get(parse_resource_id(CLUSTER_ID, CLUSTER_TYPE, "cluster"))
    assert "az login" in err.value.reason and "AZURE_CLIENT_ID" in err.value.reason
    assert err.value.delay_seconds == 60
    assert arm.log.reads() == [], "nothing reached ARM"


def test_the_credential_check_is_cached(no_credential, monkeypatch):
    calls = []
    real = no_credential.get_token

    def counted(*scopes, **kwargs):
        calls.append(scopes)
        return real(*scopes, **kwargs)

    monkeypatch.setattr(no_credential, "get_token", counted)  # the SDK's credential, not ours
    check = CredentialCheck(no_credential, "https://management.azure.com/.default", ttl=60)
    first = check.problem()
    assert first and "az login" in first
    assert check.problem() == first
    assert len(calls) == 1, "probes within the minute do not ask Entra again"
