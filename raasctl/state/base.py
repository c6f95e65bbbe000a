"""The state port: run records with counters, idempotency records and run locks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    cron: str
    env: str
    mock: bool
    created_at: datetime
    # Producer side: report entries read, messages accepted, entries rejected, duplicates.
    entries: int = 0
    enqueued: int = 0
    invalid: int = 0
    duplicates: int = 0
    total: int | None = None  # the run's number of messages; None until enqueueing finished
    # Worker side. succeeded + failed + dead_lettered reaching total completes the run.
    succeeded: int = 0
    failed: int = 0  # retries exhausted: the queue's redrive policy moves it to the DLQ
    dead_lettered: int = 0  # permanent failure: sent to the DLQ at once
    retries: int = 0  # retryable failures that were given another attempt
    started_at: datetime | None = None  # first message processed
    finished_at: datetime | None = None  # all messages accounted for
    error: str | None = None  # why enqueueing stopped early (the total is what got through)

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.dead_lettered

    @property
    def status(self) -> str:
        if self.finished_at is not None:
            return "failed" if self.failed or self.dead_lettered or self.error else "complete"
        return "enqueueing" if self.total is None else "running"


class State(ABC):
    """Errors are raised as `raasctl.errors.StateError` (exit 1)."""

    @abstractmethod
    def create_run(self, run: RunRecord) -> None: ...

    @abstractmethod
    def finish_enqueue(
        self,
        run_id: str,
        *,
        entries: int,
        enqueued: int,
        invalid: int,
        duplicates: int,
        error: str | None = None,
    ) -> RunRecord:
        """Record the producer's counts; the run's total becomes `enqueued`. `error` says why
        enqueueing stopped early: the run still completes once what got through is handled,
        and then shows as failed."""

    @abstractmethod
    def add_counts(
        self,
        run_id: str,
        *,
        succeeded: int = 0,
        failed: int = 0,
        dead_lettered: int = 0,
        retries: int = 0,
        now: datetime | None = None,
    ) -> RunRecord:
        """Atomically add to the counters (sets started_at on the first one) and return the
        record after the update."""

    @abstractmethod
    def mark_finished(self, run_id: str, now: datetime) -> bool:
        """Set finished_at once; True only for the caller that set it (so RAAS_RUN_COMPLETE is
        logged once however many workers see the last message)."""

    @abstractmethod
    def get_run(self, run_id: str) -> RunRecord | None: ...

    @abstractmethod
    def list_runs(self, *, limit: int = 20, cron: str | None = None) -> list[RunRecord]:
        """Newest first."""

    @abstractmethod
    def is_applied(self, key: str) -> bool: ...

    def applied_keys(self, keys: Sequence[str]) -> set[str]:
        """Which of these keys were applied already (adapters may batch the lookups)."""
        return {key for key in keys if self.is_applied(key)}

    @abstractmethod
    def record_applied(self, key: str, run_id: str, now: datetime) -> bool:
        """Write the idempotency record after a successful apply; False if it existed."""

    @abstractmethod
    def acquire_lock(self, name: str, owner: str, ttl_s: int, now: datetime) -> bool:
        """Take a named lock unless another owner holds an unexpired one."""

    @abstractmethod
    def release_lock(self, name: str, owner: str) -> None: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
