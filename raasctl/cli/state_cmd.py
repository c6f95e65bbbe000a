"""`raasctl state create-table | prune`: set up a deployed environment's state store, and
remove what it no longer needs."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from raasctl.cli.context import AppContext, pass_app
from raasctl.cli.options import format_option
from raasctl.cli.render import auto_table, emit
from raasctl.config import parse_duration
from raasctl.prune import prune


@click.group()
def state() -> None:
    """The state store of run counters, idempotency records and run locks.

    Example: raasctl --env work-uat state create-table
    """


@state.command("create-table")
@format_option
@pass_app
def create_table_command(app: AppContext) -> None:
    """Create the environment's DynamoDB state table (on-demand billing, its key and index).

    Idempotent: an existing table is left as it is. The embedded SQLite state needs no setup;
    its schema is created on first use.

    Example: raasctl --env work-uat state create-table
    """
    runtime = app.runtime
    config = runtime.env.state
    if config.kind != "dynamodb":
        emit(app, {"env": runtime.env_name, "kind": config.kind, "table": None, "created": False})
        return
    from raasctl.state.dynamodb import create_table

    create_table(runtime.aws.client("dynamodb"), config.table)
    emit(app, {"env": runtime.env_name, "kind": "dynamodb", "table": config.table, "ready": True})


@state.command("prune")
@click.option(
    "--older-than",
    default="7d",
    show_default=True,
    metavar="DURATION",
    help="Prune runs finished longer ago than this (30m, 6h, 7d, 2w).",
)
@format_option
@pass_app
def prune_command(app: AppContext, older_than: str) -> None:
    """Delete finished runs older than --older-than, and the embedded queue's expired
    deduplication ids, then compact the embedded file (VACUUM).

    Runs not yet finished, idempotency records, locks and the ledger are never touched.
    DynamoDB: the finished run items are deleted in batch writes. Prints what was removed
    and, embedded, the bytes freed.

    Example: raasctl state prune --older-than 14d
    """
    try:
        age = parse_duration(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    result = prune(app.runtime, datetime.now(UTC) - age).as_dict()
    emit(app, result, table=auto_table(result, title="Pruned"))
