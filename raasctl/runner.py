"""The producer-side use cases: `run` (a report becomes one message per payload) and the
load-test generator behind `enqueue-mock`.

`run`: take the cron's lock, create the run record, stream the report through the job's
mapper into the producer, record the counts, log RAAS_ENQUEUE_COMPLETE. Mock payloads never
pass through here: `enqueue_mock` is its own function, and `run` never builds a mock envelope.
`run --dry-run` is raasctl/dry_run.py.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from raasctl.claims import ClaimBook
from raasctl.codes import ErrorCode, InfoCode
from raasctl.config import PACKAGED_FIXTURES, CronConfig
from raasctl.dates import Bound, report_window
from raasctl.envelope import mock_key
from raasctl.errors import ConfigError, RaasctlError, RuntimeFailure, SourceError
from raasctl.jobs import JOBS, EntryInvalid, Job, MappedPayload, map_report
from raasctl.leases import LEASE_S, Lease
from raasctl.logs import event
from raasctl.producer import (
    DEFAULT_MAX_IN_FLIGHT,
    MessageWriter,
    Pacer,
    Pending,
    Producer,
    SendCounts,
    enqueued_at,
)
from raasctl.protection import refuse_protected
from raasctl.queues.base import OutgoingMessage, Queue, message_bytes
from raasctl.redaction import redact
from raasctl.runs import finish_if_complete, mock_lock, run_lock
from raasctl.sources.base import Prompts, ReportEntry, Source
from raasctl.sources.stream import iter_report_file
from raasctl.state.base import RunRecord, State
from raasctl.state.records import to_iso

if TYPE_CHECKING:
    from raasctl.runtime import Runtime

MOCK_FIXTURES = PACKAGED_FIXTURES / "mock"
DEFAULT_MOCK_FIXTURES = {"clientDepositUpdate": PACKAGED_FIXTURES / "client_deposits.json"}


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    cron: str
    entries: int  # report entries read
    enqueued: int  # messages the queue accepted
    invalid: int  # entries that failed validation
    duplicates: int  # messages applied already or dropped by the queue's deduplication

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MockSummary:
    run_id: str
    cron: str
    enqueued: int
    elapsed_s: float
    per_second: float

    def as_dict(self) -> dict[str, Any]:
        # Both units in every result with a rate: the worker speaks per hour, load tests per second.
        return {**asdict(self), "per_hour": round(self.per_second * 3600, 1)}


# ---------------------------------------------------------------- helpers


def new_run_id(cron: str, now: datetime) -> str:
    """`<cron>-<UTC timestamp>-<6 hex>`: sorts by time, unique across machines."""
    return f"{cron}-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def job_for(runtime: Runtime, cron: str) -> tuple[Job, CronConfig]:
    """The job and its settings; ConfigError UNKNOWN_CRON (exit 2) names the known crons."""
    settings = runtime.cron(cron)
    job = JOBS.get(cron)
    if job is None:  # the config knows every job's name, so only a bug lands here
        raise ConfigError(
            f"unknown cron {cron!r} (known: {', '.join(JOBS)})", code=ErrorCode.UNKNOWN_CRON
        )
    job.check_columns(settings.columns)
    return job, settings


def run_window(
    settings: CronConfig, now: datetime, since: Bound | None, until: Bound | None
) -> Prompts:
    """The report's prompts: the cron's lookback back from the run time in its time zone."""
    local_now = now.astimezone(ZoneInfo(settings.timezone))
    return report_window(local_now, settings.lookback_delta, since, until)


def report_name(job: Job, settings: CronConfig) -> str:
    return settings.report or job.report


def max_in_flight(runtime: Runtime) -> int:
    """Several batches in flight to a remote queue; one at a time into the SQLite file."""
    return DEFAULT_MAX_IN_FLIGHT if runtime.env.queue.kind == "sqs" else 1


class EntryCounter:
    """Counts the report entries as the mapper pulls them (one entry may be many payloads)."""

    def __init__(self, entries: Iterable[ReportEntry]) -> None:
        self._entries = entries
        self.count = 0

    def __iter__(self) -> Iterator[ReportEntry]:
        for entry in self._entries:
            self.count += 1
            yield entry


def _oversized(message: OutgoingMessage, limit: int, position: int) -> EntryInvalid | None:
    """An entry whose message the queue would refuse (over its MaximumMessageSize) is one
    invalid entry; the rest of the report goes on."""
    size = message_bytes(message)
    if size <= limit:
        return None
    return EntryInvalid(
        position, None, f"its message is {size} bytes, over the queue's limit of {limit} bytes"
    )


def log_invalid(cron: str, run_id: str | None, invalid: EntryInvalid) -> None:
    event(
        ErrorCode.ENTRY_INVALID,
        f"{cron} {invalid}",
        cron=cron,
        run_id=run_id,
        entry=invalid.position,
        field=invalid.field,
    )


def _note_progress(exc: RaasctlError, counts: SendCounts, run_id: str) -> None:
    """Say how far the run got in the error the operator sees (EnqueueFailed already does)."""
    if "enqueued before the failure" not in exc.message:
        exc.message = f"{exc.message}; {counts.enqueued} messages were enqueued before the failure"
    exc.message += f" (run {run_id})"
    exc.args = (exc.message,)


def _close(*resources: Queue | State | Any) -> None:
    for resource in resources:
        if resource is not None:
            resource.close()


# ---------------------------------------------------------------- run


def run_cron(
    runtime: Runtime,
    cron: str,
    *,
    since: Bound | None = None,
    until: Bound | None = None,
    now: datetime | None = None,
    lease_s: int = LEASE_S,
) -> RunSummary:
    """Fetch the cron's report and enqueue one message per payload. Raises RUN_LOCKED when
    another run of the cron holds the lock (a lease of `lease_s`, renewed while the run
    lives); invalid entries are logged and counted."""
    now = now or datetime.now(UTC)
    job, settings = job_for(runtime, cron)
    prompts = run_window(settings, now, since, until)
    run_id = new_run_id(cron, now)
    lock = run_lock(runtime.env_name, cron)
    state = runtime.state()
    try:
        # A lease, renewed while the run lives: a killed run frees it within LEASE_S.
        lease = Lease(state, lock, run_id, lease_s=lease_s, renew_every_s=lease_s / 4)
        if not lease.acquire():
            raise _locked(state, lock, cron, runtime.env_name)
        try:
            return _run_locked(runtime, state, job, settings, run_id, prompts, now, lease)
        finally:
            lease.release()
    finally:
        state.close()


def _epoch(state: State, runtime: Runtime) -> str:
    """The deduplication epoch: the time of the environment's last queue purge, if any."""
    purged_at = state.last_purge(runtime.env_name)
    return "" if purged_at is None else to_iso(purged_at)


def _locked(state: State, lock: str, cron: str, env: str) -> RuntimeFailure:
    info = state.lock_info(lock)
    held = (
        f" by run {info.owner} ({info.holder or 'unknown process'}) until "
        f"{info.expires_at:%H:%M:%S} UTC"
        if info is not None
        else ""
    )
    return RuntimeFailure(
        f"another {cron} run holds the lock {lock} in environment {env}{held}; it frees "
        "itself once that run ends (its lease lapses within a minute); or: "
        f"raasctl runs unlock {cron}",
        code=ErrorCode.RUN_LOCKED,
    )


def _run_locked(
    runtime: Runtime,
    state: State,
    job: Job,
    settings: CronConfig,
    run_id: str,
    prompts: Prompts,
    now: datetime,
    lease: Lease,
) -> RunSummary:
    cron = job.name
    state.create_run(
        RunRecord(run_id=run_id, cron=cron, env=runtime.env_name, mock=False, created_at=now)
    )
    report = report_name(job, settings)
    event(
        InfoCode.RUN_STARTED,
        f"{cron} run started: report {report} from {prompts.from_date.isoformat()} "
        f"to {prompts.to_date.isoformat()}",
        cron=cron,
        run_id=run_id,
    )
    source: Source | None = None
    queue: Queue | None = None
    producer: Producer | None = None
    entries: EntryCounter | None = None
    invalid = 0
    try:
        source = runtime.source()
        queue = runtime.queue()
        entries = EntryCounter(source.entries(cron, report, prompts))
        # never mock=True: that is enqueue_mock's. The run's time versions its records.
        writer = MessageWriter(cron, run_id, version=to_iso(now), epoch=_epoch(state, runtime))
        limit = queue.max_message_bytes()

        def pending() -> Iterator[Pending]:
            nonlocal invalid
            for item in map_report(job, entries, settings.columns):
                if lease.lost.is_set():
                    raise RuntimeFailure(
                        f"lost the run lock {lease.name} to another run", code=ErrorCode.RUN_LOCKED
                    )
                if not isinstance(item, EntryInvalid):
                    label = f"entry {entries.count} ({item.key})"
                    message = writer.message(
                        item.key, item.entity_id, item.payload_json, label=label
                    )
                    too_large = _oversized(message, limit, entries.count)
                    if too_large is None:
                        yield Pending(item.key, message)
                        continue
                    item = too_large
                invalid += 1
                log_invalid(cron, run_id, item)

        claims = None
        if not queue.reports_duplicates:
            claims = ClaimBook(
                state,
                run_id,
                purged_at=state.last_purge(runtime.env_name),
                now=lambda: datetime.now(UTC),
            )
        producer = Producer(queue, state, max_in_flight=max_in_flight(runtime), claims=claims)
        counts = producer.send(pending())
    except BaseException as exc:
        sent = producer.counts if producer is not None else SendCounts()
        if isinstance(exc, RaasctlError):
            _note_progress(exc, sent, run_id)
        _record_failure(state, run_id, entries.count if entries else 0, sent, invalid, exc)
        raise
    finally:
        _close(queue, source)
    summary = RunSummary(run_id, cron, entries.count, counts.enqueued, invalid, counts.duplicates)
    record = state.finish_enqueue(
        run_id,
        entries=summary.entries,
        enqueued=summary.enqueued,
        invalid=summary.invalid,
        duplicates=summary.duplicates,
    )
    event(
        InfoCode.ENQUEUE_COMPLETE,
        f"{cron}: enqueue complete, {summary.enqueued} messages ({summary.entries} entries, "
        f"{summary.invalid} invalid, {summary.duplicates} duplicates)",
        cron=cron,
        run_id=run_id,
        entries=summary.entries,
        enqueued=summary.enqueued,
        invalid=summary.invalid,
        duplicates=summary.duplicates,
    )
    _finish_if_done(state, record)
    return summary


def _record_failure(
    state: State, run_id: str, entries: int, sent: SendCounts, invalid: int, exc: BaseException
) -> None:
    """A run that stopped early keeps what got through as its total and says why, so it
    completes (as failed) once the worker has handled that, instead of staying enqueueing."""
    reason = redact(str(exc)) or type(exc).__name__  # stored: never a secret in it
    try:
        record = state.finish_enqueue(
            run_id,
            entries=entries,
            enqueued=sent.enqueued,
            invalid=invalid,
            duplicates=sent.duplicates,
            error=reason,
        )
    except RaasctlError:
        return  # the state store itself failed: the original error is the one to show
    _finish_if_done(state, record)


def _finish_if_done(state: State, record: RunRecord) -> None:
    """A run with nothing to do (or drained before its total was known) completes here; the
    worker completes every other run when its counters reach the total."""
    finish_if_complete(state, record, datetime.now(UTC))


# ---------------------------------------------------------------- enqueue-mock


def default_mock_fixture(cron: str) -> Path:
    return DEFAULT_MOCK_FIXTURES.get(cron, MOCK_FIXTURES / f"{cron}.json")


def load_mock_seed(job: Job, fixture: Path, columns: Mapping[str, str]) -> list[MappedPayload]:
    """Every payload of the fixture, validated before anything is sent (a fixture is small;
    only its copies are many). ConfigError FIXTURE_INVALID (exit 2) names the file and entry."""
    seed: list[MappedPayload] = []
    try:
        for item in map_report(job, iter_report_file(fixture), columns):
            if isinstance(item, EntryInvalid):
                raise ConfigError(f"mock fixture {fixture}: {item}", code=ErrorCode.FIXTURE_INVALID)
            seed.append(item)
    except SourceError as exc:  # missing, empty, or not JSON: the message names the file
        raise ConfigError(f"mock fixture: {exc.message}", code=ErrorCode.FIXTURE_INVALID) from None
    if not seed:
        raise ConfigError(
            f"mock fixture {fixture} has no entries that yield a payload",
            code=ErrorCode.FIXTURE_INVALID,
        )
    return seed


def _check_mock_sizes(
    fixture: Path, seed: list[MappedPayload], cron: str, run_id: str, copies: int, limit: int
) -> None:
    """A seed payload whose copies would be over the queue's message size is refused with
    the fixture's other errors (exit 2, before anything is sent). The last copy has the
    longest key, so its message is the largest."""
    last = list(mock_messages(cron, run_id, seed, copies, first=copies - 1))
    for position, pending in enumerate(last, start=1):
        invalid = _oversized(pending.message, limit, position)
        if invalid is not None:
            raise ConfigError(
                f"mock fixture {fixture}: payload {invalid}", code=ErrorCode.FIXTURE_INVALID
            )


def mock_messages(
    cron: str,
    run_id: str,
    seed: list[MappedPayload],
    copies: int,
    *,
    first: int = 0,
    version: str = "",
    epoch: str = "",
) -> Iterator[Pending]:
    """`copies` × the seed's payloads, made as they are sent (memory does not grow with copies).

    Copy n of an entry has the mock key `<key>:mock:<run_id>:<n>` (its own deduplication id)
    and the group `<entity id>:<n>`: on a FIFO queue only one message per group is in flight
    at a time, so copies sharing their entity's group would run one after another and the
    load test would measure that queue limit instead of the worker.
    """
    writer = MessageWriter(cron, run_id, mock=True, version=version, epoch=epoch)
    for n in range(first, copies):
        at = enqueued_at()
        for item in seed:
            key = mock_key(item.key, run_id, n)
            label = f"copy {n} of {item.key}"
            message = writer.message(
                key, f"{item.entity_id}:{n}", item.payload_json, label=label, at=at
            )
            yield Pending(key, message)


def enqueue_mock(
    runtime: Runtime,
    cron: str,
    *,
    fixture: Path | None = None,
    copies: int = 1,
    rate: float | None = None,
    allow_protected: bool = False,
    on_progress: Callable[[SendCounts], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    now: datetime | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> MockSummary:
    """Enqueue `copies` load-test copies of every fixture payload as one mock run.

    A protected environment (prod) is refused with PROTECTED_ENV unless `allow_protected`."""
    refuse_protected(runtime, "enqueue-mock", allow_protected=allow_protected)
    if copies < 1:
        raise ConfigError("--copies must be at least 1", code=ErrorCode.USAGE)
    now = now or datetime.now(UTC)
    job, settings = job_for(runtime, cron)
    fixture = fixture or default_mock_fixture(cron)
    seed = load_mock_seed(job, fixture, settings.columns)
    total = len(seed) * copies
    run_id = new_run_id(cron, now)
    state = runtime.state()
    queue: Queue | None = None
    # The run's own lease, renewed while it enqueues: a reconcile tells a live producer from
    # a killed one by it.
    lease = Lease(state, mock_lock(runtime.env_name, run_id), run_id)
    try:
        queue = runtime.queue()
        _check_mock_sizes(fixture, seed, cron, run_id, copies, queue.max_message_bytes())
        lease.acquire()
        state.create_run(
            RunRecord(run_id=run_id, cron=cron, env=runtime.env_name, mock=True, created_at=now)
        )
        if on_start:
            on_start(total)
        # Mock keys are new by construction: no applied-keys lookup (state=None).
        producer = Producer(
            queue,
            None,
            max_in_flight=max_in_flight(runtime),
            pacer=Pacer(rate) if rate else None,
            on_progress=on_progress,
        )
        started = clock()
        try:
            messages = mock_messages(
                cron, run_id, seed, copies, version=to_iso(now), epoch=_epoch(state, runtime)
            )
            counts = producer.send(messages)
        except BaseException as exc:
            if isinstance(exc, RaasctlError):
                _note_progress(exc, producer.counts, run_id)
            _record_failure(state, run_id, total, producer.counts, 0, exc)
            raise
        elapsed = clock() - started
        record = state.finish_enqueue(
            run_id,
            entries=total,
            enqueued=counts.enqueued,
            invalid=0,
            duplicates=counts.duplicates,
        )
        per_second = counts.enqueued / elapsed if elapsed > 0 else 0.0
        event(
            InfoCode.MOCK_ENQUEUED,
            f"{cron}: {counts.enqueued} mock messages enqueued in {elapsed:.1f} s "
            f"({per_second:,.0f}/s)",
            cron=cron,
            run_id=run_id,
            enqueued=counts.enqueued,
            duplicates=counts.duplicates,
        )
        _finish_if_done(state, record)
    finally:
        lease.release()
        _close(queue, state)
    return MockSummary(run_id, cron, counts.enqueued, round(elapsed, 3), round(per_second, 1))
