"""The coordination port beside State: the worker registry and the global rate schedule.

Both live in the environment's state store (the SQLite file, the DynamoDB table), reached
through `State.workers()`, so every worker of an environment shares them without a service
of its own. Two roles, one small port, because both are a few conditional writes on the
same store:

- the registry: each worker's record (who, where, since when, how much), refreshed by its
  housekeeper and removed on a clean stop; a record not refreshed for three intervals is
  stale (raasctl/workers_registry.py);
- the rate schedule: one GCRA "theoretical arrival time" per environment. `lease_slots`
  moves it on by `count` slots atomically and hands the caller those slots
  (raasctl/globalrate.py spends them).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class WorkerRecord:
    worker_id: str
    env: str
    host: str
    pid: int
    crons: tuple[str, ...]  # empty: every cron
    started_at: datetime
    refreshed_at: datetime
    processed: int = 0
    per_second: float = 0.0  # messages processed per second since the previous refresh
    rate_scope: str = "process"
    rate_limit: float | None = None
    refresh_s: float = 10.0  # how often it refreshes its record (stale after three missed)


@dataclass(frozen=True)
class Lease:
    """`count` start slots `interval_s` apart from `first_s` (seconds since the epoch, as
    the store's schedule counts them); `requests` store requests it took."""

    first_s: float
    count: int
    interval_s: float
    requests: int


class WorkerStore(ABC):
    """Errors are raised as `raasctl.errors.StateError` (exit 1)."""

    @abstractmethod
    def put_worker(self, record: WorkerRecord) -> None:
        """Write the worker's record (insert or replace)."""

    @abstractmethod
    def remove_worker(self, env: str, worker_id: str) -> None:
        """Delete the worker's record; an unknown one is no error."""

    @abstractmethod
    def list_workers(self, env: str) -> list[WorkerRecord]:
        """Every record of the environment, stale or not, oldest start first."""

    @abstractmethod
    def lease_slots(self, env: str, count: int, interval_s: float, now_s: float) -> Lease:
        """Take the next `count` slots of the environment's schedule in one atomic step: the
        first is max(the schedule's theoretical arrival time, `now_s`), and the schedule
        moves on to first + count * interval. No two leases ever share a slot, whoever asks
        and whatever their clocks say; a slot nobody starts in simply passes."""
