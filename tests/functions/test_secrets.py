"""Nothing secret is logged, stored or returned: the end-to-end flows, at DEBUG, searched for secrets."""

from __future__ import annotations

import base64
import json
import logging

from azure.data.tables import TableClient

from shared.app import composition
from tests.azurite import DEV_KEY
from tests.conftest import ACCOUNT_ID, CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT
from tests.emulators.common import TEST_TOKEN_PREFIX

REQUEST = {
    "cluster": CLUSTER_ID,
    "namespace": NAMESPACE,
    "serviceAccount": SERVICE_ACCOUNT,
    "openAIAccount": ACCOUNT_ID,
}
FUNCTION_KEY = "fk-s3cr3t-function-key-value"


def test_no_secret_in_logs_ledger_responses_or_messages(host, arm, kube, app_env, identity_endpoint, storage, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("azure", "urllib3", "kubernetes", "keyless"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    seen: list[str] = []
    headers = {"x-functions-key": FUNCTION_KEY}

    def answer(*args, **kwargs):
        status, body, resp = host.http(*args, headers=headers, **kwargs)
        seen.append(json.dumps(body))
        seen.append(json.dumps(dict(resp.headers)))
        return status, body

    def messages():
        seen.extend(base64.b64decode(m).decode() for m in host.raw_messages())

    _, plan = answer("onboardings_create", "POST", "/", REQUEST, params={"dryRun": "true"})
    _, created = answer("onboardings_create", "POST", "/", REQUEST)
    messages()
    host.drain()
    answer("onboardings_get", "GET", "/", route_params={"id": created["id"]})
    answer("onboardings_list", "GET", "/")
    answer("health", "GET", "/")
    answer("onboardings_delete", "DELETE", "/", route_params={"id": created["id"]})
    messages()
    host.drain()
    answer("onboardings_get", "GET", "/", route_params={"id": created["id"]})

    table = TableClient.from_connection_string(storage, app_env["KEYLESS_TABLE_NAME"])
    seen.extend(json.dumps(dict(e), default=str) for e in table.list_entities())
    logs = [r.getMessage() for r in caplog.records if not r.name.startswith("werkzeug")]
    assert len(logs) > 50, "DEBUG logging was not captured"
    assert any("Authorization" in line for line in logs), "azure-core logged no headers: the check would be blind"

    secrets = {
        "bearer token": TEST_TOKEN_PREFIX,
        "function key": FUNCTION_KEY,
        "storage key": DEV_KEY,
        "connection string": "AccountKey=",
        "managed identity header": identity_endpoint.header_secret,
        "kubeconfig admin token": "admin-token",
        "kubeconfig exec args": "--server-id",
    }
    for what, secret in secrets.items():
        for where, items in (("logs", logs), ("ledger/responses/messages", seen)):
            leaks = [i for i in items if secret in i]
            assert not leaks, f"{what} found in {where}: {leaks[0][:300]}"
    assert composition.service().settings.storage_connection_string not in repr(composition.service().settings)
