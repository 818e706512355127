"""Queue triggers: the reconcile worker, and what happens to a message it gave up on.

Not-yet conditions are re-queued with a delay by the service (the message then completes);
unexpected errors raise so the host retries up to maxDequeueCount, then moves the message to
`keyless-work-poison`, where `reconcile_poison` records the binding failed (never lost silently).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import azure.functions as func

from shared.app import composition, observability, worker
from shared.app.messages import BadMessage
from shared.domain.settings import POISON_QUEUE, WORK_QUEUE

bp = func.Blueprint()
log = logging.getLogger("keyless.worker")


@bp.function_name("reconcile_worker")
@bp.queue_trigger(arg_name="msg", queue_name=WORK_QUEUE, connection="AzureWebJobsStorage")
def reconcile_worker(msg: func.QueueMessage) -> None:
    _take(msg, WORK_QUEUE, "message", lambda body: worker.process(composition.service(), body))


@bp.function_name("reconcile_poison")
@bp.queue_trigger(arg_name="msg", queue_name=POISON_QUEUE, connection="AzureWebJobsStorage")
def reconcile_poison(msg: func.QueueMessage) -> None:
    _take(msg, POISON_QUEUE, "poison message", lambda body: worker.give_up(composition.service(), body))


def _take(msg: func.QueueMessage, queue: str, what: str, use_case: Callable[[str], None]) -> None:
    """Decode the body, run `use_case` in the message's trace; a body that cannot be read (not UTF-8,
    or BadMessage) is logged and dropped: another delivery would not make it readable."""
    try:
        body = msg.get_body().decode("utf-8")
    except UnicodeDecodeError:
        log.error("dropped %s %s: body is not UTF-8", what, msg.id)
        return
    with observability.queued_message(queue, body, msg.id, msg.insertion_time, msg.dequeue_count):
        try:
            use_case(body)
        except BadMessage as exc:
            log.error("dropped %s %s: %s", what, msg.id, exc)
