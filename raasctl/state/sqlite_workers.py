"""The worker registry and the global rate schedule in the environment's SQLite file
(tables `state_workers` and `state_rate`, made by the state's migration m006).

Several processes on one machine share them: a lease is one upsert statement, so the
file's write lock makes it atomic, and every process reads the same clock.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import AbstractContextManager
from pathlib import Path

from raasctl.migrations import execute_script
from raasctl.sqlite import Database
from raasctl.state.records import from_iso, to_iso
from raasctl.state.sqlite_entries import state_errors
from raasctl.state.workers import Lease, WorkerRecord, WorkerStore

_COLUMNS = (
    "worker_id",
    "env",
    "host",
    "pid",
    "crons",
    "started_at",
    "refreshed_at",
    "processed",
    "per_second",
    "rate_scope",
    "rate_limit",
    "refresh_s",
)


def create_tables(conn: sqlite3.Connection) -> None:
    """The body of the state's migration m006_workers_and_rate."""
    execute_script(
        conn,
        """
CREATE TABLE IF NOT EXISTS state_workers (
    worker_id    TEXT PRIMARY KEY,
    env          TEXT NOT NULL,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    crons        TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    refreshed_at TEXT NOT NULL,
    processed    INTEGER NOT NULL DEFAULT 0,
    per_second   REAL NOT NULL DEFAULT 0,
    rate_scope   TEXT NOT NULL DEFAULT 'process',
    rate_limit   REAL,
    refresh_s    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS state_workers_env ON state_workers (env, started_at);
CREATE TABLE IF NOT EXISTS state_rate (
    env TEXT PRIMARY KEY,
    tat REAL NOT NULL
);
""",
    )


class SqliteWorkers(WorkerStore):
    """On the state's own connections (`database`), so it shares their writer lock."""

    def __init__(self, database: Database, path: Path) -> None:
        self._db = database
        self.path = path

    def put_worker(self, record: WorkerRecord) -> None:
        values = (
            record.worker_id,
            record.env,
            record.host,
            record.pid,
            json.dumps(list(record.crons)),
            to_iso(record.started_at),
            to_iso(record.refreshed_at),
            record.processed,
            record.per_second,
            record.rate_scope,
            record.rate_limit,
            record.refresh_s,
        )
        marks = ", ".join("?" for _ in _COLUMNS)
        with self._errors(), self._db.writing() as conn:
            conn.execute(
                f"INSERT OR REPLACE INTO state_workers ({', '.join(_COLUMNS)}) VALUES ({marks})",
                values,
            )

    def remove_worker(self, env: str, worker_id: str) -> None:
        with self._errors(), self._db.writing() as conn:
            conn.execute(
                "DELETE FROM state_workers WHERE env = ? AND worker_id = ?", (env, worker_id)
            )

    def list_workers(self, env: str) -> list[WorkerRecord]:
        with self._errors():
            rows = (
                self._db.connection()
                .execute(
                    f"SELECT {', '.join(_COLUMNS)} FROM state_workers WHERE env = ?"
                    " ORDER BY started_at, worker_id",
                    (env,),
                )
                .fetchall()
            )
        return [_to_record(tuple(row)) for row in rows]

    def lease_slots(self, env: str, count: int, interval_s: float, now_s: float) -> Lease:
        span = count * interval_s
        with self._errors(), self._db.writing() as conn:
            # One statement, so one write lock: max(TAT, now) and the move happen together.
            (tat,) = conn.execute(
                "INSERT INTO state_rate (env, tat) VALUES (?, ?)"
                " ON CONFLICT (env) DO UPDATE SET tat = MAX(state_rate.tat, ?) + ?"
                " RETURNING tat",
                (env, now_s + span, now_s, span),
            ).fetchone()
        return Lease(float(tat) - span, count, interval_s, requests=1)

    def _errors(self) -> AbstractContextManager[None]:
        return state_errors(self.path)


def _to_record(row: tuple[object, ...]) -> WorkerRecord:
    fields = dict(zip(_COLUMNS, row, strict=True))
    started, refreshed = from_iso(str(fields["started_at"])), from_iso(str(fields["refreshed_at"]))
    assert started is not None and refreshed is not None
    rate_limit = fields["rate_limit"]
    return WorkerRecord(
        worker_id=str(fields["worker_id"]),
        env=str(fields["env"]),
        host=str(fields["host"]),
        pid=int(str(fields["pid"])),
        crons=tuple(json.loads(str(fields["crons"]))),
        started_at=started,
        refreshed_at=refreshed,
        processed=int(str(fields["processed"])),
        per_second=float(str(fields["per_second"])),
        rate_scope=str(fields["rate_scope"]),
        rate_limit=None if rate_limit is None else float(str(rate_limit)),
        refresh_s=float(str(fields["refresh_s"])),
    )
