"""Hostile report bodies: one entry costs only itself, never the process or the other entries.

Each case is what a broken or malicious report has sent: a huge integer (it crashed the old
C JSON backend), deep nesting (memory grew with depth squared; a RecursionError traceback), a
bare value where an entry belongs, bad JSON inside one entry, an entry larger than any message.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from raasctl.codes import ErrorCode
from raasctl.errors import SourceError
from raasctl.jobs import JOBS
from raasctl.jobs.base import EntryInvalid, map_report
from raasctl.sources import entries as entries_module
from raasctl.sources.base import Unreadable
from raasctl.sources.entries import MAX_DEPTH
from raasctl.sources.stream import ReportStream, iter_report_file, parse_entries

GOOD = {"Deposit_ID": "D-1", "Deposit_Amount": "10.25", "Currency": "USD"}


def report(*raw_entries: str) -> bytes:
    return ('{"Report_Entry": [' + ", ".join(raw_entries) + "]}").encode()


def parse(body: bytes, chunk: int = 65536) -> list[object]:
    chunks = (body[i : i + chunk] for i in range(0, len(body), chunk))  # made as read
    return list(parse_entries(ReportStream(chunks), where="report T"))


def good(n: int) -> str:
    return json.dumps({**GOOD, "Deposit_ID": f"D-{n}"})


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("chunk", [1, 3, 7, 4096, 65536])
@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ('{"Deposit_ID": "D-x", "Deposit_Amount": ' + "9" * 5000 + "}", "too many digits"),
        ('{"Deposit_ID": "D-x", "Ignored": ' + nested(MAX_DEPTH + 1) + "}", "deeper than 64"),
        ("42", "entry is not an object (int)"),
        ('"text"', "entry is not an object (str)"),
        ("[1, 2]", "entry is not an object (list)"),
        ("null", "entry is not an object (NoneType)"),
        ('{"Deposit_ID": "D-x", "a": tru}', "not valid JSON"),
        ('{"Deposit_ID": "D-x" "a": 1}', "not valid JSON"),
    ],
)
def test_a_bad_entry_is_unreadable_and_the_others_go_on(chunk: int, bad: str, reason: str) -> None:
    entries = parse(report(good(1), bad, good(3)), chunk)
    assert len(entries) == 3
    assert entries[0] == {**GOOD, "Deposit_ID": "D-1"}
    assert entries[2] == {**GOOD, "Deposit_ID": "D-3"}
    assert isinstance(entries[1], Unreadable)
    assert reason in entries[1].reason


def test_nesting_at_the_limit_is_read() -> None:
    inner = nested(MAX_DEPTH - 1)  # the entry's own braces are level 1
    [entry] = parse(report('{"Deposit_ID": "D-1", "deep": ' + inner + "}"))
    assert isinstance(entry, dict) and entry["Deposit_ID"] == "D-1"


def test_exact_digits_survive() -> None:
    [entry] = parse(report('{"Deposit_ID": "D-1", "Deposit_Amount": 8420.75, "n": 12}'))
    assert isinstance(entry, dict)
    assert entry["Deposit_Amount"] == Decimal("8420.75") and entry["n"] == 12


def test_strings_with_brackets_quotes_and_escapes_do_not_confuse_the_split() -> None:
    tricky = json.dumps({"Deposit_ID": 'D-"1"', "memo": '] }, {"x": [\\', "u": "\u00e9\\n"})
    for chunk in (1, 2, 5):
        entries = parse(report(tricky, good(2)), chunk)
        assert entries == [json.loads(tricky), {**GOOD, "Deposit_ID": "D-2"}]


def test_deep_nesting_in_an_ignored_top_level_key_costs_no_memory() -> None:
    body = (
        b'{"Header": '
        + nested(200_000).encode()
        + b', "Report_Entry": ['
        + good(1).encode()
        + b"]}"
    )
    tracemalloc.start()
    entries = parse(body, 65536)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert entries == [{**GOOD, "Deposit_ID": "D-1"}]
    assert peak < 2 * 1024 * 1024


def test_deep_nesting_in_an_entry_is_not_held(monkeypatch: pytest.MonkeyPatch) -> None:
    # 400 KB of nesting was OOM-killed at 24 GB before; now memory stays near one read buffer.
    body = report('{"Deposit_ID": "D-x", "Ignored": ' + nested(200_000) + "}", good(2))
    tracemalloc.start()
    entries = parse(body, 65536)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert isinstance(entries[0], Unreadable) and entries[1] == {**GOOD, "Deposit_ID": "D-2"}
    assert peak < 2 * 1024 * 1024


def test_an_entry_larger_than_the_limit_is_unreadable_and_not_held(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(entries_module, "MAX_ENTRY_BYTES", 100_000)
    body = report(good(1), json.dumps({"Deposit_ID": "D-x", "blob": "x" * 1_000_000}), good(3))
    tracemalloc.start()
    entries = parse(body, 65536)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert isinstance(entries[1], Unreadable) and "larger than 100000 bytes" in entries[1].reason
    assert entries[2] == {**GOOD, "Deposit_ID": "D-3"}
    assert peak < 600_000  # the 1 MB entry was never held whole


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (report(good(1))[:-3], "not valid JSON after 0 entries: the body ends inside an entry"),
        (report(good(1), good(2)).replace(b"}, {", b"} {"), "not valid JSON after 1 entries"),
        (b'{"Report_Entry": [' + b"[" * 100_000, "not valid JSON after 0 entries"),
    ],
)
def test_a_broken_report_structure_still_ends_the_report(body: bytes, message: str) -> None:
    with pytest.raises(SourceError) as caught:
        parse(body)
    assert caught.value.code is ErrorCode.REPORT_INVALID
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_unreadable_entries_are_invalid_entries_with_their_position() -> None:
    job = JOBS["clientDepositUpdate"]
    body = report(good(1), "42", '{"Deposit_ID": "D-x", "n": ' + "7" * 5000 + "}", good(4))
    results = list(map_report(job, parse(body)))
    invalid = [r for r in results if isinstance(r, EntryInvalid)]
    assert [(i.position, i.reason) for i in invalid] == [
        (2, "entry is not an object (int)"),
        (3, "entry has a number with too many digits"),
    ]
    assert len(results) - len(invalid) == 2


def test_a_report_file_with_a_5000_digit_integer_does_not_crash_the_process(
    tmp_path: Path,
) -> None:
    """In a child process, so a segfault (as the old parser had) fails this test instead of
    ending the test run."""
    path = tmp_path / "report.json"
    path.write_bytes(report(good(1), '{"Deposit_ID": "D-2", "x": ' + "9" * 5000 + "}", good(3)))
    code = (
        "import sys, pathlib; from raasctl.sources.stream import iter_report_file; "
        "print([type(e).__name__ for e in iter_report_file(pathlib.Path(sys.argv[1]))])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['dict', 'Unreadable', 'dict']"
    assert next(iter_report_file(path)) == {**GOOD, "Deposit_ID": "D-1"}


# ---------------------------------------------------------------- through `raasctl run`


def _fixture_env(folder: Path, entries: list[str]) -> Path:
    raas = folder / "raas"
    raas.mkdir()
    (raas / "clientDepositUpdate.json").write_bytes(report(*entries))
    config = folder / "raasctl.yaml"
    config.write_text(
        "default_env: t\n"
        "environments:\n"
        "  t:\n"
        f"    source: {{kind: fixtures, path: {raas}}}\n"
        "    queue: {kind: sqlite}\n"
        "    state: {kind: sqlite}\n"
        "    sink: {kind: sqlite}\n",
        encoding="utf-8",
    )
    return config


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (
            json.dumps({"Deposit_ID": "D-big", "Deposit_Reference": "x" * 1_100_000}),
            "over the queue's limit",
        ),
        ("42", "entry is not an object (int)"),
        ('{"Deposit_ID": "D-huge", "Deposit_Amount": ' + "9" * 5000 + "}", "too many digits"),
    ],
    ids=["over-the-message-size", "bare-value", "5000-digit-integer"],
)
def test_one_hostile_entry_in_2000_is_invalid_and_the_other_1999_are_enqueued(
    runner: Any, tmp_path: Path, bad: str, reason: str
) -> None:
    from raasctl.cli import main

    entries = [good(n) for n in range(1, 2001)]
    entries[1200] = bad  # entry 1201
    config = _fixture_env(tmp_path, entries)

    result = runner.invoke(
        main, ["--config", str(config), "--format", "json", "run", "clientDepositUpdate"]
    )

    assert result.exit_code == 3, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["entries"], summary["enqueued"], summary["invalid"]) == (2000, 1999, 1)
    invalid = [line for line in result.stderr.splitlines() if "RAAS_ENTRY_INVALID" in line]
    assert len(invalid) == 1 and "entry 1201" in invalid[0] and reason in invalid[0]
    assert "Traceback" not in result.stderr
