"""The worker: drains the queue into the sink at the rate the downstream allows.

Receiving is separate from processing (DESIGN.md "Worker semantics"). The roles, one module
each, around one pure decision table (`decision`):

- the poller (`poller`, on the thread that calls `Worker.run`) takes rate-limit tokens,
  receives and hands messages to the slots;
- the slot pool (`slots`) handles them, `concurrency` at a time, a FIFO group's in order,
  carrying out each message's verdict (`handler`);
- the settler (`settler`) deletes handled messages and counts them in their runs, in batches;
- the housekeeper (`heartbeat`) extends the visibility of every message held, reports
  progress and enforces --max-runtime.

Stop and failure state is one `Lifecycle`. Threads suit the work: every handler waits on I/O
(an HTTP call, SQLite, DynamoDB).

`--cron` on a queue that counts receives toward a DLQ: releasing other crons' messages would
use up their receives and dead-letter them, so `crons` is refused there (`UsageError`); see
`check_cron_filter`.

Exactly-once effect: the sink applies a key at most once itself (ledger UNIQUE key, HTTP
Idempotency-Key), so a crash anywhere (after the sink, before the idempotency record) only
repeats a harmless apply.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from raasctl.codes import ErrorCode, InfoCode
from raasctl.config import CRON_NAMES
from raasctl.errors import RaasctlError, RuntimeFailure, UsageError
from raasctl.globalrate import log_limiter, rate_limiter
from raasctl.logs import event
from raasctl.queues.base import MAX_BATCH, Queue
from raasctl.ratelimit import RateLimiter
from raasctl.sinks.base import Sink
from raasctl.state.base import State
from raasctl.state.workers import WorkerStore
from raasctl.worker.decision import Backoff
from raasctl.worker.elsewhere import ElsewhereWatch
from raasctl.worker.handler import Handler
from raasctl.worker.heartbeat import Housekeeper, Progress
from raasctl.worker.lifecycle import Lifecycle, StopReason
from raasctl.worker.options import WorkerOptions
from raasctl.worker.poller import Poller
from raasctl.worker.recorder import Recorder, open_recorder
from raasctl.worker.releaser import ReceiveLimit, Releaser
from raasctl.worker.results import Tally, WorkerResult, WorkerStats, log_stats
from raasctl.worker.served import RunsServed
from raasctl.worker.settler import Settler, settle_interval_s
from raasctl.worker.slots import SlotPool
from raasctl.workers_registry import Presence

if TYPE_CHECKING:
    from raasctl.runtime import Runtime


# Batches handled at once where they all write to one SQLite file (`SlotPool.batches_at_once`).
EMBEDDED_BATCHES_AT_ONCE = 2


class Worker:
    """`run()` blocks until a stop condition; `stop()` may be called from a signal handler or
    another thread. Clocks, the rate limiter and the progress callback are injectable; `env`
    names the environment whose open runs are reconciled when the queue runs empty (None:
    every open run in `state`)."""

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
        env: str | None = None,
        recorder: Recorder | None = None,
        registry: WorkerStore | None = None,
    ) -> None:
        # The worker registry's record of this worker (None: not registered).
        self.presence = (
            None
            if registry is None or env is None
            else Presence(
                registry,
                env,
                crons=options.crons,
                rate_scope=options.rate_scope,
                rate_limit=options.rate_per_s,
                processed=lambda: self.tally.snapshot().processed,
                clock=clock,
                now=now,
                refresh_s=options.registry_refresh_s,
            )
        )
        self.elsewhere = ElsewhereWatch(options.visibility_timeout_s, clock)
        self.queue = queue
        # Per-second run statistics and Prometheus metrics (raasctl/worker/recorder.py).
        self.recorder = recorder or Recorder()
        self.options = options
        self.limiter = limiter or RateLimiter(options.rate_per_s, clock=clock)
        self._clock = clock
        self._started = clock()
        self.lifecycle = Lifecycle()
        self.tally = Tally()
        self.runs = RunsServed(state, now, env=env)
        limit = ReceiveLimit()
        self.settler = Settler(
            queue,
            self.runs,
            self.tally,
            self.lifecycle,
            clock,
            interval_s=settle_interval_s(options.rate_per_s),
            recorder=self.recorder,
        )
        self.releaser = Releaser(queue, self.lifecycle, self.tally, limit, self.settler.settle)
        self.handler = Handler(
            queue=queue,
            state=state,
            sink=sink,
            limiter=self.limiter,
            lifecycle=self.lifecycle,
            tally=self.tally,
            limit=limit,
            releaser=self.releaser,
            settle=self.settler.settle,
            backoff=Backoff(options.backoff_base_s, options.backoff_cap_s),
            visibility_timeout_s=options.visibility_timeout_s,
            now=now,
            recorder=self.recorder,
        )
        self.pool = SlotPool(
            options.concurrency,
            handler=self.handler,
            releaser=self.releaser,
            limiter=self.limiter,
            lifecycle=self.lifecycle,
            clock=clock,
            read_ahead=options.held_ahead,
        )
        self.recorder.watch_in_flight(self.pool.in_flight)
        # The poller is made below; its idle flag is read only once the worker runs.
        self.progress = Progress(
            self.tally,
            self.pool,
            self.runs,
            self._elapsed,
            idle=lambda: self.poller.idle,
            elsewhere=self.elsewhere.current,
        )
        self.housekeeper = Housekeeper(
            queue,
            self.pool,
            self.runs,
            self.lifecycle,
            self.progress,
            on_stats or log_stats,
            visibility_timeout_s=options.visibility_timeout_s,
            stats_interval_s=options.stats_interval_s,
            time_left=self._time_left,
            clock=clock,
            presence=self.presence,
        )
        self.poller = Poller(
            queue,
            state,
            options,
            known_crons=frozenset(known_crons),
            limiter=self.limiter,
            pool=self.pool,
            releaser=self.releaser,
            runs=self.runs,
            lifecycle=self.lifecycle,
            tally=self.tally,
            limit=limit,
            time_left=self._time_left,
            clock=clock,
            batches=sink.batches,
            settle_pending=self.settler.flush_pending,
            elsewhere=self.elsewhere,
        )
        self.pool.batches = self.poller.batches
        if self.poller.batches:
            self.handler.joined = self.settler  # a batch's apply may share its transaction
            if self.settler.joins_writes():
                # The batches' transactions on the one file take turns: beyond one writing
                # and one being made ready, more at once only add threads that contend for
                # the interpreter (c1 of benchmarks/worker_throughput.py).
                self.pool.batches_at_once = min(options.concurrency, EMBEDDED_BATCHES_AT_ONCE)
        self.pool.batch_size = queue.max_receive
        if options.read_ahead is None:
            # Slots that finish together want their next messages at once, while each
            # receive beyond the first may still be on its way: a batch more for each.
            self.pool.read_ahead += (self.poller.receivers - 1) * MAX_BATCH

    # ---------------------------------------------------------------- public

    def stop(self, reason: StopReason = StopReason.SIGNAL) -> None:
        """Stop receiving; in-flight work finishes. A signal also releases messages that were
        received but not started."""
        self.lifecycle.stop(reason)

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
        if self.presence is not None:
            self.presence.register()
        # Start order: the consumers of work before its producer.
        self.settler.start()
        self.recorder.start()
        self.pool.start()
        self.housekeeper.start()
        try:
            self.poller.run()
        except BaseException as exc:
            self.lifecycle.fail(exc)
        finally:
            self._shut_down()
        self._fail_if_services_were_failing()
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
        fatal = self.lifecycle.fatal
        if isinstance(fatal, RaasctlError):
            raise fatal
        if fatal is not None:
            # A defect, not an expected failure: one line and exit 1 all the same (the
            # traceback with -v); held messages were released by the shutdown.
            raise RuntimeFailure(
                f"the worker stopped on an unexpected error: {type(fatal).__name__}: {fatal}",
                code=ErrorCode.WORKER_FAILED,
            ) from fatal
        return result

    def result(self) -> WorkerResult:
        return WorkerResult.of(
            self.tally.snapshot(),
            self._elapsed(),
            self.lifecycle.reason or StopReason.SIGNAL,
        )

    def stats(self) -> WorkerStats:
        return self.progress.stats()

    # ---------------------------------------------------------------- internals

    def _fail_if_services_were_failing(self) -> None:
        """A worker that stops (say at --max-runtime) while its queue or state was failing
        did not do its work: it exits 1 with that error, not 0. A signal is the operator's
        own stop and keeps its exit."""
        failing = self.poller.failing or self.handler.failing or self.settler.failing
        if failing is not None and self.lifecycle.reason is not StopReason.SIGNAL:
            self.lifecycle.fail(failing)

    def _elapsed(self) -> float:
        return self._clock() - self._started

    def _time_left(self) -> float:
        limit = self.options.max_runtime_s
        return float("inf") if limit is None else limit - self._elapsed()

    def _shut_down(self) -> None:
        """The stop order: (1) receiving has stopped (the poller returned); (2) messages a
        stop held back are released, and at a signal those read ahead and not started;
        (3) in-flight work finishes within the shutdown timeout, the heartbeat still
        covering it; (4) the heartbeat and (5) the slots end; (6) the settler deletes and
        counts what is left; (7) runs whose total arrived late are completed."""
        lifecycle = self.lifecycle
        lifecycle.stopping.set()
        self.releaser.polling_ended()
        if lifecycle.abandoning.is_set():
            self.pool.release_waiting("a stop came before it started")
        if lifecycle.reason is not None:
            event(
                InfoCode.WORKER_STOPPING,
                "worker stopping",
                reason=str(lifecycle.reason),
                in_flight=self.pool.in_flight(),
            )
        abandoned = self.pool.wait_until_idle(self.options.shutdown_timeout_s)
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
        self.housekeeper.stop()
        self.pool.stop(join=not abandoned)
        self.settler.stop(self.options.shutdown_timeout_s)
        self.recorder.stop()  # after the settler: its last counts are in the last rows
        try:
            self.runs.complete_open()
        except RaasctlError as exc:
            event(exc.code, f"checking run completion failed: {exc}", level=logging.WARNING)
        if self.presence is not None:
            self.presence.remove()  # last: a clean stop leaves no record behind


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


@contextmanager
def open_worker(
    runtime: Runtime,
    options: WorkerOptions,
    *,
    on_stats: Callable[[WorkerStats], None] | None = None,
) -> Iterator[Worker]:
    """A worker on the environment's queue, state and sink, closed afterwards."""
    queue = runtime.queue(wire=True)
    state = sink = None
    try:
        state = runtime.state()
        sink = runtime.sink()
        registry = state.workers()
        env = runtime.env_name
        limiter = rate_limiter(options.rate_per_s, options.rate_scope, registry, env)
        with open_recorder(state, options) as recorder:
            yield Worker(
                queue,
                state,
                sink,
                options,
                on_stats=on_stats,
                env=env,
                limiter=limiter,
                registry=registry,
                recorder=recorder,
            )
        log_limiter(limiter)
    finally:
        for resource in (sink, state, queue):
            if resource is not None:
                resource.close()
