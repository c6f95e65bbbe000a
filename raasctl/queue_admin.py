"""Operator actions on an environment's queue and its DLQ: status, peek, purge, redrive.

Purge and redrive are guarded here, not only in the CLI: on a protected environment they
refuse unless the caller passes `allow_protected` (see protection.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from raasctl.codes import InfoCode
from raasctl.logs import event
from raasctl.protection import refuse_protected
from raasctl.queues.base import PeekedMessage, Queue, QueueDepth
from raasctl.queues.sqlite import SqliteQueue
from raasctl.sqlite import file_bytes

if TYPE_CHECKING:
    from raasctl.runtime import Runtime


@dataclass(frozen=True)
class QueueStatus:
    env: str
    queue: str  # the queue's URL or file, for people
    depth: QueueDepth

    def as_dict(self) -> dict[str, Any]:
        depth = self.depth
        return {
            "env": self.env,
            "queue": {
                "visible": depth.visible,
                "in_flight": depth.in_flight,
                "delayed": depth.delayed,
            },
            "dlq": {"visible": depth.dlq_visible},
        }


@dataclass(frozen=True)
class Peeked:
    env: str
    dlq: bool
    messages: list[PeekedMessage]

    def as_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "dlq": self.dlq,
            "messages": [
                {
                    "message_id": message.message_id,
                    "group_id": message.group_id,
                    "receive_count": message.receive_count,
                    "attributes": dict(message.attributes),
                    "body": message.body,
                }
                for message in self.messages
            ],
        }


@dataclass(frozen=True)
class Purged:
    env: str
    dlq: bool
    purged: int | None  # None where the queue purges asynchronously (SQS)
    freed_bytes: int | None = None  # the embedded file's space given back; None on SQS

    def as_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "dlq": self.dlq,
            "purged": self.purged,
            "freed_bytes": self.freed_bytes,
        }


@dataclass(frozen=True)
class Redriven:
    env: str
    moved: int | None  # None while an asynchronous move task runs (SQS)
    task_handle: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"env": self.env, "moved": self.moved, "task_handle": self.task_handle}


@contextmanager
def _open(runtime: Runtime) -> Iterator[Queue]:
    port = runtime.queue()
    try:
        yield port
    finally:
        port.close()


def queue_status(runtime: Runtime) -> QueueStatus:
    """Messages visible, in flight and delayed, and the DLQ's visible ones."""
    with _open(runtime) as port:
        return QueueStatus(runtime.env_name, port.name, port.depth())


def peek_messages(runtime: Runtime, limit: int, *, dlq: bool = False) -> Peeked:
    """Up to `limit` messages, oldest first, left on the queue (on SQS a peek is a receive)."""
    with _open(runtime) as port:
        return Peeked(runtime.env_name, dlq, port.peek(limit, dlq=dlq))


def purge_queue(runtime: Runtime, *, dlq: bool = False, allow_protected: bool = False) -> Purged:
    """Delete every message of the queue (or its DLQ). PROTECTED_ENV unless allowed."""
    which = "DLQ" if dlq else "queue"
    refuse_protected(runtime, "queue purge", allow_protected=allow_protected)
    freed: int | None = None
    with _open(runtime) as port:
        before = file_bytes(port.path) if isinstance(port, SqliteQueue) else 0
        purged = port.purge(dlq=dlq)
        name = port.name
        if isinstance(port, SqliteQueue):
            if purged:
                # Without this the file keeps its size (SQLite only reuses freed pages).
                port.compact()
            # Against the size before the purge: its DELETE grew the write-ahead log first.
            freed = max(0, before - file_bytes(port.path))
    if not dlq:
        # Runs whose entries were removed close as purged once the queue is empty (a purge of
        # the DLQ removes only entries counted already), and new sends get new deduplication
        # ids, so a re-run enqueues the purged entries again.
        state = runtime.state()
        try:
            state.record_purge(runtime.env_name, datetime.now(UTC))
        finally:
            state.close()
    event(
        InfoCode.QUEUE_PURGED,
        f"{which} purged",
        queue=name,
        dlq=dlq,
        purged=purged,
        freed_bytes=freed,
    )
    return Purged(runtime.env_name, dlq, purged, freed)


def redrive_queue(runtime: Runtime, *, allow_protected: bool = False) -> Redriven:
    """Move every DLQ message back to the queue, receive count reset. PROTECTED_ENV unless
    allowed."""
    refuse_protected(runtime, "queue redrive", allow_protected=allow_protected)
    with _open(runtime) as port:
        result = port.redrive()
        name = port.name
    event(
        InfoCode.QUEUE_REDRIVEN,
        "DLQ redriven",
        queue=name,
        moved=result.moved,
        task_handle=result.task_handle,
    )
    return Redriven(runtime.env_name, result.moved, result.task_handle)
