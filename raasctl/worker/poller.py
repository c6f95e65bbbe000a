"""The poller: takes rate-limit tokens, receives up to 10 messages when the slot pool has room
for them (its free slots and a batch read ahead), reads what State knows of their entries in
one request, and hands them to the slots, a message group's together and in order.

On a remote queue (SQS) two receives are kept on their way at once (`Queue.receives_at_once`),
each on its own thread: while one is a round trip away, the other's messages reach the slots,
so freed slots do not wait out a whole receive. The slot pool reserves room for each receive
before it is sent, so together they never hold more than the pool's room.

The tokens come before the receive: a message is only taken from the queue when it may
start soon (under a rate limit, within `ahead_s`: well inside the visibility timeout, which
the heartbeat extends meanwhile), never left waiting in memory while its visibility runs out.
A failed receive is retried after a pause that doubles; an error that waiting cannot mend
ends the worker at once (`stops_worker`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from raasctl.codes import InfoCode
from raasctl.envelope import Envelope
from raasctl.errors import RaasctlError
from raasctl.logs import event
from raasctl.queues.base import MAX_BATCH, Queue, ReceivedMessage
from raasctl.ratelimit import RateLimiter
from raasctl.state.base import Entry, State
from raasctl.worker.decision import stops_worker
from raasctl.worker.elsewhere import ElsewhereWatch
from raasctl.worker.lifecycle import Lifecycle, StopReason
from raasctl.worker.messages import Held, parse
from raasctl.worker.options import WorkerOptions
from raasctl.worker.releaser import ReceiveLimit, Releaser
from raasctl.worker.results import Tally
from raasctl.worker.served import RunsServed
from raasctl.worker.slots import SlotPool


class Poller:
    """Runs on the thread that calls `Worker.run`, until a stop."""

    def __init__(
        self,
        queue: Queue,
        state: State,
        options: WorkerOptions,
        *,
        known_crons: frozenset[str],
        limiter: RateLimiter,
        pool: SlotPool,
        releaser: Releaser,
        runs: RunsServed,
        lifecycle: Lifecycle,
        tally: Tally,
        limit: ReceiveLimit,
        time_left: Callable[[], float],
        clock: Callable[[], float],
        batches: bool = False,
        elsewhere: ElsewhereWatch | None = None,
        settle_pending: Callable[[], None] = lambda: None,
    ) -> None:
        self.queue = queue
        self.settle_pending = settle_pending
        # Hand a receive's messages to one slot together (the sink applies a batch in one
        # call); only without a rate limit, whose starts are paced one by one.
        self.batches = batches and limiter.unlimited
        self.elsewhere = elsewhere or ElsewhereWatch(options.visibility_timeout_s, clock)
        self.options = options
        self.known_crons = known_crons
        self.limiter = limiter
        self.pool = pool
        self.releaser = releaser
        self.runs = runs
        self.lifecycle = lifecycle
        self.tally = tally
        self.limit = limit
        self.state = state
        self.time_left = time_left
        self._clock = clock
        # Under a rate limit, a batch is received when its tokens are due within this long:
        # a full batch's worth, but never more than a sixth of the visibility timeout.
        self.ahead_s = (
            0.0
            if limiter.unlimited
            else min(options.visibility_timeout_s / 6, MAX_BATCH * limiter.interval_s)
        )
        # Receives on their way at once: one under a rate limit (its tokens pace the receives)
        # and with --max-messages (which counts what each receive asks for).
        self.receivers = (
            queue.receives_at_once if limiter.unlimited and options.max_messages is None else 1
        )
        self._empty_lock = threading.Lock()  # one receiver at a time checks an empty queue
        self._received = 0  # messages taken on (not released as another cron's)
        self._receive_errors = 0  # failed receives in a row
        self.failing: RaasctlError | None = None  # the last receive failed with this
        self._empty_logged = False
        # Waiting for messages: the queue ran empty and the worker was not told to stop then.
        self.idle = False

    def run(self) -> None:
        """Receive until a stop, on this thread and on `receivers - 1` more; return once every
        receiver has stopped (a receive on its way finishes first: a long poll at most)."""
        self._read_receive_limit()  # once, before the receivers share it
        others = [
            threading.Thread(target=self._receive_in_thread, name=f"raasctl-receiver-{n}")
            for n in range(1, self.receivers)
        ]
        for thread in others:
            thread.start()
        try:
            self._receive_until_stopped()
        except BaseException as exc:
            self.lifecycle.fail(exc)  # the other receivers stop too
            raise
        finally:
            for thread in others:
                thread.join()

    def _receive_in_thread(self) -> None:
        try:
            self._receive_until_stopped()
        except BaseException as exc:  # ends the worker with the error, as on the first thread
            self.lifecycle.fail(exc)

    def _receive_until_stopped(self) -> None:
        stopping = self.lifecycle.stopping
        while not stopping.is_set():
            if self.time_left() <= 0:
                self.lifecycle.stop(StopReason.MAX_RUNTIME)
                break
            want = self.pool.wait_for_room(stopping)
            if want == 0:
                continue
            try:
                self._receive(want)
            finally:
                self.pool.received(want)  # the room reserved for it is held messages now

    def _receive(self, reserved: int) -> None:
        """Take tokens for up to the `reserved` messages, receive them and hand them to the
        slots."""
        options = self.options
        want = reserved
        stopping = self.lifecycle.stopping
        if options.max_messages is not None:
            want = min(want, options.max_messages - self._received)
        tokens = self.limiter.acquire(want, stop=stopping, ahead_s=self.ahead_s)
        if tokens == 0:
            return  # stopping
        # Read before the receive: a message's visibility may have begun any time after.
        asked_at = self._clock()
        try:
            messages = self.queue.receive(
                tokens, self._wait_time_s(), visibility_timeout_s=options.visibility_timeout_s
            )
            if not messages:
                self.limiter.give_back(tokens)
                self._receive_errors = 0
                self.failing = None
                self._on_empty_receive(reserved)
                return
        except RaasctlError as exc:
            self.limiter.give_back(tokens)
            self._receive_failed(exc)
            return
        self._receive_errors = 0
        self.failing = None
        self._empty_logged = False
        self.idle = False
        self.elsewhere.clear()
        self.limiter.give_back(tokens - len(messages))
        if not self._dispatch(messages, asked_at) and not stopping.is_set():
            # Only other crons' messages: a filtered worker must not spin on (and burn
            # the receive count of) foreign messages.
            stopping.wait(options.foreign_pause_s)
        if options.max_messages is not None and self._received >= options.max_messages:
            self.lifecycle.stop(StopReason.MAX_MESSAGES)

    def _read_receive_limit(self) -> None:
        """The queue's max_receive_count (on SQS a call that can fail: retried like a
        receive)."""
        while not self.limit.known and not self.lifecycle.stopping.is_set():
            try:
                self.limit.set(self.queue.max_receive_count())
            except RaasctlError as exc:
                self._receive_failed(exc)

    def _receive_failed(self, exc: RaasctlError) -> None:
        self._receive_errors += 1
        self.failing = exc
        if stops_worker(exc, self._receive_errors):
            raise exc
        pause = min(30.0, 0.5 * 2 ** (self._receive_errors - 1))
        event(
            exc.code,
            f"receiving failed ({self._receive_errors} in a row), retrying in {pause:g} s: {exc}",
            level=logging.WARNING,
        )
        self.tally.add("errors")
        self.lifecycle.stopping.wait(pause)

    def _wait_time_s(self) -> float:
        """The long poll, cut short so that --max-runtime is kept."""
        return min(self.options.wait_time_s, max(0.0, self.time_left()))

    def _on_empty_receive(self, reserved: int) -> None:
        """DESIGN.md: empty means visible + in-flight + delayed are all 0 and a long poll came
        back empty. Logged once per time the queue runs empty. `reserved`: the room this
        receive had."""
        with self._empty_lock:
            self._check_empty(reserved)

    def _check_empty(self, reserved: int) -> None:
        depth = self.queue.depth()
        # What another receiver's receive on its way brings is in flight too, and this
        # worker's: counted as held (at most its reserved room) until it is back.
        on_the_way = self.pool.receiving() - reserved
        self.elsewhere.saw(depth.in_flight, self.pool.in_flight() + on_the_way)
        if not depth.empty:
            return
        if not self._empty_logged:
            self._empty_logged = True
            self.settle_pending()  # the outcomes gathering in the settler count first
            self.runs.reconcile()
            event(InfoCode.QUEUE_EMPTY, "queue is empty", queue=self.queue.name)
            if not self.options.until_empty:
                self._begin_idle_spell()
        if self.options.until_empty:
            self.lifecycle.stop(StopReason.QUEUE_EMPTY)

    def _begin_idle_spell(self) -> None:
        """Once per idle spell (not per poll): an operator watching a quiet worker learns it
        waits, and how to stop it."""
        self.idle = True
        if self.options.log_idle:
            event(
                InfoCode.WORKER_IDLE,
                "waiting for messages; stop with Ctrl-C or SIGTERM",
                queue=self.queue.name,
            )

    def _dispatch(self, messages: list[ReceivedMessage], asked_at: float) -> int:
        """Hand the messages to the slots; return how many were taken on."""
        units: dict[object, list[Held]] = {}
        taken: list[Held] = []
        run_ids: set[str] = set()
        abandoning, fifo = self.lifecycle.abandoning, self.queue.fifo
        for message in messages:
            envelope, problem = parse(message, self.known_crons)
            if abandoning.is_set():
                self.releaser.release(message, envelope, "a stop came before it started")
                continue
            if envelope is not None and problem is None and self._foreign(envelope):
                self.releaser.release(message, envelope, "another cron's")
                self.limiter.give_back(1)
                continue
            held = Held(message, envelope, problem, asked_at)
            taken.append(held)
            if envelope is not None:
                run_ids.add(envelope.run_id)
            # Only a FIFO queue orders a group; elsewhere every message goes on its own.
            unit: object = message.group_id if fifo and message.group_id else held
            units.setdefault(unit, []).append(held)
        # Held (the heartbeat covers them) and their runs seen before any slot has one.
        self.pool.hold(*taken)
        self._received += len(taken)
        self.runs.saw(*run_ids)
        # In the order received, each group's messages together.
        taken = [held for unit_messages in units.values() for held in unit_messages]
        self._read_known(taken)
        if self.batches:
            # Messages with no order between them (each alone in its group) go together;
            # a group of several keeps its order on a slot of its own.
            alone = [
                unit_messages[0] for unit_messages in units.values() if len(unit_messages) == 1
            ]
            if alone:
                self.pool.submit(alone, batch=True)
            units = {unit: held for unit, held in units.items() if len(held) > 1}
        for unit_messages in units.values():
            self.pool.submit(unit_messages)
        return len(taken)

    def _read_known(self, batch: list[Held]) -> None:
        """What State knows of the batch's entries, in one read; when it fails, each handler
        reads its own (and meets the error there, counted as that message's)."""
        readable = [held for held in batch if held.envelope is not None and held.problem is None]
        entries = [
            Entry(envelope.key, envelope.cron, envelope.entity_id or None)
            for envelope in (held.envelope for held in readable)
            if envelope is not None
        ]
        if not entries:
            return
        try:
            known = self.state.known(entries)
        except RaasctlError as exc:
            event(exc.code, f"reading the batch's entries failed: {exc}", level=logging.DEBUG)
            return
        for held in readable:
            held.known = known.get(held.key)

    def _foreign(self, envelope: Envelope) -> bool:
        crons = self.options.crons
        return bool(crons) and envelope.cron in self.known_crons and envelope.cron not in crons
