"""The root command group: global options and turning expected failures into exit codes."""

from __future__ import annotations

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


def _register() -> None:
    from raasctl.cli.access_cmd import access
    from raasctl.cli.config_cmd import config
    from raasctl.cli.doctor_cmd import doctor
    from raasctl.cli.mock_cmd import enqueue_mock_command
    from raasctl.cli.queue_cmd import queue
    from raasctl.cli.run_cmd import run
    from raasctl.cli.runs_admin_cmd import reconcile_command, unlock_command
    from raasctl.cli.runs_cmd import runs
    from raasctl.cli.runs_report_cmd import report as report_command
    from raasctl.cli.schedule_cmd import schedule
    from raasctl.cli.state_cmd import state
    from raasctl.cli.worker_cmd import worker
    from raasctl.cli.workers_cmd import workers

    main.add_command(access)
    main.add_command(config)
    main.add_command(schedule)
    main.add_command(run)
    main.add_command(enqueue_mock_command)
    main.add_command(worker)
    main.add_command(workers)
    runs.add_command(reconcile_command)
    runs.add_command(unlock_command)
    runs.add_command(report_command)
    main.add_command(runs)
    main.add_command(queue)
    main.add_command(state)
    main.add_command(doctor)
    _accept_env_after_commands(main)


def _accept_env_after_commands(group: click.Group) -> None:
    for command in group.commands.values():
        if isinstance(command, click.Group):
            _accept_env_after_commands(command)
        elif not any("--env" in param.opts for param in command.params):
            command.params.append(env_option())


_register()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
