"""`raasctl schedule show | crontab`."""

from __future__ import annotations

import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from raasctl.cli.context import AppContext, pass_app
from raasctl.cli.options import format_option
from raasctl.cli.render import TableSpec, emit
from raasctl.schedule import crontab_lines, schedules


@click.group()
def schedule() -> None:
    """Each cron's schedule and the crontab that runs it.

    Example: raasctl schedule show
    """


@schedule.command("show")
@click.option(
    "--count",
    type=click.IntRange(1, 100),
    default=3,
    show_default=True,
    help="How many next runs to list.",
)
@format_option
@pass_app
def show(app: AppContext, count: int) -> None:
    """List each cron's schedule, time zone and next runs.

    Example: raasctl schedule show --count 5
    """
    now = datetime.now(UTC)
    found = [
        (item, [at.isoformat() for at in item.next_runs(now, count)])
        for item in schedules(app.loaded.config)
    ]
    rows = [
        {
            "cron": item.cron,
            "schedule": item.expression,
            "timezone": item.timezone,
            "next_runs": next_runs,
        }
        for item, next_runs in found
    ]
    table = TableSpec(
        "Schedules",
        ["cron", "schedule", "timezone", "next runs"],
        [
            [item.cron, item.expression or "-", item.timezone, "\n".join(next_runs)]
            for item, next_runs in found
        ],
    )
    emit(app, rows, table=table)


@schedule.command("crontab")
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/var/log/raasctl"),
    show_default=True,
    help="Where each cron's output is appended.",
)
@format_option
@pass_app
def crontab(app: AppContext, log_dir: Path) -> None:
    """Print crontab lines that call `raasctl run CRON --env ENV` for this environment.

    SSM_ENVIRONMENT_PREFIX and RAASCTL_STATE_DIR, when set, are carried into the crontab.
    CRON_TZ lines are honoured by cronie; elsewhere run the machine in the crons' time zone.

    Example: raasctl --env work-uat schedule crontab | crontab -
    """
    runtime = app.runtime
    lines = crontab_lines(
        runtime.config,
        runtime.env_name,
        raasctl=_raasctl_path(),
        log_dir=log_dir,
        config_file=app.loaded.path,
        workdir=Path.cwd(),
        environ=os.environ,
    )
    if app.json:
        emit(app, {"env": runtime.env_name, "lines": lines})
    else:
        click.echo("\n".join(lines))


def _raasctl_path() -> str:
    """An absolute path, since crontab's PATH rarely includes a virtualenv."""
    beside_python = Path(sys.executable).parent / "raasctl"
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which("raasctl") or "raasctl"
