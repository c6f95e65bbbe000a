"""`raasctl queue status | peek [--limit N] [--dlq] | purge [--dlq] --yes | redrive --yes`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.table import Table

from raasctl.cli.context import AppContext, pass_app
from raasctl.cli.options import allow_protected_option, format_option, yes_option
from raasctl.cli.render import emit
from raasctl.codes import ErrorCode, InfoCode
from raasctl.errors import ConfigError, UsageError
from raasctl.logs import event
from raasctl.queues.base import PeekedMessage, Queue

dlq_option = click.option("--dlq", is_flag=True, help="Act on the dead-letter queue instead.")


@click.group()
def queue() -> None:
    """Look at the environment's queue and its DLQ; purge or redrive them.

    Example: raasctl --env work-uat queue status
    """


@contextmanager
def _open(app: AppContext) -> Iterator[Queue]:
    port = app.runtime.queue()
    try:
        yield port
    finally:
        port.close()


@queue.command("status")
@format_option
@pass_app
def status(app: AppContext) -> None:
    """Messages visible, in flight and delayed, and the DLQ's visible messages.

    Example: raasctl queue status --format json
    """
    with _open(app) as port:
        depth = port.depth()
        name = port.name
    data = {
        "env": app.runtime.env_name,
        "queue": {"visible": depth.visible, "in_flight": depth.in_flight, "delayed": depth.delayed},
        "dlq": {"visible": depth.dlq_visible},
    }
    table = Table(title=f"Queue {name} ({data['env']})")
    for heading in ("visible", "in flight", "delayed", "DLQ visible"):
        table.add_column(heading, justify="right")
    table.add_row(
        *(str(n) for n in (depth.visible, depth.in_flight, depth.delayed)),
        "-" if depth.dlq_visible is None else str(depth.dlq_visible),
    )
    emit(app, data, table=table)


@queue.command("peek")
@click.option(
    "--limit", type=click.IntRange(1, 1000), default=10, show_default=True, help="How many."
)
@dlq_option
@format_option
@pass_app
def peek(app: AppContext, limit: int, dlq: bool) -> None:
    """Show up to --limit messages, oldest first, without taking them.

    On SQS a peek is a receive (visible again at once): it adds one to each message's
    receive count, which counts towards the DLQ's maxReceiveCount.

    Example: raasctl queue peek --dlq --limit 5 --format json
    """
    with _open(app) as port:
        messages = port.peek(limit, dlq=dlq)
    rows = [_peeked(message) for message in messages]
    data = {"env": app.runtime.env_name, "dlq": dlq, "messages": rows}
    table = Table(title=f"{'DLQ' if dlq else 'Queue'} messages ({data['env']})")
    columns: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
        ("message id", lambda row: row["message_id"]),
        ("group", lambda row: row["group_id"]),
        ("receives", lambda row: row["receive_count"]),
        ("key", lambda row: _envelope_field(row["body"], "key")),
    ]
    if dlq:
        columns.append(("reason", lambda row: row["attributes"].get("reason")))
    for heading, _ in columns:
        table.add_column(heading, overflow="fold")
    for row in rows:
        table.add_row(*(_text(value(row)) for _, value in columns))
    emit(app, data, table=table)


@queue.command("purge")
@dlq_option
@yes_option
@allow_protected_option
@format_option
@pass_app
def purge(app: AppContext, dlq: bool, yes: bool, allow_protected: bool) -> None:
    """Delete every message of the queue (or of its DLQ). Needs --yes; a protected
    environment also needs --allow-protected.

    Example: raasctl queue purge --dlq --yes
    """
    which = "DLQ" if dlq else "queue"
    _confirm(app, "purge", f"deletes every message of the {which}", yes, allow_protected)
    with _open(app) as port:
        purged = port.purge(dlq=dlq)
        name = port.name
    event(InfoCode.QUEUE_PURGED, f"{which} purged", queue=name, dlq=dlq, purged=purged)
    emit(app, {"env": app.runtime.env_name, "dlq": dlq, "purged": purged})


@queue.command("redrive")
@yes_option
@allow_protected_option
@format_option
@pass_app
def redrive(app: AppContext, yes: bool, allow_protected: bool) -> None:
    """Move every DLQ message back to the queue, receive count reset. Needs --yes; a
    protected environment also needs --allow-protected. On SQS a move task does it in
    the background (`moved` is then unknown).

    Example: raasctl queue redrive --yes
    """
    _confirm(app, "redrive", "moves every DLQ message back to the queue", yes, allow_protected)
    with _open(app) as port:
        result = port.redrive()
        name = port.name
    event(
        InfoCode.QUEUE_REDRIVEN,
        "DLQ redriven",
        queue=name,
        moved=result.moved,
        task_handle=result.task_handle,
    )
    emit(
        app,
        {"env": app.runtime.env_name, "moved": result.moved, "task_handle": result.task_handle},
    )


def _confirm(app: AppContext, command: str, effect: str, yes: bool, allow_protected: bool) -> None:
    """Destructive: --yes always, and --allow-protected too on a protected environment."""
    env_name = app.runtime.env_name
    if app.runtime.env.protected and not allow_protected:
        raise ConfigError(
            f"environment {env_name} is protected: queue {command} refuses it "
            "(pass --allow-protected --yes to override)",
            code=ErrorCode.PROTECTED_ENV,
        )
    if not yes:
        raise UsageError(f"queue {command} {effect} of environment {env_name}: confirm with --yes")


def _peeked(message: PeekedMessage) -> dict[str, Any]:
    return {
        "message_id": message.message_id,
        "group_id": message.group_id,
        "receive_count": message.receive_count,
        "attributes": dict(message.attributes),
        "body": message.body,
    }


def _envelope_field(body: str, name: str) -> Any:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data.get(name) if isinstance(data, dict) else None


def _text(value: Any) -> str:
    return "-" if value is None else str(value)
