"""The root command group: global options and turning expected failures into exit codes."""

from __future__ import annotations

import importlib
import sys
import traceback
from typing import Any

import click

from raasctl import __version__
from raasctl.aws_errors import AWS_FAILURES, classify
from raasctl.cli.context import AppContext
from raasctl.cli.options import FORMATS, env_option
from raasctl.codes import ErrorCode
from raasctl.config_errors import ConfigInvalid
from raasctl.errors import RaasctlError
from raasctl.logs import LOG_FORMATS, configure, failure, set_context
from raasctl.redaction import redact

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class RaasctlGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        if self is main:
            return sorted(COMMANDS)
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if self is main and cmd_name in COMMANDS and cmd_name not in self.commands:
            self.add_command(_load(cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand as exc:
            if self is not main:
                raise
            # click suggests from the commands loaded so far: suggest from all of them.
            raise click.exceptions.NoSuchCommand(
                exc.command_name, possibilities=COMMANDS, ctx=ctx
            ) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigInvalid as exc:
            # Every problem at once, one line each.
            _fail(ctx, exc.code, [str(problem) for problem in exc.problems], exc.exit_code)
        except RaasctlError as exc:
            _fail(ctx, exc.code, [exc.message], exc.exit_code)
        except AWS_FAILURES as exc:
            # A botocore failure no adapter translated: the service is not known here.
            aws = classify(exc, service="aws")
            _fail(ctx, aws.code, [aws.message], aws.exit_code)


def _fail(ctx: click.Context, code: ErrorCode, messages: list[str], exit_code: int) -> None:
    app = ctx.find_object(AppContext)
    if app is not None and app.verbosity > 0:
        click.echo(redact(traceback.format_exc()), err=True)
    for message in messages:
        failure(code, message, exit_code=exit_code)
    ctx.exit(exit_code)


@click.group(cls=RaasctlGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "--version", prog_name="raasctl")
@click.option(
    "--env",
    "env_option",
    envvar="RAASCTL_ENV",
    show_envvar=True,
    metavar="ENV",
    help="Environment from the config (default: the config's default_env, else local).",
)
@click.option(
    "--config",
    "config_file",
    envvar="RAASCTL_CONFIG",
    show_envvar=True,
    metavar="FILE",
    help="Config file (default: ./raasctl.yaml, else the built-in local environment).",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(FORMATS),
    default=None,
    help="Output: a table (default) or one JSON document.",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    envvar="RAASCTL_LOG_FORMAT",
    show_envvar=True,
    default=None,
    help="Logs and errors on stderr: text lines or JSON lines (default: text on a terminal, "
    "JSON lines otherwise).",
)
@click.option("-v", "--verbose", count=True, help="More detail in logs; -v shows tracebacks.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors in logs.")
@click.pass_context
def main(
    ctx: click.Context,
    env_option: str | None,
    config_file: str | None,
    output_format: str | None,
    log_format: str | None,
    verbose: int,
    quiet: bool,
) -> None:
    """Run the accounting team's Workday RaaS cron jobs on a queue.

    `run` fetches a report and enqueues every entry; `worker` applies them to the accounting
    system at the rate it allows. With no config file everything runs embedded (SQLite).

    Example: raasctl run clientDepositUpdate && raasctl worker --until-empty
    """
    app = ctx.ensure_object(AppContext)
    app.env_option = env_option
    app.config_file = config_file
    if output_format:
        app.output_format = output_format
    app.verbosity = -1 if quiet else verbose
    configure(app.verbosity, json_lines=None if log_format is None else log_format == "json")
    set_context(env=env_option)


# Each command's module, imported when the command is used: `raasctl worker` loads neither
# the access report nor the mock planner, and starts in about half the time.
COMMANDS = {
    "access": ("raasctl.cli.access_cmd", "access"),
    "config": ("raasctl.cli.config_cmd", "config"),
    "doctor": ("raasctl.cli.doctor_cmd", "doctor"),
    "enqueue-mock": ("raasctl.cli.mock_cmd", "enqueue_mock_command"),
    "queue": ("raasctl.cli.queue_cmd", "queue"),
    "run": ("raasctl.cli.run_cmd", "run"),
    "runs": ("raasctl.cli.runs_cmd", "runs"),
    "schedule": ("raasctl.cli.schedule_cmd", "schedule"),
    "state": ("raasctl.cli.state_cmd", "state"),
    "worker": ("raasctl.cli.worker_cmd", "worker"),
    "workers": ("raasctl.cli.workers_cmd", "workers"),
}
# Subcommands kept in modules of their own, added to their group when it is loaded.
SUBCOMMANDS = {
    "runs": [
        ("raasctl.cli.runs_admin_cmd", "reconcile_command"),
        ("raasctl.cli.runs_admin_cmd", "unlock_command"),
        ("raasctl.cli.runs_report_cmd", "report"),
    ],
}


def _load(name: str) -> click.Command:
    module, attribute = COMMANDS[name]
    command: click.Command = getattr(importlib.import_module(module), attribute)
    if isinstance(command, click.Group):
        for sub_module, sub_attribute in SUBCOMMANDS.get(name, []):
            command.add_command(getattr(importlib.import_module(sub_module), sub_attribute))
    _accept_env_after_commands(command)
    return command


def all_commands(group: click.Group | None = None) -> dict[str, click.Command]:
    """Every command of `group` (default: the root), each loaded: for the README and tests."""
    group = group or main
    context = click.Context(group)
    found = {name: group.get_command(context, name) for name in group.list_commands(context)}
    return {name: command for name, command in found.items() if command is not None}


def _accept_env_after_commands(command: click.Command) -> None:
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _accept_env_after_commands(sub)
    elif not any("--env" in param.opts for param in command.params):
        command.params.append(env_option())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
