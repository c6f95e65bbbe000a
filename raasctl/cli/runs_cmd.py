"""`raasctl runs list [--limit N] [--cron CRON] | runs show RUN_ID`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click
from rich.table import Table

from raasctl.cli.context import AppContext, pass_app
from raasctl.cli.options import format_option
from raasctl.cli.render import auto_table, emit
from raasctl.codes import ErrorCode
from raasctl.config import CRON_NAMES
from raasctl.errors import RuntimeFailure, UsageError
from raasctl.worker import run_progress

# (heading, how to show a row's value): the run id names the cron and the time already.
_LIST_COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("run", lambda row: row["run_id"]),
    ("status", lambda row: row["status"]),
    ("done", lambda row: f"{row['done']}/{_text(row['total'])}"),
    ("failed", lambda row: str(row["failed"])),
    ("dlq", lambda row: str(row["dead_lettered"])),
    ("retries", lambda row: str(row["retries"])),
    ("per hour", lambda row: _text(row["per_hour"] and round(row["per_hour"]))),
    ("eta", lambda row: _eta(row["eta_s"])),
)


@click.group()
def runs() -> None:
    """Runs and their progress: counters, rate, ETA and state.

    Example: raasctl runs list --cron clientDepositUpdate
    """


@runs.command("list")
@click.option(
    "--limit", type=click.IntRange(1, 1000), default=20, show_default=True, help="How many runs."
)
@click.option("--cron", metavar="CRON", help="Only this cron's runs.")
@format_option
@pass_app
def list_runs(app: AppContext, limit: int, cron: str | None) -> None:
    """List runs, newest first, with their state (enqueueing, running, complete, failed).

    Example: raasctl runs list --limit 5 --format json
    """
    if cron is not None and cron not in CRON_NAMES:
        raise UsageError(
            f"unknown cron {cron!r} (known: {', '.join(CRON_NAMES)})", code=ErrorCode.UNKNOWN_CRON
        )
    state = app.runtime.state()
    try:
        records = state.list_runs(limit=limit, cron=cron)
    finally:
        state.close()
    now = datetime.now(UTC)
    rows = [run_progress(record, now) for record in records]
    table = Table(title=f"Runs ({app.runtime.env_name})")
    for heading, _ in _LIST_COLUMNS:
        table.add_column(heading, overflow="fold")
    for row in rows:
        table.add_row(*(show_value(row) for _, show_value in _LIST_COLUMNS))
    emit(app, rows, table=table)


@runs.command("show")
@click.argument("run_id")
@format_option
@pass_app
def show(app: AppContext, run_id: str) -> None:
    """Show one run's counters, rate, ETA and state. An unknown RUN_ID exits 1
    (RAAS_RUN_NOT_FOUND).

    Example: raasctl runs show 20261127T080000Z-clientDepositUpdate-3f2a
    """
    state = app.runtime.state()
    try:
        record = state.get_run(run_id)
    finally:
        state.close()
    if record is None:
        raise RuntimeFailure(f"run {run_id} not found", code=ErrorCode.RUN_NOT_FOUND)
    data = run_progress(record, datetime.now(UTC))
    emit(app, data, table=auto_table(data, title=f"Run {run_id}"))


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
