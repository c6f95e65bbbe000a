"""The renderer: table specs rendered one way, the JSON path, and the one progress bar."""

from __future__ import annotations

import io
import json
from datetime import date

import pytest
from rich.console import Console
from rich.text import Text

from raasctl.cli.context import AppContext
from raasctl.cli.render import (
    Column,
    TableSpec,
    auto_table,
    cell,
    emit,
    format_duration,
    progress_bar,
)


def rendered(renderable: object, width: int = 120) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(renderable)
    return out.getvalue()


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as stderr does in an operator's shell."""

    def isatty(self) -> bool:
        return True


# ---------------------------------------------------------------- tables


def test_a_table_spec_renders_its_title_headings_and_cells() -> None:
    spec = TableSpec(
        "Queue q (prod)",
        [Column("visible", justify="right"), "crons"],
        [[3, ["clientDepositUpdate", "lspBillUpdateStatus"]], [None, []]],
    )
    text = rendered(spec)
    assert "Queue q (prod)" in text
    assert "visible" in text and "crons" in text
    assert "clientDepositUpdate, lspBillUpdateStatus" in text
    lines = [line for line in text.splitlines() if "│" in line]
    assert lines[-1].count("-") == 2  # None and an empty list both show as "-"


def test_cells_are_shown_one_way() -> None:
    assert cell(None) == "-"
    assert cell([1, 2]) == "1, 2" and cell(()) == "-"
    assert cell(0) == "0" and cell(False) == "False"
    styled = Text("allowed", style="green")
    assert cell(styled) is styled


def test_auto_table_makes_rows_of_a_list_and_pairs_of_a_mapping() -> None:
    rows = auto_table([{"run": "r1", "done": 3}, {"run": "r2", "failed": 1}], title="Runs")
    assert [c.heading if isinstance(c, Column) else c for c in rows.columns] == [
        "run",
        "done",
        "failed",
    ]
    assert rows.rows == [["r1", 3, None], ["r2", None, 1]]
    pairs = auto_table({"env": "local", "queue": {"visible": 2}, "dlq": {}}, title="Status")
    assert pairs.show_header is False
    assert pairs.rows == [["env", "local"], ["queue.visible", 2], ["dlq", {}]]
    text = rendered(pairs)
    assert "Status" in text and "queue.visible" in text


def test_emit_prints_json_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    data = {"env": "local", "purged": None, "when": date(2026, 11, 27)}
    emit(AppContext(output_format="json"), data, table=TableSpec("ignored", ["x"], [[1]]))
    out = capsys.readouterr()
    assert json.loads(out.out) == {"env": "local", "purged": None, "when": "2026-11-27"}
    assert "ignored" not in out.out and out.err == ""


def test_emit_prints_the_table_otherwise(capsys: pytest.CaptureFixture[str]) -> None:
    emit(AppContext(), {"a": 1}, table=TableSpec("Given table", ["heading"], [["value"]]))
    out = capsys.readouterr().out
    assert "Given table" in out and "value" in out
    emit(AppContext(), {"purged": 4})
    assert "purged" in capsys.readouterr().out  # the automatic key/value table


def test_durations_are_hours_minutes_seconds() -> None:
    assert format_duration(None) == "-"
    assert format_duration(3742) == "1:02:22"
    assert format_duration(65.9) == "0:01:05"


# ---------------------------------------------------------------- progress


def test_no_bar_without_a_terminal() -> None:
    out = io.StringIO()
    with progress_bar("enqueueing", console=Console(file=out)) as bar:
        bar.set_total(10)
        bar.update(3)
        bar.update(10, detail="done")
    assert bar.shown is False
    assert out.getvalue() == ""


def test_the_bar_on_a_terminal_shows_done_total_rate_and_eta() -> None:
    out = Terminal()
    console = Console(file=out, force_terminal=True, color_system=None, width=100)
    clock = iter([0.0, 2.0])
    with progress_bar("enqueueing", console=console, clock=lambda: next(clock)) as bar:
        bar.set_total(10)
        bar.update(3)  # 3 in 2 s: 2/s (rounded), 7 left at 1.5/s
    assert bar.shown is True
    drawn = out.getvalue()
    assert "enqueueing" in drawn and "3/10" in drawn
    assert "2/s" in drawn and "ETA 0:00:04" in drawn


def test_a_callers_detail_replaces_the_bars_own_rate() -> None:
    out = Terminal()
    console = Console(file=out, force_terminal=True, color_system=None, width=100)
    with progress_bar("worker", per="h", console=console) as bar:
        bar.update(29, total=100, detail="1,800/h  ETA 1:02:22  DLQ 1")
    drawn = out.getvalue()
    assert "29/100" in drawn and "1,800/h  ETA 1:02:22  DLQ 1" in drawn


def test_a_bar_per_hour_reports_its_rate_per_hour() -> None:
    clock = iter([0.0, 60.0])
    with progress_bar(
        "worker",
        per="h",
        console=Console(file=Terminal(), force_terminal=True),
        clock=lambda: next(clock),
    ) as bar:
        bar.set_total(100)
        assert bar.rate_and_eta(30) == "1,800/h  ETA 0:02:20"
