"""The worker: drains the queue into the sink at the rate the downstream allows.

Receiving is separate from processing (DESIGN.md "Worker semantics"). One poller (the thread
that calls `Worker.run`) takes rate-limit tokens, receives `min(10, free slots)` messages and
hands them to a pool of `concurrency` slot threads, which start the sink call when the rate
limiter lets them; a housekeeping thread extends the visibility of every message held (the
heartbeat), reports progress and enforces `max_runtime_s`; a settler thread deletes handled
messages in batches and adds their counts to the run records. Threads suit the work: every
handler waits on I/O (an HTTP call, SQLite, DynamoDB).

Per message:

- not a valid envelope, or an unknown cron: to the DLQ at once with the reason;
- of a cron this worker does not serve (`crons`): released (visibility 0), not counted;
- key applied already (State): deleted without applying, counted as succeeded;
- sink success: idempotency record written, message deleted, counted as succeeded;
- retryable sink failure: visibility set to the backoff; on the last allowed receive it is
  counted as failed instead and released, so the queue's redrive moves it to the DLQ;
- permanent sink failure: to the DLQ at once with the reason.

Order within a message group (FIFO): a receive may bring several messages of one group (SQS
does). They go to one slot together and are handled one after another, in the order received;
when one is not done with (a retryable failure, an error, a stop) the rest of the group is
released at once without being handled, so a later version never overtakes an earlier one.
A message sent to the DLQ (a permanent failure) leaves the group, as on SQS, and the next one
goes on.

Every message ends counted in its run, so a run completes, also when the queue rather than
the worker moves it to the DLQ (both adapters do that on the receive after the last allowed
one, and the worker then never sees it again): a message the worker lets go on its last
allowed receive (`receive_count >= max_receive_count`) without deleting it is counted as
failed, whether it was released (a stop, another cron's, the rest of a group), handed back
after a retryable failure, or left to its visibility timeout after a queue or state error.

`--cron` on a queue that counts receives toward a DLQ: releasing other crons' messages would
use up their receives and dead-letter them, so `crons` is refused there (`UsageError`); see
`check_cron_filter`.

Errors: a queue or state error while receiving is retried after a pause that doubles, unless
retrying cannot help (the queue does not exist, access denied, no credentials, a
configuration error): then the worker stops at once with it.

Exactly-once effect: the sink applies a key at most once itself (ledger UNIQUE key, HTTP
Idempotency-Key), so a crash anywhere (after the sink, before the idempotency record) only
repeats a harmless apply. Counting happens after the delete: a crash between the two loses
the counts of that batch (the run then stays `running`), whereas counting first would count
a redelivered message twice. For the same reason a message whose visibility ran out before its
delete (the heartbeat failed) is not counted: the delete may have done nothing (the queue
had given the message to another receiver, which then counts it), and the Queue interface
does not say.
"""

from __future__ import annotations

import logging
import math
import queue as queue_module
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from raasctl.aws_errors import UNFIXABLE_CODES
from raasctl.codes import ErrorCode, InfoCode
from raasctl.config import CRON_NAMES
from raasctl.envelope import Envelope, EnvelopeError
from raasctl.errors import ConfigError, RaasctlError, SinkError, StateError, UsageError
from raasctl.logs import event
from raasctl.queues.base import MAX_BATCH, Queue, ReceivedMessage
from raasctl.ratelimit import RateLimiter
from raasctl.sinks.base import Sink
from raasctl.state.base import RunRecord, State

if TYPE_CHECKING:
    from raasctl.config import EnvironmentConfig
    from raasctl.runtime import Runtime

MAX_VISIBILITY_S = 43_200  # SQS's limit: 12 hours
# After this many handler errors in a row (a queue or state service failing, not a sink) the
# worker stops instead of cycling every message through its visibility timeout.
MAX_CONSECUTIVE_ERRORS = 10
# How often the runs this worker served are checked for completion, for a run whose total
# became known (enqueueing finished) after its last message was counted.
COMPLETION_CHECK_S = 5.0
# How long a handled message may wait for others to share its delete batch and count update.
SETTLE_INTERVAL_S = 0.05


@dataclass(frozen=True)
class WorkerOptions:
    concurrency: int = 8
    rate_per_s: float | None = None  # None: unlimited
    crons: frozenset[str] = frozenset()  # empty: every cron
    until_empty: bool = False
    max_messages: int | None = None
    max_runtime_s: float | None = None
    visibility_timeout_s: int = 60
    wait_time_s: float = 20.0  # long poll
    backoff_base_s: float = 2.0
    backoff_cap_s: float = 60.0
    shutdown_timeout_s: float = 30.0  # how long in-flight work may finish after a stop
    stats_interval_s: float | None = 30.0  # None: no periodic stats
    # A receive that brought only other crons' messages waits this long before the next,
    # so a filtered worker does not spin on (and burn the receive count of) foreign messages.
    foreign_pause_s: float = 1.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.visibility_timeout_s < 1:
            raise ValueError("visibility_timeout_s must be at least 1")


class StopReason(StrEnum):
    QUEUE_EMPTY = "queue_empty"
    MAX_MESSAGES = "max_messages"
    MAX_RUNTIME = "max_runtime"
    SIGNAL = "signal"
    ERROR = "error"


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    RETRY = "retries"
    FAILED = "failed"
    DEAD_LETTERED = "dead_lettered"


@dataclass(frozen=True)
class WorkerResult:
    processed: int  # messages handled: succeeded + failed + dead_lettered + retries
    succeeded: int
    failed: int
    dead_lettered: int
    retries: int
    # Let go unhandled: other crons' messages, the rest of a message group after one was not
    # done with, messages received but not started at a stop.
    released: int
    errors: int  # queue or state failures while receiving or handling (retried later)
    elapsed_s: float
    stopped: StopReason

    @property
    def per_hour(self) -> float:
        return self.processed / self.elapsed_s * 3600 if self.elapsed_s > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.dead_lettered == 0

    def summary(self) -> dict[str, Any]:
        """DESIGN.md's `worker` JSON document."""
        return {
            "processed": self.processed,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "dead_lettered": self.dead_lettered,
            "elapsed_s": round(self.elapsed_s, 3),
            "per_hour": round(self.per_hour, 1),
        }


@dataclass(frozen=True)
class WorkerStats:
    """A progress snapshot: this worker's counts, and the runs it has served."""

    processed: int
    succeeded: int
    failed: int
    dead_lettered: int
    retries: int
    in_flight: int
    elapsed_s: float
    per_hour: float
    runs_done: int  # messages accounted for in the runs this worker has seen (all workers)
    runs_total: int | None  # those runs' totals; None until one has finished enqueueing
    eta_s: float | None

    def fields(self) -> dict[str, Any]:
        return {
            "processed": self.processed,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "dead_lettered": self.dead_lettered,
            "retries": self.retries,
            "in_flight": self.in_flight,
            "elapsed_s": round(self.elapsed_s, 1),
            "per_hour": round(self.per_hour, 1),
            "done": self.runs_done,
            "total": self.runs_total,
            "eta_s": None if self.eta_s is None else round(self.eta_s),
        }


def backoff_s(
    receive_count: int, base_s: float, cap_s: float, retry_after_s: float | None = None
) -> int:
    """Visibility for the next attempt: base doubling per receive (2, 4, 8 ... s), capped;
    a server's Retry-After wins when it asks for longer. Whole seconds, as SQS takes them."""
    delay = min(cap_s, base_s * 2 ** max(0, receive_count - 1))
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return min(MAX_VISIBILITY_S, math.ceil(delay))


@dataclass(eq=False)
class _Held:
    """A message from its receive until it is deleted, released or handed back to the queue."""

    message: ReceivedMessage
    envelope: Envelope | None
    problem: str | None  # why the body is not a usable envelope
    extended_at: float  # when its current visibility began (read before the call that set it)
    lock: threading.Lock = field(default_factory=threading.Lock)
    settled: bool = False  # the heartbeat must no longer touch its visibility


@dataclass(frozen=True)
class _Settled:
    """A handled message waiting for its delete (when it has a receipt handle) and count."""

    outcome: Outcome
    run_id: str | None
    receipt_handle: str | None = None
    visible_until: float = math.inf  # after this the receipt handle may be stale
    last_receive: bool = False  # the queue moves it to the DLQ if it is not deleted now


@dataclass
class _Counts:
    succeeded: int = 0
    failed: int = 0
    dead_lettered: int = 0
    retries: int = 0
    released: int = 0
    errors: int = 0

    @property
    def processed(self) -> int:
        return self.succeeded + self.failed + self.dead_lettered + self.retries


class Worker:
    """`run()` blocks until a stop condition; `stop()` may be called from a signal handler or
    another thread. Clocks, the rate limiter and the progress callback are injectable."""

    def __init__(
        self,
        queue: Queue,
        state: State,
        sink: Sink,
        options: WorkerOptions,
        *,
        known_crons: Iterable[str] = CRON_NAMES,
        limiter: RateLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_stats: Callable[[WorkerStats], None] | None = None,
    ) -> None:
        self.queue = queue
        self.state = state
        self.sink = sink
        self.options = options
        self.known_crons = frozenset(known_crons)
        self.limiter = limiter or RateLimiter(options.rate_per_s, clock=clock)
        self._clock = clock
        self._now = now
        self._on_stats = on_stats or log_stats

        self._stop = threading.Event()  # stop receiving
        self._abandon = threading.Event()  # a signal: release messages not yet started
        self._done = threading.Event()  # housekeeping ends
        self._stop_reason: StopReason | None = None
        self._fatal: BaseException | None = None

        self._lock = threading.Lock()
        self._slot_free = threading.Condition(self._lock)
        self._busy = 0  # messages held: waiting for their start or being handled
        self._held: set[_Held] = set()
        self._counts = _Counts()
        self._consecutive_errors = 0
        self._runs_seen: set[str] = set()
        self._runs_finished: set[str] = set()
        # One item per message, or per message group of a receive (handled in order).
        self._work: queue_module.SimpleQueue[list[_Held] | None] = queue_module.SimpleQueue()
        self._settle_ready = threading.Condition()
        self._settled: list[_Settled] = []
        self._settler_stop = False
        self._started = 0.0
        self._received = 0  # messages taken on (not released as another cron's)
        self._receive_errors = 0  # failed receives in a row
        # The queue's max_receive_count, read once by the poller before its first receive
        # (on SQS a call that can fail, so it is retried like a receive).
        self._receive_limit: int | None = None
        self._receive_limit_read = False
        self._polling_ended = False
        self._pending_releases: list[tuple[ReceivedMessage, Envelope | None]] = []
        self._empty_logged = False

    # ---------------------------------------------------------------- public

    def stop(self, reason: StopReason = StopReason.SIGNAL) -> None:
        """Stop receiving; in-flight work finishes. A signal also releases messages that were
        received but not started."""
        if self._stop_reason is None:
            self._stop_reason = reason
        if reason is StopReason.SIGNAL:
            self._abandon.set()
        self._stop.set()

    def run(self) -> WorkerResult:
        options = self.options
        check_cron_filter(self.queue, options.crons)
        self._started = self._clock()
        event(
            InfoCode.WORKER_STARTED,
            "worker started",
            queue=self.queue.name,
            concurrency=options.concurrency,
            rate_per_s=options.rate_per_s,
            crons=sorted(options.crons) or None,
        )
        slots = [
            threading.Thread(target=self._slot, name=f"raasctl-slot-{n}", daemon=True)
            for n in range(options.concurrency)
        ]
        housekeeping = threading.Thread(
            target=self._housekeeping, name="raasctl-housekeeping", daemon=True
        )
        settler = threading.Thread(target=self._settler, name="raasctl-settler", daemon=True)
        for thread in (*slots, housekeeping, settler):
            thread.start()
        try:
            self._poll()
        except BaseException as exc:
            self._fatal = exc
            self.stop(StopReason.ERROR)
        finally:
            self._shut_down(slots, settler)
        result = self.result()
        event(
            InfoCode.WORKER_FINISHED,
            "worker finished",
            stopped=str(result.stopped),
            retries=result.retries,
            released=result.released,
            errors=result.errors,
            **result.summary(),
        )
        if self._fatal is not None:
            raise self._fatal
        return result

    def result(self) -> WorkerResult:
        with self._lock:
            counts = replace(self._counts)
        return WorkerResult(
            processed=counts.processed,
            succeeded=counts.succeeded,
            failed=counts.failed,
            dead_lettered=counts.dead_lettered,
            retries=counts.retries,
            released=counts.released,
            errors=counts.errors,
            elapsed_s=self._clock() - self._started,
            stopped=self._stop_reason or StopReason.SIGNAL,
        )

    def stats(self) -> WorkerStats:
        with self._lock:
            counts = replace(self._counts)
            in_flight = self._busy
            run_ids = sorted(self._runs_seen)
        elapsed = self._clock() - self._started
        per_hour = counts.processed / elapsed * 3600 if elapsed > 0 else 0.0
        done, total = 0, None
        for run in self._runs(run_ids):
            done += run.done
            if run.total is not None:
                total = (total or 0) + run.total
        eta = None
        completing = counts.succeeded + counts.failed + counts.dead_lettered
        if total is not None and completing > 0 and elapsed > 0:
            eta = max(0, total - done) / (completing / elapsed)
        return WorkerStats(
            processed=counts.processed,
            succeeded=counts.succeeded,
            failed=counts.failed,
            dead_lettered=counts.dead_lettered,
            retries=counts.retries,
            in_flight=in_flight,
            elapsed_s=elapsed,
            per_hour=per_hour,
            runs_done=done,
            runs_total=total,
            eta_s=eta,
        )

    # ---------------------------------------------------------------- the poller

    def _poll(self) -> None:
        options = self.options
        while not self._stop.is_set():
            if self._out_of_time():
                self.stop(StopReason.MAX_RUNTIME)
                break
            free = self._wait_for_free_slot()
            if free == 0:
                continue
            want = min(MAX_BATCH, free)
            if options.max_messages is not None:
                want = min(want, options.max_messages - self._received)
            # The token comes before the receive: a message is only taken from the queue
            # when it may start (within one interval), never left waiting in memory.
            tokens = self.limiter.acquire(want, stop=self._stop)
            if tokens == 0:
                break
            # Read before the receive: a message's visibility may have begun any time after.
            asked_at = self._clock()
            try:
                if not self._receive_limit_read:
                    self._receive_limit = self.queue.max_receive_count()
                    self._receive_limit_read = True
                messages = self.queue.receive(
                    tokens, self._wait_time_s(), visibility_timeout_s=options.visibility_timeout_s
                )
                if not messages:
                    self.limiter.give_back(tokens)
                    self._on_empty_receive()
                    self._receive_errors = 0
                    continue
            except RaasctlError as exc:
                self.limiter.give_back(tokens)
                self._receive_failed(exc)
                continue
            self._receive_errors = 0
            self._empty_logged = False
            self.limiter.give_back(tokens - len(messages))
            if not self._dispatch(messages, asked_at) and not self._stop.is_set():
                self._stop.wait(options.foreign_pause_s)
            if options.max_messages is not None and self._received >= options.max_messages:
                self.stop(StopReason.MAX_MESSAGES)

    def _receive_failed(self, exc: RaasctlError) -> None:
        """A failed receive (or depth check) is retried after a pause that doubles; after
        MAX_CONSECUTIVE_ERRORS in a row the worker gives up and exits with the error. An error
        that waiting cannot mend (the queue does not exist, access denied, no credentials)
        ends the worker at once."""
        self._receive_errors += 1
        if unfixable(exc) or self._receive_errors >= MAX_CONSECUTIVE_ERRORS:
            raise exc
        pause = min(30.0, 0.5 * 2 ** (self._receive_errors - 1))
        event(
            exc.code,
            f"receiving failed ({self._receive_errors} in a row), retrying in {pause:g} s: {exc}",
            level=logging.WARNING,
        )
        with self._lock:
            self._counts.errors += 1
        self._stop.wait(pause)

    def _out_of_time(self) -> bool:
        limit = self.options.max_runtime_s
        return limit is not None and self._clock() - self._started >= limit

    def _wait_for_free_slot(self) -> int:
        with self._slot_free:
            while self._busy >= self.options.concurrency and not self._stop.is_set():
                self._slot_free.wait(0.5)
            return 0 if self._stop.is_set() else self.options.concurrency - self._busy

    def _wait_time_s(self) -> float:
        """The long poll, cut short so that --max-runtime is kept."""
        wait = self.options.wait_time_s
        if self.options.max_runtime_s is not None:
            left = self.options.max_runtime_s - (self._clock() - self._started)
            wait = min(wait, max(0.0, left))
        return wait

    def _on_empty_receive(self) -> None:
        """DESIGN.md: empty means visible + in-flight + delayed are all 0 and a long poll came
        back empty. Logged once per time the queue runs empty."""
        depth = self.queue.depth()
        if not depth.empty:
            return
        if not self._empty_logged:
            self._empty_logged = True
            self._complete_runs()
            event(InfoCode.QUEUE_EMPTY, "queue is empty", queue=self.queue.name)
        if self.options.until_empty:
            self.stop(StopReason.QUEUE_EMPTY)

    def _dispatch(self, messages: list[ReceivedMessage], asked_at: float) -> int:
        """Hand the messages to the slots, a message group's together and in order (see the
        module docstring); return how many were taken on."""
        units: dict[object, list[_Held]] = {}
        for message in messages:
            envelope, problem = _parse(message, self.known_crons)
            if self._abandon.is_set():
                self._release(message, envelope)
                continue
            if envelope is not None and problem is None and self._foreign(envelope):
                self._release(message, envelope)
                self.limiter.give_back(1)
                continue
            held = _Held(message, envelope, problem, extended_at=asked_at)
            with self._lock:
                self._busy += 1
                self._held.add(held)
                self._received += 1
                if envelope is not None:
                    self._runs_seen.add(envelope.run_id)
            # Only a FIFO queue orders a group; elsewhere every message goes on its own.
            unit: object = message.group_id if self.queue.fifo and message.group_id else held
            units.setdefault(unit, []).append(held)
        for held_messages in units.values():
            self._work.put(held_messages)
        return sum(len(held_messages) for held_messages in units.values())

    def _foreign(self, envelope: Envelope) -> bool:
        crons = self.options.crons
        return bool(crons) and envelope.cron in self.known_crons and envelope.cron not in crons

    def _release(self, message: ReceivedMessage, envelope: Envelope | None) -> None:
        """Make a message visible again at once (another cron's, the rest of a group, or not
        started at a stop). A release still counts as a receive toward max_receive_count: on
        the last allowed receive the message is counted as failed, as its next receive moves
        it to the DLQ.

        At a stop, releases wait until polling has ended: released earlier, a message would
        be caught by the poller's last long poll, released again, and lose another receive."""
        with self._lock:
            if self._abandon.is_set() and not self._polling_ended:
                self._pending_releases.append((message, envelope))
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
        with self._lock:
            self._counts.released += 1
        self._count_if_last_receive(message, envelope, "released on its last allowed receive")

    def _count_if_last_receive(
        self, message: ReceivedMessage, envelope: Envelope | None, why: str
    ) -> None:
        """Count a message the worker lets go without deleting it as failed when the queue
        will move it to the DLQ on its next receive."""
        limit = self._receive_limit
        if limit is None or message.receive_count < limit:
            return
        run_id = envelope.run_id if envelope else message.attributes.get("run_id")
        event(
            ErrorCode.MESSAGE_FAILED,
            f"{why} ({message.receive_count} of {limit}): the queue moves it to the DLQ",
            message_id=message.message_id,
            attempt=message.receive_count,
            **_envelope_fields(envelope),
        )
        self._to_settle(_Settled(Outcome.FAILED, run_id))

    # ---------------------------------------------------------------- the slots

    def _slot(self) -> None:
        while True:
            unit = self._work.get()
            if unit is None:
                return
            try:
                self._handle_in_order(unit)
            except BaseException as exc:  # a defect: stop the worker and re-raise from run()
                self._fatal = self._fatal or exc
                self.stop(StopReason.ERROR)
            finally:
                self._forget(unit)

    def _handle_in_order(self, unit: list[_Held]) -> None:
        """One message, or a message group's messages of one receive one after another. When
        one is not done with, the rest are released unhandled: handling them now would let a
        later version of a record overtake the one that comes back."""
        for index, held in enumerate(unit):
            done_with = self._handle_safely(held)
            self._forget([held])
            if not done_with:
                self._release_rest(unit[index + 1 :], held)
                return

    def _release_rest(self, rest: list[_Held], stopped_at: _Held) -> None:
        if not rest:
            return
        for held in rest:
            self._settle(held)
            self._release(held.message, held.envelope)
        self.limiter.give_back(len(rest))  # their tokens were never used for a start
        event(
            InfoCode.MESSAGE_RETRY,
            f"released {len(rest)} later message(s) of group {stopped_at.message.group_id!r} "
            "unhandled, to keep the group's order",
            message_id=stopped_at.message.message_id,
            group_id=stopped_at.message.group_id,
            released=len(rest),
            level=logging.WARNING,
            **_envelope_fields(stopped_at.envelope),
        )

    def _forget(self, held_messages: list[_Held]) -> None:
        """The slot no longer holds these messages: free their places in the pool (once)."""
        with self._slot_free:
            for held in held_messages:
                if held in self._held:
                    self._held.discard(held)
                    self._busy -= 1
            self._slot_free.notify_all()

    def _handle_safely(self, held: _Held) -> bool:
        """Handle one message; True when it is done with (deleted, or in the DLQ), so the next
        message of its group may go on."""
        try:
            settled = self._handle(held)
            if settled is None:  # released: a signal came before it could start
                return False
        except RaasctlError as exc:
            # The queue or state failed mid-way: the message comes back after its visibility
            # runs out and is retried then; the sink's idempotency covers a repeated apply.
            self._settle(held)
            event(
                exc.code,
                f"handling a message failed: {exc}",
                message_id=held.message.message_id,
                **_envelope_fields(held.envelope),
            )
            self._count_if_last_receive(
                held.message, held.envelope, "left to its visibility timeout after an error"
            )
            with self._lock:
                self._counts.errors += 1
                self._consecutive_errors += 1
                too_many = self._consecutive_errors >= MAX_CONSECUTIVE_ERRORS
            if (too_many or unfixable(exc)) and self._fatal is None:
                self._fatal = exc
                self.stop(StopReason.ERROR)
            return False
        with self._lock:
            self._consecutive_errors = 0
        self._to_settle(settled)
        return settled.outcome in (Outcome.SUCCEEDED, Outcome.DEAD_LETTERED)

    def _to_settle(self, settled: _Settled) -> None:
        """Hand a handled message to the settler (its delete, when it has a receipt handle,
        and its count)."""
        with self._settle_ready:
            self._settled.append(settled)
            if len(self._settled) in (1, MAX_BATCH):
                self._settle_ready.notify()

    def _handle(self, held: _Held) -> _Settled | None:
        message, envelope = held.message, held.envelope
        if envelope is None or held.problem is not None:
            self._dead_letter(held, held.problem or "not an envelope")
            run_id = envelope.run_id if envelope else message.attributes.get("run_id")
            return _Settled(Outcome.DEAD_LETTERED, run_id)
        if self.state.is_applied(envelope.key):
            return self._succeeded(held, envelope)
        # The start the rate limit counts is the call to the downstream. It waits about one
        # interval at most, since the token was taken before the receive.
        if self.limiter.begin(self._abandon):
            self._settle(held)
            self._release(message, envelope)
            return None
        try:
            self.sink.apply(envelope)  # APPLIED and ALREADY_APPLIED alike: it is in place
        except SinkError as exc:
            if not exc.retryable:
                self._dead_letter(held, str(exc))
                return _Settled(Outcome.DEAD_LETTERED, envelope.run_id)
            return _Settled(self._retry(held, envelope, exc), envelope.run_id)
        self.state.record_applied(envelope.key, envelope.run_id, self._now())
        return self._succeeded(held, envelope)

    def _succeeded(self, held: _Held, envelope: Envelope) -> _Settled:
        self._settle(held)  # the heartbeat keeps off from here, so extended_at is final
        return _Settled(
            Outcome.SUCCEEDED,
            envelope.run_id,
            held.message.receipt_handle,
            visible_until=held.extended_at + self.options.visibility_timeout_s,
            last_receive=self._receive_limit is not None
            and held.message.receive_count >= self._receive_limit,
        )

    def _retry(self, held: _Held, envelope: Envelope, exc: SinkError) -> Outcome:
        message = held.message
        limit = self._receive_limit
        self._settle(held)
        if limit is not None and message.receive_count >= limit:
            # The last attempt: visible again at once so the queue's redrive moves it to the
            # DLQ on the next receive.
            self.queue.change_visibility(message.receipt_handle, 0)
            event(
                ErrorCode.MESSAGE_FAILED,
                f"retries exhausted: {exc}",
                message_id=message.message_id,
                attempt=message.receive_count,
                **_envelope_fields(envelope),
            )
            return Outcome.FAILED
        delay = backoff_s(
            message.receive_count,
            self.options.backoff_base_s,
            self.options.backoff_cap_s,
            exc.retry_after_s,
        )
        self.queue.change_visibility(message.receipt_handle, delay)
        event(
            InfoCode.MESSAGE_RETRY,
            f"will retry in {delay} s: {exc}",
            message_id=message.message_id,
            attempt=message.receive_count,
            delay_s=delay,
            level=logging.WARNING,
            **_envelope_fields(envelope),
        )
        return Outcome.RETRY

    def _dead_letter(self, held: _Held, reason: str) -> None:
        self._settle(held)
        self.queue.dead_letter(held.message, reason)
        event(
            InfoCode.MESSAGE_DEAD_LETTERED,
            f"sent to the DLQ: {reason}",
            message_id=held.message.message_id,
            reason=reason,
            level=logging.WARNING,
            **_envelope_fields(held.envelope),
        )

    def _settle(self, held: _Held) -> None:
        """From here on the handler owns the message's fate; the heartbeat keeps off."""
        with held.lock:
            held.settled = True

    # ---------------------------------------------------------------- run counters

    def _settler(self) -> None:
        """Deletes and counts in batches: one DeleteMessageBatch for up to ten messages and
        one counter update per run, instead of a call each per message."""
        while True:
            with self._settle_ready:
                if not self._settled and not self._settler_stop:
                    self._settle_ready.wait()
                if len(self._settled) < MAX_BATCH and not self._settler_stop:
                    self._settle_ready.wait(SETTLE_INTERVAL_S)  # let a batch gather
                batch, self._settled = self._settled, []
                stopping = self._settler_stop
            if batch:
                self._flush(batch)
            elif stopping:
                return

    def _flush(self, batch: list[_Settled]) -> None:
        now = self._clock()
        # A receipt handle whose visibility ran out (the heartbeat could not extend it) may
        # be stale: the queue may have given the message to another receiver, and then the
        # delete does nothing and says nothing. It is deleted all the same (it still works
        # when nobody took the message), but not counted, so it is never counted twice.
        lapsed = [item for item in batch if item.receipt_handle and item.visible_until <= now]
        if lapsed:
            event(
                ErrorCode.QUEUE_FAILED,
                f"{len(lapsed)} handled message(s) were past their visibility timeout before "
                "their delete; not counted here (a worker that received them again counts them)",
                level=logging.WARNING,
                lapsed=len(lapsed),
            )
            with self._lock:
                self._counts.errors += len(lapsed)
        handles = [item.receipt_handle for item in batch if item.receipt_handle]
        deleted = True
        if handles:
            try:
                self.queue.delete(handles)
            except RaasctlError as exc:
                # Not counted: each comes back, is found applied, and is deleted then (or, on
                # its last allowed receive, goes to the DLQ: counted as failed below).
                deleted = False
                event(exc.code, f"deleting {len(handles)} message(s) failed: {exc}")
                with self._lock:
                    self._counts.errors += len(handles)
                if unfixable(exc) and self._fatal is None:
                    self._fatal = exc
                    self.stop(StopReason.ERROR)
        per_run: dict[str, Counter[str]] = {}
        with self._lock:
            for item in batch:
                outcome = item.outcome
                if item.receipt_handle and item.visible_until <= now:
                    continue
                if item.receipt_handle and not deleted:
                    if not item.last_receive:
                        continue
                    outcome = Outcome.FAILED
                name = outcome.value
                setattr(self._counts, name, getattr(self._counts, name) + 1)
                if item.run_id is not None:
                    per_run.setdefault(item.run_id, Counter())[name] += 1
        for run_id, counts in per_run.items():
            try:
                self._count_run(run_id, counts)
            except RaasctlError as exc:
                event(exc.code, f"counting run {run_id} failed: {exc}", run_id=run_id)

    def _count_run(self, run_id: str, counts: Counter[str]) -> None:
        try:
            run = self.state.add_counts(run_id, **counts, now=self._now())
        except StateError as exc:
            if exc.code is not ErrorCode.RUN_NOT_FOUND:
                raise
            # A message whose run record is gone (or was never made): nothing to count.
            event(exc.code, f"message of unknown run {run_id}", run_id=run_id, level=logging.DEBUG)
            return
        if run.total is not None and run.done >= run.total and run.finished_at is None:
            self._finish_run(run)

    def _finish_run(self, run: RunRecord) -> None:
        with self._lock:
            self._runs_finished.add(run.run_id)
        if self.state.mark_finished(run.run_id, self._now()):
            event(
                InfoCode.RUN_COMPLETE,
                "run complete",
                cron=run.cron,
                run_id=run.run_id,
                total=run.total,
                succeeded=run.succeeded,
                failed=run.failed,
                dead_lettered=run.dead_lettered,
                retries=run.retries,
            )

    def _complete_runs(self) -> None:
        """Runs whose last message was counted before enqueueing finished (the total was not
        known then) are completed here, when the queue runs empty and at the end."""
        with self._lock:
            run_ids = sorted(self._runs_seen - self._runs_finished)
        for run in self._runs(run_ids):
            if run.finished_at is not None:
                with self._lock:
                    self._runs_finished.add(run.run_id)
            elif run.total is not None and run.done >= run.total:
                self._finish_run(run)

    def _runs(self, run_ids: list[str]) -> list[RunRecord]:
        runs = []
        for run_id in run_ids:
            run = self.state.get_run(run_id)
            if run is not None:
                runs.append(run)
        return runs

    # ---------------------------------------------------------------- housekeeping

    def _housekeeping(self) -> None:
        visibility = self.options.visibility_timeout_s
        # Often enough for the heartbeat, the stats interval and --max-runtime; each tick costs
        # a few lock operations.
        tick = max(0.05, min(0.25, visibility / 6, self.options.stats_interval_s or math.inf))
        next_stats = self._clock() + (self.options.stats_interval_s or math.inf)
        next_completion = self._clock() + COMPLETION_CHECK_S
        while not self._done.wait(tick):
            now = self._clock()
            self._heartbeat(now, visibility)
            if self._out_of_time():
                self.stop(StopReason.MAX_RUNTIME)
            try:
                if now >= next_completion:
                    next_completion = now + COMPLETION_CHECK_S
                    self._complete_runs()
                if self.options.stats_interval_s and now >= next_stats:
                    next_stats = now + self.options.stats_interval_s
                    self._on_stats(self.stats())
            except RaasctlError as exc:
                event(exc.code, f"reading run progress failed: {exc}", level=logging.WARNING)

    def _heartbeat(self, now: float, visibility: int) -> None:
        """Extend every held message a third of the way into its visibility, so a slow handler
        never lets it reappear to another worker."""
        with self._lock:
            due = [held for held in self._held if now - held.extended_at >= visibility / 3]
        for held in due:
            with held.lock:
                if held.settled:
                    continue
                try:
                    self.queue.change_visibility(held.message.receipt_handle, visibility)
                    held.extended_at = now
                except RaasctlError as exc:
                    event(
                        exc.code,
                        f"extending visibility failed: {exc}",
                        message_id=held.message.message_id,
                        level=logging.WARNING,
                    )

    # ---------------------------------------------------------------- stopping

    def _shut_down(self, slots: list[threading.Thread], settler: threading.Thread) -> None:
        self._stop.set()
        with self._lock:
            self._polling_ended = True
            pending, self._pending_releases = self._pending_releases, []
        for message, envelope in pending:
            self._release(message, envelope)
        if self._stop_reason is not None:
            event(
                InfoCode.WORKER_STOPPING,
                "worker stopping",
                reason=str(self._stop_reason),
                in_flight=self._busy,
            )
        deadline = self._clock() + self.options.shutdown_timeout_s
        with self._slot_free:
            while self._busy > 0:
                left = deadline - self._clock()
                if left <= 0:
                    break
                self._slot_free.wait(min(left, 0.5))
            abandoned = self._busy
        if abandoned:
            # Their visibility runs out without the heartbeat and another worker takes them;
            # a repeated apply is harmless (sink idempotency).
            event(
                InfoCode.WORKER_STOPPING,
                f"{abandoned} message(s) still in flight after "
                f"{self.options.shutdown_timeout_s:g} s; left to their visibility timeout",
                level=logging.WARNING,
                in_flight=abandoned,
            )
        self._done.set()
        for _ in slots:
            self._work.put(None)
        if not abandoned:
            for thread in slots:
                thread.join(timeout=1.0)
        with self._settle_ready:
            self._settler_stop = True
            self._settle_ready.notify()
        settler.join(timeout=self.options.shutdown_timeout_s)
        try:
            self._complete_runs()
        except RaasctlError as exc:
            event(exc.code, f"checking run completion failed: {exc}", level=logging.WARNING)


def unfixable(exc: RaasctlError) -> bool:
    """An error that retrying after a pause cannot mend (see raasctl/aws_errors.py)."""
    return isinstance(exc, ConfigError) or exc.code in UNFIXABLE_CODES


def check_cron_filter(queue: Queue, crons: frozenset[str]) -> None:
    """Refuse a cron filter on a queue that dead-letters after max_receive_count.

    The filter works by releasing other crons' messages (visibility 0) after receiving them,
    and both SQS and the embedded queue count every receive toward maxReceiveCount, so the
    other crons' messages would end in the DLQ, unprocessed. Only a queue without a DLQ takes
    a filtered worker safely.
    """
    if not crons:
        return
    limit = queue.max_receive_count()
    if limit is None:
        return
    raise UsageError(
        f"--cron cannot be used on queue {queue.name}: it moves a message to its DLQ after "
        f"{limit} receives (maxReceiveCount), and every receive counts, also one whose "
        "message the worker releases because it belongs to another cron, so a filtered "
        "worker would dead-letter the other crons' messages. Use one queue per cron, or run "
        "the worker without --cron",
        code=ErrorCode.USAGE,
    )


def _parse(
    message: ReceivedMessage, known_crons: frozenset[str]
) -> tuple[Envelope | None, str | None]:
    """The envelope (when the body is one) and the reason it cannot be processed, if any."""
    try:
        envelope = Envelope.from_body(message.body)
    except EnvelopeError as exc:
        return None, str(exc)
    if envelope.cron not in known_crons:
        return envelope, f"unknown cron {envelope.cron!r}"
    return envelope, None


def _envelope_fields(envelope: Envelope | None) -> dict[str, Any]:
    if envelope is None:
        return {}
    return {"cron": envelope.cron, "run_id": envelope.run_id, "key": envelope.key}


def log_stats(stats: WorkerStats) -> None:
    """The default progress report: one RAAS_WORKER_STATS event."""
    event(InfoCode.WORKER_STATS, "worker progress", **stats.fields())


# ---------------------------------------------------------------- wiring and run progress

EMBEDDED_WAIT_TIME_S = 1.0  # the SQLite queue's long poll: idle waiting costs nothing there


def worker_options(env: EnvironmentConfig, **overrides: Any) -> WorkerOptions:
    """Options from the environment's config (concurrency, rate_limit, the queue's visibility
    timeout and long poll), overridden by whatever the caller passes that is not None."""
    queue = env.queue
    base: dict[str, Any] = {
        "concurrency": env.concurrency,
        "rate_per_s": env.rate_limit,
        "visibility_timeout_s": queue.visibility_timeout_s,
        "wait_time_s": queue.wait_time_s if queue.kind == "sqs" else EMBEDDED_WAIT_TIME_S,
    }
    base.update({name: value for name, value in overrides.items() if value is not None})
    return WorkerOptions(**base)


@contextmanager
def open_worker(
    runtime: Runtime,
    options: WorkerOptions,
    *,
    on_stats: Callable[[WorkerStats], None] | None = None,
) -> Iterator[Worker]:
    """A worker on the environment's queue, state and sink, closed afterwards."""
    queue = runtime.queue()
    state = sink = None
    try:
        state = runtime.state()
        sink = runtime.sink()
        yield Worker(queue, state, sink, options, on_stats=on_stats)
    finally:
        for resource in (sink, state, queue):
            if resource is not None:
                resource.close()


def run_progress(run: RunRecord, now: datetime) -> dict[str, Any]:
    """A run's counters with its rate (messages accounted for per hour since the first was
    processed) and, while it runs, the time left at that rate."""
    per_hour = None
    eta_s = None
    if run.started_at is not None:
        end = run.finished_at or now
        elapsed = (end - run.started_at).total_seconds()
        if elapsed > 0 and run.done:
            per_hour = run.done / elapsed * 3600
            if run.finished_at is None and run.total is not None:
                eta_s = max(0, run.total - run.done) / per_hour * 3600
    return {
        "run_id": run.run_id,
        "cron": run.cron,
        "env": run.env,
        "mock": run.mock,
        "status": run.status,
        "total": run.total,
        "done": run.done,
        "succeeded": run.succeeded,
        "failed": run.failed,
        "dead_lettered": run.dead_lettered,
        "retries": run.retries,
        "entries": run.entries,
        "enqueued": run.enqueued,
        "invalid": run.invalid,
        "duplicates": run.duplicates,
        "per_hour": None if per_hour is None else round(per_hour, 1),
        "eta_s": None if eta_s is None else round(eta_s),
        "created_at": run.created_at.isoformat(),
        "started_at": None if run.started_at is None else run.started_at.isoformat(),
        "finished_at": None if run.finished_at is None else run.finished_at.isoformat(),
        "error": run.error,
    }
