"""Private clusters: an API server Keyless cannot reach. With the fallback off, a clear failure;
with it on, the engine goes through the AKS run-command API (`managedClusters/runCommand`).

The ARM emulator has no runCommand route yet, so the second test stops at ARM's answer: it shows
the real SDK call is made (POST .../runCommand) and that its refusal is reported, not swallowed.
"""

from __future__ import annotations

import dataclasses
import socket

import pytest

from tests.conftest import CLUSTER_ID


@pytest.fixture
def settings(settings):
    """No client-side ARM pacing here: it would only add waits (Azure's limits are tested elsewhere)."""
    return dataclasses.replace(settings, arm_pacing_scale=0)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def private_cluster(arm, ca):
    """The cluster, private (apiServerAccessProfile.enablePrivateCluster), its API server unreachable."""
    arm.delete_managed_cluster(CLUSTER_ID)
    arm.add_managed_cluster(CLUSTER_ID, kube_server_url=f"https://127.0.0.1:{closed_port()}", kube_ca_pem=ca.ca_pem)
    with arm._lock:  # no seeding knob for it yet: set the property the way the AKS API returns it
        arm._clusters[CLUSTER_ID.lower()].json["properties"]["apiServerAccessProfile"] = {
            "enablePrivateCluster": True,
            "privateDNSZone": "system",
        }
    return CLUSTER_ID


def test_without_the_fallback_a_private_cluster_fails_with_the_reason(
    arm, kube, settings, make_engine, binding, private_cluster
):
    result = make_engine(settings, run_command_fallback=False).reconcile(binding)
    assert result.status == "failed"
    reason = result.step("namespace").reason
    assert "private" in reason and "KEYLESS_RUN_COMMAND_FALLBACK=true" in reason
    assert arm.log.writes() == [], "nothing written before the namespace is known"


def test_with_the_fallback_the_engine_calls_run_command(arm, kube, settings, make_engine, binding, private_cluster):
    result = make_engine(settings, run_command_fallback=True).reconcile(binding)
    assert result.status == "failed"
    # The emulator answers the unknown route 404, which the adapter reads as "cluster not found".
    assert "not found" in result.step("namespace").reason
    assert len(arm.log.matching("POST", f"{CLUSTER_ID.split('/providers/')[1]}/runCommand")) == 1


def test_a_public_cluster_that_is_unreachable_is_only_not_yet(arm, kube, ca, settings, make_engine, binding):
    arm.delete_managed_cluster(CLUSTER_ID)
    arm.add_managed_cluster(CLUSTER_ID, kube_server_url=f"https://127.0.0.1:{closed_port()}", kube_ca_pem=ca.ca_pem)
    result = make_engine(settings).reconcile(binding)
    assert result.status == "not-ready" and "unreachable" in result.step("namespace").reason
    assert arm.log.matching("POST", "runCommand") == []
