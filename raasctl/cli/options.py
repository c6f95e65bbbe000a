"""Options shared by several commands, each defined once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from raasctl.cli.context import AppContext

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ("table", "json")


def _store_format(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(AppContext).output_format = value


def format_option(func: F) -> F:
    """`--format` is accepted before the command and after it."""
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(FORMATS),
        default=None,
        expose_value=False,
        is_eager=True,
        callback=_store_format,
        help="Output: a table (default) or one JSON document.",
    )(func)


def _store_env(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(AppContext).env_option = value


def env_option() -> click.Option:
    """`--env` after the command too (`raasctl run CRON --env ENV`, as crontab lines say)."""
    return click.Option(
        ["--env"],
        default=None,
        expose_value=False,
        is_eager=True,
        callback=_store_env,
        metavar="ENV",
        help="Environment (also accepted before the command).",
    )


yes_option = click.option("--yes", is_flag=True, help="Confirm a destructive action (required).")
allow_protected_option = click.option(
    "--allow-protected",
    is_flag=True,
    help="Also act on a protected environment (prod).",
)
