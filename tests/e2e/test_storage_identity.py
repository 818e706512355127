"""Identity-based storage, as the Functions host reads AzureWebJobsStorage, against Azurite with OAuth on.

Azurite serves HTTPS (a certificate from the session's test CA, trusted through KEYLESS_CA_BUNDLE) with
`--oauth basic`: it takes a bearer token whose format, lifetime, issuer (`https://sts.windows.net/...`)
and audience (`https://storage.azure.com`) are right, without checking a signature. The token comes
from the App Service managed-identity endpoint emulator (IDENTITY_ENDPOINT / IDENTITY_HEADER), which
knows one user-assigned identity and no system-assigned one, and mints storage tokens as Entra does.

The environment holds no connection string at all: only `AzureWebJobsStorage__queueServiceUri`,
`__tableServiceUri`, `__credential=managedidentity` and `__clientId`. The app, built by its own
composition root, records an onboarding in the ledger and queues its run; the test reads both back, and
checks that every storage token was asked for that client id and appears in no log line and no
stored row or message. Nothing of ours is faked.
"""

from __future__ import annotations

import collections.abc
import logging
import os
import time
import uuid
from typing import TYPE_CHECKING

import pytest

from shared.app import composition, self_service
from shared.app.messages import parse_message
from shared.domain import access
from shared.domain.binding import Binding
from shared.domain.principal import Caller

if TYPE_CHECKING:
    from tests.azurite import Azurite
    from tests.emulators.common import TestCA
    from tests.emulators.identity_endpoint import IdentityEndpoint

APP_CLIENT_ID = "6a1e2f3c-4b5d-4e6f-8a9b-0c1d2e3f4a5b"  # the app's user-assigned identity
OTHER_CLIENT_ID = "0f0e0d0c-0b0a-4909-8807-060504030201"  # an identity the app does not have
SUB = "11111111-2222-3333-4444-555555555555"
CLUSTER = f"/subscriptions/{SUB}/resourceGroups/rg-aks/providers/Microsoft.ContainerService/managedClusters/aks1"
ACCOUNT = f"/subscriptions/{SUB}/resourceGroups/rg-ai/providers/Microsoft.CognitiveServices/accounts/oai-team"
STORAGE = "https://storage.azure.com"


@pytest.fixture(scope="module")
def azurite(ca: TestCA) -> collections.abc.Iterator[Azurite]:
    from tests.azurite import Azurite

    emulator = Azurite(ca, oauth=True).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def identity() -> collections.abc.Iterator[IdentityEndpoint]:
    from tests.emulators.identity_endpoint import IdentityEndpoint

    endpoint = IdentityEndpoint(user_assigned=[APP_CLIENT_ID], system_assigned=False).start()
    yield endpoint
    endpoint.stop()


@pytest.fixture
def identity_env(
    monkeypatch: pytest.MonkeyPatch, azurite: Azurite, identity: IdentityEndpoint, ca: TestCA
) -> collections.abc.Iterator[dict[str, str]]:
    """The process environment of an app on identity-based storage: no connection string anywhere."""
    for key in list(os.environ):
        if key.lower().startswith("azurewebjobsstorage") or key in (
            "AZURE_CLIENT_ID",
            "AZURE_TENANT_ID",
            "AZURE_CLIENT_SECRET",
            "MSI_ENDPOINT",
            "KEYLESS_TEST_STORAGE_CONNECTION_STRING",
            "WEBSITE_SITE_NAME",
        ):
            monkeypatch.delenv(key)
    env = {
        "AzureWebJobsStorage__queueServiceUri": azurite.service_uri("queue"),
        "AzureWebJobsStorage__tableServiceUri": azurite.service_uri("table"),
        "AzureWebJobsStorage__credential": "managedidentity",
        "AzureWebJobsStorage__clientId": APP_CLIENT_ID,
        "KEYLESS_CA_BUNDLE": str(ca.ca_pem_path),
        "KEYLESS_TABLE_NAME": "id" + uuid.uuid4().hex[:16],
        "KEYLESS_ARM_PACING_SCALE": "0",  # no ARM here
        **identity.env(),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    composition.reset()
    yield env
    composition.reset()


def _no_connection_string_in(environ: collections.abc.Mapping[str, str]) -> None:
    for key, value in environ.items():
        assert key.lower() != "azurewebjobsstorage", "a connection string is set"
        assert "accountkey=" not in value.lower() and "usedevelopmentstorage" not in value.lower(), key


def test_ledger_and_work_queue_run_on_the_managed_identity_with_no_connection_string(
    identity_env: dict[str, str], identity: IdentityEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    _no_connection_string_in(os.environ)
    caplog.set_level(logging.DEBUG)
    app = composition.service()
    assert app.settings.storage_connection_string is None and app.settings.storage.managed_identity
    assert app.settings.managed_identity_client_id == APP_CLIENT_ID, "ARM signs in as the same identity"

    # The app's own use case: the ledger records the onboarding (quota row, pointer, index, record)
    # and the work queue takes its run.
    binding = Binding.create(CLUSTER, "team-a", "chat-api", ACCOUNT)
    caller = Caller(object_id="00000000-0000-0000-0000-0000000000c1", name="tester")
    grant = access.Grant(by="rule 'test'", quotas=(access.Quota("rule-test", 10, "rule 'test'"),))
    record, new = self_service.request_onboarding(app, binding, caller, grant)
    assert new
    self_service.health(app)  # pings the ledger and the queue

    stored = self_service.onboarding(app, binding.key)
    assert stored is not None and stored.key == binding.key and stored.status == "pending"
    (peeked,) = app.queue.client.peek_messages(max_messages=5)
    assert parse_message(peeked.content)["key"] == binding.key

    # Every storage token was minted for the app's user-assigned identity, as the host would ask.
    storage_tokens = [client for resource, client in identity.issued if resource == STORAGE]
    assert storage_tokens and set(storage_tokens) == {APP_CLIENT_ID}
    token_requests = [r for r in identity.log.items if r.status == 200]
    assert token_requests and all(f"client_id={APP_CLIENT_ID}" in r.query for r in token_requests)

    # No token in the logs (azure-core at DEBUG included), the ledger's rows or the queued message.
    rows = [str(e) for e in app.ledger._table.query_entities("PartitionKey ne ''")]
    for token in identity.tokens:
        assert token not in caplog.text
        assert not any(token in row for row in rows)
        assert token not in peeked.content
    assert rows, "the ledger holds the record"


def test_azurite_refuses_a_token_for_another_audience(
    identity_env: dict[str, str], azurite: Azurite, identity: IdentityEndpoint, ca: TestCA
) -> None:
    """The guard on the test above: OAuth is really on and checks the token (here: ARM's audience)."""
    from azure.core.credentials import AccessToken
    from azure.core.exceptions import ClientAuthenticationError
    from azure.data.tables import TableClient

    class ArmToken:
        def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
            expires = int(time.time()) + 3600
            return AccessToken(identity.jwt("https://management.azure.com", APP_CLIENT_ID, expires), expires)

    table = TableClient(
        azurite.service_uri("table"), "refused", credential=ArmToken(), connection_verify=str(ca.ca_pem_path)
    )
    with pytest.raises(ClientAuthenticationError):
        table.create_table()


def test_an_identity_the_app_does_not_have_gets_no_token(
    identity_env: dict[str, str], identity: IdentityEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`__clientId` is what the token request carries: a wrong one is refused by the identity endpoint,
    and the app's health check says storage is unreachable instead of using another identity."""
    monkeypatch.setenv("AzureWebJobsStorage__clientId", OTHER_CLIENT_ID)
    monkeypatch.setenv("AZURE_CLIENT_ID", APP_CLIENT_ID)  # ARM's identity is not storage's
    composition.reset()
    app = composition.service()
    assert app.settings.storage.client_id == OTHER_CLIENT_ID
    assert app.settings.managed_identity_client_id == APP_CLIENT_ID
    from azure.core.exceptions import ClientAuthenticationError

    from shared.domain.errors import NoCredential

    with pytest.raises(NoCredential) as err:
        app.ledger.ping()
    assert isinstance(err.value.__cause__, ClientAuthenticationError)
    assert "Unable to load the proper Managed Identity" in str(err.value.__cause__)
    assert err.value.reason.startswith("AzureWebJobsStorage:") and "AzureWebJobsStorage__clientId" in err.value.reason
    assert (STORAGE, OTHER_CLIENT_ID) not in identity.issued
