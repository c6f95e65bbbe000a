"""The SQLite state's per-entry rows, read and written in the caller's connection or
transaction: idempotency records (`state_applied`), records' applied versions
(`state_versions`) and outcomes (`state_outcomes`). Batches are one statement kind at a
time (executemany, `IN (...)`), never a statement per row."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

from raasctl.state.base import AppliedEntry, Entry, EntryStatus
from raasctl.state.records import to_iso

_IN_CHUNK = 500  # values per IN (...): under SQLite's limit on bound parameters

RECORD_APPLIED = (
    "INSERT INTO state_applied (key, run_id, applied_at) VALUES (?, ?, ?)"
    " ON CONFLICT (key) DO NOTHING"
)


def record_applied_in(
    conn: sqlite3.Connection, entries: Sequence[tuple[str, str]], now: datetime
) -> None:
    """Write the idempotency records of (key, run_id) pairs in the caller's transaction on a
    file that holds the state's tables (the SQLite ledger's apply); kept when there."""
    at = to_iso(now)
    conn.executemany(RECORD_APPLIED, [(key, run_id, at) for key, run_id in entries])


UPSERT_VERSION = (
    "INSERT INTO state_versions (cron, entity_id, version) VALUES (?, ?, ?)"
    " ON CONFLICT (cron, entity_id) DO UPDATE SET version = excluded.version"
    " WHERE excluded.version > state_versions.version"
)


def write_applied(conn: sqlite3.Connection, applied: Sequence[AppliedEntry], at: str) -> None:
    """The idempotency records (kept when there) and versions (kept unless newer) of the
    entries a sink applied, in the caller's transaction."""
    conn.executemany(RECORD_APPLIED, [(entry.key, entry.run_id, at) for entry in applied])
    conn.executemany(
        UPSERT_VERSION,
        [
            (entry.cron, entry.entity_id, entry.version)
            for entry in applied
            if entry.entity_id and entry.version
        ],
    )


def applied_in(conn: sqlite3.Connection, keys: Sequence[str]) -> set[str]:
    found: set[str] = set()
    # Chunked to stay under SQLite's limit on bound parameters.
    for start in range(0, len(keys), _IN_CHUNK):
        chunk = keys[start : start + _IN_CHUNK]
        marks = ", ".join("?" for _ in chunk)
        found.update(
            key
            for (key,) in conn.execute(
                f"SELECT key FROM state_applied WHERE key IN ({marks})", tuple(chunk)
            )
        )
    return found


def versions_in(
    conn: sqlite3.Connection, entries: Sequence[Entry]
) -> dict[tuple[str, str | None], str]:
    """The applied versions of the entries' records, by (cron, entity_id)."""
    per_cron: dict[str, list[str]] = {}
    for entry in entries:
        if entry.entity_id:
            per_cron.setdefault(entry.cron, []).append(entry.entity_id)
    found: dict[tuple[str, str | None], str] = {}
    for cron, entity_ids in per_cron.items():
        unique = sorted(set(entity_ids))
        for start in range(0, len(unique), _IN_CHUNK):
            chunk = unique[start : start + _IN_CHUNK]
            marks = ", ".join("?" for _ in chunk)
            for entity_id, version in conn.execute(
                "SELECT entity_id, version FROM state_versions"
                f" WHERE cron = ? AND entity_id IN ({marks})",
                (cron, *chunk),
            ):
                found[(cron, entity_id)] = str(version)
    return found


def outcomes_in(
    conn: sqlite3.Connection, run_id: str, keys: Sequence[str]
) -> dict[str, EntryStatus]:
    found: dict[str, EntryStatus] = {}
    for start in range(0, len(keys), _IN_CHUNK):
        chunk = keys[start : start + _IN_CHUNK]
        marks = ", ".join("?" for _ in chunk)
        for key, status in conn.execute(
            f"SELECT key, status FROM state_outcomes WHERE run_id = ? AND key IN ({marks})",
            (run_id, *chunk),
        ):
            found[key] = EntryStatus(status)
    return found
