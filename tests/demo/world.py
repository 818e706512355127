"""The local demo world: Keyless's Azure and cluster, emulated on localhost, and the settings that point at it.

Why: `bash scripts/start` should show the main job on a fresh clone, with no Azure subscription and no
network beyond localhost. The world is built from the test suite's own pieces (tests/access_services.py:
ARM, Entra and the Azure OpenAI data plane wired as Azure wires them; the Kubernetes emulator with its OIDC
issuer and TokenRequest; the managed-identity endpoint; Azurite), seeded as the suite seeds them: one
subscription, one AKS cluster (OIDC issuer and workload identity on), one Azure OpenAI account with a custom
subdomain and a gpt-4o deployment, and the sample workload (`ai-service`, still holding an API key) in the
team's namespace.

`settings(world)` is the one place the app's settings for it are made: `--check` runs the app in-process on
them, and `scripts/start` hands the same values to `func start`; `write_settings` puts them in
`.demo/local.settings.json` for the user to read (rewritten at each start: the ports change). Propagation in
the emulators is a few real seconds and the app's retry delays are scaled down (KEYLESS_RETRY_DELAY_SCALE),
so the proof of access shows `pending` once or twice and then passes within seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.access_services import AMBIENT, AccessServices, access_services, emulated_azure
from tests.azurite import Azurite
from tests.conftest import ACCOUNT_ID, CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT, SUB
from tests.e2e.test_workloads import AI, ai_service
from tests.emulators.common import TestCA
from tests.emulators.eventgrid import EventGridTopicEmulator
from tests.emulators.identity_endpoint import IdentityEndpoint
from tests.emulators.kube import KubeEmulator
from tests.functions.conftest import TEAM_GROUP, TEAM_OID

ROOT = Path(__file__).resolve().parents[2]
DEMO_DIR = ROOT / ".demo"  # gitignored: the settings file, the host's log
TABLE = "keylessdemo"
ROLE_PROPAGATION_SECONDS = 3.0  # the data plane honours a new role assignment this long after it is made
CREDENTIAL_PROPAGATION_SECONDS = 1.0  # Entra sees a new federated credential this long after it is made
RETRY_DELAY_SCALE = "0.02"  # the app's "not yet" delays: 30 s becomes under a second (storage rounds up to 1 s)

REQUEST = {
    "cluster": CLUSTER_ID,
    "namespace": NAMESPACE,
    "serviceAccount": SERVICE_ACCOUNT,
    "openAIAccount": ACCOUNT_ID,
    "workloads": [AI],
}
"""The sample onboarding: the team's `ai-service` Deployment gets the `chat-api` identity and no API key."""

DEV_PRINCIPAL = {"oid": TEAM_OID, "groups": [TEAM_GROUP], "name": "demo-developer@contoso.com"}


def access_policy() -> dict[str, Any]:
    """The example policy: the demo team (by group) may bind its namespace's workloads to the team's account."""
    return {
        "rules": [
            {
                "name": "demo-team",
                "principals": {"groups": [TEAM_GROUP]},
                "clusters": [CLUSTER_ID],
                "namespaces": [NAMESPACE],
                "accounts": [ACCOUNT_ID],
                "workloads": [AI],
            }
        ]
    }


@dataclasses.dataclass
class World:
    ca: TestCA
    azurite: Azurite
    identity: IdentityEndpoint
    kube: KubeEmulator
    services: AccessServices
    topic: EventGridTopicEmulator  # outcome events (KEYLESS_OUTCOME_TOPIC_ENDPOINT)


@contextlib.contextmanager
def demo_world() -> Any:
    """Start everything on free localhost ports, seed it, yield the `World`; stop it all on the way out."""
    with contextlib.ExitStack() as stack:
        ca = TestCA()
        azurite = Azurite().start()
        stack.callback(azurite.stop)
        identity = IdentityEndpoint().start()
        stack.callback(identity.stop)
        kube = KubeEmulator(ca).start()
        stack.callback(kube.stop)
        kube.add_namespace(NAMESPACE)
        services = stack.enter_context(access_services(ca, kube))
        services.openai.role_propagation_seconds = ROLE_PROPAGATION_SECONDS
        services.entra.credential_propagation_seconds = CREDENTIAL_PROPAGATION_SECONDS
        topic = EventGridTopicEmulator(ca).start()
        stack.callback(topic.stop)
        ai_service(kube)
        yield World(ca, azurite, identity, kube, services, topic)


def settings(world: World) -> dict[str, str]:
    """Every app setting for the world: the sample's keys, then the emulated Azure, the dev principal, the
    example policy and the proof of access. None is empty: Core Tools takes a setting from the environment
    unless it is empty there, so a developer's own local.settings.json (for Azure) cannot leak in."""
    values = dict(json.loads((ROOT / "local.settings.sample.json").read_text())["Values"])
    values.update(emulated_azure(world.azurite.connection_string, world.services, world.ca, world.identity))
    values.update(
        {
            "KEYLESS_TABLE_NAME": TABLE,
            "KEYLESS_ACCESS_POLICY": json.dumps(access_policy()),
            "KEYLESS_DEV_PRINCIPAL": json.dumps(DEV_PRINCIPAL),
            "KEYLESS_PROVE_ACCESS": "true",
            "KEYLESS_RETRY_DELAY_SCALE": RETRY_DELAY_SCALE,
            "KEYLESS_ARM_PACING_SCALE": "0",
            "KEYLESS_IDENTITY_SUBSCRIPTION_ID": SUB,
            "KEYLESS_IDENTITY_RESOURCE_GROUP": "rg-aks",
            "KEYLESS_ALLOWED_SUBSCRIPTIONS": SUB,
            "KEYLESS_OUTCOME_TOPIC_ENDPOINT": world.topic.endpoint,
            "KEYLESS_SYSTEM_NAMESPACES": "gatekeeper-system",  # an example: the Azure Policy add-on's namespace
        }
    )
    return values


def write_settings(values: dict[str, str], directory: Path = DEMO_DIR) -> Path:
    """`values` as `directory`/local.settings.json (the Functions host's format), readable by the user only."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": values}, indent=2) + "\n")
    path.chmod(0o600)
    return path


def environment(values: Mapping[str, str], base: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The app's process environment for the world: `base` without a developer's own credentials, plus `values`."""
    return {**{k: v for k, v in base.items() if k not in AMBIENT}, **values}


def describe(world: World) -> list[str]:
    """What the world holds and where it answers, for the user."""
    services = world.services
    return [
        f"subscription {SUB} (ARM emulator at {services.arm.url})",
        f"AKS cluster {CLUSTER_ID.rsplit('/', 1)[-1]}: OIDC issuer {world.kube.issuer}, workload identity on, "
        f"API server {world.kube.url}",
        f"Azure OpenAI account {ACCOUNT_ID.rsplit('/', 1)[-1]}: custom subdomain, deployment gpt-4o, "
        f"data plane {services.openai.url}",
        f"Entra at {services.entra.url}, managed-identity endpoint at {world.identity.url}",
        f"Azurite queue at {world.azurite.endpoints['queue']}, Event Grid topic at {world.topic.endpoint}",
        f"sample workload: Deployment {NAMESPACE}/{AI} (reads OPENAI_API_KEY from a Secret today)",
    ]
