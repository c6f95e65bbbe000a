"""Connections to the environment's SQLite file, shared by the embedded queue, state and ledger.

The three adapters live in one file and are used from many threads (the worker's slots) and
several processes (two workers, or a run beside a worker) at once. Every rule below exists
because breaking it shows up as "database is locked" under load:

- One connection per thread and process. A connection is used by the thread that opened it,
  and never by a forked child (SQLite forbids carrying one across a fork).
- The busy timeout is the first thing set (`sqlite3.connect(timeout=...)` sets it as the file
  is opened), so even the first statement waits for a writer instead of failing.
- WAL mode is switched on once per file. Switching takes a read lock and then upgrades it to
  an exclusive one, and SQLite does not wait on the busy timeout for that upgrade: two
  connections switching a fresh file at once make one of them fail at once. The switch is
  serialised by a process-wide lock and retried on SQLITE_BUSY (for other processes) until
  the busy timeout has passed. Once the file is in WAL mode every new connection finds it so.
- The schema is brought up to date by each component's ordered, recorded migrations
  (raasctl/migrations.py) in one `BEGIN IMMEDIATE` transaction; a file already current only
  has its record read.
- Every write of more than one statement runs in `transaction()` (`BEGIN IMMEDIATE`): the
  write lock is taken up front, where the busy timeout applies. A deferred transaction that
  reads and then writes would need an upgrade, which in WAL mode fails at once (SQLITE_BUSY)
  when another connection committed since the read. A single statement in autocommit mode
  takes the lock it needs up front and is safe on its own (`writing()`).
- Writers of one process take turns on a lock of the process first (one per file, shared by
  the queue, state and ledger). SQLite's busy handler polls, sleeping 1, 2, 5, 10 ... ms
  between tries, so eight worker threads contending for the file's write lock spent most of
  their time asleep; a thread waiting on the process's lock wakes as soon as it is free. The
  busy timeout still arbitrates between processes.
- Adapters on one file may write in one transaction (`Database.joint()`): the embedded
  state records a batch's outcomes and the queue deletes its messages in one commit instead
  of two. Inside the block, the writes of every Database on the file, in that thread, go to
  the joint's connection, each `transaction()` as a savepoint of it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from raasctl.migrations import Migrations, migrate

BUSY_TIMEOUT_S = 30.0
# The WAL is copied back into the database (a checkpoint, with an fsync of each file) once it
# holds this many pages (4 KiB each). SQLite's default of 1,000 checkpoints every few thousand
# messages of a long send; 25,000 pages (a WAL file of about 100 MB while no reader holds an
# old snapshot) made enqueueing 1,000,000 mock messages about 8 % faster in paired runs.
WAL_AUTOCHECKPOINT_PAGES = 25_000

# Serialises switching files to WAL mode within the process (see the module docstring).
_WAL_SWITCH = threading.Lock()
# The writer lock of each file, by (process, real path).
_WRITERS: dict[tuple[int, str], threading.RLock] = {}
_WRITERS_GUARD = threading.Lock()
_RETRY_PAUSE_S = 0.01
# os.getpid() is a system call, and connection() runs for every statement: the pid is kept
# here and renewed in a forked child.
_pid = os.getpid()
_databases: weakref.WeakSet[Database] = weakref.WeakSet()
# The joint transaction each thread has open, by the file's real path (`Database.joint`).
_joints = threading.local()


class _Joint:
    """An open joint transaction: its connection, and whether SQLite rolled all of it back
    (an error such as a full disk ends the whole transaction, not only its statement)."""

    def __init__(self, conn: sqlite3.Connection, row_factory: object) -> None:
        self.conn = conn
        self.row_factory = row_factory
        self.broken = False


def _after_fork_in_child() -> None:
    """A lock another thread held at the fork would stay held in the child for ever: the
    child gets new ones (and opens its own connections, by the new pid)."""
    global _pid, _WAL_SWITCH, _WRITERS_GUARD
    _pid = os.getpid()
    _WAL_SWITCH = threading.Lock()
    _WRITERS_GUARD = threading.Lock()
    _WRITERS.clear()
    for database in _databases:
        database._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def current_pid() -> int:
    """This process's id (what os.getpid() returns, without a system call)."""
    return _pid


def _open_joints() -> dict[str, _Joint]:
    joints: dict[str, _Joint] | None = getattr(_joints, "open", None)
    if joints is None:
        joints = _joints.open = {}
    return joints


def _writer_lock(path: Path) -> threading.RLock:
    key = (_pid, os.path.realpath(path))
    with _WRITERS_GUARD:
        lock = _WRITERS.get(key)
        if lock is None:
            # Reentrant: a thread that nests writes deadlocks in SQLite (and times out with an
            # error) rather than hanging here.
            lock = _WRITERS[key] = threading.RLock()
        return lock


def _busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


class Database:
    """One SQLite file and a schema: a connection per thread and process, in autocommit mode
    (each statement is its own transaction unless `transaction()` groups several).

    `schema` is a component's Migrations, or (for a file of tables that never change, as in
    tests) a script of `CREATE ... IF NOT EXISTS` statements run on first use.
    `busy_timeout_s` is read when a connection is opened; `row_factory` is set on each."""

    def __init__(
        self,
        path: Path,
        schema: Migrations | str,
        *,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
        row_factory: Callable[[sqlite3.Cursor, tuple[Any, ...]], Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.schema = schema
        self.busy_timeout_s = busy_timeout_s
        self.row_factory = row_factory
        self._local = threading.local()
        self._lock = threading.Lock()
        # (pid, thread, connection) of every connection open
        self._opened: list[tuple[int, threading.Thread, sqlite3.Connection]] = []
        self._generation = 0  # bumped by close(): every thread then opens a new connection
        self._schema_ready = False
        self._writer_key: tuple[int, threading.RLock] | None = None  # (pid, lock)
        self._real: str | None = None  # the file's real path, once asked (joint())
        _databases.add(self)

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened (and the file and schema set up) on first use."""
        key = (_pid, self._generation)
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            if self._local.key == key:
                return conn
            if self._local.key[0] == _pid:
                conn.close()  # this thread's, left open by close() (see there)
        conn = self._open()
        self._local.conn = conn
        self._local.key = key
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, its write lock taken up front; rolled back when the block
        raises or the commit fails. Inside a `joint()` on the file, a savepoint of it."""
        joint = self._joint()
        if joint is not None:
            with self._joined(joint, "SAVEPOINT joined") as conn:
                yield conn
            return
        with self.writing() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # also when COMMIT itself failed
                    conn.execute("ROLLBACK")
                raise

    @contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection with the process's writer lock held, for one write
        statement in autocommit mode. Fetch a RETURNING statement's rows inside the block: the
        statement holds SQLite's write lock until they are read. Inside a `joint()` on the
        file, the statement is part of it."""
        joint = self._joint()
        if joint is not None:
            with self._joined(joint, None) as conn:
                yield conn
            return
        conn = self.connection()
        with self._writer():
            yield conn

    @contextmanager
    def joint(self) -> Iterator[None]:
        """One transaction for every write to the file in the block, by this Database or any
        other on the same file, from this thread: they commit together or not at all.
        Joining Databases must read rows as this one does or by position (a connection
        without a row factory joins any). Reads outside a write see the file as committed."""
        if self._joint() is not None:
            yield  # already inside one
            return
        key = self._real_path()
        with self.transaction() as conn:
            joint = _Joint(conn, self.row_factory)
            open_joints = _open_joints()
            open_joints[key] = joint
            try:
                yield
            finally:
                del open_joints[key]
            if joint.broken:
                raise sqlite3.OperationalError(
                    "the joint transaction was rolled back by an error inside it"
                )

    def _joint(self) -> _Joint | None:
        joints = getattr(_joints, "open", None)
        if not joints:
            return None
        return joints.get(self._real_path())

    def _real_path(self) -> str:
        if self._real is None:
            self._real = os.path.realpath(self.path)
        return self._real

    @contextmanager
    def _joined(self, joint: _Joint, savepoint: str | None) -> Iterator[sqlite3.Connection]:
        """The joint's connection for one write (`savepoint`: a block of several, undone
        alone when it raises)."""
        if joint.broken:
            raise sqlite3.OperationalError("the joint transaction was rolled back")
        if self.row_factory is not None and self.row_factory is not joint.row_factory:
            raise TypeError("a Database with its own row factory cannot join this transaction")
        conn = joint.conn
        if savepoint is not None:
            conn.execute(savepoint)
        try:
            yield conn
        except BaseException:
            if not conn.in_transaction:
                joint.broken = True  # SQLite ended the whole transaction
            elif savepoint is not None:
                conn.execute("ROLLBACK TO joined")
                conn.execute("RELEASE joined")
            raise
        if savepoint is not None:
            conn.execute("RELEASE joined")

    def _writer(self) -> threading.RLock:
        if self._writer_key is None or self._writer_key[0] != _pid:
            self._writer_key = (_pid, _writer_lock(self.path))
        return self._writer_key[1]

    def close(self) -> None:
        """Close this process's connections; a thread that comes back opens a new one.

        Another thread may be running a statement on its connection at this very moment
        (a worker's slot past its shutdown deadline), and closing a connection under a
        statement crashes the interpreter. So a connection of another thread that is still
        alive is left to that thread: it closes it when it next asks for a connection, or
        its thread-local storage does as the thread ends."""
        me = threading.current_thread()
        with self._lock:
            opened, self._opened = self._opened, []
            self._generation += 1
        for pid, owner, conn in opened:
            # A forked child leaves its parent's connections alone: closing one there could
            # release locks the parent still relies on.
            if pid == _pid and (owner is me or not owner.is_alive()):
                conn.close()

    # ------------------------------------------------------------------ opening

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout_s,  # the busy timeout, set as the file is opened
            isolation_level=None,  # autocommit: transactions are explicit and short
            check_same_thread=False,  # only so that close() can close every thread's
        )
        try:
            if self.row_factory is not None:
                conn.row_factory = self.row_factory
            self._use_wal(conn)
            # In WAL mode, NORMAL syncs the WAL at checkpoints instead of at every commit: a
            # process crash loses nothing committed (the WAL is in the OS's hands); only a
            # power loss can drop the last commits, which at-least-once delivery (redeliver
            # or resend) already allows for. FULL would fsync every commit, which caps a
            # worker near 1,000 messages a second.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
            self._create_schema(conn)
        except BaseException:
            conn.close()
            raise
        with self._lock:
            self._opened.append((_pid, threading.current_thread(), conn))
        return conn

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        # Reading the mode takes only a shared lock (and waits on the busy timeout).
        if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            return
        deadline = time.monotonic() + self.busy_timeout_s
        with _WAL_SWITCH:
            while True:
                try:
                    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                    break
                except sqlite3.OperationalError as exc:
                    # Another process switching (or using) the fresh file at this moment.
                    if not _busy(exc) or time.monotonic() >= deadline:
                        raise
                time.sleep(_RETRY_PAUSE_S)
        if mode != "wal":
            raise sqlite3.OperationalError(f"cannot use WAL mode (journal mode is {mode})")

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        if self._schema_ready:
            return
        # A write like any other: it takes its turn with the process's other writers. (Two
        # threads may both get here; the script only creates what is missing.)
        with self._writer():
            if self._schema_ready:
                return
            if isinstance(self.schema, Migrations):
                migrate(conn, self.schema)
            else:
                # executescript() would commit an open transaction first, so the whole
                # script, BEGIN IMMEDIATE included, goes in one call.
                try:
                    conn.executescript(f"BEGIN IMMEDIATE;\n{self.schema}\nCOMMIT;")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            self._schema_ready = True


# ---------------------------------------------------------------------- size and compaction


# Values bound in one `IN (...)`: well under SQLite's limit on bound parameters (32,766 since
# 3.32, 999 before).
IN_CHUNK = 500


def rows_in(
    conn: sqlite3.Connection, sql: str, values: Sequence[Any], *, first: Sequence[Any] = ()
) -> Iterator[Any]:
    """The rows of `sql`, whose `{marks}` is an IN list of `values`, asked in chunks of
    IN_CHUNK; `first` are the parameters bound before the list."""
    for start in range(0, len(values), IN_CHUNK):
        chunk = values[start : start + IN_CHUNK]
        marks = ", ".join("?" * len(chunk))
        yield from conn.execute(sql.format(marks=marks), (*first, *chunk))


def execute_in(
    conn: sqlite3.Connection, sql: str, values: Sequence[Any], *, first: Sequence[Any] = ()
) -> None:
    """`rows_in` for a statement that returns no rows (an UPDATE): run in chunks of
    IN_CHUNK, nothing when there are no `values`."""
    for _ in rows_in(conn, sql, values, first=first):
        pass


# Rows written by one multi-row statement (`execute_rows`), when SQLite's limit on bound
# parameters allows that many rows of the statement's width.
ROWS_CHUNK = 500


def rows_per_statement(conn: sqlite3.Connection, width: int, most: int = ROWS_CHUNK) -> int:
    """How many rows of `width` parameters one statement may bind: up to `most`, within the
    connection's limit (32,766 parameters since SQLite 3.32, 999 before)."""
    return max(1, min(most, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width))


def execute_rows(conn: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """Run `sql`, whose `{values}` is a VALUES list, for all `rows` (of one width) in a few
    statements of up to ROWS_CHUNK rows, instead of `executemany`'s one per row: the sqlite3
    module lets go of the GIL and takes it back around every statement it steps, and under
    the file's writer lock each time back may mean waiting for another thread's Python."""
    if not rows:
        return
    width = len(rows[0])
    one = "(" + ", ".join("?" * width) + ")"
    step = rows_per_statement(conn, width)
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        values = ", ".join([one] * len(chunk))
        conn.execute(sql.format(values=values), [value for row in chunk for value in row])


def file_bytes(path: Path) -> int:
    """The file's size on disk with its write-ahead log, 0 when there is none."""
    total = 0
    for part in (path, path.with_name(path.name + "-wal")):
        with suppress(FileNotFoundError):
            total += part.stat().st_size
    return total


def compact(path: Path, busy_timeout_s: float = BUSY_TIMEOUT_S) -> tuple[int, int]:
    """VACUUM the file and fold its write-ahead log back in; (bytes before, bytes after).

    SQLite reuses freed pages but never gives them back to the file system by itself, so a
    purge of millions of messages leaves the file as large as it was (and slower to write).
    VACUUM rewrites it; in WAL mode the rewrite lands in the log, and the TRUNCATE
    checkpoint shrinks both. It waits on the busy timeout for other writers."""
    before = file_bytes(path)
    conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return before, file_bytes(path)
