"""Timer trigger: the drift sweep. Plans one sweep (bulk reads, suspects) and queues one shard per
cluster; the queue worker runs the shards and the reconciles of the suspects (shared.app.sweep)."""

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
    report = composition.service().start_sweep()
    log.info(
        "drift sweep %s %s: %d shards, %d suspects (%s)%s",
        report.run_id,
        report.action,
        report.shards,
        report.suspects,
        report.source or "-",
        " (late)" if timer.past_due else "",
    )
