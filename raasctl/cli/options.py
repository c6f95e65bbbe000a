"""Options shared by several commands, each defined once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
from click.shell_completion import CompletionItem

from raasctl.cli.context import AppContext
from raasctl.codes import ErrorCode
from raasctl.config import CRON_NAMES, unknown_cron_message
from raasctl.errors import UsageError

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


def yes_option(help: str = "Confirm a destructive action (required).") -> Callable[[F], F]:
    return click.option("--yes", is_flag=True, help=help)


allow_protected_option = click.option(
    "--allow-protected",
    is_flag=True,
    help="Also act on a protected environment (prod).",
)
dlq_option = click.option("--dlq", is_flag=True, help="Act on the dead-letter queue instead.")


def limit_option(default: int, what: str) -> Callable[[F], F]:
    """`--limit N`: how many items a listing shows."""
    return click.option(
        "--limit",
        type=click.IntRange(1, 1000),
        default=default,
        show_default=True,
        help=f"How many {what}.",
    )


def rate_option(help: str) -> Callable[[F], F]:
    """`--rate PER_SECOND`: a cap on messages per second; each command says what it paces."""
    return click.option(
        "--rate", type=click.FloatRange(min=0, min_open=True), metavar="PER_SECOND", help=help
    )


class CronType(click.ParamType):
    """A cron's name, exactly as the built-in crons spell it (case-sensitive).

    An unknown name is the same usage error (exit 2, RAAS_UNKNOWN_CRON, the known crons
    listed) as everywhere else in raasctl, not click's own message, so scripts that match on
    the code keep working whichever command they call.
    """

    name = "cron"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if text not in CRON_NAMES:
            raise UsageError(unknown_cron_message(text), code=ErrorCode.UNKNOWN_CRON)
        return text

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        return [CompletionItem(name) for name in CRON_NAMES if name.startswith(incomplete)]


CRON = CronType()


def cron_argument(func: F) -> F:
    """The positional CRON of `run` and `enqueue-mock`."""
    return click.argument("cron", type=CRON)(func)


def cron_option(help: str, *, multiple: bool = False) -> Callable[[F], F]:
    """`--cron CRON` (repeatable where `multiple`): restrict a command to some crons."""
    return click.option(
        "--cron", "crons" if multiple else "cron", type=CRON, multiple=multiple, help=help
    )
