"""The Event Grid topic emulator, through the real azure-eventgrid publisher client and plain HTTPS."""

from __future__ import annotations

import pytest
import requests
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridEvent, EventGridPublisherClient

from tests.emulators.common import token_for_scope
from tests.emulators.credential import StaticCredential
from tests.emulators.eventgrid import EVENT_GRID, EVENTGRID_SCOPE, MAX_BYTES, EventGridTopicEmulator


@pytest.fixture
def topic(ca):
    emulator = EventGridTopicEmulator(ca).start()
    yield emulator
    emulator.stop()


def send(topic, ca, events, credential=None):
    client = EventGridPublisherClient(topic.endpoint, credential or StaticCredential())
    client.send(events, connection_verify=str(ca.ca_pem_path), retry_total=0)


def post(topic, ca, body, content_type="application/cloudevents-batch+json; charset=utf-8", token=EVENTGRID_SCOPE):
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token_for_scope(token)}"
    return requests.post(topic.endpoint, params={"api-version": "2018-01-01"}, data=body, headers=headers,
                         verify=str(ca.ca_pem_path), timeout=10)  # fmt: skip


def test_cloud_events_from_the_sdk_arrive_as_published(topic, ca):
    send(topic, ca, [CloudEvent(source="/t", type="T.One", data={"a": 1}, subject="s")])
    (event,) = topic.events
    assert event["specversion"] == "1.0" and event["type"] == "T.One" and event["data"] == {"a": 1}
    (request,) = topic.log.items
    assert request.status == 200 and "api-version=2018-01-01" in request.query


def test_entra_only_keys_and_wrong_tokens_are_refused(topic, ca):
    with pytest.raises(ClientAuthenticationError) as refused:
        send(topic, ca, [CloudEvent(source="/t", type="T", data={})], credential=AzureKeyCredential("a-key"))
    assert "Local authentication" in str(refused.value)
    response = post(topic, ca, b"[]", token="https://management.azure.com/.default")
    assert response.status_code == 401 and response.json()["error"]["code"] == "Unauthorized"
    assert topic.events == []


def test_the_topic_takes_only_its_input_schema(topic, ca):
    with pytest.raises(HttpResponseError) as refused:
        send(topic, ca, [EventGridEvent(subject="s", event_type="T", data={}, data_version="1.0")])
    assert refused.value.status_code == 400 and "CloudEventSchemaV1_0" in str(refused.value)
    other = EventGridTopicEmulator(ca, input_schema=EVENT_GRID).start()
    try:
        send(other, ca, [EventGridEvent(subject="s", event_type="T", data={}, data_version="1.0")])
        assert other.events[0]["eventType"] == "T"
    finally:
        other.stop()


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{}", "non-empty JSON array"),
        (b"[]", "non-empty JSON array"),
        (b"[{", "not valid JSON"),
        (b'[{"specversion": "1.0", "id": "1", "source": "/s"}]', "'type' is required"),
        (b'[{"specversion": "0.3", "id": "1", "source": "/s", "type": "t"}]', "specversion must be '1.0'"),
    ],
)
def test_malformed_batches_are_refused_naming_the_problem(topic, ca, body, words):
    response = post(topic, ca, body)
    assert response.status_code == 400 and words in response.json()["error"]["message"]


def test_over_one_megabyte_is_413(topic, ca):
    big = b'[{"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "data": "' + b"x" * MAX_BYTES + b'"}]'
    assert post(topic, ca, big).status_code == 413


def test_injected_faults_answer_then_clear(topic, ca):
    topic.inject_fault(503, times=1)
    assert post(topic, ca, b'[{"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}]').status_code == 503
    assert post(topic, ca, b'[{"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}]').status_code == 200
