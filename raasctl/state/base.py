"""The state port: run records with counters, idempotency records and run locks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raasctl.queues.base import Queue
    from raasctl.state.stats_base import RunStatsStore

from raasctl.state.workers import WorkerStore


class EntryStatus(StrEnum):
    """An entry's outcome in its run (the names are the run's counters)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # retries exhausted: the queue's redrive policy moves it to the DLQ
    DEAD_LETTERED = "dead_lettered"  # permanent failure: sent to the DLQ at once
    SUPERSEDED = "superseded"  # older than the version already applied for its record


# Which outcomes a new one replaces: an outcome only moves forward, so recording one twice
# never counts twice, and a redriven entry moves from failed or dead_lettered to succeeded
# (or superseded). A failed entry may still be dead-lettered (a later receive found it
# permanent). Succeeded and superseded are final.
REPLACES: Mapping[EntryStatus, frozenset[EntryStatus]] = {
    EntryStatus.SUCCEEDED: frozenset({EntryStatus.FAILED, EntryStatus.DEAD_LETTERED}),
    EntryStatus.SUPERSEDED: frozenset({EntryStatus.FAILED, EntryStatus.DEAD_LETTERED}),
    EntryStatus.DEAD_LETTERED: frozenset({EntryStatus.FAILED}),
    EntryStatus.FAILED: frozenset(),
}


def transition(old: EntryStatus | None, new: EntryStatus) -> bool:
    """Whether recording `new` over `old` (None: no outcome yet) changes anything."""
    return old is None or old in REPLACES[new]


@dataclass(frozen=True)
class Claim:
    """A producer's record that it sent an entry's key: on a queue that drops a duplicate
    silently (SQS within its deduplication window), a re-run counts the key as a duplicate
    itself instead of counting a message that will never arrive."""

    key: str
    run_id: str
    claimed_at: datetime
    sent: bool  # the queue took the message (claimed before the send, confirmed after)


@dataclass(slots=True)  # not frozen: one for every message (see ReceivedMessage)
class Entry:
    """An entry as State knows it: its key and, for a versioned record, the record."""

    key: str
    cron: str
    entity_id: str | None = None


@dataclass(frozen=True)
class Known:
    """What State knows of an entry before a worker handles it (one read for a batch)."""

    applied: bool
    applied_version: str | None  # the newest version applied for its record, if any


# The answers without a version, made once: most entries of a batch share one.
_UNVERSIONED = {applied: Known(applied, None) for applied in (False, True)}


def known_of(applied: bool, applied_version: str | None) -> Known:
    """Known(applied, applied_version), shared when there is no version (it is immutable)."""
    if applied_version is None:
        return _UNVERSIONED[applied]
    return Known(applied, applied_version)


@dataclass(slots=True)  # not frozen: one for every message (see ReceivedMessage)
class AppliedEntry:
    """An entry the sink has applied: its idempotency record and, for a versioned record,
    the version to keep as the record's applied one."""

    key: str
    run_id: str
    cron: str
    entity_id: str | None = None
    version: str | None = None
    # The sink wrote the idempotency record in this state itself, in the apply's own
    # transaction (`Sink.records_applied_in`): only the version is left to write.
    recorded: bool = False


@dataclass(frozen=True)
class LockInfo:
    name: str
    owner: str  # the run that holds it
    holder: str  # "host:pid" of the process that holds it ("" when unknown)
    expires_at: datetime


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
    superseded: int = 0  # older than the version already applied for their record
    purged: int = 0  # removed by a queue purge before they were handled
    started_at: datetime | None = None  # first message processed
    finished_at: datetime | None = None  # all messages accounted for
    error: str | None = None  # why enqueueing stopped early (the total is what got through)
    abandoned: bool = False  # its producer died mid-enqueue: the total is what got through

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.dead_lettered + self.superseded + self.purged

    @property
    def status(self) -> str:
        """enqueueing, running, or a terminal state: abandoned, purged, failed (some entries
        failed or were dead-lettered, or enqueueing stopped early) or complete. Derived from
        the counters, so a redrive that applies a failed entry turns `failed` into
        `complete`."""
        if self.finished_at is None:
            return "enqueueing" if self.total is None else "running"
        if self.abandoned:
            return "abandoned"
        if self.purged:
            return "purged"
        return "failed" if self.failed or self.dead_lettered or self.error else "complete"


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
    def record_outcomes(
        self,
        run_id: str,
        outcomes: Mapping[str, EntryStatus],
        now: datetime,
        *,
        applied: Sequence[AppliedEntry] = (),
    ) -> RunRecord | None:
        """Record each entry's outcome (entry key -> status), atomically with the run's
        counters: a first outcome adds one to its counter; one that replaces another
        (`transition`) moves one from the old counter to the new; any other changes nothing,
        so recording an outcome twice never counts twice. Sets started_at on the first.

        `applied` are the entries the sink applied, whose idempotency records (kept if there
        already) and versions (kept unless a newer one is there) are written in the same
        write, before the outcomes count them: one write for a worker's batch. They are
        written even when the run is unknown. Returns the run after the update, or None when
        the run is unknown."""

    def known(self, entries: Sequence[Entry]) -> dict[str, Known]:
        """What is known of each entry (by key): whether it was applied, and its record's
        applied version. Adapters answer a batch with one read."""
        applied = self.applied_keys([entry.key for entry in entries])
        return {
            entry.key: known_of(
                entry.key in applied,
                None
                if entry.entity_id is None
                else self.applied_version(entry.cron, entry.entity_id),
            )
            for entry in entries
        }

    @abstractmethod
    def outcome(self, run_id: str, key: str) -> EntryStatus | None:
        """An entry's recorded outcome in a run, if any."""

    @abstractmethod
    def mark_finished(
        self,
        run_id: str,
        now: datetime,
        *,
        total: int | None = None,
        purged: int = 0,
        abandoned: bool = False,
        error: str | None = None,
    ) -> bool:
        """Set finished_at once; True only for the caller that set it (so RAAS_RUN_COMPLETE is
        logged once however many workers see the last message). A reconcile also sets the
        total (an abandoned run's: what got through), the entries counted purged, the
        abandoned flag and an error (kept if one is there), in the same conditional write."""

    @abstractmethod
    def claims(self, keys: Sequence[str]) -> dict[str, Claim]:
        """The enqueue claims recorded for these entry keys (whatever their age)."""

    @abstractmethod
    def put_claims(
        self, run_id: str, keys: Sequence[str], now: datetime, *, sent: bool = False
    ) -> None:
        """Record that `run_id` sends these keys now (`sent`: the queue took them), replacing
        older claims. One producer per cron writes them at a time (it holds the run lock)."""

    @abstractmethod
    def record_purge(self, env: str, now: datetime) -> None:
        """Note that the environment's queue was purged now (reconcile counts the entries of
        older runs that never came as purged)."""

    @abstractmethod
    def last_purge(self, env: str) -> datetime | None:
        """When the environment's queue was last purged, if ever."""

    @abstractmethod
    def open_runs(self, *, limit: int = 200) -> list[RunRecord]:
        """Runs not finished (enqueueing or running), oldest first."""

    @abstractmethod
    def applied_version(self, cron: str, entity_id: str) -> str | None:
        """The newest version applied for a record (a cron's entity), if any."""

    @abstractmethod
    def record_version(self, cron: str, entity_id: str, version: str) -> None:
        """Keep `version` as the record's applied version unless a newer one is there
        (a conditional write: versions are ISO UTC timestamps and compare as text)."""

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
    def acquire_lock(
        self, name: str, owner: str, ttl_s: int, now: datetime, *, holder: str = ""
    ) -> bool:
        """Take a named lock unless another owner holds an unexpired one; the owner taking it
        again renews it (a lease). `holder` names the process ("host:pid")."""

    @abstractmethod
    def release_lock(self, name: str, owner: str) -> None: ...

    @abstractmethod
    def lock_info(self, name: str) -> LockInfo | None:
        """Who holds a named lock (expired or not), if anyone."""

    @abstractmethod
    def break_lock(self, name: str) -> bool:
        """Remove a lock whoever holds it (an operator's unlock); True if there was one."""

    def stats(self) -> RunStatsStore:
        """The per-second run statistics kept with this state (a store of its own)."""
        from raasctl.state.stats_base import open_run_stats

        return open_run_stats(self)

    @abstractmethod
    def workers(self) -> WorkerStore:
        """The worker registry and the global rate schedule, in the same store
        (raasctl/state/workers.py)."""

    def writes_with(self, queue: Queue) -> Callable[[], AbstractContextManager[None]] | None:
        """Blocks in which this state's writes and `queue`'s commit together, when both keep
        their data in one store that allows it (the embedded SQLite file): the worker then
        records a batch's outcomes and deletes its messages in one transaction. None: they
        cannot (the default), and each write commits on its own."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
