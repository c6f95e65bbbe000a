"""`raasctl schedule show | crontab | systemd`."""

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
from raasctl.errors import ConfigError
from raasctl.schedule import (
    WORKER_EVERY_MIN,
    crontab_lines,
    prepare_log_dir,
    schedules,
    state_dir_from,
)
from raasctl.systemd import systemd_units


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
    default=None,
    help="Where each job's output is appended; created if missing (default: <state dir>/logs).",
)
@click.option(
    "--worker-every",
    type=click.IntRange(2, 59),
    default=WORKER_EVERY_MIN,
    show_default=True,
    metavar="MINUTES",
    help="Start a worker this often under flock -n, each running 20 s less than this.",
)
@click.option("--no-worker", is_flag=True, help="Leave out the worker line.")
@format_option
@pass_app
def crontab(app: AppContext, log_dir: Path | None, worker_every: int, no_worker: bool) -> None:
    """Print crontab lines that call `raasctl run CRON --env ENV` for this environment, and
    one that keeps a worker running.

    The worker line starts `raasctl worker --max-runtime` every --worker-every minutes under
    `flock -n`, so a crashed worker is replaced within minutes and two never overlap. The
    log folder is created (exit 2 when it cannot be); paths in the lines are absolute.
    SSM_ENVIRONMENT_PREFIX and RAASCTL_STATE_DIR are carried into the crontab. CRON_TZ lines
    are honoured by cronie; elsewhere run the machine in the crons' time zone.

    Example: raasctl --env work-uat schedule crontab | crontab -
    """
    runtime = app.runtime
    folder = prepare_log_dir(log_dir or state_dir_from(os.environ) / "logs")
    lines = crontab_lines(
        runtime.config,
        runtime.env_name,
        raasctl=_raasctl_path(),
        log_dir=folder,
        config_file=app.loaded.path,
        workdir=Path.cwd(),
        environ=os.environ,
        worker_every_min=None if no_worker else worker_every,
    )
    if app.json:
        emit(app, {"env": runtime.env_name, "log_dir": str(folder), "lines": lines})
    else:
        click.echo("\n".join(lines))


@schedule.command("systemd")
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    metavar="DIR",
    help="Write the unit files into DIR instead of printing them.",
)
@format_option
@pass_app
def systemd(app: AppContext, output_dir: Path | None) -> None:
    """Print systemd units: a worker service (Restart=always) and a .service + .timer pair per
    scheduled cron (OnCalendar converted from its cron expression and time zone).

    The environment and the absolute state folder are Environment= lines. With --output-dir
    the files are written there (created if missing) and their paths printed.

    Example: raasctl --env work-uat schedule systemd --output-dir /etc/systemd/system
    """
    runtime = app.runtime
    units = systemd_units(
        runtime.config,
        runtime.env_name,
        raasctl=_raasctl_path(),
        config_file=app.loaded.path,
        workdir=Path.cwd(),
        environ=os.environ,
    )
    if output_dir is None:
        if app.json:
            emit(app, {"env": runtime.env_name, "units": {u.name: u.text for u in units}})
        else:
            click.echo("\n".join(f"# {unit.name}\n{unit.text}" for unit in units), nl=False)
        return
    folder = output_dir.expanduser().absolute()
    written = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for unit in units:
            (folder / unit.name).write_text(unit.text)
            written.append(str(folder / unit.name))
    except OSError as exc:
        raise ConfigError(
            f"cannot write the units into {folder} ({exc.strerror or type(exc).__name__})"
        ) from None
    if app.json:
        emit(app, {"env": runtime.env_name, "written": written})
    else:
        click.echo("\n".join(written))


def _raasctl_path() -> str:
    """An absolute path, since crontab's PATH rarely includes a virtualenv."""
    beside_python = Path(sys.executable).parent / "raasctl"
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which("raasctl") or "raasctl"
