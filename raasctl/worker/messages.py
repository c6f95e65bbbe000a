"""A message as the worker's roles pass it on: held from its receive until it is done with,
then settled (waiting for its delete and its count)."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any

from raasctl.envelope import Envelope, EnvelopeError
from raasctl.queues.base import ReceivedMessage
from raasctl.state.base import AppliedEntry, Known
from raasctl.worker.decision import Outcome


@dataclass(eq=False)
class Held:
    """A message from its receive until it is deleted, released or handed back to the queue."""

    message: ReceivedMessage
    envelope: Envelope | None
    problem: str | None  # why the body is not a usable envelope
    extended_at: float  # when its current visibility began (read before the call that set it)
    lock: threading.Lock = field(default_factory=threading.Lock)
    settled: bool = False  # the heartbeat must no longer touch its visibility
    # What State knew of its entry when it was received (one read for the receive's batch);
    # None: not read (the handler reads it itself).
    known: Known | None = None

    @property
    def run_id(self) -> str | None:
        if self.envelope is not None:
            return self.envelope.run_id
        return self.message.attributes.get("run_id")

    @property
    def key(self) -> str:
        """The entry's key; a body that is no envelope is known by its message id."""
        if self.envelope is not None:
            return self.envelope.key
        return f"message:{self.message.message_id}"

    def settle(self) -> None:
        """From here on the handler owns the message's fate; the heartbeat keeps off."""
        with self.lock:
            self.settled = True


@dataclass(slots=True)  # not frozen: one for every message (see ReceivedMessage)
class Settled:
    """A handled message waiting for its delete (when it has a receipt handle) and count."""

    outcome: Outcome
    run_id: str | None
    key: str  # the entry's key (a body that is no envelope: "message:<message id>")
    receipt_handle: str | None = None
    visible_until: float = math.inf  # after this the receipt handle may be stale
    last_receive: bool = False  # the queue moves it to the DLQ if it is not deleted now
    applied: AppliedEntry | None = None  # the sink applied it: its records go with the count


def parse(
    message: ReceivedMessage, known_crons: frozenset[str]
) -> tuple[Envelope | None, str | None]:
    """The envelope (when the body is one) and the reason it cannot be processed, if any."""
    try:
        envelope = Envelope.from_body(message.body)
    except EnvelopeError as exc:
        return None, str(exc)
    except Exception as exc:  # one message's body never stops the worker
        return None, f"body cannot be read ({type(exc).__name__})"
    if envelope.cron not in known_crons:
        return envelope, f"unknown cron {envelope.cron!r}"
    return envelope, None


def envelope_fields(envelope: Envelope | None) -> dict[str, Any]:
    """The log fields that name a message's entry."""
    if envelope is None:
        return {}
    return {"cron": envelope.cron, "run_id": envelope.run_id, "key": envelope.key}
