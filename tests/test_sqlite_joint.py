"""Writes of several adapters on one SQLite file in one transaction (raasctl/sqlite.py
`Database.joint`), multi-row statements, and the worker's settler counting and deleting a
batch in one commit on the embedded queue and state."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from raasctl.errors import StateError
from raasctl.queues.base import OutgoingMessage
from raasctl.queues.sqlite import SqliteQueue
from raasctl.sqlite import ROWS_CHUNK, Database, execute_rows, rows_per_statement
from raasctl.state.base import EntryStatus, RunRecord
from raasctl.state.sqlite import SqliteState
from raasctl.worker.decision import Outcome
from raasctl.worker.lifecycle import Lifecycle
from raasctl.worker.messages import Settled
from raasctl.worker.results import Tally
from raasctl.worker.served import RunsServed
from raasctl.worker.settler import Settler

LEFT = "CREATE TABLE IF NOT EXISTS left_items (name TEXT PRIMARY KEY);"
RIGHT = "CREATE TABLE IF NOT EXISTS right_items (name TEXT PRIMARY KEY);"


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Database, Database]]:
    """Two Databases on one file, as the embedded state and queue are; the first reads rows
    as sqlite3.Row (as the state does)."""
    path = tmp_path / "env.db"
    left = Database(path, LEFT, row_factory=sqlite3.Row)
    right = Database(path, RIGHT)
    yield left, right
    left.close()
    right.close()


def names(db: Database, table: str) -> list[str]:
    return [row[0] for row in db.connection().execute(f"SELECT name FROM {table} ORDER BY name")]


def test_writes_of_two_databases_in_a_joint_commit_together(
    pair: tuple[Database, Database],
) -> None:
    left, right = pair
    right.connection()  # its table exists before the joint
    with left.joint():
        with left.transaction() as conn:
            conn.execute("INSERT INTO left_items VALUES ('a')")
        with right.writing() as conn:
            conn.execute("INSERT INTO right_items VALUES ('b')")
        # Not committed yet: another connection sees neither.
        other = sqlite3.connect(left.path)
        assert other.execute("SELECT COUNT(*) FROM right_items").fetchone()[0] == 0
        other.close()
    assert names(left, "left_items") == ["a"] and names(right, "right_items") == ["b"]


def test_a_joint_whose_block_raises_keeps_nothing(pair: tuple[Database, Database]) -> None:
    left, right = pair
    right.connection()
    with pytest.raises(RuntimeError), left.joint():
        with right.transaction() as conn:
            conn.execute("INSERT INTO right_items VALUES ('b')")
        raise RuntimeError("after the writes")
    assert names(right, "right_items") == []


def test_a_failed_transaction_inside_a_joint_undoes_only_its_own_writes(
    pair: tuple[Database, Database],
) -> None:
    left, right = pair
    right.connection()
    with left.joint():
        with left.transaction() as conn:
            conn.execute("INSERT INTO left_items VALUES ('kept')")
        with pytest.raises(sqlite3.IntegrityError), right.transaction() as conn:
            conn.execute("INSERT INTO right_items VALUES ('undone')")
            conn.execute("INSERT INTO right_items VALUES ('undone')")  # a duplicate key
        with right.transaction() as conn:
            conn.execute("INSERT INTO right_items VALUES ('after')")
    assert names(left, "left_items") == ["kept"]
    assert names(right, "right_items") == ["after"]


def test_a_joint_that_sqlite_rolled_back_fails_instead_of_committing_the_rest(
    pair: tuple[Database, Database],
) -> None:
    left, right = pair
    right.connection()
    with pytest.raises(sqlite3.OperationalError, match="rolled back"), left.joint():
        with left.transaction() as conn:
            conn.execute("INSERT INTO left_items VALUES ('lost')")
        # As an I/O error or a full disk does: SQLite ends the whole transaction.
        with pytest.raises(RuntimeError), right.transaction() as conn:
            conn.execute("ROLLBACK")
            raise RuntimeError("the statement failed")
        # A write after that is refused, not committed on its own.
        with pytest.raises(sqlite3.OperationalError), right.writing() as conn:
            conn.execute("INSERT INTO right_items VALUES ('alone')")
    assert names(left, "left_items") == [] and names(right, "right_items") == []


def test_a_database_with_another_row_factory_cannot_join(pair: tuple[Database, Database]) -> None:
    left, right = pair
    left.connection()
    with pytest.raises(TypeError), right.joint(), left.writing():
        pass


def test_execute_rows_writes_every_row_in_chunks(tmp_path: Path) -> None:
    db = Database(tmp_path / "env.db", LEFT)
    rows = [(f"n{n:04d}",) for n in range(2 * ROWS_CHUNK + 7)]
    with db.transaction() as conn:
        execute_rows(conn, "INSERT INTO left_items (name) VALUES {values}", rows)
        execute_rows(conn, "INSERT INTO left_items (name) VALUES {values}", [])
    assert names(db, "left_items") == [name for (name,) in rows]
    db.close()


# ---------------------------------------------------------------- the settler


def test_the_embedded_state_joins_only_the_queue_on_its_own_file(tmp_path: Path) -> None:
    state = SqliteState(tmp_path / "env.db")
    assert state.writes_with(SqliteQueue(tmp_path / "env.db")) is not None
    assert state.writes_with(SqliteQueue(tmp_path / "other.db")) is None
    state.close()


class FailingCommit(SqliteState):
    """A state whose joint transaction fails at its end, as a commit that fails does."""

    @contextmanager
    def _joint(self) -> Iterator[None]:
        with super()._joint():
            yield
            raise StateError("the commit failed")


@pytest.mark.parametrize("commit_fails", [False, True])
def test_the_settler_counts_and_deletes_a_batch_together_or_not_at_all(
    tmp_path: Path, commit_fails: bool
) -> None:
    path = tmp_path / "env.db"
    queue = SqliteQueue(path)
    state = (FailingCommit if commit_fails else SqliteState)(path)
    now = datetime.now(UTC)
    state.create_run(RunRecord(run_id="r", cron="c", env="e", mock=False, created_at=now))
    queue.send_batch([OutgoingMessage(f"m{n}", f"G{n}", f"d{n}") for n in range(3)])
    state.finish_enqueue("r", entries=3, enqueued=3, invalid=0, duplicates=0)
    received = queue.receive(10, 0)
    tally, lifecycle = Tally(), Lifecycle()
    settler = Settler(queue, RunsServed(state, lambda: now), tally, lifecycle, clock=lambda: 0.0)

    settler._flush(
        [
            Settled(Outcome.SUCCEEDED, "r", f"k{n}", message.receipt_handle)
            for n, message in enumerate(received)
        ]
    )

    run = state.get_run("r")
    assert run is not None
    if commit_fails:
        assert (run.succeeded, queue.depth().in_flight) == (0, 3)
        assert state.outcome("r", "k0") is None
        assert (tally.snapshot().succeeded, tally.snapshot().errors) == (0, 3)
    else:
        assert (run.succeeded, run.status) == (3, "complete")
        assert state.outcome("r", "k0") is EntryStatus.SUCCEEDED
        assert queue.depth().empty and tally.snapshot().succeeded == 3
    queue.close()
    state.close()


def test_execute_rows_keeps_within_the_connection_s_parameter_limit(tmp_path: Path) -> None:
    db = Database(tmp_path / "env.db", LEFT)
    rows = [(f"n{n:04d}",) for n in range(1200)]
    with db.transaction() as conn:
        conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
        assert rows_per_statement(conn, 13) == 76
        execute_rows(conn, "INSERT INTO left_items (name) VALUES {values}", rows)
    assert names(db, "left_items") == [name for (name,) in rows]
    db.close()
