"""`raasctl runs list [--limit N] [--cron CRON] | runs show RUN_ID|latest [--cron CRON]
[--follow]`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click

from raasctl.cli.context import AppContext, pass_app
from raasctl.cli.options import cron_option, format_option, limit_option
from raasctl.cli.render import (
    Column,
    Frame,
    TableSpec,
    auto_table,
    emit,
    format_duration,
    refresh,
)
from raasctl.codes import ErrorCode
from raasctl.errors import RuntimeFailure, UsageError
from raasctl.logs import event
from raasctl.worker import run_progress
from raasctl.workers_registry import live_workers, serving

# (heading, how to show a row's value): the run id names the cron and the time already.
_LIST_COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("run", lambda row: row["run_id"]),
    ("status", lambda row: row["status"]),
    ("done", lambda row: f"{row['done']}/{_text(row['total'])}"),
    ("failed", lambda row: str(row["failed"])),
    ("dlq", lambda row: str(row["dead_lettered"])),
    ("superseded", lambda row: str(row["superseded"])),
    ("purged", lambda row: str(row["purged"])),
    ("retries", lambda row: str(row["retries"])),
    ("per hour", lambda row: _text(row["per_hour"] and round(row["per_hour"]))),
    ("eta", lambda row: format_duration(row["eta_s"])),
)


@click.group()
def runs() -> None:
    """Runs and their progress: counters, rate, ETA and state.

    Example: raasctl runs list --cron clientDepositUpdate
    """


@runs.command("list")
@limit_option(20, "runs")
@cron_option("Only this cron's runs.")
@format_option
@pass_app
def list_runs(app: AppContext, limit: int, cron: str | None) -> None:
    """List runs, newest first, with their state (enqueueing, running, complete, failed,
    purged, abandoned).

    Example: raasctl runs list --limit 5 --format json
    """
    missing = app.runtime.missing_embedded_file("state")
    if missing is not None:
        # Nothing ran here yet: an empty list is the truth; the log line says where it looked.
        event(
            ErrorCode.STATE_FILE_MISSING,
            f"no runs: no embedded state file {missing} yet",
            level=logging.WARNING,
        )
        records = []
    else:
        state = app.runtime.state()
        try:
            records = state.list_runs(limit=limit, cron=cron)
        finally:
            state.close()
    now = datetime.now(UTC)
    rows = [run_progress(record, now) for record in records]
    table = TableSpec(
        f"Runs ({app.runtime.env_name})",
        [Column(heading, overflow="fold") for heading, _ in _LIST_COLUMNS],
        [[show_value(row) for _, show_value in _LIST_COLUMNS] for row in rows],
    )
    emit(app, rows, table=table)


@runs.command("show")
@click.argument("run_id", required=False, metavar="[RUN_ID|latest]")
@cron_option("Show this cron's newest run (RUN_ID not needed).")
@click.option(
    "--follow", is_flag=True, help="Refresh until the run is finished (Ctrl-C stops, exit 0)."
)
@click.option(
    "--every",
    "every_s",
    type=click.FloatRange(min=0.01),
    default=2.0,
    show_default=True,
    metavar="SECONDS",
    help="How often --follow refreshes.",
)
@format_option
@pass_app
def show(
    app: AppContext, run_id: str | None, cron: str | None, follow: bool, every_s: float
) -> None:
    """Show one run's counters, rate, ETA and state: RUN_ID, `latest` (the newest run) or
    --cron CRON (that cron's newest). An unknown RUN_ID exits 1 (RAAS_RUN_NOT_FOUND).

    --follow redraws it in place on a terminal, and elsewhere prints it again each interval
    (a JSON line each with --format json), until the run is finished.

    Example: raasctl runs show latest --follow
    """
    if run_id is None and cron is None:
        raise UsageError("runs show needs a RUN_ID, `latest` or --cron CRON")
    missing = app.runtime.missing_embedded_file("state")
    if missing is not None:
        # Not opened, so not created: an empty file would hide where the runs really are.
        which = f"run {run_id} not found" if run_id not in (None, "latest") else "no run found"
        raise RuntimeFailure(
            f"{which}: no embedded state file {missing} yet",
            code=ErrorCode.RUN_NOT_FOUND,
        )
    state = app.runtime.state()
    try:
        if run_id is None or run_id == "latest":
            newest = state.list_runs(limit=1, cron=cron)
            if not newest:
                which = f"{cron} " if cron else ""
                raise RuntimeFailure(
                    f"no {which}runs in environment {app.runtime.env_name} yet",
                    code=ErrorCode.RUN_NOT_FOUND,
                )
            run_id = newest[0].run_id

        def frame() -> Frame:
            record = state.get_run(run_id)
            if record is None:
                raise RuntimeFailure(f"run {run_id} not found", code=ErrorCode.RUN_NOT_FOUND)
            now = datetime.now(UTC)
            data = run_progress(record, now)
            # The live workers that take its messages (0 once it is finished).
            data["workers"] = serving(live_workers(state.workers(), record.env, now), record)
            table = auto_table(data, title=f"Run {run_id}")
            return Frame(data, table, final=record.finished_at is not None)

        if follow:
            refresh(app, frame, every_s)
        else:
            shown = frame()
            emit(app, shown.data, table=shown.table)
    finally:
        state.close()


def _text(value: Any) -> str:
    return "-" if value is None else str(value)
