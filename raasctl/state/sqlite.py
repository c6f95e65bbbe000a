"""State in the environment's embedded SQLite file (tables prefixed `state_`).

The same file holds the embedded queue and ledger, and the worker calls in from many threads
and several processes; raasctl/sqlite.py gives each thread its own connection to the file in
WAL mode. Every write here is one statement (autocommit, under the file's writer lock):
counters change with `SET x = x + ?`, never read-modify-write in Python, and a lock is taken
by one upsert. The tables come from the migrations below, each applied once per file
(raasctl/migrations.py); a run's columns are named like RunRecord's fields (state/records.py).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from raasctl.codes import ErrorCode
from raasctl.errors import StateError
from raasctl.migrations import Migrations, add_column, execute_script, rebuild, without_rowid
from raasctl.queues.base import Queue
from raasctl.queues.sqlite import SqliteQueue
from raasctl.sqlite import Database, execute_rows, rows_in
from raasctl.state.base import (
    AppliedEntry,
    Claim,
    Entry,
    EntryStatus,
    Known,
    LockInfo,
    RunRecord,
    State,
    known_of,
    transition,
)
from raasctl.state.records import RUN_FIELDS, from_iso, run_from_fields, run_to_fields, to_iso
from raasctl.state.sqlite_entries import (
    RECORD_APPLIED,
    UPSERT_VERSION,
    applied_in,
    outcomes_in,
    state_errors,
    versions_in,
    write_applied,
)
from raasctl.state.sqlite_stats import m007_run_stats
from raasctl.state.sqlite_workers import SqliteWorkers, create_tables

MIGRATIONS = Migrations("state")


@MIGRATIONS
def m001_runs_applied_locks(conn: sqlite3.Connection) -> None:
    """The first layout."""
    execute_script(
        conn,
        """
CREATE TABLE IF NOT EXISTS state_runs (
    run_id        TEXT PRIMARY KEY,
    cron          TEXT NOT NULL,
    env           TEXT NOT NULL,
    mock          INTEGER NOT NULL,
    created_at    TEXT NOT NULL,
    entries       INTEGER NOT NULL DEFAULT 0,
    enqueued      INTEGER NOT NULL DEFAULT 0,
    invalid       INTEGER NOT NULL DEFAULT 0,
    duplicates    INTEGER NOT NULL DEFAULT 0,
    total         INTEGER,
    succeeded     INTEGER NOT NULL DEFAULT 0,
    failed        INTEGER NOT NULL DEFAULT 0,
    dead_lettered INTEGER NOT NULL DEFAULT 0,
    retries       INTEGER NOT NULL DEFAULT 0,
    started_at    TEXT,
    finished_at   TEXT
);
CREATE INDEX IF NOT EXISTS state_runs_created ON state_runs (created_at DESC, run_id DESC);
CREATE TABLE IF NOT EXISTS state_applied (
    key        TEXT PRIMARY KEY,
    run_id     TEXT NOT NULL,
    applied_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS state_locks (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
""",
    )


@MIGRATIONS
def m002_run_error(conn: sqlite3.Connection) -> None:
    """Why enqueueing stopped early (RunRecord.error)."""
    add_column(conn, "state_runs", "error TEXT")


@MIGRATIONS
def m003_applied_without_rowid(conn: sqlite3.Connection) -> None:
    """One B-tree for the idempotency records, so recording a key changes one page (see
    raasctl/sinks/sqlite.py)."""
    if not without_rowid(conn, "state_applied"):
        rebuild(
            conn,
            "state_applied",
            "CREATE TABLE {table} (key TEXT PRIMARY KEY, run_id TEXT NOT NULL,"
            " applied_at TEXT NOT NULL) WITHOUT ROWID",
        )


@MIGRATIONS
def m004_outcomes_versions_lock_holders(conn: sqlite3.Connection) -> None:
    """Per-entry outcomes (a run's counters move only with them), the newest version applied
    per record, the superseded/purged counters and the abandoned flag, and who holds a lock."""
    for column in (
        "superseded INTEGER NOT NULL DEFAULT 0",
        "purged INTEGER NOT NULL DEFAULT 0",
        "abandoned INTEGER NOT NULL DEFAULT 0",
    ):
        add_column(conn, "state_runs", column)
    add_column(conn, "state_locks", "holder TEXT NOT NULL DEFAULT ''")
    execute_script(
        conn,
        """
CREATE TABLE IF NOT EXISTS state_outcomes (
    run_id     TEXT NOT NULL,
    key        TEXT NOT NULL,
    status     TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state_versions (
    cron      TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    version   TEXT NOT NULL,
    PRIMARY KEY (cron, entity_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS state_runs_open ON state_runs (created_at) WHERE finished_at IS NULL;
CREATE TABLE IF NOT EXISTS state_claims (
    key        TEXT PRIMARY KEY,
    run_id     TEXT NOT NULL,
    claimed_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state_purges (
    env       TEXT PRIMARY KEY,
    purged_at TEXT NOT NULL
);
""",
    )


@MIGRATIONS
def m005_claims_sent(conn: sqlite3.Connection) -> None:
    """Whether a claimed key's message was taken by the queue (confirmed after the send)."""
    add_column(conn, "state_claims", "sent INTEGER NOT NULL DEFAULT 0")


@MIGRATIONS
def m006_workers_and_rate(conn: sqlite3.Connection) -> None:
    """The worker registry and the global rate schedule (raasctl/state/sqlite_workers.py)."""
    create_tables(conn)


MIGRATIONS(m007_run_stats)  # per-second run statistics: raasctl/state/sqlite_stats.py


# The run's fields are state_runs' columns, named alike (raasctl/state/records.py).
_INSERT_RUN = (
    f"INSERT INTO state_runs ({', '.join(RUN_FIELDS)})"
    f" VALUES ({', '.join('?' for _ in RUN_FIELDS)})"
)


def holds_state(conn: sqlite3.Connection) -> bool:
    """Whether the file of `conn` holds the SQLite state's tables."""
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'state_applied'"
    ).fetchone()
    return row is not None


class SqliteState(State):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = Database(path, MIGRATIONS, row_factory=sqlite3.Row)

    def create_run(self, run: RunRecord) -> None:
        with self._errors():
            try:
                self._write(_INSERT_RUN, tuple(run_to_fields(run).values()))
            except sqlite3.IntegrityError:
                raise StateError(f"run {run.run_id} already exists") from None

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
        with self._errors():
            rows, _ = self._write(
                "UPDATE state_runs SET entries = ?, enqueued = ?, invalid = ?,"
                " duplicates = ?, total = ?, error = ? WHERE run_id = ? RETURNING *",
                (entries, enqueued, invalid, duplicates, enqueued, error, run_id),
            )
        return _record(rows, run_id)

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
        started = to_iso(now or datetime.now(UTC))
        with self._errors():
            # One statement: the increment and the returned record are the same snapshot.
            rows, _ = self._write(
                "UPDATE state_runs SET succeeded = succeeded + ?, failed = failed + ?,"
                " dead_lettered = dead_lettered + ?, retries = retries + ?,"
                " started_at = COALESCE(started_at, ?) WHERE run_id = ? RETURNING *",
                (succeeded, failed, dead_lettered, retries, started, run_id),
            )
        return _record(rows, run_id)

    def record_outcomes(
        self,
        run_id: str,
        outcomes: Mapping[str, EntryStatus],
        now: datetime,
        *,
        applied: Sequence[AppliedEntry] = (),
    ) -> RunRecord | None:
        at = to_iso(now)
        with self._errors(), self._db.transaction() as conn:
            write_applied(conn, applied, at)
            known = conn.execute("SELECT 1 FROM state_runs WHERE run_id = ?", (run_id,))
            if known.fetchone() is None:
                return None  # no outcome is written for a run that does not exist
            recorded = outcomes_in(conn, run_id, list(outcomes))
            delta: Counter[str] = Counter()
            changed = []
            for key, status in outcomes.items():
                old = recorded.get(key)
                if not transition(old, status):
                    continue
                changed.append((run_id, key, status.value, at))
                delta[status.value] += 1
                if old is not None:
                    delta[old.value] -= 1
            execute_rows(
                conn,
                "INSERT INTO state_outcomes (run_id, key, status, updated_at) VALUES {values}"
                " ON CONFLICT (run_id, key) DO UPDATE SET status = excluded.status,"
                " updated_at = excluded.updated_at",
                changed,
            )
            assignments = ", ".join(f"{name} = {name} + ?" for name in _OUTCOME_COUNTERS)
            row = conn.execute(
                f"UPDATE state_runs SET {assignments}, started_at = COALESCE(started_at, ?)"
                " WHERE run_id = ? RETURNING *",
                (*(delta[name] for name in _OUTCOME_COUNTERS), at, run_id),
            ).fetchone()
        return None if row is None else _to_record(row)

    def known(self, entries: Sequence[Entry]) -> dict[str, Known]:
        with self._errors():
            conn = self._db.connection()
            applied = applied_in(conn, [entry.key for entry in entries])
            versions = versions_in(conn, entries)
        return {
            entry.key: known_of(entry.key in applied, versions.get((entry.cron, entry.entity_id)))
            for entry in entries
        }

    def outcome(self, run_id: str, key: str) -> EntryStatus | None:
        with self._errors():
            return outcomes_in(self._db.connection(), run_id, [key]).get(key)

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
        """False also for an unknown run: nothing was set."""
        with self._errors():
            _, changed = self._write(
                "UPDATE state_runs SET finished_at = ?, total = COALESCE(?, total),"
                " purged = purged + ?, abandoned = abandoned OR ?, error = COALESCE(error, ?)"
                " WHERE run_id = ? AND finished_at IS NULL",
                (to_iso(now), total, purged, abandoned, error, run_id),
            )
        return changed == 1

    def claims(self, keys: Sequence[str]) -> dict[str, Claim]:
        found: dict[str, Claim] = {}
        sql = "SELECT key, run_id, claimed_at, sent FROM state_claims WHERE key IN ({marks})"
        with self._errors():
            for key, run_id, claimed_at, sent in rows_in(self._db.connection(), sql, keys):
                at = from_iso(claimed_at)
                assert at is not None
                found[key] = Claim(key, run_id, at, bool(sent))
        return found

    def put_claims(
        self, run_id: str, keys: Sequence[str], now: datetime, *, sent: bool = False
    ) -> None:
        at = to_iso(now)
        with self._errors(), self._db.transaction() as conn:
            conn.executemany(
                "INSERT INTO state_claims (key, run_id, claimed_at, sent) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET run_id = excluded.run_id,"
                " claimed_at = excluded.claimed_at, sent = excluded.sent",
                [(key, run_id, at, sent) for key in keys],
            )

    def record_purge(self, env: str, now: datetime) -> None:
        with self._errors():
            self._write(
                "INSERT INTO state_purges (env, purged_at) VALUES (?, ?)"
                " ON CONFLICT (env) DO UPDATE SET purged_at = excluded.purged_at",
                (env, to_iso(now)),
            )

    def last_purge(self, env: str) -> datetime | None:
        with self._errors():
            row = (
                self._db.connection()
                .execute("SELECT purged_at FROM state_purges WHERE env = ?", (env,))
                .fetchone()
            )
        return None if row is None else from_iso(row[0])

    def open_runs(self, *, limit: int = 200) -> list[RunRecord]:
        with self._errors():
            rows = (
                self._db.connection()
                .execute(
                    "SELECT * FROM state_runs WHERE finished_at IS NULL"
                    " ORDER BY created_at, run_id LIMIT ?",
                    (limit,),
                )
                .fetchall()
            )
        return [_to_record(row) for row in rows]

    def applied_version(self, cron: str, entity_id: str) -> str | None:
        with self._errors():
            row = (
                self._db.connection()
                .execute(
                    "SELECT version FROM state_versions WHERE cron = ? AND entity_id = ?",
                    (cron, entity_id),
                )
                .fetchone()
            )
        return None if row is None else str(row[0])

    def record_version(self, cron: str, entity_id: str, version: str) -> None:
        with self._errors():
            self._write(UPSERT_VERSION, (cron, entity_id, version))

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._errors():
            row = (
                self._db.connection()
                .execute("SELECT * FROM state_runs WHERE run_id = ?", (run_id,))
                .fetchone()
            )
        return None if row is None else _to_record(row)

    def list_runs(self, *, limit: int = 20, cron: str | None = None) -> list[RunRecord]:
        where, params = ("WHERE cron = ?", (cron,)) if cron is not None else ("", ())
        with self._errors():
            rows = (
                self._db.connection()
                .execute(
                    f"SELECT * FROM state_runs {where}"
                    " ORDER BY created_at DESC, run_id DESC LIMIT ?",
                    (*params, limit),
                )
                .fetchall()
            )
        return [_to_record(row) for row in rows]

    def is_applied(self, key: str) -> bool:
        with self._errors():
            row = (
                self._db.connection().execute("SELECT 1 FROM state_applied WHERE key = ?", (key,))
            ).fetchone()
        return row is not None

    def applied_keys(self, keys: Sequence[str]) -> set[str]:
        with self._errors():
            return applied_in(self._db.connection(), keys)

    def record_applied(self, key: str, run_id: str, now: datetime) -> bool:
        # The SQLite ledger, when it shares this file, has written the record with its apply:
        # a read then spares a write (and the wait for the file's writer lock).
        if self.is_applied(key):
            return False
        with self._errors():
            _, changed = self._write(RECORD_APPLIED, (key, run_id, to_iso(now)))
        return changed == 1

    def acquire_lock(
        self, name: str, owner: str, ttl_s: int, now: datetime, *, holder: str = ""
    ) -> bool:
        expires_at = to_iso(now + timedelta(seconds=ttl_s))
        with self._errors():
            # Insert, or take over a lock that is ours (re-entrant: extends it) or has expired;
            # an upsert whose WHERE fails changes no row, which is how "held by another" shows.
            _, changed = self._write(
                "INSERT INTO state_locks (name, owner, expires_at, holder) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner,"
                " expires_at = excluded.expires_at, holder = excluded.holder"
                " WHERE state_locks.owner = excluded.owner OR state_locks.expires_at < ?",
                (name, owner, expires_at, holder, to_iso(now)),
            )
        return changed == 1

    def release_lock(self, name: str, owner: str) -> None:
        """Releasing a lock another owner holds (say, after ours expired) leaves it alone."""
        with self._errors():
            self._write("DELETE FROM state_locks WHERE name = ? AND owner = ?", (name, owner))

    def lock_info(self, name: str) -> LockInfo | None:
        with self._errors():
            row = (
                self._db.connection()
                .execute(
                    "SELECT owner, holder, expires_at FROM state_locks WHERE name = ?", (name,)
                )
                .fetchone()
            )
        if row is None:
            return None
        expires_at = from_iso(row["expires_at"])
        assert expires_at is not None
        return LockInfo(name, row["owner"], row["holder"], expires_at)

    def break_lock(self, name: str) -> bool:
        with self._errors():
            _, changed = self._write("DELETE FROM state_locks WHERE name = ?", (name,))
        return changed == 1

    def workers(self) -> SqliteWorkers:
        return SqliteWorkers(self._db, self.path)

    def writes_with(self, queue: Queue) -> Callable[[], AbstractContextManager[None]] | None:
        """The embedded queue on this state's file joins its transactions (raasctl/sqlite.py
        `Database.joint`); a failure of the joint's own begin or commit is a StateError."""
        if not isinstance(queue, SqliteQueue) or not queue.shares_file(self.path):
            return None
        return self._joint

    @contextmanager
    def _joint(self) -> Iterator[None]:
        with self._errors(), self._db.joint():
            yield

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: str, parameters: Sequence[object]) -> tuple[list[sqlite3.Row], int]:
        """One write statement in autocommit mode: its rows (RETURNING) and row count. The
        rows are read before the file's writer lock is let go (the statement holds SQLite's
        write lock until then)."""
        with self._db.writing() as conn:
            cursor = conn.execute(sql, parameters)
            return cursor.fetchall(), cursor.rowcount

    def _errors(self) -> AbstractContextManager[None]:
        return state_errors(self.path)


_OUTCOME_COUNTERS = tuple(status.value for status in EntryStatus)


def _record(rows: list[sqlite3.Row], run_id: str) -> RunRecord:
    if not rows:
        raise StateError(f"run {run_id} not found", code=ErrorCode.RUN_NOT_FOUND)
    return _to_record(rows[0])


def _to_record(row: sqlite3.Row) -> RunRecord:
    return run_from_fields(dict(zip(row.keys(), row, strict=True)))
