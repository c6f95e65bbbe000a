"""--since/--until also take a duration before the run time, `today` and `yesterday`."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from raasctl.cli import main
from raasctl.dates import RelativeBound, parse_bound, report_window

NOW = datetime(2026, 11, 27, 8, 30, tzinfo=ZoneInfo("America/Los_Angeles"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2d", NOW - timedelta(days=2)),
        ("12h", NOW - timedelta(hours=12)),
        ("30m", NOW - timedelta(minutes=30)),
        ("1w", NOW - timedelta(weeks=1)),
        ("today", datetime(2026, 11, 27, tzinfo=NOW.tzinfo)),
        ("Yesterday", datetime(2026, 11, 26, tzinfo=NOW.tzinfo)),
    ],
)
def test_relative_since_is_read_from_the_run_time(text: str, expected: datetime) -> None:
    bound = parse_bound(text)
    assert isinstance(bound, RelativeBound)
    window = report_window(NOW, timedelta(days=1), since=bound)
    assert window.from_date == expected
    assert window.to_date == NOW


def test_until_yesterday_ends_the_window_at_yesterdays_midnight() -> None:
    window = report_window(
        NOW, timedelta(days=1), since=parse_bound("2d"), until=parse_bound("today")
    )
    assert window.to_date == datetime(2026, 11, 27, tzinfo=NOW.tzinfo)
    assert window.from_date == NOW - timedelta(days=2)


def test_the_cli_takes_them_and_refuses_nonsense(runner: CliRunner) -> None:
    result = runner.invoke(
        main, ["--format", "json", "run", "clientDepositUpdate", "--dry-run", "--since", "2d"]
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    span = datetime.fromisoformat(data["to_date"]) - datetime.fromisoformat(data["from_date"])
    assert span == timedelta(days=2)
    result = runner.invoke(main, ["run", "clientDepositUpdate", "--since", "2 fortnights"])
    assert result.exit_code == 2
    assert "12h or 2d" in result.stderr
