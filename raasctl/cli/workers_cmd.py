"""`raasctl workers`: the environment's live workers, from the worker registry."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click

from raasctl.cli.context import AppContext, pass_app
from raasctl.cli.options import format_option
from raasctl.cli.render import Column, TableSpec, emit, format_duration
from raasctl.codes import ErrorCode
from raasctl.logs import event
from raasctl.workers_registry import live_workers, worker_row

_COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("worker", lambda row: row["worker_id"]),
    ("host", lambda row: row["host"]),
    ("pid", lambda row: str(row["pid"])),
    ("crons", lambda row: ", ".join(row["crons"]) or "all"),
    ("started", lambda row: row["started_at"]),
    ("uptime", lambda row: format_duration(row["uptime_s"])),
    ("processed", lambda row: str(row["processed"])),
    ("per second", lambda row: f"{row['per_second']:g}"),
    ("rate limit", lambda row: _rate(row)),
)


@click.command("workers")
@format_option
@pass_app
def workers(app: AppContext) -> None:
    """List the environment's running workers: id, host, pid, crons, start, messages
    processed and current rate (since its previous refresh), and its rate limit and scope.

    Every worker records itself in the state store as it starts, refreshes the record every
    10 s and removes it when it stops; one that died drops out after three missed refreshes
    (30 s). JSON: a list of {"worker_id", "env", "host", "pid", "crons", "started_at",
    "refreshed_at", "uptime_s", "processed", "per_second", "rate_scope", "rate_limit"}.

    Example: raasctl --env work-uat workers --format json
    """
    missing = app.runtime.missing_embedded_file("state")
    rows: list[dict[str, Any]] = []
    now = datetime.now(UTC)
    if missing is not None:
        # Not opened, so not created: no worker ever ran here.
        event(
            ErrorCode.STATE_FILE_MISSING,
            f"no workers: no embedded state file {missing} yet",
            level=logging.WARNING,
        )
    else:
        state = app.runtime.state()
        try:
            records = live_workers(state.workers(), app.runtime.env_name, now)
        finally:
            state.close()
        rows = [worker_row(record, now) for record in records]
    table = TableSpec(
        f"Workers ({app.runtime.env_name})",
        [Column(heading, overflow="fold") for heading, _ in _COLUMNS],
        [[show(row) for _, show in _COLUMNS] for row in rows],
    )
    emit(app, rows, table=table)


def _rate(row: dict[str, Any]) -> str:
    if row["rate_limit"] is None:
        return "none"
    return f"{row['rate_limit']:g}/s {row['rate_scope']}"
