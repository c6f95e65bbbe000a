"""What the worker reports: its own counts (`Tally`), the final `WorkerResult` and the
progress snapshot `WorkerStats`."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

from raasctl.codes import InfoCode
from raasctl.logs import event
from raasctl.worker.decision import Outcome
from raasctl.worker.lifecycle import StopReason


@dataclass(frozen=True)
class Counts:
    succeeded: int = 0
    failed: int = 0
    dead_lettered: int = 0
    retries: int = 0
    superseded: int = 0
    # Let go unhandled: other crons' messages, the rest of a message group after one was not
    # done with, messages received but not started at a stop.
    released: int = 0
    errors: int = 0  # queue or state failures while receiving or handling (retried later)

    @property
    def processed(self) -> int:
        return self.succeeded + self.failed + self.dead_lettered + self.retries + self.superseded


class Tally:
    """This worker's counts, added to by every role."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = dict.fromkeys(Counts.__dataclass_fields__, 0)

    def add(self, name: str, count: int = 1) -> None:
        with self._lock:
            self._counts[name] += count

    def outcomes(self, outcomes: list[Outcome]) -> None:
        with self._lock:
            for outcome in outcomes:
                self._counts[outcome.value] += 1

    def snapshot(self) -> Counts:
        with self._lock:
            return Counts(**self._counts)


@dataclass(frozen=True)
class WorkerResult:
    processed: int  # messages handled: succeeded + failed + dead_lettered + retries + superseded
    succeeded: int
    failed: int
    dead_lettered: int
    retries: int
    released: int  # let go unhandled (see Counts)
    errors: int  # queue or state failures while receiving or handling (retried later)
    elapsed_s: float
    stopped: StopReason
    superseded: int = 0

    @classmethod
    def of(cls, counts: Counts, elapsed_s: float, stopped: StopReason) -> WorkerResult:
        return cls(
            processed=counts.processed,
            succeeded=counts.succeeded,
            failed=counts.failed,
            dead_lettered=counts.dead_lettered,
            retries=counts.retries,
            released=counts.released,
            errors=counts.errors,
            elapsed_s=elapsed_s,
            stopped=stopped,
            superseded=counts.superseded,
        )

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
            "superseded": self.superseded,
            "elapsed_s": round(self.elapsed_s, 3),
            "per_second": round(self.per_hour / 3600, 3),
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
    idle: bool = False  # the queue is empty and the worker waits for messages
    # Receives come back empty while this many messages are in flight in other workers'
    # hands; visible again within about this long if their holder stopped (worker/elsewhere.py).
    in_flight_elsewhere: int = 0
    visible_again_s: float | None = None

    def waiting_elsewhere(self) -> str | None:
        """While this worker holds nothing and waits on messages other workers hold:
        "10 in flight elsewhere, visible again in about 42 s"."""
        if not self.in_flight_elsewhere or self.in_flight or self.visible_again_s is None:
            return None
        return (
            f"{self.in_flight_elsewhere} in flight elsewhere, visible again in about "
            f"{math.ceil(self.visible_again_s)} s"
        )

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
            "idle": self.idle,
            "in_flight_elsewhere": self.in_flight_elsewhere,
            "visible_again_s": None
            if self.visible_again_s is None
            else round(self.visible_again_s),
        }


def log_stats(stats: WorkerStats) -> None:
    """The default progress report: one RAAS_WORKER_STATS event."""
    waiting = stats.waiting_elsewhere()
    message = "worker progress" if waiting is None else f"worker progress: {waiting}"
    event(InfoCode.WORKER_STATS, message, **stats.fields())
