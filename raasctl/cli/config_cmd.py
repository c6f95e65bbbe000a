"""`raasctl config show | validate`."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import click

from raasctl.checks import environment_problems, redacted, schedule_warnings
from raasctl.cli.context import AppContext, pass_app
from raasctl.cli.options import format_option
from raasctl.cli.render import emit
from raasctl.codes import ErrorCode, InfoCode
from raasctl.config import CRON_NAMES
from raasctl.config_errors import ConfigInvalid
from raasctl.logs import event, failure
from raasctl.protection import protection


@click.group()
def config() -> None:
    """Show and check the configuration.

    Example: raasctl --config raasctl.yaml config validate --all-envs
    """


@config.command("show")
@format_option
@pass_app
def show(app: AppContext) -> None:
    """Print the resolved environment and cron settings; secrets are shown only as references.

    Example: raasctl --env work-uat config show --format json
    """
    runtime = app.runtime
    data = {
        "file": str(app.loaded.path) if app.loaded.path else None,
        "env": runtime.env_name,
        "environment": redacted(runtime.env.model_dump(mode="json")),
        "crons": {name: runtime.cron(name).model_dump(mode="json") for name in CRON_NAMES},
    }
    emit(app, data)


@config.command("validate")
@click.option(
    "--all-envs", is_flag=True, help="Check every environment, not only the selected one."
)
@click.option(
    "--resolve-secrets",
    is_flag=True,
    help="Also resolve every secret reference (env variables, SSM parameters).",
)
@format_option
@pass_app
def validate(app: AppContext, all_envs: bool, resolve_secrets: bool) -> None:
    """Check the config file: schema, environments, paths, schedules. Exit 0 if valid, 2 if not.

    Two crons that would start in the same minute are a warning, not an error.

    Example: raasctl --config raasctl.yaml config validate --all-envs
    """
    try:
        loaded = app.loaded
    except ConfigInvalid as exc:
        if not app.json:
            raise  # one line per problem on stderr, exit 2
        # A script asked for JSON: it gets the problems as data, not only log lines.
        emit(
            app,
            {
                "file": exc.problems[0].file if exc.problems else None,
                "valid": False,
                "problems": [problem.as_dict() for problem in exc.problems],
            },
        )
        raise click.exceptions.Exit(2) from None
    names = list(loaded.config.environments) if all_envs else [app.runtime.env_name]
    problems: dict[str, list[str]] = {}
    for name in names:
        runtime = app.runtime_for(name)
        problems[name] = environment_problems(
            name, runtime.env, resolve=runtime.secret if resolve_secrets else None
        )
    warnings = schedule_warnings(loaded.config, datetime.now(UTC))
    for warning in warnings:
        event(InfoCode.SCHEDULE_OVERLAP, warning, level=logging.WARNING)
    protected = {
        name: why
        for name in names
        if (why := protection(loaded.config, name, app.runtime_for(name).env)) is not None
    }
    for name, why in protected.items():
        if not app.runtime_for(name).env.protected:  # protected by another's queue
            warning = f"environment {name} is protected: {why}"
            warnings.append(warning)
            event(InfoCode.PROTECTED_BY_QUEUE, warning, level=logging.WARNING)
    valid = not any(problems.values())
    data = {
        "file": str(loaded.path) if loaded.path else None,
        "valid": valid,
        "environments": {name: found or "ok" for name, found in problems.items()},
        "protected": protected,
        "warnings": warnings,
    }
    emit(app, data)
    for found in problems.values():
        for problem in found:
            failure(ErrorCode.CONFIG_INVALID, problem)
    if not valid:
        raise click.exceptions.Exit(2)
