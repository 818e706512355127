"""Timer trigger: the drift sweep. Plans one sweep (bulk reads, suspects) and queues one shard per
cluster; the queue worker runs the shards and the reconciles of the suspects (shared.app.sweep)."""

from __future__ import annotations

import logging
import os

import azure.functions as func

from shared.app import composition, observability, sweep

bp = func.Blueprint()
log = logging.getLogger("keyless.sweep")

SCHEDULE_SETTING = "KEYLESS_SWEEP_SCHEDULE"
DEFAULT_SCHEDULE = "0 */30 * * * *"


def schedule() -> str:
    """The app setting when it is set (the host resolves `%...%`), else every 30 minutes: a deployment
    that leaves the setting out still sweeps (an unresolved `%...%` would stop the timer). Read when the
    worker indexes the functions, from the app settings in its environment."""
    return f"%{SCHEDULE_SETTING}%" if os.environ.get(SCHEDULE_SETTING, "").strip() else DEFAULT_SCHEDULE


@bp.function_name("drift_sweep")
@bp.timer_trigger(arg_name="timer", schedule=schedule(), run_on_startup=False, use_monitor=True)
def drift_sweep(timer: func.TimerRequest) -> None:
    with observability.timer("drift_sweep") as span:
        report = sweep.start(composition.service())
        span.set("keyless.sweep.id", report.run_id)
        span.set("keyless.sweep.action", report.action)
    log.info(
        "drift sweep %s %s: %d shards, %d suspects (%s)%s",
        report.run_id,
        report.action,
        report.shards,
        report.suspects,
        report.source or "-",
        " (late)" if timer.past_due else "",
    )
