"""The shared SQLite connection handling (raasctl/sqlite.py) on real files."""

from __future__ import annotations

import multiprocessing
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from raasctl.sqlite import Database

SCHEMA = "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);"


def pragma(conn: sqlite3.Connection, name: str) -> object:
    return conn.execute(f"PRAGMA {name}").fetchone()[0]


def test_a_connection_is_in_wal_mode_with_normal_sync_and_a_busy_timeout(tmp_path: Path) -> None:
    db = Database(tmp_path / "env.db", SCHEMA, busy_timeout_s=2.5)
    conn = db.connection()
    assert pragma(conn, "journal_mode") == "wal"
    assert pragma(conn, "synchronous") == 1  # NORMAL
    assert pragma(conn, "busy_timeout") == 2500
    assert conn.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 0
    db.close()


def hold_write_lock(path: Path) -> sqlite3.Connection:
    """A connection holding the write lock of a file still in rollback-journal mode, as a
    process that is switching the fresh file to WAL at the same moment does."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("BEGIN IMMEDIATE")
    return conn


def test_the_wal_switch_waits_for_another_connection_that_blocks_it(tmp_path: Path) -> None:
    # Switching to WAL takes a read lock and then upgrades it, and SQLite does not wait on the
    # busy timeout for that upgrade: without a retry this fails at once ("database is locked").
    path = tmp_path / "env.db"
    writer = hold_write_lock(path)
    timer = threading.Timer(0.3, lambda: writer.execute("COMMIT"))
    timer.start()
    started = time.monotonic()
    try:
        conn = Database(path, SCHEMA, busy_timeout_s=5).connection()
    finally:
        timer.join()
        writer.close()
    assert time.monotonic() - started >= 0.25
    assert pragma(conn, "journal_mode") == "wal"


def test_the_wal_switch_gives_up_after_the_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "env.db"
    writer = hold_write_lock(path)
    started = time.monotonic()
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            Database(path, SCHEMA, busy_timeout_s=0.2).connection()
    finally:
        writer.close()
    assert time.monotonic() - started >= 0.2


def _insert_at_once(db: Database, threads: int) -> list[BaseException]:
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def insert(n: int) -> None:
        barrier.wait()
        try:
            db.connection().execute("INSERT INTO items (name) VALUES (?)", (f"item {n}",))
        except sqlite3.Error as exc:
            errors.append(exc)

    started = [threading.Thread(target=insert, args=(n,)) for n in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join()
    return errors


def test_threads_opening_a_fresh_file_at_once_all_succeed(tmp_path: Path) -> None:
    for round_ in range(10):
        db = Database(tmp_path / f"{round_}.db", SCHEMA)
        assert _insert_at_once(db, 8) == []
        assert db.connection().execute("SELECT COUNT(*) FROM items").fetchone()[0] == 8
        db.close()


def test_writers_of_one_process_take_turns_without_the_busy_timeout(tmp_path: Path) -> None:
    # No busy timeout at all: were the threads to meet SQLite's write lock, the losers would
    # fail at once with "database is locked". Two Database objects, as the queue and the state
    # are, under two spellings of one path, share the process's writer lock.
    first = Database(tmp_path / "env.db", SCHEMA, busy_timeout_s=0)
    second = Database(tmp_path / "sub" / ".." / "env.db", SCHEMA, busy_timeout_s=0)
    (tmp_path / "sub").mkdir()
    first.connection()  # the file is in WAL mode before the race
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def write(n: int) -> None:
        db = first if n % 2 else second
        db.connection()  # opened (schema and all) before the race: only writes race
        barrier.wait()
        try:
            for i in range(25):
                with db.transaction() as conn:
                    conn.execute("INSERT INTO items (name) VALUES (?)", (f"{n}-{i}",))
                with db.writing() as conn:
                    conn.execute(
                        "UPDATE items SET name = name || '.' WHERE name = ?", (f"{n}-{i}",)
                    )
        except sqlite3.Error as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert first.connection().execute("SELECT COUNT(*) FROM items").fetchone()[0] == 200
    first.close()
    second.close()


def test_each_thread_has_its_own_connection(tmp_path: Path) -> None:
    db = Database(tmp_path / "env.db", SCHEMA)
    mine = db.connection()
    other: list[sqlite3.Connection] = []
    thread = threading.Thread(target=lambda: other.append(db.connection()))
    thread.start()
    thread.join()
    assert db.connection() is mine
    assert other[0] is not mine
    db.close()


def test_close_makes_every_thread_open_a_new_connection(tmp_path: Path) -> None:
    db = Database(tmp_path / "env.db", SCHEMA)
    before = db.connection()
    db.close()
    with pytest.raises(sqlite3.ProgrammingError):  # closed
        before.execute("SELECT 1")
    after = db.connection()
    assert after is not before
    assert after.execute("SELECT 1").fetchone()[0] == 1
    db.close()


_CLOSE_RACE = """
import sys, threading, time
from pathlib import Path
from raasctl.sqlite import Database

db = Database(Path(sys.argv[1]), "CREATE TABLE IF NOT EXISTS t (x);")
with db.transaction() as conn:
    conn.executemany("INSERT INTO t VALUES (?)", [(n,) for n in range(2000)])
stop = threading.Event()

def use():
    while not stop.is_set():
        db.connection().execute("SELECT SUM(x) FROM t").fetchone()
        with db.transaction() as conn:
            conn.execute("UPDATE t SET x = x + 1 WHERE rowid = 1")

threads = [threading.Thread(target=use) for _ in range(4)]
for thread in threads:
    thread.start()
end = time.monotonic() + 1.0
while time.monotonic() < end:
    db.close()
    time.sleep(0.001)
stop.set()
for thread in threads:
    thread.join()
print("ok")
"""


def test_close_while_other_threads_run_statements_does_not_crash(tmp_path: Path) -> None:
    # Closing a connection under another thread's statement kills the interpreter
    # (SIGSEGV), hence a process of its own; it used to within a tenth of a second.
    result = subprocess.run(
        [sys.executable, "-c", _CLOSE_RACE, str(tmp_path / "env.db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr


def test_the_schema_waits_for_a_writer_instead_of_failing(tmp_path: Path) -> None:
    path = tmp_path / "env.db"
    Database(path, "CREATE TABLE IF NOT EXISTS other (x);").connection()  # the file is in WAL
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    timer = threading.Timer(0.2, lambda: writer.execute("COMMIT"))
    timer.start()
    try:
        conn = Database(path, SCHEMA, busy_timeout_s=5).connection()
    finally:
        timer.join()
        writer.close()
    assert conn.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 0


def test_a_transaction_is_rolled_back_when_its_block_raises(tmp_path: Path) -> None:
    db = Database(tmp_path / "env.db", SCHEMA)
    with pytest.raises(RuntimeError), db.transaction() as conn:
        conn.execute("INSERT INTO items (name) VALUES ('a')")
        raise RuntimeError("stop")
    conn = db.connection()
    assert not conn.in_transaction
    assert conn.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 0


def test_a_transaction_holds_the_write_lock_from_its_start(tmp_path: Path) -> None:
    db = Database(tmp_path / "env.db", SCHEMA)
    other = sqlite3.connect(tmp_path / "env.db", isolation_level=None, timeout=0)
    # No statement has run in the transaction yet, and another writer is already shut out.
    with db.transaction(), pytest.raises(sqlite3.OperationalError, match="locked"):
        other.execute("BEGIN IMMEDIATE")
    other.execute("BEGIN IMMEDIATE")
    other.execute("ROLLBACK")
    other.close()
    db.close()


def _use_in_child(db: Database, parent_conn_id: int, out: multiprocessing.Queue[object]) -> None:
    conn = db.connection()
    conn.execute("INSERT INTO items (name) VALUES ('child')")
    out.put(id(conn) != parent_conn_id)
    db.close()  # must leave the parent's connection alone


def test_a_forked_child_opens_its_own_connection_and_leaves_the_parents(tmp_path: Path) -> None:
    db = Database(tmp_path / "env.db", SCHEMA)
    parent = db.connection()
    parent.execute("INSERT INTO items (name) VALUES ('parent')")
    context = multiprocessing.get_context("fork")
    out: multiprocessing.Queue[object] = context.Queue()
    child = context.Process(target=_use_in_child, args=(db, id(parent), out))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert out.get(timeout=5) is True
    assert db.connection() is parent  # still open and still this thread's
    names = {row[0] for row in parent.execute("SELECT name FROM items")}
    assert names == {"parent", "child"}
    db.close()
