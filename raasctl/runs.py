"""A run's end and its progress: the one place that decides a run is complete and logs
RAAS_RUN_COMPLETE (the producer and the worker both call it), the reconcile that closes runs
nothing more will arrive for, and the rate and ETA that `runs list|show` report.

Every run reaches a terminal state: `complete`, `failed` (entries failed or were
dead-lettered, or enqueueing stopped early), `purged` (the queue was purged before its
entries were handled: those count as purged) or `abandoned` (its producer died mid-enqueue:
the total is what got through). Once the queue holds none of its messages (visible, in
flight or delayed), `reconcile` closes a run that is still open.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from raasctl.codes import ErrorCode, InfoCode
from raasctl.errors import RuntimeFailure
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
            **_end_fields(run),
        )
    return True


def _end_fields(run: RunRecord) -> dict[str, Any]:
    """The fields RAAS_RUN_COMPLETE and RAAS_RUN_RECONCILED carry, wherever they are logged."""
    return {
        "cron": run.cron,
        "run_id": run.run_id,
        "total": run.total,
        "succeeded": run.succeeded,
        "failed": run.failed,
        "dead_lettered": run.dead_lettered,
        "superseded": run.superseded,
        "purged": run.purged,
        "retries": run.retries,
    }


def producer_lock(run: RunRecord) -> str:
    """The lock a run's producer holds while it enqueues: the cron's run lock (one run of a
    cron at a time), or a mock run's own."""
    return mock_lock(run.env, run.run_id) if run.mock else run_lock(run.env, run.cron)


def run_lock(env: str, cron: str) -> str:
    return f"run:{env}:{cron}"


def mock_lock(env: str, run_id: str) -> str:
    return f"mock:{env}:{run_id}"


def producer_alive(state: State, run: RunRecord, now: datetime) -> bool:
    """Whether the run's producer still holds its lease (it renews it while it lives)."""
    info = state.lock_info(producer_lock(run))
    return info is not None and info.owner == run.run_id and info.expires_at > now


def reconcile(
    state: State, now: datetime, *, env: str | None = None, run_ids: Iterable[str] | None = None
) -> list[RunRecord]:
    """Close the open runs (of `env`, or these `run_ids`) that nothing more will arrive for;
    call it only when the queue holds no message (visible, in flight or delayed). Returns the
    runs it closed.

    - all counted: finished (complete or failed, by its counters);
    - still enqueueing and its producer's lease lapsed: abandoned, its total what got
      through (everything that got through was handled: the queue is empty);
    - running, some never handled, and the queue purged since it was made: those count as
      purged;
    - running, some never handled, no purge: failed, with the number that never arrived."""
    if run_ids is None:
        runs = [run for run in state.open_runs() if env is None or run.env == env]
    else:
        runs = [run for run in map(state.get_run, run_ids) if run is not None]
    purged_at = {name: state.last_purge(name) for name in {run.env for run in runs}}
    closed = []
    for run in runs:
        if run.finished_at is not None:
            continue
        if all_accounted_for(run):
            if finish_if_complete(state, run, now):
                closed.append(run)
            continue
        if run.total is None:
            if producer_alive(state, run, now):
                continue
            changed = state.mark_finished(run.run_id, now, total=run.done, abandoned=True)
            why = f"its producer stopped mid-enqueue; {run.done} messages got through"
        else:
            missing = run.total - run.done
            last_purge = purged_at.get(run.env)
            if last_purge is not None and last_purge >= run.created_at:
                changed = state.mark_finished(run.run_id, now, purged=missing)
                why = f"the queue was purged; {missing} entries count as purged"
            else:
                error = f"{missing} messages never arrived (the queue ran empty without them)"
                changed = state.mark_finished(run.run_id, now, error=error)
                why = error
        if changed:
            closed.append(run)
            after = state.get_run(run.run_id) or run
            event(
                InfoCode.RUN_RECONCILED,
                f"{run.cron} run closed as {after.status}: {why}",
                **_end_fields(after),
            )
    return closed


@dataclass(frozen=True)
class Unlocked:
    lock: str
    owner: str | None  # the run that held it (None: nobody did)
    holder: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "lock": self.lock,
            "released": self.owner is not None,
            "owner": self.owner,
            "holder": self.holder,
        }


def unlock(state: State, env: str, cron: str, now: datetime, *, force: bool = False) -> Unlocked:
    """Release a cron's run lock for an operator. Refused (RUN_LOCKED) while its holder is a
    live process on this host, unless `force`: a run still enqueueing would otherwise have a
    second one start beside it. A lock whose lease lapsed, or held on another host (whose
    process this host cannot see), is released."""
    name = run_lock(env, cron)
    info = state.lock_info(name)
    if info is None:
        return Unlocked(name, None, None)
    if not force and info.expires_at > now and _alive_here(info.holder):
        raise RuntimeFailure(
            f"{name} is held by run {info.owner}, whose process {info.holder} is running on "
            "this host; stop it first, or pass --force",
            code=ErrorCode.RUN_LOCKED,
        )
    state.break_lock(name)
    return Unlocked(name, info.owner, info.holder)


def _alive_here(holder: str) -> bool:
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
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
        "superseded": run.superseded,
        "purged": run.purged,
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
