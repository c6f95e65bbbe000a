"""`raasctl enqueue-mock CRON [--fixture FILE] [--copies N] [--rate PER_SECOND]`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from raasctl.cli.context import AppContext, pass_app
from raasctl.cli.options import (
    allow_protected_option,
    cron_argument,
    format_option,
    rate_option,
    yes_option,
)
from raasctl.cli.render import auto_table, emit, progress_bar
from raasctl.codes import ErrorCode, InfoCode
from raasctl.errors import ConfigError
from raasctl.logs import event
from raasctl.mock_plan import MockPlan, plan_mock
from raasctl.protection import protection, refuse_protected
from raasctl.runner import enqueue_mock


@click.command("enqueue-mock")
@cron_argument
@click.option(
    "--fixture",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Report-shaped JSON file to copy, relative to the working directory (default: the "
    "packaged client_deposits.json for clientDepositUpdate, else mock/CRON.json).",
)
@click.option(
    "--copies",
    type=click.IntRange(min=1),
    metavar="N",
    default=1,
    show_default=True,
    help="Copies of every fixture payload; each copy is its own message.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print how many messages would be sent and one sample message; send nothing.",
)
@rate_option("Send at most this many messages per second (default: as fast as the queue takes).")
@allow_protected_option
@yes_option("Confirm --allow-protected without a prompt (required when there is no terminal).")
@format_option
@pass_app
def enqueue_mock_command(
    app: AppContext,
    cron: str,
    fixture: Path | None,
    copies: int,
    rate: float | None,
    dry_run: bool,
    allow_protected: bool,
    yes: bool,
) -> None:
    """Enqueue load-test copies of CRON's fixture payloads as one mock run.

    Every copy is a real payload of the cron, with its own mock key (so no copy is
    deduplicated away) and its own message group (so copies do not queue up behind one
    another on a FIFO queue). `runs show RUN_ID` and the worker track it like a real run.
    Refuses a protected environment unless --allow-protected is given and confirmed.

    It sends copies × the fixture's payloads messages, and says how many before it starts;
    --dry-run prints that count and one sample message and sends nothing.

    Example: raasctl enqueue-mock clientDepositUpdate --copies 100
    """
    fixture = fixture.absolute() if fixture is not None else None  # errors name it in full
    plan = plan_mock(app.runtime, cron, fixture, copies)
    if dry_run:
        emit(app, plan.as_dict(), table=auto_table(plan.as_dict(), title=f"Mock plan {cron}"))
        return
    _confirm_protected(app, plan, allow_protected=allow_protected, yes=yes)
    event(InfoCode.MOCK_PLANNED, f"{cron}: sending {plan.describe()}", messages=plan.messages)
    with progress_bar("enqueueing") as bar:
        summary = enqueue_mock(
            app.runtime,
            cron,
            fixture=fixture,
            copies=copies,
            rate=rate,
            allow_protected=allow_protected,
            on_start=bar.set_total,
            on_progress=lambda counts: bar.update(
                counts.enqueued + counts.duplicates + counts.failed
            ),
        )
    emit(app, summary.as_dict(), table=auto_table(summary.as_dict(), title=f"Mock run {cron}"))


def _confirm_protected(
    app: AppContext, plan: MockPlan, *, allow_protected: bool, yes: bool
) -> None:
    """Load-test payloads stay out of production: on a protected environment
    --allow-protected must be confirmed too (a prompt on a terminal, else --yes)."""
    runtime = app.runtime
    if protection(runtime.config, runtime.env_name, runtime.env) is None:
        return
    name = runtime.env_name
    refuse_protected(runtime, "enqueue-mock", allow_protected=allow_protected)
    if yes:
        return
    if not stdin_is_terminal():
        raise ConfigError(
            f"environment {name} is protected: confirm sending {plan.describe()} with --yes "
            "(no terminal to ask on)",
            code=ErrorCode.PROTECTED_ENV,
        )
    question = f"Enqueue {plan.describe()} of mock data into protected environment {name}?"
    if not click.confirm(question, err=True):
        raise ConfigError("not confirmed; nothing was enqueued", code=ErrorCode.PROTECTED_ENV)


def stdin_is_terminal() -> bool:
    return sys.stdin.isatty()
