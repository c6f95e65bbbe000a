"""`raasctl queue status | peek [--limit N] [--dlq] | purge [--dlq] --yes | redrive --yes`."""

from __future__ import annotations

import json
from typing import Any

import click

from raasctl.cli.context import AppContext, pass_app
from raasctl.cli.options import (
    allow_protected_option,
    dlq_option,
    format_option,
    limit_option,
    yes_option,
)
from raasctl.cli.render import Column, Frame, TableSpec, emit, refresh
from raasctl.errors import UsageError
from raasctl.protection import refuse_protected
from raasctl.queue_admin import peek_messages, purge_queue, queue_status, redrive_queue

WATCH_EVERY_S = 2.0


@click.group()
def queue() -> None:
    """Look at the environment's queue and its DLQ; purge or redrive them.

    Example: raasctl --env work-uat queue status
    """


@queue.command("status")
@click.option(
    "--watch",
    "watch_s",
    type=click.FloatRange(min=0.01),
    is_flag=False,
    flag_value=WATCH_EVERY_S,
    default=None,
    metavar="[SECONDS]",
    help=f"Refresh every SECONDS ({WATCH_EVERY_S:g} if not given) until Ctrl-C (exit 0).",
)
@format_option
@pass_app
def status(app: AppContext, watch_s: float | None) -> None:
    """Messages visible, in flight and delayed, and the DLQ's visible messages.

    --watch redraws it in place on a terminal, and elsewhere prints it again each interval
    (a JSON line each with --format json).

    Example: raasctl queue status --format json
    """
    app.runtime.require_embedded_file("queue")

    def frame() -> Frame:
        result = queue_status(app.runtime)
        depth = result.depth
        table = TableSpec(
            f"Queue {result.queue} ({result.env})",
            [Column(heading, justify="right") for heading in ("visible", "in flight", "delayed")]
            + [Column("DLQ visible", justify="right")],
            [[depth.visible, depth.in_flight, depth.delayed, depth.dlq_visible]],
        )
        return Frame(result.as_dict(), table)

    if watch_s is not None:
        refresh(app, frame, watch_s)
        return
    shown = frame()
    emit(app, shown.data, table=shown.table)


@queue.command("peek")
@limit_option(10, "messages")
@dlq_option
@format_option
@pass_app
def peek(app: AppContext, limit: int, dlq: bool) -> None:
    """Show up to --limit messages, oldest first, without taking them.

    On SQS a peek is a receive (visible again at once): it adds one to each message's
    receive count, which counts towards the DLQ's maxReceiveCount. In JSON each `body` is
    the decoded JSON value (`body_is_json` true), or the text as sent when it is not JSON
    (`body_is_json` false: a poison message stays readable).

    Example: raasctl queue peek --dlq --limit 5 --format json
    """
    app.runtime.require_embedded_file("queue")
    result = peek_messages(app.runtime, limit, dlq=dlq)
    headings = ["message id", "group", "receives", "key"] + (["reason"] if dlq else [])
    rows = [
        [message.message_id, message.group_id, message.receive_count]
        + [_envelope_field(message.body, "key")]
        + ([message.attributes.get("reason")] if dlq else [])
        for message in result.messages
    ]
    table = TableSpec(
        f"{'DLQ' if dlq else 'Queue'} messages ({result.env})",
        [Column(heading, overflow="fold") for heading in headings],
        rows,
    )
    data = result.as_dict()
    for message in data["messages"]:
        message.update(_decoded_body(message["body"]))
    emit(app, data, table=table)


@queue.command("purge")
@dlq_option
@yes_option()
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
    result = purge_queue(app.runtime, dlq=dlq, allow_protected=allow_protected)
    emit(app, result.as_dict())


@queue.command("redrive")
@yes_option()
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
    result = redrive_queue(app.runtime, allow_protected=allow_protected)
    emit(app, result.as_dict())


def _confirm(app: AppContext, command: str, effect: str, yes: bool, allow_protected: bool) -> None:
    """Destructive: --yes always. The protected check comes first, so a refused environment
    says so rather than asking for --yes; the operation checks it again itself."""
    runtime = app.runtime
    refuse_protected(runtime, f"queue {command}", allow_protected=allow_protected)
    if not yes:
        raise UsageError(
            f"queue {command} {effect} of environment {runtime.env_name}: confirm with --yes"
        )


def _decoded_body(body: str) -> dict[str, Any]:
    try:
        return {"body": json.loads(body), "body_is_json": True}
    except ValueError:
        return {"body": body, "body_is_json": False}


def _envelope_field(body: str, name: str) -> Any:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data.get(name) if isinstance(data, dict) else None
