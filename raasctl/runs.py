"""A run's end and its progress: the one place that decides a run is complete and logs
RAAS_RUN_COMPLETE (the producer and the worker both call it), and the rate and ETA that
`runs list|show` and the worker's progress report."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from raasctl.codes import InfoCode
from raasctl.logs import event
from raasctl.state.base import RunRecord, State


def all_accounted_for(run: RunRecord) -> bool:
    """Enqueueing has finished and every message of the run is counted."""
    return run.total is not None and run.done >= run.total


def finish_if_complete(state: State, run: RunRecord, now: datetime) -> bool:
    """Mark the run finished when all its messages are accounted for, and log
    RAAS_RUN_COMPLETE once (only the caller whose write set `finished_at` logs it, however
    many processes see the last message). True when the run is finished now."""
    if run.finished_at is not None:
        return True
    if not all_accounted_for(run):
        return False
    if state.mark_finished(run.run_id, now):
        event(
            InfoCode.RUN_COMPLETE,
            f"{run.cron} run complete: {run.succeeded} of {run.total} succeeded",
            cron=run.cron,
            run_id=run.run_id,
            total=run.total,
            succeeded=run.succeeded,
            failed=run.failed,
            dead_lettered=run.dead_lettered,
            retries=run.retries,
        )
    return True


def run_progress(run: RunRecord, now: datetime) -> dict[str, Any]:
    """A run's counters with its rate (messages accounted for per hour since the first was
    processed) and, while it runs, the time left at that rate."""
    per_hour = None
    eta_s = None
    if run.started_at is not None:
        end = run.finished_at or now
        elapsed = (end - run.started_at).total_seconds()
        if elapsed > 0 and run.done:
            per_hour = run.done / elapsed * 3600
            if run.finished_at is None and run.total is not None:
                eta_s = max(0, run.total - run.done) / per_hour * 3600
    return {
        "run_id": run.run_id,
        "cron": run.cron,
        "env": run.env,
        "mock": run.mock,
        "status": run.status,
        "total": run.total,
        "done": run.done,
        "succeeded": run.succeeded,
        "failed": run.failed,
        "dead_lettered": run.dead_lettered,
        "retries": run.retries,
        "entries": run.entries,
        "enqueued": run.enqueued,
        "invalid": run.invalid,
        "duplicates": run.duplicates,
        "per_second": None if per_hour is None else round(per_hour / 3600, 3),
        "per_hour": None if per_hour is None else round(per_hour, 1),
        "eta_s": None if eta_s is None else round(eta_s),
        "created_at": run.created_at.isoformat(),
        "started_at": None if run.started_at is None else run.started_at.isoformat(),
        "finished_at": None if run.finished_at is None else run.finished_at.isoformat(),
        "error": run.error,
    }
