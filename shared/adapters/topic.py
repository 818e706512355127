"""The Event Grid topic Keyless publishes outcome events to (shared.domain.outcome_events says what).

Authenticated with Microsoft Entra ID (the app's identity needs "EventGrid Data Sender" on the
topic, see infra/roles): no access key is ever configured. The SDK is imported on first use, so
a cold start without a topic pays nothing.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

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
        kwargs: dict[str, Any] = {"retry_total": 2, "connection_timeout": 5, "read_timeout": 10}
        if self._settings.ca_bundle:
            kwargs["connection_verify"] = self._settings.ca_bundle
        self._publisher().send([self._shape(event)], **kwargs)

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
