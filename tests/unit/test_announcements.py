"""Which status changes become outcome events, and what they carry."""

from __future__ import annotations

import pytest

from shared.domain.outcome_events import outcome_event
from shared.domain.records import BindingRecord
from shared.domain.settings import Settings, SettingsError

CLUSTER = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/aks1"


def record(status: str, announced: str = "") -> BindingRecord:
    return BindingRecord(
        key="k1",
        cluster=CLUSTER,
        namespace="team-a",
        service_account="chat-api",
        account="/subscriptions/s/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/oai",
        role_definition_id="5e0bd9bd-7b93-4f28-af87-19fc36ad61bd",
        status=status,  # type: ignore[arg-type]
        announced_status=announced,
        identity={"clientId": "c", "principalId": "p", "resourceId": "r", "tenantId": "t"},
        updated_at="2026-11-28T10:00:00.000Z",
    )


@pytest.mark.parametrize("status", ["pending", "reconciling", "offboarding"])
def test_transient_statuses_are_not_announced(status):
    assert outcome_event(record(status)) is None


def test_a_status_is_announced_once():
    assert outcome_event(record("ready", announced="ready")) is None
    event = outcome_event(record("not-ready", announced="ready"))
    assert event.type == "Keyless.Onboarding.NotReady" and event.data["previousStatus"] == "ready"


def test_the_id_is_stable_for_one_change_and_new_for_the_next():
    first, again = outcome_event(record("ready")), outcome_event(record("ready"))
    assert first.id == again.id, "a re-publish after a crash carries the same id"
    later = record("ready")
    later.updated_at = "2026-11-28T11:00:00.000Z"
    assert outcome_event(later).id != first.id


def test_the_data_holds_ids_and_names_only():
    event = outcome_event(record("verified"))
    assert event.subject == f"{CLUSTER}/namespaces/team-a/serviceAccounts/chat-api"
    assert event.data["identity"] == {"clientId": "c", "principalId": "p", "resourceId": "r"}
    assert set(event.data) == {
        "id", "status", "previousStatus", "reason", "cluster", "namespace", "serviceAccount", "openAIAccount",
        "roleDefinitionId", "workloads", "identity", "verification", "source", "updatedAt", "links",
    }  # fmt: skip


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://topic.westus2-1.eventgrid.azure.net/api/events",
        "https://topic.westus2-1.eventgrid.azure.net/api/events?aeg-sas-key=abc",
        "https://user:pass@topic.westus2-1.eventgrid.azure.net/api/events",
    ],
)
def test_a_topic_endpoint_must_be_https_without_credentials(endpoint):
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"KEYLESS_OUTCOME_TOPIC_ENDPOINT": endpoint})
    assert "KEYLESS_OUTCOME_TOPIC_ENDPOINT" in str(refused.value) and "abc" not in str(refused.value)


def test_the_event_schema_is_one_of_two():
    assert Settings.from_env({"KEYLESS_OUTCOME_EVENT_SCHEMA": "EventGrid"}).outcome_event_schema == "eventgrid"
    with pytest.raises(SettingsError):
        Settings.from_env({"KEYLESS_OUTCOME_EVENT_SCHEMA": "custom"})
