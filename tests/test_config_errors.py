"""Config errors: every problem at once, one line each, file:line:column and the field path
once, "did you mean" for keys, crons and environments; JSON problems; where a file was sought."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from raasctl.cli import main

BROKEN = (
    "environments:\n"
    "  local:\n"
    "    sourc: {kind: fixtures}\n"
    "    queue: {kind: sqlite, max_recieve_count: 5}\n"
    "    concurrency: 0\n"
    "crons:\n"
    "  clientdepositupdate: {lookback: 1d}\n"
)


def test_every_problem_is_one_line_with_its_position(runner: CliRunner) -> None:
    Path("raasctl.yaml").write_text(BROKEN)
    result = runner.invoke(main, ["--log-format", "text", "config", "validate"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    file = Path("raasctl.yaml").absolute()
    prefix = f"raasctl: error RAAS_CONFIG_INVALID: {file}"
    assert lines == [
        f"{prefix}:3:5: environments.local.sourc: unknown key (did you mean source?)",
        f"{prefix}:4:27: environments.local.queue.max_recieve_count: unknown key "
        "(did you mean max_receive_count?)",
        f"{prefix}:5:5: environments.local.concurrency: Input should be greater than or equal to 1",
        f"{prefix}:6:1: crons: unknown cron 'clientdepositupdate' (did you mean "
        "clientDepositUpdate?) (known: clientDepositUpdate, clientBillPaidStatus, "
        "clientBillUnpaidStatus, lspBillUpdateStatus)",
    ]
    assert "more)" not in result.stderr


def test_validate_in_json_prints_the_problems(runner: CliRunner) -> None:
    Path("raasctl.yaml").write_text(BROKEN)
    result = runner.invoke(main, ["config", "validate", "--format", "json"])
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert data["valid"] is False
    assert data["file"] == str(Path("raasctl.yaml").absolute())
    assert [(p["line"], p["column"], p["field"]) for p in data["problems"]] == [
        (3, 5, "environments.local.sourc"),
        (4, 27, "environments.local.queue.max_recieve_count"),
        (5, 5, "environments.local.concurrency"),
        (6, 1, "crons"),
    ]


def test_an_unknown_environment_gets_a_suggestion(runner: CliRunner) -> None:
    Path("raasctl.yaml").write_text("environments:\n  local: {}\n  staging: {}\n")
    result = runner.invoke(main, ["--log-format", "text", "--env", "stagin", "config", "show"])
    assert result.exit_code == 2
    assert "unknown environment 'stagin' (did you mean staging?)" in result.stderr


def test_without_a_config_file_an_environment_error_says_where_it_looked(
    runner: CliRunner,
) -> None:
    result = runner.invoke(main, ["--log-format", "text", "--env", "prod", "queue", "status"])
    assert result.exit_code == 2
    assert "RAAS_UNKNOWN_ENV" in result.stderr
    assert "no config file was found" in result.stderr
    assert str(Path("raasctl.yaml").absolute()) in result.stderr
    assert "RAASCTL_CONFIG" in result.stderr


def test_a_misspelt_cron_on_the_command_line_gets_a_suggestion(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--log-format", "text", "run", "clientdepositupdate"])
    assert result.exit_code == 2
    assert "(did you mean clientDepositUpdate?)" in result.stderr
