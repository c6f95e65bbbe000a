"""The settler: deletes handled messages and counts them in their runs, in batches (one
DeleteMessageBatch for up to ten messages and one counter update per run, instead of a call
each per message).

Counting comes first: each entry's outcome is recorded in State with its run's counters
(`State.record_outcomes`), so recording it again after a crash, a failed delete or a
redelivery changes nothing, and no count is lost between the two.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from raasctl.codes import ErrorCode
from raasctl.errors import RaasctlError
from raasctl.logs import event
from raasctl.queues.base import MAX_BATCH, Queue
from raasctl.worker.decision import unfixable
from raasctl.worker.lifecycle import Lifecycle
from raasctl.worker.messages import Settled
from raasctl.worker.recorder import Recorder
from raasctl.worker.results import Tally
from raasctl.worker.served import RunsServed

# How long a handled message may wait for others to share its delete batch and count update.
SETTLE_INTERVAL_S = 0.05


class Settler:
    def __init__(
        self,
        queue: Queue,
        runs: RunsServed,
        tally: Tally,
        lifecycle: Lifecycle,
        clock: Callable[[], float],
        recorder: Recorder | None = None,
    ) -> None:
        self.recorder = recorder or Recorder()  # run statistics and metrics
        self.queue = queue
        self.runs = runs
        self.tally = tally
        self.lifecycle = lifecycle
        self._clock = clock
        self._ready = threading.Condition()
        self._batch: list[Settled] = []
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="raasctl-settler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def settle(self, item: Settled) -> None:
        """Hand over a handled message (its delete, when it has a receipt handle, and its
        count)."""
        with self._ready:
            self._batch.append(item)
            if len(self._batch) in (1, MAX_BATCH):
                self._ready.notify()

    def stop(self, timeout_s: float) -> None:
        """Settle what is left, then end."""
        with self._ready:
            self._stopping = True
            self._ready.notify()
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
                if len(self._batch) < MAX_BATCH and not self._stopping:
                    self._ready.wait(SETTLE_INTERVAL_S)  # let a batch gather
                batch, self._batch = self._batch, []
                stopping = self._stopping
            if batch:
                self._flush(batch)
            elif stopping:
                return

    def _flush(self, batch: list[Settled]) -> None:
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
        self.tally.outcomes([item.outcome for item in batch])
        self.recorder.outcomes(batch)
        # Counted first, then deleted: a crash between the two only repeats an outcome that
        # is recorded already. A run whose counting failed keeps its messages, which come
        # back, are found applied and are counted then.
        uncounted = self._count(batch)
        self._delete(
            [
                item.receipt_handle
                for item in batch
                if item.receipt_handle and item.run_id not in uncounted
            ]
        )

    def _count(self, batch: list[Settled]) -> set[str | None]:
        """Record each run's outcomes (one write per run); the runs that could not be."""
        per_run: dict[str, list[Settled]] = {}
        for item in batch:
            if item.run_id is not None:
                per_run.setdefault(item.run_id, []).append(item)
        failed: set[str | None] = set()
        for run_id, items in per_run.items():
            try:
                self.runs.count(run_id, items)
            except RaasctlError as exc:
                event(exc.code, f"counting run {run_id} failed: {exc}", run_id=run_id)
                failed.add(run_id)
        return failed

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
