"""The work queue (Azure Storage queue): one message = one work item (see shared.app.messages).

The Functions queue trigger expects base64 message bodies by default (host.json keeps
`messageEncoding: base64`), so the producer encodes with TextBase64EncodePolicy. A delay
("not yet, try in 30 s") is the message's initial visibility timeout: no sleeping worker.
"""

from __future__ import annotations

import math
from typing import Any

from azure.core.exceptions import AzureError, ResourceExistsError

from shared.adapters.counting import counting_hooks
from shared.adapters.tables import storage_error
from shared.domain import retry_policy
from shared.domain.settings import WORK_QUEUE

MAX_VISIBILITY_SECONDS = retry_policy.QUEUE_MAX_VISIBILITY_SECONDS


class WorkQueue:
    def __init__(
        self,
        queue_name: str = WORK_QUEUE,
        connection_string: str | None = None,
        endpoint: str | None = None,
        credential: Any = None,
        connection_verify: str | None = None,
    ) -> None:
        """From a connection string (Azurite), or a queue service URI + Entra credential (Azure:
        shared.domain.storage.StorageConnection.endpoint("queue")); `connection_verify`: a CA bundle to
        trust (KEYLESS_CA_BUNDLE: tests' HTTPS Azurite), else the system's."""
        from azure.storage.queue import LinearRetry, QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

        self.name = queue_name
        connect, read = retry_policy.QUEUE.timeouts()
        policies: dict[str, Any] = {
            "message_encode_policy": TextBase64EncodePolicy(),
            "message_decode_policy": TextBase64DecodePolicy(),
            # A few quick retries, not the SDK's 15 s+ exponential waits: see retry_policy.QUEUE.
            "retry_policy": LinearRetry(**retry_policy.QUEUE.retry.kwargs()),
            "connection_timeout": connect,
            "read_timeout": read,
            **counting_hooks("queue"),  # every attempt counted
        }
        if connection_verify:
            policies["connection_verify"] = connection_verify
        if connection_string:
            self._queue = QueueClient.from_connection_string(connection_string, queue_name, **policies)
        elif endpoint:
            self._queue = QueueClient(endpoint, queue_name, credential=credential, **policies)
        else:
            raise ValueError("a work queue needs a connection string or a queue service URI")
        self._ready = False

    def _ensure(self) -> None:
        if self._ready:
            return
        try:
            self._queue.create_queue()
        except ResourceExistsError:
            pass
        self._ready = True

    def enqueue_raw(self, body: str, delay_seconds: float = 0) -> None:
        """Send one message, invisible for `delay_seconds` (retry later without sleeping).

        Storage counts visibility in whole seconds: a fraction rounds up, so that "not yet"
        never becomes "at once"."""
        self._ensure()
        visibility = math.ceil(min(max(delay_seconds, 0), MAX_VISIBILITY_SECONDS))
        self._queue.send_message(body, visibility_timeout=visibility or None)

    def ping(self) -> None:
        """Raises a KeylessError naming AzureWebJobsStorage and the fix if the queue cannot be reached."""
        try:
            self._ensure()
            self._queue.get_queue_properties()
        except AzureError as exc:
            raise storage_error(exc, "the work queue") from exc

    @property
    def client(self) -> Any:
        """The underlying QueueClient (test drivers read messages as the host would)."""
        self._ensure()
        return self._queue
