"""The SQLite state's per-entry rows, read and written in the caller's connection or
transaction: idempotency records (`state_applied`), records' applied versions
(`state_versions`) and outcomes (`state_outcomes`). Batches are one statement kind at a
time (executemany, `IN (...)`), never a statement per row. Also `state_errors`, how every
store in the state's file (runs, statistics, workers) reports a failure of SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from raasctl.errors import StateError
from raasctl.sqlite import execute_rows, rows_in
from raasctl.state.base import AppliedEntry, Entry, EntryStatus
from raasctl.state.records import to_iso


@contextmanager
def state_errors(path: Path) -> Iterator[None]:
    """SQLite's errors in the block raised as StateError (exit 1), naming the file."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StateError(f"SQLite state {path}: {exc}") from exc


RECORD_APPLIED = (
    "INSERT INTO state_applied (key, run_id, applied_at) VALUES (?, ?, ?)"
    " ON CONFLICT (key) DO NOTHING"
)
# The same for many rows in one statement (raasctl/sqlite.py `execute_rows`).
_RECORD_APPLIED_ROWS = RECORD_APPLIED.replace("(?, ?, ?)", "{values}")


def record_applied_in(
    conn: sqlite3.Connection, entries: Sequence[tuple[str, str]], now: datetime
) -> None:
    """Write the idempotency records of (key, run_id) pairs in the caller's transaction on a
    file that holds the state's tables (the SQLite ledger's apply); kept when there."""
    at = to_iso(now)
    execute_rows(conn, _RECORD_APPLIED_ROWS, [(key, run_id, at) for key, run_id in entries])


UPSERT_VERSION = (
    "INSERT INTO state_versions (cron, entity_id, version) VALUES (?, ?, ?)"
    " ON CONFLICT (cron, entity_id) DO UPDATE SET version = excluded.version"
    " WHERE excluded.version > state_versions.version"
)


def write_applied(conn: sqlite3.Connection, applied: Sequence[AppliedEntry], at: str) -> None:
    """The idempotency records (kept when there) and versions (kept unless newer) of the
    entries a sink applied, in the caller's transaction."""
    execute_rows(
        conn,
        _RECORD_APPLIED_ROWS,
        [(entry.key, entry.run_id, at) for entry in applied if not entry.recorded],
    )
    conn.executemany(
        UPSERT_VERSION,
        [
            (entry.cron, entry.entity_id, entry.version)
            for entry in applied
            if entry.entity_id and entry.version
        ],
    )


def applied_in(conn: sqlite3.Connection, keys: Sequence[str]) -> set[str]:
    sql = "SELECT key FROM state_applied WHERE key IN ({marks})"
    return {key for (key,) in rows_in(conn, sql, keys)}


def versions_in(
    conn: sqlite3.Connection, entries: Sequence[Entry]
) -> dict[tuple[str, str | None], str]:
    """The applied versions of the entries' records, by (cron, entity_id)."""
    per_cron: dict[str, list[str]] = {}
    for entry in entries:
        if entry.entity_id:
            per_cron.setdefault(entry.cron, []).append(entry.entity_id)
    found: dict[tuple[str, str | None], str] = {}
    sql = "SELECT entity_id, version FROM state_versions WHERE cron = ? AND entity_id IN ({marks})"
    for cron, entity_ids in per_cron.items():
        for entity_id, version in rows_in(conn, sql, sorted(set(entity_ids)), first=(cron,)):
            found[(cron, entity_id)] = str(version)
    return found


def outcomes_in(
    conn: sqlite3.Connection, run_id: str, keys: Sequence[str]
) -> dict[str, EntryStatus]:
    sql = "SELECT key, status FROM state_outcomes WHERE run_id = ? AND key IN ({marks})"
    return {key: EntryStatus(status) for key, status in rows_in(conn, sql, keys, first=(run_id,))}
