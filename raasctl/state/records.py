"""The run record as stored, shared by the state adapters: field values and datetimes.

Both adapters keep a run as named fields of plain values (SQLite columns, DynamoDB
attributes): text, integers, a flag, and datetimes as ISO strings in UTC with a fixed layout,
so stored strings sort and compare like the instants they name (DynamoDB condition
expressions and SQLite's ORDER BY compare them as text).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from raasctl.state.base import RunRecord

# Every field of RunRecord, in its order: what the adapters store.
RUN_FIELDS = tuple(f.name for f in fields(RunRecord))
# The counters (always present, 0 when unset).
COUNTERS = (
    *("entries", "enqueued", "invalid", "duplicates"),
    *("succeeded", "failed", "dead_lettered", "retries", "superseded", "purged"),
)


def to_iso(value: datetime) -> str:
    """UTC with a fixed layout, so stored strings sort and compare like the instants they name.
    A naive datetime is taken to be UTC already."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def from_iso(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).astimezone(UTC)


def run_to_fields(run: RunRecord) -> dict[str, str | int | bool | None]:
    """The record as stored: every field, datetimes as ISO strings, None where unset."""
    stored: dict[str, str | int | bool | None] = {}
    for name in RUN_FIELDS:
        value = getattr(run, name)
        stored[name] = to_iso(value) if isinstance(value, datetime) else value
    return stored


def run_from_fields(stored: Mapping[str, Any]) -> RunRecord:
    """A record back from its stored fields; a missing counter is 0, other missing fields
    are unset. The flags may come back as integers (SQLite has no booleans)."""
    created_at = from_iso(stored["created_at"])
    assert created_at is not None  # created_at is required on every stored run
    total = stored.get("total")
    return RunRecord(
        run_id=str(stored["run_id"]),
        cron=str(stored["cron"]),
        env=str(stored["env"]),
        mock=bool(stored.get("mock") or False),
        created_at=created_at,
        total=None if total is None else int(total),
        started_at=from_iso(stored.get("started_at")),
        finished_at=from_iso(stored.get("finished_at")),
        error=stored.get("error"),
        abandoned=bool(stored.get("abandoned") or False),
        **{name: int(stored.get(name) or 0) for name in COUNTERS},
    )
