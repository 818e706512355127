"""A worker in a process of its own, for the scenario that kills one mid-run (SIGKILL).

It does what the Functions host does for the queue trigger, with the app's own function:
take a message (invisible for KEYLESS_TEST_VISIBILITY seconds), run it, delete it. Killed
between two steps, it leaves the message to reappear and the binding half done; the rerun
must converge. The environment (settings) is the test world's.

    python -m tests.faults.worker_process
"""

from __future__ import annotations

import base64
import os
import sys
import time


def main() -> None:
    from azure.functions.queue import QueueMessage
    from azure.storage.queue import QueueClient

    from shared.domain.settings import WORK_QUEUE
    from tests.functions.conftest import app_functions

    visibility = int(os.environ.get("KEYLESS_TEST_VISIBILITY", "2"))
    queue = QueueClient.from_connection_string(os.environ["AzureWebJobsStorage"], WORK_QUEUE)
    worker = app_functions()["reconcile_worker"]
    print("ready", flush=True)
    while True:
        got = False
        for m in queue.receive_messages(max_messages=1, visibility_timeout=visibility):
            got = True
            body = base64.b64decode(m.content)
            worker(QueueMessage(id=m.id, body=body, dequeue_count=m.dequeue_count, pop_receipt=m.pop_receipt))
            queue.delete_message(m)
        if not got:
            time.sleep(0.05)  # the host's polling


if __name__ == "__main__":
    sys.exit(main())
