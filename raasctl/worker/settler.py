"""The settler: deletes handled messages and counts them in their runs, in batches (one
DeleteMessageBatch for up to ten messages and one counter update per run, instead of a call
each per message).

Counting comes first: each entry's outcome is recorded in State with its run's counters
(`State.record_outcomes`), so recording it again after a crash, a failed delete or a
redelivery changes nothing, and no count is lost between the two. When the queue and the
state share a store that allows it (the embedded SQLite file, `State.writes_with`), the
counts and the deletes of a batch commit in one transaction: together or not at all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from raasctl.codes import ErrorCode
from raasctl.errors import RaasctlError
from raasctl.logs import event
from raasctl.queues.base import MAX_BATCH, Queue
from raasctl.state.base import RunRecord
from raasctl.worker.decision import Outcome, stops_worker, unfixable
from raasctl.worker.lifecycle import Lifecycle
from raasctl.worker.messages import Settled
from raasctl.worker.recorder import Recorder
from raasctl.worker.results import Tally
from raasctl.worker.served import RunsServed

# How long a handled message may wait for others to share its delete batch and count update:
# long enough that a busy queue's batches fill (ten at 40 messages a second and up), short
# enough that progress and run completion show without a noticeable lag. Under a rate limit,
# the time the rate takes to fill a batch, up to a second.
SETTLE_INTERVAL_S = 0.25
MAX_SETTLE_INTERVAL_S = 1.0
# A message whose visibility ends sooner than this is settled at once: once handled, the
# heartbeat no longer extends it, and another receiver could take it before its delete.
URGENT_S = 5.0


@dataclass
class Written:
    """A batch counted and deleted in a transaction not yet committed: the runs counted (to
    complete once it has), and the ids of those that could not be (their messages stay)."""

    batch: list[Settled]
    runs: list[RunRecord]
    uncounted: set[str | None]


def settle_interval_s(rate_per_s: float | None) -> float:
    """How long the settler gathers a batch, for a worker at this rate limit."""
    if rate_per_s is None:
        return SETTLE_INTERVAL_S
    return max(SETTLE_INTERVAL_S, min(MAX_SETTLE_INTERVAL_S, MAX_BATCH / rate_per_s))


class Settler:
    def __init__(
        self,
        queue: Queue,
        runs: RunsServed,
        tally: Tally,
        lifecycle: Lifecycle,
        clock: Callable[[], float],
        interval_s: float = SETTLE_INTERVAL_S,
        recorder: Recorder | None = None,
    ) -> None:
        self.recorder = recorder or Recorder()  # run statistics and metrics
        self.interval_s = interval_s
        self.queue = queue
        self.runs = runs
        self.tally = tally
        self.lifecycle = lifecycle
        self._clock = clock
        self._ready = threading.Condition()
        self._batch: list[Settled] = []
        self._stopping = False
        self._urgent = False
        self._flushing = False  # a batch taken from `_batch` is being counted and deleted
        self._errors_in_a_row = 0  # counting writes that failed since the last success
        self.failing: RaasctlError | None = None  # the last counting failed with this
        self._thread = threading.Thread(target=self._run, name="raasctl-settler", daemon=True)
        # One transaction for a batch's counts and deletes, where the stores allow it.
        self._together: Callable[[], AbstractContextManager[None]] = (
            runs.state.writes_with(queue) or nullcontext
        )

    def start(self) -> None:
        self._thread.start()

    def settle(self, *items: Settled) -> None:
        """Hand over handled messages (each one's delete, when it has a receipt handle, and
        its count): one, or a batch's at once (one lock for them all)."""
        now = self._clock()
        urgent = any(item.visible_until - now < URGENT_S for item in items)
        with self._ready:
            before = len(self._batch)
            self._batch.extend(items)
            self._urgent = self._urgent or urgent
            # Wake the settler for the first item (it starts gathering) and when a full
            # batch is there.
            if before == 0 or before < MAX_BATCH <= len(self._batch) or urgent:
                self._ready.notify_all()

    def flush_pending(self, timeout_s: float = 10.0) -> None:
        """Count what was handed over so far, now, and wait for it: the queue ran empty, and
        a reconcile must see every outcome this worker holds (or it would take an outcome
        still gathering here for a message that never arrived)."""
        deadline = time.monotonic() + timeout_s  # real time, whatever clock a test injects
        with self._ready:
            self._urgent = True
            self._ready.notify_all()
            while (self._batch or self._flushing) and self._thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._ready.wait(min(left, 0.5))

    def stop(self, timeout_s: float) -> None:
        """Settle what is left, then end."""
        with self._ready:
            self._stopping = True
            self._ready.notify_all()
        self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        try:
            self._settle_until_stopped()
        except BaseException as exc:  # a defect: end the worker cleanly, never a dead thread
            self.lifecycle.fail(exc)

    def _settle_until_stopped(self) -> None:
        while True:
            with self._ready:
                if not self._batch and not self._stopping:
                    self._ready.wait()
                if len(self._batch) < MAX_BATCH and not (self._stopping or self._urgent):
                    self._ready.wait(self.interval_s)  # let a batch gather
                batch, self._batch = _full_requests(self._batch, self._stopping or self._urgent)
                self._urgent = False
                stopping = self._stopping
                self._flushing = bool(batch)
            if batch:
                try:
                    self._flush(batch)
                finally:
                    with self._ready:
                        self._flushing = False
                        self._ready.notify_all()  # wakes `flush_pending`
            elif stopping:
                return

    def joins_writes(self) -> bool:
        """Whether a batch's counts and deletes commit in one transaction (`together`) that
        other writes to the same file may join (the embedded queue and state, one file)."""
        return self._together is not nullcontext

    def together(self) -> AbstractContextManager[None]:
        """One transaction for the block's writes to the store (or none: `joins_writes`)."""
        return self._together()

    def write(self, batch: list[Settled]) -> Written:
        """Count and delete `batch` now, in the caller's transaction (`together`); the caller
        hands the result to `committed` once that has committed. Errors are handled here,
        as in the settler's own batches."""
        self._warn_lapsed(batch)
        runs, uncounted = self._count(batch)
        self._delete(
            [
                item.receipt_handle
                for item in batch
                if item.receipt_handle and item.run_id not in uncounted
            ]
        )
        return Written(batch, runs, uncounted)

    def committed(self, written: Written) -> None:
        """Tell the tally and the statistics what has committed, and complete its runs."""
        counted = [item for item in written.batch if item.run_id not in written.uncounted]
        self.tally.outcomes([item.outcome for item in counted])
        self.recorder.outcomes(counted)
        for run in written.runs:
            self.runs.finish(run)

    def _flush(self, batch: list[Settled]) -> None:
        # Counted first, then deleted: a crash between the two only repeats an outcome that
        # is recorded already. A run whose counting failed keeps its messages, which come
        # back, are found applied (or applied again, harmlessly) and are counted then.
        written = None
        try:
            with self._together():
                written = self.write(batch)
        except RaasctlError as exc:
            # The joint transaction did not commit: nothing of it was counted or deleted.
            uncounted = set() if written is None else written.uncounted
            for run_id, items in _per_run(batch).items():
                if run_id not in uncounted:  # those failed on their own, and were reported
                    self._count_failed(run_id, items, exc)
            return
        self.committed(written)

    def _warn_lapsed(self, batch: list[Settled]) -> None:
        now = self._clock()
        lapsed = [item for item in batch if item.receipt_handle and item.visible_until <= now]
        if lapsed:
            # The queue may have given these to another receiver: the delete may do nothing
            # (it still works when nobody took them). Their outcomes count all the same, and
            # the other receiver recording the same outcome changes nothing.
            event(
                ErrorCode.QUEUE_FAILED,
                f"{len(lapsed)} handled message(s) were past their visibility timeout before "
                "their delete",
                level=logging.WARNING,
                lapsed=len(lapsed),
            )
            self.tally.add("errors", len(lapsed))

    def _count(self, batch: list[Settled]) -> tuple[list[RunRecord], set[str | None]]:
        """Record each run's outcomes (one write per run); the runs counted, and the ids of
        those that could not be."""
        failed: set[str | None] = set()
        counted: list[RunRecord] = []
        for run_id, items in _per_run(batch).items():
            try:
                run = self.runs.count(run_id, items)
            except RaasctlError as exc:
                failed.add(run_id)
                self._count_failed(run_id, items, exc)
            else:
                self._errors_in_a_row = 0
                self.failing = None
                if run is not None:
                    counted.append(run)
        return counted, failed

    def _count_failed(self, run_id: str, items: list[Settled], exc: RaasctlError) -> None:
        """The run's outcomes could not be recorded: its messages are left to come back. One
        on its last allowed receive goes to the DLQ instead, so it counts as failed (as the
        handler recorded it, provisionally, before its sink call)."""
        event(exc.code, f"counting run {run_id} failed: {exc}", run_id=run_id)
        self.tally.add("errors", len(items))
        last = [item for item in items if item.last_receive]
        for item in last:
            event(
                ErrorCode.MESSAGE_FAILED,
                "its outcome could not be recorded on its last allowed receive: "
                "the queue moves it to the DLQ",
                run_id=run_id,
                key=item.key,
            )
        self.tally.outcomes([Outcome.FAILED for _ in last])
        self._errors_in_a_row += 1  # one failed write, however many messages it counted
        self.failing = exc
        if stops_worker(exc, self._errors_in_a_row):
            self.lifecycle.fail(exc)

    def _delete(self, handles: list[str]) -> bool:
        if not handles:
            return True
        try:
            self.queue.delete(handles)
        except RaasctlError as exc:
            event(exc.code, f"deleting {len(handles)} message(s) failed: {exc}")
            self.tally.add("errors", len(handles))
            if unfixable(exc):
                self.lifecycle.fail(exc)
            return False
        return True


def _full_requests(batch: list[Settled], now: bool) -> tuple[list[Settled], list[Settled]]:
    """What to settle now, and what waits for the next batch: past ten, only whole tens, so
    a busy queue's delete requests stay full; the rest joins the next batch (gathered for
    one more interval at most). Everything when `now` (stopping, or urgent)."""
    keep = 0 if now or len(batch) <= MAX_BATCH else len(batch) % MAX_BATCH
    cut = len(batch) - keep
    return batch[:cut], batch[cut:]


def _per_run(batch: list[Settled]) -> dict[str, list[Settled]]:
    """The batch's items of each run (items of no run are counted in none)."""
    per_run: dict[str, list[Settled]] = {}
    for item in batch:
        if item.run_id is not None:
            per_run.setdefault(item.run_id, []).append(item)
    return per_run
