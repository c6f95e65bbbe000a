"""Letting go of messages unhandled: another cron's, the rest of a group, or those not
started at a stop; and the queue's receive limit, which decides whether a release counts as
the message's last allowed receive."""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from raasctl.codes import ErrorCode
from raasctl.envelope import Envelope
from raasctl.errors import RaasctlError
from raasctl.logs import event
from raasctl.queues.base import Queue, ReceivedMessage
from raasctl.worker.decision import Facts, Outcome, decide
from raasctl.worker.lifecycle import Lifecycle
from raasctl.worker.messages import Settled, envelope_fields
from raasctl.worker.results import Tally


class SettleFn(Protocol):
    """Hands handled messages to the settler (`Settler.settle`): one, or a batch's at once."""

    def __call__(self, *items: Settled) -> None: ...


class ReceiveLimit:
    """The queue's max_receive_count, read once by the poller before its first receive (on
    SQS a call that can fail, so it is retried like a receive) and read by every role."""

    def __init__(self) -> None:
        self.value: int | None = None
        self.known = False

    def set(self, value: int | None) -> None:
        self.value, self.known = value, True


class Releaser:
    """Makes messages visible again at once: another cron's, the rest of a group, or not
    started at a stop. A release still counts as a receive toward max_receive_count, so on
    the last allowed receive the message is counted as failed (its next receive moves it to
    the DLQ).

    At a stop (a signal), releases wait until polling has ended: released earlier, a message
    would be caught by the poller's last long poll, released again, and lose another receive.
    """

    def __init__(
        self,
        queue: Queue,
        lifecycle: Lifecycle,
        tally: Tally,
        limit: ReceiveLimit,
        settle: SettleFn,
    ) -> None:
        self.queue = queue
        self.lifecycle = lifecycle
        self.tally = tally
        self.limit = limit
        self.settle = settle
        self._lock = threading.Lock()
        self._polling_ended = False
        self._pending: list[tuple[ReceivedMessage, Envelope | None, str]] = []

    def release(self, message: ReceivedMessage, envelope: Envelope | None, why: str) -> None:
        with self._lock:
            if self.lifecycle.abandoning.is_set() and not self._polling_ended:
                self._pending.append((message, envelope, why))
                return
        try:
            self.queue.change_visibility(message.receipt_handle, 0)
        except RaasctlError as exc:
            # Not fatal: the message comes back when its visibility runs out.
            event(
                exc.code,
                f"releasing a message failed: {exc}",
                message_id=message.message_id,
                level=logging.WARNING,
            )
        self.tally.add("released")
        verdict = decide(Facts(message.receive_count, self.limit.value, let_go=why))
        if verdict.outcome is Outcome.FAILED:
            self.count_failed(message, envelope, f"{why}, released on its last allowed receive")

    def polling_ended(self) -> None:
        """Release what a stop held back."""
        with self._lock:
            self._polling_ended = True
            pending, self._pending = self._pending, []
        for message, envelope, why in pending:
            self.release(message, envelope, why)

    def count_failed(self, message: ReceivedMessage, envelope: Envelope | None, why: str) -> None:
        """Count a message the worker lets go without deleting it on its last allowed
        receive as failed: the queue moves it to the DLQ on its next receive."""
        event(
            ErrorCode.MESSAGE_FAILED,
            f"{why} ({message.receive_count} of {self.limit.value}): the queue moves it to the DLQ",
            message_id=message.message_id,
            attempt=message.receive_count,
            **envelope_fields(envelope),
        )
        run_id = envelope.run_id if envelope else message.attributes.get("run_id")
        key = envelope.key if envelope else f"message:{message.message_id}"
        self.settle(Settled(Outcome.FAILED, run_id, key))
