"""The Event Grid topic Keyless publishes outcome events to (shared.domain.outcome_events says what).

Authenticated with Microsoft Entra ID (the app's identity needs "EventGrid Data Sender" on the
topic, see infra/roles): no access key is ever configured. The SDK is imported on first use, so
a cold start without a topic pays nothing. Retries and timeouts: shared.domain.retry_policy.EVENT_GRID.

Every attempt is counted (shared.adapters.counting). The basic-topic publisher drops its
constructor's keywords, so no request hook can be set on it; the call's response hook, which azure-core
runs after every attempt that got an answer, counts instead, and an attempt that got none ends the
call (azure-core never retries a POST without an answer) and is counted when it raises.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from shared.adapters.counting import pipeline_attempt, pipeline_response, record
from shared.domain import retry_policy
from shared.domain.outcome_events import DATA_VERSION, OutcomeEvent
from shared.domain.settings import Settings


class OutcomeTopic:
    def __init__(self, settings: Settings, credential: Any) -> None:
        self._settings = settings
        self._credential = credential
        self._client: Any = None

    def _publisher(self) -> Any:
        if self._client is None:
            from azure.eventgrid import EventGridPublisherClient

            self._client = EventGridPublisherClient(self._settings.outcome_topic_endpoint, self._credential)
        return self._client

    def publish(self, event: OutcomeEvent) -> None:
        """Send one event (raises azure.core errors when the topic refuses it or cannot be reached)."""
        connect, read = retry_policy.EVENT_GRID.timeouts()
        kwargs: dict[str, Any] = {
            **retry_policy.EVENT_GRID.retry.kwargs(),
            "connection_timeout": connect,
            "read_timeout": read,
        }
        if self._settings.ca_bundle:
            kwargs["connection_verify"] = self._settings.ca_bundle
        from azure.core.exceptions import ServiceRequestError, ServiceResponseError

        answered = 0

        def count(response: Any) -> None:
            nonlocal answered
            answered += 1
            pipeline_attempt("eventgrid", response)
            pipeline_response("eventgrid", response)  # a 429 is measured (keyless.requests.throttled)

        try:
            self._publisher().send([self._shape(event)], raw_response_hook=count, **kwargs)
        except (ServiceRequestError, ServiceResponseError):
            record("eventgrid", "POST", self._settings.outcome_topic_endpoint, retry=answered > 0)
            raise

    def _shape(self, event: OutcomeEvent) -> Any:
        if self._settings.outcome_event_schema == "eventgrid":
            from azure.eventgrid import EventGridEvent

            return EventGridEvent(
                subject=event.subject,
                event_type=event.type,
                data=event.data,
                data_version=DATA_VERSION,
                id=event.id,
                event_time=dt.datetime.fromisoformat(event.time.replace("Z", "+00:00")),
            )
        from azure.core.messaging import CloudEvent

        return CloudEvent(
            source=event.source,
            type=event.type,
            data=event.data,
            subject=event.subject,
            id=event.id,
            time=dt.datetime.fromisoformat(event.time.replace("Z", "+00:00")),
            datacontenttype="application/json",
        )
