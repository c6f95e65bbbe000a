"""The slot pool: `concurrency` threads that handle messages, and the order within a group.

A unit of work is one message, or the messages of one FIFO message group that arrived in one
receive (SQS may deliver several of a group at once). A unit goes to one slot and its
messages are handled one after another, in the order received; when one is not done with (a
retryable failure, an error, a stop) the rest are released at once without being handled, so
a later version of a record never overtakes the one that comes back. A message sent to the
DLQ (a permanent failure) leaves the group, as on SQS, and the next one goes on.
"""

from __future__ import annotations

import logging
import queue as queue_module
import threading
from collections.abc import Callable

from raasctl.codes import InfoCode
from raasctl.logs import event
from raasctl.queues.base import MAX_BATCH
from raasctl.ratelimit import RateLimiter
from raasctl.worker.handler import Handler
from raasctl.worker.lifecycle import Lifecycle
from raasctl.worker.messages import Held, envelope_fields
from raasctl.worker.releaser import Releaser


class SlotPool:
    """Counts the messages held (received, not yet done with) against `concurrency` plus
    `read_ahead`, and runs the slot threads that handle them."""

    def __init__(
        self,
        concurrency: int,
        *,
        handler: Handler,
        releaser: Releaser,
        limiter: RateLimiter,
        lifecycle: Lifecycle,
        clock: Callable[[], float],
        read_ahead: int = 0,
    ) -> None:
        self.concurrency = concurrency
        self.read_ahead = read_ahead
        self.handler = handler
        self.releaser = releaser
        self.limiter = limiter
        self.lifecycle = lifecycle
        self._clock = clock
        self._free = threading.Condition()
        self._held: set[Held] = set()
        self._waiting = 0  # held messages submitted and not yet taken by a slot
        self._units = 0  # units submitted and not yet finished
        # Room reserved for receives on their way (`wait_for_room` to `received`): messages,
        # and receives (a batch's slot when `batches`).
        self._reserved = 0
        self._receives = 0
        # Whether the poller submits whole receives as batches (`Handler.handle_batch`):
        # room is then counted in batches, a slot each.
        self.batches = False
        self.batch_size = MAX_BATCH  # the queue's largest receive, when batches
        self.batches_at_once = concurrency  # batches handled at once, when batches
        # A unit of work, and whether its messages are one batch (no order between them,
        # one sink call: `Handler.handle_batch`) rather than a group handled in order.
        self._work: queue_module.SimpleQueue[tuple[list[Held], bool] | None] = (
            queue_module.SimpleQueue()
        )
        self._threads = [
            threading.Thread(target=self._slot, name=f"raasctl-slot-{n}", daemon=True)
            for n in range(concurrency)
        ]

    # ---------------------------------------------------------------- for the poller

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def wait_for_room(self, stop: threading.Event) -> int:
        """Block until there is room for a receive, or `stop` is set; how many messages to
        receive (0 when stopping). The room is reserved for that receive until `received`.

        Room is the free slots and `read_ahead` places beyond them: the next batch waits
        here, under the heartbeat, instead of every freed slot waiting out a receive. While
        every slot is busy, the poller waits for room for a whole batch, so receives (and the
        deletes that follow) stay full."""
        capacity = self.concurrency + self.read_ahead
        with self._free:
            while not stop.is_set():
                if self.batches:
                    # A batch takes one slot: as many busy as may be, and one more ahead.
                    if self._units + self._receives <= self.batches_at_once:
                        self._receives += 1
                        self._reserved += self.batch_size
                        return self.batch_size
                    self._free.wait(0.5)
                    continue
                held = len(self._held) + self._reserved
                room = capacity - held
                if held < self.concurrency or room >= MAX_BATCH:
                    want = min(MAX_BATCH, room)
                    self._receives += 1
                    self._reserved += want
                    return want
                self._free.wait(0.5)
            return 0

    def received(self, reserved: int) -> None:
        """A receive is back, its messages held (`hold`): the room `wait_for_room` reserved
        for it is free again."""
        with self._free:
            self._receives -= 1
            self._reserved -= reserved
            self._free.notify_all()

    def receiving(self) -> int:
        """The most messages the receives on their way can bring (their reserved room)."""
        with self._free:
            return self._reserved

    def hold(self, *held: Held) -> None:
        with self._free:
            self._held.update(held)

    def submit(self, unit: list[Held], *, batch: bool = False) -> None:
        with self._free:
            self._waiting += len(unit)
            self._units += 1
        self._work.put((unit, batch))

    # ---------------------------------------------------------------- for the others

    def held(self) -> list[Held]:
        with self._free:
            return list(self._held)

    def in_flight(self) -> int:
        """The messages being handled (held, and not waiting for a slot)."""
        with self._free:
            return len(self._held) - self._waiting

    def release_waiting(self, why: str) -> int:
        """Release the messages still waiting for a slot (a stop came first); how many."""
        released = 0
        while True:
            try:
                work = self._work.get_nowait()
            except queue_module.Empty:
                return released
            if work is None:  # pragma: no cover - the stop sentinels come after this
                self._work.put(None)
                return released
            unit, _ = work
            self._took(unit)
            self._release_unit(unit, why)
            self._forget(unit, done=True)
            released += len(unit)

    def _release_unit(self, unit: list[Held], why: str) -> None:
        for held in unit:
            held.settle()
            self.releaser.release(held.message, held.envelope, why)
        self.limiter.give_back(len(unit))  # their tokens were never used for a start

    def wait_until_idle(self, timeout_s: float) -> int:
        """Wait up to `timeout_s` for every held message to be done with; the number still
        held after that."""
        deadline = self._clock() + timeout_s
        with self._free:
            while self._held:
                left = deadline - self._clock()
                if left <= 0:
                    break
                self._free.wait(min(left, 0.5))
            return len(self._held)

    def stop(self, *, join: bool) -> None:
        """End the slot threads once they have finished their unit (`join`: wait for them)."""
        for _ in self._threads:
            self._work.put(None)
        if join:
            for thread in self._threads:
                thread.join(timeout=1.0)

    # ---------------------------------------------------------------- the slots

    def _slot(self) -> None:
        try:
            self.handler.sink.connect()
        except BaseException as exc:  # a defect: stop the worker and re-raise from run()
            self.lifecycle.fail(exc)
            return
        while True:
            work = self._work.get()
            if work is None:
                return
            unit, batch = work
            self._took(unit)
            try:
                if self.lifecycle.abandoning.is_set():
                    # A signal or a failure came while it waited for a slot (read ahead).
                    self._release_unit(unit, "a stop came before it started")
                elif batch:
                    self.handler.handle_batch(unit)
                else:
                    self._handle_in_order(unit)
            except BaseException as exc:  # a defect: stop the worker and re-raise from run()
                self.lifecycle.fail(exc)
            finally:
                self._forget(unit, done=True)

    def _handle_in_order(self, unit: list[Held]) -> None:
        for index, held in enumerate(unit):
            done_with = self.handler.handle(held)
            self._forget([held])
            if not done_with:
                self._release_rest(unit[index + 1 :], held)
                return

    def _release_rest(self, rest: list[Held], stopped_at: Held) -> None:
        if not rest:
            return
        for held in rest:
            held.settle()
            self.releaser.release(held.message, held.envelope, "an earlier one of its group")
        self.limiter.give_back(len(rest))  # their tokens were never used for a start
        event(
            InfoCode.MESSAGE_RETRY,
            f"released {len(rest)} later message(s) of group {stopped_at.message.group_id!r} "
            "unhandled, to keep the group's order",
            message_id=stopped_at.message.message_id,
            group_id=stopped_at.message.group_id,
            released=len(rest),
            level=logging.WARNING,
            **envelope_fields(stopped_at.envelope),
        )

    def _took(self, unit: list[Held]) -> None:
        with self._free:
            self._waiting -= len(unit)

    def _forget(self, held_messages: list[Held], *, done: bool = False) -> None:
        """The slot no longer holds these messages: free their places in the pool (once);
        `done`: the unit they came in is finished."""
        with self._free:
            self._units -= done
            for held in held_messages:
                self._held.discard(held)
            self._free.notify_all()
