"""One contract suite for the State port, run against SQLite and DynamoDB (moto)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from raasctl.codes import ErrorCode
from raasctl.errors import StateError
from raasctl.state import dynamodb_outcomes
from raasctl.state.base import EntryStatus, LockInfo, RunRecord, State
from raasctl.state.dynamodb import DynamoState, create_table
from raasctl.state.records import to_iso
from raasctl.state.sqlite import SqliteState

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
THREADS = 8
# Increments per thread. moto spends ~10 ms on each UpdateItem, so DynamoDB gets fewer: its
# atomicity is the server's, and what the test checks is one request per increment.
INCREMENTS = {SqliteState: 200, DynamoState: 40}


class OneRequestAtATime:
    """A DynamoDB client whose requests reach moto one at a time.

    moto's in-process backend is not thread-safe (concurrent UpdateItem ADDs lose updates and
    two conditional writes can both pass), whereas DynamoDB applies each request to an item
    atomically. Serialising requests models the service; an adapter that read a value in one
    request and wrote it in another would still lose updates here."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attribute(*args, **kwargs)

        return call


@pytest.fixture(scope="module")
def dynamodb() -> Iterator[Any]:
    """One mocked account and client for the module (a client takes a while to build); each
    test gets its own table."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            patch.setenv(name, value)
        patch.delenv("AWS_PROFILE", raising=False)
        with mock_aws():
            yield OneRequestAtATime(boto3.client("dynamodb", region_name="us-east-1"))


@pytest.fixture
def table() -> str:
    return f"raasctl-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=["sqlite", "dynamodb"])
def state(request: pytest.FixtureRequest, tmp_path: Path, table: str) -> Iterator[State]:
    adapter: State
    if request.param == "sqlite":
        adapter = SqliteState(tmp_path / "local.db")
    else:
        client = request.getfixturevalue("dynamodb")
        create_table(client, table)
        adapter = DynamoState(client, table)
    yield adapter
    adapter.close()


def new_run(
    run_id: str = "r1", *, cron: str = "clientDepositUpdate", at: datetime = T0
) -> RunRecord:
    return RunRecord(run_id=run_id, cron=cron, env="local", mock=False, created_at=at)


def in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Runs work(i) in `count` threads released together, so the calls really overlap."""
    barrier = threading.Barrier(count)

    def start(i: int) -> Any:
        barrier.wait()
        return work(i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(start, range(count)))


# ---------------------------------------------------------------- run records


def test_created_run_reads_back_as_enqueueing(state: State) -> None:
    state.create_run(RunRecord("r1", "lspBillUpdateStatus", "work-uat", True, T0))

    run = state.get_run("r1")

    assert run == RunRecord("r1", "lspBillUpdateStatus", "work-uat", True, T0)
    assert run.status == "enqueueing"
    assert state.get_run("nope") is None


def test_creating_a_run_twice_is_refused(state: State) -> None:
    state.create_run(new_run())

    with pytest.raises(StateError, match="r1 already exists"):
        state.create_run(new_run())


def test_datetimes_come_back_in_utc(state: State) -> None:
    local = timezone(timedelta(hours=-8))
    state.create_run(new_run("tz", at=datetime(2026, 3, 1, 4, 0, tzinfo=local)))
    state.create_run(new_run("naive", at=datetime(2026, 3, 1, 12, 0)))

    for run_id in ("tz", "naive"):
        run = state.get_run(run_id)
        assert run is not None
        assert run.created_at == T0
        assert run.created_at.utcoffset() == timedelta(0)


def test_finish_enqueue_records_producer_counts_and_total(state: State) -> None:
    state.create_run(new_run())

    run = state.finish_enqueue("r1", entries=12, enqueued=10, invalid=1, duplicates=1)

    assert (run.entries, run.enqueued, run.invalid, run.duplicates) == (12, 10, 1, 1)
    assert run.total == 10
    assert run.status == "running"
    assert state.get_run("r1") == run


def test_add_counts_returns_the_updated_record_and_sets_started_at_once(state: State) -> None:
    state.create_run(new_run())
    state.finish_enqueue("r1", entries=3, enqueued=3, invalid=0, duplicates=0)

    first = state.add_counts("r1", succeeded=1, now=T0 + timedelta(minutes=1))
    second = state.add_counts(
        "r1", failed=1, dead_lettered=1, retries=4, now=T0 + timedelta(minutes=2)
    )

    assert (first.succeeded, first.done) == (1, 1)
    assert (second.succeeded, second.failed, second.dead_lettered, second.retries) == (1, 1, 1, 4)
    assert second.done == 3
    assert first.started_at == second.started_at == T0 + timedelta(minutes=1)


@pytest.mark.parametrize(
    "update",
    [
        lambda s: s.add_counts("ghost", succeeded=1),
        lambda s: s.finish_enqueue("ghost", entries=1, enqueued=1, invalid=0, duplicates=0),
    ],
    ids=["add_counts", "finish_enqueue"],
)
def test_updating_an_unknown_run_fails_and_creates_nothing(
    state: State, update: Callable[[State], Any]
) -> None:
    with pytest.raises(StateError, match="run ghost not found") as caught:
        update(state)

    assert caught.value.code == ErrorCode.RUN_NOT_FOUND
    assert state.get_run("ghost") is None
    assert state.list_runs() == []


def test_counters_are_atomic_under_concurrent_increments(state: State) -> None:
    state.create_run(new_run())
    per_thread = INCREMENTS[type(state)]

    def increment(_: int) -> list[int]:
        return [state.add_counts("r1", succeeded=1, retries=2).succeeded for _ in range(per_thread)]

    seen = [value for values in in_threads(THREADS, increment) for value in values]

    run = state.get_run("r1")
    assert run is not None
    assert run.succeeded == THREADS * per_thread
    assert run.retries == 2 * THREADS * per_thread
    # Every increment saw its own snapshot: no two callers were handed the same count.
    assert sorted(seen) == list(range(1, THREADS * per_thread + 1))


def test_mark_finished_succeeds_for_exactly_one_caller(state: State) -> None:
    state.create_run(new_run())
    state.finish_enqueue("r1", entries=1, enqueued=1, invalid=0, duplicates=0)
    state.add_counts("r1", dead_lettered=1)

    results = in_threads(THREADS, lambda i: state.mark_finished("r1", T0 + timedelta(seconds=i)))

    assert results.count(True) == 1
    run = state.get_run("r1")
    assert run is not None
    assert run.finished_at == T0 + timedelta(seconds=results.index(True))
    assert run.status == "failed"
    assert state.mark_finished("r1", T0 + timedelta(hours=1)) is False


def test_mark_finished_on_an_unknown_run_sets_nothing(state: State) -> None:
    assert state.mark_finished("ghost", T0) is False
    assert state.get_run("ghost") is None


def test_list_runs_is_newest_first_with_limit_and_cron_filter(state: State) -> None:
    crons = ["clientBillPaidStatus", "clientBillUnpaidStatus"]
    # Created out of order so the result cannot just be insertion order.
    for n in [3, 0, 5, 1, 4, 2]:
        state.create_run(new_run(f"r{n}", cron=crons[n % 2], at=T0 + timedelta(minutes=n)))

    assert [run.run_id for run in state.list_runs()] == ["r5", "r4", "r3", "r2", "r1", "r0"]
    assert [run.run_id for run in state.list_runs(limit=2)] == ["r5", "r4"]
    assert [run.run_id for run in state.list_runs(limit=2, cron=crons[0])] == ["r4", "r2"]
    assert [run.run_id for run in state.list_runs(cron=crons[1])] == ["r5", "r3", "r1"]
    assert state.list_runs(cron="lspBillUpdateStatus") == []


def test_list_runs_returns_full_records_beyond_one_batch(state: State) -> None:
    for n in range(130):
        state.create_run(new_run(f"r{n:03}", at=T0 + timedelta(seconds=n)))
    state.add_counts("r129", succeeded=7)

    runs = state.list_runs(limit=120)

    assert len(runs) == 120
    assert runs[0].run_id == "r129" and runs[0].succeeded == 7
    assert runs[-1].run_id == "r010"


# ---------------------------------------------------------------- idempotency records


def test_an_idempotency_record_is_written_once(state: State) -> None:
    key = "clientDepositUpdate:D-1:abc123def456"
    assert state.is_applied(key) is False

    assert state.record_applied(key, "r1", T0) is True
    assert state.is_applied(key) is True
    assert state.record_applied(key, "r2", T0) is False
    assert state.is_applied(f"{key}:mock:r1:0") is False


def test_applied_keys_finds_the_recorded_ones_among_many(state: State) -> None:
    keys = [f"clientDepositUpdate:D-{n}:abc" for n in range(1200)]
    recorded = set(keys[::40])
    for key in recorded:
        state.record_applied(key, "r1", T0)

    # More keys than one batch or one SQL statement takes, with repeats.
    assert state.applied_keys([*keys, *keys[:50]]) == recorded
    assert state.applied_keys([]) == set()


def test_concurrent_idempotency_records_have_one_winner(state: State) -> None:
    results = in_threads(THREADS, lambda i: state.record_applied("k", f"r{i}", T0))

    assert results.count(True) == 1


# ---------------------------------------------------------------- locks


def test_a_lock_is_exclusive_until_released(state: State) -> None:
    assert state.acquire_lock("run:clientDepositUpdate:local", "a", 600, T0) is True
    assert state.acquire_lock("run:clientDepositUpdate:local", "b", 600, T0) is False
    # Other names are other locks.
    assert state.acquire_lock("run:clientBillPaidStatus:local", "b", 600, T0) is True

    state.release_lock("run:clientDepositUpdate:local", "a")

    assert state.acquire_lock("run:clientDepositUpdate:local", "b", 600, T0) is True


def test_an_expired_lock_can_be_taken_over(state: State) -> None:
    assert state.acquire_lock("lock", "a", 60, T0) is True

    assert state.acquire_lock("lock", "b", 60, T0 + timedelta(seconds=59)) is False
    assert state.acquire_lock("lock", "b", 60, T0 + timedelta(seconds=61)) is True
    assert state.acquire_lock("lock", "a", 60, T0 + timedelta(seconds=62)) is False


def test_the_owner_can_reacquire_its_lock_which_extends_it(state: State) -> None:
    assert state.acquire_lock("lock", "a", 60, T0) is True

    assert state.acquire_lock("lock", "a", 60, T0 + timedelta(seconds=50)) is True

    # The first hold would have expired at +60 s; the renewal holds until +110 s.
    assert state.acquire_lock("lock", "b", 60, T0 + timedelta(seconds=100)) is False
    assert state.acquire_lock("lock", "b", 60, T0 + timedelta(seconds=111)) is True


def test_releasing_someone_elses_lock_leaves_it_held(state: State) -> None:
    assert state.acquire_lock("lock", "a", 60, T0) is True

    state.release_lock("lock", "b")
    state.release_lock("never-taken", "b")

    assert state.acquire_lock("lock", "b", 60, T0) is False


def test_concurrent_lock_attempts_have_one_winner(state: State) -> None:
    results = in_threads(THREADS, lambda i: state.acquire_lock("lock", f"owner-{i}", 60, T0))

    assert results.count(True) == 1


# ---------------------------------------------------------------- per-entry outcomes

S, F, DL, SUP = (
    EntryStatus.SUCCEEDED,
    EntryStatus.FAILED,
    EntryStatus.DEAD_LETTERED,
    EntryStatus.SUPERSEDED,
)


def counts(run: RunRecord | None) -> tuple[int, int, int, int]:
    assert run is not None
    return (run.succeeded, run.failed, run.dead_lettered, run.superseded)


def running_run(state: State, total: int, run_id: str = "r1") -> None:
    state.create_run(new_run(run_id))
    state.finish_enqueue(run_id, entries=total, enqueued=total, invalid=0, duplicates=0)


def test_outcomes_are_counted_once_however_often_they_are_recorded(state: State) -> None:
    running_run(state, 3)
    later = T0 + timedelta(minutes=5)

    first = state.record_outcomes("r1", {"a": S, "b": F, "c": DL}, T0)
    again = state.record_outcomes("r1", {"a": S, "b": F, "c": DL}, later)

    assert counts(first) == counts(again) == counts(state.get_run("r1")) == (1, 1, 1, 0)
    assert first is not None and first.done == 3
    assert first.started_at == T0 and state.get_run("r1").started_at == T0  # type: ignore[union-attr]
    assert [state.outcome("r1", key) for key in "abc"] == [S, F, DL]
    assert state.outcome("r1", "never-seen") is None
    assert state.outcome("r2", "a") is None


@pytest.mark.parametrize(
    ("first", "then", "expected", "final"),
    [
        (F, S, (1, 0, 0, 0), S),  # a redriven entry applied
        (DL, S, (1, 0, 0, 0), S),
        (F, DL, (0, 0, 1, 0), DL),  # a later receive found it permanent
        (F, SUP, (0, 0, 0, 1), SUP),  # redriven, older than what was applied meanwhile
        (DL, SUP, (0, 0, 0, 1), SUP),
        (S, F, (1, 0, 0, 0), S),  # succeeded is final
        (S, DL, (1, 0, 0, 0), S),
        (S, SUP, (1, 0, 0, 0), S),
        (SUP, S, (0, 0, 0, 1), SUP),  # superseded is final
        (DL, F, (0, 0, 1, 0), DL),  # an outcome never moves back
    ],
    ids=lambda value: value.value if isinstance(value, EntryStatus) else None,
)
def test_an_outcome_moves_only_forward(
    state: State,
    first: EntryStatus,
    then: EntryStatus,
    expected: tuple[int, int, int, int],
    final: EntryStatus,
) -> None:
    running_run(state, 1)
    state.record_outcomes("r1", {"D-1": first}, T0)

    run = state.record_outcomes("r1", {"D-1": then}, T0 + timedelta(minutes=1))

    assert counts(run) == expected
    assert state.outcome("r1", "D-1") is final
    assert run is not None and run.done == 1


def test_one_batch_mixes_first_outcomes_transitions_and_no_ops(state: State) -> None:
    running_run(state, 6)
    state.record_outcomes("r1", {"a": F, "b": DL, "c": S, "f": F}, T0)

    run = state.record_outcomes(
        "r1", {"a": S, "b": F, "c": F, "d": SUP, "e": S, "f": DL}, T0 + timedelta(minutes=1)
    )

    assert counts(run) == (3, 0, 2, 1)
    assert [state.outcome("r1", key) for key in "abcdef"] == [S, DL, S, SUP, S, DL]


def test_outcomes_beyond_one_transaction_are_all_counted(state: State) -> None:
    keys = [f"clientDepositUpdate:D-{n}:abc" for n in range(230)]
    running_run(state, len(keys))

    failed = state.record_outcomes("r1", dict.fromkeys(keys, F), T0)
    redriven = state.record_outcomes("r1", dict.fromkeys(keys, S), T0)

    assert counts(failed) == (0, 230, 0, 0)
    assert counts(redriven) == (230, 0, 0, 0)
    assert {state.outcome("r1", key) for key in (keys[0], keys[99], keys[-1])} == {S}


def test_outcomes_of_an_unknown_run_record_nothing(state: State) -> None:
    assert state.record_outcomes("ghost", {"a": S}, T0) is None
    assert state.get_run("ghost") is None
    assert state.outcome("ghost", "a") is None
    assert state.list_runs() == []


def test_concurrent_outcomes_for_the_same_keys_count_once(state: State) -> None:
    running_run(state, 30)
    keys = [f"k{n}" for n in range(30)]

    def record(i: int) -> None:
        # Half the threads saw a provisional failure, half a success: success wins either
        # way round, and each key counts once.
        status = F if i % 2 else S
        for start in range(0, len(keys), 10):
            state.record_outcomes("r1", dict.fromkeys(keys[start : start + 10], status), T0)

    in_threads(THREADS, record)

    run = state.get_run("r1")
    assert counts(run) == (30, 0, 0, 0)
    assert run is not None and run.done == run.total == 30
    assert {state.outcome("r1", key) for key in keys} == {S}


# ---------------------------------------------------------------- finishing and run states


def test_mark_finished_sets_the_reconciled_fields_once(state: State) -> None:
    state.create_run(new_run())  # the producer died before finish_enqueue: no total
    state.record_outcomes("r1", {"a": S, "b": S}, T0)

    assert state.mark_finished("r1", T0 + timedelta(minutes=1), total=4, purged=2, abandoned=True)
    assert not state.mark_finished("r1", T0 + timedelta(minutes=2), total=9, purged=7)

    run = state.get_run("r1")
    assert run is not None
    assert (run.total, run.purged, run.abandoned, run.done) == (4, 2, True, 4)
    assert run.finished_at == T0 + timedelta(minutes=1)
    assert run.status == "abandoned"
    assert state.mark_finished("ghost", T0, total=1, purged=1) is False
    assert state.get_run("ghost") is None


def test_mark_finished_without_reconcile_fields_keeps_the_total(state: State) -> None:
    running_run(state, 2)
    state.record_outcomes("r1", {"a": S, "b": S}, T0)

    assert state.mark_finished("r1", T0)

    run = state.get_run("r1")
    assert run is not None
    assert (run.total, run.purged, run.abandoned, run.status) == (2, 0, False, "complete")


def test_a_purged_run_ends_purged(state: State) -> None:
    running_run(state, 5)
    state.record_outcomes("r1", {"a": S, "b": F}, T0)

    state.mark_finished("r1", T0, purged=3)

    run = state.get_run("r1")
    assert run is not None
    assert (run.status, run.purged, run.done, run.total) == ("purged", 3, 5, 5)


def test_a_failed_run_turns_complete_when_its_redriven_entries_succeed(state: State) -> None:
    running_run(state, 3)
    state.record_outcomes("r1", {"a": S, "b": F, "c": DL}, T0)
    state.mark_finished("r1", T0)
    assert state.get_run("r1").status == "failed"  # type: ignore[union-attr]

    state.record_outcomes("r1", {"b": S}, T0 + timedelta(hours=1))
    assert state.get_run("r1").status == "failed"  # type: ignore[union-attr]
    run = state.record_outcomes("r1", {"c": S}, T0 + timedelta(hours=1))

    assert run is not None
    assert (run.status, run.succeeded, run.failed, run.dead_lettered, run.done) == (
        "complete",
        3,
        0,
        0,
        3,
    )


def test_a_run_whose_enqueueing_stopped_early_ends_failed(state: State) -> None:
    state.create_run(new_run())
    state.finish_enqueue("r1", entries=5, enqueued=1, invalid=0, duplicates=0, error="throttled")
    state.record_outcomes("r1", {"a": S}, T0)
    state.mark_finished("r1", T0)

    assert state.get_run("r1").status == "failed"  # type: ignore[union-attr]


def test_open_runs_are_the_unfinished_ones_oldest_first(state: State) -> None:
    for n in [3, 0, 4, 1, 2]:
        state.create_run(new_run(f"r{n}", at=T0 + timedelta(minutes=n)))
    for n in (1, 3):
        state.finish_enqueue(f"r{n}", entries=0, enqueued=0, invalid=0, duplicates=0)
        state.mark_finished(f"r{n}", T0 + timedelta(hours=1))
    state.finish_enqueue("r2", entries=1, enqueued=1, invalid=0, duplicates=0)

    assert [run.run_id for run in state.open_runs()] == ["r0", "r2", "r4"]
    assert [run.run_id for run in state.open_runs(limit=2)] == ["r0", "r2"]
    assert [run.status for run in state.open_runs()] == ["enqueueing", "running", "enqueueing"]
    # Finished and open runs together, newest first.
    assert [run.run_id for run in state.list_runs()] == ["r4", "r3", "r2", "r1", "r0"]
    assert [run.run_id for run in state.list_runs(limit=3)] == ["r4", "r3", "r2"]

    for n in (0, 2, 4):
        state.mark_finished(f"r{n}", T0 + timedelta(hours=2), abandoned=True)
    assert state.open_runs() == []
    assert len(state.list_runs()) == 5


# ---------------------------------------------------------------- record versions

V1, V2, V3 = (to_iso(T0 + timedelta(hours=hour)) for hour in (1, 2, 3))


def test_a_record_keeps_its_newest_applied_version(state: State) -> None:
    assert state.applied_version("clientDepositUpdate", "D-1") is None

    state.record_version("clientDepositUpdate", "D-1", V2)
    state.record_version("clientDepositUpdate", "D-1", V1)  # older: does not replace it
    assert state.applied_version("clientDepositUpdate", "D-1") == V2
    state.record_version("clientDepositUpdate", "D-1", V2)  # equal: a no-op
    assert state.applied_version("clientDepositUpdate", "D-1") == V2
    state.record_version("clientDepositUpdate", "D-1", V3)
    assert state.applied_version("clientDepositUpdate", "D-1") == V3

    # Per cron and entity.
    assert state.applied_version("clientDepositUpdate", "D-2") is None
    assert state.applied_version("clientBillPaidStatus", "D-1") is None


def test_concurrent_versions_leave_the_newest(state: State) -> None:
    versions = [to_iso(T0 + timedelta(minutes=minute)) for minute in (5, 1, 7, 3, 8, 2, 6, 4)]

    in_threads(THREADS, lambda i: state.record_version("clientDepositUpdate", "D-1", versions[i]))

    assert state.applied_version("clientDepositUpdate", "D-1") == max(versions)


# ---------------------------------------------------------------- lock holders


def test_a_lock_names_its_holder_and_a_renewal_extends_it(state: State) -> None:
    assert state.lock_info("lock") is None
    assert state.acquire_lock("lock", "run-a", 60, T0, holder="host-1:101")

    assert state.lock_info("lock") == LockInfo(
        "lock", "run-a", "host-1:101", T0 + timedelta(seconds=60)
    )
    assert state.acquire_lock("lock", "run-a", 60, T0 + timedelta(seconds=30), holder="host-1:101")
    info = state.lock_info("lock")
    assert info is not None and info.expires_at == T0 + timedelta(seconds=90)
    assert not state.acquire_lock("lock", "run-b", 60, T0 + timedelta(seconds=80), holder="h:2")
    assert state.lock_info("lock").owner == "run-a"  # type: ignore[union-attr]


def test_an_expired_lock_is_still_shown_until_taken_over(state: State) -> None:
    state.acquire_lock("lock", "run-a", 60, T0, holder="host-1:101")

    expired = state.lock_info("lock")  # lock_info has no clock: expired or not, it is shown
    assert expired is not None and expired.owner == "run-a"
    assert state.acquire_lock("lock", "run-b", 60, T0 + timedelta(seconds=61), holder="host-2:7")

    assert state.lock_info("lock") == LockInfo(
        "lock", "run-b", "host-2:7", T0 + timedelta(seconds=121)
    )
    state.acquire_lock("other", "run-c", 60, T0)
    assert state.lock_info("other").holder == ""  # type: ignore[union-attr]


def test_break_lock_removes_it_whoever_holds_it(state: State) -> None:
    state.acquire_lock("lock", "run-a", 3600, T0, holder="host-1:101")

    assert state.break_lock("lock") is True

    assert state.lock_info("lock") is None
    assert state.break_lock("lock") is False
    assert state.break_lock("never-taken") is False
    assert state.acquire_lock("lock", "run-b", 60, T0, holder="host-2:7")
    assert state.lock_info("lock").owner == "run-b"  # type: ignore[union-attr]


# ---------------------------------------------------------------- adapter specifics


def test_dynamodb_missing_table_is_a_state_error_naming_it(dynamodb: Any) -> None:
    state = DynamoState(dynamodb, "raasctl-missing")

    with pytest.raises(StateError, match="DynamoDB table raasctl-missing does not exist"):
        state.get_run("r1")
    with pytest.raises(StateError, match="raasctl-missing does not exist"):
        state.add_counts("r1", succeeded=1)
    with pytest.raises(StateError, match="raasctl-missing does not exist"):
        state.list_runs()


def test_dynamodb_create_table_is_idempotent_and_on_demand(dynamodb: Any, table: str) -> None:
    create_table(dynamodb, table)
    state = DynamoState(dynamodb, table)
    state.create_run(new_run())

    create_table(dynamodb, table)

    description = dynamodb.describe_table(TableName=table)["Table"]
    assert description["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert state.get_run("r1") is not None


def test_dynamodb_items_use_the_documented_keys(dynamodb: Any, table: str) -> None:
    create_table(dynamodb, table)
    state = DynamoState(dynamodb, table)
    state.create_run(new_run())
    state.record_applied("k1", "r1", T0)
    state.acquire_lock("cron", "me", 60, T0)

    items = dynamodb.scan(TableName=table)["Items"]

    assert sorted(item["pk"]["S"] for item in items) == ["KEY#k1", "LOCK#cron", "RUN#r1"]
    lock = next(item for item in items if item["pk"]["S"] == "LOCK#cron")
    assert lock["expires_at"]["S"] == "2026-03-01T12:01:00.000000+00:00"


class Recording:
    """A client that counts its requests by operation and can rewrite a transaction's
    answer (`cancel`: called with the request, may raise instead of sending it)."""

    def __init__(self, client: Any, cancel: Callable[[list[Any]], None] | None = None) -> None:
        self._client = client
        self._cancel = cancel
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            if name == "transact_write_items" and self._cancel is not None:
                self._cancel(kwargs["TransactItems"])
            return attribute(*args, **kwargs)

        return call


def cancelled(reasons: list[dict[str, Any]]) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
            "CancellationReasons": reasons,
        },
        "TransactWriteItems",
    )


@pytest.fixture
def dynamo_run(dynamodb: Any, table: str) -> DynamoState:
    create_table(dynamodb, table)
    state = DynamoState(dynamodb, table)
    running_run(state, 1000)
    return state


def test_dynamodb_a_batch_of_outcomes_is_one_transaction_and_one_read(
    dynamo_run: DynamoState,
) -> None:
    client = Recording(dynamo_run.client)
    state = DynamoState(client, dynamo_run.table)
    batch = {f"k{n}": S for n in range(10)}

    state.record_outcomes("r1", batch, T0)
    first = dict(client.calls)
    client.calls.clear()
    state.record_outcomes("r1", batch, T0)  # all recorded already: one cancelled attempt
    repeat = dict(client.calls)
    client.calls.clear()
    state.record_outcomes("r1", dict.fromkeys([f"f{n}" for n in range(10)], F), T0)
    state.record_outcomes("r1", dict.fromkeys([f"f{n}" for n in range(10)], S), T0)
    provisional_then_applied = dict(client.calls)
    client.calls.clear()
    state.record_outcomes("r1", {f"b{n}": S for n in range(100)}, T0)
    hundred = dict(client.calls)

    # 0.2 requests per outcome in a batch of 10, the worker's receive size.
    assert first == {"transact_write_items": 1, "get_item": 1}
    assert repeat == {"transact_write_items": 1, "get_item": 1}
    # A replacement costs one cancelled attempt more (it first assumes no outcome yet).
    assert provisional_then_applied == {"transact_write_items": 3, "get_item": 2}
    # 99 outcomes and the run's update fill one transaction.
    assert hundred == {"transact_write_items": 2, "get_item": 1}
    assert counts(state.get_run("r1")) == (120, 0, 0, 0)


def test_dynamodb_a_conflicting_transaction_is_retried(
    dynamo_run: DynamoState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dynamodb_outcomes.time, "sleep", lambda _: None)
    conflicts = iter([True, True])

    def conflict_twice(items: list[Any]) -> None:
        if next(conflicts, False):  # another worker's batch held the run item
            raise cancelled(
                [{"Code": "None"}] * (len(items) - 1) + [{"Code": "TransactionConflict"}]
            )

    client = Recording(dynamo_run.client, conflict_twice)
    state = DynamoState(client, dynamo_run.table)

    run = state.record_outcomes("r1", {"a": S, "b": DL}, T0)

    assert counts(run) == (1, 0, 1, 0)
    assert client.calls["transact_write_items"] == 3


def test_dynamodb_outcomes_that_keep_conflicting_fail_and_count_nothing(
    dynamo_run: DynamoState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dynamodb_outcomes.time, "sleep", lambda _: None)

    def always(items: list[Any]) -> None:
        raise cancelled([{"Code": "TransactionConflict"}] * len(items))

    state = DynamoState(Recording(dynamo_run.client, always), dynamo_run.table)

    with pytest.raises(StateError, match=r"outcomes of run r1 were not recorded after 8 attempts"):
        state.record_outcomes("r1", {"a": S}, T0)
    assert counts(dynamo_run.get_run("r1")) == (0, 0, 0, 0)
    assert dynamo_run.outcome("r1", "a") is None


def test_dynamodb_a_refused_transaction_is_a_state_error(dynamo_run: DynamoState) -> None:
    def too_big(items: list[Any]) -> None:
        raise cancelled([{"Code": "ItemCollectionSizeLimitExceeded"}] * len(items))

    state = DynamoState(Recording(dynamo_run.client, too_big), dynamo_run.table)

    with pytest.raises(StateError, match=r"refused \(ItemCollectionSizeLimitExceeded\)"):
        state.record_outcomes("r1", {"a": S}, T0)


def test_dynamodb_reads_the_outcome_when_a_cancellation_has_no_copy_of_it(
    dynamo_run: DynamoState,
) -> None:
    dynamo_run.record_outcomes("r1", {"a": F, "b": S}, T0)
    real = dynamo_run.client

    class WithoutItems:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def transact_write_items(self, **request: Any) -> Any:
            try:
                return real.transact_write_items(**request)
            except ClientError as exc:
                for reason in exc.response.get("CancellationReasons", []):
                    reason.pop("Item", None)
                raise

    state = DynamoState(WithoutItems(), dynamo_run.table)

    run = state.record_outcomes("r1", {"a": S, "b": F, "c": S}, T0)

    assert counts(run) == (3, 0, 0, 0)


def test_dynamodb_outcome_version_and_run_items_use_the_documented_keys(
    dynamo_run: DynamoState, dynamodb: Any
) -> None:
    dynamo_run.record_outcomes("r1", {"k1": S}, T0)
    dynamo_run.record_version("clientDepositUpdate", "D-1", V1)
    dynamo_run.acquire_lock("cron", "me", 60, T0, holder="host:1")

    def items() -> dict[tuple[str, str], dict[str, Any]]:
        scanned = dynamodb.scan(TableName=dynamo_run.table)["Items"]
        return {(item["pk"]["S"], item["sk"]["S"]): item for item in scanned}

    before = items()
    assert set(before) == {
        ("RUN#r1", "RUN"),
        ("RUN#r1", "OUTCOME#k1"),
        ("VERSION#clientDepositUpdate#D-1", "VERSION"),
        ("LOCK#cron", "LOCK"),
    }
    assert before[("RUN#r1", "OUTCOME#k1")]["status"] == {"S": "succeeded"}
    assert before[("VERSION#clientDepositUpdate#D-1", "VERSION")]["version"] == {"S": V1}
    assert before[("LOCK#cron", "LOCK")]["holder"] == {"S": "host:1"}
    # The run is listed under the index's OPEN partition until it is finished.
    assert before[("RUN#r1", "RUN")]["gsi1pk"] == {"S": "OPEN"}
    dynamo_run.mark_finished("r1", T0)
    assert items()[("RUN#r1", "RUN")]["gsi1pk"] == {"S": "RUN"}


def test_dynamodb_runs_from_before_the_open_partition_are_still_listed(
    dynamo_run: DynamoState, dynamodb: Any
) -> None:
    # A table written by the previous version: every run under the index's RUN partition.
    dynamodb.put_item(
        TableName=dynamo_run.table,
        Item={
            "pk": {"S": "RUN#old"},
            "sk": {"S": "RUN"},
            "gsi1pk": {"S": "RUN"},
            "gsi1sk": {"S": f"{to_iso(T0 - timedelta(days=1))}#old"},
            "run_id": {"S": "old"},
            "cron": {"S": "clientDepositUpdate"},
            "env": {"S": "local"},
            "mock": {"BOOL": False},
            "created_at": {"S": to_iso(T0 - timedelta(days=1))},
            "succeeded": {"N": "3"},
        },
    )

    assert [run.run_id for run in dynamo_run.list_runs()] == ["r1", "old"]
    assert [run.run_id for run in dynamo_run.list_runs(cron="clientDepositUpdate")] == [
        "r1",
        "old",
    ]
    old = dynamo_run.get_run("old")
    assert old is not None and (old.superseded, old.purged, old.abandoned) == (0, 0, False)
    assert dynamo_run.mark_finished("old", T0, purged=1)
    assert dynamo_run.get_run("old").status == "purged"  # type: ignore[union-attr]


def test_sqlite_tables_are_prefixed_and_the_file_is_in_wal_mode(tmp_path: Path) -> None:
    state = SqliteState(tmp_path / "nested" / "local.db")
    state.create_run(new_run())
    state.close()

    with sqlite3.connect(tmp_path / "nested" / "local.db") as conn:
        tables = {
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
            )
        }
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert tables and all(name.startswith("state_") for name in tables)
    assert journal == "wal"


def test_sqlite_failure_is_a_state_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "local.db").mkdir()

    with pytest.raises(StateError, match=r"SQLite state .*local\.db"):
        SqliteState(tmp_path / "local.db").get_run("r1")


_INCREMENT = """
import sys
from pathlib import Path
from raasctl.state.sqlite import SqliteState
state = SqliteState(Path(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    state.add_counts("r1", succeeded=1)
"""


def test_sqlite_counters_are_atomic_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "local.db"
    state = SqliteState(path)
    state.create_run(new_run())
    workers = [
        subprocess.Popen([sys.executable, "-c", _INCREMENT, str(path), "100"]) for _ in range(3)
    ]
    for _ in range(100):
        state.add_counts("r1", succeeded=1)

    assert [worker.wait(timeout=30) for worker in workers] == [0, 0, 0]
    run = state.get_run("r1")
    assert run is not None and run.succeeded == 400


_OUTCOMES = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from raasctl.state.base import EntryStatus
from raasctl.state.sqlite import SqliteState
state = SqliteState(Path(sys.argv[1]))
status = EntryStatus(sys.argv[2])
keys = [f"k{n}" for n in range(40)]
for start in range(0, len(keys), 10):
    state.record_outcomes("r1", dict.fromkeys(keys[start : start + 10], status), datetime.now(UTC))
"""


def test_sqlite_outcomes_count_once_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "local.db"
    state = SqliteState(path)
    running_run(state, 40)
    workers = [
        subprocess.Popen([sys.executable, "-c", _OUTCOMES, str(path), status])
        for status in ("failed", "succeeded", "failed", "dead_lettered")
    ]
    for start in range(0, 40, 10):
        state.record_outcomes("r1", {f"k{n}": S for n in range(start, start + 10)}, T0)

    assert [worker.wait(timeout=60) for worker in workers] == [0, 0, 0, 0]
    run = state.get_run("r1")
    # Whatever the order, succeeded wins over failed and dead_lettered, once per key.
    assert counts(run) == (40, 0, 0, 0)
    assert {state.outcome("r1", f"k{n}") for n in range(40)} == {S}
