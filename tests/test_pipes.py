"""Off a terminal: tables print whole, logs and errors follow --log-format, and every JSON
result with a rate gives it per second and per hour."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from raasctl.cli import main


def test_tables_print_whole_off_a_terminal(runner: CliRunner) -> None:
    dry = runner.invoke(main, ["--format", "json", "run", "clientDepositUpdate", "--dry-run"])
    keys = [item["key"] for item in json.loads(dry.stdout)["payloads"]]
    result = runner.invoke(main, ["-q", "run", "clientDepositUpdate", "--dry-run"])
    assert result.exit_code == 0, result.stderr
    assert "…" not in result.stdout
    lines = result.stdout.splitlines()
    for key in keys:
        # The key and its whole payload on one line.
        assert any(key in line and '"deposit_id"' in line for line in lines), key
    assert sum("clientDepositUpdate:DEP-" in line for line in lines) == len(keys) == 11


def test_run_ids_are_not_split_in_a_pipe(runner: CliRunner) -> None:
    ids = []
    for cron in ("clientDepositUpdate", "clientBillPaidStatus", "lspBillUpdateStatus"):
        done = runner.invoke(main, ["--format", "json", "run", cron])
        ids.append(json.loads(done.stdout)["run_id"])
    result = runner.invoke(main, ["runs", "list"])
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 4 + len(ids) + 1  # title, box, header, rows
    for run_id in ids:
        assert sum(run_id in line for line in result.stdout.splitlines()) == 1


@pytest.mark.parametrize("how", ["option", "env"])
def test_log_format_text_off_a_terminal(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    options = ["--log-format", "text"] if how == "option" else []
    if how == "env":
        monkeypatch.setenv("RAASCTL_LOG_FORMAT", "text")
    result = runner.invoke(main, [*options, "run", "nope"])
    assert result.exit_code == 2
    assert result.stderr.startswith("raasctl: error RAAS_UNKNOWN_CRON: unknown cron 'nope'")
    result = runner.invoke(main, [*options, "run", "clientDepositUpdate"])
    assert result.exit_code == 0
    line = next(line for line in result.stderr.splitlines() if "RAAS_ENQUEUE_COMPLETE" in line)
    assert not line.startswith("{")
    assert " INFO    RAAS_ENQUEUE_COMPLETE " in line


def test_log_format_json_and_the_default_off_a_terminal(runner: CliRunner) -> None:
    for options in (["--log-format", "json"], []):
        result = runner.invoke(main, [*options, "run", "nope"])
        assert result.exit_code == 2
        record = json.loads(result.stderr)
        assert (record["code"], record["level"]) == ("RAAS_UNKNOWN_CRON", "error")


def test_a_bad_log_format_is_a_usage_error(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--log-format", "xml", "queue", "status"])
    assert result.exit_code == 2
    assert "--log-format" in result.stderr


def test_every_rate_comes_per_second_and_per_hour(runner: CliRunner) -> None:
    mock = json.loads(
        runner.invoke(main, ["--format", "json", "enqueue-mock", "clientDepositUpdate"]).stdout
    )
    assert mock["per_second"] > 0
    assert mock["per_hour"] == pytest.approx(mock["per_second"] * 3600, rel=0.01)
    worker = runner.invoke(main, ["--format", "json", "worker", "--until-empty"])
    assert worker.exit_code == 0, worker.stderr
    summary = json.loads(worker.stdout)
    assert summary["per_second"] > 0
    assert summary["per_hour"] == pytest.approx(summary["per_second"] * 3600, rel=0.01)
    shown = json.loads(
        runner.invoke(main, ["--format", "json", "runs", "show", mock["run_id"]]).stdout
    )
    assert shown["per_second"] > 0
    assert shown["per_hour"] == pytest.approx(shown["per_second"] * 3600, rel=0.01)
    listed = json.loads(runner.invoke(main, ["--format", "json", "runs", "list"]).stdout)
    assert listed[0]["per_second"] == shown["per_second"]
