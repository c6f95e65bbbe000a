"""`raasctl doctor [--env ENV | --all-envs]`: smoke checks for CI."""

from __future__ import annotations

import click

from raasctl.cli.context import AppContext, pass_app
from raasctl.cli.options import format_option
from raasctl.cli.render import TableSpec, emit
from raasctl.doctor import Diagnosis, diagnose
from raasctl.errors import ConfigError, RaasctlError, UsageError
from raasctl.logs import set_context


@click.command("doctor")
@click.option(
    "--env", "env_name", metavar="ENV", help="Environment to check (default: the global --env)."
)
@click.option("--all-envs", is_flag=True, help="Check every environment of the config.")
@format_option
@pass_app
def doctor(app: AppContext, env_name: str | None, all_envs: bool) -> None:
    """Check that an environment can work: config, secrets, credentials, queue and DLQ (as
    `access check`), state store, Workday (one authenticated request) and the callback (a
    HEAD request; no entry is ever sent).

    One row per check. Exit 0 when all pass, 3 when any fails, 2 when the configuration
    cannot be used. The embedded default passes with no network.

    Example: raasctl doctor --all-envs --format json
    """
    if env_name and all_envs:
        raise UsageError("--env and --all-envs exclude each other")
    names = list(app.loaded.config.environments) if all_envs else [env_name or app.runtime.env_name]
    results: list[Diagnosis] = []
    unusable = False
    for name in names:
        try:
            runtime = app.runtime_for(name)
        except ConfigError as exc:
            if not all_envs:
                raise
            unusable = True
            broken = Diagnosis(name)
            broken.add("config", False, exc.message)
            results.append(broken)
            continue
        set_context(env=runtime.env_name)
        try:
            results.append(diagnose(runtime))
        except RaasctlError as exc:  # a part whose failure no row caught: still one row
            broken = Diagnosis(runtime.env_name)
            broken.add("doctor", False, exc.message)
            results.append(broken)
    table = TableSpec(
        "Doctor",
        ["env", "check", "ok", "detail"],
        [
            [result.env, check.name, "ok" if check.ok else "FAIL", check.detail]
            for result in results
            for check in result.checks
        ],
    )
    emit(app, [result.as_dict() for result in results], table=table)
    if unusable:
        raise click.exceptions.Exit(2)
    if not all(result.ok for result in results):
        raise click.exceptions.Exit(3)
