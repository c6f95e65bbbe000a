"""`raasctl enqueue-mock CRON [--fixture FILE] [--copies N] [--rate PER_SECOND]`."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TimeRemainingColumn

from raasctl.cli.context import AppContext, pass_app
from raasctl.cli.options import allow_protected_option, format_option
from raasctl.cli.render import auto_table, emit
from raasctl.codes import ErrorCode
from raasctl.errors import ConfigError
from raasctl.producer import SendCounts
from raasctl.runner import enqueue_mock


@click.command("enqueue-mock")
@click.argument("cron")
@click.option(
    "--fixture",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Report-shaped JSON file to copy (default: fixtures/client_deposits.json for "
    "clientDepositUpdate, else fixtures/mock/CRON.json).",
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
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    metavar="PER_SECOND",
    help="Send at most this many messages per second (default: as fast as the queue takes).",
)
@allow_protected_option
@click.option(
    "--yes",
    is_flag=True,
    help="Confirm --allow-protected without a prompt (required when there is no terminal).",
)
@format_option
@pass_app
def enqueue_mock_command(
    app: AppContext,
    cron: str,
    fixture: Path | None,
    copies: int,
    rate: float | None,
    allow_protected: bool,
    yes: bool,
) -> None:
    """Enqueue load-test copies of CRON's fixture payloads as one mock run.

    Every copy is a real payload of the cron, with its own mock key (so no copy is
    deduplicated away) and its own message group (so copies do not queue up behind one
    another on a FIFO queue). `runs show RUN_ID` and the worker track it like a real run.
    Refuses a protected environment unless --allow-protected is given and confirmed.

    Example: raasctl enqueue-mock clientDepositUpdate --copies 100
    """
    _check_environment(app, allow_protected=allow_protected, yes=yes)
    with _progress() as bar:
        summary = enqueue_mock(
            app.runtime,
            cron,
            fixture=fixture,
            copies=copies,
            rate=rate,
            on_start=bar.start,
            on_progress=bar.update,
        )
    emit(app, summary.as_dict(), table=auto_table(summary.as_dict(), title=f"Mock run {cron}"))


def _check_environment(app: AppContext, *, allow_protected: bool, yes: bool) -> None:
    """Load-test payloads stay out of production: a protected environment needs both
    --allow-protected and a confirmation (a prompt on a terminal, else --yes)."""
    runtime = app.runtime
    if not runtime.env.protected:
        return
    name = runtime.env_name
    if not allow_protected:
        raise ConfigError(
            f"environment {name} is protected: enqueue-mock refuses it "
            "(pass --allow-protected to override)",
            code=ErrorCode.PROTECTED_ENV,
        )
    if yes:
        return
    if not stdin_is_terminal():
        raise ConfigError(
            f"environment {name} is protected: confirm with --yes (no terminal to ask on)",
            code=ErrorCode.PROTECTED_ENV,
        )
    if not click.confirm(f"Enqueue mock messages into protected environment {name}?", err=True):
        raise ConfigError("not confirmed; nothing was enqueued", code=ErrorCode.PROTECTED_ENV)


def stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


@dataclass
class _Bar:
    """A progress bar on stderr when it is a terminal; otherwise it does nothing."""

    progress: Progress | None = None
    task: TaskID | None = field(default=None)

    def start(self, total: int) -> None:
        if self.progress is not None:
            self.task = self.progress.add_task("enqueueing", total=total)

    def update(self, counts: SendCounts) -> None:
        if self.progress is not None and self.task is not None:
            done = counts.enqueued + counts.duplicates + counts.failed
            self.progress.update(self.task, completed=done)


@contextmanager
def _progress() -> Iterator[_Bar]:
    if not sys.stderr.isatty():
        yield _Bar()
        return
    progress = Progress(
        *Progress.get_default_columns()[:1],
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    with progress:
        yield _Bar(progress)
