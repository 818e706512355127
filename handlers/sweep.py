"""Timer trigger: the drift sweep. Queues every live binding; the engine repairs what drifted."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.app import composition

bp = func.Blueprint()
log = logging.getLogger("keyless.sweep")

SCHEDULE_SETTING = "KEYLESS_SWEEP_SCHEDULE"
DEFAULT_SCHEDULE = "0 */30 * * * *"


@bp.function_name("drift_sweep")
@bp.timer_trigger(arg_name="timer", schedule=f"%{SCHEDULE_SETTING}%", run_on_startup=False, use_monitor=True)
def drift_sweep(timer: func.TimerRequest) -> None:
    count = composition.service().sweep()
    log.info("drift sweep queued %d bindings%s", count, " (late)" if timer.past_due else "")
