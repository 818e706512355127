"""ARM, Entra and the Azure OpenAI data plane wired as Azure wires them, for tests that prove access.

The account's endpoint is the data-plane emulator (ARM's `openai_endpoint_base`), Entra validates
assertions against ARM's identities and federated credentials and the issuer directory (where the
kube emulator publishes its cluster's keys), and the data plane trusts Entra's keys and ARM's role
assignments. Seeded as tests/conftest.py seeds its `arm`: the cluster on `kube`, the team's account.

`emulated_azure` is the app's settings for such a world (the Functions tests' `app_env` and the demo,
tests/demo/world.py, both take them from it).
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses

from tests.conftest import ACCOUNT_ID, CLUSTER_ID, SUB
from tests.emulators.arm import ARM_SCOPE, ArmEmulator
from tests.emulators.common import TestCA
from tests.emulators.entra import EntraEmulator
from tests.emulators.identity_endpoint import IdentityEndpoint
from tests.emulators.kube import KubeEmulator
from tests.emulators.openai import OpenAIEmulator

AMBIENT = (
    "KEYLESS_DEV_PRINCIPAL",
    "WEBSITE_SITE_NAME",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_FEDERATED_TOKEN_FILE",
    "MSI_ENDPOINT",
)
"""Environment variables a developer's shell may hold that would change who the app is (a credential
DefaultAzureCredential tries first) or where it thinks it runs: removed wherever the app meets the emulators."""


@dataclasses.dataclass
class AccessServices:
    arm: ArmEmulator
    entra: EntraEmulator
    openai: OpenAIEmulator


@contextlib.contextmanager
def access_services(ca: TestCA, kube: KubeEmulator, **cluster: object) -> collections.abc.Iterator[AccessServices]:
    arm = ArmEmulator(ca).start()
    entra = EntraEmulator(ca, arm).start()
    openai = OpenAIEmulator(ca, arm, token_keys=entra.jwks).start()
    try:
        arm.openai_endpoint_base = openai.endpoint_base
        arm.add_resource_group(SUB, "rg-aks")
        arm.add_resource_group(SUB, "rg-ai")
        arm.add_managed_cluster(CLUSTER_ID, kube_server_url=kube.url, kube_ca_pem=ca.ca_pem, **cluster)  # type: ignore[arg-type]
        arm.add_cognitive_account(ACCOUNT_ID, deployments=[("gpt-4o", "gpt-4o", "2024-08-06")])
        yield AccessServices(arm, entra, openai)
    finally:
        openai.stop()
        entra.stop()
        arm.stop()


def emulated_azure(
    storage: str, services: AccessServices | ArmEmulator, ca: TestCA, identity: IdentityEndpoint
) -> dict[str, str]:
    """The app settings that point it at the emulators: Azurite's connection string, ARM, the test CA, the
    managed-identity endpoint (so DefaultAzureCredential runs as in Azure) and, given `AccessServices`, Entra."""
    arm = services.arm if isinstance(services, AccessServices) else services
    values = {
        "AzureWebJobsStorage": storage,
        "KEYLESS_ARM_ENDPOINT": arm.url,
        "KEYLESS_ARM_SCOPE": ARM_SCOPE,
        "KEYLESS_CA_BUNDLE": str(ca.ca_pem_path),
        **identity.env(),
    }
    if isinstance(services, AccessServices):
        values["KEYLESS_AUTHORITY_HOST"] = services.entra.url
    return values
