"""The work queue (Azure Storage queue): one message = "reconcile this binding key".

The Functions queue trigger expects base64 message bodies by default (host.json keeps
`messageEncoding: base64`), so the producer encodes with TextBase64EncodePolicy. A delay
("not yet, try in 30 s") is the message's initial visibility timeout: no sleeping worker.
"""

from __future__ import annotations

import json
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

    def enqueue(self, binding_key: str, reason: str, delay_seconds: float = 0) -> None:
        self._ensure()
        body = json.dumps({"bindingKey": binding_key, "reason": reason})
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


def parse_message(body: str) -> tuple[str, str]:
    """(binding key, reason) from a message body; ValueError naming what is wrong."""
    try:
        data = json.loads(body)
    except ValueError:
        raise ValueError("message body is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("bindingKey"), str) or not data["bindingKey"]:
        raise ValueError("message has no bindingKey")
    return data["bindingKey"], str(data.get("reason") or "")
