"""Housekeeping: the heartbeat that keeps held messages invisible, the progress reports,
--max-runtime, and the periodic check that completes runs whose total arrived late."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable

from raasctl.errors import RaasctlError
from raasctl.logs import event
from raasctl.queues.base import Queue
from raasctl.worker.elsewhere import Elsewhere
from raasctl.worker.lifecycle import Lifecycle, StopReason
from raasctl.worker.results import Tally, WorkerStats
from raasctl.worker.served import RunsServed
from raasctl.worker.slots import SlotPool
from raasctl.workers_registry import Presence

# How often the runs this worker served are checked for completion, for a run whose total
# became known (enqueueing finished) after its last message was counted.
COMPLETION_CHECK_S = 5.0


class Progress:
    """Progress snapshots: this worker's counts and the runs it has served (all workers')."""

    def __init__(
        self,
        tally: Tally,
        pool: SlotPool,
        runs: RunsServed,
        elapsed: Callable[[], float],
        idle: Callable[[], bool] = lambda: False,
        elsewhere: Callable[[], Elsewhere | None] = lambda: None,
    ) -> None:
        self.elsewhere = elsewhere
        self.tally = tally
        self.pool = pool
        self.runs = runs
        self.elapsed = elapsed
        self.idle = idle

    def stats(self) -> WorkerStats:
        counts = self.tally.snapshot()
        in_flight = self.pool.in_flight()
        elapsed = self.elapsed()
        per_hour = counts.processed / elapsed * 3600 if elapsed > 0 else 0.0
        done, total = 0, None
        for run in self.runs.records():
            done += run.done
            if run.total is not None:
                total = (total or 0) + run.total
        eta = None
        completing = counts.succeeded + counts.failed + counts.dead_lettered
        if total is not None and completing > 0 and elapsed > 0:
            eta = max(0, total - done) / (completing / elapsed)
        elsewhere = self.elsewhere()
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
            idle=self.idle(),
            in_flight_elsewhere=0 if elsewhere is None else elsewhere.count,
            visible_again_s=None if elsewhere is None else elsewhere.visible_in_s,
        )


class Housekeeper:
    """One thread, ticking often enough for the heartbeat, the stats interval and
    --max-runtime; each tick costs a few lock operations."""

    def __init__(
        self,
        queue: Queue,
        pool: SlotPool,
        runs: RunsServed,
        lifecycle: Lifecycle,
        progress: Progress,
        on_stats: Callable[[WorkerStats], None],
        *,
        visibility_timeout_s: int,
        stats_interval_s: float | None,
        time_left: Callable[[], float],
        clock: Callable[[], float],
        presence: Presence | None = None,
    ) -> None:
        self.presence = presence  # this worker's registry record, refreshed from here
        self.queue = queue
        self.pool = pool
        self.runs = runs
        self.lifecycle = lifecycle
        self.progress = progress
        self.on_stats = on_stats
        self.visibility_timeout_s = visibility_timeout_s
        self.stats_interval_s = stats_interval_s
        self.time_left = time_left
        self._clock = clock
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="raasctl-housekeeping", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()

    def _run(self) -> None:
        try:
            self._tick_until_stopped()
        except BaseException as exc:  # a defect: end the worker cleanly, never a dead thread
            self.lifecycle.fail(exc)

    def _tick_until_stopped(self) -> None:
        visibility = self.visibility_timeout_s
        stats_every = self.stats_interval_s or math.inf
        tick = max(0.05, min(0.25, visibility / 6, stats_every))
        next_stats = self._clock() + stats_every
        next_completion = self._clock() + COMPLETION_CHECK_S
        while not self._done.wait(tick):
            now = self._clock()
            self._heartbeat(now, visibility)
            if self.time_left() <= 0:
                self.lifecycle.stop(StopReason.MAX_RUNTIME)
            if self.presence is not None:
                self.presence.tick(now)
            try:
                if now >= next_completion:
                    next_completion = now + COMPLETION_CHECK_S
                    self.runs.complete_open()
                if now >= next_stats:
                    next_stats = now + stats_every
                    self.on_stats(self.progress.stats())
            except RaasctlError as exc:
                event(exc.code, f"reading run progress failed: {exc}", level=logging.WARNING)

    def _heartbeat(self, now: float, visibility: int) -> None:
        """Extend every held message a third of the way into its visibility, so a slow handler
        never lets it reappear to another worker."""
        due = [held for held in self.pool.held() if now - held.extended_at >= visibility / 3]
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
