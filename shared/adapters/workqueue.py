"""The work queue (Azure Storage queue): one message = "reconcile this binding key".

The Functions queue trigger expects base64 message bodies by default (host.json keeps
`messageEncoding: base64`), so the producer encodes with TextBase64EncodePolicy. A delay
("not yet, try in 30 s") is the message's initial visibility timeout: no sleeping worker.
"""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import ResourceExistsError

MAX_VISIBILITY_SECONDS = 7 * 24 * 3600


class WorkQueue:
    def __init__(self, connection_string: str, queue_name: str) -> None:
        from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

        self.name = queue_name
        self._queue = QueueClient.from_connection_string(
            connection_string,
            queue_name,
            message_encode_policy=TextBase64EncodePolicy(),
            message_decode_policy=TextBase64DecodePolicy(),
        )
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
        """Send one message, invisible for `delay_seconds` (retry later without sleeping)."""
        self._ensure()
        visibility = int(min(max(delay_seconds, 0), MAX_VISIBILITY_SECONDS))
        self._queue.send_message(body, visibility_timeout=visibility or None)

    def ping(self) -> None:
        self._ensure()
        self._queue.get_queue_properties()

    @property
    def client(self) -> Any:
        """The underlying QueueClient (test drivers read messages as the host would)."""
        self._ensure()
        return self._queue
