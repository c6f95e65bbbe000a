"""The shared run record codec and date helpers (raasctl/state/records.py)."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone

import pytest

from raasctl.state.base import RunRecord
from raasctl.state.records import (
    RUN_FIELDS,
    from_iso,
    run_from_fields,
    run_to_fields,
    to_iso,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)
FULL = RunRecord(
    run_id="run-1",
    cron="clientDepositUpdate",
    env="work-uat",
    mock=True,
    created_at=T0,
    entries=12,
    enqueued=10,
    invalid=1,
    duplicates=1,
    total=10,
    succeeded=7,
    failed=1,
    dead_lettered=1,
    retries=3,
    started_at=T0 + timedelta(seconds=5),
    finished_at=T0 + timedelta(minutes=2),
    error="stopped early: queue throttled",
)
FRESH = RunRecord("run-2", "lspBillUpdateStatus", "local", False, T0)


@pytest.mark.parametrize("run", [FULL, FRESH], ids=["every field set", "just created"])
def test_a_record_round_trips_through_its_stored_fields(run: RunRecord) -> None:
    stored = run_to_fields(run)

    assert list(stored) == [f.name for f in fields(RunRecord)] == list(RUN_FIELDS)
    assert run_from_fields(stored) == run


def test_stored_fields_are_plain_values_with_datetimes_as_utc_text() -> None:
    stored = run_to_fields(FULL)

    assert stored["created_at"] == "2026-03-01T12:00:00.250000+00:00"
    assert stored["finished_at"] == "2026-03-01T12:02:00.250000+00:00"
    assert all(isinstance(value, str | int | bool) for value in stored.values())
    assert run_to_fields(FRESH)["total"] is None
    assert run_to_fields(FRESH)["started_at"] is None


def test_missing_counters_read_as_zero_and_sqlite_flags_as_booleans() -> None:
    # DynamoDB leaves unset attributes out; SQLite returns its flag as 0 or 1.
    run = run_from_fields(
        {"run_id": "r", "cron": "c", "env": "e", "mock": 1, "created_at": to_iso(T0)}
    )

    assert run.mock is True
    assert (run.entries, run.succeeded, run.retries, run.total) == (0, 0, 0, None)
    assert run.started_at is None and run.error is None


def test_iso_text_is_utc_with_a_fixed_layout_so_text_order_is_time_order() -> None:
    plus_two = timezone(timedelta(hours=2))
    earlier = datetime(2026, 3, 1, 13, 0, tzinfo=plus_two)  # 11:00 UTC
    later = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    naive = datetime(2026, 3, 1, 12, 0)  # taken to be UTC

    assert to_iso(earlier) == "2026-03-01T11:00:00.000000+00:00"
    assert to_iso(earlier) < to_iso(later)
    assert to_iso(naive) == to_iso(later)
    back = from_iso(to_iso(earlier))
    assert back == earlier and back is not None and back.tzinfo == UTC
    assert from_iso(None) is None


def test_the_reconcile_fields_round_trip_and_the_abandoned_flag_reads_from_an_integer() -> None:
    reconciled = RunRecord(
        "run-3",
        "clientDepositUpdate",
        "local",
        False,
        T0,
        total=5,
        succeeded=1,
        superseded=1,
        purged=3,
        finished_at=T0 + timedelta(minutes=1),
        abandoned=True,
    )
    stored = run_to_fields(reconciled)

    assert (stored["superseded"], stored["purged"], stored["abandoned"]) == (1, 3, True)
    assert run_from_fields(stored) == reconciled
    assert run_from_fields(stored | {"abandoned": 1}).abandoned is True
    assert run_from_fields(stored | {"abandoned": 0}).abandoned is False
    assert run_from_fields({k: v for k, v in stored.items() if k != "abandoned"}).abandoned is False
    assert run_from_fields(stored).status == "abandoned"
