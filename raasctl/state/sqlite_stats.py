"""Run statistics in the environment's embedded SQLite file (`state_run_stats`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from raasctl.migrations import execute_script
from raasctl.runstats import StatsRow
from raasctl.sqlite import Database
from raasctl.state.sqlite_entries import state_errors
from raasctl.state.stats_base import RunStatsStore, histogram_from, histogram_text

_COLUMNS = (
    "run_id",
    "second",
    "worker",
    "cron",
    "succeeded",
    "failed",
    "retries",
    "dead_lettered",
    "superseded",
    "latency",
    "latency_max_ms",
    "concurrency",
    "rate_per_s",
)


def m007_run_stats(conn: sqlite3.Connection) -> None:
    """Per-second, per-worker run statistics (registered with the state's migrations)."""
    execute_script(
        conn,
        """
CREATE TABLE IF NOT EXISTS state_run_stats (
    run_id         TEXT NOT NULL,
    second         INTEGER NOT NULL,
    worker         TEXT NOT NULL,
    cron           TEXT NOT NULL,
    succeeded      INTEGER NOT NULL DEFAULT 0,
    failed         INTEGER NOT NULL DEFAULT 0,
    retries        INTEGER NOT NULL DEFAULT 0,
    dead_lettered  INTEGER NOT NULL DEFAULT 0,
    superseded     INTEGER NOT NULL DEFAULT 0,
    latency        TEXT NOT NULL DEFAULT '{}',
    latency_max_ms REAL NOT NULL DEFAULT 0,
    concurrency    INTEGER NOT NULL DEFAULT 0,
    rate_per_s     REAL,
    PRIMARY KEY (run_id, second, worker)
) WITHOUT ROWID;
""",
    )


class SqliteRunStats(RunStatsStore):
    def __init__(self, path: Path) -> None:
        # Imported here: the state module registers this file's migration.
        from raasctl.state.sqlite import MIGRATIONS

        self.path = path
        self._db = Database(path, MIGRATIONS)

    def write(self, rows: Sequence[StatsRow]) -> None:
        if not rows:
            return
        marks = ", ".join("?" for _ in _COLUMNS)
        with self._errors(), self._db.transaction() as conn:
            conn.executemany(
                f"INSERT OR REPLACE INTO state_run_stats ({', '.join(_COLUMNS)}) VALUES ({marks})",
                [_to_values(row) for row in rows],
            )

    def rows(self, run_id: str) -> list[StatsRow]:
        with self._errors():
            found = (
                self._db.connection()
                .execute(
                    f"SELECT {', '.join(_COLUMNS)} FROM state_run_stats WHERE run_id = ?"
                    " ORDER BY second, worker",
                    (run_id,),
                )
                .fetchall()
            )
        return [_from_values(values) for values in found]

    def close(self) -> None:
        self._db.close()

    def _errors(self) -> AbstractContextManager[None]:
        return state_errors(self.path)


def _to_values(row: StatsRow) -> tuple[object, ...]:
    return (
        row.run_id,
        row.second,
        row.worker,
        row.cron,
        row.succeeded,
        row.failed,
        row.retries,
        row.dead_lettered,
        row.superseded,
        histogram_text(row.latency),
        row.latency_max_ms,
        row.concurrency,
        row.rate_per_s,
    )


def _from_values(values: Sequence[object]) -> StatsRow:
    fields = dict(zip(_COLUMNS, values, strict=True))
    fields["latency"] = histogram_from(str(fields["latency"]))
    return StatsRow(**fields)  # type: ignore[arg-type]
