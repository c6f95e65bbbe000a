"""`raasctl state create-table`: the one-time setup of a deployed environment's state store."""

from __future__ import annotations

import click

from raasctl.cli.context import AppContext, pass_app
from raasctl.cli.options import format_option
from raasctl.cli.render import emit


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
