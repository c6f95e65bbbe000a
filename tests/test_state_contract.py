"""One contract suite for the State port, run against SQLite and DynamoDB (moto)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from raasctl.codes import ErrorCode
from raasctl.errors import StateError
from raasctl.state.base import RunRecord, State
from raasctl.state.dynamodb import DynamoState, create_table
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
