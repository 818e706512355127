"""Queue triggers: the reconcile worker, and what happens to a message it gave up on.

Not-yet conditions are re-queued with a delay by the service (the message then completes);
unexpected errors raise so the host retries up to maxDequeueCount, then moves the message to
`keyless-work-poison`, where `reconcile_poison` records the binding failed (never lost silently).
"""

from __future__ import annotations

import logging

import azure.functions as func

from shared.app import composition, observability
from shared.app.messages import BadMessage
from shared.domain.settings import POISON_QUEUE, WORK_QUEUE

bp = func.Blueprint()
log = logging.getLogger("keyless.worker")


@bp.function_name("reconcile_worker")
@bp.queue_trigger(arg_name="msg", queue_name=WORK_QUEUE, connection="AzureWebJobsStorage")
def reconcile_worker(msg: func.QueueMessage) -> None:
    try:
        body = msg.get_body().decode("utf-8")
    except UnicodeDecodeError:
        log.error("dropped message %s: body is not UTF-8", msg.id)
        return
    with observability.queued_message(WORK_QUEUE, body, msg.id, msg.insertion_time, msg.dequeue_count):
        try:
            composition.service().process(body)
        except BadMessage as exc:
            log.error("dropped message %s: %s", msg.id, exc)


@bp.function_name("reconcile_poison")
@bp.queue_trigger(arg_name="msg", queue_name=POISON_QUEUE, connection="AzureWebJobsStorage")
def reconcile_poison(msg: func.QueueMessage) -> None:
    try:
        body = msg.get_body().decode("utf-8")
    except UnicodeDecodeError:
        log.error("dropped poison message %s: body is not UTF-8", msg.id)
        return
    with observability.queued_message(POISON_QUEUE, body, msg.id, msg.insertion_time, msg.dequeue_count):
        try:
            composition.service().give_up(body)
        except BadMessage as exc:
            log.error("dropped poison message %s: %s", msg.id, exc)
