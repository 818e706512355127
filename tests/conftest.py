"""Fixtures: a test CA, the ARM and Kubernetes emulators, settings pointing at them, an engine.

Everything across a network boundary is a real HTTPS server here; nothing of ours is mocked. The
emulators, the engine and the SDKs are imported inside the fixtures that need them, so that unit
tests (plain data) start without loading any of it.
"""

from __future__ import annotations

import collections.abc
import dataclasses
from typing import TYPE_CHECKING

import pytest

from shared.domain.binding import Binding
from shared.domain.settings import Settings

if TYPE_CHECKING:
    from shared.engine.reconcile import Engine
    from tests.emulators.arm import ArmEmulator
    from tests.emulators.common import TestCA
    from tests.emulators.credential import StaticCredential
    from tests.emulators.kube import KubeEmulator

SUB = "11111111-2222-3333-4444-555555555555"
CLUSTER_ID = f"/subscriptions/{SUB}/resourceGroups/rg-aks/providers/Microsoft.ContainerService/managedClusters/aks1"
ACCOUNT_ID = f"/subscriptions/{SUB}/resourceGroups/rg-ai/providers/Microsoft.CognitiveServices/accounts/oai-team"
NAMESPACE = "team-a"
SERVICE_ACCOUNT = "chat-api"


@pytest.fixture(scope="session")
def ca() -> TestCA:
    from tests.emulators.common import TestCA

    return TestCA()


@pytest.fixture
def kube(ca: TestCA) -> collections.abc.Iterator[KubeEmulator]:
    from tests.emulators.kube import KubeEmulator

    emulator = KubeEmulator(ca).start()
    emulator.add_namespace(NAMESPACE)
    yield emulator
    emulator.stop()


@pytest.fixture
def arm(ca: TestCA, kube: KubeEmulator) -> collections.abc.Iterator[ArmEmulator]:
    from tests.emulators.arm import ArmEmulator

    emulator = ArmEmulator(ca).start()
    emulator.add_resource_group(SUB, "rg-aks")
    emulator.add_resource_group(SUB, "rg-ai")
    emulator.add_managed_cluster(CLUSTER_ID, kube_server_url=kube.url, kube_ca_pem=ca.ca_pem)
    emulator.add_cognitive_account(
        ACCOUNT_ID,
        deployments=[("gpt-4o", "gpt-4o", "2024-08-06"), ("text-embedding-3-large", "text-embedding-3-large", "1")],
    )
    yield emulator
    emulator.stop()


@pytest.fixture
def settings(arm: ArmEmulator, ca: TestCA) -> Settings:
    from tests.emulators.arm import ARM_SCOPE

    return Settings.from_env(
        {"KEYLESS_ARM_ENDPOINT": arm.url, "KEYLESS_ARM_SCOPE": ARM_SCOPE, "KEYLESS_CA_BUNDLE": str(ca.ca_pem_path)}
    )


@pytest.fixture
def credential() -> StaticCredential:
    from tests.emulators.credential import StaticCredential

    return StaticCredential()


@pytest.fixture
def make_engine(credential: StaticCredential) -> collections.abc.Callable[..., Engine]:
    from shared.engine.reconcile import Engine

    def make(settings: Settings, **overrides: object) -> Engine:
        return Engine.from_settings(dataclasses.replace(settings, **overrides), credential)

    return make


@pytest.fixture
def engine(settings: Settings, make_engine: collections.abc.Callable[..., Engine]) -> Engine:
    return make_engine(settings)


@pytest.fixture
def binding() -> Binding:
    return Binding.create(CLUSTER_ID, NAMESPACE, SERVICE_ACCOUNT, ACCOUNT_ID)
