"""The runs this worker has served: counting their messages and completing them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from raasctl.codes import ErrorCode
from raasctl.errors import StateError
from raasctl.logs import event
from raasctl.runs import finish_if_complete, reconcile
from raasctl.state.base import EntryStatus, RunRecord, State
from raasctl.worker.decision import Outcome
from raasctl.worker.messages import Settled

# The entry status each counted outcome records (a retry records none: it comes back).
_STATUS = {
    outcome: EntryStatus(outcome.value) for outcome in Outcome if outcome is not Outcome.RETRY
}


class RunsServed:
    """Runs whose messages this worker received. A run completes when its counters reach its
    total (`count`), or, when the total became known (enqueueing finished) after its last
    message was counted, at the next `complete_open` (the queue ran empty, a periodic check,
    the end)."""

    def __init__(
        self, state: State, now: Callable[[], datetime], *, env: str | None = None
    ) -> None:
        self.state = state
        self.env = env  # the environment whose open runs `reconcile` closes (None: all)
        self._now = now
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._finished: set[str] = set()

    def saw(self, *run_ids: str) -> None:
        with self._lock:
            self._seen.update(run_ids)

    def count(self, run_id: str, items: list[Settled]) -> RunRecord | None:
        """Record a batch's outcomes in the run, with the idempotency records and versions of
        the entries applied (retries add to its retry counter); the run after that (None:
        unknown), for `finish` once the write has committed."""
        now = self._now()
        outcomes = {item.key: _STATUS[item.outcome] for item in items if item.outcome in _STATUS}
        retries = len(items) - len(outcomes)
        applied = [item.applied for item in items if item.applied is not None]
        run = None
        if outcomes:
            run = self.state.record_outcomes(run_id, outcomes, now, applied=applied)
            if run is None:
                # A message whose run record is gone (or was never made): nothing to count.
                event(
                    ErrorCode.RUN_NOT_FOUND,
                    f"message of unknown run {run_id}",
                    run_id=run_id,
                    level=logging.DEBUG,
                )
                return None
        if retries:
            try:
                run = self.state.add_counts(run_id, retries=retries, now=now)
            except StateError as exc:
                if exc.code is not ErrorCode.RUN_NOT_FOUND:
                    raise
                return None
        return run

    def finish(self, run: RunRecord) -> None:
        """Complete the run if its last message was counted."""
        if finish_if_complete(self.state, run, self._now()):
            with self._lock:
                self._finished.add(run.run_id)

    def reconcile(self) -> None:
        """The queue is empty: close every open run of the environment that nothing more
        will arrive for (raasctl/runs.py `reconcile`), not only the runs this worker saw."""
        for run in reconcile(self.state, self._now(), env=self.env):
            with self._lock:
                self._finished.add(run.run_id)

    def complete_open(self) -> None:
        with self._lock:
            run_ids = sorted(self._seen - self._finished)
        for run in self.records(run_ids):
            self.finish(run)

    def records(self, run_ids: list[str] | None = None) -> list[RunRecord]:
        """The records of these runs (default: every run seen) that still exist."""
        if run_ids is None:
            with self._lock:
                run_ids = sorted(self._seen)
        runs = []
        for run_id in run_ids:
            run = self.state.get_run(run_id)
            if run is not None:
                runs.append(run)
        return runs
